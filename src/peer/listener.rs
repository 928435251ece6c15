//! Receiving raft messages from the other members: a listener on each `--listen-peer-urls`
//! address, and a reader task per connection. A reader takes the dialler's [`Hello`], answers with
//! a [`Verdict`] — refusing another cluster (etcd's `request cluster ID mismatch`) or a hello meant
//! for another member — and then hands the raft messages of every whole frame each read brings to
//! the raft core as one `Event::Peer`, and each forwarded lease question or answer as an
//! `Event::Lease`.
//!
//! Invariants: messages reach the raft core only from a peer of this cluster that named this
//! member; bytes that are not frames end the connection (the dialler dials again).
//!
//! Runs on: the raft core.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use super::frame::{self, Frame, HELLO_LEN, Hello};
use super::transport::Verdict;
use crate::raft::turn::Event;
use crate::runtime::link::Published;
use crate::runtime::mailbox::Mailbox;

/// Bytes a reader asks the socket for at a time (more when a frame is larger).
const READ_CHUNK: usize = 64 << 10;

/// Who this member is, for the hellos it receives.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    /// The cluster's id.
    pub cluster_id: u64,
    /// This member's id.
    pub member_id: u64,
}

/// Binds every address in `addrs` and serves peers on them until the returned tasks are dropped;
/// their messages go to `events`.
pub fn listen(
    addrs: &[SocketAddr],
    identity: Identity,
    events: Rc<Mailbox<Event>>,
    published: Arc<Published>,
) -> std::io::Result<Vec<glommio::Task<()>>> {
    let mut tasks = Vec::new();
    for &addr in addrs {
        let listener = crate::api::conn::exclusive_listener(addr)
            .map_err(|e| std::io::Error::new(e.kind(), format!("listen tcp {addr}: bind: {e}")))?;
        tracing::info!(address = %addr, "serving peer traffic");
        let (events, published) = (events.clone(), published.clone());
        tasks.push(glommio::spawn_local(accept(
            listener, identity, events, published,
        )));
    }
    Ok(tasks)
}

async fn accept(
    listener: TcpListener,
    identity: Identity,
    events: Rc<Mailbox<Event>>,
    published: Arc<Published>,
) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let (events, published) = (events.clone(), published.clone());
                glommio::spawn_local(async move {
                    if let Err(e) = read(stream, identity, &events, &published).await {
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
async fn read(
    mut stream: TcpStream,
    identity: Identity,
    events: &Mailbox<Event>,
    published: &Published,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut hello = [0u8; HELLO_LEN];
    stream.read_exact(&mut hello).await?;
    let hello = Hello::decode(&hello).map_err(std::io::Error::other)?;
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
    let mut buffer = Vec::new();
    loop {
        let filled = buffer.len();
        buffer.resize(filled + READ_CHUNK, 0);
        let read = stream.read(&mut buffer[filled..]).await?;
        buffer.truncate(filled + read);
        if read == 0 {
            return Ok(());
        }
        if let Some(counters) = counters {
            counters
                .received_bytes
                .fetch_add(read as u64, Ordering::Relaxed);
        }
        let mut frames = Vec::new();
        let taken = frame::decode(&buffer, &mut frames).map_err(std::io::Error::other)?;
        buffer.drain(..taken);
        let mut messages = Vec::new();
        for frame in frames {
            match frame {
                // A member speaks for itself only.
                Frame::Raft(message) if message.from == hello.from => messages.push(message),
                Frame::Raft(_) => {}
                Frame::Lease(lease) => events.push(Event::Lease {
                    from: hello.from,
                    lease,
                }),
            }
        }
        if !messages.is_empty() {
            events.push(Event::Peer(messages));
        }
    }
}
