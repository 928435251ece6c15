//! etcd's KV service. Writes are validated here, proposed through raft, and answered once applied;
//! a linearizable Range first waits for its core's read-index batch, a serializable one reads at
//! once — both read the page file's memory map on this core.

use keelson_engine::mvcc::{self, validate};
use keelson_proto::etcdserverpb::kv_server::Kv;
use keelson_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use tonic::{Request, Response, Status};

use super::context;
use crate::status;

/// The KV service of a serving core.
#[derive(Debug, Clone, Copy)]
pub struct KvApi;

/// Proposes `request` and waits until it is applied.
pub(super) async fn write(request: mvcc::Request) -> Result<mvcc::Response, Status> {
    let applied = context::with(|s| s.propose(request))?;
    applied.await.map_err(|_| status::stopped())?
}

/// The header of a response: the store fills the revision, the member the rest.
fn fill(header: &mut Option<ResponseHeader>) -> Result<(), Status> {
    let revision = header.as_ref().map_or(0, |h| h.revision);
    *header = Some(context::with(|s| Ok(s.header(revision)))?);
    Ok(())
}

/// Proposes `request` and answers with the response `pick` expects, its header filled in.
async fn answer<T>(
    request: mvcc::Request,
    pick: impl FnOnce(mvcc::Response) -> Result<T, mvcc::Response>,
    header: impl FnOnce(&mut T) -> &mut Option<ResponseHeader>,
) -> Result<Response<T>, Status> {
    let mut response = pick(write(request).await?)
        .map_err(|other| Status::internal(format!("etcdserver: unexpected response {other:?}")))?;
    fill(header(&mut response))?;
    Ok(Response::new(response))
}

/// Answers a Range from this core's view of the page file.
fn read(request: &RangeRequest) -> Result<RangeResponse, Status> {
    context::with(|s| {
        let txn = s.db.begin_read().map_err(|e| status::of_mvcc(&e.into()))?;
        let revisions = mvcc::revisions(&txn).map_err(|e| status::of_mvcc(&e))?;
        mvcc::range(&txn, request, revisions).map_err(|e| status::of_mvcc(&e))
    })
}

/// Waits for this core's next read-index batch.
pub(super) async fn linearizable() -> Result<(), Status> {
    let ready = context::with(|s| Ok(s.read_barrier()))?;
    ready.await.map_err(|_| status::stopped())?
}

#[tonic::async_trait]
impl Kv for KvApi {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let request = request.into_inner();
        validate::range(&request).map_err(|e| status::of_mvcc(&e))?;
        if !request.serializable {
            linearizable().await?;
        }
        let mut response = read(&request)?;
        fill(&mut response.header)?;
        Ok(Response::new(response))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let request = request.into_inner();
        validate::put(&request).map_err(|e| status::of_mvcc(&e))?;
        let pick = |r| match r {
            mvcc::Response::Put(r) => Ok(r),
            other => Err(other),
        };
        answer(mvcc::Request::Put(request), pick, |r| &mut r.header).await
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let request = request.into_inner();
        validate::delete_range(&request).map_err(|e| status::of_mvcc(&e))?;
        let pick = |r| match r {
            mvcc::Response::DeleteRange(r) => Ok(r),
            other => Err(other),
        };
        answer(mvcc::Request::DeleteRange(request), pick, |r| &mut r.header).await
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let request = request.into_inner();
        let max_ops = context::with(|s| Ok(s.identity.max_txn_ops))?;
        validate::txn(&request, max_ops).map_err(|e| status::of_mvcc(&e))?;
        if mvcc::is_read_only_txn(&request) {
            // etcd answers a txn without writes like a Range: through the read index, no raft entry.
            linearizable().await?;
            let answered = context::with(|s| {
                let txn = s.db.begin_read().map_err(|e| status::of_mvcc(&e.into()))?;
                let revisions = mvcc::revisions(&txn).map_err(|e| status::of_mvcc(&e))?;
                mvcc::read_only_txn(&txn, &request, revisions).map_err(|e| status::of_mvcc(&e))
            })?;
            if let Some(mut response) = answered {
                fill(&mut response.header)?;
                return Ok(Response::new(response));
            }
        }
        let pick = |r| match r {
            mvcc::Response::Txn(r) => Ok(r),
            other => Err(other),
        };
        answer(mvcc::Request::Txn(request), pick, |r| &mut r.header).await
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let pick = |r| match r {
            mvcc::Response::Compaction(r) => Ok(r),
            other => Err(other),
        };
        answer(mvcc::Request::Compaction(request.into_inner()), pick, |r| {
            &mut r.header
        })
        .await
    }
}
