//! Client connections on a serving core: accept on the client port (one `SO_REUSEPORT` listener per
//! core, so the kernel spreads connections over cores), speak HTTP/2 with hyper's server
//! connection on this core's glommio executor, and route each gRPC call by its path to the
//! tonic-generated service. A connection that sends garbage fails alone: hyper closes it and the
//! error is logged at debug level.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};

use glommio::net::TcpListener;
use http::{Request, Response};
use hyper::body::Incoming;
use keelson_proto::etcdserverpb::cluster_server::ClusterServer;
use keelson_proto::etcdserverpb::kv_server::KvServer;
use keelson_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use tonic::body::Body;
use tonic::server::NamedService;
use tower_service::Service;

use super::io::Io;
use super::{cluster::ClusterApi, kv::KvApi, maintenance::MaintenanceApi};

/// gRPC's allowance on top of etcd's `--max-request-bytes` for the rest of a message (etcd's
/// `grpcOverheadBytes`).
const GRPC_OVERHEAD: usize = 512 * 1024;

/// Spawns hyper's tasks on this core's executor.
#[derive(Clone, Copy, Debug)]
struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        glommio::spawn_local(fut).detach();
    }
}

/// The services of one connection.
#[derive(Clone)]
struct Services {
    kv: KvServer<KvApi>,
    maintenance: MaintenanceServer<MaintenanceApi>,
    cluster: ClusterServer<ClusterApi>,
}

impl Services {
    fn new(max_request_bytes: usize) -> Services {
        let limit = max_request_bytes + GRPC_OVERHEAD;
        Services {
            kv: KvServer::new(KvApi).max_decoding_message_size(limit),
            maintenance: MaintenanceServer::new(MaintenanceApi).max_decoding_message_size(limit),
            cluster: ClusterServer::new(ClusterApi).max_decoding_message_size(limit),
        }
    }

    async fn call(mut self, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let service = request
            .uri()
            .path()
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let response = match service.as_str() {
            KvServer::<KvApi>::NAME => self.kv.call(request).await,
            MaintenanceServer::<MaintenanceApi>::NAME => self.maintenance.call(request).await,
            ClusterServer::<ClusterApi>::NAME => self.cluster.call(request).await,
            _ => Ok(tonic::Status::unimplemented(format!("unknown service {service}")).into_http()),
        };
        Ok(response.unwrap_or_else(|never| match never {}))
    }
}

/// A listening socket on `addr` shared with the other cores (`SO_REUSEPORT`) and, as Go's listeners
/// (etcd's) are, rebindable while connections of a previous process sit in TIME_WAIT
/// (`SO_REUSEADDR`).
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    // SAFETY: the descriptor is a bound, listening TCP socket that nothing else owns: `into_raw_fd`
    // gave up `socket`'s ownership, and the listener takes it over.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// Accepts client connections on `addr` until the executor stops, serving each on this core.
pub async fn listen(addr: SocketAddr, max_request_bytes: usize) -> std::io::Result<()> {
    let listener = bind(addr)?;
    let services = Services::new(max_request_bytes);
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!("accepting a client connection on {addr}: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let services = services.clone();
        glommio::spawn_local(async move {
            let service = hyper::service::service_fn(move |request| services.clone().call(request));
            let result = hyper::server::conn::http2::Builder::new(LocalExec)
                .serve_connection(Io::new(stream), service)
                .await;
            if let Err(e) = result {
                tracing::debug!("client connection closed: {e}");
            }
        })
        .detach();
    }
}
