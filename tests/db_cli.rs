//! `keelson db` against the real binary: on a snapshot taken from a real etcd 3.4, on files keelson
//! wrote (nested buckets, binary keys), and on damaged or unusable files, which must get one line
//! naming the file and what is wrong, a non-zero exit status, and never a panic.

use std::path::Path;
use std::process::{Command, Output};

use keelson_engine::pagefile::{Db, Options};
use keelson_testkit::etcd::Etcd;

fn keelson(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keelson"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Runs a command that must succeed; returns its standard output.
fn ok(args: &[&str]) -> String {
    let out = keelson(args);
    assert!(
        out.status.success(),
        "keelson {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

/// Runs a command that must fail; returns its one-line error.
fn fails(args: &[&str]) -> String {
    let out = keelson(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "keelson {args:?} should fail with status 1"
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        !err.contains("panicked"),
        "keelson {args:?} panicked: {err}"
    );
    assert_eq!(err.lines().count(), 1, "one line of error: {err}");
    assert!(err.starts_with("keelson: "), "{err}");
    err
}

#[test]
fn inspects_a_snapshot_taken_from_etcd() {
    let etcd = Etcd::start();
    etcd.put(b"/registry/pods/default/web-0", b"{\"kind\":\"Pod\"}", None);
    let lease = etcd.grant_lease(600);
    etcd.put(b"/registry/leases/node-1", b"alive", Some(lease));
    etcd.delete(b"/registry/pods/default/web-0");
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("snap.db");
    etcd.snapshot(&snap);
    let snap = snap.to_str().unwrap();

    assert_eq!(ok(&["db", "check", snap]), "OK\n");
    let buckets = ok(&["db", "buckets", snap]);
    for name in [
        "alarm",
        "auth",
        "authRoles",
        "authUsers",
        "cluster",
        "key",
        "lease",
        "members",
        "members_removed",
        "meta",
    ] {
        assert!(
            buckets.lines().any(|l| l == name),
            "{name} missing from {buckets}"
        );
    }
    // Three revisions (two puts and a delete, the delete a tombstone ending in `t`).
    let revisions = ok(&["db", "keys", snap, "key"]);
    assert_eq!(revisions.lines().count(), 3, "{revisions}");
    assert!(
        revisions
            .lines()
            .last()
            .unwrap()
            .ends_with("_\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00t")
    );
    let first = revisions.lines().next().unwrap();
    assert!(ok(&["db", "get", snap, "key", first]).contains("/registry/pods/default/web-0"));
    let index = ok(&["db", "get", snap, "meta", "consistent_index", "--hex"]);
    assert_eq!(index.trim().len(), 16, "a big-endian u64: {index}");
    assert_eq!(
        ok(&["db", "keys", snap, "lease", "--hex"]).trim(),
        format!("{lease:016x}")
    );
    assert!(ok(&["db", "stats", snap]).contains("Aggregate statistics for 11 buckets"));
}

#[test]
fn escaped_keys_printed_by_keys_are_accepted_by_get() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let (_db, mut w) = Db::open(&path, Options::default()).unwrap();
        let mut txn = w.begin().unwrap();
        let mut outer = txn.create_bucket(b"outer").unwrap();
        let mut inner = outer.create_bucket(b"in\\ner").unwrap();
        inner.put(b"\x00bin\xffary key", b"value \x01").unwrap();
        txn.publish().unwrap();
        w.sync().unwrap();
    }
    let path = path.to_str().unwrap();
    let keys = ok(&["db", "keys", path, "outer"]);
    assert_eq!(keys, "in\\\\ner\n");
    let keys = ok(&["db", "keys", path, "outer", keys.trim()]);
    assert_eq!(keys, "\\x00bin\\xffary key\n");
    assert_eq!(
        ok(&["db", "get", path, "outer", "in\\\\ner", keys.trim()]),
        "value \\x01\n"
    );
    assert_eq!(
        ok(&[
            "db",
            "get",
            path,
            "outer",
            "in\\\\ner",
            keys.trim(),
            "--hex"
        ]),
        "76616c75652001\n"
    );
    assert!(fails(&["db", "get", path, "outer", "in\\\\ner"]).contains("is a bucket, not a value"));
    assert!(fails(&["db", "get", path, "outer", "nope"]).contains("key nope not found"));
    assert!(fails(&["db", "keys", path, "missing"]).contains("bucket missing not found"));
    assert!(fails(&["db", "keys", path, "bad\\escape"]).contains("escapes are understood"));
}

fn damaged(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn damaged_files_get_a_one_line_error_naming_file_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    {
        let (_db, mut w) = Db::open(&good, Options::default()).unwrap();
        let mut txn = w.begin().unwrap();
        let mut b = txn.create_bucket(b"b").unwrap();
        for i in 0..500u32 {
            b.put(&i.to_be_bytes(), &[7; 100]).unwrap();
        }
        txn.publish().unwrap();
        w.sync().unwrap();
    }
    let bytes = std::fs::read(&good).unwrap();

    let not_bolt = damaged(dir.path(), "not-bolt", &vec![0x5a; 20_000]);
    let err = fails(&["db", "check", &not_bolt]);
    assert!(
        err.contains(&not_bolt) && err.contains("bad magic 0x5a5a5a5a, not a bbolt file"),
        "{err}"
    );

    let truncated = damaged(dir.path(), "truncated", &bytes[..3 * 4096]);
    assert!(fails(&["db", "buckets", &truncated]).contains("(truncated?)"));

    let mut torn = bytes.clone();
    for slot in 0..2 {
        torn[slot * 4096 + 70] ^= 0xff; // inside both metas' checksummed bytes
    }
    let torn = damaged(dir.path(), "torn", &torn);
    let err = fails(&["db", "stats", &torn]);
    assert!(
        err.contains("checksum mismatch") && err.contains("meta 0") && err.contains("meta 1"),
        "{err}"
    );

    // Damage every page after the metas in turn: whatever is hit, the answer is a clean error or a
    // report of problems, never a crash; and check notices exactly the damaged pages in use (a free
    // page's content does not matter).
    let (pages, free) = {
        let db = Db::open_read_only(&good, Options::default()).unwrap();
        let stats = db.begin_read().unwrap().stats().unwrap();
        (stats.pages as usize, stats.free_pages.unwrap() as usize)
    };
    let mut noticed = 0;
    for page in 2..pages {
        let mut hit = bytes.clone();
        hit[page * 4096..page * 4096 + 16].copy_from_slice(&[0xee; 16]);
        let path = damaged(dir.path(), &format!("page-{page}"), &hit);
        let out = keelson(&["db", "check", &path]);
        let all = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
        assert!(!all.contains("panicked"), "page {page}: {all}");
        if !out.status.success() {
            noticed += 1;
            assert!(all.contains(&format!("page {page}")), "page {page}: {all}");
        }
        for args in [&["db", "keys", &path, "b"][..], &["db", "stats", &path][..]] {
            let out = keelson(args);
            assert!(
                !String::from_utf8_lossy(&out.stderr).contains("panicked"),
                "{args:?}"
            );
        }
    }
    assert_eq!(
        noticed,
        pages - 2 - free,
        "damage noticed on {noticed} of {} used pages",
        pages - 2 - free
    );

    // A branch pointing past the end of the file: named as out of range, by check and by readers.
    let branch = (2..pages)
        .find(|p| bytes[p * 4096 + 8] == 0x01)
        .expect("the bucket has a branch page");
    let mut wild = bytes.clone();
    wild[branch * 4096 + 16 + 8..branch * 4096 + 16 + 16]
        .copy_from_slice(&999_999u64.to_le_bytes());
    let wild = damaged(dir.path(), "wild", &wild);
    let report = keelson(&["db", "check", &wild]);
    assert!(
        stdout(&report).contains("page 999999 (offset 4095995904): out of range"),
        "{}",
        stdout(&report)
    );
    let err = fails(&["db", "keys", &wild, "b"]);
    assert!(
        err.contains(&wild) && err.contains("page 999999 (offset 4095995904): out of range"),
        "{err}"
    );

    let err = fails(&["db", "check", dir.path().join("absent").to_str().unwrap()]);
    assert!(err.contains("No such file"), "{err}");
}

#[test]
fn a_file_open_for_writing_is_refused_not_read_mid_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let (_db, _writer) = Db::open(&path, Options::default()).unwrap();
    let err = fails(&["db", "check", path.to_str().unwrap()]);
    assert!(err.contains("locked by another process"), "{err}");
}
