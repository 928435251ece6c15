//! What crosses between cores, and the state every core publishes for the others to read.
//!
//! Serving cores send the raft core batches of [`ToRaft`] (proposals and read-index requests) on
//! one glommio shared channel each; the raft core answers with batches of [`FromRaft`] on one
//! channel back to each serving core. A batch is one channel slot and at most one wake-up, however
//! many requests it carries. Besides the channels, cores share only [`Published`]: atomics the raft
//! core writes and everyone reads (no locks between cores).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use keelson_engine::mvcc;

use crate::metrics::RaftMetrics;

/// A serving core's name for one of its outstanding requests.
pub type Token = u64;

/// From a serving core to the raft core.
#[derive(Debug)]
pub enum ToRaft {
    /// Propose an encoded `InternalRaftRequest` (with a fresh header id); answer with
    /// [`FromRaft::Applied`] once it is applied.
    Propose {
        /// The proposing serving core.
        core: usize,
        /// Its request.
        token: Token,
        /// The request id in `data`'s header.
        id: u64,
        /// The encoded `InternalRaftRequest`.
        data: Vec<u8>,
    },
    /// Confirm leadership and answer [`FromRaft::ReadReady`] once everything committed before
    /// this request arrived is applied.
    ReadIndex {
        /// The asking serving core.
        core: usize,
        /// Its read batch.
        token: Token,
    },
}

/// What a proposal came to.
pub type Outcome = Result<mvcc::Response, tonic::Status>;

/// From the raft core to a serving core.
#[derive(Debug)]
pub enum FromRaft {
    /// A proposal was applied (or refused).
    Applied {
        /// The serving core's request.
        token: Token,
        /// Its response (headers carry the revision) or error.
        outcome: Outcome,
    },
    /// A read batch may read: every write committed before it was asked for is applied.
    ReadReady {
        /// The serving core's read batch.
        token: Token,
        /// Ok, or why reading linearizably is impossible now.
        result: Result<(), tonic::Status>,
    },
}

/// What the raft core publishes for every core: written only by the raft core.
#[derive(Debug, Default)]
pub struct Published {
    /// The current raft term.
    pub term: AtomicU64,
    /// The leader's member id (0: none known).
    pub leader: AtomicU64,
    /// The raft commit index.
    pub committed: AtomicU64,
    /// The index of the last entry applied to the page file.
    pub applied: AtomicU64,
    /// Set once this member has a leader and serves clients.
    pub ready: AtomicBool,
    /// The raft core's measurements.
    pub metrics: RaftMetrics,
}

impl Published {
    /// Reads a value published by the raft core.
    pub fn get(value: &AtomicU64) -> u64 {
        value.load(Ordering::Acquire)
    }

    /// Publishes a value (raft core only).
    pub fn set(value: &AtomicU64, to: u64) {
        value.store(to, Ordering::Release);
    }
}
