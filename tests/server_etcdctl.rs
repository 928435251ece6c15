//! `etcdctl` (Debian's etcd-client, 3.4) against the real keelson binary, step by step beside a
//! real etcd 3.4 started with the same flags (so member and cluster ids must match too): every
//! step's exit status, output and error line must be the same on both. Only the raft term and
//! index, the version and sizes in `endpoint status`, and timings are set aside — they describe the
//! implementation, not the data. `etcdctl watch`, in each of its modes, is compared the same way,
//! its watches left running while the writes go by.

use std::path::Path;

use keelson_testkit::server::{Ports, Server};

mod common;

use common::etcdctl::{Running, Step, run, same_output_as_etcd, settle, step};
use common::http_get;

/// The session both servers go through.
fn session() -> Vec<Step> {
    let mut steps: Vec<Step> = [
        "put foo bar",
        "put foo2 bar2",
        "put a 1",
        "put b 2",
        "put c 3",
        "put a 11 --prev-kv",
        "get foo",
        "get foo -w json",
        "get foo --prefix",
        "get b --from-key",
        "get a c",
        "get a c -w json",
        "get a --from-key --limit 2",
        "get a --from-key --limit 2 -w json",
        "get a --from-key --keys-only",
        "get a --from-key --sort-by=MODIFY --order=DESCEND",
        "get a --from-key --sort-by=VALUE --order=ASCEND -w json",
        "get a --from-key --sort-by=CREATE --order=DESCEND --limit 3",
        "get a --from-key --sort-by=VERSION",
        "get foo --rev 2",
        "get foo --rev 2 -w json",
        "get foo --print-value-only",
        "get a --consistency=s",
        "get missing",
        "get missing -w json",
        "del a",
        "del foo --prefix",
        "del b --prev-kv -w json",
        "del nothing",
        "put x y -w json",
        "get x -w fields",
        "compaction 4",
        "get foo --rev 2",
        "get foo --rev 3",
        "get foo --rev 4",
        "get x --rev 1000",
        "compaction 3",
        "compaction 1000",
        "compaction --physical 5",
        "get foo --rev 4",
        "put --ignore-value missing",
        "put --lease=1234 k v",
        "member list",
        "member list -w json",
    ]
    .into_iter()
    .map(step)
    .collect();
    steps.push(Step {
        args: vec!["put".into(), String::new(), "empty-key".into()],
        stdin: None,
    });
    steps.push(Step {
        args: vec!["txn".into()],
        stdin: Some("mod(\"x\") > \"0\"\n\nput x changed\nget x\n\nput y nope\n\n"),
    });
    steps.push(Step {
        args: vec!["txn".into(), "-w".into(), "json".into()],
        stdin: Some("value(\"x\") = \"nope\"\n\nput x nope\n\nget x\nget c\n\n"),
    });
    steps.push(Step {
        args: vec!["txn".into()],
        stdin: Some("create(\"c\") = \"5\"\n\nput z 1\nput z 2\n\n\n"),
    });
    steps.push(step("get x --from-key -w json"));
    steps
}

/// The HTTP answers both servers must give alike. `/health` is compared by its status and
/// verdict: keelson answers as etcd 3.5+ does, with a `reason` beside it, which 3.4 lacks.
fn http_session(endpoint: &str) -> Vec<(String, String)> {
    ["/health", "/version", "/nope"]
        .iter()
        .map(|path| {
            let (status, body) = http_get(endpoint, path);
            match body.split_once(",\"reason\"") {
                Some((verdict, _)) if *path == "/health" => (status, format!("{verdict}}}")),
                _ => (status, body),
            }
        })
        .collect()
}

#[test]
fn etcdctl_sees_keelson_as_it_sees_etcd() {
    let ports = Ports::free();
    let steps = session();
    let mut etcd = Server::etcd(ports);
    let expected: Vec<String> = steps.iter().map(|s| run(&etcd.endpoint(), s)).collect();
    let expected_http = http_session(&etcd.endpoint());
    etcd.terminate();
    drop(etcd);

    let mut keelson = Server::start(Path::new(env!("CARGO_BIN_EXE_keelson")), ports, &[]);
    for (step, expected) in steps.iter().zip(&expected) {
        let got = run(&keelson.endpoint(), step);
        assert_eq!(
            &got,
            expected,
            "etcdctl {:?} differs from etcd (left: keelson, right: etcd); keelson's log:\n{}",
            step.args,
            keelson.log()
        );
    }
    assert_eq!(http_session(&keelson.endpoint()), expected_http);
    let status = keelson.terminate();
    assert!(status.success(), "SIGTERM: {status}\n{}", keelson.log());
}

#[test]
fn metrics_use_etcds_names() {
    let mut keelson = Server::start(Path::new(env!("CARGO_BIN_EXE_keelson")), Ports::free(), &[]);
    let endpoint = keelson.endpoint();
    run(&endpoint, &step("put k v"));
    run(&endpoint, &step("get k --rev 99"));
    let (status, text) = http_get(&endpoint, "/metrics");
    assert_eq!(status, "200");
    for line in [
        "etcd_server_has_leader 1",
        "etcd_server_leader_changes_seen_total 1",
        "etcd_disk_wal_fsync_duration_seconds_count",
        "etcd_disk_backend_commit_duration_seconds_count",
        "etcd_mvcc_db_total_size_in_bytes",
        "etcd_server_proposals_committed_total",
        "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 1",
        "grpc_server_handled_total{grpc_code=\"OutOfRange\",grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 1",
        "grpc_server_started_total{grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 1",
        "etcd_debugging_mvcc_watch_stream_total 0",
        "etcd_debugging_mvcc_watcher_total 0",
        "etcd_debugging_mvcc_slow_watcher_total 0",
        "etcd_debugging_mvcc_pending_events_total 0",
        "etcd_debugging_lease_granted_total 0",
        "etcd_debugging_lease_revoked_total 0",
        "etcd_debugging_lease_renewed_total 0",
        "etcd_debugging_lease_ttl_total_bucket{le=\"1\"} 0",
        "etcd_network_client_grpc_sent_bytes_total",
        "etcd_network_client_grpc_received_bytes_total",
        "etcd_mvcc_put_total 1",
        "etcd_mvcc_range_total ",
        "etcd_debugging_mvcc_keys_total 1",
        "etcd_debugging_mvcc_current_revision 2",
        "etcd_server_is_leader 1",
        "etcd_cluster_version{cluster_version=\"3.4\"} 1",
        "etcd_server_version{server_version=\"3.4.23\"} 1",
        "etcd_server_quota_backend_bytes 2147483648",
        "etcd_server_client_requests_total{client_api_version=\"3.4\",type=\"unary\"} ",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    keelson.terminate();
}

/// etcd 3.4's metric families keelson does not export, and why.
const NOT_EXPORTED: &[(&str, &str)] = &[
    ("go_", "the Go runtime's"),
    ("promhttp_", "Go's metrics handler's"),
    ("etcd_server_go_version", "keelson is not Go"),
    ("etcd_debugging_store_", "etcd's v2 store"),
    ("etcd_grpc_proxy_", "etcd's gRPC proxy"),
    (
        "etcd_snap_",
        "etcd's raft snapshot files (keelson's page file is its snapshot)",
    ),
    ("etcd_debugging_snap_save_", "etcd's raft snapshot files"),
    (
        "etcd_debugging_mvcc_index_compaction_",
        "etcd's in-memory index (keelson has none)",
    ),
    (
        "etcd_debugging_disk_backend_commit_",
        "bbolt's commit phases",
    ),
    ("etcd_debugging_auth_revision", "auth is not there yet"),
    (
        "etcd_server_learner_promote_successes",
        "learners come with the cluster",
    ),
    (
        "etcd_server_snapshot_apply_in_progress_total",
        "raft snapshots come with the cluster",
    ),
    (
        "etcd_server_slow_read_indexes_total",
        "keelson's reads retry without counting",
    ),
    (
        "grpc_server_msg_",
        "messages are not counted per method yet",
    ),
];

/// Every metric family `/metrics` at `endpoint` exports, with its type, after a put and a get.
fn families(endpoint: &str) -> Vec<String> {
    run(endpoint, &step("put k v"));
    run(endpoint, &step("get k"));
    let (_, text) = http_get(endpoint, "/metrics");
    let mut families: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(str::to_string)
        .collect();
    families.sort();
    families
}

#[test]
fn every_metric_family_of_etcds_is_exported_with_its_type_but_those_said_not_to_be() {
    let etcd = Server::etcd(Ports::free());
    let keelson = Server::start(Path::new(env!("CARGO_BIN_EXE_keelson")), Ports::free(), &[]);
    let theirs = families(&etcd.endpoint());
    let ours = families(&keelson.endpoint());
    let missing: Vec<&String> = theirs
        .iter()
        .filter(|family| !ours.contains(family))
        .filter(|family| !NOT_EXPORTED.iter().any(|(p, _)| family.starts_with(p)))
        .collect();
    assert!(
        missing.is_empty(),
        "etcd exports, keelson does not: {missing:#?}"
    );
    assert!(theirs.len() > 100, "{theirs:#?}");
}

#[test]
fn endpoint_status_and_health_describe_this_member() {
    let mut keelson = Server::start(Path::new(env!("CARGO_BIN_EXE_keelson")), Ports::free(), &[]);
    let endpoint = keelson.endpoint();
    run(&endpoint, &step("put k v"));
    let status = run(&endpoint, &step("endpoint status -w json"));
    let members = run(&endpoint, &step("member list -w json"));
    let member_id = members
        .split("\"member_id\":")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap()
        .to_string();
    assert!(status.contains("status Some(0)"), "{status}");
    assert!(
        status.contains(&format!("\"leader\":{member_id}")),
        "{status}"
    );
    assert!(status.contains("\"version\":\"3.4.23\""), "{status}");
    assert!(status.contains("\"raftAppliedIndex\":"), "{status}");
    let health = run(&endpoint, &step("endpoint health"));
    assert!(health.contains("is healthy"), "{health}");
    keelson.terminate();
}

/// The watch session: watches of a key, a prefix, a range, from a past revision with previous
/// values, as JSON, with a command run per event, and interactive (`-i`, with `progress`); then
/// writes, one txn touching several of them at one revision; then a watch from a compacted
/// revision. Returns what each watch printed, and that last watch's exit and message.
fn watch_session(endpoint: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let put = |args: &str| run(endpoint, &step(args));
    for args in ["put a 1", "put b/x 2", "put c 3"] {
        put(args);
    }
    let each_event = "echo $ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY $ETCD_WATCH_REVISION";
    let watches: [&[&str]; 7] = [
        &["a"],
        &["--prefix", "b/"],
        &["a", "--rev", "2", "--prev-kv"],
        &["a", "c"],
        &["--prefix", "b/", "--rev", "1", "--prev-kv", "-w", "json"],
        &["c", "--", "sh", "-c", each_event],
        &["-i"],
    ];
    let mut watches: Vec<Running> = watches
        .iter()
        .enumerate()
        .map(|(i, args)| Running::start(endpoint, &[&["watch"], *args].concat(), dir.path(), i))
        .collect();
    let interactive = watches.last_mut().unwrap();
    interactive.type_line("watch a --rev 2");
    interactive.type_line("watch c --prev-kv");
    common::await_metric(endpoint, "etcd_debugging_mvcc_watcher_total", 8.0);
    // etcd replays a past revision from a loop that wakes every 100 ms; writes made before it
    // has would join the replay's response. Wait for each replay so both sides group alike.
    for replaying in [2, 4, 6] {
        watches[replaying].await_output();
    }
    for args in ["put a 4", "put b/y 5", "del b/x"] {
        put(args);
    }
    run(
        endpoint,
        &Step {
            args: vec!["txn".into()],
            stdin: Some("\nput a 6\nput b/z 7\n\n\n"),
        },
    );
    for args in ["del a", "put c 8"] {
        put(args);
    }
    settle(&watches);
    watches.last_mut().unwrap().type_line("progress");
    settle(&watches);
    put("compaction --physical 9");
    let compacted = run(endpoint, &step("watch a --rev 3"));
    // Revision 9 deleted `a`; compacting at 9 drops that tombstone, so once the compaction is
    // done (`--physical` waits for it on etcd) a watch from 9 begins with `put c 8` at 10.
    let at_compaction = Running::start(endpoint, &["watch", "a", "d", "--rev", "9"], dir.path(), 7);
    at_compaction.await_lines(3);
    let mut seen: Vec<String> = watches.into_iter().map(Running::kill).collect();
    seen.push(compacted);
    seen.push(at_compaction.kill());
    seen
}

#[test]
fn etcdctl_watch_sees_keelson_as_it_sees_etcd() {
    let expected = same_output_as_etcd(watch_session);
    // Each watch printed what its events say, not nothing alike on both sides.
    assert!(expected[0].contains("PUT\na\n4\n"), "{}", expected[0]);
    assert!(
        expected[6].contains("progress notify: 10"),
        "{}",
        expected[6]
    );
    assert!(expected[7].contains("compacted"), "{}", expected[7]);
    assert!(expected[8].starts_with("PUT\nc\n8\n"), "{}", expected[8]);
}
