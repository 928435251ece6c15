//! What the raft core's turn needs from the world, as traits: where the raft log is made durable
//! ([`DurableLog`]: keelson's WAL), what committed entries are applied to ([`StateMachine`]: the
//! apply layer over the MVCC store), and how messages reach the other members ([`Transport`]: the peer
//! transport, `crate::peer`). The turn is written against these
//! alone, so the simulated cluster in `sim/` drives the very same turn with a disk that can lose
//! what was not synced, a state machine in memory and a network the test delivers by hand.
//!
//! Runs on: the raft core.

use std::path::Path;
use std::time::Instant;

use keelson_engine::mvcc::members::{Change, Member};
use raft::eraftpb::{ConfChange, Entry, HardState, Message};

use super::lessor::LeaseChange;
use super::turn::RaftCoreError;
use crate::runtime::link::{Changes, LeaseAnswer, LeaseAsk, Outcome, Refusal};

/// Where the raft log's entries and hard state are made durable.
pub trait DurableLog {
    /// Writes `entries` and the hard state (if it changed); returns once they are durable. An
    /// error is fatal: the log has stopped.
    async fn persist(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), RaftCoreError>;
    /// Lets go of what comes before `index`: the state machine holds it durably.
    async fn release_before(&mut self, index: u64) -> Result<(), RaftCoreError>;
    /// Restarts the log after `index` (at `term`), durably: the state machine installed a
    /// snapshot holding everything up to it, and every entry written before is void.
    async fn restart_after(&mut self, index: u64, term: u64) -> Result<(), RaftCoreError>;
    /// Stops, everything persisted so far durable.
    async fn close(self);
    /// Bytes written so far (etcd's `wal_write_bytes_total`).
    fn written(&self) -> u64 {
        0
    }
}

/// The outcome of one applied entry that a member proposed (its request id).
#[derive(Debug)]
pub struct Answer {
    /// The request id the proposal carried.
    pub id: u64,
    /// What it came to.
    pub outcome: Outcome,
}

/// What applying a batch of committed entries came to.
#[derive(Debug, Default)]
pub struct AppliedBatch {
    /// The outcomes of the entries a member proposed.
    pub answers: Vec<Answer>,
    /// What the batch changed, for watchers (`None`: nothing a watcher sees).
    pub changes: Option<Changes>,
    /// What it did to leases, for the lessor.
    pub leases: Vec<LeaseChange>,
    /// Requests the member proposes of its own accord because of it (raising the NOSPACE alarm
    /// when a write went past the quota).
    pub proposals: Vec<keelson_engine::mvcc::Request>,
    /// The configuration changes it applied, in order, for raft to apply too (those the members'
    /// checks refused are left out).
    pub conf_changes: Vec<ConfChange>,
    /// The members after it, if it changed who they are or where they listen.
    pub members: Option<Vec<Member>>,
}

/// How a defragmentation ([`StateMachine::defragment`]) ended.
#[derive(Debug)]
pub enum Defragmented {
    /// The file was rewritten; readers move to this one (`None`: nothing changes for them).
    Rewritten(Option<keelson_engine::pagefile::Db>),
    /// It failed, and why; the old file serves on.
    Failed(String),
}

/// What background work did ([`StateMachine::maintain`]).
#[derive(Debug, Default)]
pub struct Maintained {
    /// Answers that became due (a physical compaction is answered once its work is done).
    pub answers: Vec<Answer>,
    /// Set when a sync finished: every entry through this index is durable in the state machine,
    /// so the log before it may go.
    pub durable: Option<u64>,
    /// Set when a defragmentation ended.
    pub defragmented: Option<Defragmented>,
}

/// What installing a snapshot from the leader came to ([`StateMachine::install`]).
#[derive(Debug, Default)]
pub struct Installed {
    /// The leases the installed state holds: id, time to live, and the seconds left at its last
    /// checkpoint.
    pub leases: Vec<(i64, i64, i64)>,
    /// The file readers move to (`None`: nothing changes for them).
    pub db: Option<keelson_engine::pagefile::Db>,
}

/// What committed entries are applied to.
pub trait StateMachine {
    /// The state as applied now, as a snapshot for a follower too far behind takes it.
    type Snapshot;
    /// Takes a snapshot of the state as applied now (index and term: [`StateMachine::applied`]).
    fn snapshot(&self) -> Result<Self::Snapshot, RaftCoreError>;
    /// Puts the snapshot received into `file` (verified on receipt: it holds what its message
    /// says) in place of the state, durably. An error is fatal.
    async fn install(&mut self, file: &Path) -> Result<Installed, RaftCoreError>;
    /// Removes a received snapshot that raft did not take (best effort).
    async fn discard(&mut self, file: &Path);
    /// The index and term of the last entry applied.
    fn applied(&self) -> (u64, u64);
    /// The store's current revision (what auto-compaction counts back from).
    fn revision(&self) -> i64;
    /// Applies committed entries (contiguous, in order) and returns the outcomes of those a member
    /// proposed and what the batch changed. An error is fatal.
    async fn apply(&mut self, committed: Vec<Entry>) -> Result<AppliedBatch, RaftCoreError>;
    /// Does background work between turns — starts or finishes a sync, steps a compaction.
    async fn maintain(&mut self) -> Result<Maintained, RaftCoreError>;
    /// Whether [`StateMachine::maintain`] has work to do at once (a compaction in progress).
    fn busy(&self) -> bool;
    /// Starts rewriting the state machine's file compactly beside the applies (joins one that is
    /// running); [`Maintained::defragmented`] reports the end.
    fn defragment(&mut self);
    /// Makes everything applied durable, a sync in flight included, and stops.
    async fn close(&mut self) -> Result<(), RaftCoreError>;
    /// The cluster's members as applied.
    fn members(&self) -> Result<Vec<Member>, RaftCoreError>;
    /// The ids of the members removed from the cluster, as applied.
    fn removed_members(&self) -> Result<Vec<u64>, RaftCoreError>;
}

/// What a follower forwards to the leader, or the leader's answer: etcd's followers forward
/// keep-alives and time-to-live questions to the leader, which alone keeps the leases' deadlines,
/// and a learner's promotion, which only the leader can check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forward {
    /// A question, numbered by the member that asks.
    Ask {
        /// The asker's number for it.
        id: u64,
        /// The question.
        ask: LeaseAsk,
    },
    /// The answer to question `id` (`None`: the member asked does not lead).
    Answer {
        /// The asker's number.
        id: u64,
        /// The lessor's answer.
        answer: Option<LeaseAnswer>,
    },
    /// A membership change to check and propose, as request `id` (etcd's followers forward a
    /// promotion: only the leader knows whether the learner is in sync).
    Reconfigure {
        /// The request id the configuration change carries.
        id: u64,
        /// The change.
        change: Change,
    },
    /// The leader did not propose the change of request `id`, and why.
    Refused {
        /// The request id.
        id: u64,
        /// Why.
        declined: Declined,
    },
}

/// Why a membership change was not proposed (etcd's checks before it proposes one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declined {
    /// No leader to propose it to.
    NoLeader,
    /// Only the leader checks it, and the member asked does not lead.
    NotLeader,
    /// Fewer started members than a quorum would be left (`--strict-reconfig-check`).
    NotEnoughStarted,
    /// The learner to promote is not in sync with the leader.
    LearnerNotReady,
    /// The member has not been connected to every voter long enough.
    Unhealthy,
}

impl From<Declined> for Refusal {
    fn from(declined: Declined) -> Refusal {
        match declined {
            Declined::NoLeader => Refusal::NoLeader,
            Declined::NotLeader => Refusal::NotLeader,
            Declined::NotEnoughStarted => Refusal::NotEnoughStarted,
            Declined::LearnerNotReady => Refusal::LearnerNotReady,
            Declined::Unhealthy => Refusal::Unhealthy,
        }
    }
}

/// How raft messages and forwarded lease questions reach the other members.
pub trait Transport {
    /// What a snapshot is sent from (the state machine's [`StateMachine::Snapshot`]).
    type Snapshot;
    /// Sends raft's snapshot `message` to its `to` member with the state `snapshot` holds; the
    /// outcome comes back as `Event::SnapshotSent`.
    fn send_snapshot(&mut self, message: Message, snapshot: Self::Snapshot);
    /// Sends messages to their `to` members (best effort: raft retries what is lost).
    fn send(&mut self, messages: Vec<Message>);
    /// Sends `forward` to member `to` (best effort: an unanswered request times out).
    fn forward(&mut self, to: u64, forward: Forward);
    /// Since when member `id` has been reachable without a break (`None`: it is not now).
    fn active_since(&self, id: u64) -> Option<Instant>;
    /// Makes `members` (but this one) the members messages go to: new ones are dialled, removed
    /// ones dropped, moved ones dialled at their new URLs; the `removed` ones are refused.
    fn set_members(&mut self, members: &[Member], removed: &[u64]);
}
