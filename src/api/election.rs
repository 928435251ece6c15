//! etcd's Election service (v3election), as etcd builds it on its own KV, Lease and Watch
//! services ([`super::concurrency`]). A campaigner's contender key `<name>/<lease in hex>` holds
//! its value; the oldest contender leads. Campaign returns once the caller leads (a campaigner
//! whose caller goes while it waits resigns); Proclaim changes the leader's value if the caller
//! still leads; Resign deletes the leader's key; Leader reads the oldest contender; Observe
//! streams the leader's value each time it changes, and the next leader's when it goes.
//!
//! Runs on: every serving core.

use keelson_proto::etcdserverpb::range_request::SortOrder;
use keelson_proto::etcdserverpb::{ResponseHeader, TxnRequest, WatchCreateRequest};
use keelson_proto::mvccpb::KeyValue;
use keelson_proto::mvccpb::event::EventType;
use keelson_proto::v3electionpb::election_server::Election;
use keelson_proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use tonic::{Request, Response, Status};

use super::concurrency::{
    Contender, Undo, by_create, created_at, delete_op, get, prefix, put, range, read_at,
    session_lease, txn, wait_deletes,
};
use super::conn::send;
use super::streaming;
use super::watch::Watching;
use crate::watch::keys::prefix_end;

/// The Observe call, as gRPC's counters name it.
const PATH_OBSERVE: &str = "/v3electionpb.Election/Observe";
/// Leader values an Observe stream holds for its client.
const OBSERVE_BUFFER: usize = 16;

/// etcd's answer to a Proclaim or Resign without the leader's key.
const MISSING_LEADER: &str = "\"leader\" field must be provided";
/// etcd's answer to a Proclaim by a caller that does not lead.
const NOT_LEADER: &str = "election: not leader";
/// etcd's answer to Leader when nobody leads.
const NO_LEADER: &str = "election: no leader";

/// The Election service of a serving core.
#[derive(Debug, Clone, Copy)]
pub struct ElectionApi;

/// Sets `key`'s value to `value` (with `lease`) if it still has create revision `revision`;
/// the txn's header, or etcd's `not leader`.
async fn proclaim(
    key: &[u8],
    revision: i64,
    lease: i64,
    value: &[u8],
) -> Result<ResponseHeader, Status> {
    let proclaimed = txn(TxnRequest {
        compare: vec![created_at(key, revision)],
        success: vec![put(key, value, lease)],
        failure: vec![],
    })
    .await?;
    if !proclaimed.succeeded {
        return Err(Status::unknown(NOT_LEADER));
    }
    Ok(proclaimed.header.unwrap_or_default())
}

/// Deletes `key` if it still has create revision `revision`.
fn resignation(key: &[u8], revision: i64) -> TxnRequest {
    TxnRequest {
        compare: vec![created_at(key, revision)],
        success: vec![delete_op(key)],
        failure: vec![],
    }
}

/// The leader under `prefix` now: the header of the read, and its key if there is one.
async fn leader(prefix: &[u8]) -> Result<(ResponseHeader, Option<KeyValue>), Status> {
    let oldest = range(by_create(prefix, SortOrder::Ascend, 0)).await?;
    Ok((
        oldest.header.unwrap_or_default(),
        oldest.kvs.into_iter().next(),
    ))
}

/// The first contender put under `prefix` at `revision` or later, with the header etcd sends it
/// with (at the put's revision).
async fn first_put(prefix: &[u8], revision: i64) -> Result<(ResponseHeader, KeyValue), Status> {
    let mut watching = Watching::start(WatchCreateRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix).unwrap_or_else(|| vec![0]),
        start_revision: revision,
        ..WatchCreateRequest::default()
    })?;
    while let Some(response) = watching.next().await {
        let response = response?;
        let put = response
            .events
            .into_iter()
            .find(|e| e.r#type == EventType::Put as i32)
            .and_then(|e| e.kv);
        if let Some(kv) = put {
            let header = ResponseHeader {
                revision: kv.mod_revision,
                ..response.header.unwrap_or_default()
            };
            return Ok((header, kv));
        }
    }
    Err(Status::unknown("election: observe watch ended"))
}

/// Streams the leaders of `prefix` into `out`: the leader now or the first to come, then each of
/// its values until it goes, then the next.
async fn follow(prefix: &[u8], out: &mut streaming::Out<LeaderResponse>) {
    loop {
        let found = match leader(prefix).await {
            Ok((header, Some(kv))) => Ok((header, kv)),
            Ok((header, None)) => first_put(prefix, header.revision).await,
            Err(status) => Err(status),
        };
        let Ok((header, kv)) = found else { return };
        let key = kv.key.clone();
        let since = header.revision + 1;
        let first = LeaderResponse {
            header: Some(header),
            kv: Some(kv),
        };
        if !send(out, Ok(first)).await {
            return;
        }
        // The leader's values until it goes.
        let Ok(mut watching) = Watching::start(WatchCreateRequest {
            key,
            start_revision: since,
            ..WatchCreateRequest::default()
        }) else {
            return;
        };
        'leading: loop {
            let Some(Ok(response)) = watching.next().await else {
                return;
            };
            for event in response.events {
                if event.r#type == EventType::Delete as i32 {
                    break 'leading;
                }
                let value = LeaderResponse {
                    header: response.header,
                    kv: event.kv,
                };
                if !send(out, Ok(value)).await {
                    return;
                }
            }
        }
    }
}

#[tonic::async_trait]
impl Election for ElectionApi {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let request = request.into_inner();
        let Contender { lease, prefix, key } = Contender::new(&request.name, request.lease).await?;
        let joined = txn(TxnRequest {
            compare: vec![created_at(&key, 0)],
            success: vec![put(&key, &request.value, lease)],
            failure: vec![get(&key)],
        })
        .await?;
        let header = joined.header.unwrap_or_default();
        let mut revision = header.revision;
        if !joined.succeeded {
            // This lease campaigns already: take its place, with the new value.
            let existing = read_at(&joined, 0).first();
            revision = existing.map_or(0, |kv| kv.create_revision);
            if existing.is_some_and(|kv| kv.value != request.value) {
                let undo = Undo::new(resignation(&key, revision));
                proclaim(&key, revision, lease, &request.value).await?;
                undo.disarm();
            }
        }
        // A caller that goes while waiting resigns; a wait that fails otherwise leaves the key.
        let undo = Undo::new(resignation(&key, revision));
        let waited = wait_deletes(&prefix, revision - 1).await;
        undo.disarm();
        waited?;
        Ok(Response::new(CampaignResponse {
            header: Some(header),
            leader: Some(LeaderKey {
                name: request.name,
                key,
                rev: revision,
                lease,
            }),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let request = request.into_inner();
        let leader = request
            .leader
            .ok_or_else(|| Status::unknown(MISSING_LEADER))?;
        let lease = session_lease(leader.lease).await?;
        let header = proclaim(&leader.key, leader.rev, lease, &request.value).await?;
        Ok(Response::new(ProclaimResponse {
            header: Some(header),
        }))
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let (header, kv) = leader(&prefix(&request.into_inner().name)).await?;
        let kv = kv.ok_or_else(|| Status::unknown(NO_LEADER))?;
        Ok(Response::new(LeaderResponse {
            header: Some(header),
            kv: Some(kv),
        }))
    }

    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<tonic::codegen::BoxStream<LeaderResponse>>, Status> {
        let prefix = prefix(&request.into_inner().name);
        // The stream ends quietly if a read fails, as etcd's does.
        let leaders = streaming::serve(PATH_OBSERVE, OBSERVE_BUFFER, |mut out| async move {
            follow(&prefix, &mut out).await;
            Ok(())
        });
        Ok(Response::new(leaders))
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let leader = request
            .into_inner()
            .leader
            .ok_or_else(|| Status::unknown(MISSING_LEADER))?;
        // etcd's server opens a session for this too, granting a lease if the key names none.
        session_lease(leader.lease).await?;
        let resigned = txn(resignation(&leader.key, leader.rev)).await?;
        Ok(Response::new(ResignResponse {
            header: resigned.header,
        }))
    }
}
