//! What crosses between cores, and the state the raft core publishes for every core to read.
//!
//! Each serving core sends the raft core batches of [`ToRaft`] (proposals, read-index requests,
//! questions for the lessor) on a glommio shared channel of its own; the raft core answers with
//! batches of [`FromRaft`] on one channel back. A batch is one channel slot and at most one wake-up, however many requests it
//! carries. The raft core's end of a channel knows which serving core it serves, so messages do not
//! say. When the raft core stops it closes its channels: that is how serving cores learn it is
//! gone. Answers are keelson's own outcomes ([`Outcome`], [`Refusal`]); the serving core turns them
//! into gRPC statuses at the API edge.
//!
//! Besides the channels, cores share only [`Published`]: atomics the raft core writes and everyone
//! reads (no locks between cores).
//!
//! Runs on: both sides (these are the types each side holds).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use keelson_engine::mvcc;
use keelson_engine::pagefile::Db;
use keelson_proto::mvccpb::Event;

use crate::metrics::RaftMetrics;

/// A serving core, by its position among the serving cores (not its CPU).
/// A batch crossing between cores, stamped when it was sent: its time in the channel and in the
/// receiver's queue is a stage of every request it carries (`to_raft`, `from_raft`).
#[derive(Debug)]
pub struct Batch<T> {
    pub sent: Instant,
    pub items: Vec<T>,
}

impl<T> Batch<T> {
    /// `items`, sent now.
    pub fn now(items: Vec<T>) -> Self {
        Batch {
            sent: Instant::now(),
            items,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServingCore(pub usize);

/// A serving core's name for one of its read batches.
pub type Token = u64;

/// From a serving core to the raft core.
#[derive(Debug)]
pub enum ToRaft {
    /// Propose an encoded `InternalRaftRequest` whose header id is `id` (unique to the proposing
    /// core); answered with [`FromRaft::Applied`] once it is applied.
    Propose {
        /// The request id in `data`'s header.
        id: u64,
        /// The encoded `InternalRaftRequest`.
        data: Vec<u8>,
    },
    /// Confirm leadership and answer [`FromRaft::ReadReady`] once everything committed before
    /// this request arrived is applied.
    ReadIndex {
        /// The serving core's read batch.
        token: Token,
    },
    /// Defragment the page file (joining a defragmentation under way); answered with
    /// [`FromRaft::Done`] when it ends.
    Defragment {
        /// The serving core's name for the request.
        token: Token,
    },
    /// Hand leadership to member `target` (etcd's MoveLeader); answered with [`FromRaft::Done`]
    /// once it leads, or why it does not.
    MoveLeader {
        /// The serving core's name for the request.
        token: Token,
        /// The member to lead.
        target: u64,
    },
    /// Change the cluster's members (etcd's MemberAdd, MemberRemove, MemberUpdate,
    /// MemberPromote), proposed as a configuration change with request id `id`; answered with
    /// [`FromRaft::Applied`] once applied, or why it was not proposed.
    Reconfigure {
        /// The request id the configuration change carries.
        id: u64,
        /// The change.
        change: mvcc::members::Change,
    },
    /// Ask the lessor; answered with [`FromRaft::Lease`].
    Lease {
        /// The serving core's name for the question.
        token: Token,
        /// The question.
        ask: LeaseAsk,
    },
}

/// What a serving core asks the lessor (the raft core's; only the leader keeps deadlines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAsk {
    /// Renew a lease for its full time to live (a keep-alive).
    Renew(i64),
    /// A lease's time left and granted time to live.
    TimeToLive(i64),
    /// Every lease, soonest deadline first.
    Leases,
}

/// The lessor's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAnswer {
    /// The time to live it was renewed for, in seconds; 0: no such lease, or it expired.
    Renewed(i64),
    /// Seconds left and granted, if the lease exists.
    TimeToLive(Option<(i64, i64)>),
    /// Every lease's id.
    Leases(Vec<i64>),
}

/// Why the member did not carry out a request.
#[derive(Debug)]
pub enum Refusal {
    /// No leader to order it.
    NoLeader,
    /// The member stopped first.
    Stopped,
    /// The store refused it, as etcd would (an unknown lease, a compacted revision...).
    Rejected(mvcc::MvccError),
    /// It failed on this member, and why (a defragmentation that could not finish).
    Failed(String),
    /// It was not applied within the request timeout (it may still be).
    TimedOut,
    /// Only the leader does this, and this member does not lead.
    NotLeader,
    /// Leadership did not move within the time a move may take.
    LeaderTransferTimedOut,
    /// A leader move to a member that is not a voter of the cluster.
    BadLeaderTransferee,
    /// A membership change that would leave fewer started members than a quorum
    /// (`--strict-reconfig-check`).
    NotEnoughStarted,
    /// A promotion of a learner that is not in sync with the leader.
    LearnerNotReady,
    /// A membership change while this member has not been connected to every voter long enough.
    Unhealthy,
}

/// What a proposal came to.
pub type Outcome = Result<mvcc::Response, Refusal>;

/// What one applied batch changed, as watchers see it: shared by every serving core (one
/// allocation per batch, whatever the number of cores).
#[derive(Debug, Default)]
pub struct Changes {
    /// The store's revision once the batch is applied (and published in the page file).
    pub revision: i64,
    /// The batch's events, in revision order.
    pub events: Vec<Event>,
}

/// From the raft core to a serving core.
#[derive(Debug)]
pub enum FromRaft {
    /// The member has a leader: start serving clients (sent once).
    Ready,
    /// A proposal was applied (or refused).
    Applied {
        /// The proposal's request id.
        id: u64,
        /// Its response (headers carry the revision) or why not.
        outcome: Outcome,
    },
    /// A batch was applied, and the page file shows it: its changes, for the core's watchers.
    /// Sent to every serving core, in apply order, before the batch's answers.
    Changes(Arc<Changes>),
    /// The lessor's answer to [`ToRaft::Lease`].
    Lease {
        /// The question's token.
        token: Token,
        /// The answer, or why there is none.
        answer: Result<LeaseAnswer, Refusal>,
    },
    /// A defragmentation or a leader move ended (for the [`ToRaft`] request named `token`).
    Done {
        /// The request's token.
        token: Token,
        /// Ok, or why it failed.
        result: Result<(), Refusal>,
    },
    /// The page file was rewritten: read from this one from now on. Sent to every serving core
    /// before anything applied to the new file is answered.
    Reopened(Db),
    /// A snapshot from the leader replaced the page file: read from this one from now on, and
    /// catch every watcher up from it (it holds revisions no `Changes` carried).
    Installed(Db),
    /// A read batch may read: every write committed before it was asked for is applied.
    ReadReady {
        /// The serving core's read batch.
        token: Token,
        /// Ok, or why reading linearizably is impossible now.
        result: Result<(), Refusal>,
    },
}

/// What the raft core publishes for every core: written only by the raft core.
#[derive(Debug, Default)]
pub struct Published {
    term: AtomicU64,
    leader: AtomicU64,
    committed: AtomicU64,
    applied: AtomicU64,
    db_size: AtomicU64,
    free_bytes: AtomicU64,
    is_learner: AtomicBool,
    /// The raft core's measurements.
    pub metrics: RaftMetrics,
}

impl Published {
    /// The current raft term.
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::Acquire)
    }

    /// The leader's member id (0: none known).
    pub fn leader(&self) -> u64 {
        self.leader.load(Ordering::Acquire)
    }

    /// The raft commit index.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// The index of the last entry applied to the page file.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Whether this member is a learner (it serves only what etcd's learners serve).
    pub fn is_learner(&self) -> bool {
        self.is_learner.load(Ordering::Acquire)
    }

    /// Publishes whether this member is a learner (raft core only).
    pub fn set_learner(&self, is_learner: bool) {
        self.is_learner.store(is_learner, Ordering::Release);
    }

    /// Publishes the raft state (raft core only).
    pub fn set_raft(&self, term: u64, leader: u64, committed: u64) {
        self.term.store(term, Ordering::Release);
        self.leader.store(leader, Ordering::Release);
        self.committed.store(committed, Ordering::Release);
    }

    /// Bytes of the page file's published tree (etcd's backend size, which the quota counts).
    pub fn db_size(&self) -> u64 {
        self.db_size.load(Ordering::Acquire)
    }

    /// Bytes of the page file's free pages, ready for reuse (the rest of the file is in use).
    pub fn free_bytes(&self) -> u64 {
        self.free_bytes.load(Ordering::Acquire)
    }

    /// Publishes the page file's size and free bytes (raft core only).
    pub fn set_space(&self, size: u64, free: u64) {
        self.db_size.store(size, Ordering::Release);
        self.free_bytes.store(free, Ordering::Release);
    }

    /// Publishes the applied index (raft core only).
    pub fn set_applied(&self, index: u64) {
        self.applied.store(index, Ordering::Release);
    }
}
