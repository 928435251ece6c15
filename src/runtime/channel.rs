//! The two channels between the raft core and one serving core, as each side holds them.
//!
//! A serving core on an executor of its own talks to the raft core through glommio's shared
//! channels: made on the main thread ([`apart`]), connected by each side on its executor. A serving
//! core that runs beside the raft core, on its executor (one CPU), talks through local channels
//! instead ([`beside`], made on that executor). The reason is cost: a shared channel's wake-up is
//! only seen between passes of the executor's loop, and each pass re-arms glommio's timers (three
//! `io_uring_enter` and five submissions), so on one executor every hop of every request would cost
//! a pass; a local channel's wake-up runs its task in the same pass.
//!
//! Either kind closes when its sender is dropped: a receiver then drains what is left and ends.
//!
//! Runs on: both sides (the ends of [`apart`] are made on the main thread and moved).

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::channels::shared_channel::{
    self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};

use super::link::{Batch, FromRaft, ToRaft};

/// The sending end of a channel, connected on the executor that holds it.
pub enum Sender<T: Send> {
    Shared(ConnectedSender<T>),
    Local(LocalSender<T>),
}

/// The receiving end of a channel, connected on the executor that holds it.
pub enum Receiver<T: Send> {
    Shared(ConnectedReceiver<T>),
    Local(LocalReceiver<T>),
}

/// The receiver is gone: nothing sent reaches anyone.
#[derive(Debug)]
pub struct Closed;

impl<T: Send> Sender<T> {
    /// Sends `item`, waiting for room.
    pub async fn send(&self, item: T) -> Result<(), Closed> {
        match self {
            Sender::Shared(s) => s.send(item).await.map_err(|_| Closed),
            Sender::Local(s) => s.send(item).await.map_err(|_| Closed),
        }
    }
}

impl<T: Send> Receiver<T> {
    /// The next item; `None` once the sender is gone and every item was taken.
    pub async fn recv(&self) -> Option<T> {
        match self {
            Receiver::Shared(r) => r.recv().await,
            Receiver::Local(r) => r.recv().await,
        }
    }
}

/// The raft core's ends of one serving core's channels.
pub struct RaftEnds {
    pub from_serving: Receiver<Batch<ToRaft>>,
    pub to_serving: Sender<Batch<FromRaft>>,
}

/// A serving core's ends of its channels with the raft core.
pub struct ServingEnds {
    pub to_raft: Sender<Batch<ToRaft>>,
    pub from_raft: Receiver<Batch<FromRaft>>,
}

/// The raft core's ends of channels with a serving core on another executor, not yet connected.
pub struct ApartRaftEnds {
    from_serving: SharedReceiver<Batch<ToRaft>>,
    to_serving: SharedSender<Batch<FromRaft>>,
}

/// A serving core's ends of channels with the raft core on another executor, not yet connected.
pub struct ApartServingEnds {
    to_raft: SharedSender<Batch<ToRaft>>,
    from_raft: SharedReceiver<Batch<FromRaft>>,
}

/// Channels of `capacity` batches each way between the raft core and a serving core on executors
/// apart.
pub fn apart(capacity: usize) -> (ApartRaftEnds, ApartServingEnds) {
    let (to_raft, from_serving) = shared_channel::new_bounded(capacity);
    let (to_serving, from_raft) = shared_channel::new_bounded(capacity);
    (
        ApartRaftEnds {
            from_serving,
            to_serving,
        },
        ApartServingEnds { to_raft, from_raft },
    )
}

/// Channels of `capacity` batches each way between the raft core and a serving core beside it;
/// made on their executor.
pub fn beside(capacity: usize) -> (RaftEnds, ServingEnds) {
    let (to_raft, from_serving) = local_channel::new_bounded(capacity);
    let (to_serving, from_raft) = local_channel::new_bounded(capacity);
    (
        RaftEnds {
            from_serving: Receiver::Local(from_serving),
            to_serving: Sender::Local(to_serving),
        },
        ServingEnds {
            to_raft: Sender::Local(to_raft),
            from_raft: Receiver::Local(from_raft),
        },
    )
}

impl ApartRaftEnds {
    /// Connects them on the raft core's executor.
    pub async fn connect(self) -> RaftEnds {
        RaftEnds {
            from_serving: Receiver::Shared(self.from_serving.connect().await),
            to_serving: Sender::Shared(self.to_serving.connect().await),
        }
    }
}

impl ApartServingEnds {
    /// Connects them on the serving core's executor.
    pub async fn connect(self) -> ServingEnds {
        ServingEnds {
            to_raft: Sender::Shared(self.to_raft.connect().await),
            from_raft: Receiver::Shared(self.from_raft.connect().await),
        }
    }
}
