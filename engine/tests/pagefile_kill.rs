//! kill -9 at random moments: a child process publishes and syncs rounds of writes as fast as it
//! can, printing each round once its sync returned; the parent kills it, reopens the file, runs the
//! consistency check, and requires every reported round (and nothing half-done) to be there. Then
//! it starts the child again on the same file, which carries on from what it finds.

mod support;

use std::path::Path;
use std::time::Duration;

use keelson_engine::pagefile::{Db, Options};

const CHILD_ENV: &str = "KEELSON_PAGEFILE_KILL_CHILD";
const KEYS_PER_ROUND: u64 = 40;
/// Rounds kept: each round deletes the keys of the round this many before it.
const KEPT: u64 = 6;

fn round_key(round: u64, i: u64) -> Vec<u8> {
    format!("r{round:08}-{i:03}").into_bytes()
}

fn round_value(round: u64, i: u64) -> Vec<u8> {
    let len = if i == 7 {
        9000
    } else {
        50 + (round * 7 + i) as usize % 300
    };
    vec![(round + i) as u8; len]
}

/// The last round in the file, checking that the file holds exactly rounds `last-KEPT+1 ..= last`.
fn verify(path: &Path) -> u64 {
    let (db, w) = Db::open(path, Options::default()).unwrap();
    let problems = w.check();
    assert!(problems.is_empty(), "{problems:#?}");
    let read = db.begin_read().unwrap();
    let Some(bucket) = read.bucket(b"rounds").unwrap() else {
        return 0;
    };
    let last = u64::from_be_bytes(bucket.get(b"last").unwrap().unwrap().try_into().unwrap());
    let mut expected = std::collections::BTreeMap::new();
    for round in last.saturating_sub(KEPT - 1).max(1)..=last {
        for i in 0..KEYS_PER_ROUND {
            expected.insert(round_key(round, i), round_value(round, i));
        }
    }
    expected.insert(b"last".to_vec(), last.to_be_bytes().to_vec());
    let mut found = std::collections::BTreeMap::new();
    bucket
        .for_each(|k, v| {
            found.insert(k.to_vec(), v.unwrap().to_vec());
            Ok(())
        })
        .unwrap();
    assert!(
        found == expected,
        "file at round {last} does not hold exactly rounds {}..={last}",
        last.saturating_sub(KEPT - 1)
    );
    last
}

/// The child: write rounds forever, reporting each synced one.
fn child(path: &Path) -> ! {
    let (_db, mut w) = Db::open(path, Options::default()).unwrap();
    let mut round = verify_in_child(&w);
    loop {
        round += 1;
        let mut txn = w.begin().unwrap();
        let mut b = txn.create_bucket_if_missing(b"rounds").unwrap();
        for i in 0..KEYS_PER_ROUND {
            b.put(&round_key(round, i), &round_value(round, i)).unwrap();
            if round > KEPT {
                b.delete(&round_key(round - KEPT, i)).unwrap();
            }
        }
        b.put(b"last", &round.to_be_bytes()).unwrap();
        txn.publish().unwrap();
        w.sync().unwrap();
        println!("synced {round}");
    }
}

fn verify_in_child(w: &keelson_engine::pagefile::Writer) -> u64 {
    let read = w.db().begin_read().unwrap();
    read.bucket(b"rounds").unwrap().map_or(0, |b| {
        u64::from_be_bytes(b.get(b"last").unwrap().unwrap().try_into().unwrap())
    })
}

#[test]
fn kill_nine_never_loses_a_synced_round() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        child(Path::new(&path));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut total_rounds = 0;
    for kill in 0..12 {
        let reported = support::kill::run_then_kill(
            "kill_nine_never_loses_a_synced_round",
            CHILD_ENV,
            &path,
            "synced ",
            Duration::from_millis(150),
        );
        let last = verify(&path);
        assert!(
            last >= reported,
            "kill {kill}: round {reported} was reported synced but the file is at {last}"
        );
        total_rounds = last;
    }
    assert!(
        total_rounds > 24,
        "the children made progress: {total_rounds} rounds"
    );
}
