//! A serving core's life: given its two channels with the raft core, start the forwarder (outbox →
//! raft core), the receiver (raft core → waiting requests) and the expiry of proposals past the
//! request timeout, wait until the raft core says the member is ready, listen on the client
//! addresses, and serve until the member stops. Then it stops accepting, waits for the raft core
//! to close its channel (every answer it had is delivered; what is left fails with `server
//! stopped`), ends its connections gracefully — calls in flight are answered — and returns.
//!
//! A core that cannot listen stops the member: a member that serves on some cores only is not what
//! the flags asked for.
//!
//! Runs on: every serving core (with one CPU, beside the raft core on its executor).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keelson_engine::pagefile::Db;

use super::conn::{self, Connections};
use super::context::{Identity, Serving};
use super::http::Surface;
use crate::metrics::CoreMetrics;
use crate::metrics::latency::Stage;
use crate::runtime::channel::ServingEnds;
use crate::runtime::link::{Batch, Published, ServingCore};
use crate::runtime::shutdown::{Cause, Shutdown};
use crate::runtime::signal::Signal;

/// How often proposals past the request timeout are answered `request timed out`; how late the
/// tick fires is the core's `lag` stage.
const EXPIRY_TICK: Duration = Duration::from_millis(100);

/// How long the connections get to answer their calls in flight once the raft core is gone.
const DRAIN: Duration = Duration::from_secs(2);

/// What every serving core starts with.
#[derive(Clone)]
pub struct Shared {
    /// This member.
    pub identity: Arc<Identity>,
    /// What the raft core publishes.
    pub published: Arc<Published>,
    /// The page file, for reads.
    pub db: Db,
    /// Every serving core's metrics.
    pub metrics: Arc<[CoreMetrics]>,
    /// The addresses to listen on: for clients, and for metrics and health only.
    pub addrs: Vec<(SocketAddr, Surface)>,
    /// The member's shutdown.
    pub shutdown: Shutdown,
}

/// Runs serving core `core` until the member stops.
pub async fn run(core: ServingCore, ends: ServingEnds, shared: Shared) {
    let Shared {
        identity,
        published,
        db,
        metrics,
        addrs,
        shutdown,
    } = shared;
    let ServingEnds { to_raft, from_raft } = ends;
    let ready = Signal::default();
    let serving = Serving::install(
        core,
        identity.clone(),
        published,
        db,
        metrics,
        ready.clone(),
    );
    let forwarder = {
        let serving = serving.clone();
        glommio::spawn_local(async move {
            let mut batch = Vec::new();
            loop {
                serving.outbox.wait().await;
                serving.outbox.take(&mut batch);
                if !batch.is_empty()
                    && (to_raft.send(Batch::now(std::mem::take(&mut batch))).await).is_err()
                {
                    break;
                }
            }
        })
    };
    let receiver = {
        let serving = serving.clone();
        glommio::spawn_local(async move {
            while let Some(batch) = from_raft.recv().await {
                let stages = &serving.own_metrics().stages;
                stages.observe(Stage::FromRaft, batch.sent.elapsed());
                serving.deliver(batch.items);
            }
            serving.raft_gone();
        })
    };
    let expiry = {
        let serving = serving.clone();
        glommio::spawn_local(async move {
            loop {
                let due = Instant::now() + EXPIRY_TICK;
                glommio::timer::sleep(EXPIRY_TICK).await;
                let now = Instant::now();
                let lag = now.saturating_duration_since(due);
                serving.own_metrics().stages.observe(Stage::Lag, lag);
                serving.expire_proposals(now);
            }
        })
    };
    futures_lite::future::or(ready.wait(), shutdown.wait()).await;
    let connections = Connections::default();
    let mut listeners = Vec::new();
    if !shutdown.is_stopping() {
        for &(addr, surface) in &addrs {
            match conn::listener(addr) {
                Ok(listener) => listeners.push(glommio::spawn_local(conn::accept(
                    listener,
                    addr,
                    surface,
                    identity.connections,
                    connections.clone(),
                ))),
                Err(e) => shutdown.stop(Cause::Failed(format!(
                    "cannot listen for {} on {addr}: {e}",
                    match surface {
                        Surface::Client => "clients",
                        Surface::Metrics => "metrics",
                    }
                ))),
            }
        }
    }
    if core.0 == 0 && !shutdown.is_stopping() {
        announce(&identity);
    }
    shutdown.wait().await;
    drop(listeners);
    receiver.await;
    connections.close();
    if glommio::timer::timeout(DRAIN, async {
        connections.drained().await;
        Ok(())
    })
    .await
    .is_err()
    {
        tracing::warn!(
            "client connections still open {DRAIN:?} after the member stopped; closing them"
        );
    }
    drop((forwarder, expiry));
    Serving::uninstall();
}

/// etcd's start-up lines, in etcd's words (scripts and etcd's own test harness wait for them):
/// the member's attributes published to its cluster, the API version it enables, and that it is
/// ready for clients.
fn announce(identity: &Identity) {
    let me = identity.members.iter().find(|m| m.id == identity.member_id);
    let (name, urls) = me.map_or((String::new(), Vec::new()), |m| {
        (m.name.clone(), m.client_urls.clone())
    });
    tracing::info!(
        "published {{Name:{name} ClientURLs:[{}]}} to cluster {:x}",
        urls.join(" "),
        identity.cluster_id
    );
    tracing::info!("enabled capabilities for version 3.4");
    tracing::info!(
        "ready to serve client requests (member {:x}, cluster {:x})",
        identity.member_id,
        identity.cluster_id
    );
}
