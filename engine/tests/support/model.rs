//! A plain in-memory model of a page file's content (nested maps), random operations on it, and
//! the helpers that apply one operation to both the model and a write transaction, and read a whole
//! file (or transaction) back into the model's shape for comparison.

use std::collections::BTreeMap;

use keelson_engine::pagefile::{Error, ReadTxn, WriteTxn};
use proptest::prelude::*;

/// A bucket: keys, nested buckets, and the sequence counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelBucket {
    pub keys: BTreeMap<Vec<u8>, Vec<u8>>,
    pub children: BTreeMap<Vec<u8>, ModelBucket>,
    pub sequence: u64,
}

/// The names buckets (and some keys) are drawn from, so operations collide often.
pub const NAMES: [&[u8]; 3] = [b"a", b"b", b"c"];

/// The outcome of an operation, comparable between model and engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Existed(bool),
    Sequence(u64),
    Failed(&'static str),
}

fn kind(e: &Error) -> &'static str {
    match e {
        Error::BucketNotFound => "bucket not found",
        Error::BucketExists => "bucket exists",
        Error::IncompatibleValue => "incompatible value",
        Error::KeyRequired => "key required",
        other => panic!("unexpected engine error: {other}"),
    }
}

impl ModelBucket {
    fn at(&mut self, path: &[u8]) -> Result<&mut ModelBucket, &'static str> {
        let mut b = self;
        for &i in path {
            let name = NAMES[i as usize];
            if b.keys.contains_key(name) {
                return Err("incompatible value");
            }
            b = b.children.get_mut(name).ok_or("bucket not found")?;
        }
        Ok(b)
    }
}

/// One random operation inside a write transaction.
#[derive(Debug, Clone)]
pub enum Op {
    /// Put key `key` (an index, see [`key_bytes`]) with a value of `len` bytes into bucket `path`.
    Put {
        path: Vec<u8>,
        key: u16,
        len: usize,
    },
    Delete {
        path: Vec<u8>,
        key: u16,
    },
    /// Put `count` keys from `start` of the bulk range.
    PutRange {
        path: Vec<u8>,
        start: u16,
        count: u16,
        len: usize,
    },
    DeleteRange {
        path: Vec<u8>,
        start: u16,
        count: u16,
    },
    CreateBucket {
        path: Vec<u8>,
        name: u8,
    },
    DeleteBucket {
        path: Vec<u8>,
        name: u8,
    },
    NextSequence {
        path: Vec<u8>,
    },
}

/// Key index → bytes: 0..3 are the bucket names, 3..40 short keys, 40..43 long keys, 1000.. the
/// bulk range.
pub fn key_bytes(i: u16) -> Vec<u8> {
    match i {
        0..3 => NAMES[i as usize].to_vec(),
        40..43 => vec![b'L' + (i - 40) as u8; 1500 + i as usize],
        1000.. => format!("r{i:05}").into_bytes(),
        _ => format!("k{i:03}").into_bytes(),
    }
}

/// Deterministic value bytes for a put.
pub fn value_bytes(key: u16, len: usize, salt: u64) -> Vec<u8> {
    (0..len)
        .map(|j| {
            (j as u64)
                .wrapping_mul(31)
                .wrapping_add(u64::from(key))
                .wrapping_add(salt) as u8
        })
        .collect()
}

fn path() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u8..3, 1..=2)
}

fn parent_path() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u8..3, 0..=1)
}

fn value_len() -> impl Strategy<Value = usize> {
    prop_oneof![8 => 0usize..64, 2 => 200usize..1500, 1 => 4000usize..12000]
}

/// A random operation.
pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (path(), 0u16..43, value_len()).prop_map(|(path, key, len)| Op::Put { path, key, len }),
        3 => (path(), 0u16..43).prop_map(|(path, key)| Op::Delete { path, key }),
        2 => (path(), 1000u16..2500, 1u16..400, 0usize..200)
            .prop_map(|(path, start, count, len)| Op::PutRange { path, start, count, len }),
        2 => (path(), 1000u16..2500, 1u16..600).prop_map(|(path, start, count)| Op::DeleteRange { path, start, count }),
        3 => (parent_path(), 0u8..3).prop_map(|(path, name)| Op::CreateBucket { path, name }),
        1 => (parent_path(), 0u8..3).prop_map(|(path, name)| Op::DeleteBucket { path, name }),
        1 => path().prop_map(|path| Op::NextSequence { path }),
    ]
}

fn names(path: &[u8]) -> Vec<&'static [u8]> {
    path.iter().map(|&i| NAMES[i as usize]).collect()
}

fn range(start: u16, count: u16) -> std::ops::Range<u16> {
    start..start.saturating_add(count).min(2500)
}

/// Applies `op` to the model (the transaction's working copy).
pub fn apply_model(root: &mut ModelBucket, op: &Op, salt: u64) -> Outcome {
    let result = (|| -> Result<Outcome, &'static str> {
        Ok(match op {
            Op::Put { path, key, len } => {
                let b = root.at(path)?;
                let k = key_bytes(*key);
                if b.children.contains_key(&k) {
                    return Err("incompatible value");
                }
                b.keys.insert(k, value_bytes(*key, *len, salt));
                Outcome::Done
            }
            Op::Delete { path, key } => {
                let b = root.at(path)?;
                let k = key_bytes(*key);
                if b.children.contains_key(&k) {
                    return Err("incompatible value");
                }
                Outcome::Existed(b.keys.remove(&k).is_some())
            }
            Op::PutRange {
                path,
                start,
                count,
                len,
            } => {
                let b = root.at(path)?;
                for i in range(*start, *count) {
                    b.keys.insert(key_bytes(i), value_bytes(i, *len, salt));
                }
                Outcome::Done
            }
            Op::DeleteRange { path, start, count } => {
                let b = root.at(path)?;
                for i in range(*start, *count) {
                    b.keys.remove(&key_bytes(i));
                }
                Outcome::Done
            }
            Op::CreateBucket { path, name } => {
                let b = root.at(path)?;
                let n = NAMES[*name as usize].to_vec();
                if b.children.contains_key(&n) {
                    return Err("bucket exists");
                }
                if b.keys.contains_key(&n) {
                    return Err("incompatible value");
                }
                b.children.insert(n, ModelBucket::default());
                Outcome::Done
            }
            Op::DeleteBucket { path, name } => {
                let b = root.at(path)?;
                let n = NAMES[*name as usize];
                if b.keys.contains_key(n) {
                    return Err("incompatible value");
                }
                b.children.remove(n).ok_or("bucket not found")?;
                Outcome::Done
            }
            Op::NextSequence { path } => {
                let b = root.at(path)?;
                b.sequence += 1;
                Outcome::Sequence(b.sequence)
            }
        })
    })();
    result.unwrap_or_else(Outcome::Failed)
}

/// Applies `op` to the engine's write transaction.
pub fn apply_engine(txn: &mut WriteTxn<'_>, op: &Op, salt: u64) -> Outcome {
    let result = (|| -> Result<Outcome, Error> {
        Ok(match op {
            Op::Put { path, key, len } => {
                txn.bucket_at(&names(path))?
                    .put(&key_bytes(*key), &value_bytes(*key, *len, salt))?;
                Outcome::Done
            }
            Op::Delete { path, key } => {
                Outcome::Existed(txn.bucket_at(&names(path))?.delete(&key_bytes(*key))?)
            }
            Op::PutRange {
                path,
                start,
                count,
                len,
            } => {
                let mut b = txn.bucket_at(&names(path))?;
                for i in range(*start, *count) {
                    b.put(&key_bytes(i), &value_bytes(i, *len, salt))?;
                }
                Outcome::Done
            }
            Op::DeleteRange { path, start, count } => {
                let mut b = txn.bucket_at(&names(path))?;
                for i in range(*start, *count) {
                    b.delete(&key_bytes(i))?;
                }
                Outcome::Done
            }
            Op::CreateBucket { path, name } | Op::DeleteBucket { path, name } => {
                let n = NAMES[*name as usize];
                let create = matches!(op, Op::CreateBucket { .. });
                match (path.is_empty(), create) {
                    (true, true) => txn.create_bucket(n).map(|_| ())?,
                    (true, false) => txn.delete_bucket(n)?,
                    (false, true) => txn.bucket_at(&names(path))?.create_bucket(n).map(|_| ())?,
                    (false, false) => txn.bucket_at(&names(path))?.delete_bucket(n)?,
                }
                Outcome::Done
            }
            Op::NextSequence { path } => {
                Outcome::Sequence(txn.bucket_at(&names(path))?.next_sequence()?)
            }
        })
    })();
    result.unwrap_or_else(|e| Outcome::Failed(kind(&e)))
}

/// Reads every bucket, key, value and sequence of a read transaction.
pub fn dump(read: &ReadTxn) -> ModelBucket {
    fn walk(b: keelson_engine::pagefile::Bucket<'_>) -> ModelBucket {
        let mut m = ModelBucket {
            sequence: b.sequence(),
            ..ModelBucket::default()
        };
        b.for_each(|k, v| {
            match v {
                Some(v) => {
                    m.keys.insert(k.to_vec(), v.to_vec());
                }
                None => {
                    m.children
                        .insert(k.to_vec(), walk(b.bucket(k)?.expect("listed bucket opens")));
                }
            }
            Ok(())
        })
        .unwrap();
        m
    }
    let mut root = walk(read.root());
    root.sequence = 0;
    root
}

/// Reads everything a write transaction sees (its own changes included).
pub fn dump_txn(txn: &mut WriteTxn<'_>) -> ModelBucket {
    fn walk(txn: &mut WriteTxn<'_>, path: &mut Vec<Vec<u8>>) -> ModelBucket {
        let mut m = ModelBucket::default();
        let mut nested = Vec::new();
        {
            let refs: Vec<&[u8]> = path.iter().map(Vec::as_slice).collect();
            let b = txn.bucket_at(&refs).unwrap();
            m.sequence = b.sequence();
            let mut c = b.cursor();
            let mut at = c.first().unwrap();
            while let Some((k, v)) = at {
                match v {
                    Some(v) => {
                        m.keys.insert(k.to_vec(), v.to_vec());
                    }
                    None => nested.push(k.to_vec()),
                }
                at = c.next().unwrap();
            }
        }
        for name in nested {
            path.push(name.clone());
            m.children.insert(name, walk(txn, path));
            path.pop();
        }
        m
    }
    let mut root = ModelBucket::default();
    let mut names = Vec::new();
    {
        let mut c = txn.cursor();
        let mut at = c.first().unwrap();
        while let Some((k, _)) = at {
            names.push(k.to_vec());
            at = c.next().unwrap();
        }
    }
    for name in names {
        let mut path = vec![name.clone()];
        root.children.insert(name, walk(txn, &mut path));
    }
    root
}
