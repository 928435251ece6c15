//! keelson's version index as stored: the `keelson_index` bucket lists the index key
//! ([`index_key`](super::index_key)) of every version in order, each with its [`Version`], packed
//! into blocks — one bucket element per block — so an entry costs a few bytes instead of bbolt's
//! 16-byte element header and a whole key (the index is part of the file a quota counts).
//!
//! A block's element key is the index key of its first entry. Its value is its entries in order:
//! - each entry but the first starts with its index key as the length it shares with the entry
//!   before (varint), the length of the rest (varint) and the rest;
//! - then its version: a length (varint) and [`Version::pack`]'s bytes (none for the commonest
//!   version, a key's first at its own revision).
//!
//! Invariants: blocks are in index-key order and hold one entry at least; every entry of a block is
//! below the next block's key; a block of two entries or more encodes in at most [`BLOCK_BYTES`]
//! (one entry may be larger alone). Readers ([`Scan`], [`get`]) and the writer ([`insert`],
//! [`remove`]) are the only code that knows the layout.

use prost::encoding::{decode_varint, encode_varint};

use super::error::{MvccError, Result};
use super::index_key::split;
use super::read::corrupt;
use super::revision::Revision;
use super::schema::INDEX;
use super::version::{self, Version};
use crate::pagefile::{Bucket, BucketMut, Cursor, Item, View, WriteTxn};

/// The most bytes a block of two entries or more takes: small enough that rewriting one on every
/// insert is cheap, large enough that the element header is a small part of it.
const BLOCK_BYTES: usize = 512;

/// One entry as a reader sees it: its index key, split into the encoded user key and revision.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry<'k> {
    pub key: &'k [u8],
    pub encoded: &'k [u8],
    pub rev: Revision,
    pub version: Version,
}

/// Reads one block's entries in order; `key` holds the current entry's index key.
struct Block<'a> {
    key: Vec<u8>,
    /// The block's value, and the part of it not read yet.
    value: &'a [u8],
    rest: &'a [u8],
    first: bool,
}

impl<'a> Block<'a> {
    fn new(key: &[u8], value: Option<&'a [u8]>) -> Result<Self> {
        let mut block = Block::empty();
        block.load(key, value)?;
        Ok(block)
    }

    /// A block with no entries (what a scan of an empty index reads).
    fn empty() -> Self {
        Block {
            key: Vec::new(),
            value: &[],
            rest: &[],
            first: false,
        }
    }

    /// Makes this the reader of element (`key`, `value`), keeping the key's buffer.
    fn load(&mut self, key: &[u8], value: Option<&'a [u8]>) -> Result<()> {
        let value = value.ok_or_else(|| corrupt("an index element is a bucket"))?;
        self.key.clear();
        self.key.extend_from_slice(key);
        (self.value, self.rest, self.first) = (value, value, true);
        Ok(())
    }

    /// Bytes of the value read so far.
    fn read(&self) -> usize {
        self.value.len() - self.rest.len()
    }

    /// Moves to the next entry: its packed version, or `None` past the last.
    fn next(&mut self) -> Result<Option<&'a [u8]>> {
        if self.first {
            self.first = false;
        } else if self.rest.is_empty() {
            return Ok(None);
        } else {
            let shared = self.number()?;
            let suffix = self.bytes()?;
            if shared > self.key.len() {
                return Err(corrupt("an index entry shares more than its neighbour has"));
            }
            self.key.truncate(shared);
            self.key.extend_from_slice(suffix);
        }
        self.bytes().map(Some)
    }

    fn number(&mut self) -> Result<usize> {
        decode_varint(&mut self.rest)
            .ok()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| corrupt("an index block's length does not decode"))
    }

    fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.number()?;
        if len > self.rest.len() {
            return Err(corrupt("an index block ends inside an entry"));
        }
        let (bytes, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(bytes)
    }

    /// The entry it is on.
    fn entry(&self, packed: &[u8]) -> Result<Entry<'_>> {
        let (encoded, rev) = split(&self.key).ok_or_else(|| corrupt("index key does not split"))?;
        let version = unpack(packed, rev)?;
        Ok(Entry {
            key: &self.key,
            encoded,
            rev,
            version,
        })
    }

    /// Every entry from here on, owned: index key and packed version.
    fn rest_owned(mut self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        while let Some(packed) = self.next()? {
            out.push((self.key.clone(), packed.to_vec()));
        }
        Ok(out)
    }
}

/// The index's entries in order from the first at or after some index key.
pub(crate) struct Scan<'a> {
    cursor: Cursor<'a>,
    block: Block<'a>,
    /// Entries below this are skipped (the scan may start inside a block); empty once passed.
    from: &'a [u8],
    /// The cursor is past the last block.
    ended: bool,
}

impl<'a> Scan<'a> {
    /// A scan of `index` from the first entry whose index key is at least `from`.
    pub fn from(index: &Bucket<'a>, from: &'a [u8]) -> Result<Self> {
        let mut cursor = index.cursor();
        let (block, ended) = match holder(&mut cursor, from)? {
            Some((k, v)) => (Block::new(k, v)?, false),
            None => (Block::empty(), true),
        };
        Ok(Scan {
            cursor,
            block,
            from,
            ended,
        })
    }

    /// The next entry, or `None` past the last.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Entry<'_>>> {
        loop {
            match self.block.next()? {
                Some(packed) if self.block.key.as_slice() >= self.from => {
                    // Every entry from here on is past `from`.
                    self.from = &[];
                    return self.block.entry(packed).map(Some);
                }
                Some(_) => {}
                None if self.ended => return Ok(None),
                None => match self.cursor.next()? {
                    Some((k, v)) => self.block.load(k, v)?,
                    None => self.ended = true,
                },
            }
        }
    }
}

/// Moves `cursor` to the block that holds `key` or would: the last whose first key is at most
/// `key`, else the first block. `None` if the index is empty.
fn holder<'a>(cursor: &mut Cursor<'a>, key: &[u8]) -> Result<Option<Item<'a>>> {
    let at = cursor.seek(key)?;
    if let Some((k, _)) = at
        && k == key
    {
        return Ok(at);
    }
    let before = if at.is_some() {
        cursor.prev()?
    } else {
        cursor.last()?
    };
    match before {
        Some(found) => Ok(Some(found)),
        None => Ok(cursor.first()?),
    }
}

/// The version stored under index key `key`, if any.
pub(crate) fn get(index: &Bucket<'_>, key: &[u8]) -> Result<Option<Version>> {
    let mut scan = Scan::from(index, key)?;
    Ok(scan.next()?.filter(|e| e.key == key).map(|e| e.version))
}

/// Records a version under index key `key` (replacing what was there), and returns the version
/// of the same user key just below it — for a put or delete, which takes a revision above all
/// others, the key's newest version so far. `make` is given that version and returns the one to
/// record, so a write finds its key's history and extends it in one walk of the index.
pub(crate) fn insert(
    txn: &mut WriteTxn<'_>,
    key: &[u8],
    make: impl FnOnce(Option<Version>) -> Version,
) -> Result<Option<Version>> {
    let (encoded, rev) = split(key).ok_or_else(|| corrupt("index key does not split"))?;
    let mut buf = [0; version::MAX_LEN];
    let mut index = txn.bucket(INDEX)?;
    // `old`: the element key of the block the entry goes into (empty: the index is empty).
    let (prior, old, (value, appended)) = {
        let mut cursor = index.cursor();
        let (old, block) = match holder(&mut cursor, key)? {
            Some((first, value)) => (first.to_vec(), Block::new(first, value)?),
            None => (Vec::new(), Block::empty()),
        };
        let spot = Spot::find(block, key)?;
        let prior = spot.prior(encoded)?;
        let packed = make(prior).pack(rev, &mut buf);
        (prior, old, spot.splice(key, packed))
    };
    let first = if old.is_empty() || key < old.as_slice() {
        key
    } else {
        &old
    };
    if value.len() <= BLOCK_BYTES {
        if !old.is_empty() && first != old.as_slice() {
            index.delete(&old)?;
        }
        index.put(first, &value)?;
        return Ok(prior);
    }
    if let Some(halves) = halves(first, &value, appended)? {
        if first != old.as_slice() {
            index.delete(&old)?;
        }
        index.put(first, halves.head)?;
        index.put(&halves.second_key, &halves.second)?;
        return Ok(prior);
    }
    let entries = Block::new(first, Some(&value))?.rest_owned()?;
    store(&mut index, &old, &entries, appended)?;
    Ok(prior)
}

/// The two blocks a block of more than [`BLOCK_BYTES`] splits into.
struct Halves<'v> {
    /// The first block's value (its element key is the old block's).
    head: &'v [u8],
    /// The second block's element key and value.
    second_key: Vec<u8>,
    second: Vec<u8>,
}

/// Block (`first`, `value`), past [`BLOCK_BYTES`], split where [`store`] would cut it (before its
/// last entry if that was `appended`, else at half its entries), in its bytes without decoding its
/// entries: the second block's first entry is written whole and the rest copied. `None` if a part
/// of two entries or more would still not fit; [`store`] then splits further.
fn halves<'v>(first: &[u8], value: &'v [u8], appended: bool) -> Result<Option<Halves<'v>>> {
    let mut block = Block::new(first, Some(value))?;
    let mut count = 0;
    while block.next()?.is_some() {
        count += 1;
    }
    if count < 2 {
        return Ok(None);
    }
    let cut = if appended { count - 1 } else { count / 2 };
    // Read again up to the cut entry: its key is rebuilt from the entries before it.
    let mut block = Block::new(first, Some(value))?;
    let (mut start, mut packed) = (0, &[][..]);
    for _ in 0..=cut {
        start = block.read();
        packed = block
            .next()?
            .ok_or_else(|| corrupt("an index block ends before its entries do"))?;
    }
    let head = &value[..start];
    let mut second = Vec::with_capacity(value.len() - start + block.key.len());
    push_entry(&mut second, None, &block.key, packed);
    second.extend_from_slice(block.rest);
    let fits = |part: &[u8], entries: usize| entries < 2 || part.len() <= BLOCK_BYTES;
    if !fits(head, cut) || !fits(&second, count - cut) {
        return Ok(None);
    }
    Ok(Some(Halves {
        head,
        second_key: block.key,
        second,
    }))
}

/// Where an entry under some index key goes in a block that holds it or would: the entry before
/// it (index key, packed version) and where that one ends, and the entry at or after it.
struct Spot<'a> {
    block: Block<'a>,
    before: Option<(Vec<u8>, &'a [u8])>,
    start: usize,
    after: Option<&'a [u8]>,
}

impl<'a> Spot<'a> {
    /// Reads `block` up to `key`.
    fn find(mut block: Block<'a>, key: &[u8]) -> Result<Self> {
        let mut before: Option<(Vec<u8>, &[u8])> = None;
        let mut start = 0;
        let mut after = None;
        while let Some(packed) = block.next()? {
            if block.key.as_slice() >= key {
                after = Some(packed);
                break;
            }
            let (before_key, before_packed) = before.get_or_insert_with(|| (Vec::new(), packed));
            before_key.clone_from(&block.key);
            *before_packed = packed;
            start = block.read();
        }
        Ok(Spot {
            block,
            before,
            start,
            after,
        })
    }

    /// The version of the entry before, if it is of user key `encoded`.
    fn prior(&self, encoded: &[u8]) -> Result<Option<Version>> {
        let Some((before, packed)) = &self.before else {
            return Ok(None);
        };
        let (before_encoded, rev) =
            split(before).ok_or_else(|| corrupt("index key does not split"))?;
        if before_encoded != encoded {
            return Ok(None);
        }
        unpack(packed, rev).map(Some)
    }

    /// The block's value with `packed` recorded under `key`, written in one pass without decoding
    /// the block: the bytes before the new entry, the new entry, the entry after it re-encoded
    /// against it, the bytes after that. Also whether the entry went at the end.
    fn splice(self, key: &[u8], packed: &[u8]) -> (Vec<u8>, bool) {
        let Spot {
            block,
            before,
            start,
            after,
        } = self;
        let mut out = Vec::with_capacity(block.value.len() + key.len() + packed.len() + 4);
        out.extend_from_slice(&block.value[..start]);
        push_entry(
            &mut out,
            before.as_ref().map(|(k, _)| k.as_slice()),
            key,
            packed,
        );
        if let Some(next_packed) = after
            && block.key.as_slice() != key
        {
            push_entry(&mut out, Some(key), &block.key, next_packed);
        }
        out.extend_from_slice(block.rest);
        (out, after.is_none())
    }
}

/// Removes the entry under index key `key`; whether there was one.
pub(crate) fn remove(txn: &mut WriteTxn<'_>, key: &[u8]) -> Result<bool> {
    let mut index = txn.bucket(INDEX)?;
    let Some((old, mut entries)) = holder_owned(&index, key)? else {
        return Ok(false);
    };
    let Ok(at) = entries.binary_search_by(|(k, _)| k.as_slice().cmp(key)) else {
        return Ok(false);
    };
    entries.remove(at);
    store(&mut index, &old, &entries, false)?;
    Ok(true)
}

/// Records `entries` — index keys in order, each once, with their versions — replacing what was
/// under their keys. Each block they fall in is read and rewritten once, as full as
/// [`BLOCK_BYTES`] allows: a DeleteRange's tombstones go in at one rewrite per block, not per key.
pub(crate) fn insert_sorted(txn: &mut WriteTxn<'_>, entries: &[(Vec<u8>, Version)]) -> Result<()> {
    let mut index = txn.bucket(INDEX)?;
    let mut buf = [0; version::MAX_LEN];
    let mut rest = entries;
    while let Some((head, _)) = rest.first() {
        let (old, blocks, taken) = {
            let mut cursor = index.cursor();
            let (old, mut block) = match holder(&mut cursor, head)? {
                Some((first, value)) => (first.to_vec(), Block::new(first, value)?),
                None => (Vec::new(), Block::empty()),
            };
            // The entries that go in this block: those below the next block's first key.
            let next = cursor.next()?.map(|(k, _)| k);
            let taken = rest.partition_point(|(k, _)| next.is_none_or(|n| k.as_slice() < n));
            let mut news = rest[..taken].iter().peekable();
            let mut packer = Packer::default();
            let mut pack = |packer: &mut Packer, (key, version): &(Vec<u8>, Version)| {
                let (_, rev) = split(key).ok_or_else(|| corrupt("index key does not split"))?;
                packer.push(key, version.pack(rev, &mut buf));
                Ok::<_, MvccError>(())
            };
            while let Some(packed) = block.next()? {
                let mut replaced = false;
                while let Some(new) = news.next_if(|(k, _)| k.as_slice() <= block.key.as_slice()) {
                    replaced = new.0 == block.key;
                    pack(&mut packer, new)?;
                }
                if !replaced {
                    packer.push(&block.key, packed);
                }
            }
            for new in news {
                pack(&mut packer, new)?;
            }
            (old, packer.blocks, taken)
        };
        if blocks.first().is_none_or(|(first, _)| first != &old) && !old.is_empty() {
            index.delete(&old)?;
        }
        for (first, value) in &blocks {
            index.put(first, value)?;
        }
        rest = &rest[taken..];
    }
    Ok(())
}

/// Entries packed in order into blocks, each as full as [`BLOCK_BYTES`] allows.
#[derive(Default)]
struct Packer {
    /// Element key and value of each block.
    blocks: Vec<(Vec<u8>, Vec<u8>)>,
    /// The index key of the last entry.
    last: Vec<u8>,
}

impl Packer {
    fn push(&mut self, key: &[u8], packed: &[u8]) {
        let fits = self.blocks.last_mut().is_some_and(|(_, value)| {
            let end = value.len();
            push_entry(value, Some(&self.last), key, packed);
            let fits = value.len() <= BLOCK_BYTES;
            if !fits {
                value.truncate(end);
            }
            fits
        });
        if !fits {
            let mut value = Vec::with_capacity(BLOCK_BYTES);
            push_entry(&mut value, None, key, packed);
            self.blocks.push((key.to_vec(), value));
        }
        self.last.clear();
        self.last.extend_from_slice(key);
    }
}

/// The block that holds `key` or would ([`holder`]), owned: its element key and its entries.
type Owned = (Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

fn holder_owned(index: &BucketMut<'_>, key: &[u8]) -> Result<Option<Owned>> {
    let mut cursor = index.cursor();
    match holder(&mut cursor, key)? {
        Some((k, v)) => Ok(Some((k.to_vec(), Block::new(k, v)?.rest_owned()?))),
        None => Ok(None),
    }
}

/// Writes `entries` (in order) as the blocks replacing the one under element key `old` (empty:
/// none was). A block past [`BLOCK_BYTES`] splits: before its last entry if that was `appended`
/// (so keys arriving in order leave full blocks behind), else in halves, until every block of two
/// entries or more fits.
fn store(
    index: &mut BucketMut<'_>,
    old: &[u8],
    entries: &[(Vec<u8>, Vec<u8>)],
    appended: bool,
) -> Result<()> {
    if !old.is_empty() && entries.first().is_none_or(|(k, _)| k.as_slice() != old) {
        index.delete(old)?;
    }
    let mut pending = vec![entries];
    while let Some(part) = pending.pop() {
        let Some((first, _)) = part.first() else {
            continue;
        };
        let value = encode(part);
        if value.len() <= BLOCK_BYTES || part.len() < 2 {
            index.put(first, &value)?;
            continue;
        }
        let cut = if appended {
            part.len() - 1
        } else {
            part.len() / 2
        };
        pending.push(&part[cut..]);
        pending.push(&part[..cut]);
    }
    Ok(())
}

/// One block's value for `entries`.
fn encode(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(BLOCK_BYTES);
    let mut before = None;
    for (key, packed) in entries {
        push_entry(&mut out, before, key, packed);
        before = Some(key);
    }
    out
}

/// Appends the entry of `key` and `packed` that follows the entry of `before` (`None`: it is the
/// block's first, whose key is the element's).
fn push_entry(out: &mut Vec<u8>, before: Option<&[u8]>, key: &[u8], packed: &[u8]) {
    if let Some(before) = before {
        let shared = before
            .iter()
            .zip(key.iter())
            .take_while(|(a, b)| a == b)
            .count();
        encode_varint(shared as u64, out);
        encode_varint((key.len() - shared) as u64, out);
        out.extend_from_slice(&key[shared..]);
    }
    encode_varint(packed.len() as u64, out);
    out.extend_from_slice(packed);
}

fn unpack(packed: &[u8], rev: Revision) -> Result<Version> {
    Version::unpack(packed, rev).ok_or_else(|| corrupt("index version does not decode"))
}

/// How many versions keelson's index lists (when it is current, as many as the `key` bucket has
/// records): what a check of the file compares.
pub fn indexed_versions(view: &dyn View) -> Result<u64> {
    let Some(index) = view.view(INDEX)? else {
        return Ok(0);
    };
    let mut scan = Scan::from(&index, &[])?;
    let mut count = 0;
    while scan.next()?.is_some() {
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::mvcc::index_key::index_key;
    use crate::pagefile::{Db, Options, Writer};

    /// An index key from a small key space (so blocks fill, share prefixes and split), and a
    /// version that is sometimes the packed-away first one.
    fn entry() -> impl Strategy<Value = (Vec<u8>, Version)> {
        (
            prop::collection::vec(prop_oneof![Just(0u8), Just(b'a'), Just(b'b')], 0..40),
            1i64..400,
            0i64..3,
            any::<bool>(),
        )
            .prop_map(|(key, main, sub, first)| {
                let version = if first {
                    Version::first(Revision::new(main, sub))
                } else {
                    Version {
                        tombstone: main % 5 == 0,
                        create_revision: main / 2,
                        version: sub + 2,
                        lease: main % 3,
                    }
                };
                (index_key(&key, Revision::new(main, sub)), version)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Blocks list what a sorted map of the same inserts and removals lists, from any point,
        /// and keep their invariants.
        #[test]
        fn blocks_list_what_a_sorted_map_does(
            steps in prop::collection::vec((entry(), any::<bool>(), any::<prop::sample::Index>()), 1..600),
            probes in prop::collection::vec(entry(), 8),
        ) {
            let (_dir, db, mut writer) = empty_index();
            let mut model: BTreeMap<Vec<u8>, Version> = BTreeMap::new();
            let mut txn = writer.begin().unwrap();
            for ((key, version), remove, pick) in steps {
                if remove && !model.is_empty() {
                    let doomed = model.keys().nth(pick.index(model.len())).unwrap().clone();
                    model.remove(&doomed);
                    prop_assert!(remove_entry(&mut txn, &doomed));
                    prop_assert!(!remove_entry(&mut txn, &doomed), "removed twice");
                } else {
                    // What `insert` must find: the entry just below, if it is of the same user key.
                    let (encoded, _) = split(&key).unwrap();
                    let want = model
                        .range(..key.clone())
                        .next_back()
                        .filter(|(k, _)| split(k).unwrap().0 == encoded)
                        .map(|(_, v)| *v);
                    let mut given = None;
                    let prior = insert(&mut txn, &key, |p| {
                        given = Some(p);
                        version
                    })
                    .unwrap();
                    prop_assert_eq!(prior, want);
                    prop_assert_eq!(given, Some(want));
                    model.insert(key.clone(), version);
                }
            }
            txn.publish().unwrap();
            check_against(&db, &model, &probes)?;
        }

        /// A sorted batch recorded in one pass lands as the same inserts one at a time would: the
        /// blocks list what the sorted map lists, replaced keys included, and keep their
        /// invariants.
        #[test]
        fn a_sorted_batch_lists_what_a_sorted_map_does(
            before in prop::collection::vec(entry(), 0..400),
            batch in prop::collection::btree_map(entry().prop_map(|(k, _)| k), entry().prop_map(|(_, v)| v), 0..400),
            replace in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
            probes in prop::collection::vec(entry(), 8),
        ) {
            let (_dir, db, mut writer) = empty_index();
            let mut model: BTreeMap<Vec<u8>, Version> = BTreeMap::new();
            let mut txn = writer.begin().unwrap();
            for (key, version) in before {
                insert(&mut txn, &key, |_| version).unwrap();
                model.insert(key, version);
            }
            let mut batch = batch;
            // Some of the batch's keys are already there (their versions are replaced).
            for pick in replace {
                if !model.is_empty() {
                    let key = model.keys().nth(pick.index(model.len())).unwrap().clone();
                    batch.insert(key, Version::tombstone());
                }
            }
            let batch: Vec<_> = batch.into_iter().collect();
            insert_sorted(&mut txn, &batch).unwrap();
            model.extend(batch);
            txn.publish().unwrap();
            check_against(&db, &model, &probes)?;
        }
    }

    /// A new file with an empty index bucket (and the directory it lives in).
    fn empty_index() -> (tempfile::TempDir, Db, Writer) {
        let dir = tempfile::tempdir().unwrap();
        let (db, mut writer) = Db::open(dir.path().join("db"), Options::default()).unwrap();
        let mut txn = writer.begin().unwrap();
        txn.create_bucket(INDEX).unwrap();
        txn.publish().unwrap();
        (dir, db, writer)
    }

    /// The index in `db` keeps the layout's invariants, element by element, and lists what
    /// `model` lists, in all and from each probe on.
    fn check_against(
        db: &Db,
        model: &BTreeMap<Vec<u8>, Version>,
        probes: &[(Vec<u8>, Version)],
    ) -> Result<(), TestCaseError> {
        let view = db.begin_read().unwrap();
        let index = view.view(INDEX).unwrap().unwrap();
        let mut cursor = index.cursor();
        let mut at = cursor.first().unwrap();
        let mut before: Option<Vec<u8>> = None;
        let mut blocks = 0;
        while let Some((k, v)) = at {
            blocks += 1;
            let entries = Block::new(k, v).unwrap().rest_owned().unwrap();
            prop_assert_eq!(&entries[0].0[..], k, "a block's key is its first entry's");
            prop_assert!(entries.len() == 1 || v.unwrap().len() <= BLOCK_BYTES);
            prop_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
            prop_assert!(before.as_ref().is_none_or(|b| b < &entries[0].0));
            before = entries.last().map(|(k, _)| k.clone());
            at = cursor.next().unwrap();
        }
        prop_assert!(
            model.len() < 100 || blocks > 2,
            "{} entries in {blocks} blocks",
            model.len()
        );
        prop_assert_eq!(indexed_versions(&view).unwrap(), model.len() as u64);
        for (probe, _) in probes
            .iter()
            .chain([(Vec::new(), Version::default())].iter())
        {
            let mut scan = Scan::from(&index, probe).unwrap();
            let mut listed = Vec::new();
            while let Some(e) = scan.next().unwrap() {
                listed.push((e.key.to_vec(), e.version));
            }
            let want: Vec<_> = model
                .range(probe.clone()..)
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            prop_assert_eq!(listed, want);
            prop_assert_eq!(get(&index, probe).unwrap(), model.get(probe).copied());
        }
        for (key, version) in model {
            prop_assert_eq!(get(&index, key).unwrap(), Some(*version));
        }
        Ok(())
    }

    fn remove_entry(txn: &mut WriteTxn<'_>, key: &[u8]) -> bool {
        remove(txn, key).unwrap()
    }
}
