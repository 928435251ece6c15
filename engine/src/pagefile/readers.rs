//! How readers on any thread learn the latest tree and tell the writer which trees they still use,
//! without a lock between them.
//!
//! - [`Published`] is the latest published snapshot (txid, root bucket, high-water mark, mapping),
//!   written by the single writer under a sequence lock that readers retry on; readers never block.
//! - [`ReaderTable`] is a fixed array of cache-line-padded slots. A reader claims a free slot with one
//!   compare-and-swap (starting at a per-thread index, so a core keeps reusing its own lines) and
//!   stores the txid it reads at; the writer scans the slots for the oldest txid before reusing pages.
//!
//! The pin protocol (as in LMDB): the reader stores its txid in its slot, then re-reads the current
//! txid and retries if it moved. All of it is `SeqCst`, so if the reader saw its txid still current,
//! the writer's next scan is ordered after the pin and sees it; if the writer's scan came first, the
//! reader sees the newer txid and retries. Either way the writer never reuses a page a pinned reader
//! can reach.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};

use super::layout::{BucketHeader, Pgid};

/// What a reader needs to start reading: a committed tree and where to read it from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub txid: u64,
    pub root: BucketHeader,
    pub hwm: Pgid,
    /// Index of the memory mapping that covers `hwm` pages.
    pub map: usize,
}

/// The latest published snapshot, behind a sequence lock (one writer, any number of readers).
#[derive(Debug)]
pub(crate) struct Published {
    seq: AtomicU64,
    txid: AtomicU64,
    root: AtomicU64,
    sequence: AtomicU64,
    hwm: AtomicU64,
    map: AtomicU64,
    /// The txid of the latest complete publication; what readers confirm their pin against.
    current: AtomicU64,
}

impl Published {
    pub fn new(s: Snapshot) -> Self {
        Published {
            seq: AtomicU64::new(0),
            txid: AtomicU64::new(s.txid),
            root: AtomicU64::new(s.root.root),
            sequence: AtomicU64::new(s.root.sequence),
            hwm: AtomicU64::new(s.hwm),
            map: AtomicU64::new(s.map as u64),
            current: AtomicU64::new(s.txid),
        }
    }

    /// Reads a consistent snapshot (retrying while the writer is mid-update).
    pub fn load(&self) -> Snapshot {
        loop {
            let before = self.seq.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let s = Snapshot {
                txid: self.txid.load(Ordering::Relaxed),
                root: BucketHeader {
                    root: self.root.load(Ordering::Relaxed),
                    sequence: self.sequence.load(Ordering::Relaxed),
                },
                hwm: self.hwm.load(Ordering::Relaxed),
                map: self.map.load(Ordering::Relaxed) as usize,
            };
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == before {
                return s;
            }
        }
    }

    /// Publishes `s`. Only the page file's single writer calls this.
    pub fn store(&self, s: Snapshot) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.txid.store(s.txid, Ordering::Relaxed);
        self.root.store(s.root.root, Ordering::Relaxed);
        self.sequence.store(s.root.sequence, Ordering::Relaxed);
        self.hwm.store(s.hwm, Ordering::Relaxed);
        self.map.store(s.map as u64, Ordering::Relaxed);
        self.seq.store(seq + 2, Ordering::Release);
        self.current.store(s.txid, Ordering::SeqCst);
    }

    /// The txid of the latest complete publication.
    pub fn current_txid(&self) -> u64 {
        self.current.load(Ordering::SeqCst)
    }
}

/// A slot on its own cache line.
#[derive(Debug)]
#[repr(align(64))]
struct Slot(AtomicU64);

const FREE: u64 = u64::MAX;

/// The table of open readers and the txids they read at.
#[derive(Debug)]
pub(crate) struct ReaderTable {
    slots: Box<[Slot]>,
    /// One past the highest slot ever claimed: the writer scans only that far.
    high: AtomicUsize,
}

thread_local! {
    static START_SLOT: Cell<Option<usize>> = const { Cell::new(None) };
}
static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

fn start_slot(len: usize) -> usize {
    START_SLOT.with(|s| {
        let v = s.get().unwrap_or_else(|| {
            let v = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
            s.set(Some(v));
            v
        });
        v % len
    })
}

impl ReaderTable {
    pub fn new(max_readers: usize) -> Self {
        let slots = (0..max_readers.max(1))
            .map(|_| Slot(AtomicU64::new(FREE)))
            .collect();
        ReaderTable {
            slots,
            high: AtomicUsize::new(0),
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Claims a slot and pins the current snapshot in it. `None` when every slot is taken.
    pub fn pin(&self, published: &Published) -> Option<(usize, Snapshot)> {
        let len = self.slots.len();
        let start = start_slot(len);
        let mut snap = published.load();
        let slot = (0..len).map(|i| (start + i) % len).find(|&i| {
            self.slots[i]
                .0
                .compare_exchange(FREE, snap.txid, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
        })?;
        self.high.fetch_max(slot + 1, Ordering::SeqCst);
        while published.current_txid() != snap.txid {
            snap = published.load();
            self.slots[slot].0.store(snap.txid, Ordering::SeqCst);
        }
        Some((slot, snap))
    }

    /// Releases a slot taken by [`ReaderTable::pin`].
    pub fn unpin(&self, slot: usize) {
        self.slots[slot].0.store(FREE, Ordering::SeqCst);
    }

    /// The oldest txid any open reader reads at.
    pub fn oldest(&self) -> Option<u64> {
        let high = self.high.load(Ordering::SeqCst);
        self.slots[..high]
            .iter()
            .map(|s| s.0.load(Ordering::SeqCst))
            .filter(|&t| t != FREE)
            .min()
    }

    /// How many readers are open.
    pub fn open_count(&self) -> usize {
        let high = self.high.load(Ordering::SeqCst);
        self.slots[..high]
            .iter()
            .filter(|s| s.0.load(Ordering::SeqCst) != FREE)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(txid: u64) -> Snapshot {
        Snapshot {
            txid,
            root: BucketHeader {
                root: txid + 10,
                sequence: txid,
            },
            hwm: txid + 20,
            map: 0,
        }
    }

    #[test]
    fn pins_report_the_oldest_reader() {
        let p = Published::new(snap(3));
        let t = ReaderTable::new(4);
        let (a, s) = t.pin(&p).unwrap();
        assert_eq!(s, snap(3));
        p.store(snap(4));
        let (b, s) = t.pin(&p).unwrap();
        assert_eq!(s.txid, 4);
        assert_eq!(t.oldest(), Some(3));
        t.unpin(a);
        assert_eq!(t.oldest(), Some(4));
        t.unpin(b);
        assert_eq!(t.oldest(), None);
    }

    #[test]
    fn a_full_table_refuses() {
        let p = Published::new(snap(1));
        let t = ReaderTable::new(2);
        let _a = t.pin(&p).unwrap();
        let _b = t.pin(&p).unwrap();
        assert!(t.pin(&p).is_none());
        assert_eq!(t.open_count(), 2);
    }

    #[test]
    fn readers_racing_the_writer_always_see_whole_snapshots() {
        let p = std::sync::Arc::new(Published::new(snap(0)));
        let t = std::sync::Arc::new(ReaderTable::new(8));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (p, t) = (p.clone(), t.clone());
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        let (slot, s) = t.pin(&p).unwrap();
                        assert_eq!(s, snap(s.txid));
                        t.unpin(slot);
                    }
                })
            })
            .collect();
        for i in 1..50_000 {
            p.store(snap(i));
        }
        for r in readers {
            r.join().unwrap();
        }
    }
}
