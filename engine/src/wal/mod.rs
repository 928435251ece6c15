//! The write-ahead log: what makes a write durable before the page file's next sync. Segmented,
//! CRC-framed with the CRC chained across records and segments, written with O_DIRECT through
//! glommio on the executor that owns it, with group commit — everything appended while one write
//! and fdatasync are in flight goes out in the next single write and fdatasync.
//!
//! [`Wal::create`] / [`Wal::open`] (which replays), then [`Wal::append`] from any task of that
//! executor; each append's [`Durable`] resolves once it is on disk. A torn tail is cut back on open;
//! damage anywhere else is an error naming the segment file and offset. After a failed write or
//! fsync the WAL stops accepting appends (fail-stop). [`dump`] reads a WAL directory without an
//! executor (`keelson wal dump`).
//!
//! Layout, record types and the torn-tail rule: `engine/docs/format.md`, "Write-ahead log".

mod dump;
mod error;
pub mod etcd;
mod frame;
mod record;
mod replay;
mod segment;
mod writer;

pub use dump::{DumpLine, dump, metadata};
pub use error::{Result, WalError};
pub use record::{Decoded, Entry, EntryKind, EntryRef, HardState, Record};
pub use replay::Replay;
pub use segment::{SegmentName, has_segments};
pub use writer::{Durable, FaultHook, IoPoint, Options, Wal, WalStats};
