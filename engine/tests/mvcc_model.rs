//! Model-based property test of the MVCC store: random sequences of every etcd request (ranges
//! with every option, puts with every flag, deletes, nested txns, compactions, leases), applied
//! one at a time and in batches, with compaction batches, replays of applied entries, reopens, and
//! rebuilds of keelson's index from etcd's buckets in between — every response, event, history and
//! `prev_kv` compared field by field with a plain in-memory model (`support/mvcc_model.rs`).
//!
//! Raise `cases` below (the `PROPTEST_CASES` variable does not override it) for a longer run.

mod support;

use std::path::Path;

use keelson_engine::mvcc::{
    self, Applied, Entry, MvccError, Options, Response, Revisions, Store, validate,
};
use keelson_engine::pagefile::{self, Db};
use keelson_proto::etcdserverpb::request_op::Request as Op;
use keelson_proto::etcdserverpb::{
    DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest,
};
use keelson_proto::mvccpb::event::EventType;
use proptest::prelude::*;
use support::mvcc_model::Model;
use support::requests::{self, LEASES, Request, Shape, TTL, prefix_end};

/// How keelson's buckets are made stale before a reopen.
#[derive(Debug, Clone, Copy)]
enum Stale {
    Forgotten,
    OldLayout,
}

#[derive(Debug, Clone)]
enum Step {
    /// One request, applied (or read) on its own.
    One(Request),
    /// Several requests applied in one batch.
    Batch(Vec<Request>),
    /// Some batches of compaction work.
    CompactWork(u8),
    /// Applying the last few entries again (as WAL replay does).
    Replay(u8),
    Sync,
    /// Syncing, closing and opening again.
    Reopen,
    /// Closing without syncing, opening again, and replaying every entry (as after a crash).
    Crash,
    /// Dropping keelson's buckets, as if etcd had written the file, then reopening.
    ForgetIndex,
    /// Marking keelson's buckets as an older layout (with an entry that layout might hold), then
    /// reopening: they must be rebuilt, not read.
    OldLayout,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        14 => requests::request(Shape::All).prop_map(Step::One),
        2 => prop::collection::vec(requests::request(Shape::All), 2..6).prop_map(Step::Batch),
        2 => (1u8..6).prop_map(Step::CompactWork),
        1 => (1u8..4).prop_map(Step::Replay),
        1 => Just(Step::Sync),
        1 => Just(Step::Reopen),
        1 => Just(Step::Crash),
        1 => Just(Step::ForgetIndex),
        1 => Just(Step::OldLayout),
    ]
}

fn options() -> Options {
    // Small batches, so compactions and rebuilds cross many batch boundaries.
    Options {
        batch: 3,
        pagefile: pagefile::Options {
            initial_map_size: 1 << 24,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// What the store is asked to apply for `req`, if it is not a plain read; `Err` if the edge rejects it.
fn to_store(req: &Request) -> Option<Result<mvcc::Request, MvccError>> {
    Some(match req {
        Request::Range(_) => return None,
        Request::Put(p) => validate::put(p).map(|()| mvcc::Request::Put(p.clone())),
        Request::DeleteRange(d) => {
            validate::delete_range(d).map(|()| mvcc::Request::DeleteRange(d.clone()))
        }
        Request::Txn(t) => {
            validate::txn(t, validate::DEFAULT_MAX_TXN_OPS).map(|()| mvcc::Request::Txn(t.clone()))
        }
        Request::Compact(c) => Ok(mvcc::Request::Compaction(*c)),
        Request::Grant(g) => Ok(mvcc::Request::LeaseGrant(*g)),
        Request::Revoke(r) => Ok(mvcc::Request::LeaseRevoke(*r)),
    })
}

fn same<T: PartialEq + std::fmt::Debug>(
    got: &Result<T, MvccError>,
    want: &Result<T, MvccError>,
) -> bool {
    match (got, want) {
        (Ok(g), Ok(w)) => g == w,
        (Err(g), Err(w)) => format!("{g:?}") == format!("{w:?}"),
        _ => false,
    }
}

struct Harness<'p> {
    path: &'p Path,
    /// `None` only while reopening (the page file has one writer).
    store: Option<Store>,
    model: Model,
    applied: Vec<Entry>,
    /// What applying each entry answered, to compare replays with.
    outcomes: Vec<String>,
}

fn outcome(a: &Applied) -> String {
    format!("{:?} {:?}", a.response, a.events)
}

impl Harness<'_> {
    fn store(&mut self) -> &mut Store {
        self.store.as_mut().expect("open")
    }

    fn read(&self) -> (pagefile::ReadTxn, Revisions) {
        let view = self
            .store
            .as_ref()
            .expect("open")
            .db()
            .begin_read()
            .unwrap();
        let revs = mvcc::revisions(&view).unwrap();
        assert_eq!(
            Some(revs),
            self.store.as_ref().map(Store::revisions),
            "readers see the store's revisions"
        );
        assert_eq!(
            (revs.current, revs.compacted),
            (self.model.current, self.model.compacted)
        );
        (view, revs)
    }

    fn range(&self, r: &RangeRequest) -> Result<(), TestCaseError> {
        let (view, revs) = self.read();
        let got = mvcc::range(&view, r, revs);
        let want = self.model.range(r);
        prop_assert!(
            same(&got, &want),
            "range {r:?}\n got {got:?}\nwant {want:?}"
        );
        Ok(())
    }

    /// Applies `reqs` as one batch; compares each with the model.
    fn apply(&mut self, reqs: &[Request]) -> Result<(), TestCaseError> {
        let mut entries = Vec::new();
        let mut expected = Vec::new();
        for req in reqs {
            let Some(Ok(request)) = to_store(req) else {
                continue;
            };
            // A read-only txn is answered by readers directly; it must agree with applying it. (Only
            // first in a batch: the model has already applied the batch's earlier requests.)
            if let (mvcc::Request::Txn(t), true) = (&request, entries.is_empty()) {
                let (view, revs) = self.read();
                if let Some(got) = mvcc::read_only_txn(&view, t, revs).transpose() {
                    let want = self.model.clone().apply(req).unwrap().0.map(|r| match r {
                        Response::Txn(t) => t,
                        other => panic!("{other:?}"),
                    });
                    prop_assert!(
                        same(&got, &want),
                        "read-only txn {t:?}\n got {got:?}\nwant {want:?}"
                    );
                }
            }
            let index = self.applied.last().map_or(1, |e| e.index + 1) + entries.len() as u64;
            entries.push(Entry {
                index,
                term: 1,
                request,
            });
            expected.push((req.clone(), self.model.apply(req).unwrap()));
        }
        let applied: Vec<Applied> = self.store().apply(&entries).unwrap();
        prop_assert_eq!(applied.len(), entries.len());
        for (got, (req, (want, events))) in applied.iter().zip(&expected) {
            prop_assert!(
                same(&got.response, want),
                "{req:?}\n got {:?}\nwant {want:?}",
                got.response
            );
            prop_assert_eq!(&got.events, events, "events of {:?}", req);
        }
        let last = self.store().applied().0;
        prop_assert_eq!(last, entries.last().map_or(last, |e| e.index));
        self.applied.extend(entries);
        self.outcomes.extend(applied.iter().map(outcome));
        Ok(())
    }

    /// Closes and opens the store again — synced first unless `crash`, and with keelson's buckets
    /// made stale as `stale` says — then replays every entry applied.
    fn reopen(&mut self, crash: bool, stale: Option<Stale>) -> Result<(), TestCaseError> {
        let mut old = self.store.take().expect("open");
        let before = (old.revisions(), old.applied());
        if !crash {
            old.sync().unwrap();
        }
        drop(old);
        if let Some(stale) = stale {
            let (_db, mut writer) = Db::open(self.path, options().pagefile).unwrap();
            let mut txn = writer.begin().unwrap();
            match stale {
                Stale::Forgotten => {
                    for name in [&b"keelson"[..], b"keelson_index", b"keelson_lease_keys"] {
                        txn.delete_bucket(name).unwrap();
                    }
                }
                Stale::OldLayout => {
                    txn.bucket(b"keelson")
                        .unwrap()
                        .put(b"format", &1i64.to_le_bytes())
                        .unwrap();
                    // Layout 1's index key of `zz` at revision 1: 16 fixed bytes of revision.
                    let mut old = b"zz\0\x01".to_vec();
                    old.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
                    let version = [0u8; 25];
                    txn.bucket(b"keelson_index")
                        .unwrap()
                        .put(&old, &version)
                        .unwrap();
                }
            }
            txn.publish().unwrap();
            writer.sync().unwrap();
        }
        self.store = Some(Store::open(self.path, options()).unwrap());
        let synced = self.store().applied().0;
        prop_assert!(
            crash || synced == before.1.0,
            "a synced store reopens where it was"
        );
        let replayed = self
            .store
            .as_mut()
            .expect("open")
            .apply(&self.applied)
            .unwrap();
        for a in &replayed {
            prop_assert!(a.index > synced);
            prop_assert_eq!(
                outcome(a),
                self.outcomes[a.index as usize - 1].clone(),
                "replaying entry {}",
                a.index
            );
        }
        let store = self.store();
        prop_assert_eq!((store.revisions(), store.applied()), before);
        Ok(())
    }

    /// History, prev_kv, lease links, reads at every revision, and the versions left once
    /// compaction is done.
    fn check_all(&mut self) -> Result<(), TestCaseError> {
        let (view, revs) = self.read();
        let from = revs.compacted + 1;
        let got = mvcc::history(&view, revs, from, usize::MAX).unwrap();
        let want: Vec<_> = self
            .model
            .events
            .iter()
            .filter(|e| e.kv.as_ref().unwrap().mod_revision >= from)
            .cloned()
            .collect();
        prop_assert_eq!(&got, &want, "history from {}", from);
        for event in &got {
            let kv = event.kv.as_ref().unwrap();
            let created =
                event.r#type == EventType::Put as i32 && kv.create_revision == kv.mod_revision;
            let want = if created || kv.mod_revision - 1 < revs.compacted {
                None
            } else {
                self.model.get(&kv.key, kv.mod_revision - 1)
            };
            prop_assert_eq!(
                mvcc::prev_kv(&view, revs, event).unwrap(),
                want,
                "prev_kv of {:?}",
                event
            );
        }
        for id in LEASES {
            prop_assert_eq!(
                mvcc::lease_keys(&view, id).unwrap(),
                self.model.attached(id)
            );
        }
        let leases: Vec<_> = mvcc::leases(&view)
            .unwrap()
            .iter()
            .map(|l| (l.id, l.ttl))
            .collect();
        prop_assert_eq!(leases, self.model.leases());
        drop(view);
        while self.store().compact_step().unwrap() {}
        let (view, revs) = self.read();
        prop_assert_eq!(view.check(), Vec::<String>::new());
        let mut cursor = view.bucket(b"key").unwrap().unwrap().cursor();
        let mut records = 0;
        let mut at = cursor.first().unwrap();
        while at.is_some() {
            records += 1;
            at = cursor.next().unwrap();
        }
        prop_assert_eq!(
            records,
            self.model.versions(),
            "versions kept after compaction"
        );
        prop_assert_eq!(
            mvcc::indexed_versions(&view).unwrap() as usize,
            records,
            "versions indexed after compaction"
        );
        for at in revs.compacted.max(1)..=revs.current {
            self.range(&RangeRequest {
                key: vec![0],
                range_end: vec![0],
                revision: at,
                ..Default::default()
            })?;
        }
        Ok(())
    }
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let store = Store::open(&path, options()).unwrap();
    let mut h = Harness {
        path: &path,
        store: Some(store),
        model: Model::new(options().min_lease_ttl),
        applied: vec![],
        outcomes: vec![],
    };
    for step in steps {
        match step {
            Step::One(Request::Range(r)) => h.range(&r)?,
            Step::One(req) => h.apply(&[req])?,
            Step::Batch(reqs) => h.apply(&reqs)?,
            Step::CompactWork(n) => {
                for _ in 0..n {
                    h.store().compact_step().unwrap();
                }
            }
            Step::Replay(n) => {
                let from = h.applied.len().saturating_sub(n as usize);
                let replay = h.applied[from..].to_vec();
                let store = h.store();
                let before = (store.revisions(), store.applied());
                prop_assert!(
                    store.apply(&replay).unwrap().is_empty(),
                    "replayed entries are skipped"
                );
                prop_assert_eq!((store.revisions(), store.applied()), before);
            }
            Step::Sync => h.store().sync().unwrap(),
            Step::Reopen => h.reopen(false, None)?,
            Step::Crash => h.reopen(true, None)?,
            Step::ForgetIndex => h.reopen(false, Some(Stale::Forgotten))?,
            Step::OldLayout => h.reopen(false, Some(Stale::OldLayout))?,
        }
    }
    h.check_all()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn the_store_matches_the_model(steps in prop::collection::vec(step(), 1..60)) {
        run(steps)?;
    }
}

/// Deletes of more keys than a DeleteRange takes at a time (4096), alone, inside a txn after a
/// put it must see, and by revoking a lease: responses, `prev_kvs` and events as the model has
/// them, across a crash and reopen.
#[test]
fn deletes_of_thousands_of_keys_match_the_model() {
    let put = |key: String, lease: i64| {
        Request::Put(PutRequest {
            key: key.into_bytes(),
            value: b"v".to_vec(),
            lease,
            ..PutRequest::default()
        })
    };
    // Puts of keys `big/{from}` to `big/{to}` (every 3rd under `lease`), 128 to a txn (as few
    // requests as can be: the model copies itself on every one).
    let puts = |from: usize, to: usize, every: usize, lease: i64| {
        let ops = (from..to).step_by(every).map(|i| RequestOp {
            request: Some(Op::RequestPut(PutRequest {
                key: format!("big/{i:05}").into_bytes(),
                value: b"v".to_vec(),
                lease: if i % 3 == 0 { lease } else { 0 },
                ..PutRequest::default()
            })),
        });
        ops.collect::<Vec<_>>()
            .chunks(128)
            .map(|c| {
                Step::One(Request::Txn(TxnRequest {
                    success: c.to_vec(),
                    ..TxnRequest::default()
                }))
            })
            .collect::<Vec<_>>()
    };
    let delete = |prev_kv| DeleteRangeRequest {
        key: b"big/".to_vec(),
        range_end: prefix_end(b"big/"),
        prev_kv,
    };
    let mut steps = vec![
        Step::One(Request::Grant(LeaseGrantRequest { ttl: TTL, id: 101 })),
        Step::One(Request::Grant(LeaseGrantRequest { ttl: TTL, id: 102 })),
        Step::One(put("a".into(), 0)),
        Step::One(put("big0".into(), 101)),
    ];
    // 10 000 keys, every other one written twice, a few deleted one by one.
    steps.extend(puts(0, 10_000, 1, 101));
    steps.extend(puts(0, 10_000, 2, 0));
    for i in [0, 4095, 4096, 4097, 9999] {
        steps.push(Step::One(Request::DeleteRange(DeleteRangeRequest {
            key: format!("big/{i:05}").into_bytes(),
            ..DeleteRangeRequest::default()
        })));
    }
    steps.push(Step::One(Request::DeleteRange(delete(true))));
    steps.push(Step::Crash);
    steps.extend(puts(0, 9_000, 1, 102));
    steps.push(Step::One(Request::Txn(TxnRequest {
        success: vec![
            RequestOp {
                request: Some(Op::RequestPut(PutRequest {
                    key: b"big/99999".to_vec(),
                    ..PutRequest::default()
                })),
            },
            RequestOp {
                request: Some(Op::RequestDeleteRange(delete(false))),
            },
        ],
        ..TxnRequest::default()
    })));
    steps.extend(puts(0, 9_000, 1, 102));
    steps.push(Step::One(Request::Revoke(LeaseRevokeRequest { id: 102 })));
    steps.push(Step::Reopen);
    steps.push(Step::One(Request::Revoke(LeaseRevokeRequest { id: 101 })));
    run(steps).unwrap();
}
