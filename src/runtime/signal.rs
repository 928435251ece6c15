//! A one-shot broadcast: fired once, by any thread, it wakes every task waiting on it, on any
//! executor, and stays fired. The member's shutdown is one; so is a serving core's "close your
//! connections now". The lock guards only the list of wakers, touched when a task starts or stops
//! waiting and when the signal fires — never on a request's path.
//!
//! Runs on: any thread.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

#[derive(Debug, Default)]
struct Inner {
    fired: AtomicBool,
    waiters: Mutex<Vec<Waker>>,
}

/// A one-shot broadcast. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Signal(Arc<Inner>);

impl Signal {
    /// Fires the signal (again is harmless), waking everyone waiting.
    pub fn fire(&self) {
        self.0.fired.store(true, Ordering::Release);
        let waiters = std::mem::take(&mut *self.lock());
        for waker in waiters {
            waker.wake();
        }
    }

    /// Whether it has fired.
    pub fn is_fired(&self) -> bool {
        self.0.fired.load(Ordering::Acquire)
    }

    /// Returns once the signal has fired.
    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.is_fired() {
                return Poll::Ready(());
            }
            let mut waiters = self.lock();
            // Checked again under the lock: `fire` takes the list after setting the flag.
            if self.is_fired() {
                return Poll::Ready(());
            }
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Waker>> {
        // A waker list stays valid even if a thread panicked holding the lock.
        self.0.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firing_on_another_thread_wakes_a_waiter() {
        let signal = Signal::default();
        let fired = signal.clone();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            fired.fire();
        });
        futures_lite::future::block_on(signal.wait());
        assert!(signal.is_fired());
        futures_lite::future::block_on(signal.wait());
        thread.join().unwrap();
    }
}
