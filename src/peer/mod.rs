//! The peer transport: how raft messages travel between the members of a cluster. Each member
//! listens on its `--listen-peer-urls` ([`listener`]) and dials every other member ([`transport`]):
//! one TCP connection each way, messages as length-prefixed protobuf frames ([`frame`]), everything
//! a turn sends to one member in one write. The raft core's turn sees only the `Transport` seam
//! (`raft/seams.rs`); the sockets are tasks on the raft core's executor, so a turn's messages go out
//! while the turn awaits its WAL fsync.
//!
//! Runs on: the raft core.

pub mod frame;
pub mod join;
pub mod listener;
pub mod transport;
