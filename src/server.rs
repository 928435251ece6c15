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

use glommio::{LocalExecutorBuilder, Placement};
use keelson_engine::mvcc::{self, Store};

use crate::api::context::Identity;
use crate::api::http::Surface;
use crate::api::{conn, serving};
use crate::config::Config;
use crate::metrics::CoreMetrics;
use crate::peer;
use crate::raft::run as raft;
use crate::raft::turn::RaftCoreError;
use crate::runtime::link::{Published, ServingCore};
use crate::runtime::shutdown::Shutdown;
use crate::runtime::{channel, cores};
use keelson_proto::etcdserverpb::Metadata;

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

/// A member that has a WAL is the member and cluster its WAL was made for, whatever the flags
/// say, as etcd's restart reads them from its WAL (a member that joined has ids the flags do not
/// give).
fn adopt_wal_identity(config: &mut Config) -> Result<(), ServerError> {
    use keelson_engine::wal;
    use prost::Message as _;
    let dir = &config.wal_dir;
    let metadata = if wal::etcd::is_etcd_wal(dir) {
        Some(
            wal::etcd::read_etcd(dir)
                .map_err(RaftCoreError::from)?
                .metadata,
        )
    } else {
        wal::metadata(dir).map_err(RaftCoreError::from)?
    };
    let decoded = metadata.and_then(|m| Metadata::decode(&m[..]).ok());
    let Some((member_id, cluster_id)) = decoded.and_then(|m| m.node_id.zip(m.cluster_id)) else {
        return Ok(());
    };
    if (member_id, cluster_id) != (config.member_id, config.cluster_id) {
        tracing::info!(
            local_member_id = %format!("{member_id:x}"),
            cluster_id = %format!("{cluster_id:x}"),
            "the WAL names this member and its cluster"
        );
    }
    if let Some(me) = config.members.iter_mut().find(|m| m.name == config.name) {
        me.id = member_id;
    }
    config.member_id = member_id;
    config.cluster_id = cluster_id;
    Ok(())
}

/// A new cluster's members, as its flags name them (each publishes its client URLs through raft
/// once it runs). A data dir whose members do not include this member, which was not removed,
/// takes them from the flags too: `etcdctl snapshot restore` (3.4) leaves the old cluster's
/// members in the file and the new ones only in etcd's v2 store snapshot, which keelson does not
/// read.
fn seed_members(store: &mut Store, config: &Config) -> Result<(), ServerError> {
    let seed: Vec<_> = config
        .members
        .iter()
        .map(|m| mvcc::members::Member {
            client_urls: Vec::new(),
            ..m.clone()
        })
        .collect();
    let view = store.db().begin_read().map_err(mvcc::MvccError::from)?;
    let listed = mvcc::members::members(&view)?;
    let removed = mvcc::members::is_removed(&view, config.member_id)?;
    drop(view);
    let stale = !listed.is_empty() && !removed && !listed.iter().any(|m| m.id == config.member_id);
    if stale {
        tracing::warn!(
            local_member_id = %format!("{:x}", config.member_id),
            "the data dir's members do not include this member (etcdctl snapshot restore leaves \
             the old cluster's); taking the members from --initial-cluster"
        );
    }
    store.set_members(&seed, stale)?;
    Ok(())
}

/// Joins an existing cluster, as etcd does on an empty data dir with `--initial-cluster-state
/// existing`: asks the other members of `--initial-cluster` for the cluster, checks the flags
/// against it, and takes its ids (the member was added with `member add` first).
fn join(config: &mut Config) -> Result<(), String> {
    let me = config.member_id;
    let others: Vec<String> = config
        .members
        .iter()
        .filter(|m| m.id != me)
        .flat_map(|m| m.peer_urls.clone())
        .collect();
    let (cluster_id, existing) = peer::join::fetch(&others)?;
    let mine = config
        .members
        .iter()
        .find(|m| m.id == me)
        .map(|m| m.peer_urls.clone())
        .unwrap_or_default();
    peer::join::assign(&mut config.members, &existing)?;
    let member_id = config
        .members
        .iter()
        .find(|m| m.peer_urls == mine)
        .map_or(me, |m| m.id);
    // The cluster's view of each member (learner or not), this member's name and client URLs.
    for member in &mut config.members {
        if let Some(e) = existing.iter().find(|e| e.id == member.id) {
            member.is_learner = e.is_learner;
            if member.id != member_id {
                member.name = e.name.clone();
                member.client_urls = e.client_urls.clone();
            }
        }
    }
    tracing::info!(
        local_member_id = %format!("{member_id:x}"),
        cluster_id = %format!("{cluster_id:x}"),
        "joining an existing cluster"
    );
    config.member_id = member_id;
    config.cluster_id = cluster_id;
    Ok(())
}

/// Runs a member until `shutdown` stops it.
pub fn run(mut config: Config, shutdown: Shutdown) -> Result<(), ServerError> {
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
    if has_wal {
        adopt_wal_identity(&mut config)?;
    } else if config.joining {
        join(&mut config).map_err(ServerError::Refused)?;
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
        max_learners: config.max_learners,
        ..mvcc::Options::default()
    };
    // A defragmentation a crash cut short leaves its copy behind; the old file is the one.
    let _ = std::fs::remove_file(crate::apply::defrag::copy_path(&db_path));
    // So does a snapshot from the leader that was received and not installed.
    peer::listener::remove_leftovers(snap_dir);
    let mut store = Store::open(&db_path, options)?;
    seed_members(&mut store, &config)?;
    if shutdown.is_stopping() {
        return Ok(());
    }
    let published = Arc::new(Published::default());
    // One channel each way between the raft core and every serving core on an executor of its own
    // (the one beside the raft core gets local channels, made on their executor).
    let apart_cores = serving_cpus.len() - usize::from(serve_on_raft_core);
    let (raft_ends, serving_ends): (Vec<_>, Vec<_>) = (0..apart_cores)
        .map(|_| channel::apart(CHANNEL_BATCHES))
        .unzip();
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
        shutdown: shutdown.clone(),
    };
    // With one CPU (or when asked), serving core 0 runs beside the raft core.
    let first_apart = usize::from(serve_on_raft_core);
    let raft_core = {
        let shared = shared.clone();
        LocalExecutorBuilder::new(Placement::Fixed(cpus[0]))
            .name("keelson-raft")
            .io_memory(IO_MEMORY)
            .spawn(move || async move {
                let mut ends = Vec::new();
                let serving = serve_on_raft_core.then(|| {
                    let (raft_end, serving_end) = channel::beside(CHANNEL_BATCHES);
                    ends.push(raft_end);
                    glommio::spawn_local(serving::run(ServingCore(0), serving_end, shared))
                });
                for apart in raft_ends {
                    ends.push(apart.connect().await);
                }
                let result = raft::run(setup, ends).await;
                if let Some(task) = serving {
                    task.await;
                }
                result
            })
            .map_err(|e| ServerError::Executor(e.to_string()))?
    };
    let mut serving_cores = Vec::new();
    for (core, ends) in (first_apart..).zip(serving_ends) {
        let shared = shared.clone();
        let started = LocalExecutorBuilder::new(Placement::Fixed(serving_cpus[core]))
            .name(&format!("keelson-serve-{core}"))
            .io_memory(IO_MEMORY)
            .spawn(move || async move {
                serving::run(ServingCore(core), ends.connect().await, shared).await
            });
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
