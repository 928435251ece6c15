//! Damaged and crafted files: each must give a clear error (or a report from `check`) — never a
//! panic, a hang, or a writer that goes on to corrupt live data. Files are built with the engine,
//! then patched byte by byte where a real crash or a hostile file could put bad bytes.

use std::path::Path;

use keelson_engine::pagefile::{Db, Error, Options};

const PAGE: usize = 4096;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The page holding a leaf element with `key` and `flags`, and the file offset of its value.
fn leaf_value(bytes: &[u8], key: &[u8], flags: u32) -> (usize, usize) {
    (2..bytes.len() / PAGE)
        .find_map(|p| {
            let page = &bytes[p * PAGE..];
            (u64_at(page, 0) == p as u64 && u16_at(page, 8) == 0x02).then_some(())?;
            (0..u16_at(page, 10) as usize).find_map(|i| {
                let e = 16 + i * 16;
                let (f, pos, ksize) = (u32_at(page, e), u32_at(page, e + 4), u32_at(page, e + 8));
                let hit = f as u32 == flags && page.get(e + pos..e + pos + ksize) == Some(key);
                hit.then_some((p, p * PAGE + e + pos + ksize))
            })
        })
        .unwrap_or_else(|| panic!("no leaf element {key:?}"))
}

/// The root page of bucket `name` (a top-level bucket with pages of its own).
fn bucket_root(bytes: &[u8], name: &[u8]) -> usize {
    let (_, value) = leaf_value(bytes, name, 1);
    u64_at(bytes, value) as usize
}

fn build(path: &Path, f: impl FnOnce(&mut keelson_engine::pagefile::WriteTxn<'_>)) {
    let (_db, mut w) = Db::open(path, Options::default()).unwrap();
    let mut txn = w.begin().unwrap();
    f(&mut txn);
    txn.publish().unwrap();
    w.sync().unwrap();
}

fn fill(b: &mut keelson_engine::pagefile::BucketMut<'_>, n: u32) {
    for i in 0..n {
        b.put(format!("key-{i:06}").as_bytes(), &[i as u8; 100])
            .unwrap();
    }
}

#[test]
fn a_failed_bucket_delete_frees_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    build(&path, |txn| {
        let mut a = txn.create_bucket(b"a").unwrap();
        fill(&mut a, 300);
        fill(&mut a.create_bucket(b"n").unwrap(), 100);
        txn.create_bucket(b"other").unwrap();
    });
    // Damage the nested bucket's root page: deleting `a` must fail, having freed nothing.
    let mut bytes = std::fs::read(&path).unwrap();
    let (_, n_value) = leaf_value(&bytes, b"n", 1);
    let n_root = u64_at(&bytes, n_value) as usize;
    bytes[n_root * PAGE..n_root * PAGE + 16].fill(0xee);
    std::fs::write(&path, &bytes).unwrap();

    let (db, mut w) = Db::open(&path, Options::default()).unwrap();
    let mut txn = w.begin().unwrap();
    let err = txn.delete_bucket(b"a").unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    txn.bucket(b"other").unwrap().put(b"k", b"v").unwrap();
    txn.publish().unwrap();
    w.sync().unwrap();
    // The damaged page is reported (and what only it led to is unreachable), but no page of `a`
    // was freed while still in use.
    let problems = w.check();
    assert!(
        problems
            .iter()
            .any(|p| p.contains(&format!("page {n_root} "))),
        "{problems:#?}"
    );
    assert!(
        !problems
            .iter()
            .any(|p| p.contains("also free") || p.contains("freed")),
        "{problems:#?}"
    );
    let read = db.begin_read().unwrap();
    assert!(
        read.bucket(b"a")
            .unwrap()
            .unwrap()
            .get(b"key-000299")
            .unwrap()
            .is_some(),
        "bucket a is intact"
    );
}

/// Writes meta `slot` with these fields and a correct checksum (bbolt's FNV-1a over the meta).
fn write_meta(bytes: &mut [u8], slot: usize, root: u64, freelist: u64, hwm: u64, txid: u64) {
    let page = &mut bytes[slot * PAGE..(slot + 1) * PAGE];
    page.fill(0);
    page[..8].copy_from_slice(&(slot as u64).to_le_bytes());
    page[8..10].copy_from_slice(&4u16.to_le_bytes());
    let m = &mut page[16..80];
    m[0..4].copy_from_slice(&0xED0C_DAEDu32.to_le_bytes());
    m[4..8].copy_from_slice(&2u32.to_le_bytes());
    m[8..12].copy_from_slice(&(PAGE as u32).to_le_bytes());
    m[16..24].copy_from_slice(&root.to_le_bytes());
    m[32..40].copy_from_slice(&freelist.to_le_bytes());
    m[40..48].copy_from_slice(&hwm.to_le_bytes());
    m[48..56].copy_from_slice(&txid.to_le_bytes());
    let sum = m[..56].iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    m[56..64].copy_from_slice(&sum.to_le_bytes());
}

#[test]
fn a_meta_pointing_at_a_meta_page_is_rejected_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut bytes = vec![0u8; PAGE];
    write_meta(&mut bytes, 0, 0, u64::MAX, 1, 5);
    std::fs::write(&path, &bytes).unwrap();
    let err = Db::open_read_only(&path, Options::default()).unwrap_err();
    assert!(
        err.to_string().contains("root page 0 is a meta page"),
        "{err}"
    );
}

#[test]
fn a_subtree_reached_twice_is_caught_by_every_walk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    build(&path, |txn| {
        fill(&mut txn.create_bucket(b"b").unwrap(), 300)
    });
    // Point the bucket's root branch's second child at its first: the same leaf twice.
    let mut bytes = std::fs::read(&path).unwrap();
    let root = bucket_root(&bytes, b"b");
    assert_eq!(
        u16_at(&bytes, root * PAGE + 8),
        0x01,
        "the bucket's root is a branch"
    );
    let first_child = u64_at(&bytes, root * PAGE + 16 + 8);
    bytes[root * PAGE + 32 + 8..root * PAGE + 32 + 16].copy_from_slice(&first_child.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();

    let db = Db::open_read_only(&path, Options::default()).unwrap();
    let read = db.begin_read().unwrap();
    let bucket = read.bucket(b"b").unwrap().unwrap();
    let mut cursor = bucket.cursor();
    let mut at = cursor.first();
    let mut steps = 0;
    while let Ok(Some(_)) = at {
        steps += 1;
        at = cursor.next();
    }
    let err = at.unwrap_err().to_string();
    assert!(err.contains("out of order"), "{err}");
    assert!(steps < 300, "stopped at the repeat, after {steps} keys");
    assert!(
        read.stats()
            .unwrap_err()
            .to_string()
            .contains("reached twice")
    );
    assert!(
        read.check()
            .iter()
            .any(|p| p.contains(&format!("page {first_child}: multiple references")))
    );
    assert!(
        read.compact_into(&dir.path().join("compact"), 1 << 20)
            .is_err()
    );

    // A copy without a stored freelist makes the writer walk the tree on open: an error, no hang.
    let copy = dir.path().join("copy");
    read.write_to(&mut std::fs::File::create(&copy).unwrap())
        .unwrap();
    let err = Db::open(&copy, Options::default()).unwrap_err();
    assert!(err.to_string().contains("reached twice"), "{err}");
}

#[test]
fn a_freelist_that_lists_itself_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    build(&path, |txn| fill(&mut txn.create_bucket(b"b").unwrap(), 10));
    let mut bytes = std::fs::read(&path).unwrap();
    let metas = [u64_at(&bytes, 64), u64_at(&bytes, PAGE + 64)];
    let newest = if metas[1] > metas[0] { 1 } else { 0 };
    let freelist = u64_at(&bytes, newest * PAGE + 48) as usize;
    let count = u16_at(&bytes, freelist * PAGE + 10) as usize;
    let at = freelist * PAGE + 16 + count * 8;
    bytes[at..at + 8].copy_from_slice(&(freelist as u64).to_le_bytes());
    bytes[freelist * PAGE + 10..freelist * PAGE + 12]
        .copy_from_slice(&((count + 1) as u16).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = Db::open(&path, Options::default()).unwrap_err();
    assert!(
        err.to_string().contains(&format!("lists page {freelist}")),
        "{err}"
    );
}

#[test]
fn an_initialization_cut_short_is_redone_and_anything_else_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = {
        let path = dir.path().join("fresh");
        drop(Db::open(&path, Options::default()).unwrap());
        std::fs::read(&path).unwrap()
    };
    for (name, bytes) in [
        ("empty", Vec::new()),
        ("zeros", vec![0u8; 2 * PAGE]),
        (
            "data pages only",
            [vec![0u8; 2 * PAGE], fresh[2 * PAGE..].to_vec()].concat(),
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let (_db, w) =
            Db::open(&path, Options::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(w.check().is_empty(), "{name}");
    }
    // Metas gone but a leaf with data: a damaged file, not an unfinished one.
    let mut damaged = fresh.clone();
    damaged[..2 * PAGE].fill(0);
    damaged[3 * PAGE + 10] = 1;
    let path = dir.path().join("damaged");
    std::fs::write(&path, &damaged).unwrap();
    assert!(matches!(
        Db::open(&path, Options::default()),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), damaged, "left as it was");
}

#[test]
fn a_plain_key_in_the_root_bucket_stops_compaction_instead_of_vanishing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    build(&path, |txn| {
        txn.create_bucket(b"b").unwrap().put(b"k", b"v").unwrap();
    });
    let mut bytes = std::fs::read(&path).unwrap();
    let (page, _) = leaf_value(&bytes, b"b", 1);
    bytes[page * PAGE + 16] = 0; // clear the bucket flag of the root's only element
    std::fs::write(&path, &bytes).unwrap();
    let db = Db::open_read_only(&path, Options::default()).unwrap();
    let err = db
        .begin_read()
        .unwrap()
        .compact_into(&dir.path().join("compact"), 1 << 20)
        .unwrap_err();
    assert!(
        err.to_string().contains("the root bucket holds key b"),
        "{err}"
    );
}

#[test]
fn buckets_nest_at_most_32_deep() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, mut w) = Db::open(dir.path().join("db"), Options::default()).unwrap();
    let mut txn = w.begin().unwrap();
    txn.create_bucket(b"0").unwrap();
    let mut path: Vec<Vec<u8>> = vec![b"0".to_vec()];
    for depth in 1..32 {
        let names: Vec<&[u8]> = path.iter().map(Vec::as_slice).collect();
        txn.bucket_at(&names)
            .unwrap()
            .create_bucket(format!("{depth}").as_bytes())
            .unwrap();
        path.push(format!("{depth}").into_bytes());
    }
    let names: Vec<&[u8]> = path.iter().map(Vec::as_slice).collect();
    let err = txn
        .bucket_at(&names)
        .unwrap()
        .create_bucket(b"too deep")
        .unwrap_err();
    assert!(matches!(err, Error::NestedTooDeep { max: 32 }), "{err}");
    txn.publish().unwrap();
    assert!(w.check().is_empty());
}
