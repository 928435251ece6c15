//! A follower too far behind for the leader's log is sent the page file, against the real binary:
//! three members behind fault proxies, one cut off while the others take more writes than the
//! leader keeps for it (`--snapshot-count`, `--snapshot-catchup-entries`). Once healed it installs
//! the leader's file while serving: it reads every key, keeps the leases, its watcher gets every
//! event it missed in order, it takes writes, and it keeps all of it across a restart.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, WatchOptions};
use keelson_testkit::proxy::Faults;
use keelson_testkit::server::Server;

mod common;

/// Writes while the follower is cut off: far more than the leader keeps for it.
const WRITES: usize = 1500;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_keelson"))
}

async fn client(member: &Server) -> Client {
    Client::connect([member.endpoint()], None).await.unwrap()
}

/// The value of `key` on `member`, read serializably (from the member's own file).
async fn local_value(member: &Server, key: &str) -> Option<String> {
    let options = Some(GetOptions::new().with_serializable());
    let got = client(member).await.get(key, options).await.ok()?;
    got.kvs()
        .first()
        .map(|kv| kv.value_str().unwrap().to_string())
}

#[test]
fn a_follower_too_far_behind_installs_the_leaders_page_file_and_serves_on() {
    let faults = Arc::new(Faults::default());
    let flags = [
        "--snapshot-count",
        "200",
        "--snapshot-catchup-entries",
        "100",
    ];
    let (mut members, _proxies) = Server::cluster_behind_proxies(binary(), 3, &flags, &faults);
    let behind = common::runtime().block_on(async {
        let mut ids = Vec::new();
        for m in &members {
            ids.push(common::member_id(&m.endpoint()).await);
        }
        let leader_id = client(&members[0]).await.status().await.unwrap().leader();
        let leader = ids.iter().position(|&id| id == leader_id).unwrap();
        let behind = (leader + 1) % 3;
        // A watcher on the member that falls behind, live before it does.
        let mut watching = client(&members[behind]).await;
        let prefix = WatchOptions::new().with_prefix();
        let mut events = watching.watch("w/", Some(prefix)).await.unwrap();
        assert!(events.message().await.unwrap().unwrap().created());
        let mut c = client(&members[leader]).await;
        let first = c.put("w/0", "before", None).await.unwrap();
        let first_revision = first.header().unwrap().revision();
        let seen = events.message().await.unwrap().unwrap();
        assert_eq!(
            seen.events()[0].kv().unwrap().mod_revision(),
            first_revision
        );

        faults.isolate(ids[behind], &ids);
        let lease = c.lease_grant(600, None).await.unwrap().id();
        let leased = etcd_client::PutOptions::new().with_lease(lease);
        c.put("leased", "yes", Some(leased)).await.unwrap();
        let mut writers = Vec::new();
        for w in 0..10 {
            let mut c = c.clone();
            writers.push(tokio::spawn(async move {
                for i in 0..WRITES / 10 {
                    c.put(format!("k/{w}/{i}"), format!("{i}"), None)
                        .await
                        .unwrap();
                }
            }));
        }
        for w in writers {
            w.await.unwrap();
        }
        for i in 1..=5 {
            c.put(format!("w/{i}"), format!("while cut off {i}"), None)
                .await
                .unwrap();
        }
        // The leader's page file syncs (every 100 ms) and its log lets go of what the follower
        // would need.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let last = c.put("last", "written", None).await.unwrap();
        let last_revision = last.header().unwrap().revision();
        assert_eq!(local_value(&members[behind], "last").await, None);

        faults.heal();
        let deadline = Instant::now() + Duration::from_secs(30);
        while local_value(&members[behind], "last").await.is_none() {
            assert!(
                Instant::now() < deadline,
                "the follower did not catch up\n{}",
                members[behind].log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = members[behind].log();
        assert!(
            log.contains("received and saved database snapshot")
                && log.contains("applied snapshot"),
            "it caught up without a snapshot:\n{log}"
        );
        let received = format!(
            "etcd_network_snapshot_receive_success{{From=\"{:x}\"}}",
            ids[leader]
        );
        assert_eq!(
            common::metric(&members[behind].endpoint(), &received),
            Some(1.0)
        );
        let sent = format!(
            "etcd_network_snapshot_send_success{{To=\"{:x}\"}}",
            ids[behind]
        );
        assert_eq!(
            common::metric(&members[leader].endpoint(), &sent),
            Some(1.0)
        );

        // The watcher gets what it missed, in order, and nothing twice.
        let mut got = Vec::new();
        while got.len() < 5 {
            let response = tokio::time::timeout(Duration::from_secs(10), events.message())
                .await
                .expect("the watcher caught up")
                .unwrap()
                .unwrap();
            for e in response.events() {
                let kv = e.kv().unwrap();
                got.push((kv.key_str().unwrap().to_string(), kv.mod_revision()));
            }
        }
        let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["w/1", "w/2", "w/3", "w/4", "w/5"]);
        assert!(got.windows(2).all(|p| p[0].1 < p[1].1));
        assert!(got[4].1 < last_revision);

        // Everything is there, read from the follower's own file; so is the lease, in its lessor.
        assert_eq!(
            local_value(&members[behind], &format!("k/9/{}", WRITES / 10 - 1)).await,
            Some(format!("{}", WRITES / 10 - 1))
        );
        assert_eq!(
            local_value(&members[behind], "leased").await.as_deref(),
            Some("yes")
        );
        let mut f = client(&members[behind]).await;
        let leases = f.leases().await.unwrap();
        assert!(leases.leases().iter().any(|l| l.id() == lease));
        // It takes writes and serves linearizable reads.
        f.put("after", "the snapshot", None).await.unwrap();
        let read = f.get("after", None).await.unwrap();
        assert_eq!(read.kvs()[0].value_str().unwrap(), "the snapshot");
        behind
    });
    // Restarted, it starts from the installed file and the log after it.
    members[behind].terminate();
    members[behind].launch();
    common::runtime().block_on(async {
        assert_eq!(
            local_value(&members[behind], "last").await.as_deref(),
            Some("written")
        );
        let mut f = client(&members[behind]).await;
        f.put("after restart", "yes", None).await.unwrap();
        let got = f
            .get("w/", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        assert_eq!(got.kvs().len(), 6);
    });
}
