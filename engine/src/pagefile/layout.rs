//! The fixed byte layout of bbolt pages: sizes, flags, and the little-endian encoders and decoders of
//! the page header and of branch/leaf elements. Pure byte work, no I/O and no `unsafe`.
//!
//! `engine/docs/format.md` is the specification; the constants here are its numbers. Decoders take
//! slices whose length the caller has already checked (they index, so a short slice is a bug in the
//! caller, not a corrupt file).

/// A page number: page `n` starts at byte `n × page_size`.
pub type Pgid = u64;

/// Bytes in every page header.
pub(crate) const PAGE_HEADER_SIZE: usize = 16;
/// Bytes in a branch or leaf element (both are 16).
pub(crate) const ELEMENT_SIZE: usize = 16;
/// Bytes in a bucket header (root pgid, sequence).
pub(crate) const BUCKET_HEADER_SIZE: usize = 16;
/// Bytes of the meta structure after the page header.
pub(crate) const META_SIZE: usize = 64;
/// Bytes of the meta covered by its checksum (everything before the checksum).
pub(crate) const META_CHECKSUMMED: usize = 56;

/// The page size keelson creates files with.
pub const DEFAULT_PAGE_SIZE: usize = 4096;
/// Smallest page size accepted when reading a file.
pub(crate) const MIN_PAGE_SIZE: u32 = 1024;
/// Largest page size accepted when reading a file.
pub(crate) const MAX_PAGE_SIZE: u32 = 65536;

/// The meta page magic number.
pub(crate) const MAGIC: u32 = 0xED0C_DAED;
/// The file format version.
pub(crate) const VERSION: u32 = 2;
/// `meta.freelist` when the freelist is not stored in the file.
pub(crate) const NO_FREELIST: Pgid = u64::MAX;

/// Largest key keelson accepts. bbolt's own API stops at 32 KiB, but its format does not:
/// keelson's index holds etcd keys, which etcd bounds only by the request size, and bbolt (and
/// so etcd's tools) reads files with larger keys without complaint.
pub const MAX_KEY_SIZE: usize = 1 << 24;
/// Largest value bbolt accepts.
pub const MAX_VALUE_SIZE: usize = (1 << 31) - 2;
/// Deepest nesting of buckets: far beyond real use (etcd nests none), it stops a damaged file whose
/// bucket points back at an ancestor from sending a walk round in circles, and bounds how deep the
/// walks recurse (nesting × tree depth).
pub(crate) const MAX_BUCKET_DEPTH: usize = 32;
/// Fewest keys a split leaves on each side of a page.
pub(crate) const MIN_KEYS_PER_PAGE: usize = 2;

/// Page flag: branch page.
pub(crate) const FLAG_BRANCH: u16 = 0x01;
/// Page flag: leaf page.
pub(crate) const FLAG_LEAF: u16 = 0x02;
/// Page flag: meta page.
pub(crate) const FLAG_META: u16 = 0x04;
/// Page flag: freelist page.
pub(crate) const FLAG_FREELIST: u16 = 0x10;

/// Leaf element flag: the value is a nested bucket header.
pub(crate) const LEAF_FLAG_BUCKET: u32 = 0x01;

/// `count` value meaning "the real count is the first u64 of the freelist".
pub(crate) const FREELIST_COUNT_OVERFLOW: u16 = 0xFFFF;

pub(crate) fn get_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

pub(crate) fn get_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

pub(crate) fn get_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

pub(crate) fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// The 16-byte header at the start of every page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageHeader {
    pub id: Pgid,
    pub flags: u16,
    pub count: u16,
    pub overflow: u32,
}

impl PageHeader {
    /// Reads a header from the first 16 bytes of `b` (which must have them).
    pub fn decode(b: &[u8]) -> Self {
        PageHeader {
            id: get_u64(b, 0),
            flags: get_u16(b, 8),
            count: get_u16(b, 10),
            overflow: get_u32(b, 12),
        }
    }

    /// Writes this header into the first 16 bytes of `b`.
    pub fn encode(&self, b: &mut [u8]) {
        put_u64(b, 0, self.id);
        put_u16(b, 8, self.flags);
        put_u16(b, 10, self.count);
        put_u32(b, 12, self.overflow);
    }
}

/// A human name for a page's flags.
pub(crate) fn page_kind(flags: u16) -> &'static str {
    match flags {
        FLAG_BRANCH => "branch",
        FLAG_LEAF => "leaf",
        FLAG_META => "meta",
        FLAG_FREELIST => "freelist",
        _ => "unknown",
    }
}

/// A bucket header: where its tree starts and its sequence counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct BucketHeader {
    /// Root page, or 0 when the bucket is inline.
    pub root: Pgid,
    pub sequence: u64,
}

impl BucketHeader {
    pub fn decode(b: &[u8]) -> Self {
        BucketHeader {
            root: get_u64(b, 0),
            sequence: get_u64(b, 8),
        }
    }

    pub fn encode(&self, b: &mut [u8]) {
        put_u64(b, 0, self.root);
        put_u64(b, 8, self.sequence);
    }
}

/// Bytes a node of `inodes` elements with `data` key+value bytes takes on a page.
pub(crate) fn node_size(elements: usize, data: usize) -> usize {
    PAGE_HEADER_SIZE + elements * ELEMENT_SIZE + data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_in_little_endian() {
        let h = PageHeader {
            id: 0x0102_0304_0506_0708,
            flags: FLAG_LEAF,
            count: 3,
            overflow: 9,
        };
        let mut b = [0u8; 16];
        h.encode(&mut b);
        assert_eq!(b, [8, 7, 6, 5, 4, 3, 2, 1, 2, 0, 3, 0, 9, 0, 0, 0]);
        assert_eq!(PageHeader::decode(&b), h);
    }
}
