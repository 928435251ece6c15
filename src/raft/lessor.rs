//! The lessor: every lease's time to live and, on the leader, its deadline. Leases come and go as
//! their grants and revokes are applied (on every member, from the log); deadlines exist only on
//! the leader (the *primary*), which renews them in memory — a renewal is never a raft entry — and
//! proposes the revoke of each lease whose deadline passed and, every checkpoint interval, the
//! time each long lease has left (etcd's lease checkpoint), so that a restart or a new leader does
//! not hand every lease its full time to live again.
//!
//! Deadlines and checkpoints are kept in min-heaps with lazy deletion: an entry is acted on only if
//! it still matches its lease (a renewed lease has a newer entry; a revoked one has none). Revokes
//! are rate-limited like etcd's (`leaseRevokeRate`, 1000 a second), and a lease whose revoke was
//! proposed is offered again after [`RETRY_EXPIRED`] if it is still there.
//!
//! When a member becomes leader, every deadline is set afresh: now, plus the election timeout (the
//! old leader's deadlines may have been that much later), plus the time left at the lease's last
//! checkpoint or, if it has none, its full time to live. That is etcd's rule; so is a renewal
//! clearing the checkpoint.
//!
//! Runs on: the raft core. Pure logic over the `now` it is given, so it is tested without time.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

/// Leases revoked per second at most (etcd's `leaseRevokeRate`).
pub const REVOKE_RATE: f64 = 1000.0;
/// After this, a lease whose revoke was proposed but is still there is proposed again (etcd's
/// `expiredLeaseRetryInterval`).
pub const RETRY_EXPIRED: Duration = Duration::from_secs(3);
/// Checkpoints per proposal at most (etcd's `maxLeaseCheckpointBatchSize`).
pub const CHECKPOINT_BATCH: usize = 1000;
/// etcd's default checkpoint interval.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(300);

/// How the lessor behaves.
#[derive(Debug, Clone, Copy)]
pub struct LeaseOptions {
    /// How often long leases are checkpointed; `None`: never.
    pub checkpoint_interval: Option<Duration>,
    /// Added to every deadline when this member becomes leader (the election timeout).
    pub promote_extension: Duration,
}

/// What applying a batch did to leases, as the lessor learns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseChange {
    /// Lease `id` was granted `ttl` seconds.
    Granted {
        /// The lease.
        id: i64,
        /// Its time to live, in seconds, as granted.
        ttl: i64,
    },
    /// Lease `id` was revoked (or expired).
    Revoked(i64),
    /// Lease `id` was checkpointed with `remaining` seconds left (0: the checkpoint cleared).
    Checkpointed {
        /// The lease.
        id: i64,
        /// Seconds left.
        remaining: i64,
    },
}

/// What the leader must propose now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// Leases whose deadline passed.
    pub revoke: Vec<i64>,
    /// Leases to checkpoint, with the seconds they have left.
    pub checkpoints: Vec<(i64, i64)>,
}

/// A renewal's outcome.
#[derive(Debug, PartialEq, Eq)]
pub enum Renewed {
    /// Renewed for its full time to live (seconds); `clear_checkpoint`: propose a checkpoint of 0
    /// seconds, so that a restart does not go back to the old checkpoint.
    Ttl {
        /// The lease's time to live.
        ttl: i64,
        /// Whether its checkpoint must be cleared.
        clear_checkpoint: bool,
    },
    /// No such lease, or it has expired (a keep-alive answers TTL 0).
    Gone,
    /// This member is not the leader.
    NotPrimary,
}

#[derive(Debug)]
struct Lease {
    ttl: i64,
    /// Seconds left at its last checkpoint (0: none).
    remaining: i64,
    /// Its deadline, on the primary.
    deadline: Option<Instant>,
    /// When it is next checkpointed, on the primary.
    next_checkpoint: Option<Instant>,
}

/// The lessor of one member.
#[derive(Debug)]
pub struct Lessor {
    options: LeaseOptions,
    leases: HashMap<i64, Lease>,
    primary: bool,
    deadlines: BinaryHeap<Reverse<(Instant, i64)>>,
    checkpoints: BinaryHeap<Reverse<(Instant, i64)>>,
    /// Revokes that may be proposed now (a token bucket filled at [`REVOKE_RATE`]).
    revoke_budget: f64,
    last_due: Option<Instant>,
}

impl Lessor {
    /// The lessor over the leases the store holds: `(id, ttl, remaining at its last checkpoint)`.
    pub fn new(options: LeaseOptions, stored: impl IntoIterator<Item = (i64, i64, i64)>) -> Self {
        let leases = stored
            .into_iter()
            .map(|(id, ttl, remaining)| {
                let lease = Lease {
                    ttl,
                    remaining,
                    deadline: None,
                    next_checkpoint: None,
                };
                (id, lease)
            })
            .collect();
        Lessor {
            options,
            leases,
            primary: false,
            deadlines: BinaryHeap::new(),
            checkpoints: BinaryHeap::new(),
            revoke_budget: REVOKE_RATE / 2.0,
            last_due: None,
        }
    }

    /// A lessor with this one's options over the leases `stored` holds, not primary: a follower's
    /// after it installed a snapshot from the leader.
    pub fn reloaded(&self, stored: impl IntoIterator<Item = (i64, i64, i64)>) -> Lessor {
        Lessor::new(self.options, stored)
    }

    /// Whether this member keeps deadlines (it is the leader).
    pub fn is_primary(&self) -> bool {
        self.primary
    }

    /// Learns what an applied batch did.
    pub fn applied(&mut self, change: &LeaseChange, now: Instant) {
        match *change {
            LeaseChange::Granted { id, ttl } => {
                self.leases.insert(
                    id,
                    Lease {
                        ttl,
                        remaining: 0,
                        deadline: None,
                        next_checkpoint: None,
                    },
                );
                if self.primary {
                    self.start(id, now + Duration::from_secs(ttl.max(0) as u64), now);
                }
            }
            LeaseChange::Revoked(id) => {
                self.leases.remove(&id);
            }
            LeaseChange::Checkpointed { id, remaining } => {
                if let Some(lease) = self.leases.get_mut(&id) {
                    lease.remaining = remaining;
                    if self.primary {
                        self.schedule_checkpoint(id, now);
                    }
                }
            }
        }
    }

    /// This member became leader: every lease gets a deadline by etcd's rule.
    pub fn promote(&mut self, now: Instant) {
        self.primary = true;
        self.deadlines.clear();
        self.checkpoints.clear();
        let extension = self.options.promote_extension;
        let ids: Vec<(i64, i64)> = self
            .leases
            .iter()
            .map(|(&id, l)| (id, if l.remaining > 0 { l.remaining } else { l.ttl }))
            .collect();
        for (id, left) in ids {
            let deadline = now + extension + Duration::from_secs(left.max(0) as u64);
            self.start(id, deadline, now);
        }
    }

    /// This member is no longer leader: it keeps no deadlines.
    pub fn demote(&mut self) {
        self.primary = false;
        self.deadlines.clear();
        self.checkpoints.clear();
        for lease in self.leases.values_mut() {
            lease.deadline = None;
            lease.next_checkpoint = None;
        }
    }

    /// Renews lease `id` for its full time to live.
    pub fn renew(&mut self, id: i64, now: Instant) -> Renewed {
        if !self.primary {
            return Renewed::NotPrimary;
        }
        let Some(lease) = self.leases.get(&id) else {
            return Renewed::Gone;
        };
        if lease.deadline.is_none_or(|d| d <= now) {
            // Expired: its revoke is on its way.
            return Renewed::Gone;
        }
        let (ttl, clear_checkpoint) = (lease.ttl, lease.remaining > 0);
        self.start(id, now + Duration::from_secs(ttl.max(0) as u64), now);
        Renewed::Ttl {
            ttl,
            clear_checkpoint,
        }
    }

    /// Lease `id`'s time left (whole seconds, as etcd truncates it) and granted time to live, if
    /// it exists. Off the primary, the time left is the granted time to live.
    pub fn time_to_live(&self, id: i64, now: Instant) -> Option<(i64, i64)> {
        let lease = self.leases.get(&id)?;
        let left = match lease.deadline {
            Some(deadline) if deadline > now => (deadline - now).as_secs() as i64,
            Some(_) => 0,
            None => lease.ttl,
        };
        Some((left, lease.ttl))
    }

    /// Every lease, soonest deadline first (etcd's order).
    pub fn by_deadline(&self) -> Vec<i64> {
        let mut all: Vec<(Option<Instant>, i64)> = self
            .leases
            .iter()
            .map(|(&id, l)| (l.deadline, id))
            .collect();
        all.sort_by_key(|&(deadline, id)| (deadline.is_none(), deadline, id));
        all.into_iter().map(|(_, id)| id).collect()
    }

    /// The revokes and checkpoints to propose at `now` (none off the primary).
    pub fn due(&mut self, now: Instant) -> Due {
        let mut due = Due::default();
        if !self.primary {
            return due;
        }
        let elapsed = self.last_due.map_or(Duration::ZERO, |last| now - last);
        self.last_due = Some(now);
        self.revoke_budget =
            (self.revoke_budget + elapsed.as_secs_f64() * REVOKE_RATE).min(REVOKE_RATE / 2.0);
        while self.revoke_budget >= 1.0 {
            let Some(&Reverse((at, id))) = self.deadlines.peek() else {
                break;
            };
            if at > now {
                break;
            }
            self.deadlines.pop();
            let Some(lease) = self.leases.get(&id) else {
                continue;
            };
            if lease.deadline.is_none_or(|d| d > at) {
                // Renewed since: a later entry stands for it.
                continue;
            }
            due.revoke.push(id);
            self.revoke_budget -= 1.0;
            self.deadlines.push(Reverse((now + RETRY_EXPIRED, id)));
        }
        while due.checkpoints.len() < CHECKPOINT_BATCH {
            let Some(&Reverse((at, id))) = self.checkpoints.peek() else {
                break;
            };
            if at > now {
                break;
            }
            self.checkpoints.pop();
            let Some(lease) = self.leases.get_mut(&id) else {
                continue;
            };
            if lease.next_checkpoint != Some(at) {
                continue;
            }
            lease.next_checkpoint = None;
            if let Some(deadline) = lease.deadline.filter(|&d| d > now) {
                let left = (deadline - now).as_secs_f64().ceil() as i64;
                due.checkpoints.push((id, left));
            }
        }
        due
    }

    /// Gives lease `id` `deadline` (primary only) and schedules its next checkpoint.
    fn start(&mut self, id: i64, deadline: Instant, now: Instant) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.deadline = Some(deadline);
            self.deadlines.push(Reverse((deadline, id)));
            self.schedule_checkpoint(id, now);
        }
    }

    /// Schedules lease `id`'s next checkpoint, if checkpoints are on and it outlives an interval.
    fn schedule_checkpoint(&mut self, id: i64, now: Instant) {
        let (Some(interval), Some(lease)) =
            (self.options.checkpoint_interval, self.leases.get_mut(&id))
        else {
            return;
        };
        let outlives = lease
            .deadline
            .is_some_and(|deadline| deadline > now + interval);
        if outlives && lease.next_checkpoint.is_none() {
            let at = now + interval;
            lease.next_checkpoint = Some(at);
            self.checkpoints.push(Reverse((at, id)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: LeaseOptions = LeaseOptions {
        checkpoint_interval: Some(Duration::from_secs(60)),
        promote_extension: Duration::from_secs(1),
    };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_lease_expires_unless_renewed_and_only_the_leader_counts() {
        let t0 = Instant::now();
        let mut lessor = Lessor::new(OPTIONS, []);
        lessor.applied(&LeaseChange::Granted { id: 1, ttl: 10 }, t0);
        assert_eq!(lessor.renew(1, t0), Renewed::NotPrimary);
        assert_eq!(
            lessor.due(t0 + secs(100)),
            Due::default(),
            "a follower revokes nothing"
        );
        lessor.promote(t0);
        // Promoted: the full time to live plus the election timeout.
        assert_eq!(lessor.time_to_live(1, t0), Some((11, 10)));
        assert!(lessor.due(t0 + secs(10)).revoke.is_empty());
        assert_eq!(
            lessor.renew(1, t0 + secs(10)),
            Renewed::Ttl {
                ttl: 10,
                clear_checkpoint: false
            }
        );
        assert!(lessor.due(t0 + secs(19)).revoke.is_empty());
        assert_eq!(lessor.due(t0 + secs(20)).revoke, vec![1]);
        // Expired: not renewable; offered again later if its revoke did not land.
        assert_eq!(lessor.renew(1, t0 + secs(21)), Renewed::Gone);
        assert!(lessor.due(t0 + secs(22)).revoke.is_empty());
        assert_eq!(lessor.due(t0 + secs(23)).revoke, vec![1]);
        lessor.applied(&LeaseChange::Revoked(1), t0 + secs(23));
        assert_eq!(lessor.due(t0 + secs(30)), Due::default());
        assert_eq!(lessor.time_to_live(1, t0), None);
        assert_eq!(lessor.renew(1, t0), Renewed::Gone);
    }

    #[test]
    fn checkpoints_carry_the_time_left_across_a_new_leader() {
        let t0 = Instant::now();
        let mut lessor = Lessor::new(OPTIONS, []);
        lessor.promote(t0);
        lessor.applied(&LeaseChange::Granted { id: 7, ttl: 600 }, t0);
        lessor.applied(&LeaseChange::Granted { id: 8, ttl: 30 }, t0);
        let due = lessor.due(t0 + secs(60));
        assert_eq!(
            due.checkpoints,
            vec![(7, 540)],
            "only leases that outlive an interval"
        );
        lessor.applied(
            &LeaseChange::Checkpointed {
                id: 7,
                remaining: 540,
            },
            t0 + secs(60),
        );
        // A restart: the lessor comes back from the store's records.
        let mut restarted = Lessor::new(OPTIONS, [(7, 600, 540), (8, 30, 0)]);
        let t1 = t0 + secs(100);
        restarted.promote(t1);
        assert_eq!(restarted.time_to_live(7, t1), Some((541, 600)));
        assert_eq!(restarted.time_to_live(8, t1), Some((31, 30)));
        // A renewal restores the full time to live and asks for the checkpoint to be cleared.
        assert_eq!(
            restarted.renew(7, t1),
            Renewed::Ttl {
                ttl: 600,
                clear_checkpoint: true
            }
        );
        assert_eq!(restarted.by_deadline(), vec![8, 7]);
    }

    #[test]
    fn revokes_are_rate_limited() {
        let t0 = Instant::now();
        let stored = (1..=2000).map(|id| (id, 5, 0));
        let mut lessor = Lessor::new(OPTIONS, stored);
        lessor.promote(t0);
        let at = t0 + secs(10);
        let first = lessor.due(at);
        assert_eq!(first.revoke.len(), (REVOKE_RATE / 2.0) as usize);
        let later = lessor.due(at + Duration::from_millis(100));
        assert_eq!(later.revoke.len(), (REVOKE_RATE / 10.0) as usize);
        let mut all: Vec<i64> = first.revoke.into_iter().chain(later.revoke).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 600, "no lease offered twice");
    }
}
