//! The WAL's end, damaged at every byte: truncated (what a crash mid-write leaves) and with a byte
//! flipped (what no crash can leave). Open must return exactly the records that are intact and
//! complete, cut back a torn tail and carry on after it, and fail — naming the segment file and
//! the byte offset — on damage a crash cannot explain. It never returns a changed record.

mod support;

use std::path::{Path, PathBuf};

use keelson_engine::wal::{Decoded, Entry, EntryKind, Options, Record, Wal, WalError, dump};
use support::executor::run;

const SEGMENT: u64 = 64 << 10;

fn entry(index: u64) -> Entry {
    // Non-zero bytes, so a damaged frame never looks like a partly unwritten one.
    let data = (0..100 + (index as usize * 37) % 400)
        .map(|i| (index as usize + i) as u8 | 1)
        .collect();
    Entry {
        index,
        term: 1,
        kind: EntryKind::Normal,
        context: Vec::new(),
        data,
    }
}

fn options() -> Options {
    Options {
        segment_size: SEGMENT,
        ..Options::default()
    }
}

/// Writes entries `1..=n`, one append each.
async fn write(dir: &Path, n: u64) {
    let wal = Wal::create(dir, b"m", 1, options()).await.unwrap();
    for i in 1..=n {
        wal.append_durably(&[Record::from(&entry(i))])
            .await
            .unwrap();
    }
    wal.close().await;
}

/// (segment file, frame offset, entry index) of every entry, and where each segment's data ends.
fn layout(dir: &Path) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    dump(dir, &mut |line| {
        if let Decoded::Entry(e) = line.record {
            out.push((line.segment, line.offset, e.index));
        }
    })
    .unwrap();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().ends_with(".wal") {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

async fn replayed(dir: &Path) -> Result<Vec<Entry>, WalError> {
    let (wal, replay) = Wal::open(dir, 0, options()).await?;
    wal.close().await;
    Ok(replay.entries)
}

/// Replays a copy of the WAL in `original`, made in `scratch`, whose `segment` holds `bytes`.
async fn replay_altered(
    original: &Path,
    scratch: &Path,
    segment: &str,
    bytes: &[u8],
) -> Result<Vec<Entry>, WalError> {
    copy_dir(original, scratch);
    std::fs::write(scratch.join(segment), bytes).unwrap();
    replayed(scratch).await
}

/// The last segment of a WAL of 30 entries written into `dir`.
struct Last {
    segment: String,
    bytes: Vec<u8>,
    /// Where its data ends (frames are padded with zeros to 8 bytes; the data holds no zeros).
    data_end: usize,
    /// (frame offset, entry index) of the entries in it.
    entries: Vec<(u64, u64)>,
}

async fn write_thirty(dir: &Path) -> Last {
    write(dir, 30).await;
    let all = layout(dir);
    let segment = all.last().unwrap().0.clone();
    let bytes = std::fs::read(dir.join(&segment)).unwrap();
    let data_end = (bytes.iter().rposition(|&b| b != 0).unwrap() + 1).next_multiple_of(8);
    let entries = all
        .iter()
        .filter(|(s, _, _)| *s == segment)
        .map(|&(_, o, i)| (o, i))
        .collect();
    Last {
        segment,
        bytes,
        data_end,
        entries,
    }
}

#[test]
fn truncating_the_last_records_at_every_byte_keeps_exactly_the_complete_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let (original, scratch) = (tmp.path().join("wal"), tmp.path().join("scratch"));
    run(move || async move {
        let Last {
            segment,
            bytes,
            data_end,
            entries: in_last,
        } = write_thirty(&original).await;
        let from = in_last[in_last.len() - 3].0 as usize;
        for cut in from..=data_end {
            let got = replay_altered(&original, &scratch, &segment, &bytes[..cut])
                .await
                .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            // Complete: the next frame (or the data end) starts at or before the cut.
            let complete = in_last.iter().enumerate().filter(|(k, _)| {
                let end = in_last.get(k + 1).map_or(data_end, |&(o, _)| o as usize);
                end <= cut
            });
            let last_complete = complete
                .map(|(_, &(_, index))| index)
                .max()
                .unwrap_or(in_last[0].1 - 1);
            let expected: Vec<Entry> = (1..=last_complete).map(entry).collect();
            assert!(
                got == expected,
                "cut at {cut}: replayed {} entries, expected {}",
                got.len(),
                expected.len()
            );
        }
    });
}

#[test]
fn flipping_any_byte_of_the_last_records_is_reported_where_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    let (original, scratch) = (tmp.path().join("wal"), tmp.path().join("scratch"));
    run(move || async move {
        let Last {
            segment,
            bytes,
            data_end,
            entries,
        } = write_thirty(&original).await;
        let starts: Vec<u64> = entries.iter().map(|&(o, _)| o).collect();
        for at in starts[starts.len() - 3] as usize..data_end {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x5a;
            let outcome = replay_altered(&original, &scratch, &segment, &damaged).await;
            let frame = *starts.iter().rev().find(|&&s| s as usize <= at).unwrap();
            match outcome {
                Err(WalError::Corrupt { file, offset, .. }) => {
                    assert_eq!(file, scratch.join(&segment), "byte {at}");
                    assert_eq!(
                        offset, frame,
                        "byte {at}: reported at the start of the damaged frame"
                    );
                }
                other => panic!("byte {at} flipped: expected corruption at {frame}, got {other:?}"),
            }
        }
        // Where the next header would start, a stray byte is damage: a header's sector reaches the
        // disk whole or not at all, so no crash leaves a partial header.
        for at in [data_end, data_end + 7] {
            let mut damaged = bytes.clone();
            damaged[at] = 0x77;
            let outcome = replay_altered(&original, &scratch, &segment, &damaged).await;
            let err = outcome.unwrap_err();
            assert!(
                matches!(err, WalError::Corrupt { offset, .. } if offset == data_end as u64),
                "byte {at}: {err}"
            );
        }
        // In a later sector, after a zero header, it is what a write whose sectors landed out of
        // order leaves: a torn tail, and every record is kept.
        for at in [data_end + 513, data_end + 4096] {
            let mut damaged = bytes.clone();
            damaged[at] = 0x77;
            let outcome = replay_altered(&original, &scratch, &segment, &damaged).await;
            assert_eq!(
                outcome.unwrap(),
                (1..=30).map(entry).collect::<Vec<_>>(),
                "byte {at}"
            );
        }
    });
}

#[test]
fn a_torn_tail_is_cut_back_and_the_log_goes_on_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    run(move || async move {
        write(&dir, 30).await;
        let entries = layout(&dir);
        let (segment, offset, index) = entries.last().unwrap().clone();
        let path = dir.join(&segment);
        let bytes = std::fs::read(&path).unwrap();
        // The last frame lost everything after its header and a few bytes.
        let mut torn = bytes.clone();
        torn[offset as usize + 40..].fill(0);
        std::fs::write(&path, &torn).unwrap();
        let (wal, replay) = Wal::open(&dir, 0, options()).await.unwrap();
        assert_eq!(replay.entries, (1..index).map(entry).collect::<Vec<_>>());
        for i in index..index + 20 {
            wal.append_durably(&[Record::from(&entry(i))])
                .await
                .unwrap();
        }
        wal.close().await;
        let (_wal, replay) = Wal::open(&dir, 0, options()).await.unwrap();
        assert_eq!(
            replay.entries,
            (1..index + 20).map(entry).collect::<Vec<_>>()
        );
    });
}

fn segment_paths(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    paths.sort();
    paths
}

#[test]
fn damage_in_an_earlier_segment_is_always_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let (original, scratch) = (tmp.path().join("wal"), tmp.path().join("scratch"));
    run(move || async move {
        write(&original, 400).await;
        let entries = layout(&original);
        let first = segment_paths(&original)[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let in_first: Vec<u64> = entries
            .iter()
            .filter(|(s, _, _)| *s == first)
            .map(|&(_, o, _)| o)
            .collect();
        assert!(segment_paths(&original).len() >= 3);
        let bytes = std::fs::read(original.join(&first)).unwrap();
        let last_frame = *in_first.last().unwrap() as usize;

        // Cut short: fine at the end of the log, but here the log goes on.
        let err = replay_altered(&original, &scratch, &first, &bytes[..last_frame + 20])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, WalError::Corrupt { file, offset, .. } if *file == scratch.join(&first) && *offset == last_frame as u64),
            "{err}"
        );

        // Its last frame zeroed, as a torn write would leave it: still corruption, and the chain
        // into the next segment is broken.
        let mut zeroed = bytes.clone();
        zeroed[last_frame..].fill(0);
        let err = replay_altered(&original, &scratch, &first, &zeroed)
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("crc chain broken between segments"),
            "{err}"
        );

        // A segment missing from the middle.
        copy_dir(&original, &scratch);
        std::fs::remove_file(&segment_paths(&scratch)[1]).unwrap();
        assert!(matches!(
            replayed(&scratch).await,
            Err(WalError::MissingSegment { seq: 1, .. })
        ));
    });
}
