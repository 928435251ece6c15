//! A serving core's own state, reachable from the gRPC handlers that run on it: the way to the raft
//! core (proposals and read-index batches), the requests waiting for an answer, and the page file to
//! read from. It lives in a thread-local of the core's executor thread, because tonic's handlers
//! must be `Send` futures: a handler touches it only in synchronous calls ([`with`]) and awaits
//! only `Send` one-shot receivers.
//!
//! Linearizable reads are batched: at most one read-index request per core is in flight; reads
//! that arrive meanwhile wait for the next one (they must not be answered by a read index asked
//! before they arrived).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use futures_channel::oneshot;
use glommio::channels::local_channel::LocalSender;
use keelson_engine::mvcc;
use keelson_engine::pagefile::Db;
use keelson_proto::etcdserverpb::ResponseHeader;
use tonic::Status;

use crate::config::Member;
use crate::link::{FromRaft, Outcome, Published, ToRaft, Token};
use crate::metrics::GrpcCounters;
use crate::raft::entry;
use crate::status;

/// What every core knows about this member, fixed at start.
#[derive(Debug)]
pub struct Identity {
    /// This member's id.
    pub member_id: u64,
    /// The cluster's id.
    pub cluster_id: u64,
    /// The members of the cluster.
    pub members: Vec<Member>,
    /// Largest request accepted, in bytes.
    pub max_request_bytes: usize,
    /// Most operations in one txn.
    pub max_txn_ops: usize,
}

type ReadWaiter = oneshot::Sender<Result<(), Status>>;

#[derive(Default)]
struct Reads {
    /// The batch whose read index is being asked for.
    asked: Option<(Token, Vec<ReadWaiter>)>,
    /// Reads that arrived since.
    next: Vec<ReadWaiter>,
}

/// One serving core's state.
pub struct Serving {
    core: usize,
    /// This member.
    pub identity: Arc<Identity>,
    /// What the raft core publishes.
    pub published: Arc<Published>,
    /// The page file, for reads.
    pub db: Db,
    /// Every serving core's call counters (this core writes only its own).
    pub grpc: Arc<[GrpcCounters]>,
    outbox: RefCell<Vec<ToRaft>>,
    kick: LocalSender<()>,
    proposals: RefCell<HashMap<Token, oneshot::Sender<Outcome>>>,
    reads: RefCell<Reads>,
    next_token: Cell<Token>,
    next_id: Cell<u64>,
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
    /// Installs the state of serving core `core` on this thread; `kick` wakes its forwarder.
    pub fn install(
        core: usize,
        identity: Arc<Identity>,
        published: Arc<Published>,
        db: Db,
        grpc: Arc<[GrpcCounters]>,
        kick: LocalSender<()>,
    ) -> Rc<Serving> {
        // Request ids as etcd makes them unique: the member in the top 16 bits, then this core,
        // then a counter started from the clock so ids do not repeat across restarts.
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let first_id = (identity.member_id << 48)
            | ((core as u64 & 0xff) << 40)
            | ((millis << 8) & ((1 << 40) - 1));
        let serving = Rc::new(Serving {
            core,
            identity,
            published,
            db,
            grpc,
            outbox: RefCell::new(Vec::new()),
            kick,
            proposals: RefCell::new(HashMap::new()),
            reads: RefCell::new(Reads::default()),
            next_token: Cell::new(1),
            next_id: Cell::new(first_id),
        });
        SERVING.with(|s| *s.borrow_mut() = Some(serving.clone()));
        serving
    }

    /// Removes this thread's state: waiting requests fail with `server stopped`.
    pub fn uninstall() {
        SERVING.with(|s| s.borrow_mut().take());
    }

    fn token(&self) -> Token {
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        token
    }

    fn send(&self, request: ToRaft) {
        self.outbox.borrow_mut().push(request);
        let _ = self.kick.try_send(());
    }

    /// The requests gathered for the raft core since the last call.
    pub fn take_outbox(&self) -> Vec<ToRaft> {
        std::mem::take(&mut *self.outbox.borrow_mut())
    }

    /// Proposes `request` through raft; the receiver yields its outcome once applied.
    pub fn propose(&self, request: mvcc::Request) -> Result<oneshot::Receiver<Outcome>, Status> {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        let data = entry::proposal(id, request);
        if data.len() > self.identity.max_request_bytes {
            return Err(status::too_large());
        }
        let token = self.token();
        let (tx, rx) = oneshot::channel();
        self.proposals.borrow_mut().insert(token, tx);
        self.send(ToRaft::Propose {
            core: self.core,
            token,
            id,
            data,
        });
        Ok(rx)
    }

    /// Waits for a linearizable read: the receiver yields once every write committed before this
    /// call is applied to the page file.
    pub fn read_barrier(&self) -> oneshot::Receiver<Result<(), Status>> {
        let (tx, rx) = oneshot::channel();
        self.reads.borrow_mut().next.push(tx);
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
        self.send(ToRaft::ReadIndex {
            core: self.core,
            token,
        });
    }

    /// Hands answers from the raft core to the requests waiting for them.
    pub fn deliver(&self, batch: Vec<FromRaft>) {
        for answer in batch {
            match answer {
                FromRaft::Applied { token, outcome } => {
                    if let Some(waiter) = self.proposals.borrow_mut().remove(&token) {
                        let _ = waiter.send(outcome);
                    }
                }
                FromRaft::ReadReady { token, result } => {
                    let mut reads = self.reads.borrow_mut();
                    if reads.asked.as_ref().is_some_and(|(t, _)| *t == token) {
                        let (_, waiters) = reads.asked.take().expect("checked");
                        drop(reads);
                        for waiter in waiters {
                            let _ = waiter.send(result.clone());
                        }
                        self.ask_read_index();
                    }
                }
            }
        }
    }

    /// Counts a gRPC call (`METHODS[method]`) handled on this core.
    pub fn count_handled(&self, method: usize, code: usize) {
        if let Some(counters) = self.grpc.get(self.core) {
            counters.handled(method, code);
        }
    }

    /// A response header as etcd fills it, at `revision`.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.identity.cluster_id,
            member_id: self.identity.member_id,
            revision,
            raft_term: Published::get(&self.published.term),
        }
    }
}
