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
    /// Grows the file if needed (rolled back if that fails), writes every page (all submitted at
    /// once; a failure stops the writer), then commits.
    async fn publish(&self, mut staged: Staged<'_>) -> Result<()> {
        if let Some(grow) = staged.grow()
            && let Err(e) = self.perform(grow).await
        {
            return Err(staged.roll_back(e));
        }
        let writes = staged.writes().into_iter().map(|w| self.perform(w));
        match first_error(writes.collect()).await {
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

/// Runs every future to completion, together, and returns the first error any of them gave.
async fn first_error<F: Future<Output = Result<()>>>(futures: Vec<F>) -> Result<()> {
    let mut running: Vec<Option<Pin<Box<F>>>> =
        futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut first = None;
    poll_fn(|cx| {
        let mut pending = false;
        for slot in &mut running {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    Poll::Ready(outcome) => {
                        if let Err(e) = outcome {
                            first.get_or_insert(e);
                        }
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    first.map_or(Ok(()), Err)
}
