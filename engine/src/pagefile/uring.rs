//! The page file's writes on io_uring, for a writer that lives on a glommio executor (keelson's
//! raft core): the same [`IoStep`]s the writer performs itself when blocking, submitted through
//! glommio's buffered file instead — `write`, `fdatasync` and `ftruncate` never block the
//! executor, so a page-file sync can run beside the turns that go on applying and publishing.
//!
//! The order is the writer's: a staged transaction grows the file first (a failure rolls it back),
//! then writes its pages, all at once (any failure stops the writer), then commits; a sync plan's
//! steps run one after another. The file is opened a second time for this (same inode, same page
//! cache the readers' mapping shows); the writer's own handle keeps the lock.
//!
//! Runs on: the executor that owns the [`super::Writer`] (one thread, `Rc` state).

use std::future::{Future, poll_fn};
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use glommio::io::{BufferedFile, OpenOptions};

use super::db::{Db, SyncPlan};
use super::error::{Error, Result};
use super::io::IoStep;
use super::spill::{Publisher, Staged};

/// Most page writes of one publish in flight at once. Each write in flight holds a clone of the
/// publishing task's waker, and glommio counts a task's wakers in an `i16`: a transaction that
/// rewrites more than 32 767 scattered pages (a large delete, a compaction) must not submit them
/// all at once. Each wake-up also polls every write in flight, so the window keeps that cheap.
const IN_FLIGHT: usize = 128;

/// The page file opened for io_uring writes.
#[derive(Debug, Clone)]
pub struct UringFile {
    file: Rc<BufferedFile>,
    path: PathBuf,
}

impl UringFile {
    /// Opens the file of `db` for writing through io_uring (on the calling executor).
    pub async fn open(db: &Db) -> Result<UringFile> {
        let path = db.path().to_path_buf();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .buffered_open(&path)
            .await
            .map_err(|e| io_error(&path, "open for io_uring", e.into()))?;
        Ok(UringFile {
            file: Rc::new(file),
            path,
        })
    }

    /// Performs a sync plan's steps in order; hand the outcome to [`super::Writer::finish_sync`].
    /// Borrows nothing of the writer, so transactions can publish meanwhile.
    pub async fn run(&self, plan: SyncPlan) -> Result<()> {
        for step in plan.steps {
            self.perform(step).await?;
        }
        Ok(())
    }

    /// Performs one step.
    async fn perform(&self, step: IoStep) -> Result<()> {
        let op = step.op();
        let done = match step {
            IoStep::Grow(len) => self.file.truncate(len).await.map_err(io::Error::from),
            IoStep::Write { offset, bytes, .. } => self.write_all(bytes, offset).await,
            IoStep::Sync { .. } => self.file.fdatasync().await.map_err(io::Error::from),
        };
        done.map_err(|e| io_error(&self.path, op, e))
    }

    /// Writes all of `bytes` at `offset`. The kernel owns the buffer while the write is in
    /// flight and glommio does not hand it back, so a short write (on a regular file: the disk is
    /// full) is an error — which stops the writer, as any failed write does.
    async fn write_all(&self, bytes: Vec<u8>, offset: u64) -> io::Result<()> {
        let len = bytes.len();
        let written = self
            .file
            .write_at(bytes, offset)
            .await
            .map_err(io::Error::from)?;
        if written < len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {written} of {len} bytes"),
            ));
        }
        Ok(())
    }
}

impl Publisher for UringFile {
    /// Grows the file if needed (rolled back if that fails), writes every page ([`IN_FLIGHT`] at
    /// a time; a failure stops the writer), then commits.
    async fn publish(&self, mut staged: Staged<'_>) -> Result<()> {
        if let Some(grow) = staged.grow()
            && let Err(e) = self.perform(grow).await
        {
            return Err(staged.roll_back(e));
        }
        let writes = staged.writes().into_iter().map(|w| self.perform(w));
        match first_error(writes).await {
            Ok(()) => {
                staged.commit();
                Ok(())
            }
            Err(e) => Err(staged.fail(e)),
        }
    }
}

fn io_error(path: &Path, op: &'static str, source: io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// Runs `futures` to completion, at most [`IN_FLIGHT`] at a time, and returns the first error any
/// of them gave. After an error no further future starts; those already running are finished.
async fn first_error<F: Future<Output = Result<()>>>(
    futures: impl Iterator<Item = F>,
) -> Result<()> {
    let mut queued = futures.fuse();
    let mut running: Vec<Pin<Box<F>>> = Vec::with_capacity(IN_FLIGHT);
    let mut first = None;
    poll_fn(|cx| {
        loop {
            if first.is_none() {
                running.extend(
                    queued
                        .by_ref()
                        .take(IN_FLIGHT - running.len())
                        .map(Box::pin),
                );
            }
            let before = running.len();
            running.retain_mut(|future| match future.as_mut().poll(cx) {
                Poll::Ready(outcome) => {
                    if let Err(e) = outcome {
                        first.get_or_insert(e);
                    }
                    false
                }
                Poll::Pending => true,
            });
            if running.len() == before {
                // Nothing finished (or nothing was left): each future waiting will wake this task.
                return if running.is_empty() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                };
            }
        }
    })
    .await;
    first.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;
    use std::task::Waker;

    use super::*;

    /// Operations like io_uring's as glommio runs them: the first poll keeps a clone of the task's
    /// waker until the "kernel" (a task that wakes them) completes the operation.
    #[derive(Default)]
    struct Kernel {
        waiting: RefCell<Vec<Waker>>,
        running: Cell<usize>,
        most_running: Cell<usize>,
        started: Cell<usize>,
    }

    impl Kernel {
        async fn operation(&self, fails: bool) -> Result<()> {
            self.started.set(self.started.get() + 1);
            self.running.set(self.running.get() + 1);
            self.most_running
                .set(self.most_running.get().max(self.running.get()));
            let mut submitted = false;
            poll_fn(|cx| {
                if submitted {
                    return Poll::Ready(());
                }
                submitted = true;
                self.waiting.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            })
            .await;
            self.running.set(self.running.get() - 1);
            if fails {
                Err(io_error(
                    Path::new("db"),
                    "write",
                    io::Error::other("disk full"),
                ))
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn more_operations_than_a_task_can_count_wakers_for_run_a_window_at_a_time() {
        const OPERATIONS: usize = 100_000;
        const FAILING: usize = 70_000;
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let kernel = Rc::new(Kernel::default());
                let completer = glommio::spawn_local({
                    let kernel = kernel.clone();
                    async move {
                        loop {
                            let woken = std::mem::take(&mut *kernel.waiting.borrow_mut());
                            woken.into_iter().for_each(Waker::wake);
                            glommio::yield_if_needed().await;
                            glommio::executor().yield_task_queue_now().await;
                        }
                    }
                })
                .detach();
                let outcome =
                    first_error((0..OPERATIONS).map(|i| kernel.operation(i == FAILING))).await;
                completer.cancel();
                assert!(outcome.is_err(), "the failed operation's error is returned");
                assert!(kernel.most_running.get() <= IN_FLIGHT);
                // Once one failed, nothing more started: at most a window's worth after it.
                let started = kernel.started.get();
                assert!(
                    (FAILING + 1..=FAILING + IN_FLIGHT).contains(&started),
                    "{started}"
                );
                assert_eq!(kernel.running.get(), 0, "every started operation finished");
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
