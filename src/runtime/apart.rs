//! Long blocking jobs — copying or checking a whole page file — on a thread of their own, awaited
//! from an executor. Not glommio's blocking pool: its one thread also grows the page file for the
//! raft core, which must not wait behind such a job.
//!
//! Runs on: any executor (the job on its own thread).

use futures_channel::oneshot;

/// Runs `job` on a new thread named `name` and waits for its outcome.
pub async fn run<T: Send + 'static>(
    name: &str,
    job: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let (done, ended) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _ = done.send(job());
        })
        .map_err(|e| format!("no thread for {name}: {e}"))?;
    ended
        .await
        .unwrap_or_else(|_| Err(format!("the {name} thread ended")))
}
