//! etcd's Watch service: each call is a bidirectional stream, served by a task on this core that
//! reads the client's requests (create, cancel, progress) and does the stream's background work
//! (catching watchers up from history, answering progress), with the core's watch hub
//! ([`crate::watch`]) holding the watchers. Responses reach the client through one bounded
//! channel per stream (tonic wants a `Send` stream; the channel is one).
//!
//! Runs on: every serving core.

use std::future::poll_fn;

use futures_channel::mpsc;
use futures_lite::StreamExt;
use keelson_proto::etcdserverpb::watch_request::RequestUnion;
use keelson_proto::etcdserverpb::watch_server::Watch;
use keelson_proto::etcdserverpb::{WatchRequest, WatchResponse};
use tonic::{Request, Response, Status, Streaming};

use super::context;
use crate::watch::{Responses, STREAM_BUFFER};

/// The Watch service of a serving core.
#[derive(Debug, Clone, Copy)]
pub struct WatchApi;

/// What a stream's task was woken by.
enum Woken {
    Request(Result<Option<WatchRequest>, Status>),
    Work,
}

/// Waits until `out` has room for one more response; false if the client is gone.
async fn room(out: &mut Responses) -> bool {
    poll_fn(|cx| out.poll_ready(cx)).await.is_ok()
}

/// Serves stream `id` until its client stops sending or goes, or the member stops.
async fn serve(
    id: u64,
    mut requests: Streaming<WatchRequest>,
    mut out: Responses,
    mut work: mpsc::Receiver<()>,
) {
    loop {
        let woken =
            futures_lite::future::or(async { Woken::Request(requests.message().await) }, async {
                match work.next().await {
                    Some(()) => Woken::Work,
                    // The hub let go of the stream: the member stops.
                    None => Woken::Request(Ok(None)),
                }
            })
            .await;
        let handled = match woken {
            Woken::Request(Ok(Some(request))) => handle(id, request, &mut out).await,
            Woken::Request(_) => break,
            Woken::Work => catch_up(id, &mut out).await,
        };
        if let Err(status) = handled {
            let _ = out.try_send(Err(status));
            break;
        }
    }
    let _ = context::with(|s| {
        s.watch.borrow_mut().close(id);
        Ok(())
    });
}

/// One request of the client's.
async fn handle(id: u64, request: WatchRequest, out: &mut Responses) -> Result<(), Status> {
    if !room(out).await {
        return Ok(());
    }
    context::with(|s| match request.request_union {
        Some(RequestUnion::CreateRequest(create)) => {
            s.watch.borrow_mut().create(s, id, out, &create)
        }
        Some(RequestUnion::CancelRequest(cancel)) => {
            s.watch.borrow_mut().cancel(s, id, out, cancel.watch_id)
        }
        Some(RequestUnion::ProgressRequest(_)) => {
            s.watch.borrow_mut().progress(id);
            Ok(())
        }
        None => Ok(()),
    })
}

/// The stream's background work, a step at a time, each with room for its response.
async fn catch_up(id: u64, out: &mut Responses) -> Result<(), Status> {
    loop {
        if !room(out).await {
            return Ok(());
        }
        let more = context::with(|s| s.watch.borrow_mut().work(s, id, out))?;
        if !more {
            return Ok(());
        }
        glommio::yield_if_needed().await;
    }
}

#[tonic::async_trait]
impl Watch for WatchApi {
    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<tonic::codegen::BoxStream<WatchResponse>>, Status> {
        let (out, responses) = mpsc::channel(STREAM_BUFFER);
        let (wake, work) = mpsc::channel(1);
        let id = context::with(|s| Ok(s.watch.borrow_mut().open(out.clone(), wake)))?;
        glommio::spawn_local(serve(id, request.into_inner(), out, work)).detach();
        Ok(Response::new(Box::pin(responses)))
    }
}
