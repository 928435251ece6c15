//! Plain HTTP beside gRPC (a connection that does not open with the HTTP/2 preface is HTTP/1), on
//! the client port and on `--listen-metrics-urls`:
//!
//! - `/health` as etcd 3.5+ answers it: `{"health":"true","reason":""}`, or 503 with the reason —
//!   an alarm raised (`ALARM NOSPACE`, `ALARM CORRUPT`; `?exclude=NOSPACE` passes over one), no
//!   leader (`RAFT NO LEADER`), or a read that fails (`RANGE ERROR:…`), linearizable unless
//!   `?serializable=true`.
//! - `/livez` (a serializable read) and `/readyz` (no CORRUPT alarm, a serializable and a
//!   linearizable read, not a learner), and each check alone at `/readyz/<check>`: `ok`, with every
//!   check's line under `?verbose`, or 503 with every check's line; `?exclude=<check>` skips one.
//! - `/metrics` (Prometheus text, etcd's metric names), and on the client port `/version`.
//!
//! Runs on: every serving core.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use keelson_engine::mvcc::alarm;
use keelson_proto::etcdserverpb::{AlarmMember, AlarmType};
use tonic::Status;

use super::context;
use super::kv::linearizable;
use super::maintenance::ETCD_VERSION;
use crate::logging;
use crate::metrics::{self, Scrape, latency};

/// How long a health check waits for its read (etcd waits up to its request timeout).
const HEALTH_READ: Duration = Duration::from_secs(1);

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The client port: everything.
    Client,
    /// `--listen-metrics-urls`: metrics and health only.
    Metrics,
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

const TEXT: &str = "text/plain; charset=utf-8";

/// Go's `http.Error`: the text and a newline, as plain text.
fn error(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    nosniff(respond(status, TEXT, format!("{text}\n")))
}

/// The values of query parameter `name`, and whether it is there at all.
fn query<'q>(query: &'q str, name: &str) -> (Vec<&'q str>, bool) {
    let mut found = false;
    let values = query
        .split('&')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then(|| {
                found = true;
                value
            })
        })
        .filter(|v| !v.is_empty())
        .collect();
    (values, found)
}

/// The alarms raised, as this core's view of the page file shows them.
fn alarms() -> Result<Vec<AlarmMember>, Status> {
    context::with(|s| s.read(|txn, _| alarm::alarms(txn)))
}

/// A read as the health checks make one: serializable (this core's view), or linearizable (its
/// next read-index batch), within [`HEALTH_READ`].
async fn read(serializable: bool) -> Result<(), String> {
    if !serializable {
        let confirmed = glommio::timer::timeout(HEALTH_READ, async { Ok(linearizable().await) });
        match confirmed.await {
            Ok(Ok(())) => {}
            Ok(Err(status)) => return Err(status.message().to_string()),
            Err(_) => return Err("context deadline exceeded".into()),
        }
    }
    context::with(|s| s.read(|txn, _| Ok(txn.size())))
        .map(drop)
        .map_err(|status| status.message().to_string())
}

/// `/health`: the reason it is unhealthy, if it is.
async fn unhealthy(excluded: &[&str], serializable: bool) -> Option<String> {
    let raised = alarms().map_err(|s| s.message().to_string());
    for raised in raised.as_deref().unwrap_or_default() {
        let kind = AlarmType::try_from(raised.alarm).unwrap_or(AlarmType::None);
        if excluded.contains(&kind.as_str_name()) {
            continue;
        }
        return Some(
            match kind {
                AlarmType::Nospace => "ALARM NOSPACE",
                AlarmType::Corrupt => "ALARM CORRUPT",
                AlarmType::None => "ALARM UNKNOWN",
            }
            .to_string(),
        );
    }
    let has_leader = context::with(|s| Ok(s.published.leader() != 0)).unwrap_or(false);
    if !serializable && !has_leader {
        return Some("RAFT NO LEADER".into());
    }
    read(serializable)
        .await
        .err()
        .map(|e| format!("RANGE ERROR:{e}"))
}

async fn health(query_text: &str) -> Response<Full<Bytes>> {
    let (excluded, _) = query(query_text, "exclude");
    let (serializable, _) = query(query_text, "serializable");
    let reason = unhealthy(&excluded, serializable.contains(&"true")).await;
    let _ = context::with(|s| {
        s.own_metrics().health_checked(reason.is_none());
        Ok(())
    });
    let healthy = reason.is_none();
    let body = format!(
        "{{\"health\":\"{healthy}\",\"reason\":\"{}\"}}",
        reason.unwrap_or_default()
    );
    if healthy {
        respond(StatusCode::OK, TEXT, body)
    } else {
        tracing::warn!(output = %body, status_code = 503, "/health error");
        error(StatusCode::SERVICE_UNAVAILABLE, &body)
    }
}

/// Runs check `name`: why it failed, if it did.
async fn check(name: &str) -> Result<(), String> {
    match name {
        "data_corruption" => match alarms() {
            Ok(raised) if alarm::is_raised(&raised, AlarmType::Corrupt) => {
                Err("alarm activated: CORRUPT".into())
            }
            Ok(_) => Ok(()),
            Err(status) => Err(status.message().to_string()),
        },
        "serializable_read" => read(true).await,
        "linearizable_read" => read(false).await,
        // A single member votes; learners come with the cluster.
        _ => Ok(()),
    }
}

/// Adds `nosniff`, as Go's health handlers do.
fn nosniff(mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    response.headers_mut().insert(
        header::HeaderName::from_static("x-content-type-options"),
        header::HeaderValue::from_static("nosniff"),
    );
    response
}

/// `/livez` or `/readyz` (`kind`) running `checks` (positions in [`metrics::PROBES`]), less those
/// the query excludes.
async fn probe(kind: &str, checks: &[usize], query_text: &str) -> Response<Full<Bytes>> {
    let (excluded, _) = query(query_text, "exclude");
    let (_, verbose) = query(query_text, "verbose");
    let mut lines = String::new();
    let mut failed = false;
    for &probe in checks {
        let name = metrics::PROBES[probe].1;
        if excluded.contains(&name) {
            continue;
        }
        let outcome = check(name).await;
        let _ = context::with(|s| {
            s.own_metrics().probe_checked(probe, outcome.is_ok());
            Ok(())
        });
        match outcome {
            Ok(()) => lines += &format!("[+]{name} ok\n"),
            Err(why) => {
                failed = true;
                lines += &format!("[-]{name} failed: {why}\n");
            }
        }
    }
    if failed {
        tracing::error!(path = %format!("/{kind}"), reason = %lines, status_code = 503, "Health check error");
        return nosniff(respond(StatusCode::SERVICE_UNAVAILABLE, TEXT, lines));
    }
    let body = if verbose {
        lines + "ok\n"
    } else {
        "ok\n".into()
    };
    nosniff(respond(StatusCode::OK, TEXT, body))
}

/// The checks `path` asks for, if it is `/<kind>` (all of them) or `/<kind>/<check>` (one).
fn probed(kind: &str, path: &str) -> Option<Vec<usize>> {
    let rest = path.strip_prefix('/')?.strip_prefix(kind)?;
    let of_kind = (0..metrics::PROBES.len()).filter(|&i| metrics::PROBES[i].0 == kind);
    match rest.strip_prefix('/') {
        None if rest.is_empty() => Some(of_kind.collect()),
        Some(one) => of_kind
            .filter(|&i| metrics::PROBES[i].1 == one)
            .map(|i| vec![i])
            .next(),
        None => None,
    }
}

fn scrape() -> String {
    context::with(|s| {
        let published = &s.published;
        let db_size = published.db_size();
        let scrape = Scrape {
            member_id: s.identity.member_id,
            has_leader: published.leader() != 0,
            is_leader: published.leader() == s.identity.member_id,
            is_learner: published.is_learner(),
            committed: published.committed(),
            applied: published.applied(),
            db_size,
            db_in_use: db_size.saturating_sub(published.free_bytes()),
            open_reads: s.db().open_readers(),
            quota: s.identity.quota_bytes,
            log_lines_dropped: logging::dropped(),
        };
        Ok(metrics::render(&published.metrics, &s.metrics, &scrape))
    })
    .unwrap_or_default()
}

/// Where requests' time went since the member started, stage by stage: a table, or JSON with
/// `?format=json` (what `keelson profile` reads).
fn latency(query_text: &str) -> Response<Full<Bytes>> {
    let stages = context::with(|s| Ok(metrics::stages(&s.published.metrics, &s.metrics)))
        .unwrap_or_default();
    if query(query_text, "format").0.contains(&"json") {
        respond(StatusCode::OK, "application/json", latency::json(&stages))
    } else {
        respond(StatusCode::OK, TEXT, latency::table(&stages))
    }
}

/// Answers one HTTP/1 request that came in on `surface`.
pub async fn handle(
    surface: Surface,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let get = request.method() == Method::GET;
    let path = request.uri().path();
    let query_text = request.uri().query().unwrap_or_default();
    let (livez, readyz) = (probed("livez", path), probed("readyz", path));
    let health_path = path == "/health" || livez.is_some() || readyz.is_some();
    let response = if health_path && !get {
        let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET"));
        r
    } else if path == "/health" {
        health(query_text).await
    } else if let Some(checks) = livez {
        probe("livez", &checks, query_text).await
    } else if let Some(checks) = readyz {
        probe("readyz", &checks, query_text).await
    } else if path == "/metrics" && get {
        respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            scrape(),
        )
    } else if path == "/debug/latency" && get {
        latency(query_text)
    } else if path == "/version" && get && surface == Surface::Client {
        respond(
            StatusCode::OK,
            "application/json",
            format!("{{\"etcdserver\":\"{ETCD_VERSION}\",\"etcdcluster\":\"3.4.0\"}}"),
        )
    } else {
        respond(StatusCode::NOT_FOUND, TEXT, "404 page not found\n".into())
    };
    Ok(response)
}
