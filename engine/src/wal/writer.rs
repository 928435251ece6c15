//! The WAL's write side, on one glommio executor (keelson's raft core): appends are framed in
//! arrival order into a bounded gather buffer; one flusher task writes everything gathered with one
//! O_DIRECT write and makes it durable with one fdatasync, while new appends gather for the next
//! round (group commit). Each append gets a [`Durable`] future that resolves when its bytes are on
//! disk.
//!
//! Segments roll over when full. The next segment is prepared (created as `.tmp`, zero-filled,
//! fsynced) in the background before it is needed; a rollover writes the new segment's head and
//! data into the prepared file, fsyncs it, and only then renames it into place, so a segment file
//! never exists without a valid head.
//!
//! Fail-stop: after a failed write or fsync the WAL records why, fails every waiter and every later
//! append with that reason, and writes nothing more.
//!
//! Close a WAL ([`Wal::close`]) before opening its directory again: opening removes leftover
//! `.tmp` files, and one that a still-running flusher is preparing must not vanish under it
//! (glommio `statfs`es a file's path right after opening it, and panics if it is gone).
//!
//! Everything here must run on a glommio executor; shared state is `Rc`/`RefCell`, never borrowed
//! across an await.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::io::{Directory, DmaFile, OpenOptions};
use glommio::sync::Semaphore;
use glommio::{Task, executor, spawn_local};

use super::error::{Result, WalError, io_err};
use super::frame::{self, BLOCK, MAX_WRITE};
use super::record::{HardState, KIND_HARD_STATE, KIND_METADATA, KIND_SEED, Record, seed_payload};
use super::replay::{self, Replay, Resume};
use super::segment::{self, SegmentName, prepared_name};

/// Where a fault can be injected (tests of fail-stop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoPoint {
    /// Before each write of a segment.
    Write,
    /// Before each fdatasync of a segment or the directory.
    Sync,
}

/// Called before each write and sync; an error is returned in place of the operation.
pub type FaultHook = Rc<dyn Fn(IoPoint) -> io::Result<()>>;

/// How to run a WAL.
#[derive(Clone)]
pub struct Options {
    /// Bytes per segment (a multiple of 4096; 64 MiB by default).
    pub segment_size: u64,
    /// Fault injection, for tests; `None` in production.
    pub faults: Option<FaultHook>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_size: 64 << 20,
            faults: None,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("segment_size", &self.segment_size)
            .field("faults", &self.faults.is_some())
            .finish()
    }
}

/// Counters since the WAL was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Calls to [`Wal::append`].
    pub appends: u64,
    /// Records appended.
    pub records: u64,
    /// Frame bytes appended.
    pub bytes: u64,
    /// Segment writes issued.
    pub writes: u64,
    /// fdatasyncs issued (segments and directory).
    pub fsyncs: u64,
}

/// Framed bytes waiting for the flusher, all for one segment.
#[derive(Debug)]
struct Chunk {
    name: SegmentName,
    offset: u64,
    bytes: Vec<u8>,
}

#[derive(Debug)]
struct State {
    pending: Vec<Chunk>,
    /// Units of `room` the pending bytes hold.
    pending_permits: u64,
    /// Appends so far: the durability target of the latest.
    appended: u64,
    /// The crc chain's running value after the last framed record.
    crc: u32,
    /// Segment the next frame goes into, and the offset it lands at.
    segment: SegmentName,
    end: u64,
    last_index: u64,
    hard_state: HardState,
    metadata: Vec<u8>,
    /// Appends known durable.
    durable: u64,
    failed: Option<String>,
    waiters: Vec<(u64, Waker)>,
    stats: WalStats,
    /// Segments on disk, oldest first.
    segments: Vec<SegmentName>,
}

impl State {
    /// A WAL whose next frame goes into `segment` at `end`, chained from `crc`.
    fn new(
        segment: SegmentName,
        end: u64,
        crc: u32,
        last_index: u64,
        hard_state: HardState,
        metadata: Vec<u8>,
        segments: Vec<SegmentName>,
    ) -> State {
        State {
            pending: Vec::new(),
            pending_permits: 0,
            appended: 0,
            crc,
            segment,
            end,
            last_index,
            hard_state,
            metadata,
            durable: 0,
            failed: None,
            waiters: Vec::new(),
            stats: WalStats::default(),
            segments,
        }
    }

    fn frame(&mut self, kind: u8, len: usize, write: impl FnOnce(&mut Vec<u8>)) {
        let frame_len = frame::frame_len(len);
        // A chunk is one write: at most MAX_WRITE (or one frame), as replay's torn-tail rule expects
        // of any write not yet synced.
        let chunk = match self.pending.last_mut() {
            Some(c) if c.name == self.segment && c.bytes.len() + frame_len <= MAX_WRITE => c,
            _ => {
                self.pending.push(Chunk {
                    name: self.segment,
                    offset: self.end,
                    bytes: Vec::new(),
                });
                self.pending.last_mut().expect("just pushed")
            }
        };
        // A seed's own crc starts from 0; the chain continues through it unchanged.
        let from = if kind == KIND_SEED { 0 } else { self.crc };
        let crc = frame::encode(&mut chunk.bytes, kind, len, from, write);
        if kind != KIND_SEED {
            self.crc = crc;
        }
        self.end += frame_len as u64;
        self.stats.bytes += frame_len as u64;
    }

    /// Frames `record`; starts the next segment first if it does not fit in this one.
    fn record(&mut self, record: &Record<'_>, segment_size: u64) {
        let len = record.payload_len();
        if self.end + frame::frame_len(len) as u64 > segment_size {
            let first_index = match record {
                Record::Entry(e) => e.index,
                _ => self.last_index + 1,
            };
            self.segment = SegmentName {
                seq: self.segment.seq + 1,
                first_index,
            };
            self.end = 0;
            self.head();
        }
        match record {
            Record::Entry(e) => self.last_index = e.index,
            Record::HardState(hs) => self.hard_state = *hs,
            Record::Metadata(m) => self.metadata = m.to_vec(),
            Record::Snapshot { index, .. } => self.last_index = *index,
        }
        self.frame(record.kind(), len, |out| record.write_payload(out));
        self.stats.records += 1;
    }

    /// The frames every segment opens with: seed, metadata, hard state.
    fn head(&mut self) {
        let seed = seed_payload(self.segment.seq, self.segment.first_index, self.crc);
        self.frame(KIND_SEED, seed.len(), |out| out.extend_from_slice(&seed));
        let metadata = std::mem::take(&mut self.metadata);
        self.frame(KIND_METADATA, metadata.len(), |out| {
            out.extend_from_slice(&metadata)
        });
        self.metadata = metadata;
        let hs = Record::HardState(self.hard_state);
        self.frame(KIND_HARD_STATE, hs.payload_len(), |out| {
            hs.write_payload(out)
        });
    }

    fn head_len(&self) -> u64 {
        [20, self.metadata.len(), 24]
            .iter()
            .map(|&len| frame::frame_len(len) as u64)
            .sum()
    }

    fn wake(&mut self) {
        let durable = self.durable;
        let failed = self.failed.is_some();
        self.waiters.retain(|(target, waker)| {
            let done = failed || *target <= durable;
            if done {
                waker.wake_by_ref();
            }
            !done
        });
    }
}

struct Shared {
    dir: PathBuf,
    segment_size: u64,
    faults: Option<FaultHook>,
    state: RefCell<State>,
    /// Bytes the gather buffer may still take.
    room: Semaphore,
    directory: Directory,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("dir", &self.dir)
            .field("segment_size", &self.segment_size)
            .finish_non_exhaustive()
    }
}

impl Shared {
    async fn new(dir: &Path, options: Options, state: State) -> Result<Shared> {
        Ok(Shared {
            dir: dir.to_path_buf(),
            segment_size: options.segment_size,
            faults: options.faults,
            state: RefCell::new(state),
            room: Semaphore::new(MAX_WRITE as u64),
            directory: open_directory(dir).await?,
        })
    }

    fn fault(&self, point: IoPoint) -> io::Result<()> {
        self.faults.as_ref().map_or(Ok(()), |hook| hook(point))
    }

    fn path(&self, name: &SegmentName) -> PathBuf {
        self.dir.join(name.file_name())
    }

    async fn sync_directory(&self) -> Result<()> {
        self.fault(IoPoint::Sync)
            .map_err(io_err(&self.dir, "fsync directory"))?;
        self.directory
            .sync()
            .await
            .map_err(|e| io_err(&self.dir, "fsync directory")(e.into()))?;
        self.state.borrow_mut().stats.fsyncs += 1;
        Ok(())
    }
}

/// A handle to an open WAL. Clone it for every task that appends (on the same executor).
#[derive(Debug, Clone)]
pub struct Wal {
    shared: Rc<Shared>,
    kick: Rc<LocalSender<()>>,
    /// Never sent on: `recv` ends when the flusher has stopped and dropped its sender.
    stopped: Rc<LocalReceiver<()>>,
}

/// Resolves when the append it came from is durable, or fails with the error that stopped the
/// WAL.
#[derive(Debug)]
#[must_use = "an append is not known durable until its Durable resolves"]
pub struct Durable {
    shared: Rc<Shared>,
    target: u64,
}

impl Durable {
    /// The append's sequence number (appends count from 1).
    pub fn seq(&self) -> u64 {
        self.target
    }
}

impl Future for Durable {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let mut state = self.shared.state.borrow_mut();
        if state.durable >= self.target {
            return Poll::Ready(Ok(()));
        }
        if let Some(why) = &state.failed {
            return Poll::Ready(Err(WalError::Stopped(why.clone())));
        }
        state.waiters.push((self.target, cx.waker().clone()));
        Poll::Pending
    }
}

/// The segment being written.
struct Active {
    name: SegmentName,
    file: DmaFile,
    /// Bytes written.
    end: u64,
    /// The written bytes of the block `end` falls in.
    tail_block: Vec<u8>,
}

fn glommio_io(e: glommio::GlommioError<()>) -> io::Error {
    e.into()
}

impl Active {
    /// Writes `bytes` at `end` (rewriting the partial block before them), padded to a block.
    async fn write(&mut self, shared: &Shared, bytes: &[u8]) -> Result<()> {
        let path = shared.path(&self.name);
        let start = self.end - self.tail_block.len() as u64;
        let data_len = self.tail_block.len() + bytes.len();
        let mut buf = self.file.alloc_dma_buffer(data_len.next_multiple_of(BLOCK));
        let out = buf.as_bytes_mut();
        out[..self.tail_block.len()].copy_from_slice(&self.tail_block);
        out[self.tail_block.len()..data_len].copy_from_slice(bytes);
        out[data_len..].fill(0);
        let new_tail = out[data_len / BLOCK * BLOCK..data_len].to_vec();
        let size = out.len();
        shared
            .fault(IoPoint::Write)
            .map_err(io_err(&path, "write"))?;
        let written = self
            .file
            .write_at(buf, start)
            .await
            .map_err(|e| io_err(&path, "write")(glommio_io(e)))?;
        if written != size {
            return Err(io_err(&path, "write")(io::Error::other(format!(
                "short write: {written} of {size} bytes"
            ))));
        }
        shared.state.borrow_mut().stats.writes += 1;
        self.end += bytes.len() as u64;
        self.tail_block = new_tail;
        Ok(())
    }

    async fn sync(&self, shared: &Shared) -> Result<()> {
        let path = shared.path(&self.name);
        shared
            .fault(IoPoint::Sync)
            .map_err(io_err(&path, "fdatasync"))?;
        self.file
            .fdatasync()
            .await
            .map_err(|e| io_err(&path, "fdatasync")(glommio_io(e)))?;
        shared.state.borrow_mut().stats.fsyncs += 1;
        Ok(())
    }
}

/// Creates `<seq>.tmp` in `dir`, `size` bytes of zeros, fsynced: a segment ready to be used.
async fn prepare(dir: PathBuf, seq: u64, size: u64) -> Result<DmaFile> {
    let path = dir.join(prepared_name(seq));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(&path)
        .await
        .map_err(|e| io_err(&path, "create segment")(glommio_io(e)))?;
    file.pre_allocate(size, false)
        .await
        .map_err(|e| io_err(&path, "preallocate")(glommio_io(e)))?;
    let chunk = (MAX_WRITE as u64).min(size);
    let mut at = 0;
    while at < size {
        let mut zeros = file.alloc_dma_buffer(chunk as usize);
        zeros.as_bytes_mut().fill(0);
        file.write_at(zeros, at)
            .await
            .map_err(|e| io_err(&path, "zero-fill")(glommio_io(e)))?;
        at += chunk;
    }
    file.fdatasync()
        .await
        .map_err(|e| io_err(&path, "fdatasync")(glommio_io(e)))?;
    Ok(file)
}

/// The flusher: one write and one fdatasync for everything gathered, until the WAL is closed or
/// stops. It lets the segment being prepared finish before it ends, so nothing of this WAL touches
/// the directory once `stopped` is dropped.
async fn flusher(
    shared: Rc<Shared>,
    kick: LocalReceiver<()>,
    active: Active,
    mut next: Task<Result<DmaFile>>,
    stopped: LocalSender<()>,
    lock: std::fs::File,
) {
    flush_until_closed(&shared, kick, active, &mut next).await;
    let _ = next.await;
    drop((lock, stopped));
}

async fn flush_until_closed(
    shared: &Shared,
    kick: LocalReceiver<()>,
    mut active: Active,
    next: &mut Task<Result<DmaFile>>,
) {
    loop {
        let open = kick.recv().await.is_some();
        let (chunks, target, permits) = {
            let mut state = shared.state.borrow_mut();
            (
                std::mem::take(&mut state.pending),
                state.appended,
                std::mem::take(&mut state.pending_permits),
            )
        };
        if !chunks.is_empty() {
            let outcome = flush(shared, &mut active, next, chunks).await;
            let mut state = shared.state.borrow_mut();
            match outcome {
                Ok(()) => state.durable = target,
                Err(e) => state.failed = Some(e.to_string()),
            }
            state.wake();
            drop(state);
            shared.room.signal(permits);
            if shared.state.borrow().failed.is_some() {
                shared.room.close();
                return;
            }
        }
        if !open {
            let mut state = shared.state.borrow_mut();
            state
                .failed
                .get_or_insert_with(|| "the WAL was closed".to_string());
            state.wake();
            return;
        }
    }
}

async fn flush(
    shared: &Shared,
    active: &mut Active,
    next: &mut Task<Result<DmaFile>>,
    chunks: Vec<Chunk>,
) -> Result<()> {
    // Whether a write went out since the last fdatasync: at most one may be unsynced at a time.
    let mut unsynced = false;
    for chunk in chunks {
        if chunk.name != active.name {
            // Roll over: close out the old segment, fill the prepared one, then put it in place.
            active.sync(shared).await?;
            let seq = chunk.name.seq;
            let following = spawn_local(prepare(shared.dir.clone(), seq + 1, shared.segment_size));
            let file = std::mem::replace(next, following).await?;
            *active = Active {
                name: chunk.name,
                file,
                end: 0,
                tail_block: Vec::new(),
            };
            active.write(shared, &chunk.bytes).await?;
            active.sync(shared).await?;
            let path = shared.path(&chunk.name);
            let tmp = shared.dir.join(prepared_name(seq));
            glommio::io::rename(&tmp, &path)
                .await
                .map_err(|e| io_err(&path, "rename")(glommio_io(e)))?;
            shared.sync_directory().await?;
            shared.state.borrow_mut().segments.push(chunk.name);
            unsynced = false;
            continue;
        }
        debug_assert_eq!(
            chunk.offset, active.end,
            "chunks continue where the segment's data ends"
        );
        if unsynced {
            active.sync(shared).await?;
        }
        active.write(shared, &chunk.bytes).await?;
        unsynced = true;
    }
    active.sync(shared).await
}

/// Reads a whole file (on the blocking pool: it runs once, at open).
async fn read_file(path: PathBuf) -> Result<Vec<u8>> {
    executor()
        .spawn_blocking({
            let path = path.clone();
            move || std::fs::read(path)
        })
        .await
        .map_err(io_err(&path, "read segment"))
}

/// Locks `dir` for this WAL (creating it first if asked) and lists it.
async fn claim(dir: &Path, create: bool) -> Result<(std::fs::File, segment::Listing)> {
    let owned = dir.to_path_buf();
    let (lock, listing) = executor()
        .spawn_blocking(move || {
            if create {
                std::fs::create_dir_all(&owned)?;
            }
            Ok::<_, io::Error>((segment::lock(&owned)?, segment::list(&owned)?))
        })
        .await
        .map_err(io_err(dir, "lock and list"))?;
    let lock = lock.ok_or_else(|| WalError::Directory {
        dir: dir.to_path_buf(),
        what: "is in use by another open WAL",
    })?;
    Ok((lock, listing))
}

async fn open_directory(dir: &Path) -> Result<Directory> {
    Directory::open(dir)
        .await
        .map_err(|e| io_err(dir, "open directory")(glommio_io(e)))
}

impl Wal {
    fn start(shared: Shared, active: Active, lock: std::fs::File) -> Wal {
        let shared = Rc::new(shared);
        let (kick, kicked) = local_channel::new_bounded(1);
        let next = spawn_local(prepare(
            shared.dir.clone(),
            active.name.seq + 1,
            shared.segment_size,
        ));
        let (stopping, stopped) = local_channel::new_bounded(1);
        spawn_local(flusher(
            shared.clone(),
            kicked,
            active,
            next,
            stopping,
            lock,
        ))
        .detach();
        Wal {
            shared,
            kick: Rc::new(kick),
            stopped: Rc::new(stopped),
        }
    }

    fn check_options(dir: &Path, options: &Options) -> Result<()> {
        if !options.segment_size.is_multiple_of(BLOCK as u64)
            || options.segment_size < 2 * BLOCK as u64
        {
            return Err(WalError::Directory {
                dir: dir.to_path_buf(),
                what: "segment size must be a multiple of 4096, at least 8192",
            });
        }
        Ok(())
    }

    /// Creates a new WAL in `dir` (created if missing; it must hold no WAL) whose first entry will
    /// be `first_index`, with member `metadata`. Its first segment is durable when this returns.
    pub async fn create(
        dir: &Path,
        metadata: &[u8],
        first_index: u64,
        options: Options,
    ) -> Result<Wal> {
        Self::check_options(dir, &options)?;
        let (lock, listing) = claim(dir, true).await?;
        if !listing.0.is_empty() {
            return Err(WalError::Directory {
                dir: dir.to_path_buf(),
                what: "already holds a WAL",
            });
        }
        let name = SegmentName {
            seq: 0,
            first_index,
        };
        let mut state = State::new(
            name,
            0,
            0,
            first_index.saturating_sub(1),
            HardState::default(),
            metadata.to_vec(),
            vec![name],
        );
        state.head();
        let head = std::mem::take(&mut state.pending)
            .pop()
            .expect("the head is framed");
        let shared = Shared::new(dir, options, state).await?;
        let file = prepare(dir.to_path_buf(), 0, shared.segment_size).await?;
        let mut active = Active {
            name,
            file,
            end: 0,
            tail_block: Vec::new(),
        };
        active.write(&shared, &head.bytes).await?;
        active.sync(&shared).await?;
        let path = shared.path(&name);
        glommio::io::rename(dir.join(prepared_name(0)), &path)
            .await
            .map_err(|e| io_err(&path, "rename")(glommio_io(e)))?;
        shared.sync_directory().await?;
        Ok(Wal::start(shared, active, lock))
    }

    /// Opens the WAL in `dir` and replays it: metadata, last hard state, and the entries after
    /// `after_index`. A torn tail is cut back (and zeroed) and appends continue from there;
    /// corruption anywhere else fails with the segment file and offset.
    pub async fn open(dir: &Path, after_index: u64, options: Options) -> Result<(Wal, Replay)> {
        Self::open_keeping(dir, after_index, 0, options).await
    }

    /// [`Wal::open`], replaying also the entries of the `keep` indexes up to `after_index` that the
    /// WAL still holds (a cluster member keeps them for followers to catch up from).
    pub async fn open_keeping(
        dir: &Path,
        after_index: u64,
        keep: u64,
        options: Options,
    ) -> Result<(Wal, Replay)> {
        Self::check_options(dir, &options)?;
        let (lock, (names, leftovers)) = claim(dir, false).await?;
        for path in leftovers {
            glommio::io::remove(&path)
                .await
                .map_err(|e| io_err(&path, "remove")(glommio_io(e)))?;
        }
        if names.is_empty() {
            return Err(WalError::Directory {
                dir: dir.to_path_buf(),
                what: "holds no WAL segments",
            });
        }
        let mut segments = Vec::with_capacity(names.len());
        for (name, path) in names {
            let bytes = read_file(path.clone()).await?;
            segments.push((name, path, bytes));
        }
        let (replay, resume) = replay::replay(dir, &segments, after_index, keep)?;
        let Resume {
            name,
            path,
            end,
            dirty_end,
            crc,
            tail_block,
            last_index,
            ..
        } = resume;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .dma_open(&path)
            .await
            .map_err(|e| io_err(&path, "open segment")(glommio_io(e)))?;
        let metadata = replay.metadata.clone().unwrap_or_default();
        let segments = segments.iter().map(|(n, _, _)| *n).collect();
        let state = State::new(
            name,
            end,
            crc,
            last_index,
            replay.hard_state,
            metadata,
            segments,
        );
        let shared = Shared::new(dir, options, state).await?;
        let mut active = Active {
            name,
            file,
            end,
            tail_block: tail_block.clone(),
        };
        if dirty_end > end {
            // Zero what a torn write left, so new frames never sit next to stale bytes.
            let zeros = vec![0u8; (dirty_end - end) as usize];
            active.write(&shared, &zeros).await?;
            active.sync(&shared).await?;
            (active.end, active.tail_block) = (end, tail_block);
        }
        Ok((Wal::start(shared, active, lock), replay))
    }

    /// Appends `records`, in order, after everything appended before (they may span segments; a
    /// single record must fit in one). Waits while the gather buffer is full. The returned
    /// [`Durable`] resolves once they are on disk.
    pub async fn append(&self, records: &[Record<'_>]) -> Result<Durable> {
        let shared = &self.shared;
        let frames = records
            .iter()
            .map(|r| frame::frame_len(r.payload_len()) as u64);
        let (size, largest) = frames.fold((0, 0), |(sum, max), len| (sum + len, max.max(len)));
        let room_in_empty_segment = shared.segment_size - shared.state.borrow().head_len();
        if largest > room_in_empty_segment {
            return Err(WalError::TooLarge {
                len: largest,
                max: room_in_empty_segment,
            });
        }
        if let Some(why) = &shared.state.borrow().failed {
            return Err(WalError::Stopped(why.clone()));
        }
        let permits = size.min(MAX_WRITE as u64);
        if shared.room.acquire(permits).await.is_err() {
            let why = shared.state.borrow().failed.clone().unwrap_or_default();
            return Err(WalError::Stopped(why));
        }
        let target = {
            let mut state = shared.state.borrow_mut();
            if let Some(why) = &state.failed {
                return Err(WalError::Stopped(why.clone()));
            }
            for record in records {
                state.record(record, shared.segment_size);
            }
            state.pending_permits += permits;
            state.appended += 1;
            state.stats.appends += 1;
            state.appended
        };
        let _ = self.kick.try_send(());
        Ok(Durable {
            shared: shared.clone(),
            target,
        })
    }

    /// Closes the WAL: what was appended is flushed, later appends fail, and once this returns no
    /// task of this WAL touches its directory any more (open it again only after that). Waits for
    /// every clone of this handle to be dropped too.
    pub async fn close(self) {
        let Wal {
            shared,
            kick,
            stopped,
        } = self;
        drop((shared, kick));
        let _ = stopped.recv().await;
    }

    /// Appends `records` and waits until they are durable.
    pub async fn append_durably(&self, records: &[Record<'_>]) -> Result<()> {
        self.append(records).await?.await
    }

    /// Restarts the log after `index` (at `term`), durably: the page file holds everything up to
    /// it now (a snapshot from the leader), every entry written before is void at replay, and the
    /// next entry appended is `index + 1`.
    pub async fn restart_after(&self, index: u64, term: u64) -> Result<()> {
        self.append_durably(&[Record::Snapshot { index, term }])
            .await
    }

    /// Deletes the segments whose entries all lie below `index` (the page file has synced past
    /// them), oldest first. The newest segment always stays.
    pub async fn release_before(&self, index: u64) -> Result<()> {
        let removable: Vec<SegmentName> = {
            let state = self.shared.state.borrow();
            let segments = &state.segments;
            segments
                .windows(2)
                .take_while(|pair| pair[1].first_index <= index)
                .map(|pair| pair[0])
                .collect()
        };
        if removable.is_empty() {
            return Ok(());
        }
        for name in &removable {
            let path = self.shared.path(name);
            glommio::io::remove(&path)
                .await
                .map_err(|e| io_err(&path, "remove")(glommio_io(e)))?;
            self.shared
                .state
                .borrow_mut()
                .segments
                .retain(|s| s != name);
        }
        self.shared.sync_directory().await
    }

    /// The segments on disk, oldest first.
    pub fn segments(&self) -> Vec<SegmentName> {
        self.shared.state.borrow().segments.clone()
    }

    /// Counters since the WAL was opened.
    pub fn stats(&self) -> WalStats {
        self.shared.state.borrow().stats
    }

    /// The last hard state appended (or replayed).
    pub fn hard_state(&self) -> HardState {
        self.shared.state.borrow().hard_state
    }
}
