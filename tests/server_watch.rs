//! etcd's Watch service through the `etcd-client` crate: the same steps against keelson and a real
//! etcd 3.4 started with the same flags, every response compared (headers by revision; the ids of
//! member and cluster differ by design) — watchers replaying history with and without `prev_kv`,
//! a prefix with a filter, a start at a compacted revision, client-chosen and duplicate ids, an
//! empty range, progress, cancel, and live events after all of them. Then keelson alone: a
//! watcher whose client stops reading while thousands of writes go by receives every one of them,
//! in order, once it reads again; and SIGTERM ends open streams and the member.

use std::path::Path;
use std::time::Duration;

use etcd_client::{Client, EventType, WatchFilterType, WatchOptions, WatchResponse, WatchStream};
use keelson_testkit::server::{Ports, Server};

mod common;

use common::runtime;

/// What a response says, without the member's and cluster's ids.
fn seen(r: &WatchResponse) -> String {
    let events: Vec<String> = r
        .events()
        .iter()
        .map(|e| {
            let kv = |kv: Option<&etcd_client::KeyValue>| {
                kv.map(|kv| {
                    format!(
                        "{}={} c{} m{} v{}",
                        String::from_utf8_lossy(kv.key()),
                        String::from_utf8_lossy(kv.value()),
                        kv.create_revision(),
                        kv.mod_revision(),
                        kv.version()
                    )
                })
            };
            let kind = if e.event_type() == EventType::Put {
                "PUT"
            } else {
                "DELETE"
            };
            format!("{kind} {:?} prev {:?}", kv(e.kv()), kv(e.prev_kv()))
        })
        .collect();
    format!(
        "rev {} id {} created {} canceled {} compact {} reason {:?} events {events:?}",
        r.header().map_or(-9, |h| h.revision()),
        r.watch_id(),
        r.created(),
        r.canceled(),
        r.compact_revision(),
        r.cancel_reason()
    )
}

/// Every response that arrives until the stream is quiet for half a second, in order for each
/// watcher (etcd orders the responses of different watchers to one batch at random).
async fn drain(stream: &mut WatchStream, out: &mut Vec<String>) {
    let mut got = Vec::new();
    while let Ok(r) = tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
        let r = r.unwrap().expect("the stream goes on");
        got.push((r.watch_id(), seen(&r)));
    }
    got.sort_by_key(|(id, _)| *id);
    out.extend(got.into_iter().map(|(_, r)| r));
}

/// The steps, against the server at `endpoint`; returns every response, in order.
async fn steps(endpoint: String) -> Vec<String> {
    let mut c = Client::connect([endpoint], None).await.unwrap();
    for (k, v) in [("a", "1"), ("a", "2"), ("b/x", "3"), ("c", "4")] {
        c.put(k, v, None).await.unwrap();
    }
    c.compact(3, None).await.unwrap();
    let mut out = Vec::new();
    let mut w = c
        .watch(
            "a",
            Some(WatchOptions::new().with_start_revision(3).with_prev_key()),
        )
        .await
        .unwrap();
    drain(&mut w, &mut out).await;
    let creates = [
        (
            "b/",
            WatchOptions::new()
                .with_prefix()
                .with_filters([WatchFilterType::NoPut]),
        ),
        ("c", WatchOptions::new().with_start_revision(1)),
        (
            "c",
            WatchOptions::new().with_watch_id(7).with_start_revision(2),
        ),
        ("c", WatchOptions::new().with_watch_id(7)),
        ("z", WatchOptions::new().with_range("a")),
        (
            "",
            WatchOptions::new().with_all_keys().with_start_revision(4),
        ),
    ];
    for (key, options) in creates {
        w.watch(key, Some(options)).await.unwrap();
        drain(&mut w, &mut out).await;
    }
    w.request_progress().await.unwrap();
    drain(&mut w, &mut out).await;
    c.put("a", "5", None).await.unwrap();
    drain(&mut w, &mut out).await;
    c.delete("b/x", None).await.unwrap();
    drain(&mut w, &mut out).await;
    w.cancel(7).await.unwrap();
    drain(&mut w, &mut out).await;
    w.cancel(7).await.unwrap();
    c.put("c", "6", None).await.unwrap();
    drain(&mut w, &mut out).await;
    out
}

#[test]
fn watch_answers_as_etcd_answers() {
    let keelson = Server::start(Path::new(env!("CARGO_BIN_EXE_keelson")), Ports::free(), &[]);
    let etcd = Server::etcd(Ports::free());
    let (got, want) = runtime().block_on(async {
        (
            steps(keelson.endpoint()).await,
            steps(etcd.endpoint()).await,
        )
    });
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "response {i}\nkeelson: {got:#?}\netcd: {want:#?}");
    }
    assert_eq!(got.len(), want.len());
}

#[test]
fn a_watcher_that_stops_reading_misses_nothing() {
    let keelson = Server::start(Path::new(env!("CARGO_BIN_EXE_keelson")), Ports::free(), &[]);
    runtime().block_on(async {
        let mut c = Client::connect([keelson.endpoint()], None).await.unwrap();
        let mut slow = c
            .watch(
                "k/",
                Some(WatchOptions::new().with_prefix().with_prev_key()),
            )
            .await
            .unwrap();
        let first = slow.message().await.unwrap().unwrap();
        assert!(first.created());
        let mut fast = c
            .watch("k/", Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap();
        assert!(fast.message().await.unwrap().unwrap().created());
        let writes = 3000;
        let writer = {
            let mut c = c.clone();
            tokio::spawn(async move {
                for i in 0..writes {
                    c.put(format!("k/{}", i % 50), format!("{i:01000}"), None)
                        .await
                        .unwrap();
                }
            })
        };
        // The fast watcher reads as the writes happen; the slow one reads only afterwards.
        let mut fast_seen = 0;
        while fast_seen < writes {
            let r = fast.message().await.unwrap().unwrap();
            fast_seen += r.events().len();
        }
        writer.await.unwrap();
        let mut values = Vec::new();
        while values.len() < writes {
            let r = tokio::time::timeout(Duration::from_secs(10), slow.message())
                .await
                .expect("the slow watcher catches up")
                .unwrap()
                .unwrap();
            assert!(!r.canceled(), "{r:?}");
            for e in r.events() {
                let kv = e.kv().unwrap();
                assert_eq!(
                    kv.mod_revision(),
                    values.len() as i64 + 2,
                    "in order, no gap"
                );
                if values.len() >= 50 {
                    let prev = e.prev_kv().expect("prev_kv");
                    assert_eq!(prev.mod_revision(), kv.mod_revision() - 50);
                }
                values.push(kv.value_str().unwrap().parse::<usize>().unwrap());
            }
        }
        assert_eq!(values, (0..writes).collect::<Vec<_>>());
    });
}

#[test]
fn sigterm_ends_open_watch_streams_and_the_member() {
    let mut keelson = Server::start(Path::new(env!("CARGO_BIN_EXE_keelson")), Ports::free(), &[]);
    runtime().block_on(async {
        let mut c = Client::connect([keelson.endpoint()], None).await.unwrap();
        let mut streams = Vec::new();
        for key in ["a", "b", "c"] {
            let mut w = c.watch(key, None).await.unwrap();
            assert!(w.message().await.unwrap().unwrap().created());
            streams.push(w);
        }
        keelson.send_term();
        for mut w in streams {
            // The stream ends (cleanly or with an error), rather than waiting for events forever.
            let ended = tokio::time::timeout(Duration::from_secs(15), w.message()).await;
            assert!(matches!(ended, Ok(Ok(None)) | Ok(Err(_))), "{ended:?}");
        }
    });
    // Well inside the stop watchdog's 10 s: open streams do not hold the member up.
    let status = keelson
        .exit_within(Duration::from_secs(8))
        .expect("the member exits");
    assert!(status.success(), "{status:?}");
}

/// Keys put, then deleted in one revision, in the fragment test.
const KEYS: usize = 80;

/// Fragments and progress notifications, against keelson and etcd started alike (same ports, so
/// the same ids and header sizes): a txn of large values seen by a watcher that asked for
/// fragments arrives in the same parts from both, and an idle watcher that asked for progress
/// notifications gets them at the current revision.
async fn fragment_and_progress_steps(endpoint: String) -> (Vec<usize>, Vec<usize>, i64) {
    let mut c = Client::connect([endpoint.clone()], None).await.unwrap();
    let mut parts = c
        .watch(
            "f/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_prev_key()
                    .with_fragment(),
            ),
        )
        .await
        .unwrap();
    assert!(parts.message().await.unwrap().unwrap().created());
    let mut whole = c
        .watch(
            "f/",
            Some(WatchOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    assert!(whole.message().await.unwrap().unwrap().created());
    let mut idle = c
        .watch("idle", Some(WatchOptions::new().with_progress_notify()))
        .await
        .unwrap();
    assert!(idle.message().await.unwrap().unwrap().created());
    // Each put fits the request limit; the delete of them all, with their previous values, is more
    // than the limit and gRPC's 512 KiB allowance.
    for i in 0..KEYS {
        c.put(format!("f/{i:02}"), vec![b'v'; 7000 + i * 10], None)
            .await
            .unwrap();
    }
    let deleted = c
        .delete("f/", Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    let revision = deleted.header().unwrap().revision();
    let sizes = |mut stream: WatchStream| async move {
        let mut sizes = Vec::new();
        while sizes.iter().sum::<usize>() < 2 * KEYS {
            let r = stream.message().await.unwrap().unwrap();
            sizes.push(r.events().len());
        }
        sizes
    };
    let fragmented = sizes(parts).await;
    let unfragmented = sizes(whole).await;
    let progress = tokio::time::timeout(Duration::from_secs(10), idle.message())
        .await
        .expect("a progress notification")
        .unwrap()
        .unwrap();
    assert!(progress.events().is_empty() && !progress.canceled());
    assert_eq!(progress.header().unwrap().revision(), revision);
    (fragmented, unfragmented, revision)
}

#[test]
fn fragments_and_progress_notifications_as_etcd_sends_them() {
    let ports = Ports::free();
    let flags = [
        "--max-request-bytes",
        "8192",
        "--experimental-watch-progress-notify-interval",
        "300ms",
    ];
    let mut etcd = Server::start(Path::new("/usr/bin/etcd"), ports, &flags);
    let want = runtime().block_on(fragment_and_progress_steps(etcd.endpoint()));
    etcd.terminate();
    drop(etcd);
    let keelson = Server::start(Path::new(env!("CARGO_BIN_EXE_keelson")), ports, &flags);
    let got = runtime().block_on(fragment_and_progress_steps(keelson.endpoint()));
    assert_eq!(got, want);
    assert!(got.0.len() > KEYS + 1, "split into parts: {got:?}");
    assert_eq!(got.1.len(), KEYS + 1, "not split unless asked: {got:?}");
    let gauge = |name| common::metric(&keelson.endpoint(), name);
    assert_eq!(gauge("etcd_debugging_mvcc_pending_events_total"), Some(0.0));
    assert_eq!(gauge("etcd_debugging_mvcc_watch_stream_total"), Some(0.0));
}
