//! Prometheus metrics under etcd's names, for what exists. Every value is an atomic written by one
//! core only — the raft core's in [`RaftMetrics`], each serving core's own row of
//! [`CoreMetrics`] — and summed when `/metrics` is scraped, so counting never shares a cache line
//! between cores on the hot path.
//!
//! Runs on: written by each owner core; rendered on the serving core that answers `/metrics`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

pub mod latency;
mod process;

/// A histogram with Prometheus' exponential buckets: `count` upper bounds doubling from `first`
/// (`ExponentialBuckets(first, 2, count)`).
#[derive(Debug)]
pub struct Histogram {
    first: f64,
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    /// The sum of observations, as `f64` bits (one writer: no lost updates).
    sum: AtomicU64,
}

impl Default for Histogram {
    /// etcd's disk histograms: 14 buckets doubling from 1 ms.
    fn default() -> Self {
        Histogram::exponential(0.001, 14)
    }
}

impl Histogram {
    /// Empty, with `count` buckets doubling from `first`.
    pub fn exponential(first: f64, count: usize) -> Histogram {
        Histogram {
            first,
            buckets: (0..count).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    fn bound(&self, i: usize) -> f64 {
        self.first * 2f64.powi(i as i32)
    }

    /// Records a duration, in seconds (owner core only).
    pub fn observe(&self, took: Duration) {
        self.record(took.as_secs_f64());
    }

    /// Records one observation (owner core only).
    pub fn record(&self, value: f64) {
        if let Some(i) = (0..self.buckets.len()).find(|&i| value <= self.bound(i)) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let sum = f64::from_bits(self.sum.load(Ordering::Relaxed)) + value;
        self.sum.store(sum.to_bits(), Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        Histogram::render_sum(&[self], name, help, out);
    }

    /// Renders the sum of `parts` (histograms with the same buckets: one per core) as one.
    fn render_sum(parts: &[&Histogram], name: &str, help: &str, out: &mut String) {
        describe(out, name, "histogram", help);
        Histogram::render_series(parts, name, "", out);
    }

    /// Renders the sum of `parts` as one series of family `name`, its samples labelled with
    /// `labels` (`key="value"` pairs, comma-separated; empty: none) besides `le`.
    fn render_series(parts: &[&Histogram], name: &str, labels: &str, out: &mut String) {
        let Some(first) = parts.first() else { return };
        let (with_le, alone) = if labels.is_empty() {
            (String::new(), String::new())
        } else {
            (format!("{labels},"), format!("{{{labels}}}"))
        };
        let mut cumulative = 0;
        for i in 0..first.buckets.len() {
            cumulative += parts
                .iter()
                .map(|h| h.buckets[i].load(Ordering::Relaxed))
                .sum::<u64>();
            let _ = writeln!(
                out,
                "{name}_bucket{{{with_le}le=\"{}\"}} {cumulative}",
                first.bound(i)
            );
        }
        let count: u64 = parts.iter().map(|h| h.count.load(Ordering::Relaxed)).sum();
        let sum: f64 = parts
            .iter()
            .map(|h| f64::from_bits(h.sum.load(Ordering::Relaxed)))
            .sum();
        let _ = writeln!(out, "{name}_bucket{{{with_le}le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{alone} {sum}\n{name}_count{alone} {count}");
    }
}

/// What the raft core measures.
#[derive(Debug)]
pub struct RaftMetrics {
    /// WAL write + fdatasync per turn.
    pub wal_fsync: Histogram,
    /// Page-file sync (the backend commit).
    pub backend_commit: Histogram,
    /// Leader changes seen.
    pub leader_changes: AtomicU64,
    /// Proposals that failed (no leader).
    pub proposals_failed: AtomicU64,
    /// Proposals waiting to be applied.
    pub proposals_pending: AtomicU64,
    /// Leases granted (applied).
    pub leases_granted: AtomicU64,
    /// Leases revoked or expired (applied).
    pub leases_revoked: AtomicU64,
    /// Renewals the leader answered.
    pub leases_renewed: AtomicU64,
    /// Granted times to live, in seconds (etcd's buckets: 1 s to 3 months).
    pub lease_ttl: Histogram,
    /// Leases the lessor found expired and revoked.
    pub leases_expired: AtomicU64,
    /// Applied batches that took longer than etcd's warning (100 ms).
    pub slow_applies: AtomicU64,
    /// Read-index rounds refused (no leader).
    pub read_indexes_failed: AtomicU64,
    /// The store's current revision.
    pub current_revision: AtomicI64,
    /// The latest compaction asked for.
    pub compact_revision: AtomicI64,
    /// Keys alive.
    pub keys: AtomicI64,
    /// Versions compactions removed.
    pub compaction_keys: AtomicU64,
    /// Each compaction batch, in milliseconds (etcd's pause).
    pub compaction_pause: Histogram,
    /// Each whole compaction, in milliseconds.
    pub compaction_total: Histogram,
    /// Each defragmentation.
    pub defrag: Histogram,
    /// Whether a defragmentation runs.
    pub defrag_inflight: AtomicU64,
    /// Bytes the WAL wrote.
    pub wal_bytes: AtomicU64,
    /// The raft core's stages of a request's path (`/debug/latency`).
    pub stages: latency::Stages,
    /// Traffic with each other member, as the peer transport knows them (it adds and drops them
    /// as members come and go; locked only then, when a connection starts, and when rendered).
    pub peers: std::sync::Mutex<Vec<Arc<PeerCounters>>>,
    /// The leader's heartbeats that could not be sent.
    pub heartbeat_send_failures: AtomicU64,
}

/// The peer transport's counts for one other member (etcd's `etcd_network_peer_*` families).
#[derive(Debug)]
pub struct PeerCounters {
    /// The member's id.
    pub id: u64,
    /// Bytes sent to it.
    pub sent_bytes: AtomicU64,
    /// Bytes received from it.
    pub received_bytes: AtomicU64,
    /// Messages that could not be sent to it (not connected, or the write failed).
    pub sent_failures: AtomicU64,
    /// Round trips of the leader's heartbeats to it (etcd's buckets: 0.1 ms doubling, 16).
    pub round_trip: Histogram,
    /// Snapshots sent to it, received and verified there.
    pub snapshots_sent: AtomicU64,
    /// Snapshots that could not be sent to it.
    pub snapshot_send_failures: AtomicU64,
    /// Snapshots received from it and verified.
    pub snapshots_received: AtomicU64,
    /// Snapshots from it that did not arrive whole or failed verification.
    pub snapshot_receive_failures: AtomicU64,
}

impl PeerCounters {
    /// Counters for member `id`.
    pub fn new(id: u64) -> PeerCounters {
        PeerCounters {
            id,
            sent_bytes: AtomicU64::default(),
            received_bytes: AtomicU64::default(),
            sent_failures: AtomicU64::default(),
            round_trip: Histogram::exponential(0.0001, 16),
            snapshots_sent: AtomicU64::default(),
            snapshot_send_failures: AtomicU64::default(),
            snapshots_received: AtomicU64::default(),
            snapshot_receive_failures: AtomicU64::default(),
        }
    }
}

impl RaftMetrics {
    /// The counts for member `id` (`None`: not a peer).
    pub fn peer(&self, id: u64) -> Option<Arc<PeerCounters>> {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.iter().find(|p| p.id == id).cloned()
    }

    /// Makes `ids` the peers counted: new ones start at zero, others keep their counts. Returns
    /// the counters of `ids`, in order.
    pub fn set_peers(&self, ids: &[u64]) -> Vec<Arc<PeerCounters>> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let kept: Vec<Arc<PeerCounters>> = ids
            .iter()
            .map(|&id| {
                peers
                    .iter()
                    .find(|p| p.id == id)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(PeerCounters::new(id)))
            })
            .collect();
        *peers = kept.clone();
        kept
    }
}

impl Default for RaftMetrics {
    fn default() -> Self {
        RaftMetrics {
            wal_fsync: Histogram::default(),
            backend_commit: Histogram::default(),
            leader_changes: AtomicU64::default(),
            proposals_failed: AtomicU64::default(),
            proposals_pending: AtomicU64::default(),
            leases_granted: AtomicU64::default(),
            leases_revoked: AtomicU64::default(),
            leases_renewed: AtomicU64::default(),
            lease_ttl: Histogram::exponential(1.0, 24),
            leases_expired: AtomicU64::default(),
            slow_applies: AtomicU64::default(),
            read_indexes_failed: AtomicU64::default(),
            current_revision: AtomicI64::default(),
            compact_revision: AtomicI64::default(),
            keys: AtomicI64::default(),
            compaction_keys: AtomicU64::default(),
            compaction_pause: Histogram::exponential(1.0, 20),
            compaction_total: Histogram::exponential(100.0, 14),
            defrag: Histogram::exponential(0.1, 13),
            defrag_inflight: AtomicU64::default(),
            wal_bytes: AtomicU64::default(),
            stages: latency::Stages::default(),
            peers: std::sync::Mutex::default(),
            heartbeat_send_failures: AtomicU64::default(),
        }
    }
}

/// How a gRPC method is called, as `grpc_type` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One request, one response.
    Unary,
    /// Streams both ways.
    BidiStream,
    /// One request, a stream of responses.
    ServerStream,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Unary => "unary",
            Kind::BidiStream => "bidi_stream",
            Kind::ServerStream => "server_stream",
        }
    }
}

/// The gRPC methods keelson serves, as `grpc_server_*_total` label them.
pub const METHODS: &[(&str, &str, Kind)] = &[
    ("etcdserverpb.KV", "Range", Kind::Unary),
    ("etcdserverpb.KV", "Put", Kind::Unary),
    ("etcdserverpb.KV", "DeleteRange", Kind::Unary),
    ("etcdserverpb.KV", "Txn", Kind::Unary),
    ("etcdserverpb.KV", "Compact", Kind::Unary),
    ("etcdserverpb.Watch", "Watch", Kind::BidiStream),
    ("etcdserverpb.Lease", "LeaseGrant", Kind::Unary),
    ("etcdserverpb.Lease", "LeaseRevoke", Kind::Unary),
    ("etcdserverpb.Lease", "LeaseKeepAlive", Kind::BidiStream),
    ("etcdserverpb.Lease", "LeaseTimeToLive", Kind::Unary),
    ("etcdserverpb.Lease", "LeaseLeases", Kind::Unary),
    ("etcdserverpb.Maintenance", "Alarm", Kind::Unary),
    ("etcdserverpb.Maintenance", "Status", Kind::Unary),
    ("etcdserverpb.Maintenance", "Defragment", Kind::Unary),
    ("etcdserverpb.Maintenance", "Hash", Kind::Unary),
    ("etcdserverpb.Maintenance", "HashKV", Kind::Unary),
    ("etcdserverpb.Maintenance", "Snapshot", Kind::ServerStream),
    ("etcdserverpb.Maintenance", "MoveLeader", Kind::Unary),
    ("etcdserverpb.Cluster", "MemberAdd", Kind::Unary),
    ("etcdserverpb.Cluster", "MemberRemove", Kind::Unary),
    ("etcdserverpb.Cluster", "MemberUpdate", Kind::Unary),
    ("etcdserverpb.Cluster", "MemberList", Kind::Unary),
    ("etcdserverpb.Cluster", "MemberPromote", Kind::Unary),
    ("v3lockpb.Lock", "Lock", Kind::Unary),
    ("v3lockpb.Lock", "Unlock", Kind::Unary),
    ("v3electionpb.Election", "Campaign", Kind::Unary),
    ("v3electionpb.Election", "Proclaim", Kind::Unary),
    ("v3electionpb.Election", "Leader", Kind::Unary),
    ("v3electionpb.Election", "Observe", Kind::ServerStream),
    ("v3electionpb.Election", "Resign", Kind::Unary),
    ("grpc.health.v1.Health", "Check", Kind::Unary),
    ("grpc.health.v1.Health", "Watch", Kind::ServerStream),
];

/// gRPC status codes by number, as labels.
const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// What a serving core's watch hub holds, as etcd's `etcd_debugging_mvcc_*` report it. Each core
/// adds to and takes from its own; the sums are the member's.
#[derive(Debug, Default)]
pub struct WatchGauges {
    /// Open watch streams.
    pub streams: AtomicI64,
    /// Watchers.
    pub watchers: AtomicI64,
    /// Watchers catching up from history (etcd's unsynced and victim watchers).
    pub slow: AtomicI64,
    /// Events handed to a stream and not yet taken by its connection.
    pub pending_events: AtomicI64,
    /// Events sent.
    pub events: AtomicI64,
}

impl WatchGauges {
    /// Adds `by` (negative: takes) to `gauge` (owner core only).
    pub fn add(gauge: &AtomicI64, by: i64) {
        gauge.fetch_add(by, Ordering::Relaxed);
    }
}

/// The store's operations a serving core asked for, as etcd counts them: each put, delete and
/// range (those in txns too), each txn of more than one operation, and the bytes put.
#[derive(Debug, Default)]
pub struct StoreOps {
    /// Puts.
    pub puts: AtomicU64,
    /// Deletes.
    pub deletes: AtomicU64,
    /// Ranges.
    pub ranges: AtomicU64,
    /// Txns of more than one operation.
    pub txns: AtomicU64,
    /// Keys and values put, in bytes.
    pub put_bytes: AtomicU64,
}

impl StoreOps {
    /// Counts `n` of `counter` (owner core only).
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The checks of `/livez` and `/readyz`: (probe, check), in the order they run.
pub const PROBES: &[(&str, &str)] = &[
    ("livez", "serializable_read"),
    ("readyz", "data_corruption"),
    ("readyz", "serializable_read"),
    ("readyz", "linearizable_read"),
    ("readyz", "non_learner"),
];

/// One serving core's metrics: gRPC calls started and handled (by method and code), its watch
/// hub, the bytes of gRPC messages it sent and received, and the health checks it answered.
#[derive(Debug)]
pub struct CoreMetrics {
    started: Vec<AtomicU64>,
    handled: Vec<[AtomicU64; CODES.len()]>,
    /// `/health` answers: healthy, unhealthy.
    health: [AtomicU64; 2],
    /// Each of [`PROBES`] run: passed, failed.
    probes: [[AtomicU64; 2]; PROBES.len()],
    /// The store's operations this core asked for (etcd's `etcd_mvcc_*_total`).
    pub ops: StoreOps,
    /// Hash calls.
    pub hash: Histogram,
    /// HashKV calls.
    pub hash_kv: Histogram,
    /// Snapshots sent.
    pub snapshot: Histogram,
    /// This core's watch hub.
    pub watch: WatchGauges,
    /// The bytes of the gRPC messages sent (as etcd counts them: the encoded messages, without
    /// gRPC's framing).
    pub sent_bytes: AtomicU64,
    /// The bytes of the gRPC messages received, counted as those sent.
    pub received_bytes: AtomicU64,
    /// This core's stages of a request's path (`/debug/latency`).
    pub stages: latency::Stages,
}

impl Default for CoreMetrics {
    fn default() -> Self {
        CoreMetrics {
            started: METHODS.iter().map(|_| AtomicU64::new(0)).collect(),
            handled: METHODS.iter().map(|_| Default::default()).collect(),
            health: Default::default(),
            probes: Default::default(),
            ops: StoreOps::default(),
            hash: Histogram::exponential(0.01, 15),
            hash_kv: Histogram::exponential(0.01, 15),
            snapshot: Histogram::exponential(0.01, 17),
            watch: WatchGauges::default(),
            sent_bytes: AtomicU64::default(),
            received_bytes: AtomicU64::default(),
            stages: latency::Stages::default(),
        }
    }
}

/// What a serving core's gRPC codecs report ([`keelson_proto::codec`]): its message bytes and its
/// `encode` stage.
pub struct CodecObserver {
    /// Every serving core's metrics.
    pub cores: Arc<[CoreMetrics]>,
    /// The core observed.
    pub core: usize,
}

impl keelson_proto::codec::Observer for CodecObserver {
    fn encoded(&self, bytes: usize, took: Duration) {
        let own = &self.cores[self.core];
        own.sent_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        own.stages.observe(latency::Stage::Encode, took);
    }

    fn decoded(&self, bytes: usize) {
        (self.cores[self.core].received_bytes).fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// The position in [`METHODS`] of the gRPC call at `path` (`/service/method`), if keelson counts it.
pub fn method_index(path: &str) -> Option<usize> {
    let (service, method) = path.trim_start_matches('/').split_once('/')?;
    METHODS
        .iter()
        .position(|&(s, m, _)| s == service && m == method)
}

impl CoreMetrics {
    /// Counts a call to `METHODS[method]` that started (owner core only).
    pub fn started(&self, method: usize) {
        if let Some(counter) = self.started.get(method) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a `/health` answer (owner core only).
    pub fn health_checked(&self, healthy: bool) {
        self.health[usize::from(!healthy)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts check `PROBES[probe]` run, passed or not (owner core only).
    pub fn probe_checked(&self, probe: usize, passed: bool) {
        if let Some(counts) = self.probes.get(probe) {
            counts[usize::from(!passed)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a call to `METHODS[method]` that ended with gRPC status `code` (owner core only).
    pub fn handled(&self, method: usize, code: usize) {
        if let Some(counter) = self.handled.get(method).and_then(|codes| codes.get(code)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What is read at scrape time.
pub struct Scrape {
    /// This member.
    pub member_id: u64,
    /// A leader is known.
    pub has_leader: bool,
    /// This member leads.
    pub is_leader: bool,
    /// This member is a learner.
    pub is_learner: bool,
    /// Raft commit index.
    pub committed: u64,
    /// Applied index.
    pub applied: u64,
    /// Page-file bytes (its published tree).
    pub db_size: u64,
    /// Of which in use (not free pages).
    pub db_in_use: u64,
    /// Read transactions open on the page file.
    pub open_reads: usize,
    /// The backend quota (`None`: none).
    pub quota: Option<u64>,
    /// Log lines dropped because stderr was slow or gone.
    pub log_lines_dropped: u64,
}

/// Writes the HELP and TYPE lines of family `name`.
fn describe(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Writes family `name` with its one unlabelled sample.
fn family(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    describe(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// The Prometheus text of everything.
/// Every stage's counts: the raft core's stages from the raft core, the others summed over the
/// serving cores.
pub fn stages(raft: &RaftMetrics, cores: &[CoreMetrics]) -> Vec<(latency::Stage, latency::Counts)> {
    latency::Stage::ALL
        .into_iter()
        .map(|stage| {
            let mut counts = latency::Counts::default();
            if stage.on_raft_core() {
                raft.stages.of(stage).add_to(&mut counts);
            } else {
                for core in cores {
                    core.stages.of(stage).add_to(&mut counts);
                }
            }
            (stage, counts)
        })
        .collect()
}

pub fn render(raft: &RaftMetrics, cores: &[CoreMetrics], gauges: &Scrape) -> String {
    let mut out = String::new();
    render_member(raft, cores, gauges, &mut out);
    render_peers(raft, &mut out);
    latency::render(&stages(raft, cores), &mut out);
    process::render(&mut out);
    let mut gauge = |name: &str, kind: &str, help: &str, value: u64| {
        family(&mut out, name, kind, help, value);
    };
    gauge(
        "etcd_server_has_leader",
        "gauge",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
        u64::from(gauges.has_leader),
    );
    gauge(
        "etcd_server_leader_changes_seen_total",
        "counter",
        "The number of leader changes seen.",
        raft.leader_changes.load(Ordering::Relaxed),
    );
    gauge(
        "etcd_server_proposals_committed_total",
        "gauge",
        "The total number of consensus proposals committed.",
        gauges.committed,
    );
    gauge(
        "etcd_server_proposals_applied_total",
        "gauge",
        "The total number of consensus proposals applied.",
        gauges.applied,
    );
    gauge(
        "etcd_server_proposals_pending",
        "gauge",
        "The current number of pending proposals to commit.",
        raft.proposals_pending.load(Ordering::Relaxed),
    );
    gauge(
        "etcd_server_proposals_failed_total",
        "counter",
        "The total number of failed proposals seen.",
        raft.proposals_failed.load(Ordering::Relaxed),
    );
    gauge(
        "etcd_mvcc_db_total_size_in_bytes",
        "gauge",
        "Total size of the underlying database physically allocated in bytes.",
        gauges.db_size,
    );
    gauge(
        "etcd_debugging_mvcc_db_total_size_in_bytes",
        "gauge",
        "Total size of the underlying database physically allocated in bytes.",
        gauges.db_size,
    );
    gauge(
        "keelson_log_lines_dropped_total",
        "counter",
        "Log lines dropped because the log destination was full or closed.",
        gauges.log_lines_dropped,
    );
    let sum = |of: fn(&WatchGauges) -> &AtomicI64| -> u64 {
        let total: i64 = cores
            .iter()
            .map(|c| of(&c.watch).load(Ordering::Relaxed))
            .sum();
        total.max(0) as u64
    };
    for (name, kind, help, value) in [
        (
            "etcd_debugging_mvcc_watch_stream_total",
            "gauge",
            "Total number of watch streams.",
            sum(|w| &w.streams),
        ),
        (
            "etcd_debugging_mvcc_watcher_total",
            "gauge",
            "Total number of watchers.",
            sum(|w| &w.watchers),
        ),
        (
            "etcd_debugging_mvcc_slow_watcher_total",
            "gauge",
            "Total number of unsynced slow watchers.",
            sum(|w| &w.slow),
        ),
        (
            "etcd_debugging_mvcc_events_total",
            "counter",
            "Total number of events sent by this member.",
            sum(|w| &w.events),
        ),
        (
            "etcd_debugging_mvcc_pending_events_total",
            "gauge",
            "Total number of pending events to be sent.",
            sum(|w| &w.pending_events),
        ),
        (
            "etcd_network_client_grpc_sent_bytes_total",
            "counter",
            "The total number of bytes sent to grpc clients.",
            cores
                .iter()
                .map(|c| c.sent_bytes.load(Ordering::Relaxed))
                .sum(),
        ),
        (
            "etcd_network_client_grpc_received_bytes_total",
            "counter",
            "The total number of bytes received from grpc clients.",
            cores
                .iter()
                .map(|c| c.received_bytes.load(Ordering::Relaxed))
                .sum(),
        ),
        (
            "etcd_debugging_lease_granted_total",
            "counter",
            "The total number of granted leases.",
            raft.leases_granted.load(Ordering::Relaxed),
        ),
        (
            "etcd_debugging_lease_revoked_total",
            "counter",
            "The total number of revoked leases.",
            raft.leases_revoked.load(Ordering::Relaxed),
        ),
        (
            "etcd_debugging_lease_renewed_total",
            "counter",
            "The number of renewed leases seen by the leader.",
            raft.leases_renewed.load(Ordering::Relaxed),
        ),
    ] {
        gauge(name, kind, help, value);
    }
    let health = |i: usize| {
        cores
            .iter()
            .map(|c| c.health[i].load(Ordering::Relaxed))
            .sum()
    };
    gauge(
        "etcd_server_health_success",
        "counter",
        "The total number of successful health checks",
        health(0),
    );
    gauge(
        "etcd_server_health_failures",
        "counter",
        "The total number of failed health checks",
        health(1),
    );
    let name = "etcd_server_healthchecks_total";
    describe(
        &mut out,
        name,
        "counter",
        "The total number of each kind of healthcheck.",
    );
    for (i, (kind, check)) in PROBES.iter().enumerate() {
        for (outcome, status) in ["success", "error"].iter().enumerate() {
            let total: u64 = cores
                .iter()
                .map(|c| c.probes[i][outcome].load(Ordering::Relaxed))
                .sum();
            let _ = writeln!(
                out,
                "{name}{{name=\"{check}\",status=\"{status}\",type=\"{kind}\"}} {total}"
            );
        }
    }
    raft.lease_ttl.render(
        "etcd_debugging_lease_ttl_total",
        "Bucketed histogram of lease TTLs.",
        &mut out,
    );
    raft.wal_fsync.render(
        "etcd_disk_wal_fsync_duration_seconds",
        "The latency distributions of fsync called by WAL.",
        &mut out,
    );
    raft.backend_commit.render(
        "etcd_disk_backend_commit_duration_seconds",
        "The latency distributions of commit called by backend.",
        &mut out,
    );
    let name = "grpc_server_started_total";
    describe(
        &mut out,
        name,
        "counter",
        "Total number of RPCs started on the server.",
    );
    for (i, (service, method, kind)) in METHODS.iter().enumerate() {
        let total: u64 = cores
            .iter()
            .map(|c| c.started[i].load(Ordering::Relaxed))
            .sum();
        let kind = kind.label();
        let _ = writeln!(
            out,
            "{name}{{grpc_method=\"{method}\",grpc_service=\"{service}\",grpc_type=\"{kind}\"}} {total}"
        );
    }
    let name = "grpc_server_handled_total";
    describe(
        &mut out,
        name,
        "counter",
        "Total number of RPCs completed on the server, regardless of success or failure.",
    );
    for (i, (service, method, kind)) in METHODS.iter().enumerate() {
        let kind = kind.label();
        for (code, label) in CODES.iter().enumerate() {
            let total: u64 = cores
                .iter()
                .map(|c| c.handled[i][code].load(Ordering::Relaxed))
                .sum();
            let _ = writeln!(
                out,
                "{name}{{grpc_code=\"{label}\",grpc_method=\"{method}\",grpc_service=\"{service}\",grpc_type=\"{kind}\"}} {total}"
            );
        }
    }
    out
}

/// The peer transport's families, one sample per other member (none for a single member).
fn render_peers(raft: &RaftMetrics, out: &mut String) {
    let peers = raft.peers.lock().unwrap_or_else(|p| p.into_inner()).clone();
    type Count = fn(&PeerCounters) -> &AtomicU64;
    let families: [(&str, &str, &str, Count); 7] = [
        (
            "etcd_network_peer_sent_bytes_total",
            "To",
            "The total number of bytes sent to peers.",
            |p| &p.sent_bytes,
        ),
        (
            "etcd_network_peer_received_bytes_total",
            "From",
            "The total number of bytes received from peers.",
            |p| &p.received_bytes,
        ),
        (
            "etcd_network_peer_sent_failures_total",
            "To",
            "The total number of send failures from peers.",
            |p| &p.sent_failures,
        ),
        (
            "etcd_network_snapshot_send_success",
            "To",
            "Total number of successful snapshot sends",
            |p| &p.snapshots_sent,
        ),
        (
            "etcd_network_snapshot_send_failures",
            "To",
            "Total number of snapshot send failures",
            |p| &p.snapshot_send_failures,
        ),
        (
            "etcd_network_snapshot_receive_success",
            "From",
            "Total number of successful snapshot receives",
            |p| &p.snapshots_received,
        ),
        (
            "etcd_network_snapshot_receive_failures",
            "From",
            "Total number of snapshot receive failures",
            |p| &p.snapshot_receive_failures,
        ),
    ];
    for (name, label, help, count) in families {
        describe(out, name, "counter", help);
        for peer in peers.iter() {
            let value = count(peer).load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{{label}=\"{:x}\"}} {value}", peer.id);
        }
    }
    let name = "etcd_network_peer_round_trip_time_seconds";
    describe(
        out,
        name,
        "histogram",
        "Round-Trip-Time histogram between peers",
    );
    for peer in peers.iter() {
        let labels = format!("To=\"{:x}\"", peer.id);
        Histogram::render_series(&[&peer.round_trip], name, &labels, out);
    }
}

/// The member's families beside the ones [`render`] writes itself: identity, leadership, the
/// store's operations and sizes, compactions, defragmentations, hashes and snapshots.
fn render_member(raft: &RaftMetrics, cores: &[CoreMetrics], scrape: &Scrape, out: &mut String) {
    let mut one = |name: &str, kind: &str, help: &str, sample: String| {
        describe(out, name, kind, help);
        let _ = writeln!(out, "{name}{sample}");
    };
    let api = crate::api::maintenance::ETCD_VERSION;
    one(
        "etcd_server_version",
        "gauge",
        "Which version is running. 1 for 'server_version' label with current version.",
        format!("{{server_version=\"{api}\"}} 1"),
    );
    one(
        "etcd_cluster_version",
        "gauge",
        "Which version is running. 1 for 'cluster_version' label with current cluster version",
        "{cluster_version=\"3.4\"} 1".into(),
    );
    one(
        "etcd_server_id",
        "gauge",
        "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
        format!("{{server_id=\"{:x}\"}} 1", scrape.member_id),
    );
    let total = |of: fn(&StoreOps) -> &AtomicU64| -> u64 {
        cores
            .iter()
            .map(|c| of(&c.ops).load(Ordering::Relaxed))
            .sum()
    };
    let started = |streams: bool| -> u64 {
        METHODS
            .iter()
            .enumerate()
            .filter(|(_, (_, _, kind))| (*kind != Kind::Unary) == streams)
            .map(|(i, _)| {
                cores
                    .iter()
                    .map(|c| c.started[i].load(Ordering::Relaxed))
                    .sum::<u64>()
            })
            .sum()
    };
    let name = "etcd_server_client_requests_total";
    describe(
        out,
        name,
        "counter",
        "The total number of client requests per client version.",
    );
    for (kind, streams) in [("unary", false), ("stream", true)] {
        let _ = writeln!(
            out,
            "{name}{{client_api_version=\"3.4\",type=\"{kind}\"}} {}",
            started(streams)
        );
    }
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let signed = |a: &AtomicI64| a.load(Ordering::Relaxed);
    let quota = scrape.quota.map_or(-1.0, |q| q as f64);
    for (name, kind, help, value) in [
        (
            "etcd_server_is_leader",
            "gauge",
            "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            u64::from(scrape.is_leader).to_string(),
        ),
        (
            "etcd_server_is_learner",
            "gauge",
            "Whether or not this member is a learner. 1 if is, 0 otherwise.",
            u64::from(scrape.is_learner).to_string(),
        ),
        (
            "etcd_server_quota_backend_bytes",
            "gauge",
            "Current backend storage quota size in bytes.",
            quota.to_string(),
        ),
        (
            "etcd_server_heartbeat_send_failures_total",
            "counter",
            "The total number of leader heartbeat send failures (likely overloaded from slow disk).",
            load(&raft.heartbeat_send_failures).to_string(),
        ),
        (
            "etcd_server_slow_apply_total",
            "counter",
            "The total number of slow apply requests (likely overloaded from slow disk).",
            load(&raft.slow_applies).to_string(),
        ),
        (
            "etcd_server_read_indexes_failed_total",
            "counter",
            "The total number of failed read indexes seen.",
            load(&raft.read_indexes_failed).to_string(),
        ),
        (
            "etcd_server_heartbeat_send_failures_total",
            "counter",
            "The total number of leader heartbeat send failures (likely overloaded from slow disk).",
            "0".into(),
        ),
        (
            "etcd_debugging_server_lease_expired_total",
            "counter",
            "The total number of expired leases.",
            load(&raft.leases_expired).to_string(),
        ),
        (
            "etcd_mvcc_put_total",
            "counter",
            "Total number of puts seen by this member.",
            total(|o| &o.puts).to_string(),
        ),
        (
            "etcd_mvcc_delete_total",
            "counter",
            "Total number of deletes seen by this member.",
            total(|o| &o.deletes).to_string(),
        ),
        (
            "etcd_mvcc_range_total",
            "counter",
            "Total number of ranges seen by this member.",
            total(|o| &o.ranges).to_string(),
        ),
        (
            "etcd_mvcc_txn_total",
            "counter",
            "Total number of txns seen by this member.",
            total(|o| &o.txns).to_string(),
        ),
        (
            "etcd_debugging_mvcc_put_total",
            "counter",
            "Total number of puts seen by this member.",
            total(|o| &o.puts).to_string(),
        ),
        (
            "etcd_debugging_mvcc_delete_total",
            "counter",
            "Total number of deletes seen by this member.",
            total(|o| &o.deletes).to_string(),
        ),
        (
            "etcd_debugging_mvcc_range_total",
            "counter",
            "Total number of ranges seen by this member.",
            total(|o| &o.ranges).to_string(),
        ),
        (
            "etcd_debugging_mvcc_txn_total",
            "counter",
            "Total number of txns seen by this member.",
            total(|o| &o.txns).to_string(),
        ),
        (
            "etcd_debugging_mvcc_total_put_size_in_bytes",
            "gauge",
            "The total size of put kv pairs seen by this member.",
            total(|o| &o.put_bytes).to_string(),
        ),
        (
            "etcd_debugging_mvcc_keys_total",
            "gauge",
            "Total number of keys.",
            signed(&raft.keys).to_string(),
        ),
        (
            "etcd_debugging_mvcc_current_revision",
            "gauge",
            "The current revision of store.",
            signed(&raft.current_revision).to_string(),
        ),
        (
            "etcd_debugging_mvcc_compact_revision",
            "gauge",
            "The revision of the last compaction in store.",
            signed(&raft.compact_revision).to_string(),
        ),
        (
            "etcd_debugging_mvcc_db_compaction_keys_total",
            "counter",
            "Total number of db keys compacted.",
            load(&raft.compaction_keys).to_string(),
        ),
        (
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "gauge",
            "Total size of the underlying database logically in use in bytes.",
            scrape.db_in_use.to_string(),
        ),
        (
            "etcd_mvcc_db_open_read_transactions",
            "gauge",
            "The number of currently open read transactions",
            scrape.open_reads.to_string(),
        ),
        (
            "etcd_disk_defrag_inflight",
            "gauge",
            "Whether or not defrag is active on the member. 1 means active, 0 means not.",
            load(&raft.defrag_inflight).to_string(),
        ),
        (
            "etcd_disk_wal_write_bytes_total",
            "gauge",
            "Total number of bytes written in WAL.",
            load(&raft.wal_bytes).to_string(),
        ),
    ] {
        family(out, name, kind, help, value);
    }
    raft.compaction_pause.render(
        "etcd_debugging_mvcc_db_compaction_pause_duration_milliseconds",
        "Bucketed histogram of db compaction pause duration.",
        out,
    );
    raft.compaction_total.render(
        "etcd_debugging_mvcc_db_compaction_total_duration_milliseconds",
        "Bucketed histogram of db compaction total duration.",
        out,
    );
    raft.defrag.render(
        "etcd_disk_backend_defrag_duration_seconds",
        "The latency distribution of backend defragmentation.",
        out,
    );
    let per_core = |of: fn(&CoreMetrics) -> &Histogram| cores.iter().map(of).collect::<Vec<_>>();
    Histogram::render_sum(
        &per_core(|c| &c.snapshot),
        "etcd_disk_backend_snapshot_duration_seconds",
        "The latency distribution of backend snapshots.",
        out,
    );
    Histogram::render_sum(
        &per_core(|c| &c.hash),
        "etcd_mvcc_hash_duration_seconds",
        "The latency distribution of storage hash operation.",
        out,
    );
    Histogram::render_sum(
        &per_core(|c| &c.hash_kv),
        "etcd_mvcc_hash_rev_duration_seconds",
        "The latency distribution of storage hash by revision operation.",
        out,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_calls_counted_by_method_and_code() {
        let raft = RaftMetrics::default();
        raft.wal_fsync.observe(Duration::from_micros(300));
        raft.wal_fsync.observe(Duration::from_millis(3));
        let cores = [CoreMetrics::default(), CoreMetrics::default()];
        let put = method_index("/etcdserverpb.KV/Put").unwrap();
        let range = method_index("/etcdserverpb.KV/Range").unwrap();
        assert_eq!(method_index("/nope/Nope"), None);
        cores[0].handled(put, 0);
        cores[1].handled(put, 0);
        cores[1].handled(range, 11);
        let text = render(
            &raft,
            &cores,
            &Scrape {
                member_id: 0xabc,
                has_leader: true,
                is_leader: true,
                is_learner: false,
                committed: 5,
                applied: 4,
                db_size: 4096,
                db_in_use: 2048,
                open_reads: 1,
                quota: Some(1 << 31),
                log_lines_dropped: 3,
            },
        );
        assert!(text.contains("etcd_server_id{server_id=\"abc\"} 1\n"));
        assert!(text.contains("etcd_mvcc_db_total_size_in_use_in_bytes 2048\n"));
        assert!(text.contains("etcd_server_quota_backend_bytes 2147483648\n"));
        assert!(text.contains("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(text.contains("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.004\"} 2\n"));
        assert!(text.contains("etcd_disk_wal_fsync_duration_seconds_count 2\n"));
        assert!(text.contains("etcd_server_has_leader 1\n"));
        assert!(text.contains("keelson_log_lines_dropped_total 3\n"));
        assert!(text.contains(
            "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 2\n"
        ));
        assert!(text.contains(
            "grpc_server_handled_total{grpc_code=\"OutOfRange\",grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 1\n"
        ));
    }
}
