//! `keelson bench` against the real binary and against a real etcd 3.4: a put run writes what it
//! says (its requests, over the key space asked, every one acknowledged by a revision), a range
//! run reads, a txn-put run writes its txns' keys in order, a lease-keepalive run renews a lease
//! per client, the watch runs count every event their puts make for their watchers, `--rate` holds
//! the run back, and a run against nothing fails with the reason.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use etcd_client::{Client, GetOptions};
use keelson_testkit::server::{Ports, Server};

mod common;

use common::runtime;

fn keelson() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_keelson"))
}

/// Runs `keelson bench ARGS --json` against `endpoint`: its JSON summary.
fn bench(endpoint: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(keelson())
        .args(["bench", "--endpoints", endpoint, "--json"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&text).unwrap()
}

/// The keys and revision of the server at `endpoint`.
fn keys_and_revision(endpoint: &str) -> (i64, i64) {
    runtime().block_on(async {
        let mut c = Client::connect([endpoint], None).await.unwrap();
        let all = c
            .get(
                vec![0u8],
                Some(GetOptions::new().with_from_key().with_count_only()),
            )
            .await
            .unwrap();
        (all.count(), all.header().unwrap().revision())
    })
}

/// The same runs against a server: 3000 puts over 100 keys on 4 connections by 20 clients, then
/// ranges of every kind.
fn runs_against(endpoint: &str) {
    let (_, before) = keys_and_revision(endpoint);
    let put = bench(
        endpoint,
        &[
            "--conns",
            "4",
            "--clients",
            "20",
            "put",
            "--total",
            "3000",
            "--key-size",
            "8",
            "--val-size",
            "100",
            "--key-space-size",
            "100",
        ],
    );
    assert_eq!(put["requests"], 3000, "{put}");
    assert_eq!(put["errors"], 0, "{put}");
    let latency = &put["latency_ms"];
    assert!(latency["p50"].as_f64().unwrap() > 0.0, "{put}");
    assert!(latency["p50"].as_f64() <= latency["p99"].as_f64(), "{put}");
    let (keys, after) = keys_and_revision(endpoint);
    assert_eq!(after - before, 3000, "every put was one revision");
    assert!(
        (90..=100).contains(&keys),
        "{keys} keys from a key space of 100"
    );

    for consistency in ["l", "s"] {
        let range = bench(
            endpoint,
            &[
                "--clients",
                "5",
                "range",
                "a",
                "--consistency",
                consistency,
                "--total",
                "500",
            ],
        );
        assert_eq!(
            (range["requests"].as_u64(), range["errors"].as_u64()),
            (Some(500), Some(0))
        );
    }
    // Flags after the workload, and a range over every key, as etcd's tool takes them.
    let range = bench(
        endpoint,
        &["range", "\u{1}", "\u{7f}", "--total", "100", "--conns", "2"],
    );
    assert_eq!(range["requests"], 100, "{range}");

    // 400 txns of 3 puts over a key space of 1000: one revision each, keys 0..1000 (the first 1200
    // puts, in order, wrap once), every key at least once.
    let (_, before) = keys_and_revision(endpoint);
    let txns = bench(
        endpoint,
        &[
            "--conns",
            "2",
            "--clients",
            "8",
            "txn-put",
            "--total",
            "400",
            "--txn-ops",
            "3",
            "--key-space-size",
            "1000",
        ],
    );
    assert_eq!(
        (txns["requests"].as_u64(), txns["errors"].as_u64()),
        (Some(400), Some(0))
    );
    let (keys_after, after) = keys_and_revision(endpoint);
    assert_eq!(after - before, 400, "every txn was one revision");
    assert!(keys_after >= 1000, "{keys_after} keys");

    // 6 clients each grant a lease and renew it.
    let leases_before = leases(endpoint);
    let renewals = bench(
        endpoint,
        &["--clients", "6", "lease-keepalive", "--total", "300"],
    );
    assert_eq!(
        (renewals["requests"].as_u64(), renewals["errors"].as_u64()),
        (Some(300), Some(0))
    );
    assert_eq!(leases(endpoint), leases_before + 6);

    watch_runs_against(endpoint);
}

/// The watch workloads: every event their puts make reaches its watchers, and is counted.
fn watch_runs_against(endpoint: &str) {
    // 30 watchers (6 streams of 5) on 7 keys, watcher w on key w mod 7; 50 puts, put n of key n
    // mod 7: each put is an event for each of its key's watchers.
    let (_, before) = keys_and_revision(endpoint);
    let fanout = bench(
        endpoint,
        &[
            "--conns",
            "2",
            "--clients",
            "4",
            "watch",
            "--streams",
            "6",
            "--watch-per-stream",
            "5",
            "--watched-key-total",
            "7",
            "--key-space-size",
            "7",
            "--sequential-keys",
            "--put-total",
            "50",
        ],
    );
    let events: usize = (0..50)
        .map(|put| (0..30).filter(|w| w % 7 == put % 7).count())
        .sum();
    assert_eq!(
        (fanout["requests"].as_u64(), fanout["errors"].as_u64()),
        (Some(events as u64), Some(0)),
        "{fanout}"
    );
    assert!(
        fanout["latency_ms"]["p50"].as_f64().unwrap() > 0.0,
        "{fanout}"
    );
    assert_eq!(keys_and_revision(endpoint).1 - before, 50);

    // 5 watchers of one key, 40 puts of it: 200 deliveries.
    let latency = bench(
        endpoint,
        &[
            "--conns",
            "2",
            "--clients",
            "5",
            "watch-latency",
            "--total",
            "40",
            "--put-rate",
            "400",
        ],
    );
    assert_eq!(
        (latency["requests"].as_u64(), latency["errors"].as_u64()),
        (Some(200), Some(0)),
        "{latency}"
    );
    assert!(
        latency["latency_ms"]["p50"].as_f64().unwrap() > 0.0,
        "{latency}"
    );

    // 50 watchers on 3 streams catch up on 4 past events each, Gets meanwhile.
    let (_, before) = keys_and_revision(endpoint);
    let gets = bench(
        endpoint,
        &[
            "watch-get",
            "--watchers",
            "50",
            "--streams",
            "3",
            "--events",
            "4",
        ],
    );
    assert_eq!(gets["errors"], 0, "{gets}");
    assert!(gets["requests"].as_u64().unwrap() >= 1, "{gets}");
    assert_eq!(keys_and_revision(endpoint).1 - before, 4);
}

/// How many leases the server at `endpoint` holds.
fn leases(endpoint: &str) -> usize {
    runtime().block_on(async {
        let mut c = Client::connect([endpoint], None).await.unwrap();
        c.leases().await.unwrap().leases().len()
    })
}

#[test]
fn a_bench_run_writes_and_reads_what_it_says_on_keelson_and_on_etcd() {
    let server = Server::start(keelson(), Ports::free(), &[]);
    runs_against(&server.endpoint());
    let etcd = Server::etcd(Ports::free());
    runs_against(&etcd.endpoint());
}

#[test]
fn rate_holds_a_run_back_and_a_run_against_nothing_fails_with_why() {
    let server = Server::start(keelson(), Ports::free(), &[]);
    let started = Instant::now();
    let put = bench(
        &server.endpoint(),
        &["--clients", "10", "--rate", "400", "put", "--total", "200"],
    );
    assert_eq!(put["requests"], 200);
    // 200 requests at 400 a second: the last may not go before half a second.
    assert!(started.elapsed().as_secs_f64() >= 0.49, "{put}");
    assert!(put["seconds"].as_f64().unwrap() >= 0.49, "{put}");

    let refused = Command::new(keelson())
        .args(["bench", "--endpoints", "127.0.0.1:1", "put", "--total", "1"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.starts_with("Error: 127.0.0.1:1: "), "{why}");
}
