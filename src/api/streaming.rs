//! Server-streaming calls (Observe, Snapshot): a task on this core produces the responses into a
//! bounded channel — waiting for room, so a slow client holds back its producer and nothing else
//! — and tonic sends them from the other end. When the client goes, tonic drops that end, which
//! drops the producer at its next wait; an error the producer ends with is the stream's last
//! message. Either way the call is counted handled once its producer ends.
//!
//! Runs on: every serving core.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_channel::{mpsc, oneshot};
use futures_lite::Stream;
use tonic::Status;
use tonic::codegen::BoxStream;

use super::conn::send;
use super::context;

/// Where a producer sends its responses.
pub type Out<T> = mpsc::Sender<Result<T, Status>>;

/// The client's end: the responses, and a line that tells the producer when it is dropped.
struct Streamed<T> {
    responses: mpsc::Receiver<Result<T, Status>>,
    _gone: oneshot::Sender<()>,
}

impl<T> Stream for Streamed<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.responses).poll_next(cx)
    }
}

/// Answers server-streaming call `path` with what `produce` sends into the [`Out`] it is given
/// (at most `buffer` responses waiting for the client), run as a task on this core.
pub fn serve<T, F>(
    path: &'static str,
    buffer: usize,
    produce: impl FnOnce(Out<T>) -> F,
) -> BoxStream<T>
where
    T: Send + 'static,
    F: Future<Output = Result<(), Status>> + 'static,
{
    let (out, responses) = mpsc::channel(buffer);
    let (gone, client_went) = oneshot::channel::<()>();
    let mut last = out.clone();
    let producing = produce(out);
    glommio::spawn_local(async move {
        let ended = futures_lite::future::or(producing, async {
            let _ = client_went.await;
            Ok(())
        })
        .await;
        if let Err(status) = &ended {
            send(&mut last, Err(status.clone())).await;
        }
        let _ = context::with(|s| {
            s.stream_ended(path, &ended);
            Ok(())
        });
    })
    .detach();
    Box::pin(Streamed {
        responses,
        _gone: gone,
    })
}
