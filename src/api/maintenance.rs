//! etcd's Maintenance service: Status (what `etcdctl endpoint status` shows) from the state the
//! raft core publishes and this core's view of the page file; Hash and HashKV computed on this
//! core from one read transaction, as etcd computes them; Snapshot ([`super::snapshot`]);
//! MoveLeader, carried out by the raft core. Answers carry etcd 3.4's headers, and none where
//! 3.4 sends none (MoveLeader).
//!
//! Runs on: every serving core.

use std::time::Instant;

use keelson_engine::mvcc;
use keelson_proto::etcdserverpb::maintenance_server::Maintenance;
use keelson_proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse,
    HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest,
    MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::{context, kv, snapshot, status};

/// The etcd version keelson answers to: the etcd API it implements.
pub const ETCD_VERSION: &str = "3.4.23";
/// The etcd storage schema keelson's page file follows (etcd's buckets, with 3.5's `term` key).
pub const STORAGE_VERSION: &str = "3.5.0";

/// An alarm as etcd 3.4 shows it in Status's errors: protobuf's compact text form, each field
/// set followed by a space.
pub fn alarm_text(alarm: &AlarmMember) -> String {
    let mut text = String::new();
    if alarm.member_id != 0 {
        text += &format!("memberID:{} ", alarm.member_id);
    }
    if alarm.alarm != 0 {
        let kind = AlarmType::try_from(alarm.alarm).map_or("UNKNOWN", |t| t.as_str_name());
        text += &format!("alarm:{kind} ");
    }
    text
}

/// The Maintenance service of a serving core.
#[derive(Debug, Clone, Copy)]
pub struct MaintenanceApi;

#[tonic::async_trait]
impl Maintenance for MaintenanceApi {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        context::with(|s| {
            let (revision, size, alarms) = s.read(|txn, revisions| {
                Ok((revisions.current, txn.size(), mvcc::alarm::alarms(txn)?))
            })?;
            let published = &s.published;
            let leader = published.leader();
            let mut errors = Vec::new();
            if leader == 0 {
                errors.push(status::no_leader().message().to_string());
            }
            errors.extend(alarms.iter().map(alarm_text));
            Ok(Response::new(StatusResponse {
                header: Some(s.header(revision)),
                version: ETCD_VERSION.to_string(),
                db_size: size as i64,
                leader,
                raft_index: published.committed(),
                raft_term: published.term(),
                raft_applied_index: published.applied(),
                errors,
                db_size_in_use: size.saturating_sub(published.free_bytes()) as i64,
                is_learner: published.is_learner(),
                storage_version: STORAGE_VERSION.to_string(),
                // etcd 3.6 reports the flag, the default for 0; keelson -1 for no quota.
                db_size_quota: s.identity.quota_bytes.map_or(-1, |q| q as i64),
            }))
        })
    }

    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        // Every action goes through raft, GET too; etcd 3.4 answers without a header.
        Ok(Response::new(kv::apply(request.into_inner()).await?))
    }

    async fn defragment(
        &self,
        _: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        tracing::info!("starting defragment");
        let done = context::with(|s| Ok(s.defragment()))?;
        let result = done.await.map_err(|_| status::stopped())?;
        result.map_err(|refusal| status::of_refusal(&refusal))?;
        tracing::info!("finished defragment");
        // etcd 3.4 answers without a header.
        Ok(Response::new(DefragmentResponse::default()))
    }

    async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        context::with(|s| {
            let started = Instant::now();
            let (hash, revision) =
                s.read(|txn, revisions| Ok((mvcc::hash(txn)?, revisions.current)))?;
            s.own_metrics().hash.observe(started.elapsed());
            Ok(Response::new(HashResponse {
                header: Some(s.header(revision)),
                hash,
            }))
        })
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let at = request.into_inner().revision;
        context::with(|s| {
            let started = Instant::now();
            let hashed = s.read(|txn, revisions| mvcc::hash_kv(txn, revisions, at))?;
            s.own_metrics().hash_kv.observe(started.elapsed());
            Ok(Response::new(HashKvResponse {
                header: Some(s.header(hashed.current)),
                hash: hashed.hash,
                compact_revision: hashed.compacted,
                hash_revision: if at == 0 { hashed.current } else { at },
            }))
        })
    }

    async fn snapshot(
        &self,
        _: Request<SnapshotRequest>,
    ) -> Result<Response<BoxStream<SnapshotResponse>>, Status> {
        Ok(Response::new(snapshot::serve()?))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        let target = request.into_inner().target_id;
        // Only the leader moves leadership (etcd answers any other member `not leader`).
        let moved = context::with(|s| {
            if s.published.leader() != s.identity.member_id {
                return Err(status::not_leader());
            }
            Ok(s.move_leader(target))
        })?;
        let result = moved.await.map_err(|_| status::stopped())?;
        result.map_err(|refusal| status::of_refusal(&refusal))?;
        Ok(Response::new(MoveLeaderResponse::default()))
    }
}
