//! `keelson db …`: inspecting page files (keelson's and etcd's `member/snap/db`, or snapshots), as
//! bbolt's own CLI does: check, buckets, keys, get, stats. Files are opened read-only with a shared
//! lock, so a file a running server has open for writing is refused rather than read mid-write.
//! Bucket and key arguments are read as escaped text, so what `keys` prints (without `--hex`) can
//! be passed back as it is.
//!
//! Runs on: the main thread of `keelson db` (no member runs).

use std::io::Write;
use std::path::Path;

use keelson_engine::pagefile::{Bucket, Db, Options, ReadTxn, Stats};

use super::{Encoding, InspectError};

fn open(file: &Path) -> Result<(Db, ReadTxn), InspectError> {
    let db = Db::open_read_only(file, Options::default())?;
    let read = db.begin_read()?;
    Ok((db, read))
}

fn bucket_at<'a>(
    read: &'a ReadTxn,
    file: &Path,
    path: &[Vec<u8>],
    enc: Encoding,
) -> Result<Bucket<'a>, InspectError> {
    let names: Vec<&[u8]> = path.iter().map(Vec::as_slice).collect();
    read.bucket_at(&names)?
        .ok_or_else(|| InspectError::BucketNotFound {
            file: file.to_path_buf(),
            bucket: path
                .iter()
                .map(|p| enc.show(p))
                .collect::<Vec<_>>()
                .join("/"),
        })
}

/// `keelson db check FILE`: prints `OK`, or each problem and fails.
pub fn check(file: &Path, out: &mut dyn Write) -> Result<(), InspectError> {
    let (_db, read) = open(file)?;
    let problems = read.check();
    if problems.is_empty() {
        writeln!(out, "OK")?;
        return Ok(());
    }
    for p in &problems {
        writeln!(out, "{p}")?;
    }
    Err(InspectError::CheckFailed {
        file: file.to_path_buf(),
        count: problems.len(),
    })
}

/// `keelson db buckets FILE`: the top-level bucket names.
pub fn buckets(file: &Path, enc: Encoding, out: &mut dyn Write) -> Result<(), InspectError> {
    let (_db, read) = open(file)?;
    keys_of(read.root(), enc, out)
}

/// `keelson db keys FILE BUCKET...`: the keys of a (nested) bucket.
pub fn keys(
    file: &Path,
    path: &[Vec<u8>],
    enc: Encoding,
    out: &mut dyn Write,
) -> Result<(), InspectError> {
    let (_db, read) = open(file)?;
    keys_of(bucket_at(&read, file, path, enc)?, enc, out)
}

fn keys_of(bucket: Bucket<'_>, enc: Encoding, out: &mut dyn Write) -> Result<(), InspectError> {
    let mut cursor = bucket.cursor();
    let mut at = cursor.first()?;
    while let Some((key, _)) = at {
        writeln!(out, "{}", enc.show(key))?;
        at = cursor.next()?;
    }
    Ok(())
}

/// `keelson db get FILE BUCKET... KEY`: one value.
pub fn get(
    file: &Path,
    path: &[Vec<u8>],
    key: &[u8],
    enc: Encoding,
    out: &mut dyn Write,
) -> Result<(), InspectError> {
    let (_db, read) = open(file)?;
    let bucket = bucket_at(&read, file, path, enc)?;
    match bucket.get(key)? {
        Some(value) => {
            writeln!(out, "{}", enc.show(value))?;
            Ok(())
        }
        None if bucket.bucket(key)?.is_some() => Err(InspectError::KeyIsBucket {
            file: file.to_path_buf(),
            key: enc.show(key),
        }),
        None => Err(InspectError::KeyNotFound {
            file: file.to_path_buf(),
            key: enc.show(key),
        }),
    }
}

fn percent(part: u64, whole: u64) -> u64 {
    (part * 100).checked_div(whole).unwrap_or(0)
}

/// `keelson db stats FILE`: file, aggregate and per-bucket statistics.
pub fn stats(file: &Path, out: &mut dyn Write) -> Result<(), InspectError> {
    let (_db, read) = open(file)?;
    let Stats {
        page_size,
        pages,
        free_pages,
        buckets,
        total,
    } = read.stats()?;
    writeln!(
        out,
        "File: {} pages of {page_size} bytes ({} bytes)",
        pages,
        pages * page_size
    )?;
    match free_pages {
        Some(free) => writeln!(out, "\tFree pages: {free} ({}%)", percent(free, pages))?,
        None => writeln!(
            out,
            "\tFree pages: not stored in the file (rebuilt on open)"
        )?,
    }
    writeln!(out, "Aggregate statistics for {} buckets", total.buckets)?;
    let fill = |used, alloc| format!("{used} ({}%)", percent(used, alloc));
    let sections = [
        (
            "Page count statistics",
            vec![
                (
                    "Number of logical branch pages",
                    total.branch_pages.to_string(),
                ),
                (
                    "Number of physical branch overflow pages",
                    total.branch_overflow.to_string(),
                ),
                ("Number of logical leaf pages", total.leaf_pages.to_string()),
                (
                    "Number of physical leaf overflow pages",
                    total.leaf_overflow.to_string(),
                ),
            ],
        ),
        (
            "Tree statistics",
            vec![
                ("Number of keys/value pairs", total.keys.to_string()),
                ("Number of levels in B+tree", total.depth.to_string()),
            ],
        ),
        (
            "Page size utilization",
            vec![
                (
                    "Bytes allocated for physical branch pages",
                    total.branch_alloc.to_string(),
                ),
                (
                    "Bytes actually used for branch data",
                    fill(total.branch_inuse, total.branch_alloc),
                ),
                (
                    "Bytes allocated for physical leaf pages",
                    total.leaf_alloc.to_string(),
                ),
                (
                    "Bytes actually used for leaf data",
                    fill(total.leaf_inuse, total.leaf_alloc),
                ),
            ],
        ),
        (
            "Bucket statistics",
            vec![
                ("Total number of buckets", total.buckets.to_string()),
                (
                    "Total number on inlined buckets",
                    fill(total.inline_buckets, total.buckets),
                ),
                (
                    "Bytes used for inlined buckets",
                    total.inline_inuse.to_string(),
                ),
            ],
        ),
    ];
    for (title, lines) in sections {
        writeln!(out, "{title}")?;
        for (label, value) in lines {
            writeln!(out, "\t{label}: {value}")?;
        }
    }
    writeln!(out, "Buckets")?;
    writeln!(
        out,
        "\t{:<24} {:>10} {:>6} {:>8} {:>8} {:>6}",
        "name", "keys", "depth", "branch", "leaf", "fill%"
    )?;
    for (name, s) in buckets {
        let (branch, leaf) = (
            s.branch_pages + s.branch_overflow,
            s.leaf_pages + s.leaf_overflow,
        );
        let (leaf, fill) = if s.inline_buckets == 1 {
            ("inline".to_string(), "-".to_string())
        } else {
            (
                leaf.to_string(),
                percent(s.leaf_inuse + s.branch_inuse, s.leaf_alloc + s.branch_alloc).to_string(),
            )
        };
        writeln!(
            out,
            "\t{name:<24} {:>10} {:>6} {branch:>8} {leaf:>8} {fill:>6}",
            s.keys, s.depth
        )?;
    }
    Ok(())
}
