//! The raft core: owns the raft-rs `RawNode`, the WAL, and the store (the only writer of the page
//! file). Each turn it drains every queued proposal and read-index request from every serving core,
//! handles one `Ready` — its entries and hard state go to the WAL in one write and one fdatasync
//! (group commit) — applies what is committed in one page-file transaction, and answers each waiting
//! core in one batch. Every [`SYNC_INTERVAL`] it syncs the page file (recording the consistent
//! index) on the blocking pool and releases the WAL behind it; a restart replays the WAL from there.
//!
//! Invariants: a request is answered only after its entry is durable in the WAL and applied; a read
//! batch is released only once the applied index reaches the commit index raft confirmed for it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use glommio::channels::local_channel::LocalReceiver;
use glommio::channels::shared_channel::ConnectedSender;
use glommio::executor;
use keelson_engine::mvcc::{self, Store};
use keelson_engine::wal::{self, Record, Wal};
use raft::eraftpb::{Entry, HardState};
use raft::{RawNode, StateRole};

use super::entry;
use super::log::RaftLog;
use crate::link::{FromRaft, Published, ToRaft, Token};
use crate::status;

/// How often the page file is synced (etcd's backend commit interval).
pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// The raft core's inbox: what serving cores sent, gathered by their receiver tasks.
#[derive(Debug, Default)]
pub struct Inbox {
    /// Requests not yet handled, in arrival order.
    pub queue: RefCell<Vec<ToRaft>>,
    /// Raft ticks due.
    pub ticks: Cell<u32>,
    /// Set when the member is stopping: the loop ends after its turn.
    pub stop: Cell<bool>,
}

/// The waiters of one read-index request.
type ReadBatch = Vec<(usize, Token)>;

/// The raft core.
pub struct RaftCore {
    node: RawNode<RaftLog>,
    wal: Wal,
    /// `None` only while a sync runs on the blocking pool.
    store: Option<Store>,
    published: Arc<Published>,
    inbox: Rc<Inbox>,
    /// One sender per serving core.
    cores: Vec<ConnectedSender<Vec<FromRaft>>>,
    /// Replies gathered this turn, per serving core.
    replies: Vec<Vec<FromRaft>>,
    /// Proposals in flight, by request id.
    proposed: HashMap<u64, (usize, Token)>,
    /// Read-index requests in flight, by context.
    reads_asked: HashMap<u64, ReadBatch>,
    /// Read batches confirmed, waiting for the applied index to reach theirs.
    reads_confirmed: Vec<(u64, ReadBatch)>,
    /// Read requests held until the leader has committed an entry of its term (raft-rs drops
    /// read-index requests before that).
    reads_held: ReadBatch,
    next_read: u64,
    last_sync: Instant,
    /// Answers to physical compactions, sent when no compaction work is left.
    after_compaction: Vec<(usize, FromRaft)>,
    /// The inbox's queue of the last turn, kept for its allocation.
    drained: Vec<ToRaft>,
}

impl RaftCore {
    /// A raft core over an opened log, WAL and store.
    pub fn new(
        node: RawNode<RaftLog>,
        wal: Wal,
        store: Store,
        published: Arc<Published>,
        inbox: Rc<Inbox>,
        cores: Vec<ConnectedSender<Vec<FromRaft>>>,
    ) -> RaftCore {
        let replies = cores.iter().map(|_| Vec::new()).collect();
        RaftCore {
            node,
            wal,
            store: Some(store),
            published,
            inbox,
            cores,
            replies,
            proposed: HashMap::new(),
            reads_asked: HashMap::new(),
            reads_confirmed: Vec::new(),
            reads_held: Vec::new(),
            next_read: 1,
            last_sync: Instant::now(),
            after_compaction: Vec::new(),
            drained: Vec::new(),
        }
    }

    fn store(&mut self) -> &mut Store {
        self.store
            .as_mut()
            .expect("the store is back from the blocking pool between turns")
    }

    /// Runs turns until the inbox says stop, then syncs the page file and closes the WAL. `kick`
    /// wakes it when the inbox has something.
    pub async fn run(mut self, kick: LocalReceiver<()>) -> Result<(), RaftCoreError> {
        if self.node.raft.prs().conf().voters().ids().len() == 1 {
            // The only voter need not wait out an election timeout.
            self.node.campaign()?;
        }
        loop {
            self.turn().await?;
            if self.inbox.stop.get() {
                break;
            }
            if self.store().compaction_pending() {
                // Let the serving tasks on this executor in between compaction batches.
                glommio::yield_if_needed().await;
                continue;
            }
            if self.inbox.queue.borrow().is_empty()
                && self.inbox.ticks.get() == 0
                && !self.node.has_ready()
            {
                let _ = kick.recv().await;
            }
        }
        self.sync().await?;
        self.wal.close().await;
        Ok(())
    }

    async fn turn(&mut self) -> Result<(), RaftCoreError> {
        for _ in 0..self.inbox.ticks.replace(0) {
            self.node.tick();
        }
        let mut queued = std::mem::take(&mut self.drained);
        std::mem::swap(&mut *self.inbox.queue.borrow_mut(), &mut queued);
        let mut reads = std::mem::take(&mut self.reads_held);
        for request in queued.drain(..) {
            match request {
                ToRaft::Propose {
                    core,
                    token,
                    id,
                    data,
                } => match self.node.propose(Vec::new(), data) {
                    Ok(()) => {
                        self.proposed.insert(id, (core, token));
                    }
                    Err(_) => {
                        self.published
                            .metrics
                            .proposals_failed
                            .fetch_add(1, Ordering::Relaxed);
                        self.replies[core].push(FromRaft::Applied {
                            token,
                            outcome: Err(status::no_leader()),
                        });
                    }
                },
                ToRaft::ReadIndex { core, token } => reads.push((core, token)),
            }
        }
        self.drained = queued;
        self.ask_read_index(reads);
        if self.node.has_ready() {
            self.handle_ready().await?;
        }
        self.release_reads();
        self.publish_state();
        self.send_replies().await;
        if self.last_sync.elapsed() >= SYNC_INTERVAL {
            self.sync().await?;
        }
        if self.store().compaction_pending() {
            self.store().compact_step()?;
        }
        if !self.store().compaction_pending() && !self.after_compaction.is_empty() {
            for (core, answer) in std::mem::take(&mut self.after_compaction) {
                self.replies[core].push(answer);
            }
            self.send_replies().await;
        }
        Ok(())
    }

    fn ask_read_index(&mut self, reads: ReadBatch) {
        if reads.is_empty() {
            return;
        }
        let raft = &self.node.raft;
        if raft.state != StateRole::Leader || !raft.commit_to_current_term() {
            if raft.leader_id == raft::INVALID_ID && raft.state != StateRole::Candidate {
                for (core, token) in reads {
                    self.replies[core].push(FromRaft::ReadReady {
                        token,
                        result: Err(status::no_leader()),
                    });
                }
            } else {
                self.reads_held = reads;
            }
            return;
        }
        let ctx = self.next_read;
        self.next_read += 1;
        self.node.read_index(ctx.to_be_bytes().to_vec());
        self.reads_asked.insert(ctx, reads);
    }

    async fn handle_ready(&mut self) -> Result<(), RaftCoreError> {
        let mut ready = self.node.ready();
        // Messages to peers come with the cluster; one member has none.
        let _ = ready.take_messages();
        for state in ready.take_read_states() {
            let mut ctx = [0u8; 8];
            if state.request_ctx.len() == 8 {
                ctx.copy_from_slice(&state.request_ctx);
            }
            if let Some(batch) = self.reads_asked.remove(&u64::from_be_bytes(ctx)) {
                self.reads_confirmed.push((state.index, batch));
            }
        }
        self.apply(ready.take_committed_entries())?;
        let hard_state = ready.hs().cloned();
        self.persist(ready.take_entries(), hard_state).await?;
        let _ = ready.take_persisted_messages();
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.node.mut_store().set_commit(commit);
        }
        let _ = light.take_messages();
        self.apply(light.take_committed_entries())?;
        self.node.advance_apply();
        Ok(())
    }

    /// Writes entries and the hard state to the WAL (one write, one fdatasync) and then to the
    /// in-memory log.
    async fn persist(
        &mut self,
        entries: Vec<Entry>,
        hard_state: Option<HardState>,
    ) -> Result<(), RaftCoreError> {
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        let mut records: Vec<Record<'_>> = entries.iter().map(entry::to_wal).collect();
        if let Some(hs) = &hard_state {
            records.push(Record::HardState(wal::HardState {
                term: hs.term,
                vote: hs.vote,
                commit: hs.commit,
            }));
        }
        let started = Instant::now();
        self.wal.append_durably(&records).await?;
        drop(records);
        self.published.metrics.wal_fsync.observe(started.elapsed());
        let log = self.node.mut_store();
        log.append(entries);
        if let Some(hs) = hard_state {
            log.set_hard_state(hs);
        }
        Ok(())
    }

    fn apply(&mut self, committed: Vec<Entry>) -> Result<(), RaftCoreError> {
        if committed.is_empty() {
            return Ok(());
        }
        // Committed entries are contiguous: an applied index finds its entry by offset.
        let first = committed[0].index;
        let (batch, ids): (Vec<mvcc::Entry>, Vec<Option<u64>>) =
            committed.iter().map(entry::committed).unzip();
        for result in self.store().apply(&batch)? {
            let at = (result.index - first) as usize;
            let Some(waiter) = ids[at].and_then(|id| self.proposed.remove(&id)) else {
                continue;
            };
            let (core, token) = waiter;
            let answer = FromRaft::Applied {
                token,
                outcome: result.response.map_err(|e| status::of_mvcc(&e)),
            };
            if matches!(&batch[at].request, mvcc::Request::Compaction(c) if c.physical) {
                // A physical compaction is answered once its work is done.
                self.after_compaction.push((core, answer));
            } else {
                self.replies[core].push(answer);
            }
        }
        let (index, _) = self.store().applied();
        Published::set(&self.published.applied, index);
        Ok(())
    }

    fn release_reads(&mut self) {
        let applied = Published::get(&self.published.applied);
        let replies = &mut self.replies;
        self.reads_confirmed.retain(|(index, batch)| {
            if *index > applied {
                return true;
            }
            for &(core, token) in batch {
                replies[core].push(FromRaft::ReadReady {
                    token,
                    result: Ok(()),
                });
            }
            false
        });
    }

    fn publish_state(&self) {
        let raft = &self.node.raft;
        let metrics = &self.published.metrics;
        if Published::get(&self.published.leader) != raft.leader_id && raft.leader_id != 0 {
            metrics.leader_changes.fetch_add(1, Ordering::Relaxed);
        }
        metrics
            .proposals_pending
            .store(self.proposed.len() as u64, Ordering::Relaxed);
        Published::set(&self.published.term, raft.term);
        Published::set(&self.published.leader, raft.leader_id);
        Published::set(&self.published.committed, raft.raft_log.committed);
        if raft.state == StateRole::Leader && raft.commit_to_current_term() {
            self.published.ready.store(true, Ordering::Release);
        }
    }

    async fn send_replies(&mut self) {
        for (core, replies) in self.replies.iter_mut().enumerate() {
            if replies.is_empty() {
                continue;
            }
            let batch = std::mem::take(replies);
            // A serving core that stopped (shutdown) has nobody left to answer.
            let _ = self.cores[core].send(batch).await;
        }
    }

    /// Makes the page file durable through the last applied entry, then releases the WAL and the
    /// in-memory log behind it.
    async fn sync(&mut self) -> Result<(), RaftCoreError> {
        self.last_sync = Instant::now();
        let started = self.last_sync;
        if self.store().is_synced() {
            return Ok(());
        }
        let mut store = self.store.take().expect("one sync at a time");
        let (store, result) = executor()
            .spawn_blocking(move || {
                let result = store.sync();
                (store, result)
            })
            .await;
        self.store = Some(store);
        result?;
        self.published
            .metrics
            .backend_commit
            .observe(started.elapsed());
        let (applied, _) = self.store().applied();
        self.wal.release_before(applied + 1).await?;
        self.node.mut_store().trim_through(applied);
        Ok(())
    }
}

/// Why the raft core stopped. Any of these is fail-stop: the member stops acknowledging writes.
#[derive(Debug, thiserror::Error)]
pub enum RaftCoreError {
    /// The WAL failed (it has stopped itself).
    #[error("wal: {0}")]
    Wal(#[from] wal::WalError),
    /// The page file failed.
    #[error("store: {0}")]
    Store(#[from] mvcc::MvccError),
    /// raft-rs refused an operation it should not.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
}
