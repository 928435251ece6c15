//! etcd's Maintenance service: Status (what `etcdctl endpoint status` shows) from the state the
//! raft core publishes and this core's view of the page file. The other calls (alarms, defragment,
//! hashes, snapshot, leader transfer) answer `Unimplemented` (tonic's default) until their issues
//! land.
//!
//! Runs on: every serving core.

use keelson_proto::etcdserverpb::maintenance_server::Maintenance;
use keelson_proto::etcdserverpb::{
    SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::{context, snapshot};

/// The etcd version keelson answers to: the etcd API it implements.
pub const ETCD_VERSION: &str = "3.4.23";

/// The Maintenance service of a serving core.
#[derive(Debug, Clone, Copy)]
pub struct MaintenanceApi;

#[tonic::async_trait]
impl Maintenance for MaintenanceApi {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        context::with(|s| {
            let (revision, size) = s.read(|txn, revisions| Ok((revisions.current, txn.size())))?;
            let size = size as i64;
            let published = &s.published;
            Ok(Response::new(StatusResponse {
                header: Some(s.header(revision)),
                version: ETCD_VERSION.to_string(),
                db_size: size,
                leader: published.leader(),
                raft_index: published.committed(),
                raft_term: published.term(),
                raft_applied_index: published.applied(),
                errors: Vec::new(),
                db_size_in_use: size,
                is_learner: false,
            }))
        })
    }

    async fn snapshot(
        &self,
        _: Request<SnapshotRequest>,
    ) -> Result<Response<BoxStream<SnapshotResponse>>, Status> {
        Ok(Response::new(snapshot::serve()?))
    }
}
