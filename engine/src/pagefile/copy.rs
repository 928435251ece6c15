//! Copies of a snapshot: a byte stream of the whole file (what etcd's Snapshot RPC sends), and a
//! compacted rewrite into a fresh file (what defrag does). Both read from a read transaction, so the
//! writer and other readers go on meanwhile.

use std::io::{self, Write};
use std::path::Path;

use super::bucket::Bucket;
use super::db::{Db, Options};
use super::error::{Corruption, Error, Result};
use super::layout::{MAX_BUCKET_DEPTH, NO_FREELIST};
use super::meta::Meta;
use super::read_txn::ReadTxn;
use super::tree::{PageSet, Root};

/// Bytes of keys and values a compacted copy writes between syncs.
const SYNC_BYTES: u64 = 32 << 20;

/// Bytes handed to the writer at a time while streaming.
const STREAM_CHUNK: usize = 1 << 20;

/// One step of rebuilding a tree in a fresh file.
enum Op {
    /// Create bucket `name` with `sequence` inside bucket `parent`; it becomes bucket `id`.
    Create {
        parent: usize,
        name: Vec<u8>,
        sequence: u64,
    },
    Put {
        bucket: usize,
        key: Vec<u8>,
        value: Vec<u8>,
    },
}

/// Replays operations into a fresh file, one transaction per batch.
struct Rebuild {
    writer: super::db::Writer,
    /// Bucket id → names from the root.
    paths: Vec<Vec<Vec<u8>>>,
    batch: Vec<Op>,
    bytes: u64,
    batch_bytes: u64,
    /// Bytes of batches published since the last sync.
    unsynced: u64,
    /// Root pages of the buckets copied so far: a bucket reached twice is damage.
    roots: PageSet,
}

impl Rebuild {
    fn push(&mut self, op: Op) -> Result<()> {
        self.bytes += match &op {
            Op::Create { name, .. } => name.len() as u64 + 32,
            Op::Put { key, value, .. } => (key.len() + value.len()) as u64 + 16,
        };
        self.batch.push(op);
        if self.bytes >= self.batch_bytes {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let mut txn = self.writer.begin()?;
        for op in self.batch.drain(..) {
            let (path, leaf_name) = match &op {
                Op::Create { parent, name, .. } => (&self.paths[*parent], name),
                Op::Put { bucket, key, .. } => (&self.paths[*bucket], key),
            };
            if path.is_empty() {
                if let Op::Create { name, sequence, .. } = &op {
                    txn.create_bucket(name)?.set_sequence(*sequence)?;
                }
                continue;
            }
            let path: Vec<&[u8]> = path.iter().map(Vec::as_slice).collect();
            let mut bucket = txn.bucket_at(&path)?;
            // Keys arrive in order: pack pages full, as a fresh sequential load allows.
            bucket.set_fill_percent(1.0);
            match &op {
                Op::Create { sequence, .. } => {
                    bucket.create_bucket(leaf_name)?.set_sequence(*sequence)?
                }
                Op::Put { value, .. } => bucket.put(leaf_name, value)?,
            }
        }
        txn.publish()?;
        self.unsynced += self.bytes;
        self.bytes = 0;
        if self.unsynced >= SYNC_BYTES {
            // A little at a time: a gigabyte of dirty pages flushed at once would stall every
            // other writer of the disk (the member's WAL among them) behind it.
            self.writer.sync()?;
            self.unsynced = 0;
        }
        Ok(())
    }

    fn copy_bucket(&mut self, src: Bucket<'_>, id: usize) -> Result<()> {
        if self.paths[id].len() > MAX_BUCKET_DEPTH {
            return Err(src
                .tree
                .pages
                .corrupt(Corruption::NestingTooDeep(MAX_BUCKET_DEPTH)));
        }
        let mut cursor = src.cursor();
        let mut at = cursor.first()?;
        while let Some((key, value)) = at {
            match value {
                Some(_) if id == 0 => {
                    let key = super::bucket::escape(key);
                    return Err(src.tree.pages.corrupt(Corruption::KeyInRootBucket(key)));
                }
                Some(value) => self.push(Op::Put {
                    bucket: id,
                    key: key.to_vec(),
                    value: value.to_vec(),
                })?,
                None => {
                    let Some(child) = src.bucket(key)? else {
                        return Err(Error::BucketNotFound);
                    };
                    if let Root::Page(pgid) = child.tree.root
                        && !self.roots.insert(pgid)
                    {
                        let offset = pgid.saturating_mul(src.tree.pages.page_size as u64);
                        let problem = super::error::PageProblem::ReachedTwice;
                        return Err(src.tree.pages.corrupt(Corruption::Page {
                            pgid,
                            offset,
                            problem,
                        }));
                    }
                    let mut path = self.paths[id].clone();
                    path.push(key.to_vec());
                    self.paths.push(path);
                    let child_id = self.paths.len() - 1;
                    self.push(Op::Create {
                        parent: id,
                        name: key.to_vec(),
                        sequence: child.sequence(),
                    })?;
                    self.copy_bucket(child, child_id)?;
                }
            }
            at = cursor.next()?;
        }
        Ok(())
    }
}

impl ReadTxn {
    /// Streams a consistent copy of the file as of this transaction: both meta pages (naming this
    /// transaction's tree, with the freelist to be rebuilt by the reader, as etcd's snapshots do),
    /// then every page up to the high-water mark. Returns the bytes written ([`ReadTxn::size`]).
    pub fn write_to(&self, w: &mut dyn Write) -> io::Result<u64> {
        let (head, tail) = (self.copy_head(), self.copy_tail());
        w.write_all(&head)?;
        for chunk in tail.chunks(STREAM_CHUNK) {
            w.write_all(chunk)?;
        }
        Ok((head.len() + tail.len()) as u64)
    }

    /// The first part of a copy ([`ReadTxn::write_to`]): its two meta pages, made for this
    /// transaction.
    pub fn copy_head(&self) -> Vec<u8> {
        let snapshot = self.snapshot();
        let page_size = self.db().page_size();
        let meta = Meta {
            page_size: page_size as u32,
            root: snapshot.root,
            freelist: NO_FREELIST,
            hwm: snapshot.hwm,
            txid: snapshot.txid,
        };
        let own_slot = snapshot.txid % 2;
        let mut head = Vec::with_capacity(2 * page_size);
        for slot in 0..2 {
            let txid = if slot == own_slot {
                meta.txid
            } else {
                meta.txid.saturating_sub(1)
            };
            head.extend_from_slice(&Meta { txid, ..meta }.encode_page(slot));
        }
        head
    }

    /// The rest of a copy: every page after the meta pages up to the high-water mark, straight
    /// from the memory map.
    pub fn copy_tail(&self) -> &[u8] {
        let pages = self.pages();
        pages.map.get(2 * pages.page_size..).unwrap_or_default()
    }

    /// Writes a compacted copy of this snapshot into a new page file at `dst` (which must not exist
    /// or be empty): every bucket, key and sequence, pages packed full and no free space. Works in
    /// transactions of about `batch_bytes` each, then syncs.
    pub fn compact_into(&self, dst: &Path, batch_bytes: u64) -> Result<()> {
        let (_db, writer) = Db::open(dst, Options::default())?;
        let mut rebuild = Rebuild {
            writer,
            paths: vec![Vec::new()],
            batch: Vec::new(),
            bytes: 0,
            batch_bytes,
            unsynced: 0,
            roots: PageSet::default(),
        };
        {
            let read = rebuild.writer.db().begin_read()?;
            if read.root().cursor().first()?.is_some() {
                return Err(Error::TargetNotEmpty(dst.to_path_buf()));
            }
        }
        rebuild.copy_bucket(self.root(), 0)?;
        rebuild.flush()?;
        rebuild.writer.sync()
    }
}
