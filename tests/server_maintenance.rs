//! Operating a member, against the real binary: etcdctl's maintenance commands (`endpoint
//! status/hashkv/health`, `alarm list/disarm`, `defrag`, `move-leader`, `snapshot save/status`)
//! step by step beside a real etcd 3.4 started with the same flags; HashKV equal to etcd's after
//! the same history, at every revision, with its errors; the quota filled to NOSPACE and every
//! call's answer compared with etcd's, then compaction, defragmentation and disarm make room
//! again; the alarm across kill -9; a defragmentation under 32 writers and 32 readers losing
//! nothing and failing no read, and one cut by kill -9; `/health`, `/livez`, `/readyz` and the
//! metrics listener as etcd 3.5+ answers them, and gRPC's health service.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{AlarmAction, AlarmOptions, AlarmType, Client, Compare, CompareOp, Txn, TxnOp};
use keelson_testkit::server::{Ports, Server};

mod common;

use common::etcdctl::{run, same_output_as_etcd, step};
use common::{Acknowledged, assert_none_lost, http_get, runtime, said, write_until_refused};

fn keelson_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_keelson"))
}

async fn connect(endpoint: &str) -> Client {
    Client::connect([endpoint], None).await.unwrap()
}

/// Takes out of `json` (etcdctl's `-w json`) the fields that describe the implementation rather
/// than the data: sizes, raft term and index.
fn without_implementation(json: &str) -> String {
    // `run` blanked the raft term already.
    let json = json.replace("\"raft_term\":T", "\"raft_term\":0");
    let mut value: serde_json::Value = match serde_json::from_str(json.trim()) {
        Ok(value) => value,
        Err(_) => return json,
    };
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                for field in [
                    "dbSize",
                    "dbSizeInUse",
                    "raftIndex",
                    "raftTerm",
                    "raftAppliedIndex",
                    "raft_term",
                ] {
                    map.remove(field);
                }
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut value);
    value.to_string()
}

/// The etcdctl maintenance session; outputs with paths and timings set aside.
fn maintenance_session(endpoint: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("snap.db");
    let snapshot = snapshot.to_str().unwrap();
    let mut out = Vec::new();
    for args in [
        "put a 1",
        "put b 2",
        "put a 3",
        "del b",
        "put c 4",
        "compaction 3",
    ] {
        out.push(run(endpoint, &step(args)));
    }
    let status = run(endpoint, &step("endpoint status -w json"));
    let member = status
        .split("\"member_id\":")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|id| id.parse::<u64>().ok())
        .expect("a member id");
    for args in [
        "endpoint status -w json",
        "endpoint hashkv -w json",
        "endpoint hashkv --rev 4 -w json",
        "endpoint hashkv --rev 2",
        "endpoint hashkv --rev 100",
        "alarm list",
        "alarm disarm",
        "defrag",
        "endpoint hashkv -w json",
        &format!("move-leader {member:x}"),
        "move-leader 1234",
        "endpoint health",
        &format!("snapshot save {snapshot}"),
    ] {
        let said = run(endpoint, &step(args));
        let said = said.replace(snapshot, "SNAPSHOT");
        let said = match said.find("successfully committed proposal: took = ") {
            Some(at) => said[..at].to_string(),
            None => said,
        };
        let said = said
            .lines()
            .map(without_implementation)
            .collect::<Vec<_>>()
            .join("\n");
        out.push(format!(
            "$ etcdctl {}\n{said}",
            args.replace(snapshot, "SNAPSHOT")
        ));
    }
    // The snapshot's files differ (keelson keeps an index bucket beside etcd's); its revision
    // does not.
    let status = keelson_testkit::etcd::snapshot_status(Path::new(snapshot));
    out.push(format!("snapshot at revision {}", status.revision));
    out
}

#[test]
fn etcdctl_maintenance_commands_see_keelson_as_they_see_etcd() {
    let want = same_output_as_etcd(maintenance_session);
    assert!(want.iter().any(|w| w.contains("\"hash\":")), "{want:#?}");
    assert!(
        want.iter()
            .any(|w| w.contains("required revision has been compacted"))
    );
    assert!(want.iter().any(|w| w.contains("Leadership transferred")));
    assert!(want.iter().any(|w| w.contains("bad leader transferee")));
    assert_eq!(want.last().unwrap(), "snapshot at revision 6");
}

/// A history with puts, overwrites, deletes, a txn, a lease and two compactions; HashKV at every
/// revision and at 0, its errors included.
async fn hash_steps(endpoint: String) -> Vec<String> {
    let mut c = connect(&endpoint).await;
    let options = etcd_client::LeaseGrantOptions::new().with_id(77);
    c.lease_grant(600, Some(options)).await.unwrap();
    for i in 0..40 {
        let key = format!("k{}", i % 13);
        let options = (i % 5 == 0).then(|| etcd_client::PutOptions::new().with_lease(77));
        c.put(key, format!("v{i}"), options).await.unwrap();
        if i % 7 == 3 {
            c.delete(format!("k{}", (i + 4) % 13), None).await.unwrap();
        }
    }
    let txn = Txn::new()
        .when([Compare::version("k1", CompareOp::Greater, 0)])
        .and_then([TxnOp::put("t1", "a", None), TxnOp::delete("k2", None)]);
    c.txn(txn).await.unwrap();
    c.compact(20, None).await.unwrap();
    c.put("k5", "after", None).await.unwrap();
    c.compact(30, None).await.unwrap();
    c.lease_revoke(77).await.unwrap();
    let current = c.get("k", None).await.unwrap().header().unwrap().revision();
    let mut out = Vec::new();
    for revision in (0..=current + 1).chain([-1]) {
        let r = c.hash_kv(revision).await;
        out.push(said(r, |r| {
            format!(
                "hashkv {revision}: {} compacted {} at {}",
                r.hash(),
                r.compact_version(),
                r.header().unwrap().revision()
            )
        }));
    }
    out
}

#[test]
fn hashkv_is_etcds_at_every_revision_of_the_same_history() {
    let want = common::same_answers_as_etcd(&[], hash_steps);
    assert!(want[0].starts_with("hashkv 0: "), "{want:#?}");
    assert!(want[1].contains("has been compacted"), "{want:#?}");
    assert!(
        want.iter().any(|w| w.contains("future revision")),
        "{want:#?}"
    );
}

/// The quota of the NOSPACE tests: a few dozen values of [`VALUE`] bytes.
const QUOTA: &str = "--quota-backend-bytes=1048576";
/// Bytes per value written to fill the quota.
const VALUE: usize = 20_000;

/// Puts into one key until the member refuses with `database space exceeded`; the puts done.
async fn fill(c: &mut Client) -> usize {
    let value = "x".repeat(VALUE);
    for done in 0.. {
        if let Err(e) = c.put("big", value.clone(), None).await {
            assert!(e.to_string().contains("database space exceeded"), "{e}");
            return done;
        }
    }
    unreachable!("the loop ends with a refusal")
}

/// What the alarms are, with this member's id said as "this member".
async fn alarms(c: &mut Client) -> String {
    let me = c.status().await.unwrap().header().unwrap().member_id();
    let r = c.alarm(AlarmAction::Get, AlarmType::None, None).await;
    said(r, |r| {
        let alarms: Vec<String> = r
            .alarms()
            .iter()
            .map(|a| {
                let who = if a.member_id() == me {
                    "this member".to_string()
                } else {
                    a.member_id().to_string()
                };
                format!("{:?} of {who}", a.alarm())
            })
            .collect();
        format!("alarms {alarms:?}")
    })
}

/// Every call's answer once the quota is full, then what makes room again.
async fn nospace_steps(endpoint: String) -> Vec<String> {
    let mut c = connect(&endpoint).await;
    assert!(fill(&mut c).await > 5);
    let mut out = vec![alarms(&mut c).await];
    let ok = |what: &str| format!("{what} ok");
    let r = c.put("small", "v", None).await;
    out.push(said(r, |_| ok("put")));
    let r = c
        .txn(Txn::new().and_then([TxnOp::put("small", "v", None)]))
        .await;
    out.push(said(r, |_| ok("txn with a put")));
    let r = c.txn(Txn::new().and_then([TxnOp::get("big", None)])).await;
    out.push(said(r, |_| ok("txn of gets")));
    let r = c.lease_grant(60, None).await;
    out.push(said(r, |_| ok("lease grant")));
    let r = c.get("big", None).await;
    out.push(said(r, |r| format!("get {} keys", r.kvs().len())));
    let r = c.delete("nothing", None).await;
    out.push(said(r, |_| ok("delete")));
    let errors = c.status().await.unwrap().errors().len();
    out.push(format!("status errors {errors}"));
    let current = c
        .get("big", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let r = c.compact(current, None).await;
    out.push(said(r, |_| ok("compact")));
    let r = c.defragment().await;
    out.push(said(r, |_| ok("defragment")));
    // Still alarmed: writes wait for the disarm.
    let r = c.put("small", "v", None).await;
    out.push(said(r, |_| ok("put")));
    let me = c.status().await.unwrap().header().unwrap().member_id();
    let mut disarm = AlarmOptions::new();
    disarm.with_member(me);
    let r = c
        .alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(disarm))
        .await;
    out.push(said(r, |r| format!("disarmed {}", r.alarms().len())));
    out.push(alarms(&mut c).await);
    let r = c.put("small", "v", None).await;
    out.push(said(r, |_| ok("put")));
    // Alarms for members that do not exist are taken as etcd takes them.
    let mut stranger = AlarmOptions::new();
    stranger.with_member(12345);
    let r = c
        .alarm(AlarmAction::Activate, AlarmType::Corrupt, Some(stranger))
        .await;
    out.push(said(r, |r| format!("raised {}", r.alarms().len())));
    out.push(alarms(&mut c).await);
    let r = c.put("small", "v", None).await;
    out.push(said(r, |_| ok("put")));
    let r = c.get("small", None).await;
    out.push(said(r, |r| format!("get {} keys", r.kvs().len())));
    let mut stranger = AlarmOptions::new();
    stranger.with_member(12345);
    let r = c
        .alarm(AlarmAction::Deactivate, AlarmType::Corrupt, Some(stranger))
        .await;
    out.push(said(r, |r| format!("disarmed {}", r.alarms().len())));
    out
}

#[test]
fn nospace_answers_as_etcd_and_compaction_defrag_and_disarm_make_room() {
    let want = common::same_answers_as_etcd(&[QUOTA], nospace_steps);
    assert_eq!(want[0], "alarms [\"Nospace of this member\"]");
    assert!(want[1].contains("database space exceeded"), "{want:#?}");
    assert!(
        want.iter().any(|w| w.contains("corrupt cluster")),
        "{want:#?}"
    );
}

#[test]
fn a_nospace_alarm_outlives_kill_9() {
    let mut keelson = Server::start(keelson_binary(), Ports::free(), &[QUOTA]);
    let endpoint = keelson.endpoint();
    runtime().block_on(async {
        let mut c = connect(&endpoint).await;
        fill(&mut c).await;
    });
    keelson.kill();
    keelson.launch();
    runtime().block_on(async {
        let mut c = connect(&endpoint).await;
        assert_eq!(alarms(&mut c).await, "alarms [\"Nospace of this member\"]");
        let refused = c.put("small", "v", None).await.unwrap_err();
        assert!(refused.to_string().contains("database space exceeded"));
    });
    let (status, body) = http_get(&endpoint, "/health");
    assert_eq!(
        (status.as_str(), body.as_str()),
        (
            "503",
            "{\"health\":\"false\",\"reason\":\"ALARM NOSPACE\"}\n"
        )
    );
}

/// Writes a store worth defragmenting: many values, then most of them overwritten, deleted and
/// compacted away.
async fn churn(c: &mut Client, keys: usize) {
    let value = "v".repeat(1000);
    for round in 0..2 {
        let tasks: Vec<_> = (0..16)
            .map(|w| {
                let (mut c, value) = (c.clone(), value.clone());
                tokio::spawn(async move {
                    for i in (w..keys).step_by(16) {
                        c.put(format!("churn/{i}"), format!("{round}{value}"), None)
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    }
    let options = etcd_client::DeleteOptions::new().with_prefix();
    let deleted = c.delete("churn/", Some(options)).await.unwrap();
    let revision = deleted.header().unwrap().revision();
    c.compact(
        revision,
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await
    .unwrap();
}

#[test]
fn a_defrag_under_32_writers_and_32_readers_loses_nothing_and_fails_no_read() {
    let keelson = Server::start(keelson_binary(), Ports::free(), &[]);
    let endpoint = keelson.endpoint();
    let acked = Acknowledged::default();
    let reads_failed = Arc::new(AtomicUsize::new(0));
    let reads_done = Arc::new(AtomicUsize::new(0));
    let (before, after) = runtime().block_on(async {
        let mut c = connect(&endpoint).await;
        churn(&mut c, 20_000).await;
        let before = c.status().await.unwrap().db_size();
        let marked = c.put("marker", "1", None).await.unwrap();
        let marked = marked.header().unwrap().revision();
        let hash_before = c.hash_kv(marked).await.unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut readers = Vec::new();
        for r in 0..32 {
            let (mut c, stop) = (c.clone(), stop.clone());
            let (failed, done) = (reads_failed.clone(), reads_done.clone());
            readers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("during/w{}/0", r % 32);
                    match c.get(key, None).await {
                        Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
        let writers = {
            let (endpoint, acked) = (endpoint.clone(), acked.clone());
            let stop = stop.clone();
            tokio::task::spawn_blocking(move || {
                // Writers that stop when told to: each put's key is recorded once acknowledged.
                runtime().block_on(async move {
                    let c = connect(&endpoint).await;
                    let tasks: Vec<_> = (0..32)
                        .map(|w| {
                            let (mut c, acked, stop) = (c.clone(), acked.clone(), stop.clone());
                            tokio::spawn(async move {
                                let mut i = 0;
                                while !stop.load(Ordering::Relaxed) {
                                    let key = format!("during/w{w}/{i}");
                                    c.put(key.clone(), "v", None).await.unwrap();
                                    acked.lock().unwrap().push(key);
                                    i += 1;
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.unwrap();
                    }
                })
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.defragment().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        writers.await.unwrap();
        for reader in readers {
            reader.await.unwrap();
        }
        // The history the defragmentation copied hashes as it did before it.
        let hash_after = c.hash_kv(marked).await.unwrap();
        assert_eq!(hash_after.hash(), hash_before.hash());
        (before, c.status().await.unwrap().db_size())
    });
    assert_eq!(reads_failed.load(Ordering::Relaxed), 0);
    assert!(reads_done.load(Ordering::Relaxed) > 100);
    assert!(after < before / 2, "{before} -> {after}");
    assert_none_lost(endpoint, &acked, 100);
}

#[test]
fn a_defrag_cut_by_kill_9_loses_nothing() {
    let mut keelson = Server::start(keelson_binary(), Ports::free(), &[]);
    let endpoint = keelson.endpoint();
    runtime().block_on(async {
        let mut c = connect(&endpoint).await;
        churn(&mut c, 30_000).await;
    });
    let acked = Acknowledged::default();
    let writers = write_until_refused(endpoint.clone(), "w".into(), 8, acked.clone());
    std::thread::sleep(Duration::from_millis(200));
    let defrag = {
        let endpoint = endpoint.clone();
        std::thread::spawn(move || {
            runtime().block_on(async move { connect(&endpoint).await.defragment().await })
        })
    };
    std::thread::sleep(Duration::from_millis(30));
    keelson.kill();
    writers.join().unwrap();
    let _ = defrag.join().unwrap();
    keelson.launch();
    assert_none_lost(endpoint.clone(), &acked, 50);
    // And it defragments on the next try.
    runtime().block_on(async {
        connect(&endpoint).await.defragment().await.unwrap();
    });
}

/// Raises alarm `kind` for the member at `endpoint`; a client of it.
async fn raise(endpoint: &str, kind: AlarmType) -> Client {
    let mut c = connect(endpoint).await;
    let me = c.status().await.unwrap().header().unwrap().member_id();
    let mut options = AlarmOptions::new();
    options.with_member(me);
    c.alarm(AlarmAction::Activate, kind, Some(options))
        .await
        .unwrap();
    c
}

#[test]
fn health_endpoints_answer_as_etcd_3_5_does() {
    let metrics_port = keelson_testkit::server::free_port();
    let metrics_url = format!("--listen-metrics-urls=http://127.0.0.1:{metrics_port}");
    let keelson = Server::start(keelson_binary(), Ports::free(), &[&metrics_url]);
    let endpoint = keelson.endpoint();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let get = |path: &str| http_get(&endpoint, path);
    assert_eq!(
        get("/health"),
        ("200".into(), "{\"health\":\"true\",\"reason\":\"\"}".into())
    );
    assert_eq!(get("/livez"), ("200".into(), "ok\n".into()));
    assert_eq!(get("/readyz"), ("200".into(), "ok\n".into()));
    let verbose = "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\n\
                   [+]non_learner ok\nok\n";
    assert_eq!(get("/readyz?verbose"), ("200".into(), verbose.into()));
    assert_eq!(
        get("/readyz?verbose&exclude=linearizable_read&exclude=non_learner"),
        (
            "200".into(),
            "[+]data_corruption ok\n[+]serializable_read ok\nok\n".into()
        )
    );
    assert_eq!(
        get("/readyz/linearizable_read"),
        ("200".into(), "ok\n".into())
    );
    assert_eq!(get("/readyz/nope").0, "404");
    // The metrics listener answers metrics and health, not the client API's /version.
    let on_metrics = |path: &str| http_get(&metrics, path);
    assert_eq!(on_metrics("/readyz").1, "ok\n");
    assert!(
        on_metrics("/metrics")
            .1
            .contains("etcd_server_has_leader 1")
    );
    assert_eq!(on_metrics("/version").0, "404");
    // Alarms: NOSPACE makes /health fail unless excluded; CORRUPT fails readyz too.
    runtime().block_on(raise(&endpoint, AlarmType::Nospace));
    assert_eq!(
        get("/health"),
        (
            "503".into(),
            "{\"health\":\"false\",\"reason\":\"ALARM NOSPACE\"}\n".into()
        )
    );
    assert_eq!(get("/health?exclude=NOSPACE").0, "200");
    assert_eq!(get("/health?serializable=true").0, "503");
    assert_eq!(get("/readyz").0, "200");
    runtime().block_on(async {
        let mut c = raise(&endpoint, AlarmType::Corrupt).await;
        let refused = c.delete("k", None).await.unwrap_err().to_string();
        assert!(refused.contains("corrupt cluster"), "{refused}");
    });
    let (status, body) = get("/readyz");
    assert_eq!(status, "503");
    assert!(
        body.contains("[-]data_corruption failed: alarm activated: CORRUPT\n"),
        "{body}"
    );
    let counted = common::metric(
        &endpoint,
        "etcd_server_healthchecks_total{name=\"data_corruption\",status=\"error\",type=\"readyz\"}",
    );
    assert_eq!(counted, Some(1.0));
}

#[test]
fn grpc_health_answers_as_etcds() {
    use keelson_proto::health::{HealthCheckRequest, HealthCheckResponse};
    async fn check(endpoint: String, service: &str) -> String {
        let mut grpc = common::grpc(&endpoint).await;
        let path = http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
        let codec =
            keelson_proto::codec::ObservedCodec::<HealthCheckRequest, HealthCheckResponse>::default(
            );
        let request = HealthCheckRequest {
            service: service.into(),
        };
        match grpc.unary(tonic::Request::new(request), path, codec).await {
            Ok(r) => format!("status {}", r.into_inner().status),
            Err(s) => format!("error {:?} {}", s.code(), s.message()),
        }
    }
    let want = common::same_answers_as_etcd(&[], |endpoint| async move {
        vec![
            check(endpoint.clone(), "").await,
            check(endpoint, "etcdserverpb.KV").await,
        ]
    });
    assert_eq!(want[0], "status 1");
}

#[test]
fn etcdctl_check_perf_passes_against_keelson() {
    let keelson = Server::start(keelson_binary(), Ports::free(), &[]);
    // `--load=s`: 50 clients for a minute; etcdctl says PASS or FAIL for throughput, the slowest
    // request and the spread of latencies, and exits non-zero on any FAIL.
    let said = run(&keelson.endpoint(), &step("check perf --load=s"));
    assert!(said.starts_with("status Some(0)"), "{said}");
    for verdict in ["PASS: Throughput", "PASS: Slowest request", "PASS: Stddev"] {
        assert!(said.contains(verdict), "{said}");
    }
    assert!(!said.contains("FAIL"), "{said}");
}

#[test]
fn periodic_auto_compaction_compacts_the_revision_of_a_period_ago() {
    let keelson = Server::start(
        keelson_binary(),
        Ports::free(),
        &[
            "--auto-compaction-mode=periodic",
            "--auto-compaction-retention=2s",
        ],
    );
    let endpoint = keelson.endpoint();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    runtime().block_on(async {
        let mut c = connect(&endpoint).await;
        let first = c
            .put("k", "0", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        loop {
            c.put("k", "more", None).await.unwrap();
            let compacted = common::metric(&endpoint, "etcd_debugging_mvcc_compact_revision");
            if compacted.is_some_and(|r| r >= first as f64) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no compaction: {compacted:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let options = etcd_client::GetOptions::new().with_revision(first - 1);
        let refused = c.get("k", Some(options)).await.unwrap_err().to_string();
        assert!(
            refused.contains("required revision has been compacted"),
            "{refused}"
        );
    });
    assert!(keelson.log().contains("starting auto periodic compaction"));
}
