//! etcd's Watch service through the `etcd-client` crate: the same steps against keelson and a real
//! etcd 3.4 started with the same flags, every response compared (headers by revision; the ids of
//! member and cluster differ by design) — watchers replaying history with and without `prev_kv`,
//! a prefix with a filter, a start at a compacted revision, client-chosen and duplicate ids, an
//! empty range, progress, cancel, and live events after all of them; fragments and progress
//! notifications, part sizes compared. Then keelson alone: a watcher whose client stops reading
//! while thousands of writes go by receives every one of them, in order, once it reads again (and
//! a progress request waits for it); a watch resumed at the last revision seen plus one, across a
//! kill -9, misses nothing; a List-then-Watch reflector ends with exactly the server's state; a
//! write storm past 10 000 watchers and a stalled one keeps the heap bounded; random writes,
//! compactions, creates and cancels are checked against a model of the store; and SIGTERM ends
//! open streams and the member. A client that closes its half of a stream keeps its watcher, on
//! both servers.

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
    common::same_answers_as_etcd(&[], steps);
}

/// A client that sends its create request and closes its half of the stream (as a one-shot gRPC
/// tool does) keeps its watcher: the steps, against the server at `endpoint`.
async fn half_closed_steps(endpoint: String) -> Vec<String> {
    use keelson_proto::codec::ObservedCodec;
    use keelson_proto::etcdserverpb::{self as pb, watch_request::RequestUnion};
    let create = pb::WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key: b"hc".to_vec(),
            ..Default::default()
        })),
    };
    let mut grpc = common::grpc(&endpoint).await;
    let path = http::uri::PathAndQuery::from_static("/etcdserverpb.Watch/Watch");
    let codec = ObservedCodec::<pb::WatchRequest, pb::WatchResponse>::default();
    let requests = futures_lite::stream::iter([create]);
    let mut answers = grpc
        .streaming(tonic::Request::new(requests), path, codec)
        .await
        .unwrap()
        .into_inner();
    let mut c = Client::connect([endpoint], None).await.unwrap();
    let mut out = Vec::new();
    let created = answers
        .message()
        .await
        .unwrap()
        .expect("the watch is created");
    out.push(format!(
        "created {} canceled {}",
        created.created, created.canceled
    ));
    for value in ["1", "2"] {
        c.put("hc", value, None).await.unwrap();
        let next = tokio::time::timeout(Duration::from_secs(5), answers.message()).await;
        out.push(match next {
            Ok(Ok(Some(r))) => r
                .events
                .iter()
                .filter_map(|e| e.kv.as_ref())
                .map(|kv| format!("{}@{}", String::from_utf8_lossy(&kv.value), kv.version))
                .collect::<Vec<_>>()
                .join(" "),
            Ok(Ok(None)) => "the stream ended".into(),
            Ok(Err(status)) => format!("{status}"),
            Err(_) => "nothing in 5 s".into(),
        });
    }
    out
}

#[test]
fn a_watch_stream_whose_client_stops_sending_keeps_its_watcher_as_etcds_does() {
    let answers = common::same_answers_as_etcd(&[], half_closed_steps);
    assert_eq!(answers, ["created true canceled false", "1@1", "2@2"]);
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
        // Asked while the slow watcher is behind, progress is answered only once it caught up
        // (etcd 3.5's rule, which Kubernetes' consistent reads from its cache rely on).
        slow.request_progress().await.unwrap();
        let mut values = Vec::new();
        loop {
            let r = tokio::time::timeout(Duration::from_secs(10), slow.message())
                .await
                .expect("the slow watcher catches up")
                .unwrap()
                .unwrap();
            assert!(!r.canceled(), "{r:?}");
            if r.watch_id() == -1 {
                assert_eq!(values.len(), writes, "progress before the events it covers");
                assert_eq!(r.header().unwrap().revision(), writes as i64 + 1);
                break;
            }
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

/// A watcher's events, one line each: type, key, value, revisions, version, previous value.
fn lines(r: &WatchResponse) -> Vec<(i64, String)> {
    r.events()
        .iter()
        .map(|e| {
            let kv = e.kv().unwrap();
            let prev = e.prev_kv().map(|p| p.value_str().unwrap().to_string());
            let kind = if e.event_type() == EventType::Put {
                "PUT"
            } else {
                "DELETE"
            };
            let line = format!(
                "{kind} {}={} c{} m{} v{} prev {prev:?}",
                kv.key_str().unwrap(),
                kv.value_str().unwrap(),
                kv.create_revision(),
                kv.mod_revision(),
                kv.version()
            );
            (kv.mod_revision(), line)
        })
        .collect()
}

/// `events` as a watcher may see them whether it read a compacted revision from history or got
/// it live. etcd's compaction at `c` removes the tombstones written at `c` itself (a key's
/// generation ending there is dropped whole), and the revision before `c`, where an event at `c`
/// finds its previous value, is gone. So a watcher that reads `c` from history after the
/// compaction sees neither the deletions at `c` nor the previous values of its puts, while one
/// that got `c` live saw both. etcd 3.4 does the same: after `txn {put k6; del k8}` at 4 and
/// `compact 4`, `watch --rev 4 --prefix k --prev-kv` shows the put with no previous value, and
/// the delete only if the compaction had not yet removed it. Those parts are set aside here.
fn as_compaction_leaves_them(
    events: Vec<(i64, String)>,
    compactions: &std::collections::BTreeSet<i64>,
) -> Vec<(i64, String)> {
    events
        .into_iter()
        .filter(|(revision, line)| !(line.starts_with("DELETE") && compactions.contains(revision)))
        .map(|(revision, line)| match line.split_once(" prev ") {
            Some((event, _)) if compactions.contains(&revision) => {
                (revision, format!("{event} prev (compacted)"))
            }
            _ => (revision, line),
        })
        .collect()
}

/// Reads `stream` until `done` says a response is the last one wanted, failing after 20 s.
async fn read_until(
    stream: &mut WatchStream,
    mut done: impl FnMut(&WatchResponse) -> bool,
) -> Vec<WatchResponse> {
    let mut got = Vec::new();
    loop {
        let r = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("the awaited response comes")
            .unwrap()
            .expect("the stream goes on");
        let last = done(&r);
        got.push(r);
        if last {
            return got;
        }
    }
}

#[test]
fn a_watch_resumed_from_the_last_revision_seen_misses_nothing_across_a_crash() {
    let mut keelson = Server::start(Path::new(env!("CARGO_BIN_EXE_keelson")), Ports::free(), &[]);
    let endpoint = keelson.endpoint();
    let first = runtime().block_on(async {
        let mut c = Client::connect([endpoint.clone()], None).await.unwrap();
        let mut w = c
            .watch("r/", Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap();
        assert!(w.message().await.unwrap().unwrap().created());
        for i in 0..100 {
            c.put(format!("r/{}", i % 7), i.to_string(), None)
                .await
                .unwrap();
        }
        // The client goes away halfway through what it was sent.
        let mut seen = Vec::new();
        while seen.len() < 50 {
            let r = w.message().await.unwrap().unwrap();
            seen.extend(lines(&r));
        }
        seen.truncate(50);
        seen
    });
    // Writes go on while it is gone, then the member dies without warning.
    runtime().block_on(async {
        let mut c = Client::connect([endpoint.clone()], None).await.unwrap();
        for i in 100..150 {
            c.put(format!("r/{}", i % 7), i.to_string(), None)
                .await
                .unwrap();
        }
    });
    keelson.kill();
    keelson.launch();
    let rest = runtime().block_on(async {
        let mut c = Client::connect([endpoint.clone()], None).await.unwrap();
        let from = first.last().unwrap().0 + 1;
        let mut w = c
            .watch(
                "r/",
                Some(WatchOptions::new().with_prefix().with_start_revision(from)),
            )
            .await
            .unwrap();
        c.put("r/last", "150", None).await.unwrap();
        let got = read_until(&mut w, |r| {
            r.events()
                .iter()
                .any(|e| e.kv().unwrap().key() == b"r/last")
        })
        .await;
        got.iter().flat_map(lines).collect::<Vec<_>>()
    });
    let values: Vec<String> = first
        .iter()
        .chain(&rest)
        .map(|(_, line)| {
            line.split('=')
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    let want: Vec<String> = (0..=150).map(|i| i.to_string()).collect();
    assert_eq!(values, want, "every write once, in order, across the crash");
}

#[test]
fn list_then_watch_rebuilds_exactly_what_a_reader_sees() {
    let keelson = Server::start(Path::new(env!("CARGO_BIN_EXE_keelson")), Ports::free(), &[]);
    runtime().block_on(async {
        let mut c = Client::connect([keelson.endpoint()], None).await.unwrap();
        for i in 0..200 {
            c.put(format!("pods/{i}"), "0", None).await.unwrap();
        }
        // A writer changes and deletes pods while the reflector lists and watches.
        let writer = {
            let mut c = c.clone();
            tokio::spawn(async move {
                for i in 0..600 {
                    let key = format!("pods/{}", (i * 37) % 250);
                    if i % 5 == 4 {
                        c.delete(key, None).await.unwrap();
                    } else {
                        c.put(key, format!("{i}"), None).await.unwrap();
                    }
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The list, in pages of 50 at the first page's revision, as a reflector pages.
        let mut cache = std::collections::BTreeMap::new();
        let (mut from, end, mut listed) = (b"pods/".to_vec(), b"pods0".to_vec(), 0);
        loop {
            let mut page = etcd_client::GetOptions::new()
                .with_range(end.clone())
                .with_limit(50);
            if listed > 0 {
                page = page.with_revision(listed);
            }
            let got = c.get(from.clone(), Some(page)).await.unwrap();
            if listed == 0 {
                listed = got.header().unwrap().revision();
            }
            for kv in got.kvs() {
                cache.insert(kv.key().to_vec(), kv.value().to_vec());
            }
            match got.kvs().last() {
                Some(last) if got.more() => from = [last.key(), b"\0"].concat(),
                _ => break,
            }
        }
        let mut w = c
            .watch(
                "pods/",
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_prev_key()
                        .with_progress_notify()
                        .with_start_revision(listed + 1),
                ),
            )
            .await
            .unwrap();
        writer.await.unwrap();
        let end = c.put("pods/end", "", None).await.unwrap();
        let end = end.header().unwrap().revision();
        let mut last = listed;
        read_until(&mut w, |r| {
            for e in r.events() {
                let kv = e.kv().unwrap();
                assert!(kv.mod_revision() >= last, "in order");
                last = kv.mod_revision();
                // The previous value is what the cache held (none for a key it never had).
                let prev = e.prev_kv().map(|p| p.value().to_vec());
                assert_eq!(prev.as_ref(), cache.get(kv.key()), "{e:?}");
                if e.event_type() == EventType::Put {
                    cache.insert(kv.key().to_vec(), kv.value().to_vec());
                } else {
                    cache.remove(kv.key());
                }
            }
            last == end
        })
        .await;
        let prefix = etcd_client::GetOptions::new().with_prefix();
        let now = c.get("pods/", Some(prefix)).await.unwrap();
        let truth: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = now
            .kvs()
            .iter()
            .map(|kv| (kv.key().to_vec(), kv.value().to_vec()))
            .collect();
        assert!(
            listed > 201,
            "the list raced the writer (listed at {listed})"
        );
        assert_eq!(cache, truth);
    });
}

/// The model's view of one key.
#[derive(Clone)]
struct Kept {
    value: String,
    create: i64,
    version: i64,
}

/// The store as the model test keeps it: its keys, and every revision's events as [`lines`]
/// prints them (with and without previous values).
#[derive(Default)]
struct Model {
    keys: std::collections::BTreeMap<String, (Kept, i64)>,
    revision: i64,
    /// Every revision's events.
    history: Vec<(i64, Vec<Happened>)>,
}

/// One event the model recorded.
struct Happened {
    key: String,
    put: bool,
    /// As [`lines`] prints it without the previous value, and with it.
    plain: String,
    with_prev: String,
}

impl Model {
    /// Applies one revision's changes: `Some(value)` puts, `None` deletes (only keys that exist).
    fn apply(&mut self, changes: &[(String, Option<String>)]) {
        let revision = self.revision + 1;
        let mut events = Vec::new();
        for (key, value) in changes {
            let prev = self.keys.get(key).cloned();
            let prev_value = prev.as_ref().map(|(k, _)| k.value.clone());
            let line = |kind: &str, kv: &str| format!("{kind} {key}={kv}");
            match value {
                Some(value) => {
                    let kept = match &prev {
                        Some((k, _)) => Kept {
                            value: value.clone(),
                            create: k.create,
                            version: k.version + 1,
                        },
                        None => Kept {
                            value: value.clone(),
                            create: revision,
                            version: 1,
                        },
                    };
                    let base = line(
                        "PUT",
                        &format!("{value} c{} m{revision} v{}", kept.create, kept.version),
                    );
                    events.push((key.clone(), true, base, prev_value));
                    self.keys.insert(key.clone(), (kept, revision));
                }
                None => {
                    if prev.is_none() {
                        continue;
                    }
                    let base = line("DELETE", &format!(" c0 m{revision} v0"));
                    events.push((key.clone(), false, base, prev_value));
                    self.keys.remove(key);
                }
            }
        }
        if events.is_empty() {
            return;
        }
        self.revision = revision;
        let events = events
            .into_iter()
            .map(|(key, put, base, prev)| Happened {
                key,
                put,
                plain: format!("{base} prev None"),
                with_prev: format!("{base} prev {prev:?}"),
            })
            .collect();
        self.history.push((revision, events));
    }

    /// What watcher `spec` should have received, from `from` up to now.
    fn expected(&self, spec: &Spec, from: i64) -> Vec<(i64, String)> {
        let mut out = Vec::new();
        for (revision, events) in self.history.iter().filter(|(r, _)| *r >= from) {
            for e in events {
                let key = &e.key;
                let wanted = key.as_str() >= spec.from.as_str()
                    && spec.to.as_ref().is_none_or(|to| key < to)
                    && (spec.to.is_some() || spec.range || key == &spec.from)
                    && if e.put { !spec.no_put } else { !spec.no_delete };
                if wanted {
                    let line = if spec.prev_kv { &e.with_prev } else { &e.plain };
                    out.push((*revision, line.clone()));
                }
            }
        }
        out
    }
}

/// A watcher the model test created.
#[derive(Debug, Clone)]
struct Spec {
    from: String,
    /// The end of a range; `None` with `range` set: every key from `from` on.
    to: Option<String>,
    range: bool,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
}

/// What the test knows of one watcher on a stream.
struct Watched {
    spec: Spec,
    /// The first revision it was to get (its start, or the one after its creation).
    from: i64,
    responses: Vec<WatchResponse>,
    cancelled_by_us: bool,
}

/// Files the responses of `got` by watch id into `watched`.
fn file(watched: &mut std::collections::HashMap<i64, Watched>, got: Vec<WatchResponse>) {
    for r in got {
        if let Some(w) = watched.get_mut(&r.watch_id()) {
            w.responses.push(r);
        }
    }
}

#[test]
fn watchers_see_what_a_model_of_the_store_says_they_should() {
    use rand::{Rng, SeedableRng};
    let seed = std::env::var("KEELSON_WATCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("model seed {seed} (KEELSON_WATCH_SEED={seed} replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let keelson = Server::start(Path::new(env!("CARGO_BIN_EXE_keelson")), Ports::free(), &[]);
    runtime().block_on(async {
        let mut c = Client::connect([keelson.endpoint()], None).await.unwrap();
        let mut model = Model {
            revision: 1,
            ..Model::default()
        };
        let mut compacted = 0;
        let mut compactions = std::collections::BTreeSet::new();
        let mut streams = Vec::new();
        for _ in 0..3 {
            let w = c.watch("unused", None).await.unwrap();
            streams.push((w, std::collections::HashMap::<i64, Watched>::new()));
        }
        // Id 0 on each stream went to the placeholder watcher above; ours start at 1.
        let mut next_id = 1;
        let key = |rng: &mut rand::rngs::StdRng| format!("k{}", rng.random_range(0..24));
        for step in 0..1500 {
            match rng.random_range(0..100) {
                0..40 => {
                    let (k, v) = (key(&mut rng), format!("v{step}"));
                    c.put(k.as_str(), v.as_str(), None).await.unwrap();
                    model.apply(&[(k, Some(v))]);
                }
                40..50 => {
                    let k = key(&mut rng);
                    c.delete(k.as_str(), None).await.unwrap();
                    model.apply(&[(k, None)]);
                }
                50..58 => {
                    // Several keys in one revision: puts and deletes, each key once.
                    let mut ks: Vec<String> =
                        (0..rng.random_range(2..6)).map(|_| key(&mut rng)).collect();
                    ks.sort();
                    ks.dedup();
                    let changes: Vec<(String, Option<String>)> = ks
                        .into_iter()
                        .map(|k| {
                            let v = rng.random_bool(0.7).then(|| format!("t{step}"));
                            (k, v)
                        })
                        .collect();
                    let ops: Vec<etcd_client::TxnOp> = changes
                        .iter()
                        .map(|(k, v)| match v {
                            Some(v) => etcd_client::TxnOp::put(k.as_str(), v.as_str(), None),
                            None => etcd_client::TxnOp::delete(k.as_str(), None),
                        })
                        .collect();
                    c.txn(etcd_client::Txn::new().and_then(ops)).await.unwrap();
                    model.apply(&changes);
                }
                58..61 => {
                    // A prefix delete: its keys go in key order, at one revision.
                    let prefix = format!("k{}", rng.random_range(1..3));
                    let gone: Vec<(String, Option<String>)> = model
                        .keys
                        .keys()
                        .filter(|k| k.starts_with(&prefix))
                        .map(|k| (k.clone(), None))
                        .collect();
                    let options = etcd_client::DeleteOptions::new().with_prefix();
                    c.delete(prefix.as_str(), Some(options)).await.unwrap();
                    model.apply(&gone);
                }
                61..63 if model.revision > compacted + 1 => {
                    compacted = rng.random_range(compacted + 1..=model.revision);
                    c.compact(compacted, None).await.unwrap();
                    compactions.insert(compacted);
                }
                63..90 => {
                    let from = key(&mut rng);
                    let (to, range) = match rng.random_range(0..4) {
                        0 => (None, false),
                        1 => (Some(format!("{}\u{7f}", &from[..2])), true),
                        2 => (Some(key(&mut rng)).filter(|to| *to > from), true),
                        _ => (None, true),
                    };
                    let spec = Spec {
                        from,
                        range: range && (to.is_some() || rng.random_bool(0.5)),
                        to,
                        prev_kv: rng.random_bool(0.5),
                        no_put: rng.random_bool(0.1),
                        no_delete: rng.random_bool(0.1),
                    };
                    let start = if rng.random_bool(0.5) {
                        0
                    } else {
                        rng.random_range(1..=model.revision + 1)
                    };
                    let mut options = WatchOptions::new()
                        .with_watch_id(next_id)
                        .with_start_revision(start);
                    match (&spec.to, spec.range) {
                        (Some(to), _) => options = options.with_range(to.as_str()),
                        (None, true) => options = options.with_from_key(),
                        (None, false) => {}
                    }
                    if spec.prev_kv {
                        options = options.with_prev_key();
                    }
                    let filters: Vec<WatchFilterType> = [
                        (spec.no_put, WatchFilterType::NoPut),
                        (spec.no_delete, WatchFilterType::NoDelete),
                    ]
                    .into_iter()
                    .filter_map(|(on, f)| on.then_some(f))
                    .collect();
                    options = options.with_filters(filters);
                    let (stream, watched) = &mut streams[rng.random_range(0..3)];
                    stream
                        .watch(spec.from.as_str(), Some(options))
                        .await
                        .unwrap();
                    let id = next_id;
                    next_id += 1;
                    let got = read_until(stream, |r| r.watch_id() == id && r.created()).await;
                    let created = got.last().unwrap().header().unwrap().revision();
                    assert_eq!(created, model.revision, "created at the current revision");
                    watched.insert(
                        id,
                        Watched {
                            spec,
                            from: if start == 0 { created + 1 } else { start },
                            responses: Vec::new(),
                            cancelled_by_us: false,
                        },
                    );
                    file(watched, got);
                }
                90..95 => {
                    let (stream, watched) = &mut streams[rng.random_range(0..3)];
                    let live: Vec<i64> = watched
                        .iter()
                        .filter(|(_, w)| {
                            !w.cancelled_by_us && !w.responses.iter().any(|r| r.canceled())
                        })
                        .map(|(id, _)| *id)
                        .collect();
                    if let Some(&id) = live.get(rng.random_range(0..live.len().max(1))) {
                        stream.cancel(id).await.unwrap();
                        watched.get_mut(&id).unwrap().cancelled_by_us = true;
                        let got = read_until(stream, |r| r.watch_id() == id && r.canceled()).await;
                        file(watched, got);
                    }
                }
                _ => {}
            }
        }
        // Everything up to now has reached every synced watcher once its stream answers a
        // progress request.
        let (mut checked, mut events) = (0, 0);
        for (stream, watched) in &mut streams {
            stream.request_progress().await.unwrap();
            let got = read_until(stream, |r| {
                r.watch_id() == -1 && r.header().unwrap().revision() == model.revision
            })
            .await;
            file(watched, got);
            for (id, w) in watched.iter() {
                let created = w.responses.first().expect("a created response");
                assert!(created.created(), "watcher {id}: created comes first");
                let mut got = Vec::new();
                let mut revisions = Vec::new();
                for r in &w.responses[1..] {
                    let events = lines(r);
                    if let (Some(prev), Some(first)) = (revisions.last(), events.first()) {
                        assert!(
                            prev < &first.0,
                            "watcher {id}: a revision split across responses"
                        );
                    }
                    revisions.extend(events.last().map(|(r, _)| *r));
                    got.extend(events);
                }
                let (got, want) = (
                    as_compaction_leaves_them(got, &compactions),
                    as_compaction_leaves_them(model.expected(&w.spec, w.from), &compactions),
                );
                let canceled = w.responses.iter().find(|r| r.canceled());
                match canceled {
                    Some(r) if r.compact_revision() > 0 => {
                        let next = got.last().map_or(w.from, |(r, _)| r + 1);
                        assert!(
                            next <= r.compact_revision(),
                            "watcher {id}: compacted needlessly"
                        );
                        assert!(r.compact_revision() <= compacted);
                        assert_eq!(
                            got[..],
                            want[..got.len()],
                            "watcher {id} {:?}, compactions {compactions:?}",
                            w.spec
                        );
                    }
                    Some(_) => {
                        assert!(w.cancelled_by_us, "watcher {id} canceled: {canceled:?}");
                        assert_eq!(
                            got[..],
                            want[..got.len()],
                            "watcher {id} {:?}, compactions {compactions:?}",
                            w.spec
                        );
                    }
                    None => {
                        assert!(!w.cancelled_by_us);
                        assert_eq!(
                            got, want,
                            "watcher {id} {:?} from {}, compactions {compactions:?}",
                            w.spec, w.from
                        );
                        checked += 1;
                        events += got.len();
                    }
                }
            }
        }
        eprintln!(
            "{checked} watchers checked, {events} events, revision {}, compacted at {compacted}",
            model.revision
        );
        assert!(checked > 20, "only {checked} watchers lived to the end");
        assert!(model.revision > 600);
    });
}

/// Anonymous memory (heap) of process `pid` in bytes: what buffering events would grow; the page
/// file's mapped pages are file memory and not counted.
fn anonymous_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Puts in the write storm.
const STORM_PUTS: usize = 200_000;
/// Watchers of one key each in the write storm, on [`STORM_STREAMS`] streams.
const STORM_WATCHERS: usize = 10_000;
const STORM_STREAMS: usize = 50;

#[test]
fn a_write_storm_past_ten_thousand_watchers_and_a_stalled_one_keeps_memory_bounded() {
    let keelson = Server::start(Path::new(env!("CARGO_BIN_EXE_keelson")), Ports::free(), &[]);
    let endpoint = keelson.endpoint();
    let pid = keelson.pid();
    runtime().block_on(async {
        let c = Client::connect([endpoint.clone()], None).await.unwrap();
        // The stalled watcher has a connection of its own, so that only its stream stops.
        let mut stalled_client = Client::connect([endpoint.clone()], None).await.unwrap();
        let mut stalled = stalled_client
            .watch(
                "s/",
                Some(WatchOptions::new().with_prefix().with_prev_key()),
            )
            .await
            .unwrap();
        assert!(stalled.message().await.unwrap().unwrap().created());
        let per_stream = STORM_WATCHERS / STORM_STREAMS;
        let mut readers = Vec::new();
        for s in 0..STORM_STREAMS {
            let mut c = c.clone();
            let key = |i: usize| format!("s/{}", s * per_stream + i);
            let mut w = c.watch(key(0), None).await.unwrap();
            for i in 1..per_stream {
                w.watch(key(i), None).await.unwrap();
            }
            let mut created = 0;
            while created < per_stream {
                created += usize::from(w.message().await.unwrap().unwrap().created());
            }
            // Each watched key gets STORM_PUTS / STORM_WATCHERS puts.
            readers.push(tokio::spawn(async move {
                let mut events = 0;
                while events < STORM_PUTS / STORM_STREAMS {
                    let r = w.message().await.unwrap().expect("the stream goes on");
                    assert!(!r.canceled(), "{r:?}");
                    events += r.events().len();
                }
                events
            }));
        }
        let before = anonymous_memory(pid);
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
        let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        // Samples the heap, and whether the stalled watcher was moved aside (a slow watcher).
        let sampler = {
            let (peak, sampling, endpoint) = (peak.clone(), sampling.clone(), endpoint.clone());
            std::thread::spawn(move || {
                let mut slow = 0.0f64;
                while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                    peak.fetch_max(anonymous_memory(pid), std::sync::atomic::Ordering::Relaxed);
                    let now = common::metric(&endpoint, "etcd_debugging_mvcc_slow_watcher_total");
                    slow = slow.max(now.unwrap_or(0.0));
                    std::thread::sleep(Duration::from_millis(50));
                }
                slow
            })
        };
        let started = std::time::Instant::now();
        let writers: Vec<_> = (0..32)
            .map(|w| {
                let mut c = c.clone();
                tokio::spawn(async move {
                    for i in (w..STORM_PUTS).step_by(32) {
                        let key = format!("s/{}", i % STORM_WATCHERS);
                        c.put(key, vec![b'x'; 500], None).await.unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        for r in readers {
            assert_eq!(r.await.unwrap(), STORM_PUTS / STORM_STREAMS);
        }
        let took = started.elapsed();
        sampling.store(false, std::sync::atomic::Ordering::Relaxed);
        let slow = sampler.join().unwrap();
        assert_eq!(
            slow, 1.0,
            "the stalled watcher was moved aside, and only it"
        );
        let grown = peak.load(std::sync::atomic::Ordering::Relaxed) - before;
        eprintln!(
            "{STORM_PUTS} puts in {took:?} ({:.0}/s); heap grew by {} MiB",
            STORM_PUTS as f64 / took.as_secs_f64(),
            grown >> 20
        );
        // Holding the stalled watcher's events (each 500 bytes with a 500-byte previous value)
        // would take about 200 MB.
        assert!(grown < 96 << 20, "heap grew by {grown} bytes");
        // The stalled watcher then gets every event, in order, with its previous value.
        let mut seen = 0;
        let mut last = 0;
        let mut keys = std::collections::HashSet::new();
        while seen < STORM_PUTS {
            let r = tokio::time::timeout(Duration::from_secs(30), stalled.message())
                .await
                .expect("the stalled watcher catches up")
                .unwrap()
                .unwrap();
            assert!(!r.canceled(), "{r:?}");
            for e in r.events() {
                let kv = e.kv().unwrap();
                assert_eq!(kv.mod_revision(), last.max(1) + 1, "in order, no gap");
                last = kv.mod_revision();
                assert_eq!(e.prev_kv().is_some(), !keys.insert(kv.key().to_vec()));
                seen += 1;
            }
        }
        common::await_metric(&endpoint, "etcd_debugging_mvcc_slow_watcher_total", 0.0);
    });
    common::await_metric(&endpoint, "etcd_debugging_mvcc_watcher_total", 0.0);
    common::await_metric(&endpoint, "etcd_debugging_mvcc_pending_events_total", 0.0);
}
