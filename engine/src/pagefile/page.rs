//! Read-only views of pages as they sit in the memory map (or inline in a bucket value), with every
//! offset checked: a damaged page yields a [`Corruption`] naming the page and byte offset, never a
//! panic or a read outside the page.

use super::error::{Corruption, PageProblem};
use super::layout::{
    ELEMENT_SIZE, FLAG_BRANCH, FLAG_FREELIST, FLAG_LEAF, FREELIST_COUNT_OVERFLOW, PAGE_HEADER_SIZE,
    PageHeader, Pgid, get_u32, get_u64, page_kind,
};

/// Where a page's bytes came from, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    File { pgid: Pgid, offset: u64 },
    Inline,
}

/// One entry of a leaf page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeafEntry<'a> {
    pub flags: u32,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// A checked view of one page (with its overflow pages).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PageView<'a> {
    bytes: &'a [u8],
    header: PageHeader,
    origin: Origin,
}

impl<'a> PageView<'a> {
    /// The page `pgid` of a file whose first `hwm` pages are `map` (so `map.len() == hwm ×
    /// page_size`, or shorter if the file is). Checks range, self-id and overflow.
    pub fn on_file(
        map: &'a [u8],
        page_size: usize,
        hwm: Pgid,
        pgid: Pgid,
    ) -> Result<Self, Corruption> {
        let offset = pgid.saturating_mul(page_size as u64);
        let origin = Origin::File { pgid, offset };
        let out_of_range = || Corruption::Page {
            pgid,
            offset,
            problem: PageProblem::OutOfRange { hwm },
        };
        if pgid >= hwm || offset.saturating_add(page_size as u64) > map.len() as u64 {
            return Err(out_of_range());
        }
        let start = offset as usize;
        let header = PageHeader::decode(&map[start..start + PAGE_HEADER_SIZE]);
        if header.id != pgid {
            return Err(Corruption::Page {
                pgid,
                offset,
                problem: PageProblem::IdMismatch { found: header.id },
            });
        }
        let span = (u64::from(header.overflow) + 1) * page_size as u64;
        if pgid + u64::from(header.overflow) >= hwm || offset + span > map.len() as u64 {
            return Err(out_of_range());
        }
        let view = PageView {
            bytes: &map[start..start + span as usize],
            header,
            origin,
        };
        view.check_elements_fit()?;
        Ok(view)
    }

    /// The page image stored inline after a bucket header (`bytes` is the value minus the header).
    pub fn inline(bytes: &'a [u8]) -> Result<Self, Corruption> {
        if bytes.len() < PAGE_HEADER_SIZE {
            return Err(Corruption::InlinePage {
                problem: PageProblem::ElementOutOfBounds { index: 0 },
            });
        }
        let view = PageView {
            bytes,
            header: PageHeader::decode(bytes),
            origin: Origin::Inline,
        };
        if view.header.flags != FLAG_LEAF {
            return Err(view.problem(PageProblem::WrongType {
                expected: "leaf",
                found: page_kind(view.header.flags),
                flags: view.header.flags,
            }));
        }
        view.check_elements_fit()?;
        Ok(view)
    }

    fn check_elements_fit(&self) -> Result<(), Corruption> {
        if matches!(self.header.flags, FLAG_BRANCH | FLAG_LEAF) {
            let count = usize::from(self.header.count);
            if PAGE_HEADER_SIZE + count * ELEMENT_SIZE > self.bytes.len() {
                return Err(self.problem(PageProblem::TooManyElements {
                    count,
                    len: self.bytes.len(),
                }));
            }
        }
        Ok(())
    }

    /// Turns a problem with this page into a corruption report that says where.
    pub fn problem(&self, problem: PageProblem) -> Corruption {
        match self.origin {
            Origin::File { pgid, offset } => Corruption::Page {
                pgid,
                offset,
                problem,
            },
            Origin::Inline => Corruption::InlinePage { problem },
        }
    }

    /// The page header.
    pub fn header(&self) -> PageHeader {
        self.header
    }

    /// Bytes the page spans (overflow pages included; an inline page's image length).
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_leaf(&self) -> bool {
        self.header.flags == FLAG_LEAF
    }

    pub fn count(&self) -> usize {
        usize::from(self.header.count)
    }

    /// Fails unless this is a branch or leaf page (what a tree may point at).
    pub fn expect_node(self) -> Result<Self, Corruption> {
        match self.header.flags {
            FLAG_BRANCH | FLAG_LEAF => Ok(self),
            flags => Err(self.problem(PageProblem::WrongType {
                expected: "branch or leaf",
                found: page_kind(flags),
                flags,
            })),
        }
    }

    /// Fails unless this is a freelist page.
    pub fn expect_freelist(self) -> Result<Self, Corruption> {
        match self.header.flags {
            FLAG_FREELIST => Ok(self),
            flags => Err(self.problem(PageProblem::WrongType {
                expected: "freelist",
                found: page_kind(flags),
                flags,
            })),
        }
    }

    fn slice(&self, index: usize, start: usize, len: usize) -> Result<&'a [u8], Corruption> {
        let end = start.checked_add(len).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => Ok(&self.bytes[start..end]),
            None => Err(self.problem(PageProblem::ElementOutOfBounds { index })),
        }
    }

    fn element_offset(&self, index: usize) -> Result<usize, Corruption> {
        if index >= self.count() {
            return Err(self.problem(PageProblem::ElementOutOfBounds { index }));
        }
        Ok(PAGE_HEADER_SIZE + index * ELEMENT_SIZE)
    }

    /// The key of element `index` (branch or leaf).
    pub fn key(&self, index: usize) -> Result<&'a [u8], Corruption> {
        let e = self.element_offset(index)?;
        let (pos, ksize) = if self.is_leaf() {
            (get_u32(self.bytes, e + 4), get_u32(self.bytes, e + 8))
        } else {
            (get_u32(self.bytes, e), get_u32(self.bytes, e + 4))
        };
        if ksize == 0 {
            return Err(self.problem(PageProblem::EmptyKey { index }));
        }
        self.slice(index, e + pos as usize, ksize as usize)
    }

    /// Element `index` of a leaf page.
    pub fn leaf(&self, index: usize) -> Result<LeafEntry<'a>, Corruption> {
        let e = self.element_offset(index)?;
        let flags = get_u32(self.bytes, e);
        let pos = get_u32(self.bytes, e + 4) as usize;
        let ksize = get_u32(self.bytes, e + 8) as usize;
        let vsize = get_u32(self.bytes, e + 12) as usize;
        if ksize == 0 {
            return Err(self.problem(PageProblem::EmptyKey { index }));
        }
        let both = self.slice(index, e + pos, ksize + vsize)?;
        let (key, value) = both.split_at(ksize);
        Ok(LeafEntry { flags, key, value })
    }

    /// The child page of element `index` of a branch page.
    pub fn child(&self, index: usize) -> Result<Pgid, Corruption> {
        let e = self.element_offset(index)?;
        Ok(get_u64(self.bytes, e + 8))
    }

    /// Index of the first key ≥ `key`, and whether it is equal.
    pub fn search(&self, key: &[u8]) -> Result<(usize, bool), Corruption> {
        let (mut lo, mut hi) = (0, self.count());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.key(mid)?.cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Equal => return Ok((mid, true)),
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        Ok((lo, false))
    }

    /// The page ids listed on a freelist page.
    pub fn freelist_ids(&self) -> Result<Vec<Pgid>, Corruption> {
        let (start, count) = if self.header.count == FREELIST_COUNT_OVERFLOW {
            let first = self.slice(0, PAGE_HEADER_SIZE, 8)?;
            (PAGE_HEADER_SIZE + 8, get_u64(first, 0))
        } else {
            (PAGE_HEADER_SIZE, u64::from(self.header.count))
        };
        let room = (self.bytes.len() - start) as u64 / 8;
        if count > room {
            let pgid = match self.origin {
                Origin::File { pgid, .. } => pgid,
                Origin::Inline => 0,
            };
            return Err(Corruption::Freelist {
                pgid,
                detail: format!("{count} ids do not fit in {room} slots"),
            });
        }
        Ok((0..count as usize)
            .map(|i| get_u64(self.bytes, start + i * 8))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pagefile::layout::put_u32;

    fn page_with(flags: u16, count: u16, id: Pgid) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        PageHeader {
            id,
            flags,
            count,
            overflow: 0,
        }
        .encode(&mut b);
        b
    }

    #[test]
    fn out_of_range_and_bad_ids_are_reported_with_offsets() {
        let map = page_with(FLAG_LEAF, 0, 0);
        let err = PageView::on_file(&map, 4096, 1, 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "page 1 (offset 4096): out of range (high-water mark 1)"
        );
        let map = page_with(FLAG_LEAF, 0, 5);
        let err = PageView::on_file(&map, 4096, 1, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "page 0 (offset 0): header says it is page 5"
        );
    }

    #[test]
    fn elements_pointing_outside_the_page_are_errors() {
        let mut map = page_with(FLAG_LEAF, 1, 0);
        put_u32(&mut map, 16 + 4, 4090); // pos
        put_u32(&mut map, 16 + 8, 10); // ksize
        let view = PageView::on_file(&map, 4096, 1, 0).unwrap();
        assert!(matches!(
            view.leaf(0),
            Err(Corruption::Page {
                problem: PageProblem::ElementOutOfBounds { index: 0 },
                ..
            })
        ));
        let mut map = page_with(FLAG_LEAF, 300, 0);
        map[0] = 0;
        assert!(PageView::on_file(&map, 4096, 1, 0).is_err());
    }
}
