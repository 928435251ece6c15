//! Crash tests of the commit protocol (the table in `engine/docs/format.md`). A workload of random
//! transactions, with syncs, runs on a simulated disk; it is replayed once for **every I/O call it
//! makes**, with the power cut at that call, and once more with just that call failing (a failed
//! write or fsync must stop the writer; a failed resize only rolls its transaction back). Each
//! time the disk image a power cut would leave — nothing, everything, or random sectors of what was
//! not synced — must open, pass the consistency check, and equal the model as of the last completed
//! sync (or of the sync in flight, which may or may not have reached the disk).
//!
//! Some syncs are *spread*: begun at one step, their I/O performed one operation after each of the
//! next transactions' publishes, as keelson's raft core overlaps a page-file sync with the applies
//! that go on meanwhile. A crash anywhere in between must still leave the last sync or that one.

mod support;

use std::path::Path;

use keelson_engine::pagefile::{Db, Error, IoStep, Options};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use support::crashfs::{Disk, Faults, Tear};
use support::model::{self, ModelBucket, Op};

#[derive(Clone, Copy, PartialEq)]
enum Sync {
    No,
    /// `Writer::sync` after the step's publish.
    Now,
    /// `Writer::begin_sync` after the step's publish; one of its operations after each later
    /// publish; `finish_sync` after the last.
    Spread,
}

struct Step {
    ops: Vec<Op>,
    sync: Sync,
}

fn workload(seed: u64, steps: usize) -> Vec<Step> {
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &{
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_le_bytes());
        s
    });
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let ops = proptest::collection::vec(model::op(), 1..6);
    let first = Step {
        ops: vec![
            Op::CreateBucket {
                path: vec![],
                name: 0,
            },
            Op::CreateBucket {
                path: vec![],
                name: 1,
            },
        ],
        sync: Sync::No,
    };
    std::iter::once(first)
        .chain((1..steps).map(|i| Step {
            ops: ops.new_tree(&mut runner).unwrap().current(),
            sync: if i % 4 == 3 || i % 7 == 0 {
                Sync::Now
            } else if i % 5 == 1 {
                Sync::Spread
            } else {
                Sync::No
            },
        }))
        .collect()
}

/// What the workload got done before the fault.
struct Run {
    disk: Disk,
    synced: ModelBucket,
    in_flight: Option<ModelBucket>,
    failed: bool,
}

fn run(template: &[u8], path: &Path, steps: &[Step], faults: Faults) -> Run {
    std::fs::write(path, template).unwrap();
    let (layer, disk) = Disk::layer(template, faults);
    let (_db, mut w) = Db::open(
        path,
        Options {
            io: Some(layer),
            ..Options::default()
        },
    )
    .unwrap();
    let mut published = ModelBucket::default();
    let mut synced = ModelBucket::default();
    // A spread sync: its remaining operations and the content it makes durable.
    let mut spread: Option<(std::vec::IntoIter<IoStep>, ModelBucket)> = None;
    let stopped = |disk: Disk, synced, in_flight| Run {
        disk,
        synced,
        in_flight,
        failed: true,
    };
    for (n, step) in steps.iter().enumerate() {
        let mut working = published.clone();
        let mut txn = w.begin().unwrap();
        for op in &step.ops {
            assert_eq!(
                model::apply_engine(&mut txn, op, n as u64),
                model::apply_model(&mut working, op, n as u64)
            );
        }
        if txn.publish().is_err() {
            match w.begin() {
                // A failed write stops the writer, as a power cut would.
                Err(Error::Stopped { .. }) => {
                    return stopped(disk, synced, spread.map(|(_, target)| target));
                }
                // A failed resize rolls the transaction back; the writer goes on without it.
                Ok(txn) => {
                    drop(txn);
                    assert!(
                        w.check().is_empty(),
                        "after a rolled-back publish: {:?}",
                        w.check()
                    );
                    assert_eq!(model::dump(&w.db().begin_read().unwrap()), published);
                    continue;
                }
                Err(e) => panic!("unexpected: {e}"),
            }
        }
        published = working;
        if let Some((ops, target)) = &mut spread {
            match ops.next() {
                Some(op) => {
                    if let Err(e) = w.perform(op) {
                        assert!(w.finish_sync(Err(e)).is_err());
                        assert!(matches!(w.begin(), Err(Error::Stopped { .. })));
                        return stopped(disk, synced, Some(target.clone()));
                    }
                }
                None => {
                    w.finish_sync(Ok(())).unwrap();
                    synced = target.clone();
                    spread = None;
                }
            }
            assert!(w.check().is_empty(), "mid-sync: {:?}", w.check());
        }
        match step.sync {
            Sync::Now if spread.is_none() => {
                if w.sync().is_err() {
                    assert!(
                        matches!(w.begin(), Err(Error::Stopped { .. })),
                        "a failed sync stops the writer"
                    );
                    assert!(matches!(w.sync(), Err(Error::Stopped { .. })));
                    return stopped(disk, synced, Some(published));
                }
                synced = published.clone();
            }
            Sync::Spread if spread.is_none() => {
                let plan = w.begin_sync().unwrap().expect("something was published");
                assert!(
                    matches!(w.begin_sync(), Err(Error::SyncInFlight { .. })),
                    "one sync at a time"
                );
                spread = Some((plan.steps.into_iter(), published.clone()));
            }
            _ => {}
        }
    }
    if let Some((ops, target)) = spread {
        for op in ops {
            if let Err(e) = w.perform(op) {
                assert!(w.finish_sync(Err(e)).is_err());
                return stopped(disk, synced, Some(target));
            }
        }
        w.finish_sync(Ok(())).unwrap();
        synced = target;
    }
    Run {
        disk,
        synced,
        in_flight: None,
        failed: false,
    }
}

/// Opens every crash image of `run` and checks it.
fn check_images(run: &Run, dir: &Path, label: &str) {
    let tears = [Tear::Nothing, Tear::Everything]
        .into_iter()
        .chain((1..=6).map(Tear::Random));
    for (i, tear) in tears.enumerate() {
        let image = run.disk.crash_image(tear);
        let path = dir.join(format!("image-{i}"));
        std::fs::write(&path, &image).unwrap();
        let (db, w) = Db::open(&path, Options::default())
            .unwrap_or_else(|e| panic!("{label}, {tear:?}: open failed: {e}"));
        let problems = w.check();
        assert!(problems.is_empty(), "{label}, {tear:?}: {problems:#?}");
        let got = model::dump(&db.begin_read().unwrap());
        let expected = got == run.synced || run.in_flight.as_ref() == Some(&got);
        assert!(
            expected,
            "{label}, {tear:?}: reopened content is neither the last sync nor the one in flight"
        );
    }
}

fn crash_everywhere(seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let template = {
        let path = dir.path().join("template");
        drop(Db::open(&path, Options::default()).unwrap());
        std::fs::read(&path).unwrap()
    };
    let steps = workload(seed, 44);
    let path = dir.path().join("db");
    let clean = run(&template, &path, &steps, Faults::default());
    assert!(!clean.failed);
    let calls = clean.disk.calls();
    assert!(calls > 60, "the workload does real I/O: {calls} calls");

    for at in 0..calls {
        let crashed = run(
            &template,
            &path,
            &steps,
            Faults {
                power_loss_at: Some(at),
                ..Faults::default()
            },
        );
        assert!(
            crashed.failed,
            "power loss at call {at} surfaces as an error"
        );
        check_images(
            &crashed,
            dir.path(),
            &format!("seed {seed}, power lost at I/O call {at}"),
        );
    }
    let syncs = clean.disk.sync_calls();
    for at in 0..calls {
        let failed = run(
            &template,
            &path,
            &steps,
            Faults {
                fail_at: Some(at),
                ..Faults::default()
            },
        );
        assert!(
            failed.failed || !syncs.contains(&at),
            "a failed fsync is never survived"
        );
        check_images(
            &failed,
            dir.path(),
            &format!("seed {seed}, I/O call {at} failed"),
        );
    }
}

#[test]
fn crash_at_every_io_of_workloads_1_and_2() {
    crash_everywhere(1);
    crash_everywhere(2);
}

#[test]
fn crash_at_every_io_of_workloads_3_and_4() {
    crash_everywhere(3);
    crash_everywhere(4);
}

#[test]
fn crash_at_every_io_of_workloads_5_and_6() {
    crash_everywhere(5);
    crash_everywhere(6);
}
