//! The file operations the writer performs, behind a trait so tests can put a crash simulator between
//! the page file and the disk (a layer that remembers what was synced, tears unsynced writes and fails
//! fsyncs). In production it is the plain [`std::fs::File`]: buffered `pwrite`, `fdatasync`,
//! `ftruncate`. Reads never go through here: they use the memory map.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Writes, syncs and resizes of the page file.
pub trait FileIo: Send + Sync + fmt::Debug {
    /// Writes all of `buf` at `offset` (buffered; visible to the mapping at once, durable after
    /// [`FileIo::sync_data`]).
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every completed write durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Sets the file length (the page file only ever grows it while open).
    fn set_len(&self, len: u64) -> io::Result<()>;
}

impl FileIo for File {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
}

/// Wraps the opened file in the layer the writer will use (see [`super::Options::io`]).
pub type IoLayer = Arc<dyn Fn(File) -> Box<dyn FileIo> + Send + Sync>;

/// One file operation of a commit, as the writer plans it and its caller performs it: in order,
/// each completed before the next begins (a `Sync` covers every write before it). Owned bytes, so
/// an io_uring executor can hand them to the kernel as they are.
#[derive(Debug)]
pub enum IoStep {
    /// Extend the file to this length (never shrinks it: the writer plans lengths that only grow).
    Grow(u64),
    /// Write `bytes` at `offset`.
    Write {
        /// Byte offset in the file.
        offset: u64,
        /// What to write.
        bytes: Vec<u8>,
        /// What the bytes are, for an error message (`"write"`, `"write meta"`).
        op: &'static str,
    },
    /// Make every completed write durable (`fdatasync`).
    Sync {
        /// What the sync completes, for an error message.
        op: &'static str,
    },
}

impl IoStep {
    /// The name of the operation, for an error message.
    pub fn op(&self) -> &'static str {
        match self {
            IoStep::Grow(_) => "grow",
            IoStep::Write { op, .. } | IoStep::Sync { op } => op,
        }
    }

    /// Performs the step through `io`, blocking.
    pub fn perform(self, io: &dyn FileIo) -> io::Result<()> {
        match self {
            IoStep::Grow(len) => io.set_len(len),
            IoStep::Write { offset, bytes, .. } => io.write_all_at(&bytes, offset),
            IoStep::Sync { .. } => io.sync_data(),
        }
    }
}
