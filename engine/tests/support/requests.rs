//! Random etcd requests for the MVCC tests, drawn from a few keys, values and leases so that they
//! collide often: ranges with every option, puts with every flag, deletes, nested txns with every
//! kind of compare, compactions, lease grants and revokes. Revisions are drawn from a small range,
//! so most land near the store's current revision, some in the future, some compacted.
//!
//! [`Shape::Comparable`] keeps to what real etcd 3.4 answers without crashing and what a client
//! library can send: no `ignore_value`/`ignore_lease` put in a txn that also deletes, no compare
//! whose target value is of another type than its target.

use keelson_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keelson_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use keelson_proto::etcdserverpb::request_op::Request as Op;
use keelson_proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
    PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use proptest::prelude::*;

/// Keys: prefixes of each other, a zero byte inside, the smallest and a large one.
pub const KEYS: [&[u8]; 9] = [
    b"\0", b"a", b"a\0", b"ab", b"b", b"b/1", b"b/2", b"c", b"\xff",
];
/// Values, the empty one included.
pub const VALUES: [&[u8]; 4] = [b"", b"x", b"y", b"xyz"];
/// Lease ids the tests grant and revoke (any may be missing when used).
pub const LEASES: [i64; 3] = [101, 102, 103];
/// A time to live long enough that no lease expires during a test (real etcd expires them).
pub const TTL: i64 = 3600;

/// A request to a store, or a read of it.
#[derive(Debug, Clone)]
pub enum Request {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
    Grant(LeaseGrantRequest),
    Revoke(LeaseRevokeRequest),
}

/// Which requests to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Everything keelson must answer.
    All,
    /// What real etcd answers without crashing, and the `etcd-client` crate can send.
    Comparable,
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(&KEYS[..]).prop_map(<[u8]>::to_vec)
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(&VALUES[..]).prop_map(<[u8]>::to_vec)
}

fn lease() -> impl Strategy<Value = i64> {
    prop_oneof![3 => Just(0), 2 => prop::sample::select(&LEASES[..])]
}

/// The key that ends the range of keys starting with `prefix` (as etcdctl's `--prefix`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A key and a range end of every kind: none, from the key on, another key, a prefix's end, and
/// everything (`\0`, `\0`).
fn key_range() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    prop_oneof![
        4 => key().prop_map(|k| (k, vec![])),
        1 => key().prop_map(|k| (k, vec![0])),
        2 => (key(), key()),
        2 => key().prop_map(|k| { let end = prefix_end(&k); (k, end) }),
        1 => Just((vec![0], vec![0])),
    ]
}

fn revision() -> impl Strategy<Value = i64> {
    prop_oneof![3 => Just(0), 2 => -2i64..30]
}

fn range() -> impl Strategy<Value = RangeRequest> {
    let filters = prop_oneof![3 => Just([0i64; 4]), 1 => prop::array::uniform4(prop_oneof![2 => Just(0i64), 1 => 1i64..25])];
    let order = prop_oneof![
        3 => Just(SortOrder::None),
        1 => Just(SortOrder::Ascend),
        1 => Just(SortOrder::Descend),
    ];
    let target = prop_oneof![
        3 => Just(SortTarget::Key),
        1 => Just(SortTarget::Version),
        1 => Just(SortTarget::Create),
        1 => Just(SortTarget::Mod),
        1 => Just(SortTarget::Value),
    ];
    (
        key_range(),
        prop_oneof![2 => Just(0i64), 1 => -1i64..5],
        revision(),
        order,
        target,
        any::<[bool; 2]>(),
        filters,
    )
        .prop_map(
            |((key, range_end), limit, revision, order, target, [keys_only, count_only], f)| {
                RangeRequest {
                    key,
                    range_end,
                    limit,
                    revision,
                    sort_order: order as i32,
                    sort_target: target as i32,
                    serializable: false,
                    keys_only,
                    count_only,
                    min_mod_revision: f[0],
                    max_mod_revision: f[1],
                    min_create_revision: f[2],
                    max_create_revision: f[3],
                }
            },
        )
}

fn put() -> impl Strategy<Value = PutRequest> {
    // Mostly well-formed; sometimes a value or lease given with ignore_* (rejected at the edge).
    (
        key(),
        value(),
        lease(),
        any::<bool>(),
        prop_oneof![3 => Just((false, false)), 1 => any::<(bool, bool)>()],
    )
        .prop_map(
            |(key, value, lease, prev_kv, (ignore_value, ignore_lease))| PutRequest {
                key,
                value,
                lease,
                prev_kv,
                ignore_value,
                ignore_lease,
            },
        )
        .prop_map(|mut p| {
            if p.ignore_value && p.key.len() % 3 != 0 {
                p.value.clear();
            }
            if p.ignore_lease && p.key.len() % 3 != 1 {
                p.lease = 0;
            }
            p
        })
}

fn delete_range() -> impl Strategy<Value = DeleteRangeRequest> {
    (key_range(), any::<bool>()).prop_map(|((key, range_end), prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn compare(shape: Shape) -> impl Strategy<Value = Compare> {
    let union = prop_oneof![
        (0i64..25).prop_map(TargetUnion::Version),
        (0i64..25).prop_map(TargetUnion::CreateRevision),
        (0i64..25).prop_map(TargetUnion::ModRevision),
        value().prop_map(TargetUnion::Value),
        prop_oneof![Just(0i64), prop::sample::select(&LEASES[..])].prop_map(TargetUnion::Lease),
    ];
    let result = prop::sample::select(vec![
        CompareResult::Equal,
        CompareResult::NotEqual,
        CompareResult::Greater,
        CompareResult::Less,
    ]);
    let target = prop::sample::select(vec![
        CompareTarget::Version,
        CompareTarget::Create,
        CompareTarget::Mod,
        CompareTarget::Value,
        CompareTarget::Lease,
    ]);
    (
        key_range(),
        result,
        target,
        union,
        prop::bool::weighted(if shape == Shape::All { 0.85 } else { 1.0 }),
    )
        .prop_map(|((key, range_end), result, target, union, matched)| {
            // Mostly a union of the target's own type; sometimes another (it compares as zero).
            let union = if matched {
                let number = match &union {
                    TargetUnion::Version(n)
                    | TargetUnion::CreateRevision(n)
                    | TargetUnion::ModRevision(n)
                    | TargetUnion::Lease(n) => *n,
                    TargetUnion::Value(_) => 0,
                };
                match (target, union) {
                    (CompareTarget::Value, TargetUnion::Value(v)) => TargetUnion::Value(v),
                    (CompareTarget::Value, _) => TargetUnion::Value(b"x".to_vec()),
                    (CompareTarget::Version, _) => TargetUnion::Version(number),
                    (CompareTarget::Create, _) => TargetUnion::CreateRevision(number),
                    (CompareTarget::Mod, _) => TargetUnion::ModRevision(number),
                    (CompareTarget::Lease, _) => TargetUnion::Lease(number),
                }
            } else {
                union
            };
            Compare {
                result: result as i32,
                target: target as i32,
                key,
                range_end,
                target_union: Some(union),
            }
        })
}

fn op(nested: BoxedStrategy<TxnRequest>) -> impl Strategy<Value = RequestOp> {
    prop_oneof![
        2 => range().prop_map(Op::RequestRange),
        3 => put().prop_map(Op::RequestPut),
        2 => delete_range().prop_map(Op::RequestDeleteRange),
        1 => nested.prop_map(Op::RequestTxn),
    ]
    .prop_map(|request| RequestOp {
        request: Some(request),
    })
}

fn txn(shape: Shape) -> impl Strategy<Value = TxnRequest> {
    let leaf = (
        prop::collection::vec(compare(shape), 0..3),
        prop::collection::vec(range().prop_map(Op::RequestRange), 0..3),
    )
        .prop_map(|(compare, ranges)| TxnRequest {
            compare,
            success: ranges
                .into_iter()
                .map(|r| RequestOp { request: Some(r) })
                .collect(),
            failure: vec![],
        });
    leaf.prop_recursive(2, 12, 4, move |inner| {
        (
            prop::collection::vec(compare(shape), 0..3),
            prop::collection::vec(op(inner.clone()), 0..4),
            prop::collection::vec(op(inner), 0..4),
        )
            .prop_map(|(compare, success, failure)| TxnRequest {
                compare,
                success,
                failure,
            })
    })
}

/// Whether `t` (or a txn nested in it) has an `ignore_*` put together with a delete on one branch
/// — real etcd 3.4 can crash on such a txn.
fn ignores_after_deletes(t: &TxnRequest) -> bool {
    fn flags(ops: &[RequestOp]) -> (bool, bool) {
        let (mut ignores, mut deletes) = (false, false);
        for op in ops {
            match &op.request {
                Some(Op::RequestPut(p)) => ignores |= p.ignore_value || p.ignore_lease,
                Some(Op::RequestDeleteRange(_)) => deletes = true,
                Some(Op::RequestTxn(t)) => {
                    for branch in [&t.success, &t.failure] {
                        let (i, d) = flags(branch);
                        ignores |= i;
                        deletes |= d;
                    }
                }
                _ => {}
            }
        }
        (ignores, deletes)
    }
    [&t.success, &t.failure]
        .into_iter()
        .any(|branch| flags(branch) == (true, true))
}

/// One random request.
pub fn request(shape: Shape) -> impl Strategy<Value = Request> {
    let txn = txn(shape).prop_filter("etcd 3.4 crashes on it", move |t| {
        shape == Shape::All || !ignores_after_deletes(t)
    });
    prop_oneof![
        4 => range().prop_map(Request::Range),
        5 => put().prop_map(Request::Put),
        2 => delete_range().prop_map(Request::DeleteRange),
        3 => txn.prop_map(Request::Txn),
        1 => (-1i64..30, any::<bool>()).prop_map(|(revision, physical)| Request::Compact(CompactionRequest { revision, physical })),
        // A time to live below etcd's minimum is raised to it, and then real etcd would expire the
        // lease during the test.
        1 => (prop::sample::select(&LEASES[..]), prop::sample::select(match shape {
            Shape::All => vec![TTL, 0, 9_000_000_001],
            Shape::Comparable => vec![TTL, 9_000_000_001],
        }))
            .prop_map(|(id, ttl)| Request::Grant(LeaseGrantRequest { ttl, id })),
        1 => prop::sample::select(&LEASES[..]).prop_map(|id| Request::Revoke(LeaseRevokeRequest { id })),
    ]
}
