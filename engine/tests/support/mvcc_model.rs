//! A plain in-memory model of etcd 3.4's MVCC semantics, written from the spec rather than from the
//! engine: each key's versions in a `Vec`, reads by walking them, a request that fails undone by
//! restoring a copy. The MVCC tests run the same requests through it and the engine and compare.

use std::collections::BTreeMap;

use keelson_engine::mvcc::{MvccError, Response};
use keelson_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keelson_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use keelson_proto::etcdserverpb::request_op::Request as Op;
use keelson_proto::etcdserverpb::response_op::Response as OpResponse;
use keelson_proto::etcdserverpb::*;
use keelson_proto::mvccpb::event::EventType;
use keelson_proto::mvccpb::{Event, KeyValue};

use super::requests::Request;

type Outcome<T> = Result<T, MvccError>;

/// One version of a key: its revision and record (`None`: deleted).
#[derive(Debug, Clone)]
struct Version {
    main: i64,
    kv: Option<KeyValue>,
}

#[derive(Debug, Clone)]
pub struct Model {
    keys: BTreeMap<Vec<u8>, Vec<Version>>,
    pub current: i64,
    pub compacted: i64,
    leases: BTreeMap<i64, i64>,
    min_ttl: i64,
    /// Changes made by the request being applied.
    changes: i64,
    /// Every event ever, in order.
    pub events: Vec<Event>,
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    match end {
        [] => k == key,
        [0] => k >= key,
        end => k >= key && k < end,
    }
}

impl Model {
    pub fn new(min_ttl: i64) -> Self {
        Model {
            keys: BTreeMap::new(),
            current: 1,
            compacted: -1,
            leases: BTreeMap::new(),
            min_ttl,
            changes: 0,
            events: vec![],
        }
    }

    /// `key` as of revision `at`.
    pub fn get(&self, key: &[u8], at: i64) -> Option<KeyValue> {
        self.keys
            .get(key)?
            .iter()
            .rev()
            .find(|v| v.main <= at)?
            .kv
            .clone()
    }

    /// The keys alive at `at` in the range, in key order.
    fn alive(&self, key: &[u8], end: &[u8], at: i64) -> Vec<KeyValue> {
        self.keys
            .keys()
            .filter(|k| in_range(k, key, end))
            .filter_map(|k| self.get(k, at))
            .collect()
    }

    /// The keys attached to lease `id`, in key order.
    pub fn attached(&self, id: i64) -> Vec<Vec<u8>> {
        self.keys
            .keys()
            .filter(|k| self.get(k, self.current).is_some_and(|kv| kv.lease == id))
            .cloned()
            .collect()
    }

    /// The leases granted: id and time to live.
    pub fn leases(&self) -> Vec<(i64, i64)> {
        self.leases.iter().map(|(&id, &ttl)| (id, ttl)).collect()
    }

    /// How many versions the store keeps (after compaction has removed what it may).
    pub fn versions(&self) -> usize {
        self.keys.values().map(Vec::len).sum()
    }

    fn revision(&self) -> i64 {
        self.current + 1
    }

    /// The revision reads inside the request see.
    fn read_at(&self) -> i64 {
        if self.changes > 0 {
            self.revision()
        } else {
            self.current
        }
    }

    /// Applies a request the store applies; `None` for a plain read.
    pub fn apply(&mut self, req: &Request) -> Option<(Outcome<Response>, Vec<Event>)> {
        let before = self.clone();
        self.changes = 0;
        let first_event = self.events.len();
        let outcome = match req {
            Request::Range(_) => return None,
            Request::Put(p) => self.put(p, true).map(Response::Put),
            Request::DeleteRange(d) => Ok(Response::DeleteRange(self.delete_range(d))),
            Request::Txn(t) => self.txn(t).map(Response::Txn),
            Request::Compact(c) => self.compact(c.revision).map(Response::Compaction),
            Request::Grant(g) => self.grant(g).map(Response::LeaseGrant),
            Request::Revoke(r) => self.revoke(r.id).map(Response::LeaseRevoke),
        };
        if outcome.is_err() {
            *self = before;
            return Some((outcome, vec![]));
        }
        if self.changes > 0 {
            self.current += 1;
        }
        Some((outcome, self.events[first_event..].to_vec()))
    }

    fn write(&mut self, key: &[u8], kv: Option<KeyValue>) {
        let main = self.revision();
        let event = match &kv {
            Some(kv) => Event {
                r#type: EventType::Put as i32,
                kv: Some(kv.clone()),
                prev_kv: None,
            },
            None => Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue {
                    key: key.to_vec(),
                    mod_revision: main,
                    ..Default::default()
                }),
                prev_kv: None,
            },
        };
        self.events.push(event);
        self.keys
            .entry(key.to_vec())
            .or_default()
            .push(Version { main, kv });
        self.changes += 1;
    }

    fn put(&mut self, p: &PutRequest, standalone: bool) -> Outcome<PutResponse> {
        if standalone && p.lease != 0 && !self.leases.contains_key(&p.lease) {
            return Err(MvccError::LeaseNotFound(p.lease));
        }
        let ignoring = p.ignore_value || p.ignore_lease;
        let mut prev = self.get(&p.key, self.read_at());
        if prev.is_none() && ignoring && !standalone {
            // keelson's answer where etcd 3.4 crashes: the key as it was before the txn.
            prev = self.get(&p.key, self.current);
        }
        if ignoring && prev.is_none() {
            return Err(MvccError::KeyNotFound);
        }
        let live = self.get(&p.key, self.revision());
        let main = self.revision();
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: live.as_ref().map_or(main, |l| l.create_revision),
            mod_revision: main,
            version: live.as_ref().map_or(1, |l| l.version + 1),
            value: if p.ignore_value {
                prev.as_ref().unwrap().value.clone()
            } else {
                p.value.clone()
            },
            lease: if p.ignore_lease {
                prev.as_ref().unwrap().lease
            } else {
                p.lease
            },
        };
        self.write(&p.key, Some(kv));
        Ok(PutResponse {
            header: header(main),
            prev_kv: if p.prev_kv { prev } else { None },
        })
    }

    fn delete_range(&mut self, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let doomed = self.alive(&d.key, &d.range_end, self.read_at());
        let had_changes = self.changes > 0;
        for kv in &doomed {
            self.write(&kv.key, None);
        }
        let revision = if had_changes || !doomed.is_empty() {
            self.revision()
        } else {
            self.current
        };
        DeleteRangeResponse {
            header: header(revision),
            deleted: doomed.len() as i64,
            prev_kvs: if d.prev_kv { doomed } else { vec![] },
        }
    }

    pub fn range(&self, r: &RangeRequest) -> Outcome<RangeResponse> {
        self.range_as_of(r, self.current)
    }

    /// A Range as seen by a request whose current revision is `current`.
    fn range_as_of(&self, r: &RangeRequest, current: i64) -> Outcome<RangeResponse> {
        if r.revision > current {
            return Err(MvccError::FutureRevision {
                requested: r.revision,
                current,
            });
        }
        let at = if r.revision > 0 { r.revision } else { current };
        if at < self.compacted {
            return Err(MvccError::Compacted {
                requested: at,
                compacted: self.compacted,
            });
        }
        let alive = self.alive(&r.key, &r.range_end, at);
        let count = alive.len() as i64;
        if r.count_only {
            return Ok(RangeResponse {
                header: header(current),
                kvs: vec![],
                more: false,
                count,
            });
        }
        let filtering = [
            r.min_mod_revision,
            r.max_mod_revision,
            r.min_create_revision,
            r.max_create_revision,
        ] != [0; 4];
        let order = SortOrder::try_from(r.sort_order).unwrap();
        let target = SortTarget::try_from(r.sort_target).unwrap();
        let mut kvs: Vec<KeyValue> = if order == SortOrder::None && !filtering && r.limit > 0 {
            // etcd reads only one more than the limit, and sorts (by a target other than the key)
            // just those.
            alive.into_iter().take(r.limit as usize + 1).collect()
        } else {
            alive
        };
        let keep = |value: i64, bound: i64, min: bool| {
            bound == 0 || if min { value >= bound } else { value <= bound }
        };
        kvs.retain(|kv| {
            keep(kv.mod_revision, r.min_mod_revision, true)
                && keep(kv.mod_revision, r.max_mod_revision, false)
                && keep(kv.create_revision, r.min_create_revision, true)
                && keep(kv.create_revision, r.max_create_revision, false)
        });
        let sort_key = |kv: &KeyValue| -> (Vec<u8>, i64) {
            match target {
                SortTarget::Key => (kv.key.clone(), 0),
                SortTarget::Value => (kv.value.clone(), 0),
                SortTarget::Version => (vec![], kv.version),
                SortTarget::Create => (vec![], kv.create_revision),
                SortTarget::Mod => (vec![], kv.mod_revision),
            }
        };
        match (order, target) {
            (SortOrder::None, SortTarget::Key) => {}
            (SortOrder::Descend, _) => kvs.sort_by_key(|kv| std::cmp::Reverse(sort_key(kv))),
            _ => kvs.sort_by_key(sort_key),
        }
        let more = r.limit > 0 && kvs.len() as i64 > r.limit;
        if more {
            kvs.truncate(r.limit as usize);
        }
        if r.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        Ok(RangeResponse {
            header: header(current),
            kvs,
            more,
            count,
        })
    }

    fn holds(&self, c: &Compare) -> bool {
        let target = CompareTarget::try_from(c.target).unwrap();
        let mut kvs = self.alive(&c.key, &c.range_end, self.current);
        if kvs.is_empty() {
            if target == CompareTarget::Value {
                return false;
            }
            kvs.push(KeyValue::default());
        }
        kvs.iter().all(|kv| {
            let ord = match (target, &c.target_union) {
                (CompareTarget::Value, Some(TargetUnion::Value(v))) => kv.value.cmp(v),
                (CompareTarget::Value, _) => kv.value.cmp(&vec![]),
                (CompareTarget::Version, Some(TargetUnion::Version(n))) => kv.version.cmp(n),
                (CompareTarget::Create, Some(TargetUnion::CreateRevision(n))) => {
                    kv.create_revision.cmp(n)
                }
                (CompareTarget::Mod, Some(TargetUnion::ModRevision(n))) => kv.mod_revision.cmp(n),
                (CompareTarget::Lease, Some(TargetUnion::Lease(n))) => kv.lease.cmp(n),
                (CompareTarget::Version, _) => kv.version.cmp(&0),
                (CompareTarget::Create, _) => kv.create_revision.cmp(&0),
                (CompareTarget::Mod, _) => kv.mod_revision.cmp(&0),
                (CompareTarget::Lease, _) => kv.lease.cmp(&0),
            };
            match CompareResult::try_from(c.result).unwrap() {
                CompareResult::Equal => ord.is_eq(),
                CompareResult::NotEqual => ord.is_ne(),
                CompareResult::Greater => ord.is_gt(),
                CompareResult::Less => ord.is_lt(),
            }
        })
    }

    /// Whether a txn's compares hold (on the state before it), and the ops it then runs.
    fn chosen<'t>(&self, t: &'t TxnRequest) -> (bool, &'t [RequestOp]) {
        let ok = t.compare.iter().all(|c| self.holds(c));
        (ok, if ok { &t.success } else { &t.failure })
    }

    /// Every op on the path the txn takes, in order, nested ones flattened.
    fn path<'t>(&self, t: &'t TxnRequest, out: &mut Vec<&'t RequestOp>) {
        for op in self.chosen(t).1 {
            match &op.request {
                Some(Op::RequestTxn(n)) => self.path(n, out),
                _ => out.push(op),
            }
        }
    }

    fn txn(&mut self, t: &TxnRequest) -> Outcome<TxnResponse> {
        let mut path = vec![];
        self.path(t, &mut path);
        for op in &path {
            if let Some(Op::RequestPut(p)) = &op.request {
                if (p.ignore_value || p.ignore_lease) && self.get(&p.key, self.current).is_none() {
                    return Err(MvccError::KeyNotFound);
                }
                if p.lease != 0 && !self.leases.contains_key(&p.lease) {
                    return Err(MvccError::LeaseNotFound(p.lease));
                }
            }
        }
        for op in &path {
            if let Some(Op::RequestRange(r)) = &op.request {
                if r.revision > self.current {
                    return Err(MvccError::FutureRevision {
                        requested: r.revision,
                        current: self.current,
                    });
                }
                if r.revision != 0 && r.revision < self.compacted {
                    return Err(MvccError::Compacted {
                        requested: r.revision,
                        compacted: self.compacted,
                    });
                }
            }
        }
        // Compares are all evaluated on the state before the txn: decide every branch first.
        let decided = self.decide(t);
        let mut resp = self.run(t, &decided)?;
        resp.header = header(self.read_at());
        Ok(resp)
    }

    /// The branch taken by `t` and by each txn nested on its path, in pre-order.
    fn decide(&self, t: &TxnRequest) -> Vec<bool> {
        let (ok, ops) = self.chosen(t);
        let mut out = vec![ok];
        for op in ops {
            if let Some(Op::RequestTxn(n)) = &op.request {
                out.extend(self.decide(n));
            }
        }
        out
    }

    fn run(&mut self, t: &TxnRequest, decided: &[bool]) -> Outcome<TxnResponse> {
        let ok = decided[0];
        let mut rest = &decided[1..];
        let mut responses = vec![];
        for op in if ok { &t.success } else { &t.failure } {
            let response = match op.request.as_ref().unwrap() {
                Op::RequestRange(r) => {
                    OpResponse::ResponseRange(self.range_as_of(r, self.read_at())?)
                }
                Op::RequestPut(p) => OpResponse::ResponsePut(self.put(p, false)?),
                Op::RequestDeleteRange(d) => OpResponse::ResponseDeleteRange(self.delete_range(d)),
                Op::RequestTxn(n) => {
                    let used = self.decide_len(n, rest);
                    let mut nested = self.run(n, &rest[..used])?;
                    rest = &rest[used..];
                    nested.header = Some(ResponseHeader::default());
                    OpResponse::ResponseTxn(nested)
                }
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        Ok(TxnResponse {
            header: None,
            succeeded: ok,
            responses,
        })
    }

    /// How many decisions of `decided` belong to `t` (itself and the txns nested on its path).
    fn decide_len(&self, t: &TxnRequest, decided: &[bool]) -> usize {
        let ops = if decided[0] { &t.success } else { &t.failure };
        let mut used = 1;
        for op in ops {
            if let Some(Op::RequestTxn(n)) = &op.request {
                used += self.decide_len(n, &decided[used..]);
            }
        }
        used
    }

    fn compact(&mut self, at: i64) -> Outcome<CompactionResponse> {
        if at <= self.compacted {
            return Err(MvccError::Compacted {
                requested: at,
                compacted: self.compacted,
            });
        }
        if at > self.current {
            return Err(MvccError::FutureRevision {
                requested: at,
                current: self.current,
            });
        }
        self.compacted = at;
        for versions in self.keys.values_mut() {
            // Keep the newest version at or below `at` unless it is a deletion, and all later ones.
            let newest = versions.iter().rposition(|v| v.main <= at);
            if let Some(i) = newest {
                let cut = if versions[i].kv.is_some() { i } else { i + 1 };
                versions.drain(..cut);
            }
        }
        self.keys.retain(|_, versions| !versions.is_empty());
        Ok(CompactionResponse {
            header: header(self.current),
        })
    }

    fn grant(&mut self, g: &LeaseGrantRequest) -> Outcome<LeaseGrantResponse> {
        if g.ttl > 9_000_000_000 {
            return Err(MvccError::LeaseTtlTooLarge);
        }
        if self.leases.contains_key(&g.id) {
            return Err(MvccError::LeaseExists(g.id));
        }
        let ttl = g.ttl.max(self.min_ttl);
        self.leases.insert(g.id, ttl);
        Ok(LeaseGrantResponse {
            header: header(self.current),
            id: g.id,
            ttl,
            error: String::new(),
        })
    }

    fn revoke(&mut self, id: i64) -> Outcome<LeaseRevokeResponse> {
        if self.leases.remove(&id).is_none() {
            return Err(MvccError::LeaseNotFound(id));
        }
        for key in &self.attached(id) {
            self.write(key, None);
        }
        Ok(LeaseRevokeResponse {
            header: header(self.read_at()),
        })
    }
}
