//! Defragmentation without a pause: the page file is rewritten compactly while the raft core goes
//! on applying and the serving cores go on reading, and the member moves to the new file in one
//! short step.
//!
//! 1. **Copy.** A read transaction of the file as it is now (its consistent index is the copy's
//!    base) is rewritten into `db.defrag` beside it — every bucket, key and sequence, pages packed
//!    full — and opened as a store of its own, on a thread of its own. The old file takes every
//!    apply meanwhile; the decoded batches applied since the base are kept ([`Defrag::applied`]).
//! 2. **Catch up.** The kept batches are applied to the copy, a few per turn (applying is
//!    deterministic, so it reaches the state the old one has).
//! 3. **Move.** When it holds everything the old one holds (and no sync of the old one is in
//!    flight), in one step of the raft core: the new file is synced, renamed over `db` (and the
//!    directory synced), and becomes the store; the serving cores are told to read from it.
//!
//! What a crash leaves: before the rename, the old file and the WAL are as without a
//! defragmentation (a leftover `db.defrag` is removed at the next one); after it, the new file is
//! durable through everything applied, which is past anything the WAL released.
//!
//! Runs on: the raft core (the copy on a thread of its own).

use std::cell::Cell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use keelson_engine::mvcc::{self, Store};
use keelson_engine::pagefile::{ReadTxn, UringFile};

use crate::runtime::apart;

/// Bytes of keys and values per transaction of the copy.
const COPY_BATCH_BYTES: u64 = 4 << 20;
/// Kept batches applied to the new file per turn while catching up.
const CATCH_UP_BATCHES: usize = 8;

/// Where a defragmentation stands.
enum Phase {
    /// The copy runs; the cell is set when it ends, with the copy opened as a store.
    Copying(Rc<Cell<Option<Result<Store, String>>>>),
    /// The copy is open as a store, taking the kept batches.
    CatchingUp(Box<(Store, UringFile)>),
    /// The caught-up copy was handed over.
    HandedOver,
}

/// A defragmentation in progress.
pub struct Defrag {
    phase: Phase,
    /// Batches applied to the old file since the copy's base, oldest first.
    applied: VecDeque<Vec<mvcc::Entry>>,
    /// `db.defrag`.
    copy: PathBuf,
    started: Instant,
    size_before: u64,
}

/// Writes the compacted copy of what `read` shows into `target` (a leftover there removed
/// first), and opens it as a store with `options`.
fn copy_into(target: &Path, read: ReadTxn, options: mvcc::Options) -> Result<Store, String> {
    if target.exists() {
        std::fs::remove_file(target).map_err(|e| format!("{}: remove: {e}", target.display()))?;
    }
    read.compact_into(target, COPY_BATCH_BYTES)
        .map_err(|e| e.to_string())?;
    Store::open(target, options).map_err(|e| e.to_string())
}

/// The file a defragmentation of `db` writes.
pub fn copy_path(db: &Path) -> PathBuf {
    db.with_extension("defrag")
}

impl Defrag {
    /// Starts copying what `read` shows of the file at `db` into its copy, to be opened with the
    /// store's `options`; `wake` is called when the copy ends.
    pub fn start(db: &Path, read: ReadTxn, options: mvcc::Options, wake: Rc<dyn Fn()>) -> Defrag {
        let copy = copy_path(db);
        let size_before = read.size();
        tracing::info!(path = %db.display(), current_db_size_bytes = size_before, "defragmenting");
        let outcome = Rc::new(Cell::new(None));
        let done = outcome.clone();
        let target = copy.clone();
        glommio::spawn_local(async move {
            let copied = apart::run("keelson-defrag", move || copy_into(&target, read, options));
            done.set(Some(copied.await));
            wake();
        })
        .detach();
        Defrag {
            phase: Phase::Copying(outcome),
            applied: VecDeque::new(),
            copy,
            started: Instant::now(),
            size_before,
        }
    }

    /// How long it has run.
    pub fn took(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Keeps a batch the old file applied, for the copy to apply too.
    pub fn applied(&mut self, batch: &[mvcc::Entry]) {
        self.applied.push_back(batch.to_vec());
    }

    /// Whether it has work for the next turn at once (catching up).
    pub fn is_busy(&self) -> bool {
        matches!(self.phase, Phase::CatchingUp(..))
    }

    /// Takes the next step: takes the finished copy, or applies some of the kept batches to it.
    /// Returns the copy, caught up with `applied` (the old store's index), once it is; an error if
    /// the copy failed.
    pub async fn step(&mut self, applied: u64) -> Result<Option<(Store, UringFile)>, String> {
        if let Phase::Copying(outcome) = &self.phase {
            let Some(copied) = outcome.take() else {
                return Ok(None);
            };
            let store = copied?;
            let file = UringFile::open(store.db())
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(copied = ?self.started.elapsed(), behind = self.applied.len(), "defragmentation copied the file; catching up");
            self.phase = Phase::CatchingUp(Box::new((store, file)));
        }
        let Phase::CatchingUp(copy) = &mut self.phase else {
            return Ok(None);
        };
        let (store, file) = &mut **copy;
        for _ in 0..CATCH_UP_BATCHES {
            let Some(batch) = self.applied.pop_front() else {
                break;
            };
            store
                .apply_via(&batch, &*file)
                .await
                .map_err(|e| e.to_string())?;
        }
        if !self.applied.is_empty() || store.applied().0 < applied {
            return Ok(None);
        }
        match std::mem::replace(&mut self.phase, Phase::HandedOver) {
            Phase::CatchingUp(copy) => Ok(Some(*copy)),
            other => {
                self.phase = other;
                Ok(None)
            }
        }
    }

    /// Makes the caught-up copy durable and puts it in place of the file at `db`. Returns it
    /// ready to serve.
    pub async fn finish(
        &self,
        db: &Path,
        mut store: Store,
        file: UringFile,
    ) -> Result<(Store, UringFile), String> {
        if let Some(checkpoint) = store.begin_sync().map_err(|e| e.to_string())? {
            let outcome = file.run(checkpoint.plan).await;
            store.finish_sync(outcome).map_err(|e| e.to_string())?;
        }
        let (from, to) = (self.copy.clone(), db.to_path_buf());
        glommio::executor()
            .spawn_blocking(move || {
                std::fs::rename(&from, &to)?;
                let dir = to.parent().unwrap_or(Path::new("."));
                std::fs::File::open(dir)?.sync_all()
            })
            .await
            .map_err(|e| format!("putting {} in place: {e}", self.copy.display()))?;
        tracing::info!(
            path = %db.display(),
            current_db_size_bytes_diff = store.size() as i64 - self.size_before as i64,
            current_db_size_bytes = store.size(),
            took = ?self.started.elapsed(),
            "finished defragmenting directory"
        );
        Ok((store, file))
    }

    /// Gives up: the copy is removed (best effort; the next defragmentation removes it anyway).
    pub async fn abandon(self, why: &str) {
        tracing::warn!("failed to defragment: {why}");
        let copy = self.copy;
        glommio::executor()
            .spawn_blocking(move || std::fs::remove_file(copy))
            .await
            .ok();
    }
}
