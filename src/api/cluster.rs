//! etcd's Cluster service: the member list (what `etcdctl member list` shows), read from the
//! `members` bucket of this core's view of the page file — every member's peer URLs, and the name
//! and client URLs each published through raft. Membership changes answer `Unimplemented`
//! (tonic's default) until they land.
//!
//! Runs on: every serving core.

use keelson_engine::mvcc;
use keelson_proto::etcdserverpb::cluster_server::Cluster;
use keelson_proto::etcdserverpb::{Member, MemberListRequest, MemberListResponse};
use tonic::{Request, Response, Status};

use super::context;

/// The Cluster service of a serving core.
#[derive(Debug, Clone, Copy)]
pub struct ClusterApi;

#[tonic::async_trait]
impl Cluster for ClusterApi {
    async fn member_list(
        &self,
        _: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        context::with(|s| {
            let mut members = s.read(|txn, _| mvcc::members::members(txn))?;
            // By id, as etcd lists them (the bucket's keys are hex without leading zeros).
            members.sort_unstable_by_key(|m| m.id);
            let members = members
                .into_iter()
                .map(|m| Member {
                    id: m.id,
                    name: m.name,
                    peer_ur_ls: m.peer_urls,
                    client_ur_ls: m.client_urls,
                    is_learner: m.is_learner,
                })
                .collect();
            // etcd's cluster service headers carry no revision.
            Ok(Response::new(MemberListResponse {
                header: Some(s.header(0)),
                members,
            }))
        })
    }
}
