//! `keelson bench`'s watch workloads, with etcd's tool's flags and defaults:
//! - `watch`: `--streams` streams of `--watch-per-stream` watchers each, on `--watched-key-total`
//!   keys (etcd's key shape), then `--put-total` puts of those keys in turn from the clients
//!   (`--put-rate` a second, 0: no limit). Counted: every event delivered; its latency runs from
//!   its put's sending (the put's value carries the time) to its arrival, so the rate is events a
//!   second. (etcd's tool times only the hand-over of an event already received.)
//! - `watch-latency`: each client watches one key on a stream of its own; `--total` puts of it
//!   (`--put-rate` a second), one at a time, from a connection of their own. Counted: every
//!   delivery; its latency runs from the put's sending to the event's arrival. (etcd's tool
//!   starts the clock at the put's answer, which both servers send no sooner than the events:
//!   it times the hand-over of an event already received.)
//! - `watch-get`: `--events` puts of one key, then `--watchers` watchers on `--streams` streams
//!   catching up on them from the first; serializable Gets of another key meanwhile, from a
//!   connection of their own, until every watcher has had its events (one Get at least). Counted:
//!   the Gets.
//!
//! A stream's creates are sent at once and its sending side closed: etcd and keelson keep its
//! watchers. A workload whose events stop coming for [`STALL`] ends with an error.
//!
//! Runs on: the bench's executor.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::sync::Semaphore;
use keelson_proto::etcdserverpb::watch_request::RequestUnion;
use keelson_proto::etcdserverpb::{
    PutRequest, PutResponse, RangeRequest, WatchCreateRequest, WatchRequest, WatchResponse,
};

use super::{Keys, Outcome, Run, Shared, answered, calls, key, nanos};
use crate::grpc_client::{self, Answers, Channel};

/// How long a workload waits for an event before it gives up on the rest.
const STALL: Duration = Duration::from_secs(10);

/// A watch workload.
#[derive(Debug, Clone)]
pub enum Watch {
    /// Fan-out: watchers on streams, then puts of the watched keys.
    Fanout {
        streams: usize,
        per_stream: usize,
        keys: Vec<Vec<u8>>,
        puts: u64,
        put_rate: u64,
    },
    /// Put-to-event latency of `--total` puts of one key, at `put_rate` a second.
    Latency {
        key: Vec<u8>,
        value: Vec<u8>,
        put_rate: u64,
    },
    /// Serializable Gets while watchers catch up on `events` past events each.
    Get {
        watchers: usize,
        streams: usize,
        events: usize,
    },
}

impl Watch {
    /// `watch`'s watched keys: `total` keys of `size` bytes, numbered in order or at random in a
    /// space of `space`.
    pub fn keys(total: usize, size: usize, space: u64, sequential: bool) -> Vec<Vec<u8>> {
        let mut random = Keys(0x0005_DEEC_E66D);
        let space = space.max(1);
        (0..total as u64)
            .map(|i| key(if sequential { i } else { random.next() } % space, size))
            .collect()
    }
}

/// A watch create request for `key` from `revision` (0: from now).
fn create(key: &[u8], revision: i64) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: key.to_vec(),
            start_revision: revision,
            ..WatchCreateRequest::default()
        })),
    }
}

/// Opens a Watch stream on `channel` with watchers of `keys` from `revision`.
async fn open(
    channel: &mut Channel,
    uris: &Uris,
    keys: &[&[u8]],
    revision: i64,
) -> Result<Answers, String> {
    let creates: Vec<_> = keys.iter().map(|k| create(k, revision)).collect();
    grpc_client::call(channel, &uris.watch, &creates).await
}

/// The next answer of a Watch stream; an error if the stream ends, a watcher is cancelled, or
/// nothing comes for [`STALL`].
async fn answer(stream: &mut Answers) -> Result<WatchResponse, String> {
    let next = futures_lite::future::or(stream.next::<WatchResponse>(), async {
        glommio::timer::sleep(STALL).await;
        Err(format!("no watch answer for {STALL:?}"))
    });
    let answer = next.await?.ok_or("the watch stream ended")?;
    if answer.canceled {
        return Err(format!("watch cancelled: {}", answer.cancel_reason));
    }
    Ok(answer)
}

/// The next answer of a Watch stream that carries events.
async fn events(stream: &mut Answers) -> Result<WatchResponse, String> {
    loop {
        let answer = answer(stream).await?;
        if !answer.events.is_empty() {
            return Ok(answer);
        }
    }
}

/// Waits until `stream` has answered that its `count` watchers are created.
async fn created(stream: &mut Answers, count: usize) -> Result<(), String> {
    let mut seen = 0;
    while seen < count {
        seen += usize::from(answer(stream).await?.created);
    }
    Ok(())
}

/// The URIs of the calls the watch workloads make.
struct Uris {
    watch: http::Uri,
    put: http::Uri,
    range: http::Uri,
}

/// Runs watch workload `watch` of `run` on `channels`.
pub(super) async fn drive(
    run: &Run,
    watch: &Watch,
    channels: &[Channel],
) -> Result<Outcome, String> {
    let uri = |path| grpc_client::uri(&run.endpoint, path);
    let uris = Rc::new(Uris {
        watch: uri("/etcdserverpb.Watch/Watch")?,
        put: uri("/etcdserverpb.KV/Put")?,
        range: uri("/etcdserverpb.KV/Range")?,
    });
    match watch {
        Watch::Fanout {
            streams,
            per_stream,
            keys,
            puts,
            put_rate,
        } => {
            fanout(
                run,
                &uris,
                channels,
                (*streams, *per_stream),
                keys,
                *puts,
                *put_rate,
            )
            .await
        }
        Watch::Latency {
            key,
            value,
            put_rate,
        } => latency(run, &uris, channels, key, value, *put_rate).await,
        Watch::Get {
            watchers,
            streams,
            events,
        } => get(run, uris, channels, *watchers, *streams, *events).await,
    }
}

/// The fan-out workload.
async fn fanout(
    run: &Run,
    uris: &Rc<Uris>,
    channels: &[Channel],
    (streams, per_stream): (usize, usize),
    keys: &[Vec<u8>],
    puts: u64,
    put_rate: u64,
) -> Result<Outcome, String> {
    if keys.is_empty() {
        return Err("--watched-key-total must be at least 1".into());
    }
    // Watcher w (on stream w / per_stream) watches key w mod keys; put n is of key n mod keys,
    // so each key has puts / keys puts, one more for the first puts mod keys.
    let puts_of =
        |k: usize| puts / keys.len() as u64 + u64::from((k as u64) < puts % keys.len() as u64);
    let mut answers = Vec::with_capacity(streams);
    for s in 0..streams {
        let watchers = s * per_stream..(s + 1) * per_stream;
        let expected: u64 = watchers.clone().map(|w| puts_of(w % keys.len())).sum();
        let watched: Vec<&[u8]> = watchers.map(|w| keys[w % keys.len()].as_slice()).collect();
        let mut channel = channels[s % channels.len()].clone();
        answers.push((open(&mut channel, uris, &watched, 0).await?, expected));
    }
    for (stream, _) in &mut answers {
        created(stream, per_stream).await?;
    }
    // What the puts' values carry: the nanoseconds from `epoch` to their sending.
    let epoch = Instant::now();
    let events = Rc::new(Shared::new(run.clone()));
    let receivers: Vec<_> = answers
        .into_iter()
        .map(|(mut stream, mut left)| {
            let events = events.clone();
            glommio::spawn_local(async move {
                while left > 0 {
                    match self::events(&mut stream).await {
                        Ok(answer) => {
                            for event in &answer.events {
                                let sent = event.kv.as_ref().and_then(|kv| sent_at(&kv.value));
                                let nanos = sent.map_or(0, |s| since(epoch).saturating_sub(s));
                                events.record(nanos);
                            }
                            left = left.saturating_sub(answer.events.len() as u64);
                        }
                        Err(e) => return events.failed(e),
                    }
                }
            })
        })
        .collect();
    let writers = Rc::new(Shared::new(Run {
        total: Some(puts),
        duration: None,
        rate: put_rate,
        ..run.clone()
    }));
    let keys: Rc<[Vec<u8>]> = keys.into();
    let putters: Vec<_> = (0..run.clients.max(1))
        .map(|i| {
            let (writers, keys, uris) = (writers.clone(), keys.clone(), uris.clone());
            let mut channel = channels[i % channels.len()].clone();
            glommio::spawn_local(async move {
                let prepare = |n: u64, put: &mut PutRequest| {
                    put.key.clone_from(&keys[(n % keys.len() as u64) as usize]);
                    put.value = since(epoch).to_le_bytes().to_vec();
                };
                let request = PutRequest::default();
                calls(
                    &writers,
                    &mut channel,
                    &uris.put,
                    request,
                    prepare,
                    answered,
                )
                .await;
            })
        })
        .collect();
    for task in putters.into_iter().chain(receivers) {
        task.await;
    }
    let mut outcome = events.outcome();
    for (why, count) in writers.errors.borrow().iter() {
        *outcome.errors.entry(format!("put: {why}")).or_default() += count;
    }
    Ok(outcome)
}

/// Nanoseconds since `epoch`.
fn since(epoch: Instant) -> u64 {
    nanos(epoch.elapsed())
}

/// The time a `watch` put carries in its value (nanoseconds since the workload's epoch).
fn sent_at(value: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(value.get(..8)?.try_into().ok()?))
}

/// The put-to-event latency workload.
async fn latency(
    run: &Run,
    uris: &Uris,
    channels: &[Channel],
    key: &[u8],
    value: &[u8],
    put_rate: u64,
) -> Result<Outcome, String> {
    let watchers = run.clients.max(1);
    let arrived: Vec<Rc<Cell<Instant>>> = (0..watchers)
        .map(|_| Rc::new(Cell::new(Instant::now())))
        .collect();
    let delivered = Rc::new(Semaphore::new(0));
    let shared = Rc::new(Shared::new(Run {
        rate: put_rate,
        ..run.clone()
    }));
    let mut receivers = Vec::with_capacity(watchers);
    for (w, arrived) in arrived.iter().enumerate() {
        let mut channel = channels[w % channels.len()].clone();
        let mut stream = open(&mut channel, uris, &[key], 0).await?;
        created(&mut stream, 1).await?;
        let (arrived, delivered, shared) = (arrived.clone(), delivered.clone(), shared.clone());
        receivers.push(
            glommio::spawn_local(async move {
                loop {
                    match events(&mut stream).await {
                        Ok(_) => arrived.set(Instant::now()),
                        Err(e) => return shared.failed(e),
                    }
                    delivered.signal(1);
                }
            })
            .detach(),
        );
    }
    let mut writer = grpc_client::connect(&run.endpoint).await?;
    let put = PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        ..PutRequest::default()
    };
    while shared.next().await.is_some() {
        let put_at = Instant::now();
        if let Err(e) = grpc_client::unary(&mut writer, &uris.put, &put).await {
            shared.failed(format!("put: {e}"));
            break;
        }
        let all = futures_lite::future::or(
            async { delivered.acquire(watchers as u64).await.is_ok() },
            async {
                glommio::timer::sleep(STALL).await;
                false
            },
        );
        if !all.await {
            shared.failed(format!("not every watcher had its event within {STALL:?}"));
            break;
        }
        for arrived in &arrived {
            shared.record(nanos(arrived.get().saturating_duration_since(put_at)));
        }
    }
    for receiver in receivers {
        receiver.cancel();
    }
    Ok(shared.outcome())
}

/// The Gets-while-watchers-catch-up workload.
async fn get(
    run: &Run,
    uris: Rc<Uris>,
    channels: &[Channel],
    watchers: usize,
    streams: usize,
    events: usize,
) -> Result<Outcome, String> {
    const WATCHED: &[u8] = b"watchkey";
    let mut writer = channels[0].clone();
    let mut first = 0;
    for i in 0..events {
        let put = PutRequest {
            key: WATCHED.to_vec(),
            value: i.to_string().into_bytes(),
            ..PutRequest::default()
        };
        let body = grpc_client::unary(&mut writer, &uris.put, &put).await?;
        let answer: PutResponse = grpc_client::first_message(&body)?;
        if i == 0 {
            first = answer.header.map_or(0, |h| h.revision);
        }
    }
    let streams = streams.max(1);
    let shared = Rc::new(Shared::new(Run {
        total: None,
        duration: None,
        rate: 0,
        ..run.clone()
    }));
    let caught_up = Rc::new(Cell::new(false));
    let mut receivers = Vec::with_capacity(streams);
    for s in 0..streams {
        // Watcher w goes on stream w mod streams.
        let on_stream = (s..watchers).step_by(streams).count();
        let mut channel = channels[s % channels.len()].clone();
        let mut stream = open(&mut channel, &uris, &vec![WATCHED; on_stream], first).await?;
        let shared = shared.clone();
        receivers.push(glommio::spawn_local(async move {
            let mut left = on_stream * events;
            while left > 0 {
                match self::events(&mut stream).await {
                    Ok(answer) => left = left.saturating_sub(answer.events.len()),
                    Err(e) => return shared.failed(e),
                }
            }
        }));
    }
    let getter = {
        let (shared, caught_up) = (shared.clone(), caught_up.clone());
        let endpoint = run.endpoint.clone();
        glommio::spawn_local(async move {
            let mut reader = match grpc_client::connect(&endpoint).await {
                Ok(reader) => reader,
                Err(e) => return shared.failed(e),
            };
            let get = RangeRequest {
                key: b"abc".to_vec(),
                serializable: true,
                ..RangeRequest::default()
            };
            // One Get at least, however soon the watchers catch up.
            loop {
                let sent = Instant::now();
                match grpc_client::unary(&mut reader, &uris.range, &get).await {
                    Ok(_) => shared.record_since(sent),
                    Err(e) => shared.failed(e),
                }
                if caught_up.get() {
                    break;
                }
            }
        })
    };
    for receiver in receivers {
        receiver.await;
    }
    caught_up.set(true);
    getter.await;
    Ok(shared.outcome())
}
