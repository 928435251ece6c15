//! Snapshots both ways between keelson and a real etcd 3.4, with thousands of keys, many
//! revisions, leases and a compaction in the history: `etcdctl snapshot save` from keelson while
//! writes go on, restored with `etcdctl snapshot restore` (its SHA-256 checked), gives an etcd
//! serving the same keys, revisions and leases; an etcd snapshot restored with `etcdctl` gives a
//! data dir keelson starts on and serves (taking over etcd's WAL); a data dir etcd left at kill -9
//! in the middle of writes is taken over with every acknowledged write; and a client that cuts a
//! snapshot stream short leaves the member serving.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use etcd_client::{Client, GetOptions, LeaseTimeToLiveOptions, PutOptions};
use keelson_testkit::etcd::{Etcd, etcdctl, restore, snapshot_status};
use keelson_testkit::server::{Ports, Server};

mod common;

use common::{Acknowledged, assert_none_lost, runtime, write_until_refused};

/// Keys in the loaded history.
const KEYS: usize = 3000;
/// Leases in it, each with some of the keys.
const LEASES: i64 = 10;

fn keelson() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_keelson"))
}

/// Loads a history: every key put, a third of them put again, a tenth deleted, a compaction
/// half-way, and keys attached to leases; then more writes after the compaction.
async fn load(c: &mut Client) {
    for id in 1..=LEASES {
        let options = etcd_client::LeaseGrantOptions::new().with_id(1000 + id);
        c.lease_grant(600, Some(options)).await.unwrap();
    }
    for i in 0..KEYS {
        let options =
            (i % 7 == 0).then(|| PutOptions::new().with_lease(1000 + (i as i64 % LEASES) + 1));
        c.put(format!("k/{i:05}"), format!("v{i}"), options)
            .await
            .unwrap();
    }
    for i in (0..KEYS).step_by(3) {
        c.put(format!("k/{i:05}"), format!("again {i}"), None)
            .await
            .unwrap();
    }
    let middle = current(c).await;
    c.compact(middle, None).await.unwrap();
    for i in (0..KEYS).step_by(10) {
        c.delete(format!("k/{i:05}"), None).await.unwrap();
    }
    for i in (1..KEYS).step_by(5) {
        c.put(format!("k/{i:05}"), format!("last {i}"), None)
            .await
            .unwrap();
    }
}

/// The store's current revision.
async fn current(c: &mut Client) -> i64 {
    c.get("k/", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
}

/// Every key at `revision` (0: the latest) with everything the store says of it.
async fn keys_at(c: &mut Client, revision: i64) -> Vec<String> {
    let options = GetOptions::new().with_all_keys().with_revision(revision);
    let r = c.get("", Some(options)).await.unwrap();
    r.kvs()
        .iter()
        .map(|kv| {
            format!(
                "{} = {} created {} modified {} version {} lease {}",
                kv.key_str().unwrap(),
                kv.value_str().unwrap(),
                kv.create_revision(),
                kv.mod_revision(),
                kv.version(),
                kv.lease()
            )
        })
        .collect()
}

/// Every lease with its granted TTL and keys.
async fn leases(c: &mut Client) -> Vec<String> {
    let mut ids: Vec<i64> = c
        .leases()
        .await
        .unwrap()
        .leases()
        .iter()
        .map(|l| l.id())
        .collect();
    ids.sort();
    let mut out = Vec::new();
    for id in ids {
        let options = LeaseTimeToLiveOptions::new().with_keys();
        let r = c.lease_time_to_live(id, Some(options)).await.unwrap();
        let mut keys: Vec<String> = r
            .keys()
            .iter()
            .map(|k| String::from_utf8_lossy(k).into())
            .collect();
        keys.sort();
        out.push(format!("{id} granted {} keys {keys:?}", r.granted_ttl()));
    }
    out
}

async fn connect(endpoint: String) -> Client {
    Client::connect([endpoint], None).await.unwrap()
}

#[test]
fn a_keelson_snapshot_saved_under_writes_restores_into_etcd() {
    let keelson = Server::start(keelson(), Ports::free(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keelson.snap");
    let endpoint = keelson.endpoint();
    runtime().block_on(async {
        let mut c = connect(endpoint.clone()).await;
        load(&mut c).await;
        let stop = Arc::new(AtomicBool::new(false));
        let writing = {
            let (mut c, stop) = (c.clone(), stop.clone());
            tokio::spawn(async move {
                let mut written = 0;
                while !stop.load(Ordering::Relaxed) {
                    c.put(format!("during/{written}"), "v", None).await.unwrap();
                    written += 1;
                }
                written
            })
        };
        let (endpoint, path) = (endpoint.clone(), file.clone());
        tokio::task::spawn_blocking(move || {
            etcdctl(&[
                "--endpoints",
                &endpoint,
                "snapshot",
                "save",
                path.to_str().unwrap(),
            ])
        })
        .await
        .unwrap();
        stop.store(true, Ordering::Relaxed);
        assert!(writing.await.unwrap() > 0, "the writer wrote");
    });
    // etcd's own tools read it, and its SHA-256 is checked on restore.
    let status = snapshot_status(&file);
    let etcd = Etcd::restore(&file, false);
    runtime().block_on(async {
        let mut k = connect(keelson.endpoint()).await;
        let mut e = connect(etcd.endpoint()).await;
        let want = keys_at(&mut k, status.revision).await;
        let got = keys_at(&mut e, 0).await;
        assert!(want.len() > KEYS / 2, "{}", want.len());
        assert_eq!(got, want);
        assert_eq!(leases(&mut e).await, leases(&mut k).await);
        let revision = current(&mut e).await;
        assert_eq!(revision, status.revision);
    });
}

#[test]
fn an_etcd_snapshot_restored_by_etcdctl_is_served_by_keelson() {
    let etcd = Server::etcd(Ports::free());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("etcd.snap");
    let (want_now, want_then, want_leases, then) = runtime().block_on(async {
        let mut c = connect(etcd.endpoint()).await;
        load(&mut c).await;
        let now = current(&mut c).await;
        let then = now - 100;
        (
            keys_at(&mut c, 0).await,
            keys_at(&mut c, then).await,
            leases(&mut c).await,
            then,
        )
    });
    etcdctl(&[
        "--endpoints",
        &etcd.endpoint(),
        "snapshot",
        "save",
        file.to_str().unwrap(),
    ]);
    let mut keelson = Server::start_on(keelson(), Ports::free(), &[], |data, peer| {
        restore(&file, data, "node", peer, false);
    });
    // `now`: the revision etcd's snapshot holds (0: the latest).
    let check = |endpoint: String, now: i64| {
        runtime().block_on(async {
            let mut c = connect(endpoint).await;
            assert_eq!(keys_at(&mut c, now).await, want_now);
            assert_eq!(keys_at(&mut c, then).await, want_then);
            assert_eq!(leases(&mut c).await, want_leases);
        })
    };
    check(keelson.endpoint(), 0);
    assert!(
        keelson.data_dir().join("member/wal.etcd").is_dir(),
        "etcd's WAL is kept"
    );
    // It goes on from etcd's revision, and a restart finds it as it left it.
    let written = runtime().block_on(async {
        let mut c = connect(keelson.endpoint()).await;
        c.put("after", "restore", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision()
    });
    assert_eq!(written, then + 101);
    keelson.terminate();
    keelson.launch();
    check(keelson.endpoint(), written - 1);
}

#[test]
fn a_data_dir_etcd_left_at_kill_9_is_taken_over_with_every_acknowledged_write() {
    let mut etcd = Server::etcd(Ports::free());
    let acked = Acknowledged::default();
    let writers = write_until_refused(etcd.endpoint(), "w".into(), 8, acked.clone());
    std::thread::sleep(Duration::from_millis(1500));
    etcd.kill();
    writers.join().unwrap();
    let source = etcd.data_dir();
    // The same flags as etcd had, so the member and cluster are the same ones.
    let keelson = Server::start_on(keelson(), etcd.ports(), &[], |data, _| {
        let copied = std::process::Command::new("cp")
            .arg("-a")
            .arg(&source)
            .arg(data)
            .status()
            .unwrap();
        assert!(copied.success());
    });
    assert_none_lost(keelson.endpoint(), &acked, 100);
}

#[test]
fn a_snapshot_stream_cut_short_by_its_client_leaves_the_member_serving() {
    let keelson = Server::start(keelson(), Ports::free(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("after.snap");
    runtime().block_on(async {
        let mut c = connect(keelson.endpoint()).await;
        let value = "x".repeat(1024);
        for i in 0..2000 {
            c.put(format!("big/{i}"), value.clone(), None)
                .await
                .unwrap();
        }
        let mut stream = c.snapshot().await.unwrap();
        for _ in 0..3 {
            let part = stream.message().await.unwrap().unwrap();
            assert!(part.remaining_bytes() > 0);
        }
        drop(stream);
        c.put("still", "serving", None).await.unwrap();
    });
    etcdctl(&[
        "--endpoints",
        &keelson.endpoint(),
        "snapshot",
        "save",
        file.to_str().unwrap(),
    ]);
    assert_eq!(snapshot_status(&file).revision, 2002);
}

/// Runs `keelson snapshot <args>`; its exit status, output and error.
fn keelson_snapshot(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(keelson())
        .arg("snapshot")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `etcdctl snapshot status -w <format> FILE`'s output.
fn etcdctl_status(file: &Path, format: &str) -> String {
    let out = etcdctl(&["snapshot", "status", "-w", format, file.to_str().unwrap()]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn keelson_snapshot_save_status_and_restore_do_what_etcdctl_does() {
    let dir = tempfile::tempdir().unwrap();
    let from_keelson = dir.path().join("from-keelson.snap");
    let from_etcd = dir.path().join("from-etcd.snap");
    let keelson_server = Server::start(keelson(), Ports::free(), &[]);
    let etcd = Server::etcd(Ports::free());
    let (want, want_leases) = runtime().block_on(async {
        let mut e = connect(etcd.endpoint()).await;
        load(&mut e).await;
        let mut k = connect(keelson_server.endpoint()).await;
        load(&mut k).await;
        (keys_at(&mut k, 0).await, leases(&mut k).await)
    });
    // Saved from either server, keelson's status of the file is etcdctl's.
    for (server, file) in [(&keelson_server, &from_keelson), (&etcd, &from_etcd)] {
        let (ok, said, err) = keelson_snapshot(&[
            "save",
            file.to_str().unwrap(),
            "--endpoints",
            &server.endpoint(),
        ]);
        assert!(ok, "{err}");
        assert_eq!(said, format!("Snapshot saved at {}\n", file.display()));
        for format in ["simple", "table", "json"] {
            let (ok, said, err) =
                keelson_snapshot(&["status", file.to_str().unwrap(), "-w", format]);
            assert!(ok, "{err}");
            assert_eq!(said, etcdctl_status(file, format), "-w {format}");
        }
    }
    // keelson's restore of its own snapshot serves what was saved.
    let data = dir.path().join("restored");
    let ports = Ports::free();
    let peer = format!("http://127.0.0.1:{}", ports.peer);
    let (ok, said, err) = keelson_snapshot(&[
        "restore",
        from_keelson.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--name",
        "node",
        "--initial-cluster",
        &format!("node={peer}"),
        "--initial-advertise-peer-urls",
        &peer,
    ]);
    assert!(ok, "{err}");
    assert!(said.starts_with("restored snapshot"), "{said}");
    let restored = Server::start_on(keelson(), ports, &[], |target, _| {
        std::fs::rename(&data, target).unwrap();
    });
    runtime().block_on(async {
        let mut c = connect(restored.endpoint()).await;
        assert_eq!(keys_at(&mut c, 0).await, want);
        assert_eq!(leases(&mut c).await, want_leases);
    });
    // A restore into a data dir in use, and of a file without its checksum, are refused.
    let (ok, _, err) = keelson_snapshot(&[
        "restore",
        from_keelson.to_str().unwrap(),
        "--data-dir",
        restored.data_dir().to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("not empty"), "{err}");
    let bare = dir.path().join("bare.db");
    let bytes = std::fs::read(&from_keelson).unwrap();
    std::fs::write(&bare, &bytes[..bytes.len() - 32]).unwrap();
    let (ok, _, err) = keelson_snapshot(&[
        "restore",
        bare.to_str().unwrap(),
        "--data-dir",
        dir.path().join("elsewhere").to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("snapshot missing hash but --skip-hash-check=false"),
        "{err}"
    );
}
