//! Plain HTTP on the client port, beside gRPC (a connection that does not open with the HTTP/2
//! preface is HTTP/1): etcd 3.4's `/health` (`{"health":"true"}`, or 503 with `"false"` when there
//! is no leader or a linearizable read cannot complete), `/version`, and `/metrics` (Prometheus
//! text, etcd's metric names).
//!
//! Runs on: every serving core.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;

use super::context;
use super::kv::linearizable;
use super::maintenance::ETCD_VERSION;
use crate::logging;
use crate::metrics::{self, Gauges};

/// How long `/health` waits for its linearizable read (etcd waits up to its request timeout).
const HEALTH_READ: Duration = Duration::from_secs(1);

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

const TEXT: &str = "text/plain; charset=utf-8";

async fn healthy() -> bool {
    let has_leader = context::with(|s| Ok(s.published.leader() != 0)).unwrap_or(false);
    has_leader
        && matches!(
            glommio::timer::timeout(HEALTH_READ, async { Ok(linearizable().await.is_ok()) }).await,
            Ok(true)
        )
}

fn scrape() -> String {
    context::with(|s| {
        let db_size = s.db.begin_read().map(|txn| txn.size()).unwrap_or(0);
        let published = &s.published;
        let gauges = Gauges {
            has_leader: published.leader() != 0,
            committed: published.committed(),
            applied: published.applied(),
            db_size,
            log_lines_dropped: logging::dropped(),
        };
        Ok(metrics::render(&published.metrics, &s.metrics, &gauges))
    })
    .unwrap_or_default()
}

/// Answers one HTTP/1 request.
pub async fn handle(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let get = request.method() == Method::GET;
    let response = match request.uri().path() {
        "/health" if !get => {
            let mut r = respond(
                StatusCode::METHOD_NOT_ALLOWED,
                TEXT,
                "Method Not Allowed\n".into(),
            );
            r.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET"));
            r
        }
        "/health" => {
            if healthy().await {
                respond(StatusCode::OK, TEXT, "{\"health\":\"true\"}".into())
            } else {
                respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    TEXT,
                    "{\"health\":\"false\"}\n".into(),
                )
            }
        }
        "/version" if get => respond(
            StatusCode::OK,
            "application/json",
            format!("{{\"etcdserver\":\"{ETCD_VERSION}\",\"etcdcluster\":\"3.4.0\"}}"),
        ),
        "/metrics" if get => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            scrape(),
        ),
        _ => respond(StatusCode::NOT_FOUND, TEXT, "404 page not found\n".into()),
    };
    Ok(response)
}
