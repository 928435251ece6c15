//! Differential test against real etcd 3.4 (Debian's `etcd-server`, started on free loopback
//! ports): the same random sequence of Range, Put, DeleteRange, Txn (nested, every compare),
//! Compact and lease requests goes to etcd through the `etcd-client` crate and to keelson's MVCC
//! store (after keelson's edge checks), and every answer is compared — responses field by field
//! (only the header fields the server fills in aside: cluster, member, raft term), errors by gRPC
//! code and exact message.
//!
//! `ETCD_DIFF_CASES=40 cargo test --test mvcc_vs_etcd` for a longer run.

mod support;

use etcd_client::Client;
use keelson_engine::mvcc::{Options, Store};
use keelson_testkit::etcd::Etcd;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use support::differential::{ask_etcd, ask_keelson, normalize};
use support::requests::{self, Request, Shape};

fn run(runtime: &tokio::runtime::Runtime, reqs: Vec<Request>) -> Result<(), TestCaseError> {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    // etcd's minimum lease time to live with its default timings.
    let mut store = Store::open(
        dir.path().join("db"),
        Options {
            min_lease_ttl: 2,
            ..Options::default()
        },
    )
    .unwrap();
    let mut index = 0;
    runtime.block_on(async {
        let mut client = Client::connect([etcd.endpoint()], None).await.unwrap();
        for (step, req) in reqs.into_iter().map(normalize).enumerate() {
            let theirs = ask_etcd(&mut client, &req).await;
            let mine = ask_keelson(&mut store, &mut index, &req);
            prop_assert_eq!(&mine, &theirs, "step {}: {:?}", step, req);
        }
        Ok(())
    })
}

#[test]
fn the_store_answers_as_etcd_does() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cases = std::env::var("ETCD_DIFF_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(30);
    let mut runner = TestRunner::new(Config {
        cases,
        max_shrink_iters: 100,
        failure_persistence: None,
        ..Config::default()
    });
    let sequence = prop::collection::vec(requests::request(Shape::Comparable), 1..120);
    if let Err(e) = runner.run(&sequence, |reqs| run(&runtime, reqs)) {
        panic!("{e}");
    }
}
