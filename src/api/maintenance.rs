//! etcd's Maintenance service: Status (what `etcdctl endpoint status` shows) from the state the
//! raft core publishes and this core's view of the page file. The other calls (alarms, defragment,
//! hashes, snapshot, leader transfer) answer `Unimplemented` (tonic's default) until their issues
//! land.

use keelson_engine::mvcc;
use keelson_proto::etcdserverpb::maintenance_server::Maintenance;
use keelson_proto::etcdserverpb::{StatusRequest, StatusResponse};
use tonic::{Request, Response, Status};

use super::context;
use crate::link::Published;
use crate::status;

/// The etcd version keelson answers to: the etcd API it implements.
pub const ETCD_VERSION: &str = "3.4.23";

/// The Maintenance service of a serving core.
#[derive(Debug, Clone, Copy)]
pub struct MaintenanceApi;

#[tonic::async_trait]
impl Maintenance for MaintenanceApi {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        context::with(|s| {
            let txn = s.db.begin_read().map_err(|e| status::of_mvcc(&e.into()))?;
            let revisions = mvcc::revisions(&txn).map_err(|e| status::of_mvcc(&e))?;
            let size = txn.size() as i64;
            let published = &s.published;
            Ok(Response::new(StatusResponse {
                header: Some(s.header(revisions.current)),
                version: ETCD_VERSION.to_string(),
                db_size: size,
                leader: Published::get(&published.leader),
                raft_index: Published::get(&published.committed),
                raft_term: Published::get(&published.term),
                raft_applied_index: Published::get(&published.applied),
                errors: Vec::new(),
                db_size_in_use: size,
                is_learner: false,
            }))
        })
    }
}
