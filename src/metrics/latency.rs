//! Where a request's time goes: one histogram per stage of its path through the member, on the
//! core that runs the stage (see [`Stage`]). Served at `/debug/latency` (text and JSON), as the
//! `keelson_stage_duration_seconds` family on `/metrics`, and read by `keelson profile`.
//!
//! A [`Distribution`] is log-linear: eight buckets per power of two, so a percentile read from it
//! is within 12.5 % of the true value, from 1 ns to about two minutes in 288 counters. Its
//! counters are atomics written by one core only (the stage's owner) and read at scrape time by
//! whichever core answers — hdrhistogram's counts are not atomic, and its cross-thread recorder
//! needs a handshake with every writer, which a core in the middle of a turn cannot give.
//!
//! Runs on: written by each owner core; read on the serving core that answers the scrape.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Sub-buckets per power of two (a power of two itself).
const SUB: u64 = 8;
const SUB_BITS: u32 = SUB.trailing_zeros();
/// Buckets: values below [`SUB`] exactly, then [`SUB`] per power of two up to 2^38 - 1.
const BUCKETS: usize = ((38 - SUB_BITS + 1) * SUB as u32) as usize;

/// The bucket `value` falls in.
fn bucket(value: u64) -> usize {
    if value < SUB {
        return value as usize;
    }
    let power = 63 - value.leading_zeros();
    let sub = (value >> (power - SUB_BITS)) & (SUB - 1);
    (((power - SUB_BITS + 1) as u64 * SUB + sub) as usize).min(BUCKETS - 1)
}

/// The largest value bucket `i` holds.
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let power = i / SUB - 1 + SUB_BITS as u64;
    let sub = i % SUB;
    ((SUB + sub + 1) << (power - SUB_BITS as u64)) - 1
}

/// A distribution of values (nanoseconds, or a count such as entries per batch), written by one
/// core.
#[derive(Debug)]
pub struct Distribution {
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Default for Distribution {
    fn default() -> Self {
        Distribution {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }
}

impl Distribution {
    /// Records one value (owner core only: a load and a store, no locked instruction).
    pub fn record(&self, value: u64) {
        let count = &self.counts[bucket(value)];
        count.store(count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        let sum = self.sum.load(Ordering::Relaxed).saturating_add(value);
        self.sum.store(sum, Ordering::Relaxed);
    }

    /// Records a duration, in nanoseconds.
    pub fn observe(&self, took: Duration) {
        self.record(took.as_nanos().min(u64::MAX as u128) as u64);
    }

    /// Adds this distribution's counts into `into`.
    pub fn add_to(&self, into: &mut Counts) {
        for (total, count) in into.buckets.iter_mut().zip(self.counts.iter()) {
            *total += count.load(Ordering::Relaxed);
        }
        into.sum = into.sum.saturating_add(self.sum.load(Ordering::Relaxed));
    }
}

/// A snapshot of one or more [`Distribution`]s: counts per bucket, and their sum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    buckets: Vec<u64>,
    sum: u64,
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            buckets: vec![0; BUCKETS],
            sum: 0,
        }
    }
}

impl Counts {
    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The sum of the values.
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// The value at quantile `q` (0..=1): the upper bound of the bucket it falls in; 0 if empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let count = self.count();
        if count == 0 {
            return 0;
        }
        let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return upper(i);
            }
        }
        upper(BUCKETS - 1)
    }

    /// How many values were at most `bound`, counting a bucket that straddles it as above it.
    pub fn at_most(&self, bound: u64) -> u64 {
        (self.buckets.iter().enumerate())
            .take_while(|(i, _)| upper(*i) <= bound)
            .map(|(_, &n)| n)
            .sum()
    }

    /// What was recorded after `earlier` (a snapshot of the same distributions taken before).
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            buckets: (self.buckets.iter().zip(&earlier.buckets))
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
            sum: self.sum.saturating_sub(earlier.sum),
        }
    }

    /// The non-empty buckets, as (largest value, count).
    pub fn nonzero(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        (self.buckets.iter().enumerate())
            .filter(|(_, n)| **n > 0)
            .map(|(i, &n)| (upper(i), n))
    }

    /// Counts from non-empty buckets given as (largest value, count) — what [`Counts::nonzero`]
    /// gave, as `/debug/latency`'s JSON carries it.
    pub fn from_nonzero(buckets: impl IntoIterator<Item = (u64, u64)>, sum: u64) -> Counts {
        let mut counts = Counts {
            sum,
            ..Counts::default()
        };
        for (value, n) in buckets {
            counts.buckets[bucket(value)] += n;
        }
        counts
    }
}

/// Whether a stage measures time or counts entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Nanoseconds,
    Entries,
}

/// A stage of a request's path, in the order a write or a read meets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// How late a serving core's 100 ms tick fires: how long the core ran without polling its
    /// sockets, which is how long a request's bytes may wait there unread.
    Lag,
    /// A call on its serving core, from its bytes' read off the connection to its handler's start.
    Queue,
    /// A serving core's batch of requests, from its send to the raft core's turn taking it.
    ToRaft,
    /// A proposal on the raft core, from `propose` to its answer (commit and apply), per request.
    Proposal,
    /// The WAL's write and fdatasync, per turn that persisted entries.
    WalSync,
    /// Entries per WAL write.
    WalBatch,
    /// Applying a batch of committed entries to the page file (publish included), per batch.
    Apply,
    /// Entries per applied batch.
    ApplyBatch,
    /// Writing a batch's new pages and publishing its tree to readers (part of apply).
    Publish,
    /// A page-file sync (etcd's backend commit), beside the turns.
    PageSync,
    /// A batch of answers, from the raft core's send to the serving core taking it.
    FromRaft,
    /// A write on its serving core, from proposal to outcome.
    Write,
    /// A linearizable read waiting for its read index to be applied.
    ReadIndex,
    /// Reading the page file for one request (a Range, a Txn's reads, a hash).
    Read,
    /// Encoding one response message (a streaming call's each).
    Encode,
}

impl Stage {
    /// Every stage, in path order.
    pub const ALL: [Stage; 15] = [
        Stage::Lag,
        Stage::Queue,
        Stage::ToRaft,
        Stage::Proposal,
        Stage::WalSync,
        Stage::WalBatch,
        Stage::Apply,
        Stage::ApplyBatch,
        Stage::Publish,
        Stage::PageSync,
        Stage::FromRaft,
        Stage::Write,
        Stage::ReadIndex,
        Stage::Read,
        Stage::Encode,
    ];

    /// The stage's name in `/debug/latency` and the `stage` label.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Lag => "lag",
            Stage::Queue => "queue",
            Stage::ToRaft => "to_raft",
            Stage::Proposal => "proposal",
            Stage::WalSync => "wal_sync",
            Stage::WalBatch => "wal_batch",
            Stage::Apply => "apply",
            Stage::ApplyBatch => "apply_batch",
            Stage::Publish => "publish",
            Stage::PageSync => "page_sync",
            Stage::FromRaft => "from_raft",
            Stage::Write => "write",
            Stage::ReadIndex => "read_index",
            Stage::Read => "read",
            Stage::Encode => "encode",
        }
    }

    /// What the stage measures.
    pub fn describe(self) -> &'static str {
        match self {
            Stage::Lag => "serving core: how late its 100 ms tick fires (sockets unpolled)",
            Stage::Queue => "serving core: a call from its bytes' read to its handler's start",
            Stage::ToRaft => "serving core -> raft core: a batch's send to the turn taking it",
            Stage::Proposal => "raft core: propose -> committed and applied, per request",
            Stage::WalSync => "raft core: WAL write + fdatasync, per turn",
            Stage::WalBatch => "raft core: entries per WAL write",
            Stage::Apply => "raft core: apply a batch to the page file, per batch",
            Stage::ApplyBatch => "raft core: entries per applied batch",
            Stage::Publish => "raft core: write a batch's pages and publish it (part of apply)",
            Stage::PageSync => "raft core: page-file sync (backend commit), beside the turns",
            Stage::FromRaft => "raft core -> serving core: an answer batch's send to its arrival",
            Stage::Write => "serving core: a write from proposal to outcome",
            Stage::ReadIndex => "serving core: a linearizable read waiting for its read index",
            Stage::Read => "serving core: reading the page file for one request",
            Stage::Encode => "serving core: encoding one response message",
        }
    }

    /// What the stage's values are.
    pub fn unit(self) -> Unit {
        match self {
            Stage::WalBatch | Stage::ApplyBatch => Unit::Entries,
            _ => Unit::Nanoseconds,
        }
    }

    /// Whether the raft core runs the stage (else each serving core does).
    pub fn on_raft_core(self) -> bool {
        !matches!(
            self,
            Stage::Lag
                | Stage::Queue
                | Stage::FromRaft
                | Stage::Write
                | Stage::ReadIndex
                | Stage::Read
                | Stage::Encode
        )
    }
}

/// One [`Distribution`] per [`Stage`], of one core.
#[derive(Debug)]
pub struct Stages([Distribution; Stage::ALL.len()]);

impl Default for Stages {
    fn default() -> Self {
        Stages(std::array::from_fn(|_| Distribution::default()))
    }
}

impl Stages {
    /// The distribution of `stage`.
    pub fn of(&self, stage: Stage) -> &Distribution {
        &self.0[stage as usize]
    }

    /// Records a duration for `stage`.
    pub fn observe(&self, stage: Stage, took: Duration) {
        self.of(stage).observe(took);
    }
}

/// A value of `unit` as a person reads it.
pub fn human(value: u64, unit: Unit) -> String {
    match unit {
        Unit::Entries => value.to_string(),
        Unit::Nanoseconds if value < 10_000 => format!("{:.1}µs", value as f64 / 1e3),
        Unit::Nanoseconds if value < 10_000_000 => format!("{:.0}µs", value as f64 / 1e3),
        Unit::Nanoseconds => format!("{:.0}ms", value as f64 / 1e6),
    }
}

/// The quantiles the table shows.
const QUANTILES: [(f64, &str); 4] = [(0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p99.9")];

/// A table of `stages`: count, mean and quantiles of each, with what it measures.
pub fn table(stages: &[(Stage, Counts)]) -> String {
    let mut out = format!("{:<12} {:>10} {:>9}", "stage", "count", "mean");
    for (_, name) in QUANTILES {
        let _ = write!(out, " {name:>9}");
    }
    out.push_str("  what\n");
    for (stage, counts) in stages {
        let count = counts.count();
        let mean = counts.sum().checked_div(count).unwrap_or(0);
        let _ = write!(
            out,
            "{:<12} {count:>10} {:>9}",
            stage.name(),
            human(mean, stage.unit())
        );
        for (q, _) in QUANTILES {
            let _ = write!(out, " {:>9}", human(counts.quantile(q), stage.unit()));
        }
        let _ = writeln!(out, "  {}", stage.describe());
    }
    out
}

/// `stages` as JSON: for each, its name, unit, count, sum, quantiles and non-empty buckets.
pub fn json(stages: &[(Stage, Counts)]) -> String {
    let mut out = String::from("{\"stages\":[");
    for (n, (stage, counts)) in stages.iter().enumerate() {
        let unit = match stage.unit() {
            Unit::Nanoseconds => "ns",
            Unit::Entries => "entries",
        };
        let _ = write!(
            out,
            "{}{{\"stage\":\"{}\",\"unit\":\"{unit}\",\"what\":\"{}\",\"count\":{},\"sum\":{}",
            if n > 0 { "," } else { "" },
            stage.name(),
            stage.describe(),
            counts.count(),
            counts.sum()
        );
        for (q, name) in QUANTILES {
            let _ = write!(out, ",\"{name}\":{}", counts.quantile(q));
        }
        out.push_str(",\"buckets\":[");
        for (i, (value, count)) in counts.nonzero().enumerate() {
            let _ = write!(out, "{}[{value},{count}]", if i > 0 { "," } else { "" });
        }
        out.push_str("]}");
    }
    out.push_str("]}\n");
    out
}

/// Prometheus bounds of `keelson_stage_duration_seconds`: powers of two from 1 µs to ~8.4 s.
const PROMETHEUS_BOUNDS: u32 = 24;

/// The time stages as one Prometheus histogram family, labelled by stage.
pub fn render(stages: &[(Stage, Counts)], out: &mut String) {
    let name = "keelson_stage_duration_seconds";
    super::describe(
        out,
        name,
        "histogram",
        "Time spent in each stage of a request's path through the member (see /debug/latency).",
    );
    for (stage, counts) in stages.iter().filter(|(s, _)| s.unit() == Unit::Nanoseconds) {
        let stage = stage.name();
        for power in 0..PROMETHEUS_BOUNDS {
            let bound = 1000u64 << power;
            let _ = writeln!(
                out,
                "{name}_bucket{{stage=\"{stage}\",le=\"{}\"}} {}",
                bound as f64 / 1e9,
                counts.at_most(bound)
            );
        }
        let count = counts.count();
        let _ = writeln!(
            out,
            "{name}_bucket{{stage=\"{stage}\",le=\"+Inf\"}} {count}\n\
             {name}_sum{{stage=\"{stage}\"}} {}\n{name}_count{{stage=\"{stage}\"}} {count}",
            counts.sum() as f64 / 1e9
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_falls_in_a_bucket_whose_bounds_hold_it_within_an_eighth() {
        for value in (0..5000).chain([1 << 20, 123_456_789, (1 << 38) - 1]) {
            let i = bucket(value);
            assert!(value <= upper(i), "{value} above bucket {i}'s bound");
            assert!(
                i == 0 || value > upper(i - 1),
                "{value} fits bucket {}",
                i - 1
            );
            assert!(upper(i) - value <= value / 8, "{value} in {}", upper(i));
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_come_from_the_recorded_values() {
        let d = Distribution::default();
        for v in 1..=1000u64 {
            d.record(v * 1000);
        }
        let mut counts = Counts::default();
        d.add_to(&mut counts);
        assert_eq!(counts.count(), 1000);
        assert_eq!(counts.sum(), 500_500_000);
        let p50 = counts.quantile(0.5);
        assert!((500_000..=562_500).contains(&p50), "p50 {p50}");
        let p99 = counts.quantile(0.99);
        assert!((990_000..=1_114_000).contains(&p99), "p99 {p99}");
        assert_eq!(Counts::default().quantile(0.5), 0);
    }

    #[test]
    fn a_later_snapshot_less_an_earlier_one_is_what_came_between() {
        let d = Distribution::default();
        d.record(10);
        let mut before = Counts::default();
        d.add_to(&mut before);
        d.record(5000);
        d.record(5000);
        let mut after = Counts::default();
        d.add_to(&mut after);
        let between = after.since(&before);
        assert_eq!((between.count(), between.sum()), (2, 10_000));
        let carried = Counts::from_nonzero(between.nonzero(), between.sum());
        assert_eq!(carried, between);
    }
}
