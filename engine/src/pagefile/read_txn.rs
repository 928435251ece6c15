//! Read transactions: a consistent snapshot of the whole file, read straight from the memory map.
//!
//! A read transaction pins the txid it reads at in the reader table for as long as it lives, which
//! keeps the writer from reusing any page of its tree. It owns a handle to the file, so it can be
//! moved to another thread or outlive the `Db` it came from; dropping it releases the pin.

use super::bucket::Bucket;
use super::db::Db;
use super::error::Result;
use super::readers::Snapshot;
use super::tree::Pages;
use super::walk;

/// A read-only view of the file at one published transaction.
#[derive(Debug)]
pub struct ReadTxn {
    db: Db,
    slot: usize,
    snapshot: Snapshot,
}

impl ReadTxn {
    pub(crate) fn new(db: Db, slot: usize, snapshot: Snapshot) -> Self {
        ReadTxn { db, slot, snapshot }
    }

    /// The transaction id this snapshot was published at.
    pub fn id(&self) -> u64 {
        self.snapshot.txid
    }

    /// Bytes of the file this snapshot spans (high-water mark × page size): the size of a copy.
    pub fn size(&self) -> u64 {
        self.snapshot.hwm * self.db.page_size() as u64
    }

    /// The file this reads.
    pub fn db(&self) -> &Db {
        &self.db
    }

    pub(crate) fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub(crate) fn pages(&self) -> Pages<'_> {
        self.db.pages(&self.snapshot)
    }

    /// The root bucket, whose keys are the top-level bucket names.
    pub fn root(&self) -> Bucket<'_> {
        walk::root_bucket(self.pages(), self.snapshot.root)
    }

    /// The top-level bucket `name`, if it exists.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket<'_>>> {
        self.root().bucket(name)
    }

    /// The bucket at `path` (a top-level bucket, then nested ones), if it exists.
    pub fn bucket_at(&self, path: &[&[u8]]) -> Result<Option<Bucket<'_>>> {
        let mut bucket = self.root();
        for name in path {
            match bucket.bucket(name)? {
                Some(b) => bucket = b,
                None => return Ok(None),
            }
        }
        Ok(Some(bucket))
    }
}

impl Drop for ReadTxn {
    fn drop(&mut self) {
        self.db.inner.readers.unpin(self.slot);
    }
}
