//! The raft core on its glommio executor: boots raft, gathers everything that reaches the core
//! into one mailbox of [`Event`]s — a receiver task per serving core's channel, a ticker every
//! heartbeat interval, the shutdown — and runs turns until told to stop, sending each serving core
//! its replies in one batch after every turn. On the way out it makes the page file durable,
//! closes the WAL and closes its channels, which is how the serving cores learn it is gone. A
//! failure stops the member (it is fail-stop) and ends the same way, minus the final sync.
//!
//! Runs on: the raft core.

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use keelson_engine::mvcc::{self, Store};
use keelson_engine::pagefile::UringFile;

use super::boot;
use super::compactor::Compactor;
use super::lessor::{LeaseOptions, Lessor};
use super::turn::{Event, RaftCore, RaftCoreError};
use crate::apply::Applier;
use crate::config::Config;
use crate::ids;
use crate::peer::listener::{self, Identity, Receiver};
use crate::peer::transport::{PeerTransport, Probes, Roster};
use crate::runtime::channel::{RaftEnds, Sender};
use crate::runtime::link::{Batch, FromRaft, Published, ServingCore};
use crate::runtime::mailbox::Mailbox;
use crate::runtime::shutdown::{Cause, Shutdown};

/// What the raft core starts from.
pub struct Setup {
    /// The member's configuration.
    pub config: Config,
    /// The store, opened.
    pub store: Store,
    /// What it publishes for every core.
    pub published: Arc<Published>,
    /// The member's shutdown.
    pub shutdown: Shutdown,
}

/// Runs the raft core until the member stops, talking to serving core i through `ends[i]`. A
/// failure stops the member and is returned.
pub async fn run(setup: Setup, ends: Vec<RaftEnds>) -> Result<(), RaftCoreError> {
    let Setup {
        config,
        store,
        published,
        shutdown,
    } = setup;
    let events = Rc::new(Mailbox::default());
    let mut senders = Vec::new();
    for (core, ends) in ends.into_iter().enumerate() {
        let events = events.clone();
        let receiver = ends.from_serving;
        glommio::spawn_local(async move {
            while let Some(batch) = receiver.recv().await {
                events.push(Event::Requests(ServingCore(core), batch));
            }
        })
        .detach();
        senders.push(ends.to_serving);
    }
    let result = serve(&config, store, published, &events, &senders, &shutdown).await;
    if let Err(e) = &result {
        shutdown.stop(Cause::Failed(format!("the raft core stopped: {e}")));
    }
    // Dropping the senders closes the channels: the serving cores drain and stop.
    drop(senders);
    result
}

async fn serve(
    config: &Config,
    store: Store,
    published: Arc<Published>,
    events: &Rc<Mailbox<Event>>,
    senders: &[Sender<Batch<FromRaft>>],
    shutdown: &Shutdown,
) -> Result<(), RaftCoreError> {
    let view = store.db().begin_read().map_err(mvcc::MvccError::from)?;
    let members = mvcc::members::members(&view)?;
    drop(view);
    let booted = boot::boot(config, store.applied(), &members).await?;
    let file = UringFile::open(store.db())
        .await
        .map_err(keelson_engine::mvcc::MvccError::from)?;
    let wake: Rc<dyn Fn()> = {
        let events = events.clone();
        Rc::new(move || events.wake())
    };
    let view = store.db().begin_read().map_err(mvcc::MvccError::from)?;
    let stored = mvcc::leases(&view)?;
    drop(view);
    let lessor = Lessor::new(
        LeaseOptions {
            checkpoint_interval: config.lease_checkpoint_interval,
            promote_extension: config.tick * config.election_ticks as u32,
        },
        stored.iter().map(|l| (l.id, l.ttl, l.remaining_ttl)),
    );
    let applier = Applier::new(
        store,
        config.member_id,
        file,
        config.sync,
        published.clone(),
        wake,
    );
    let probes = Rc::new(Probes::default());
    let roster = Rc::new(Roster::default());
    let transport = PeerTransport::start(
        config.cluster_id,
        config.member_id,
        published.clone(),
        probes.clone(),
        events.clone(),
        roster.clone(),
    );
    let receiver = Receiver {
        identity: Identity {
            cluster_id: config.cluster_id,
            member_id: config.member_id,
        },
        events: events.clone(),
        published: published.clone(),
        probes,
        snap_dir: config
            .db_path()
            .parent()
            .map_or_else(|| config.data_dir.clone(), Path::to_path_buf),
        roster,
        receives: Cell::new(0),
    };
    let listeners = listener::listen(&config.peer_addrs, receiver).map_err(RaftCoreError::Peer)?;
    let mut core = RaftCore::new(
        booted.node,
        booted.wal,
        applier,
        transport,
        lessor,
        published,
        senders.len(),
        ids::first_request_id(config.member_id, ids::RAFT_CORE_LANE),
    );
    let me = config.members.iter().find(|m| m.id == config.member_id);
    if let Some(me) = me {
        core.publish(
            ids::first_request_id(config.member_id, ids::MEMBERSHIP_LANE),
            &me.name,
            &me.client_urls,
        );
    }
    // Twice the time its client waits for it: the client has had its answer by then.
    let patience = 2 * config.request_timeout().as_millis() / config.tick.as_millis().max(1);
    core.forget_proposals_after(patience as u64);
    core.keep_for_followers(config.catch_up_entries, config.snapshot_count);
    core.check_reconfigurations(config.strict_reconfig_check);
    if let Some(mode) = config.auto_compaction {
        core.compact_automatically(Compactor::new(mode, std::time::Instant::now()));
    }
    core.start()?;
    let ticker = {
        let (events, tick) = (events.clone(), config.tick);
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(tick).await;
                events.push(Event::Tick);
            }
        })
    };
    let stop = {
        let (events, shutdown) = (events.clone(), shutdown.clone());
        glommio::spawn_local(async move {
            shutdown.wait().await;
            events.push(Event::Stop);
        })
    };
    let mut batch = Vec::new();
    loop {
        if !core.has_work() && events.is_empty() {
            events.wait().await;
        }
        events.take(&mut batch);
        core.turn(&mut batch).await?;
        for (serving, replies) in core.replies() {
            // A serving core that stopped has nobody left to answer.
            let _ = senders[serving.0].send(Batch::now(replies)).await;
        }
        if core.is_stopping() {
            break;
        }
        if core.has_work() {
            // Let the other tasks of this executor in between compaction batches.
            glommio::yield_if_needed().await;
        }
    }
    drop((ticker, stop, listeners));
    core.close().await
}
