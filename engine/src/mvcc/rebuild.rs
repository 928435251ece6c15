//! Keeping keelson's buckets true to etcd's. keelson's index and lease links are derived from the
//! `key` bucket; a file etcd wrote (or changed since keelson last had it) lacks them or has them
//! stale. [`is_current`] tells, cheaply, on open; [`rebuild`] derives them again from the `key`
//! bucket in revision order, in batches of write transactions, so a file of any size is rebuilt in
//! bounded memory. A crash midway leaves the state record absent, so the next open starts over.

use keelson_proto::mvccpb::KeyValue;
use prost::Message;

use super::error::Result;
use super::index;
use super::index_key::index_key;
use super::read::{bucket, corrupt, decode_i64};
use super::revision::Revision;
use super::schema::{
    FORMAT, INDEX, KEY, LEASE_KEYS, STATE, STATE_COMPACTED, STATE_FORMAT, STATE_REVISION,
};
use super::version::Version;
use super::write::relink;
use crate::pagefile::{View, Writer};

/// What a rebuild found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rebuilt {
    /// Records indexed.
    pub records: u64,
    /// The highest main revision among them (0 if none).
    pub newest: i64,
}

/// The newest record of the `key` bucket: its revision and whether it is a deletion.
fn newest_record(view: &dyn View) -> Result<Option<(Revision, bool, Vec<u8>)>> {
    let keys = bucket(view, KEY)?;
    let mut cursor = keys.cursor();
    let Some((k, v)) = cursor.last()? else {
        return Ok(None);
    };
    let (rev, tombstone) =
        Revision::parse_key(k).ok_or_else(|| corrupt("a key bucket key is not a revision"))?;
    let kv = decode(rev, v)?;
    Ok(Some((rev, tombstone, kv.key)))
}

fn decode(rev: Revision, value: Option<&[u8]>) -> Result<KeyValue> {
    KeyValue::decode(value.unwrap_or_default()).map_err(|_| {
        corrupt(&format!(
            "the record at revision {}_{} is not a KeyValue",
            rev.main, rev.sub
        ))
    })
}

/// Whether keelson's buckets reflect the `key` bucket: keelson wrote the state record in this
/// format, for the same finished compaction, and the newest record is indexed.
pub(crate) fn is_current(view: &dyn View, finished: i64) -> Result<bool> {
    let Some(state) = view.view(STATE)? else {
        return Ok(false);
    };
    let number =
        |name: &[u8]| -> Result<Option<i64>> { state.get(name)?.map(decode_i64).transpose() };
    if number(STATE_FORMAT)? != Some(FORMAT) || number(STATE_COMPACTED)? != Some(finished) {
        return Ok(false);
    }
    let Some(revision) = number(STATE_REVISION)? else {
        return Ok(false);
    };
    let Some((rev, tombstone, key)) = newest_record(view)? else {
        return Ok(true);
    };
    let indexed = match view.view(INDEX)? {
        Some(index) => index::get(&index, &index_key(&key, rev))?,
        None => None,
    };
    Ok(rev.main <= revision && indexed.is_some_and(|v| v.tombstone == tombstone))
}

/// Empties keelson's buckets and indexes every record of the `key` bucket again, `batch` records
/// per write transaction. The state record is left for the caller to write.
pub(crate) fn rebuild(writer: &mut Writer, batch: usize) -> Result<Rebuilt> {
    let mut txn = writer.begin()?;
    for name in [STATE, INDEX, LEASE_KEYS] {
        if txn.view(name)?.is_some() {
            txn.delete_bucket(name)?;
        }
        txn.create_bucket(name)?;
    }
    txn.publish()?;
    // etcd reads records from revision 1 on; anything below is not part of the history.
    let mut from = Revision::new(1, 0).key(false);
    let mut done = Rebuilt {
        records: 0,
        newest: 0,
    };
    loop {
        let mut txn = writer.begin()?;
        let mut records = Vec::with_capacity(batch);
        {
            let keys = bucket(&txn, KEY)?;
            let mut cursor = keys.cursor();
            let mut entry = cursor.seek(&from)?;
            while let Some((k, v)) = entry {
                if records.len() == batch {
                    break;
                }
                let (rev, tombstone) = Revision::parse_key(k)
                    .ok_or_else(|| corrupt("a key bucket key is not a revision"))?;
                records.push((rev, tombstone, decode(rev, v)?));
                entry = cursor.next()?;
            }
        }
        let Some(&(last, tombstone, _)) = records.last() else {
            break;
        };
        for (rev, tombstone, kv) in &records {
            let version = if *tombstone {
                Version::tombstone()
            } else {
                Version {
                    tombstone: false,
                    create_revision: kv.create_revision,
                    version: kv.version,
                    lease: kv.lease,
                }
            };
            let prior_lease = index::insert(&mut txn, &index_key(&kv.key, *rev), |_| version)?
                .filter(|v| !v.tombstone)
                .map_or(0, |v| v.lease);
            relink(&mut txn, &kv.key, prior_lease, version.lease)?;
        }
        txn.publish()?;
        done = Rebuilt {
            records: done.records + records.len() as u64,
            newest: last.main,
        };
        from = last.key(tombstone);
        from.push(0);
    }
    Ok(done)
}
