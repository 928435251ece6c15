//! Buckets as readers see them: a named B+tree whose header (root page and sequence) is the value of
//! a flagged element in its parent, with small buckets stored inline in that value.

use super::error::{Corruption, Result};
use super::layout::{BUCKET_HEADER_SIZE, BucketHeader, LEAF_FLAG_BUCKET, PAGE_HEADER_SIZE};
use super::page::LeafEntry;
use super::tree::{Cursor, Root, TreeSource};

/// A nested bucket's header and, for an inline bucket, its page image.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BucketValue<'a> {
    pub header: BucketHeader,
    pub inline: Option<&'a [u8]>,
}

impl<'a> BucketValue<'a> {
    /// Parses a leaf entry flagged as a bucket.
    pub fn parse(entry: LeafEntry<'a>) -> Result<Self, Corruption> {
        let bad = || Corruption::BadBucket {
            name: escape(entry.key),
            len: entry.value.len(),
        };
        if entry.value.len() < BUCKET_HEADER_SIZE {
            return Err(bad());
        }
        let header = BucketHeader::decode(entry.value);
        let inline = if header.root == 0 {
            let page = &entry.value[BUCKET_HEADER_SIZE..];
            if page.len() < PAGE_HEADER_SIZE {
                return Err(bad());
            }
            Some(page)
        } else {
            None
        };
        Ok(BucketValue { header, inline })
    }

    pub fn root(&self) -> Root<'a> {
        match self.inline {
            Some(bytes) => Root::Inline(bytes),
            None => Root::Page(self.header.root),
        }
    }
}

/// `bytes` as printable text: ASCII graphic characters and space as themselves, `\\` doubled, the
/// rest as `\xNN`.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => s.push_str("\\\\"),
            b' '..=b'~' => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

/// Whether a leaf entry names a nested bucket.
pub(crate) fn is_bucket(entry: &LeafEntry<'_>) -> bool {
    entry.flags & LEAF_FLAG_BUCKET != 0
}

/// Anything top-level buckets can be read from: a read transaction, or a write transaction as it
/// stands (its own changes included).
pub trait View {
    /// The top-level bucket `name`, if it exists.
    fn view(&self, name: &[u8]) -> Result<Option<Bucket<'_>>>;
}

impl View for super::read_txn::ReadTxn {
    fn view(&self, name: &[u8]) -> Result<Option<Bucket<'_>>> {
        self.bucket(name)
    }
}

impl View for super::write_txn::WriteTxn<'_> {
    fn view(&self, name: &[u8]) -> Result<Option<Bucket<'_>>> {
        super::write_txn::WriteTxn::view(self, name)
    }
}

/// A bucket, read-only: in a read transaction, or viewed in a write transaction.
#[derive(Debug, Clone, Copy)]
pub struct Bucket<'a> {
    pub(crate) tree: TreeSource<'a>,
    pub(crate) sequence: u64,
}

impl<'a> Bucket<'a> {
    /// The value of `key`; `None` if absent or if `key` names a nested bucket.
    pub fn get(&self, key: &[u8]) -> Result<Option<&'a [u8]>> {
        match self.tree.get(key).map_err(|c| self.tree.pages.corrupt(c))? {
            Some(e) if !is_bucket(&e) => Ok(Some(e.value)),
            _ => Ok(None),
        }
    }

    /// The nested bucket `name`, if there is one.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket<'a>>> {
        let pages = self.tree.pages;
        match self.tree.get(name).map_err(|c| pages.corrupt(c))? {
            Some(e) if is_bucket(&e) => {
                let v = BucketValue::parse(e).map_err(|c| pages.corrupt(c))?;
                Ok(Some(Bucket {
                    tree: TreeSource {
                        pages,
                        root: v.root(),
                        arena: None,
                    },
                    sequence: v.header.sequence,
                }))
            }
            _ => Ok(None),
        }
    }

    /// A cursor over this bucket's keys (nested buckets appear with a `None` value).
    pub fn cursor(&self) -> Cursor<'a> {
        Cursor::new(self.tree)
    }

    /// The bucket's sequence counter.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Calls `f` for every key in order (value `None` for nested buckets).
    pub fn for_each(
        &self,
        mut f: impl FnMut(&'a [u8], Option<&'a [u8]>) -> Result<()>,
    ) -> Result<()> {
        let mut c = self.cursor();
        let mut at = c.first()?;
        while let Some((k, v)) = at {
            f(k, v)?;
            at = c.next()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_keeps_text_and_hexes_the_rest() {
        assert_eq!(escape(b"foo bar"), "foo bar");
        assert_eq!(escape(b"a\\b\x00\xff\n"), "a\\\\b\\x00\\xff\\x0a");
    }
}
