//! Crash tests of the commit protocol (the table in `engine/docs/format.md`). A workload of random
//! transactions, with syncs, runs on a simulated disk; it is replayed once for **every I/O call it
//! makes**, with the power cut at that call, and once more with just that call failing (a failed
//! write or fsync must stop the writer; a failed resize only rolls its transaction back). Each
//! time the disk image a power cut would leave — nothing, everything, or random sectors of what was
//! not synced — must open, pass the consistency check, and equal the model as of the last completed
//! sync (or of the sync in flight, which may or may not have reached the disk).

mod support;

use std::path::Path;

use keelson_engine::pagefile::{Db, Error, Options};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use support::crashfs::{Disk, Faults, Tear};
use support::model::{self, ModelBucket, Op};

struct Step {
    ops: Vec<Op>,
    sync: bool,
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
        sync: false,
    };
    std::iter::once(first)
        .chain((1..steps).map(|i| Step {
            ops: ops.new_tree(&mut runner).unwrap().current(),
            sync: i % 4 == 3 || i % 7 == 0,
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
                    return Run {
                        disk,
                        synced,
                        in_flight: None,
                        failed: true,
                    };
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
        if step.sync {
            if w.sync().is_err() {
                assert!(
                    matches!(w.begin(), Err(Error::Stopped { .. })),
                    "a failed sync stops the writer"
                );
                assert!(matches!(w.sync(), Err(Error::Stopped { .. })));
                return Run {
                    disk,
                    synced,
                    in_flight: Some(published),
                    failed: true,
                };
            }
            synced = published.clone();
        }
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
