//! The raft core's part in membership changes: a serving core's change goes to the leader (a
//! follower forwards it), is checked there as etcd checks it before proposing
//! ([`super::super::membership`]) — the leader alone knows whether a learner is in sync and which
//! members it hears from — and is appended as a configuration change in etcd's form. Once a
//! change is applied, raft applies it too, the transport follows the new members, and a member
//! that was removed stops after [`REMOVED_STOP_TICKS`] (its last answers go out first), as etcd's
//! does.
//!
//! The leader appends the entry itself, doing what raft-rs does for a proposed configuration
//! change (one at a time; none while leadership moves): raft-rs reads a proposed change in its own
//! numbering, where etcd's learner add (3) does not exist, and the log keeps etcd's.
//!
//! Runs on: the raft core.

use std::time::Instant;

use keelson_engine::mvcc::members::{Change, Member};
use prost::Message as _;
use raft::StateRole;
use raft::eraftpb::{Entry, EntryType};

use super::{RaftCore, RaftCoreError};
use crate::apply;
use crate::raft::membership;
use crate::raft::seams::{Declined, DurableLog, Forward, StateMachine, Transport};
use crate::runtime::link::{FromRaft, ServingCore};

/// Ticks a removed member serves on before it stops (etcd: ten heartbeat intervals).
pub const REMOVED_STOP_TICKS: u32 = 10;

/// Who asked for a membership change.
#[derive(Debug, Clone, Copy)]
pub enum Origin {
    /// A serving core of this member.
    Local(ServingCore),
    /// Another member, which forwarded it to this one (the leader).
    Remote(u64),
}

impl<L: DurableLog, S: StateMachine, T: Transport<Snapshot = S::Snapshot>> RaftCore<L, S, T> {
    /// Checks `change` (request `id`) and proposes it, or forwards a promotion to the leader, or
    /// answers why not.
    pub(super) fn reconfigure(&mut self, origin: Origin, id: u64, change: Change) {
        let leads = self.node.raft.state == StateRole::Leader;
        if !leads {
            let leader = self.node.raft.leader_id;
            match origin {
                Origin::Local(_) if leader == raft::INVALID_ID => {
                    self.decline(origin, id, Declined::NoLeader);
                }
                Origin::Local(core) => {
                    self.proposals
                        .insert(id, (core, Instant::now(), self.ticks));
                    self.transport
                        .forward(leader, Forward::Reconfigure { id, change });
                }
                Origin::Remote(_) => self.decline(origin, id, Declined::NotLeader),
            }
            return;
        }
        let members = match self.state.members() {
            Ok(members) => members,
            Err(e) => {
                tracing::warn!("reading the members to check a change failed: {e}");
                return self.decline(origin, id, Declined::Unhealthy);
            }
        };
        let raft = &self.node.raft;
        let transport = &self.transport;
        let active_since = |member: u64| transport.active_since(member);
        let progress = raft.prs();
        let matched = |member: u64| progress.get(member).map(|p| p.matched);
        let cluster = membership::Cluster {
            members: &members,
            me: raft.id,
            strict: self.strict_reconfig,
            active_since: &active_since,
            now: Instant::now(),
            matched: leads.then_some(&matched as &dyn Fn(u64) -> Option<u64>),
        };
        if let Err(declined) = cluster.check(&change) {
            tracing::warn!(?change, ?declined, "rejecting a membership change");
            return self.decline(origin, id, declined);
        }
        let Some(cc) = apply::members::proposal(id, &change) else {
            return;
        };
        if let Origin::Local(core) = origin {
            self.proposals
                .insert(id, (core, Instant::now(), self.ticks));
        }
        let mut entry = Entry {
            data: cc.encode_to_vec(),
            ..Entry::default()
        };
        entry.set_entry_type(EntryType::EntryConfChange);
        let raft = &mut self.node.raft;
        let member = raft.prs().get(raft.id).is_some();
        if !member || raft.lead_transferee.is_some() || raft.has_pending_conf() {
            // As raft drops such a proposal: its client is answered `request timed out`.
            tracing::info!(
                ?change,
                "ignoring conf change; possible unapplied conf change"
            );
            return;
        }
        raft.pending_conf_index = raft.raft_log.last_index() + 1;
        if raft.append_entry(&mut [entry]) {
            raft.bcast_append();
        }
    }

    /// Answers change `id` with why it was not proposed.
    pub(super) fn decline(&mut self, origin: Origin, id: u64, declined: Declined) {
        match origin {
            Origin::Local(core) => self.replies[core.0].push(FromRaft::Applied {
                id,
                outcome: Err(declined.into()),
            }),
            Origin::Remote(from) => self
                .transport
                .forward(from, Forward::Refused { id, declined }),
        }
    }

    /// Another member refused this one as removed from the cluster: it stops (etcd's members
    /// answer a removed member's messages so, and it stops).
    pub(super) fn refused_as_removed(&mut self) {
        if self.removed.is_none() {
            tracing::warn!(
                local_member_id = %format!("{:x}", self.node.raft.id),
                "the member has been permanently removed from the cluster"
            );
        }
        self.removed = Some(0);
    }

    /// The leader's answer that it did not propose change `id`, forwarded by this member.
    pub(super) fn refused(&mut self, id: u64, declined: Declined) {
        if let Some((core, _, _)) = self.proposals.remove(&id) {
            self.decline(Origin::Local(core), id, declined);
        }
    }

    /// Applies configuration changes the state machine applied to raft as well.
    pub(super) fn conf_changes_applied(
        &mut self,
        changes: &[raft::eraftpb::ConfChange],
    ) -> Result<(), RaftCoreError> {
        for cc in changes {
            let conf_state = self.node.apply_conf_change(cc)?;
            self.node.mut_store().set_conf_state(conf_state);
        }
        Ok(())
    }

    /// The members changed (or the member started): the transport follows them, the serving
    /// cores learn whether this member is a learner, and a member no longer among them stops.
    pub(super) fn members_changed(&mut self, members: &[Member]) {
        let removed = self.state.removed_members().unwrap_or_else(|e| {
            tracing::warn!("reading the removed members failed: {e}");
            Vec::new()
        });
        self.transport.set_members(members, &removed);
        let me = members.iter().find(|m| m.id == self.node.raft.id);
        self.published.set_learner(me.is_some_and(|m| m.is_learner));
        if me.is_none() && self.removed.is_none() {
            let ids: Vec<String> = members.iter().map(|m| format!("{:x}", m.id)).collect();
            tracing::warn!(
                local_member_id = %format!("{:x}", self.node.raft.id),
                members = ?ids,
                "the member has been permanently removed from the cluster"
            );
            self.removed = Some(REMOVED_STOP_TICKS);
        }
    }
}
