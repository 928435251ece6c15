//! A simulated cluster, in the raft-rs harness's style: N raft cores — the very turn the binary
//! runs (`turn.rs`), booted as the binary boots them (`boot.rs`) — in one thread, with everything
//! around them simulated and in the test's hands:
//!
//! - a disk per member ([`Disk`]) that holds what the WAL made durable, can fail a persist
//!   (EIO: the member is dead) and can tear one (a prefix of its records survives);
//! - a state machine per member ([`Machine`]) that applies entries to a list in memory and
//!   "syncs" it every few turns, so a crash loses what was applied but not synced (the WAL must
//!   bring it back);
//! - a network ([`Network`]) that the test drives: each message is delivered after a delay, or
//!   dropped, or held by a partition, in an order the seeded RNG picks; a snapshot travels whole
//!   (as on its own connection) into a file of the receiver's ([`Files`]), or fails and its sender
//!   hears so;
//! - a clock: a member takes a tick when the test says (each at its own pace, so elections do not
//!   tie) — raft-rs's own election jitter is turned off so a seed replays exactly.
//!
//! Clients propose puts and ask read-index reads at any member, as serving cores do. The checks
//! the tests make are the invariants of `turn.rs` and of raft: an answer only once its entry is
//! durable on a quorum and applied where it was answered; a read released only at an applied
//! index covering every write acknowledged before it was asked; at most one leader per term; every
//! member applies the same entry at the same index; nothing acknowledged is ever lost.
//!
//! Runs on: the test thread (no glommio: every future here is ready when polled).

#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future::block_on;
use keelson_engine::mvcc;
use keelson_engine::wal::WalError;
use keelson_proto::etcdserverpb::{PutRequest, PutResponse, ResponseHeader};
use prost::Message as _;
use raft::eraftpb::{Entry, HardState, Message};
use raft::{RawNode, StateRole};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::boot;
use super::lessor::{LeaseOptions, Lessor};
use super::seams::{
    Answer, AppliedBatch, Defragmented, DurableLog, Forward, Installed, Maintained, StateMachine,
    Transport,
};
use super::turn::{Event, RaftCore, RaftCoreError};
use crate::apply;
use crate::runtime::link::{Batch, FromRaft, Published, Refusal, ServingCore, ToRaft, Token};

/// Steps a client waits for an answer before it gives up on a proposal.
pub const CLIENT_PATIENCE: u64 = 200;

/// What the next persist of a member's disk does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fails with EIO, writing nothing.
    Fail,
    /// Keeps this many of the batch's entries (not its hard state), then fails: a torn tail.
    Tear(usize),
}

/// A member's disk: the raft log as its WAL made it durable. Survives the member's crash.
#[derive(Debug, Default)]
pub struct Disk {
    hard_state: HardState,
    /// Contiguous entries, overwritten suffixes resolved as the WAL's replay resolves them.
    entries: Vec<Entry>,
    /// Armed by a test: what the next persist does.
    pub fault: Option<Fault>,
}

impl Disk {
    fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first().map(|e| e.index) else {
            return;
        };
        self.entries.retain(|e| e.index < first);
        self.entries.extend_from_slice(entries);
    }

    /// The durable entry at `index`, if any.
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        self.entries.iter().find(|e| e.index == index)
    }
}

/// A member's WAL, on its simulated disk.
pub struct Wal(Rc<RefCell<Disk>>);

fn eio() -> RaftCoreError {
    RaftCoreError::Wal(WalError::Io {
        path: "simulated/wal".into(),
        op: "fdatasync",
        source: std::io::Error::from_raw_os_error(5),
    })
}

impl DurableLog for Wal {
    async fn persist(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), RaftCoreError> {
        let mut disk = self.0.borrow_mut();
        match disk.fault.take() {
            Some(Fault::Fail) => Err(eio()),
            Some(Fault::Tear(kept)) => {
                disk.append(&entries[..kept.min(entries.len())]);
                Err(eio())
            }
            None => {
                disk.append(entries);
                if let Some(hs) = hard_state {
                    disk.hard_state = hs.clone();
                }
                Ok(())
            }
        }
    }

    async fn release_before(&mut self, index: u64) -> Result<(), RaftCoreError> {
        self.0.borrow_mut().entries.retain(|e| e.index >= index);
        Ok(())
    }

    async fn restart_after(&mut self, _index: u64, _term: u64) -> Result<(), RaftCoreError> {
        // The WAL's snapshot marker: every entry before it is void.
        self.0.borrow_mut().entries.clear();
        Ok(())
    }

    async fn close(self) {}
}

/// One applied entry, as the simulated state machine keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Raft index.
    pub index: u64,
    /// Raft term.
    pub term: u64,
    /// The proposal's request id (0: an entry raft made).
    pub id: u64,
}

/// What a member's state machine has applied, and how much of it is durable. Survives the
/// member's crash (then only the durable part counts).
#[derive(Debug, Default)]
pub struct Store {
    /// Every entry applied, in order.
    pub applied: Vec<Applied>,
    /// How many of `applied` are durable.
    pub synced: usize,
}

/// Snapshot files received, by path: what each holds. Survives crashes (it is on disk).
pub type Files = Rc<RefCell<HashMap<PathBuf, Vec<Applied>>>>;

/// A member's state machine: applies to its [`Store`], syncing every `sync_every` turns.
pub struct Machine {
    store: Rc<RefCell<Store>>,
    files: Files,
    /// The cluster's members (the simulation's never change).
    members: Vec<keelson_engine::mvcc::members::Member>,
    sync_every: u32,
    turns: u32,
    /// A defragmentation was asked for: the store is in memory, so the next turn ends it.
    defragment: bool,
}

impl StateMachine for Machine {
    /// Everything applied, as the store holds it now.
    type Snapshot = Vec<Applied>;

    fn snapshot(&self) -> Result<Vec<Applied>, RaftCoreError> {
        Ok(self.store.borrow().applied.clone())
    }

    async fn install(&mut self, file: &Path) -> Result<Installed, RaftCoreError> {
        let Some(applied) = self.files.borrow_mut().remove(file) else {
            return Err(RaftCoreError::Install(format!(
                "{}: no such file",
                file.display()
            )));
        };
        let mut store = self.store.borrow_mut();
        store.synced = applied.len();
        store.applied = applied;
        Ok(Installed::default())
    }

    async fn discard(&mut self, file: &Path) {
        self.files.borrow_mut().remove(file);
    }

    fn members(&self) -> Result<Vec<keelson_engine::mvcc::members::Member>, RaftCoreError> {
        Ok(self.members.clone())
    }

    fn removed_members(&self) -> Result<Vec<u64>, RaftCoreError> {
        // The simulation's members never change.
        Ok(Vec::new())
    }

    fn applied(&self) -> (u64, u64) {
        let store = self.store.borrow();
        store.applied.last().map_or((0, 0), |a| (a.index, a.term))
    }

    fn revision(&self) -> i64 {
        // The simulated store keeps no revisions; nothing to compact.
        0
    }

    async fn apply(&mut self, committed: Vec<Entry>) -> Result<AppliedBatch, RaftCoreError> {
        let mut store = self.store.borrow_mut();
        let mut answers = Vec::new();
        for entry in &committed {
            if store.applied.last().is_some_and(|a| a.index >= entry.index) {
                continue;
            }
            let (_, id) = apply::decode(entry);
            store.applied.push(Applied {
                index: entry.index,
                term: entry.term,
                id,
            });
            if id != 0 {
                let response = mvcc::Response::Put(PutResponse {
                    header: Some(ResponseHeader {
                        revision: entry.index as i64,
                        ..ResponseHeader::default()
                    }),
                    prev_kv: None,
                });
                answers.push(Answer {
                    id,
                    outcome: Ok(response),
                });
            }
        }
        // The simulated store has no keys: nothing for watchers.
        Ok(AppliedBatch {
            answers,
            ..AppliedBatch::default()
        })
    }

    async fn maintain(&mut self) -> Result<Maintained, RaftCoreError> {
        self.turns += 1;
        let mut done = Maintained::default();
        if self.turns.is_multiple_of(self.sync_every) {
            let mut store = self.store.borrow_mut();
            store.synced = store.applied.len();
            done.durable = store.applied.last().map(|a| a.index);
        }
        if std::mem::take(&mut self.defragment) {
            done.defragmented = Some(Defragmented::Rewritten(None));
        }
        Ok(done)
    }

    fn busy(&self) -> bool {
        self.defragment
    }

    fn defragment(&mut self) {
        self.defragment = true;
    }

    async fn close(&mut self) -> Result<(), RaftCoreError> {
        let mut store = self.store.borrow_mut();
        store.synced = store.applied.len();
        Ok(())
    }
}

/// What travels on the simulated network: a raft message, a forwarded lease question or answer,
/// or a snapshot.
#[derive(Debug)]
enum Packet {
    Raft(Message),
    Forward(Forward),
    /// A snapshot's message and the state it carries.
    Snapshot(Message, Vec<Applied>),
}

/// A packet on the simulated network.
#[derive(Debug)]
struct InFlight {
    deliver_at: u64,
    from: u64,
    to: u64,
    packet: Packet,
}

/// The network between the members, delivered by the test.
#[derive(Debug, Default)]
pub struct Network {
    in_flight: Vec<InFlight>,
    /// Pairs that cannot reach each other (both directions).
    cut: BTreeSet<(u64, u64)>,
    /// Directions (from, to) whose messages wait in flight until released.
    held: BTreeSet<(u64, u64)>,
    /// Chance that a message is lost.
    pub drop_rate: f64,
    /// Most steps a message takes to arrive.
    pub max_delay: u64,
    now: u64,
    rng: Option<StdRng>,
    /// When the network came up: every link not cut has been up since.
    opened: Option<std::time::Instant>,
}

impl Network {
    fn is_cut(&self, a: u64, b: u64) -> bool {
        self.cut.contains(&(a.min(b), a.max(b)))
    }
}

impl Network {
    /// Puts `packet` in flight, unless the network loses it.
    fn put(&mut self, from: u64, to: u64, packet: Packet) {
        let (drop_rate, max_delay, now) = (self.drop_rate, self.max_delay, self.now);
        let rng = self.rng.as_mut().expect("the network has its RNG");
        // A snapshot goes whole or not at all: only a cut loses it (and its sender hears so).
        if !matches!(packet, Packet::Snapshot(..)) && rng.random_bool(drop_rate) {
            return;
        }
        let deliver_at = now + rng.random_range(0..=max_delay);
        self.in_flight.push(InFlight {
            deliver_at,
            from,
            to,
            packet,
        });
    }
}

/// A member's transport (the member's id, the network, and the members it sends to).
pub struct Net(u64, Rc<RefCell<Network>>, Vec<u64>);

impl Transport for Net {
    type Snapshot = Vec<Applied>;

    fn send_snapshot(&mut self, message: Message, snapshot: Vec<Applied>) {
        let to = message.to;
        self.1
            .borrow_mut()
            .put(self.0, to, Packet::Snapshot(message, snapshot));
    }

    fn send(&mut self, messages: Vec<Message>) {
        let mut net = self.1.borrow_mut();
        for message in messages.into_iter().filter(|m| self.2.contains(&m.to)) {
            net.put(message.from, message.to, Packet::Raft(message));
        }
    }

    fn forward(&mut self, to: u64, forward: Forward) {
        self.1
            .borrow_mut()
            .put(self.0, to, Packet::Forward(forward));
    }

    fn active_since(&self, id: u64) -> Option<std::time::Instant> {
        let net = self.1.borrow();
        if net.is_cut(self.0, id) {
            return None;
        }
        net.opened
    }

    fn set_members(&mut self, members: &[keelson_engine::mvcc::members::Member], _: &[u64]) {
        self.2 = members.iter().map(|m| m.id).collect();
    }
}

/// One simulated member.
pub struct Member {
    /// Its raft id.
    pub id: u64,
    /// Its raft core; `None` while crashed.
    pub core: Option<RaftCore<Wal, Machine, Net>>,
    /// Its disk.
    pub disk: Rc<RefCell<Disk>>,
    /// Its state machine's content.
    pub store: Rc<RefCell<Store>>,
    /// Events for its next turn.
    events: Vec<Event>,
}

/// How many entries members keep for followers (see `RaftCore::keep_for_followers`).
#[derive(Debug, Clone, Copy)]
struct Keep {
    catch_up: u64,
    lagging_limit: u64,
}

/// A read asked at a member: the applied index it must reach.
#[derive(Debug)]
struct Read {
    member: usize,
    /// The highest index of a write acknowledged before the read was asked.
    must_see: u64,
}

/// The simulated cluster and its clients.
pub struct Cluster {
    /// The members, by position (raft id = position + 1).
    pub members: Vec<Member>,
    /// The network.
    pub net: Rc<RefCell<Network>>,
    /// The simulation's RNG (seeded).
    pub rng: StdRng,
    voters: Vec<u64>,
    election_ticks: usize,
    sync_every: u32,
    next_id: u64,
    next_token: Token,
    /// Members started so far (each start's read-index contexts are its own, as the binary's are).
    starts: u64,
    /// Proposals waiting for an answer: request id → (member asked, step asked at).
    pending: HashMap<u64, (usize, u64)>,
    /// Writes acknowledged to a client: request id → index.
    pub acked: BTreeMap<u64, u64>,
    /// Reads waiting, by token.
    reads: HashMap<Token, Read>,
    /// Reads released (checked) so far.
    pub reads_done: usize,
    /// Leader seen per term.
    leaders: BTreeMap<u64, u64>,
    /// Snapshot files on the members' disks.
    files: Files,
    /// Snapshots delivered whole so far.
    pub snapshots_delivered: usize,
    keep: Keep,
}

impl Cluster {
    /// A cluster of `n` members; the seed decides every choice the simulation makes.
    pub fn new(n: usize, seed: u64) -> Cluster {
        let voters: Vec<u64> = (1..=n as u64).collect();
        let mut rng = StdRng::seed_from_u64(seed);
        let net = Network {
            rng: Some(StdRng::seed_from_u64(rng.random())),
            opened: Some(std::time::Instant::now()),
            ..Network::default()
        };
        let mut cluster = Cluster {
            members: Vec::new(),
            net: Rc::new(RefCell::new(net)),
            rng,
            voters: voters.clone(),
            election_ticks: 10,
            sync_every: 3,
            next_id: 1,
            next_token: 1,
            starts: 0,
            pending: HashMap::new(),
            acked: BTreeMap::new(),
            reads: HashMap::new(),
            reads_done: 0,
            leaders: BTreeMap::new(),
            files: Files::default(),
            snapshots_delivered: 0,
            keep: Keep {
                catch_up: crate::config::DEFAULT_CATCH_UP_ENTRIES,
                lagging_limit: crate::config::DEFAULT_SNAPSHOT_COUNT,
            },
        };
        for &id in &voters {
            cluster.members.push(Member {
                id,
                core: None,
                disk: Rc::default(),
                store: Rc::default(),
                events: Vec::new(),
            });
            cluster.start(id as usize - 1);
        }
        cluster
    }

    /// Boots member `m` from its disk and its store's durable part, as the binary boots.
    pub fn start(&mut self, m: usize) {
        let member = &mut self.members[m];
        let (applied, hard_state, entries) = {
            let mut store = member.store.borrow_mut();
            let synced = store.synced;
            store.applied.truncate(synced);
            let applied = store.applied.last().map_or((0, 0), |a| (a.index, a.term));
            let disk = member.disk.borrow();
            let keep_after = applied.0.saturating_sub(self.keep.catch_up);
            let entries: Vec<Entry> = disk
                .entries
                .iter()
                .filter(|e| e.index > keep_after)
                .cloned()
                .collect();
            (applied, disk.hard_state.clone(), entries)
        };
        let voters = raft::eraftpb::ConfState::from((self.voters.clone(), []));
        let log = boot::raft_log(applied, hard_state, entries, voters);
        let mut config = boot::raft_config(member.id, self.election_ticks, applied.0);
        // No jitter of raft-rs's own (it draws from a thread RNG): members tick at their own pace.
        config.min_election_tick = self.election_ticks;
        config.max_election_tick = self.election_ticks + 1;
        let node = RawNode::new(&config, log, &super::logger()).expect("a valid raft config");
        let members = self
            .voters
            .iter()
            .map(|&id| keelson_engine::mvcc::members::Member {
                id,
                peer_urls: vec![format!("http://sim-{id}:2380")],
                name: format!("m{id}"),
                ..Default::default()
            })
            .collect();
        let machine = Machine {
            store: member.store.clone(),
            files: self.files.clone(),
            members,
            sync_every: self.sync_every,
            turns: 0,
            defragment: false,
        };
        let mut core = RaftCore::new(
            node,
            Wal(member.disk.clone()),
            machine,
            Net(member.id, self.net.clone(), Vec::new()),
            Lessor::new(
                LeaseOptions {
                    checkpoint_interval: None,
                    promote_extension: Duration::ZERO,
                },
                [],
            ),
            Arc::new(Published::default()),
            1,
            (member.id << 48) | (self.starts << 32),
        );
        self.starts += 1;
        core.keep_for_followers(self.keep.catch_up, self.keep.lagging_limit);
        core.start().expect("raft starts");
        member.core = Some(core);
        member.events.clear();
    }

    /// Makes every member (now and after restarts) keep `catch_up` entries for followers, and
    /// `lagging_limit` at most for one behind: one further behind gets a snapshot.
    pub fn keep_for_followers(&mut self, catch_up: u64, lagging_limit: u64) {
        self.keep = Keep {
            catch_up,
            lagging_limit,
        };
        for core in self.members.iter_mut().filter_map(|m| m.core.as_mut()) {
            core.keep_for_followers(catch_up, lagging_limit);
        }
    }

    /// Crashes member `m`: its memory is gone, its disk and synced state stay.
    pub fn crash(&mut self, m: usize) {
        self.members[m].core = None;
        self.members[m].events.clear();
        self.pending.retain(|_, &mut (at, _)| at != m);
        self.reads.retain(|_, r| r.member != m);
    }

    /// Cuts (or restores) the link between members `a` and `b`.
    pub fn set_cut(&mut self, a: usize, b: usize, cut: bool) {
        let (x, y) = (self.members[a].id, self.members[b].id);
        let pair = (x.min(y), x.max(y));
        let mut net = self.net.borrow_mut();
        if cut {
            net.cut.insert(pair);
        } else {
            net.cut.remove(&pair);
        }
    }

    /// Isolates member `m` from every other (or reconnects it).
    pub fn isolate(&mut self, m: usize, cut: bool) {
        for other in 0..self.members.len() {
            if other != m {
                self.set_cut(m, other, cut);
            }
        }
    }

    /// Heals every partition.
    pub fn heal(&mut self) {
        self.net.borrow_mut().cut.clear();
    }

    /// Holds the messages from member `from` to member `to` in flight (or lets them go on).
    pub fn hold(&mut self, from: usize, to: usize, held: bool) {
        let pair = (self.members[from].id, self.members[to].id);
        let mut net = self.net.borrow_mut();
        if held {
            net.held.insert(pair);
        } else {
            net.held.remove(&pair);
        }
    }

    /// Takes the raft messages in flight that `which` picks off the network, into the test's
    /// hands.
    pub fn take_in_flight(&mut self, which: impl Fn(&Message) -> bool) -> Vec<Message> {
        let mut net = self.net.borrow_mut();
        let mut taken = Vec::new();
        net.in_flight.retain_mut(|f| match &mut f.packet {
            Packet::Raft(m) if which(m) => {
                taken.push(std::mem::take(m));
                false
            }
            _ => true,
        });
        taken
    }

    /// Delivers `messages` for their members' next turns.
    pub fn deliver_now(&mut self, messages: Vec<Message>) {
        for message in messages {
            self.arrive(message.from, message.to, Packet::Raft(message));
        }
    }

    /// Hands `packet` to member `to`'s next turn, if it is up. A snapshot is saved to a file of
    /// the receiver's first, and its sender hears whether it arrived.
    fn arrive(&mut self, from: u64, to: u64, packet: Packet) {
        let event = match packet {
            Packet::Raft(message) => Event::Peer(vec![message]),
            Packet::Forward(forward) => Event::Forwarded { from, forward },
            Packet::Snapshot(message, applied) => {
                let delivered = self.members[to as usize - 1].core.is_some();
                self.snapshot_sent(from, to, delivered);
                if !delivered {
                    return;
                }
                let index = message.get_snapshot().get_metadata().index;
                let file = PathBuf::from(format!("member-{to}/{index:016x}.snap.db"));
                self.files.borrow_mut().insert(file.clone(), applied);
                self.snapshots_delivered += 1;
                Event::Snapshot {
                    message: Box::new(message),
                    file,
                }
            }
        };
        let member = &mut self.members[to as usize - 1];
        if member.core.is_some() {
            member.events.push(event);
        }
    }

    /// Tells member `from` (if it is up) whether its snapshot reached member `to`.
    fn snapshot_sent(&mut self, from: u64, to: u64, delivered: bool) {
        let sender = &mut self.members[from as usize - 1];
        if sender.core.is_some() {
            sender.events.push(Event::SnapshotSent { to, delivered });
        }
    }

    /// A client proposes a put at member `m`; returns its request id.
    pub fn propose(&mut self, m: usize) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let put = PutRequest {
            key: format!("key-{id}").into_bytes(),
            value: b"value".to_vec(),
            ..PutRequest::default()
        };
        let data = mvcc::Request::Put(put).into_internal(id).encode_to_vec();
        if self.members[m].core.is_some() {
            let now = self.net.borrow().now;
            self.pending.insert(id, (m, now));
            self.members[m].events.push(Event::Requests(
                ServingCore(0),
                Batch::now(vec![ToRaft::Propose { id, data }]),
            ));
        }
        id
    }

    /// A client asks a linearizable read at member `m`.
    pub fn read(&mut self, m: usize) {
        if self.members[m].core.is_none() {
            return;
        }
        let token = self.next_token;
        self.next_token += 1;
        let must_see = self.acked.values().copied().max().unwrap_or(0);
        self.reads.insert(
            token,
            Read {
                member: m,
                must_see,
            },
        );
        self.members[m].events.push(Event::Requests(
            ServingCore(0),
            Batch::now(vec![ToRaft::ReadIndex { token }]),
        ));
    }

    /// Gives member `m` a tick for its next turn.
    pub fn tick(&mut self, m: usize) {
        self.members[m].events.push(Event::Tick);
    }

    /// Makes member `m` forget a proposal still in flight after `ticks`.
    pub fn forget_proposals_after(&mut self, m: usize, ticks: u64) {
        let core = self.members[m].core.as_mut().expect("alive");
        core.forget_proposals_after(ticks);
    }

    /// Proposals member `m` has in flight.
    pub fn proposals_in_flight(&self, m: usize) -> usize {
        let core = self.members[m].core.as_ref().expect("alive");
        core.proposals_in_flight()
    }

    /// Arms a fault for member `m`'s next persist.
    pub fn fault(&mut self, m: usize, fault: Fault) {
        self.members[m].disk.borrow_mut().fault = Some(fault);
    }

    /// Disarms every fault not yet fired (a fault outlives the crash of its member).
    pub fn mend_disks(&mut self) {
        for member in &self.members {
            member.disk.borrow_mut().fault = None;
        }
    }

    /// One step: deliver the messages due, then one turn of every live member (a member whose
    /// turn fails is crashed). Returns the members whose turn failed.
    pub fn step(&mut self) -> Vec<usize> {
        self.deliver();
        let mut failed = Vec::new();
        for m in 0..self.members.len() {
            let member = &mut self.members[m];
            let mut events = std::mem::take(&mut member.events);
            let Some(core) = member.core.as_mut() else {
                continue;
            };
            let result = block_on(core.turn(&mut events));
            let replies: Vec<_> = core.replies().collect();
            if result.is_err() {
                // A failed turn is fatal for the member: whatever it left unsaid is never said.
                failed.push(m);
                self.crash(m);
                continue;
            }
            self.observe(m);
            for (_, batch) in replies {
                for reply in batch {
                    self.answered(m, reply);
                }
            }
        }
        self.net.borrow_mut().now += 1;
        failed
    }

    /// Steps (ticking each member every other step or so, at its own pace) until a leader leads,
    /// every live member holds and has applied exactly what is committed, and no proposal younger
    /// than [`CLIENT_PATIENCE`] steps waits for its answer (a proposal lost with a leader change
    /// or a dropped message is never answered: its client gives up, as etcd's client times out),
    /// or `limit` steps pass. Returns whether it settled.
    pub fn settle(&mut self, limit: usize) -> bool {
        for _ in 0..limit {
            for m in 0..self.members.len() {
                if self.chance(0.5) {
                    self.tick(m);
                }
            }
            self.step();
            let now = self.net.borrow().now;
            let committed = self
                .members
                .iter()
                .filter_map(|m| m.core.as_ref())
                .map(|c| c.node().raft.raft_log.committed)
                .max()
                .unwrap_or(0);
            let caught_up = self.members.iter().all(|m| match &m.core {
                None => true,
                Some(core) => {
                    let applied = m.store.borrow().applied.last().map_or(0, |a| a.index);
                    let log = &core.node().raft.raft_log;
                    applied == committed && log.last_index() == committed
                }
            });
            let waiting = self
                .pending
                .values()
                .any(|&(_, at)| now.saturating_sub(at) < CLIENT_PATIENCE);
            if self.leader().is_some() && caught_up && !waiting {
                return true;
            }
        }
        false
    }

    /// Each member's state, for a failure message.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for member in &self.members {
            let applied = member.store.borrow().applied.last().map_or(0, |a| a.index);
            match &member.core {
                Some(core) => {
                    let raft = &core.node().raft;
                    out += &format!(
                        "member {}: {:?} term {} leader {} committed {} last {} applied {applied}\n",
                        member.id,
                        raft.state,
                        raft.term,
                        raft.leader_id,
                        raft.raft_log.committed,
                        raft.raft_log.last_index(),
                    );
                    if raft.state == StateRole::Leader {
                        for (id, pr) in raft.prs().iter() {
                            out += &format!("  progress of {id}: {pr:?}\n");
                        }
                        out += &format!(
                            "  log first {:?}, disk first {:?}\n",
                            raft::Storage::first_index(raft.raft_log.store()),
                            member.disk.borrow().entries.first().map(|e| e.index)
                        );
                    }
                }
                None => out += &format!("member {}: down, applied {applied}\n", member.id),
            }
        }
        out += &format!(
            "pending proposals {}, messages in flight {}",
            self.pending.len(),
            self.net.borrow().in_flight.len()
        );
        out
    }

    /// The live member that leads, if one does.
    pub fn leader(&self) -> Option<usize> {
        self.members.iter().position(|m| {
            m.core
                .as_ref()
                .is_some_and(|c| c.node().raft.state == StateRole::Leader)
        })
    }

    fn deliver(&mut self) {
        let due = {
            let net = &mut *self.net.borrow_mut();
            let (now, held) = (net.now, &net.held);
            let (due, later): (Vec<InFlight>, Vec<InFlight>) = net
                .in_flight
                .drain(..)
                .partition(|f| f.deliver_at <= now && !held.contains(&(f.from, f.to)));
            net.in_flight = later;
            let net = &*net;
            due.into_iter()
                .map(|f| (net.is_cut(f.from, f.to), f))
                .collect::<Vec<_>>()
        };
        for (cut, f) in due {
            match (cut, f.packet) {
                (false, packet) => self.arrive(f.from, f.to, packet),
                (true, Packet::Snapshot(..)) => self.snapshot_sent(f.from, f.to, false),
                (true, _) => {}
            }
        }
    }

    /// Records the leader of each term and checks there is only one.
    fn observe(&mut self, m: usize) {
        let core = self.members[m].core.as_ref().expect("alive");
        let raft = &core.node().raft;
        if raft.state == StateRole::Leader {
            let leader = *self.leaders.entry(raft.term).or_insert(raft.id);
            assert_eq!(leader, raft.id, "two leaders in term {}", raft.term);
        }
    }

    fn answered(&mut self, m: usize, reply: FromRaft) {
        match reply {
            // The simulation asks the lessor nothing (leases across leader changes: the cluster),
            // and defragments nothing.
            FromRaft::Ready
            | FromRaft::Changes(_)
            | FromRaft::Lease { .. }
            | FromRaft::Done { .. }
            | FromRaft::Reopened(_)
            | FromRaft::Installed(_) => {}
            FromRaft::Applied { id, outcome } => {
                self.pending.remove(&id);
                match outcome {
                    Ok(response) => {
                        let index = match response {
                            mvcc::Response::Put(put) => put.header.map_or(0, |h| h.revision),
                            _ => 0,
                        } as u64;
                        self.check_durable_and_applied(m, id, index);
                        self.acked.insert(id, index);
                    }
                    Err(Refusal::NoLeader) => {}
                    Err(other) => panic!("the simulation refuses nothing else: {other:?}"),
                }
            }
            FromRaft::ReadReady { token, result } => {
                let Some(read) = self.reads.remove(&token) else {
                    return;
                };
                if result.is_ok() {
                    let store = self.members[m].store.borrow();
                    let applied = store.applied.last().map_or(0, |a| a.index);
                    assert!(
                        applied >= read.must_see,
                        "member {m} released a read at applied {applied}, before the \
                         acknowledged write at {}",
                        read.must_see
                    );
                    self.reads_done += 1;
                }
            }
        }
    }

    /// An answer for request `id` at `index` from member `m`: applied there, and durable on a
    /// quorum's disks.
    fn check_durable_and_applied(&self, m: usize, id: u64, index: u64) {
        let store = self.members[m].store.borrow();
        assert!(
            store.applied.iter().any(|a| a.index == index && a.id == id),
            "member {m} answered request {id} before applying it at {index}"
        );
        let durable = self
            .members
            .iter()
            .filter(|member| {
                let on_disk = member
                    .disk
                    .borrow()
                    .entry(index)
                    .is_some_and(|e| apply::decode(e).1 == id);
                let store = member.store.borrow();
                let synced = store.applied[..store.synced]
                    .iter()
                    .any(|a| a.index == index && a.id == id);
                on_disk || synced
            })
            .count();
        assert!(
            durable > self.members.len() / 2,
            "member {m} answered request {id} (index {index}) durable on {durable} of {} members",
            self.members.len()
        );
    }

    /// Checks that more than `writes` writes were answered and more than `reads` reads released,
    /// and then [`Cluster::check_consistent`].
    pub fn check_served(&self, writes: usize, reads: usize) {
        assert!(
            self.acked.len() > writes,
            "writes were answered: {}",
            self.acked.len()
        );
        assert!(
            self.reads_done > reads,
            "reads were released: {}",
            self.reads_done
        );
        self.check_consistent();
    }

    /// Checks that every member applied the same entries at the same indexes, and that every
    /// acknowledged write is applied by every live member.
    pub fn check_consistent(&self) {
        let mut by_index: BTreeMap<u64, (usize, Applied)> = BTreeMap::new();
        for (m, member) in self.members.iter().enumerate() {
            for applied in &member.store.borrow().applied {
                match by_index.get(&applied.index) {
                    Some((other, seen)) => assert_eq!(
                        seen, applied,
                        "members {other} and {m} applied different entries at {}",
                        applied.index
                    ),
                    None => {
                        by_index.insert(applied.index, (m, applied.clone()));
                    }
                }
            }
        }
        for member in self.members.iter().filter(|m| m.core.is_some()) {
            let store = member.store.borrow();
            for (&id, &index) in &self.acked {
                assert!(
                    store.applied.iter().any(|a| a.index == index && a.id == id),
                    "member {} lost acknowledged request {id} at {index}",
                    member.id
                );
            }
        }
    }

    /// Draws a probability.
    pub fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    /// Draws a member.
    pub fn any_member(&mut self) -> usize {
        self.rng.random_range(0..self.members.len())
    }
}
