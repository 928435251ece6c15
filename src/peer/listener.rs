//! Receiving raft messages from the other members: a listener on each `--listen-peer-urls`
//! address, and a reader task per connection. A reader takes the dialler's [`Hello`], answers with
//! a [`Verdict`] — refusing another cluster (etcd's `request cluster ID mismatch`) or a hello meant
//! for another member — and then hands the raft messages of every whole frame each read brings to
//! the raft core as one `Event::Peer`, and each forwarded lease question or answer as an
//! `Event::Forwarded`. A snapshot's frame turns the connection over to its file: it is saved beside
//! the page file (`member/snap/<index>.snap.db`, as etcd names it), synced, and verified on a
//! thread of its own — its tree checked, and its applied index and term those its message names
//! — before its message reaches the raft core as an `Event::Snapshot`; the sender is answered
//! either way.
//!
//! Invariants: messages reach the raft core only from a peer of this cluster that named this
//! member; bytes that are not frames end the connection (the dialler dials again); a snapshot
//! reaches the raft core only with a whole, verified, durable file.
//!
//! Runs on: the raft core.

use std::cell::Cell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::io::{DmaFile, DmaStreamWriterBuilder};
use glommio::net::{TcpListener, TcpStream};
use keelson_engine::mvcc;
use keelson_engine::pagefile::{Db, Options};
use raft::eraftpb::Message;

use super::frame::{self, Frame, HELLO_LEN, Hello};
use super::join;
use super::transport::{Probes, Roster, Verdict};
use crate::raft::turn::Event;
use crate::runtime::link::Published;
use crate::runtime::{self, mailbox::Mailbox};
use raft::eraftpb::MessageType;

/// A reader's buffer to begin with (it doubles while a frame does not fit).
const READ_CHUNK: usize = 64 << 10;
/// How long a snapshot's sender may go silent before the receive is given up.
const SNAPSHOT_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// A received snapshot's reads and file writes, at most (the file is written behind the reads).
const SNAPSHOT_CHUNK: usize = 1 << 20;

/// Who this member is, for the hellos it receives.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    /// The cluster's id.
    pub cluster_id: u64,
    /// This member's id.
    pub member_id: u64,
}

/// What every connection's reader hands its frames to.
pub struct Receiver {
    /// Who this member is.
    pub identity: Identity,
    /// The raft core's events.
    pub events: Rc<Mailbox<Event>>,
    /// The member's metrics.
    pub published: Arc<Published>,
    /// The heartbeats the transport timed.
    pub probes: Rc<Probes>,
    /// Where received snapshots are saved (the page file's directory).
    pub snap_dir: PathBuf,
    /// The members, as the transport last learned them (what a joining member is told).
    pub roster: Rc<Roster>,
    /// Snapshots received so far (each saved under a name of its own).
    pub receives: Cell<u64>,
}

/// Where received snapshots are saved: `<index>.snap.db.<n>` in the page file's directory. What a
/// crash leaves there is removed at start ([`remove_leftovers`]).
fn is_received_snapshot(name: &str) -> bool {
    name.contains(".snap.db.")
}

/// Removes the received snapshots a stop or crash left in `snap_dir` (best effort).
pub fn remove_leftovers(snap_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(snap_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_str().is_some_and(is_received_snapshot) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Binds every address in `addrs` and serves peers on them until the returned tasks are dropped;
/// their frames go to `receiver`.
pub fn listen(addrs: &[SocketAddr], receiver: Receiver) -> std::io::Result<Vec<glommio::Task<()>>> {
    let receiver = Rc::new(receiver);
    let mut tasks = Vec::new();
    for &addr in addrs {
        let listener = crate::api::conn::exclusive_listener(addr)
            .map_err(|e| std::io::Error::new(e.kind(), format!("listen tcp {addr}: bind: {e}")))?;
        tracing::info!(address = %addr, "serving peer traffic");
        tasks.push(glommio::spawn_local(accept(listener, receiver.clone())));
    }
    Ok(tasks)
}

async fn accept(listener: TcpListener, receiver: Rc<Receiver>) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let receiver = receiver.clone();
                glommio::spawn_local(async move {
                    if let Err(e) = read(stream, &receiver).await {
                        tracing::debug!("a peer connection ended: {e}");
                    }
                })
                .detach();
            }
            Err(e) => {
                tracing::warn!("accepting a peer connection failed: {e}");
                glommio::timer::sleep(super::transport::MIN_BACKOFF).await;
            }
        }
    }
}

/// Serves one connection until it ends.
async fn read(mut stream: TcpStream, receiver: &Receiver) -> std::io::Result<()> {
    let Receiver {
        identity,
        events,
        published,
        probes,
        roster,
        ..
    } = receiver;
    let _ = stream.set_nodelay(true);
    let mut hello = [0u8; HELLO_LEN];
    stream.read_exact(&mut hello).await?;
    let hello = Hello::decode(&hello).map_err(std::io::Error::other)?;
    if join::is_ask(&hello) {
        let mut answer = vec![Verdict::Accepted as u8];
        answer.extend(join::encode(identity.cluster_id, &roster.members.borrow()));
        return stream.write_all(&answer).await;
    }
    let remote_peer_id = format!("{:x}", hello.from);
    let verdict = if hello.cluster_id != identity.cluster_id {
        tracing::warn!(
            local_member_id = %format!("{:x}", identity.member_id),
            local_member_cluster_id = %format!("{:x}", identity.cluster_id),
            remote_peer_id,
            remote_peer_cluster_id = %format!("{:x}", hello.cluster_id),
            "request cluster ID mismatch"
        );
        Verdict::ClusterMismatch
    } else if roster.removed.borrow().contains(&hello.from) {
        tracing::warn!(
            local_member_id = %format!("{:x}", identity.member_id),
            remote_peer_id,
            "rejected stream from remote peer because it was removed"
        );
        Verdict::Removed
    } else if hello.to != identity.member_id {
        tracing::warn!(
            local_member_id = %format!("{:x}", identity.member_id),
            remote_peer_id,
            addressed_to = %format!("{:x}", hello.to),
            "a peer dialled this member for another member"
        );
        Verdict::WrongMember
    } else {
        Verdict::Accepted
    };
    stream.write_all(&[verdict as u8]).await?;
    if verdict != Verdict::Accepted {
        return Ok(());
    }
    let counters = published.metrics.peer(hello.from);
    let counters = counters.as_deref();
    // `buffer[..filled]` holds bytes read and not yet decoded; the buffer is zeroed only when it
    // grows (a frame larger than it), not on every read.
    let mut buffer = vec![0u8; READ_CHUNK];
    let mut filled = 0;
    let mut frames = Vec::new();
    loop {
        if filled == buffer.len() {
            buffer.resize(2 * buffer.len(), 0);
        }
        let read = stream.read(&mut buffer[filled..]).await?;
        filled += read;
        if read == 0 {
            return Ok(());
        }
        if let Some(counters) = counters {
            counters
                .received_bytes
                .fetch_add(read as u64, Ordering::Relaxed);
        }
        let taken = frame::decode(&buffer[..filled], &mut frames).map_err(std::io::Error::other)?;
        buffer.copy_within(taken..filled, 0);
        filled -= taken;
        let mut messages = Vec::new();
        for frame in frames.drain(..) {
            match frame {
                // A snapshot comes only with its file, on a connection of its own.
                Frame::Raft(message) if message.msg_type == MessageType::MsgSnapshot as i32 => {
                    tracing::warn!(
                        remote_peer_id = %format!("{:x}", hello.from),
                        "a snapshot message without its file; dropped"
                    );
                }
                // A member speaks for itself only.
                Frame::Raft(message) if message.from == hello.from => {
                    if message.msg_type == MessageType::MsgHeartbeatResponse as i32
                        && let Some((took, counters)) = probes.answered(hello.from).zip(counters)
                    {
                        counters.round_trip.observe(took);
                    }
                    messages.push(message);
                }
                Frame::Raft(_) => {}
                Frame::Forward(forward) => events.push(Event::Forwarded {
                    from: hello.from,
                    forward,
                }),
                Frame::Snapshot { message, len } if message.from == hello.from => {
                    if !messages.is_empty() {
                        events.push(Event::Peer(std::mem::take(&mut messages)));
                    }
                    let received = &buffer[..filled];
                    return receive_snapshot(&mut stream, received, message, len, receiver).await;
                }
                Frame::Snapshot { .. } => return Ok(()),
            }
        }
        if !messages.is_empty() {
            events.push(Event::Peer(messages));
        }
    }
}

/// Saves the snapshot file that follows a snapshot's frame (`received` holds its first bytes),
/// verifies it, hands the message to the raft core, and answers the sender.
async fn receive_snapshot(
    stream: &mut TcpStream,
    received: &[u8],
    message: Message,
    len: u64,
    receiver: &Receiver,
) -> std::io::Result<()> {
    let metadata = message.get_snapshot().get_metadata();
    let (index, term) = (metadata.index, metadata.term);
    let remote_snapshot_sender_id = format!("{:x}", message.from);
    tracing::info!(
        remote_snapshot_sender_id,
        incoming_snapshot_index = index,
        "receiving database snapshot"
    );
    let started = Instant::now();
    // A name of its own for each receive: a second one of the same index (the sender gave up on
    // the first) never writes over a file being checked or installed.
    let receive = receiver.receives.get();
    receiver.receives.set(receive + 1);
    let path = receiver
        .snap_dir
        .join(format!("{index:016x}.snap.db.{receive}"));
    let _ = stream.set_read_timeout(Some(SNAPSHOT_READ_TIMEOUT));
    let saved = save(stream, received, len, &path).await;
    let download_took = started.elapsed();
    let saved = match saved {
        Ok(()) => {
            let file = path.clone();
            runtime::apart::run("keelson-snapshot", move || verify(&file, index, term)).await
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    };
    let counters = receiver.published.metrics.peer(message.from);
    match saved {
        Ok(()) => {
            tracing::info!(
                remote_snapshot_sender_id,
                incoming_snapshot_index = index,
                incoming_snapshot_size_bytes = len,
                download_took = ?download_took,
                verify_took = ?(started.elapsed() - download_took),
                "received and saved database snapshot"
            );
            if let Some(counters) = counters {
                counters.snapshots_received.fetch_add(1, Ordering::Relaxed);
            }
            receiver.events.push(Event::Snapshot {
                message: Box::new(message),
                file: path,
            });
            stream.write_all(&[0]).await
        }
        Err(why) => {
            tracing::warn!(
                remote_snapshot_sender_id,
                incoming_snapshot_index = index,
                error = %why,
                "failed to save incoming database snapshot"
            );
            if let Some(counters) = counters {
                counters
                    .snapshot_receive_failures
                    .fetch_add(1, Ordering::Relaxed);
            }
            let _ = glommio::io::remove(&path).await;
            stream.write_all(&[1]).await
        }
    }
}

/// Writes the `len` bytes of a snapshot's file to `path`: `received` first, then the rest as it
/// comes; synced when this returns.
async fn save(
    stream: &mut TcpStream,
    received: &[u8],
    len: u64,
    path: &Path,
) -> std::io::Result<()> {
    let mut file = DmaStreamWriterBuilder::new(DmaFile::create(path).await?)
        .with_buffer_size(SNAPSHOT_CHUNK)
        .with_write_behind(4)
        .build();
    let first = received.len().min(len as usize);
    file.write_all(&received[..first]).await?;
    let mut left = len - first as u64;
    let mut buffer = vec![0u8; SNAPSHOT_CHUNK];
    while left > 0 {
        let want = buffer.len().min(left as usize);
        let read = stream.read(&mut buffer[..want]).await?;
        if read == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the sender stopped {left} bytes short"),
            ));
        }
        file.write_all(&buffer[..read]).await?;
        left -= read as u64;
    }
    // Closing flushes, sets the file's length and syncs it.
    file.close().await
}

/// Checks a received snapshot: a whole tree, applied through the index and term its message
/// names.
fn verify(path: &Path, index: u64, term: u64) -> Result<(), String> {
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let db = Db::open_read_only(path, Options::default()).map_err(|e| at(&e))?;
    let read = db.begin_read().map_err(|e| at(&e))?;
    let problems = read.check();
    if !problems.is_empty() {
        return Err(at(&format!(
            "{} errors found: {}",
            problems.len(),
            problems.join("; ")
        )));
    }
    let applied = mvcc::applied_of(&read).map_err(|e| at(&e))?;
    if applied != (index, term) {
        return Err(at(&format!(
            "applied through index {} term {}, not index {index} term {term} as its message says",
            applied.0, applied.1
        )));
    }
    Ok(())
}
