//! `keelson bench`: a load generator for any etcd-compatible endpoint — keelson or etcd — with
//! etcd's `benchmark` workloads and flags (`put`, `range`, `txn-put`, `lease-keepalive`, and the
//! watch workloads of [`watch`]: `watch`, `watch-latency`, `watch-get`; `--conns`,
//! `--clients`, `--total`, `--rate`, `--key-size`, `--val-size`, `--key-space-size`,
//! `--sequential-keys`, `--consistency`, `--txn-ops`), plus `--duration` and `--json`. Clients
//! share connections round-robin, each call an HTTP/2 stream, all on one glommio executor (one
//! CPU: pin it with `taskset`), so that one load core pushes further than etcd's tool. Latencies go into an hdrhistogram; the summary is printed as
//! etcd's tool prints its own, or as JSON. A progress line is drawn on a terminal.
//!
//! Runs on: a glommio executor of its own, on the main thread's behalf.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use keelson_proto::etcdserverpb::request_op::Request as Op;
use keelson_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use crate::grpc_client::{self, Channel};

mod watch;
pub use watch::Watch;

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Output(#[from] std::io::Error),
}

/// The keys and values a writing workload makes, under etcd's tool's flags.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Shape {
    /// Bytes per key.
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// How many different keys.
    #[arg(long = "key-space-size", default_value_t = 1)]
    pub key_space: u64,
}

impl Shape {
    /// Key number `number` (wrapped into the key space).
    fn key(&self, number: u64) -> Vec<u8> {
        key(number % self.key_space.max(1), self.key_size)
    }
}

/// What each request does.
#[derive(Debug, Clone)]
pub enum Workload {
    /// Puts, their keys drawn at random from the key space, or in order.
    Put { shape: Shape, sequential: bool },
    /// Ranges of `key` (to `end`, if given), linearizable or serializable.
    Range {
        key: Vec<u8>,
        end: Vec<u8>,
        serializable: bool,
    },
    /// Txns of `ops` puts each (no compare), as etcd's tool sends them: the keys of request n are
    /// numbers n × ops + j (j < ops) in the key space, in order.
    TxnPut { shape: Shape, ops: usize },
    /// Renewals of a lease each client grants itself first (TTL 100 s), each on a keep-alive
    /// stream of its own — one request, one answer — as etcd's client's `KeepAliveOnce` does.
    LeaseKeepalive,
    /// Watchers, and the puts whose events they get (see [`watch`]).
    Watch(Watch),
}

/// A run: how many, how fast, against what.
#[derive(Debug, Clone)]
pub struct Run {
    pub endpoint: String,
    pub conns: usize,
    pub clients: usize,
    /// Requests to send in all (with `duration`: whichever ends first).
    pub total: Option<u64>,
    pub duration: Option<Duration>,
    /// Requests per second in all (0: as fast as the clients go).
    pub rate: u64,
    pub workload: Workload,
}

/// What a run came to.
struct Outcome {
    latencies: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    took: Duration,
}

/// State the clients share (one executor: `Cell`s).
struct Shared {
    run: Run,
    issued: Cell<u64>,
    started: Instant,
    latencies: RefCell<Histogram<u64>>,
    errors: RefCell<BTreeMap<String, u64>>,
}

impl Shared {
    fn new(run: Run) -> Self {
        Shared {
            run,
            issued: Cell::new(0),
            started: Instant::now(),
            latencies: RefCell::new(
                Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds"),
            ),
            errors: RefCell::default(),
        }
    }

    /// Records a latency of `nanos`.
    fn record(&self, nanos: u64) {
        self.latencies.borrow_mut().saturating_record(nanos.max(1));
    }

    /// Records the latency of something that began at `start`.
    fn record_since(&self, start: Instant) {
        self.record(nanos(start.elapsed()));
    }

    /// What the run came to so far.
    fn outcome(&self) -> Outcome {
        Outcome {
            latencies: self.latencies.borrow().clone(),
            errors: self.errors.borrow().clone(),
            took: self.started.elapsed(),
        }
    }

    /// The next request's number, once it may go (`--rate`); `None` once the run is over.
    async fn next(&self) -> Option<u64> {
        let n = self.issued.get();
        if self.run.total.is_some_and(|total| n >= total)
            || self
                .run
                .duration
                .is_some_and(|d| self.started.elapsed() >= d)
        {
            return None;
        }
        self.issued.set(n + 1);
        if self.run.rate > 0 {
            let at = self.started + Duration::from_secs_f64(n as f64 / self.run.rate as f64);
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                glommio::timer::sleep(wait).await;
            }
        }
        Some(n)
    }

    /// Counts a failed call (or a client that could not start) under `why`.
    fn failed(&self, why: String) {
        *self.errors.borrow_mut().entry(why).or_default() += 1;
    }
}

/// A small, fast generator of the random keys (xorshift64*), one per client.
struct Keys(u64);

impl Keys {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// The key of request `n`: etcd's tool writes the key's number as a varint into a key of
/// `size` bytes.
fn key(number: u64, size: usize) -> Vec<u8> {
    let mut key = vec![0u8; size];
    let mut zigzag = (number << 1) as i64 as u64;
    for byte in key.iter_mut() {
        *byte = (zigzag as u8 & 0x7f) | if zigzag >= 0x80 { 0x80 } else { 0 };
        zigzag >>= 7;
        if zigzag == 0 {
            break;
        }
    }
    key
}

/// The method a workload calls.
fn method(workload: &Workload) -> &'static str {
    match workload {
        Workload::Put { .. } => "/etcdserverpb.KV/Put",
        Workload::Range { .. } => "/etcdserverpb.KV/Range",
        Workload::TxnPut { .. } => "/etcdserverpb.KV/Txn",
        Workload::LeaseKeepalive => "/etcdserverpb.Lease/LeaseKeepAlive",
        Workload::Watch(_) => "/etcdserverpb.Watch/Watch",
    }
}

/// The TTL of the leases `lease-keepalive` renews, in seconds (etcd's tool grants 100).
const LEASE_TTL: i64 = 100;

/// One client: requests to the method at `uri` until the run is over. Its request is built once;
/// only the keys change (a put's, a txn's).
async fn client(shared: Rc<Shared>, mut channel: Channel, uri: Rc<http::Uri>, seed: u64) {
    let (shared, channel, uri) = (&*shared, &mut channel, &*uri);
    match &shared.run.workload {
        &Workload::Put { shape, sequential } => {
            let mut keys = Keys(seed | 1);
            let request = PutRequest {
                value: vec![b'v'; shape.val_size],
                ..PutRequest::default()
            };
            let prepare = |n, put: &mut PutRequest| {
                put.key = shape.key(if sequential { n } else { keys.next() });
            };
            calls(shared, channel, uri, request, prepare, answered).await
        }
        Workload::Range {
            key,
            end,
            serializable,
        } => {
            let request = RangeRequest {
                key: key.clone(),
                range_end: end.clone(),
                serializable: *serializable,
                ..RangeRequest::default()
            };
            calls(shared, channel, uri, request, |_, _| {}, answered).await
        }
        &Workload::TxnPut { shape, ops } => {
            let ops = ops.max(1);
            let put = RequestOp {
                request: Some(Op::RequestPut(PutRequest {
                    value: vec![b'v'; shape.val_size],
                    ..PutRequest::default()
                })),
            };
            let request = TxnRequest {
                success: vec![put; ops],
                ..TxnRequest::default()
            };
            let prepare = |n, txn: &mut TxnRequest| {
                for (j, op) in (0..).zip(&mut txn.success) {
                    if let Some(Op::RequestPut(put)) = &mut op.request {
                        put.key = shape.key(n * ops as u64 + j);
                    }
                }
            };
            calls(shared, channel, uri, request, prepare, answered).await
        }
        Workload::LeaseKeepalive => {
            let id = match grant(channel, &shared.run.endpoint).await {
                Ok(id) => id,
                Err(e) => return shared.failed(format!("lease grant: {e}")),
            };
            let request = LeaseKeepAliveRequest { id };
            calls(shared, channel, uri, request, |_, _| {}, renewed).await
        }
        Workload::Watch(_) => unreachable!("watch workloads run in `watch::drive`"),
    }
}

/// Grants the lease a `lease-keepalive` client renews: its id.
async fn grant(channel: &mut Channel, endpoint: &str) -> Result<i64, String> {
    let uri = grpc_client::uri(endpoint, "/etcdserverpb.Lease/LeaseGrant")?;
    let request = LeaseGrantRequest {
        ttl: LEASE_TTL,
        id: 0,
    };
    let body = grpc_client::unary(channel, &uri, &request).await?;
    let granted: LeaseGrantResponse = grpc_client::first_message(&body)?;
    match granted.error.as_str() {
        "" => Ok(granted.id),
        why => Err(why.to_string()),
    }
}

/// An answer to a call whose gRPC status was OK: nothing more to check.
fn answered(_: &[u8]) -> Result<(), String> {
    Ok(())
}

/// An answer to a keep-alive: a lease renewed, or (TTL 0) not found, as etcd's client reports it.
fn renewed(body: &[u8]) -> Result<(), String> {
    let answer: LeaseKeepAliveResponse = grpc_client::first_message(body)?;
    if answer.ttl > 0 {
        Ok(())
    } else {
        Err("etcdserver: requested lease not found".into())
    }
}

/// Sends `request`, made ready for request number n by `prepare`, until the run is over, recording
/// each call's latency, or its error (the transport's, gRPC's, or what `check` finds in the
/// answer).
async fn calls<M: prost::Message>(
    shared: &Shared,
    channel: &mut Channel,
    uri: &http::Uri,
    mut request: M,
    mut prepare: impl FnMut(u64, &mut M),
    check: fn(&[u8]) -> Result<(), String>,
) {
    while let Some(n) = shared.next().await {
        prepare(n, &mut request);
        let sent = Instant::now();
        let answer = grpc_client::unary(channel, uri, &request).await;
        match answer.and_then(|body| check(&body)) {
            Ok(()) => shared.record_since(sent),
            Err(e) => shared.failed(e),
        }
    }
}

/// Draws "done/total, rate" on stderr every 200 ms, if stderr is a terminal.
async fn progress(shared: Rc<Shared>) {
    if !atty_stderr() {
        return;
    }
    loop {
        glommio::timer::sleep(Duration::from_millis(200)).await;
        let done = shared.latencies.borrow().len() + shared.errors.borrow().values().sum::<u64>();
        let rate = done as f64 / shared.started.elapsed().as_secs_f64().max(1e-9);
        let of = shared
            .run
            .total
            .map_or(String::new(), |t| format!(" / {t}"));
        eprint!("\r{done}{of} requests, {rate:.0}/s   ");
    }
}

/// Runs `run` on an executor of its own.
async fn drive(run: Run) -> Result<Outcome, BenchError> {
    let uri = grpc_client::uri(&run.endpoint, method(&run.workload)).map_err(BenchError::Failed)?;
    let uri = Rc::new(uri);
    let mut channels = Vec::new();
    for _ in 0..run.conns.max(1) {
        let channel = grpc_client::connect(&run.endpoint)
            .await
            .map_err(|e| BenchError::Failed(format!("{}: {e}", run.endpoint)))?;
        channels.push(channel);
    }
    if let Workload::Watch(w) = &run.workload {
        return watch::drive(&run, w, &channels)
            .await
            .map_err(BenchError::Failed);
    }
    let shared = Rc::new(Shared::new(run.clone()));
    let drawing = glommio::spawn_local(progress(shared.clone())).detach();
    let clients: Vec<_> = (0..run.clients.max(1))
        .map(|i| {
            let channel = channels[i % channels.len()].clone();
            glommio::spawn_local(client(
                shared.clone(),
                channel,
                uri.clone(),
                0x9E37_79B9 * (i as u64 + 1),
            ))
        })
        .collect();
    for client in clients {
        client.await;
    }
    drawing.cancel();
    Ok(shared.outcome())
}

/// `d` in nanoseconds (saturating).
fn nanos(d: Duration) -> u64 {
    d.as_nanos().try_into().unwrap_or(u64::MAX)
}

/// The quantiles printed.
const QUANTILES: [f64; 8] = [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9];

fn seconds(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

/// The summary as etcd's tool prints its own.
fn summary(outcome: &Outcome) -> String {
    let h = &outcome.latencies;
    let took = outcome.took.as_secs_f64();
    let mut out = String::from("\nSummary:\n");
    let _ = writeln!(out, "  Total:\t{took:.6} secs.");
    if !h.is_empty() {
        let _ = writeln!(out, "  Slowest:\t{:.6} secs.", seconds(h.max()));
        let _ = writeln!(out, "  Fastest:\t{:.6} secs.", seconds(h.min()));
        let _ = writeln!(out, "  Average:\t{:.6} secs.", h.mean() / 1e9);
        let _ = writeln!(out, "  Stddev:\t{:.6} secs.", h.stdev() / 1e9);
    }
    let _ = writeln!(
        out,
        "  Requests/sec:\t{:.4}",
        h.len() as f64 / took.max(1e-9)
    );
    if !h.is_empty() {
        out.push_str("\nLatency distribution:\n");
        for q in QUANTILES {
            let _ = writeln!(
                out,
                "  {q}% in {:.6} secs.",
                seconds(h.value_at_quantile(q / 100.0))
            );
        }
    }
    if !outcome.errors.is_empty() {
        out.push_str("\nError distribution:\n");
        for (error, count) in &outcome.errors {
            let _ = writeln!(out, "  [{count}]\t{error}");
        }
    }
    out
}

/// The summary as JSON: counts, seconds, rate, and latencies in milliseconds.
fn json(outcome: &Outcome) -> String {
    let h = &outcome.latencies;
    let took = outcome.took.as_secs_f64();
    let ms = |nanos: f64| nanos / 1e6;
    let mut latency = serde_json::Map::new();
    if !h.is_empty() {
        latency.insert("mean".into(), ms(h.mean()).into());
        latency.insert("min".into(), ms(h.min() as f64).into());
        latency.insert("max".into(), ms(h.max() as f64).into());
        for q in QUANTILES {
            latency.insert(
                format!("p{q}"),
                ms(h.value_at_quantile(q / 100.0) as f64).into(),
            );
        }
    }
    serde_json::json!({
        "requests": h.len(),
        "errors": outcome.errors.values().sum::<u64>(),
        "error_kinds": outcome.errors,
        "seconds": took,
        "requests_per_second": h.len() as f64 / took.max(1e-9),
        "latency_ms": latency,
    })
    .to_string()
        + "\n"
}

/// Runs `run` and prints its summary (JSON if `as_json`) to `out`; fails if a request failed.
pub fn bench(run: Run, as_json: bool, out: &mut dyn Write) -> Result<(), BenchError> {
    let outcome = glommio::LocalExecutorBuilder::default()
        .name("keelson-bench")
        .spawn(move || drive(run))
        .map_err(|e| BenchError::Failed(e.to_string()))?
        .join()
        .map_err(|e| BenchError::Failed(e.to_string()))??;
    if atty_stderr() {
        eprintln!();
    }
    let text = if as_json {
        json(&outcome)
    } else {
        summary(&outcome)
    };
    out.write_all(text.as_bytes())?;
    match outcome.errors.values().sum::<u64>() {
        0 => Ok(()),
        n => Err(BenchError::Failed(format!("{n} requests failed"))),
    }
}

/// Whether stderr is a terminal (the progress line is drawn only there).
fn atty_stderr() -> bool {
    std::io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_etcds_varints_in_a_key_of_the_asked_size() {
        assert_eq!(key(0, 4), vec![0, 0, 0, 0]);
        assert_eq!(key(1, 4), vec![2, 0, 0, 0]);
        assert_eq!(key(64, 4), vec![0x80, 0x01, 0, 0]);
        assert_eq!(key(300, 2), vec![0xd8, 0x04]);
        assert_eq!(key(u64::MAX >> 1, 2).len(), 2);
    }

    /// A gRPC body of `message`, as a server frames it.
    fn framed(message: &impl prost::Message) -> Vec<u8> {
        let encoded = message.encode_to_vec();
        let mut body = vec![0];
        body.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        body.extend_from_slice(&encoded);
        body
    }

    #[test]
    fn a_keep_alive_counts_only_if_it_renewed_the_lease() {
        let answer = |ttl| LeaseKeepAliveResponse {
            id: 7,
            ttl,
            ..LeaseKeepAliveResponse::default()
        };
        assert_eq!(renewed(&framed(&answer(100))), Ok(()));
        assert_eq!(
            renewed(&framed(&answer(0))),
            Err("etcdserver: requested lease not found".into())
        );
        let whole = framed(&answer(100));
        assert!(renewed(&whole[..whole.len() - 1]).is_err(), "cut short");
        assert!(renewed(&[]).is_err(), "no message");
        let mut compressed = whole.clone();
        compressed[0] = 1;
        assert!(renewed(&compressed).is_err(), "compressed");
    }
}
