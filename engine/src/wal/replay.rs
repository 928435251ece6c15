//! Replay: from the segments' bytes, the metadata, the last hard state and the entries after a
//! given index, with every cross-segment check (contiguous sequence numbers, seeds matching file
//! names, the crc chain carried across), and where the last segment's data ends so the writer can
//! resume there. Pure: the caller reads the files.

use std::path::{Path, PathBuf};

use super::error::{Result, WalError};
use super::frame::{self, BLOCK, End};
use super::record::{Decoded, Entry, HardState};
use super::segment::SegmentName;

/// What a WAL holds, as replay returns it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    /// The last metadata record.
    pub metadata: Option<Vec<u8>>,
    /// The last hard state (default if none was written).
    pub hard_state: HardState,
    /// Entries after the requested index (and those kept before it), in order, overwritten
    /// suffixes resolved.
    pub entries: Vec<Entry>,
    /// Snapshot markers (index, term), in order.
    pub snapshots: Vec<(u64, u64)>,
}

/// Where the writer resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resume {
    pub name: SegmentName,
    pub path: PathBuf,
    /// Offset where the data ends (new frames go here).
    pub end: u64,
    /// End of the bytes a torn write left beyond `end` (to be zeroed), block-aligned; `end` if none.
    pub dirty_end: u64,
    /// Why the data ends early, if a torn write was cut off.
    pub torn: Option<&'static str>,
    /// The crc chain's running value at `end`.
    pub crc: u32,
    /// The bytes of the block `end` falls in, from its start to `end`.
    pub tail_block: Vec<u8>,
    /// The last entry index in the log (0 if none).
    pub last_index: u64,
}

fn corrupt(path: &Path, offset: usize, why: impl Into<String>) -> WalError {
    WalError::Corrupt {
        file: path.to_path_buf(),
        offset: offset as u64,
        why: why.into(),
    }
}

/// One record met by [`walk`].
pub(crate) struct Visit<'a> {
    pub name: &'a SegmentName,
    pub path: &'a Path,
    pub offset: usize,
    pub record: &'a Decoded,
}

/// Walks every record of `segments` (name, path, bytes; oldest first) in order, with every check
/// a replay makes: contiguous sequence numbers, seeds matching file names, the crc chain carried
/// across segments, only the last segment's end torn. `visit` sees each good record; the first
/// corruption ends the walk with its error (after everything before it was visited).
pub(crate) fn walk(
    dir: &Path,
    segments: &[(SegmentName, PathBuf, Vec<u8>)],
    visit: &mut dyn FnMut(Visit<'_>) -> Result<()>,
) -> Result<Resume> {
    let mut chain: Option<u32> = None;
    let mut last_index = 0;
    let mut resume = None;
    for (i, (name, path, bytes)) in segments.iter().enumerate() {
        if i > 0 && name.seq != segments[i - 1].0.seq + 1 {
            return Err(WalError::MissingSegment {
                dir: dir.to_path_buf(),
                seq: segments[i - 1].0.seq + 1,
            });
        }
        let last = i + 1 == segments.len();
        let mut frames = 0;
        let (scan_end, crc) = frame::scan_each(bytes, last, &mut |found| {
            frames += 1;
            match &found.record {
                Decoded::Seed {
                    seq,
                    first_index,
                    previous_crc,
                } => {
                    if (*seq, *first_index) != (name.seq, name.first_index) {
                        return Err(corrupt(
                            path,
                            found.offset,
                            "seed does not match the file name",
                        ));
                    }
                    if chain.is_some_and(|c| c != *previous_crc) {
                        return Err(corrupt(
                            path,
                            found.offset,
                            "crc chain broken between segments",
                        ));
                    }
                }
                Decoded::Entry(e) => last_index = e.index,
                Decoded::Snapshot { index, .. } => last_index = *index,
                _ => {}
            }
            visit(Visit {
                name,
                path,
                offset: found.offset,
                record: &found.record,
            })
        })?;
        if frames == 0 && !matches!(scan_end, End::Corrupt { .. }) {
            return Err(corrupt(path, 0, "segment has no seed"));
        }
        chain = Some(crc);
        let (end, dirty_end, torn) = match scan_end {
            End::Corrupt { offset, why } => return Err(corrupt(path, offset, why)),
            End::Clean { offset } => (offset, offset, None),
            End::Torn { offset, why } => {
                let last_nonzero = bytes
                    .iter()
                    .rposition(|&b| b != 0)
                    .map_or(offset, |p| p + 1);
                (
                    offset,
                    last_nonzero
                        .next_multiple_of(BLOCK)
                        .min(bytes.len())
                        .max(offset),
                    Some(why),
                )
            }
        };
        if last {
            let block_start = end / BLOCK * BLOCK;
            resume = Some(Resume {
                name: *name,
                path: path.clone(),
                end: end as u64,
                dirty_end: dirty_end as u64,
                torn,
                crc,
                tail_block: bytes[block_start..end].to_vec(),
                last_index,
            });
        }
    }
    resume.ok_or(WalError::Directory {
        dir: dir.to_path_buf(),
        what: "holds no WAL segments",
    })
}

/// Replays `segments` (name, path, bytes; oldest first), keeping entries with index > `after`, and
/// also those of the `keep` indexes before it that the WAL still holds (no gap is an error there).
pub(crate) fn replay(
    dir: &Path,
    segments: &[(SegmentName, PathBuf, Vec<u8>)],
    after: u64,
    keep: u64,
) -> Result<(Replay, Resume)> {
    let floor = after.saturating_sub(keep);
    let mut out = Replay::default();
    let resume = walk(dir, segments, &mut |v| {
        match v.record {
            Decoded::Seed { .. } => {}
            Decoded::Metadata(m) => out.metadata = Some(m.clone()),
            Decoded::HardState(hs) => out.hard_state = *hs,
            Decoded::Snapshot { index, term } => {
                // The log restarts after the marker: what came before it is void.
                out.snapshots.push((*index, *term));
                out.entries.clear();
            }
            Decoded::Entry(e) if e.index <= floor => {}
            Decoded::Entry(e) => {
                let expected = out
                    .entries
                    .last()
                    .map_or(e.index.min(after + 1), |l| l.index + 1);
                if e.index > expected {
                    if out.entries.is_empty() {
                        return Err(WalError::Gap {
                            dir: dir.to_path_buf(),
                            after,
                            next: e.index,
                        });
                    }
                    return Err(corrupt(
                        v.path,
                        v.offset,
                        format!("entry {} follows entry {}", e.index, expected - 1),
                    ));
                }
                // Entries are contiguous from the first kept one: an overwrite cuts at its index.
                if let Some(first) = out.entries.first().map(|f| f.index)
                    && e.index < expected
                {
                    out.entries.truncate(e.index.saturating_sub(first) as usize);
                }
                out.entries.push(e.clone());
            }
        }
        Ok(())
    })?;
    Ok((out, resume))
}
