//! Segment files: their names (`<seq:016x>-<index:016x>.wal`, and `<seq:016x>.tmp` while being
//! prepared), the listing of a WAL directory, and the lock that keeps a directory to one open WAL.
//! These use plain (blocking) file system calls: callers on an executor run them on glommio's
//! blocking pool.

use std::io;
use std::path::{Path, PathBuf};

/// A segment's identity, as its file name states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SegmentName {
    /// Sequence number: segments count from 0 without gaps.
    pub seq: u64,
    /// The raft index the segment starts at.
    pub first_index: u64,
}

impl SegmentName {
    /// The file name.
    pub fn file_name(&self) -> String {
        format!("{:016x}-{:016x}.wal", self.seq, self.first_index)
    }

    /// Parses a segment file name.
    pub fn parse(name: &str) -> Option<SegmentName> {
        let stem = name.strip_suffix(".wal")?;
        let (seq, index) = stem.split_once('-')?;
        if seq.len() != 16 || index.len() != 16 {
            return None;
        }
        Some(SegmentName {
            seq: u64::from_str_radix(seq, 16).ok()?,
            first_index: u64::from_str_radix(index, 16).ok()?,
        })
    }
}

/// The name a segment is prepared under before it is put in place.
pub(crate) fn prepared_name(seq: u64) -> String {
    format!("{seq:016x}.tmp")
}

/// What a WAL directory holds.
pub(crate) type Listing = (Vec<(SegmentName, PathBuf)>, Vec<PathBuf>);

/// Takes the exclusive `flock` on the directory itself that an open WAL holds until it has
/// stopped; `Ok(None)` if another open WAL (in this or another process) holds it.
pub(crate) fn lock(dir: &Path) -> io::Result<Option<std::fs::File>> {
    let handle = std::fs::File::open(dir)?;
    match handle.try_lock() {
        Ok(()) => Ok(Some(handle)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Whether `dir` holds a WAL (any segment): open it, or else create one.
pub fn has_segments(dir: &Path) -> bool {
    list(dir).is_ok_and(|(segments, _)| !segments.is_empty())
}

/// The segments in `dir`, oldest first, and any leftover prepared (`.tmp`) files.
pub fn list(dir: &Path) -> io::Result<Listing> {
    let mut segments = Vec::new();
    let mut leftovers = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(segment) = SegmentName::parse(name) {
            segments.push((segment, entry.path()));
        } else if name.ends_with(".tmp") {
            leftovers.push(entry.path());
        }
    }
    segments.sort();
    Ok((segments, leftovers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_by_sequence() {
        let n = SegmentName {
            seq: 0x1f,
            first_index: 0xabc,
        };
        assert_eq!(n.file_name(), "000000000000001f-0000000000000abc.wal");
        assert_eq!(SegmentName::parse(&n.file_name()), Some(n));
        assert_eq!(SegmentName::parse("1f-abc.wal"), None);
        assert_eq!(
            SegmentName::parse("000000000000001f-0000000000000abc.tmp"),
            None
        );
        assert!(
            SegmentName {
                seq: 2,
                first_index: 0
            } > SegmentName {
                seq: 1,
                first_index: 99
            }
        );
    }
}
