//! The page file: a copy-on-write B+tree in bbolt's on-disk format (version 2), so that etcd's tools
//! read keelson's files and keelson reads etcd's.
//!
//! One [`Writer`] (keelson's raft core) and any number of readers on any thread. A write transaction
//! ends in [`WriteTxn::publish`], which makes it visible to new readers without an fsync;
//! [`Writer::sync`] makes everything published durable (the server leans on its WAL in between).
//! Both also come in halves — [`WriteTxn::stage`] and [`Writer::begin_sync`] plan the file
//! operations ([`IoStep`]) and leave them to the caller — so a writer on a glommio executor can
//! perform them on io_uring ([`UringFile`]) and keep publishing while a sync is in flight.
//! Readers ([`Db::begin_read`]) read straight from a memory map, never wait for the writer, and see
//! one consistent tree for as long as they live.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! use keelson_engine::pagefile::{Db, Options};
//! let (db, mut writer) = Db::open(dir.path().join("db"), Options::default())?;
//! let mut txn = writer.begin()?;
//! txn.create_bucket(b"key")?.put(b"foo", b"bar")?;
//! txn.publish()?;
//! writer.sync()?;
//! let read = db.begin_read()?;
//! assert_eq!(read.bucket(b"key")?.unwrap().get(b"foo")?, Some(&b"bar"[..]));
//! # Ok::<(), keelson_engine::pagefile::Error>(())
//! ```
//!
//! Layout, commit protocol and what a crash leaves behind: `engine/docs/format.md`.

mod bucket;
mod check;
mod copy;
mod db;
mod error;
mod freelist;
mod io;
mod layout;
mod mapping;
mod meta;
mod node;
mod page;
mod read_txn;
mod readers;
mod spill;
mod stats;
mod tree;
mod uring;
mod walk;
mod write_txn;

pub use bucket::{Bucket, View, escape};
pub use db::{Db, Options, SyncPlan, Writer};
pub use error::{Corruption, Error, MetaProblem, PageProblem, Result};
pub use io::{FileIo, IoLayer, IoStep};
pub use layout::{DEFAULT_PAGE_SIZE, MAX_KEY_SIZE, MAX_VALUE_SIZE, Pgid};
pub use read_txn::ReadTxn;
pub use spill::{Blocking, Publisher, Staged};
pub use stats::{BucketStats, Stats};
pub use tree::{Cursor, Item};
pub use uring::UringFile;
pub use write_txn::{BucketMut, WriteTxn};
