//! etcd's own load generator, `benchmark` (etcd 3.4.23's tools/benchmark, built by
//! dev/etcd-benchmark-build), against the real keelson binary: puts from 1000 clients, then ranges
//! with linearizable and serializable consistency. Every request must succeed — a check of
//! correctness under load; the figures are the benchmark issue's business.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keelson_testkit::server::{Ports, Server};

const BENCHMARK: &str = "/opt/etcd-bench/benchmark";

/// Runs `benchmark` against `endpoint` and returns its report; fails on any request error.
fn benchmark(endpoint: &str, args: &[&str]) -> String {
    assert!(
        Path::new(BENCHMARK).exists(),
        "{BENCHMARK} not found: run dev/etcd-benchmark-build (dev/setup does)"
    );
    let mut child = Command::new(BENCHMARK)
        .arg(format!("--endpoints={endpoint}"))
        .args(["--conns=100", "--clients=1000"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // benchmark retries failed connections forever; a stuck run is a failure, not a hang.
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("benchmark {args:?} did not finish in 300 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "benchmark {args:?}: {report}");
    assert!(
        report.contains("Requests/sec"),
        "benchmark {args:?} reported nothing:\n{report}"
    );
    assert!(
        !report.contains("Error distribution"),
        "benchmark {args:?} saw errors:\n{report}"
    );
    report
}

#[test]
fn etcds_benchmark_tool_runs_without_errors() {
    let mut keelson = Server::start(Path::new(env!("CARGO_BIN_EXE_keelson")), Ports::free(), &[]);
    let endpoint = keelson.endpoint();
    benchmark(
        &endpoint,
        &[
            "put",
            "--key-size=8",
            "--sequential-keys",
            "--total=20000",
            "--val-size=256",
        ],
    );
    for consistency in ["l", "s"] {
        benchmark(
            &endpoint,
            &["range", "0", "--consistency", consistency, "--total=20000"],
        );
    }
    let status = Command::new("/usr/bin/etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &endpoint, "get", "0", "-w", "json"])
        .output()
        .unwrap();
    let json = String::from_utf8_lossy(&status.stdout);
    assert!(
        json.contains("\"revision\":20001"),
        "every put applied once: {json}"
    );
    assert!(keelson.terminate().success(), "{}", keelson.log());
}
