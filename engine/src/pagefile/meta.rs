//! The meta page: the root of everything. Encodes and validates one meta, and picks the newest valid
//! of the two on open (falling back to the other when one is torn or damaged).
//!
//! Invariant kept by the writer: the two slots never both hold a meta that is needed; a sync writes
//! the slot that does *not* hold the durable meta (see `engine/docs/format.md`, "Slot rule").

use super::error::MetaProblem;
use super::layout::{
    BucketHeader, FLAG_META, MAGIC, MAX_PAGE_SIZE, META_CHECKSUMMED, META_SIZE, MIN_PAGE_SIZE,
    NO_FREELIST, PAGE_HEADER_SIZE, PageHeader, Pgid, VERSION, get_u32, get_u64, put_u32, put_u64,
};

/// The content of a meta page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub page_size: u32,
    /// Header of the root bucket.
    pub root: BucketHeader,
    /// Freelist page, or [`NO_FREELIST`].
    pub freelist: Pgid,
    /// High-water mark: first page never allocated.
    pub hwm: Pgid,
    pub txid: u64,
}

/// FNV-1a, 64-bit: bbolt's meta checksum.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Meta {
    /// The full meta page for `slot` (0 or 1), `page_size` bytes.
    pub fn encode_page(&self, slot: Pgid) -> Vec<u8> {
        let mut page = vec![0u8; self.page_size as usize];
        PageHeader {
            id: slot,
            flags: FLAG_META,
            count: 0,
            overflow: 0,
        }
        .encode(&mut page);
        let m = &mut page[PAGE_HEADER_SIZE..PAGE_HEADER_SIZE + META_SIZE];
        put_u32(m, 0, MAGIC);
        put_u32(m, 4, VERSION);
        put_u32(m, 8, self.page_size);
        put_u32(m, 12, 0);
        self.root.encode(&mut m[16..32]);
        put_u64(m, 32, self.freelist);
        put_u64(m, 40, self.hwm);
        put_u64(m, 48, self.txid);
        let sum = fnv1a64(&m[..META_CHECKSUMMED]);
        put_u64(m, META_CHECKSUMMED, sum);
        page
    }

    /// Reads and validates the meta in `page` (at least header + meta bytes), which is meta page
    /// `slot` of a file of `file_len` bytes.
    pub fn decode(page: &[u8], slot: u64, file_len: u64) -> Result<Meta, MetaProblem> {
        if page.len() < PAGE_HEADER_SIZE + META_SIZE {
            return Err(MetaProblem::Missing);
        }
        let header = PageHeader::decode(page);
        let m = &page[PAGE_HEADER_SIZE..PAGE_HEADER_SIZE + META_SIZE];
        let magic = get_u32(m, 0);
        if magic != MAGIC {
            return Err(MetaProblem::BadMagic(magic));
        }
        let version = get_u32(m, 4);
        if version != VERSION {
            return Err(MetaProblem::BadVersion(version));
        }
        let stored = get_u64(m, META_CHECKSUMMED);
        let computed = fnv1a64(&m[..META_CHECKSUMMED]);
        if stored != computed {
            return Err(MetaProblem::Checksum { stored, computed });
        }
        if header.flags != FLAG_META {
            return Err(MetaProblem::NotMeta(header.flags));
        }
        if header.id != slot {
            return Err(MetaProblem::WrongPage(header.id));
        }
        let page_size = get_u32(m, 8);
        if !page_size.is_power_of_two() || !(MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&page_size) {
            return Err(MetaProblem::BadPageSize(page_size));
        }
        let meta = Meta {
            page_size,
            root: BucketHeader::decode(&m[16..32]),
            freelist: get_u64(m, 32),
            hwm: get_u64(m, 40),
            txid: get_u64(m, 48),
        };
        for (what, pgid) in [("root", meta.root.root), ("freelist", meta.freelist)] {
            if pgid < 2 {
                return Err(MetaProblem::PointsAtMeta { what, pgid });
            }
        }
        if meta.root.root >= meta.hwm {
            return Err(MetaProblem::OutOfRange {
                what: "root",
                pgid: meta.root.root,
                hwm: meta.hwm,
            });
        }
        if meta.freelist != NO_FREELIST && meta.freelist >= meta.hwm {
            return Err(MetaProblem::OutOfRange {
                what: "freelist",
                pgid: meta.freelist,
                hwm: meta.hwm,
            });
        }
        let needed = meta.hwm.saturating_mul(u64::from(page_size));
        if needed > file_len {
            return Err(MetaProblem::Truncated {
                len: file_len,
                needed,
            });
        }
        Ok(meta)
    }
}

/// Finds the page size of a file from its first bytes: meta 0's if valid, else the size at which
/// meta 1 is valid. `head` holds the start of the file (at least 64 KiB + a page, or all of it).
pub(crate) fn probe_page_size(
    head: &[u8],
    file_len: u64,
) -> Result<u32, (MetaProblem, MetaProblem)> {
    let meta0 = Meta::decode(head, 0, file_len);
    if let Ok(m) = meta0 {
        return Ok(m.page_size);
    }
    let mut size = MIN_PAGE_SIZE;
    let mut default_problem = MetaProblem::Missing;
    while size <= MAX_PAGE_SIZE {
        let at = size as usize;
        let found = if head.len() > at {
            Meta::decode(&head[at..], 1, file_len)
        } else {
            Err(MetaProblem::Missing)
        };
        match found {
            Ok(m) if m.page_size == size => return Ok(size),
            Ok(m) => {
                if size == 4096 {
                    default_problem = MetaProblem::BadPageSize(m.page_size);
                }
            }
            Err(e) => {
                if size == 4096 {
                    default_problem = e;
                }
            }
        }
        size *= 2;
    }
    Err((meta0.err().unwrap_or(MetaProblem::Missing), default_problem))
}

/// Meta `slot` of a file whose pages are `page_size` bytes: invalid if it says otherwise.
pub(crate) fn decode_slot(
    head: &[u8],
    slot: u64,
    page_size: usize,
    file_len: u64,
) -> Result<Meta, MetaProblem> {
    let at = slot as usize * page_size;
    let page = head.get(at..).ok_or(MetaProblem::Missing)?;
    match Meta::decode(page, slot, file_len)? {
        m if m.page_size as usize != page_size => Err(MetaProblem::BadPageSize(m.page_size)),
        m => Ok(m),
    }
}

/// Picks the meta to open with: the valid one with the higher txid.
pub(crate) fn choose(
    meta0: Result<Meta, MetaProblem>,
    meta1: Result<Meta, MetaProblem>,
) -> Result<Meta, (MetaProblem, MetaProblem)> {
    match (meta0, meta1) {
        (Ok(a), Ok(b)) => Ok(if b.txid > a.txid { b } else { a }),
        (Ok(a), Err(_)) => Ok(a),
        (Err(_), Ok(b)) => Ok(b),
        (Err(a), Err(b)) => Err((a, b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Meta {
        Meta {
            page_size: 4096,
            root: BucketHeader {
                root: 3,
                sequence: 0,
            },
            freelist: 2,
            hwm: 4,
            txid: 7,
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let page = sample().encode_page(1);
        assert_eq!(Meta::decode(&page, 1, 4 * 4096), Ok(sample()));
    }

    #[test]
    fn fnv_matches_known_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn every_flipped_byte_of_the_meta_is_caught() {
        let page = sample().encode_page(0);
        for i in PAGE_HEADER_SIZE..PAGE_HEADER_SIZE + META_SIZE {
            let mut bad = page.clone();
            bad[i] ^= 0x40;
            assert!(
                Meta::decode(&bad, 0, 4 * 4096).is_err(),
                "flip at {i} not caught"
            );
        }
    }

    #[test]
    fn truncated_files_and_wild_pointers_are_rejected() {
        let page = sample().encode_page(0);
        assert_eq!(
            Meta::decode(&page, 0, 4096),
            Err(MetaProblem::Truncated {
                len: 4096,
                needed: 4 * 4096
            })
        );
        let wild = Meta {
            root: BucketHeader {
                root: 9,
                sequence: 0,
            },
            ..sample()
        }
        .encode_page(0);
        assert!(matches!(
            Meta::decode(&wild, 0, 1 << 20),
            Err(MetaProblem::OutOfRange { what: "root", .. })
        ));
    }

    #[test]
    fn choose_prefers_newer_valid_meta() {
        let old = sample();
        let new = Meta {
            txid: 8,
            ..sample()
        };
        assert_eq!(choose(Ok(old), Ok(new)), Ok(new));
        assert_eq!(choose(Ok(old), Err(MetaProblem::Missing)), Ok(old));
        assert!(choose(Err(MetaProblem::Missing), Err(MetaProblem::BadMagic(0))).is_err());
    }

    #[test]
    fn page_size_is_probed_from_meta_one_when_meta_zero_is_bad() {
        let m = Meta {
            page_size: 8192,
            ..sample()
        };
        let mut head = vec![0u8; 4 * 8192];
        head[8192..16384].copy_from_slice(&m.encode_page(1));
        assert_eq!(probe_page_size(&head, 4 * 8192), Ok(8192));
    }
}
