//! etcd's MVCC key-value store on the page file: the state machine raft applies to, with etcd's
//! revisions and semantics (etcd 3.4's, quirks included) and etcd's on-disk layout, so a keelson
//! data file is an etcd data file.
//!
//! - The raft core owns the [`Store`]: it applies committed entries ([`Store::apply`]), which yield
//!   responses and the events watchers see, and runs compactions a batch at a time.
//! - Any core reads: [`range`], [`read_only_txn`], [`history`] and [`prev_kv`] take any page-file
//!   [`View`](crate::pagefile::View) — a read transaction on the published file — with the
//!   [`revisions`] it shows. No in-memory index: keelson's own bucket orders every version by user
//!   key, so a Range at any revision is one cursor scan.
//! - [`validate`] holds the checks etcd makes at its gRPC edge, before a request is proposed.
//!
//! Buckets and record formats: `schema.rs` and `engine/docs/format.md`.

pub mod alarm;
mod compact;
mod error;
mod hash;
mod history;
mod index;
mod index_key;
mod lease;
pub mod members;
mod ops;
mod read;
mod rebuild;
mod request;
mod revision;
mod schema;
mod store;
mod txn;
pub mod validate;
mod version;
mod write;

pub use error::{MvccError, Result, StatusCode};
pub use hash::{FileStatus, KvHash, file_status, hash, hash_kv};
pub use history::{history, prev_kv};
pub use index::indexed_versions;
pub use lease::{keys_of as lease_keys, leases};
pub use read::{Revisions, range, revisions};
pub use request::{Request, Response, WithHeader};
pub use revision::Revision;
pub use store::{Applied, Checkpoint, Entry, Options, Store, applied_of};
pub use txn::{is_read_only as is_read_only_txn, read_only as read_only_txn};
