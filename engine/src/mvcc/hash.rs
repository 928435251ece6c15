//! etcd's checksums of a store, computed as etcd computes them, so that members — and keelson
//! beside etcd, given the same operations — can be compared (`etcdctl endpoint hashkv`, etcd's
//! corruption check).
//!
//! - [`hash_kv`] (etcd's `HashByRev`): CRC-32C of the name of the `key` bucket, then of every
//!   revision key and value in it at or below the revision asked, in revision order — leaving out,
//!   at or below the compaction, the versions a compaction at that revision would not keep (so the
//!   hash is the same whether the compaction's deletes have run yet or not). A version kept is a
//!   key's newest at the revision asked, while the key is alive. As in etcd, if no key is alive at
//!   that revision nothing is left out.
//! - [`file_status`] (`etcdctl snapshot status`): CRC-32C over every top-level bucket's name and
//!   every key and value directly in it (a nested bucket counts by its name), the newest revision
//!   in the `key` bucket, how many keys were hashed, and the file's size.
//! - [`hash`] (etcd's backend `Hash`): CRC-32C over every bucket — its name, then its keys and
//!   values — but the consistent index and keelson's own buckets, which describe this member's
//!   progress and layout rather than the data.

use super::error::{MvccError, Result};
use super::read::{End, Revisions, corrupt, live};
use super::revision::Revision;
use super::schema::{CONSISTENT_INDEX, KEELSON_BUCKETS, KEY, META};
use crate::pagefile::{ReadTxn, View};
use keelson_proto::mvccpb::KeyValue;
use prost::Message;

/// What [`hash_kv`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvHash {
    /// The checksum.
    pub hash: u32,
    /// The store's current revision.
    pub current: i64,
    /// The latest compaction requested (-1: none).
    pub compacted: i64,
}

/// etcd's HashKV of the store `view` shows at `revisions`, through revision `at` (0: the current
/// one). Errors as etcd's: a compacted or a future revision.
pub fn hash_kv(view: &dyn View, revisions: Revisions, at: i64) -> Result<KvHash> {
    let Revisions { current, compacted } = revisions;
    if at > 0 && at <= compacted {
        return Err(MvccError::Compacted {
            requested: at,
            compacted,
        });
    }
    if at > current {
        return Err(MvccError::FutureRevision {
            requested: at,
            current,
        });
    }
    let at = if at == 0 { current } else { at };
    let keys = super::read::bucket(view, KEY)?;
    let mut crc = crc32c::crc32c(KEY);
    // Whether any key is alive at `at`, asked once and only if it matters.
    let mut any_alive = None;
    let mut cursor = keys.cursor();
    let mut entry = cursor.first()?;
    while let Some((k, v)) = entry {
        entry = cursor.next()?;
        let (rev, tombstone) =
            Revision::parse_key(k).ok_or_else(|| corrupt("a key bucket key is not a revision"))?;
        if rev.main > at {
            break;
        }
        let v = v.unwrap_or_default();
        if rev.main <= compacted && !kept(view, rev, tombstone, v, at)? {
            let alive = match any_alive {
                Some(alive) => alive,
                None => *any_alive.insert(!live(view, b"", End::Unbounded, at, 1)?.0.is_empty()),
            };
            if alive {
                continue;
            }
        }
        crc = crc32c::crc32c_append(crc, k);
        crc = crc32c::crc32c_append(crc, v);
    }
    Ok(KvHash {
        hash: crc,
        current,
        compacted,
    })
}

/// Whether a compaction at `at` keeps version `rev` (stored as `value`): it is its key's newest
/// version at `at` and not a deletion.
fn kept(view: &dyn View, rev: Revision, tombstone: bool, value: &[u8], at: i64) -> Result<bool> {
    if tombstone {
        return Ok(false);
    }
    let kv = KeyValue::decode(value).map_err(|_| corrupt("a KeyValue does not decode"))?;
    let (newest, _) = live(view, &kv.key, End::One, at, 1)?;
    Ok(newest.first().is_some_and(|found| found.rev == rev))
}

/// etcd's Hash of the whole file as `txn` shows it (keelson's own buckets and the consistent
/// index left out).
pub fn hash(txn: &ReadTxn) -> Result<u32> {
    let mut crc = 0u32;
    let mut buckets = txn.root().cursor();
    let mut entry = buckets.first()?;
    while let Some((name, _)) = entry {
        entry = buckets.next()?;
        if KEELSON_BUCKETS.contains(&name) {
            continue;
        }
        let Some(bucket) = txn.bucket(name)? else {
            continue;
        };
        crc = crc32c::crc32c_append(crc, name);
        let mut cursor = bucket.cursor();
        let mut item = cursor.first()?;
        while let Some((k, v)) = item {
            item = cursor.next()?;
            if name == META && k == CONSISTENT_INDEX {
                continue;
            }
            crc = crc32c::crc32c_append(crc, k);
            crc = crc32c::crc32c_append(crc, v.unwrap_or_default());
        }
    }
    Ok(crc)
}

/// What `etcdctl snapshot status` says of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStatus {
    /// The checksum of every bucket.
    pub hash: u32,
    /// The newest revision in the `key` bucket.
    pub revision: i64,
    /// Keys hashed, in every bucket.
    pub total_keys: u64,
    /// Bytes of the file's tree.
    pub total_size: u64,
}

/// [`FileStatus`] of the file as `txn` shows it.
pub fn file_status(txn: &ReadTxn) -> Result<FileStatus> {
    let mut status = FileStatus {
        hash: 0,
        revision: 0,
        total_keys: 0,
        total_size: txn.size(),
    };
    let mut buckets = txn.root().cursor();
    let mut entry = buckets.first()?;
    while let Some((name, _)) = entry {
        entry = buckets.next()?;
        let Some(bucket) = txn.bucket(name)? else {
            continue;
        };
        status.hash = crc32c::crc32c_append(status.hash, name);
        let mut cursor = bucket.cursor();
        let mut item = cursor.first()?;
        while let Some((k, v)) = item {
            item = cursor.next()?;
            status.hash = crc32c::crc32c_append(status.hash, k);
            status.hash = crc32c::crc32c_append(status.hash, v.unwrap_or_default());
            if name == KEY
                && let Some((rev, _)) = Revision::parse_key(k)
            {
                status.revision = rev.main;
            }
            status.total_keys += 1;
        }
    }
    Ok(status)
}
