//! The tuning knobs, against the real binary: every profile in `tuning/` starts a member through
//! `--config-file` (the profile, then the member's own keys) that serves etcdctl and applies the
//! profile's keys; `--backend-batch-limit` syncs the page file before `--backend-batch-interval`
//! would.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keelson_testkit::server::{Ports, Server};

mod common;

use common::etcdctl::{run, step};
use common::metric;

fn keelson_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_keelson"))
}

/// The profiles shipped in `tuning/`.
fn profiles() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tuning");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    found.sort();
    found
}

/// The value of `field=` in the log line that says `message`.
fn logged<'l>(log: &'l str, message: &str, field: &str) -> Option<&'l str> {
    let line = log.lines().find(|l| l.contains(message))?;
    let from = line.find(&format!("{field}="))? + field.len() + 1;
    let rest = &line[from..];
    let end = if rest.starts_with('[') {
        rest.find(']')? + 1
    } else {
        rest.find(' ').unwrap_or(rest.len())
    };
    Some(&rest[..end])
}

#[test]
fn every_tuning_profile_starts_a_member_that_serves_and_applies_its_keys() {
    let profiles = profiles();
    assert_eq!(profiles.len(), 3, "{profiles:?}");
    for profile in profiles {
        let text = std::fs::read_to_string(&profile).unwrap();
        let config_dir = tempfile::tempdir().unwrap();
        let config = config_dir.path().join("member.yaml");
        let ports = Ports::free();
        let flags = ["--config-file", config.to_str().unwrap()];
        let mut keelson = Server::start_on(keelson_binary(), ports, &flags, |data, peer| {
            let client = format!("http://127.0.0.1:{}", ports.client);
            let member = format!(
                "\nname: node\ndata-dir: {}\nlisten-client-urls: {client}\n\
                 advertise-client-urls: {client}\nlisten-peer-urls: {peer}\n\
                 initial-advertise-peer-urls: {peer}\ninitial-cluster: node={peer}\n",
                data.display()
            );
            std::fs::write(&config, format!("{text}{member}")).unwrap();
        });
        let endpoint = keelson.endpoint();
        assert_eq!(
            run(&endpoint, &step("put tuned yes")),
            "status Some(0)\nOK\n"
        );
        assert_eq!(
            run(&endpoint, &step("get tuned")),
            "status Some(0)\ntuned\nyes\n"
        );
        let log = keelson.log();
        let named = profile.display();
        let interval = logged(&log, "setting backend batch interval", "batch_interval");
        let limit = logged(&log, "setting backend batch limit", "batch_limit");
        let raft_cpu = logged(&log, "starting a keelson member", "raft_cpu").unwrap();
        let serving = logged(&log, "starting a keelson member", "serving_cpus").unwrap();
        let serves_on_raft_core = serving
            .trim_matches(['[', ']'])
            .split(", ")
            .any(|cpu| cpu == raft_cpu);
        // With one CPU the raft core's serves whatever the profile says.
        let one_cpu = serving == format!("[{raft_cpu}]");
        match profile.file_stem().unwrap().to_str().unwrap() {
            "default" => {
                assert_eq!((interval, limit), (Some("100ms"), Some("10000")), "{named}");
                assert!(one_cpu || !serves_on_raft_core, "{named}: {serving}");
            }
            "low-latency" => {
                assert_eq!((interval, limit), (Some("100ms"), Some("10000")), "{named}");
                assert!(serves_on_raft_core, "{named}: {serving}");
            }
            "high-throughput" => {
                assert_eq!((interval, limit), (Some("1s"), Some("100000")), "{named}");
                assert!(serves_on_raft_core, "{named}: {serving}");
            }
            other => panic!("a profile with no expectations here: {other}"),
        }
        assert!(keelson.terminate().success(), "{named}:\n{}", keelson.log());
    }
}

#[test]
fn the_backend_batch_limit_syncs_the_page_file_before_the_interval_would() {
    let flags = [
        "--backend-batch-interval",
        "1h",
        "--backend-batch-limit",
        "3",
    ];
    let mut keelson = Server::start(keelson_binary(), Ports::free(), &flags);
    let endpoint = keelson.endpoint();
    let commits = "etcd_disk_backend_commit_duration_seconds_count";
    let before = metric(&endpoint, commits).unwrap();
    for i in 0..10 {
        assert_eq!(
            run(&endpoint, &step(&format!("put k{i} v"))),
            "status Some(0)\nOK\n"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&endpoint, commits).unwrap() == before {
        assert!(
            Instant::now() < deadline,
            "no page-file sync after 10 puts with a batch limit of 3:\n{}",
            keelson.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(keelson.terminate().success(), "{}", keelson.log());
}
