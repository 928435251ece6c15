//! Walking a bucket's B+tree: the node views (a page in the map, or a node a write transaction holds
//! in memory), the source a tree's nodes come from, point lookups and the [`Cursor`].
//!
//! Read transactions see only pages. A write transaction sees its materialized nodes where it has
//! them and pages elsewhere; both are addressed by the page id they came from, so one walker serves
//! both.

use std::collections::HashMap;
use std::path::Path;

use super::error::{Corruption, Error, PageProblem, Result};
use super::layout::{LEAF_FLAG_BUCKET, Pgid};
use super::node::{Node, NodeId};
use super::page::{LeafEntry, PageView};

/// Deeper than any real tree (a 4 KiB-page tree of depth 64 would hold more than 2^64 keys).
const MAX_DEPTH: usize = 64;

/// The pages of one snapshot: the first `hwm` pages of the file, as mapped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pages<'a> {
    pub map: &'a [u8],
    pub page_size: usize,
    pub hwm: Pgid,
    pub path: &'a Path,
}

impl<'a> Pages<'a> {
    /// Any page (meta, freelist, node) below the high-water mark.
    pub fn page(&self, pgid: Pgid) -> Result<PageView<'a>, Corruption> {
        PageView::on_file(self.map, self.page_size, self.hwm, pgid)
    }

    /// A branch or leaf page.
    pub fn node(&self, pgid: Pgid) -> Result<PageView<'a>, Corruption> {
        self.page(pgid)?.expect_node()
    }

    /// Attaches this file's path to a corruption report.
    pub fn corrupt(&self, corruption: Corruption) -> Error {
        Error::Corrupt {
            path: self.path.to_path_buf(),
            corruption,
        }
    }
}

/// Pages met by a walk, one bit each. A valid tree never reaches a page twice, so a walk that does
/// has found damage (a cycle, or a subtree shared between parents) and must stop rather than go
/// round or multiply its work.
#[derive(Debug, Default)]
pub(crate) struct PageSet(Vec<u64>);

impl PageSet {
    /// Records `pgid`; false if it was already there.
    pub fn insert(&mut self, pgid: Pgid) -> bool {
        let (word, bit) = ((pgid / 64) as usize, 1u64 << (pgid % 64));
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        let fresh = self.0[word] & bit == 0;
        self.0[word] |= bit;
        fresh
    }
}

/// The nodes a write transaction materialized in one bucket.
#[derive(Debug, Default, Clone)]
pub(crate) struct NodeArena {
    pub nodes: Vec<Node>,
    /// Page id → node read from it.
    pub by_pgid: HashMap<Pgid, NodeId>,
}

/// A node to read: on a page, or in memory.
#[derive(Debug, Clone, Copy)]
pub(crate) enum NodeView<'a> {
    Page(PageView<'a>),
    Node(&'a Node),
}

impl<'a> NodeView<'a> {
    pub fn is_leaf(&self) -> bool {
        match self {
            NodeView::Page(p) => p.is_leaf(),
            NodeView::Node(n) => n.leaf,
        }
    }

    pub fn count(&self) -> usize {
        match self {
            NodeView::Page(p) => p.count(),
            NodeView::Node(n) => n.len(),
        }
    }

    pub fn key(&self, index: usize) -> Result<&'a [u8], Corruption> {
        match self {
            NodeView::Page(p) => p.key(index),
            NodeView::Node(n) => Ok(n.key(index)),
        }
    }

    pub fn leaf(&self, index: usize) -> Result<LeafEntry<'a>, Corruption> {
        match self {
            NodeView::Page(p) => p.leaf(index),
            NodeView::Node(n) => Ok(n.leaf_entry(index)),
        }
    }

    pub fn child(&self, index: usize) -> Result<Pgid, Corruption> {
        match self {
            NodeView::Page(p) => p.child(index),
            NodeView::Node(n) => Ok(n.child(index)),
        }
    }

    /// First index with key ≥ `key`, and whether it is equal.
    pub fn search(&self, key: &[u8]) -> Result<(usize, bool), Corruption> {
        match self {
            NodeView::Page(p) => p.search(key),
            NodeView::Node(n) => Ok(n.search(key)),
        }
    }

    /// The child to descend into for `key` in a branch.
    pub fn child_index_for(&self, key: &[u8]) -> Result<usize, Corruption> {
        let (i, exact) = self.search(key)?;
        Ok(if exact { i } else { i.saturating_sub(1) })
    }

    /// A problem with this node, located.
    fn problem(&self, problem: PageProblem) -> Corruption {
        match self {
            NodeView::Page(p) => p.problem(problem),
            NodeView::Node(_) => Corruption::InlinePage { problem },
        }
    }
}

/// Where a bucket's root is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Root<'a> {
    Page(Pgid),
    /// The page image inline in the bucket's value.
    Inline(&'a [u8]),
    /// A node of the arena (a write transaction changed the root).
    Node(NodeId),
}

/// Everything needed to walk one bucket's tree.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TreeSource<'a> {
    pub pages: Pages<'a>,
    pub root: Root<'a>,
    pub arena: Option<&'a NodeArena>,
}

impl<'a> TreeSource<'a> {
    pub fn root_view(&self) -> Result<NodeView<'a>, Corruption> {
        match self.root {
            Root::Page(pgid) => self.child_view(pgid),
            Root::Inline(bytes) => Ok(NodeView::Page(PageView::inline(bytes)?)),
            Root::Node(id) => Ok(NodeView::Node(
                &self.arena.expect("node roots come with their arena").nodes[id],
            )),
        }
    }

    pub fn child_view(&self, pgid: Pgid) -> Result<NodeView<'a>, Corruption> {
        if let Some(&id) = self.arena.and_then(|a| a.by_pgid.get(&pgid)) {
            return Ok(NodeView::Node(
                &self.arena.expect("checked above").nodes[id],
            ));
        }
        Ok(NodeView::Page(self.pages.node(pgid)?))
    }

    /// The leaf entry for exactly `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<LeafEntry<'a>>, Corruption> {
        let mut node = self.root_view()?;
        for _ in 0..MAX_DEPTH {
            if node.is_leaf() {
                return match node.search(key)? {
                    (i, true) => Ok(Some(node.leaf(i)?)),
                    _ => Ok(None),
                };
            }
            if node.count() == 0 {
                return Err(node.problem(PageProblem::EmptyBranch));
            }
            let i = node.child_index_for(key)?;
            node = self.child_view(node.child(i)?)?;
        }
        Err(Corruption::InlinePage {
            problem: PageProblem::TooDeep(MAX_DEPTH),
        })
    }

    /// Calls `f` for every node of the tree (page or in memory), parents before children, with the
    /// page id it lives on (0 for an inline root or a node without a page) and its depth (root = 1).
    /// A page already in `seen` (from this tree or another the caller walked) is corruption.
    pub fn for_each_node(
        &self,
        seen: &mut PageSet,
        f: &mut dyn FnMut(NodeView<'a>, Pgid, usize) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let root_pgid = match self.root {
            Root::Page(pgid) => pgid,
            Root::Inline(_) => 0,
            Root::Node(id) => self.arena.map_or(0, |a| a.nodes[id].pgid),
        };
        let root = self.root_view().map_err(|c| self.pages.corrupt(c))?;
        self.walk(root, root_pgid, 1, seen, f)
    }

    fn walk(
        &self,
        node: NodeView<'a>,
        pgid: Pgid,
        depth: usize,
        seen: &mut PageSet,
        f: &mut dyn FnMut(NodeView<'a>, Pgid, usize) -> Result<(), Error>,
    ) -> Result<(), Error> {
        if pgid != 0 && !seen.insert(pgid) {
            let problem = PageProblem::ReachedTwice;
            let offset = pgid.saturating_mul(self.pages.page_size as u64);
            return Err(self.pages.corrupt(Corruption::Page {
                pgid,
                offset,
                problem,
            }));
        }
        if depth > MAX_DEPTH {
            return Err(self.pages.corrupt(Corruption::InlinePage {
                problem: PageProblem::TooDeep(MAX_DEPTH),
            }));
        }
        f(node, pgid, depth)?;
        if !node.is_leaf() {
            for i in 0..node.count() {
                let child = node.child(i).map_err(|c| self.pages.corrupt(c))?;
                let view = self.child_view(child).map_err(|c| self.pages.corrupt(c))?;
                self.walk(view, child, depth + 1, seen, f)?;
            }
        }
        Ok(())
    }
}

/// A key and its value; the value is `None` when the key names a nested bucket (as in bbolt).
pub type Item<'a> = (&'a [u8], Option<&'a [u8]>);

fn item(entry: LeafEntry<'_>) -> Item<'_> {
    let value = if entry.flags & LEAF_FLAG_BUCKET != 0 {
        None
    } else {
        Some(entry.value)
    };
    (entry.key, value)
}

#[derive(Debug, Clone, Copy)]
struct Frame<'a> {
    node: NodeView<'a>,
    index: usize,
}

/// An ordered position in a bucket: `first`, `last`, `seek`, `next`, `prev`. Each returns the entry
/// it lands on, or `None` past either end. Borrowing its transaction, it sees one consistent tree.
#[derive(Debug)]
pub struct Cursor<'a> {
    tree: TreeSource<'a>,
    stack: Vec<Frame<'a>>,
    /// The key the cursor landed on when it last entered a leaf (or was placed): the next leaf it
    /// enters must lie strictly beyond it in the direction of travel, so a damaged tree that
    /// repeats or misplaces a subtree is caught rather than walked again and again. Checked once
    /// per leaf; order within a leaf is `check`'s business.
    boundary: Option<&'a [u8]>,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(tree: TreeSource<'a>) -> Self {
        Cursor {
            tree,
            stack: Vec::new(),
            boundary: None,
        }
    }

    /// Moves to the first entry.
    pub fn first(&mut self) -> Result<Option<Item<'a>>> {
        self.start(false)?;
        self.settle_forward()
    }

    /// Moves to the last entry.
    pub fn last(&mut self) -> Result<Option<Item<'a>>> {
        self.start(true)?;
        self.settle_backward()
    }

    /// Moves to the first entry with key ≥ `key`.
    pub fn seek(&mut self, key: &[u8]) -> Result<Option<Item<'a>>> {
        self.stack.clear();
        self.boundary = None;
        let mut node = self.tree.root_view().map_err(|c| self.corrupt(c))?;
        loop {
            self.check_depth()?;
            if node.is_leaf() {
                let (index, _) = node.search(key).map_err(|c| self.corrupt(c))?;
                self.stack.push(Frame { node, index });
                return self.settle_forward();
            }
            if node.count() == 0 {
                return Err(self.corrupt(node.problem(PageProblem::EmptyBranch)));
            }
            let index = node.child_index_for(key).map_err(|c| self.corrupt(c))?;
            self.stack.push(Frame { node, index });
            let child = node.child(index).map_err(|c| self.corrupt(c))?;
            node = self.tree.child_view(child).map_err(|c| self.corrupt(c))?;
        }
    }

    /// Moves to the next entry.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Item<'a>>> {
        match self.stack.last_mut() {
            None => Ok(None),
            Some(top) => {
                top.index += 1;
                self.settle_forward()
            }
        }
    }

    /// Moves to the previous entry.
    pub fn prev(&mut self) -> Result<Option<Item<'a>>> {
        if self.stack.is_empty() {
            return Ok(None);
        }
        self.settle_backward()
    }

    /// Returns the entry the cursor landed on; when that entered a new leaf, first checks the leaf
    /// lies strictly beyond the boundary in the direction of travel.
    fn land(&mut self, top: Frame<'a>, forward: bool) -> Result<Option<Item<'a>>> {
        let entry = top.node.leaf(top.index).map_err(|c| self.corrupt(c))?;
        let entered = if forward {
            top.index == 0
        } else {
            top.index + 1 == top.node.count()
        };
        match self.boundary {
            Some(boundary) if entered => {
                let beyond = if forward {
                    entry.key > boundary
                } else {
                    entry.key < boundary
                };
                if !beyond {
                    let problem = PageProblem::KeyOrder { index: top.index };
                    return Err(self.corrupt(top.node.problem(problem)));
                }
                self.boundary = Some(entry.key);
            }
            Some(_) => {}
            None => self.boundary = Some(entry.key),
        }
        Ok(Some(item(entry)))
    }

    fn start(&mut self, at_end: bool) -> Result<()> {
        self.stack.clear();
        self.boundary = None;
        let root = self.tree.root_view().map_err(|c| self.corrupt(c))?;
        let index = if at_end { root.count() } else { 0 };
        self.stack.push(Frame { node: root, index });
        Ok(())
    }

    fn corrupt(&self, c: Corruption) -> Error {
        self.tree.pages.corrupt(c)
    }

    fn check_depth(&self) -> Result<()> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(self.corrupt(Corruption::InlinePage {
                problem: PageProblem::TooDeep(MAX_DEPTH),
            }));
        }
        Ok(())
    }

    /// From a frame index that may be past its node's end or on a branch, moves forward to the
    /// nearest leaf entry (or clears the stack at the end of the tree).
    fn settle_forward(&mut self) -> Result<Option<Item<'a>>> {
        loop {
            let Some(&top) = self.stack.last() else {
                return Ok(None);
            };
            if top.index >= top.node.count() {
                self.stack.pop();
                if let Some(parent) = self.stack.last_mut() {
                    parent.index += 1;
                }
                continue;
            }
            if top.node.is_leaf() {
                return self.land(top, true);
            }
            self.check_depth()?;
            let child = top.node.child(top.index).map_err(|c| self.corrupt(c))?;
            let node = self.tree.child_view(child).map_err(|c| self.corrupt(c))?;
            self.stack.push(Frame { node, index: 0 });
        }
    }

    /// Moves to the entry before the top frame's index (descending into the previous subtree's last
    /// entry), or clears the stack before the start of the tree.
    fn settle_backward(&mut self) -> Result<Option<Item<'a>>> {
        loop {
            let Some(top) = self.stack.last_mut() else {
                return Ok(None);
            };
            if top.index == 0 {
                self.stack.pop();
                continue;
            }
            top.index -= 1;
            let top = *top;
            if top.node.is_leaf() {
                return self.land(top, false);
            }
            self.check_depth()?;
            let child = top.node.child(top.index).map_err(|c| self.corrupt(c))?;
            let node = self.tree.child_view(child).map_err(|c| self.corrupt(c))?;
            self.stack.push(Frame {
                node,
                index: node.count(),
            });
        }
    }
}
