//! Errors of the write-ahead log: I/O (with the file and operation), corruption (with the segment
//! file and byte offset), and the fail-stop state after a failed write or fsync.

use std::io;
use std::path::PathBuf;

/// Errors of the WAL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// A system call failed.
    #[error("wal {path}: {op}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A segment holds damage a crash cannot explain.
    #[error("wal {file} at byte {offset}: {why}")]
    Corrupt {
        /// The segment file.
        file: PathBuf,
        /// Byte offset of the damage in it.
        offset: u64,
        /// What is wrong.
        why: String,
    },
    /// A segment between two others is missing.
    #[error("wal {dir}: segment {seq:016x} is missing")]
    MissingSegment {
        /// The WAL directory.
        dir: PathBuf,
        /// Its sequence number.
        seq: u64,
    },
    /// Replay asked for entries after an index the WAL no longer (or never) held.
    #[error("wal {dir}: entries after index {after} are needed but the log continues at {next}")]
    Gap {
        /// The WAL directory.
        dir: PathBuf,
        /// The index replay started after.
        after: u64,
        /// The first index the log had.
        next: u64,
    },
    /// The directory holds no WAL (open) or already holds one (create).
    #[error("wal {dir}: {what}")]
    Directory {
        /// The WAL directory.
        dir: PathBuf,
        /// What is wrong with it.
        what: &'static str,
    },
    /// A write or fsync failed earlier: the WAL accepts nothing more (fail-stop).
    #[error("wal stopped after a failed write or fsync; nothing more is accepted: {0}")]
    Stopped(String),
    /// One record is larger than a segment can hold.
    #[error("wal: a record of {len} bytes exceeds what one segment holds ({max})")]
    TooLarge {
        /// Bytes the record's frame needs.
        len: u64,
        /// Room in an empty segment.
        max: u64,
    },
}

/// Results of the WAL.
pub type Result<T, E = WalError> = std::result::Result<T, E>;

/// Builds the I/O error for `path` and `op`.
pub(crate) fn io_err(
    path: impl Into<PathBuf>,
    op: &'static str,
) -> impl FnOnce(io::Error) -> WalError {
    let path = path.into();
    move |source| WalError::Io { path, op, source }
}
