//! A serving core's watch hub: the watch streams of this core's clients, their watchers by key
//! ([`keys`]), and the delivery of events to them — live, from each applied batch's
//! [`Changes`] the raft core sends every serving core, or from the page file's history for a
//! watcher that starts in the past or fell behind.
//!
//! A watcher is *synced* while it gets events live, *unsynced* while its stream's task catches it
//! up from history in batches of [`CATCH_UP_REVISIONS`] revisions. Each watcher keeps `next`, the
//! first revision it has not been sent: live events below it are skipped, so catching up and
//! going live meet with no gap and no duplicate. A stream's responses go through one bounded
//! channel; when it is full, the watchers the batch was for become unsynced (nothing is queued
//! beyond the bound) and catch up from history once the client reads again — or get the
//! compacted answer, if history moved past them meanwhile.
//!
//! Invariants: a watcher becomes synced only in the same synchronous step that read the page
//! file's latest view (so every batch after that view reaches it live); `revision` is a revision
//! every synced watcher has been sent all events of (what a progress response may claim); a
//! stream's [`Unsynced`] set holds exactly its watchers that are not synced, so its task finds the
//! next one to catch up without a scan.
//!
//! Runs on: every serving core (one hub each; nothing shared between cores).

pub mod keys;

use std::collections::{BTreeMap, BTreeSet};

use futures_channel::mpsc;
use keelson_engine::mvcc::{self, MvccError, Revisions};
use keelson_engine::pagefile::ReadTxn;
use keelson_proto::etcdserverpb::watch_create_request::FilterType;
use keelson_proto::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchResponse};
use keelson_proto::mvccpb::Event;
use keelson_proto::mvccpb::event::EventType;
use prost::Message;
use tonic::Status;

use crate::metrics::WatchGauges;
use crate::runtime::link::Changes;
use keys::{KeyIndex, Keys, Member};

/// Revisions read from history per catch-up step (etcd's `watchBatchMaxRevs`).
pub const CATCH_UP_REVISIONS: usize = 1000;
/// Responses a stream holds for its client before its watchers fall back to catching up.
pub const STREAM_BUFFER: usize = 128;
/// The watch id of responses that belong to no watcher (progress), as etcd's `InvalidWatchID`.
pub const NO_WATCH: i64 = -1;

/// etcd's answer to a watch id already in use on the stream.
const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// etcd's answer to a range with nothing in it.
const EMPTY_RANGE: &str = "mvcc: watcher range is empty";

/// The responses of one stream, as its client reads them.
pub type Responses = mpsc::Sender<Result<WatchResponse, Status>>;

/// What the hub needs of its serving core: the page file, response headers, and its gauges.
pub trait Source {
    /// A read view of the latest published page file, and its revisions.
    fn view(&self) -> mvcc::Result<(ReadTxn, Revisions)>;
    /// A response header at `revision`.
    fn header(&self, revision: i64) -> ResponseHeader;
    /// This core's watch gauges.
    fn gauges(&self) -> &WatchGauges;
}

/// One watcher.
#[derive(Debug)]
struct Watcher {
    keys: Keys,
    /// The first revision not sent yet.
    next: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    /// Its responses may be split ([`fragments`]).
    fragment: bool,
    /// It asked for periodic progress notifications.
    progress_notify: bool,
    /// Nothing was sent to it since the last progress tick.
    quiet: bool,
}

/// The `next` of a watcher cancelled because its start was compacted away: it sees nothing more.
const COMPACTED: i64 = i64::MAX;

impl Watcher {
    fn compacted(&self) -> bool {
        self.next == COMPACTED
    }

    /// Whether `event` is for this watcher and not sent yet.
    fn wants(&self, event: &Event) -> bool {
        let Some(kv) = &event.kv else { return false };
        let put = event.r#type == EventType::Put as i32;
        kv.mod_revision >= self.next
            && if put { !self.no_put } else { !self.no_delete }
            && self.keys.contains(&kv.key)
    }

    /// Its response carrying `events` (`prev_kv` filled in if asked, from `view`), at `revision`.
    fn response(
        &mut self,
        source: &impl Source,
        watch: i64,
        revision: i64,
        events: impl Iterator<Item = Event>,
        view: Option<&(ReadTxn, Revisions)>,
    ) -> WatchResponse {
        let events = events
            .map(|mut event| {
                if let (true, Some((txn, revs))) = (self.prev_kv, view) {
                    event.prev_kv = mvcc::prev_kv(txn, *revs, &event).ok().flatten();
                }
                event
            })
            .collect();
        self.quiet = false;
        WatchResponse {
            header: Some(source.header(revision)),
            watch_id: watch,
            events,
            fragment: self.fragment,
            ..WatchResponse::default()
        }
    }
}

/// The watchers of a stream that are not synced, by id: the order its task catches them up in.
#[derive(Debug, Default)]
struct Unsynced(BTreeSet<i64>);

impl Unsynced {
    fn is_synced(&self, watch: i64) -> bool {
        !self.0.contains(&watch)
    }

    /// Marks watcher `watch` synced or not, keeping the slow-watcher gauge.
    fn set(&mut self, watch: i64, synced: bool, gauges: &WatchGauges) {
        let changed = if synced {
            self.0.remove(&watch)
        } else {
            self.0.insert(watch)
        };
        if changed {
            WatchGauges::add(&gauges.slow, if synced { -1 } else { 1 });
        }
    }

    /// Forgets watcher `watch`: the gauges no longer count it.
    fn forget(&mut self, watch: i64, gauges: &WatchGauges) {
        WatchGauges::add(&gauges.watchers, -1);
        self.set(watch, true, gauges);
    }
}

/// One client's watch stream.
#[derive(Debug)]
struct Stream {
    out: Responses,
    watchers: BTreeMap<i64, Watcher>,
    unsynced: Unsynced,
    /// The next id to try for a watcher the client lets the server name.
    next_id: i64,
    /// Wakes the stream's task: a watcher needs catching up, or a progress response is due.
    work: mpsc::Sender<()>,
    /// A progress request waits for every watcher to be synced.
    progress_asked: bool,
}

impl Stream {
    fn wake(&mut self) {
        // A full channel already holds a wake-up.
        let _ = self.work.try_send(());
    }

    /// Forgets every watcher of the stream.
    fn forget(&mut self, gauges: &WatchGauges) {
        WatchGauges::add(&gauges.streams, -1);
        for &watch in self.watchers.keys() {
            self.unsynced.forget(watch, gauges);
        }
    }
}

/// The watch hub of a serving core.
#[derive(Debug, Default)]
pub struct Hub {
    streams: BTreeMap<u64, Stream>,
    keys: KeyIndex,
    next_stream: u64,
    /// Every synced watcher has been sent every event through this revision.
    revision: i64,
}

impl Hub {
    /// Opens a stream whose responses go to `out`; its task is woken through `work`.
    pub fn open(&mut self, source: &impl Source, out: Responses, work: mpsc::Sender<()>) -> u64 {
        let id = self.next_stream;
        self.next_stream += 1;
        WatchGauges::add(&source.gauges().streams, 1);
        self.streams.insert(
            id,
            Stream {
                out,
                watchers: BTreeMap::new(),
                unsynced: Unsynced::default(),
                next_id: 0,
                work,
                progress_asked: false,
            },
        );
        id
    }

    /// Closes stream `id`: its watchers are gone.
    pub fn close(&mut self, source: &impl Source, id: u64) {
        if let Some(mut stream) = self.streams.remove(&id) {
            stream.forget(source.gauges());
            for (watch, watcher) in stream.watchers {
                self.keys.remove(&watcher.keys, (id, watch));
            }
        }
    }

    /// Ends every stream (the member stops): their clients see the streams end.
    pub fn close_all(&mut self, source: &impl Source) {
        for mut stream in std::mem::take(&mut self.streams).into_values() {
            stream.forget(source.gauges());
        }
        self.keys = KeyIndex::default();
    }

    /// A create request on `stream`; `out` is the stream task's sender, with room for one
    /// response. Answers as etcd does and registers the watcher (synced if it starts after the
    /// current revision, else to be caught up).
    pub fn create(
        &mut self,
        source: &impl Source,
        stream: u64,
        out: &mut Responses,
        create: &WatchCreateRequest,
    ) -> Result<(), Status> {
        let (_, revs) = source.view().map_err(|e| crate::api::status::of_mvcc(&e))?;
        if self.keys.is_empty() {
            // Nobody here waited for a batch still on its way: the view is as far as any got.
            self.revision = self.revision.max(revs.current);
        }
        let Some(s) = self.streams.get_mut(&stream) else {
            return Ok(());
        };
        let gauges = source.gauges();
        let refused = |reason: &str| WatchResponse {
            header: Some(source.header(revs.current)),
            watch_id: NO_WATCH,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..WatchResponse::default()
        };
        let Some(keys) = Keys::of(&create.key, &create.range_end) else {
            return send(out, refused(EMPTY_RANGE), gauges);
        };
        let id = if create.watch_id == 0 {
            while s.watchers.contains_key(&s.next_id) {
                s.next_id += 1;
            }
            s.next_id += 1;
            s.next_id - 1
        } else if s.watchers.contains_key(&create.watch_id) {
            return send(out, refused(DUPLICATE_ID), gauges);
        } else {
            create.watch_id
        };
        let next = if create.start_revision == 0 {
            revs.current + 1
        } else {
            create.start_revision
        };
        send(
            out,
            WatchResponse {
                header: Some(source.header(revs.current)),
                watch_id: id,
                created: true,
                ..WatchResponse::default()
            },
            gauges,
        )?;
        let filters = |f: FilterType| create.filters.contains(&(f as i32));
        let watcher = Watcher {
            keys: keys.clone(),
            next,
            prev_kv: create.prev_kv,
            no_put: filters(FilterType::Noput),
            no_delete: filters(FilterType::Nodelete),
            fragment: create.fragment,
            progress_notify: create.progress_notify,
            quiet: true,
        };
        WatchGauges::add(&gauges.watchers, 1);
        if next <= revs.current {
            s.unsynced.set(id, false, gauges);
            s.wake();
        }
        s.watchers.insert(id, watcher);
        self.keys.insert(&keys, (stream, id));
        Ok(())
    }

    /// A cancel request: the watcher goes, and etcd's answer if it was there.
    pub fn cancel(
        &mut self,
        source: &impl Source,
        stream: u64,
        out: &mut Responses,
        watch: i64,
    ) -> Result<(), Status> {
        let Some(s) = self.streams.get_mut(&stream) else {
            return Ok(());
        };
        let Some(watcher) = s.watchers.remove(&watch) else {
            return Ok(());
        };
        s.unsynced.forget(watch, source.gauges());
        self.keys.remove(&watcher.keys, (stream, watch));
        let revision = source
            .view()
            .map_or(self.revision, |(_, revs)| revs.current);
        send(
            out,
            WatchResponse {
                header: Some(source.header(revision)),
                watch_id: watch,
                canceled: true,
                ..WatchResponse::default()
            },
            source.gauges(),
        )
    }

    /// A progress request: answered once every watcher of the stream is synced.
    pub fn progress(&mut self, stream: u64) {
        if let Some(s) = self.streams.get_mut(&stream) {
            s.progress_asked = true;
            s.wake();
        }
    }

    /// A progress-notify tick on `stream`: the watchers owed a progress notification (synced,
    /// asked for them, and sent nothing since the tick before), as etcd's periodic progress.
    pub fn progress_due(&mut self, stream: u64) -> Vec<i64> {
        let Some(s) = self.streams.get_mut(&stream) else {
            return Vec::new();
        };
        let mut due = Vec::new();
        for (&watch, w) in s.watchers.iter_mut().filter(|(_, w)| w.progress_notify) {
            if w.quiet && s.unsynced.is_synced(watch) && !w.compacted() {
                due.push(watch);
            }
            w.quiet = true;
        }
        due
    }

    /// Sends watcher `watch` of `stream` a progress notification (no events, at the revision every
    /// synced watcher has been sent), if it is still there and synced; `out` has room for it.
    pub fn notify(
        &self,
        source: &impl Source,
        stream: u64,
        out: &mut Responses,
        watch: i64,
    ) -> Result<(), Status> {
        let synced = self
            .streams
            .get(&stream)
            .is_some_and(|s| s.watchers.contains_key(&watch) && s.unsynced.is_synced(watch));
        if !synced {
            return Ok(());
        }
        let response = WatchResponse {
            header: Some(source.header(self.revision)),
            watch_id: watch,
            ..WatchResponse::default()
        };
        send(out, response, source.gauges())
    }

    /// Every synced watcher catches up from history from now on: the page file was replaced by a
    /// newer one (a snapshot from the leader), whose revisions no applied batch carried.
    pub fn unsync_all(&mut self, source: &impl Source) {
        let gauges = source.gauges();
        for s in self.streams.values_mut() {
            let mut woken = false;
            for (&watch, _) in s.watchers.iter().filter(|(_, w)| !w.compacted()) {
                s.unsynced.set(watch, false, gauges);
                woken = true;
            }
            if woken {
                s.wake();
            }
        }
    }

    /// Delivers an applied batch's events to the synced watchers they concern.
    pub fn changed(&mut self, source: &impl Source, changes: &Changes) {
        self.revision = self.revision.max(changes.revision);
        if self.keys.is_empty() {
            // No watcher on this core (the common case for most cores): nothing to match.
            return;
        }
        let mut concerned: BTreeMap<Member, Vec<usize>> = BTreeMap::new();
        for (at, event) in changes.events.iter().enumerate() {
            if let Some(kv) = &event.kv {
                self.keys.matching(&kv.key, |member| {
                    concerned.entry(member).or_default().push(at)
                });
            }
        }
        let gauges = source.gauges();
        let mut view = None;
        for ((stream, watch), ats) in concerned {
            let Some(s) = self.streams.get_mut(&stream) else {
                continue;
            };
            let Some(w) = s.watchers.get_mut(&watch) else {
                continue;
            };
            let wanted: Vec<&Event> = ats
                .iter()
                .map(|&at| &changes.events[at])
                .filter(|e| w.wants(e))
                .collect();
            if !s.unsynced.is_synced(watch) || wanted.is_empty() {
                continue;
            }
            if w.prev_kv && view.is_none() {
                view = source.view().ok();
            }
            let first = wanted[0].kv.as_ref().map_or(w.next, |kv| kv.mod_revision);
            let events = wanted.into_iter().cloned();
            let response = w.response(source, watch, changes.revision, events, view.as_ref());
            match offer(&mut s.out, response, gauges) {
                Ok(()) => w.next = changes.revision + 1,
                Err(e) if e.is_full() => {
                    // The client reads too slowly: this watcher catches up from history.
                    s.unsynced.set(watch, false, gauges);
                    w.next = first;
                    s.wake();
                }
                Err(_) => {}
            }
        }
        for s in self.streams.values_mut() {
            if s.progress_asked {
                s.wake();
            }
        }
    }

    /// One step of stream `stream`'s background work, `out` having room for one response: one
    /// catch-up batch for one unsynced watcher, or the progress response once all are synced.
    /// Returns whether work is left.
    pub fn work(
        &mut self,
        source: &impl Source,
        stream: u64,
        out: &mut Responses,
    ) -> Result<bool, Status> {
        let Some(s) = self.streams.get_mut(&stream) else {
            return Ok(false);
        };
        let gauges = source.gauges();
        let Some((watch, w)) = s
            .unsynced
            .0
            .first()
            .and_then(|&watch| Some((watch, s.watchers.get_mut(&watch)?)))
        else {
            if s.progress_asked {
                s.progress_asked = false;
                send(
                    out,
                    WatchResponse {
                        header: Some(source.header(self.revision)),
                        watch_id: NO_WATCH,
                        ..WatchResponse::default()
                    },
                    gauges,
                )?;
            }
            return Ok(false);
        };
        let view = source.view().map_err(|e| crate::api::status::of_mvcc(&e))?;
        let (txn, revs) = &view;
        match mvcc::history(txn, *revs, w.next, CATCH_UP_REVISIONS) {
            Err(MvccError::Compacted { compacted, .. }) => {
                // As etcd: one response with the compaction revision, and the watcher sees
                // nothing more — its id stays taken until the client cancels it.
                self.keys.remove(&w.keys, (stream, watch));
                s.unsynced.set(watch, true, gauges);
                w.next = COMPACTED;
                send(
                    out,
                    WatchResponse {
                        header: Some(source.header(0)),
                        watch_id: watch,
                        canceled: true,
                        compact_revision: compacted,
                        ..WatchResponse::default()
                    },
                    gauges,
                )?;
            }
            Err(e) => return Err(crate::api::status::of_mvcc(&e)),
            Ok(events) => {
                let reached = events
                    .last()
                    .and_then(|e| e.kv.as_ref())
                    .map(|kv| kv.mod_revision);
                // Events come in revision order: a revision starts wherever the one before differs.
                let revisions = events
                    .iter()
                    .filter_map(|e| e.kv.as_ref().map(|kv| kv.mod_revision))
                    .fold((0, None), |(n, last), rev| {
                        (if last == Some(rev) { n } else { n + 1 }, Some(rev))
                    })
                    .0;
                let done = revisions < CATCH_UP_REVISIONS;
                let wanted: Vec<Event> = events.into_iter().filter(|e| w.wants(e)).collect();
                if !wanted.is_empty() {
                    let response =
                        w.response(source, watch, revs.current, wanted.into_iter(), Some(&view));
                    send(out, response, gauges)?;
                }
                if done {
                    w.next = revs.current + 1;
                    s.unsynced.set(watch, true, gauges);
                } else if let Some(reached) = reached {
                    w.next = reached + 1;
                }
            }
        }
        Ok(true)
    }
}

/// The parts to send `response` in: itself, unless its watcher asked for fragments (the hub sets
/// `fragment` on such a watcher's responses) and it holds two events or more in `max` bytes or
/// more. Then it goes in parts of whole events, each as large as it can be while under `max` (a
/// part holds one event at least), every part but the last marked `fragment` — as etcd splits at
/// `--max-request-bytes` plus gRPC's allowance.
pub fn fragments(mut response: WatchResponse, max: usize) -> Vec<WatchResponse> {
    if !response.fragment || response.events.len() < 2 || response.encoded_len() < max {
        response.fragment = false;
        return vec![response];
    }
    let events = std::mem::take(&mut response.events);
    // The bytes of a part: those of the response without events, and each event's field.
    let bare = response.encoded_len();
    let field = |event: &Event| prost::encoding::message::encoded_len(EVENTS_FIELD, event);
    let mut parts = Vec::new();
    let mut part = response.clone();
    let mut size = bare;
    for event in events {
        let grown = size + field(&event);
        if !part.events.is_empty() && grown >= max {
            parts.push(std::mem::replace(&mut part, response.clone()));
            size = bare + field(&event);
        } else {
            size = grown;
        }
        part.events.push(event);
    }
    part.fragment = false;
    parts.push(part);
    parts
}

/// `WatchResponse.events`' field number.
const EVENTS_FIELD: u32 = 11;

/// Offers `response` to `out`, counting its events as pending once taken.
fn offer(
    out: &mut Responses,
    response: WatchResponse,
    gauges: &WatchGauges,
) -> Result<(), mpsc::TrySendError<Result<WatchResponse, Status>>> {
    let events = response.events.len() as i64;
    out.try_send(Ok(response))?;
    WatchGauges::add(&gauges.pending_events, events);
    WatchGauges::add(&gauges.events, events);
    Ok(())
}

/// Sends `response` on `out`, which has room for it; a stream whose client is gone is not an
/// error here (its task ends when the client's requests do).
fn send(out: &mut Responses, response: WatchResponse, gauges: &WatchGauges) -> Result<(), Status> {
    match offer(out, response, gauges) {
        Err(e) if e.is_full() => Err(Status::internal("etcdserver: watch stream has no room")),
        _ => Ok(()),
    }
}
