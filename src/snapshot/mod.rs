//! `keelson snapshot …`, etcd's snapshot tools for keelson's own use: `save` fetches a snapshot
//! from a running member (`etcdctl snapshot save`), `status` describes a snapshot file as
//! `etcdctl snapshot status` does, and `restore` makes a data dir of one for a new cluster, as
//! `etcdctl snapshot restore` (etcd 3.5's `etcdutl`) does — keelson starts on it.
//!
//! Runs on: the main thread of `keelson snapshot` (no member runs); `save` on one glommio
//! executor of its own.

pub mod restore;
pub mod save;
pub mod status;

use std::path::PathBuf;

/// Why a snapshot command failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The snapshot's page file is damaged or unreadable.
    #[error(transparent)]
    PageFile(#[from] keelson_engine::pagefile::Error),
    /// Its MVCC records are.
    #[error(transparent)]
    Mvcc(#[from] keelson_engine::mvcc::MvccError),
    /// Output failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
    /// Anything else, said in etcd's words where etcd has them.
    #[error("{0}")]
    Failed(String),
}

/// An I/O error on `path`.
fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}
