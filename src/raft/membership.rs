//! etcd's checks before a membership change is proposed. With `--strict-reconfig-check` (etcd's
//! default) a change may not leave fewer *started* members — members that have published their
//! name — than a quorum of the voters it leaves, and this member must have been connected to
//! every voter for [`HEALTH_INTERVAL`] before it adds a member or removes a reachable voter. A
//! learner is promoted only once its log is within [`READY_FRACTION`] of the leader's, a check
//! only the leader can make. The checks the change must pass when it is applied (ids, peer URLs,
//! learner count) are the store's (`engine/src/mvcc/members.rs`).
//!
//! Pure functions of the members, the raft state and the transport's connections, so they are
//! tested without a cluster.
//!
//! Runs on: the raft core.

use std::time::{Duration, Instant};

use keelson_engine::mvcc::members::{Change, Member};

use super::seams::Declined;

/// How long every voter must have been connected before a change that could break quorum
/// (etcd's `HealthInterval`).
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// How close to the leader's log a learner's must be to be promoted (etcd's `readyPercent`).
pub const READY_FRACTION: f64 = 0.9;

/// What the checks look at.
pub struct Cluster<'a> {
    /// The members as applied.
    pub members: &'a [Member],
    /// This member.
    pub me: u64,
    /// `--strict-reconfig-check`.
    pub strict: bool,
    /// Since when each member has been reachable from this one (`None`: it is not).
    pub active_since: &'a dyn Fn(u64) -> Option<Instant>,
    /// Now.
    pub now: Instant,
    /// On the leader, each member's matched index (`None`: this member does not lead).
    pub matched: Option<&'a dyn Fn(u64) -> Option<u64>>,
}

impl Cluster<'_> {
    fn voters(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| !m.is_learner)
    }

    /// Whether every voter but this member has been reachable since `HEALTH_INTERVAL` ago.
    fn connected_to_every_voter(&self) -> bool {
        self.voters()
            .filter(|m| m.id != self.me)
            .all(|m| self.connected_long_enough(m.id))
    }

    fn connected_long_enough(&self, id: u64) -> bool {
        (self.active_since)(id).is_some_and(|since| since + HEALTH_INTERVAL <= self.now)
    }

    /// Checks `change` before it is proposed.
    pub fn check(&self, change: &Change) -> Result<(), Declined> {
        match change {
            Change::Attributes { .. } | Change::Update { .. } => Ok(()),
            Change::Add(member) => self.may_add(member.is_learner),
            Change::Remove(id) => self.may_remove(*id),
            Change::Promote(id) => self.may_promote(*id),
        }
    }

    fn may_add(&self, is_learner: bool) -> Result<(), Declined> {
        if !self.strict {
            return Ok(());
        }
        if !is_learner {
            let members = 1 + self.voters().count();
            let started = self.voters().filter(|m| is_started(m)).count();
            // Adding a second member to one (to restore a cluster from it) is allowed.
            let restoring = started == 1 && members == 2;
            if !restoring && started < quorum(members) {
                return Err(Declined::NotEnoughStarted);
            }
        }
        if !self.connected_to_every_voter() {
            return Err(Declined::Unhealthy);
        }
        Ok(())
    }

    fn may_remove(&self, id: u64) -> Result<(), Declined> {
        if !self.strict || self.members.iter().any(|m| m.id == id && m.is_learner) {
            return Ok(());
        }
        let rest: Vec<&Member> = self.voters().filter(|m| m.id != id).collect();
        let started = rest.iter().filter(|m| is_started(m)).count();
        if started < quorum(rest.len()) {
            return Err(Declined::NotEnoughStarted);
        }
        // A member this one cannot reach may go: removing it cannot cost a live quorum.
        if id != self.me && (self.active_since)(id).is_none() {
            return Ok(());
        }
        let voters = self.voters().count();
        let connected = self
            .voters()
            .filter(|m| m.id == self.me || self.connected_long_enough(m.id))
            .count();
        if connected - 1 < 1 + (voters - 1) / 2 {
            return Err(Declined::Unhealthy);
        }
        Ok(())
    }

    fn may_promote(&self, id: u64) -> Result<(), Declined> {
        let Some(matched) = self.matched else {
            return Err(Declined::NotLeader);
        };
        if let Some(learner) = matched(id) {
            let leader = matched(self.me).unwrap_or(0);
            if (learner as f64) < leader as f64 * READY_FRACTION {
                return Err(Declined::LearnerNotReady);
            }
        }
        if !self.strict {
            return Ok(());
        }
        // The learner counts as a started voter.
        let members = 1 + self.voters().count();
        let started = 1 + self.voters().filter(|m| is_started(m)).count();
        if started < quorum(members) {
            return Err(Declined::NotEnoughStarted);
        }
        Ok(())
    }
}

/// Whether a member has started: it published its name.
fn is_started(member: &Member) -> bool {
    !member.name.is_empty()
}

fn quorum(members: usize) -> usize {
    members / 2 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, started: bool, is_learner: bool) -> Member {
        Member {
            id,
            peer_urls: vec![format!("http://10.0.0.{id}:2380")],
            is_learner,
            name: if started {
                format!("m{id}")
            } else {
                String::new()
            },
            client_urls: Vec::new(),
        }
    }

    fn check(members: &[Member], reachable: &[u64], leads: bool, change: Change) -> String {
        let now = Instant::now();
        let long_ago = now - 2 * HEALTH_INTERVAL;
        let active = |id: u64| reachable.contains(&id).then_some(long_ago);
        let matched = |id: u64| -> Option<u64> {
            match id {
                1 => Some(100),
                4 => Some(85),
                5 => Some(95),
                _ => None,
            }
        };
        let cluster = Cluster {
            members,
            me: 1,
            strict: true,
            active_since: &active,
            now,
            matched: leads.then_some(&matched as &dyn Fn(u64) -> Option<u64>),
        };
        format!("{:?}", cluster.check(&change))
    }

    #[test]
    fn changes_are_checked_as_etcd_checks_them_before_proposing() {
        let three = [
            member(1, true, false),
            member(2, true, false),
            member(3, false, false),
        ];
        let add = |is_learner| Change::Add(member(9, false, is_learner));
        // Two of four started is short of a quorum of the four.
        assert_eq!(
            check(&three, &[2, 3], true, add(false)),
            "Err(NotEnoughStarted)"
        );
        // A learner is no voter; but every voter must be reachable.
        assert_eq!(check(&three, &[2, 3], true, add(true)), "Ok(())");
        assert_eq!(check(&three, &[2], true, add(true)), "Err(Unhealthy)");
        // A second member for one that restores a cluster.
        assert_eq!(
            check(&[member(1, true, false)], &[], true, add(false)),
            "Ok(())"
        );
        // Removing the member that never started leaves two started of two.
        assert_eq!(check(&three, &[2, 3], true, Change::Remove(3)), "Ok(())");
        // Removing a started one leaves one started of two.
        assert_eq!(
            check(&three, &[2, 3], true, Change::Remove(2)),
            "Err(NotEnoughStarted)"
        );
        let four = [
            member(1, true, false),
            member(2, true, false),
            member(3, true, false),
            member(4, true, true),
            member(5, true, true),
        ];
        // An unreachable voter may go; a reachable one only if the rest stay connected.
        assert_eq!(check(&four, &[2], true, Change::Remove(3)), "Ok(())");
        assert_eq!(
            check(&four, &[3], true, Change::Remove(3)),
            "Err(Unhealthy)"
        );
        assert_eq!(check(&four, &[2, 3], true, Change::Remove(3)), "Ok(())");
        // A learner at 85 of the leader's 100 is behind; at 95 it is in sync.
        assert_eq!(
            check(&four, &[2, 3], true, Change::Promote(4)),
            "Err(LearnerNotReady)"
        );
        assert_eq!(check(&four, &[2, 3], true, Change::Promote(5)), "Ok(())");
        assert_eq!(
            check(&four, &[2, 3], false, Change::Promote(5)),
            "Err(NotLeader)"
        );
    }
}
