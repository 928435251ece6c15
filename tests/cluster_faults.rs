//! Three keelson members under faults, their peer traffic through the testkit's fault proxies,
//! while clients on every member put, get (linearizably) and compare-and-set a few keys, recording
//! every operation. Each run's history must check linearizable, and every acknowledged write must
//! be there at the end:
//! - the leader killed with SIGKILL every few seconds and restarted;
//! - the leader cut off from the others (a minority partition: it must not serve a stale
//!   linearizable read, nor acknowledge a write) and healed;
//! - a follower cut off, every peer message delayed, and the cluster split so that no side has a
//!   majority, then healed;
//! - a fourth member added as a learner, started, promoted and removed, again and again.
//!
//! Each run is bounded (`KEELSON_FAULT_SECONDS`, 12 s by default); set it higher for a soak.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use keelson_testkit::linearizability::{self, History, Op, Outcome};
use keelson_testkit::proxy::Faults;
use keelson_testkit::server::Server;
use rand::Rng;

mod common;

/// Keys the clients share (few, so that they contend).
const KEYS: [&str; 3] = ["k0", "k1", "k2"];
/// Clients, spread over the members.
const CLIENTS: usize = 6;
/// How long a client waits for an answer before it calls the outcome unknown.
const PATIENCE: Duration = Duration::from_secs(3);
/// How long a client waits after a failure (each unknown write makes the check costlier).
const BACK_OFF: Duration = Duration::from_millis(500);

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_keelson"))
}

fn run_seconds() -> u64 {
    std::env::var("KEELSON_FAULT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12)
}

/// One client: random operations on random keys through the member at `endpoint`, until `stop`.
async fn client(id: usize, endpoint: String, history: History, stop: Arc<AtomicBool>) {
    let mut counter = 0;
    let mut connection: Option<Client> = None;
    while !stop.load(Ordering::Relaxed) {
        let c = match connection.as_mut() {
            Some(c) => c,
            None => match Client::connect([endpoint.as_str()], None).await {
                Ok(c) => connection.insert(c),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (key, kind) = {
            let mut rng = rand::rng();
            (
                KEYS[rng.random_range(0..KEYS.len())],
                rng.random_range(0..3),
            )
        };
        counter += 1;
        let value = format!("c{id}-{counter}");
        match kind {
            0 => {
                let call = history.call(id, key, Op::Put(value.clone()));
                match tokio::time::timeout(PATIENCE, c.put(key, value, None)).await {
                    Ok(Ok(_)) => call.returned(Outcome::Written),
                    _ => {
                        call.unknown();
                        connection = None;
                        tokio::time::sleep(BACK_OFF).await;
                    }
                }
            }
            1 => {
                let call = history.call(id, key, Op::Get);
                match tokio::time::timeout(PATIENCE, c.get(key, None)).await {
                    Ok(Ok(got)) => {
                        let seen = got
                            .kvs()
                            .first()
                            .map(|kv| kv.value_str().unwrap().to_string());
                        call.returned(Outcome::Read(seen));
                    }
                    // A read that failed changed nothing.
                    _ => {
                        call.failed();
                        connection = None;
                        tokio::time::sleep(BACK_OFF).await;
                    }
                }
            }
            _ => {
                // Swap whatever this client last read for its own value.
                let seen = match c
                    .get(key, Some(GetOptions::new().with_serializable()))
                    .await
                {
                    Ok(got) => got
                        .kvs()
                        .first()
                        .map(|kv| kv.value_str().unwrap().to_string()),
                    Err(_) => {
                        connection = None;
                        tokio::time::sleep(BACK_OFF).await;
                        continue;
                    }
                };
                let compare = match &seen {
                    Some(v) => Compare::value(key, CompareOp::Equal, v.as_str()),
                    None => Compare::version(key, CompareOp::Equal, 0),
                };
                let txn =
                    Txn::new()
                        .when([compare])
                        .and_then([TxnOp::put(key, value.as_str(), None)]);
                let call = history.call(
                    id,
                    key,
                    Op::Cas {
                        expect: seen,
                        new: value,
                    },
                );
                match tokio::time::timeout(PATIENCE, c.txn(txn)).await {
                    Ok(Ok(answer)) => call.returned(Outcome::Swapped(answer.succeeded())),
                    _ => {
                        call.unknown();
                        connection = None;
                        tokio::time::sleep(BACK_OFF).await;
                    }
                }
            }
        }
    }
}

/// The member ids of `members`, in order.
async fn ids(members: &[Server]) -> Vec<u64> {
    let mut ids = Vec::new();
    for m in members {
        ids.push(common::member_id(&m.endpoint()).await);
    }
    ids
}

/// The index of the member the live members agree leads, waiting up to 20 s for one.
fn leader(members: &[Server], ids: &[u64], alive: &[bool]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for (i, m) in members.iter().enumerate().filter(|(i, _)| alive[*i]) {
            let metric = common::metric(&m.endpoint(), "etcd_server_is_leader");
            if metric == Some(1.0) {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no leader among {ids:x?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the clients against a fresh three-member cluster while `fault` acts on it (given the
/// members, their ids and the proxies' faults) until the run's time is up; then heals, reads
/// every key, and checks the history.
fn run(fault: impl Fn(&mut [Server], &[u64], &Faults, usize)) {
    let faults = Arc::new(Faults::default());
    let (mut members, _proxies) = Server::cluster_behind_proxies(binary(), 3, &[], &faults);
    let ids = common::runtime().block_on(ids(&members));
    let history = History::default();
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let endpoint = members[id % members.len()].endpoint();
            runtime.spawn(client(id, endpoint, history.clone(), stop.clone()))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(run_seconds());
    let mut round = 0;
    while Instant::now() < deadline {
        fault(&mut members, &ids, &faults, round);
        round += 1;
    }
    // Every fault leaves the members running; this heals the network.
    faults.heal();
    stop.store(true, Ordering::Relaxed);
    runtime.block_on(async {
        for c in clients {
            c.await.unwrap();
        }
    });
    // A last linearizable read of every key on every member, after the faults.
    common::runtime().block_on(async {
        for (i, m) in members.iter().enumerate() {
            let mut c = Client::connect([m.endpoint()], None).await.unwrap();
            for key in KEYS {
                // Healed, the cluster may still be electing: a read that fails is tried again.
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let call = history.call(CLIENTS + i, key, Op::Get);
                    match c.get(key, None).await {
                        Ok(got) => {
                            let seen = got
                                .kvs()
                                .first()
                                .map(|kv| kv.value_str().unwrap().to_string());
                            call.returned(Outcome::Read(seen));
                            break;
                        }
                        Err(e) => {
                            call.failed();
                            assert!(Instant::now() < deadline, "{e}\n{}", m.log());
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        }
    });
    let operations = history.operations();
    let acknowledged = operations
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Written | Outcome::Swapped(true)))
        .count();
    let unknown = operations
        .iter()
        .filter(|o| o.outcome == Outcome::Unknown)
        .count();
    eprintln!(
        "{} operations, {acknowledged} writes acknowledged, {unknown} outcomes unknown",
        operations.len()
    );
    assert!(
        acknowledged > 20,
        "too few writes acknowledged to mean anything: {acknowledged} of {}",
        operations.len()
    );
    if let Err(violation) = linearizability::check(&operations) {
        let logs: Vec<String> = members.iter().map(Server::log).collect();
        panic!(
            "{} on key {}:\n{:#?}\nlogs:\n{}",
            if violation.gave_up {
                "the checker gave up"
            } else {
                "not linearizable"
            },
            violation.key,
            violation.operations,
            logs.join("\n----\n")
        );
    }
}

#[test]
fn linearizable_while_the_leader_is_killed_and_restarted() {
    run(|members, ids, _, _| {
        let alive = vec![true; members.len()];
        let l = leader(members, ids, &alive);
        std::thread::sleep(Duration::from_secs(1));
        members[l].kill();
        std::thread::sleep(Duration::from_secs(2));
        members[l].launch();
    });
}

#[test]
fn linearizable_while_the_leader_or_a_follower_is_cut_off_delayed_or_the_cluster_split() {
    run(|members, ids, faults, round| {
        let alive = vec![true; members.len()];
        let l = leader(members, ids, &alive);
        std::thread::sleep(Duration::from_millis(500));
        match round % 4 {
            // The old leader alone on one side: it must stop serving linearizable reads.
            0 => faults.isolate(ids[l], ids),
            // A follower alone.
            1 => faults.isolate(ids[(l + 1) % 3], ids),
            // Every message late (a slow network, near the election timeout).
            2 => faults.delay(Duration::from_millis(300)),
            // Nobody with a majority: each member cut from both others, one way only for one
            // pair (an asymmetric partition).
            _ => {
                faults.isolate(ids[l], ids);
                faults.cut(ids[(l + 1) % 3], ids[(l + 2) % 3]);
            }
        }
        std::thread::sleep(Duration::from_secs(3));
        faults.heal();
        faults.delay(Duration::ZERO);
    });
}

/// Retries `change` on the member at `endpoint` for up to 30 s while the leader declines it for
/// now (not yet connected to every voter long enough, a learner not yet in sync, no leader).
fn reconfigure<T, F: std::future::Future<Output = Result<T, etcd_client::Error>>>(
    endpoint: &str,
    change: impl Fn(Client) -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    common::runtime().block_on(async {
        loop {
            let outcome = match Client::connect([endpoint], None).await {
                Ok(c) => change(c).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(done) => return done,
                Err(e) => assert!(Instant::now() < deadline, "{e}"),
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
}

#[test]
fn linearizable_while_members_join_are_promoted_and_are_removed() {
    use etcd_client::MemberAddOptions;
    run(|members, _, _, round| {
        // A fourth member: added as a learner, started, promoted to a voter, then removed.
        let ports = keelson_testkit::server::Ports::free();
        let url = format!("http://127.0.0.1:{}", ports.peer);
        let asked = members[round % 3].endpoint();
        let id = reconfigure(&asked, |mut c| {
            let url = url.clone();
            async move {
                let learner = Some(MemberAddOptions::new().with_is_learner());
                let added = c.member_add([url], learner).await?;
                Ok(added.member().map(|m| m.id()).unwrap_or_default())
            }
        });
        let mut joined = Server::join(binary(), members, &format!("j{round}"), ports, &[]);
        reconfigure(&asked, |mut c| async move {
            c.member_promote(id).await.map(drop)
        });
        std::thread::sleep(Duration::from_secs(1));
        reconfigure(&asked, |mut c| async move {
            c.member_remove(id).await.map(drop)
        });
        let status = joined.exit_within(Duration::from_secs(20));
        assert!(status.is_some_and(|s| !s.success()), "{}", joined.log());
    });
}
