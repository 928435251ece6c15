//! Auto-compaction (`--auto-compaction-mode`, `--auto-compaction-retention`), as etcd's compactor
//! decides it; the raft core proposes each compaction it asks for, while it leads.
//!
//! - **Periodic** (a retention period `P`): the current revision is sampled every `min(P, 1h)/10`,
//!   keeping the samples of the last `P`; once `P` has passed since the start (then every
//!   `min(P, 1h)` after the last compaction), the oldest sample — the revision of about `P` ago —
//!   is compacted.
//! - **Revision** (a retention of `R` revisions): every five minutes, the revision `R` behind the
//!   current one is compacted, unless it is not positive or was compacted last time.
//!
//! Samples go on being taken while the member does not lead; compactions are asked for only while
//! it does (etcd pauses its compactor on followers).
//!
//! Runs on: the raft core. Pure logic over the `now` it is given, so it is tested without time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How often revision mode compacts (etcd's `revInterval`).
const REVISION_INTERVAL: Duration = Duration::from_secs(300);
/// Periodic mode samples this many times per compaction interval (etcd's `retryDivisor`).
const SAMPLES: u32 = 10;

/// What `--auto-compaction-*` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Keep this much history.
    Periodic(Duration),
    /// Keep this many revisions.
    Revision(i64),
}

/// The compactor's state.
#[derive(Debug)]
pub struct Compactor {
    mode: AutoCompaction,
    /// When to look next.
    next: Instant,
    /// Periodic: the revisions sampled, oldest first; the first is the one of a period ago.
    samples: VecDeque<i64>,
    /// Periodic: the start, then the last compaction asked for.
    last: Instant,
    /// Periodic: how long after `last` to compact (the period, then the compaction interval).
    wait: Duration,
    /// Revision: the revision compacted last.
    prev: i64,
}

impl Compactor {
    /// A compactor started at `now`.
    pub fn new(mode: AutoCompaction, now: Instant) -> Compactor {
        let wait = match mode {
            AutoCompaction::Periodic(period) => period,
            AutoCompaction::Revision(_) => REVISION_INTERVAL,
        };
        tracing::info!(mode = ?mode, "auto compaction enabled");
        Compactor {
            mode,
            next: now,
            samples: VecDeque::new(),
            last: now,
            wait,
            prev: 0,
        }
    }

    /// Periodic mode's compaction interval: the period, at most an hour.
    fn interval(period: Duration) -> Duration {
        period.min(Duration::from_secs(3600))
    }

    /// Looks at the store's `revision` at `now`: the revision to compact, if one is due and this
    /// member `leads`.
    pub fn due(&mut self, now: Instant, revision: i64, leads: bool) -> Option<i64> {
        if now < self.next {
            return None;
        }
        match self.mode {
            AutoCompaction::Periodic(period) => {
                let every = Self::interval(period) / SAMPLES;
                self.next = now + every;
                // Decided on the samples before this one, as etcd samples and then waits.
                let due = leads && now.duration_since(self.last) >= self.wait;
                let at = self.samples.front().copied().filter(|_| due);
                self.samples.push_back(revision);
                let keep = (period.as_nanos() / every.as_nanos().max(1)) as usize + 1;
                while self.samples.len() > keep {
                    self.samples.pop_front();
                }
                if let Some(at) = at {
                    self.wait = Self::interval(period);
                    self.last = now;
                    tracing::info!(revision = at, compact_period = ?period, "starting auto periodic compaction");
                }
                at
            }
            AutoCompaction::Revision(retention) => {
                self.next = now + REVISION_INTERVAL;
                let at = revision - retention;
                if !leads || at <= 0 || at == self.prev {
                    return None;
                }
                self.prev = at;
                tracing::info!(
                    revision = at,
                    revision_compaction_retention = retention,
                    "starting auto revision compaction"
                );
                Some(at)
            }
        }
    }
}

/// `--auto-compaction-retention` read as etcd reads it for `mode`: a whole number is hours
/// (periodic) or revisions (revision); anything else a Go duration (periodic). `None`: off (0).
pub fn parse(mode: &str, retention: &str) -> Result<Option<AutoCompaction>, String> {
    let parsed = match (mode, retention.parse::<i64>()) {
        ("revision", Ok(n)) if n >= 0 => AutoCompaction::Revision(n),
        ("periodic", Ok(hours)) if hours >= 0 => {
            AutoCompaction::Periodic(Duration::from_secs(hours as u64 * 3600))
        }
        ("periodic" | "revision", _) => AutoCompaction::Periodic(
            crate::duration::parse(retention)
                .map_err(|e| format!("error parsing CompactionRetention: {e}"))?,
        ),
        (other, _) => return Err(format!("unknown auto-compaction-mode {other:?}")),
    };
    Ok(match parsed {
        AutoCompaction::Periodic(Duration::ZERO) | AutoCompaction::Revision(0) => None,
        on => Some(on),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_reads_as_etcd_reads_it() {
        let hour = Duration::from_secs(3600);
        assert_eq!(
            parse("periodic", "1"),
            Ok(Some(AutoCompaction::Periodic(hour)))
        );
        assert_eq!(
            parse("periodic", "90s"),
            Ok(Some(AutoCompaction::Periodic(Duration::from_secs(90))))
        );
        assert_eq!(
            parse("revision", "1000"),
            Ok(Some(AutoCompaction::Revision(1000)))
        );
        assert_eq!(parse("periodic", "0"), Ok(None));
        assert!(parse("hourly", "1").is_err());
        assert!(parse("periodic", "soon").is_err());
    }

    #[test]
    fn periodic_compacts_the_revision_of_one_period_ago_once_a_period_has_passed() {
        let start = Instant::now();
        let period = Duration::from_secs(10);
        let mut c = Compactor::new(AutoCompaction::Periodic(period), start);
        let mut asked = Vec::new();
        // The revision grows by 10 each second; samples every second (a tenth of the period).
        for second in 0..=25u64 {
            let now = start + Duration::from_secs(second);
            if let Some(at) = c.due(now, 10 * second as i64 + 1, true) {
                asked.push((second, at));
            }
        }
        // First after a full period, at the revision of ten seconds before; then every period.
        assert_eq!(asked, [(10, 1), (20, 91)]);
    }

    #[test]
    fn revision_mode_keeps_the_retention_and_only_the_leader_asks() {
        let start = Instant::now();
        let mut c = Compactor::new(AutoCompaction::Revision(100), start);
        assert_eq!(c.due(start, 50, true), None);
        let later = start + REVISION_INTERVAL;
        assert_eq!(c.due(later, 500, false), None);
        let later = later + REVISION_INTERVAL;
        assert_eq!(c.due(later, 500, true), Some(400));
        let later = later + REVISION_INTERVAL;
        assert_eq!(c.due(later, 500, true), None, "400 was compacted already");
        assert_eq!(
            c.due(later + Duration::from_secs(1), 900, true),
            None,
            "not due yet"
        );
    }
}
