//! A keelson data file is an etcd data file, and the other way round — checked with real etcd 3.4:
//!
//! - keelson applies a random history; `etcdctl snapshot status` reads the file and reports its
//!   revision; `etcdctl snapshot restore` of it gives an etcd that serves the same keys at every
//!   revision, the same leases with the same keys, and then answers further requests exactly as
//!   keelson does.
//! - etcd applies a random history; keelson opens etcd's snapshot (building its index, which etcd's
//!   file lacks), serves the same keys at every revision, and then answers further requests
//!   exactly as etcd does.

mod support;

use std::path::Path;

use etcd_client::Client;
use keelson_engine::mvcc::{self, Options, Store};
use keelson_proto::etcdserverpb::RangeRequest;
use keelson_testkit::etcd::{Etcd, snapshot_status};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use support::differential::{ask_etcd, ask_keelson, normalize};
use support::requests::{self, Request, Shape};

fn options() -> Options {
    // etcd's minimum lease time to live with its default timings.
    Options {
        min_lease_ttl: 2,
        ..Options::default()
    }
}

/// Runs `check` on a few random histories of etcd requests.
fn for_histories(
    check: impl Fn(&tokio::runtime::Runtime, Vec<Request>, Vec<Request>) -> Result<(), TestCaseError>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 3,
        max_shrink_iters: 50,
        failure_persistence: None,
        ..Config::default()
    });
    let history = prop::collection::vec(requests::request(Shape::Comparable), 20..150);
    let more = prop::collection::vec(requests::request(Shape::Comparable), 10..40);
    let run = |(history, more): (Vec<Request>, Vec<Request>)| {
        check(
            &runtime,
            history.into_iter().map(normalize).collect(),
            more.into_iter().map(normalize).collect(),
        )
    };
    if let Err(e) = runner.run(&(history, more), run) {
        panic!("{e}");
    }
}

/// Every key at every readable revision, and the leases with their keys, agree; then `more`
/// requests get the same answers from both.
async fn agree(
    client: &mut Client,
    store: &mut Store,
    more: &[Request],
) -> Result<(), TestCaseError> {
    let revs = store.revisions();
    for revision in revs.compacted.max(1)..=revs.current {
        let all = Request::Range(RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision,
            ..Default::default()
        });
        let mut index = store.applied().0;
        prop_assert_eq!(
            ask_keelson(store, &mut index, &all),
            ask_etcd(client, &all).await,
            "keys at revision {}",
            revision
        );
    }
    let view = store.db().begin_read().unwrap();
    let mut leases: Vec<(i64, i64, Vec<Vec<u8>>)> = Vec::new();
    for lease in mvcc::leases(&view).unwrap() {
        leases.push((
            lease.id,
            lease.ttl,
            mvcc::lease_keys(&view, lease.id).unwrap(),
        ));
    }
    drop(view);
    let mut theirs = Vec::new();
    for lease in client.leases().await.unwrap().leases() {
        let ttl = client
            .lease_time_to_live(
                lease.id(),
                Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()),
            )
            .await
            .unwrap();
        let mut keys = ttl.keys().to_vec();
        keys.sort();
        theirs.push((lease.id(), ttl.granted_ttl(), keys));
    }
    theirs.sort();
    leases.sort();
    prop_assert_eq!(leases, theirs, "leases and their keys");
    let mut index = store.applied().0;
    for (step, req) in more.iter().enumerate() {
        let mine = ask_keelson(store, &mut index, req);
        prop_assert_eq!(
            mine,
            ask_etcd(client, req).await,
            "request {} after the handover: {:?}",
            step,
            req
        );
    }
    Ok(())
}

#[test]
fn etcd_restores_a_keelson_data_file_and_serves_the_same_history() {
    for_histories(|runtime, history, more| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut store = Store::open(&path, options()).unwrap();
        let mut index = 0;
        for req in &history {
            ask_keelson(&mut store, &mut index, req);
        }
        store.sync().unwrap();
        let revision = store.revisions().current;
        // etcdctl waits for the file lock the store holds.
        drop(store);
        prop_assert_eq!(
            snapshot_status(&path).revision,
            revision,
            "etcdctl snapshot status"
        );
        let etcd = Etcd::restore(&path, true);
        let mut store = Store::open(&path, options()).unwrap();
        runtime.block_on(async {
            let mut client = Client::connect([etcd.endpoint()], None).await.unwrap();
            agree(&mut client, &mut store, &more).await
        })
    });
}

/// `etcdctl snapshot save`'s file without the sha256 it appends: the data file itself.
fn strip_hash(snapshot: &Path, db: &Path) {
    let bytes = std::fs::read(snapshot).unwrap();
    assert_eq!(bytes.len() % 512, 32, "a snapshot ends in its sha256");
    std::fs::write(db, &bytes[..bytes.len() - 32]).unwrap();
}

#[test]
fn keelson_opens_an_etcd_data_file_and_serves_the_same_history() {
    for_histories(|runtime, history, more| {
        let etcd = Etcd::start();
        let dir = tempfile::tempdir().unwrap();
        runtime.block_on(async {
            let mut client = Client::connect([etcd.endpoint()], None).await.unwrap();
            for req in &history {
                ask_etcd(&mut client, req).await;
            }
            let snapshot = dir.path().join("snapshot");
            etcd.snapshot(&snapshot);
            strip_hash(&snapshot, &dir.path().join("db"));
            let mut store = Store::open(dir.path().join("db"), options()).unwrap();
            agree(&mut client, &mut store, &more).await
        })
    });
}
