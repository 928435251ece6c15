//! The MVCC store as the raft core drives it: [`Store::apply`] applies committed entries in order,
//! a batch per page-file write transaction, and returns each one's response and events;
//! [`Store::compact_step`] does a compaction's physical work a batch at a time between them. Each
//! comes in a `_via` form that leaves the page writes to a [`Publisher`] (io_uring on the raft
//! core), and a sync comes in halves ([`Store::begin_sync`], [`Store::finish_sync`]) so entries
//! go on being applied while it runs.
//! Readers on any core read the published file through [`Store::db`] (see [`super::range`]).
//!
//! Invariants:
//! - The `meta` bucket's consistent index is the index of the last entry applied, written in the
//!   same transaction as the entry's changes. An entry at or below it is skipped, so replaying the
//!   WAL after a crash converges to the same state.
//! - A request that fails (a missing lease, a compacted revision…) fails before it writes
//!   anything: its entry changes only the consistent index.
//! - keelson's state record holds the current revision, written with every change.

use std::path::Path;

use keelson_proto::etcdserverpb::AlarmMember;
use keelson_proto::mvccpb::Event;

use super::alarm;
use super::error::{MvccError, Result};
use super::ops::{self, Checked};
use super::read::{End, Revisions, bucket, corrupt, decode_i64, live, meta_revision, revisions};
use super::rebuild;
use super::request::{Request, Response};
use super::schema::{
    CONSISTENT_INDEX, ETCD_BUCKETS, FINISHED_COMPACT, FORMAT, KEELSON_BUCKETS, KEY, META,
    SCHEDULED_COMPACT, STATE, STATE_COMPACTED, STATE_FORMAT, STATE_KEYS, STATE_REVISION, TERM,
};
use super::write::Writes;
use super::{compact, lease, members, txn};
use crate::pagefile::{self, Blocking, Db, Publisher, SyncPlan, View, Writer};

/// How to open a store.
#[derive(Debug, Clone)]
pub struct Options {
    /// The page file's options.
    pub pagefile: pagefile::Options,
    /// Shortest lease time to live granted, in seconds (etcd: 1.5 election timeouts, rounded up;
    /// 2 with its default timings).
    pub min_lease_ttl: i64,
    /// Versions visited per compaction batch, and records per batch when rebuilding the index
    /// (etcd's `--experimental-compaction-batch-limit` defaults to 1000).
    pub batch: usize,
    /// The backend quota in bytes (`None`: none) — see [`super::alarm`].
    pub quota_bytes: Option<u64>,
    /// Learners the cluster may have at most (etcd's `--max-learners`; 1).
    pub max_learners: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pagefile: pagefile::Options::default(),
            min_lease_ttl: 2,
            batch: 1000,
            quota_bytes: None,
            max_learners: 1,
        }
    }
}

/// A committed raft entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Its raft index.
    pub index: u64,
    /// Its raft term.
    pub term: u64,
    /// What it asks of the store.
    pub request: Request,
}

/// One entry applied.
#[derive(Debug)]
pub struct Applied {
    /// The entry's raft index.
    pub index: u64,
    /// Its response, or the error etcd would answer with (the store is unchanged by it).
    pub response: Result<Response>,
    /// Its changes as watchers see them, in revision order.
    pub events: Vec<Event>,
}

/// A sync of the store, planned: perform `plan`'s steps, then [`Store::finish_sync`]. Once it has
/// finished, every entry through `applied` is durable in the page file.
#[derive(Debug)]
pub struct Checkpoint {
    /// The page file's operations.
    pub plan: SyncPlan,
    /// The index of the last entry applied when the sync began.
    pub applied: u64,
}

/// A compaction accepted whose physical work is not done.
#[derive(Debug, Clone)]
struct Pending {
    at: i64,
    /// The encoded user key to continue from.
    from: Vec<u8>,
}

/// The MVCC store, owned by the raft core.
pub struct Store {
    writer: Writer,
    revs: Revisions,
    /// Keys alive at the current revision.
    keys: i64,
    /// Versions compactions removed since the store was opened.
    versions_compacted: u64,
    /// The last compaction finished (-1: none).
    finished: i64,
    pending: Option<Pending>,
    applied_index: u64,
    applied_term: u64,
    /// The alarms raised (the `alarm` bucket's, kept in step with it).
    alarms: Vec<AlarmMember>,
    options: Options,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.writer.db().path())
            .field("revs", &self.revs)
            .field("finished", &self.finished)
            .field("applied_index", &self.applied_index)
            .finish()
    }
}

/// A `meta` value written as etcd writes numbers there: 8 bytes, big-endian.
fn meta_number(view: &dyn View, name: &[u8]) -> Result<u64> {
    match bucket(view, META)?.get(name)? {
        Some(b) => Ok(u64::from_be_bytes(
            b.try_into()
                .map_err(|_| corrupt("a meta number is not 8 bytes"))?,
        )),
        None => Ok(0),
    }
}

/// The index and term of the last raft entry the file as `view` shows it has applied (etcd's
/// consistent index and term, in `meta`).
pub fn applied_of(view: &dyn View) -> Result<(u64, u64)> {
    Ok((
        meta_number(view, CONSISTENT_INDEX)?,
        meta_number(view, TERM)?,
    ))
}

impl Store {
    /// Opens (creating if missing) the store at `path`: a page file that etcd can read as its own
    /// data file, and can be one etcd wrote (keelson's index is then built once, and logged).
    pub fn open(path: impl AsRef<Path>, options: Options) -> Result<Store> {
        let (db, mut writer) = Db::open(path, options.pagefile.clone())?;
        let mut txn = writer.begin()?;
        for name in ETCD_BUCKETS.iter().chain(&KEELSON_BUCKETS) {
            txn.create_bucket_if_missing(name)?;
        }
        txn.publish()?;
        let view = db.begin_read()?;
        let finished = meta_revision(&view, FINISHED_COMPACT)?;
        // A compaction is never scheduled past the revision of its time: the store's revision is
        // at least that, even when compaction has removed every record up to it.
        let scheduled = meta_revision(&view, SCHEDULED_COMPACT)?;
        let current = if rebuild::is_current(&view, finished)? {
            revisions(&view)?.current
        } else {
            let has_history = bucket(&view, KEY)?.cursor().first()?.is_some();
            drop(view);
            let started = std::time::Instant::now();
            if has_history {
                tracing::info!(path = %db.path().display(), "keelson's index is missing or stale: building it from the key bucket");
            }
            let rebuilt = rebuild::rebuild(&mut writer, options.batch)?;
            let current = rebuilt.newest.max(finished).max(scheduled).max(1);
            let mut txn = writer.begin()?;
            let mut state = txn.bucket(STATE)?;
            state.put(STATE_FORMAT, &FORMAT.to_le_bytes())?;
            state.put(STATE_COMPACTED, &finished.to_le_bytes())?;
            state.put(STATE_REVISION, &current.to_le_bytes())?;
            txn.publish()?;
            writer.sync()?;
            if has_history {
                tracing::info!(records = rebuilt.records, revision = current, elapsed = ?started.elapsed(), "keelson's index is built");
            }
            current
        };
        let view = db.begin_read()?;
        let keys = match bucket(&view, STATE)?.get(STATE_KEYS)? {
            Some(b) => decode_i64(b)?,
            // A file from before keelson kept the count, or etcd's: counted once.
            None => live(&view, b"", End::Unbounded, current, 0)?.1 as i64,
        };
        let (applied_index, applied_term) = applied_of(&view)?;
        let pending = (scheduled > finished).then(|| Pending {
            at: scheduled,
            from: Vec::new(),
        });
        Ok(Store {
            revs: Revisions {
                current,
                compacted: scheduled.max(finished),
            },
            finished,
            keys,
            versions_compacted: 0,
            pending,
            applied_index,
            applied_term,
            alarms: alarm::alarms(&view)?,
            writer,
            options,
        })
    }

    /// Makes the store a new raft log's start: applied through `index` at `term` (what restoring
    /// a snapshot into a new cluster does), durably.
    pub fn restart_log_at(&mut self, index: u64, term: u64) -> Result<()> {
        let mut txn = self.writer.begin()?;
        let mut meta = txn.bucket(META)?;
        meta.put(CONSISTENT_INDEX, &index.to_be_bytes())?;
        meta.put(TERM, &term.to_be_bytes())?;
        txn.publish()?;
        self.writer.sync()?;
        (self.applied_index, self.applied_term) = (index, term);
        Ok(())
    }

    /// Makes `new` the cluster's members, durably: always (`replace`: a restored snapshot's new
    /// cluster), or only if the store has none (a new cluster's first start — a data dir that has
    /// members keeps them, as they changed through raft since). Every member of a new cluster
    /// writes the same members, from the same flags.
    pub fn set_members(&mut self, new: &[members::Member], replace: bool) -> Result<()> {
        if !replace && !members::members(&self.db().begin_read()?)?.is_empty() {
            return Ok(());
        }
        let mut txn = self.writer.begin()?;
        members::replace(&mut txn, new)?;
        txn.publish()?;
        self.writer.sync()?;
        Ok(())
    }

    /// The reader handle: read transactions on any core see what has been applied.
    pub fn db(&self) -> &Db {
        self.writer.db()
    }

    /// The current and compacted revisions.
    pub fn revisions(&self) -> Revisions {
        self.revs
    }

    /// The options it was opened with.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The alarms raised.
    pub fn alarms(&self) -> &[AlarmMember] {
        &self.alarms
    }

    /// The index and term of the last entry applied (0, 0 before any).
    pub fn applied(&self) -> (u64, u64) {
        (self.applied_index, self.applied_term)
    }

    /// Bytes of the page file's published tree (etcd's backend size, which the quota counts).
    pub fn size(&self) -> u64 {
        self.writer.size()
    }

    /// Bytes of the page file's pages free for reuse now (etcd's free page count × page size).
    pub fn free_bytes(&self) -> u64 {
        self.writer.free_pages().0 * self.writer.db().page_size() as u64
    }

    /// Versions compactions removed since the store was opened (etcd's
    /// `db_compaction_keys_total`).
    pub fn versions_compacted(&self) -> u64 {
        self.versions_compacted
    }

    /// How many keys are alive at the current revision.
    pub fn keys(&self) -> i64 {
        self.keys
    }

    /// The revision through which compaction has physically finished (-1: none yet).
    pub fn compacted_through(&self) -> i64 {
        self.finished
    }

    /// Applies committed entries, in order, in one write transaction published at the end (durable
    /// at the next [`Store::sync`]; the WAL holds them until then). Entries at or below the applied
    /// index are skipped. An `Err` is a storage failure: nothing of the batch is applied. Writes
    /// through the page file's own file layer, blocking; [`Store::apply_via`] takes a publisher.
    pub fn apply(&mut self, entries: &[Entry]) -> Result<Vec<Applied>> {
        futures_lite::future::block_on(self.apply_via(entries, &Blocking))
    }

    /// [`Store::apply`], its transaction published by `publisher` (on io_uring, say).
    pub async fn apply_via(
        &mut self,
        entries: &[Entry],
        publisher: &impl Publisher,
    ) -> Result<Vec<Applied>> {
        let mut revs = self.revs;
        let mut keys = self.keys;
        let (mut index, mut term) = (self.applied_index, self.applied_term);
        let mut scheduled = None;
        let mut out = Vec::new();
        // The size the quota counts, as of the last batch (etcd's: as of its last commit).
        let size = self.writer.size();
        let mut txn = self.writer.begin()?;
        for entry in entries {
            if entry.index <= index {
                continue;
            }
            let mut w = Writes::new(&mut txn, revs.current);
            let response = match alarm::refusal(&self.alarms, &entry.request) {
                Some(refused) => Err(refused),
                None => match &entry.request {
                    Request::Put(p) => ops::put(&mut w, p, Checked::No).map(Response::Put),
                    Request::DeleteRange(d) => {
                        ops::delete_range(&mut w, d).map(Response::DeleteRange)
                    }
                    Request::Txn(t) => txn::apply(&mut w, t, revs.compacted).map(Response::Txn),
                    Request::Compaction(c) => {
                        compact::schedule(w.txn, c, revs).map(Response::Compaction)
                    }
                    Request::LeaseGrant(g) => lease::grant(&mut w, g, self.options.min_lease_ttl)
                        .map(Response::LeaseGrant),
                    Request::LeaseRevoke(r) => lease::revoke(&mut w, r).map(Response::LeaseRevoke),
                    Request::LeaseCheckpoint(c) => {
                        lease::checkpoint(&mut w, c).map(Response::LeaseCheckpoint)
                    }
                    Request::Alarm(a) => alarm::apply(w.txn, a).map(Response::Alarm),
                    Request::Members(c) => {
                        members::apply(w.txn, c, self.options.max_learners).map(Response::Members)
                    }
                    Request::Nothing => Ok(Response::Nothing),
                },
            };
            let response = match response {
                Err(e) if e.is_storage() => return Err(e),
                // Applied, but beyond the quota: etcd says so (and the member raises NOSPACE).
                Ok(_) if alarm::over_quota(size, &entry.request, self.options.quota_bytes) => {
                    Err(MvccError::NoSpace)
                }
                answered => answered,
            };
            if let (Request::Alarm(_), Ok(_)) = (&entry.request, &response) {
                self.alarms = alarm::alarms(&*w.txn)?;
            }
            if w.changes > 0 {
                revs.current = w.main;
            }
            for event in &w.events {
                match (event.r#type, &event.kv) {
                    (0, Some(kv)) if kv.version == 1 => keys += 1,
                    (1, _) => keys -= 1,
                    _ => {}
                }
            }
            if let (Request::Compaction(c), Ok(_)) = (&entry.request, &response) {
                revs.compacted = c.revision;
                scheduled = Some(c.revision);
            }
            (index, term) = (entry.index, entry.term);
            out.push(Applied {
                index: entry.index,
                response,
                events: w.events,
            });
        }
        if out.is_empty() {
            return Ok(out);
        }
        let mut meta = txn.bucket(META)?;
        meta.put(CONSISTENT_INDEX, &index.to_be_bytes())?;
        meta.put(TERM, &term.to_be_bytes())?;
        let mut state = txn.bucket(STATE)?;
        state.put(STATE_REVISION, &revs.current.to_le_bytes())?;
        state.put(STATE_KEYS, &keys.to_le_bytes())?;
        publisher.publish(txn.stage()?).await?;
        self.revs = revs;
        self.keys = keys;
        (self.applied_index, self.applied_term) = (index, term);
        if let Some(at) = scheduled {
            // A later compaction subsumes an unfinished earlier one: start over at the later one.
            self.pending = Some(Pending {
                at,
                from: Vec::new(),
            });
        }
        Ok(out)
    }

    /// Does one batch of the pending compaction's physical work, if any. Returns whether work
    /// remains. Blocking; [`Store::compact_step_via`] takes a publisher.
    pub fn compact_step(&mut self) -> Result<bool> {
        futures_lite::future::block_on(self.compact_step_via(&Blocking))
    }

    /// [`Store::compact_step`], its transaction published by `publisher`.
    pub async fn compact_step_via(&mut self, publisher: &impl Publisher) -> Result<bool> {
        let Some(pending) = &self.pending else {
            return Ok(false);
        };
        let mut txn = self.writer.begin()?;
        let (next, removed) =
            compact::step(&mut txn, pending.at, &pending.from, self.options.batch)?;
        publisher.publish(txn.stage()?).await?;
        self.versions_compacted += removed as u64;
        match next {
            Some(from) => {
                self.pending = Some(Pending {
                    at: pending.at,
                    from,
                });
                Ok(true)
            }
            None => {
                self.finished = pending.at;
                self.pending = None;
                Ok(false)
            }
        }
    }

    /// Whether a compaction has physical work left ([`Store::compact_step`]).
    pub fn compaction_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Whether everything applied (and compacted) is durable.
    pub fn is_synced(&self) -> bool {
        self.writer.is_synced()
    }

    /// Makes everything applied durable, blocking.
    pub fn sync(&mut self) -> Result<()> {
        Ok(self.writer.sync()?)
    }

    /// Plans making everything applied so far durable (see [`pagefile::Writer::begin_sync`]):
    /// `None` if it is. Entries may go on being applied while the plan's steps are performed;
    /// report their outcome to [`Store::finish_sync`].
    pub fn begin_sync(&mut self) -> Result<Option<Checkpoint>> {
        let applied = self.applied_index;
        Ok(self
            .writer
            .begin_sync()?
            .map(|plan| Checkpoint { plan, applied }))
    }

    /// Ends the sync [`Store::begin_sync`] planned; a failure stops the store's writer.
    pub fn finish_sync(&mut self, outcome: pagefile::Result<()>) -> Result<()> {
        Ok(self.writer.finish_sync(outcome)?)
    }
}
