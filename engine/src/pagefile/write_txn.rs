//! The write transaction: bucket and key operations on materialized nodes, ended by `publish` (see
//! `spill.rs` for how nodes become pages) or abandoned by dropping it.
//!
//! Nothing here touches the file or the freelist: pages that operations stop using are collected in
//! `freed` and handed to the freelist at publish, so an abandoned transaction needs no undo. Buckets
//! opened in the transaction live in an arena (`buckets`, the root bucket at index 0) and are named
//! in their parent's `children`.

use std::collections::BTreeMap;

use super::bucket::{Bucket, BucketValue, is_bucket};
use super::db::{Db, Writer};
use super::error::{Corruption, Error, PageProblem, Result};
use super::layout::{
    BucketHeader, LEAF_FLAG_BUCKET, MAX_BUCKET_DEPTH, MAX_KEY_SIZE, MAX_VALUE_SIZE, Pgid,
};
use super::node::{Node, NodeId};
use super::page::PageView;
use super::readers::Snapshot;
use super::spill::{self, Staged};
use super::tree::{Cursor, NodeArena, NodeView, PageSet, Pages, Root, TreeSource};

/// bbolt's default: split nodes at half a page.
const DEFAULT_FILL_PERCENT: f64 = 0.5;
/// Deeper than any valid tree; guards materialization against cycles in a corrupt file.
const MAX_DEPTH: usize = 64;

/// A bucket as the write transaction holds it.
#[derive(Debug, Clone)]
pub(crate) struct BucketState {
    pub header: BucketHeader,
    /// The page image of an inline bucket, as it was when opened.
    pub inline: Option<Vec<u8>>,
    pub arena: NodeArena,
    /// The root node, once materialized (or created).
    pub root_node: Option<NodeId>,
    /// Nested buckets opened in this transaction, by name.
    pub children: BTreeMap<Vec<u8>, usize>,
    pub fill: f64,
    pub deleted: bool,
    /// How deep below the root bucket (the root is 0).
    pub nesting: usize,
}

impl BucketState {
    fn opened(header: BucketHeader, inline: Option<Vec<u8>>, nesting: usize) -> Self {
        BucketState {
            nesting,
            header,
            inline,
            arena: NodeArena::default(),
            root_node: None,
            children: BTreeMap::new(),
            fill: DEFAULT_FILL_PERCENT,
            deleted: false,
        }
    }

    fn created(nesting: usize) -> Self {
        let mut state = BucketState::opened(BucketHeader::default(), None, nesting);
        state.arena.nodes.push(Node::empty_leaf());
        state.root_node = Some(0);
        state
    }

    /// The tree as this transaction sees it.
    pub fn tree<'a>(&'a self, pages: Pages<'a>) -> TreeSource<'a> {
        let root = match (self.root_node, &self.inline) {
            (Some(id), _) => Root::Node(id),
            (None, Some(bytes)) if self.header.root == 0 => Root::Inline(bytes),
            _ => Root::Page(self.header.root),
        };
        TreeSource {
            pages,
            root,
            arena: Some(&self.arena),
        }
    }

    /// Materializes the root node.
    pub fn root_id(&mut self, pages: Pages<'_>) -> Result<NodeId, Corruption> {
        if let Some(id) = self.root_node {
            return Ok(id);
        }
        let node = match (&self.inline, self.header.root) {
            (Some(bytes), 0) => Node::read(&PageView::inline(bytes)?, 0, None)?,
            (_, pgid) => Node::read(&pages.node(pgid)?, pgid, None)?,
        };
        let id = self.arena.nodes.len();
        if node.pgid != 0 {
            self.arena.by_pgid.insert(node.pgid, id);
        }
        self.arena.nodes.push(node);
        self.root_node = Some(id);
        Ok(id)
    }

    /// Materializes the child at `index` of branch node `parent`.
    pub fn child_id(
        &mut self,
        pages: Pages<'_>,
        parent: NodeId,
        index: usize,
    ) -> Result<NodeId, Corruption> {
        let pgid = self.arena.nodes[parent].child(index);
        if let Some(&id) = self.arena.by_pgid.get(&pgid) {
            return Ok(id);
        }
        let mut node = Node::read(&pages.node(pgid)?, pgid, Some(parent))?;
        node.key = self.arena.nodes[parent].key(index).to_vec();
        let id = self.arena.nodes.len();
        self.arena.nodes.push(node);
        self.arena.by_pgid.insert(pgid, id);
        self.arena.nodes[parent].children.push(id);
        Ok(id)
    }

    /// Materializes the path from the root to the leaf where `key` belongs, and returns that leaf.
    pub fn leaf_for(&mut self, pages: Pages<'_>, key: &[u8]) -> Result<NodeId, Corruption> {
        let mut id = self.root_id(pages)?;
        for _ in 0..MAX_DEPTH {
            let node = &self.arena.nodes[id];
            if node.leaf {
                return Ok(id);
            }
            if node.is_empty() {
                let problem = PageProblem::EmptyBranch;
                return Err(match node.pgid {
                    0 => Corruption::InlinePage { problem },
                    pgid => Corruption::Page {
                        pgid,
                        offset: pgid * pages.page_size as u64,
                        problem,
                    },
                });
            }
            let index = match node.search(key) {
                (i, true) => i,
                (i, false) => i.saturating_sub(1),
            };
            id = self.child_id(pages, id, index)?;
        }
        Err(Corruption::InlinePage {
            problem: PageProblem::TooDeep(MAX_DEPTH),
        })
    }
}

/// Runs of pages (first page, count) that the nodes of `tree` occupy on file.
pub(crate) fn tree_page_runs(tree: &TreeSource<'_>) -> Result<Vec<(Pgid, u64)>> {
    let pages = tree.pages;
    let mut runs = Vec::new();
    tree.for_each_node(&mut PageSet::default(), &mut |view, pgid, _| {
        if pgid != 0 {
            let overflow = match view {
                NodeView::Page(p) => p.header().overflow,
                NodeView::Node(_) => {
                    pages
                        .page(pgid)
                        .map_err(|c| pages.corrupt(c))?
                        .header()
                        .overflow
                }
            };
            runs.push((pgid, u64::from(overflow) + 1));
        }
        Ok(())
    })?;
    Ok(runs)
}

fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::KeyRequired);
    }
    if key.len() > MAX_KEY_SIZE {
        return Err(Error::KeyTooLarge { len: key.len() });
    }
    Ok(())
}

fn check_bucket_name(name: &[u8]) -> Result<()> {
    if name.is_empty() {
        return Err(Error::BucketNameRequired);
    }
    check_key(name)
}

/// The bucket value of a freshly created, empty bucket: header plus an empty inline leaf.
fn empty_bucket_value() -> Vec<u8> {
    spill::inline_value(&BucketHeader::default(), &Node::empty_leaf())
}

/// Everything a write transaction has changed so far.
#[derive(Debug)]
pub(crate) struct TxnState {
    pub db: Db,
    pub txid: u64,
    /// The tree it started from, with the writer's high-water mark and newest mapping.
    pub snapshot: Snapshot,
    pub buckets: Vec<BucketState>,
    /// Pages that operations stopped using (whole deleted buckets).
    pub freed: Vec<(Pgid, u64)>,
}

impl TxnState {
    fn pages(&self) -> Pages<'_> {
        self.db.pages(&self.snapshot)
    }

    /// Bucket `b` as the transaction has changed it, read-only.
    fn bucket_view(&self, b: usize) -> Bucket<'_> {
        let state = &self.buckets[b];
        Bucket {
            tree: state.tree(self.pages()),
            sequence: state.header.sequence,
        }
    }

    /// Nested bucket `name` of `b` as the transaction has changed it, read-only, without opening
    /// it for writing.
    fn nested_view(&self, b: usize, name: &[u8]) -> Result<Option<Bucket<'_>>> {
        match self.buckets[b].children.get(name) {
            Some(&id) if self.buckets[id].deleted => Ok(None),
            Some(&id) => Ok(Some(self.bucket_view(id))),
            None => self.bucket_view(b).bucket(name),
        }
    }

    fn put(&mut self, b: usize, key: &[u8], value: &[u8]) -> Result<()> {
        check_key(key)?;
        if value.len() > MAX_VALUE_SIZE {
            return Err(Error::ValueTooLarge { len: value.len() });
        }
        let pages = self.db.pages(&self.snapshot);
        let bucket = &mut self.buckets[b];
        let leaf = bucket.leaf_for(pages, key).map_err(|c| pages.corrupt(c))?;
        let node = &mut bucket.arena.nodes[leaf];
        if let (i, true) = node.search(key)
            && node.leaf_entry(i).flags & LEAF_FLAG_BUCKET != 0
        {
            return Err(Error::IncompatibleValue);
        }
        node.put(key, key, value, 0, 0);
        Ok(())
    }

    fn delete(&mut self, b: usize, key: &[u8]) -> Result<bool> {
        check_key(key)?;
        let pages = self.db.pages(&self.snapshot);
        match self.buckets[b]
            .tree(pages)
            .get(key)
            .map_err(|c| pages.corrupt(c))?
        {
            None => return Ok(false),
            Some(e) if is_bucket(&e) => return Err(Error::IncompatibleValue),
            Some(_) => {}
        }
        self.remove_entry(b, key)?;
        Ok(true)
    }

    /// Removes `key`'s element from bucket `b` (which has it).
    fn remove_entry(&mut self, b: usize, key: &[u8]) -> Result<()> {
        let pages = self.db.pages(&self.snapshot);
        let bucket = &mut self.buckets[b];
        let leaf = bucket.leaf_for(pages, key).map_err(|c| pages.corrupt(c))?;
        let node = &mut bucket.arena.nodes[leaf];
        node.remove(key);
        node.unbalanced = true;
        Ok(())
    }

    /// Opens the existing nested bucket `name` of bucket `b`.
    fn open_bucket(&mut self, b: usize, name: &[u8]) -> Result<usize> {
        check_bucket_name(name)?;
        if let Some(&id) = self.buckets[b].children.get(name) {
            return Ok(id);
        }
        let pages = self.db.pages(&self.snapshot);
        let state = match self.buckets[b]
            .tree(pages)
            .get(name)
            .map_err(|c| pages.corrupt(c))?
        {
            None => return Err(Error::BucketNotFound),
            Some(e) if !is_bucket(&e) => return Err(Error::IncompatibleValue),
            Some(e) => {
                let v = BucketValue::parse(e).map_err(|c| pages.corrupt(c))?;
                BucketState::opened(
                    v.header,
                    v.inline.map(<[u8]>::to_vec),
                    self.buckets[b].nesting + 1,
                )
            }
        };
        let id = self.buckets.len();
        self.buckets.push(state);
        self.buckets[b].children.insert(name.to_vec(), id);
        Ok(id)
    }

    fn create_bucket(&mut self, b: usize, name: &[u8]) -> Result<usize> {
        check_bucket_name(name)?;
        if self.buckets[b].nesting + 1 > MAX_BUCKET_DEPTH {
            return Err(Error::NestedTooDeep {
                max: MAX_BUCKET_DEPTH,
            });
        }
        let pages = self.db.pages(&self.snapshot);
        match self.buckets[b]
            .tree(pages)
            .get(name)
            .map_err(|c| pages.corrupt(c))?
        {
            Some(e) if is_bucket(&e) => return Err(Error::BucketExists),
            Some(_) => return Err(Error::IncompatibleValue),
            None => {}
        }
        let bucket = &mut self.buckets[b];
        let leaf = bucket.leaf_for(pages, name).map_err(|c| pages.corrupt(c))?;
        bucket.arena.nodes[leaf].put(name, name, &empty_bucket_value(), LEAF_FLAG_BUCKET, 0);
        let id = self.buckets.len();
        self.buckets
            .push(BucketState::created(self.buckets[b].nesting + 1));
        self.buckets[b].children.insert(name.to_vec(), id);
        Ok(id)
    }

    fn create_bucket_if_missing(&mut self, b: usize, name: &[u8]) -> Result<usize> {
        match self.open_bucket(b, name) {
            Err(Error::BucketNotFound) => self.create_bucket(b, name),
            other => other,
        }
    }

    /// Deletes nested bucket `name` of `b`, all or nothing: every page of it and of its nested
    /// buckets is found first, and only when nothing failed is anything freed or changed.
    fn delete_bucket(&mut self, b: usize, name: &[u8]) -> Result<()> {
        let id = self.open_bucket(b, name)?;
        let mut doomed = Vec::new();
        let mut runs = Vec::new();
        self.collect_bucket(id, self.buckets[b].nesting + 1, &mut doomed, &mut runs)?;
        self.remove_entry(b, name)?;
        self.buckets[b].children.remove(name);
        self.freed.extend(runs);
        for d in doomed {
            self.buckets[d].deleted = true;
        }
        Ok(())
    }

    /// Collects bucket `id` (at `nesting` below the root) and its nested buckets, and the runs of
    /// pages they use.
    fn collect_bucket(
        &mut self,
        id: usize,
        nesting: usize,
        doomed: &mut Vec<usize>,
        runs: &mut Vec<(Pgid, u64)>,
    ) -> Result<()> {
        let nested = {
            let pages = self.pages();
            if nesting > MAX_BUCKET_DEPTH {
                return Err(pages.corrupt(Corruption::NestingTooDeep(MAX_BUCKET_DEPTH)));
            }
            let tree = self.buckets[id].tree(pages);
            let mut nested = Vec::new();
            let mut c = Cursor::new(tree);
            let mut at = c.first()?;
            while let Some((k, v)) = at {
                if v.is_none() {
                    nested.push(k.to_vec());
                }
                at = c.next()?;
            }
            runs.extend(tree_page_runs(&tree)?);
            nested
        };
        doomed.push(id);
        for name in nested {
            let child = self.open_bucket(id, &name)?;
            self.collect_bucket(child, nesting + 1, doomed, runs)?;
        }
        Ok(())
    }

    fn next_sequence(&mut self, b: usize) -> Result<u64> {
        self.set_sequence(b, self.buckets[b].header.sequence.wrapping_add(1))?;
        Ok(self.buckets[b].header.sequence)
    }

    fn set_sequence(&mut self, b: usize, value: u64) -> Result<()> {
        // Materialize the root so the bucket is rewritten, carrying its new header, at publish.
        let pages = self.db.pages(&self.snapshot);
        self.buckets[b]
            .root_id(pages)
            .map_err(|c| pages.corrupt(c))?;
        self.buckets[b].header.sequence = value;
        Ok(())
    }
}

/// The write transaction. At most one exists per file (it borrows the [`Writer`]). End it with
/// [`WriteTxn::publish`]; dropping it instead discards every change.
#[derive(Debug)]
pub struct WriteTxn<'w> {
    writer: &'w mut Writer,
    state: TxnState,
}

impl<'w> WriteTxn<'w> {
    pub(crate) fn new(writer: &'w mut Writer, txid: u64) -> Self {
        let snapshot = Snapshot {
            hwm: writer.hwm,
            map: writer.db.inner.maps.newest(),
            ..writer.current
        };
        let root = BucketState::opened(writer.current.root, None, 0);
        let state = TxnState {
            db: writer.db.clone(),
            txid,
            snapshot,
            buckets: vec![root],
            freed: Vec::new(),
        };
        WriteTxn { writer, state }
    }

    /// This transaction's id (the txid readers will see after publish).
    pub fn id(&self) -> u64 {
        self.state.txid
    }

    /// A cursor over the top-level bucket names (values are `None`).
    pub fn cursor(&self) -> Cursor<'_> {
        self.state.bucket_view(0).cursor()
    }

    /// The top-level bucket `name` as this transaction has changed it, read-only (several can be
    /// held at once, unlike [`WriteTxn::bucket`]).
    pub fn view(&self, name: &[u8]) -> Result<Option<Bucket<'_>>> {
        self.state.nested_view(0, name)
    }

    /// The top-level bucket `name`. Fails with `BucketNotFound` if there is none.
    pub fn bucket(&mut self, name: &[u8]) -> Result<BucketMut<'_>> {
        let id = self.state.open_bucket(0, name)?;
        Ok(BucketMut {
            state: &mut self.state,
            id,
        })
    }

    /// The bucket at `path` (a top-level bucket, then nested ones).
    pub fn bucket_at(&mut self, path: &[&[u8]]) -> Result<BucketMut<'_>> {
        let mut id = 0;
        for name in path {
            id = self.state.open_bucket(id, name)?;
        }
        if id == 0 {
            return Err(Error::BucketNameRequired);
        }
        Ok(BucketMut {
            state: &mut self.state,
            id,
        })
    }

    /// Creates the top-level bucket `name`. Fails with `BucketExists` if it exists.
    pub fn create_bucket(&mut self, name: &[u8]) -> Result<BucketMut<'_>> {
        let id = self.state.create_bucket(0, name)?;
        Ok(BucketMut {
            state: &mut self.state,
            id,
        })
    }

    /// The top-level bucket `name`, created if missing.
    pub fn create_bucket_if_missing(&mut self, name: &[u8]) -> Result<BucketMut<'_>> {
        let id = self.state.create_bucket_if_missing(0, name)?;
        Ok(BucketMut {
            state: &mut self.state,
            id,
        })
    }

    /// Deletes the top-level bucket `name` and everything in it.
    pub fn delete_bucket(&mut self, name: &[u8]) -> Result<()> {
        self.state.delete_bucket(0, name)
    }

    /// Makes the transaction visible to readers that begin after this returns. Not durable until
    /// [`Writer::sync`]. Writes its pages through the writer's file layer, blocking; see
    /// [`WriteTxn::stage`] to perform the writes some other way.
    pub fn publish(self) -> Result<()> {
        self.stage()?.perform_blocking()
    }

    /// Prepares the transaction for publishing — pages allocated and encoded — and leaves the
    /// file operations to the caller (see [`Staged`]).
    pub fn stage(self) -> Result<Staged<'w>> {
        spill::stage(self.writer, self.state)
    }
}

/// A bucket opened for writing.
#[derive(Debug)]
pub struct BucketMut<'t> {
    state: &'t mut TxnState,
    id: usize,
}

impl BucketMut<'_> {
    /// The value of `key`; `None` if absent or if `key` names a nested bucket.
    pub fn get(&self, key: &[u8]) -> Result<Option<&[u8]>> {
        self.state.bucket_view(self.id).get(key)
    }

    /// A cursor over this bucket as the transaction has changed it.
    pub fn cursor(&self) -> Cursor<'_> {
        self.state.bucket_view(self.id).cursor()
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.state.put(self.id, key, value)
    }

    /// Deletes `key`; returns whether it was there.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool> {
        self.state.delete(self.id, key)
    }

    /// The nested bucket `name`.
    pub fn bucket(&mut self, name: &[u8]) -> Result<BucketMut<'_>> {
        let id = self.state.open_bucket(self.id, name)?;
        Ok(BucketMut {
            state: self.state,
            id,
        })
    }

    /// Creates the nested bucket `name`.
    pub fn create_bucket(&mut self, name: &[u8]) -> Result<BucketMut<'_>> {
        let id = self.state.create_bucket(self.id, name)?;
        Ok(BucketMut {
            state: self.state,
            id,
        })
    }

    /// The nested bucket `name`, created if missing.
    pub fn create_bucket_if_missing(&mut self, name: &[u8]) -> Result<BucketMut<'_>> {
        let id = self.state.create_bucket_if_missing(self.id, name)?;
        Ok(BucketMut {
            state: self.state,
            id,
        })
    }

    /// Deletes the nested bucket `name` and everything in it.
    pub fn delete_bucket(&mut self, name: &[u8]) -> Result<()> {
        self.state.delete_bucket(self.id, name)
    }

    /// The bucket's sequence counter.
    pub fn sequence(&self) -> u64 {
        self.state.buckets[self.id].header.sequence
    }

    /// Sets the sequence counter.
    pub fn set_sequence(&mut self, value: u64) -> Result<()> {
        self.state.set_sequence(self.id, value)
    }

    /// Increments the sequence counter and returns the new value.
    pub fn next_sequence(&mut self) -> Result<u64> {
        self.state.next_sequence(self.id)
    }

    /// How full to pack pages when splitting nodes of this bucket in this transaction (0.1 to 1.0;
    /// 0.5 by default, as bbolt). Close to 1.0 suits keys inserted in ascending order.
    pub fn set_fill_percent(&mut self, fill: f64) {
        self.state.buckets[self.id].fill = fill.clamp(0.1, 1.0);
    }
}
