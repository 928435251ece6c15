//! hyper's timers on glommio: hyper's HTTP/2 keep-alive pings need sleeps that are `Send`, and
//! glommio's are not, so each sleep is a task on this core's executor that fires a one-shot
//! channel — the `Send` end is what hyper holds. A sleep hyper drops ends its task at once.
//!
//! Runs on: every serving core.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use hyper::rt::{Sleep, Timer};

/// hyper's timer, on the executor of the core whose connection asks for one.
#[derive(Debug, Clone, Copy)]
pub struct LocalTimer;

/// A sleep: ready once its task fires (or is gone).
struct Fired(oneshot::Receiver<()>);

impl Future for Fired {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(drop)
    }
}

impl Sleep for Fired {}

impl Timer for LocalTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        let (mut fire, fired) = oneshot::channel();
        glommio::spawn_local(async move {
            let slept = futures_lite::future::or(
                async {
                    glommio::timer::sleep(duration).await;
                    true
                },
                async {
                    fire.cancellation().await;
                    false
                },
            )
            .await;
            if slept {
                let _ = fire.send(());
            }
        })
        .detach();
        Box::pin(Fired(fired))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        self.sleep(deadline.saturating_duration_since(Instant::now()))
    }
}
