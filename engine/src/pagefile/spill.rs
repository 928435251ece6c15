//! Publishing a write transaction: merge nodes that lost too many keys (rebalance), turn every
//! changed node into new pages (spill: split, allocate, encode — children before parents, nested
//! buckets before the bucket holding them) — that much is *staging* — then write them and show the
//! new root to readers ([`Staged`]).
//!
//! Copy-on-write: every page a changed node came from is freed at this txid; the freelist keeps it
//! from reuse until no reader and no durable meta can reach it. If staging or growing the file
//! fails, every allocation and free is undone and the file's tree is as before; a failed page
//! write stops the writer.

use super::db::Writer;
use super::error::{Corruption, Error, Result};
use super::io::IoStep;
use super::layout::{BUCKET_HEADER_SIZE, BucketHeader, LEAF_FLAG_BUCKET, Pgid};
use super::node::{Node, NodeId};
use super::readers::Snapshot;
use super::tree::Pages;
use super::write_txn::{BucketState, TxnState, tree_page_runs};

/// The value that stores bucket `header` with `root` inline: header (root 0) then the page image.
pub(crate) fn inline_value(header: &BucketHeader, root: &Node) -> Vec<u8> {
    let mut value = vec![0u8; BUCKET_HEADER_SIZE + root.size()];
    BucketHeader {
        root: 0,
        sequence: header.sequence,
    }
    .encode(&mut value);
    root.encode(0..root.len(), 0, 0, &mut value[BUCKET_HEADER_SIZE..]);
    value
}

/// Stages `state` on `writer`: rebalance, spill, allocate and encode, mapping coverage and the
/// file's growth planned. Nothing is written yet: see [`Staged`].
pub(crate) fn stage(writer: &mut Writer, mut state: TxnState) -> Result<Staged<'_>> {
    writer.check_running()?;
    let txid = state.txid;
    let undo = Undo {
        hwm: writer.hwm,
        file_len: writer.file_len,
        allocated: Vec::new(),
    };
    for &(pgid, n) in &state.freed {
        writer.freelist.free(txid, pgid, n);
    }
    let db = state.db.clone();
    let pages = db.pages(&state.snapshot);
    let mut spiller = Spiller {
        writer,
        pages,
        buckets: &mut state.buckets,
        txid,
        undo,
        dirty: Vec::new(),
    };
    let outcome = spiller.run();
    let Spiller {
        writer,
        mut undo,
        dirty,
        ..
    } = spiller;
    match outcome.and_then(|root| writer.plan_room().map(|room| (root, room))) {
        Ok((root, (map, grow))) => {
            let snapshot = Snapshot {
                txid,
                root,
                hwm: writer.hwm,
                map,
            };
            let writes = writer.page_writes(dirty);
            Ok(Staged {
                writer,
                txid,
                undo,
                snapshot,
                grow: grow.map(IoStep::Grow),
                writes,
                settled: false,
            })
        }
        Err(err) => {
            undo.apply(writer, txid);
            Err(err)
        }
    }
}

/// Where staged transactions go to be written and committed: [`Blocking`] through the writer's own
/// file layer, or [`super::UringFile`] on io_uring.
pub trait Publisher {
    /// Performs `staged`'s file operations and commits it (or rolls it back, or stops the writer).
    fn publish(&self, staged: Staged<'_>) -> impl std::future::Future<Output = Result<()>>;
}

/// Publishes by writing through the writer's file layer, blocking (the future is ready at once).
#[derive(Debug, Clone, Copy, Default)]
pub struct Blocking;

impl Publisher for Blocking {
    async fn publish(&self, staged: Staged<'_>) -> Result<()> {
        staged.perform_blocking()
    }
}

/// What to undo if a staged transaction does not happen.
#[derive(Debug)]
struct Undo {
    hwm: Pgid,
    file_len: u64,
    /// (first page, count, came from the freelist).
    allocated: Vec<(Pgid, u64, bool)>,
}

impl Undo {
    /// Takes back every allocation and free of transaction `txid`.
    fn apply(&mut self, writer: &mut Writer, txid: u64) {
        writer.freelist.forget(txid);
        for (pgid, n, reused) in self.allocated.drain(..) {
            writer.freelist.unallocate(pgid, n, reused);
        }
        writer.hwm = self.hwm;
        writer.file_len = self.file_len;
    }
}

/// A write transaction whose pages are allocated and encoded but not yet written: perform its
/// growth step ([`Staged::grow`]) and then its writes ([`Staged::writes`], in any order), then
/// [`Staged::commit`] to show the new root to readers. If the growth fails, [`Staged::roll_back`]
/// leaves the writer as it was before the transaction; if a write fails, [`Staged::fail`] stops
/// the writer (the page cache then holds something nothing vouches for). Dropped unsettled (the
/// caller's future cancelled mid-write, say), it stops the writer: some writes may have happened.
#[derive(Debug)]
#[must_use = "a staged transaction must be committed, rolled back or failed"]
pub struct Staged<'w> {
    writer: &'w mut Writer,
    txid: u64,
    undo: Undo,
    snapshot: Snapshot,
    grow: Option<IoStep>,
    writes: Vec<IoStep>,
    settled: bool,
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        if !self.settled {
            let path = self.writer.db.path().to_path_buf();
            self.writer.stop(Error::Stopped {
                path,
                cause: "a staged transaction was abandoned mid-write".into(),
            });
        }
    }
}

impl Staged<'_> {
    /// The step that grows the file, if it must grow before the writes.
    pub fn grow(&mut self) -> Option<IoStep> {
        self.grow.take()
    }

    /// The page writes, independent of one another.
    pub fn writes(&mut self) -> Vec<IoStep> {
        std::mem::take(&mut self.writes)
    }

    /// The file the steps are for.
    pub fn path(&self) -> &std::path::Path {
        self.writer.db.path()
    }

    /// Makes the transaction visible to readers that begin from now on (its writes done).
    pub fn commit(mut self) {
        self.settled = true;
        self.writer.publish(self.snapshot);
    }

    /// Undoes the transaction (its growth failed, or staging did): every allocation and free is
    /// taken back and the writer goes on as before it. Returns `err`.
    pub fn roll_back(mut self, err: Error) -> Error {
        self.settled = true;
        self.undo.apply(self.writer, self.txid);
        err
    }

    /// Stops the writer after a failed page write. Returns `err`.
    pub fn fail(mut self, err: Error) -> Error {
        self.settled = true;
        self.writer.stop(err)
    }

    /// Performs the steps through the writer's file layer, blocking, and commits.
    pub(crate) fn perform_blocking(mut self) -> Result<()> {
        if let Some(grow) = self.grow()
            && let Err(err) = self.writer.perform(grow)
        {
            return Err(self.roll_back(err));
        }
        for write in self.writes() {
            if let Err(err) = self.writer.perform(write) {
                return Err(self.fail(err));
            }
        }
        self.commit();
        Ok(())
    }
}

/// The state of one publish.
struct Spiller<'w, 'a, 'p> {
    writer: &'w mut Writer,
    pages: Pages<'p>,
    buckets: &'a mut Vec<BucketState>,
    txid: u64,
    undo: Undo,
    /// New page images.
    dirty: Vec<(Pgid, Vec<u8>)>,
}

impl Spiller<'_, '_, '_> {
    fn run(&mut self) -> Result<BucketHeader> {
        self.rebalance_bucket(0)?;
        self.spill_bucket(0)?;
        Ok(self.buckets[0].header)
    }

    fn page_size(&self) -> usize {
        self.pages.page_size
    }

    /// Names the file in a corruption found while spilling.
    fn at<T>(&self, found: Result<T, Corruption>) -> Result<T> {
        found.map_err(|c| self.pages.corrupt(c))
    }

    /// Frees the pages a node was read from.
    fn free_page(&mut self, pgid: Pgid) -> Result<()> {
        if pgid != 0 {
            let overflow = self.at(self.pages.page(pgid))?.header().overflow;
            self.writer
                .freelist
                .free(self.txid, pgid, u64::from(overflow) + 1);
        }
        Ok(())
    }

    fn rebalance_bucket(&mut self, b: usize) -> Result<()> {
        let mut id = 0;
        while id < self.buckets[b].arena.nodes.len() {
            self.rebalance_node(b, id)?;
            id += 1;
        }
        let children: Vec<usize> = self.buckets[b].children.values().copied().collect();
        for c in children {
            if !self.buckets[c].deleted {
                self.rebalance_bucket(c)?;
            }
        }
        Ok(())
    }

    /// Merges node `id` into a sibling (or removes it, or collapses a one-child root) if it lost
    /// keys and fell below a quarter page or its minimum of keys; then looks at its parent.
    fn rebalance_node(&mut self, b: usize, id: NodeId) -> Result<()> {
        let pages = self.pages;
        let threshold = self.page_size() / 4;
        let bucket = &mut self.buckets[b];
        let nodes = &mut bucket.arena.nodes;
        if !nodes[id].unbalanced {
            return Ok(());
        }
        nodes[id].unbalanced = false;
        if nodes[id].size() > threshold && nodes[id].len() > nodes[id].min_keys() {
            return Ok(());
        }
        let Some(parent) = nodes[id].parent else {
            if !nodes[id].leaf && nodes[id].len() == 1 {
                let child = bucket
                    .child_id(pages, id, 0)
                    .map_err(|c| pages.corrupt(c))?;
                let nodes = &mut bucket.arena.nodes;
                let elements = nodes[child].take_elements();
                let grandchildren = std::mem::take(&mut nodes[child].children);
                for &g in &grandchildren {
                    nodes[g].parent = Some(id);
                }
                nodes[id].replace_elements(elements);
                nodes[id].children = grandchildren;
                self.retire(b, child)?;
            }
            return Ok(());
        };
        if nodes[id].is_empty() {
            self.detach(b, parent, id)?;
            return self.rebalance_parent(b, parent);
        }
        let (index, found) = nodes[parent].search(&nodes[id].key);
        if !found || nodes[parent].len() < 2 {
            return Ok(());
        }
        let sibling = if index == 0 { 1 } else { index - 1 };
        let sibling = bucket
            .child_id(pages, parent, sibling)
            .map_err(|c| pages.corrupt(c))?;
        let (left, right) = if index == 0 {
            (id, sibling)
        } else {
            (sibling, id)
        };
        let nodes = &mut bucket.arena.nodes;
        if nodes[left].leaf != nodes[right].leaf {
            return Ok(());
        }
        let elements = nodes[right].take_elements();
        let children = std::mem::take(&mut nodes[right].children);
        for &c in &children {
            nodes[c].parent = Some(left);
        }
        nodes[left].append(&elements);
        nodes[left].children.extend(children);
        self.detach(b, parent, right)?;
        self.rebalance_parent(b, parent)
    }

    fn rebalance_parent(&mut self, b: usize, parent: NodeId) -> Result<()> {
        self.buckets[b].arena.nodes[parent].unbalanced = true;
        self.rebalance_node(b, parent)
    }

    /// Removes node `id` from its parent, then retires it.
    fn detach(&mut self, b: usize, parent: NodeId, id: NodeId) -> Result<()> {
        let nodes = &mut self.buckets[b].arena.nodes;
        let key = std::mem::take(&mut nodes[id].key);
        nodes[parent].remove(&key);
        nodes[parent].children.retain(|&c| c != id);
        self.retire(b, id)
    }

    /// Takes node `id` out of the tree for good (its content has moved elsewhere or gone): no
    /// parent, no further rebalancing, not findable by page id, its page freed.
    fn retire(&mut self, b: usize, id: NodeId) -> Result<()> {
        let arena = &mut self.buckets[b].arena;
        let node = &mut arena.nodes[id];
        node.unbalanced = false;
        node.parent = None;
        let pgid = node.pgid;
        arena.by_pgid.remove(&pgid);
        self.free_page(pgid)
    }

    /// Whether bucket `b` should be stored inline in its parent: a single leaf with no nested
    /// buckets, at most a quarter page.
    fn inlineable(&self, b: usize) -> bool {
        let bucket = &self.buckets[b];
        let Some(root) = bucket.root_node else {
            return false;
        };
        let node = &bucket.arena.nodes[root];
        if !node.leaf || node.any_flagged(LEAF_FLAG_BUCKET) {
            return false;
        }
        node.size() <= self.page_size() / 4
    }

    /// Spills the nested buckets of `b` (writing their headers into `b`), then `b`'s own nodes.
    fn spill_bucket(&mut self, b: usize) -> Result<()> {
        let children: Vec<(Vec<u8>, usize)> = self.buckets[b]
            .children
            .iter()
            .map(|(k, &v)| (k.clone(), v))
            .collect();
        for (name, c) in children {
            if self.buckets[c].deleted {
                continue;
            }
            let value = if self.inlineable(c) {
                let runs = {
                    let tree = self.buckets[c].tree(self.pages);
                    if self.buckets[c].header.root == 0 {
                        Vec::new()
                    } else {
                        tree_page_runs(&tree)?
                    }
                };
                for (pgid, n) in runs {
                    self.writer.freelist.free(self.txid, pgid, n);
                }
                let bucket = &self.buckets[c];
                let root = bucket
                    .root_node
                    .map(|r| &bucket.arena.nodes[r])
                    .expect("inlineable buckets have a root node");
                inline_value(&bucket.header, root)
            } else {
                self.spill_bucket(c)?;
                if self.buckets[c].root_node.is_none() {
                    continue;
                }
                let mut header = vec![0u8; BUCKET_HEADER_SIZE];
                self.buckets[c].header.encode(&mut header);
                header
            };
            let pages = self.pages;
            let bucket = &mut self.buckets[b];
            let leaf = bucket
                .leaf_for(pages, &name)
                .map_err(|c| pages.corrupt(c))?;
            bucket.arena.nodes[leaf].put(&name, &name, &value, LEAF_FLAG_BUCKET, 0);
        }
        if let Some(root) = self.buckets[b].root_node {
            let pgid = self.spill_node(b, root)?;
            self.buckets[b].header.root = pgid;
        }
        Ok(())
    }

    /// Writes node `id` (after its materialized children) to new pages, split as needed, and
    /// points its parent at them; returns the page of the (possibly new) root when `id` is a root.
    fn spill_node(&mut self, b: usize, id: NodeId) -> Result<Pgid> {
        let mut children = std::mem::take(&mut self.buckets[b].arena.nodes[id].children);
        {
            let nodes = &self.buckets[b].arena.nodes;
            children.sort_by(|&x, &y| nodes[x].key.cmp(&nodes[y].key));
        }
        for child in children {
            self.spill_node(b, child)?;
        }
        let page_size = self.page_size();
        let (old_pgid, ranges) = {
            let bucket = &self.buckets[b];
            let node = &bucket.arena.nodes[id];
            (node.pgid, node.split_ranges(page_size, bucket.fill))
        };
        self.free_page(old_pgid)?;
        let mut written = Vec::with_capacity(ranges.len());
        for range in ranges {
            let node = &self.buckets[b].arena.nodes[id];
            let count = node.encoded_size(range.clone()).div_ceil(page_size) as u64;
            let (pgid, reused) = self.writer.allocate(count);
            self.undo.allocated.push((pgid, count, reused));
            let mut image = vec![0u8; count as usize * page_size];
            let first_key = if range.is_empty() {
                Vec::new()
            } else {
                node.key(range.start).to_vec()
            };
            node.encode(range, pgid, (count - 1) as u32, &mut image);
            self.dirty.push((pgid, image));
            written.push((first_key, pgid));
        }
        let nodes = &mut self.buckets[b].arena.nodes;
        match nodes[id].parent {
            Some(parent) => {
                let old_key = std::mem::take(&mut nodes[id].key);
                for (i, (key, pgid)) in written.iter().enumerate() {
                    let lookup = if i == 0 { &old_key } else { key };
                    nodes[parent].put(lookup, key, &[], 0, *pgid);
                }
                Ok(written[0].1)
            }
            None if written.len() == 1 => Ok(written[0].1),
            None => {
                let root = Node::branch(written);
                nodes.push(root);
                let new_root = nodes.len() - 1;
                nodes[id].parent = Some(new_root);
                self.buckets[b].root_node = Some(new_root);
                self.spill_node(b, new_root)
            }
        }
    }
}
