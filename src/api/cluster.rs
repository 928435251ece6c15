//! etcd's Cluster service: the member list (what `etcdctl member list` shows). Membership changes
//! answer `Unimplemented` (tonic's default) until the cluster issue lands.
//!
//! Runs on: every serving core.

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
            let identity = &s.identity;
            let members = identity
                .members
                .iter()
                .map(|m| Member {
                    id: m.id,
                    name: m.name.clone(),
                    peer_ur_ls: m.peer_urls.clone(),
                    client_ur_ls: m.client_urls.clone(),
                    is_learner: false,
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
