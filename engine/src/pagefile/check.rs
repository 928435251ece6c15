//! The consistency check (bbolt's `tx.Check`, plus key-order checks): every page below the
//! high-water mark is used exactly once by the tree, or is free; every page is of the right type,
//! its keys are in order and inside its parent's range, and all leaves of a bucket are at one depth.
//! Problems are collected, not raised: one line each, naming the page.

use super::bucket::{BucketValue, escape, is_bucket};
use super::db::Writer;
use super::error::Corruption;
use super::layout::{BucketHeader, MAX_BUCKET_DEPTH, NO_FREELIST, Pgid};
use super::read_txn::ReadTxn;
use super::tree::{NodeView, Pages, Root, TreeSource};

const UNSEEN: u8 = 0;
const USED: u8 = 1;
const FREE: u8 = 2;

/// Deeper than any valid tree.
const MAX_DEPTH: usize = 64;

/// Where the check is: which bucket's tree, how deeply nested.
struct InBucket<'a, 'n> {
    tree: TreeSource<'a>,
    name: &'n str,
    nesting: usize,
    /// Depth of the first leaf seen: every leaf of the bucket must be at it.
    leaf_depth: Option<usize>,
}

struct Checker<'a> {
    pages: Pages<'a>,
    state: Vec<u8>,
    errors: Vec<String>,
}

impl<'a> Checker<'a> {
    /// Counts `count` pages from `pgid` as used; false if any was already counted (the caller must
    /// not descend into it again: a damaged tree could otherwise make the check loop or explode).
    fn mark_used(&mut self, pgid: Pgid, count: u64, what: &str) -> bool {
        let mut fresh = true;
        for id in pgid..pgid.saturating_add(count) {
            match self.state.get(id as usize) {
                None => {
                    self.errors.push(format!(
                        "page {id}: {what} page out of bounds (high-water mark {})",
                        self.pages.hwm
                    ));
                    fresh = false;
                }
                Some(&USED) => {
                    self.errors.push(format!("page {id}: multiple references"));
                    fresh = false;
                }
                Some(_) => self.state[id as usize] = USED,
            }
        }
        fresh
    }

    fn bucket(&mut self, tree: TreeSource<'a>, name: &str, nesting: usize) {
        if nesting > MAX_BUCKET_DEPTH {
            let too_deep = Corruption::NestingTooDeep(MAX_BUCKET_DEPTH);
            self.errors.push(format!("bucket {name}: {too_deep}"));
            return;
        }
        let root_pgid = match tree.root {
            Root::Page(pgid) => pgid,
            _ => 0,
        };
        match tree.root_view() {
            Ok(view) => {
                let mut at = InBucket {
                    tree,
                    name,
                    nesting,
                    leaf_depth: None,
                };
                self.node(&mut at, view, root_pgid, (None, None), 1);
            }
            Err(c) if name.is_empty() => self.errors.push(c.to_string()),
            Err(c) => self.errors.push(format!("bucket {name}: {c}")),
        }
    }

    fn node(
        &mut self,
        at: &mut InBucket<'a, '_>,
        view: NodeView<'a>,
        pgid: Pgid,
        (lo, hi): (Option<&'a [u8]>, Option<&'a [u8]>),
        depth: usize,
    ) {
        if depth > MAX_DEPTH {
            self.errors.push(format!(
                "page {pgid}: tree deeper than {MAX_DEPTH} levels (cycle?)"
            ));
            return;
        }
        if pgid != 0 {
            let overflow = match view {
                NodeView::Page(p) => p.header().overflow,
                NodeView::Node(_) => 0,
            };
            if !self.mark_used(pgid, u64::from(overflow) + 1, "tree") {
                return;
            }
        }
        let mut keys = Vec::with_capacity(view.count());
        for i in 0..view.count() {
            match view.key(i) {
                Ok(k) => keys.push(k),
                Err(c) => {
                    self.errors.push(c.to_string());
                    return;
                }
            }
        }
        for (i, pair) in keys.windows(2).enumerate() {
            if pair[0] >= pair[1] {
                self.errors.push(format!(
                    "page {pgid}: keys out of order at element {}",
                    i + 1
                ));
            }
        }
        let outside = |k: &[u8]| lo.is_some_and(|lo| k < lo) || hi.is_some_and(|hi| k >= hi);
        if let Some(i) = keys.iter().position(|k| outside(k)) {
            self.errors.push(format!(
                "page {pgid}: key of element {i} lies outside its parent's range"
            ));
        }
        if view.is_leaf() {
            self.leaf(at, view, pgid, depth);
            return;
        }
        if view.count() == 0 {
            self.errors
                .push(format!("page {pgid}: branch page with no children"));
        }
        for i in 0..view.count() {
            let child = view
                .child(i)
                .and_then(|child| Ok((child, at.tree.child_view(child)?)));
            match child {
                Ok((child, child_view)) => {
                    let bounds = (Some(keys[i]), keys.get(i + 1).copied().or(hi));
                    self.node(at, child_view, child, bounds, depth + 1);
                }
                Err(c) => self.errors.push(c.to_string()),
            }
        }
    }

    /// A leaf's own checks: its depth, and the nested buckets it holds.
    fn leaf(&mut self, at: &mut InBucket<'a, '_>, view: NodeView<'a>, pgid: Pgid, depth: usize) {
        match at.leaf_depth {
            None => at.leaf_depth = Some(depth),
            Some(d) if d != depth => {
                let whose = if at.name.is_empty() {
                    "the root bucket".to_string()
                } else {
                    format!("bucket {}", at.name)
                };
                self.errors.push(format!(
                    "page {pgid}: leaf at depth {depth}, other leaves of {whose} at {d}"
                ));
            }
            Some(_) => {}
        }
        for i in 0..view.count() {
            let entry = match view.leaf(i) {
                Ok(e) if is_bucket(&e) => e,
                Ok(_) => continue,
                Err(c) => {
                    self.errors.push(c.to_string());
                    continue;
                }
            };
            let name = format!("{}/{}", at.name, escape(entry.key));
            match BucketValue::parse(entry) {
                Ok(v) => {
                    let tree = TreeSource {
                        pages: self.pages,
                        root: v.root(),
                        arena: None,
                    };
                    self.bucket(tree, &name, at.nesting + 1);
                }
                Err(c) => self.errors.push(format!("page {pgid}: {c}")),
            }
        }
    }

    fn free_pages(&mut self, free: &[Pgid]) {
        for &id in free {
            match self.state.get(id as usize) {
                None => self.errors.push(format!(
                    "page {id}: free but beyond the high-water mark {}",
                    self.pages.hwm
                )),
                Some(&FREE) => self.errors.push(format!("page {id}: freed twice")),
                Some(&USED) => self
                    .errors
                    .push(format!("page {id}: used by the tree and also free")),
                Some(_) => self.state[id as usize] = FREE,
            }
        }
        for (id, &s) in self.state.iter().enumerate() {
            if s == UNSEEN {
                self.errors
                    .push(format!("page {id}: neither used nor free"));
            }
        }
    }
}

/// Checks the tree of `root` in `pages`. `used` are pages in use outside the tree (metas, the
/// freelist); `free` the free pages when known (then every other page must be used).
fn check(
    pages: Pages<'_>,
    root: BucketHeader,
    used: &[(Pgid, u64)],
    free: Option<&[Pgid]>,
) -> Vec<String> {
    let mut checker = Checker {
        pages,
        state: vec![UNSEEN; pages.hwm as usize],
        errors: Vec::new(),
    };
    for &(pgid, count) in used {
        checker.mark_used(pgid, count, "meta or freelist");
    }
    checker.bucket(
        TreeSource {
            pages,
            root: Root::Page(root.root),
            arena: None,
        },
        "",
        0,
    );
    if let Some(free) = free {
        checker.free_pages(free);
    }
    checker.errors
}

impl ReadTxn {
    /// Checks this snapshot's tree. When the snapshot is the file's meta as opened read-only and the
    /// file stores a freelist, every page is also accounted for as used or free.
    pub fn check(&self) -> Vec<String> {
        let pages = self.pages();
        let snapshot = self.snapshot();
        let mut used = vec![(0, 1), (1, 1)];
        let mut free = None;
        let disk = self.db().inner.opened_meta;
        if disk.txid == snapshot.txid
            && disk.root == snapshot.root
            && disk.freelist != NO_FREELIST
            && self.db().is_read_only()
        {
            match pages.page(disk.freelist).and_then(|p| p.expect_freelist()) {
                Ok(page) => {
                    used.push((disk.freelist, u64::from(page.header().overflow) + 1));
                    match page.freelist_ids() {
                        Ok(ids) => free = Some(ids),
                        Err(c) => return vec![c.to_string()],
                    }
                }
                Err(c) => return vec![c.to_string()],
            }
        }
        check(pages, snapshot.root, &used, free.as_deref())
    }
}

impl Writer {
    /// Checks the latest published tree against the writer's own account of free pages: every page
    /// below the high-water mark must be used by that tree, be free (or waiting to be), or be the
    /// durable freelist page or the one a sync in flight writes.
    pub fn check(&self) -> Vec<String> {
        let snapshot = super::readers::Snapshot {
            hwm: self.hwm,
            map: self.db.inner.maps.newest(),
            ..self.current
        };
        let pages = self.db.pages(&snapshot);
        let mut used = vec![(0, 1), (1, 1)];
        if let Some(syncing) = &self.syncing {
            // The sync in flight freed the durable freelist page (it waits, pending, with the rest).
            used.push((syncing.meta.freelist, syncing.freelist_pages));
        } else if self.durable.freelist != NO_FREELIST {
            match pages.page(self.durable.freelist) {
                Ok(p) => used.push((self.durable.freelist, u64::from(p.header().overflow) + 1)),
                Err(c) => return vec![c.to_string()],
            }
        }
        let free = self.freelist.all_ids();
        check(pages, snapshot.root, &used, Some(&free))
    }
}
