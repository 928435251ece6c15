//! Alarms and the backend quota, as etcd keeps and enforces them.
//!
//! Alarms live in etcd's `alarm` bucket, one key per alarm — the encoded `AlarmMember` (member,
//! type) — with an empty value, and change only through raft ([`apply`]: GET, ACTIVATE,
//! DEACTIVATE; raising an alarm that is raised already, or clearing one that is not, changes
//! nothing). While NOSPACE is raised, writes that would grow the file — a Put, a Txn with a Put in
//! it, a LeaseGrant — are refused with etcd's `database space exceeded`; while CORRUPT is raised,
//! every write is refused ([`refusal`]).
//!
//! The quota: a request costs what etcd charges it ([`cost`]: 256 bytes plus key and value per
//! Put, the costlier branch of a Txn's top-level Puts, 64 per LeaseGrant), and fits if the file's
//! size plus its cost stays under the quota. One that does not fit is still applied — as etcd's
//! quota applier does — but answered `database space exceeded`, and the member then raises
//! NOSPACE.

use keelson_proto::etcdserverpb::alarm_request::AlarmAction;
use keelson_proto::etcdserverpb::request_op::Request as Op;
use keelson_proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, PutRequest, TxnRequest,
};
use prost::Message;

use super::error::{MvccError, Result};
use super::read::{corrupt, decode_all};
use super::request::Request;
use super::schema::ALARM;
use crate::pagefile::{View, WriteTxn};

/// What etcd charges every Put beyond its key and value.
const KV_OVERHEAD: u64 = 256;
/// What etcd charges a LeaseGrant.
const LEASE_OVERHEAD: u64 = 64;

/// Every alarm raised, in the bucket's order (by member, then type).
pub fn alarms(view: &dyn View) -> Result<Vec<AlarmMember>> {
    decode_all(view, ALARM, |key, _| {
        AlarmMember::decode(key)
            .map(Some)
            .map_err(|_| corrupt("an alarm key does not decode"))
    })
}

/// Whether an alarm of `kind` is among `raised`.
pub fn is_raised(raised: &[AlarmMember], kind: AlarmType) -> bool {
    raised.iter().any(|a| a.alarm == kind as i32)
}

/// What etcd charges `request` against the quota (0: it cannot grow the file).
pub fn cost(request: &Request) -> u64 {
    fn put(p: &PutRequest) -> u64 {
        KV_OVERHEAD + (p.key.len() + p.value.len()) as u64
    }
    fn branch(ops: &[keelson_proto::etcdserverpb::RequestOp]) -> u64 {
        ops.iter()
            .filter_map(|op| match &op.request {
                Some(Op::RequestPut(p)) => Some(put(p)),
                _ => None,
            })
            .sum()
    }
    fn txn(t: &TxnRequest) -> u64 {
        branch(&t.success).max(branch(&t.failure))
    }
    match request {
        Request::Put(p) => put(p),
        Request::Txn(t) => txn(t),
        Request::LeaseGrant(_) => LEASE_OVERHEAD,
        _ => 0,
    }
}

/// Why the alarms `raised` refuse `request`, if they do.
pub fn refusal(raised: &[AlarmMember], request: &Request) -> Option<MvccError> {
    let writes = matches!(
        request,
        Request::Put(_)
            | Request::DeleteRange(_)
            | Request::Txn(_)
            | Request::Compaction(_)
            | Request::LeaseGrant(_)
            | Request::LeaseRevoke(_)
    );
    if writes && is_raised(raised, AlarmType::Corrupt) {
        return Some(MvccError::ClusterCorrupt);
    }
    if is_raised(raised, AlarmType::Nospace) && cost(request) > 0 {
        return Some(MvccError::NoSpace);
    }
    None
}

/// The request that raises NOSPACE for member `member_id`.
pub fn raise_nospace(member_id: u64) -> Request {
    Request::Alarm(AlarmRequest {
        action: AlarmAction::Activate as i32,
        member_id,
        alarm: AlarmType::Nospace as i32,
    })
}

/// Applies an Alarm request: lists the alarms of its type (NONE: all), raises or clears one.
pub(crate) fn apply(txn: &mut WriteTxn<'_>, request: &AlarmRequest) -> Result<AlarmResponse> {
    let asked = AlarmMember {
        member_id: request.member_id,
        alarm: request.alarm,
    };
    let key = asked.encode_to_vec();
    let mut response = AlarmResponse::default();
    match AlarmAction::try_from(request.action) {
        Ok(AlarmAction::Get) => {
            let all = alarms(&*txn)?;
            response.alarms = all
                .into_iter()
                .filter(|a| request.alarm == AlarmType::None as i32 || a.alarm == request.alarm)
                .collect();
        }
        Ok(AlarmAction::Activate) => {
            let mut bucket = txn.bucket(ALARM)?;
            if bucket.get(&key)?.is_none() {
                bucket.put(&key, &[])?;
            }
            response.alarms.push(asked);
        }
        Ok(AlarmAction::Deactivate) => {
            if txn.bucket(ALARM)?.delete(&key)? {
                response.alarms.push(asked);
            }
        }
        // etcd answers an unknown action with nothing.
        Err(_) => {}
    }
    Ok(response)
}

/// Whether `request` does not fit `quota`: the file's `size` plus its cost reach it (etcd's
/// `Available`, negated). Requests that cost nothing always fit.
pub fn over_quota(size: u64, request: &Request, quota: Option<u64>) -> bool {
    let cost = cost(request);
    quota.is_some_and(|quota| cost > 0 && size + cost >= quota)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keelson_proto::etcdserverpb::{LeaseGrantRequest, RequestOp};

    fn put(key: &str, value: &str) -> PutRequest {
        PutRequest {
            key: key.into(),
            value: value.into(),
            ..PutRequest::default()
        }
    }

    #[test]
    fn costs_are_etcds() {
        assert_eq!(cost(&Request::Put(put("k", "vv"))), 259);
        let op = |p| RequestOp {
            request: Some(Op::RequestPut(p)),
        };
        let txn = TxnRequest {
            success: vec![op(put("a", "1")), op(put("b", "2"))],
            failure: vec![op(put("c", "333333"))],
            ..TxnRequest::default()
        };
        assert_eq!(cost(&Request::Txn(txn)), 2 * 258);
        assert_eq!(cost(&Request::LeaseGrant(LeaseGrantRequest::default())), 64);
        assert_eq!(cost(&Request::Txn(TxnRequest::default())), 0);
    }

    #[test]
    fn nospace_refuses_what_grows_the_file_and_corrupt_every_write() {
        let nospace = [AlarmMember {
            member_id: 1,
            alarm: AlarmType::Nospace as i32,
        }];
        assert!(refusal(&nospace, &Request::Put(put("k", "v"))).is_some());
        let delete = Request::DeleteRange(Default::default());
        assert!(refusal(&nospace, &delete).is_none());
        let corrupt = [AlarmMember {
            member_id: 1,
            alarm: AlarmType::Corrupt as i32,
        }];
        assert!(matches!(
            refusal(&corrupt, &delete),
            Some(MvccError::ClusterCorrupt)
        ));
        assert!(refusal(&corrupt, &Request::Nothing).is_none());
    }

    #[test]
    fn the_quota_counts_the_file_and_the_cost() {
        let request = Request::Put(put("k", "v"));
        assert!(!over_quota(1000, &request, None));
        assert!(!over_quota(1000, &request, Some(1259)));
        assert!(over_quota(1000, &request, Some(1258)));
        assert!(!over_quota(u64::MAX / 2, &Request::Nothing, Some(1)));
    }
}
