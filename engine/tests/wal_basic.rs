//! The WAL through its public API on a real executor and real files (O_DIRECT, fdatasync):
//! replay after reopen, replay after a given index, overwritten suffixes, segment rollover and
//! release, group commit, fail-stop on fsync errors, and a property test of random batches.

mod support;

use std::cell::Cell;
use std::io;
use std::path::Path;
use std::rc::Rc;

use keelson_engine::wal::{Entry, EntryKind, HardState, IoPoint, Options, Record, Wal, WalError};
use proptest::prelude::*;
use support::executor::run;

fn entry(index: u64, term: u64, len: usize) -> Entry {
    let data = (0..len)
        .map(|i| (index as usize * 7 + i) as u8 | 1)
        .collect();
    Entry {
        index,
        term,
        kind: EntryKind::Normal,
        context: Vec::new(),
        data,
    }
}

fn small(segment_size: u64) -> Options {
    Options {
        segment_size,
        ..Options::default()
    }
}

#[test]
fn every_record_kind_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let wal = Wal::create(&path, b"member 1 of cluster 7", 1, small(1 << 20))
            .await
            .unwrap();
        // The log restarts after a snapshot installed at 20; the entries follow it.
        wal.restart_after(20, 2).await.unwrap();
        let conf = Entry {
            index: 21,
            term: 2,
            kind: EntryKind::ConfChangeV2,
            context: b"ctx".to_vec(),
            data: b"add 2".to_vec(),
        };
        wal.append_durably(&[
            Record::from(&conf),
            Record::HardState(HardState {
                term: 2,
                vote: 1,
                commit: 21,
            }),
        ])
        .await
        .unwrap();
        let entries: Vec<Entry> = (22..=50).map(|i| entry(i, 2, 100)).collect();
        let records: Vec<Record<'_>> = entries.iter().map(Record::from).collect();
        wal.append_durably(&records).await.unwrap();
        wal.append_durably(&[Record::HardState(HardState {
            term: 2,
            vote: 1,
            commit: 50,
        })])
        .await
        .unwrap();
        wal.close().await;

        let (_wal, replay) = Wal::open(&path, 20, small(1 << 20)).await.unwrap();
        assert_eq!(
            replay.metadata.as_deref(),
            Some(&b"member 1 of cluster 7"[..])
        );
        assert_eq!(
            replay.hard_state,
            HardState {
                term: 2,
                vote: 1,
                commit: 50
            }
        );
        assert_eq!(replay.snapshots, vec![(20, 2)]);
        assert_eq!(replay.entries[0], conf);
        assert_eq!(&replay.entries[1..], &entries[..]);
    });
}

#[test]
fn a_snapshot_marker_voids_the_entries_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let wal = Wal::create(&path, b"m", 1, small(1 << 20)).await.unwrap();
        // A follower had entries 1..=10, some of a stale term; the leader's snapshot at 30 replaced
        // them, and the log went on from 31.
        let stale: Vec<Entry> = (1..=10).map(|i| entry(i, 1, 30)).collect();
        wal.append_durably(&stale.iter().map(Record::from).collect::<Vec<_>>())
            .await
            .unwrap();
        wal.restart_after(30, 3).await.unwrap();
        let after: Vec<Entry> = (31..=33).map(|i| entry(i, 3, 30)).collect();
        wal.append_durably(&after.iter().map(Record::from).collect::<Vec<_>>())
            .await
            .unwrap();
        wal.close().await;

        let (wal, replay) = Wal::open_keeping(&path, 30, 5000, small(1 << 20))
            .await
            .unwrap();
        assert_eq!(replay.entries, after, "nothing before the marker survives");
        assert_eq!(replay.snapshots, vec![(30, 3)]);
        // Appends continue after the last entry, across a reopen.
        wal.append_durably(&[Record::from(&entry(34, 3, 5))])
            .await
            .unwrap();
        wal.close().await;
        let (wal, replay) = Wal::open(&path, 32, small(1 << 20)).await.unwrap();
        assert_eq!(replay.entries, vec![after[2].clone(), entry(34, 3, 5)]);
        wal.close().await;
        // A page file behind the snapshot the WAL says was installed cannot be caught up.
        let behind = Wal::open(&path, 5, small(1 << 20)).await;
        assert!(matches!(behind, Err(WalError::Gap { .. })), "{behind:?}");
    });
}

#[test]
fn replay_starts_after_the_given_index_and_resolves_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let wal = Wal::create(&path, b"m", 1, small(1 << 20)).await.unwrap();
        let first: Vec<Entry> = (1..=10).map(|i| entry(i, 1, 30)).collect();
        wal.append_durably(&first.iter().map(Record::from).collect::<Vec<_>>())
            .await
            .unwrap();
        // A new leader overwrote the uncommitted suffix from index 7.
        let second: Vec<Entry> = (7..=8).map(|i| entry(i, 2, 40)).collect();
        wal.append_durably(&second.iter().map(Record::from).collect::<Vec<_>>())
            .await
            .unwrap();
        wal.close().await;

        let (wal, replay) = Wal::open(&path, 4, small(1 << 20)).await.unwrap();
        let expected: Vec<Entry> = first[4..6].iter().chain(&second).cloned().collect();
        assert_eq!(replay.entries, expected);
        // Appending continues the log after the resolved suffix.
        wal.append_durably(&[Record::from(&entry(9, 2, 5))])
            .await
            .unwrap();
        wal.close().await;
        let (wal, replay) = Wal::open(&path, 8, small(1 << 20)).await.unwrap();
        assert_eq!(replay.entries, vec![entry(9, 2, 5)]);
        wal.close().await;
        let (_wal, replay) = Wal::open(&path, 100, small(1 << 20)).await.unwrap();
        assert!(replay.entries.is_empty());
    });
}

#[test]
fn segments_roll_over_and_released_ones_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let wal = Wal::create(&path, b"m", 1, small(64 << 10)).await.unwrap();
        for i in 1..=300 {
            wal.append_durably(&[
                Record::from(&entry(i, 1, 900)),
                Record::HardState(HardState {
                    term: 1,
                    vote: 1,
                    commit: i,
                }),
            ])
            .await
            .unwrap();
        }
        let segments = wal.segments();
        assert!(segments.len() >= 4, "{segments:?}");
        assert!(
            segments
                .windows(2)
                .all(|w| w[1].seq == w[0].seq + 1 && w[1].first_index > w[0].first_index)
        );
        let cut = segments[2].first_index;
        wal.release_before(cut).await.unwrap();
        assert_eq!(wal.segments(), segments[2..]);
        let on_disk: Vec<_> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        for s in &segments[..2] {
            assert!(!on_disk.contains(&s.file_name()), "{on_disk:?}");
        }
        wal.close().await;

        let (wal, replay) = Wal::open(&path, cut - 1, small(64 << 10)).await.unwrap();
        assert_eq!(replay.entries.first().map(|e| e.index), Some(cut));
        assert_eq!(replay.entries.len() as u64, 300 - cut + 1);
        assert_eq!(
            replay.hard_state.commit, 300,
            "the head of every segment repeats the hard state"
        );
        assert_eq!(
            replay.metadata.as_deref(),
            Some(&b"m"[..]),
            "and the metadata"
        );
        wal.close().await;
        let err = Wal::open(&path, 0, small(64 << 10)).await.unwrap_err();
        assert!(
            matches!(err, WalError::Gap { after: 0, next, .. } if next == cut),
            "{err}"
        );
        // Keeping entries before the index: as many as asked, as far as the WAL still holds them.
        let (wal, replay) = Wal::open_keeping(&path, 250, 20, small(64 << 10))
            .await
            .unwrap();
        assert_eq!(replay.entries.first().map(|e| e.index), Some(231));
        assert_eq!(replay.entries.last().map(|e| e.index), Some(300));
        wal.close().await;
        let (wal, replay) = Wal::open_keeping(&path, 250, 1000, small(64 << 10))
            .await
            .unwrap();
        assert_eq!(replay.entries.first().map(|e| e.index), Some(cut));
        assert_eq!(replay.entries.len() as u64, 300 - cut + 1);
        wal.close().await;
        let err = Wal::open_keeping(&path, cut - 5, 1000, small(64 << 10))
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(err, WalError::Gap { next, .. } if next == cut),
            "entries after the index are still required: {err}"
        );
    });
}

#[test]
fn concurrent_appenders_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let wal = Wal::create(&path, b"m", 1, Options::default())
            .await
            .unwrap();
        let next = Rc::new(Cell::new(1u64));
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let (wal, next) = (wal.clone(), next.clone());
                glommio::spawn_local(async move {
                    for _ in 0..5 {
                        let e = entry(next.get(), 1, 256);
                        next.set(next.get() + 1);
                        wal.append(&[Record::from(&e)])
                            .await
                            .unwrap()
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
        let stats = wal.stats();
        assert_eq!(stats.appends, 1000);
        assert!(stats.fsyncs * 10 < stats.appends, "group commit: {stats:?}");
        wal.close().await;
        let (_wal, replay) = Wal::open(&path, 0, Options::default()).await.unwrap();
        assert_eq!(replay.entries.len(), 1000);
        assert!(
            replay
                .entries
                .iter()
                .enumerate()
                .all(|(i, e)| *e == entry(i as u64 + 1, 1, 256))
        );
    });
}

#[test]
fn a_failed_fsync_stops_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let syncs = Rc::new(Cell::new(0u32));
        let counter = syncs.clone();
        let faults: keelson_engine::wal::FaultHook = Rc::new(move |point| {
            if point == IoPoint::Sync {
                counter.set(counter.get() + 1);
                if counter.get() == 5 {
                    return Err(io::Error::from_raw_os_error(5));
                }
            }
            Ok(())
        });
        let wal = Wal::create(
            &path,
            b"m",
            1,
            Options {
                faults: Some(faults),
                ..Options::default()
            },
        )
        .await
        .unwrap();
        let mut index = 1;
        let err = loop {
            match wal
                .append_durably(&[Record::from(&entry(index, 1, 10))])
                .await
            {
                Ok(()) => index += 1,
                Err(e) => break e,
            }
        };
        assert!(
            matches!(err, WalError::Stopped(ref why) if why.contains("fdatasync")),
            "{err}"
        );
        let again = wal
            .append(&[Record::from(&entry(index + 1, 1, 10))])
            .await
            .unwrap_err();
        assert!(
            again
                .to_string()
                .contains("wal stopped after a failed write or fsync"),
            "{again}"
        );
        wal.close().await;
        // Everything acknowledged before the failure is there.
        let (_wal, replay) = Wal::open(&path, 0, Options::default()).await.unwrap();
        assert!(replay.entries.len() as u64 >= index - 1);
        assert!(
            replay
                .entries
                .iter()
                .enumerate()
                .all(|(i, e)| *e == entry(i as u64 + 1, 1, 10))
        );
    });
}

#[test]
fn an_append_larger_than_one_write_goes_out_in_synced_pieces() {
    // Replay takes damage as a torn tail only within one write's reach (1 MiB, or one frame) of the
    // last good frame, so no two writes may be unsynced at once.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let io = Rc::new(std::cell::RefCell::new(Vec::new()));
        let seen = io.clone();
        let faults: keelson_engine::wal::FaultHook = Rc::new(move |point| {
            seen.borrow_mut().push(point);
            Ok(())
        });
        let options = Options {
            faults: Some(faults),
            ..Options::default()
        };
        let wal = Wal::create(&path, b"m", 1, options).await.unwrap();
        io.borrow_mut().clear();
        let big: Vec<Entry> = (1..=5).map(|i| entry(i, 1, 600 << 10)).collect();
        wal.append_durably(&big.iter().map(Record::from).collect::<Vec<_>>())
            .await
            .unwrap();
        let points = io.borrow().clone();
        let writes = points.iter().filter(|p| **p == IoPoint::Write).count();
        assert!(writes >= 3, "3 MB in writes of at most 1 MiB: {points:?}");
        assert!(
            points
                .windows(2)
                .all(|w| w != [IoPoint::Write, IoPoint::Write]),
            "a sync between every two writes: {points:?}"
        );
        wal.close().await;
        let (wal, replay) = Wal::open(&path, 0, Options::default()).await.unwrap();
        assert_eq!(replay.entries, big);
        wal.close().await;
    });
}

#[test]
fn a_directory_holds_one_open_wal_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let wal = Wal::create(&path, b"m", 1, small(64 << 10)).await.unwrap();
        let err = Wal::open(&path, 0, small(64 << 10)).await.unwrap_err();
        assert!(
            err.to_string().contains("in use by another open WAL"),
            "{err}"
        );
        // Dropping a handle stops the WAL in the background; the directory is free once it has.
        let clone = wal.clone();
        drop(wal);
        clone.close().await;
        let (wal, _) = Wal::open(&path, 0, small(64 << 10)).await.unwrap();
        wal.close().await;
    });
}

#[test]
fn create_refuses_an_existing_wal_and_open_an_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let empty = path.join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(matches!(
            Wal::open(&empty, 0, Options::default()).await,
            Err(WalError::Directory { .. })
        ));
        Wal::create(&path, b"m", 1, small(64 << 10))
            .await
            .unwrap()
            .close()
            .await;
        assert!(matches!(
            Wal::create(&path, b"m", 1, small(64 << 10)).await,
            Err(WalError::Directory { .. })
        ));
    });
}

/// A batch shape for the property test: entries of these sizes, maybe followed by a hard state.
#[derive(Debug, Clone)]
struct Batch {
    sizes: Vec<usize>,
    hard_state: bool,
}

fn batches() -> impl Strategy<Value = Vec<Batch>> {
    let size = prop_oneof![6 => 0usize..200, 3 => 200usize..3000, 1 => 3000usize..20_000];
    let batch = (prop::collection::vec(size, 1..8), any::<bool>())
        .prop_map(|(sizes, hard_state)| Batch { sizes, hard_state });
    prop::collection::vec(batch, 1..40)
}

fn round_trip(dir: &Path, batches: Vec<Batch>, after: u64) {
    let path = dir.to_path_buf();
    run(move || async move {
        let options = small(64 << 10);
        let wal = Wal::create(&path, b"m", 1, options.clone()).await.unwrap();
        let mut written = Vec::new();
        let mut hard_state = HardState::default();
        for batch in &batches {
            let first = written.len() as u64 + 1;
            let entries: Vec<Entry> = batch
                .sizes
                .iter()
                .zip(first..)
                .map(|(&len, index)| entry(index, 3, len))
                .collect();
            written.extend(entries.iter().cloned());
            let mut records: Vec<Record<'_>> = entries.iter().map(Record::from).collect();
            if batch.hard_state {
                hard_state = HardState {
                    term: 3,
                    vote: 2,
                    commit: written.len() as u64,
                };
                records.push(Record::HardState(hard_state));
            }
            wal.append_durably(&records).await.unwrap();
        }
        wal.close().await;
        let (_wal, replay) = Wal::open(&path, after, options).await.unwrap();
        assert_eq!(replay.hard_state, hard_state);
        let expected: Vec<Entry> = written.into_iter().filter(|e| e.index > after).collect();
        assert!(
            replay.entries == expected,
            "replay differs from what was appended"
        );
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_batches_replay_as_appended(batches in batches(), after in 0u64..20) {
        let dir = tempfile::tempdir().unwrap();
        round_trip(dir.path(), batches, after);
    }
}
