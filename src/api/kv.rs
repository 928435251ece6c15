//! etcd's KV service. Writes are validated here, proposed through raft, and answered once applied;
//! a linearizable Range first waits for its core's read-index batch, a serializable one reads at
//! once — both read the page file's memory map on this core.
//!
//! Runs on: every serving core.

use keelson_engine::mvcc::{self, WithHeader, validate};
use keelson_proto::etcdserverpb::kv_server::Kv;
use keelson_proto::etcdserverpb::response_op::Response as OpResponse;
use keelson_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use std::sync::atomic::AtomicU64;
use tonic::{Request, Response, Status};

use super::{context, quota, status};
use crate::metrics::StoreOps;
use crate::runtime::faults;
use crate::runtime::link::Refusal;

/// The KV service of a serving core.
#[derive(Debug, Clone, Copy)]
pub struct KvApi;

/// Proposes `request` (if it fits the quota), waits until it is applied, and returns its
/// response `R` as the store gave it.
pub(super) async fn apply<R>(request: impl Into<mvcc::Request>) -> Result<R, Status>
where
    R: TryFrom<mvcc::Response, Error = mvcc::Response>,
{
    let request = request.into();
    quota::check(&request).await?;
    let applied = context::with(|s| s.propose(request))?;
    let outcome = applied.await.map_err(|_| status::stopped())?;
    if let Err(Refusal::Rejected(mvcc::MvccError::NoSpace)) = &outcome {
        quota::raise().await?;
    }
    let response = outcome.map_err(|refusal| status::of_refusal(&refusal))?;
    R::try_from(response)
        .map_err(|other| Status::internal(format!("etcdserver: unexpected response {other:?}")))
}

/// Proposes `request`, waits until it is applied, and answers with its response `R`, header
/// filled in.
pub(super) async fn write<R>(request: impl Into<mvcc::Request>) -> Result<Response<R>, Status>
where
    R: TryFrom<mvcc::Response, Error = mvcc::Response> + WithHeader,
{
    let mut response: R = apply(request).await?;
    fill(response.header_mut())?;
    Ok(Response::new(response))
}

/// The header of a response: the store fills the revision, the member the rest.
fn fill(header: &mut Option<ResponseHeader>) -> Result<(), Status> {
    let revision = header.as_ref().map_or(0, |h| h.revision);
    *header = Some(context::with(|s| Ok(s.header(revision)))?);
    Ok(())
}

/// Waits for this core's next read-index batch.
pub(super) async fn linearizable() -> Result<(), Status> {
    let ready = context::with(|s| Ok(s.read_barrier()))?;
    ready.await.map_err(|_| status::stopped())?
}

/// Answers a read from this core's view of the page file, its header filled in.
fn answer<R: WithHeader>(
    read: impl FnOnce(&keelson_engine::pagefile::ReadTxn, mvcc::Revisions) -> mvcc::Result<R>,
) -> Result<Response<R>, Status> {
    let mut response = context::with(|s| s.read(read))?;
    fill(response.header_mut())?;
    Ok(Response::new(response))
}

fn invalid(e: mvcc::MvccError) -> Status {
    status::of_mvcc(&e)
}

/// Counts this core's store operations (etcd's `etcd_mvcc_*_total`): `counts` of each of `of`.
fn count<const N: usize>(of: [fn(&StoreOps) -> &AtomicU64; N], counts: [u64; N]) {
    let _ = context::with(|s| {
        let ops = &s.own_metrics().ops;
        for (of, n) in of.into_iter().zip(counts) {
            StoreOps::add(of(ops), n);
        }
        Ok(())
    });
}

/// Counts the operations a txn carried out (its nested txns' too) and, if there was more than
/// one, the txn.
fn count_txn(response: &TxnResponse) {
    fn walk(response: &TxnResponse, counts: &mut [u64; 3]) {
        for op in &response.responses {
            match &op.response {
                Some(OpResponse::ResponseRange(_)) => counts[0] += 1,
                Some(OpResponse::ResponsePut(_)) => counts[1] += 1,
                Some(OpResponse::ResponseDeleteRange(_)) => counts[2] += 1,
                Some(OpResponse::ResponseTxn(nested)) => walk(nested, counts),
                None => {}
            }
        }
    }
    let mut counts = [0; 3];
    walk(response, &mut counts);
    let txns = u64::from(counts.iter().sum::<u64>() > 1);
    let [ranges, puts, deletes] = counts;
    count(
        [|o| &o.ranges, |o| &o.puts, |o| &o.deletes, |o| &o.txns],
        [ranges, puts, deletes, txns],
    );
}

#[tonic::async_trait]
impl Kv for KvApi {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let request = request.into_inner();
        if !request.serializable && context::with(|s| Ok(s.published.is_learner()))? {
            return Err(status::not_for_learner());
        }
        validate::range(&request).map_err(invalid)?;
        if !request.serializable {
            linearizable().await?;
        }
        count([|o| &o.ranges], [1]);
        answer(|txn, revisions| mvcc::range(txn, &request, revisions))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let request = request.into_inner();
        validate::put(&request).map_err(invalid)?;
        faults::test_panic_point("serving", &request.key);
        let bytes = (request.key.len() + request.value.len()) as u64;
        count([|o| &o.puts, |o| &o.put_bytes], [1, bytes]);
        write(request).await
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let request = request.into_inner();
        validate::delete_range(&request).map_err(invalid)?;
        count([|o| &o.deletes], [1]);
        write(request).await
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let request = request.into_inner();
        let max_ops = context::with(|s| Ok(s.identity.max_txn_ops))?;
        validate::txn(&request, max_ops).map_err(invalid)?;
        if mvcc::is_read_only_txn(&request) {
            // etcd answers a txn without writes like a Range: through the read index, no raft entry.
            linearizable().await?;
            let answered =
                context::with(|s| s.read(|txn, revs| mvcc::read_only_txn(txn, &request, revs)))?;
            if let Some(mut response) = answered {
                count_txn(&response);
                fill(response.header_mut())?;
                return Ok(Response::new(response));
            }
        }
        let response: Response<TxnResponse> = write(request).await?;
        count_txn(response.get_ref());
        Ok(response)
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        write(request.into_inner()).await
    }
}
