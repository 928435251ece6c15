//! Txn as etcd 3.4 applies it.
//!
//! Every compare — the txn's own and those of the nested txns on the branch taken — is evaluated
//! first, against the state before the txn; that fixes the path. Then the ops on the path are
//! checked against that same state, all puts (a key `ignore_*` needs must exist, then the lease)
//! before all ranges (revision bounds). Only then do they run, depth first, every change at the
//! txn's one main revision; ranges and puts inside see the txn's earlier changes, compares never do.
//! A check that fails fails the whole txn before anything is written.

use keelson_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keelson_proto::etcdserverpb::request_op::Request;
use keelson_proto::etcdserverpb::response_op::Response;
use keelson_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, ResponseHeader, ResponseOp,
    TxnRequest, TxnResponse,
};
use keelson_proto::mvccpb::KeyValue;

use super::error::{MvccError, Result};
use super::lease;
use super::ops::{self, Checked};
use super::read::{self, End, Revisions};
use super::write::Writes;
use crate::pagefile::View;

/// The branch a txn takes, decided before it runs.
struct Plan<'r> {
    succeeded: bool,
    steps: Vec<Step<'r>>,
}

/// An op on the branch taken.
enum Step<'r> {
    Range(&'r RangeRequest),
    Put(&'r PutRequest),
    Delete(&'r DeleteRangeRequest),
    Txn(Plan<'r>),
}

impl<'r> Plan<'r> {
    /// Evaluates the compares of `req` and of the nested txns on its path, at revision `at`.
    fn of(view: &dyn View, req: &'r TxnRequest, at: i64) -> Result<Self> {
        let succeeded = all_hold(view, &req.compare, at)?;
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut steps = Vec::with_capacity(ops.len());
        for op in ops {
            steps.push(match &op.request {
                Some(Request::RequestRange(r)) => Step::Range(r),
                Some(Request::RequestPut(p)) => Step::Put(p),
                Some(Request::RequestDeleteRange(d)) => Step::Delete(d),
                Some(Request::RequestTxn(t)) => Step::Txn(Plan::of(view, t, at)?),
                // Rejected at the edge (`validate`); a request that skipped it fails whole here.
                None => return Err(MvccError::KeyNotFound),
            });
        }
        Ok(Plan { succeeded, steps })
    }

    /// Calls `check` on every op of the path, depth first, in order.
    fn check_each(&self, check: &mut dyn FnMut(&Step<'r>) -> Result<()>) -> Result<()> {
        for step in &self.steps {
            match step {
                Step::Txn(nested) => nested.check_each(check)?,
                op => check(op)?,
            }
        }
        Ok(())
    }

    /// etcd's checks of the path against the state before the txn (at `revs`).
    fn check(&self, view: &dyn View, revs: Revisions) -> Result<()> {
        self.check_each(&mut |step| match step {
            Step::Put(p) => check_put(view, p, revs.current),
            _ => Ok(()),
        })?;
        self.check_each(&mut |step| match step {
            Step::Range(r) => check_range_revision(r, revs),
            _ => Ok(()),
        })
    }

    /// Runs the path.
    fn run(&self, w: &mut Writes<'_, '_>, compacted: i64) -> Result<TxnResponse> {
        let mut responses = Vec::with_capacity(self.steps.len());
        for step in &self.steps {
            let response = match step {
                Step::Range(r) => {
                    let revs = Revisions {
                        current: w.read_revision(),
                        compacted,
                    };
                    Response::ResponseRange(read::range(&*w.txn, r, revs)?)
                }
                Step::Put(p) => Response::ResponsePut(ops::put(w, p, Checked::BeforeTxn)?),
                Step::Delete(d) => Response::ResponseDeleteRange(ops::delete_range(w, d)?),
                Step::Txn(nested) => {
                    let mut resp = nested.run(w, compacted)?;
                    // etcd leaves a nested txn's header present but empty.
                    resp.header = Some(ResponseHeader::default());
                    Response::ResponseTxn(resp)
                }
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        Ok(TxnResponse {
            header: None,
            succeeded: self.succeeded,
            responses,
        })
    }
}

/// A put on the path: a key `ignore_value`/`ignore_lease` needs must exist, then the lease.
fn check_put(view: &dyn View, p: &PutRequest, at: i64) -> Result<()> {
    if (p.ignore_value || p.ignore_lease) && read::get_at(view, &p.key, at)?.is_none() {
        return Err(MvccError::KeyNotFound);
    }
    if p.lease != 0 && !lease::exists(view, p.lease)? {
        return Err(MvccError::LeaseNotFound(p.lease));
    }
    Ok(())
}

/// A range on the path: its revision, if given, must be readable. Unlike a standalone Range, a
/// negative revision is not "the current one" here: it fails if below the compacted revision.
fn check_range_revision(r: &RangeRequest, revs: Revisions) -> Result<()> {
    if r.revision == 0 {
        Ok(())
    } else if r.revision > revs.current {
        Err(MvccError::FutureRevision {
            requested: r.revision,
            current: revs.current,
        })
    } else if r.revision < revs.compacted {
        Err(MvccError::Compacted {
            requested: r.revision,
            compacted: revs.compacted,
        })
    } else {
        Ok(())
    }
}

/// Whether every compare holds at revision `at`.
fn all_hold(view: &dyn View, compares: &[Compare], at: i64) -> Result<bool> {
    for c in compares {
        if !holds(view, c, at)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether a compare holds at `at`: for every key alive in its range. An empty range compares as
/// one all-zero record, except that a value compare on it fails.
fn holds(view: &dyn View, c: &Compare, at: i64) -> Result<bool> {
    let target = CompareTarget::try_from(c.target).ok();
    let (found, _) = read::live(view, &c.key, End::of(&c.range_end), at, usize::MAX)?;
    if found.is_empty() {
        return Ok(target != Some(CompareTarget::Value) && outcome(c, target, &KeyValue::default()));
    }
    for f in &found {
        let kv = if target == Some(CompareTarget::Value) {
            read::fetch(view, f.rev)?
        } else {
            KeyValue {
                create_revision: f.version.create_revision,
                mod_revision: f.rev.main,
                version: f.version.version,
                lease: f.version.lease,
                ..KeyValue::default()
            }
        };
        if !outcome(c, target, &kv) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// One compare against one record. A target union of another type compares as 0 (or empty
/// bytes); an unknown target compares as equal, an unknown result holds.
fn outcome(c: &Compare, target: Option<CompareTarget>, kv: &KeyValue) -> bool {
    use CompareTarget::{Create, Lease, Mod, Value, Version};
    let given = match (target, &c.target_union) {
        (Some(Create), Some(TargetUnion::CreateRevision(n)))
        | (Some(Mod), Some(TargetUnion::ModRevision(n)))
        | (Some(Version), Some(TargetUnion::Version(n)))
        | (Some(Lease), Some(TargetUnion::Lease(n))) => *n,
        _ => 0,
    };
    let ordering = match target {
        Some(Value) => match &c.target_union {
            Some(TargetUnion::Value(v)) => kv.value.as_slice().cmp(v),
            _ => kv.value.as_slice().cmp(&[]),
        },
        Some(Create) => kv.create_revision.cmp(&given),
        Some(Mod) => kv.mod_revision.cmp(&given),
        Some(Version) => kv.version.cmp(&given),
        Some(Lease) => kv.lease.cmp(&given),
        None => std::cmp::Ordering::Equal,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ordering.is_eq(),
        Ok(CompareResult::NotEqual) => ordering.is_ne(),
        Ok(CompareResult::Greater) => ordering.is_gt(),
        Ok(CompareResult::Less) => ordering.is_lt(),
        Err(_) => true,
    }
}

/// Applies a Txn inside the raft core's write transaction.
pub(crate) fn apply(
    w: &mut Writes<'_, '_>,
    req: &TxnRequest,
    compacted: i64,
) -> Result<TxnResponse> {
    let before = Revisions {
        current: w.main - 1,
        compacted,
    };
    let plan = Plan::of(&*w.txn, req, before.current)?;
    plan.check(&*w.txn, before)?;
    let mut resp = plan.run(w, compacted)?;
    resp.header = ops::header(w.read_revision());
    Ok(resp)
}

/// The ranges of `ops` if every op is a range.
fn only_ranges(ops: &[RequestOp]) -> Option<Vec<&RangeRequest>> {
    ops.iter()
        .map(|op| match &op.request {
            Some(Request::RequestRange(r)) => Some(r),
            _ => None,
        })
        .collect()
}

/// Whether a Txn only reads (its branches hold only ranges, as etcd decides it): such a txn is
/// answered by [`read_only`] instead of being proposed.
pub fn is_read_only(req: &TxnRequest) -> bool {
    only_ranges(&req.success).is_some() && only_ranges(&req.failure).is_some()
}

/// Answers a read-only Txn — one whose branches hold only ranges, as etcd decides it — from any
/// [`View`] at `revs`, as etcd does without going through raft. `None` if the txn writes (or
/// nests a txn): it must be proposed.
pub fn read_only(
    view: &dyn View,
    req: &TxnRequest,
    revs: Revisions,
) -> Result<Option<TxnResponse>> {
    let (Some(success), Some(failure)) = (only_ranges(&req.success), only_ranges(&req.failure))
    else {
        return Ok(None);
    };
    let succeeded = all_hold(view, &req.compare, revs.current)?;
    let ranges = if succeeded { success } else { failure };
    for r in &ranges {
        check_range_revision(r, revs)?;
    }
    let mut responses = Vec::with_capacity(ranges.len());
    for r in ranges {
        responses.push(ResponseOp {
            response: Some(Response::ResponseRange(read::range(view, r, revs)?)),
        });
    }
    Ok(Some(TxnResponse {
        header: ops::header(revs.current),
        succeeded,
        responses,
    }))
}
