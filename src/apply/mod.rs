//! The apply layer, between raft and the store: a committed raft entry becomes a store request
//! (etcd's `InternalRaftRequest` decoded), the store applies a batch of them in one page-file
//! transaction — its pages written on io_uring — and each proposed entry's result becomes an
//! [`Answer`] for the raft core to route. It also owns what the store needs between turns: a
//! compaction's physical work, a batch at a time, with physical compactions answered only once it
//! is done; and the page-file sync on its [`SyncSchedule`] (etcd's backend commit: every 100 ms or
//! 10 000 entries, `--backend-batch-interval` and `--backend-batch-limit`), which runs in a task of
//! its own *beside* the raft core's turns — entries go on being applied and
//! answered while its fdatasyncs run — and reports the index it made durable when it finishes.
//!
//! It tells the raft core's lessor what each batch did to leases (grants, revokes, checkpoints),
//! and asks the raft core to raise the NOSPACE alarm (etcd: each member raises its own) when a
//! write went past the quota and the alarm is not raised yet. Membership changes and auth join
//! here as they land, so none of them grows the raft core's turn.
//!
//! Runs on: the raft core.

pub mod defrag;
pub mod members;

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use glommio::task::JoinHandle;
use keelson_engine::mvcc::members::Member;
use keelson_engine::mvcc::{self, Store, alarm};
use keelson_engine::pagefile::{self, Publisher, ReadTxn, Staged, UringFile};
use keelson_proto::etcdserverpb::{AlarmMember, AlarmType};
use keelson_proto::etcdserverpb::{InternalRaftRequest, Request as V2Request};
use keelson_proto::raftpb::ConfChange;
use prost::Message;
use raft::eraftpb::{Entry, EntryType};

use crate::config::SyncSchedule;
use crate::metrics::latency::{Stage, Stages};
use crate::raft::lessor::LeaseChange;
use crate::raft::seams::{Answer, AppliedBatch, Defragmented, Installed, Maintained, StateMachine};
use crate::raft::turn::RaftCoreError;
use crate::runtime::faults;
use crate::runtime::link::{Changes, Published, Refusal};
use defrag::Defrag;

/// A committed entry as the store applies it, and the id of the proposal it carries (0: none).
/// A configuration change is a change to the members. Entries with nothing for the store (raft's
/// empty entries, kinds keelson does not apply) are applied as [`mvcc::Request::Nothing`]: only
/// their index counts.
pub fn decode(entry: &Entry) -> (mvcc::Entry, u64) {
    let (request, id) = if entry.get_entry_type() == EntryType::EntryConfChange {
        let change = ConfChange::decode(&entry.data[..])
            .ok()
            .and_then(|cc| members::from_conf_change(&cc));
        match change {
            Some((change, id)) => (mvcc::Request::Members(change), id),
            None => {
                tracing::error!(
                    index = entry.index,
                    "a committed configuration change is not etcd's; applied as empty"
                );
                (mvcc::Request::Nothing, 0)
            }
        }
    } else if entry.get_entry_type() == EntryType::EntryNormal && !entry.data.is_empty() {
        match InternalRaftRequest::decode(&entry.data[..]) {
            Ok(internal) => mvcc::Request::from_internal(internal),
            // etcd 3.4 proposes some requests to its v2 store: a member publishing its
            // attributes is one keelson applies (to the members bucket); the rest change
            // nothing keelson keeps.
            Err(e) => match V2Request::decode(&entry.data[..]) {
                Ok(v2) if v2.method.is_some() => match members::from_v2(&v2) {
                    Some(change) => (mvcc::Request::Members(change), v2.id.unwrap_or(0)),
                    None => {
                        tracing::debug!(
                            index = entry.index,
                            "an etcd v2 request: nothing to apply"
                        );
                        (mvcc::Request::Nothing, 0)
                    }
                },
                _ => {
                    tracing::error!(
                        index = entry.index,
                        "a committed entry is not an InternalRaftRequest ({e}); applied as empty"
                    );
                    (mvcc::Request::Nothing, 0)
                }
            },
        }
    } else {
        (mvcc::Request::Nothing, 0)
    };
    let entry = mvcc::Entry {
        index: entry.index,
        term: entry.term,
        request,
    };
    (entry, id)
}

/// What an applied request did to leases, for the lessor (nothing, if the store refused it).
fn lease_changes(
    request: &mvcc::Request,
    response: &mvcc::Result<mvcc::Response>,
    into: &mut Vec<LeaseChange>,
) {
    match (request, response) {
        (_, Ok(mvcc::Response::LeaseGrant(granted))) => into.push(LeaseChange::Granted {
            id: granted.id,
            ttl: granted.ttl,
        }),
        (mvcc::Request::LeaseRevoke(r), Ok(_)) => into.push(LeaseChange::Revoked(r.id)),
        (mvcc::Request::LeaseCheckpoint(c), Ok(_)) => {
            into.extend(c.checkpoints.iter().map(|c| LeaseChange::Checkpointed {
                id: c.id,
                remaining: c.remaining_ttl,
            }));
        }
        _ => {}
    }
}

/// Publishes through the page file's io_uring, timing each publish (the `publish` stage).
struct Timed<'a> {
    file: &'a UringFile,
    stages: &'a Stages,
}

impl Publisher for Timed<'_> {
    async fn publish(&self, staged: Staged<'_>) -> pagefile::Result<()> {
        let started = Instant::now();
        let published = self.file.publish(staged).await;
        self.stages.observe(Stage::Publish, started.elapsed());
        published
    }
}

/// A page-file sync whose I/O runs in a task of its own.
struct Syncing {
    task: JoinHandle<()>,
    /// Set by the task when the I/O is done.
    outcome: Rc<Cell<Option<pagefile::Result<()>>>>,
    /// Every entry through this index is durable once it finishes.
    applied: u64,
    started: Instant,
}

/// The apply layer over the MVCC store.
pub struct Applier {
    store: Store,
    /// This member, as the alarms it raises name it.
    member_id: u64,
    file: UringFile,
    published: Arc<Published>,
    /// Wakes the raft core (a sync finished).
    wake: Rc<dyn Fn()>,
    syncing: Option<Syncing>,
    schedule: SyncSchedule,
    /// When the last sync started, and the index applied then.
    last_sync: (Instant, u64),
    /// Answers to physical compactions, due when no compaction work is left.
    after_compaction: Vec<Answer>,
    /// A defragmentation in progress.
    defrag: Option<Defrag>,
    /// When the compaction under way began its physical work.
    compaction_began: Option<Instant>,
    /// Why a defragmentation was given up outside [`Applier::defrag_step`] (a snapshot replaced
    /// the file), until the next maintenance reports it.
    abandoned: Option<String>,
}

impl Applier {
    /// The apply layer of member `member_id` over `store`, writing through `file` and syncing it
    /// on `schedule`; `wake` makes the raft core take a turn.
    pub fn new(
        store: Store,
        member_id: u64,
        file: UringFile,
        schedule: SyncSchedule,
        published: Arc<Published>,
        wake: Rc<dyn Fn()>,
    ) -> Applier {
        let last_sync = (Instant::now(), store.applied().0);
        let applier = Applier {
            store,
            member_id,
            file,
            published,
            wake,
            syncing: None,
            schedule,
            last_sync,
            after_compaction: Vec::new(),
            defrag: None,
            compaction_began: None,
            abandoned: None,
        };
        applier.publish_space();
        applier
    }

    /// Finishes the sync in flight if its I/O is done; returns the index it made durable.
    fn finish_sync(&mut self) -> Result<Option<u64>, RaftCoreError> {
        let Some(outcome) = self.syncing.as_ref().and_then(|s| s.outcome.take()) else {
            return Ok(None);
        };
        let done = self
            .syncing
            .take()
            .expect("a sync with an outcome is in flight");
        self.store.finish_sync(outcome)?;
        let metrics = &self.published.metrics;
        let took = done.started.elapsed();
        metrics.backend_commit.observe(took);
        metrics.stages.observe(Stage::PageSync, took);
        Ok(Some(done.applied))
    }

    /// Starts a sync, its I/O in a task of its own, if one is due.
    fn start_sync(&mut self) -> Result<(), RaftCoreError> {
        let (started, applied) = self.last_sync;
        let due = started.elapsed() >= self.schedule.interval
            || self.store.applied().0.saturating_sub(applied) >= self.schedule.limit;
        if self.syncing.is_some() || !due {
            return Ok(());
        }
        self.last_sync = (Instant::now(), self.store.applied().0);
        let Some(checkpoint) = self.store.begin_sync()? else {
            return Ok(());
        };
        let outcome = Rc::new(Cell::new(None));
        let task = {
            let (file, outcome, wake) = (self.file.clone(), outcome.clone(), self.wake.clone());
            glommio::spawn_local(async move {
                outcome.set(Some(file.run(checkpoint.plan).await));
                wake();
            })
            .detach()
        };
        self.syncing = Some(Syncing {
            task,
            outcome,
            applied: checkpoint.applied,
            started: self.last_sync.0,
        });
        Ok(())
    }

    /// Logs the alarms a batch raised and cleared (etcd's lines), and returns the NOSPACE alarm
    /// to propose if a write went `past_quota` and it is not raised.
    fn alarms_changed(&self, before: &[AlarmMember], past_quota: bool) -> Vec<mvcc::Request> {
        let now = self.store.alarms();
        let name =
            |a: &AlarmMember| AlarmType::try_from(a.alarm).map_or("unknown", |t| t.as_str_name());
        for raised in now.iter().filter(|a| !before.contains(a)) {
            tracing::warn!(alarm = name(raised), from = %format!("{:x}", raised.member_id), "alarm raised");
        }
        for cleared in before.iter().filter(|a| !now.contains(a)) {
            tracing::info!(alarm = name(cleared), from = %format!("{:x}", cleared.member_id), "alarm disarmed");
        }
        if !past_quota || alarm::is_raised(now, AlarmType::Nospace) {
            return Vec::new();
        }
        tracing::warn!("message exceeded backend quota; raising alarm");
        vec![alarm::raise_nospace(self.member_id)]
    }

    /// Publishes the page file's size and free space (for Status and the quota at the edge) and
    /// the store's gauges.
    fn publish_space(&self) {
        let store = &self.store;
        self.published.set_space(store.size(), store.free_bytes());
        let metrics = &self.published.metrics;
        let revisions = store.revisions();
        metrics
            .current_revision
            .store(revisions.current, Ordering::Relaxed);
        metrics
            .compact_revision
            .store(revisions.compacted, Ordering::Relaxed);
        metrics.keys.store(store.keys(), Ordering::Relaxed);
    }

    /// Moves a defragmentation on; once it has caught up and no sync of the old file is in
    /// flight, puts the new file in place of the old one. Its end, if it ended.
    async fn defrag_step(&mut self) -> Option<Defragmented> {
        let defrag = self.defrag.as_mut()?;
        let stepped = defrag.step(self.store.applied().0).await;
        let moved = match stepped {
            Ok(None) => return None,
            Ok(Some((store, file))) => {
                if let Some(syncing) = &mut self.syncing {
                    // The old file's sync ends first: its outcome is the old file's business.
                    (&mut syncing.task).await;
                }
                let path = self.store.db().path().to_path_buf();
                defrag.finish(&path, store, file).await
            }
            Err(why) => Err(why),
        };
        let defrag = self.defrag.take()?;
        let metrics = &self.published.metrics;
        metrics.defrag_inflight.store(0, Ordering::Relaxed);
        metrics.defrag.observe(defrag.took());
        match moved {
            Ok((store, file)) => {
                self.syncing = None;
                self.store = store;
                self.file = file;
                self.last_sync = (Instant::now(), self.store.applied().0);
                Some(Defragmented::Rewritten(Some(self.store.db().clone())))
            }
            Err(why) => {
                defrag.abandon(&why).await;
                Some(Defragmented::Failed(why))
            }
        }
    }
}

impl StateMachine for Applier {
    /// A read transaction: the page file as applied when it began.
    type Snapshot = ReadTxn;

    fn applied(&self) -> (u64, u64) {
        self.store.applied()
    }

    fn snapshot(&self) -> Result<ReadTxn, RaftCoreError> {
        Ok(self
            .store
            .db()
            .begin_read()
            .map_err(mvcc::MvccError::from)?)
    }

    /// The received file is renamed over the page file (the directory synced) and opened as the
    /// store; a sync of the old file in flight ends first, and a defragmentation of it is given up.
    async fn install(&mut self, file: &Path) -> Result<Installed, RaftCoreError> {
        if let Some(syncing) = self.syncing.take() {
            // The old file's sync: its outcome is the old file's business.
            syncing.task.await;
        }
        if let Some(defrag) = self.defrag.take() {
            let why = "a snapshot from the leader replaced the file".to_string();
            defrag.abandon(&why).await;
            self.published
                .metrics
                .defrag_inflight
                .store(0, Ordering::Relaxed);
            self.abandoned = Some(why);
        }
        let (from, to) = (file.to_path_buf(), self.store.db().path().to_path_buf());
        let options = self.store.options().clone();
        let store = glommio::executor()
            .spawn_blocking(move || -> Result<Store, String> {
                let failed = |e: std::io::Error| format!("{}: put in place: {e}", from.display());
                std::fs::rename(&from, &to).map_err(failed)?;
                let dir = to.parent().unwrap_or(Path::new("."));
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(failed)?;
                Store::open(&to, options).map_err(|e| format!("{}: {e}", to.display()))
            })
            .await
            .map_err(RaftCoreError::Install)?;
        self.file = UringFile::open(store.db())
            .await
            .map_err(mvcc::MvccError::from)?;
        self.store = store;
        self.last_sync = (Instant::now(), self.store.applied().0);
        self.compaction_began = None;
        self.publish_space();
        let view = self
            .store
            .db()
            .begin_read()
            .map_err(mvcc::MvccError::from)?;
        let leases = mvcc::leases(&view)?
            .iter()
            .map(|l| (l.id, l.ttl, l.remaining_ttl))
            .collect();
        Ok(Installed {
            leases,
            db: Some(self.store.db().clone()),
        })
    }

    fn members(&self) -> Result<Vec<Member>, RaftCoreError> {
        Ok(mvcc::members::members(&self.snapshot()?)?)
    }

    fn removed_members(&self) -> Result<Vec<u64>, RaftCoreError> {
        Ok(mvcc::members::removed(&self.snapshot()?)?)
    }

    async fn discard(&mut self, file: &Path) {
        if let Err(e) = glommio::io::remove(file).await {
            tracing::warn!(path = %file.display(), "removing a snapshot not taken: {e}");
        }
    }

    fn revision(&self) -> i64 {
        self.store.revisions().current
    }

    async fn apply(&mut self, committed: Vec<Entry>) -> Result<AppliedBatch, RaftCoreError> {
        let Some(first) = committed.first().map(|e| e.index) else {
            return Ok(AppliedBatch::default());
        };
        let (batch, ids): (Vec<mvcc::Entry>, Vec<u64>) = committed.iter().map(decode).unzip();
        for entry in &batch {
            if let mvcc::Request::Put(put) = &entry.request {
                faults::test_panic_point("raft", &put.key);
                if let Some(stall) = faults::test_stall(&put.key) {
                    glommio::timer::sleep(stall).await;
                }
            }
        }
        let mut answers = Vec::new();
        let mut events = Vec::new();
        let mut leases = Vec::new();
        let mut conf_changes = Vec::new();
        let mut members = None;
        let alarms_before = self.store.alarms().to_vec();
        let mut past_quota = false;
        let publisher = Timed {
            file: &self.file,
            stages: &self.published.metrics.stages,
        };
        for mut applied in self.store.apply_via(&batch, &publisher).await? {
            past_quota |= matches!(applied.response, Err(mvcc::MvccError::NoSpace));
            if events.is_empty() {
                // A DeleteRange of a million keys makes a million events: moved, not copied.
                events = std::mem::take(&mut applied.events);
            } else {
                events.append(&mut applied.events);
            }
            // Committed entries are contiguous: an applied index finds its entry by offset.
            let at = (applied.index - first) as usize;
            lease_changes(&batch[at].request, &applied.response, &mut leases);
            // A configuration change (not a publish of attributes) changes who the members are or
            // where they listen; raft follows all but an update of peer URLs.
            if let (mvcc::Request::Members(change), Ok(mvcc::Response::Members(now))) =
                (&batch[at].request, &applied.response)
                && !matches!(change, mvcc::members::Change::Attributes { .. })
            {
                conf_changes.extend(members::raft_change(change));
                members = Some(now.clone());
            }
            let id = ids[at];
            if id == 0 {
                continue;
            }
            let answer = Answer {
                id,
                outcome: applied.response.map_err(Refusal::Rejected),
            };
            if matches!(&batch[at].request, mvcc::Request::Compaction(c) if c.physical) {
                // A physical compaction is answered once its work is done.
                self.after_compaction.push(answer);
            } else {
                answers.push(answer);
            }
        }
        if let Some(defrag) = &mut self.defrag {
            defrag.applied(&batch);
        }
        self.publish_space();
        let changes = (!events.is_empty()).then(|| Changes {
            revision: self.store.revisions().current,
            events,
        });
        let proposals = self.alarms_changed(&alarms_before, past_quota);
        Ok(AppliedBatch {
            answers,
            changes,
            leases,
            proposals,
            conf_changes,
            members,
        })
    }

    async fn maintain(&mut self) -> Result<Maintained, RaftCoreError> {
        let durable = self.finish_sync()?;
        self.start_sync()?;
        if self.store.compaction_pending() {
            let started = Instant::now();
            let compacted = self.store.versions_compacted();
            self.store.compact_step_via(&self.file).await?;
            let metrics = &self.published.metrics;
            let pause = started.elapsed();
            metrics
                .compaction_pause
                .record(pause.as_secs_f64() * 1000.0);
            let removed = self.store.versions_compacted() - compacted;
            metrics
                .compaction_keys
                .fetch_add(removed, Ordering::Relaxed);
            let began = *self.compaction_began.get_or_insert(started);
            if !self.store.compaction_pending() {
                self.compaction_began = None;
                metrics
                    .compaction_total
                    .record(began.elapsed().as_secs_f64() * 1000.0);
            }
        }
        let defragmented = match self.abandoned.take() {
            Some(why) => Some(Defragmented::Failed(why)),
            None => self.defrag_step().await,
        };
        self.publish_space();
        let answers = if self.store.compaction_pending() {
            Vec::new()
        } else {
            std::mem::take(&mut self.after_compaction)
        };
        Ok(Maintained {
            answers,
            durable,
            defragmented,
        })
    }

    fn busy(&self) -> bool {
        self.store.compaction_pending() || self.defrag.as_ref().is_some_and(Defrag::is_busy)
    }

    fn defragment(&mut self) {
        if self.defrag.is_some() {
            return;
        }
        match self.store.db().begin_read() {
            Ok(read) => {
                let path = self.store.db().path().to_path_buf();
                let options = self.store.options().clone();
                self.defrag = Some(Defrag::start(&path, read, options, self.wake.clone()));
                self.published
                    .metrics
                    .defrag_inflight
                    .store(1, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!("failed to defragment: {e}"),
        }
    }

    async fn close(&mut self) -> Result<(), RaftCoreError> {
        if let Some(syncing) = &mut self.syncing {
            (&mut syncing.task).await;
            self.finish_sync()?;
        }
        if let Some(checkpoint) = self.store.begin_sync()? {
            let outcome = self.file.run(checkpoint.plan).await;
            self.store.finish_sync(outcome)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keelson_proto::etcdserverpb::PutRequest;

    #[test]
    fn a_proposal_comes_back_as_the_request_it_carried() {
        let put = PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        };
        let mut entry = Entry {
            index: 7,
            term: 2,
            data: mvcc::Request::Put(put.clone())
                .into_internal(42)
                .encode_to_vec(),
            ..Entry::default()
        };
        entry.set_entry_type(EntryType::EntryNormal);
        let (applied, id) = decode(&entry);
        assert_eq!(id, 42);
        assert_eq!(applied.request, mvcc::Request::Put(put));
        assert_eq!((applied.index, applied.term), (7, 2));
        entry.set_entry_type(EntryType::EntryConfChange);
        assert_eq!(decode(&entry).0.request, mvcc::Request::Nothing);
    }

    #[test]
    fn an_etcd_v2_publish_in_the_log_changes_the_members_and_other_v2_requests_nothing() {
        let publish = V2Request {
            id: Some(7),
            method: Some("PUT".into()),
            path: Some("/0/members/8e9e05c52164694d/attributes".into()),
            val: Some("{\"name\":\"default\"}".into()),
            ..V2Request::default()
        };
        let mut entry = Entry {
            index: 3,
            term: 2,
            data: publish.encode_to_vec(),
            ..Entry::default()
        };
        entry.set_entry_type(EntryType::EntryNormal);
        let (applied, id) = decode(&entry);
        let published = mvcc::members::Change::Attributes {
            id: 0x8e9e_05c5_2164_694d,
            name: "default".into(),
            client_urls: Vec::new(),
        };
        assert_eq!(
            (applied.request, id),
            (mvcc::Request::Members(published), 7)
        );
        let version = V2Request {
            id: Some(8),
            method: Some("PUT".into()),
            path: Some("/0/version".into()),
            val: Some("3.4.0".into()),
            ..V2Request::default()
        };
        entry.data = version.encode_to_vec();
        let (applied, id) = decode(&entry);
        assert_eq!((applied.request, id), (mvcc::Request::Nothing, 0));
    }
}
