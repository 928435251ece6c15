//! The writer's page allocator: the set of reusable pages (as coalesced spans, so a node needing a
//! contiguous run finds one) and the pages freed by recent transactions, pending until nothing can
//! reach them any more. Owned by the writer alone; readers never touch it.
//!
//! A freed page waits for two things (see "Copy-on-write, readers and page reuse" in the format):
//! readers that may still walk a tree containing it, and — if the durable tree on disk, or the tree
//! a sync in flight is making durable, contains it — the next sync. Pages allocated since the last
//! sync *began* are in neither tree, so once freed they wait for readers only; that is what lets a
//! writer that publishes many transactions between syncs keep reusing the same pages instead of
//! growing the file. (A page freed at txid `f` that either tree contains is released once a meta
//! with txid ≥ `f` is durable: the sync in flight has a txid below every later free.)
//!
//! Invariants: a page is in at most one of `free`, `pending` and `pending_unsynced`; `free` spans
//! never touch or overlap (adjacent spans are merged); pages leave the pending lists only through
//! [`Freelist::release`], with bounds the caller derived from the open readers and the durable meta.

use std::collections::BTreeMap;

use super::layout::{
    FLAG_FREELIST, FREELIST_COUNT_OVERFLOW, PAGE_HEADER_SIZE, PageHeader, Pgid, put_u64,
};

/// Free pages and pending frees.
#[derive(Debug, Default, Clone)]
pub(crate) struct Freelist {
    /// Span start → span length, for pages that may be reused now.
    free: BTreeMap<Pgid, u64>,
    free_count: u64,
    /// Freeing txid → freed pages the durable tree uses (each page of a run listed).
    pending: BTreeMap<u64, Vec<Pgid>>,
    /// Freeing txid → freed pages allocated since the last sync.
    pending_unsynced: BTreeMap<u64, Vec<Pgid>>,
    pending_count: u64,
    /// One bit per page: allocated since the last sync began.
    fresh: Vec<u64>,
    /// Set when the accounts stop adding up (a page freed twice).
    damage: Option<String>,
}

impl Freelist {
    /// A freelist where exactly `ids` are free (order and duplicates don't matter to the caller;
    /// duplicates are dropped).
    pub fn from_ids(ids: impl IntoIterator<Item = Pgid>) -> Self {
        let mut ids: Vec<Pgid> = ids.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        let mut list = Freelist::default();
        for id in ids {
            list.insert_span(id, 1);
        }
        list
    }

    /// What went wrong with the accounts, if anything (the writer must stop).
    pub fn damage(&self) -> Option<&str> {
        self.damage.as_deref()
    }

    /// Pages free now.
    pub fn free_count(&self) -> u64 {
        self.free_count
    }

    /// Pages waiting for readers or a sync.
    pub fn pending_count(&self) -> u64 {
        self.pending_count
    }

    /// Takes `n` contiguous free pages (the lowest run that fits) and returns the first.
    pub fn allocate(&mut self, n: u64) -> Option<Pgid> {
        let (&start, &len) = self.free.iter().find(|&(_, &len)| len >= n)?;
        self.free.remove(&start);
        if len > n {
            self.free.insert(start + n, len - n);
        }
        self.free_count -= n;
        self.mark_fresh(start, n, true);
        Some(start)
    }

    /// Records pages the writer took from beyond the high-water mark.
    pub fn extended(&mut self, start: Pgid, n: u64) {
        self.mark_fresh(start, n, true);
    }

    /// Undoes an allocation: a run [`Freelist::allocate`] handed out goes back to the free set
    /// (`reused`), a run from beyond the high-water mark is just forgotten.
    pub fn unallocate(&mut self, start: Pgid, n: u64, reused: bool) {
        self.mark_fresh(start, n, false);
        if reused {
            self.insert_span(start, n);
        }
    }

    fn mark_fresh(&mut self, start: Pgid, n: u64, fresh: bool) {
        let end = (start + n) as usize;
        if self.fresh.len() * 64 < end {
            self.fresh.resize(end.div_ceil(64), 0);
        }
        for id in start as usize..end {
            if fresh {
                self.fresh[id / 64] |= 1 << (id % 64);
            } else {
                self.fresh[id / 64] &= !(1 << (id % 64));
            }
        }
    }

    fn is_fresh(&self, id: Pgid) -> bool {
        self.fresh
            .get(id as usize / 64)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// Everything allocated so far may now be part of the durable tree (a sync began).
    pub fn synced(&mut self) {
        self.fresh.clear();
    }

    /// Records that transaction `txid` stopped using pages `start..start + n`.
    pub fn free(&mut self, txid: u64, start: Pgid, n: u64) {
        for id in start..start + n {
            let list = if self.is_fresh(id) {
                &mut self.pending_unsynced
            } else {
                &mut self.pending
            };
            list.entry(txid).or_default().push(id);
        }
        self.pending_count += n;
    }

    /// Forgets the frees of `txid` (its transaction did not happen).
    pub fn forget(&mut self, txid: u64) {
        for list in [&mut self.pending, &mut self.pending_unsynced] {
            if let Some(ids) = list.remove(&txid) {
                self.pending_count -= ids.len() as u64;
            }
        }
    }

    /// Makes reusable every page freed at a txid ≤ `readers` (no open reader is older) that the
    /// durable tree does not use, or that it uses and was freed at a txid ≤ `durable`.
    pub fn release(&mut self, readers: u64, durable: u64) {
        let unsynced = take_upto(&mut self.pending_unsynced, readers);
        let synced = take_upto(&mut self.pending, readers.min(durable));
        for mut ids in unsynced.into_values().chain(synced.into_values()) {
            self.pending_count -= ids.len() as u64;
            ids.sort_unstable();
            let mut i = 0;
            while i < ids.len() {
                let mut j = i + 1;
                while j < ids.len() && ids[j] == ids[j - 1] + 1 {
                    j += 1;
                }
                self.insert_span(ids[i], (j - i) as u64);
                i = j;
            }
        }
    }

    fn insert_span(&mut self, mut start: Pgid, mut len: u64) {
        let before = self.free.range(..start).next_back().map(|(&p, &l)| (p, l));
        let overlaps_before = before.is_some_and(|(p, l)| p + l > start);
        if overlaps_before || self.free.range(start..start + len).next().is_some() {
            // A page freed twice: the freelist no longer describes the file. Keep the first
            // account and let the writer stop before it hands the page out twice.
            self.damage
                .get_or_insert(format!("page {start} freed while already free"));
            return;
        }
        self.free_count += len;
        if let Some((prev, plen)) = before
            && prev + plen == start
        {
            self.free.remove(&prev);
            start = prev;
            len += plen;
        }
        if let Some(next_len) = self.free.remove(&(start + len)) {
            len += next_len;
        }
        self.free.insert(start, len);
    }

    /// Every page that the latest tree does not use, free or pending, sorted: what a freelist page
    /// records.
    pub fn all_ids(&self) -> Vec<Pgid> {
        let mut ids: Vec<Pgid> = self.free.iter().flat_map(|(&s, &l)| s..s + l).collect();
        for pending in self.pending.values().chain(self.pending_unsynced.values()) {
            ids.extend_from_slice(pending);
        }
        ids.sort_unstable();
        ids
    }

    /// Bytes a freelist page listing `count` ids takes.
    pub fn encoded_size(count: u64) -> u64 {
        let slots = if count >= u64::from(FREELIST_COUNT_OVERFLOW) {
            count + 1
        } else {
            count
        };
        PAGE_HEADER_SIZE as u64 + 8 * slots
    }
}

/// Removes and returns the entries of `map` with keys ≤ `upto`.
fn take_upto(map: &mut BTreeMap<u64, Vec<Pgid>>, upto: u64) -> BTreeMap<u64, Vec<Pgid>> {
    let later = map.split_off(&upto.saturating_add(1));
    std::mem::replace(map, later)
}

/// The freelist page image for `ids` at page `pgid`, spanning `pages` pages.
pub(crate) fn encode_page(ids: &[Pgid], pgid: Pgid, pages: u64, page_size: usize) -> Vec<u8> {
    let mut buf = vec![0u8; pages as usize * page_size];
    let overflow = ids.len() >= usize::from(FREELIST_COUNT_OVERFLOW);
    let count = if overflow {
        FREELIST_COUNT_OVERFLOW
    } else {
        ids.len() as u16
    };
    PageHeader {
        id: pgid,
        flags: FLAG_FREELIST,
        count,
        overflow: (pages - 1) as u32,
    }
    .encode(&mut buf);
    let mut off = PAGE_HEADER_SIZE;
    if overflow {
        put_u64(&mut buf, off, ids.len() as u64);
        off += 8;
    }
    for &id in ids {
        put_u64(&mut buf, off, id);
        off += 8;
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_takes_the_lowest_run_that_fits() {
        let mut f = Freelist::from_ids([3, 4, 9, 10, 11, 20]);
        assert_eq!(f.allocate(3), Some(9));
        assert_eq!(f.allocate(1), Some(3));
        assert_eq!(f.allocate(2), None);
        assert_eq!(f.free_count(), 2);
        f.unallocate(9, 3, true);
        assert_eq!(f.all_ids(), vec![4, 9, 10, 11, 20]);
    }

    #[test]
    fn pending_pages_are_released_only_up_to_the_bounds() {
        let mut f = Freelist::default();
        f.free(5, 10, 2);
        f.free(7, 12, 1);
        f.release(6, u64::MAX);
        assert_eq!((f.free_count(), f.pending_count()), (2, 1));
        assert_eq!(f.allocate(3), None);
        f.release(u64::MAX, 7);
        assert_eq!(f.allocate(3), Some(10), "spans freed separately coalesce");
        f.free(8, 1, 1);
        f.forget(8);
        assert_eq!(f.pending_count(), 0);
    }

    #[test]
    fn pages_allocated_since_the_last_sync_wait_for_readers_only() {
        let mut f = Freelist::from_ids([3, 4]);
        assert_eq!(f.allocate(1), Some(3));
        f.extended(9, 1);
        f.free(5, 3, 1); // allocated since the sync: not in the durable tree
        f.free(5, 9, 1);
        f.free(5, 2, 1); // in the durable tree
        f.release(u64::MAX, 4);
        assert_eq!(f.all_ids(), vec![2, 3, 4, 9]);
        assert_eq!(f.pending_count(), 1, "page 2 waits for a sync");
        assert_eq!(f.allocate(2), Some(3));
        f.synced();
        f.free(6, 3, 2);
        f.release(u64::MAX, 5);
        assert_eq!(
            f.pending_count(),
            2,
            "after a sync, pages 3 and 4 are in the durable tree: they wait"
        );
        assert_eq!(f.all_ids(), vec![2, 3, 4, 9]);
    }

    #[test]
    fn large_lists_use_the_overflow_count() {
        let ids: Vec<Pgid> = (2..70_000).collect();
        let size = Freelist::encoded_size(ids.len() as u64);
        let pages = size.div_ceil(4096);
        let page = encode_page(&ids, 5, pages, 4096);
        let view = crate::pagefile::page::PageView::on_file(&page, 4096, pages + 5, 0);
        assert!(
            view.is_err(),
            "page 0 of this buffer is page 5: id mismatch"
        );
        let mut map = vec![0u8; 5 * 4096];
        map.extend_from_slice(&page);
        let view = crate::pagefile::page::PageView::on_file(&map, 4096, pages + 5, 5).unwrap();
        assert_eq!(view.freelist_ids().unwrap(), ids);
    }
}
