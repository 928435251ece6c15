//! Frames: the 16-byte header, the chained CRC, and the scan of one segment's bytes that finds its
//! records and decides how its data ends — cleanly, with a torn tail (a write cut short by a crash),
//! or corrupt (`engine/docs/format.md`, "Frames" and "Replay"). Pure bytes, no I/O.

use super::record::{BadPayload, Decoded, KIND_SEED, KIND_SNAPSHOT};

/// Bytes in a frame header.
pub(crate) const HEADER: usize = 16;
/// Frames start at multiples of this.
pub(crate) const ALIGN: usize = 8;
/// The unit a crash can tear a write into.
pub(crate) const SECTOR: usize = 512;
/// The most one write can carry (the gather buffer's bound); a torn write cannot reach further
/// than this (or one record, if larger) past where it began, plus the block it rewrites.
pub(crate) const MAX_WRITE: usize = 1 << 20;
/// O_DIRECT block size the writer aligns to.
pub(crate) const BLOCK: usize = 4096;

/// Length of the frame for a payload of `len` bytes.
pub(crate) fn frame_len(len: usize) -> usize {
    (HEADER + len).next_multiple_of(ALIGN)
}

/// The header's own check: CRC-32 of its first 8 bytes (length, kind, pad).
fn header_crc(header: &[u8]) -> u32 {
    crc32fast::hash(&header[..8])
}

fn crc_of(running: u32, header: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(running);
    h.update(&header[..8]);
    h.update(payload);
    h.finalize()
}

/// Appends a frame of `kind` whose payload `write` appends (exactly `len` bytes), chaining from
/// `running`; returns the frame's crc.
pub(crate) fn encode(
    out: &mut Vec<u8>,
    kind: u8,
    len: usize,
    running: u32,
    write: impl FnOnce(&mut Vec<u8>),
) -> u32 {
    let start = out.len();
    let total = frame_len(len);
    let pad = (total - HEADER - len) as u8;
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[kind, pad, 0, 0]);
    out.extend_from_slice(&[0; 8]);
    write(out);
    debug_assert_eq!(
        out.len(),
        start + HEADER + len,
        "payload length as announced"
    );
    let crc = crc_of(running, &out[start..start + HEADER], &out[start + HEADER..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
    let check = header_crc(&out[start..start + HEADER]);
    out[start + 12..start + 16].copy_from_slice(&check.to_le_bytes());
    out.resize(start + total, 0);
    crc
}

/// A frame found by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// Byte offset of the frame in the segment.
    pub offset: usize,
    pub record: Decoded,
}

/// How a segment's data ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    /// After the last frame, zeros (or the end of the file).
    Clean { offset: usize },
    /// The last segment's final write was cut short at `offset` (everything from there on is
    /// unacknowledged and may be discarded).
    Torn { offset: usize, why: &'static str },
    /// Damage that a crash cannot explain.
    Corrupt { offset: usize, why: String },
}

/// A segment's frames and how its data ends. `running` is the crc the chain continues from after
/// the seed (the running value of the segment's first non-seed frame is the seed's
/// `previous_crc`); `crc` is the running value after the last good frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scan {
    pub frames: Vec<Found>,
    pub end: End,
    pub crc: u32,
}

fn all_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// Whether bytes `[from, to)` hold a 512-byte-aligned sector that is entirely zero (the mark of a
/// write whose sectors did not all reach the disk), clipped to `bytes`.
fn has_zero_sector(bytes: &[u8], from: usize, to: usize) -> bool {
    let to = to.min(bytes.len());
    let mut s = from / SECTOR * SECTOR;
    while s < to {
        let end = (s + SECTOR).min(bytes.len());
        if all_zero(&bytes[s..end]) {
            return true;
        }
        s += SECTOR;
    }
    false
}

/// Scans one segment. `last` says whether it is the newest segment, the only one whose end may
/// be torn.
pub(crate) fn scan(bytes: &[u8], last: bool) -> Scan {
    let mut frames = Vec::new();
    let (end, crc) = scan_each(bytes, last, &mut |frame| {
        frames.push(frame);
        Ok::<_, std::convert::Infallible>(())
    })
    .unwrap_or_else(|never| match never {});
    Scan { frames, end, crc }
}

/// [`scan`], handing each frame to `each` as it is read instead of gathering them (a segment's
/// decoded records would take as much memory again as its bytes): how the data ends and the crc
/// after the last good frame. Stops at the first error `each` returns.
pub(crate) fn scan_each<E>(
    bytes: &[u8],
    last: bool,
    each: &mut dyn FnMut(Found) -> Result<(), E>,
) -> Result<(End, u32), E> {
    let mut first = true;
    let mut running = 0u32;
    let mut offset = 0;
    loop {
        if all_zero(&bytes[offset..(offset + HEADER).min(bytes.len())]) {
            // A zero header (or zeros to the end of the file): the data ends here, unless more
            // follows.
            let end = match bytes[offset..].iter().position(|&b| b != 0) {
                None => End::Clean { offset },
                // The zero header is itself an unwritten sector: a torn write, if within reach.
                Some(_) if last => tail(
                    bytes,
                    offset,
                    HEADER,
                    true,
                    "zero header with data after it",
                ),
                Some(at) => End::Corrupt {
                    offset: offset + at,
                    why: "data after the end of the segment".into(),
                },
            };
            return Ok((end, running));
        }
        let problem = match check(bytes, offset, running, first) {
            Ok((frame, len, crc)) => {
                running = match frame.record {
                    Decoded::Seed { previous_crc, .. } => previous_crc,
                    _ => crc,
                };
                first = false;
                each(frame)?;
                offset += len;
                continue;
            }
            Err(problem) => problem,
        };
        let end = match problem {
            Problem::Damaged { claimed, why } if last => {
                let frame_end = offset.saturating_add(claimed);
                let unwritten =
                    frame_end > bytes.len() || has_zero_sector(bytes, offset, frame_end);
                tail(bytes, offset, claimed, unwritten, why)
            }
            Problem::Damaged { why, .. } => End::Corrupt {
                offset,
                why: why.into(),
            },
            Problem::Invalid(why) => End::Corrupt { offset, why },
        };
        return Ok((end, running));
    }
}

/// Classifies damage at `offset` in the last segment, where a frame of `claimed` bytes was expected:
/// a torn tail if it shows a sign of a write cut short (`torn_looking`: an unwritten sector, or
/// running past the file) and nothing non-zero lies beyond what one write could have reached;
/// otherwise corruption.
fn tail(bytes: &[u8], offset: usize, claimed: usize, torn_looking: bool, why: &'static str) -> End {
    let reach = offset + MAX_WRITE.max(claimed.min(bytes.len())) + BLOCK;
    let beyond_reach = reach < bytes.len() && !all_zero(&bytes[reach..]);
    if torn_looking && !beyond_reach {
        End::Torn { offset, why }
    } else if beyond_reach {
        End::Corrupt {
            offset,
            why: format!("{why}, and data follows beyond the last write's reach"),
        }
    } else {
        End::Corrupt {
            offset,
            why: format!("{why} (no sign of a torn write)"),
        }
    }
}

/// What is wrong with the frame at an offset.
enum Problem {
    /// The frame's payload does not check out, or the frame runs past the end of the file: torn,
    /// or damaged. `claimed` is its length (the header was verified).
    Damaged { claimed: usize, why: &'static str },
    /// Damage a crash cannot explain (a bad header or padding), or a frame that checks out but does
    /// not belong (bad payload, seed out of place).
    Invalid(String),
}

/// Validates the frame at `offset`: header fields, length, crc (chained from `running`, or from 0
/// for the seed that must open a segment), payload.
fn check(
    bytes: &[u8],
    offset: usize,
    running: u32,
    first: bool,
) -> Result<(Found, usize, u32), Problem> {
    if offset + HEADER > bytes.len() {
        return Err(Problem::Damaged {
            claimed: HEADER,
            why: "frame header runs past the end of the file",
        });
    }
    let h = &bytes[offset..offset + HEADER];
    // A header sits inside one sector, which a crash leaves all old (zeros) or all new: a header
    // that fails its own check was damaged some other way.
    if u32::from_le_bytes([h[12], h[13], h[14], h[15]]) != header_crc(h) {
        return Err(Problem::Invalid("frame header damaged".into()));
    }
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let (kind, pad) = (h[4], h[5] as usize);
    let stored = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    let total = frame_len(len);
    if h[6..8] != [0, 0] || total - HEADER - len != pad {
        return Err(Problem::Invalid("malformed frame header".into()));
    }
    if !(KIND_SEED..=KIND_SNAPSHOT).contains(&kind) {
        return Err(Problem::Invalid(format!("unknown record kind {kind}")));
    }
    let damaged = |why| Problem::Damaged {
        claimed: total,
        why,
    };
    if offset + total > bytes.len() {
        return Err(damaged("frame runs past the end of the file"));
    }
    let payload = &bytes[offset + HEADER..offset + HEADER + len];
    let from = if kind == KIND_SEED { 0 } else { running };
    let crc = crc_of(from, h, payload);
    if crc != stored {
        return Err(damaged("crc mismatch"));
    }
    if !all_zero(&bytes[offset + HEADER + len..offset + total]) {
        return Err(Problem::Invalid("padding is not zero".into()));
    }
    let record =
        Decoded::decode(kind, payload).map_err(|BadPayload(why)| Problem::Invalid(why.into()))?;
    match (&record, first) {
        (Decoded::Seed { .. }, true) => {}
        (_, true) => {
            return Err(Problem::Invalid(
                "segment does not begin with a seed".into(),
            ));
        }
        (Decoded::Seed { .. }, false) => {
            return Err(Problem::Invalid("seed in the middle of a segment".into()));
        }
        _ => {}
    }
    Ok((Found { offset, record }, total, crc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::record::{Entry, KIND_ENTRY, Record, seed_payload};

    /// A segment: seed then `n` entries of `size`-byte data; returns bytes and entry offsets.
    fn segment(n: u64, size: usize) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let seed = seed_payload(0, 1, 77);
        encode(&mut out, KIND_SEED, seed.len(), 0, |o| {
            o.extend_from_slice(&seed)
        });
        let mut running = 77;
        let mut offsets = Vec::new();
        for index in 1..=n {
            let e = Entry {
                index,
                term: 1,
                data: vec![index as u8; size],
                ..Entry::default()
            };
            let r = Record::from(&e);
            offsets.push(out.len());
            running = encode(&mut out, KIND_ENTRY, r.payload_len(), running, |o| {
                r.write_payload(o)
            });
        }
        (out, offsets)
    }

    #[test]
    fn a_clean_segment_scans_to_its_end() {
        let (mut bytes, _) = segment(10, 100);
        let len = bytes.len();
        bytes.resize(64 << 10, 0);
        let scan = scan(&bytes, false);
        assert_eq!(scan.frames.len(), 11);
        assert_eq!(scan.end, End::Clean { offset: len });
    }

    #[test]
    fn stale_frames_do_not_pass_for_new_ones() {
        let (a, offsets) = segment(3, 50);
        let (b, _) = segment(3, 50);
        // Same bytes, but a frame chained from a different running crc fails.
        let mut mixed = a[..offsets[2]].to_vec();
        let mut other = Vec::new();
        let e = Entry {
            index: 3,
            term: 1,
            data: vec![3; 50],
            ..Entry::default()
        };
        let r = Record::from(&e);
        encode(&mut other, KIND_ENTRY, r.payload_len(), 12345, |o| {
            r.write_payload(o)
        });
        mixed.extend_from_slice(&other);
        assert_eq!(scan(&mixed, false).frames.len(), 3);
        assert!(matches!(scan(&mixed, false).end, End::Corrupt { .. }));
        assert_eq!(scan(&b, false).frames.len(), 4);
    }

    #[test]
    fn a_bit_flip_before_the_tail_is_corruption_not_a_tear() {
        let (mut bytes, offsets) = segment(10, 700);
        bytes.resize(64 << 10, 0);
        bytes[offsets[4] + 100] ^= 1;
        assert!(
            matches!(scan(&bytes, true).end, End::Corrupt { offset, .. } if offset == offsets[4])
        );
    }

    #[test]
    fn data_ending_less_than_a_header_before_the_end_of_the_file_is_clean() {
        let (bytes, _) = segment(3, 100);
        let mut padded = bytes.clone();
        padded.resize(bytes.len() + 8, 0);
        assert_eq!(
            scan(&padded, false).end,
            End::Clean {
                offset: bytes.len()
            }
        );
    }

    #[test]
    fn a_damaged_length_is_corruption_even_at_the_tail() {
        let (mut bytes, offsets) = segment(10, 700);
        bytes.resize(64 << 10, 0);
        bytes[offsets[9] + 2] ^= 0x10; // the last frame's length now runs past the file
        assert!(
            matches!(scan(&bytes, true).end, End::Corrupt { offset, .. } if offset == offsets[9])
        );
    }

    #[test]
    fn a_write_cut_short_is_a_torn_tail() {
        let (mut bytes, offsets) = segment(10, 2000);
        let last = offsets[9];
        let full = bytes.len();
        bytes.resize(64 << 10, 0);
        // The last frame's second sector never reached the disk.
        let hole = (last / SECTOR + 1) * SECTOR;
        bytes[hole..hole + SECTOR].fill(0);
        assert_eq!(
            scan(&bytes, true).end,
            End::Torn {
                offset: last,
                why: "crc mismatch"
            }
        );
        assert_eq!(scan(&bytes, true).frames.len(), 10);
        // Cut off mid-frame: runs past the end of the file.
        assert!(matches!(
            scan(&bytes[..full - 10], true).end,
            End::Torn { .. }
        ));
        // The same damage in an older segment is corruption.
        assert!(matches!(scan(&bytes, false).end, End::Corrupt { .. }));
    }
}
