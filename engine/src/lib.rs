//! Keelson's storage engine: storage only — no network, no raft.
//!
//! - [`pagefile`]: the state machine's copy-on-write B+tree, in bbolt's on-disk format, with one
//!   writer and lock-free readers on any thread.
//! - [`wal`]: the write-ahead log, segmented and CRC-framed, written with O_DIRECT on a glommio
//!   executor with one fdatasync per gathered batch.
//! - [`mvcc`]: etcd's key-value store on the page file — revisions, Range/Put/DeleteRange/Txn,
//!   compaction, leases' keys, the events watchers see — the state machine raft applies to.
//!
//! The byte formats are specified in `engine/docs/format.md`.

#![deny(missing_docs)]

pub mod mvcc;
pub mod pagefile;
pub mod wal;
