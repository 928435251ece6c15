//! The `etcd-client` crate against the real keelson binary: every KV call (count_only included,
//! which etcdctl 3.4 cannot send), many concurrent clients on many connections, etcd's errors for
//! bad input, and durability — writers killed with SIGKILL at random moments lose no acknowledged
//! write, and the page file passes `keelson db check` afterwards.

use std::path::Path;
use std::process::Command;

use etcd_client::{
    Client, Compare, CompareOp, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
};
use keelson_testkit::server::{Ports, Server};

mod common;

fn keelson() -> Server {
    Server::start(Path::new(env!("CARGO_BIN_EXE_keelson")), Ports::free(), &[])
}

use common::runtime;

async fn connect(server: &Server) -> Client {
    Client::connect([server.endpoint()], None).await.unwrap()
}

fn code_and_message(e: etcd_client::Error) -> (tonic::Code, String) {
    match e {
        etcd_client::Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("not a gRPC status: {other}"),
    }
}

#[test]
fn every_kv_call_and_option() {
    let mut server = keelson();
    runtime().block_on(async {
        let mut c = connect(&server).await;
        for i in 0..10 {
            c.put(format!("k{i}"), format!("v{i}"), None).await.unwrap();
        }
        let prev = c
            .put("k0", "again", Some(PutOptions::new().with_prev_key()))
            .await
            .unwrap();
        assert_eq!(prev.prev_key().unwrap().value(), b"v0");

        let all = GetOptions::new().with_prefix();
        let counted = c
            .get("k", Some(all.clone().with_count_only()))
            .await
            .unwrap();
        assert_eq!((counted.count(), counted.kvs().len()), (10, 0));
        let limited = c
            .get("k", Some(all.clone().with_limit(3).with_keys_only()))
            .await
            .unwrap();
        assert_eq!((limited.count(), limited.kvs().len()), (10, 3));
        assert!(limited.more());
        assert!(limited.kvs().iter().all(|kv| kv.value().is_empty()));
        let sorted = c
            .get(
                "k",
                Some(
                    all.clone()
                        .with_sort(SortTarget::Mod, SortOrder::Descend)
                        .with_limit(1),
                ),
            )
            .await
            .unwrap();
        assert_eq!(sorted.kvs()[0].key(), b"k0");
        let old = c
            .get("k0", Some(GetOptions::new().with_revision(2)))
            .await
            .unwrap();
        assert_eq!(old.kvs()[0].value(), b"v0");
        assert_eq!(old.header().unwrap().revision(), 12);
        let serializable = c
            .get("k1", Some(GetOptions::new().with_serializable()))
            .await
            .unwrap();
        assert_eq!(serializable.kvs()[0].value(), b"v1");

        let txn = Txn::new()
            .when([Compare::version("k1", CompareOp::Equal, 1)])
            .and_then([
                TxnOp::put("k1", "txn", None),
                TxnOp::get("k1", None),
                TxnOp::delete("k2", None),
            ])
            .or_else([TxnOp::get("k1", None)]);
        let done = c.txn(txn).await.unwrap();
        assert!(done.succeeded());
        assert_eq!(done.header().unwrap().revision(), 13);
        let read_only = Txn::new()
            .when([Compare::value("k1", CompareOp::Equal, "nope")])
            .or_else([TxnOp::get("k1", None)]);
        let answered = c.txn(read_only).await.unwrap();
        assert!(!answered.succeeded());
        assert_eq!(answered.header().unwrap().revision(), 13);

        let deleted = c
            .delete("k", Some(etcd_client::DeleteOptions::new().with_prefix()))
            .await
            .unwrap();
        assert_eq!(deleted.deleted(), 9);
        c.compact(10, None).await.unwrap();
        let compacted = c
            .get("k0", Some(GetOptions::new().with_revision(5)))
            .await
            .unwrap_err();
        assert_eq!(
            code_and_message(compacted),
            (
                tonic::Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted".into()
            )
        );
    });
    assert!(server.terminate().success(), "{}", server.log());
}

#[test]
fn bad_input_gets_etcds_errors_and_the_server_goes_on() {
    let mut server = keelson();
    runtime().block_on(async {
        let mut c = connect(&server).await;
        let cases: Vec<(etcd_client::Error, tonic::Code, &str)> = vec![
            (
                c.put("", "v", None).await.unwrap_err(),
                tonic::Code::InvalidArgument,
                "etcdserver: key is not provided",
            ),
            (
                c.put("big", vec![b'x'; 1_600_000], None).await.unwrap_err(),
                tonic::Code::InvalidArgument,
                "etcdserver: request is too large",
            ),
            (
                c.put("k", "v", Some(PutOptions::new().with_lease(77)))
                    .await
                    .unwrap_err(),
                tonic::Code::NotFound,
                "etcdserver: requested lease not found",
            ),
            (
                c.get("k", Some(GetOptions::new().with_revision(99)))
                    .await
                    .unwrap_err(),
                tonic::Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
            (
                c.txn(
                    Txn::new().and_then(
                        (0..129)
                            .map(|i| TxnOp::put(format!("k{i}"), "v", None))
                            .collect::<Vec<_>>(),
                    ),
                )
                .await
                .unwrap_err(),
                tonic::Code::InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
            (
                c.txn(
                    Txn::new().and_then([TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]),
                )
                .await
                .unwrap_err(),
                tonic::Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request",
            ),
        ];
        for (error, code, message) in cases {
            assert_eq!(code_and_message(error), (code, message.to_string()));
        }
        // Garbage on a socket closes that connection only.
        use std::io::{Read, Write};
        let mut raw = std::net::TcpStream::connect(server.endpoint()).unwrap();
        raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff garbage garbage")
            .unwrap();
        let mut sink = Vec::new();
        let _ = raw.read_to_end(&mut sink);
        c.put("still", "here", None).await.unwrap();
        assert_eq!(
            c.get("still", None).await.unwrap().kvs()[0].value(),
            b"here"
        );
    });
    assert!(server.terminate().success(), "{}", server.log());
}

#[test]
fn concurrent_clients_on_many_connections_all_land() {
    let mut server = keelson();
    let endpoint = server.endpoint();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let endpoint = endpoint.clone();
            std::thread::spawn(move || {
                runtime().block_on(async move {
                    let mut c = Client::connect([endpoint], None).await.unwrap();
                    let tasks: Vec<_> = (0..16)
                        .map(|w| {
                            let mut c = c.clone();
                            tokio::spawn(async move {
                                for i in 0..25 {
                                    let key = format!("c/{t}/{w}/{i}");
                                    c.put(key.clone(), "v", None).await.unwrap();
                                    let got = c.get(key, None).await.unwrap();
                                    assert_eq!(got.kvs().len(), 1, "a read sees its own write");
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.unwrap();
                    }
                    let all = c
                        .get(format!("c/{t}/"), Some(GetOptions::new().with_prefix()))
                        .await
                        .unwrap();
                    assert_eq!(all.count(), 16 * 25);
                })
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    runtime().block_on(async {
        let mut c = connect(&server).await;
        let all = c
            .get(
                "c/",
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .unwrap();
        assert_eq!(all.count(), 8 * 16 * 25);
        assert_eq!(all.header().unwrap().revision(), 1 + 8 * 16 * 25);
    });
    assert!(server.terminate().success(), "{}", server.log());
}

#[test]
fn kill_nine_loses_no_acknowledged_write() {
    let mut server = keelson();
    let acknowledged = common::Acknowledged::default();
    for round in 0..5u64 {
        let writers = common::write_until_refused(
            server.endpoint(),
            format!("r{round}"),
            32,
            acknowledged.clone(),
        );
        // A different moment each round, some right after a page-file sync, some between.
        std::thread::sleep(std::time::Duration::from_millis(150 + 70 * round));
        server.kill();
        writers.join().unwrap();
        server.launch();
    }
    common::assert_none_lost(server.endpoint(), &acknowledged, 100);
    assert!(server.terminate().success(), "{}", server.log());
    let db = server.data_dir().join("member/snap/db");
    let check = Command::new(env!("CARGO_BIN_EXE_keelson"))
        .args(["db", "check"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "keelson db check: {}",
        String::from_utf8_lossy(&check.stdout)
    );
}

#[test]
fn flags_are_read_as_etcd_reads_them() {
    // One CPU: the raft core and the serving core share an executor. Go's single-dash flags, an
    // ETCD_* variable, and an etcd flag keelson does not act on yet.
    let mut server = Server::start_with_env(
        Path::new(env!("CARGO_BIN_EXE_keelson")),
        Ports::free(),
        &[
            "--cores",
            "1",
            "-max-request-bytes",
            "2048",
            "--logger",
            "zap",
        ],
        &[("ETCD_MAX_TXN_OPS", "3")],
    );
    runtime().block_on(async {
        let mut c = connect(&server).await;
        let ops = |n: usize| {
            Txn::new().and_then(
                (0..n)
                    .map(|i| TxnOp::put(format!("t{i}"), "v", None))
                    .collect::<Vec<_>>(),
            )
        };
        c.txn(ops(3)).await.unwrap();
        let (code, message) = code_and_message(c.txn(ops(4)).await.unwrap_err());
        assert_eq!(
            (code, message.as_str()),
            (
                tonic::Code::InvalidArgument,
                "etcdserver: too many operations in txn request"
            )
        );
        let (_, message) =
            code_and_message(c.put("big", vec![b'x'; 3000], None).await.unwrap_err());
        assert_eq!(message, "etcdserver: request is too large");
        c.put("small", vec![b'x'; 1000], None).await.unwrap();
    });
    assert!(server.terminate().success(), "{}", server.log());
    assert!(
        server
            .log()
            .contains("--logger is an etcd flag keelson does not act on yet"),
        "{}",
        server.log()
    );
}

#[test]
fn an_unknown_flag_is_refused_as_etcd_refuses_it() {
    let run = |binary: &str| {
        let out = Command::new(binary).arg("--no-such-flag").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        (
            out.status.code(),
            stderr.lines().next().unwrap_or_default().to_string(),
        )
    };
    let etcd = run("/usr/bin/etcd");
    assert_eq!(
        etcd,
        (
            Some(2),
            "flag provided but not defined: -no-such-flag".to_string()
        )
    );
    assert_eq!(run(env!("CARGO_BIN_EXE_keelson")), etcd);
}

#[test]
fn a_connection_that_never_speaks_is_closed() {
    use std::io::Read;
    let mut server = keelson();
    let mut silent = std::net::TcpStream::connect(server.endpoint()).unwrap();
    // Generous: the server gives a new connection 10 s for its first bytes.
    silent
        .set_read_timeout(Some(std::time::Duration::from_secs(120)))
        .unwrap();
    let mut byte = [0u8; 1];
    let read = silent.read(&mut byte);
    assert!(
        matches!(read, Ok(0)),
        "the server should close a silent connection: {read:?}"
    );
    assert!(server.terminate().success(), "{}", server.log());
}

/// kubeadm's etcd command line (its static pod), certificates and all, with etcd 3.5/3.6 spellings
/// of some flags beside: keelson starts on it, serves, answers on the metrics URL, and logs etcd's
/// start-up lines.
#[test]
fn kubeadms_command_line_starts_it_with_etcds_start_up_lines() {
    let metrics = keelson_testkit::server::free_port();
    let metrics_url = format!("--listen-metrics-urls=http://127.0.0.1:{metrics}");
    let mut server = Server::start(
        Path::new(env!("CARGO_BIN_EXE_keelson")),
        Ports::free(),
        &[
            "--cert-file=/etc/kubernetes/pki/etcd/server.crt",
            "--client-cert-auth=true",
            "--experimental-initial-corrupt-check=true",
            "--experimental-watch-progress-notify-interval=5s",
            "--key-file=/etc/kubernetes/pki/etcd/server.key",
            &metrics_url,
            "--peer-cert-file=/etc/kubernetes/pki/etcd/peer.crt",
            "--peer-client-cert-auth=true",
            "--peer-key-file=/etc/kubernetes/pki/etcd/peer.key",
            "--peer-trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt",
            "--snapshot-count=10000",
            "--trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt",
            "--feature-gates=InitialCorruptCheck=true",
            "--corrupt-check-time=5m",
            "--max-concurrent-streams=1000",
            "--auth-token-ttl=300",
            "--log-format=json",
        ],
    );
    let (status, body) = common::http_get(&format!("127.0.0.1:{metrics}"), "/health");
    assert_eq!(status, "200", "{body}");
    assert!(server.terminate().success(), "{}", server.log());
    let log = server.log();
    for line in [
        "published {Name:node ClientURLs:[http://127.0.0.1:",
        "enabled capabilities for version 3.4",
        "ready to serve client requests",
        "--cert-file is an etcd flag keelson does not act on yet",
    ] {
        assert!(log.contains(line), "no {line:?} in:\n{log}");
    }
}

#[test]
fn a_client_that_stops_answering_pings_is_disconnected() {
    use std::io::{Read, Write};
    let mut server = Server::start(
        Path::new(env!("CARGO_BIN_EXE_keelson")),
        Ports::free(),
        &[
            "--grpc-keepalive-interval=1s",
            "--grpc-keepalive-timeout=1s",
        ],
    );
    // An HTTP/2 client that says hello and then never reads or answers anything again.
    let mut silent = std::net::TcpStream::connect(server.endpoint()).unwrap();
    silent
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();
    silent
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut drained = Vec::new();
    let read = silent.read_to_end(&mut drained);
    assert!(
        read.is_ok(),
        "the server should close the connection: {read:?}"
    );
    // Among the frames it sent: a PING (type 6) that went unanswered, then a GOAWAY (type 7).
    let mut kinds = Vec::new();
    let mut at = 0;
    while at + 9 <= drained.len() {
        let len = u32::from_be_bytes([0, drained[at], drained[at + 1], drained[at + 2]]) as usize;
        kinds.push(drained[at + 3]);
        at += 9 + len;
    }
    let ping = kinds.iter().position(|&k| k == 6);
    let goaway = kinds.iter().position(|&k| k == 7);
    assert!(ping.is_some() && goaway > ping, "frame types {kinds:?}");
    assert!(server.terminate().success(), "{}", server.log());
}

#[test]
fn a_write_not_applied_within_the_request_timeout_is_answered_request_timed_out() {
    // The raft core stalls 8 s applying a put of "slow"; the request timeout is 5 s plus two
    // election timeouts of 500 ms.
    let server = Server::start_with_env(
        Path::new(env!("CARGO_BIN_EXE_keelson")),
        Ports::free(),
        &["--election-timeout=500"],
        &[("KEELSON_TEST_STALL", "slow:8000")],
    );
    runtime().block_on(async {
        let mut c = connect(&server).await;
        let started = std::time::Instant::now();
        let (code, message) = code_and_message(c.put("slow", "v", None).await.unwrap_err());
        assert_eq!(
            (code, message.as_str()),
            (tonic::Code::Unavailable, "etcdserver: request timed out")
        );
        assert!(started.elapsed() >= std::time::Duration::from_secs(5));
        // Timed out is not failed: once the stall ends, the write is there.
        let got = c.get("slow", None).await.unwrap();
        assert_eq!(got.kvs()[0].value(), b"v");
    });
}

/// etcd 3.5 and 3.6 spellings (graduated experimental flags, new ones) that command lines written
/// for those etcds pass.
const NEWER_FLAGS: &[&str] = &[
    "--feature-gates=InitialCorruptCheck=true",
    "--corrupt-check-time=5m",
    "--compact-hash-check-time=1m",
    "--snapshot-catchup-entries=5000",
    "--watch-progress-notify-interval=10m",
    "--log-format=json",
    "--max-learners=1",
    "--compaction-batch-limit=1000",
    "--compaction-sleep-interval=10ms",
    "--bootstrap-defrag-threshold-megabytes=0",
    "--memory-mlock=false",
    "--downgrade-check-time=5s",
    "--warning-apply-duration=100ms",
    "--warning-unary-request-duration=300ms",
    "--experimental-memory-mlock=false",
    "--experimental-txn-mode-write-with-shared-buffer=true",
    "--experimental-stop-grpc-service-on-defrag=false",
    "--experimental-enable-lease-checkpoint-persist=true",
    "--experimental-lease-checkpoint-interval=5m",
    "--listen-client-http-urls=http://127.0.0.1:2378",
    "--tls-min-version=TLS1.2",
    "--tls-max-version=TLS1.3",
    "--client-cert-file=/c.pem",
    "--client-key-file=/k.pem",
    "--peer-client-cert-file=/c.pem",
    "--peer-client-key-file=/k.pem",
    "--self-signed-cert-validity=1",
    "--v2-deprecation=not-yet",
    "--enable-distributed-tracing=false",
    "--distributed-tracing-address=localhost:4317",
    "--discovery-endpoints=http://127.0.0.1:2379",
    "--discovery-token=t",
    "--socket-reuse-port=true",
    "--socket-reuse-address=true",
    "--raft-read-timeout=5s",
    "--raft-write-timeout=5s",
];

#[test]
fn every_flag_of_etcds_help_and_newer_etcds_spellings_are_accepted() {
    let help = Command::new("/usr/bin/etcd")
        .arg("--help")
        .output()
        .unwrap();
    let help =
        String::from_utf8_lossy(&help.stdout).into_owned() + &String::from_utf8_lossy(&help.stderr);
    // Each flag with the default etcd's help shows for it.
    let mut flags: Vec<String> = help
        .lines()
        .filter_map(|l| l.trim().strip_prefix("--"))
        .filter_map(|l| {
            let (name, default) = l.split_once(' ')?;
            let default = default.trim().trim_matches('\'');
            let value = match default {
                "math.MaxUint32" => "4294967295",
                "${name}.etcd" => "default.etcd",
                other => other,
            };
            Some(format!("--{name}={value}"))
        })
        .collect();
    assert!(flags.len() > 70, "{flags:?}");
    flags.extend(NEWER_FLAGS.iter().map(|f| f.to_string()));
    for flag in &flags {
        let out = Command::new(env!("CARGO_BIN_EXE_keelson"))
            .args(["--version", flag])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{flag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
