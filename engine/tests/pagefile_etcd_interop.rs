//! The page file against etcd's own tools: keelson reads a snapshot a real etcd 3.4 wrote, and
//! `etcdctl snapshot status` (bbolt itself, with its consistency check) reads files keelson wrote.
//! Both sides compute the same digest — etcd's: CRC-32C over every top-level bucket name and every
//! key and value in it — so "equal" means byte for byte.

use std::path::Path;

use std::collections::BTreeMap;

use keelson_engine::pagefile::{Db, Options, ReadTxn, Writer};
use keelson_testkit::etcd::{Etcd, KeyValue, SnapshotStatus, snapshot_status};
use prost::Message;

const CASTAGNOLI: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// etcd's snapshot status, computed by keelson from a read transaction.
fn status_of(read: &ReadTxn) -> SnapshotStatus {
    let mut digest = CASTAGNOLI.digest();
    let (mut total_key, mut revision) = (0, 0);
    let mut names = read.root().cursor();
    let mut at = names.first().unwrap();
    while let Some((name, _)) = at {
        digest.update(name);
        let bucket = read.bucket(name).unwrap().unwrap();
        bucket
            .for_each(|k, v| {
                digest.update(k);
                digest.update(v.unwrap_or_default());
                if name == b"key" {
                    revision = i64::from_be_bytes(k[..8].try_into().unwrap());
                }
                total_key += 1;
                Ok(())
            })
            .unwrap();
        at = names.next().unwrap();
    }
    SnapshotStatus {
        hash: digest.finalize(),
        revision,
        total_key,
        total_size: read.size(),
    }
}

fn status_of_file(path: &Path) -> SnapshotStatus {
    let db = Db::open_read_only(path, Options::default()).unwrap();
    let read = db.begin_read().unwrap();
    let problems = read.check();
    assert!(problems.is_empty(), "{path:?}: {problems:#?}");
    status_of(&read)
}

/// etcd's revision key: 8-byte big-endian main, `_`, 8-byte big-endian sub.
fn revision_key(main: u64, sub: u64) -> Vec<u8> {
    let mut k = main.to_be_bytes().to_vec();
    k.push(b'_');
    k.extend_from_slice(&sub.to_be_bytes());
    k
}

const ETCD_BUCKETS: [&[u8]; 10] = [
    b"key",
    b"meta",
    b"lease",
    b"members",
    b"members_removed",
    b"cluster",
    b"auth",
    b"authUsers",
    b"authRoles",
    b"alarm",
];

#[test]
fn keelson_reads_a_snapshot_written_by_etcd() {
    let etcd = Etcd::start();
    let lease = etcd.grant_lease(3600);
    for i in 0..300u32 {
        let value = vec![b'a' + (i % 26) as u8; (i as usize * 37) % 3000];
        etcd.put(
            format!("/registry/pods/ns{}/pod{i}", i % 7).as_bytes(),
            &value,
            (i % 10 == 0).then_some(lease),
        );
    }
    for i in (0..300u32).step_by(3) {
        etcd.delete(format!("/registry/pods/ns{}/pod{i}", i % 7).as_bytes());
    }
    etcd.put(b"big", &vec![7u8; 200_000], None);
    let snap = etcd.dir.path().join("etcd.snapshot");
    etcd.snapshot(&snap);

    let live = etcd.list();
    let expected = snapshot_status(&snap);
    assert!(expected.total_key > 400, "{expected:?}");
    assert_eq!(status_of_file(&snap), expected);

    // Every revision in the `key` bucket decodes as etcd's KeyValue; replaying them (a revision key
    // ending in `t` is a deletion) gives exactly the keys etcd lists, field for field.
    let db = Db::open_read_only(&snap, Options::default()).unwrap();
    let read = db.begin_read().unwrap();
    let mut replayed: BTreeMap<Vec<u8>, KeyValue> = BTreeMap::new();
    read.bucket(b"key")
        .unwrap()
        .unwrap()
        .for_each(|revision, value| {
            let kv = KeyValue::decode(value.unwrap()).unwrap();
            if revision.len() == 18 && revision[17] == b't' {
                replayed.remove(&kv.key);
            } else {
                assert_eq!(
                    kv.mod_revision,
                    i64::from_be_bytes(revision[..8].try_into().unwrap())
                );
                replayed.insert(kv.key.clone(), kv);
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(replayed.into_values().collect::<Vec<_>>(), live);
    assert!(live.iter().any(|kv| kv.lease != 0) && live.iter().any(|kv| kv.value.len() == 200_000));
}

#[test]
fn keelson_takes_over_an_etcd_file_and_etcd_still_reads_it() {
    let etcd = Etcd::start();
    for i in 0..200u32 {
        etcd.put(format!("k{i}").as_bytes(), format!("v{i}").as_bytes(), None);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("taken.db");
    etcd.snapshot(&path);
    drop(etcd);
    let before = snapshot_status(&path);
    {
        let (_db, mut w) = Db::open(&path, Options::default()).unwrap();
        assert!(w.check().is_empty(), "{:#?}", w.check());
        let mut txn = w.begin().unwrap();
        let mut key = txn.bucket(b"key").unwrap();
        for i in 0..500u64 {
            key.put(
                &revision_key(before.revision as u64 + 1 + i, 0),
                &[1u8; 100],
            )
            .unwrap();
        }
        txn.publish().unwrap();
        w.sync().unwrap();
        assert!(w.check().is_empty(), "{:#?}", w.check());
    }
    let after = snapshot_status(&path);
    assert_eq!(after.total_key, before.total_key + 500);
    assert_eq!(after, status_of_file(&path));
}

/// Writes etcd's bucket schema with thousands of keys, overflow values and many transactions with
/// deletes (so pages are freed and reused and the freelist spans pages).
fn write_etcd_shaped(w: &mut Writer) -> u64 {
    let mut txn = w.begin().unwrap();
    for name in ETCD_BUCKETS {
        txn.create_bucket(name).unwrap();
    }
    txn.bucket(b"meta")
        .unwrap()
        .put(b"consistent_index", &7u64.to_be_bytes())
        .unwrap();
    // keelson's own buckets hold keys beyond bbolt's 32 KiB API limit; bbolt must still read them.
    let mut big = txn.create_bucket(b"keelson_big_keys").unwrap();
    big.put(&vec![b'k'; 100_000], b"v").unwrap();
    big.put(b"small", b"v").unwrap();
    txn.publish().unwrap();
    let mut main = 1u64;
    for round in 0..40u64 {
        let mut txn = w.begin().unwrap();
        let mut key = txn.bucket(b"key").unwrap();
        key.set_fill_percent(0.9);
        for sub in 0..150u64 {
            let len = if sub % 50 == 7 {
                20_000 + sub as usize * 10
            } else {
                100 + (sub as usize * 13) % 400
            };
            key.put(&revision_key(main, sub), &vec![(main + sub) as u8; len])
                .unwrap();
        }
        main += 1;
        if round >= 2 {
            // Compaction-like removal of most of an older revision's keys.
            for sub in 0..100u64 {
                key.delete(&revision_key(main - 3, sub)).unwrap();
            }
        }
        let mut lease = txn.bucket(b"lease").unwrap();
        lease.put(&round.to_be_bytes(), b"lease").unwrap();
        if round % 3 == 0 {
            lease.delete(&(round / 2).to_be_bytes()).unwrap();
        }
        txn.publish().unwrap();
        if round % 4 == 3 {
            w.sync().unwrap();
        }
    }
    w.sync().unwrap();
    main - 1
}

#[test]
fn etcdctl_reads_files_written_by_keelson() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("member.db");
    let (db, mut w) = Db::open(&path, Options::default()).unwrap();
    let last_revision = write_etcd_shaped(&mut w);
    assert!(w.check().is_empty(), "{:#?}", w.check());
    let (free, pending) = w.free_pages();
    assert!(
        free + pending > 50,
        "the workload frees pages: {free} + {pending}"
    );

    let read = db.begin_read().unwrap();
    let ours = status_of(&read);
    assert!(ours.total_key > 2000, "{ours:?}");
    assert_eq!(ours.revision, last_revision as i64);
    let copy = dir.path().join("streamed.db");
    let mut file = std::fs::File::create(&copy).unwrap();
    read.write_to(&mut file).unwrap();
    let compact = dir.path().join("compacted.db");
    read.compact_into(&compact, 1 << 20).unwrap();
    // bbolt takes a shared lock to read: release ours first, as a server would for a tool.
    drop((read, db, w));

    assert_eq!(snapshot_status(&path), ours, "etcdctl on the file itself");
    assert_eq!(snapshot_status(&copy), ours, "etcdctl on a streamed copy");
    let compacted = snapshot_status(&compact);
    assert_eq!(
        (compacted.hash, compacted.total_key, compacted.revision),
        (ours.hash, ours.total_key, ours.revision)
    );
    assert!(compacted.total_size < ours.total_size);
}
