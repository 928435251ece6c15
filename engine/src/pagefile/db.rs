//! Opening a page file, and the two handles it gives: [`Db`] for readers (cheap to clone, usable from
//! any thread) and [`Writer`] (exactly one, owned by the thread that writes — keelson's raft core).
//!
//! The writer owns every piece of mutable state: the freelist, the file's length, the last published
//! and last durable metas. Readers share only the read-only mappings, the published snapshot and the
//! reader table (see `readers.rs`). `publish` and `sync` are the two halves of a commit described in
//! `engine/docs/format.md`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{Corruption, Error, Result};
use super::freelist::{self, Freelist};
use super::io::{FileIo, IoLayer};
use super::layout::{
    BucketHeader, DEFAULT_PAGE_SIZE, FLAG_FREELIST, FLAG_LEAF, MAX_PAGE_SIZE, NO_FREELIST,
    PageHeader, Pgid,
};
use super::mapping::Mappings;
use super::meta::{self, Meta};
use super::read_txn::ReadTxn;
use super::readers::{Published, ReaderTable, Snapshot};
use super::tree::Pages;
use super::walk;
use super::write_txn::WriteTxn;

/// How to open a page file.
#[derive(Clone)]
pub struct Options {
    /// Most read transactions open at once (each takes a slot; more fail with `ReadersFull`).
    pub max_readers: usize,
    /// Address space reserved for the first mapping; the file can grow this far before a new
    /// mapping is added.
    pub initial_map_size: usize,
    /// Wraps the file for the writer's I/O (fault injection in tests); `None` in production.
    pub io: Option<IoLayer>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_readers: 1024,
            initial_map_size: 1 << 30,
            io: None,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("max_readers", &self.max_readers)
            .field("initial_map_size", &self.initial_map_size)
            .field("io", &self.io.as_ref().map(|_| "custom"))
            .finish()
    }
}

/// State shared by every handle of one open file.
#[derive(Debug)]
pub(crate) struct Inner {
    pub path: PathBuf,
    /// Held open for the mappings and the lock.
    pub file: File,
    pub page_size: usize,
    pub maps: Mappings,
    pub published: Published,
    pub readers: ReaderTable,
    /// The meta the file was opened at.
    pub opened_meta: Meta,
    /// Opened without a writer.
    pub read_only: bool,
}

/// A page file open for reading, from any thread. Clone it freely.
#[derive(Debug, Clone)]
pub struct Db {
    pub(crate) inner: Arc<Inner>,
}

/// The single writer of a page file. Dropping it does not sync: what was published since the last
/// [`Writer::sync`] is gone on the next open (keelson's server replays it from its WAL).
#[derive(Debug)]
pub struct Writer {
    pub(crate) db: Db,
    pub(crate) io: Box<dyn FileIo>,
    pub(crate) freelist: Freelist,
    /// The latest published snapshot.
    pub(crate) current: Snapshot,
    /// First page never allocated (may exceed `current.hwm` by a freelist page).
    pub(crate) hwm: Pgid,
    /// The meta on disk, and the slot it is in.
    pub(crate) durable: Meta,
    pub(crate) durable_slot: u64,
    pub(crate) file_len: u64,
    /// Why writing stopped, after a failed write or fsync.
    pub(crate) stopped: Option<String>,
}

fn io_err<'p>(path: &'p Path, op: &'static str) -> impl FnOnce(io::Error) -> Error + 'p {
    move |source| Error::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// The four pages of a new file (see "Fresh file" in the format).
fn fresh_image(page_size: usize) -> Vec<u8> {
    let mut buf = vec![0u8; 4 * page_size];
    for txid in 0..2u64 {
        let m = Meta {
            page_size: page_size as u32,
            root: BucketHeader {
                root: 3,
                sequence: 0,
            },
            freelist: 2,
            hwm: 4,
            txid,
        };
        let start = txid as usize * page_size;
        buf[start..start + page_size].copy_from_slice(&m.encode_page(txid));
    }
    PageHeader {
        id: 2,
        flags: FLAG_FREELIST,
        count: 0,
        overflow: 0,
    }
    .encode(&mut buf[2 * page_size..]);
    PageHeader {
        id: 3,
        flags: FLAG_LEAF,
        count: 0,
        overflow: 0,
    }
    .encode(&mut buf[3 * page_size..]);
    buf
}

/// Whether the file holds nothing but (parts of) a fresh image: empty, or an initialization cut
/// short before its metas were written. Anything else — a real file, however damaged — is not
/// touched.
fn never_initialized(file: &File, len: u64) -> std::io::Result<bool> {
    let fresh = fresh_image(DEFAULT_PAGE_SIZE);
    if len > fresh.len() as u64 {
        return Ok(false);
    }
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, 0)?;
    let metas_unwritten = bytes.iter().take(2 * DEFAULT_PAGE_SIZE).all(|&b| b == 0);
    Ok(metas_unwritten && bytes.iter().zip(&fresh).all(|(&b, &f)| b == 0 || b == f))
}

/// Creates `path` as a fresh file, atomically: written to a temporary name, synced, renamed into
/// place, and the directory synced.
fn create_fresh(path: &Path) -> Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".creating");
    let tmp = path.with_file_name(tmp_name);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err(&tmp, "create"))?;
    FileExt::write_all_at(&file, &fresh_image(DEFAULT_PAGE_SIZE), 0)
        .map_err(io_err(&tmp, "write"))?;
    file.sync_all().map_err(io_err(&tmp, "fsync"))?;
    std::fs::rename(&tmp, path).map_err(io_err(path, "rename"))?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "fsync directory"))
}

/// Reads both metas and picks the one to open with; also returns its slot.
fn read_meta(file: &File, len: u64, path: &Path) -> Result<(Meta, u64)> {
    let want = len.min(u64::from(MAX_PAGE_SIZE) * 2) as usize;
    let mut head = vec![0u8; want];
    file.read_exact_at(&mut head, 0)
        .map_err(io_err(path, "read meta"))?;
    let corrupt = |(meta0, meta1)| Error::Corrupt {
        path: path.to_path_buf(),
        corruption: Corruption::NoValidMeta { meta0, meta1 },
    };
    let page_size = meta::probe_page_size(&head, len).map_err(corrupt)? as usize;
    let meta0 = meta::decode_slot(&head, 0, page_size, len);
    let meta1 = meta::decode_slot(&head, 1, page_size, len);
    let slot_of_1 = matches!(&meta1, Ok(m) if meta0.as_ref().map_or(true, |m0| m.txid > m0.txid));
    let chosen = meta::choose(meta0, meta1).map_err(corrupt)?;
    Ok((chosen, u64::from(slot_of_1)))
}

impl Db {
    /// Opens (creating if missing) the page file at `path` for reading and writing. Fails with
    /// [`Error::Locked`] if another process has it open for writing.
    pub fn open(path: impl AsRef<Path>, options: Options) -> Result<(Db, Writer)> {
        let path = path.as_ref();
        if !path.exists() {
            create_fresh(path)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err(path, "open"))?;
        if file.try_lock().is_err() {
            return Err(Error::Locked(path.to_path_buf()));
        }
        let io_file = file.try_clone().map_err(io_err(path, "open"))?;
        let io: Box<dyn FileIo> = match &options.io {
            Some(layer) => layer(io_file),
            None => Box::new(io_file),
        };
        let mut len = file.metadata().map_err(io_err(path, "stat"))?.len();
        if never_initialized(&file, len).map_err(io_err(path, "read"))? {
            // Data pages first, then the metas that point at them: a crash in between leaves a
            // file this check still recognizes as never initialized.
            let image = fresh_image(DEFAULT_PAGE_SIZE);
            let metas = 2 * DEFAULT_PAGE_SIZE;
            io.write_all_at(&image[metas..], metas as u64)
                .map_err(io_err(path, "write"))?;
            io.sync_data().map_err(io_err(path, "fdatasync"))?;
            io.write_all_at(&image[..metas], 0)
                .map_err(io_err(path, "write"))?;
            io.sync_data().map_err(io_err(path, "fdatasync"))?;
            len = len.max(image.len() as u64);
        }
        let (meta, slot) = read_meta(&file, len, path)?;
        let db = Db::from_parts(path, file, meta, len, &options, false)?;
        let freelist = db.load_freelist(&meta)?;
        let writer = Writer {
            current: db.inner.published.load(),
            hwm: meta.hwm,
            durable: meta,
            durable_slot: slot,
            file_len: len,
            stopped: None,
            freelist,
            io,
            db: db.clone(),
        };
        Ok((db, writer))
    }

    /// Opens the page file at `path` for reading only (as bbolt's read-only mode: a shared lock, so
    /// it fails with [`Error::Locked`] while a writer has the file).
    pub fn open_read_only(path: impl AsRef<Path>, options: Options) -> Result<Db> {
        let path = path.as_ref();
        let file = File::open(path).map_err(io_err(path, "open"))?;
        if file.try_lock_shared().is_err() {
            return Err(Error::Locked(path.to_path_buf()));
        }
        let len = file.metadata().map_err(io_err(path, "stat"))?.len();
        let (meta, _) = read_meta(&file, len, path)?;
        Db::from_parts(path, file, meta, len, &options, true)
    }

    fn from_parts(
        path: &Path,
        file: File,
        meta: Meta,
        len: u64,
        options: &Options,
        read_only: bool,
    ) -> Result<Db> {
        let map_len = options
            .initial_map_size
            .max(len.saturating_mul(2).next_power_of_two() as usize);
        let maps = Mappings::new(&file, map_len).map_err(io_err(path, "mmap"))?;
        let snapshot = Snapshot {
            txid: meta.txid,
            root: meta.root,
            hwm: meta.hwm,
            map: 0,
        };
        Ok(Db {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                file,
                page_size: meta.page_size as usize,
                maps,
                published: Published::new(snapshot),
                readers: ReaderTable::new(options.max_readers),
                opened_meta: meta,
                read_only,
            }),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether this handle was opened read-only (no writer exists).
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// Bytes per page.
    pub fn page_size(&self) -> usize {
        self.inner.page_size
    }

    /// Begins a read transaction on the latest published tree. It never waits for the writer and
    /// sees nothing the writer does after this call.
    pub fn begin_read(&self) -> Result<ReadTxn> {
        match self.inner.readers.pin(&self.inner.published) {
            Some((slot, snapshot)) => Ok(ReadTxn::new(self.clone(), slot, snapshot)),
            None => Err(Error::ReadersFull {
                path: self.inner.path.clone(),
                max: self.inner.readers.capacity(),
            }),
        }
    }

    /// How many read transactions are open.
    pub fn open_readers(&self) -> usize {
        self.inner.readers.open_count()
    }

    /// The pages of `snapshot`.
    pub(crate) fn pages(&self, snapshot: &Snapshot) -> Pages<'_> {
        let map = self.inner.maps.get(snapshot.map);
        let len = (snapshot.hwm as usize)
            .saturating_mul(self.inner.page_size)
            .min(map.len());
        Pages {
            map: &map[..len],
            page_size: self.inner.page_size,
            hwm: snapshot.hwm,
            path: &self.inner.path,
        }
    }

    /// The free pages of the tree `meta` describes: from its freelist page, or (when the file does
    /// not store one, as etcd's do) every page below the high-water mark that the tree does not use.
    fn load_freelist(&self, meta: &Meta) -> Result<Freelist> {
        let snapshot = self.inner.published.load();
        let pages = self.pages(&snapshot);
        if meta.freelist != NO_FREELIST {
            let page = pages
                .page(meta.freelist)
                .and_then(|p| p.expect_freelist())
                .map_err(|c| pages.corrupt(c))?;
            let ids = page.freelist_ids().map_err(|c| pages.corrupt(c))?;
            let own = meta.freelist..=meta.freelist + u64::from(page.header().overflow);
            let bad =
                |id: &Pgid| *id < 2 || *id >= meta.hwm || own.contains(id) || *id == meta.root.root;
            if let Some(&bad) = ids.iter().find(|id| bad(id)) {
                return Err(pages.corrupt(Corruption::Freelist {
                    pgid: meta.freelist,
                    detail: format!(
                        "lists page {bad}, which is a meta, the freelist, the root or beyond {}",
                        meta.hwm
                    ),
                }));
            }
            let freelist = Freelist::from_ids(ids);
            if let Some(damage) = freelist.damage() {
                let detail = damage.to_string();
                return Err(pages.corrupt(Corruption::Freelist {
                    pgid: meta.freelist,
                    detail,
                }));
            }
            return Ok(freelist);
        }
        let mut used = vec![false; meta.hwm as usize];
        walk::reachable_pages(pages, meta.root, &mut |pgid, count| {
            for id in pgid..pgid + count {
                used[id as usize] = true;
            }
            Ok(())
        })?;
        Ok(Freelist::from_ids(
            (2..meta.hwm).filter(|&id| !used[id as usize]),
        ))
    }
}

impl Writer {
    /// The reader handle of this file.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Begins the write transaction (one at a time, by construction: it borrows the writer).
    pub fn begin(&mut self) -> Result<WriteTxn<'_>> {
        self.check_running()?;
        self.release_pages()?;
        let txid = self.current.txid.max(self.durable.txid) + 1;
        Ok(WriteTxn::new(self, txid))
    }

    /// Pages free for reuse now, and pages freed but still reachable by a reader or the durable meta.
    pub fn free_pages(&self) -> (u64, u64) {
        (self.freelist.free_count(), self.freelist.pending_count())
    }

    /// Whether everything published is durable.
    pub fn is_synced(&self) -> bool {
        self.current.txid <= self.durable.txid
    }

    pub(crate) fn check_running(&self) -> Result<()> {
        match &self.stopped {
            Some(cause) => Err(Error::Stopped {
                path: self.db.inner.path.clone(),
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Records a failure that makes further writes unsafe, and returns it.
    pub(crate) fn stop(&mut self, err: Error) -> Error {
        if self.stopped.is_none() {
            self.stopped = Some(err.to_string());
        }
        err
    }

    /// Makes reusable the freed pages that no open reader and no durable meta can reach. Stops the
    /// writer if the freelist's accounts no longer add up.
    fn release_pages(&mut self) -> Result<()> {
        let oldest_reader = self.db.inner.readers.oldest().unwrap_or(u64::MAX);
        self.freelist.release(oldest_reader, self.durable.txid);
        match self.freelist.damage() {
            None => Ok(()),
            Some(damage) => {
                let corruption = Corruption::Freelist {
                    pgid: self.durable.freelist,
                    detail: damage.to_string(),
                };
                let err = Error::Corrupt {
                    path: self.db.inner.path.clone(),
                    corruption,
                };
                Err(self.stop(err))
            }
        }
    }

    /// Takes `n` contiguous pages: reused ones if a run fits, else from the high-water mark.
    pub(crate) fn allocate(&mut self, n: u64) -> (Pgid, bool) {
        match self.freelist.allocate(n) {
            Some(pgid) => (pgid, true),
            None => {
                let pgid = self.hwm;
                self.hwm += n;
                self.freelist.extended(pgid, n);
                (pgid, false)
            }
        }
    }

    /// Grows the file (in steps) and the mapping so that `hwm` pages fit; returns the index of the
    /// mapping that covers them.
    pub(crate) fn ensure_room(&mut self) -> Result<usize> {
        let page_size = self.db.inner.page_size as u64;
        let needed = self.hwm * page_size;
        if needed > self.file_len {
            const STEP: u64 = 16 << 20;
            let target = if needed < STEP {
                needed.next_power_of_two()
            } else {
                needed.div_ceil(STEP) * STEP
            };
            self.io
                .set_len(target)
                .map_err(io_err(&self.db.inner.path, "grow"))?;
            self.file_len = target;
        }
        self.db
            .inner
            .maps
            .cover(&self.db.inner.file, needed as usize)
            .map_err(io_err(&self.db.inner.path, "mmap"))
    }

    /// Writes page images, sorted by page id; images of adjacent pages are coalesced into one write
    /// (up to 1 MiB), a page with no neighbour is written straight from its image.
    pub(crate) fn write_pages(&mut self, mut pages: Vec<(Pgid, Vec<u8>)>) -> Result<()> {
        pages.sort_unstable_by_key(|(pgid, _)| *pgid);
        let page_size = self.db.inner.page_size as u64;
        let path = &self.db.inner.path;
        let mut i = 0;
        while i < pages.len() {
            let start = pages[i].0;
            let mut end = i + 1;
            let mut bytes = pages[i].1.len();
            while end < pages.len()
                && start * page_size + bytes as u64 == pages[end].0 * page_size
                && bytes < 1 << 20
            {
                bytes += pages[end].1.len();
                end += 1;
            }
            let written = if end == i + 1 {
                self.io.write_all_at(&pages[i].1, start * page_size)
            } else {
                let mut run = Vec::with_capacity(bytes);
                for (_, image) in &pages[i..end] {
                    run.extend_from_slice(image);
                }
                self.io.write_all_at(&run, start * page_size)
            };
            written.map_err(io_err(path, "write"))?;
            i = end;
        }
        Ok(())
    }

    /// Makes `snapshot` the tree new readers see.
    pub(crate) fn publish(&mut self, snapshot: Snapshot) {
        self.db.inner.published.store(snapshot);
        self.current = snapshot;
    }

    /// Makes the latest published transaction durable: writes the freelist, fdatasyncs, writes the
    /// meta into the slot not holding the durable one, fdatasyncs. Any failure stops the writer:
    /// after a failed flush nothing can say what reached the disk.
    pub fn sync(&mut self) -> Result<()> {
        self.check_running()?;
        if self.is_synced() {
            return Ok(());
        }
        self.write_durable().map_err(|e| self.stop(e))
    }

    fn write_durable(&mut self) -> Result<()> {
        let target_slot = 1 - self.durable_slot;
        let mut txid = self.current.txid.max(self.durable.txid + 1);
        if txid % 2 != target_slot {
            txid += 1;
        }
        self.release_pages()?;

        let page_size = self.db.inner.page_size;
        if self.durable.freelist != NO_FREELIST {
            let old = self.durable.freelist;
            let span = {
                let pages = self.db.pages(&Snapshot {
                    hwm: self.hwm,
                    map: self.db.inner.maps.newest(),
                    ..self.current
                });
                pages
                    .page(old)
                    .map_err(|c| pages.corrupt(c))?
                    .header()
                    .overflow
            };
            self.freelist.free(txid, old, u64::from(span) + 1);
        }
        let count = self.freelist.free_count() + self.freelist.pending_count();
        let n = Freelist::encoded_size(count).div_ceil(page_size as u64);
        let (fl_pgid, _) = self.allocate(n);
        self.ensure_room()?;
        let image = freelist::encode_page(&self.freelist.all_ids(), fl_pgid, n, page_size);
        self.write_pages(vec![(fl_pgid, image)])?;
        self.io
            .sync_data()
            .map_err(io_err(&self.db.inner.path, "fdatasync"))?;
        let meta = Meta {
            page_size: page_size as u32,
            root: self.current.root,
            freelist: fl_pgid,
            hwm: self.hwm,
            txid,
        };
        let slot_offset = target_slot * page_size as u64;
        self.io
            .write_all_at(&meta.encode_page(target_slot), slot_offset)
            .map_err(io_err(&self.db.inner.path, "write meta"))?;
        self.io
            .sync_data()
            .map_err(io_err(&self.db.inner.path, "fdatasync meta"))?;
        self.durable = meta;
        self.durable_slot = target_slot;
        self.freelist.synced();
        let map = self.db.inner.maps.newest();
        self.publish(Snapshot {
            txid,
            hwm: self.hwm,
            map,
            ..self.current
        });
        Ok(())
    }
}
