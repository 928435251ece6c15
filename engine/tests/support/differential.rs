//! Asking real etcd (through the `etcd-client` crate) and keelson's MVCC store the same request,
//! and getting comparable answers: responses as keelson's protobuf types, errors as gRPC code and
//! exact message. Shared by the differential test and the data file interop tests.

use etcd_client::{
    Client, CompactionOptions, Compare as ClientCompare, CompareOp, DeleteOptions, GetOptions,
    LeaseGrantOptions, PutOptions, Txn, TxnOp,
};
use keelson_engine::mvcc::{self, MvccError, Response, Store, validate};
use keelson_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keelson_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use keelson_proto::etcdserverpb::request_op::Request as Op;
use keelson_proto::etcdserverpb::*;
use prost::Message;

use super::requests::Request;

/// An answer, comparable between etcd and keelson: a response (re-encoded as keelson's type) or
/// a gRPC status code and message.
#[derive(Debug, PartialEq)]
pub enum Answer {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    Status(i32, String),
}

/// etcd-client's message as keelson's (the same protobuf message, so the same bytes).
pub fn ours<M: Message + Default>(theirs: &impl Message) -> M {
    M::decode(theirs.encode_to_vec().as_slice()).expect("same message, same fields")
}

/// The header fields the server fills in from raft and membership: not the store's business.
fn strip(header: &mut Option<ResponseHeader>) {
    if let Some(h) = header {
        (h.cluster_id, h.member_id, h.raft_term) = (0, 0, 0);
    }
}

fn status(e: &MvccError) -> Answer {
    let (code, message) = e.status();
    Answer::Status(code as i32, message)
}

/// A request as `etcd-client` sends it: it drops an ascending sort by key (the default order).
fn as_sent(mut r: RangeRequest) -> RangeRequest {
    if r.sort_target == SortTarget::Key as i32 && r.sort_order == SortOrder::Ascend as i32 {
        r.sort_order = SortOrder::None as i32;
    }
    r
}

pub fn normalize(req: Request) -> Request {
    fn txn(mut t: TxnRequest) -> TxnRequest {
        for op in t.success.iter_mut().chain(t.failure.iter_mut()) {
            op.request = match op.request.take() {
                Some(Op::RequestRange(r)) => Some(Op::RequestRange(as_sent(r))),
                Some(Op::RequestTxn(n)) => Some(Op::RequestTxn(txn(n))),
                other => other,
            };
        }
        t
    }
    match req {
        Request::Range(r) => Request::Range(as_sent(r)),
        Request::Txn(t) => Request::Txn(txn(t)),
        other => other,
    }
}

fn get_options(r: &RangeRequest) -> GetOptions {
    let mut o = GetOptions::new()
        .with_limit(r.limit)
        .with_revision(r.revision)
        .with_sort(
            etcd_client::SortTarget::try_from(r.sort_target).unwrap(),
            etcd_client::SortOrder::try_from(r.sort_order).unwrap(),
        )
        .with_min_mod_revision(r.min_mod_revision)
        .with_max_mod_revision(r.max_mod_revision)
        .with_min_create_revision(r.min_create_revision)
        .with_max_create_revision(r.max_create_revision);
    if !r.range_end.is_empty() {
        o = o.with_range(r.range_end.clone());
    }
    if r.keys_only {
        o = o.with_keys_only();
    }
    if r.count_only {
        o = o.with_count_only();
    }
    o
}

fn put_options(p: &PutRequest) -> PutOptions {
    let mut o = PutOptions::new().with_lease(p.lease);
    if p.prev_kv {
        o = o.with_prev_key();
    }
    if p.ignore_value {
        o = o.with_ignore_value();
    }
    if p.ignore_lease {
        o = o.with_ignore_lease();
    }
    o
}

fn delete_options(d: &DeleteRangeRequest) -> DeleteOptions {
    let mut o = DeleteOptions::new();
    if !d.range_end.is_empty() {
        o = o.with_range(d.range_end.clone());
    }
    if d.prev_kv {
        o = o.with_prev_key();
    }
    o
}

fn client_compare(c: &Compare) -> ClientCompare {
    let op = match CompareResult::try_from(c.result).unwrap() {
        CompareResult::Equal => CompareOp::Equal,
        CompareResult::Greater => CompareOp::Greater,
        CompareResult::Less => CompareOp::Less,
        CompareResult::NotEqual => CompareOp::NotEqual,
    };
    let key = c.key.clone();
    let compare = match (
        CompareTarget::try_from(c.target).unwrap(),
        c.target_union.clone().unwrap(),
    ) {
        (CompareTarget::Version, TargetUnion::Version(n)) => ClientCompare::version(key, op, n),
        (CompareTarget::Create, TargetUnion::CreateRevision(n)) => {
            ClientCompare::create_revision(key, op, n)
        }
        (CompareTarget::Mod, TargetUnion::ModRevision(n)) => {
            ClientCompare::mod_revision(key, op, n)
        }
        (CompareTarget::Value, TargetUnion::Value(v)) => ClientCompare::value(key, op, v),
        (CompareTarget::Lease, TargetUnion::Lease(n)) => ClientCompare::lease(key, op, n),
        other => panic!("etcd-client cannot send {other:?}"),
    };
    if c.range_end.is_empty() {
        compare
    } else {
        compare.with_range(c.range_end.clone())
    }
}

fn client_txn(t: &TxnRequest) -> Txn {
    let ops = |ops: &[RequestOp]| -> Vec<TxnOp> {
        ops.iter()
            .map(|op| match op.request.as_ref().unwrap() {
                Op::RequestRange(r) => TxnOp::get(r.key.clone(), Some(get_options(r))),
                Op::RequestPut(p) => {
                    TxnOp::put(p.key.clone(), p.value.clone(), Some(put_options(p)))
                }
                Op::RequestDeleteRange(d) => TxnOp::delete(d.key.clone(), Some(delete_options(d))),
                Op::RequestTxn(n) => TxnOp::txn(client_txn(n)),
            })
            .collect()
    };
    Txn::new()
        .when(t.compare.iter().map(client_compare).collect::<Vec<_>>())
        .and_then(ops(&t.success))
        .or_else(ops(&t.failure))
}

/// etcd's answer to `req`.
pub async fn ask_etcd(client: &mut Client, req: &Request) -> Answer {
    let answer = match req {
        Request::Range(r) => client
            .get(r.key.clone(), Some(get_options(r)))
            .await
            .map(|a| {
                let mut resp: RangeResponse = ours(&a.0);
                strip(&mut resp.header);
                Answer::Range(resp)
            }),
        Request::Put(p) => client
            .put(p.key.clone(), p.value.clone(), Some(put_options(p)))
            .await
            .map(|a| {
                let mut resp: PutResponse = ours(&a.0);
                strip(&mut resp.header);
                Answer::Put(resp)
            }),
        Request::DeleteRange(d) => client
            .delete(d.key.clone(), Some(delete_options(d)))
            .await
            .map(|a| {
                let mut resp: DeleteRangeResponse = ours(&a.0);
                strip(&mut resp.header);
                Answer::DeleteRange(resp)
            }),
        Request::Txn(t) => client.txn(client_txn(t)).await.map(|a| {
            let mut resp: TxnResponse = ours(&a.0);
            strip(&mut resp.header);
            Answer::Txn(resp)
        }),
        Request::Compact(c) => {
            let options = c.physical.then(|| CompactionOptions::new().with_physical());
            client.compact(c.revision, options).await.map(|a| {
                let mut resp: CompactionResponse = ours(&a.0);
                strip(&mut resp.header);
                Answer::Compaction(resp)
            })
        }
        Request::Grant(g) => client
            .lease_grant(g.ttl, Some(LeaseGrantOptions::new().with_id(g.id)))
            .await
            .map(|a| {
                let mut resp: LeaseGrantResponse = ours(&a.0);
                strip(&mut resp.header);
                Answer::LeaseGrant(resp)
            }),
        Request::Revoke(r) => client.lease_revoke(r.id).await.map(|a| {
            let mut resp: LeaseRevokeResponse = ours(&a.0);
            strip(&mut resp.header);
            Answer::LeaseRevoke(resp)
        }),
    };
    answer.unwrap_or_else(|e| match e {
        etcd_client::Error::GRpcStatus(s) => {
            Answer::Status(s.code() as i32, s.message().to_string())
        }
        other => panic!("etcd: {other}"),
    })
}

/// keelson's answer to `req`: the edge's checks, then a read on a read transaction or an entry
/// applied to the store.
pub fn ask_keelson(store: &mut Store, index: &mut u64, req: &Request) -> Answer {
    let checked = match req {
        Request::Range(r) => validate::range(r),
        Request::Put(p) => validate::put(p),
        Request::DeleteRange(d) => validate::delete_range(d),
        Request::Txn(t) => validate::txn(t, validate::DEFAULT_MAX_TXN_OPS),
        Request::Compact(_) | Request::Grant(_) | Request::Revoke(_) => Ok(()),
    };
    if let Err(e) = checked {
        return status(&e);
    }
    let view = store.db().begin_read().unwrap();
    let revs = mvcc::revisions(&view).unwrap();
    let request = match req {
        Request::Range(r) => {
            return mvcc::range(&view, r, revs).map_or_else(|e| status(&e), Answer::Range);
        }
        Request::Txn(t) => match mvcc::read_only_txn(&view, t, revs) {
            Ok(Some(resp)) => return Answer::Txn(resp),
            Err(e) => return status(&e),
            Ok(None) => mvcc::Request::Txn(t.clone()),
        },
        Request::Put(p) => mvcc::Request::Put(p.clone()),
        Request::DeleteRange(d) => mvcc::Request::DeleteRange(d.clone()),
        Request::Compact(c) => mvcc::Request::Compaction(*c),
        Request::Grant(g) => mvcc::Request::LeaseGrant(*g),
        Request::Revoke(r) => mvcc::Request::LeaseRevoke(*r),
    };
    drop(view);
    *index += 1;
    let mut applied = store
        .apply(&[mvcc::Entry {
            index: *index,
            term: 1,
            request,
        }])
        .unwrap();
    while store.compact_step().unwrap() {}
    match applied.pop().unwrap().response {
        Ok(Response::Put(r)) => Answer::Put(r),
        Ok(Response::DeleteRange(r)) => Answer::DeleteRange(r),
        Ok(Response::Txn(r)) => Answer::Txn(r),
        Ok(Response::Compaction(r)) => Answer::Compaction(r),
        Ok(Response::LeaseGrant(r)) => Answer::LeaseGrant(r),
        Ok(Response::LeaseRevoke(r)) => Answer::LeaseRevoke(r),
        Ok(other) => panic!("unexpected {other:?}"),
        Err(e) => status(&e),
    }
}
