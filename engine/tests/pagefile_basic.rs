//! The page file's behaviour through its public API: buckets (nested, inline and not), keys across
//! many pages, overflow values, deletes that merge pages, cursors, sequences, reopen, copies — with
//! the consistency check run after every step.

use keelson_engine::pagefile::{Db, Error, Options, Writer};

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:08}").into_bytes()
}

fn value(i: u32, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
}

fn assert_clean(writer: &Writer) {
    let problems = writer.check();
    assert!(problems.is_empty(), "check found: {problems:#?}");
    let read = writer.db().begin_read().unwrap();
    let problems = read.check();
    assert!(problems.is_empty(), "reader check found: {problems:#?}");
}

fn open(dir: &tempfile::TempDir) -> (Db, Writer) {
    Db::open(dir.path().join("db"), Options::default()).unwrap()
}

#[test]
fn many_keys_split_into_a_deep_tree_and_merge_back_when_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (db, mut w) = open(&dir);
    for batch in 0..20u32 {
        let mut txn = w.begin().unwrap();
        let mut b = txn.create_bucket_if_missing(b"data").unwrap();
        for i in batch * 1000..(batch + 1) * 1000 {
            let k = (i * 7919) % 20_000;
            b.put(&key(k), &value(k, 100)).unwrap();
        }
        txn.publish().unwrap();
        if batch % 5 == 4 {
            w.sync().unwrap();
        }
        assert_clean(&w);
    }
    let read = db.begin_read().unwrap();
    let stats = read.stats().unwrap();
    assert_eq!(
        stats.total.keys - 1,
        20_000,
        "20000 keys plus the bucket name"
    );
    assert!(stats.total.depth >= 3, "depth {}", stats.total.depth);
    let bucket = read.bucket(b"data").unwrap().unwrap();
    let mut c = bucket.cursor();
    let mut n = 0;
    let mut at = c.first().unwrap();
    while let Some((k, v)) = at {
        assert_eq!(k, key(n).as_slice());
        assert_eq!(v, Some(value(n, 100).as_slice()));
        n += 1;
        at = c.next().unwrap();
    }
    assert_eq!(n, 20_000);
    drop(read);

    for batch in 0..19u32 {
        let mut txn = w.begin().unwrap();
        let mut b = txn.bucket(b"data").unwrap();
        for i in batch * 1000..(batch + 1) * 1000 {
            assert!(b.delete(&key(i)).unwrap());
        }
        assert!(
            !b.delete(&key(batch * 1000)).unwrap(),
            "deleting twice is a no-op"
        );
        txn.publish().unwrap();
        assert_clean(&w);
    }
    w.sync().unwrap();
    let read = db.begin_read().unwrap();
    let stats = read.stats().unwrap();
    assert_eq!(stats.buckets[0].1.keys, 1000);
    assert!(
        stats.buckets[0].1.depth <= 2,
        "merged back to depth {}",
        stats.buckets[0].1.depth
    );
    let (free, _) = w.free_pages();
    assert!(free > 100, "deleted pages become reusable: {free}");
}

#[test]
fn cursors_seek_and_walk_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let (db, mut w) = open(&dir);
    let mut txn = w.begin().unwrap();
    let mut b = txn.create_bucket(b"b").unwrap();
    for i in (0..3000).step_by(2) {
        b.put(&key(i), b"v").unwrap();
    }
    txn.publish().unwrap();
    let read = db.begin_read().unwrap();
    let b = read.bucket(b"b").unwrap().unwrap();
    let mut c = b.cursor();
    assert_eq!(c.seek(&key(501)).unwrap().unwrap().0, key(502).as_slice());
    assert_eq!(c.prev().unwrap().unwrap().0, key(500).as_slice());
    assert_eq!(c.next().unwrap().unwrap().0, key(502).as_slice());
    assert_eq!(c.seek(b"a").unwrap().unwrap().0, key(0).as_slice());
    assert_eq!(c.prev().unwrap(), None, "before the first key");
    assert_eq!(c.seek(b"z").unwrap(), None, "past the last key");
    assert_eq!(c.last().unwrap().unwrap().0, key(2998).as_slice());
    let mut n = 1;
    while c.prev().unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 1500);
    assert_eq!(c.first().unwrap().unwrap().0, key(0).as_slice());
}

#[test]
fn overflow_values_and_large_keys_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (db, mut w) = open(&dir);
    let mut txn = w.begin().unwrap();
    let mut b = txn.create_bucket(b"big").unwrap();
    for i in 0..50u32 {
        b.put(&key(i), &value(i, 1000 + i as usize * 997)).unwrap();
    }
    b.put(
        &vec![b'k'; 100_000],
        b"a key larger than bbolt's 32 KiB limit",
    )
    .unwrap();
    assert!(matches!(
        b.put(&vec![b'k'; (1 << 24) + 1], b"x"),
        Err(Error::KeyTooLarge { len: 16777217 })
    ));
    assert!(matches!(b.put(b"", b"x"), Err(Error::KeyRequired)));
    txn.publish().unwrap();
    w.sync().unwrap();
    assert_clean(&w);
    drop((db, w));

    let (db, w) = open(&dir);
    assert_clean(&w);
    let read = db.begin_read().unwrap();
    let b = read.bucket(b"big").unwrap().unwrap();
    for i in 0..50u32 {
        assert_eq!(
            b.get(&key(i)).unwrap(),
            Some(value(i, 1000 + i as usize * 997).as_slice())
        );
    }
    assert_eq!(
        b.get(&vec![b'k'; 100_000]).unwrap(),
        Some(&b"a key larger than bbolt's 32 KiB limit"[..])
    );
    assert!(read.stats().unwrap().total.leaf_overflow > 0);
}

#[test]
fn nested_buckets_move_between_inline_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let (db, mut w) = open(&dir);
    let mut txn = w.begin().unwrap();
    let mut outer = txn.create_bucket(b"outer").unwrap();
    let mut inner = outer.create_bucket(b"inner").unwrap();
    inner.put(b"a", b"1").unwrap();
    assert_eq!(inner.next_sequence().unwrap(), 1);
    assert_eq!(inner.next_sequence().unwrap(), 2);
    assert!(matches!(
        outer.create_bucket(b"inner"),
        Err(Error::BucketExists)
    ));
    outer.put(b"plain", b"value").unwrap();
    assert!(matches!(
        outer.create_bucket(b"plain"),
        Err(Error::IncompatibleValue)
    ));
    assert!(matches!(
        outer.put(b"inner", b"x"),
        Err(Error::IncompatibleValue)
    ));
    assert!(matches!(
        outer.delete(b"inner"),
        Err(Error::IncompatibleValue)
    ));
    assert!(matches!(
        outer.delete_bucket(b"plain"),
        Err(Error::IncompatibleValue)
    ));
    assert!(matches!(outer.bucket(b"nope"), Err(Error::BucketNotFound)));
    txn.publish().unwrap();
    assert_clean(&w);
    {
        let read = db.begin_read().unwrap();
        let stats = read.stats().unwrap();
        assert_eq!(
            stats.total.inline_buckets, 1,
            "inner is inline; outer holds a bucket so is not: {stats:?}"
        );
        let inner = read.bucket_at(&[b"outer", b"inner"]).unwrap().unwrap();
        assert_eq!(inner.get(b"a").unwrap(), Some(&b"1"[..]));
        assert_eq!(inner.sequence(), 2);
        assert_eq!(
            read.bucket(b"outer")
                .unwrap()
                .unwrap()
                .get(b"inner")
                .unwrap(),
            None,
            "bucket keys have no value"
        );
    }

    // Grow the inner bucket past a quarter page: it moves to pages of its own.
    let mut txn = w.begin().unwrap();
    let mut inner = txn.bucket_at(&[b"outer", b"inner"]).unwrap();
    for i in 0..200 {
        inner.put(&key(i), &value(i, 50)).unwrap();
    }
    txn.publish().unwrap();
    assert_clean(&w);
    assert_eq!(
        db.begin_read()
            .unwrap()
            .stats()
            .unwrap()
            .total
            .inline_buckets,
        0
    );

    // Shrink it back: inline again, its pages freed.
    let mut txn = w.begin().unwrap();
    let mut inner = txn.bucket_at(&[b"outer", b"inner"]).unwrap();
    for i in 0..200 {
        inner.delete(&key(i)).unwrap();
    }
    txn.publish().unwrap();
    w.sync().unwrap();
    assert_clean(&w);
    let read = db.begin_read().unwrap();
    assert_eq!(read.stats().unwrap().total.inline_buckets, 1);
    assert_eq!(
        read.bucket_at(&[b"outer", b"inner"])
            .unwrap()
            .unwrap()
            .sequence(),
        2
    );
    drop(read);

    let mut txn = w.begin().unwrap();
    txn.delete_bucket(b"outer").unwrap();
    assert!(matches!(txn.bucket(b"outer"), Err(Error::BucketNotFound)));
    txn.create_bucket(b"outer")
        .unwrap()
        .put(b"fresh", b"1")
        .unwrap();
    txn.publish().unwrap();
    assert_clean(&w);
    let read = db.begin_read().unwrap();
    assert_eq!(
        read.bucket_at(&[b"outer", b"inner"]).unwrap().map(|_| ()),
        None
    );
}

#[test]
fn readers_keep_their_snapshot_while_the_writer_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let (db, mut w) = open(&dir);
    let mut txn = w.begin().unwrap();
    txn.create_bucket(b"b").unwrap().put(b"k", b"old").unwrap();
    txn.publish().unwrap();
    let old = db.begin_read().unwrap();
    for round in 0..50u32 {
        let mut txn = w.begin().unwrap();
        let mut b = txn.bucket(b"b").unwrap();
        b.put(b"k", format!("new{round}").as_bytes()).unwrap();
        for i in 0..100 {
            b.put(&key(round * 100 + i), &value(i, 200)).unwrap();
        }
        txn.publish().unwrap();
        w.sync().unwrap();
    }
    let b = old.bucket(b"b").unwrap().unwrap();
    assert_eq!(b.get(b"k").unwrap(), Some(&b"old"[..]));
    assert_eq!(b.cursor().first().unwrap().unwrap().0, b"k");
    assert!(old.check().is_empty());
    let new = db.begin_read().unwrap();
    assert_eq!(
        new.bucket(b"b").unwrap().unwrap().get(b"k").unwrap(),
        Some(&b"new49"[..])
    );
    assert!(new.id() > old.id());
}

#[test]
fn aborted_transactions_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (db, mut w) = open(&dir);
    let mut txn = w.begin().unwrap();
    txn.create_bucket(b"b").unwrap().put(b"k", b"v").unwrap();
    txn.publish().unwrap();
    let mut txn = w.begin().unwrap();
    txn.delete_bucket(b"b").unwrap();
    txn.create_bucket(b"c").unwrap();
    drop(txn);
    assert_clean(&w);
    let read = db.begin_read().unwrap();
    assert!(read.bucket(b"b").unwrap().is_some());
    assert!(read.bucket(b"c").unwrap().is_none());
}

#[test]
fn copies_stream_and_compact() {
    let dir = tempfile::tempdir().unwrap();
    let (db, mut w) = open(&dir);
    for round in 0..10u32 {
        let mut txn = w.begin().unwrap();
        let mut b = txn.create_bucket_if_missing(b"b").unwrap();
        for i in 0..500 {
            b.put(&key(round * 500 + i), &value(i, 300)).unwrap();
        }
        b.create_bucket_if_missing(b"nested")
            .unwrap()
            .put(b"n", b"v")
            .unwrap();
        if round > 0 {
            for i in 0..400 {
                b.delete(&key((round - 1) * 500 + i)).unwrap();
            }
        }
        txn.publish().unwrap();
    }
    let read = db.begin_read().unwrap();
    let mut bytes = Vec::new();
    assert_eq!(read.write_to(&mut bytes).unwrap(), read.size());
    let copy_path = dir.path().join("copy");
    std::fs::write(&copy_path, &bytes).unwrap();
    let compact_path = dir.path().join("compact");
    read.compact_into(&compact_path, 64 << 10).unwrap();
    assert!(matches!(
        read.compact_into(&compact_path, 1 << 20),
        Err(Error::TargetNotEmpty(_))
    ));

    for path in [&copy_path, &compact_path] {
        let other = Db::open_read_only(path, Options::default()).unwrap();
        let other_read = other.begin_read().unwrap();
        assert!(
            other_read.check().is_empty(),
            "{path:?}: {:?}",
            other_read.check()
        );
        let (a, b) = (
            read.bucket(b"b").unwrap().unwrap(),
            other_read.bucket(b"b").unwrap().unwrap(),
        );
        let (mut ca, mut cb) = (a.cursor(), b.cursor());
        let (mut x, mut y) = (ca.first().unwrap(), cb.first().unwrap());
        while x.is_some() || y.is_some() {
            assert_eq!(x, y);
            x = ca.next().unwrap();
            y = cb.next().unwrap();
        }
    }
    let compacted = std::fs::metadata(&compact_path).unwrap().len();
    assert!(
        compacted < read.size(),
        "compaction drops free pages: {compacted} vs {}",
        read.size()
    );
}

#[test]
fn a_second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, _w) = open(&dir);
    assert!(matches!(
        Db::open(dir.path().join("db"), Options::default()),
        Err(Error::Locked(_))
    ));
    assert!(matches!(
        Db::open_read_only(dir.path().join("db"), Options::default()),
        Err(Error::Locked(_))
    ));
}

#[test]
fn too_many_readers_get_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _w) = Db::open(
        dir.path().join("db"),
        Options {
            max_readers: 3,
            ..Options::default()
        },
    )
    .unwrap();
    let held: Vec<_> = (0..3).map(|_| db.begin_read().unwrap()).collect();
    let err = db.begin_read().unwrap_err();
    assert!(
        err.to_string().contains("all 3 reader slots in use"),
        "{err}"
    );
    drop(held);
    assert!(db.begin_read().is_ok());
}

/// Everything in bucket `b` of a read transaction.
fn contents(read: &keelson_engine::pagefile::ReadTxn) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut all = Vec::new();
    read.bucket(b"b")
        .unwrap()
        .unwrap()
        .for_each(|k, v| {
            all.push((k.to_vec(), v.unwrap().to_vec()));
            Ok(())
        })
        .unwrap();
    all
}

#[test]
fn copies_and_compaction_run_while_the_writer_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (db, mut w) = open(&dir);
    let mut txn = w.begin().unwrap();
    let mut b = txn.create_bucket(b"b").unwrap();
    for i in 0..5000 {
        b.put(&key(i), &value(i, 200)).unwrap();
    }
    txn.publish().unwrap();
    let read = db.begin_read().unwrap();
    let expected = contents(&read);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut round = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut txn = w.begin().unwrap();
                let mut b = txn.bucket(b"b").unwrap();
                for i in 0..200 {
                    let k = (round * 200 + i) % 5000;
                    b.put(&key(k), &value(round, 300)).unwrap();
                    b.delete(&key((k + 2500) % 5000)).unwrap();
                }
                txn.publish().unwrap();
                w.sync().unwrap();
                round += 1;
            }
            (w, round)
        })
    };
    for pass in 0..3 {
        let streamed = dir.path().join(format!("streamed-{pass}"));
        read.write_to(&mut std::fs::File::create(&streamed).unwrap())
            .unwrap();
        let compacted = dir.path().join(format!("compacted-{pass}"));
        read.compact_into(&compacted, 256 << 10).unwrap();
        for path in [&streamed, &compacted] {
            let copy = Db::open_read_only(path, Options::default()).unwrap();
            let copy = copy.begin_read().unwrap();
            assert!(copy.check().is_empty(), "{path:?}: {:?}", copy.check());
            assert!(
                contents(&copy) == expected,
                "{path:?} differs from the snapshot it copied"
            );
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (w, rounds) = writer.join().unwrap();
    assert!(rounds > 0, "the writer made progress during the copies");
    assert_clean(&w);
    assert!(
        contents(&db.begin_read().unwrap()) != expected,
        "the writer's changes are visible to new readers"
    );
}

#[test]
fn readers_are_undisturbed_when_the_file_outgrows_its_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        initial_map_size: 64 << 10,
        ..Options::default()
    };
    let (db, mut w) = Db::open(dir.path().join("db"), options).unwrap();
    let mut txn = w.begin().unwrap();
    txn.create_bucket(b"b")
        .unwrap()
        .put(&key(0), b"first")
        .unwrap();
    txn.publish().unwrap();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let read = db.begin_read().unwrap();
            std::thread::spawn(move || {
                let before = contents(&read);
                for _ in 0..200 {
                    assert_eq!(contents(&read), before);
                }
                read.id()
            })
        })
        .collect();
    // Grow the file to ~16 MiB, far past the 64 KiB mapping, while they read.
    for round in 0..40u32 {
        let mut txn = w.begin().unwrap();
        let mut b = txn.bucket(b"b").unwrap();
        for i in 0..100 {
            b.put(&key(round * 100 + i + 1), &value(i, 4000)).unwrap();
        }
        txn.publish().unwrap();
        if round % 10 == 9 {
            w.sync().unwrap();
        }
    }
    for r in readers {
        r.join().unwrap();
    }
    let read = db.begin_read().unwrap();
    assert!(read.size() > 8 << 20, "file grew to {}", read.size());
    assert_eq!(contents(&read).len(), 4001);
    assert_clean(&w);
}

#[test]
fn a_bucket_containing_its_own_ancestor_is_reported_not_followed_forever() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        // Bucket `a` (one leaf, too big to be inline) holding bucket `n` (with pages of its own).
        let (_db, mut w) = open(&dir);
        let mut txn = w.begin().unwrap();
        let mut a = txn.create_bucket(b"a").unwrap();
        a.put(b"filler", &[1; 1500]).unwrap();
        let mut n = a.create_bucket(b"n").unwrap();
        for i in 0..100 {
            n.put(&key(i), &value(i, 100)).unwrap();
        }
        txn.publish().unwrap();
        w.sync().unwrap();
    }
    // Point bucket `n`'s header at the page holding `a`'s only leaf, which holds `n` itself.
    let mut bytes = std::fs::read(&path).unwrap();
    let page_of = |bytes: &[u8], p: usize| bytes[p * 4096..(p + 1) * 4096].to_vec();
    let (leaf, value_at) = (2..bytes.len() / 4096)
        .find_map(|p| {
            let page = page_of(&bytes, p);
            let count = u16::from_le_bytes([page[10], page[11]]) as usize;
            (page[8] == 0x02).then_some(())?;
            (0..count).find_map(|i| {
                let e = 16 + i * 16;
                let field = |o: usize| {
                    u32::from_le_bytes(page[e + o..e + o + 4].try_into().unwrap()) as usize
                };
                let (flags, pos, ksize) = (field(0), field(4), field(8));
                (flags == 1 && &page[e + pos..e + pos + ksize] == b"n")
                    .then_some((p, p * 4096 + e + pos + ksize))
            })
        })
        .expect("a leaf holding bucket n");
    bytes[value_at..value_at + 8].copy_from_slice(&(leaf as u64).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();

    let db = Db::open_read_only(&path, Options::default()).unwrap();
    let read = db.begin_read().unwrap();
    let leaf_twice = format!("page {leaf}: multiple references");
    assert!(
        read.check().iter().any(|p| p.contains(&leaf_twice)),
        "{:?}",
        read.check()
    );
    assert!(
        read.stats()
            .unwrap_err()
            .to_string()
            .contains("reached twice")
    );
    let err = read
        .compact_into(&dir.path().join("copy"), 1 << 20)
        .unwrap_err();
    assert!(err.to_string().contains("reached twice"), "{err}");
    drop((read, db));
    let (_db, mut w) = Db::open(&path, Options::default()).unwrap();
    let mut txn = w.begin().unwrap();
    let err = txn.delete_bucket(b"a").unwrap_err();
    assert!(
        err.to_string().contains("nested more than 32 deep"),
        "{err}"
    );
}

#[test]
fn a_write_transaction_can_view_several_buckets_as_it_has_changed_them() {
    use keelson_engine::pagefile::View;
    let dir = tempfile::tempdir().unwrap();
    let (_db, mut w) = open(&dir);
    let mut txn = w.begin().unwrap();
    txn.create_bucket(b"a").unwrap().put(b"k", b"1").unwrap();
    txn.create_bucket(b"b").unwrap().put(b"k", b"2").unwrap();
    txn.publish().unwrap();
    let mut txn = w.begin().unwrap();
    txn.bucket(b"a").unwrap().put(b"k", b"changed").unwrap();
    txn.delete_bucket(b"b").unwrap();
    txn.create_bucket(b"c").unwrap().put(b"x", b"y").unwrap();
    {
        let (a, c) = (
            txn.view(b"a").unwrap().unwrap(),
            View::view(&txn, b"c").unwrap().unwrap(),
        );
        assert_eq!(a.get(b"k").unwrap(), Some(&b"changed"[..]));
        assert_eq!(
            c.cursor().first().unwrap(),
            Some((&b"x"[..], Some(&b"y"[..])))
        );
        assert!(
            txn.view(b"b").unwrap().is_none(),
            "deleted in this transaction"
        );
    }
    drop(txn);
    let read = _db.begin_read().unwrap();
    assert_eq!(
        View::view(&read, b"b").unwrap().unwrap().get(b"k").unwrap(),
        Some(&b"2"[..])
    );
}
