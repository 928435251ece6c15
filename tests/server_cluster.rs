//! Three keelson members started with etcd's cluster flags, against the real binary: they elect a
//! leader, replicate every write, forward a follower's writes to the leader, serve linearizable
//! reads on every member, survive their leader's kill -9 with nothing acknowledged lost, catch a
//! restarted member up, hand leadership on before a graceful stop, and refuse a member of another
//! cluster with etcd's words.

use std::path::Path;
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};
use keelson_testkit::server::{Ports, Server};

mod common;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_keelson"))
}

async fn client(member: &Server) -> Client {
    Client::connect([member.endpoint()], None).await.unwrap()
}

/// The leader's member id, as member `at` sees it.
async fn leader(at: &Server) -> u64 {
    client(at).await.status().await.unwrap().leader()
}

/// The index of the member whose id is `id`.
async fn index_of(members: &[Server], id: u64) -> usize {
    for (i, m) in members.iter().enumerate() {
        if common::member_id(&m.endpoint()).await == id {
            return i;
        }
    }
    panic!("no member has id {id:x}");
}

/// Retries `put` on `member` until it is acknowledged, for up to 20 s; returns how long it took.
async fn put_until_acknowledged(member: &Server, key: &str, value: &str) -> Duration {
    let started = Instant::now();
    loop {
        let mut c = client(member).await;
        match tokio::time::timeout(Duration::from_secs(2), c.put(key, value, None)).await {
            Ok(Ok(_)) => return started.elapsed(),
            outcome => assert!(
                started.elapsed() < Duration::from_secs(20),
                "no put acknowledged within 20 s: {outcome:?}\n{}",
                member.log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of `key` on `member`, read as `serializable` or linearizable.
async fn value(member: &Server, key: &str, serializable: bool) -> Option<String> {
    let options = serializable.then(|| GetOptions::new().with_serializable());
    let got = client(member).await.get(key, options).await.unwrap();
    got.kvs()
        .first()
        .map(|kv| kv.value_str().unwrap().to_string())
}

#[test]
fn three_members_replicate_fail_over_and_catch_up() {
    let mut members = Server::cluster(binary(), 3, &[]);
    common::runtime().block_on(async {
        // Everyone agrees on one leader.
        let leader_id = leader(&members[0]).await;
        assert_ne!(leader_id, 0);
        for m in &members {
            assert_eq!(leader(m).await, leader_id);
        }
        let first = index_of(&members, leader_id).await;
        let follower = (first + 1) % 3;
        // A follower's write goes through the leader, and every member reads it, linearizably.
        let mut c = client(&members[follower]).await;
        for i in 0..50 {
            c.put(format!("k{i:02}"), format!("v{i}"), None)
                .await
                .unwrap();
        }
        for m in &members {
            assert_eq!(value(m, "k49", false).await.as_deref(), Some("v49"));
            let all = client(m)
                .await
                .get("k", Some(GetOptions::new().with_prefix()))
                .await
                .unwrap();
            assert_eq!(all.kvs().len(), 50, "{}", m.log());
        }
        // The leader counts what it sent to each follower.
        let (_, metrics) = common::http_get(&members[first].endpoint(), "/metrics");
        for m in &members {
            if m.name != members[first].name {
                let id = common::member_id(&m.endpoint()).await;
                let line = format!("etcd_network_peer_sent_bytes_total{{To=\"{id:x}\"}} ");
                let sent = metrics
                    .lines()
                    .find_map(|l| l.strip_prefix(&line)?.parse::<u64>().ok());
                assert!(sent.is_some_and(|b| b > 0), "{line} in\n{metrics}");
            }
        }
        assert_eq!(
            common::metric(&members[first].endpoint(), "etcd_server_is_leader"),
            Some(1.0)
        );
        // It timed its heartbeats' round trips to each follower.
        assert!(
            metrics.contains("etcd_network_peer_round_trip_time_seconds_count{To=\""),
            "{metrics}"
        );
        let timed = metrics
            .lines()
            .filter(|l| l.starts_with("etcd_network_peer_round_trip_time_seconds_count{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .collect::<Vec<_>>();
        assert!(
            timed.len() == 2 && timed.iter().all(|&n| n > 0),
            "{metrics}"
        );

        // kill -9 the leader: the other two elect one of themselves and take writes again.
        members[first].kill();
        let survivor = (first + 1) % 3;
        put_until_acknowledged(&members[survivor], "after", "kill").await;
        let new_leader = leader(&members[survivor]).await;
        assert_ne!(new_leader, leader_id);
        // The new leader's heartbeats to the killed member fail, and are counted.
        let mut next = survivor;
        if common::member_id(&members[next].endpoint()).await != new_leader {
            next = (first + 2) % 3;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let failures = "etcd_server_heartbeat_send_failures_total";
        while common::metric(&members[next].endpoint(), failures).unwrap_or(0.0) == 0.0 {
            assert!(Instant::now() < deadline, "{}", members[next].log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut c = client(&members[survivor]).await;
        for i in 50..60 {
            c.put(format!("k{i:02}"), format!("v{i}"), None)
                .await
                .unwrap();
        }
        for i in [(first + 1) % 3, (first + 2) % 3] {
            assert_eq!(
                value(&members[i], "after", false).await.as_deref(),
                Some("kill")
            );
            assert_eq!(
                value(&members[i], "k00", false).await.as_deref(),
                Some("v0")
            );
        }

        // The killed member restarts from its WAL and catches up from the leader.
        members[first].launch();
        let deadline = Instant::now() + Duration::from_secs(20);
        while value(&members[first], "k59", true).await.as_deref() != Some("v59") {
            assert!(Instant::now() < deadline, "{}", members[first].log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            value(&members[first], "after", false).await.as_deref(),
            Some("kill")
        );
        assert_eq!(leader(&members[first]).await, new_leader);
    });
}

#[test]
fn a_leader_hands_over_before_it_stops() {
    let mut members = Server::cluster(binary(), 3, &[]);
    common::runtime().block_on(async {
        let leader_id = leader(&members[0]).await;
        let first = index_of(&members, leader_id).await;
        let other = (first + 1) % 3;
        client(&members[other])
            .await
            .put("before", "stop", None)
            .await
            .unwrap();
        let status = members[first].terminate();
        assert!(status.success(), "{}", members[first].log());
        assert!(
            members[first]
                .log()
                .contains("leadership transfer finished"),
            "{}",
            members[first].log()
        );
        // Another member leads already: the first write after the stop needs no election.
        let new_leader = leader(&members[other]).await;
        assert!(new_leader != 0 && new_leader != leader_id);
        put_until_acknowledged(&members[other], "after", "stop").await;
    });
}

#[test]
fn a_member_of_another_cluster_is_refused() {
    let other_token: &[&str] = &["--initial-cluster-token", "another-cluster"];
    let mut members = Server::cluster_spawned(binary(), &[&[], &[], other_token]);
    members[0].wait_until_serving();
    members[1].wait_until_serving();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let refused = members[..2]
            .iter()
            .any(|m| m.log().contains("request cluster ID mismatch"));
        let told = members[2]
            .log()
            .contains("request sent was ignored by remote peer due to cluster ID mismatch");
        if refused && told {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "good members:\n{}\n{}\nthe other cluster's:\n{}",
            members[0].log(),
            members[1].log(),
            members[2].log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The two that agree still serve, and the stranger never joined them.
    common::runtime().block_on(async {
        put_until_acknowledged(&members[0], "k", "v").await;
        assert_eq!(value(&members[1], "k", false).await.as_deref(), Some("v"));
    });
    assert!(!members[2].log().contains("ready to serve client requests"));
}

/// `etcdctl member list` on every member of a three-member cluster on `ports`, once every member
/// lists every other as started (each published its name and client URLs through raft).
fn member_lists(binary: &Path, ports: &[Ports]) -> Vec<String> {
    let members = Server::cluster_of_three_on(binary, ports);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lists: Vec<String> = members
            .iter()
            .map(|m| common::etcdctl::run(&m.endpoint(), &common::etcdctl::step("member list")))
            .collect();
        if lists.iter().all(|l| l.matches(", started, ").count() == 3) {
            return lists;
        }
        assert!(Instant::now() < deadline, "{lists:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_member_lists_the_cluster_as_etcd_does() {
    let ports: Vec<Ports> = (0..3).map(|_| Ports::free()).collect();
    let keelson = member_lists(binary(), &ports);
    let etcd = member_lists(Path::new("/usr/bin/etcd"), &ports);
    assert_eq!(keelson, etcd);
    // Names, peer and client URLs of all three, on every member.
    for port in &ports {
        assert!(etcd[0].contains(&format!("http://127.0.0.1:{}", port.client)));
        assert!(etcd[0].contains(&format!("http://127.0.0.1:{}", port.peer)));
    }
}

#[test]
fn a_followers_lease_keep_alives_reach_the_leader() {
    let members = Server::cluster(binary(), 3, &[]);
    common::runtime().block_on(async {
        let leader_id = leader(&members[0]).await;
        let follower = (index_of(&members, leader_id).await + 1) % 3;
        let mut c = client(&members[follower]).await;
        let id = c.lease_grant(3, None).await.unwrap().id();
        c.put(
            "leased",
            "v",
            Some(etcd_client::PutOptions::new().with_lease(id)),
        )
        .await
        .unwrap();
        // Kept alive through the follower for twice its time to live: it lives on.
        let (mut keeper, mut answers) = c.lease_keep_alive(id).await.unwrap();
        for _ in 0..6 {
            keeper.keep_alive().await.unwrap();
            let answer = answers.message().await.unwrap().unwrap();
            assert_eq!(answer.ttl(), 3, "{}", members[follower].log());
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let ttl = c.lease_time_to_live(id, None).await.unwrap();
        assert!((1..=3).contains(&ttl.ttl()), "{ttl:?}");
        assert_eq!(
            value(&members[follower], "leased", false).await.as_deref(),
            Some("v")
        );
        // Left alone, the leader expires it, and every member sees it go.
        drop((keeper, answers));
        let deadline = Instant::now() + Duration::from_secs(15);
        while value(&members[follower], "leased", false).await.is_some() {
            assert!(Instant::now() < deadline, "{}", members[follower].log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let ttl = c.lease_time_to_live(id, None).await.unwrap();
        assert_eq!(ttl.ttl(), -1);
    });
}

/// etcd's MoveLeader on a three-member cluster on `ports`: leadership moved to `m0` (not
/// recorded: whoever led first), then recorded: etcdctl moves it to `m1`, then to a member that
/// does not exist, and `m0`, a follower now, is asked to move it.
fn leader_moves(binary: &Path, ports: &[Ports]) -> Vec<String> {
    let members = Server::cluster_of_three_on(binary, ports);
    let all = members
        .iter()
        .map(Server::endpoint)
        .collect::<Vec<_>>()
        .join(",");
    let step = |args: String| common::etcdctl::run(&all, &common::etcdctl::step(&args));
    common::runtime().block_on(async {
        let mut ids = Vec::new();
        for m in &members {
            ids.push(common::member_id(&m.endpoint()).await);
        }
        if leader(&members[0]).await != ids[0] {
            step(format!("move-leader {:x}", ids[0]));
        }
        let mut said = vec![step(format!("move-leader {:x}", ids[1]))];
        for m in &members {
            assert_eq!(leader(m).await, ids[1], "{}", m.log());
        }
        said.push(step("move-leader 1234".into()));
        // Only the leader moves leadership.
        let refused = client(&members[0]).await.move_leader(ids[1]).await;
        said.push(common::said(refused, |_| "moved".into()));
        said
    })
}

#[test]
fn leadership_moves_as_etcd_moves_it() {
    let ports: Vec<Ports> = (0..3).map(|_| Ports::free()).collect();
    let keelson = leader_moves(binary(), &ports);
    let etcd = leader_moves(Path::new("/usr/bin/etcd"), &ports);
    assert_eq!(keelson, etcd);
    assert!(etcd[0].contains("Leadership transferred from"), "{etcd:#?}");
    assert!(etcd[1].contains("bad leader transferee"), "{etcd:#?}");
    assert!(etcd[2].contains("not leader"), "{etcd:#?}");
}

#[test]
fn joining_an_existing_cluster_on_an_empty_data_dir_is_refused_plainly() {
    let existing: &[&str] = &["--initial-cluster-state", "existing"];
    let mut member = Server::cluster_spawned(binary(), &[existing]).remove(0);
    let status = member.exit_within(Duration::from_secs(20));
    assert!(status.is_some_and(|s| !s.success()), "{}", member.log());
    assert!(
        member
            .log()
            .contains("cannot fetch cluster info from peer urls"),
        "{}",
        member.log()
    );
    assert!(
        !member
            .data_dir()
            .join("member")
            .join("snap")
            .join("db")
            .exists()
    );
}

#[test]
fn an_etcd_cluster_stopped_and_restarted_as_keelson_serves_on() {
    let ports: Vec<Ports> = (0..3).map(|_| Ports::free()).collect();
    let mut members = Server::cluster_of_three_on(Path::new("/usr/bin/etcd"), &ports);
    let lease = common::runtime().block_on(async {
        let mut c = client(&members[0]).await;
        for i in 0..50 {
            c.put(format!("k{i:02}"), format!("v{i}"), None)
                .await
                .unwrap();
        }
        let lease = c.lease_grant(600, None).await.unwrap().id();
        c.put(
            "leased",
            "x",
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )
        .await
        .unwrap();
        lease
    });
    let list = |members: &[Server]| {
        common::etcdctl::run(
            &members[1].endpoint(),
            &common::etcdctl::step("member list"),
        )
    };
    let etcds = list(&members);
    // etcd stops (each etcd leader hands over as it goes); keelson starts on the same data dirs
    // with the same flags.
    for m in &mut members {
        // etcd ends on SIGTERM by the signal itself: only that it ended matters.
        m.terminate();
    }
    for m in &mut members {
        m.set_binary(binary());
        m.spawn();
    }
    for m in &mut members {
        m.wait_until_serving();
    }
    assert_eq!(list(&members), etcds);
    common::runtime().block_on(async {
        for m in &members {
            let all = client(m)
                .await
                .get("k", Some(GetOptions::new().with_prefix()))
                .await
                .unwrap();
            assert_eq!(all.kvs().len(), 50, "{}", m.log());
        }
        let mut c = client(&members[2]).await;
        let ttl = c.lease_time_to_live(lease, None).await.unwrap();
        assert!(ttl.ttl() > 0, "{ttl:?}");
        c.put("after", "keelson", None).await.unwrap();
        assert_eq!(
            value(&members[0], "after", false).await.as_deref(),
            Some("keelson")
        );
    });
}

#[test]
fn five_members_serve_on_with_two_down_and_stop_with_three() {
    let mut members = Server::cluster(binary(), 5, &[]);
    common::runtime().block_on(async {
        let leader_id = leader(&members[0]).await;
        let first = index_of(&members, leader_id).await;
        // Two members down, the leader one of them: the other three elect and take writes.
        members[first].kill();
        let other = (first + 1) % 5;
        members[other].kill();
        let alive: Vec<usize> = (0..5).filter(|&i| i != first && i != other).collect();
        put_until_acknowledged(&members[alive[0]], "k", "with three of five").await;
        for &i in &alive {
            assert_eq!(
                value(&members[i], "k", false).await.as_deref(),
                Some("with three of five")
            );
        }
        // A third down: no majority, no write.
        members[alive[2]].kill();
        let mut c = client(&members[alive[0]]).await;
        let refused = tokio::time::timeout(Duration::from_secs(8), c.put("k", "lost", None)).await;
        assert!(
            !matches!(refused, Ok(Ok(_))),
            "a write was acknowledged by two of five"
        );
        // Back to three, the write goes through; the returning members catch up.
        members[first].launch();
        put_until_acknowledged(&members[alive[0]], "k", "again").await;
        assert_eq!(
            value(&members[first], "k", false).await.as_deref(),
            Some("again")
        );
    });
}
