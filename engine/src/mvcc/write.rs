//! One request's changes, inside the raft core's write transaction. Every change of a request
//! shares its main revision (the store revision + 1) and takes the next sub revision. A change
//! writes etcd's record in the `key` bucket, keelson's version in its index, keeps the
//! lease → keys links, and records the event watchers will see (in etcd's form: a PUT carries the
//! record as stored, a DELETE only the key and the deletion's revision; `prev_kv` is left for
//! [`super::history::prev_kv`] to fill in for watchers that ask).

use keelson_proto::mvccpb::event::EventType;
use keelson_proto::mvccpb::{Event, KeyValue};
use prost::Message;

use super::error::Result;
use super::index;
use super::index_key::{encode_user_key, index_key, push_revision};
use super::revision::Revision;
use super::schema::{KEY, LEASE_KEYS};
use super::version::Version;
use crate::pagefile::{BucketMut, WriteTxn};

/// The lease → key link of `key` to `lease`: lease id (big-endian, so a lease's keys are adjacent
/// and in key order), then the key.
pub(crate) fn lease_link(lease: i64, key: &[u8]) -> Vec<u8> {
    let mut k = lease.to_be_bytes().to_vec();
    k.extend_from_slice(key);
    k
}

/// Moves `key` from lease `old` to lease `new` (0: none) in the lease → keys links.
pub(crate) fn relink(txn: &mut WriteTxn<'_>, key: &[u8], old: i64, new: i64) -> Result<()> {
    if old == new {
        return Ok(());
    }
    let mut links = txn.bucket(LEASE_KEYS)?;
    if old != 0 {
        links.delete(&lease_link(old, key))?;
    }
    if new != 0 {
        links.put(&lease_link(new, key), &[])?;
    }
    Ok(())
}

/// etcd's `key` bucket, packed as etcd packs it: revisions only grow, so pages split nearly full
/// (half-full splits would leave every page behind the newest half empty for good).
fn revision_bucket<'a>(txn: &'a mut WriteTxn<'_>) -> Result<BucketMut<'a>> {
    let mut keys = txn.bucket(KEY)?;
    keys.set_fill_percent(0.9);
    Ok(keys)
}

/// The version a put at main revision `main` under `lease` makes of a key whose newest version so
/// far is `prior`: the next of a live key's, else the first of a new generation.
fn put_version(prior: Option<Version>, main: i64, lease: i64) -> Version {
    let (create_revision, version) = match prior.filter(|v| !v.tombstone) {
        Some(v) => (v.create_revision, v.version + 1),
        None => (main, 1),
    };
    Version {
        tombstone: false,
        create_revision,
        version,
        lease,
    }
}

/// A key to delete: the user key, its encoding in the index, and the lease its live version is
/// attached to (0: none).
pub(crate) struct Doomed {
    pub key: Vec<u8>,
    pub encoded: Vec<u8>,
    pub lease: i64,
}

impl Doomed {
    pub fn new(key: Vec<u8>, lease: i64) -> Self {
        Doomed {
            encoded: encode_user_key(&key),
            key,
            lease,
        }
    }
}

/// The changes of one request in progress.
pub(crate) struct Writes<'t, 'w> {
    pub txn: &'t mut WriteTxn<'w>,
    /// The request's main revision.
    pub main: i64,
    /// Changes so far (the next sub revision).
    pub changes: i64,
    /// The events of the changes so far, in sub revision order.
    pub events: Vec<Event>,
}

impl<'t, 'w> Writes<'t, 'w> {
    pub fn new(txn: &'t mut WriteTxn<'w>, current: i64) -> Self {
        Writes {
            txn,
            main: current + 1,
            changes: 0,
            events: Vec::new(),
        }
    }

    /// The revision reads inside this request see: its own changes once it has made some.
    pub fn read_revision(&self) -> i64 {
        if self.changes > 0 {
            self.main
        } else {
            self.main - 1
        }
    }

    fn next_revision(&mut self) -> Revision {
        let rev = Revision::new(self.main, self.changes);
        self.changes += 1;
        rev
    }

    /// Sets `key` to `value` under `lease`.
    pub fn put(&mut self, key: &[u8], value: Vec<u8>, lease: i64) -> Result<()> {
        let main = self.main;
        let rev = self.next_revision();
        let mut indexed = Version::default();
        let prior = index::insert(self.txn, &index_key(key, rev), |prior| {
            indexed = put_version(prior, main, lease);
            indexed
        })?
        .filter(|v| !v.tombstone);
        let kv = KeyValue {
            key: key.to_vec(),
            create_revision: indexed.create_revision,
            mod_revision: main,
            version: indexed.version,
            value,
            lease,
        };
        revision_bucket(self.txn)?.put(&rev.key(false), &kv.encode_to_vec())?;
        relink(self.txn, key, prior.map_or(0, |v| v.lease), lease)?;
        self.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: None,
        });
        Ok(())
    }

    /// Deletes `keys`, in key order. Their deletions go into the index together, each block they
    /// fall in rewritten once.
    pub fn delete_all(&mut self, keys: &[Doomed]) -> Result<()> {
        let first = self.changes;
        self.changes += keys.len() as i64;
        let mut tombstones = Vec::with_capacity(keys.len());
        let mut records = revision_bucket(self.txn)?;
        for (doomed, sub) in keys.iter().zip(first..) {
            let rev = Revision::new(self.main, sub);
            let record = KeyValue {
                key: doomed.key.clone(),
                ..KeyValue::default()
            };
            records.put(&rev.key(true), &record.encode_to_vec())?;
            let mut tombstone = doomed.encoded.clone();
            push_revision(&mut tombstone, rev);
            tombstones.push((tombstone, Version::tombstone()));
            self.events.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue {
                    mod_revision: self.main,
                    ..record
                }),
                prev_kv: None,
            });
        }
        index::insert_sorted(self.txn, &tombstones)?;
        for doomed in keys {
            relink(self.txn, &doomed.key, doomed.lease, 0)?;
        }
        Ok(())
    }
}
