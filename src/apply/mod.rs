//! The apply layer, between raft and the store: a committed raft entry becomes a store request
//! (etcd's `InternalRaftRequest` decoded), the store applies a batch of them in one page-file
//! transaction — its pages written on io_uring — and each proposed entry's result becomes an
//! [`Answer`] for the raft core to route. It also owns what the store needs between turns: a
//! compaction's physical work, a batch at a time, with physical compactions answered only once it
//! is done; and the page-file sync every [`SYNC_INTERVAL`] (etcd's backend commit interval), which
//! runs in a task of its own *beside* the raft core's turns — entries go on being applied and
//! answered while its fdatasyncs run — and reports the index it made durable when it finishes.
//!
//! It tells the raft core's lessor what each batch did to leases (grants, revokes, checkpoints).
//! Membership changes, alarms and auth join here as they land, so none of them grows the raft
//! core's turn.
//!
//! Runs on: the raft core.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::task::JoinHandle;
use keelson_engine::mvcc::{self, Store};
use keelson_engine::pagefile::{self, UringFile};
use keelson_proto::etcdserverpb::{InternalRaftRequest, Request as V2Request};
use prost::Message;
use raft::eraftpb::{Entry, EntryType};

use crate::raft::lessor::LeaseChange;
use crate::raft::seams::{Answer, AppliedBatch, Maintained, StateMachine};
use crate::raft::turn::RaftCoreError;
use crate::runtime::fatal;
use crate::runtime::link::{Changes, Published, Refusal};

/// How often the page file is synced (etcd's backend commit interval).
pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// A committed entry as the store applies it, and the id of the proposal it carries (0: none).
/// Entries with nothing for the store (raft's empty entries, configuration changes, kinds keelson
/// does not apply yet) are applied as [`mvcc::Request::Nothing`]: only their index counts.
pub fn decode(entry: &Entry) -> (mvcc::Entry, u64) {
    let (request, id) =
        if entry.get_entry_type() == EntryType::EntryNormal && !entry.data.is_empty() {
            match InternalRaftRequest::decode(&entry.data[..]) {
                Ok(internal) => mvcc::Request::from_internal(internal),
                // etcd 3.4 proposes some requests to its v2 store (a member publishing its
                // attributes); a log etcd wrote holds them. Nothing in the v3 store changes.
                Err(_) if V2Request::decode(&entry.data[..]).is_ok_and(|r| r.method.is_some()) => {
                    tracing::debug!(index = entry.index, "an etcd v2 request: nothing to apply");
                    (mvcc::Request::Nothing, 0)
                }
                Err(e) => {
                    tracing::error!(
                        index = entry.index,
                        "a committed entry is not an InternalRaftRequest ({e}); applied as empty"
                    );
                    (mvcc::Request::Nothing, 0)
                }
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
    file: UringFile,
    published: Arc<Published>,
    /// Wakes the raft core (a sync finished).
    wake: Rc<dyn Fn()>,
    syncing: Option<Syncing>,
    last_sync: Instant,
    /// Answers to physical compactions, due when no compaction work is left.
    after_compaction: Vec<Answer>,
}

impl Applier {
    /// The apply layer over `store`, writing through `file`; `wake` makes the raft core take a
    /// turn.
    pub fn new(
        store: Store,
        file: UringFile,
        published: Arc<Published>,
        wake: Rc<dyn Fn()>,
    ) -> Applier {
        Applier {
            store,
            file,
            published,
            wake,
            syncing: None,
            last_sync: Instant::now(),
            after_compaction: Vec::new(),
        }
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
        self.published
            .metrics
            .backend_commit
            .observe(done.started.elapsed());
        Ok(Some(done.applied))
    }

    /// Starts a sync, its I/O in a task of its own, if one is due.
    fn start_sync(&mut self) -> Result<(), RaftCoreError> {
        if self.syncing.is_some() || self.last_sync.elapsed() < SYNC_INTERVAL {
            return Ok(());
        }
        self.last_sync = Instant::now();
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
            started: self.last_sync,
        });
        Ok(())
    }
}

impl StateMachine for Applier {
    fn applied(&self) -> (u64, u64) {
        self.store.applied()
    }

    async fn apply(&mut self, committed: Vec<Entry>) -> Result<AppliedBatch, RaftCoreError> {
        let Some(first) = committed.first().map(|e| e.index) else {
            return Ok(AppliedBatch::default());
        };
        let (batch, ids): (Vec<mvcc::Entry>, Vec<u64>) = committed.iter().map(decode).unzip();
        for entry in &batch {
            if let mvcc::Request::Put(put) = &entry.request {
                fatal::test_panic_point("raft", &put.key);
            }
        }
        let mut answers = Vec::new();
        let mut events = Vec::new();
        let mut leases = Vec::new();
        for mut applied in self.store.apply_via(&batch, &self.file).await? {
            events.append(&mut applied.events);
            // Committed entries are contiguous: an applied index finds its entry by offset.
            let at = (applied.index - first) as usize;
            lease_changes(&batch[at].request, &applied.response, &mut leases);
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
        let changes = (!events.is_empty()).then(|| Changes {
            revision: self.store.revisions().current,
            events,
        });
        Ok(AppliedBatch {
            answers,
            changes,
            leases,
        })
    }

    async fn maintain(&mut self) -> Result<Maintained, RaftCoreError> {
        let durable = self.finish_sync()?;
        self.start_sync()?;
        if self.store.compaction_pending() {
            self.store.compact_step_via(&self.file).await?;
        }
        let answers = if self.store.compaction_pending() {
            Vec::new()
        } else {
            std::mem::take(&mut self.after_compaction)
        };
        Ok(Maintained { answers, durable })
    }

    fn busy(&self) -> bool {
        self.store.compaction_pending()
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
    fn an_etcd_v2_request_in_the_log_applies_as_nothing() {
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
        assert_eq!((applied.request, id), (mvcc::Request::Nothing, 0));
    }
}
