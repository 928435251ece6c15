//! A mailbox: items pushed by tasks of one executor, taken in one batch by the single task that
//! waits on it, with one wake-up however many were pushed. The raft core's events and a serving
//! core's outbox to the raft core are mailboxes; this is the one spelling of "queue, kick, drain".
//!
//! Runs on: one executor (shared by `Rc`; never crosses threads).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// Items waiting for the task that drains them.
pub struct Mailbox<T> {
    items: RefCell<Vec<T>>,
    /// Pushed or woken since the last [`Mailbox::take`].
    woken: Cell<bool>,
    waiter: Cell<Option<Waker>>,
}

impl<T> std::fmt::Debug for Mailbox<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("items", &self.items.borrow().len())
            .field("woken", &self.woken.get())
            .finish()
    }
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Mailbox {
            items: RefCell::new(Vec::new()),
            woken: Cell::new(false),
            waiter: Cell::new(None),
        }
    }
}

impl<T> Mailbox<T> {
    /// Adds an item and wakes the waiting task.
    pub fn push(&self, item: T) {
        self.items.borrow_mut().push(item);
        self.wake();
    }

    /// Wakes the waiting task with nothing new to take (something else changed).
    pub fn wake(&self) {
        self.woken.set(true);
        if let Some(waker) = self.waiter.take() {
            waker.wake();
        }
    }

    /// Moves every item into `into` (which should be empty: its allocation is reused).
    pub fn take(&self, into: &mut Vec<T>) {
        std::mem::swap(&mut *self.items.borrow_mut(), into);
        self.woken.set(false);
    }

    /// How many items are waiting.
    pub fn len(&self) -> usize {
        self.items.borrow().len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.items.borrow().is_empty()
    }

    /// Returns once something was pushed or woken since the last [`Mailbox::take`].
    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.woken.get() {
                Poll::Ready(())
            } else {
                self.waiter.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_returns_after_a_push_or_a_wake_and_take_drains() {
        futures_lite::future::block_on(async {
            let mailbox = Mailbox::default();
            mailbox.push(1);
            mailbox.push(2);
            mailbox.wait().await;
            let mut got = Vec::new();
            mailbox.take(&mut got);
            assert_eq!(got, vec![1, 2]);
            assert!(mailbox.is_empty());
            mailbox.wake();
            mailbox.wait().await;
            got.clear();
            mailbox.take(&mut got);
            assert!(got.is_empty());
            let pending = futures_lite::future::poll_once(mailbox.wait()).await;
            assert!(pending.is_none(), "nothing pushed or woken since the take");
        });
    }
}
