//! etcd's Lease service. Grants and revokes go through raft like any write (a grant that leaves
//! the id to the server gets one here, before it is proposed, as etcd picks it); keep-alives, time
//! to live and the lease list are answered by the raft core's lessor from memory — a renewal is
//! never a raft entry. A keep-alive stream renews one lease per request, in order: each renewal
//! first waits for this core's read-index batch (so a member that is no longer leader does not
//! renew; etcd's `ensureLeadership`), then asks the lessor.
//!
//! Runs on: every serving core.

use futures_channel::mpsc;
use keelson_engine::mvcc;
use keelson_proto::etcdserverpb::lease_server::Lease;
use keelson_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, ResponseHeader,
};
use tonic::{Request, Response, Status, Streaming};

use super::conn::send;
use super::kv::{linearizable, write};
use super::{context, status};
use crate::runtime::link::{LeaseAnswer, LeaseAsk};

/// Keep-alive answers a stream holds for its client before it stops reading requests.
const KEEP_ALIVE_BUFFER: usize = 16;

/// The Lease service of a serving core.
#[derive(Debug, Clone, Copy)]
pub struct LeaseApi;

/// Asks the lessor.
async fn ask(ask: LeaseAsk) -> Result<LeaseAnswer, Status> {
    let answer = context::with(|s| Ok(s.ask_lessor(ask)))?;
    let answer = answer.await.map_err(|_| status::stopped())?;
    answer.map_err(|refusal| status::of_refusal(&refusal))
}

/// An answer of a kind the question does not take.
fn unexpected(answer: LeaseAnswer) -> Status {
    Status::internal(format!("etcdserver: unexpected lessor answer {answer:?}"))
}

/// A header at the store's current revision, as etcd fills the lessor's answers.
fn current_header() -> Result<Option<ResponseHeader>, Status> {
    context::with(|s| {
        let revision = s.read(|_, revisions| Ok(revisions.current))?;
        Ok(Some(s.header(revision)))
    })
}

/// Renews lease `id`: its time to live, 0 if it is gone.
async fn renew(id: i64) -> Result<LeaseKeepAliveResponse, Status> {
    linearizable().await?;
    match ask(LeaseAsk::Renew(id)).await? {
        LeaseAnswer::Renewed(ttl) => Ok(LeaseKeepAliveResponse {
            header: current_header()?,
            id,
            ttl,
        }),
        other => Err(unexpected(other)),
    }
}

/// Serves one keep-alive stream until the client stops sending or goes; counts it handled.
async fn keep_alive(
    mut requests: Streaming<LeaseKeepAliveRequest>,
    mut out: mpsc::Sender<Result<LeaseKeepAliveResponse, Status>>,
) {
    let ended = loop {
        let request = match requests.message().await {
            Ok(Some(request)) => request,
            Ok(None) => break Ok(()),
            Err(status) => break Err(status),
        };
        match renew(request.id).await {
            Ok(response) => {
                if !send(&mut out, Ok(response)).await {
                    break Ok(());
                }
            }
            Err(status) => {
                send(&mut out, Err(status.clone())).await;
                break Err(status);
            }
        }
    };
    let _ = context::with(|s| {
        s.stream_ended("/etcdserverpb.Lease/LeaseKeepAlive", &ended);
        Ok(())
    });
}

#[tonic::async_trait]
impl Lease for LeaseApi {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let mut request = request.into_inner();
        if request.id == 0 {
            request.id = context::with(|s| Ok(s.new_lease_id()))?;
        }
        write(request).await
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        write(request.into_inner()).await
    }

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<tonic::codegen::BoxStream<LeaseKeepAliveResponse>>, Status> {
        let (out, responses) = mpsc::channel(KEEP_ALIVE_BUFFER);
        glommio::spawn_local(keep_alive(request.into_inner(), out)).detach();
        Ok(Response::new(Box::pin(responses)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let request = request.into_inner();
        let response = match ask(LeaseAsk::TimeToLive(request.id)).await? {
            LeaseAnswer::TimeToLive(Some((ttl, granted_ttl))) => {
                let keys = if request.keys {
                    context::with(|s| s.read(|txn, _| mvcc::lease_keys(txn, request.id)))?
                } else {
                    Vec::new()
                };
                LeaseTimeToLiveResponse {
                    header: None,
                    id: request.id,
                    ttl,
                    granted_ttl,
                    keys,
                }
            }
            // etcd answers an unknown lease with TTL -1, not an error.
            LeaseAnswer::TimeToLive(None) => LeaseTimeToLiveResponse {
                id: request.id,
                ttl: -1,
                ..LeaseTimeToLiveResponse::default()
            },
            other => return Err(unexpected(other)),
        };
        Ok(Response::new(LeaseTimeToLiveResponse {
            header: current_header()?,
            ..response
        }))
    }

    async fn lease_leases(
        &self,
        _request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        match ask(LeaseAsk::Leases).await? {
            LeaseAnswer::Leases(ids) => Ok(Response::new(LeaseLeasesResponse {
                header: current_header()?,
                leases: ids.into_iter().map(|id| LeaseStatus { id }).collect(),
            })),
            other => Err(unexpected(other)),
        }
    }
}
