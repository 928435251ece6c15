//! etcd's Lease service against the real binary: the same steps through the `etcd-client` crate
//! and through `etcdctl` against keelson and a real etcd 3.4 started with the same flags, answers
//! compared (grants with client-chosen ids, the minimum and the largest TTL, puts with and
//! without a lease, time to live with keys, the lease list, keep-alives of live and unknown leases,
//! revokes seen by a watcher as one revision of deletes, and expiry). Then keelson alone: a hundred
//! leases kept alive on streams of their own outlive their TTL, then expire, and a watcher sees
//! every key go; two hundred leases renewed on one stream, as etcd's own client multiplexes them
//! (the `etcd-client` crate opens a stream per lease, so that test speaks gRPC itself), outlive
//! their TTL; a lease's deadline after kill -9 and a restart is no later than etcd's rule (time
//! left at the last checkpoint plus an election timeout) gives.

use std::path::Path;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, EventType, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, WatchOptions,
};
use keelson_testkit::server::{Ports, Server};

mod common;

use common::etcdctl::{run, same_output_as_etcd, step};
use common::{runtime, said};

/// The next response of `w` that deletes (the puts before it passed over).
async fn deletes(w: &mut etcd_client::WatchStream) -> etcd_client::WatchResponse {
    loop {
        let r = tokio::time::timeout(Duration::from_secs(15), w.message())
            .await
            .expect("a delete comes")
            .unwrap()
            .unwrap();
        if r.events()
            .iter()
            .any(|e| e.event_type() == EventType::Delete)
        {
            return r;
        }
    }
}

/// The steps, against the server at `endpoint`; every answer, in order.
async fn steps(endpoint: String) -> Vec<String> {
    let mut c = Client::connect([endpoint], None).await.unwrap();
    let mut out = Vec::new();
    let grant = |id: i64| Some(LeaseGrantOptions::new().with_id(id));
    for (ttl, id) in [
        (100, 7777),
        (100, 7777),
        (1, 7778),
        (-5, 7779),
        (9_000_000_001, 7780),
    ] {
        let r = c.lease_grant(ttl, grant(id)).await;
        out.push(said(r, |r| {
            format!("granted {} ttl {} {:?}", r.id(), r.ttl(), r.error())
        }));
    }
    let mut w = c
        .watch("k", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(w.message().await.unwrap().unwrap().created());
    for (key, lease) in [("k1", 7777), ("k2", 7777), ("k3", 9999), ("k4", 7778)] {
        let r = c
            .put(key, "v", Some(PutOptions::new().with_lease(lease)))
            .await;
        out.push(said(r, |r| {
            format!("put rev {}", r.header().unwrap().revision())
        }));
    }
    for (id, keys) in [(7777, true), (7777, false), (1234, true)] {
        let options = keys.then(|| LeaseTimeToLiveOptions::new().with_keys());
        let r = c.lease_time_to_live(id, options).await;
        out.push(said(r, |r| {
            // The time left depends on when it is asked; within a second or two of the grant.
            let left = if r.ttl() > 0 {
                assert!(
                    (r.granted_ttl() - 3..=r.granted_ttl()).contains(&r.ttl()),
                    "{r:?}"
                );
                "most".to_string()
            } else {
                r.ttl().to_string()
            };
            // etcd lists a lease's keys in no particular order (keelson: key order).
            let mut keys: Vec<String> = r
                .keys()
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            keys.sort();
            format!(
                "lease {} left {left} granted {} keys {keys:?}",
                r.id(),
                r.granted_ttl()
            )
        }));
    }
    let r = c.leases().await;
    out.push(said(r, |r| {
        let mut ids: Vec<i64> = r.leases().iter().map(|l| l.id()).collect();
        ids.sort();
        format!("leases {ids:?}")
    }));
    for id in [7777, 1234] {
        // The crate turns a TTL 0 answer (an unknown lease) into an error of its own.
        let r = match c.lease_keep_alive(id).await {
            Ok((mut keeper, mut stream)) => {
                keeper.keep_alive().await.unwrap();
                stream.message().await.map(|r| r.expect("an answer"))
            }
            Err(e) => Err(e),
        };
        out.push(said(r, |r| {
            let revision = r.header().unwrap().revision();
            format!("kept {} ttl {} rev {revision}", r.id(), r.ttl())
        }));
    }
    for id in [7777, 7777] {
        let r = c.lease_revoke(id).await;
        out.push(said(r, |r| {
            format!("revoked rev {}", r.header().unwrap().revision())
        }));
    }
    // The revoke: both keys deleted in one revision.
    let r = deletes(&mut w).await;
    let events: Vec<String> = r
        .events()
        .iter()
        .map(|e| {
            let kv = e.kv().unwrap();
            format!(
                "{:?} {} m{}",
                e.event_type(),
                kv.key_str().unwrap(),
                kv.mod_revision()
            )
        })
        .collect();
    out.push(format!("watched {events:?}"));
    // Lease 7778 (2 s) expires by itself, and its key with it.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = c.lease_time_to_live(7778, None).await.unwrap();
        if r.ttl() == -1 {
            break;
        }
        assert!(Instant::now() < deadline, "lease 7778 never expired: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = deletes(&mut w).await;
    let expired = r.events().first().unwrap();
    out.push(format!(
        "expired {:?} {}",
        expired.event_type(),
        expired.kv().unwrap().key_str().unwrap()
    ));
    assert_eq!(expired.event_type(), EventType::Delete);
    out
}

#[test]
fn leases_answer_as_etcd_answers() {
    common::same_answers_as_etcd(&[], steps);
}

/// etcdctl's lease commands, step by step; lease ids (chosen by each server) are replaced by
/// their order of appearance.
fn etcdctl_session(endpoint: &str) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    let mut out = Vec::new();
    let steps = [
        "lease grant 100",
        "lease grant 1",
        "put --lease=$0 k1 v",
        "put --lease=$1 k2 v",
        "put --lease=1234 k3 v",
        "lease timetolive $0 --keys",
        "lease timetolive $1",
        "lease timetolive 1234",
        "lease list",
        "lease keep-alive --once $0",
        "lease keep-alive --once 1234",
        "lease revoke $0",
        "get k1",
        "lease revoke $0",
        "lease grant 9000000001",
    ];
    for template in steps {
        let mut args = template.to_string();
        for (i, id) in ids.iter().enumerate() {
            args = args.replace(&format!("${i}"), id);
        }
        let mut said = run(endpoint, &step(&args));
        let granted = said
            .split("lease ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .filter(|_| said.contains("granted with"));
        if let Some(id) = granted {
            ids.push(id.to_string());
        }
        for (i, id) in ids.iter().enumerate() {
            said = said.replace(id, &format!("<lease {i}>"));
        }
        // The time left depends on when it is asked.
        if let Some(at) = said.find("remaining(") {
            let end = said[at..].find(')').unwrap() + at;
            said.replace_range(at..=end, "remaining(…)");
        }
        out.push(format!("$ etcdctl {template}\n{said}"));
    }
    out
}

#[test]
fn etcdctl_lease_commands_see_keelson_as_they_see_etcd() {
    let want = same_output_as_etcd(etcdctl_session);
    assert!(want[0].contains("granted with TTL(100s)"), "{}", want[0]);
    assert!(want[1].contains("granted with TTL(2s)"), "{}", want[1]);
}

/// Leases in the keep-alive test, each kept alive on a stream of its own.
const KEPT: usize = 100;

#[test]
fn leases_kept_alive_outlive_their_ttl_then_expire_with_their_keys() {
    let keelson = Server::start(Path::new(env!("CARGO_BIN_EXE_keelson")), Ports::free(), &[]);
    let endpoint = keelson.endpoint();
    runtime().block_on(async {
        let mut c = Client::connect([endpoint.clone()], None).await.unwrap();
        let mut w = c
            .watch("kept/", Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap();
        assert!(w.message().await.unwrap().unwrap().created());
        let mut keepers = Vec::new();
        for i in 0..KEPT {
            let lease = c.lease_grant(3, None).await.unwrap().id();
            let options = PutOptions::new().with_lease(lease);
            c.put(format!("kept/{i}"), "v", Some(options))
                .await
                .unwrap();
            keepers.push(c.lease_keep_alive(lease).await.unwrap());
        }
        // Renewed every second for twice their TTL: all of them live.
        for _ in 0..6 {
            for (keeper, stream) in &mut keepers {
                keeper.keep_alive().await.unwrap();
                let r = stream.message().await.unwrap().unwrap();
                assert_eq!(r.ttl(), 3, "{r:?}");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let alive = c
            .get("kept/", Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .unwrap();
        assert_eq!(alive.kvs().len(), KEPT);
        let renewed = common::metric(&endpoint, "etcd_debugging_lease_renewed_total").unwrap();
        assert!(renewed >= (6 * KEPT) as f64, "{renewed}");
        // Left alone, they expire, and the watcher sees every key deleted.
        drop(keepers);
        let mut deleted = 0;
        while deleted < KEPT {
            let r = tokio::time::timeout(Duration::from_secs(20), w.message())
                .await
                .expect("the leases expire")
                .unwrap()
                .unwrap();
            deleted += r
                .events()
                .iter()
                .filter(|e| e.event_type() == EventType::Delete)
                .count();
        }
        let left = c.leases().await.unwrap();
        assert!(left.leases().is_empty(), "{:?}", left.leases());
    });
    let revoked = common::metric(&endpoint, "etcd_debugging_lease_revoked_total");
    assert_eq!(revoked, Some(KEPT as f64));
}

/// Leases renewed on the one stream of the multiplexing test.
const MULTIPLEXED: usize = 200;

#[test]
fn many_leases_renewed_on_one_stream_outlive_their_ttl() {
    use futures_channel::mpsc;
    use keelson_proto::codec::ObservedCodec;
    use keelson_proto::etcdserverpb::{LeaseKeepAliveRequest, LeaseKeepAliveResponse};

    let keelson = Server::start(Path::new(env!("CARGO_BIN_EXE_keelson")), Ports::free(), &[]);
    let endpoint = keelson.endpoint();
    runtime().block_on(async {
        let mut c = Client::connect([endpoint.clone()], None).await.unwrap();
        let mut leases = Vec::new();
        for i in 0..MULTIPLEXED {
            let lease = c.lease_grant(3, None).await.unwrap().id();
            let options = PutOptions::new().with_lease(lease);
            c.put(format!("mux/{i}"), "v", Some(options)).await.unwrap();
            leases.push(lease);
        }
        // One LeaseKeepAlive stream for all of them, as etcd's Go client keeps one per client.
        let mut grpc = common::grpc(&endpoint).await;
        let (mut renew, requests) = mpsc::channel::<LeaseKeepAliveRequest>(MULTIPLEXED);
        let path = http::uri::PathAndQuery::from_static("/etcdserverpb.Lease/LeaseKeepAlive");
        let codec = ObservedCodec::<LeaseKeepAliveRequest, LeaseKeepAliveResponse>::default();
        let mut answers = grpc
            .streaming(tonic::Request::new(requests), path, codec)
            .await
            .unwrap()
            .into_inner();
        // Renewed every second for more than their TTL, all on the one stream.
        for _ in 0..5 {
            for &id in &leases {
                renew.try_send(LeaseKeepAliveRequest { id }).unwrap();
            }
            let mut renewed = Vec::new();
            for _ in 0..MULTIPLEXED {
                let answer = answers.message().await.unwrap().expect("an answer");
                assert_eq!(answer.ttl, 3, "{answer:?}");
                renewed.push(answer.id);
            }
            renewed.sort();
            let mut asked = leases.clone();
            asked.sort();
            assert_eq!(renewed, asked);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let alive = c
            .get("mux/", Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .unwrap();
        assert_eq!(alive.kvs().len(), MULTIPLEXED);
    });
}

/// Grants a 30 s lease, waits `wait`, kills the member with SIGKILL, starts it again and returns
/// the lease's time left then.
fn time_left_after_a_crash(flags: &[&str], wait: Duration) -> i64 {
    let mut keelson = Server::start(
        Path::new(env!("CARGO_BIN_EXE_keelson")),
        Ports::free(),
        flags,
    );
    let endpoint = keelson.endpoint();
    let id = runtime().block_on(async {
        let mut c = Client::connect([endpoint.clone()], None).await.unwrap();
        c.lease_grant(30, None).await.unwrap().id()
    });
    std::thread::sleep(wait);
    keelson.kill();
    keelson.launch();
    runtime().block_on(async {
        let mut c = Client::connect([endpoint], None).await.unwrap();
        let r = c.lease_time_to_live(id, None).await.unwrap();
        assert_eq!(r.granted_ttl(), 30);
        r.ttl()
    })
}

#[test]
fn a_restart_gives_a_lease_no_more_than_its_last_checkpoint_and_an_election_timeout() {
    // Checkpoints each second: 3.5 s after the grant the last one said at most 28 s were left, so
    // after the restart at most 28 + 1 (the election timeout) remain — not a fresh 30.
    let checkpointed = time_left_after_a_crash(
        &["--experimental-lease-checkpoint-interval", "1s"],
        Duration::from_millis(3500),
    );
    assert!((20..=29).contains(&checkpointed), "{checkpointed}");
    // Without checkpoints (etcd 3.4's default), a restart hands the lease its full TTL again, and
    // the election timeout on top.
    let unchecked = time_left_after_a_crash(
        &["--experimental-enable-lease-checkpoint=false"],
        Duration::from_millis(3500),
    );
    assert_eq!(unchecked, 30);
}
