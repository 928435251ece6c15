//! The one place where keelson's outcomes become gRPC statuses: etcd's code and exact message for
//! each (etcd's `rpctypes`), so clients that match on the text behave as they do with etcd. The
//! store states etcd's answer for each of its errors ([`MvccError::status`]); this turns it, and the
//! member's own refusals, into `tonic::Status`.
//!
//! Runs on: every serving core.

use keelson_engine::mvcc::{MvccError, StatusCode};
use tonic::{Code, Status};

use crate::runtime::link::Refusal;

/// A store error as etcd answers it. A storage failure (reading the page file) is logged here:
/// the client gets etcd's generic answer, the operator the cause.
pub fn of_mvcc(error: &MvccError) -> Status {
    let (code, message) = error.status();
    let code = match code {
        StatusCode::Unknown => Code::Unknown,
        StatusCode::InvalidArgument => Code::InvalidArgument,
        StatusCode::NotFound => Code::NotFound,
        StatusCode::FailedPrecondition => Code::FailedPrecondition,
        StatusCode::OutOfRange => Code::OutOfRange,
        StatusCode::ResourceExhausted => Code::ResourceExhausted,
        StatusCode::DataLoss => Code::DataLoss,
    };
    if error.is_storage() {
        tracing::error!("reading the page file failed: {error}");
    }
    Status::new(code, message)
}

/// A refusal as etcd answers it.
pub fn of_refusal(refusal: &Refusal) -> Status {
    match refusal {
        Refusal::NoLeader => no_leader(),
        Refusal::Stopped => stopped(),
        Refusal::Rejected(e) => of_mvcc(e),
        Refusal::Failed(why) => Status::unknown(why.clone()),
        Refusal::TimedOut => timed_out(),
        Refusal::NotLeader => not_leader(),
        Refusal::LeaderTransferTimedOut => leader_transfer_timed_out(),
        Refusal::BadLeaderTransferee => bad_leader_transferee(),
        Refusal::NotEnoughStarted => Status::failed_precondition(
            "etcdserver: re-configuration failed due to not enough started members",
        ),
        Refusal::LearnerNotReady => Status::failed_precondition(
            "etcdserver: can only promote a learner member which is in sync with leader",
        ),
        Refusal::Unhealthy => Status::unavailable("etcdserver: unhealthy cluster"),
    }
}

/// A call a learner does not serve.
pub fn not_for_learner() -> Status {
    Status::unavailable("etcdserver: rpc not supported for learner")
}

/// No leader to order the request.
pub fn no_leader() -> Status {
    Status::unavailable("etcdserver: no leader")
}

/// The member is shutting down.
pub fn stopped() -> Status {
    Status::unavailable("etcdserver: server stopped")
}

/// A request larger than `--max-request-bytes`.
pub fn too_large() -> Status {
    Status::invalid_argument("etcdserver: request is too large")
}

/// A call only the leader answers, made to a member that does not lead.
pub fn not_leader() -> Status {
    Status::failed_precondition("etcdserver: not leader")
}

/// A leader transfer to a member that cannot lead (not a voter of the cluster).
pub fn bad_leader_transferee() -> Status {
    Status::failed_precondition("etcdserver: bad leader transferee")
}

/// A leader move that did not finish in time.
pub fn leader_transfer_timed_out() -> Status {
    Status::unavailable("etcdserver: request timed out, leader transfer took too long")
}

/// A proposal not applied within the request timeout (its outcome is unknown).
pub fn timed_out() -> Status {
    Status::unavailable("etcdserver: request timed out")
}

/// Too many committed entries wait to be applied to take another proposal.
pub fn too_many_requests() -> Status {
    Status::resource_exhausted("etcdserver: too many requests")
}
