//! etcd's own WAL — what `etcd` and `etcdctl snapshot restore` leave in `member/wal` — read so
//! that keelson can take over a data dir etcd wrote: [`read_etcd`] reads it whole, and
//! [`take_over_etcd`] puts keelson's WAL in its place with the entries the page file has not
//! applied yet and the last hard state, keeping etcd's files beside it (`wal.etcd`).
//!
//! etcd's format, as its WAL writes it: segments named as keelson's (`<seq>-<first index>.wal`),
//! preallocated with zeros. Each record is a little-endian 8-byte length word — when its top bit is
//! set, its top byte's low bits give the padding after the record to an 8-byte boundary — then a
//! `walpb.Record` {type, crc, data}. Types: 1 metadata (etcd's `Metadata`), 2 a `raftpb.Entry`,
//! 3 a `raftpb.HardState`, 4 a CRC record (first in every segment: the CRC the chain continues
//! from), 5 a snapshot marker (`walpb.Snapshot`). A record's crc is CRC-32C running through the
//! data of every record before it and its own. A zero length word ends what was written. A later
//! entry replaces the entries from its index on, as raft's log does.
//!
//! Invariant of the takeover: at every instant `member/wal` is either etcd's complete WAL or
//! keelson's complete WAL; keelson's is built in `wal.keelson` beside it, made durable, and only
//! then swapped in (a crash before the swap leaves etcd's WAL, and the takeover starts again).

use std::path::{Path, PathBuf};

use glommio::executor;
use keelson_proto::raftpb;
use keelson_proto::walpb;
use prost::Message;

use super::error::{Result, WalError, io_err};
use super::record::{Entry, EntryKind, HardState, Record};
use super::segment::SegmentName;
use super::writer::{Options, Wal};

const METADATA: i64 = 1;
const ENTRY: i64 = 2;
const STATE: i64 = 3;
const CRC: i64 = 4;
const SNAPSHOT: i64 = 5;

/// What etcd's WAL holds.
#[derive(Debug, Default)]
pub struct EtcdLog {
    /// The member's metadata record (etcd's `Metadata`: member and cluster id).
    pub metadata: Vec<u8>,
    /// The last hard state recorded.
    pub hard_state: HardState,
    /// The entries, in log order.
    pub entries: Vec<Entry>,
    /// The last snapshot marker: (index, term).
    pub snapshot: Option<(u64, u64)>,
}

/// etcd's segments in `dir`, oldest first.
fn segments(dir: &Path) -> Result<Vec<PathBuf>> {
    let listing = std::fs::read_dir(dir).map_err(io_err(dir, "read directory"))?;
    let mut found: Vec<(SegmentName, PathBuf)> = listing
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((SegmentName::parse(e.file_name().to_str()?)?, e.path())))
        .collect();
    found.sort();
    Ok(found.into_iter().map(|(_, path)| path).collect())
}

/// The first record of a segment's bytes, if it is one etcd wrote (a CRC record).
fn first_record(bytes: &[u8]) -> Option<walpb::Record> {
    let word = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let len = (word & !(0xff << 56)) as usize;
    let record = walpb::Record::decode(bytes.get(8..8 + len)?).ok()?;
    (record.r#type == CRC).then_some(record)
}

/// Whether `dir` holds etcd's WAL rather than keelson's: its first segment opens with etcd's CRC
/// record.
pub fn is_etcd_wal(dir: &Path) -> bool {
    let Ok(found) = segments(dir) else {
        return false;
    };
    let Some(first) = found.first() else {
        return false;
    };
    let mut head = vec![0u8; 64];
    let read = std::fs::File::open(first).and_then(|f| {
        use std::os::unix::fs::FileExt;
        f.read_at(&mut head, 0)
    });
    read.is_ok_and(|n| first_record(&head[..n]).is_some())
}

/// Reads etcd's WAL in `dir` whole. Damage in the last segment ends it there (a write cut short by
/// a crash, as etcd itself repairs it); damage in any earlier one is an error naming the file and
/// offset.
pub fn read_etcd(dir: &Path) -> Result<EtcdLog> {
    let found = segments(dir)?;
    let mut log = EtcdLog::default();
    let mut crc = 0u32;
    for (n, path) in found.iter().enumerate() {
        let bytes = std::fs::read(path).map_err(io_err(path, "read"))?;
        let last = n + 1 == found.len();
        let corrupt = |offset: usize, why: String| WalError::Corrupt {
            file: path.clone(),
            offset: offset as u64,
            why,
        };
        let mut at = 0;
        while at + 8 <= bytes.len() {
            let word = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
            if word == 0 {
                break;
            }
            let len = (word & !(0xff << 56)) as usize;
            let pad = if word >> 63 == 1 {
                ((word >> 56) & 0x7) as usize
            } else {
                0
            };
            let body = at + 8..at + 8 + len;
            let decoded = bytes
                .get(body)
                .ok_or_else(|| "a record runs past the end of the segment".to_string())
                .and_then(|b| walpb::Record::decode(b).map_err(|e| e.to_string()))
                .and_then(|record| {
                    if record.r#type == CRC {
                        if crc != 0 && record.crc != crc {
                            return Err("the segment's CRC does not continue the chain".into());
                        }
                        crc = record.crc;
                        return Ok(record);
                    }
                    let running = crc32c::crc32c_append(crc, &record.data);
                    if record.crc != running {
                        return Err(format!(
                            "CRC mismatch in a record of type {}",
                            record.r#type
                        ));
                    }
                    crc = running;
                    Ok(record)
                });
            let record = match decoded {
                Ok(record) => record,
                Err(why) if last => {
                    tracing::warn!(file = %path.display(), offset = at, "etcd's WAL ends in a torn record ({why}); read up to it");
                    break;
                }
                Err(why) => return Err(corrupt(at, why)),
            };
            apply(&mut log, record).map_err(|why| corrupt(at, why))?;
            at += 8 + len + pad;
        }
    }
    Ok(log)
}

/// Takes one record into `log`.
fn apply(log: &mut EtcdLog, record: walpb::Record) -> std::result::Result<(), String> {
    let data = &record.data[..];
    match record.r#type {
        // Checked as it was read.
        CRC => {}
        METADATA => log.metadata = record.data,
        ENTRY => {
            let e = raftpb::Entry::decode(data).map_err(|e| e.to_string())?;
            let kind = match raftpb::EntryType::try_from(e.r#type) {
                Ok(raftpb::EntryType::EntryNormal) => EntryKind::Normal,
                Ok(raftpb::EntryType::EntryConfChange) => EntryKind::ConfChange,
                Ok(raftpb::EntryType::EntryConfChangeV2) => EntryKind::ConfChangeV2,
                Err(_) => return Err(format!("an entry of unknown type {}", e.r#type)),
            };
            let keep = log.entries.partition_point(|kept| kept.index < e.index);
            log.entries.truncate(keep);
            log.entries.push(Entry {
                index: e.index,
                term: e.term,
                kind,
                context: Vec::new(),
                data: e.data,
            });
        }
        STATE => {
            let s = raftpb::HardState::decode(data).map_err(|e| e.to_string())?;
            // An empty hard state (etcd writes none) replaces nothing.
            if (s.term, s.vote, s.commit) != (0, 0, 0) {
                log.hard_state = HardState {
                    term: s.term,
                    vote: s.vote,
                    commit: s.commit,
                };
            }
        }
        SNAPSHOT => {
            let s = walpb::Snapshot::decode(data).map_err(|e| e.to_string())?;
            log.snapshot = Some((s.index, s.term));
        }
        other => return Err(format!("a record of unknown type {other}")),
    }
    Ok(())
}

/// What a takeover finds in `member/wal`.
enum Found {
    /// Keelson's WAL, or none.
    NotEtcd,
    /// etcd's WAL, read.
    Etcd(EtcdLog),
}

/// Looks at `dir`, finishing a swap a crash interrupted (blocking calls).
fn look(dir: &Path) -> Result<Found> {
    let (kept, building) = (sibling(dir, "etcd"), sibling(dir, "keelson"));
    if !dir.exists() && building.exists() && kept.exists() {
        // A crash between the two renames: keelson's WAL is complete.
        rename(&building, dir)?;
        return Ok(Found::NotEtcd);
    }
    if !is_etcd_wal(dir) {
        return Ok(Found::NotEtcd);
    }
    if building.exists() {
        remove_dir(&building)?;
    }
    Ok(Found::Etcd(read_etcd(dir)?))
}

/// Replaces etcd's WAL in `dir` with keelson's: the same metadata, the entries after `applied`
/// (the page file's consistent index) and the last hard state; etcd's segments are kept in
/// `wal.etcd` beside it. Also finishes a takeover a crash interrupted. Returns whether it took
/// over (false: `dir` holds no etcd WAL).
pub async fn take_over_etcd(dir: &Path, applied: u64, options: Options) -> Result<bool> {
    let owned = dir.to_path_buf();
    let Found::Etcd(log) = executor().spawn_blocking(move || look(&owned)).await? else {
        return Ok(false);
    };
    let pending: Vec<&Entry> = log.entries.iter().filter(|e| e.index > applied).collect();
    if let Some(first) = pending.first()
        && first.index != applied + 1
    {
        return Err(WalError::Gap {
            dir: dir.to_path_buf(),
            after: applied,
            next: first.index,
        });
    }
    tracing::info!(
        dir = %dir.display(),
        applied,
        entries = pending.len(),
        term = log.hard_state.term,
        commit = log.hard_state.commit,
        "taking over etcd's WAL: keelson's replaces it, etcd's is kept in wal.etcd"
    );
    let building = sibling(dir, "keelson");
    let wal = Wal::create(&building, &log.metadata, applied + 1, options).await?;
    let mut records: Vec<Record<'_>> = pending.iter().map(|e| Record::from(*e)).collect();
    records.push(Record::HardState(log.hard_state));
    wal.append_durably(&records).await?;
    wal.close().await;
    let owned = dir.to_path_buf();
    executor()
        .spawn_blocking(move || {
            rename(&owned, &sibling(&owned, "etcd"))?;
            rename(&sibling(&owned, "keelson"), &owned)
        })
        .await?;
    Ok(true)
}

/// `member/wal.<suffix>` beside `member/wal`.
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    dir.with_file_name(name)
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(io_err(from, "rename"))?;
    let parent = to.parent().unwrap_or(Path::new("."));
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io_err(parent, "fsync directory"))
}

fn remove_dir(dir: &Path) -> Result<()> {
    std::fs::remove_dir_all(dir).map_err(io_err(dir, "remove"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames `records` as etcd's WAL does, CRCs chained from 0.
    fn etcd_segment(records: &[(i64, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut crc = 0u32;
        let head = walpb::Record {
            r#type: CRC,
            crc: 0,
            data: Vec::new(),
        };
        for record in std::iter::once(head).chain(records.iter().map(|(t, d)| {
            crc = crc32c::crc32c_append(crc, d);
            walpb::Record {
                r#type: *t,
                crc,
                data: d.clone(),
            }
        })) {
            let bytes = record.encode_to_vec();
            let pad = (8 - bytes.len() % 8) % 8;
            let mut word = bytes.len() as u64;
            if pad != 0 {
                word |= (0x80 | pad as u64) << 56;
            }
            out.extend_from_slice(&word.to_le_bytes());
            out.extend_from_slice(&bytes);
            out.extend(std::iter::repeat_n(0, pad));
        }
        out.extend(std::iter::repeat_n(0, 4096));
        out
    }

    fn entry(index: u64, term: u64, data: &[u8]) -> (i64, Vec<u8>) {
        let e = raftpb::Entry {
            r#type: 0,
            term,
            index,
            data: data.to_vec(),
        };
        (ENTRY, e.encode_to_vec())
    }

    fn state(term: u64, vote: u64, commit: u64) -> (i64, Vec<u8>) {
        let s = raftpb::HardState { term, vote, commit };
        (STATE, s.encode_to_vec())
    }

    #[test]
    fn a_log_reads_back_with_later_entries_replacing_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        let segment = etcd_segment(&[
            (METADATA, b"meta".to_vec()),
            entry(1, 1, b"a"),
            entry(2, 1, b"b"),
            entry(3, 1, b"c"),
            state(1, 7, 2),
            // A new leader's entry 3 replaces the old one.
            entry(3, 2, b"C"),
            state(2, 7, 3),
            state(0, 0, 0),
        ]);
        std::fs::write(
            dir.path().join("0000000000000000-0000000000000000.wal"),
            segment,
        )
        .unwrap();
        assert!(is_etcd_wal(dir.path()));
        let log = read_etcd(dir.path()).unwrap();
        assert_eq!(log.metadata, b"meta");
        let got: Vec<(u64, u64, Vec<u8>)> = log
            .entries
            .iter()
            .map(|e| (e.index, e.term, e.data.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (1, 1, b"a".to_vec()),
                (2, 1, b"b".to_vec()),
                (3, 2, b"C".to_vec())
            ]
        );
        assert_eq!(
            log.hard_state,
            HardState {
                term: 2,
                vote: 7,
                commit: 3
            }
        );
    }

    #[test]
    fn damage_before_the_last_segment_names_the_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = etcd_segment(&[(METADATA, b"meta".to_vec()), entry(1, 1, b"a")]);
        // Flip a byte of the entry's data: its CRC no longer matches.
        let at = first.windows(1).rposition(|w| w == b"a").unwrap();
        first[at] = b'x';
        std::fs::write(
            dir.path().join("0000000000000000-0000000000000000.wal"),
            first,
        )
        .unwrap();
        let second = etcd_segment(&[entry(2, 1, b"b")]);
        std::fs::write(
            dir.path().join("0000000000000001-0000000000000002.wal"),
            second,
        )
        .unwrap();
        let err = read_etcd(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("0000000000000000-0000000000000000.wal at byte"),
            "{err}"
        );
        assert!(err.contains("CRC mismatch"), "{err}");
        // The same damage in the last segment is a torn tail: read up to it.
        std::fs::remove_file(dir.path().join("0000000000000001-0000000000000002.wal")).unwrap();
        let log = read_etcd(dir.path()).unwrap();
        assert!(log.entries.is_empty());
        assert_eq!(log.metadata, b"meta");
    }

    #[test]
    fn a_keelson_wal_is_not_etcds() {
        let dir = tempfile::tempdir().unwrap();
        glommio::LocalExecutorBuilder::default()
            .spawn({
                let dir = dir.path().to_path_buf();
                move || async move {
                    let wal = Wal::create(&dir, b"meta", 1, Options::default())
                        .await
                        .unwrap();
                    wal.close().await;
                }
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(!is_etcd_wal(dir.path()));
    }
}
