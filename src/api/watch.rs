//! etcd's Watch service: each call is a bidirectional stream, served by a task on this core that
//! reads the client's requests (create, cancel, progress), does the stream's background work
//! (catching watchers up from history, answering progress), sends the periodic progress
//! notifications (`--watch-progress-notify-interval`) and, for a client that requires a leader
//! (`hasleader` metadata), ends the stream with `no leader` once the member has had none for
//! three election timeouts, as etcd does. The core's watch hub ([`crate::watch`]) holds the
//! watchers. Responses reach the client through one bounded channel per stream (tonic wants a
//! `Send` stream; the channel is one), split into fragments on the way out where asked.
//!
//! The lock and election services watch too, as etcd's do through its in-process client: a
//! [`Watching`] is such a stream with one watcher, served by the same task, whose requests come
//! from the server itself and which gRPC's counters do not count.
//!
//! Runs on: every serving core.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_channel::{mpsc, oneshot};
use futures_lite::{Stream, StreamExt};
use keelson_engine::mvcc::MvccError;
use keelson_proto::etcdserverpb::watch_request::RequestUnion;
use keelson_proto::etcdserverpb::watch_server::Watch;
use keelson_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use tonic::{Request, Response, Status, Streaming};

use super::{conn, context, status};
use crate::metrics::WatchGauges;
use crate::runtime::turns;
use crate::watch::{self, Responses, STREAM_BUFFER};

/// Election timeouts without a leader after which a stream that requires one ends (etcd's
/// `maxNoLeaderCnt`).
const NO_LEADER_CHECKS: u32 = 3;

/// The Watch service of a serving core.
#[derive(Debug, Clone, Copy)]
pub struct WatchApi;

/// What a stream's task was woken by.
enum Woken {
    Request(Result<Option<WatchRequest>, Status>),
    Work,
    Timer,
    /// The client went (its responses were dropped), or the member stops.
    Ended,
}

/// The stream's clocks: its next progress tick, and its leader watch if the client requires one.
struct Clocks {
    interval: Duration,
    next_progress: Instant,
    /// The election timeout and the next check, for a client that requires a leader.
    leader: Option<(Duration, Instant)>,
    /// Consecutive checks that found no leader.
    leaderless: u32,
}

impl Clocks {
    fn next(&self) -> Instant {
        self.leader
            .map_or(self.next_progress, |(_, at)| at.min(self.next_progress))
    }
}

/// Waits until `out` has room for one more response; false if the client is gone.
async fn room(out: &mut Responses) -> bool {
    poll_fn(|cx| out.poll_ready(cx)).await.is_ok()
}

/// Serves stream `id` until its client goes (`gone` fires when its responses are dropped) or the
/// member stops; counts the call handled with the status it ends with, if it is a client's
/// (`counted`). A client that stops sending — closes its half of the stream — keeps its watchers
/// and gets their events, as etcd's clients do.
async fn serve(
    id: u64,
    mut requests: impl Stream<Item = Result<WatchRequest, Status>> + Unpin,
    mut out: Responses,
    mut work: mpsc::Receiver<()>,
    mut gone: oneshot::Receiver<()>,
    mut clocks: Clocks,
    counted: bool,
) {
    let mut sending = true;
    let ended = loop {
        let deadline = clocks.next();
        let woken = futures_lite::future::or(
            futures_lite::future::or(
                async {
                    if !sending {
                        return std::future::pending().await;
                    }
                    Woken::Request(requests.next().await.transpose())
                },
                async {
                    match work.next().await {
                        Some(()) => Woken::Work,
                        // The hub let go of the stream: the member stops.
                        None => Woken::Ended,
                    }
                },
            ),
            futures_lite::future::or(
                async {
                    let _ = (&mut gone).await;
                    Woken::Ended
                },
                async {
                    glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
                    Woken::Timer
                },
            ),
        )
        .await;
        let handled = match woken {
            Woken::Request(Ok(Some(request))) => handle(id, request, &mut out).await,
            Woken::Request(Ok(None)) => {
                sending = false;
                Ok(())
            }
            Woken::Request(Err(status)) => break Err(status),
            Woken::Ended => break Ok(()),
            Woken::Work => catch_up(id, &mut out).await,
            Woken::Timer => tick(id, &mut out, &mut clocks).await,
        };
        if let Err(status) = handled {
            let _ = out.try_send(Err(status.clone()));
            break Err(status);
        }
        // A client's burst of requests is a long job too.
        turns::give_way().await;
    };
    let _ = context::with(|s| {
        s.watch.borrow_mut().close(s, id);
        if counted {
            s.stream_ended("/etcdserverpb.Watch/Watch", &ended);
        }
        Ok(())
    });
}

/// One request of the client's.
async fn handle(id: u64, request: WatchRequest, out: &mut Responses) -> Result<(), Status> {
    if !room(out).await {
        return Ok(());
    }
    context::with(|s| match request.request_union {
        Some(RequestUnion::CreateRequest(create)) => {
            s.watch.borrow_mut().create(s, id, out, &create)
        }
        Some(RequestUnion::CancelRequest(cancel)) => {
            s.watch.borrow_mut().cancel(s, id, out, cancel.watch_id)
        }
        Some(RequestUnion::ProgressRequest(_)) => {
            s.watch.borrow_mut().progress(id);
            Ok(())
        }
        None => Ok(()),
    })
}

/// The stream's background work, a step at a time, each with room for its response.
async fn catch_up(id: u64, out: &mut Responses) -> Result<(), Status> {
    loop {
        if !room(out).await {
            return Ok(());
        }
        let more = context::with(|s| s.watch.borrow_mut().work(s, id, out))?;
        if !more {
            return Ok(());
        }
        turns::give_way().await;
    }
}

/// A clock of the stream's is due: progress notifications, the leader check, or both.
async fn tick(id: u64, out: &mut Responses, clocks: &mut Clocks) -> Result<(), Status> {
    let now = Instant::now();
    if let Some((timeout, at)) = clocks.leader
        && at <= now
    {
        let leader = context::with(|s| Ok(s.published.leader()))?;
        clocks.leaderless = if leader == 0 {
            clocks.leaderless + 1
        } else {
            0
        };
        if clocks.leaderless >= NO_LEADER_CHECKS {
            return Err(status::no_leader());
        }
        clocks.leader = Some((timeout, now + timeout));
    }
    if clocks.next_progress <= now {
        clocks.next_progress = now + jittered(clocks.interval);
        let due = context::with(|s| Ok(s.watch.borrow_mut().progress_due(id)))?;
        for watch in due {
            if !room(out).await {
                return Ok(());
            }
            context::with(|s| s.watch.borrow().notify(s, id, out, watch))?;
        }
    }
    Ok(())
}

/// `interval` and up to a tenth more, so streams opened together do not notify together (as
/// etcd's jitter).
fn jittered(interval: Duration) -> Duration {
    let spread = (interval / 10).as_nanos() as u64;
    let draw = RandomState::new().hash_one(Instant::now());
    interval + Duration::from_nanos(draw.checked_rem(spread).unwrap_or(0))
}

/// A stream's responses on their way to the client: each taken from the channel, split into
/// fragments where its watcher asked ([`watch::fragments`]), and no longer counted pending.
/// Dropped (the client went), it takes what the channel still holds off the gauge.
struct Outgoing {
    responses: mpsc::Receiver<Result<WatchResponse, Status>>,
    parts: VecDeque<WatchResponse>,
    max_bytes: usize,
    /// Dropped with it: tells the stream's task that the client went.
    _gone: oneshot::Sender<()>,
}

fn taken(events: usize) {
    let _ = context::with(|s| {
        WatchGauges::add(&s.own_metrics().watch.pending_events, -(events as i64));
        Ok(())
    });
}

impl Stream for Outgoing {
    type Item = Result<WatchResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(part) = self.parts.pop_front() {
            return Poll::Ready(Some(Ok(part)));
        }
        match self.responses.poll_next(cx) {
            Poll::Ready(Some(Ok(response))) => {
                taken(response.events.len());
                self.parts = watch::fragments(response, self.max_bytes).into();
                Poll::Ready(self.parts.pop_front().map(Ok))
            }
            other => other,
        }
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        self.responses.close();
        while let Ok(left) = self.responses.try_recv() {
            if let Ok(response) = left {
                taken(response.events.len());
            }
        }
    }
}

/// Opens a stream on this core's hub and spawns its task, which reads `requests` and, if the
/// client requires a leader, ends the stream when the member has none. Returns what it answers.
fn open(
    requests: impl Stream<Item = Result<WatchRequest, Status>> + Unpin + 'static,
    requires_leader: bool,
    counted: bool,
) -> Result<Outgoing, Status> {
    let (out, responses) = mpsc::channel(STREAM_BUFFER);
    let (wake, work) = mpsc::channel(1);
    let (gone_sender, gone) = oneshot::channel();
    let (id, clocks, max_bytes) = context::with(|s| {
        if requires_leader && s.published.leader() == 0 {
            return Err(status::no_leader());
        }
        let identity = &s.identity;
        let now = Instant::now();
        let clocks = Clocks {
            interval: identity.progress_interval,
            next_progress: now + jittered(identity.progress_interval),
            leader: requires_leader
                .then(|| (identity.election_timeout, now + identity.election_timeout)),
            leaderless: 0,
        };
        let id = s.watch.borrow_mut().open(s, out.clone(), wake);
        // etcd splits at the request limit plus gRPC's allowance, as its watch server does.
        Ok((
            id,
            clocks,
            identity.connections.max_request_bytes + conn::GRPC_OVERHEAD,
        ))
    })?;
    glommio::spawn_local(serve(id, requests, out, work, gone, clocks, counted)).detach();
    Ok(Outgoing {
        responses,
        parts: VecDeque::new(),
        max_bytes,
        _gone: gone_sender,
    })
}

/// A watch the server keeps for itself (the lock and election services'): one watcher on a
/// stream of its own. Dropped, the stream ends and the watcher is gone.
pub struct Watching {
    /// Held so that the stream's requests do not end.
    _requests: mpsc::Sender<Result<WatchRequest, Status>>,
    responses: Outgoing,
}

impl Watching {
    /// Starts watching as `create` asks.
    pub fn start(create: WatchCreateRequest) -> Result<Watching, Status> {
        let (mut requests, incoming) = mpsc::channel(1);
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(create)),
        };
        requests
            .try_send(Ok(create))
            .expect("a new channel has room for one");
        Ok(Watching {
            responses: open(incoming, false, false)?,
            _requests: requests,
        })
    }

    /// The next response with events; `None` once the stream has ended. A watcher cancelled
    /// because its start was compacted away is etcd's compacted error.
    pub async fn next(&mut self) -> Option<Result<WatchResponse, Status>> {
        loop {
            let response = match self.responses.next().await? {
                Ok(response) => response,
                Err(status) => return Some(Err(status)),
            };
            if response.compact_revision != 0 {
                return Some(Err(status::of_mvcc(&MvccError::Compacted {
                    requested: 0,
                    compacted: response.compact_revision,
                })));
            }
            if response.canceled {
                return None;
            }
            if !response.events.is_empty() {
                return Some(Ok(response));
            }
        }
    }
}

#[tonic::async_trait]
impl Watch for WatchApi {
    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<tonic::codegen::BoxStream<WatchResponse>>, Status> {
        let requires_leader = request
            .metadata()
            .get("hasleader")
            .is_some_and(|v| v == "true");
        let responses = open(request.into_inner(), requires_leader, true)?;
        Ok(Response::new(Box::pin(responses)))
    }
}
