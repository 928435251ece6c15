//! The read-only memory mappings of the page file. This is the one place the page file uses
//! `unsafe`.
//!
//! A mapping is made much larger than the file (mapping past the end of a file is allowed; only
//! touching those addresses would fault), so the file can grow underneath it without a remap. When the
//! file outgrows the newest mapping, the writer adds a larger one; older mappings stay until the
//! page file closes, so a reader that began on one keeps reading it and nobody ever waits for a remap.
//! With each mapping at least twice the last, the address space kept is at most twice the largest.

use std::fs::File;
use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use memmap2::{Mmap, MmapOptions};

/// Enough doublings to go from 1 MiB to 2^60 bytes.
const MAX_MAPPINGS: usize = 40;

/// The mappings of one page file, newest last.
#[derive(Debug)]
pub(crate) struct Mappings {
    maps: [OnceLock<Mmap>; MAX_MAPPINGS],
    count: AtomicUsize,
}

fn map_file(file: &File, len: usize) -> io::Result<Mmap> {
    // SAFETY: memmap2 requires that the mapped file not be modified in ways that break the program's
    // assumptions while mapped. This mapping is read-only; the file is locked (exclusively when a
    // writer exists) so no other process writes it; our own writer only writes pages that no
    // published snapshot reaches (copy-on-write, pinned readers) and never shrinks the file while it
    // is open. Readers only touch pages below their snapshot's high-water mark, which lie inside the
    // file, so the addresses past the end of the file that the mapping reserves are never touched.
    unsafe { MmapOptions::new().len(len).map(file) }
}

impl Mappings {
    /// Maps `file` with room for at least `len` bytes.
    pub fn new(file: &File, len: usize) -> io::Result<Self> {
        let mappings = Mappings {
            maps: std::array::from_fn(|_| OnceLock::new()),
            count: AtomicUsize::new(1),
        };
        let map = map_file(file, len)?;
        let _ = mappings.maps[0].set(map);
        Ok(mappings)
    }

    /// Mapping `index`, which a published snapshot named (so it exists).
    pub fn get(&self, index: usize) -> &Mmap {
        self.maps[index]
            .get()
            .expect("a published snapshot names only mappings that exist")
    }

    /// Index of the newest mapping.
    pub fn newest(&self) -> usize {
        self.count.load(Ordering::Acquire) - 1
    }

    /// Ensures the newest mapping covers `len` bytes, adding a larger one if not; returns its index.
    /// Only the writer calls this.
    pub fn cover(&self, file: &File, len: usize) -> io::Result<usize> {
        let newest = self.newest();
        let current = self.get(newest).len();
        if len <= current {
            return Ok(newest);
        }
        if newest + 1 >= MAX_MAPPINGS {
            return Err(io::Error::other("page file: too many mapping generations"));
        }
        let size = len.next_power_of_two().max(current.saturating_mul(2));
        let map = map_file(file, size)?;
        let _ = self.maps[newest + 1].set(map);
        self.count.store(newest + 2, Ordering::Release);
        Ok(newest + 1)
    }
}
