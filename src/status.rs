//! The one place where keelson's errors become gRPC statuses: etcd's code and exact message for
//! each (etcd's `rpctypes`), so clients that match on the text behave as they do with etcd.

use keelson_engine::mvcc::{MvccError, StatusCode};
use tonic::{Code, Status};

/// A store error as etcd answers it.
pub fn of_mvcc(error: &MvccError) -> Status {
    let (code, message) = error.status();
    let code = match code {
        StatusCode::Unknown => Code::Unknown,
        StatusCode::InvalidArgument => Code::InvalidArgument,
        StatusCode::NotFound => Code::NotFound,
        StatusCode::FailedPrecondition => Code::FailedPrecondition,
        StatusCode::OutOfRange => Code::OutOfRange,
    };
    if error.is_storage() {
        tracing::error!("storage failed: {error}");
    }
    Status::new(code, message)
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
