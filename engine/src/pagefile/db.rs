//! Opening a page file, and the two handles it gives: [`Db`] for readers (cheap to clone, usable from
//! any thread) and [`Writer`] (exactly one, owned by the thread that writes — keelson's raft core,
//! which never hands it to another thread).
//!
//! The writer owns every piece of mutable state: the freelist, the file's length, the last published
//! and last durable metas, and the sync in flight. Readers share only the read-only mappings, the
//! published snapshot and the reader table (see `readers.rs`). `publish` and `sync` are the two
//! halves of a commit described in `engine/docs/format.md`.
//!
//! The writer plans its file operations as [`IoStep`]s and can perform them itself, blocking
//! ([`Writer::sync`], [`WriteTxn::publish`]), or leave them to its caller ([`Writer::begin_sync`],
//! [`WriteTxn::stage`]) — keelson's raft core performs them on io_uring ([`super::UringFile`]).
//! A sync's steps may run while later transactions publish: until the sync finishes, the pages of
//! the tree it makes durable are kept from reuse like those of the durable tree (see `freelist.rs`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{Corruption, Error, Result};
use super::freelist::{self, Freelist};
use super::io::{FileIo, IoLayer, IoStep};
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
    /// The length the file has, or will have once the growth steps planned so far are done.
    pub(crate) file_len: u64,
    /// The sync whose steps are being performed, if any.
    pub(crate) syncing: Option<InFlight>,
    /// Why writing stopped, after a failed write or fsync.
    pub(crate) stopped: Option<String>,
}

/// A sync between [`Writer::begin_sync`] and [`Writer::finish_sync`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct InFlight {
    /// The meta it writes.
    pub meta: Meta,
    /// The slot it writes it to.
    pub slot: u64,
    /// Pages of the freelist it writes (at `meta.freelist`).
    pub freelist_pages: u64,
    /// The txid of the latest published transaction when it began.
    pub base_txid: u64,
}

/// The file operations of one sync, planned by [`Writer::begin_sync`]: write the freelist page,
/// fdatasync, write the meta, fdatasync. Perform them in order — blocking with
/// [`Writer::perform`], or on io_uring with [`super::UringFile::run`] — then report the outcome to
/// [`Writer::finish_sync`]. Transactions may publish in between.
#[derive(Debug)]
#[must_use = "a sync plan does nothing until its steps are performed and finish_sync is called"]
pub struct SyncPlan {
    /// The steps, in order.
    pub steps: Vec<IoStep>,
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
            syncing: None,
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
        let txid = self.next_txid();
        Ok(WriteTxn::new(self, txid))
    }

    /// A txid above every one published, durable or being made durable.
    fn next_txid(&self) -> u64 {
        let syncing = self.syncing.map_or(0, |s| s.meta.txid);
        self.current.txid.max(self.durable.txid).max(syncing) + 1
    }

    /// Bytes of the published tree: its high-water mark (what a copy of it takes, and what etcd
    /// calls the backend's size).
    pub fn size(&self) -> u64 {
        self.current.hwm * self.db.inner.page_size as u64
    }

    /// Pages free for reuse now, and pages freed but still reachable by a reader or the durable meta.
    pub fn free_pages(&self) -> (u64, u64) {
        (self.freelist.free_count(), self.freelist.pending_count())
    }

    /// Whether everything published is durable.
    pub fn is_synced(&self) -> bool {
        self.current.txid <= self.durable.txid
    }

    /// Whether a sync has begun and not finished ([`Writer::begin_sync`]).
    pub fn is_syncing(&self) -> bool {
        self.syncing.is_some()
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

    /// Makes the mapping cover `hwm` pages and plans the file's growth (in steps) if they do not
    /// fit its length: returns the index of the mapping that covers them and the length to grow
    /// the file to. Planned lengths only ever grow, so growth steps performed in order never
    /// shrink the file.
    pub(crate) fn plan_room(&mut self) -> Result<(usize, Option<u64>)> {
        let page_size = self.db.inner.page_size as u64;
        let needed = self.hwm * page_size;
        let map = self
            .db
            .inner
            .maps
            .cover(&self.db.inner.file, needed as usize)
            .map_err(io_err(&self.db.inner.path, "mmap"))?;
        if needed <= self.file_len {
            return Ok((map, None));
        }
        const STEP: u64 = 16 << 20;
        let target = if needed < STEP {
            needed.next_power_of_two()
        } else {
            needed.div_ceil(STEP) * STEP
        };
        self.file_len = target;
        Ok((map, Some(target)))
    }

    /// The writes of page images, sorted by page id; images of adjacent pages are coalesced into
    /// one write (up to 1 MiB), a page with no neighbour is written straight from its image.
    pub(crate) fn page_writes(&self, mut pages: Vec<(Pgid, Vec<u8>)>) -> Vec<IoStep> {
        pages.sort_unstable_by_key(|(pgid, _)| *pgid);
        let page_size = self.db.inner.page_size as u64;
        let mut writes = Vec::new();
        let mut pages = pages.into_iter().peekable();
        while let Some((start, image)) = pages.next() {
            let offset = start * page_size;
            let adjacent = |bytes: &Vec<u8>, next: &(Pgid, Vec<u8>)| {
                offset + bytes.len() as u64 == next.0 * page_size && bytes.len() < 1 << 20
            };
            let mut bytes = image;
            if pages.peek().is_some_and(|next| adjacent(&bytes, next)) {
                let mut run = Vec::with_capacity(2 * bytes.len());
                run.append(&mut bytes);
                while let Some(next) = pages.next_if(|next| adjacent(&run, next)) {
                    run.extend_from_slice(&next.1);
                }
                bytes = run;
            }
            writes.push(IoStep::Write {
                offset,
                bytes,
                op: "write",
            });
        }
        writes
    }

    /// Performs one planned file operation, blocking, through the writer's file layer. A failure
    /// is returned, not acted on: the caller decides (roll back, stop).
    pub fn perform(&self, step: IoStep) -> Result<()> {
        let op = step.op();
        step.perform(self.io.as_ref())
            .map_err(io_err(&self.db.inner.path, op))
    }

    /// Makes `snapshot` the tree new readers see.
    pub(crate) fn publish(&mut self, snapshot: Snapshot) {
        self.db.inner.published.store(snapshot);
        self.current = snapshot;
    }

    /// Makes the latest published transaction durable, blocking: [`Writer::begin_sync`], every
    /// step through the writer's file layer, [`Writer::finish_sync`]. Any failure stops the writer:
    /// after a failed flush nothing can say what reached the disk.
    pub fn sync(&mut self) -> Result<()> {
        let Some(plan) = self.begin_sync()? else {
            return Ok(());
        };
        let outcome = plan
            .steps
            .into_iter()
            .try_for_each(|step| self.perform(step));
        self.finish_sync(outcome)
    }

    /// Plans making the latest published transaction durable: allocates and encodes the new
    /// freelist page (the previous one is freed at the sync's txid) and the meta for the slot not
    /// holding the durable one. `None` if everything published is durable. From now until
    /// [`Writer::finish_sync`], transactions may go on publishing; pages of the tree this sync
    /// makes durable stay unreused until a later sync replaces it. One sync at a time.
    pub fn begin_sync(&mut self) -> Result<Option<SyncPlan>> {
        self.check_running()?;
        if let Some(syncing) = self.syncing {
            return Err(Error::SyncInFlight {
                path: self.db.inner.path.clone(),
                txid: syncing.meta.txid,
            });
        }
        if self.is_synced() {
            return Ok(None);
        }
        self.plan_sync().map(Some).map_err(|e| self.stop(e))
    }

    fn plan_sync(&mut self) -> Result<SyncPlan> {
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
        // No growth step: a later transaction may plan a longer length before this sync's steps
        // run, and its growth must not be undone. Writing the freelist page extends the file.
        self.db
            .inner
            .maps
            .cover(&self.db.inner.file, (self.hwm * page_size as u64) as usize)
            .map_err(io_err(&self.db.inner.path, "mmap"))?;
        self.file_len = self.file_len.max(self.hwm * page_size as u64);
        let image = freelist::encode_page(&self.freelist.all_ids(), fl_pgid, n, page_size);
        let meta = Meta {
            page_size: page_size as u32,
            root: self.current.root,
            freelist: fl_pgid,
            hwm: self.hwm,
            txid,
        };
        // Everything allocated so far may be in the tree this sync makes durable.
        self.freelist.synced();
        self.syncing = Some(InFlight {
            meta,
            slot: target_slot,
            freelist_pages: n,
            base_txid: self.current.txid,
        });
        Ok(SyncPlan {
            steps: vec![
                IoStep::Write {
                    offset: fl_pgid * page_size as u64,
                    bytes: image,
                    op: "write",
                },
                IoStep::Sync { op: "fdatasync" },
                IoStep::Write {
                    offset: target_slot * page_size as u64,
                    bytes: meta.encode_page(target_slot),
                    op: "write meta",
                },
                IoStep::Sync {
                    op: "fdatasync meta",
                },
            ],
        })
    }

    /// Ends the sync [`Writer::begin_sync`] planned, with the outcome of performing its steps: on
    /// success its meta is the durable one; on failure the writer stops.
    pub fn finish_sync(&mut self, outcome: Result<()>) -> Result<()> {
        let Some(done) = self.syncing.take() else {
            return Err(Error::NoSyncInFlight(self.db.inner.path.clone()));
        };
        outcome.map_err(|e| self.stop(e))?;
        self.durable = done.meta;
        self.durable_slot = done.slot;
        if self.current.txid == done.base_txid {
            // Nothing published since: readers from now on see the tree at the meta's txid.
            let map = self.db.inner.maps.newest();
            self.publish(Snapshot {
                txid: done.meta.txid,
                hwm: self.hwm,
                map,
                ..self.current
            });
        }
        Ok(())
    }
}
