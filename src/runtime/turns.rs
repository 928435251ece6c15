//! Long background work's turns on a core. glommio polls for I/O only when its task queues run dry
//! or its preempt timer fires (every 100 ms); yielding a task, or its task queue, runs the queue
//! again without polling. So a task that works through a long job in synchronous steps (a watch
//! stream catching up on history) keeps every other connection of the core from being read until
//! it is done, however often it yields.
//!
//! Such a task calls [`give_way`] between steps. A slice begins at the first call after the core
//! last gave way; the first call [`SLICE`] or more after that waits on a timer. Timers fire only
//! in the reactor's poll, so the task resumes after one poll, behind the requests that poll brought
//! in. A slice the core partly idled through ends early: one poll more than needed, never one less.
//!
//! Invariant: the slice is the core's, not the task's, so many tasks at work together still let
//! the reactor poll once per slice.
//!
//! Runs on: every serving core.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How long background work may hold the core before the reactor polls.
pub const SLICE: Duration = Duration::from_micros(250);
/// A timer this short is still pending when first polled, and due by the reactor's next poll.
const ONE_POLL: Duration = Duration::from_micros(20);

thread_local! {
    /// When the core's current slice of background work began (`None`: it has not begun).
    static SLICE_BEGAN: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Gives way to the core's I/O if its background work has used up its slice; else lets glommio
/// preempt the task if it wants to.
pub async fn give_way() {
    let now = Instant::now();
    let began = SLICE_BEGAN.get().unwrap_or(now);
    SLICE_BEGAN.set(Some(began));
    if now.duration_since(began) < SLICE {
        glommio::yield_if_needed().await;
        return;
    }
    glommio::timer::sleep(ONE_POLL).await;
    SLICE_BEGAN.set(None);
}
