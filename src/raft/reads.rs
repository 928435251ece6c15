//! Linearizable reads on the raft core: read-index requests from the serving cores, asked of raft
//! in one batch per turn, and released once the applied index reaches the index raft confirmed.
//!
//! A batch is asked when this member is a leader that has committed an entry of its term (raft-rs
//! drops read-index requests before that), or a follower that knows its leader (raft-rs forwards
//! the request to it). With no leader and no election under way, the reads are refused at once
//! (`no leader`); otherwise they wait. A request the leader dropped — it had not committed in its
//! term yet, or lost leadership — gets no answer, so a batch not confirmed within an election
//! timeout is asked again.
//!
//! Invariant: a read is released only once the applied index is at or after the index confirmed
//! for a read-index request made after the read arrived.
//!
//! Runs on: the raft core.

use std::collections::HashMap;

use raft::{RawNode, ReadState, StateRole};

use super::log::RaftLog;
use crate::runtime::link::{FromRaft, Refusal, ServingCore, Token};

/// The waiters of one read-index request.
type Batch = Vec<(ServingCore, Token)>;

/// A read-index request raft has not answered yet.
#[derive(Debug)]
struct Asked {
    batch: Batch,
    /// The tick it was asked at.
    at: u64,
}

/// Read batches on their way through raft.
#[derive(Debug)]
pub struct Reads {
    /// Arrived, not asked yet (or to be asked again).
    waiting: Batch,
    /// Asked of raft, by the context they were asked with.
    asked: HashMap<u64, Asked>,
    /// Confirmed, waiting for the applied index to reach theirs.
    confirmed: Vec<(u64, Batch)>,
    next_context: u64,
    /// Ticks so far.
    ticks: u64,
    /// Ticks after which an unanswered request is asked again.
    retry_after: u64,
    /// Reads refused for want of a leader, so far.
    refused: u64,
}

impl Reads {
    /// Reads that ask again after `retry_after` ticks without an answer, their requests' contexts
    /// counting from `first_context`. Contexts must not repeat across members and restarts: the
    /// leader keys pending requests by context, and an answer to a previous life's request, still
    /// on its way, must not confirm a new one.
    pub fn new(retry_after: u64, first_context: u64) -> Reads {
        Reads {
            waiting: Vec::new(),
            asked: HashMap::new(),
            confirmed: Vec::new(),
            next_context: first_context,
            ticks: 0,
            retry_after,
            refused: 0,
        }
    }

    /// Reads refused for want of a leader, so far (etcd's `read_indexes_failed_total`).
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// A read batch arrived from a serving core.
    pub fn arrived(&mut self, core: ServingCore, token: Token) {
        self.waiting.push((core, token));
    }

    /// Counts a raft tick.
    pub fn tick(&mut self) {
        self.ticks += 1;
    }

    /// Asks raft to confirm the waiting reads (one request for all of them), refuses them if no
    /// leader can, or leaves them waiting. Requests unanswered too long wait again.
    pub fn ask(&mut self, node: &mut RawNode<RaftLog>, replies: &mut [Vec<FromRaft>]) {
        let (ticks, retry_after) = (self.ticks, self.retry_after);
        let stale: Vec<u64> = self
            .asked
            .iter()
            .filter(|(_, asked)| ticks.saturating_sub(asked.at) >= retry_after)
            .map(|(&context, _)| context)
            .collect();
        for context in stale {
            if let Some(asked) = self.asked.remove(&context) {
                self.waiting.extend(asked.batch);
            }
        }
        if self.waiting.is_empty() {
            return;
        }
        let raft = &node.raft;
        let can_ask = match raft.state {
            StateRole::Leader => raft.commit_to_current_term(),
            _ => raft.leader_id != raft::INVALID_ID,
        };
        if !can_ask {
            if raft.leader_id == raft::INVALID_ID && raft.state != StateRole::Candidate {
                for (core, token) in self.waiting.drain(..) {
                    self.refused += 1;
                    replies[core.0].push(FromRaft::ReadReady {
                        token,
                        result: Err(Refusal::NoLeader),
                    });
                }
            }
            return;
        }
        let context = self.next_context;
        self.next_context += 1;
        node.read_index(context.to_be_bytes().to_vec());
        let batch = std::mem::take(&mut self.waiting);
        self.asked.insert(context, Asked { batch, at: ticks });
    }

    /// Raft confirmed read indexes (from a `Ready`).
    pub fn confirmed(&mut self, states: Vec<ReadState>) {
        for state in states {
            let Ok(context) = <[u8; 8]>::try_from(&state.request_ctx[..]) else {
                continue;
            };
            if let Some(asked) = self.asked.remove(&u64::from_be_bytes(context)) {
                self.confirmed.push((state.index, asked.batch));
            }
        }
    }

    /// Releases every confirmed batch whose index `applied` has reached.
    pub fn release(&mut self, applied: u64, replies: &mut [Vec<FromRaft>]) {
        self.confirmed.retain_mut(|(index, batch)| {
            if *index > applied {
                return true;
            }
            for (core, token) in batch.drain(..) {
                replies[core.0].push(FromRaft::ReadReady {
                    token,
                    result: Ok(()),
                });
            }
            false
        });
    }
}
