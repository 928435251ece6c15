//! Which watchers a key concerns: watchers of one key are found by hashing the key; watchers of a
//! range (`[key, range_end)`, a prefix, everything from a key on) are kept apart and checked one by
//! one — there are few of them in a control plane (a prefix per resource type), many single-key
//! watchers.
//!
//! Runs on: every serving core (each hub has its own).

use std::collections::HashMap;

/// The keys a watcher watches, as etcd reads a `WatchCreateRequest`'s `key` and `range_end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keys {
    /// One key (`range_end` empty).
    One(Vec<u8>),
    /// `[from, to)`; `to` `None`: every key from `from` on (`range_end` `"\0"`).
    Range {
        /// The first key.
        from: Vec<u8>,
        /// The end, exclusive.
        to: Option<Vec<u8>>,
    },
}

impl Keys {
    /// The keys of a request: an empty `key` is the smallest key (`"\0"`), as in etcd. `None` if
    /// the range is empty (`key` at or after `range_end`).
    pub fn of(key: &[u8], range_end: &[u8]) -> Option<Keys> {
        let from = if key.is_empty() {
            vec![0]
        } else {
            key.to_vec()
        };
        match range_end {
            [] => Some(Keys::One(from)),
            [0] => Some(Keys::Range { from, to: None }),
            end if from.as_slice() < end => Some(Keys::Range {
                from,
                to: Some(end.to_vec()),
            }),
            _ => None,
        }
    }

    /// Whether `key` is one of these keys.
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            Keys::One(one) => one == key,
            Keys::Range { from, to } => {
                key >= from.as_slice() && to.as_ref().is_none_or(|to| key < to.as_slice())
            }
        }
    }
}

/// A watcher, by its stream and its id on the stream.
pub type Member = (u64, i64);

/// The watchers of a hub, by the keys they watch.
#[derive(Debug, Default)]
pub struct KeyIndex {
    one: HashMap<Vec<u8>, Vec<Member>>,
    ranges: Vec<(Keys, Member)>,
}

impl KeyIndex {
    /// Adds `member`, watching `keys`.
    pub fn insert(&mut self, keys: &Keys, member: Member) {
        match keys {
            Keys::One(key) => self.one.entry(key.clone()).or_default().push(member),
            range => self.ranges.push((range.clone(), member)),
        }
    }

    /// Removes `member`, which watches `keys`.
    pub fn remove(&mut self, keys: &Keys, member: Member) {
        match keys {
            Keys::One(key) => {
                if let Some(members) = self.one.get_mut(key) {
                    members.retain(|m| *m != member);
                    if members.is_empty() {
                        self.one.remove(key);
                    }
                }
            }
            _ => self.ranges.retain(|(_, m)| *m != member),
        }
    }

    /// Calls `each` for every watcher of `key`.
    pub fn matching(&self, key: &[u8], mut each: impl FnMut(Member)) {
        for &member in self.one.get(key).into_iter().flatten() {
            each(member);
        }
        for (keys, member) in &self.ranges {
            if keys.contains(key) {
                each(*member);
            }
        }
    }

    /// Whether no watcher is left.
    pub fn is_empty(&self) -> bool {
        self.one.is_empty() && self.ranges.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_as_etcd_reads_them() {
        assert_eq!(Keys::of(b"a", b""), Some(Keys::One(b"a".to_vec())));
        assert_eq!(Keys::of(b"", b""), Some(Keys::One(vec![0])));
        let all = Keys::of(b"", b"\0").unwrap();
        assert!(all.contains(b"\0") && all.contains(b"\xff\xff"));
        let prefix = Keys::of(b"a/", b"a0").unwrap();
        assert!(prefix.contains(b"a/") && prefix.contains(b"a/b") && !prefix.contains(b"a0"));
        assert!(!prefix.contains(b"a"));
        assert_eq!(Keys::of(b"b", b"a"), None);
        assert_eq!(Keys::of(b"a", b"a"), None);
    }

    #[test]
    fn the_index_finds_single_key_and_range_watchers() {
        let mut index = KeyIndex::default();
        let one = Keys::of(b"a/1", b"").unwrap();
        let prefix = Keys::of(b"a/", b"a0").unwrap();
        index.insert(&one, (1, 0));
        index.insert(&prefix, (1, 1));
        index.insert(&prefix, (2, 0));
        let found = |index: &KeyIndex, key: &[u8]| {
            let mut found = Vec::new();
            index.matching(key, |m| found.push(m));
            found.sort();
            found
        };
        assert_eq!(found(&index, b"a/1"), vec![(1, 0), (1, 1), (2, 0)]);
        assert_eq!(found(&index, b"a/2"), vec![(1, 1), (2, 0)]);
        assert_eq!(found(&index, b"b"), vec![]);
        index.remove(&prefix, (1, 1));
        index.remove(&one, (1, 0));
        assert_eq!(found(&index, b"a/1"), vec![(2, 0)]);
        index.remove(&prefix, (2, 0));
        assert!(index.is_empty());
    }
}
