//! The server's configuration: etcd's flags, names and defaults (also read from `ETCD_*`
//! environment variables, as etcd does), plus keelson's own `--cores`. [`Config::from_flags`]
//! checks them and derives what the rest of the server needs (addresses, members, ids), so an
//! invalid combination is refused before anything starts.
//!
//! etcd flags keelson recognises but does not act on yet are accepted with a warning
//! ([`INERT_FLAGS`]); any other flag is an error worded as etcd words it.
//!
//! Runs on: the main thread, before any core starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args as ClapArgs;

use crate::raft::compactor::{self, AutoCompaction};
use crate::raft::lessor;
use crate::{duration, ids};

/// etcd's defaults that the flags below refer to.
const DEFAULT_NAME: &str = "default";
const DEFAULT_CLIENT_URL: &str = "http://localhost:2379";
const DEFAULT_PEER_URL: &str = "http://localhost:2380";
/// The largest `--max-request-bytes` keelson takes: a proposal is one WAL record, and a record must
/// fit in a 64 MiB segment.
const MAX_REQUEST_BYTES: u32 = 32 << 20;
/// etcd's default period of watch progress notifications.
const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(600);
/// etcd's shortest period of watch progress notifications (`minWatchProgressInterval`).
const MIN_PROGRESS_INTERVAL: Duration = Duration::from_millis(100);
/// etcd's `--snapshot-catchup-entries` default.
pub const DEFAULT_CATCH_UP_ENTRIES: u64 = 5000;
/// etcd's `--snapshot-count` default.
pub const DEFAULT_SNAPSHOT_COUNT: u64 = 100_000;

/// The flags of `keelson` (no subcommand): etcd's, with etcd's names and defaults.
#[derive(Debug, Clone, ClapArgs)]
pub struct Flags {
    /// Print the version (etcd's API version, and keelson's) and exit.
    #[arg(long)]
    pub version: bool,
    /// Path to the server configuration file (etcd's YAML); other flags and ETCD_* variables are
    /// then ignored.
    #[arg(long, env = "ETCD_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = DEFAULT_NAME)]
    pub name: String,
    /// Path to the data directory (default: `<name>.etcd`).
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Path to the dedicated WAL directory (default: `<data-dir>/member/wal`).
    #[arg(long, env = "ETCD_WAL_DIR")]
    pub wal_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic (comma-separated).
    #[arg(long, env = "ETCD_LISTEN_CLIENT_URLS", default_value = DEFAULT_CLIENT_URL)]
    pub listen_client_urls: String,
    /// Additional URLs to serve /metrics and the health endpoints on (plain HTTP).
    #[arg(long, env = "ETCD_LISTEN_METRICS_URLS", default_value = "")]
    pub listen_metrics_urls: String,
    /// This member's client URLs to advertise to the rest of the cluster.
    #[arg(long, env = "ETCD_ADVERTISE_CLIENT_URLS", default_value = DEFAULT_CLIENT_URL)]
    pub advertise_client_urls: String,
    /// URLs to listen on for peer traffic.
    #[arg(long, env = "ETCD_LISTEN_PEER_URLS", default_value = DEFAULT_PEER_URL)]
    pub listen_peer_urls: String,
    /// This member's peer URLs to advertise to the rest of the cluster.
    #[arg(long, env = "ETCD_INITIAL_ADVERTISE_PEER_URLS", default_value = DEFAULT_PEER_URL)]
    pub initial_advertise_peer_urls: String,
    /// Initial cluster configuration for bootstrapping: `name=peerURL,...`
    /// (default: `<name>=<initial-advertise-peer-urls>`).
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Initial cluster state ('new' or 'existing').
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", default_value = "new")]
    pub initial_cluster_state: String,
    /// Initial cluster token for the etcd cluster during bootstrap.
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    pub initial_cluster_token: String,
    /// Interpret 'auto-compaction-retention' one of: periodic|revision.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_MODE", default_value = "periodic")]
    pub auto_compaction_mode: String,
    /// Auto compaction retention for mvcc key value store: a duration, or a whole number of hours
    /// (periodic) or revisions (revision); 0 means off.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_RETENTION", default_value = "0")]
    pub auto_compaction_retention: String,
    /// Number of committed transactions to trigger a snapshot to disk (keelson: entries a leader
    /// keeps for a follower behind, at most; one further behind is sent the page file).
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = DEFAULT_SNAPSHOT_COUNT)]
    pub snapshot_count: u64,
    /// Number of entries for a slow follower to catch up after compacting the raft storage
    /// entries (default 5000; etcd 3.6's spelling).
    #[arg(long, env = "ETCD_SNAPSHOT_CATCHUP_ENTRIES")]
    pub snapshot_catchup_entries: Option<u64>,
    /// The same, as etcd 3.5 spells it (either way).
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_SNAPSHOT_CATCHUP_ENTRIES",
        alias = "experimental-snapshot-catch-up-entries"
    )]
    pub experimental_snapshot_catchup_entries: Option<u64>,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,
    /// Raise alarms when backend size exceeds the given quota (0 defaults to low space quota).
    #[arg(
        long,
        env = "ETCD_QUOTA_BACKEND_BYTES",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub quota_backend_bytes: i64,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    pub max_request_bytes: u32,
    /// Maximum concurrent streams that each client can open at a time.
    #[arg(long, env = "ETCD_MAX_CONCURRENT_STREAMS", default_value_t = u32::MAX)]
    pub max_concurrent_streams: u32,
    /// Frequency duration of server-to-client ping to check if a connection is alive (0 to
    /// disable).
    #[arg(long, env = "ETCD_GRPC_KEEPALIVE_INTERVAL", value_parser = duration::parse, default_value = "2h")]
    pub grpc_keepalive_interval: Duration,
    /// Additional duration of wait before closing a non-responsive connection (0 to disable).
    #[arg(long, env = "ETCD_GRPC_KEEPALIVE_TIMEOUT", value_parser = duration::parse, default_value = "20s")]
    pub grpc_keepalive_timeout: Duration,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: u32,
    /// Log level: debug, info, warn, error, panic or fatal.
    #[arg(long, env = "ETCD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Duration of periodic watch progress notifications (etcd 3.6's spelling; default 10m).
    #[arg(long, env = "ETCD_WATCH_PROGRESS_NOTIFY_INTERVAL", value_parser = duration::parse)]
    pub watch_progress_notify_interval: Option<Duration>,
    /// The same, as etcd 3.4 and 3.5 spell it (kubeadm passes this one).
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL",
        value_parser = duration::parse
    )]
    pub experimental_watch_progress_notify_interval: Option<Duration>,
    /// Reject reconfiguration requests that would cause quorum loss.
    #[arg(
        long,
        env = "ETCD_STRICT_RECONFIG_CHECK",
        num_args = 0..=1,
        default_missing_value = "true",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub strict_reconfig_check: bool,
    /// Sets the maximum number of learners that can be available in the cluster membership
    /// (default 1; etcd 3.6's spelling).
    #[arg(long, env = "ETCD_MAX_LEARNERS")]
    pub max_learners: Option<usize>,
    /// The same, as etcd 3.5 spells it.
    #[arg(long, env = "ETCD_EXPERIMENTAL_MAX_LEARNERS")]
    pub experimental_max_learners: Option<usize>,
    /// Enable leader to send regular checkpoints to other members to prevent reset of remaining
    /// TTL on leader change (keelson: on unless set to false).
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT",
        num_args = 0..=1,
        default_missing_value = "true",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub experimental_enable_lease_checkpoint: bool,
    /// Duration of periodic checkpoints of each lease's remaining TTL (default 5m).
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_LEASE_CHECKPOINT_INTERVAL",
        value_parser = duration::parse
    )]
    pub experimental_lease_checkpoint_interval: Option<Duration>,
    /// The longest time before the backend's writes are committed durably (default 100ms): the
    /// page file's sync interval.
    #[arg(long, env = "ETCD_BACKEND_BATCH_INTERVAL", value_parser = duration::parse)]
    pub backend_batch_interval: Option<Duration>,
    /// The most applied entries before the backend's writes are committed durably (0: etcd's
    /// 10000).
    #[arg(long, env = "ETCD_BACKEND_BATCH_LIMIT", default_value_t = 0)]
    pub backend_batch_limit: u64,
    /// keelson: the CPUs to run on, one executor pinned to each — a count (the first N CPUs of the
    /// process's affinity mask) or a list like `0,2-3` (default: every CPU in the mask).
    #[arg(long, env = "KEELSON_CORES")]
    pub cores: Option<String>,
    /// keelson: serve clients on the raft core's CPU too (it always does with one CPU). More
    /// reads a second on few CPUs; writes then share their core with reads.
    #[arg(
        long,
        env = "KEELSON_SERVE_ON_RAFT_CORE",
        num_args = 0..=1,
        default_missing_value = "true",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub serve_on_raft_core: bool,
}

/// etcd 3.4 flags keelson accepts but does not act on yet: each is taken (with or without a value)
/// and logged as ignored, so existing command lines and unit files keep working.
pub const INERT_FLAGS: &[&str] = &[
    // Logging: keelson logs to standard error, in its own format.
    "logger",
    "log-outputs",
    "log-output",
    "log-format",
    "log-package-levels",
    "enable-log-rotation",
    "log-rotation-config-json",
    "debug",
    // Observability etcd offers beside its API.
    "metrics",
    "enable-pprof",
    "enable-distributed-tracing",
    "distributed-tracing-address",
    "distributed-tracing-instance-id",
    "distributed-tracing-sampling-rate",
    "distributed-tracing-service-name",
    "experimental-enable-distributed-tracing",
    "experimental-distributed-tracing-address",
    "experimental-distributed-tracing-instance-id",
    "experimental-distributed-tracing-sampling-rate",
    "experimental-distributed-tracing-service-name",
    "warning-apply-duration",
    "experimental-warning-apply-duration",
    "warning-unary-request-duration",
    "experimental-warning-unary-request-duration",
    // etcd's snapshot files and WAL retention (keelson releases WAL segments behind its page file).
    "max-snapshots",
    "max-wals",
    // Raft and membership (the cluster issue acts on these).
    "initial-election-tick-advance",
    "pre-vote",
    "force-new-cluster",
    "raft-read-timeout",
    "raft-write-timeout",
    "downgrade-check-time",
    "experimental-downgrade-check-time",
    // etcd's v2 API and proxy, and the gRPC gateway (keelson serves v3 over gRPC).
    "enable-v2",
    "experimental-enable-v2v3",
    "v2-deprecation",
    "proxy",
    "proxy-dial-timeout",
    "proxy-failure-wait",
    "proxy-read-timeout",
    "proxy-refresh-interval",
    "proxy-write-timeout",
    "enable-grpc-gateway",
    "listen-client-http-urls",
    "cors",
    "host-whitelist",
    // Discovery (the cluster issue).
    "discovery",
    "discovery-fallback",
    "discovery-proxy",
    "discovery-srv",
    "discovery-srv-name",
    "discovery-endpoints",
    "discovery-token",
    "discovery-dial-timeout",
    "discovery-request-timeout",
    "discovery-keepalive-time",
    "discovery-keepalive-timeout",
    "discovery-insecure-transport",
    "discovery-insecure-skip-tls-verify",
    "discovery-cert",
    "discovery-key",
    "discovery-cacert",
    "discovery-user",
    "discovery-password",
    // TLS (served over plain TCP until TLS lands).
    "cert-file",
    "key-file",
    "client-cert-file",
    "client-key-file",
    "client-cert-auth",
    "client-crl-file",
    "client-cert-allowed-hostname",
    "trusted-ca-file",
    "auto-tls",
    "peer-cert-file",
    "peer-key-file",
    "peer-client-cert-file",
    "peer-client-key-file",
    "peer-client-cert-auth",
    "peer-trusted-ca-file",
    "peer-auto-tls",
    "peer-cert-allowed-cn",
    "peer-cert-allowed-hostname",
    "peer-crl-file",
    "peer-skip-client-san-verification",
    "experimental-peer-skip-client-san-verification",
    "self-signed-cert-validity",
    "cipher-suites",
    "tls-min-version",
    "tls-max-version",
    // Auth (a later issue).
    "auth-token",
    "auth-token-ttl",
    "bcrypt-cost",
    // Corruption checks compare members' hashes: the cluster issue.
    "experimental-initial-corrupt-check",
    "experimental-corrupt-check-time",
    "corrupt-check-time",
    "experimental-compact-hash-check-enabled",
    "experimental-compact-hash-check-time",
    "compact-hash-check-time",
    "feature-gates",
    // The backend: keelson's page file has its own freelist and commit schedule.
    "experimental-backend-bbolt-freelist-type",
    "backend-bbolt-freelist-type",
    "experimental-compaction-batch-limit",
    "compaction-batch-limit",
    "experimental-compaction-sleep-interval",
    "compaction-sleep-interval",
    "experimental-bootstrap-defrag-threshold-megabytes",
    "bootstrap-defrag-threshold-megabytes",
    "experimental-txn-mode-write-with-shared-buffer",
    "experimental-stop-grpc-service-on-defrag",
    "experimental-memory-mlock",
    "memory-mlock",
    "unsafe-no-fsync",
    // 3.5: persist checkpoints; keelson always keeps them in the lease record.
    "experimental-enable-lease-checkpoint-persist",
    // Client pings: hyper does not police how often clients ping.
    "grpc-keepalive-min-time",
    // Sockets: keelson's listeners always reuse the port (one per core) and the address.
    "socket-reuse-address",
    "socket-reuse-port",
];

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A URL flag holds something that is not `http://host:port`.
    #[error("--{flag}: {url:?} is not a URL keelson can serve (expected http://host:port)")]
    Url {
        /// The flag.
        flag: &'static str,
        /// The offending URL.
        url: String,
    },
    /// `--initial-cluster` is malformed or does not name this member.
    #[error("--initial-cluster: {0}")]
    InitialCluster(String),
    /// A flag value is out of range.
    #[error("--{flag}: {why}")]
    Invalid {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        why: String,
    },
}

/// One member of the initial cluster: its id derived as etcd derives it, its client URLs known
/// for this member only (the others publish theirs through raft).
pub use keelson_engine::mvcc::members::Member;

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// This member's name.
    pub name: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The WAL directory.
    pub wal_dir: PathBuf,
    /// Client listen addresses.
    pub client_addrs: Vec<SocketAddr>,
    /// Metrics and health listen addresses (`--listen-metrics-urls`).
    pub metrics_addrs: Vec<SocketAddr>,
    /// Every member of the initial cluster, this one included.
    pub members: Vec<Member>,
    /// Where this member listens for its peers (`--listen-peer-urls`).
    pub peer_addrs: Vec<SocketAddr>,
    /// Whether the member joins a cluster that exists (`--initial-cluster-state existing`).
    pub joining: bool,
    /// This member's id.
    pub member_id: u64,
    /// The cluster's id.
    pub cluster_id: u64,
    /// Raft tick (the heartbeat interval).
    pub tick: Duration,
    /// Election timeout in ticks.
    pub election_ticks: usize,
    /// Largest request accepted, in bytes.
    pub max_request_bytes: usize,
    /// Most operations in one txn.
    pub max_txn_ops: usize,
    /// How often an idle watcher that asked for progress notifications gets one.
    pub watch_progress_notify_interval: Duration,
    /// How often long leases are checkpointed (None: checkpoints off).
    pub lease_checkpoint_interval: Option<Duration>,
    /// The shortest time to live a lease is granted, in seconds.
    pub min_lease_ttl: i64,
    /// The backend quota in bytes (`None`: no quota, as etcd with a negative
    /// `--quota-backend-bytes`).
    pub quota_bytes: Option<u64>,
    /// Auto-compaction, if on.
    pub auto_compaction: Option<AutoCompaction>,
    /// Calls in flight on one client connection at most.
    pub max_concurrent_streams: u32,
    /// Keep-alive pings of client connections: silence before one, and how long it may go
    /// unanswered (`None`: off).
    pub keepalive: Option<(Duration, Duration)>,
    /// When the page file is synced.
    pub sync: SyncSchedule,
    /// Entries a leader keeps for a follower behind, at most (`--snapshot-count`); one further
    /// behind is sent the page file as a snapshot.
    pub snapshot_count: u64,
    /// Entries a cluster member keeps behind what its page file holds, for followers to catch up
    /// from (`--snapshot-catchup-entries`).
    pub catch_up_entries: u64,
    /// `--strict-reconfig-check`.
    pub strict_reconfig_check: bool,
    /// Learners the cluster may have at most (`--max-learners`).
    pub max_learners: usize,
    /// CPUs to run on (None: every CPU in the affinity mask).
    pub cores: Option<String>,
    /// Whether the raft core's CPU serves clients too (it does anyway with one CPU).
    pub serve_on_raft_core: bool,
}

/// When the page file is synced (etcd's backend commit): once `interval` has passed since the last
/// sync, or once `limit` entries were applied since, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncSchedule {
    /// The longest time between syncs while writes are applied.
    pub interval: Duration,
    /// The most entries applied between syncs.
    pub limit: u64,
}

impl Default for SyncSchedule {
    /// etcd's backend defaults: 100 ms, 10 000 operations.
    fn default() -> Self {
        SyncSchedule {
            interval: Duration::from_millis(100),
            limit: 10_000,
        }
    }
}

/// The sync schedule the backend batch flags ask for, logged in etcd's words when they set one
/// (zero keeps a default, as in etcd).
fn sync_schedule(interval: Option<Duration>, limit: u64) -> SyncSchedule {
    let mut schedule = SyncSchedule::default();
    if limit != 0 {
        tracing::info!(batch_limit = limit, "setting backend batch limit");
        schedule.limit = limit;
    }
    if let Some(interval) = interval.filter(|i| !i.is_zero()) {
        tracing::info!(batch_interval = ?interval, "setting backend batch interval");
        schedule.interval = interval;
    }
    schedule
}

/// etcd's shortest lease: 1.5 election timeouts, counted in whole heartbeats (`3 * ticks / 2`),
/// rounded up to a second.
fn min_lease_ttl(heartbeat_ms: u64, election_ms: u64) -> i64 {
    let ticks = 3 * (election_ms / heartbeat_ms) / 2;
    (ticks * heartbeat_ms).div_ceil(1000) as i64
}

/// etcd's default backend quota (2 GiB).
pub const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;
/// The largest quota etcd recommends (8 GiB).
const MAX_QUOTA_BYTES: u64 = 8 << 30;

/// The backend quota `--quota-backend-bytes` asks for, as etcd reads it (logging what it does with
/// it, in etcd's words): negative, none; 0, the default.
fn quota(flag: i64) -> Option<u64> {
    match u64::try_from(flag) {
        Err(_) => {
            tracing::info!(quota_size_bytes = flag, "disabled backend quota");
            None
        }
        Ok(0) => {
            tracing::info!(
                quota_size_bytes = DEFAULT_QUOTA_BYTES,
                quota_size = "2.1 GB",
                "enabled backend quota with default value"
            );
            Some(DEFAULT_QUOTA_BYTES)
        }
        Ok(bytes) => {
            if bytes > MAX_QUOTA_BYTES {
                tracing::warn!(
                    quota_size_bytes = bytes,
                    quota_maximum_size_bytes = MAX_QUOTA_BYTES,
                    "quota exceeds the maximum value"
                );
            }
            tracing::info!(quota_size_bytes = bytes, "enabled backend quota");
            Some(bytes)
        }
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// Resolves `http://host:port` to its socket addresses (to listen on, or to dial).
fn url_addrs(flag: &'static str, url: &str) -> Result<Vec<SocketAddr>, ConfigError> {
    use std::net::ToSocketAddrs;
    let bad = || ConfigError::Url {
        flag,
        url: url.to_string(),
    };
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let host_port = rest.trim_end_matches('/');
    if host_port.contains('/') {
        return Err(bad());
    }
    let addrs: Vec<SocketAddr> = host_port.to_socket_addrs().map_err(|_| bad())?.collect();
    if addrs.is_empty() {
        return Err(bad());
    }
    Ok(addrs)
}

impl Config {
    /// Checks `flags` and derives the configuration.
    pub fn from_flags(flags: &Flags) -> Result<Config, ConfigError> {
        // Absolute, so nothing depends on the working directory later (glommio opens directories
        // relative to none).
        let absolute = |path: PathBuf, flag: &'static str| {
            std::path::absolute(&path).map_err(|e| ConfigError::Invalid {
                flag,
                why: format!("{}: {e}", path.display()),
            })
        };
        let data_dir = absolute(
            flags
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", flags.name))),
            "data-dir",
        )?;
        let wal_dir = match &flags.wal_dir {
            Some(dir) => absolute(dir.clone(), "wal-dir")?,
            None => data_dir.join("member").join("wal"),
        };
        let mut client_addrs = Vec::new();
        for url in split_list(&flags.listen_client_urls) {
            for addr in url_addrs("listen-client-urls", &url)? {
                if !client_addrs.contains(&addr) {
                    client_addrs.push(addr);
                }
            }
        }
        let mut metrics_addrs = Vec::new();
        for url in split_list(&flags.listen_metrics_urls) {
            for addr in url_addrs("listen-metrics-urls", &url)? {
                if !metrics_addrs.contains(&addr) {
                    metrics_addrs.push(addr);
                }
            }
        }
        if client_addrs.is_empty() {
            return Err(ConfigError::Invalid {
                flag: "listen-client-urls",
                why: "no URL given".into(),
            });
        }
        if flags.initial_cluster_state != "new" && flags.initial_cluster_state != "existing" {
            return Err(ConfigError::Invalid {
                flag: "initial-cluster-state",
                why: format!(
                    "invalid value {:?} (expected new or existing)",
                    flags.initial_cluster_state
                ),
            });
        }
        let initial_cluster = flags.initial_cluster.clone().unwrap_or_else(|| {
            split_list(&flags.initial_advertise_peer_urls)
                .iter()
                .map(|u| format!("{}={u}", flags.name))
                .collect::<Vec<_>>()
                .join(",")
        });
        let mut members = parse_initial_cluster(&initial_cluster, &flags.initial_cluster_token)?;
        let this = members
            .iter_mut()
            .find(|m| m.name == flags.name)
            .ok_or_else(|| {
                ConfigError::InitialCluster(format!(
                    "this member's name {:?} is not in {initial_cluster:?}",
                    flags.name
                ))
            })?;
        this.client_urls = split_list(&flags.advertise_client_urls);
        let member_id = this.id;
        if flags.heartbeat_interval == 0 {
            return Err(ConfigError::Invalid {
                flag: "heartbeat-interval",
                why: "must be at least 1 ms".into(),
            });
        }
        if flags.election_timeout < 5 * flags.heartbeat_interval {
            // etcd's own rule (etcdmain: "election-timeout should be at least 5 times
            // heartbeat-interval").
            return Err(ConfigError::Invalid {
                flag: "election-timeout",
                why: format!(
                    "{} ms must be at least 5 times --heartbeat-interval ({} ms)",
                    flags.election_timeout, flags.heartbeat_interval
                ),
            });
        }
        // Every member listens for peers, a single one too: members may be added to it.
        let mut peer_addrs = Vec::new();
        for url in split_list(&flags.listen_peer_urls) {
            peer_addrs.extend(url_addrs("listen-peer-urls", &url)?);
        }
        // The other members are dialled at their peer URLs, which must be http://host:port.
        for m in members.iter().filter(|m| m.id != member_id) {
            for url in &m.peer_urls {
                url_addrs("initial-cluster", url)?;
            }
        }
        if flags.max_request_bytes > MAX_REQUEST_BYTES {
            return Err(ConfigError::Invalid {
                flag: "max-request-bytes",
                why: format!(
                    "{} is more than keelson takes ({MAX_REQUEST_BYTES}: one WAL record must fit a segment)",
                    flags.max_request_bytes
                ),
            });
        }
        let cluster_id = ids::cluster_id(members.iter().map(|m| m.id));
        let watch_progress_notify_interval = match flags
            .watch_progress_notify_interval
            .or(flags.experimental_watch_progress_notify_interval)
        {
            // As etcd: zero keeps the default, and less than the minimum is raised to it.
            None | Some(Duration::ZERO) => DEFAULT_PROGRESS_INTERVAL,
            Some(asked) if asked < MIN_PROGRESS_INTERVAL => {
                tracing::warn!(
                    "adjusting watch progress notify interval to minimum period {MIN_PROGRESS_INTERVAL:?}"
                );
                MIN_PROGRESS_INTERVAL
            }
            Some(asked) => asked,
        };
        Ok(Config {
            name: flags.name.clone(),
            data_dir,
            wal_dir,
            client_addrs,
            metrics_addrs,
            members,
            peer_addrs,
            joining: flags.initial_cluster_state == "existing",
            member_id,
            cluster_id,
            tick: Duration::from_millis(flags.heartbeat_interval),
            election_ticks: (flags.election_timeout / flags.heartbeat_interval) as usize,
            max_request_bytes: flags.max_request_bytes as usize,
            max_txn_ops: flags.max_txn_ops as usize,
            watch_progress_notify_interval,
            lease_checkpoint_interval: flags.experimental_enable_lease_checkpoint.then_some(
                match flags.experimental_lease_checkpoint_interval {
                    None | Some(Duration::ZERO) => lessor::DEFAULT_CHECKPOINT_INTERVAL,
                    Some(asked) => asked,
                },
            ),
            min_lease_ttl: min_lease_ttl(flags.heartbeat_interval, flags.election_timeout),
            quota_bytes: quota(flags.quota_backend_bytes),
            max_concurrent_streams: flags.max_concurrent_streams,
            keepalive: (!flags.grpc_keepalive_interval.is_zero()
                && !flags.grpc_keepalive_timeout.is_zero())
            .then_some((flags.grpc_keepalive_interval, flags.grpc_keepalive_timeout)),
            auto_compaction: compactor::parse(
                &flags.auto_compaction_mode,
                &flags.auto_compaction_retention,
            )
            .map_err(|why| ConfigError::Invalid {
                flag: "auto-compaction-retention",
                why,
            })?,
            sync: sync_schedule(flags.backend_batch_interval, flags.backend_batch_limit),
            snapshot_count: flags.snapshot_count,
            strict_reconfig_check: flags.strict_reconfig_check,
            max_learners: flags
                .max_learners
                .or(flags.experimental_max_learners)
                .unwrap_or(1),
            catch_up_entries: flags
                .snapshot_catchup_entries
                .or(flags.experimental_snapshot_catchup_entries)
                .unwrap_or(DEFAULT_CATCH_UP_ENTRIES),
            cores: flags.cores.clone(),
            serve_on_raft_core: flags.serve_on_raft_core,
        })
    }

    /// How long a write may wait to be applied before its client is answered `request timed
    /// out`: etcd's 5 s plus two election timeouts.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(5) + 2 * self.tick * self.election_ticks as u32
    }

    /// The page file: `<data-dir>/member/snap/db`, as etcd lays it out.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("member").join("snap").join("db")
    }
}

/// Parses `name=url,name=url,...` (a name may repeat, one URL each) into members with etcd's ids.
pub fn parse_initial_cluster(spec: &str, token: &str) -> Result<Vec<Member>, ConfigError> {
    let mut members: Vec<Member> = Vec::new();
    for part in split_list(spec) {
        let (name, url) = part
            .split_once('=')
            .ok_or_else(|| ConfigError::InitialCluster(format!("{part:?} is not name=peerURL")))?;
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(ConfigError::InitialCluster(format!(
                "{url:?} is not a peer URL"
            )));
        }
        match members.iter_mut().find(|m| m.name == name) {
            Some(m) => m.peer_urls.push(url.to_string()),
            None => members.push(Member {
                name: name.to_string(),
                peer_urls: vec![url.to_string()],
                ..Member::default()
            }),
        }
    }
    if members.is_empty() {
        return Err(ConfigError::InitialCluster("no members".into()));
    }
    for m in &mut members {
        m.id = ids::member_id(&m.peer_urls, token);
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        flags: Flags,
    }

    fn config(args: &[&str]) -> Result<Config, ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("keelson").chain(args.iter().copied()))
            .expect("flags parse");
        Config::from_flags(&cli.flags)
    }

    #[test]
    fn defaults_are_etcds() {
        let c = config(&[]).unwrap();
        assert_eq!(c.name, "default");
        let here = std::env::current_dir().unwrap();
        assert_eq!(c.data_dir, here.join("default.etcd"));
        assert_eq!(c.wal_dir, here.join("default.etcd/member/wal"));
        assert_eq!(c.db_path(), here.join("default.etcd/member/snap/db"));
        assert_eq!(c.members.len(), 1);
        assert_eq!(c.members[0].peer_urls, vec!["http://localhost:2380"]);
        assert_eq!(c.election_ticks, 10);
        assert_eq!(c.max_request_bytes, 1_572_864);
        assert_eq!(c.watch_progress_notify_interval, Duration::from_secs(600));
    }

    #[test]
    fn leases_are_checkpointed_and_no_shorter_than_etcd_grants() {
        let c = config(&[]).unwrap();
        assert_eq!(c.min_lease_ttl, 2);
        assert_eq!(c.lease_checkpoint_interval, Some(Duration::from_secs(300)));
        let c = config(&["--election-timeout", "5000", "--heartbeat-interval", "300"]).unwrap();
        // 16 ticks of 300 ms: 24 ticks, 7.2 s, rounded up.
        assert_eq!(c.min_lease_ttl, 8);
        let off = config(&["--experimental-enable-lease-checkpoint=false"]).unwrap();
        assert_eq!(off.lease_checkpoint_interval, None);
        let often = config(&["--experimental-lease-checkpoint-interval", "1s"]).unwrap();
        assert_eq!(
            often.lease_checkpoint_interval,
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn both_spellings_of_the_progress_interval_are_taken() {
        let old = config(&["--experimental-watch-progress-notify-interval", "5s"]).unwrap();
        assert_eq!(old.watch_progress_notify_interval, Duration::from_secs(5));
        let new = config(&["--watch-progress-notify-interval", "1m"]).unwrap();
        assert_eq!(new.watch_progress_notify_interval, Duration::from_secs(60));
        let short = config(&["--watch-progress-notify-interval", "1ms"]).unwrap();
        assert_eq!(short.watch_progress_notify_interval, MIN_PROGRESS_INTERVAL);
    }

    #[test]
    fn the_backend_batch_flags_set_the_sync_schedule_and_zero_keeps_etcds_default() {
        assert_eq!(config(&[]).unwrap().sync, SyncSchedule::default());
        let zero = [
            "--backend-batch-interval",
            "0",
            "--backend-batch-limit",
            "0",
        ];
        assert_eq!(config(&zero).unwrap().sync, SyncSchedule::default());
        let set = [
            "--backend-batch-interval",
            "1s",
            "--backend-batch-limit",
            "7",
        ];
        assert_eq!(
            config(&set).unwrap().sync,
            SyncSchedule {
                interval: Duration::from_secs(1),
                limit: 7
            }
        );
    }

    #[test]
    fn bad_combinations_are_refused() {
        assert!(config(&["--listen-client-urls", "127.0.0.1:2379"]).is_err());
        assert!(config(&["--initial-cluster", "other=http://127.0.0.1:2380"]).is_err());
        assert!(config(&["--initial-cluster-state", "old"]).is_err());
        assert!(config(&["--election-timeout", "200"]).is_err());
        assert!(config(&["--max-request-bytes", "100000000"]).is_err());
        // TLS between members is not there yet: an https peer is refused, not dialled in clear.
        let tls = "node=http://127.0.0.1:2380,other=https://127.0.0.1:2381";
        assert!(config(&["--name", "node", "--initial-cluster", tls]).is_err());
    }

    #[test]
    fn a_member_of_a_cluster_knows_its_peers() {
        let two = "node=http://127.0.0.1:2380,other=http://127.0.0.1:2381";
        let listen = ["--listen-peer-urls", "http://127.0.0.1:2380"];
        let c =
            config(&[&["--name", "node", "--initial-cluster", two][..], &listen].concat()).unwrap();
        assert_eq!(c.peer_addrs, vec!["127.0.0.1:2380".parse().unwrap()]);
        let other = ids::member_id(&["http://127.0.0.1:2381".into()], "etcd-cluster");
        assert_eq!(c.cluster_id, ids::cluster_id([c.member_id, other]));
        // A single member listens too: members may be added to it.
        let alone = config(&listen).unwrap();
        assert_eq!(alone.peer_addrs, c.peer_addrs);
    }
}
