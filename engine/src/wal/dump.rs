//! Reading a WAL directory record by record without opening it for writing — what `keelson wal
//! dump` prints (as etcd-dump-logs does for etcd). Plain blocking file reads: no executor needed.

use std::path::Path;

use super::error::{Result, io_err};
use super::frame;
use super::record::Decoded;
use super::replay::{self, Visit};
use super::segment;

/// The member metadata the WAL in `dir` was created with (`None`: it holds no segment). Reads
/// the newest segment's head only: every segment opens with the metadata.
pub fn metadata(dir: &Path) -> Result<Option<Vec<u8>>> {
    let (names, _) = segment::list(dir).map_err(io_err(dir, "list"))?;
    let Some((_, path)) = names.last() else {
        return Ok(None);
    };
    let bytes = std::fs::read(path).map_err(io_err(path, "read segment"))?;
    Ok(frame::scan(&bytes, true)
        .frames
        .into_iter()
        .find_map(|f| match f.record {
            Decoded::Metadata(m) => Some(m),
            _ => None,
        }))
}

/// One record of a WAL, where it lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpLine {
    /// The segment's file name.
    pub segment: String,
    /// Byte offset of the record's frame in it.
    pub offset: u64,
    /// The record.
    pub record: Decoded,
}

/// Calls `line` for every record of the WAL in `dir`, oldest first, with the same checks as
/// opening it. Returns where a torn tail cut the log short, if it did — (segment, offset, why).
/// Corruption ends it with the error that names the segment and offset, after every record before
/// it was passed to `line`.
pub fn dump(
    dir: &Path,
    line: &mut dyn FnMut(DumpLine),
) -> Result<Option<(String, u64, &'static str)>> {
    let (names, _) = segment::list(dir).map_err(io_err(dir, "list"))?;
    let mut segments = Vec::with_capacity(names.len());
    for (name, path) in names {
        let bytes = std::fs::read(&path).map_err(io_err(&path, "read segment"))?;
        segments.push((name, path, bytes));
    }
    let resume = replay::walk(dir, &segments, &mut |v: Visit<'_>| {
        line(DumpLine {
            segment: v.name.file_name(),
            offset: v.offset as u64,
            record: v.record.clone(),
        });
        Ok(())
    })?;
    Ok(resume
        .torn
        .map(|why| (resume.name.file_name(), resume.end, why)))
}
