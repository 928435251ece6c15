//! Which watchers a key concerns, without looking at every watcher: watchers of one key are found
//! by hashing the key; watchers of a prefix (the common range: Kubernetes watches one per resource
//! type) by hashing each of the key's own prefixes of a length some prefix watcher has; any other
//! range (`[key, range_end)`, or every key from a key on) by a centered interval tree, built again
//! on the first lookup after watchers of such ranges came or went.
//!
//! Adding or removing a watcher costs no scan of the others, so a stream of 10 000 watchers of one
//! key closes in linear time.
//!
//! Invariant: every watcher is in exactly one of the three, chosen by [`Keys::class`].
//!
//! Runs on: every serving core (each hub has its own).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};

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

/// Where a watcher is indexed.
#[derive(Debug, PartialEq, Eq)]
enum Class<'k> {
    /// Under its key.
    One(&'k [u8]),
    /// Under its prefix: it watches every key that starts with it.
    Prefix(&'k [u8]),
    /// In the interval tree.
    Range,
}

impl Keys {
    /// Where a watcher of these keys is indexed. A range whose end is its start's prefix end (the
    /// start with its last byte below 0xff raised by one, what clients send for a prefix) is a
    /// prefix watch.
    fn class(&self) -> Class<'_> {
        match self {
            Keys::One(key) => Class::One(key),
            Keys::Range { from, to: Some(to) } if prefix_end(from).as_deref() == Some(to) => {
                Class::Prefix(from)
            }
            Keys::Range { .. } => Class::Range,
        }
    }
}

/// The end of the range of keys starting with `prefix`; `None` if there is none short of every
/// key from `prefix` on (the prefix is all 0xff).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|&b| b < 0xff)?;
    let mut end = prefix[..=last].to_vec();
    end[last] += 1;
    Some(end)
}

/// A watcher, by its stream and its id on the stream.
pub type Member = (u64, i64);

/// The watchers under one key or prefix.
type Members = BTreeSet<Member>;

/// The watchers of a hub, by the keys they watch.
#[derive(Debug, Default)]
pub struct KeyIndex {
    one: HashMap<Vec<u8>, Members>,
    prefixes: HashMap<Vec<u8>, Members>,
    /// How many prefixes of each length `prefixes` holds: the lengths a key's prefixes are looked
    /// up at.
    prefix_lengths: BTreeMap<usize, usize>,
    ranges: Intervals,
}

impl KeyIndex {
    /// Adds `member`, watching `keys`.
    pub fn insert(&mut self, keys: &Keys, member: Member) {
        match keys.class() {
            Class::One(key) => {
                self.one.entry(key.to_vec()).or_default().insert(member);
            }
            Class::Prefix(prefix) => {
                *self.prefix_lengths.entry(prefix.len()).or_default() += 1;
                self.prefixes
                    .entry(prefix.to_vec())
                    .or_default()
                    .insert(member);
            }
            Class::Range => self.ranges.insert(keys, member),
        }
    }

    /// Removes `member`, which watches `keys`.
    pub fn remove(&mut self, keys: &Keys, member: Member) {
        match keys.class() {
            Class::One(key) => {
                remove_from(&mut self.one, key, member);
            }
            Class::Prefix(prefix) => {
                if remove_from(&mut self.prefixes, prefix, member) {
                    let count = self.prefix_lengths.entry(prefix.len()).or_default();
                    *count -= 1;
                    if *count == 0 {
                        self.prefix_lengths.remove(&prefix.len());
                    }
                }
            }
            Class::Range => self.ranges.remove(member),
        }
    }

    /// Calls `each` for every watcher of `key`.
    pub fn matching(&mut self, key: &[u8], mut each: impl FnMut(Member)) {
        for &member in self.one.get(key).into_iter().flatten() {
            each(member);
        }
        for &length in self.prefix_lengths.keys() {
            if length > key.len() {
                break;
            }
            for &member in self.prefixes.get(&key[..length]).into_iter().flatten() {
                each(member);
            }
        }
        self.ranges.stabbing(key, each);
    }

    /// Whether no watcher is left.
    pub fn is_empty(&self) -> bool {
        self.one.is_empty() && self.prefixes.is_empty() && self.ranges.is_empty()
    }
}

/// Removes `member` from the watchers under `key`; whether it was there.
fn remove_from(map: &mut HashMap<Vec<u8>, Members>, key: &[u8], member: Member) -> bool {
    let Some(members) = map.get_mut(key) else {
        return false;
    };
    let removed = members.remove(&member);
    if members.is_empty() {
        map.remove(key);
    }
    removed
}

/// Watchers of ranges that are not prefixes, and a centered interval tree over them: each node
/// holds the ranges that contain its center key, sorted by start and by end; ranges wholly before
/// the center go left, wholly after it go right. A lookup visits one node per level and reads
/// only ranges that contain the key, besides one that stops each scan.
#[derive(Debug, Default)]
struct Intervals {
    ranges: Vec<(Keys, Member)>,
    /// Where each member is in `ranges`.
    at: HashMap<Member, usize>,
    /// `None` while `ranges` changed since the tree was built.
    tree: Option<Option<Box<Node>>>,
}

/// A node of the interval tree; ranges are positions in [`Intervals::ranges`].
#[derive(Debug)]
struct Node {
    center: Vec<u8>,
    /// The ranges containing `center`, by start, ascending.
    by_start: Vec<usize>,
    /// The same ranges by end, descending (open ends first).
    by_end: Vec<usize>,
    before: Option<Box<Node>>,
    after: Option<Box<Node>>,
}

/// A range's bounds.
fn bounds(keys: &Keys) -> (&[u8], Option<&[u8]>) {
    match keys {
        Keys::One(key) => (key, None),
        Keys::Range { from, to } => (from, to.as_deref()),
    }
}

/// Orders ends, an open end (`None`) after every key.
fn cmp_end(a: Option<&[u8]>, b: Option<&[u8]>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(a), Some(b)) => a.cmp(b),
    }
}

impl Intervals {
    fn insert(&mut self, keys: &Keys, member: Member) {
        self.at.insert(member, self.ranges.len());
        self.ranges.push((keys.clone(), member));
        self.tree = None;
    }

    fn remove(&mut self, member: Member) {
        let Some(at) = self.at.remove(&member) else {
            return;
        };
        self.ranges.swap_remove(at);
        if let Some((_, moved)) = self.ranges.get(at) {
            self.at.insert(*moved, at);
        }
        self.tree = None;
    }

    fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Calls `each` for every range containing `key`.
    fn stabbing(&mut self, key: &[u8], mut each: impl FnMut(Member)) {
        if self.ranges.is_empty() {
            return;
        }
        let ranges = &self.ranges;
        let tree = self.tree.get_or_insert_with(|| {
            let mut all: Vec<usize> = (0..ranges.len()).collect();
            all.sort_by(|&a, &b| bounds(&ranges[a].0).0.cmp(bounds(&ranges[b].0).0));
            Node::build(ranges, all)
        });
        let mut node = tree.as_deref();
        while let Some(n) = node {
            if key < n.center.as_slice() {
                // Every range here ends after the center, so after `key`: those starting at or
                // before `key` contain it.
                for &at in &n.by_start {
                    if bounds(&ranges[at].0).0 > key {
                        break;
                    }
                    each(ranges[at].1);
                }
                node = n.before.as_deref();
            } else {
                // Every range here starts at or before the center, so before `key`: those ending
                // after `key` contain it.
                for &at in &n.by_end {
                    if bounds(&ranges[at].0).1.is_some_and(|to| key >= to) {
                        break;
                    }
                    each(ranges[at].1);
                }
                node = n.after.as_deref();
            }
        }
    }
}

impl Node {
    /// The tree over `sorted`, positions of `ranges` in order of their starts.
    fn build(ranges: &[(Keys, Member)], sorted: Vec<usize>) -> Option<Box<Node>> {
        let middle = *sorted.get(sorted.len() / 2)?;
        let center = bounds(&ranges[middle].0).0.to_vec();
        let (mut before, mut here, mut after) = (Vec::new(), Vec::new(), Vec::new());
        for at in sorted {
            let (from, to) = bounds(&ranges[at].0);
            if to.is_some_and(|to| to <= center.as_slice()) {
                before.push(at);
            } else if from > center.as_slice() {
                after.push(at);
            } else {
                here.push(at);
            }
        }
        // `here` holds at least the middle range (it is not empty, so it contains its start):
        // each level has fewer ranges than the one above.
        let mut by_end = here.clone();
        by_end.sort_by(|&a, &b| cmp_end(bounds(&ranges[b].0).1, bounds(&ranges[a].0).1));
        Some(Box::new(Node {
            center,
            by_start: here,
            by_end,
            before: Node::build(ranges, before),
            after: Node::build(ranges, after),
        }))
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
        let found = |index: &mut KeyIndex, key: &[u8]| {
            let mut found = Vec::new();
            index.matching(key, |m| found.push(m));
            found.sort();
            found
        };
        assert_eq!(found(&mut index, b"a/1"), vec![(1, 0), (1, 1), (2, 0)]);
        assert_eq!(found(&mut index, b"a/2"), vec![(1, 1), (2, 0)]);
        assert_eq!(found(&mut index, b"b"), vec![]);
        index.remove(&prefix, (1, 1));
        index.remove(&one, (1, 0));
        assert_eq!(found(&mut index, b"a/1"), vec![(2, 0)]);
        index.remove(&prefix, (2, 0));
        assert!(index.is_empty());
    }

    #[test]
    fn prefixes_are_told_from_other_ranges() {
        assert_eq!(prefix_end(b"a/"), Some(b"a0".to_vec()));
        assert_eq!(prefix_end(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff"), None);
        assert_eq!(
            Keys::of(b"a/", b"a0").unwrap().class(),
            Class::Prefix(b"a/")
        );
        assert_eq!(Keys::of(b"a/", b"a1").unwrap().class(), Class::Range);
        assert_eq!(Keys::of(b"a/", b"\0").unwrap().class(), Class::Range);
    }

    /// Random watchers of random keys, prefixes and ranges, some removed: every lookup finds what
    /// asking each watcher finds.
    #[test]
    fn the_index_finds_what_a_scan_finds() {
        use rand::{Rng, SeedableRng};
        for seed in 0..50 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let key = |rng: &mut rand::rngs::StdRng| {
                let len = rng.random_range(0..4);
                (0..len)
                    .map(|_| rng.random_range(b'a'..b'e'))
                    .collect::<Vec<u8>>()
            };
            let mut index = KeyIndex::default();
            let mut all: Vec<(Keys, Member)> = Vec::new();
            for id in 0..200 {
                let from = key(&mut rng);
                let end = match rng.random_range(0..4) {
                    0 => Vec::new(),
                    1 => prefix_end(&from).unwrap_or(vec![0]),
                    2 => vec![0],
                    _ => key(&mut rng),
                };
                let Some(keys) = Keys::of(&from, &end) else {
                    continue;
                };
                let member = (seed, id);
                index.insert(&keys, member);
                all.push((keys, member));
                if rng.random_bool(0.2) {
                    let (keys, member) = all.swap_remove(rng.random_range(0..all.len()));
                    index.remove(&keys, member);
                }
                // Keys in events are never empty.
                let probe = [key(&mut rng), vec![b'a']].concat();
                let mut found = Vec::new();
                index.matching(&probe, |m| found.push(m));
                found.sort();
                let mut want: Vec<Member> = all
                    .iter()
                    .filter(|(k, _)| k.contains(&probe))
                    .map(|(_, m)| *m)
                    .collect();
                want.sort();
                assert_eq!(found, want, "seed {seed}, key {probe:?}");
            }
            for (keys, member) in all {
                index.remove(&keys, member);
            }
            assert!(index.is_empty());
        }
    }
}
