//! Stopping the member: one [`Shutdown`] handle, cloned into every core. Whoever stops the member —
//! SIGTERM or SIGINT ([`on_signals`]), a core that failed — calls [`Shutdown::stop`] with the cause;
//! every core waits on it ([`Shutdown::wait`]) and drains by message: the raft core finishes its
//! turn, answers what it applied, syncs the page file and closes its channels; the serving cores
//! answer what remains and close their connections.
//!
//! Stopping is bounded: [`Shutdown::stop`] also arms a watchdog that ends the process after the
//! bound, whatever state it is in (starting up, a core stuck on a dead disk) — a crash at any
//! instant loses nothing acknowledged, so the watchdog is safe. A second signal ends it at once.
//!
//! Runs on: any thread (the handle is `Send`; the watchdog and the signal watcher are threads).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::fatal;
use super::signal::Signal;

/// Why the member stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// Asked to (a signal's name).
    Requested(&'static str),
    /// Something failed that the member cannot run without.
    Failed(String),
}

#[derive(Debug)]
struct Inner {
    cause: Mutex<Option<Cause>>,
    bound: Duration,
}

/// The member's shutdown. Clones share it.
#[derive(Debug, Clone)]
pub struct Shutdown {
    signal: Signal,
    inner: Arc<Inner>,
}

impl Shutdown {
    /// A shutdown that, once begun, ends the process after `bound` at the latest.
    pub fn new(bound: Duration) -> Shutdown {
        Shutdown {
            signal: Signal::default(),
            inner: Arc::new(Inner {
                cause: Mutex::new(None),
                bound,
            }),
        }
    }

    /// Begins stopping the member (the first cause is the one kept) and arms the watchdog.
    pub fn stop(&self, cause: Cause) {
        {
            let mut kept = self.inner.cause.lock().unwrap_or_else(|e| e.into_inner());
            if kept.is_some() {
                return;
            }
            match &cause {
                Cause::Requested(signal) => {
                    tracing::info!("received {signal}; stopping: answering what was applied")
                }
                Cause::Failed(why) => tracing::error!("stopping the member: {why}"),
            }
            *kept = Some(cause.clone());
        }
        let bound = self.inner.bound;
        let watchdog = std::thread::Builder::new()
            .name("keelson-stop-watchdog".into())
            .spawn(move || {
                std::thread::sleep(bound);
                fatal::exit(&format!(
                    "the member did not stop within {bound:?} of {}",
                    match cause {
                        Cause::Requested(signal) => signal.to_string(),
                        Cause::Failed(why) => why,
                    }
                ));
            });
        if watchdog.is_err() {
            fatal::exit("cannot start the shutdown watchdog");
        }
        self.signal.fire();
    }

    /// Whether the member is stopping.
    pub fn is_stopping(&self) -> bool {
        self.signal.is_fired()
    }

    /// Returns once the member is stopping.
    pub async fn wait(&self) {
        self.signal.wait().await
    }

    /// The failure that stopped the member, if one did.
    pub fn failure(&self) -> Option<String> {
        match &*self.inner.cause.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(Cause::Failed(why)) => Some(why.clone()),
            _ => None,
        }
    }
}

/// Watches for SIGTERM and SIGINT on a thread of its own: the first stops `shutdown`, a second
/// ends the process at once.
pub fn on_signals(shutdown: &Shutdown) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    let shutdown = shutdown.clone();
    std::thread::Builder::new()
        .name("keelson-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let name = if signal == SIGTERM {
                    "SIGTERM"
                } else {
                    "SIGINT"
                };
                if shutdown.is_stopping() {
                    fatal::exit(&format!("received {name} again while stopping"));
                }
                shutdown.stop(Cause::Requested(name));
            }
        })?;
    Ok(())
}
