//! Starting and stopping a member: open the store and the WAL, start one pinned glommio executor per
//! CPU (the first runs the raft core; the others serve clients; with one CPU it does both), wire
//! the channels between them, and log `ready to serve client requests` once clients can connect.
//! SIGTERM or SIGINT stops it: the raft core finishes its turn (answering what it applied), syncs
//! the page file and closes the WAL.

use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use glommio::channels::local_channel;
use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};
use glommio::{LocalExecutorBuilder, Placement};
use keelson_engine::mvcc::{self, Store};
use keelson_engine::pagefile::Db;
use keelson_engine::wal::{self, Wal};
use keelson_proto::etcdserverpb::Metadata;
use prost::Message;
use raft::RawNode;

use crate::api::context::{Identity, Serving};
use crate::config::Config;
use crate::cores;
use crate::link::{FromRaft, Published, ToRaft};
use crate::metrics::GrpcCounters;
use crate::raft::log::RaftLog;
use crate::raft::node::{Inbox, RaftCore, RaftCoreError};
use crate::raft::{entry, logger};

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
    /// The page file.
    #[error("{0}")]
    Store(#[from] mvcc::MvccError),
    /// The WAL.
    #[error("{0}")]
    Wal(#[from] wal::WalError),
    /// raft-rs refused the configuration.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// The raft core stopped.
    #[error("raft core: {0}")]
    RaftCore(#[from] RaftCoreError),
    /// An executor could not start or panicked.
    #[error("executor: {0}")]
    Executor(String),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ServerError + '_ {
    move |error| ServerError::Io {
        path: path.display().to_string(),
        error,
    }
}

/// Set by the signal handler; every executor polls it.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// How often executors look at [`STOPPING`] (and the raft core ticks at least).
const STOP_POLL: Duration = Duration::from_millis(50);

/// Runs a member until SIGTERM or SIGINT.
pub fn run(config: Config) -> Result<(), ServerError> {
    let cpus = cores::select(config.cores.as_deref())?;
    tracing::info!(
        name = %config.name,
        data_dir = %config.data_dir.display(),
        cpus = ?cpus,
        "starting a keelson member"
    );
    let db_path = config.db_path();
    let snap_dir = db_path.parent().expect("db path has a parent");
    std::fs::create_dir_all(snap_dir).map_err(io_error(snap_dir))?;
    let store = Store::open(&db_path, mvcc::Options::default())?;
    let db = store.db().clone();
    let wal_exists = wal::has_segments(&config.wal_dir);
    let published = Arc::new(Published::default());
    Published::set(&published.applied, store.applied().0);
    let identity = Arc::new(Identity {
        member_id: config.member_id,
        cluster_id: config.cluster_id,
        members: config.members.clone(),
        max_request_bytes: config.max_request_bytes,
        max_txn_ops: config.max_txn_ops,
    });
    install_signal_handler()?;

    let serving_cpus: Vec<usize> = if cpus.len() == 1 {
        cpus.clone()
    } else {
        cpus[1..].to_vec()
    };
    // One channel each way between the raft core and every serving core.
    let (mut to_raft_rx, mut from_raft_tx, mut serving_ends) = (Vec::new(), Vec::new(), Vec::new());
    for _ in &serving_cpus {
        let (to_raft, from_serving) = shared_channel::new_bounded(CHANNEL_BATCHES);
        let (to_serving, from_raft) = shared_channel::new_bounded(CHANNEL_BATCHES);
        to_raft_rx.push(from_serving);
        from_raft_tx.push(to_serving);
        serving_ends.push((to_raft, from_raft));
    }
    let raft_setup = RaftSetup {
        config: config.clone(),
        store,
        wal_exists,
        published: published.clone(),
        to_raft_rx,
        from_raft_tx,
    };

    let mut serving_ends = serving_ends.into_iter().enumerate();
    // The raft core (and, with one CPU, serving core 0 beside it).
    let first_serving = if cpus.len() == 1 {
        serving_ends.next()
    } else {
        None
    };
    let shared = ServingShared {
        identity,
        published: published.clone(),
        db,
        grpc: (0..serving_cpus.len())
            .map(|_| GrpcCounters::default())
            .collect(),
        addrs: config.client_addrs.clone(),
    };
    let raft = {
        let shared = shared.clone();
        LocalExecutorBuilder::new(Placement::Fixed(cpus[0]))
            .name("keelson-raft")
            .io_memory(IO_MEMORY)
            .spawn(move || async move {
                let serving = first_serving
                    .map(|(core, ends)| glommio::spawn_local(serve(core, ends, shared)));
                let result = run_raft(raft_setup).await;
                if let Some(task) = serving {
                    task.await;
                }
                result
            })
            .map_err(|e| ServerError::Executor(e.to_string()))?
    };
    let mut serving_handles = Vec::new();
    for (core, ends) in serving_ends {
        let shared = shared.clone();
        serving_handles.push(
            LocalExecutorBuilder::new(Placement::Fixed(serving_cpus[core]))
                .name(&format!("keelson-serve-{core}"))
                .io_memory(IO_MEMORY)
                .spawn(move || serve(core, ends, shared))
                .map_err(|e| ServerError::Executor(e.to_string()))?,
        );
    }
    let mut outcome = raft
        .join()
        .map_err(|e| ServerError::Executor(e.to_string()))
        .and_then(|result| result);
    for handle in serving_handles {
        if let Err(e) = handle.join() {
            outcome = Err(ServerError::Executor(e.to_string()));
        }
    }
    outcome
}

fn install_signal_handler() -> Result<(), ServerError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for signal in [SIGTERM, SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            signal_hook::low_level::register(signal, || STOPPING.store(true, Ordering::Release))
        }
        .map_err(io_error(Path::new("signal handler")))?;
    }
    Ok(())
}

/// What every serving core starts with.
#[derive(Clone)]
struct ServingShared {
    identity: Arc<Identity>,
    published: Arc<Published>,
    db: Db,
    grpc: Arc<[GrpcCounters]>,
    addrs: Vec<std::net::SocketAddr>,
}

/// What the raft core starts from.
struct RaftSetup {
    config: Config,
    store: Store,
    wal_exists: bool,
    published: Arc<Published>,
    to_raft_rx: Vec<SharedReceiver<Vec<ToRaft>>>,
    from_raft_tx: Vec<SharedSender<Vec<FromRaft>>>,
}

/// Set once the raft core has stopped and sent its last answers.
static RAFT_DONE: AtomicBool = AtomicBool::new(false);

/// Runs the raft core; however it ends, the serving cores then stop too (after delivering what it
/// answered).
async fn run_raft(setup: RaftSetup) -> Result<(), ServerError> {
    let result = raft_core(setup).await;
    if let Err(e) = &result {
        tracing::error!("the raft core stopped: {e}");
    }
    STOPPING.store(true, Ordering::Release);
    RAFT_DONE.store(true, Ordering::Release);
    result
}

async fn raft_core(setup: RaftSetup) -> Result<(), ServerError> {
    let RaftSetup {
        config,
        store,
        wal_exists,
        published,
        to_raft_rx,
        from_raft_tx,
    } = setup;
    let (applied, applied_term) = store.applied();
    let metadata = Metadata {
        node_id: Some(config.member_id),
        cluster_id: Some(config.cluster_id),
    }
    .encode_to_vec();
    let (wal, hard_state, entries) = if wal_exists {
        let (wal, replay) = Wal::open(&config.wal_dir, applied, wal::Options::default()).await?;
        let entries: Vec<_> = replay.entries.into_iter().map(entry::from_wal).collect();
        tracing::info!(
            applied,
            replayed = entries.len(),
            "opened the WAL; replaying entries after the page file's consistent index"
        );
        (wal, replay.hard_state, entries)
    } else {
        let wal = Wal::create(
            &config.wal_dir,
            &metadata,
            applied + 1,
            wal::Options::default(),
        )
        .await?;
        (wal, wal::HardState::default(), Vec::new())
    };
    let hard_state = raft::eraftpb::HardState {
        term: hard_state.term.max(applied_term),
        vote: hard_state.vote,
        // The page file may have applied (and synced) past the last commit the WAL recorded.
        commit: hard_state.commit.max(applied),
    };
    let voters = config.members.iter().map(|m| m.id).collect();
    let mut log = RaftLog::new(applied, applied_term, hard_state, voters);
    log.append(entries);
    let raft_config = raft::Config {
        id: config.member_id,
        election_tick: config.election_ticks,
        heartbeat_tick: 1,
        applied,
        pre_vote: true,
        check_quorum: true,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        ..raft::Config::default()
    };
    raft_config.validate()?;
    let node = RawNode::new(&raft_config, log, &logger())?;

    let inbox = Rc::new(Inbox::default());
    let (kick, kicked) = local_channel::new_bounded(1);
    let kick = Rc::new(kick);
    for receiver in to_raft_rx {
        let (inbox, kick) = (inbox.clone(), kick.clone());
        glommio::spawn_local(async move {
            let receiver = receiver.connect().await;
            while let Some(batch) = receiver.recv().await {
                inbox.queue.borrow_mut().extend(batch);
                let _ = kick.try_send(());
            }
        })
        .detach();
    }
    let mut senders = Vec::new();
    for sender in from_raft_tx {
        senders.push(sender.connect().await);
    }
    let ticker = {
        let (inbox, tick) = (inbox.clone(), config.tick);
        glommio::spawn_local(async move {
            let mut since_tick = Duration::ZERO;
            while !STOPPING.load(Ordering::Acquire) {
                let wait = STOP_POLL.min(tick);
                glommio::timer::sleep(wait).await;
                since_tick += wait;
                if since_tick >= tick {
                    since_tick = Duration::ZERO;
                    inbox.ticks.set(inbox.ticks.get() + 1);
                    let _ = kick.try_send(());
                }
            }
            inbox.stop.set(true);
            let _ = kick.try_send(());
        })
    };
    let core = RaftCore::new(node, wal, store, published, inbox, senders);
    let result = core.run(kicked).await;
    drop(ticker);
    Ok(result?)
}

/// A serving core: connects its channels, waits until the member has a leader, listens on the
/// client addresses, and serves until the member stops.
async fn serve(
    core: usize,
    ends: (SharedSender<Vec<ToRaft>>, SharedReceiver<Vec<FromRaft>>),
    shared: ServingShared,
) {
    let ServingShared {
        identity,
        published,
        db,
        grpc,
        addrs,
    } = shared;
    let (to_raft, from_raft) = ends;
    let to_raft = to_raft.connect().await;
    let from_raft = from_raft.connect().await;
    let (kick, kicked) = local_channel::new_bounded(1);
    let serving = Serving::install(core, identity.clone(), published.clone(), db, grpc, kick);
    let forwarder = {
        let serving = serving.clone();
        glommio::spawn_local(async move {
            while kicked.recv().await.is_some() {
                let batch = serving.take_outbox();
                if !batch.is_empty() && to_raft.send(batch).await.is_err() {
                    break;
                }
            }
        })
    };
    let receiver = {
        let serving = serving.clone();
        glommio::spawn_local(async move {
            while let Some(batch) = from_raft.recv().await {
                serving.deliver(batch);
            }
        })
    };
    while !published.ready.load(Ordering::Acquire) && !STOPPING.load(Ordering::Acquire) {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    let mut listeners = Vec::new();
    for addr in addrs {
        let max = identity.max_request_bytes;
        listeners.push(glommio::spawn_local(async move {
            if let Err(e) = crate::api::conn::listen(addr, max).await {
                tracing::error!("cannot listen for clients on {addr}: {e}");
                STOPPING.store(true, Ordering::Release);
            }
        }));
    }
    if core == 0 && !STOPPING.load(Ordering::Acquire) {
        tracing::info!(
            "ready to serve client requests (member {:x}, cluster {:x})",
            identity.member_id,
            identity.cluster_id
        );
    }
    // Serve until the member stops and the raft core has sent its last answers, then let those
    // reach their clients.
    while !RAFT_DONE.load(Ordering::Acquire) {
        glommio::timer::sleep(STOP_POLL).await;
    }
    glommio::timer::sleep(STOP_POLL).await;
    drop(listeners);
    drop(forwarder);
    drop(receiver);
    Serving::uninstall();
}
