//! Client connections on a serving core: accept on the client port (one `SO_REUSEPORT` listener per
//! core, so the kernel spreads connections over cores), speak HTTP/2 with hyper's server
//! connection on this core's glommio executor, and route each gRPC call by its path to the
//! tonic-generated service, counting it by method and status. A connection that does not open with
//! the HTTP/2 preface is plain HTTP/1 ([`super::http`]). A connection that sends garbage fails
//! alone: hyper closes it and the error is logged at debug level.
//!
//! When the member stops, [`Connections::close`] ends every connection gracefully (HTTP/2 GOAWAY:
//! calls in flight finish, no new ones start) and [`Connections::drained`] says when all are gone.
//!
//! Runs on: every serving core.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::AsyncReadExt;
use glommio::net::{TcpListener, TcpStream};
use http::{Request, Response};
use hyper::body::Incoming;
use keelson_proto::etcdserverpb::cluster_server::ClusterServer;
use keelson_proto::etcdserverpb::kv_server::KvServer;
use keelson_proto::etcdserverpb::lease_server::LeaseServer;
use keelson_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use keelson_proto::etcdserverpb::watch_server::WatchServer;
use keelson_proto::health::health_server::HealthServer;
use keelson_proto::v3electionpb::election_server::ElectionServer;
use keelson_proto::v3lockpb::lock_server::LockServer;
use tonic::body::Body;
use tonic::server::NamedService;
use tower_service::Service;

use super::election::ElectionApi;
use super::health::HealthApi;
use super::http::Surface;
use super::io::Io;
use super::lease::LeaseApi;
use super::lock::LockApi;
use super::timer::LocalTimer;
use super::watch::WatchApi;
use super::{
    cluster::ClusterApi, context, http as plain, kv::KvApi, maintenance::MaintenanceApi, status,
};
use crate::metrics;
use crate::metrics::latency::Stage;
use crate::runtime::signal::Signal;

/// How long a new connection may take to send its first bytes.
const FIRST_BYTES: Duration = Duration::from_secs(10);
/// The pause after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// What every HTTP/2 connection opens with.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// gRPC's allowance on top of etcd's `--max-request-bytes` for the rest of a message (etcd's
/// `grpcOverheadBytes`).
pub const GRPC_OVERHEAD: usize = 512 * 1024;

/// Spawns hyper's tasks on this core's executor, queued behind the tasks already there.
///
/// glommio's `spawn_local` runs a new task at once, inside its spawner's poll. hyper spawns a
/// stream's task while the connection's task reads its frames, and h2 flushes the connection each
/// time it hands a new stream out: so every answer that was ready at once went out in a `sendto`
/// of its own. Queued, the streams of one read all answer before the connection's task runs
/// again, and their answers leave together.
#[derive(Clone, Copy, Debug)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        let queue = glommio::executor().current_task_queue();
        if let Err(e) = glommio::spawn_local_into(fut, queue).map(|task| task.detach()) {
            // The current task queue always exists while a task of it runs.
            unreachable!("spawning into the running task queue: {e}");
        }
    }
}

/// The client connections of one serving core.
#[derive(Debug, Clone, Default)]
pub struct Connections {
    inner: Rc<Tracked>,
}

#[derive(Debug, Default)]
struct Tracked {
    open: Cell<usize>,
    /// Fired to end every connection gracefully.
    closing: Signal,
    /// Fired once closing and none is left.
    drained: Signal,
}

/// Counts one connection as open until dropped.
struct Open(Rc<Tracked>);

impl Drop for Open {
    fn drop(&mut self) {
        let tracked = &self.0;
        tracked.open.set(tracked.open.get() - 1);
        if tracked.open.get() == 0 && tracked.closing.is_fired() {
            tracked.drained.fire();
        }
    }
}

impl Connections {
    fn opened(&self) -> Open {
        self.inner.open.set(self.inner.open.get() + 1);
        Open(self.inner.clone())
    }

    /// Ends every connection gracefully: calls in flight are answered, no new ones are taken.
    pub fn close(&self) {
        self.inner.closing.fire();
        if self.inner.open.get() == 0 {
            self.inner.drained.fire();
        }
    }

    /// Returns once [`Connections::close`] was called and every connection has ended.
    pub async fn drained(&self) {
        self.inner.drained.wait().await
    }
}

/// Sends one response of a streaming call once the client's channel has room for it; false if
/// the client is gone.
pub async fn send<T>(
    out: &mut futures_channel::mpsc::Sender<Result<T, tonic::Status>>,
    response: Result<T, tonic::Status>,
) -> bool {
    std::future::poll_fn(|cx| out.poll_ready(cx)).await.is_ok() && out.start_send(response).is_ok()
}

/// The services of one connection.
#[derive(Clone)]
struct Services {
    kv: KvServer<KvApi>,
    maintenance: MaintenanceServer<MaintenanceApi>,
    cluster: ClusterServer<ClusterApi>,
    watch: WatchServer<WatchApi>,
    lease: LeaseServer<LeaseApi>,
    lock: LockServer<LockApi>,
    election: ElectionServer<ElectionApi>,
    health: HealthServer<HealthApi>,
}

impl Services {
    fn new(max_request_bytes: usize) -> Services {
        let limit = max_request_bytes + GRPC_OVERHEAD;
        Services {
            kv: KvServer::new(KvApi).max_decoding_message_size(limit),
            maintenance: MaintenanceServer::new(MaintenanceApi).max_decoding_message_size(limit),
            cluster: ClusterServer::new(ClusterApi).max_decoding_message_size(limit),
            watch: WatchServer::new(WatchApi).max_decoding_message_size(limit),
            lease: LeaseServer::new(LeaseApi).max_decoding_message_size(limit),
            lock: LockServer::new(LockApi).max_decoding_message_size(limit),
            election: ElectionServer::new(ElectionApi).max_decoding_message_size(limit),
            health: HealthServer::new(HealthApi).max_decoding_message_size(limit),
        }
    }

    /// Serves a call whose bytes were read at `read`.
    async fn call(
        mut self,
        request: Request<Incoming>,
        read: Instant,
    ) -> Result<Response<Body>, Infallible> {
        let _ = context::with(|s| {
            s.own_metrics().stages.observe(Stage::Queue, read.elapsed());
            Ok(())
        });
        let path = request.uri().path();
        let method = metrics::method_index(path);
        let service = path.trim_start_matches('/').split('/').next();
        let learner = context::with(|s| Ok(s.published.is_learner())).unwrap_or(false);
        let response = match service.unwrap_or_default() {
            // A learner serves its status and serializable ranges (checked in Range), as etcd's.
            _ if learner && !LEARNER_SERVES.contains(&path) => {
                Ok(status::not_for_learner().into_http())
            }
            KvServer::<KvApi>::NAME => self.kv.call(request).await,
            MaintenanceServer::<MaintenanceApi>::NAME => self.maintenance.call(request).await,
            ClusterServer::<ClusterApi>::NAME => self.cluster.call(request).await,
            WatchServer::<WatchApi>::NAME => self.watch.call(request).await,
            LeaseServer::<LeaseApi>::NAME => self.lease.call(request).await,
            LockServer::<LockApi>::NAME => self.lock.call(request).await,
            ElectionServer::<ElectionApi>::NAME => self.election.call(request).await,
            HealthServer::<HealthApi>::NAME => self.health.call(request).await,
            unknown => {
                Ok(tonic::Status::unimplemented(format!("unknown service {unknown}")).into_http())
            }
        };
        let response = response.unwrap_or_else(|never| match never {});
        // An error comes back "trailers-only": its status in the headers; success puts it in the
        // trailers, after the body. A stream that started counts itself handled when it ends.
        let ended = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        if let Some(method) = method {
            let _ = context::with(|s| {
                let metrics = s.own_metrics();
                metrics.started(method);
                match (ended, metrics::METHODS[method].2) {
                    (Some(code), _) => metrics.handled(method, code),
                    (None, metrics::Kind::Unary) => metrics.handled(method, 0),
                    (None, metrics::Kind::BidiStream | metrics::Kind::ServerStream) => {}
                }
                Ok(())
            });
        }
        Ok(response)
    }
}

/// The calls a learner serves (etcd's `isRPCSupportedForLearner`).
const LEARNER_SERVES: [&str; 2] = ["/etcdserverpb.Maintenance/Status", "/etcdserverpb.KV/Range"];

/// A listening socket on `addr`, shared with the other cores (`SO_REUSEPORT`) if `shared`, and, as
/// Go's listeners (etcd's) are, rebindable while connections of a previous process sit in
/// TIME_WAIT (`SO_REUSEADDR`).
fn bind(addr: SocketAddr, shared: bool) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(shared)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    // SAFETY: the descriptor is a bound, listening TCP socket that nothing else owns: `into_raw_fd`
    // gave up `socket`'s ownership, and the listener takes it over.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// Binds `addr` for client connections (on this core's `SO_REUSEPORT` socket).
pub fn listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    bind(addr, true)
}

/// Binds `addr` for one core alone (the peer listener): a second process on the same address is
/// refused, not handed half the connections.
pub fn exclusive_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    bind(addr, false)
}

/// What every client connection is served with (etcd's flags).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// `--max-request-bytes`.
    pub max_request_bytes: usize,
    /// `--max-concurrent-streams`: calls in flight on one connection at most.
    pub max_concurrent_streams: u32,
    /// `--grpc-keepalive-interval` and `--grpc-keepalive-timeout`: how long a connection may be
    /// silent before it is pinged, and how long the ping may go unanswered before it is closed
    /// (`None`: no pings).
    pub keepalive: Option<(Duration, Duration)>,
}

/// Accepts connections on `listener` (a client or a metrics listener: `surface`) until the task
/// is dropped, serving each on this core.
pub async fn accept(
    listener: TcpListener,
    addr: SocketAddr,
    surface: Surface,
    settings: Settings,
    connections: Connections,
) {
    let services = Services::new(settings.max_request_bytes);
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                // Typically out of file descriptors: give connections time to close.
                tracing::warn!("accepting a client connection on {addr}: {e}");
                glommio::timer::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let open = connections.opened();
        let closing = connections.inner.closing.clone();
        let served = serve(stream, surface, settings, services.clone(), closing, open);
        glommio::spawn_local(served).detach();
    }
}

/// Reads the start of a connection, as far as it could be the HTTP/2 preface: whether it is, and
/// the bytes read.
async fn sniff(stream: &mut TcpStream) -> std::io::Result<(bool, Vec<u8>)> {
    let mut seen = Vec::with_capacity(PREFACE.len());
    let mut chunk = [0u8; PREFACE.len()];
    while seen.len() < PREFACE.len() && PREFACE.starts_with(&seen) {
        let n = stream
            .read(&mut chunk[..PREFACE.len() - seen.len()])
            .await?;
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&chunk[..n]);
    }
    Ok((seen == PREFACE, seen))
}

/// Serves one connection: gRPC over HTTP/2 (client listeners only), or plain HTTP/1, until it ends
/// or `closing` fires (then gracefully). `_open` counts it as open meanwhile.
async fn serve(
    mut stream: TcpStream,
    surface: Surface,
    settings: Settings,
    services: Services,
    closing: Signal,
    _open: Open,
) {
    let sniffed = glommio::timer::timeout(FIRST_BYTES, async {
        sniff(&mut stream)
            .await
            .map_err(glommio::GlommioError::from)
    })
    .await;
    let (http2, read) = match sniffed {
        Ok(sniffed) => sniffed,
        Err(e) => {
            tracing::debug!("client connection closed before its first request: {e}");
            return;
        }
    };
    let io = Io::new(stream, read);
    let result = if http2 && surface == Surface::Client {
        let last_read = io.last_read();
        let service = hyper::service::service_fn(move |request| {
            services.clone().call(request, last_read.get())
        });
        let mut builder = hyper::server::conn::http2::Builder::new(LocalExec);
        builder
            .timer(LocalTimer)
            .max_concurrent_streams(settings.max_concurrent_streams);
        if let Some((interval, timeout)) = settings.keepalive {
            builder
                .keep_alive_interval(interval)
                .keep_alive_timeout(timeout);
        }
        let connection = builder.serve_connection(io, service);
        until_closing(pin!(connection), &closing, |c| c.graceful_shutdown()).await
    } else {
        let connection = hyper::server::conn::http1::Builder::new().serve_connection(
            io,
            hyper::service::service_fn(move |request| plain::handle(surface, request)),
        );
        until_closing(pin!(connection), &closing, |c| c.graceful_shutdown()).await
    };
    if let Err(e) = result {
        tracing::debug!("client connection closed: {e}");
    }
}

/// Runs `connection` to its end; if `closing` fires first, asks it to end gracefully (`shut`) and
/// runs it to that end.
async fn until_closing<C: Future>(
    mut connection: Pin<&mut C>,
    closing: &Signal,
    shut: impl FnOnce(Pin<&mut C>),
) -> C::Output {
    let ended = futures_lite::future::or(async { Some(connection.as_mut().await) }, async {
        closing.wait().await;
        None
    })
    .await;
    match ended {
        Some(ended) => ended,
        None => {
            shut(connection.as_mut());
            connection.await
        }
    }
}
