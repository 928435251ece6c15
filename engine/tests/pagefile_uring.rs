//! The page file's writes on io_uring ([`UringFile`]) as keelson's raft core performs them: staged
//! transactions published through io_uring while a sync's operations run in another task of the
//! same executor. Every published state must be what readers see, `check` must pass throughout,
//! and a reopened file must hold exactly what the last finished sync made durable.

mod support;

use std::cell::RefCell;
use std::rc::Rc;

use keelson_engine::pagefile::{Db, Options, Publisher, UringFile};
use support::model::{self, ModelBucket, Op};

/// A transaction's operations: a put of a growing value into bucket `a` and a few random keys.
fn ops(round: u64) -> Vec<Op> {
    let mut ops = vec![Op::Put {
        path: vec![0],
        key: (round % 700) as u16,
        len: 100 + (round % 900) as usize,
    }];
    if round.is_multiple_of(3) {
        ops.push(Op::Delete {
            path: vec![0],
            key: ((round * 7) % 700) as u16,
        });
    }
    ops
}

#[test]
fn publishes_and_syncs_on_io_uring_overlap_and_reopen_as_the_last_sync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let (expected, synced) = support::executor::run({
        let path = path.clone();
        move || async move {
            let (db, mut w) = Db::open(&path, Options::default()).unwrap();
            let file = UringFile::open(&db).await.unwrap();
            let mut published = ModelBucket::default();
            let mut txn = w.begin().unwrap();
            model::apply_engine(
                &mut txn,
                &Op::CreateBucket {
                    path: vec![],
                    name: 0,
                },
                0,
            );
            model::apply_model(
                &mut published,
                &Op::CreateBucket {
                    path: vec![],
                    name: 0,
                },
                0,
            );
            file.publish(txn.stage().unwrap()).await.unwrap();
            let mut synced = ModelBucket::default();
            // The sync in flight: its task's outcome, and the content it makes durable.
            let mut in_flight: Option<(glommio::task::JoinHandle<_>, ModelBucket)> = None;
            let outcome = Rc::new(RefCell::new(None));
            let mut overlapped = 0;
            for round in 1..400u64 {
                let mut working = published.clone();
                let mut txn = w.begin().unwrap();
                for op in ops(round) {
                    assert_eq!(
                        model::apply_engine(&mut txn, &op, round),
                        model::apply_model(&mut working, &op, round)
                    );
                }
                file.publish(txn.stage().unwrap()).await.unwrap();
                published = working;
                assert_eq!(model::dump(&db.begin_read().unwrap()), published);
                assert!(w.check().is_empty(), "round {round}: {:?}", w.check());
                if let Some((task, target)) = in_flight.take() {
                    if outcome.borrow().is_some() {
                        task.await;
                        let done = outcome.borrow_mut().take().unwrap();
                        w.finish_sync(done).unwrap();
                        synced = target;
                    } else {
                        overlapped += 1;
                        in_flight = Some((task, target));
                    }
                } else if round.is_multiple_of(10) {
                    let plan = w.begin_sync().unwrap().expect("something to sync");
                    let (file, outcome) = (file.clone(), outcome.clone());
                    let task = glommio::spawn_local(async move {
                        let done = file.run(plan).await;
                        *outcome.borrow_mut() = Some(done);
                    })
                    .detach();
                    in_flight = Some((task, published.clone()));
                }
                glommio::yield_if_needed().await;
            }
            if let Some((task, target)) = in_flight {
                task.await;
                w.finish_sync(outcome.borrow_mut().take().unwrap()).unwrap();
                synced = target;
            }
            assert!(overlapped > 0, "publishes went on while a sync ran");
            (published, synced)
        }
    });
    assert_ne!(
        expected, synced,
        "the last rounds were published, not synced"
    );
    let (db, w) = Db::open(&path, Options::default()).unwrap();
    assert!(w.check().is_empty());
    assert_eq!(model::dump(&db.begin_read().unwrap()), synced);
}
