//! The wiring of a member: pick the CPUs, open the store, build the channels between the raft core
//! and every serving core, start one pinned glommio executor per CPU — the first runs the raft
//! core ([`crate::raft::run`]), the others serve clients ([`crate::api::serving`]); with one CPU,
//! or `--serve-on-raft-core`, it does both — and wait for them all. How the member stops is
//! [`Shutdown`]'s business: the cores drain by message and this returns when every executor has
//! ended.
//!
//! Runs on: the main thread.

use std::path::Path;
use std::sync::Arc;

use glommio::channels::shared_channel;
use glommio::{LocalExecutorBuilder, Placement};
use keelson_engine::mvcc::{self, Store};

use crate::api::context::Identity;
use crate::api::http::Surface;
use crate::api::{conn, serving};
use crate::config::Config;
use crate::metrics::CoreMetrics;
use crate::raft::run as raft;
use crate::raft::turn::RaftCoreError;
use crate::runtime::cores;
use crate::runtime::link::{Published, ServingCore};
use crate::runtime::shutdown::Shutdown;

/// Batches in flight on one channel between two cores.
const CHANNEL_BATCHES: usize = 1024;
/// Memory each executor registers with io_uring (the WAL's buffers come from the raft core's).
const IO_MEMORY: usize = 2 << 20;

/// Why the member could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// `--cores`.
    #[error(transparent)]
    Cores(#[from] cores::CoresError),
    /// A file or directory.
    #[error("{path}: {error}")]
    Io {
        /// The path.
        path: String,
        /// What failed.
        error: std::io::Error,
    },
    /// The member was asked for something it cannot do.
    #[error("{0}")]
    Refused(String),
    /// The page file could not be opened.
    #[error(transparent)]
    Store(#[from] mvcc::MvccError),
    /// The raft core stopped.
    #[error("raft core: {0}")]
    RaftCore(#[from] RaftCoreError),
    /// A serving core could not serve.
    #[error("{0}")]
    Serving(String),
    /// An executor could not start or panicked.
    #[error("executor: {0}")]
    Executor(String),
}

/// Runs a member until `shutdown` stops it.
pub fn run(config: Config, shutdown: Shutdown) -> Result<(), ServerError> {
    let cpus = cores::select(config.cores.as_deref())?;
    let serve_on_raft_core = config.serve_on_raft_core || cpus.len() == 1;
    let serving_cpus: Vec<usize> = if serve_on_raft_core {
        cpus.clone()
    } else {
        cpus[1..].to_vec()
    };
    tracing::info!(
        name = %config.name,
        data_dir = %config.data_dir.display(),
        raft_cpu = cpus[0],
        serving_cpus = ?serving_cpus,
        "starting a keelson member"
    );
    let has_wal = std::fs::read_dir(&config.wal_dir).is_ok_and(|mut d| d.next().is_some());
    if config.joining && !has_wal {
        // etcd would ask the cluster's members for the cluster; keelson cannot add itself yet.
        return Err(ServerError::Refused(
            "cannot fetch cluster info from peer urls: joining an existing cluster \
             (--initial-cluster-state existing on an empty data dir) needs membership changes, \
             which keelson does not have yet"
                .into(),
        ));
    }
    let db_path = config.db_path();
    let snap_dir = db_path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(snap_dir).map_err(|error| ServerError::Io {
        path: snap_dir.display().to_string(),
        error,
    })?;
    let options = mvcc::Options {
        min_lease_ttl: config.min_lease_ttl,
        quota_bytes: config.quota_bytes,
        ..mvcc::Options::default()
    };
    // A defragmentation a crash cut short leaves its copy behind; the old file is the one.
    let _ = std::fs::remove_file(crate::apply::defrag::copy_path(&db_path));
    let mut store = Store::open(&db_path, options)?;
    // A new cluster's members, as its flags name them; each publishes its client URLs through
    // raft once it runs.
    let seed: Vec<_> = config
        .members
        .iter()
        .map(|m| mvcc::members::Member {
            client_urls: Vec::new(),
            ..m.clone()
        })
        .collect();
    store.set_members(&seed, false)?;
    if shutdown.is_stopping() {
        return Ok(());
    }
    let published = Arc::new(Published::default());
    // One channel each way between the raft core and every serving core.
    let (mut raft_ends, mut serving_ends) = (Vec::new(), Vec::new());
    for _ in &serving_cpus {
        let (to_raft, from_serving) = shared_channel::new_bounded(CHANNEL_BATCHES);
        let (to_serving, from_raft) = shared_channel::new_bounded(CHANNEL_BATCHES);
        raft_ends.push((from_serving, to_serving));
        serving_ends.push((to_raft, from_raft));
    }
    let shared = serving::Shared {
        identity: Arc::new(Identity {
            member_id: config.member_id,
            cluster_id: config.cluster_id,
            members: config.members.clone(),
            max_txn_ops: config.max_txn_ops,
            election_timeout: config.tick * config.election_ticks as u32,
            progress_interval: config.watch_progress_notify_interval,
            quota_bytes: config.quota_bytes,
            request_timeout: config.request_timeout(),
            connections: conn::Settings {
                max_request_bytes: config.max_request_bytes,
                max_concurrent_streams: config.max_concurrent_streams,
                keepalive: config.keepalive,
            },
        }),
        published: published.clone(),
        db: store.db().clone(),
        metrics: (0..serving_cpus.len())
            .map(|_| CoreMetrics::default())
            .collect(),
        addrs: (config.client_addrs.iter().map(|&a| (a, Surface::Client)))
            .chain(config.metrics_addrs.iter().map(|&a| (a, Surface::Metrics)))
            .collect(),
        shutdown: shutdown.clone(),
    };
    let setup = raft::Setup {
        config,
        store,
        published,
        ends: raft_ends,
        shutdown: shutdown.clone(),
    };
    let mut serving_ends = serving_ends.into_iter().enumerate();
    // With one CPU (or when asked), serving core 0 runs beside the raft core.
    let beside_raft = if serve_on_raft_core {
        serving_ends.next()
    } else {
        None
    };
    let raft_core = {
        let shared = shared.clone();
        LocalExecutorBuilder::new(Placement::Fixed(cpus[0]))
            .name("keelson-raft")
            .io_memory(IO_MEMORY)
            .spawn(move || async move {
                let serving = beside_raft.map(|(core, ends)| {
                    glommio::spawn_local(serving::run(ServingCore(core), ends, shared))
                });
                let result = raft::run(setup).await;
                if let Some(task) = serving {
                    task.await;
                }
                result
            })
            .map_err(|e| ServerError::Executor(e.to_string()))?
    };
    let mut serving_cores = Vec::new();
    for (core, ends) in serving_ends {
        let shared = shared.clone();
        let started = LocalExecutorBuilder::new(Placement::Fixed(serving_cpus[core]))
            .name(&format!("keelson-serve-{core}"))
            .io_memory(IO_MEMORY)
            .spawn(move || serving::run(ServingCore(core), ends, shared));
        match started {
            Ok(handle) => serving_cores.push(handle),
            Err(e) => {
                let why = format!("serving core {core} could not start: {e}");
                shutdown.stop(crate::runtime::shutdown::Cause::Failed(why.clone()));
                return Err(ServerError::Executor(why));
            }
        }
    }
    let mut outcome = raft_core
        .join()
        .map_err(|e| ServerError::Executor(e.to_string()))
        .and_then(|result| Ok(result?));
    for handle in serving_cores {
        if let Err(e) = handle.join() {
            outcome = outcome.and(Err(ServerError::Executor(e.to_string())));
        }
    }
    match (outcome, shutdown.failure()) {
        (Ok(()), Some(why)) => Err(ServerError::Serving(why)),
        (outcome, _) => outcome,
    }
}
