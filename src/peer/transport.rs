//! Sending raft messages (and forwarded lease questions) to the other members: [`PeerTransport`]
//! is the raft core's `Transport`. It queues each frame for its member, and one writer task per
//! member dials it, says [`Hello`], waits for the member's [`Verdict`], and then writes everything
//! queued since its last write as one batch of frames. A connection that fails is dropped; the
//! next message dials again, after a back-off that doubles from [`MIN_BACKOFF`] to [`MAX_BACKOFF`]
//! while dialling fails.
//!
//! A snapshot goes on a connection of its own, from a task of its own: raft's message, then the
//! page file as one read transaction shows it, then the member's answer once it has saved and
//! verified the file. The outcome goes back to the raft core as `Event::SnapshotSent`.
//!
//! Invariants:
//! - sending never blocks the turn: a member's queue holds at most [`MAX_QUEUED`] messages, and
//!   what would go past that is dropped and counted (raft sends again what matters);
//! - messages to one member go out in the order the turn sent them, on one connection;
//! - a member that answers with another cluster's id is never sent a message.
//!
//! Runs on: the raft core.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use raft::eraftpb::{Message, MessageType};

use keelson_engine::mvcc::members::Member;
use keelson_engine::pagefile::ReadTxn;

use super::frame::{self, Frame, Hello};
use crate::metrics::PeerCounters;
use crate::raft::seams::{Forward, Transport};
use crate::raft::turn::Event;
use crate::runtime::link::Published;
use crate::runtime::mailbox::Mailbox;

/// Messages waiting for one member, at most.
pub const MAX_QUEUED: usize = 4096;
/// The first wait before dialling a member again.
pub const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait before dialling a member again.
pub const MAX_BACKOFF: Duration = Duration::from_millis(250);
/// A heartbeat unanswered this long is taken as lost: the next one is timed instead.
const PROBE_LOST: Duration = Duration::from_secs(1);
/// How long dialling, and the member's answer to the hello, may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one write may wait on a member that does not read (then the connection is dropped).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a member may take to save and verify a snapshot once its last byte is sent.
const RECEIPT_TIMEOUT: Duration = Duration::from_secs(120);
/// Bytes of a snapshot's file per write.
const SNAPSHOT_CHUNK: usize = 1 << 20;

/// A member's answer to a [`Hello`]: one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It takes messages on this connection.
    Accepted = 0,
    /// It belongs to another cluster.
    ClusterMismatch = 1,
    /// It is not the member the hello named.
    WrongMember = 2,
    /// The sender was removed from the cluster.
    Removed = 3,
}

impl Verdict {
    /// The verdict a byte carries (`None`: not one).
    pub fn from_byte(byte: u8) -> Option<Verdict> {
        [
            Verdict::Accepted,
            Verdict::ClusterMismatch,
            Verdict::WrongMember,
            Verdict::Removed,
        ]
        .into_iter()
        .find(|v| *v as u8 == byte)
    }
}

/// The raft core's transport to the other members.
pub struct PeerTransport {
    /// This member's hello, but for whom it is to.
    cluster_id: u64,
    member_id: u64,
    /// The other members, by id.
    links: HashMap<u64, Link>,
    published: Arc<Published>,
    probes: Rc<Probes>,
    /// The raft core's events (where a snapshot's outcome goes).
    events: Rc<Mailbox<Event>>,
    /// The members, shared with the listener.
    roster: Rc<Roster>,
}

/// The cluster's members as the transport last learned them, and the ids removed from it, shared
/// with the peer listener on the same executor (it tells a joining member who is in the cluster,
/// and refuses a removed one).
#[derive(Debug, Default)]
pub struct Roster {
    /// The members.
    pub members: RefCell<Vec<Member>>,
    /// The ids removed.
    pub removed: RefCell<Vec<u64>>,
}

/// The way to one other member: its queue, how to dial it, its counts, and its writer task
/// (dropped, and so stopped, with the link).
struct Link {
    peer_urls: Vec<String>,
    outbox: Rc<Mailbox<Frame>>,
    dialler: Rc<Dialler>,
    counters: Arc<PeerCounters>,
    _writer: glommio::Task<()>,
}

impl std::fmt::Debug for PeerTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTransport")
            .field("peers", &self.links.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl PeerTransport {
    /// A transport from member `member_id` of cluster `cluster_id`, to no other member until
    /// [`Transport::set_members`] names them. Its counts go to `published`'s metrics, and the
    /// outcome of each snapshot it sends to `events`.
    pub fn start(
        cluster_id: u64,
        member_id: u64,
        published: Arc<Published>,
        probes: Rc<Probes>,
        events: Rc<Mailbox<Event>>,
        roster: Rc<Roster>,
    ) -> PeerTransport {
        PeerTransport {
            cluster_id,
            member_id,
            links: HashMap::new(),
            published,
            probes,
            events,
            roster,
        }
    }

    /// A link to member `id` at `peer_urls`, its writer started, counting into `counters`.
    fn link(&self, id: u64, peer_urls: &[String], counters: Arc<PeerCounters>) -> Link {
        let outbox = Rc::new(Mailbox::default());
        let dialler = Rc::new(Dialler {
            urls: peer_urls.to_vec(),
            hello: Hello {
                cluster_id: self.cluster_id,
                from: self.member_id,
                to: id,
            },
            active_since: Cell::new(None),
        });
        let writer = Writer {
            dialler: dialler.clone(),
            outbox: outbox.clone(),
            events: self.events.clone(),
            published: self.published.clone(),
            counters: counters.clone(),
        };
        Link {
            peer_urls: peer_urls.to_vec(),
            outbox,
            dialler,
            counters,
            _writer: glommio::spawn_local(writer.run()),
        }
    }

    /// Queues `frame` for member `to`, unless its queue is full.
    fn queue(&self, to: u64, frame: Frame) {
        let Some(link) = self.links.get(&to) else {
            tracing::debug!(to, "a frame to a member keelson does not know");
            return;
        };
        if link.outbox.len() >= MAX_QUEUED {
            failed(
                &self.published,
                &link.counters,
                std::slice::from_ref(&frame),
            );
            return;
        }
        if is_heartbeat(&frame) {
            self.probes.sent(to);
        }
        link.outbox.push(frame);
    }
}

fn is_heartbeat(frame: &Frame) -> bool {
    matches!(frame, Frame::Raft(m) if m.msg_type == MessageType::MsgHeartbeat as i32)
}

/// Counts `frames` that could not be sent to a member (and the heartbeats among them, as etcd's
/// `heartbeat_send_failures_total` does).
fn failed(published: &Published, counters: &PeerCounters, frames: &[Frame]) {
    counters
        .sent_failures
        .fetch_add(frames.len() as u64, Ordering::Relaxed);
    let heartbeats = frames.iter().filter(|f| is_heartbeat(f)).count();
    published
        .metrics
        .heartbeat_send_failures
        .fetch_add(heartbeats as u64, Ordering::Relaxed);
}

/// The round trip of the leader's heartbeats, per member: when the oldest heartbeat not yet
/// answered went out. Shared by the transport (which sends heartbeats) and the listener (which
/// receives the answers), on the raft core's executor.
#[derive(Debug, Default)]
pub struct Probes(RefCell<HashMap<u64, Instant>>);

impl Probes {
    /// A heartbeat goes to member `to` (the probe restarts if the last went unanswered a second).
    fn sent(&self, to: u64) {
        let mut pending = self.0.borrow_mut();
        let now = Instant::now();
        let since = pending.entry(to).or_insert(now);
        if now.duration_since(*since) > PROBE_LOST {
            *since = now;
        }
    }

    /// Member `from` answered a heartbeat: the round trip, if one was timed.
    pub fn answered(&self, from: u64) -> Option<Duration> {
        let sent = self.0.borrow_mut().remove(&from)?;
        Some(sent.elapsed())
    }
}

impl Transport for PeerTransport {
    type Snapshot = ReadTxn;

    fn send_snapshot(&mut self, message: Message, snapshot: ReadTxn) {
        let to = message.to;
        let Some(link) = self.links.get(&to) else {
            tracing::debug!(to, "a snapshot to a member keelson does not know");
            self.events.push(Event::SnapshotSent {
                to,
                delivered: false,
            });
            return;
        };
        let (dialler, counters) = (link.dialler.clone(), link.counters.clone());
        let events = self.events.clone();
        glommio::spawn_local(async move {
            let index = message.get_snapshot().get_metadata().index;
            let remote_peer_id = format!("{to:x}");
            let bytes = snapshot.size();
            tracing::info!(snapshot_index = index, remote_peer_id, bytes, "sending database snapshot");
            let started = Instant::now();
            let sent = send_snapshot(&dialler, message, &snapshot).await;
            drop(snapshot);
            match &sent {
                Ok(()) => {
                    counters.snapshots_sent.fetch_add(1, Ordering::Relaxed);
                    counters.sent_bytes.fetch_add(bytes, Ordering::Relaxed);
                    tracing::info!(snapshot_index = index, remote_peer_id, bytes, took = ?started.elapsed(), "sent database snapshot");
                }
                Err(e) => {
                    counters
                        .snapshot_send_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(snapshot_index = index, remote_peer_id, bytes, error = %e, "failed to send database snapshot");
                }
            }
            events.push(Event::SnapshotSent {
                to,
                delivered: sent.is_ok(),
            });
        })
        .detach();
    }

    fn send(&mut self, messages: Vec<Message>) {
        for message in messages {
            self.queue(message.to, Frame::Raft(message));
        }
    }

    fn forward(&mut self, to: u64, forward: Forward) {
        self.queue(to, Frame::Forward(forward));
    }

    fn active_since(&self, id: u64) -> Option<Instant> {
        self.links.get(&id)?.dialler.active_since.get()
    }

    fn set_members(&mut self, members: &[Member], removed: &[u64]) {
        *self.roster.members.borrow_mut() = members.to_vec();
        *self.roster.removed.borrow_mut() = removed.to_vec();
        let others: Vec<&Member> = members.iter().filter(|m| m.id != self.member_id).collect();
        let ids: Vec<u64> = others.iter().map(|m| m.id).collect();
        let counters = self.published.metrics.set_peers(&ids);
        self.links.retain(|id, _| ids.contains(id));
        for (member, counters) in others.into_iter().zip(counters) {
            let current = self.links.get(&member.id).map(|l| &l.peer_urls);
            if current != Some(&member.peer_urls) {
                let link = self.link(member.id, &member.peer_urls, counters);
                self.links.insert(member.id, link);
            }
        }
    }
}

/// Sends `message` and the page file `snapshot` shows on a connection of its own; returns once
/// the member has saved and verified it.
async fn send_snapshot(
    dialler: &Dialler,
    message: Message,
    snapshot: &ReadTxn,
) -> Result<(), DialError> {
    let mut stream = dialler.dial().await?;
    let (head, tail) = (snapshot.copy_head(), snapshot.copy_tail());
    let len = (head.len() + tail.len()) as u64;
    let mut frame = Vec::new();
    frame::encode(&Frame::Snapshot { message, len }, &mut frame).map_err(std::io::Error::other)?;
    stream.write_all(&frame).await?;
    stream.write_all(&head).await?;
    for chunk in tail.chunks(SNAPSHOT_CHUNK) {
        stream.write_all(chunk).await?;
    }
    stream.flush().await?;
    stream
        .set_read_timeout(Some(RECEIPT_TIMEOUT))
        .map_err(std::io::Error::from)?;
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await?;
    match answer[0] {
        0 => Ok(()),
        _ => Err(DialError::SnapshotRefused),
    }
}

/// The addresses of a peer URL (`http://host:port`): an IP address as it is, a name looked up on
/// glommio's blocking thread.
pub async fn resolve(url: &str) -> std::io::Result<Vec<SocketAddr>> {
    let bad = || std::io::Error::other(format!("{url:?} is not an http://host:port peer URL"));
    let host_port = url
        .strip_prefix("http://")
        .ok_or_else(bad)?
        .trim_end_matches('/');
    if host_port.contains('/') {
        return Err(bad());
    }
    if let Ok(addr) = host_port.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let name = host_port.to_string();
    glommio::executor()
        .spawn_blocking(move || {
            use std::net::ToSocketAddrs;
            name.to_socket_addrs().map(Iterator::collect)
        })
        .await
}

/// How to reach one member: its peer URLs, and the hello to say; and since when it has been
/// reachable.
struct Dialler {
    urls: Vec<String>,
    hello: Hello,
    /// Set when a connection to it is made, cleared when one fails.
    active_since: Cell<Option<Instant>>,
}

/// One member's writer task.
struct Writer {
    dialler: Rc<Dialler>,
    outbox: Rc<Mailbox<Frame>>,
    /// The raft core's events (where a refusal as removed goes).
    events: Rc<Mailbox<Event>>,
    published: Arc<Published>,
    counters: Arc<PeerCounters>,
}

/// Why a member could not be reached.
#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("request sent was ignored by remote peer due to cluster ID mismatch")]
    ClusterMismatch,
    #[error("the member at this address is not the member {0:x}")]
    WrongMember(u64),
    #[error("the remote peer answered {0}, which is not a keelson peer's answer")]
    Garbled(u8),
    #[error("the remote peer could not save or verify the snapshot (see its log)")]
    SnapshotRefused,
    #[error("the member has been permanently removed from the cluster")]
    Removed,
}

impl Writer {
    async fn run(self) {
        let mut connection: Option<TcpStream> = None;
        let mut backoff = MIN_BACKOFF;
        let mut batch = Vec::new();
        let mut bytes = Vec::new();
        let peer_id = format!("{:x}", self.dialler.hello.to);
        loop {
            self.outbox.wait().await;
            self.outbox.take(&mut batch);
            if batch.is_empty() {
                continue;
            }
            let stream = match connection.as_mut() {
                Some(stream) => stream,
                None => match self.dialler.dial().await {
                    Ok(stream) => {
                        backoff = MIN_BACKOFF;
                        if self.dialler.active_since.get().is_none() {
                            self.dialler.active_since.set(Some(Instant::now()));
                            tracing::info!(peer_id, "peer became active");
                        }
                        connection.insert(stream)
                    }
                    Err(e) => {
                        failed(&self.published, &self.counters, &batch);
                        batch.clear();
                        if self.dialler.active_since.take().is_some() {
                            tracing::warn!(
                                peer_id,
                                error = %e,
                                "peer became inactive (message send to peer failed)"
                            );
                        } else {
                            tracing::debug!(peer_id, error = %e, "dialling the peer failed");
                        }
                        if matches!(e, DialError::Removed) {
                            self.events.push(Event::Removed);
                        }
                        if matches!(e, DialError::ClusterMismatch) {
                            tracing::error!(
                                peer_id,
                                local_member_cluster_id = %format!("{:x}", self.dialler.hello.cluster_id),
                                "{e}"
                            );
                        }
                        glommio::timer::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                },
            };
            bytes.clear();
            for frame in &batch {
                if let Err(e) = frame::encode(frame, &mut bytes) {
                    tracing::warn!(peer_id, "a frame was not sent: {e}");
                }
            }
            match stream.write_all(&bytes).await {
                Ok(()) => {
                    self.counters
                        .sent_bytes
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    connection = None;
                    failed(&self.published, &self.counters, &batch);
                    self.dialler.active_since.set(None);
                    tracing::warn!(
                        peer_id,
                        error = %e,
                        "peer became inactive (message send to peer failed)"
                    );
                }
            }
            batch.clear();
        }
    }
}

impl Dialler {
    /// Dials the member's peer URLs' addresses in turn and says hello; returns the first that
    /// accepts.
    async fn dial(&self) -> Result<TcpStream, DialError> {
        let mut last = DialError::Io(std::io::Error::other("no address"));
        for url in &self.urls {
            let addrs = match resolve(url).await {
                Ok(addrs) => addrs,
                Err(e) => {
                    last = DialError::Io(e);
                    continue;
                }
            };
            for addr in addrs {
                match self.dial_one(addr).await {
                    Ok(stream) => return Ok(stream),
                    Err(e) => last = e,
                }
            }
        }
        Err(last)
    }

    async fn dial_one(&self, addr: SocketAddr) -> Result<TcpStream, DialError> {
        let mut stream = TcpStream::connect_timeout(addr, DIAL_TIMEOUT)
            .await
            .map_err(std::io::Error::from)?;
        stream.set_nodelay(true).map_err(std::io::Error::from)?;
        stream
            .set_read_timeout(Some(DIAL_TIMEOUT))
            .map_err(std::io::Error::from)?;
        stream
            .set_write_timeout(Some(WRITE_TIMEOUT))
            .map_err(std::io::Error::from)?;
        stream.write_all(&self.hello.encode()).await?;
        let mut answer = [0u8; 1];
        stream.read_exact(&mut answer).await?;
        match Verdict::from_byte(answer[0]) {
            Some(Verdict::Accepted) => Ok(stream),
            Some(Verdict::ClusterMismatch) => Err(DialError::ClusterMismatch),
            Some(Verdict::WrongMember) => Err(DialError::WrongMember(self.hello.to)),
            Some(Verdict::Removed) => Err(DialError::Removed),
            None => Err(DialError::Garbled(answer[0])),
        }
    }
}
