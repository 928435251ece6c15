//! Statistics of a snapshot, per bucket and in aggregate (what bbolt's `stats` reports): pages by
//! kind, keys, depth, bytes allocated against bytes used, inline buckets; and the file's free pages.

use super::bucket::escape;
use super::error::Result;
use super::layout::{ELEMENT_SIZE, NO_FREELIST, PAGE_HEADER_SIZE};
use super::read_txn::ReadTxn;
use super::tree::{NodeView, PageSet, Root};
use super::walk;

/// Statistics of one bucket's own tree (nested buckets count in their own entry, and in the
/// aggregate).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketStats {
    /// Branch pages (logical: a node of several pages counts once).
    pub branch_pages: u64,
    /// Extra pages taken by branch nodes larger than a page.
    pub branch_overflow: u64,
    /// Leaf pages (logical).
    pub leaf_pages: u64,
    /// Extra pages taken by leaf nodes larger than a page.
    pub leaf_overflow: u64,
    /// Keys, nested bucket names included.
    pub keys: u64,
    /// Levels of the tree (1 for a single leaf or an inline bucket).
    pub depth: u64,
    /// Bytes of the branch pages.
    pub branch_alloc: u64,
    /// Bytes of them actually used.
    pub branch_inuse: u64,
    /// Bytes of the leaf pages.
    pub leaf_alloc: u64,
    /// Bytes of them actually used.
    pub leaf_inuse: u64,
    /// Buckets (this one, plus nested ones in the aggregate).
    pub buckets: u64,
    /// Of those, stored inline in their parent.
    pub inline_buckets: u64,
    /// Bytes of the inline buckets' page images.
    pub inline_inuse: u64,
}

impl BucketStats {
    fn add(&mut self, other: &BucketStats) {
        self.branch_pages += other.branch_pages;
        self.branch_overflow += other.branch_overflow;
        self.leaf_pages += other.leaf_pages;
        self.leaf_overflow += other.leaf_overflow;
        self.keys += other.keys;
        self.depth = self.depth.max(other.depth);
        self.branch_alloc += other.branch_alloc;
        self.branch_inuse += other.branch_inuse;
        self.leaf_alloc += other.leaf_alloc;
        self.leaf_inuse += other.leaf_inuse;
        self.buckets += other.buckets;
        self.inline_buckets += other.inline_buckets;
        self.inline_inuse += other.inline_inuse;
    }
}

/// Statistics of a whole snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes per page.
    pub page_size: u64,
    /// Pages below the high-water mark.
    pub pages: u64,
    /// Free pages listed by the file's freelist (`None` when the file does not store one, or the
    /// snapshot is not what is on disk).
    pub free_pages: Option<u64>,
    /// Every bucket below the root, by escaped path (`a/b` for bucket `b` in `a`).
    pub buckets: Vec<(String, BucketStats)>,
    /// All buckets together (the root bucket included).
    pub total: BucketStats,
}

impl ReadTxn {
    /// Statistics of this snapshot.
    pub fn stats(&self) -> Result<Stats> {
        let pages = self.pages();
        let page_size = pages.page_size as u64;
        let mut stats = Stats {
            page_size,
            pages: pages.hwm,
            ..Stats::default()
        };
        let disk = self.db().inner.opened_meta;
        if disk.txid == self.id() && disk.freelist != NO_FREELIST && self.db().is_read_only() {
            let ids = pages
                .page(disk.freelist)
                .and_then(|p| p.expect_freelist()?.freelist_ids());
            stats.free_pages = Some(ids.map_err(|c| pages.corrupt(c))?.len() as u64);
        }
        let mut seen = PageSet::default();
        walk::each_bucket(self.root(), &mut |path, bucket| {
            let mut s = BucketStats {
                buckets: 1,
                ..BucketStats::default()
            };
            if let Root::Inline(bytes) = bucket.tree.root {
                s.inline_buckets = 1;
                s.inline_inuse = bytes.len() as u64;
            }
            let inline = s.inline_buckets == 1;
            bucket
                .tree
                .for_each_node(&mut seen, &mut |view, _, depth| {
                    let NodeView::Page(page) = view else {
                        return Ok(());
                    };
                    s.depth = s.depth.max(depth as u64);
                    let count = page.count();
                    let mut used = (PAGE_HEADER_SIZE + count * ELEMENT_SIZE) as u64;
                    let alloc = (u64::from(page.header().overflow) + 1) * page_size;
                    if page.is_leaf() {
                        s.keys += count as u64;
                        for i in 0..count {
                            let e = page.leaf(i).map_err(|c| pages.corrupt(c))?;
                            used += (e.key.len() + e.value.len()) as u64;
                        }
                        if !inline {
                            s.leaf_pages += 1;
                            s.leaf_overflow += u64::from(page.header().overflow);
                            s.leaf_alloc += alloc;
                            s.leaf_inuse += used;
                        }
                    } else {
                        for i in 0..count {
                            used += page.key(i).map_err(|c| pages.corrupt(c))?.len() as u64;
                        }
                        s.branch_pages += 1;
                        s.branch_overflow += u64::from(page.header().overflow);
                        s.branch_alloc += alloc;
                        s.branch_inuse += used;
                    }
                    Ok(())
                })?;
            stats.total.add(&s);
            if !path.is_empty() {
                let name = path.iter().map(|p| escape(p)).collect::<Vec<_>>().join("/");
                stats.buckets.push((name, s));
            }
            Ok(())
        })?;
        Ok(stats)
    }
}
