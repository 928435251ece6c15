//! The steps the lock and election services share, as etcd's `clientv3/concurrency` recipes take
//! them — etcd runs those recipes inside its server for these services, against its own KV,
//! Lease and Watch services, and so does keelson: every step here is a call of this core's
//! [`KvApi`], [`LeaseApi`] or a [`Watching`], so it answers, fails and shows in the watch
//! gauges exactly as a client's call would.
//!
//! etcd's recipes get the services' answers through its client library, which turns every etcd
//! error into an error of its own that gRPC then sends as `Unknown` with the same message; so
//! every failed step here answers `Unknown` with the service's message ([`relayed`]).
//!
//! A contender is a key under the recipe's prefix (`<name>/`) named after its lease in hex, put
//! with that lease; contenders are ordered by create revision, and the oldest holds the lock or
//! leads. A waiter waits for the delete of each older contender, newest first.
//!
//! Runs on: every serving core.

use keelson_engine::mvcc;
use keelson_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keelson_proto::etcdserverpb::kv_server::Kv;
use keelson_proto::etcdserverpb::lease_server::Lease;
use keelson_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use keelson_proto::etcdserverpb::request_op::Request as Op;
use keelson_proto::etcdserverpb::response_op::Response as OpResponse;
use keelson_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, RangeResponse,
    RequestOp, ResponseHeader, TxnRequest, TxnResponse, WatchCreateRequest,
};
use keelson_proto::mvccpb::KeyValue;
use keelson_proto::mvccpb::event::EventType;
use tonic::{Request, Status};

use super::context;
use super::kv::KvApi;
use super::lease::LeaseApi;
use super::watch::Watching;
use crate::watch::keys::prefix_end;

/// The TTL of the lease a recipe grants itself when the caller gives none (etcd's
/// `defaultSessionTTL`, in seconds).
const SESSION_TTL: i64 = 60;

/// A failed step's status as etcd's lock and election services answer it: `Unknown`, with the
/// message of the service that refused.
pub fn relayed(status: Status) -> Status {
    Status::unknown(status.message())
}

/// The lease a recipe works with: `lease`, or a new one of [`SESSION_TTL`] if it is 0 — as etcd's
/// server-side session grants one (and, as etcd's, nothing keeps it alive).
pub async fn session_lease(lease: i64) -> Result<i64, Status> {
    if lease != 0 {
        return Ok(lease);
    }
    let grant = LeaseGrantRequest {
        ttl: SESSION_TTL,
        id: 0,
    };
    let granted = LeaseApi.lease_grant(Request::new(grant)).await;
    Ok(granted.map_err(relayed)?.into_inner().id)
}

/// A contender for a lock or a leadership: its lease, the prefix of all the contenders and its
/// own key.
pub struct Contender {
    /// Its lease: the caller's, or one granted for it ([`session_lease`]).
    pub lease: i64,
    /// `<name>/`.
    pub prefix: Vec<u8>,
    /// `<name>/<lease in hex>`.
    pub key: Vec<u8>,
}

impl Contender {
    /// The contender for `name` with `lease` (0: a new one).
    pub async fn new(name: &[u8], lease: i64) -> Result<Contender, Status> {
        let lease = session_lease(lease).await?;
        let prefix = prefix(name);
        let key = contender(&prefix, lease);
        Ok(Contender { lease, prefix, key })
    }
}

/// The prefix of the contenders for `name`.
pub fn prefix(name: &[u8]) -> Vec<u8> {
    [name, b"/"].concat()
}

/// The contender key under `prefix` for `lease`, as etcd names it (`%x` of the lease id).
fn contender(prefix: &[u8], lease: i64) -> Vec<u8> {
    let hex = if lease < 0 {
        format!("-{:x}", lease.unsigned_abs())
    } else {
        format!("{lease:x}")
    };
    [prefix, hex.as_bytes()].concat()
}

/// Compares `key`'s create revision with `revision` (0: the key does not exist).
pub fn created_at(key: &[u8], revision: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(TargetUnion::CreateRevision(revision)),
        ..Compare::default()
    }
}

/// Puts `value` at `key` with `lease`.
pub fn put(key: &[u8], value: &[u8], lease: i64) -> RequestOp {
    op(Op::RequestPut(PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        lease,
        ..PutRequest::default()
    }))
}

/// Gets `key`.
pub fn get(key: &[u8]) -> RequestOp {
    op(Op::RequestRange(RangeRequest {
        key: key.to_vec(),
        ..RangeRequest::default()
    }))
}

/// Deletes `key`.
pub fn delete(key: &[u8]) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: key.to_vec(),
        ..DeleteRangeRequest::default()
    }
}

/// Deletes `key`, as a txn operation.
pub fn delete_op(key: &[u8]) -> RequestOp {
    op(Op::RequestDeleteRange(delete(key)))
}

fn op(request: Op) -> RequestOp {
    RequestOp {
        request: Some(request),
    }
}

/// The one key under `prefix` first or last by create revision (clientv3's `WithFirstCreate`,
/// `WithLastCreate`), among those created at `max_create` or before if it is not 0.
pub fn by_create(prefix: &[u8], order: SortOrder, max_create: i64) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix).unwrap_or_else(|| vec![0]),
        limit: 1,
        sort_order: order as i32,
        sort_target: SortTarget::Create as i32,
        max_create_revision: max_create,
        ..RangeRequest::default()
    }
}

/// The oldest contender under `prefix`, as a txn operation.
pub fn first_created(prefix: &[u8]) -> RequestOp {
    op(Op::RequestRange(by_create(prefix, SortOrder::Ascend, 0)))
}

/// Runs `txn` through this core's KV service.
pub async fn txn(txn: TxnRequest) -> Result<TxnResponse, Status> {
    Ok(KvApi
        .txn(Request::new(txn))
        .await
        .map_err(relayed)?
        .into_inner())
}

/// Reads `range` (linearizable) through this core's KV service.
pub async fn range(range: RangeRequest) -> Result<RangeResponse, Status> {
    Ok(KvApi
        .range(Request::new(range))
        .await
        .map_err(relayed)?
        .into_inner())
}

/// The keys a txn's `at`th operation read (none if it was not a read).
pub fn read_at(response: &TxnResponse, at: usize) -> &[KeyValue] {
    match response.responses.get(at).and_then(|r| r.response.as_ref()) {
        Some(OpResponse::ResponseRange(range)) => &range.kvs,
        _ => &[],
    }
}

/// Waits until every contender under `prefix` created at `max_create` or before is deleted;
/// the header of the read that found none left (etcd's `waitDeletes`).
pub async fn wait_deletes(prefix: &[u8], max_create: i64) -> Result<ResponseHeader, Status> {
    loop {
        let newest = range(by_create(prefix, SortOrder::Descend, max_create)).await?;
        let header = newest.header.unwrap_or_default();
        let Some(kv) = newest.kvs.first() else {
            return Ok(header);
        };
        wait_delete(&kv.key, header.revision).await?;
    }
}

/// Waits for a delete of `key` at `revision` or later.
async fn wait_delete(key: &[u8], revision: i64) -> Result<(), Status> {
    let mut watching = Watching::start(WatchCreateRequest {
        key: key.to_vec(),
        start_revision: revision,
        ..WatchCreateRequest::default()
    })
    .map_err(relayed)?;
    while let Some(response) = watching.next().await {
        let deleted = response
            .map_err(relayed)?
            .events
            .iter()
            .any(|e| e.r#type == EventType::Delete as i32);
        if deleted {
            return Ok(());
        }
    }
    Err(Status::unknown("lost watcher waiting for delete"))
}

/// A write to make if the call it belongs to ends before [`Undo::disarm`] — the client went, as
/// etcd's recipes clean up when their context is cancelled. The write is proposed and not awaited.
pub struct Undo(Option<mvcc::Request>);

impl Undo {
    /// Makes `write` unless disarmed.
    pub fn new(write: impl Into<mvcc::Request>) -> Undo {
        Undo(Some(write.into()))
    }

    /// The call finished: nothing to undo.
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if let Some(write) = self.0.take() {
            // Nobody waits for the outcome; a member that stopped has nothing to undo.
            let _ = context::with(|s| s.propose(write).map(drop));
        }
    }
}
