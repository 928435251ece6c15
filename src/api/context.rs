//! A serving core's own state, reachable from the gRPC handlers that run on it: the way to the raft
//! core (proposals, read-index batches and questions to the lessor, gathered in an outbox), the
//! requests waiting for an answer, and the page file to read from. It lives in a thread-local of
//! the core's executor thread, because tonic's handlers must be `Send` futures: a handler touches
//! it only in synchronous calls ([`with`]) and awaits only `Send` one-shot receivers.
//!
//! Proposals are known by their request id, which is unique to this core by construction (the
//! member and the core are in its top bits); one not applied within the request timeout is answered
//! `request timed out` by the core's expiry tick, not a timer per request. Linearizable reads are
//! batched: at most one read-index request per core is in flight; reads that arrive meanwhile wait
//! for the next one (they must not be answered by a read index asked before they arrived).
//!
//! Runs on: every serving core.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use keelson_engine::mvcc::{self, Revisions};
use keelson_engine::pagefile::{Db, ReadTxn};
use keelson_proto::etcdserverpb::ResponseHeader;
use prost::Message;
use tonic::Status;

use super::{conn, status};
use crate::config::Member;
use crate::ids;
use crate::metrics::latency::{Stage, Stages};
use crate::metrics::{self, CoreMetrics, WatchGauges};
use crate::runtime::link::{
    FromRaft, LeaseAnswer, LeaseAsk, Outcome, Published, Refusal, ServingCore, ToRaft, Token,
};
use crate::runtime::mailbox::Mailbox;
use crate::runtime::signal::Signal;
use crate::watch::{Hub, Source};

/// What every core knows about this member, fixed at start.
#[derive(Debug)]
pub struct Identity {
    /// This member's id.
    pub member_id: u64,
    /// The cluster's id.
    pub cluster_id: u64,
    /// The members of the cluster.
    pub members: Vec<Member>,
    /// Most operations in one txn.
    pub max_txn_ops: usize,
    /// The election timeout.
    pub election_timeout: Duration,
    /// How often an idle watcher that asked for progress notifications gets one.
    pub progress_interval: Duration,
    /// The backend quota in bytes (`None`: none).
    pub quota_bytes: Option<u64>,
    /// How client connections are served.
    pub connections: conn::Settings,
    /// How long a proposal may take to be applied before the client is told it timed out (etcd's
    /// 5 s plus two election timeouts).
    pub request_timeout: Duration,
}

/// Committed entries waiting to be applied beyond which proposals are refused (etcd's
/// `maxGapBetweenApplyAndCommitIndex`).
pub const MAX_APPLY_BACKLOG: u64 = 5000;

/// A linearizable read waiting for its read index, and when it began waiting.
type ReadWaiter = (Instant, oneshot::Sender<Result<(), Status>>);
type LeaseWaiter = oneshot::Sender<Result<LeaseAnswer, Refusal>>;

#[derive(Default)]
struct Reads {
    /// The batch whose read index is being asked for.
    asked: Option<(Token, Vec<ReadWaiter>)>,
    /// Reads that arrived since.
    next: Vec<ReadWaiter>,
}

/// One serving core's state.
pub struct Serving {
    core: ServingCore,
    /// This member.
    pub identity: Arc<Identity>,
    /// What the raft core publishes.
    pub published: Arc<Published>,
    /// The page file, for reads (replaced when a defragmentation rewrites it).
    db: RefCell<Db>,
    /// Every serving core's metrics (this core writes only its own).
    pub metrics: Arc<[CoreMetrics]>,
    /// Requests for the raft core, taken by this core's forwarder.
    pub outbox: Mailbox<ToRaft>,
    /// Fired when the raft core says the member is ready.
    ready: Signal,
    /// Proposals waiting for their outcome, with the instant they were proposed.
    proposals: RefCell<HashMap<u64, (Instant, oneshot::Sender<Outcome>)>>,
    reads: RefCell<Reads>,
    /// Questions to the lessor awaiting its answer.
    lease_asks: RefCell<HashMap<Token, LeaseWaiter>>,
    /// Defragment and MoveLeader calls awaiting their end.
    awaiting_done: RefCell<HashMap<Token, oneshot::Sender<Result<(), Refusal>>>>,
    next_token: Cell<Token>,
    next_id: Cell<u64>,
    /// This core's watchers.
    pub watch: RefCell<Hub>,
    /// Set once the raft core has gone: nothing more will be answered.
    raft_gone: Cell<bool>,
    /// Fired when the raft core has gone, for streams that wait on nothing else.
    pub gone: Signal,
}

thread_local! {
    static SERVING: RefCell<Option<Rc<Serving>>> = const { RefCell::new(None) };
}

/// Runs `f` with this core's state; `server stopped` if the core has none (not serving).
pub fn with<T>(f: impl FnOnce(&Serving) -> Result<T, Status>) -> Result<T, Status> {
    let serving = SERVING.with(|s| s.borrow().clone());
    match serving {
        Some(serving) => f(&serving),
        None => Err(status::stopped()),
    }
}

impl Serving {
    /// Installs the state of serving core `core` on this thread; `ready` fires when the raft core
    /// says the member is ready.
    pub fn install(
        core: ServingCore,
        identity: Arc<Identity>,
        published: Arc<Published>,
        db: Db,
        metrics: Arc<[CoreMetrics]>,
        ready: Signal,
    ) -> Rc<Serving> {
        // Lanes 0..=254; the raft core has its own.
        let first_id = ids::first_request_id(identity.member_id, (core.0 % 255) as u8);
        let serving = Rc::new(Serving {
            core,
            identity,
            published,
            db: RefCell::new(db),
            metrics,
            outbox: Mailbox::default(),
            ready,
            proposals: RefCell::new(HashMap::new()),
            reads: RefCell::new(Reads::default()),
            lease_asks: RefCell::new(HashMap::new()),
            awaiting_done: RefCell::new(HashMap::new()),
            next_token: Cell::new(1),
            next_id: Cell::new(first_id),
            watch: RefCell::new(Hub::default()),
            raft_gone: Cell::new(false),
            gone: Signal::default(),
        });
        keelson_proto::codec::observe_with(Rc::new(metrics::CodecObserver {
            cores: serving.metrics.clone(),
            core: serving.core.0,
        }));
        SERVING.with(|s| *s.borrow_mut() = Some(serving.clone()));
        serving
    }

    /// Removes this thread's state: requests still waiting fail with `server stopped`.
    pub fn uninstall() {
        SERVING.with(|s| s.borrow_mut().take());
    }

    fn token(&self) -> Token {
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        token
    }

    /// Proposes `request` through raft; the receiver yields its outcome once applied.
    pub fn propose(&self, request: mvcc::Request) -> Result<oneshot::Receiver<Outcome>, Status> {
        let max = self.identity.connections.max_request_bytes;
        self.send_proposal(|id| {
            let data = request.into_internal(id).encode_to_vec();
            if data.len() > max {
                return Err(status::too_large());
            }
            Ok(ToRaft::Propose { id, data })
        })
    }

    /// Asks the raft core to change the cluster's members; the receiver yields the outcome once
    /// the change is applied (or why it was not proposed).
    pub fn reconfigure(
        &self,
        change: mvcc::members::Change,
    ) -> Result<oneshot::Receiver<Outcome>, Status> {
        self.send_proposal(|id| Ok(ToRaft::Reconfigure { id, change }))
    }

    /// Sends the raft core what `make` makes of a new request id, and waits for its outcome
    /// (answered `request timed out` after the request timeout).
    fn send_proposal(
        &self,
        make: impl FnOnce(u64) -> Result<ToRaft, Status>,
    ) -> Result<oneshot::Receiver<Outcome>, Status> {
        if self.raft_gone.get() {
            return Err(status::stopped());
        }
        let backlog = self
            .published
            .committed()
            .saturating_sub(self.published.applied());
        if backlog > MAX_APPLY_BACKLOG {
            return Err(status::too_many_requests());
        }
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        let request = make(id)?;
        let (tx, rx) = oneshot::channel();
        self.proposals.borrow_mut().insert(id, (Instant::now(), tx));
        self.outbox.push(request);
        Ok(rx)
    }

    /// Answers `request timed out` to every proposal not applied by its deadline (`now` or
    /// before); its outcome, if it comes later, has nobody left to hear it — as etcd's.
    pub fn expire_proposals(&self, now: Instant) {
        let mut proposals = self.proposals.borrow_mut();
        let timeout = self.identity.request_timeout;
        let expired: Vec<u64> = proposals
            .iter()
            .filter(|(_, (proposed, _))| *proposed + timeout <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some((_, waiter)) = proposals.remove(&id) {
                let _ = waiter.send(Err(Refusal::TimedOut));
            }
        }
    }

    /// A new lease id, for a grant that left it to the server: positive, and unique as request ids
    /// are (etcd takes its lease ids from its request id generator too).
    pub fn new_lease_id(&self) -> i64 {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        (id & i64::MAX as u64) as i64
    }

    /// Asks the raft core's lessor; the receiver yields its answer.
    pub fn ask_lessor(&self, ask: LeaseAsk) -> oneshot::Receiver<Result<LeaseAnswer, Refusal>> {
        let (tx, rx) = oneshot::channel();
        if self.raft_gone.get() {
            let _ = tx.send(Err(Refusal::Stopped));
            return rx;
        }
        let token = self.token();
        self.lease_asks.borrow_mut().insert(token, tx);
        self.outbox.push(ToRaft::Lease { token, ask });
        rx
    }

    /// Asks the raft core to defragment the page file; the receiver yields once it has (or why
    /// it could not).
    pub fn defragment(&self) -> oneshot::Receiver<Result<(), Refusal>> {
        self.until_done(|token| ToRaft::Defragment { token })
    }

    /// Asks the raft core to hand leadership to `target`; the receiver yields once it leads (or
    /// why it does not).
    pub fn move_leader(&self, target: u64) -> oneshot::Receiver<Result<(), Refusal>> {
        self.until_done(|token| ToRaft::MoveLeader { token, target })
    }

    /// Sends the raft core `request` under a new token; the receiver yields its
    /// [`FromRaft::Done`].
    fn until_done(
        &self,
        request: impl FnOnce(Token) -> ToRaft,
    ) -> oneshot::Receiver<Result<(), Refusal>> {
        let (tx, rx) = oneshot::channel();
        if self.raft_gone.get() {
            let _ = tx.send(Err(Refusal::Stopped));
            return rx;
        }
        let token = self.token();
        self.awaiting_done.borrow_mut().insert(token, tx);
        self.outbox.push(request(token));
        rx
    }

    /// The page file this core reads.
    pub fn db(&self) -> Db {
        self.db.borrow().clone()
    }

    /// Waits for a linearizable read: the receiver yields once every write committed before this
    /// call is applied to the page file.
    pub fn read_barrier(&self) -> oneshot::Receiver<Result<(), Status>> {
        let (tx, rx) = oneshot::channel();
        if self.raft_gone.get() {
            let _ = tx.send(Err(status::stopped()));
            return rx;
        }
        self.reads.borrow_mut().next.push((Instant::now(), tx));
        self.ask_read_index();
        rx
    }

    fn ask_read_index(&self) {
        let mut reads = self.reads.borrow_mut();
        if reads.asked.is_some() || reads.next.is_empty() {
            return;
        }
        let token = self.token();
        let batch = std::mem::take(&mut reads.next);
        reads.asked = Some((token, batch));
        drop(reads);
        self.outbox.push(ToRaft::ReadIndex { token });
    }

    /// Hands answers from the raft core to the requests waiting for them.
    pub fn deliver(&self, batch: Vec<FromRaft>) {
        for answer in batch {
            match answer {
                FromRaft::Ready => self.ready.fire(),
                FromRaft::Changes(changes) => self.watch.borrow_mut().changed(self, &changes),
                FromRaft::Applied { id, outcome } => {
                    if let Some((proposed, waiter)) = self.proposals.borrow_mut().remove(&id) {
                        self.stages().observe(Stage::Write, proposed.elapsed());
                        let _ = waiter.send(outcome);
                    }
                }
                FromRaft::Done { token, result } => {
                    if let Some(waiter) = self.awaiting_done.borrow_mut().remove(&token) {
                        let _ = waiter.send(result);
                    }
                }
                FromRaft::Reopened(db) => *self.db.borrow_mut() = db,
                FromRaft::Installed(db) => {
                    *self.db.borrow_mut() = db;
                    self.watch.borrow_mut().unsync_all(self);
                }
                FromRaft::Lease { token, answer } => {
                    if let Some(waiter) = self.lease_asks.borrow_mut().remove(&token) {
                        let _ = waiter.send(answer);
                    }
                }
                FromRaft::ReadReady { token, result } => {
                    let mut reads = self.reads.borrow_mut();
                    if reads.asked.as_ref().is_some_and(|(t, _)| *t == token) {
                        let (_, waiters) = reads.asked.take().expect("checked");
                        drop(reads);
                        let result = result.map_err(|refusal| status::of_refusal(&refusal));
                        for (arrived, waiter) in waiters {
                            self.stages().observe(Stage::ReadIndex, arrived.elapsed());
                            let _ = waiter.send(result.clone());
                        }
                        self.ask_read_index();
                    }
                }
            }
        }
    }

    /// The raft core has gone (it closed its channel): every request still waiting fails with
    /// `server stopped`, and so does every later one.
    pub fn raft_gone(&self) {
        self.raft_gone.set(true);
        self.gone.fire();
        self.watch.borrow_mut().close_all(self);
        for (_, (_, waiter)) in self.proposals.borrow_mut().drain() {
            let _ = waiter.send(Err(Refusal::Stopped));
        }
        for (_, waiter) in self.lease_asks.borrow_mut().drain() {
            let _ = waiter.send(Err(Refusal::Stopped));
        }
        for (_, waiter) in self.awaiting_done.borrow_mut().drain() {
            let _ = waiter.send(Err(Refusal::Stopped));
        }
        let mut reads = self.reads.borrow_mut();
        let asked = reads.asked.take().map(|(_, w)| w).unwrap_or_default();
        for (_, waiter) in asked.into_iter().chain(reads.next.drain(..)) {
            let _ = waiter.send(Err(status::stopped()));
        }
    }

    /// Reads from this core's view of the page file: a read transaction on the latest published
    /// tree and the revisions it shows.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&ReadTxn, Revisions) -> mvcc::Result<T>,
    ) -> Result<T, Status> {
        let started = Instant::now();
        let read = || {
            let txn = self.db().begin_read()?;
            let revisions = mvcc::revisions(&txn)?;
            f(&txn, revisions)
        };
        let result = read().map_err(|e| status::of_mvcc(&e));
        self.stages().observe(Stage::Read, started.elapsed());
        result
    }

    /// Counts a stream of gRPC method `path` handled, with the status it `ended` with.
    pub fn stream_ended(&self, path: &str, ended: &Result<(), Status>) {
        if let Some(method) = metrics::method_index(path) {
            let code = ended.as_ref().map_or_else(|e| e.code() as usize, |()| 0);
            self.own_metrics().handled(method, code);
        }
    }

    /// This core's own metrics (its row of [`Serving::metrics`], one per serving core by
    /// construction).
    pub fn own_metrics(&self) -> &CoreMetrics {
        &self.metrics[self.core.0]
    }

    /// This core's stage histograms.
    fn stages(&self) -> &Stages {
        &self.own_metrics().stages
    }

    /// A response header as etcd fills it, at `revision`.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.identity.cluster_id,
            member_id: self.identity.member_id,
            revision,
            raft_term: self.published.term(),
        }
    }
}

impl Source for Serving {
    fn view(&self) -> mvcc::Result<(ReadTxn, Revisions)> {
        let txn = self.db().begin_read()?;
        let revisions = mvcc::revisions(&txn)?;
        Ok((txn, revisions))
    }

    fn header(&self, revision: i64) -> ResponseHeader {
        Serving::header(self, revision)
    }

    fn gauges(&self) -> &WatchGauges {
        &self.own_metrics().watch
    }
}
