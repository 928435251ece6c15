//! What the tests of the binary share: a tokio runtime for the `etcd-client` crate, plain HTTP
//! gets (metrics), and writers
//! that record every acknowledged put, so a test can stop the server any way it likes and then
//! check that nothing acknowledged was lost.
// Each test file uses the helpers it needs.
#![allow(dead_code)]

pub mod etcdctl;

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use etcd_client::Client;
use keelson_testkit::server::{Ports, Server};

/// The member id of the server at `endpoint`, as its Status says.
pub async fn member_id(endpoint: &str) -> u64 {
    let mut client = Client::connect([endpoint], None).await.unwrap();
    let status = client.status().await.unwrap();
    status.header().unwrap().member_id()
}

/// A current-thread tokio runtime.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// What an answer or an error says, for comparing the two servers: `show` of the answer, or the
/// error's gRPC code and message.
pub fn said<T>(r: Result<T, etcd_client::Error>, show: impl Fn(&T) -> String) -> String {
    match r {
        Ok(r) => show(&r),
        Err(etcd_client::Error::GRpcStatus(s)) => format!("error {:?} {}", s.code(), s.message()),
        Err(e) => format!("error {e}"),
    }
}

/// Runs `steps` (given an endpoint, every answer in order) against the keelson binary and then
/// against a real etcd 3.4, each started with `flags` beside its ports, and fails at the first
/// answer that differs. Returns etcd's answers, for the test to check they mean something.
pub fn same_answers_as_etcd<F>(flags: &[&str], steps: impl Fn(String) -> F) -> Vec<String>
where
    F: Future<Output = Vec<String>>,
{
    let keelson = Server::start(
        Path::new(env!("CARGO_BIN_EXE_keelson")),
        Ports::free(),
        flags,
    );
    let etcd = Server::start(Path::new("/usr/bin/etcd"), Ports::free(), flags);
    let (got, want) = runtime().block_on(async {
        (
            steps(keelson.endpoint()).await,
            steps(etcd.endpoint()).await,
        )
    });
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "answer {i}\nkeelson: {got:#?}\netcd: {want:#?}");
    }
    assert_eq!(got.len(), want.len(), "keelson: {got:#?}\netcd: {want:#?}");
    want
}

/// A raw gRPC client of the server at `endpoint`, ready for a call, for what the `etcd-client`
/// crate cannot send (several leases on one keep-alive stream, gRPC's health service).
pub async fn grpc(endpoint: &str) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc
}

/// `GET path` over plain HTTP/1 on the client port: status code and body.
pub fn http_get(endpoint: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(endpoint).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {endpoint}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().to_string();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (
        status,
        if chunked {
            unchunk(body)
        } else {
            body.to_string()
        },
    )
}

/// The body of an HTTP/1 chunked response.
fn unchunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    body
}

/// The value of metric `name` (a line `name value`) in the server's `/metrics`, if there.
pub fn metric(endpoint: &str, name: &str) -> Option<f64> {
    let (_, text) = http_get(endpoint, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until metric `name` of the server at `endpoint` reads `value`, failing after 30 s.
pub fn await_metric(endpoint: &str, name: &str, value: f64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = metric(endpoint, name);
        if now == Some(value) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} stayed at {now:?}, not {value}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Keys whose puts were acknowledged.
pub type Acknowledged = Arc<Mutex<Vec<String>>>;

/// Starts `writers` clients on one connection to `endpoint`, each putting `<prefix>/w<n>/<i>`
/// until a put fails, and pushing every acknowledged key to `acked`. Joins when all have failed.
pub fn write_until_refused(
    endpoint: String,
    prefix: String,
    writers: usize,
    acked: Acknowledged,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let c = Client::connect([endpoint], None).await.unwrap();
            let tasks: Vec<_> = (0..writers)
                .map(|w| {
                    let (mut c, acked, prefix) = (c.clone(), acked.clone(), prefix.clone());
                    tokio::spawn(async move {
                        for i in 0.. {
                            let key = format!("{prefix}/w{w}/{i}");
                            if c.put(key.clone(), "v", None).await.is_err() {
                                return;
                            }
                            acked.lock().unwrap().push(key);
                        }
                    })
                })
                .collect();
            for task in tasks {
                let _ = task.await;
            }
        })
    })
}

/// Fails the test unless more than `at_least` writes were acknowledged and every one of them
/// reads back from `endpoint`.
pub fn assert_none_lost(endpoint: String, acked: &Acknowledged, at_least: usize) {
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > at_least,
        "only {} writes acknowledged",
        acked.len()
    );
    runtime().block_on(async {
        let mut c = Client::connect([endpoint], None).await.unwrap();
        for key in &acked {
            let got = c.get(key.as_str(), None).await.unwrap();
            assert_eq!(got.kvs().len(), 1, "acknowledged write {key} lost");
        }
    });
}
