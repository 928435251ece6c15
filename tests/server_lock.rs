//! etcd's Lock and Election services against the real binary. The same steps through the
//! `etcd-client` crate against keelson and a real etcd 3.4 started with the same flags, answers
//! compared: locks with a missing, a given and no lease, re-entry, a waiter released by an unlock,
//! and every Election call with its errors, an Observe stream following the leader through
//! proclaims, a re-campaign, a resignation and a revoked lease. `etcdctl lock` and `etcdctl elect`
//! (campaigners and `-l`) compared the same way, left running while the others wait. Then keelson
//! alone: fifty clients contending for one lock, at most one holding it at any revision and every
//! one acquiring it; a holder whose lease expires hands the lock on; a waiter whose client gives up
//! takes its key back; and a leader whose client is gone (its lease expires) hands leadership to
//! the next campaigner, which an observer sees.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, GetOptions, LeaderKey, LockOptions, ObserveStream, ProclaimOptions, ResignOptions,
};
use keelson_testkit::server::{Ports, Server};

mod common;

use common::etcdctl::{Running, Step, run, same_output_as_etcd, settle, step};
use common::{runtime, said};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A lock's answer: the key and the revision it was granted at.
fn locked(r: &etcd_client::LockResponse) -> String {
    format!(
        "locked {} rev {}",
        text(r.key()),
        r.header().unwrap().revision()
    )
}

/// A leader's value as Leader and Observe tell it.
fn leader_is(r: &etcd_client::LeaderResponse) -> String {
    let kv = r.kv().unwrap();
    format!(
        "leader {}={} created {} modified {} lease {} rev {}",
        text(kv.key()),
        text(kv.value()),
        kv.create_revision(),
        kv.mod_revision(),
        kv.lease(),
        r.header().unwrap().revision()
    )
}

/// The next leader value an Observe stream sends.
async fn observed(stream: &mut ObserveStream) -> String {
    let r = tokio::time::timeout(Duration::from_secs(15), stream.message())
        .await
        .expect("the observer hears of the leader");
    said(r, |r| leader_is(r.as_ref().expect("the stream goes on")))
}

/// Waits until `count` keys start with `prefix`: the contenders have joined.
async fn await_contenders(c: &mut Client, prefix: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = c
            .get(
                prefix,
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .unwrap();
        if r.count() as usize == count {
            return;
        }
        assert!(Instant::now() < deadline, "{count} contenders never joined");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The lock steps, against the server at `endpoint`; every answer, in order.
async fn lock_steps(c: &mut Client) -> Vec<String> {
    let mut out = Vec::new();
    let lease = |id: i64| Some(LockOptions::new().with_lease(id));
    // A lease that does not exist.
    out.push(said(c.lock("l", lease(4242)).await, locked));
    for id in [7001, 7002] {
        c.lease_grant(60, Some(etcd_client::LeaseGrantOptions::new().with_id(id)))
            .await
            .unwrap();
    }
    let held = c.lock("l", lease(7001)).await.unwrap();
    out.push(locked(&held));
    // The holder locks again: re-entrant, the same key.
    out.push(said(c.lock("l", lease(7001)).await, locked));
    // A second contender waits until the holder unlocks.
    let mut other = c.clone();
    let waiter = tokio::spawn(async move { other.lock("l", lease(7002)).await });
    await_contenders(c, "l/", 2).await;
    out.push(format!(
        "waiter done before the unlock: {}",
        waiter.is_finished()
    ));
    let r = c.unlock(held.key()).await;
    out.push(said(r, |r| {
        format!("unlocked rev {}", r.header().unwrap().revision())
    }));
    let next = waiter.await.unwrap().unwrap();
    out.push(locked(&next));
    // Unlocking what is not held answers as a delete of nothing does.
    let r = c.unlock("l/nothing").await;
    out.push(said(r, |r| {
        format!("unlocked rev {}", r.header().unwrap().revision())
    }));
    c.unlock(next.key()).await.unwrap();
    // No lease: the server grants one of 60 s for the lock.
    let r = c.lock("l", None).await.unwrap();
    let id = i64::from_str_radix(text(r.key()).trim_start_matches("l/"), 16).unwrap();
    let ttl = c.lease_time_to_live(id, None).await.unwrap();
    out.push(format!(
        "locked with a lease of {} s, rev {}",
        ttl.granted_ttl(),
        r.header().unwrap().revision()
    ));
    out
}

/// The election steps, against the server at `endpoint`; every answer, in order.
async fn election_steps(c: &mut Client) -> Vec<String> {
    let mut out = Vec::new();
    let leader_key = |r: &etcd_client::CampaignResponse| r.leader().unwrap().clone();
    let show_key = |k: &LeaderKey| {
        format!(
            "{} {} rev {} lease {}",
            text(k.name()),
            text(k.key()),
            k.rev(),
            k.lease()
        )
    };
    out.push(said(c.leader("e").await, leader_is));
    for id in [8001, 8002, 8003] {
        c.lease_grant(60, Some(etcd_client::LeaseGrantOptions::new().with_id(id)))
            .await
            .unwrap();
    }
    let first = c.campaign("e", "v1", 8001).await.unwrap();
    out.push(format!(
        "campaigned {} at {}",
        show_key(&leader_key(&first)),
        first.header().unwrap().revision()
    ));
    out.push(said(c.leader("e").await, leader_is));
    let mut observer = c.observe("e").await.unwrap();
    out.push(observed(&mut observer).await);
    let as_leader = |k: LeaderKey| Some(ProclaimOptions::new().with_leader(k));
    let r = c.proclaim("v2", as_leader(leader_key(&first))).await;
    out.push(said(r, |r| {
        format!("proclaimed rev {}", r.header().unwrap().revision())
    }));
    out.push(observed(&mut observer).await);
    // Proclaims by one who does not lead, and by one who does not say who they are.
    let stale = leader_key(&first).with_rev(1);
    let r = c.proclaim("v9", as_leader(stale.clone())).await;
    out.push(said(r, |r| {
        format!("proclaimed rev {}", r.header().unwrap().revision())
    }));
    let r = c.proclaim("v9", None).await;
    out.push(said(r, |r| {
        format!("proclaimed rev {}", r.header().unwrap().revision())
    }));
    // A second campaigner waits behind the leader.
    let mut other = c.clone();
    let second = tokio::spawn(async move { other.campaign("e", "w1", 8002).await });
    await_contenders(c, "e/", 2).await;
    out.push(format!(
        "second done before the resign: {}",
        second.is_finished()
    ));
    // The leader campaigns again with a new value: its place is kept, its value proclaimed.
    let again = c.campaign("e", "v3", 8001).await.unwrap();
    out.push(format!(
        "campaigned again {} at {}",
        show_key(&leader_key(&again)),
        again.header().unwrap().revision()
    ));
    out.push(observed(&mut observer).await);
    let resign = |k: LeaderKey| Some(ResignOptions::new().with_leader(k));
    let r = c.resign(resign(leader_key(&again))).await;
    out.push(said(r, |r| {
        format!("resigned rev {}", r.header().unwrap().revision())
    }));
    let second = second.await.unwrap().unwrap();
    out.push(format!(
        "second campaigned {} at {}",
        show_key(&leader_key(&second)),
        second.header().unwrap().revision()
    ));
    out.push(observed(&mut observer).await);
    // Resigns without a key, and with one that no longer leads.
    let r = c.resign(None).await;
    out.push(said(r, |r| {
        format!("resigned rev {}", r.header().unwrap().revision())
    }));
    let r = c.resign(resign(stale)).await;
    out.push(said(r, |r| {
        format!("resigned rev {}", r.header().unwrap().revision())
    }));
    // The leader's lease goes: nobody leads until the next campaigner, whom the observer sees.
    c.lease_revoke(8002).await.unwrap();
    out.push(said(c.leader("e").await, leader_is));
    let third = c.campaign("e", "x1", 8003).await.unwrap();
    out.push(format!(
        "third campaigned {} at {}",
        show_key(&leader_key(&third)),
        third.header().unwrap().revision()
    ));
    out.push(observed(&mut observer).await);
    out
}

async fn steps(endpoint: String) -> Vec<String> {
    let mut c = Client::connect([endpoint], None).await.unwrap();
    let mut out = lock_steps(&mut c).await;
    out.extend(election_steps(&mut c).await);
    out
}

#[test]
fn lock_and_election_answer_as_etcd_answers() {
    let want = common::same_answers_as_etcd(&[], steps);
    // The steps did what they say on etcd, so agreeing with it means something.
    assert!(want[0].starts_with("error"), "{}", want[0]);
    assert_eq!(want[1], "locked l/1b59 rev 2");
    assert!(
        want.iter().any(|w| w.contains("leader e/1f43=x1")),
        "{want:#?}"
    );
}

/// Replaces each lease id printed after `prefix` (etcdctl's contender keys) with its order of
/// appearance, as the servers choose their own ids.
fn number_leases(outputs: &mut [String], prefixes: &[&str]) {
    let mut ids: Vec<String> = Vec::new();
    for output in outputs.iter_mut() {
        for prefix in prefixes {
            let mut at = 0;
            while let Some(found) = output[at..].find(prefix) {
                let start = at + found + prefix.len();
                let end = output[start..]
                    .find(|c: char| !c.is_ascii_hexdigit())
                    .map_or(output.len(), |e| start + e);
                let id = output[start..end].to_string();
                let n = ids.iter().position(|i| *i == id).unwrap_or_else(|| {
                    ids.push(id);
                    ids.len() - 1
                });
                let name = format!("<lease {n}>");
                output.replace_range(start..end, &name);
                at = start + name.len();
            }
        }
    }
}

/// The etcdctl session: a lock taken to run a command; a lock held while a second waits for it
/// and gets it when the first is interrupted; a campaign, a listener, and a second campaigner
/// that leads once the first is interrupted. What each printed.
fn etcdctl_session(endpoint: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    let once = Step {
        args: [
            "lock",
            "l1",
            "--",
            "sh",
            "-c",
            "echo $ETCD_LOCK_KEY $ETCD_LOCK_REV",
        ]
        .map(String::from)
        .to_vec(),
        stdin: None,
    };
    out.push(run(endpoint, &once));
    let contenders = |prefix: &str| {
        let said = run(
            endpoint,
            &step(&format!("get {prefix} --prefix --keys-only")),
        );
        said.lines().filter(|l| l.starts_with(prefix)).count()
    };
    let await_contenders = |prefix: &str, count: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while contenders(prefix) < count {
            assert!(Instant::now() < deadline, "{count} never joined {prefix}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let holder = Running::start(endpoint, &["lock", "l2"], dir.path(), 0);
    holder.await_output();
    let waiter = Running::start(endpoint, &["lock", "l2", "echo", "got it"], dir.path(), 1);
    await_contenders("l2/", 2);
    out.push(format!("waiting: {:?}", waiter.printed()));
    out.push(holder.interrupt());
    out.push(waiter.finish());
    let leader = Running::start(endpoint, &["elect", "e1", "p1"], dir.path(), 2);
    leader.await_lines(2);
    let listener = Running::start(endpoint, &["elect", "-l", "e1"], dir.path(), 3);
    listener.await_lines(2);
    let second = Running::start(endpoint, &["elect", "e1", "p2"], dir.path(), 4);
    await_contenders("e1/", 2);
    out.push(format!("second waiting: {:?}", second.printed()));
    out.push(leader.interrupt());
    second.await_lines(2);
    listener.await_lines(4);
    settle(std::slice::from_ref(&listener));
    out.push(listener.interrupt());
    out.push(second.interrupt());
    number_leases(&mut out, &["l1/", "l2/", "e1/"]);
    out
}

#[test]
fn etcdctl_lock_and_elect_see_keelson_as_they_see_etcd() {
    let want = same_output_as_etcd(etcdctl_session);
    assert!(want[0].contains("l1/<lease 0> 2"), "{}", want[0]);
    assert!(want.last().unwrap().contains("p2"), "{want:#?}");
}

/// Clients contending for one lock in the contention test.
const CONTENDERS: usize = 50;

#[test]
fn fifty_contenders_hold_a_lock_one_at_a_time_and_each_gets_it() {
    let keelson = Server::start(Path::new(env!("CARGO_BIN_EXE_keelson")), Ports::free(), &[]);
    let endpoint = keelson.endpoint();
    runtime().block_on(async {
        let c = Client::connect([endpoint], None).await.unwrap();
        let holding = Arc::new(AtomicUsize::new(0));
        let mut contenders = Vec::new();
        for i in 0..CONTENDERS {
            let mut c = c.clone();
            let holding = holding.clone();
            contenders.push(tokio::spawn(async move {
                let lease = c.lease_grant(30, None).await.unwrap().id();
                let options = Some(LockOptions::new().with_lease(lease));
                let held = c.lock("contended", options).await.unwrap();
                assert_eq!(holding.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                // The holder's critical section: a write that says it holds the lock.
                c.put("contended-holder", i.to_string(), None)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
                holding.fetch_sub(1, Ordering::SeqCst);
                let acquired = held.header().unwrap().revision();
                let released = c.unlock(held.key()).await.unwrap();
                (acquired, released.header().unwrap().revision())
            }));
        }
        let mut held = Vec::new();
        for contender in contenders {
            let got = tokio::time::timeout(Duration::from_secs(120), contender)
                .await
                .expect("every contender acquires the lock");
            held.push(got.unwrap());
        }
        // In the store's own order: each holder acquired at or after the previous one released.
        held.sort();
        for pair in held.windows(2) {
            assert!(pair[1].0 >= pair[0].1, "held at once: {pair:?}");
        }
    });
}

#[test]
fn a_holder_whose_lease_expires_hands_the_lock_on_and_a_waiter_that_gives_up_leaves() {
    let keelson = Server::start(Path::new(env!("CARGO_BIN_EXE_keelson")), Ports::free(), &[]);
    runtime().block_on(async {
        let mut c = Client::connect([keelson.endpoint()], None).await.unwrap();
        // A holder on a 2 s lease that nobody renews: its client is gone.
        let gone = c.lease_grant(2, None).await.unwrap().id();
        c.lock("l", Some(LockOptions::new().with_lease(gone)))
            .await
            .unwrap();
        // A waiter that gives up before then takes its key back.
        let quitter = c.lease_grant(60, None).await.unwrap().id();
        let mut other = c.clone();
        let quitting = tokio::spawn(async move {
            other
                .lock("l", Some(LockOptions::new().with_lease(quitter)))
                .await
        });
        await_contenders(&mut c, "l/", 2).await;
        quitting.abort();
        await_contenders(&mut c, "l/", 1).await;
        // A waiter that stays gets the lock once the holder's lease expires.
        let stays = c.lease_grant(60, None).await.unwrap().id();
        let held = tokio::time::timeout(
            Duration::from_secs(20),
            c.lock("l", Some(LockOptions::new().with_lease(stays))),
        )
        .await
        .expect("the lock is handed on")
        .unwrap();
        assert_eq!(text(held.key()), format!("l/{stays:x}"));
        let ttl = c.lease_time_to_live(gone, None).await.unwrap();
        assert_eq!(ttl.ttl(), -1, "the holder's lease expired");
    });
}

#[test]
fn a_leader_whose_client_is_gone_hands_leadership_to_the_next_campaigner() {
    let keelson = Server::start(Path::new(env!("CARGO_BIN_EXE_keelson")), Ports::free(), &[]);
    runtime().block_on(async {
        let mut c = Client::connect([keelson.endpoint()], None).await.unwrap();
        // The leader keeps its 3 s lease alive while its client lives.
        let leader_lease = c.lease_grant(3, None).await.unwrap().id();
        let (mut keeper, mut answers) = c.lease_keep_alive(leader_lease).await.unwrap();
        let leader_client = tokio::spawn(async move {
            loop {
                keeper.keep_alive().await.unwrap();
                answers.message().await.unwrap().unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        c.campaign("svc", "first", leader_lease).await.unwrap();
        let mut observer = c.observe("svc").await.unwrap();
        assert!(observed(&mut observer).await.contains("=first"));
        let next_lease = c.lease_grant(60, None).await.unwrap().id();
        let mut other = c.clone();
        let next = tokio::spawn(async move { other.campaign("svc", "next", next_lease).await });
        await_contenders(&mut c, "svc/", 2).await;
        // Alive, the leader stays leader past its lease's TTL.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(
            !next.is_finished(),
            "leadership moved while the leader lived"
        );
        // Its client dies: the lease expires and the next campaigner leads.
        leader_client.abort();
        let next = tokio::time::timeout(Duration::from_secs(20), next)
            .await
            .expect("the next campaigner leads")
            .unwrap()
            .unwrap();
        assert_eq!(next.leader().unwrap().lease(), next_lease);
        assert!(observed(&mut observer).await.contains("=next"));
        let leader = c.leader("svc").await.unwrap();
        assert_eq!(leader.kv().unwrap().value(), b"next");
    });
}
