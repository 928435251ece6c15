//! Per-stage latency from the real binary: after a client's puts and linearizable gets, the
//! member's `/debug/latency` (text and JSON) and its `keelson_stage_duration_seconds` family count
//! every one of them in the stages they pass, and `keelson profile` sampling the member while a
//! client writes prints each stage's share, the write's path through them, what each call waited
//! and cost around its handler, and how long the serving core left its sockets unpolled.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use etcd_client::Client;
use keelson_testkit::server::{Ports, Server};

mod common;

use common::{http_get, metric, runtime};

const PUTS: u64 = 200;
const GETS: u64 = 100;

fn keelson() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_keelson"))
}

/// The JSON stage named `name` in `/debug/latency?format=json`.
fn stage(json: &serde_json::Value, name: &str) -> serde_json::Value {
    json["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == name)
        .unwrap_or_else(|| panic!("no stage {name} in {json}"))
        .clone()
}

#[test]
fn every_put_and_get_is_counted_in_the_stages_it_passes() {
    let server = Server::start(keelson(), Ports::free(), &[]);
    let endpoint = server.endpoint();
    runtime().block_on(async {
        let mut c = Client::connect([endpoint.as_str()], None).await.unwrap();
        for i in 0..PUTS {
            c.put(format!("k{i}"), "v", None).await.unwrap();
        }
        for i in 0..GETS {
            c.get(format!("k{i}"), None).await.unwrap();
        }
    });
    let (status, body) = http_get(&endpoint, "/debug/latency?format=json");
    assert_eq!(status, "200", "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let count = |name: &str| stage(&json, name)["count"].as_u64().unwrap();
    // Every put is a proposal answered on the raft core and a write on its serving core.
    assert!(count("proposal") >= PUTS, "{body}");
    assert!(count("write") >= PUTS, "{body}");
    // Each get waited for a read index and read the page file.
    assert!(count("read_index") >= GETS, "{body}");
    assert!(count("read") >= GETS, "{body}");
    // Every call waited on its serving core, and had its answer encoded there.
    assert!(count("queue") >= PUTS + GETS, "{body}");
    assert!(count("encode") >= PUTS + GETS, "{body}");
    for name in [
        "to_raft",
        "wal_sync",
        "wal_batch",
        "apply",
        "publish",
        "from_raft",
    ] {
        assert!(count(name) > 0, "{name}: {body}");
    }
    // A batch holds at least one entry, and the WAL wrote every put's entry.
    let wal_batch = stage(&json, "wal_batch");
    assert!(wal_batch["sum"].as_u64().unwrap() >= PUTS, "{wal_batch}");
    assert!(wal_batch["p50"].as_u64().unwrap() >= 1, "{wal_batch}");
    // A write waits for the WAL: its median is no shorter than the WAL's fastest sync.
    let write = stage(&json, "write");
    let fastest_sync = stage(&json, "wal_sync")["buckets"][0][0].as_u64().unwrap();
    assert!(write["p50"].as_u64().unwrap() >= fastest_sync, "{write}");
    let buckets: u64 = (write["buckets"].as_array().unwrap().iter())
        .map(|b| b[1].as_u64().unwrap())
        .sum();
    assert_eq!(buckets, write["count"].as_u64().unwrap(), "{write}");

    let (status, table) = http_get(&endpoint, "/debug/latency");
    assert_eq!(status, "200");
    let row = table.lines().find(|l| l.starts_with("write ")).unwrap();
    let counted: u64 = row.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(counted >= PUTS, "{table}");

    let prometheus = metric(
        &endpoint,
        "keelson_stage_duration_seconds_count{stage=\"write\"}",
    );
    assert!(prometheus.unwrap() >= PUTS as f64, "{prometheus:?}");
}

#[test]
fn keelson_profile_shows_where_a_writing_clients_time_goes() {
    let server = Server::start(keelson(), Ports::free(), &[]);
    let endpoint = server.endpoint();
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (endpoint, writing) = (endpoint.clone(), writing.clone());
        std::thread::spawn(move || {
            runtime().block_on(async {
                let mut c = Client::connect([endpoint.as_str()], None).await.unwrap();
                let mut i = 0u64;
                while writing.load(Ordering::Relaxed) {
                    c.put(format!("k{}", i % 100), "v", None).await.unwrap();
                    i += 1;
                }
                i
            })
        })
    };
    let out = Command::new(keelson())
        .args(["profile", "--endpoints", &endpoint, "--duration", "1s"])
        .output()
        .unwrap();
    writing.store(false, Ordering::Relaxed);
    let puts = writer.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(puts > 0);
    let row = text.lines().find(|l| l.starts_with("write ")).unwrap();
    let sampled: u64 = row.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        sampled > 0 && sampled <= puts,
        "{sampled} of {puts} puts:\n{text}"
    );
    assert!(
        text.contains("a write, p50 of each stage:") && text.contains("to_raft"),
        "{text}"
    );
    // Each serving core's 100 ms tick fired during the 1 s sample, and every put was queued.
    assert!(
        text.contains("sockets left unpolled (lag): p50 ")
            && text.contains("every call, around its handler, p50 of each stage: queue "),
        "{text}"
    );
    // The sample holds only what happened during it: nothing read.
    let reads = text.lines().find(|l| l.starts_with("read ")).unwrap();
    assert_eq!(reads.split_whitespace().nth(1), Some("0"), "{text}");

    let refused = Command::new(keelson())
        .args(["profile", "--endpoints", "127.0.0.1:1", "--duration", "1ms"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).starts_with("Error: 127.0.0.1:1: "),
        "{refused:?}"
    );
}
