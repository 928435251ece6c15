//! etcd's Lock service (v3lock), as etcd builds it on its own KV, Lease and Watch services
//! ([`super::concurrency`]): Lock puts the caller's contender key `<name>/<lease in hex>` with its
//! lease (or finds it there, re-entrant) and returns once every older contender is deleted, with
//! the key; Unlock deletes the key. A lock whose caller goes while it waits takes its key back.
//! A lock holder's key goes with its lease, so a holder that stops renewing frees the lock.
//!
//! Runs on: every serving core.

use keelson_proto::etcdserverpb::TxnRequest;
use keelson_proto::etcdserverpb::kv_server::Kv;
use keelson_proto::v3lockpb::lock_server::Lock;
use keelson_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use tonic::{Request, Response, Status};

use super::concurrency::{
    Contender, Undo, created_at, delete, first_created, get, put, read_at, relayed, txn,
    wait_deletes,
};
use super::kv::KvApi;

/// The Lock service of a serving core.
#[derive(Debug, Clone, Copy)]
pub struct LockApi;

#[tonic::async_trait]
impl Lock for LockApi {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let request = request.into_inner();
        let Contender { lease, prefix, key } = Contender::new(&request.name, request.lease).await?;
        // Join the waiters, or find this lease already among them; and read the holder.
        let joined = txn(TxnRequest {
            compare: vec![created_at(&key, 0)],
            success: vec![put(&key, b"", lease), first_created(&prefix)],
            failure: vec![get(&key), first_created(&prefix)],
        })
        .await?;
        let header = joined.header.unwrap_or_default();
        let mine = if joined.succeeded {
            header.revision
        } else {
            read_at(&joined, 0)
                .first()
                .map_or(0, |kv| kv.create_revision)
        };
        let holder = read_at(&joined, 1).first().map(|kv| kv.create_revision);
        if holder.is_none_or(|created| created == mine) {
            return Ok(Response::new(LockResponse {
                header: Some(header),
                key,
            }));
        }
        let undo = Undo::new(delete(&key));
        let header = wait_deletes(&prefix, mine - 1).await;
        if header.is_ok() {
            undo.disarm();
        }
        Ok(Response::new(LockResponse {
            header: Some(header?),
            key,
        }))
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let deleted = KvApi
            .delete_range(Request::new(delete(&request.into_inner().key)))
            .await
            .map_err(relayed)?;
        Ok(Response::new(UnlockResponse {
            header: deleted.into_inner().header,
        }))
    }
}
