//! etcd's Cluster service. The member list (what `etcdctl member list` shows) is read from the
//! `members` bucket of this core's view of the page file — every member's peer URLs, and the name
//! and client URLs each published through raft — after a read index if asked `linearizable`.
//! MemberAdd, MemberRemove, MemberUpdate and MemberPromote go to the raft core as membership
//! changes (checked there as etcd checks them, then proposed as configuration changes) and are
//! answered with the members once the change is applied. A member added gets its id as etcd makes
//! it: SHA-1 of its sorted peer URLs and the time in seconds.
//!
//! Runs on: every serving core.

use keelson_engine::mvcc::{self, members::Change};
use keelson_proto::etcdserverpb::cluster_server::Cluster;
use keelson_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse, ResponseHeader,
};
use tonic::{Request, Response, Status};

use super::{context, kv, status};
use crate::ids;

/// The Cluster service of a serving core.
#[derive(Debug, Clone, Copy)]
pub struct ClusterApi;

/// A member as the Cluster service answers with it.
fn to_proto(member: mvcc::members::Member) -> Member {
    Member {
        id: member.id,
        name: member.name,
        peer_ur_ls: member.peer_urls,
        client_ur_ls: member.client_urls,
        is_learner: member.is_learner,
    }
}

/// The header of a Cluster answer: etcd's carry no revision.
fn header() -> Result<ResponseHeader, Status> {
    context::with(|s| Ok(s.header(0)))
}

/// Asks for `change`, waits until it is applied, and returns the members after it.
async fn reconfigure(change: Change) -> Result<Vec<Member>, Status> {
    let applied = context::with(|s| s.reconfigure(change))?;
    let outcome = applied.await.map_err(|_| status::stopped())?;
    match outcome.map_err(|refusal| status::of_refusal(&refusal))? {
        mvcc::Response::Members(members) => Ok(members.into_iter().map(to_proto).collect()),
        other => Err(Status::internal(format!(
            "etcdserver: unexpected response {other:?}"
        ))),
    }
}

/// Peer URLs as etcd takes them (`types.NewURLs`): each `http://host:port`, no path; sorted.
fn peer_urls(urls: Vec<String>) -> Result<Vec<String>, Status> {
    let bad = || Status::invalid_argument("etcdserver: given member URLs are invalid");
    for url in &urls {
        // keelson's members speak plain HTTP to each other (TLS between members is not there).
        let host_port = url.strip_prefix("http://").ok_or_else(bad)?;
        let (host, port) = host_port.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || host_port.contains('/') || port.parse::<u16>().is_err() {
            return Err(bad());
        }
    }
    let mut urls = urls;
    urls.sort();
    Ok(urls)
}

#[tonic::async_trait]
impl Cluster for ClusterApi {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let request = request.into_inner();
        let peer_urls = peer_urls(request.peer_ur_ls)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let added = mvcc::members::Member {
            id: ids::member_id(&peer_urls, &now.to_string()),
            peer_urls,
            is_learner: request.is_learner,
            ..mvcc::members::Member::default()
        };
        let members = reconfigure(Change::Add(added.clone())).await?;
        Ok(Response::new(MemberAddResponse {
            header: Some(header()?),
            member: Some(to_proto(added)),
            members,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let members = reconfigure(Change::Remove(request.into_inner().id)).await?;
        Ok(Response::new(MemberRemoveResponse {
            header: Some(header()?),
            members,
        }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let request = request.into_inner();
        // etcd takes them as given; keelson checks them as MemberAdd does, since its members could
        // not dial a member at URLs that are not http://host:port.
        let change = Change::Update {
            id: request.id,
            peer_urls: peer_urls(request.peer_ur_ls)?,
        };
        let members = reconfigure(change).await?;
        Ok(Response::new(MemberUpdateResponse {
            header: Some(header()?),
            members,
        }))
    }

    async fn member_list(
        &self,
        request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        if request.into_inner().linearizable {
            kv::linearizable().await?;
        }
        context::with(|s| {
            let mut members = s.read(|txn, _| mvcc::members::members(txn))?;
            // By id, as etcd lists them (the bucket's keys are hex without leading zeros).
            members.sort_unstable_by_key(|m| m.id);
            Ok(Response::new(MemberListResponse {
                header: Some(s.header(0)),
                members: members.into_iter().map(to_proto).collect(),
            }))
        })
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let members = reconfigure(Change::Promote(request.into_inner().id)).await?;
        Ok(Response::new(MemberPromoteResponse {
            header: Some(header()?),
            members,
        }))
    }
}
