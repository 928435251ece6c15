//! The raft core's turn. The core owns the raft-rs `RawNode` and, behind the seams of `seams.rs`,
//! the WAL, the state machine and the transport. Each turn it takes every event that reached it —
//! proposals and read-index requests from every serving core, ticks, messages from other members,
//! the order to stop — and handles one `Ready` in raft-rs's order: messages to followers go out
//! first (in parallel with the WAL's fsync), committed entries are applied, the new entries and
//! hard state go to the WAL in one write and one fdatasync (group commit), and what persisting
//! released is applied too. Then it releases the reads whose index is applied, publishes raft's
//! state for every core, lets the state machine do background work (a page-file sync runs *beside*
//! the turns, never inside one), and leaves the replies for each serving core in one batch. The
//! lessor ([`super::lessor`]) is the core's too: it answers renewals from memory, learns grants and
//! revokes from each applied batch, and its expired leases and checkpoints are proposed each turn.
//!
//! Invariants:
//! - a proposal is answered only after its entry is durable (on a quorum) and applied;
//! - a read batch is released only once the applied index reaches the index raft confirmed for a
//!   read-index request made after the batch arrived (`reads.rs`);
//! - the log (in memory and in the WAL) keeps what the page file does not hold durably yet, and,
//!   in a cluster, `--snapshot-catchup-entries` more and whatever a follower still needs (up to
//!   `--snapshot-count` entries behind); a follower further behind is sent the page file as a
//!   snapshot, read at the applied index its message names;
//! - a follower installs a snapshot's file before its log restarts after it (in the WAL too), and
//!   only the file received for the very message raft took.
//!
//! Runs on: the raft core (any executor — the simulated cluster drives it with no glommio at all).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use keelson_engine::{mvcc, wal};
use keelson_proto::etcdserverpb::{
    CompactionRequest, LeaseCheckpoint, LeaseCheckpointRequest, LeaseRevokeRequest,
};
use prost::Message as _;
use raft::eraftpb::{Entry, Message, MessageType, SnapshotMetadata};
use raft::{RawNode, SnapshotStatus, StateRole};

use super::compactor::Compactor;
use super::lessor::{LeaseChange, Lessor, Renewed};
use super::log::RaftLog;
use super::reads::Reads;
use super::seams::{Answer, Defragmented, DurableLog, Forward, StateMachine, Transport};
use crate::apply;
use crate::metrics::latency::{Stage, Stages};
use crate::runtime::link::{
    Batch, FromRaft, LeaseAnswer, LeaseAsk, Published, Refusal, ServingCore, ToRaft, Token,
};
use reconfigure::Origin;

mod reconfigure;

/// An applied batch that took longer than this is slow (etcd's `warningApplyDuration`).
const SLOW_APPLY: std::time::Duration = std::time::Duration::from_millis(100);

/// What reaches the raft core between turns.
#[derive(Debug)]
pub enum Event {
    /// A batch of requests from a serving core.
    Requests(ServingCore, Batch<ToRaft>),
    /// A heartbeat interval passed.
    Tick,
    /// Raft messages from other members.
    Peer(Vec<Message>),
    /// A snapshot from the leader: raft's message, and the page file that came with it, received
    /// and verified into `file`.
    Snapshot {
        /// raft's `MsgSnapshot`.
        message: Box<Message>,
        /// The file received.
        file: PathBuf,
    },
    /// A snapshot sent to member `to` was received and verified there (`delivered`), or not.
    SnapshotSent {
        /// The member it was for.
        to: u64,
        /// Whether it arrived whole.
        delivered: bool,
    },
    /// A request forwarded by member `from` to this member (the leader), or the answer to one
    /// this member forwarded.
    Forwarded {
        /// The member it came from.
        from: u64,
        /// The request or answer.
        forward: Forward,
    },
    /// Another member refused this one: it was removed from the cluster.
    Removed,
    /// The member is stopping: this is the last turn.
    Stop,
}

/// Why the raft core stopped. Any of these is fail-stop: the member stops acknowledging writes.
#[derive(Debug, thiserror::Error)]
pub enum RaftCoreError {
    /// The WAL failed (it has stopped itself).
    #[error(transparent)]
    Wal(#[from] wal::WalError),
    /// The page file failed.
    #[error(transparent)]
    Store(#[from] mvcc::MvccError),
    /// raft-rs refused an operation it should not.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// The peer listener could not start.
    #[error("peer listener: {0}")]
    Peer(std::io::Error),
    /// This member was removed from the cluster.
    #[error("the member has been permanently removed from the cluster")]
    Removed,
    /// Installing a snapshot from the leader failed.
    #[error("installing the leader's snapshot: {0}")]
    Install(String),
    /// An invariant of the raft core broke (a bug, or a peer that breaks raft's rules).
    #[error("raft: {0}")]
    Broken(&'static str),
}

/// The raft core of one member.
pub struct RaftCore<L, S, T> {
    node: RawNode<RaftLog>,
    log: L,
    state: S,
    transport: T,
    published: Arc<Published>,
    /// Proposals in flight, by request id: the serving core to answer, and when it was proposed
    /// (the instant, and the tick).
    proposals: HashMap<u64, (ServingCore, Instant, u64)>,
    /// Ticks so far.
    ticks: u64,
    /// Ticks after which a proposal still in flight is forgotten (`None`: never).
    proposal_patience: Option<u64>,
    reads: Reads,
    lessor: Lessor,
    /// Replies gathered this turn, per serving core.
    replies: Vec<Vec<FromRaft>>,
    /// Whether the serving cores have been told the member is ready.
    ready_sent: bool,
    /// Serving cores' requests waiting for the defragmentation under way.
    defragmenting: Vec<(ServingCore, Token)>,
    /// Auto-compaction, if on.
    compactor: Option<Compactor>,
    /// The leadership transfer a stopping leader waits for.
    handover: Option<Handover>,
    /// This member's attributes, until their publish is applied.
    publishing: Option<Publishing>,
    /// Lease questions forwarded to the leader, by number: who asked, and ticks since.
    forwarded: HashMap<u64, (ServingCore, Token, usize)>,
    /// The number of the next question forwarded.
    next_forward: u64,
    /// The snapshot file raft took, until its `Ready` installs it: its index, and the file.
    incoming: Option<(u64, PathBuf)>,
    /// Entries the log keeps for followers in a cluster behind what the page file holds.
    catch_up: u64,
    /// Entries the log keeps, at most, for a follower behind (`--snapshot-count`); further behind,
    /// it is sent a snapshot.
    lagging_limit: u64,
    /// `--strict-reconfig-check`.
    strict_reconfig: bool,
    /// Ticks left before a removed member stops (`None`: not removed).
    removed: Option<u32>,
    stopping: bool,
}

/// A member's publish of its attributes (etcd's `publish`): proposed once a leader is known, and
/// again every election timeout until it is applied. The member is ready for clients only then.
#[derive(Debug)]
struct Publishing {
    /// The proposal's id.
    id: u64,
    /// The entry's data (etcd 3.4's v2 request).
    data: Vec<u8>,
    /// Ticks since it was last proposed (`None`: not yet).
    ticks_since: Option<usize>,
}

/// A leader's transfer of leadership: etcd's `TransferLeadership` on stop, or a MoveLeader.
#[derive(Debug)]
struct Handover {
    /// The member that is to lead.
    to: u64,
    /// Ticks left before it is given up.
    ticks_left: usize,
    /// When it started.
    started: Instant,
    /// The MoveLeader calls waiting for it.
    waiters: Vec<(ServingCore, Token)>,
    /// Whether the member stops once it ends (the order to stop came).
    then_stop: bool,
}

impl<L: DurableLog, S: StateMachine, T: Transport<Snapshot = S::Snapshot>> RaftCore<L, S, T> {
    /// A raft core over a booted node, answering `serving_cores` serving cores; its read-index
    /// contexts count from `first_read_context` (unique to this member and this start).
    #[expect(
        clippy::too_many_arguments,
        reason = "each is a part the core owns; a builder would only rename them"
    )]
    pub fn new(
        node: RawNode<RaftLog>,
        log: L,
        state: S,
        transport: T,
        lessor: Lessor,
        published: Arc<Published>,
        serving_cores: usize,
        first_read_context: u64,
    ) -> Self {
        let retry_after = node.raft.election_timeout() as u64;
        published.set_applied(state.applied().0);
        RaftCore {
            node,
            log,
            state,
            transport,
            published,
            proposals: HashMap::new(),
            ticks: 0,
            proposal_patience: None,
            reads: Reads::new(retry_after, first_read_context),
            lessor,
            replies: (0..serving_cores).map(|_| Vec::new()).collect(),
            ready_sent: false,
            defragmenting: Vec::new(),
            compactor: None,
            handover: None,
            publishing: None,
            forwarded: HashMap::new(),
            next_forward: first_read_context,
            incoming: None,
            catch_up: crate::config::DEFAULT_CATCH_UP_ENTRIES,
            lagging_limit: crate::config::DEFAULT_SNAPSHOT_COUNT,
            strict_reconfig: true,
            removed: None,
            stopping: false,
        }
    }

    /// Keeps `catch_up` entries for followers behind what the page file holds, and up to
    /// `lagging_limit` for a follower behind; one further behind is sent a snapshot.
    pub fn keep_for_followers(&mut self, catch_up: u64, lagging_limit: u64) {
        self.catch_up = catch_up;
        self.lagging_limit = lagging_limit;
    }

    /// Forgets a proposal still in flight after `ticks`: its client has been answered `request
    /// timed out` by then, and a proposal lost on its way to the leader is never applied here.
    pub fn forget_proposals_after(&mut self, ticks: u64) {
        self.proposal_patience = Some(ticks);
    }

    /// Checks membership changes as etcd's `--strict-reconfig-check` does, or not.
    pub fn check_reconfigurations(&mut self, strict: bool) {
        self.strict_reconfig = strict;
    }

    /// Compacts as `compactor` asks (auto-compaction), while this member leads.
    pub fn compact_automatically(&mut self, compactor: Compactor) {
        self.compactor = Some(compactor);
    }

    /// Publishes this member's `name` and `client_urls` to the cluster through raft, as proposal
    /// `id`, before the member tells its serving cores it is ready.
    pub fn publish(&mut self, id: u64, name: &str, client_urls: &[String]) {
        let request = apply::members::publish_request(id, self.node.raft.id, name, client_urls);
        self.publishing = Some(Publishing {
            id,
            data: request.encode_to_vec(),
            ticks_since: None,
        });
    }

    /// Starts raft: the transport dials the members, and the only voter of a cluster need not
    /// wait out an election timeout.
    pub fn start(&mut self) -> Result<(), RaftCoreError> {
        let members = self.state.members()?;
        self.members_changed(&members);
        if self.node.raft.prs().conf().voters().ids().len() == 1 {
            self.node.campaign()?;
        }
        Ok(())
    }

    /// One turn over `events` (drained).
    pub async fn turn(&mut self, events: &mut Vec<Event>) -> Result<(), RaftCoreError> {
        for event in events.drain(..) {
            match event {
                Event::Tick => {
                    self.node.tick();
                    self.reads.tick();
                    if let Some(handover) = &mut self.handover {
                        handover.ticks_left = handover.ticks_left.saturating_sub(1);
                    }
                    if let Some(ticks) = self
                        .publishing
                        .as_mut()
                        .and_then(|p| p.ticks_since.as_mut())
                    {
                        *ticks += 1;
                    }
                    self.age_forwarded();
                    self.ticks += 1;
                    if let Some(left) = &mut self.removed {
                        *left = left.saturating_sub(1);
                    }
                    if let Some(patience) = self.proposal_patience {
                        let now = self.ticks;
                        self.proposals.retain(|_, p| now - p.2 < patience);
                    }
                }
                Event::Requests(core, batch) => {
                    self.stages().observe(Stage::ToRaft, batch.sent.elapsed());
                    for request in batch.items {
                        match request {
                            ToRaft::Propose { id, data } => self.propose(core, id, data),
                            ToRaft::ReadIndex { token } => self.reads.arrived(core, token),
                            ToRaft::Defragment { token } => {
                                self.defragmenting.push((core, token));
                                self.state.defragment();
                            }
                            ToRaft::Lease { token, ask } => self.lease_asked(core, token, ask),
                            ToRaft::Reconfigure { id, change } => {
                                self.reconfigure(Origin::Local(core), id, change);
                            }
                            ToRaft::MoveLeader { token, target } => {
                                self.move_leader((core, token), target);
                            }
                        }
                    }
                }
                Event::Peer(messages) => {
                    for message in messages {
                        let from = message.from;
                        if let Err(e) = self.node.step(message) {
                            tracing::debug!(from, "a raft message from a peer was refused: {e}");
                        }
                    }
                }
                Event::Snapshot { message, file } => self.snapshot_arrived(*message, file).await,
                Event::SnapshotSent { to, delivered } => {
                    let status = if delivered {
                        SnapshotStatus::Finish
                    } else {
                        SnapshotStatus::Failure
                    };
                    self.node.report_snapshot(to, status);
                }
                Event::Forwarded { from, forward } => self.forwarded(from, forward),
                Event::Removed => self.refused_as_removed(),
                Event::Stop => self.hand_over_or_stop(),
            }
        }
        self.reads.ask(&mut self.node, &mut self.replies);
        self.published
            .metrics
            .read_indexes_failed
            .store(self.reads.refused(), Ordering::Relaxed);
        if self.node.has_ready() {
            self.handle_ready().await?;
        }
        self.reads
            .release(self.published.applied(), &mut self.replies);
        self.check_handover();
        self.publish_state();
        self.propose_due_leases();
        self.compact_if_due();
        let done = self.state.maintain().await?;
        self.route(done.answers);
        if let Some(defragmented) = done.defragmented {
            self.defragmented(defragmented);
        }
        if let Some(durable) = done.durable {
            let keep_from = self.retained_from(durable);
            self.log.release_before(keep_from).await?;
            self.node
                .mut_store()
                .trim_through(keep_from.saturating_sub(1));
        }
        if self.removed == Some(0) {
            return Err(RaftCoreError::Removed);
        }
        Ok(())
    }

    /// The replies gathered since the last call, per serving core (cores with none skipped).
    pub fn replies(&mut self) -> impl Iterator<Item = (ServingCore, Vec<FromRaft>)> + '_ {
        self.replies
            .iter_mut()
            .enumerate()
            .filter(|(_, replies)| !replies.is_empty())
            .map(|(core, replies)| (ServingCore(core), std::mem::take(replies)))
    }

    /// Whether a turn has work without any new event.
    pub fn has_work(&self) -> bool {
        self.node.has_ready() || self.state.busy()
    }

    /// Whether the last turn was told to stop.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// Makes everything applied durable and closes the log.
    pub async fn close(mut self) -> Result<(), RaftCoreError> {
        self.state.close().await?;
        self.log.close().await;
        Ok(())
    }

    /// Proposals in flight, for the simulation's checks.
    #[cfg(test)]
    pub fn proposals_in_flight(&self) -> usize {
        self.proposals.len()
    }

    /// The raft node, for the simulation's checks.
    #[cfg(test)]
    pub fn node(&self) -> &RawNode<RaftLog> {
        &self.node
    }

    /// On the order to stop: a leader of several voters first hands leadership to the most
    /// caught-up follower it hears from, as etcd does, so the cluster need not wait out an election
    /// timeout; anyone else stops after this turn. A move under way is finished first.
    fn hand_over_or_stop(&mut self) {
        if let Some(handover) = &mut self.handover {
            handover.then_stop = true;
            return;
        }
        if self.stopping {
            return;
        }
        match self.transferee_for_stop() {
            Some(to) => self.start_handover(to, None, true),
            None => self.stopping = true,
        }
    }

    /// The follower a stopping leader hands over to (`None`, said why: no handover).
    fn transferee_for_stop(&self) -> Option<u64> {
        let raft = &self.node.raft;
        let local_member_id = format!("{:x}", raft.id);
        let current_leader_member_id = format!("{:x}", raft.leader_id);
        if raft.state != StateRole::Leader {
            tracing::info!(
                local_member_id,
                current_leader_member_id,
                "skipped leadership transfer; local server is not leader"
            );
            return None;
        }
        let voters = raft.prs().conf().voters().ids();
        if voters.len() < 2 {
            tracing::info!(
                local_member_id,
                current_leader_member_id,
                "skipped leadership transfer for single voting member cluster"
            );
            return None;
        }
        let transferee = raft
            .prs()
            .iter()
            .filter(|&(&id, p)| id != raft.id && p.recent_active && voters.contains(id))
            .max_by_key(|&(_, p)| p.matched)
            .map(|(&id, _)| id);
        if transferee.is_none() {
            tracing::warn!(
                local_member_id,
                error = "etcdserver: unhealthy cluster",
                "leadership transfer failed"
            );
        }
        transferee
    }

    /// etcd's MoveLeader: the leader hands leadership to voter `target`, answering `asker` once
    /// the target leads.
    fn move_leader(&mut self, asker: (ServingCore, Token), target: u64) {
        let raft = &self.node.raft;
        let answer = if raft.state != StateRole::Leader || self.stopping {
            Some(Err(Refusal::NotLeader))
        } else if !raft.prs().conf().voters().contains(target) {
            Some(Err(Refusal::BadLeaderTransferee))
        } else if target == raft.id {
            Some(Ok(()))
        } else {
            match &mut self.handover {
                Some(handover) if handover.to == target => {
                    handover.waiters.push(asker);
                    None
                }
                // Another move is under way; etcd's would time out against it too.
                Some(_) => Some(Err(Refusal::LeaderTransferTimedOut)),
                None => {
                    self.start_handover(target, Some(asker), false);
                    None
                }
            }
        };
        if let Some(result) = answer {
            let (core, token) = asker;
            self.replies[core.0].push(FromRaft::Done { token, result });
        }
    }

    fn start_handover(&mut self, to: u64, asker: Option<(ServingCore, Token)>, then_stop: bool) {
        let raft = &self.node.raft;
        tracing::info!(
            local_member_id = %format!("{:x}", raft.id),
            current_leader_member_id = %format!("{:x}", raft.leader_id),
            transferee_member_id = %format!("{to:x}"),
            "leadership transfer starting"
        );
        let ticks_left = 2 * raft.election_timeout();
        self.node.transfer_leader(to);
        self.handover = Some(Handover {
            to,
            ticks_left,
            started: Instant::now(),
            waiters: asker.into_iter().collect(),
            then_stop,
        });
    }

    /// Ends a handover that succeeded or ran out of time: answers those who asked for it, and
    /// stops the member if it was stopping.
    fn check_handover(&mut self) {
        let Some(handover) = self.handover.take() else {
            return;
        };
        let raft = &self.node.raft;
        let local_member_id = format!("{:x}", raft.id);
        let result = if raft.leader_id == handover.to {
            tracing::info!(
                local_member_id,
                old_leader_member_id = %format!("{:x}", raft.id),
                new_leader_member_id = %format!("{:x}", handover.to),
                took = ?handover.started.elapsed(),
                "leadership transfer finished"
            );
            Ok(())
        } else if handover.ticks_left == 0 {
            tracing::warn!(
                local_member_id,
                error = "etcdserver: request timed out, leader transfer took too long",
                "leadership transfer failed"
            );
            Err(())
        } else {
            self.handover = Some(handover);
            return;
        };
        let Handover {
            waiters, then_stop, ..
        } = handover;
        for (core, token) in waiters {
            let result = result.map_err(|()| Refusal::LeaderTransferTimedOut);
            self.replies[core.0].push(FromRaft::Done { token, result });
        }
        self.stopping |= then_stop;
    }

    /// Sends raft's messages; a snapshot goes with the state machine as applied now, its
    /// message naming that index and term (at or past the one raft chose: the follower's progress
    /// follows what it answers).
    fn send(&mut self, messages: Vec<Message>) {
        let (snapshots, messages): (Vec<Message>, Vec<Message>) = messages
            .into_iter()
            .partition(|m| m.get_msg_type() == MessageType::MsgSnapshot);
        if !messages.is_empty() {
            self.transport.send(messages);
        }
        for mut message in snapshots {
            let to = message.to;
            match self.state.snapshot() {
                Ok(snapshot) => {
                    let (index, term) = self.state.applied();
                    let conf_state = self.node.store().conf_state().clone();
                    let metadata = message.mut_snapshot().mut_metadata();
                    (metadata.index, metadata.term) = (index, term);
                    metadata.set_conf_state(conf_state);
                    tracing::info!(
                        remote_peer_id = %format!("{to:x}"),
                        snapshot_index = index,
                        "sending database snapshot"
                    );
                    self.transport.send_snapshot(message, snapshot);
                }
                Err(e) => {
                    tracing::warn!(remote_peer_id = %format!("{to:x}"), "failed to take a snapshot to send: {e}");
                    self.node.report_snapshot(to, SnapshotStatus::Failure);
                }
            }
        }
    }

    /// A snapshot from the leader arrived with its file: raft steps its message, and if it takes
    /// it (the follower is that far behind), the file waits for the `Ready` that installs it;
    /// otherwise it goes.
    async fn snapshot_arrived(&mut self, message: Message, file: PathBuf) {
        let index = message.get_snapshot().get_metadata().index;
        let from = message.from;
        if let Err(e) = self.node.step(message) {
            tracing::debug!(from, "a snapshot from a peer was refused: {e}");
        }
        let taken = self
            .node
            .raft
            .raft_log
            .unstable_snapshot()
            .as_ref()
            .is_some_and(|s| s.get_metadata().index == index);
        if taken {
            if let Some((_, older)) = self.incoming.replace((index, file)) {
                self.state.discard(&older).await;
            }
        } else {
            tracing::info!(
                snapshot_index = index,
                "the snapshot is no newer than what this member holds; discarded"
            );
            self.state.discard(&file).await;
        }
    }

    /// Installs the snapshot raft's `Ready` carries: its file becomes the state machine's, then
    /// the log (in the WAL and in memory) restarts after it, and the lessor and every reader
    /// follow the new state.
    async fn install(&mut self, snapshot: SnapshotMetadata) -> Result<(), RaftCoreError> {
        let (index, term) = (snapshot.index, snapshot.term);
        let file = match self.incoming.take() {
            Some((at, file)) if at == index => file,
            _ => {
                return Err(RaftCoreError::Broken(
                    "raft took a snapshot whose file did not arrive",
                ));
            }
        };
        tracing::info!(
            applied_index = self.state.applied().0,
            incoming_leader_snapshot_index = index,
            incoming_leader_snapshot_term = term,
            "applying snapshot"
        );
        let installed = self.state.install(&file).await?;
        if self.state.applied() != (index, term) {
            return Err(RaftCoreError::Broken(
                "an installed snapshot holds another index than its message named",
            ));
        }
        self.log.restart_after(index, term).await?;
        self.node.mut_store().restart_after(&snapshot);
        self.lessor = self.lessor.reloaded(installed.leases);
        if let Some(db) = installed.db {
            for replies in &mut self.replies {
                replies.push(FromRaft::Installed(db.clone()));
            }
        }
        self.published.set_applied(index);
        // The snapshot's members may differ from those this member knew.
        let members = self.state.members()?;
        self.members_changed(&members);
        tracing::info!(snapshot_index = index, "applied snapshot");
        Ok(())
    }

    fn propose(&mut self, core: ServingCore, id: u64, data: Vec<u8>) {
        match self.node.propose(Vec::new(), data) {
            Ok(()) => {
                self.proposals
                    .insert(id, (core, Instant::now(), self.ticks));
            }
            Err(_) => {
                self.published
                    .metrics
                    .proposals_failed
                    .fetch_add(1, Ordering::Relaxed);
                self.replies[core.0].push(FromRaft::Applied {
                    id,
                    outcome: Err(Refusal::NoLeader),
                });
            }
        }
    }

    /// Follows raft-rs's order for one `Ready` (see the crate docs of raft-rs: messages,
    /// committed entries, entries and hard state, persisted messages, advance, light ready).
    async fn handle_ready(&mut self) -> Result<(), RaftCoreError> {
        let mut ready = self.node.ready();
        if !ready.messages().is_empty() {
            self.send(ready.take_messages());
        }
        if !ready.snapshot().is_empty() {
            self.install(ready.snapshot().get_metadata().clone())
                .await?;
        }
        self.reads.confirmed(ready.take_read_states());
        self.apply(ready.take_committed_entries()).await?;
        let entries = ready.take_entries();
        let hard_state = ready.hs().cloned();
        if !entries.is_empty() || hard_state.is_some() {
            let started = Instant::now();
            self.log.persist(&entries, hard_state.as_ref()).await?;
            let metrics = &self.published.metrics;
            let took = started.elapsed();
            metrics.wal_fsync.observe(took);
            metrics.stages.observe(Stage::WalSync, took);
            metrics
                .stages
                .of(Stage::WalBatch)
                .record(entries.len() as u64);
            metrics
                .wal_bytes
                .store(self.log.written(), Ordering::Relaxed);
            let log = self.node.mut_store();
            log.append(entries);
            if let Some(hs) = hard_state {
                log.set_hard_state(hs);
            }
        }
        if !ready.persisted_messages().is_empty() {
            self.send(ready.take_persisted_messages());
        }
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.node.mut_store().set_commit(commit);
        }
        if !light.messages().is_empty() {
            self.send(light.take_messages());
        }
        self.apply(light.take_committed_entries()).await?;
        self.node.advance_apply();
        Ok(())
    }

    async fn apply(&mut self, committed: Vec<Entry>) -> Result<(), RaftCoreError> {
        if committed.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let entries = committed.len() as u64;
        let applied = self.state.apply(committed).await?;
        let took = started.elapsed();
        self.stages().observe(Stage::Apply, took);
        self.stages().of(Stage::ApplyBatch).record(entries);
        if took > SLOW_APPLY {
            self.published
                .metrics
                .slow_applies
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                took = ?took,
                expected_duration = ?SLOW_APPLY,
                entries,
                "apply request took too long"
            );
        }
        if let Some(changes) = applied.changes {
            let changes = Arc::new(changes);
            for replies in &mut self.replies {
                replies.push(FromRaft::Changes(changes.clone()));
            }
        }
        self.route(applied.answers);
        self.conf_changes_applied(&applied.conf_changes)?;
        if let Some(members) = &applied.members {
            self.members_changed(members);
        }
        for request in applied.proposals {
            self.propose_own(request);
        }
        self.node.mut_store().set_applied(self.state.applied());
        self.published.set_applied(self.state.applied().0);
        let now = Instant::now();
        let metrics = &self.published.metrics;
        for change in &applied.leases {
            match change {
                LeaseChange::Granted { ttl, .. } => {
                    metrics.leases_granted.fetch_add(1, Ordering::Relaxed);
                    metrics.lease_ttl.record(*ttl as f64);
                }
                LeaseChange::Revoked(_) => {
                    metrics.leases_revoked.fetch_add(1, Ordering::Relaxed);
                }
                LeaseChange::Checkpointed { .. } => {}
            }
            self.lessor.applied(change, now);
        }
        Ok(())
    }

    /// Tells every serving core to read the new file, if there is one, and answers those waiting
    /// for the defragmentation.
    fn defragmented(&mut self, defragmented: Defragmented) {
        let result = match defragmented {
            Defragmented::Rewritten(reopened) => {
                if let Some(db) = reopened {
                    for replies in &mut self.replies {
                        replies.push(FromRaft::Reopened(db.clone()));
                    }
                }
                Ok(())
            }
            Defragmented::Failed(why) => Err(why),
        };
        for (core, token) in self.defragmenting.drain(..) {
            let result = result.clone().map_err(Refusal::Failed);
            self.replies[core.0].push(FromRaft::Done { token, result });
        }
    }

    /// A serving core's question to the lessor: the leader's lessor answers it; on a follower a
    /// renewal or a time-to-live question goes to the leader (as etcd forwards them), and the list
    /// of leases is the follower's own (every member applies every grant and revoke).
    fn lease_asked(&mut self, core: ServingCore, token: Token, ask: LeaseAsk) {
        let raft = &self.node.raft;
        let leader = raft.leader_id;
        let here = self.lessor.is_primary() || matches!(ask, LeaseAsk::Leases);
        if here || leader == raft::INVALID_ID || leader == raft.id {
            let answer = self.ask_lessor(ask);
            self.replies[core.0].push(FromRaft::Lease { token, answer });
            return;
        }
        let id = self.next_forward;
        self.next_forward += 1;
        self.forwarded.insert(id, (core, token, 0));
        self.transport.forward(leader, Forward::Ask { id, ask });
    }

    /// A request another member forwarded (a lease question, answered if this member leads; a
    /// membership change), or the answer to one this member forwarded.
    fn forwarded(&mut self, from: u64, forward: Forward) {
        match forward {
            Forward::Reconfigure { id, change } => {
                self.reconfigure(Origin::Remote(from), id, change);
            }
            Forward::Refused { id, declined } => self.refused(id, declined),
            Forward::Ask { id, ask } => {
                let answer = if self.lessor.is_primary() {
                    self.ask_lessor(ask).ok()
                } else {
                    None
                };
                self.transport.forward(from, Forward::Answer { id, answer });
            }
            Forward::Answer { id, answer } => {
                if let Some((core, token, _)) = self.forwarded.remove(&id) {
                    let answer = answer.ok_or(Refusal::NoLeader);
                    self.replies[core.0].push(FromRaft::Lease { token, answer });
                }
            }
        }
    }

    /// Gives up on forwarded lease questions unanswered for two election timeouts: the leader
    /// is gone or unreachable.
    fn age_forwarded(&mut self) {
        let patience = 2 * self.node.raft.election_timeout();
        let replies = &mut self.replies;
        self.forwarded.retain(|_, (core, token, ticks)| {
            *ticks += 1;
            if *ticks < patience {
                return true;
            }
            replies[core.0].push(FromRaft::Lease {
                token: *token,
                answer: Err(Refusal::NoLeader),
            });
            false
        });
    }

    /// Answers a serving core's question to the lessor.
    fn ask_lessor(&mut self, ask: LeaseAsk) -> Result<LeaseAnswer, Refusal> {
        let now = Instant::now();
        match ask {
            LeaseAsk::Renew(id) => match self.lessor.renew(id, now) {
                Renewed::Ttl {
                    ttl,
                    clear_checkpoint,
                } => {
                    self.published
                        .metrics
                        .leases_renewed
                        .fetch_add(1, Ordering::Relaxed);
                    if clear_checkpoint {
                        self.propose_own(mvcc::Request::LeaseCheckpoint(LeaseCheckpointRequest {
                            checkpoints: vec![LeaseCheckpoint {
                                id,
                                remaining_ttl: 0,
                            }],
                        }));
                    }
                    Ok(LeaseAnswer::Renewed(ttl))
                }
                Renewed::Gone => Ok(LeaseAnswer::Renewed(0)),
                Renewed::NotPrimary => Err(Refusal::NoLeader),
            },
            LeaseAsk::TimeToLive(id) => {
                Ok(LeaseAnswer::TimeToLive(self.lessor.time_to_live(id, now)))
            }
            LeaseAsk::Leases => Ok(LeaseAnswer::Leases(self.lessor.by_deadline())),
        }
    }

    /// Proposes the revokes of expired leases and the checkpoints that fell due (the leader's).
    fn propose_due_leases(&mut self) {
        let due = self.lessor.due(Instant::now());
        self.published
            .metrics
            .leases_expired
            .fetch_add(due.revoke.len() as u64, Ordering::Relaxed);
        for id in due.revoke {
            self.propose_own(mvcc::Request::LeaseRevoke(LeaseRevokeRequest { id }));
        }
        if !due.checkpoints.is_empty() {
            let checkpoints = due
                .checkpoints
                .into_iter()
                .map(|(id, remaining_ttl)| LeaseCheckpoint { id, remaining_ttl })
                .collect();
            self.propose_own(mvcc::Request::LeaseCheckpoint(LeaseCheckpointRequest {
                checkpoints,
            }));
        }
    }

    /// Proposes the compaction auto-compaction asks for, if one is due.
    fn compact_if_due(&mut self) {
        let leads = self.node.raft.state == StateRole::Leader;
        let revision = self.state.revision();
        let due = self
            .compactor
            .as_mut()
            .and_then(|c| c.due(Instant::now(), revision, leads));
        if let Some(revision) = due {
            self.propose_own(mvcc::Request::Compaction(CompactionRequest {
                revision,
                physical: false,
            }));
        }
    }

    /// Proposes a request of the raft core's own (the lessor's, the apply layer's): its id is 0,
    /// so nobody waits for its answer. A refusal (leadership lost meanwhile) is dropped: the next
    /// leader's lessor proposes anew, and the next write past the quota raises NOSPACE again.
    fn propose_own(&mut self, request: mvcc::Request) {
        let data = request.into_internal(0).encode_to_vec();
        if let Err(e) = self.node.propose(Vec::new(), data) {
            tracing::debug!("a proposal of the raft core's own was refused: {e}");
        }
    }

    /// Hands each answer to the serving core waiting for it (proposals of other members have
    /// nobody waiting here).
    fn route(&mut self, answers: Vec<Answer>) {
        for Answer { id, outcome } in answers {
            if self.publishing.as_ref().is_some_and(|p| p.id == id) {
                self.publishing = None;
                tracing::info!(
                    local_member_id = %format!("{:x}", self.node.raft.id),
                    "published local member to cluster through raft"
                );
                continue;
            }
            if let Some((core, proposed, _)) = self.proposals.remove(&id) {
                self.stages().observe(Stage::Proposal, proposed.elapsed());
                self.replies[core.0].push(FromRaft::Applied { id, outcome });
            }
        }
    }

    /// The first index the log must keep once everything through `durable` is in the page file:
    /// the catch-up entries of a cluster member, and what the slowest follower has not received
    /// unless it is more than the lagging limit behind (it gets a snapshot then).
    fn retained_from(&self, durable: u64) -> u64 {
        let raft = &self.node.raft;
        let voters = raft.prs().conf().voters().ids().len();
        let catch_up = if voters > 1 { self.catch_up } else { 0 };
        let mut from = (durable + 1).saturating_sub(catch_up).max(1);
        if raft.state == StateRole::Leader {
            let floor = (durable + 1).saturating_sub(self.lagging_limit);
            for (&id, progress) in raft.prs().iter() {
                if id != raft.id {
                    from = from.min((progress.matched + 1).max(floor));
                }
            }
        }
        from
    }

    /// The raft core's stage histograms.
    fn stages(&self) -> &Stages {
        &self.published.metrics.stages
    }

    fn publish_state(&mut self) {
        let raft = &self.node.raft;
        let metrics = &self.published.metrics;
        if self.published.leader() != raft.leader_id && raft.leader_id != raft::INVALID_ID {
            metrics.leader_changes.fetch_add(1, Ordering::Relaxed);
        }
        metrics
            .proposals_pending
            .store(self.proposals.len() as u64, Ordering::Relaxed);
        self.published
            .set_raft(raft.term, raft.leader_id, raft.raft_log.committed);
        let leading = raft.state == StateRole::Leader;
        if leading != self.lessor.is_primary() {
            if leading {
                self.lessor.promote(Instant::now());
            } else {
                self.lessor.demote();
            }
        }
        let leader_serves = raft.leader_id != raft::INVALID_ID
            && (raft.state != StateRole::Leader || raft.commit_to_current_term());
        let retry_after = raft.election_timeout();
        let due = self
            .publishing
            .as_mut()
            .filter(|p| leader_serves && p.ticks_since.is_none_or(|t| t >= retry_after));
        if let Some(publishing) = due {
            publishing.ticks_since = Some(0);
            let data = publishing.data.clone();
            if let Err(e) = self.node.propose(Vec::new(), data) {
                tracing::debug!("publishing this member's attributes was refused: {e}");
            }
        }
        let ready = leader_serves && self.publishing.is_none();
        if ready && !self.ready_sent {
            self.ready_sent = true;
            for replies in &mut self.replies {
                replies.push(FromRaft::Ready);
            }
        }
    }
}
