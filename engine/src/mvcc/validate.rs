//! The checks etcd's gRPC layer makes before a request goes anywhere, with etcd's order of checks
//! (and so its choice of error when several apply). The server calls these at the edge; what
//! passes them cannot make the store misbehave.

use std::collections::BTreeSet;

use keelson_proto::etcdserverpb::request_op::Request;
use keelson_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use super::error::{MvccError, Result};
use super::index_key::index_key_len;
use crate::pagefile::MAX_KEY_SIZE;

/// etcd's default `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;

/// A Range needs a key.
pub fn range(req: &RangeRequest) -> Result<()> {
    non_empty(&req.key)
}

/// A DeleteRange needs a key.
pub fn delete_range(req: &DeleteRangeRequest) -> Result<()> {
    non_empty(&req.key)
}

/// A Put needs a key, and no value with `ignore_value` nor lease with `ignore_lease`.
pub fn put(req: &PutRequest) -> Result<()> {
    non_empty(&req.key)?;
    if req.ignore_value && !req.value.is_empty() {
        return Err(MvccError::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(MvccError::LeaseProvided);
    }
    Ok(())
}

/// A Txn: at most `max_ops` compares and ops per branch (a nested txn gets what its parent left),
/// every compare and op valid, and no key written twice on either branch.
pub fn txn(req: &TxnRequest, max_ops: usize) -> Result<()> {
    ops_within(req, max_ops)?;
    Writes::of(&req.success)?;
    Writes::of(&req.failure)?;
    Ok(())
}

/// A key must be given, and its index keys must fit the page file's key limit (only a key of
/// millions of zero bytes could fail this, under a raised `--max-request-bytes`).
fn non_empty(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        Err(MvccError::EmptyKey)
    } else if index_key_len(key) > MAX_KEY_SIZE {
        Err(MvccError::KeyTooLarge(key.len()))
    } else {
        Ok(())
    }
}

fn ops_within(req: &TxnRequest, max_ops: usize) -> Result<()> {
    let used = req
        .compare
        .len()
        .max(req.success.len())
        .max(req.failure.len());
    if used > max_ops {
        return Err(MvccError::TooManyOps { max: max_ops });
    }
    for c in &req.compare {
        non_empty(&c.key)?;
    }
    for op in req.success.iter().chain(&req.failure) {
        match &op.request {
            Some(Request::RequestRange(r)) => range(r)?,
            Some(Request::RequestPut(p)) => put(p)?,
            Some(Request::RequestDeleteRange(d)) => delete_range(d)?,
            Some(Request::RequestTxn(t)) => ops_within(t, max_ops - used)?,
            None => return Err(MvccError::KeyNotFound),
        }
    }
    Ok(())
}

/// The keys one list of ops (and the txns nested in it) puts and the ranges it deletes, gathered as
/// etcd gathers them to reject a key written twice. The rules follow etcd exactly, asymmetries
/// included: a put is checked against puts and deletes gathered before it, but a nested txn's
/// deletes are never checked against puts already gathered; a delete's `range_end` is taken
/// literally (`"\0"` makes an empty range, so a from-key delete conflicts with nothing).
#[derive(Default)]
struct Writes<'r> {
    puts: BTreeSet<&'r [u8]>,
    deletes: Vec<Deleted<'r>>,
}

/// A deleted key or range.
#[derive(Clone, Copy)]
enum Deleted<'r> {
    Key(&'r [u8]),
    Range(&'r [u8], &'r [u8]),
}

impl<'r> Writes<'r> {
    fn of(ops: &'r [RequestOp]) -> Result<Self> {
        let mut w = Writes::default();
        for op in ops {
            if let Some(Request::RequestDeleteRange(d)) = &op.request {
                w.deletes.push(if d.range_end.is_empty() {
                    Deleted::Key(&d.key)
                } else {
                    Deleted::Range(&d.key, &d.range_end)
                });
            }
        }
        for op in ops {
            if let Some(Request::RequestTxn(t)) = &op.request {
                let then = Writes::of(&t.success)?;
                let otherwise = Writes::of(&t.failure)?;
                for &k in &then.puts {
                    w.add_put(k)?;
                }
                for &k in &otherwise.puts {
                    // The same key in both branches of one txn is fine: only one branch runs.
                    if w.puts.contains(k) && !then.puts.contains(k) || w.deleted(k) {
                        return Err(MvccError::DuplicateKey);
                    }
                    w.puts.insert(k);
                }
                w.deletes.extend(then.deletes);
                w.deletes.extend(otherwise.deletes);
            }
        }
        for op in ops {
            if let Some(Request::RequestPut(p)) = &op.request {
                w.add_put(&p.key)?;
            }
        }
        Ok(w)
    }

    fn deleted(&self, key: &[u8]) -> bool {
        self.deletes.iter().any(|d| match *d {
            Deleted::Key(k) => k == key,
            Deleted::Range(start, end) => start <= key && key < end,
        })
    }

    fn add_put(&mut self, key: &'r [u8]) -> Result<()> {
        if self.puts.contains(key) || self.deleted(key) {
            return Err(MvccError::DuplicateKey);
        }
        self.puts.insert(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use keelson_proto::etcdserverpb::{Compare, RequestOp};

    use super::*;

    #[test]
    fn keys_too_long_to_index_are_refused_before_they_reach_the_store() {
        // Each lone zero byte takes two bytes in an index key.
        let zeros = PutRequest {
            key: b"\0a".repeat(MAX_KEY_SIZE * 3 / 8),
            ..PutRequest::default()
        };
        assert!(matches!(put(&zeros), Err(MvccError::KeyTooLarge(_))));
        let fine = PutRequest {
            key: vec![b'a'; MAX_KEY_SIZE * 3 / 4],
            ..PutRequest::default()
        };
        assert!(put(&fine).is_ok());
    }

    fn put_op(key: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: key.into(),
                ..PutRequest::default()
            })),
        }
    }

    fn delete_op(key: &str, end: &str) -> RequestOp {
        let d = DeleteRangeRequest {
            key: key.into(),
            range_end: end.into(),
            ..DeleteRangeRequest::default()
        };
        RequestOp {
            request: Some(Request::RequestDeleteRange(d)),
        }
    }

    fn nested(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestTxn(TxnRequest {
                compare: vec![],
                success,
                failure,
            })),
        }
    }

    fn check(success: Vec<RequestOp>) -> Result<()> {
        txn(
            &TxnRequest {
                compare: vec![],
                success,
                failure: vec![],
            },
            DEFAULT_MAX_TXN_OPS,
        )
    }

    #[test]
    fn duplicate_keys_follow_etcds_rules() {
        assert!(matches!(
            check(vec![put_op("a"), put_op("a")]),
            Err(MvccError::DuplicateKey)
        ));
        assert!(matches!(
            check(vec![put_op("b"), delete_op("a", "c")]),
            Err(MvccError::DuplicateKey)
        ));
        assert!(matches!(
            check(vec![delete_op("a", ""), put_op("a")]),
            Err(MvccError::DuplicateKey)
        ));
        // A from-key delete ("\0") is an empty interval to etcd's check.
        assert!(check(vec![delete_op("a", "\0"), put_op("b")]).is_ok());
        // One nested txn may put a key in both branches; two siblings may not.
        assert!(check(vec![nested(vec![put_op("a")], vec![put_op("a")])]).is_ok());
        assert!(matches!(
            check(vec![
                nested(vec![put_op("a")], vec![]),
                nested(vec![put_op("a")], vec![])
            ]),
            Err(MvccError::DuplicateKey)
        ));
        // A sibling's delete after a put passes; a put after a sibling's delete does not.
        assert!(
            check(vec![
                nested(vec![put_op("a")], vec![]),
                nested(vec![delete_op("a", "")], vec![])
            ])
            .is_ok()
        );
        assert!(matches!(
            check(vec![
                nested(vec![delete_op("a", "")], vec![]),
                nested(vec![put_op("a")], vec![])
            ]),
            Err(MvccError::DuplicateKey)
        ));
        // The parent's put conflicts with a child's delete, whatever the order.
        assert!(matches!(
            check(vec![put_op("a"), nested(vec![delete_op("a", "b")], vec![])]),
            Err(MvccError::DuplicateKey)
        ));
        assert!(check(vec![delete_op("a", "b"), delete_op("a", "")]).is_ok());
    }

    #[test]
    fn op_budgets_shrink_with_nesting_and_empty_ops_are_rejected() {
        let puts = |prefix: &str, n: usize| {
            (0..n)
                .map(|i| put_op(&format!("{prefix}{i}")))
                .collect::<Vec<_>>()
        };
        assert!(check(puts("k", 128)).is_ok());
        assert!(matches!(
            check(puts("k", 129)),
            Err(MvccError::TooManyOps { max: 128 })
        ));
        let mut ops = puts("k", 100);
        ops.push(nested(puts("n", 28), vec![]));
        assert!(matches!(
            check(ops.clone()),
            Err(MvccError::TooManyOps { max: 27 })
        ));
        ops.pop();
        ops.push(nested(puts("n", 27), vec![]));
        assert!(check(ops).is_ok());
        assert!(matches!(
            check(vec![RequestOp { request: None }]),
            Err(MvccError::KeyNotFound)
        ));
        let empty_compare = TxnRequest {
            compare: vec![Compare::default()],
            success: vec![],
            failure: vec![],
        };
        assert!(matches!(
            txn(&empty_compare, DEFAULT_MAX_TXN_OPS),
            Err(MvccError::EmptyKey)
        ));
    }
}
