//! The backend quota at the API edge, as etcd's quota servers check it: a Put, a Txn with Puts or
//! a LeaseGrant that would take the page file past `--quota-backend-bytes` is refused with
//! `database space exceeded` before it is proposed. The store checks again as it applies
//! (`keelson_engine::mvcc::alarm`), where the NOSPACE alarm refuses writes until it is cleared.
//! Either way the client hears `database space exceeded` only once NOSPACE is raised — applied,
//! so it outlives a crash — as etcd answers only after its alarm request.
//!
//! Runs on: every serving core.

use keelson_engine::mvcc::{self, MvccError, alarm};
use keelson_proto::etcdserverpb::AlarmType;
use tonic::Status;

use super::{context, status};

/// Refuses `request` if it does not fit the quota, once NOSPACE is raised.
pub async fn check(request: &mvcc::Request) -> Result<(), Status> {
    let over = context::with(|s| {
        Ok(alarm::over_quota(
            s.published.db_size(),
            request,
            s.identity.quota_bytes,
        ))
    })?;
    if !over {
        return Ok(());
    }
    raise().await?;
    Err(status::of_mvcc(&MvccError::NoSpace))
}

/// Raises NOSPACE for this member unless it is raised already, and waits until it is applied.
pub async fn raise() -> Result<(), Status> {
    let proposed = context::with(|s| {
        let raised = s.read(|txn, _| alarm::alarms(txn))?;
        if alarm::is_raised(&raised, AlarmType::Nospace) {
            return Ok(None);
        }
        s.propose(alarm::raise_nospace(s.identity.member_id))
            .map(Some)
    })?;
    if let Some(applied) = proposed {
        let outcome = applied.await.map_err(|_| status::stopped())?;
        outcome.map_err(|refusal| status::of_refusal(&refusal))?;
    }
    Ok(())
}
