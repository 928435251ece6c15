//! kill -9 under load: a child process runs 64 concurrent appenders on one WAL (small segments, so
//! rollovers happen too), each printing an entry's index once the WAL says it is durable. The
//! parent kills the child at a random moment, reopens the WAL, and requires every index reported
//! durable to be replayed intact, with the log gap-free; then starts the child again on it.

mod support;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use glommio::sync::Semaphore;
use keelson_engine::wal::{Entry, EntryKind, Options, Record, Wal};
use support::executor::run;

const CHILD_ENV: &str = "KEELSON_WAL_KILL_CHILD";

fn entry(index: u64) -> Entry {
    Entry {
        index,
        term: 1,
        kind: EntryKind::Normal,
        context: Vec::new(),
        data: vec![(index % 251) as u8 + 1; 256],
    }
}

fn options() -> Options {
    Options {
        segment_size: 256 << 10,
        ..Options::default()
    }
}

/// The entries in the WAL, checked to be exactly `1..=n` as written.
async fn replay(dir: &Path) -> u64 {
    let (wal, replay) = Wal::open(dir, 0, options()).await.unwrap();
    wal.close().await;
    for (i, e) in replay.entries.iter().enumerate() {
        assert!(
            *e == entry(i as u64 + 1),
            "entry {} replays changed or out of place",
            i + 1
        );
    }
    replay.entries.len() as u64
}

fn child(dir: PathBuf) -> ! {
    run(move || async move {
        let (wal, last) = if dir.join("started").exists() {
            let (wal, replay) = Wal::open(&dir, 0, options()).await.unwrap();
            (wal, replay.entries.last().map_or(0, |e| e.index))
        } else {
            let wal = Wal::create(&dir, b"m", 1, options()).await.unwrap();
            std::fs::write(dir.join("started"), b"").unwrap();
            (wal, 0)
        };
        let next = Rc::new(Cell::new(last + 1));
        // Indexes are taken and framed in one step, so the log is in index order.
        let order = Rc::new(Semaphore::new(1));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (wal, next, order) = (wal.clone(), next.clone(), order.clone());
                glommio::spawn_local(async move {
                    loop {
                        let permit = order.acquire_permit(1).await.unwrap();
                        let index = next.get();
                        next.set(index + 1);
                        let durable = wal.append(&[Record::from(&entry(index))]).await.unwrap();
                        drop(permit);
                        durable.await.unwrap();
                        println!("durable {index}");
                    }
                })
            })
            .collect();
        // They run until the parent kills the process.
        let _running = tasks;
        std::future::pending::<()>().await;
    });
    unreachable!("the appenders run until killed")
}

#[test]
fn kill_nine_never_loses_an_entry_reported_durable() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(PathBuf::from(dir));
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let mut last = 0;
    for kill in 0..10 {
        let reported = support::kill::run_then_kill(
            "kill_nine_never_loses_an_entry_reported_durable",
            CHILD_ENV,
            &dir,
            "durable ",
            Duration::from_millis(200),
        );
        let dir = dir.clone();
        let replayed = run(move || async move { replay(&dir).await });
        assert!(
            replayed >= reported,
            "kill {kill}: entry {reported} was reported durable, the log ends at {replayed}"
        );
        assert!(
            replayed >= last,
            "kill {kill}: the log shrank from {last} to {replayed}"
        );
        last = replayed;
    }
    assert!(last > 1000, "the children made progress: {last} entries");
}
