//! Membership changes against the real binary: `etcdctl member add/promote/remove/update/list`
//! refused exactly as a real etcd refuses them (same steps, same ports, same output), and a
//! three-member cluster taking a learner that joins with `--initial-cluster-state existing` (and
//! starts from the leader's page file), serves only what etcd's learners serve, is promoted
//! through a follower, and a member removed that stops itself while the rest serve on — or, removed
//! while it was down, is refused by the others when it returns and stops.

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

/// What `etcdctl member add` printed, with the new member's id (etcd derives it from the time)
/// taken out and the initial cluster's members sorted (they come in id order), and that id.
fn added(said: &str) -> (String, String) {
    let Some(at) = said.find("Member ") else {
        return (said.to_string(), String::new());
    };
    // etcdctl prints the id as `%16x`: an id with leading zeros is padded with spaces.
    let rest = &said[at + 7..];
    let padded = rest.len() - rest.trim_start().len();
    let id: String = rest[padded..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    let lines = said.replacen(
        &format!("Member {}{id}", " ".repeat(padded)),
        "Member ID",
        1,
    );
    let lines: Vec<String> = lines
        .split('\n')
        .map(|line| match line.strip_prefix("ETCD_INITIAL_CLUSTER=") {
            Some(list) => {
                let mut members: Vec<&str> = list.trim_matches('"').split(',').collect();
                members.sort_unstable();
                format!("ETCD_INITIAL_CLUSTER=\"{}\"", members.join(","))
            }
            None => line.to_string(),
        })
        .collect();
    (lines.join("\n"), id)
}

/// `said` with member `id` written `ID` (etcdctl pads ids to 16 places with spaces).
fn masked(said: &str, id: &str) -> String {
    let mut out = said.replace(id, "ID");
    while out.contains("Member  ") {
        out = out.replace("Member  ", "Member ");
    }
    out
}

/// Membership changes etcd refuses on a single member of `ports`, with the ids involved.
fn refusals(endpoint: &str, peer: u16) -> Vec<String> {
    let step = |args: String| common::etcdctl::run(endpoint, &common::etcdctl::step(&args));
    let mut said = Vec::new();
    let (first, learner) = added(&step(
        "member add l1 --peer-urls=http://127.0.0.1:1 --learner".into(),
    ));
    said.push(first);
    said.push(step(
        "member add l2 --peer-urls=http://127.0.0.1:2 --learner".into(),
    ));
    said.push(step(format!("member promote {learner}")));
    said.push(masked(&step(format!("member remove {learner}")), &learner));
    said.push(masked(&step(format!("member remove {learner}")), &learner));
    said.push(masked(&step(format!("member promote {learner}")), &learner));
    said.push(step(format!(
        "member add dup --peer-urls=http://127.0.0.1:{peer}"
    )));
    said.push(step("member add bad --peer-urls=foo".into()));
    // etcdctl checks URLs itself; a client that does not is answered by the server.
    let no_port = common::runtime().block_on(async {
        let mut c = Client::connect([endpoint], None).await.unwrap();
        let added = c.member_add(["http://127.0.0.1".to_string()], None).await;
        common::said(added, |_| "added".into())
    });
    said.push(no_port);
    said.push(step(
        "member update 1234 --peer-urls=http://127.0.0.1:3".into(),
    ));
    said.push(step("member list".into()));
    said
}

#[test]
fn membership_changes_are_answered_as_etcd_answers_them() {
    let ports = Ports::free();
    let mut etcd = Server::etcd(ports);
    let want = refusals(&etcd.endpoint(), ports.peer);
    etcd.terminate();
    drop(etcd);
    let keelson = Server::start(binary(), ports, &[]);
    let got = refusals(&keelson.endpoint(), ports.peer);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(
            g,
            w,
            "step {i} (left: keelson, right: etcd)\n{}",
            keelson.log()
        );
    }
    assert_eq!(got.len(), want.len());
    assert!(want[0].contains("Member ID added to cluster"), "{want:#?}");
    for (step, words) in [
        (1, "too many learner members in cluster"),
        (
            2,
            "can only promote a learner member which is in sync with leader",
        ),
        (3, "Member ID removed from cluster"),
        (4, "member not found"),
        (5, "member not found"),
        (6, "Peer URLs already exists"),
        (7, "URL scheme must be http, https, unix, or unixs: foo"),
        (8, "etcdserver: given member URLs are invalid"),
        (9, "member not found"),
    ] {
        assert!(want[step].contains(words), "step {step}: {want:#?}");
    }
}

/// Waits up to 30 s for `check` to hold.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, check: impl Fn() -> F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_learner_joins_is_promoted_and_a_removed_member_stops() {
    // The members keep few entries behind their page files: the learner starts from a snapshot.
    let keep = ["--snapshot-catchup-entries", "20", "--snapshot-count", "20"];
    let mut members = Server::cluster(binary(), 3, &keep);
    let ports = Ports::free();
    let learner_url = format!("http://127.0.0.1:{}", ports.peer);
    let step = |at: &Server, args: String| {
        common::etcdctl::run(&at.endpoint(), &common::etcdctl::step(&args))
    };
    let rt = common::runtime();
    rt.block_on(async {
        let mut c = client(&members[0]).await;
        for i in 0..100 {
            c.put(format!("k{i}"), "before", None).await.unwrap();
        }
    });
    // As etcd's, the leader takes no member until it has heard from every voter for 5 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    let said = loop {
        let said = step(
            &members[0],
            format!("member add m3 --peer-urls={learner_url} --learner"),
        );
        if !said.contains("unhealthy cluster") || Instant::now() > deadline {
            break said;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let (_, id) = added(&said);
    assert!(
        said.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""),
        "{said}"
    );
    let id = u64::from_str_radix(&id, 16).unwrap();
    let mut learner = Server::join(binary(), &members, "m3", ports, &keep);
    rt.block_on(async {
        let serializable = || Some(GetOptions::new().with_serializable());
        eventually("the learner catching up", || async {
            let Ok(mut c) = Client::connect([learner.endpoint()], None).await else {
                return false;
            };
            c.get("k99", serializable())
                .await
                .is_ok_and(|r| r.count() == 1)
        })
        .await;
        assert!(
            learner.log().contains("applied snapshot"),
            "{}",
            learner.log()
        );
        // A learner serves its status and serializable reads only, as etcd's does.
        let mut l = client(&learner).await;
        assert!(l.status().await.unwrap().is_learner());
        let refused = l.get("k1", None).await.unwrap_err().to_string();
        assert!(
            refused.contains("etcdserver: rpc not supported for learner"),
            "{refused}"
        );
        let refused = l.put("k1", "v", None).await.unwrap_err().to_string();
        assert!(
            refused.contains("rpc not supported for learner"),
            "{refused}"
        );
        assert_eq!(
            common::metric(&learner.endpoint(), "etcd_server_is_learner"),
            Some(1.0)
        );
        // It published its name through raft; the list shows it as a learner.
        eventually("the learner's name in the member list", || async {
            let list = client(&members[0]).await.member_list().await.unwrap();
            list.members()
                .iter()
                .any(|m| m.id() == id && m.name() == "m3" && m.is_learner())
        })
        .await;
        // Promoted through a follower, which hands the promotion to the leader.
        let leader = client(&members[0]).await.status().await.unwrap().leader();
        let mut follower = None;
        for m in &members {
            if common::member_id(&m.endpoint()).await != leader {
                follower = Some(m);
            }
        }
        let promoted = step(follower.unwrap(), format!("member promote {id:x}"));
        assert!(promoted.contains("promoted in cluster"), "{promoted}");
        eventually("the promoted member's linearizable read", || async {
            let mut l = client(&learner).await;
            l.get("k1", None).await.is_ok()
        })
        .await;
        assert_eq!(
            common::metric(&learner.endpoint(), "etcd_server_is_learner"),
            Some(0.0)
        );
        // Its peer URLs change; the others dial it anew.
        let second = format!("http://127.0.0.1:{}", keelson_testkit::server::free_port());
        let updated = step(
            &members[0],
            format!("member update {id:x} --peer-urls={learner_url},{second}"),
        );
        assert!(updated.contains("updated in cluster"), "{updated}");
        let list = client(&members[0]).await.member_list().await.unwrap();
        let urls = list.members().iter().find(|m| m.id() == id).unwrap();
        let mut both = vec![learner_url.clone(), second];
        both.sort();
        assert_eq!(urls.peer_urls(), both);
    });
    // A member removed stops, saying why; the other three serve on.
    let gone = rt.block_on(common::member_id(&members[1].endpoint()));
    let removed = step(&members[0], format!("member remove {gone:x}"));
    assert!(removed.contains("removed from cluster"), "{removed}");
    stops_as_removed(&mut members[1]);
    rt.block_on(async {
        let mut l = client(&learner).await;
        l.put("after", "removal", None).await.unwrap();
        for m in [&members[0], &members[2], &learner] {
            let got = client(m).await.get("after", None).await.unwrap();
            assert_eq!(got.count(), 1, "{}", m.log());
        }
        let list = client(&members[2]).await.member_list().await.unwrap();
        assert_eq!(list.members().len(), 3);
    });
    // Restarted, the joined member starts from its own data dir.
    learner.terminate();
    learner.launch();
    // A member removed while it is down is refused by the others when it comes back, and stops.
    let down = rt.block_on(common::member_id(&members[2].endpoint()));
    members[2].terminate();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let removed = step(&members[0], format!("member remove {down:x}"));
        if removed.contains("removed from cluster") {
            break;
        }
        assert!(Instant::now() < deadline, "{removed}");
        std::thread::sleep(Duration::from_millis(500));
    }
    members[2].spawn();
    stops_as_removed(&mut members[2]);
}

/// Member `m` exits non-zero within 30 s, saying in etcd's words that it was removed.
fn stops_as_removed(m: &mut Server) {
    let status = m.exit_within(Duration::from_secs(30));
    assert!(status.is_some_and(|s| !s.success()), "{}", m.log());
    assert!(
        m.log()
            .contains("the member has been permanently removed from the cluster"),
        "{}",
        m.log()
    );
}
