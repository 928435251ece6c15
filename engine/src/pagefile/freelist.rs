//! The writer's page allocator: the set of reusable pages (as coalesced spans, so a node needing a
//! contiguous run finds one) and the pages freed by recent transactions, pending until no reader and
//! no durable meta can reach them. Owned by the writer alone; readers never touch it.
//!
//! Invariants: a page is in at most one of `free` and `pending`; `free` spans never touch or overlap
//! (adjacent spans are merged); pages come out of `pending[f]` only through [`Freelist::release`]
//! with a bound the caller derived from the open readers and the durable meta.

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
    /// Freeing txid → pages it freed (each page of a run listed).
    pending: BTreeMap<u64, Vec<Pgid>>,
    pending_count: u64,
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
        Some(start)
    }

    /// Gives back a run that [`Freelist::allocate`] handed out, as if it never had.
    pub fn unallocate(&mut self, start: Pgid, n: u64) {
        self.insert_span(start, n);
    }

    /// Records that transaction `txid` stopped using pages `start..start + n`.
    pub fn free(&mut self, txid: u64, start: Pgid, n: u64) {
        self.pending
            .entry(txid)
            .or_default()
            .extend(start..start + n);
        self.pending_count += n;
    }

    /// Forgets the frees of `txid` (its transaction did not happen).
    pub fn forget(&mut self, txid: u64) {
        if let Some(ids) = self.pending.remove(&txid) {
            self.pending_count -= ids.len() as u64;
        }
    }

    /// Makes reusable every page freed at a txid ≤ `upto`.
    pub fn release(&mut self, upto: u64) {
        let later = self.pending.split_off(&(upto.saturating_add(1)));
        let released = std::mem::replace(&mut self.pending, later);
        for (_, mut ids) in released {
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
        self.free_count += len;
        if let Some((&prev, &plen)) = self.free.range(..start).next_back() {
            debug_assert!(prev + plen <= start, "page {start} freed twice");
            if prev + plen == start {
                self.free.remove(&prev);
                start = prev;
                len += plen;
            }
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
        for pending in self.pending.values() {
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
        f.unallocate(9, 3);
        assert_eq!(f.all_ids(), vec![4, 9, 10, 11, 20]);
    }

    #[test]
    fn pending_pages_are_released_only_up_to_the_bound() {
        let mut f = Freelist::default();
        f.free(5, 10, 2);
        f.free(7, 12, 1);
        f.release(6);
        assert_eq!((f.free_count(), f.pending_count()), (2, 1));
        assert_eq!(f.allocate(3), None);
        f.release(7);
        assert_eq!(f.allocate(3), Some(10), "spans freed separately coalesce");
        f.free(8, 1, 1);
        f.forget(8);
        assert_eq!(f.pending_count(), 0);
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
