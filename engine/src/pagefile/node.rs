//! A node of a write transaction: a branch or leaf page read into memory so it can change, and the
//! code that writes nodes back as page images (splitting those that outgrew a page).
//!
//! A write transaction materializes a node only to change it, so every node here is dirty and will
//! be rewritten to new pages at publish (copy-on-write). Until then the tree's shape is fixed: a node
//! keeps the page id it was read from, so children are found by page id either in memory or on file.

use super::error::Corruption;
use super::layout::{
    ELEMENT_SIZE, FLAG_BRANCH, FLAG_LEAF, MIN_KEYS_PER_PAGE, PAGE_HEADER_SIZE, PageHeader, Pgid,
    node_size, put_u32, put_u64,
};
use super::page::{LeafEntry, PageView};

/// Index of a node in its bucket's arena.
pub(crate) type NodeId = usize;

/// One element of a node: a key with its value (leaf) or child page (branch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Inode {
    /// Leaf element flags (bucket or not); 0 on branches.
    pub flags: u32,
    pub key: Vec<u8>,
    /// The value (leaf only).
    pub value: Vec<u8>,
    /// The child page (branch only).
    pub child: Pgid,
}

impl Inode {
    fn encoded_len(&self) -> usize {
        ELEMENT_SIZE + self.key.len() + self.value.len()
    }
}

/// A materialized node.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub leaf: bool,
    /// The page it was read from; 0 for a node that has no page (new, or an inline bucket's root).
    pub pgid: Pgid,
    /// Its key in the parent when it was read, to find its element there at publish.
    pub key: Vec<u8>,
    pub parent: Option<NodeId>,
    /// Children that are materialized too.
    pub children: Vec<NodeId>,
    pub inodes: Vec<Inode>,
    /// Lost keys in this transaction: may need merging at publish.
    pub unbalanced: bool,
}

impl Node {
    /// An empty leaf with no page.
    pub fn empty_leaf() -> Self {
        Node {
            leaf: true,
            pgid: 0,
            key: Vec::new(),
            parent: None,
            children: Vec::new(),
            inodes: Vec::new(),
            unbalanced: false,
        }
    }

    /// Reads a node from its page (page id 0 for an inline page).
    pub fn read(
        page: &PageView<'_>,
        pgid: Pgid,
        parent: Option<NodeId>,
    ) -> Result<Self, Corruption> {
        let leaf = page.is_leaf();
        let mut inodes = Vec::with_capacity(page.count());
        for i in 0..page.count() {
            inodes.push(if leaf {
                let e = page.leaf(i)?;
                Inode {
                    flags: e.flags,
                    key: e.key.to_vec(),
                    value: e.value.to_vec(),
                    child: 0,
                }
            } else {
                Inode {
                    flags: 0,
                    key: page.key(i)?.to_vec(),
                    value: Vec::new(),
                    child: page.child(i)?,
                }
            });
        }
        let key = inodes.first().map(|i| i.key.clone()).unwrap_or_default();
        Ok(Node {
            leaf,
            pgid,
            key,
            parent,
            children: Vec::new(),
            inodes,
            unbalanced: false,
        })
    }

    /// Bytes this node takes as a page image.
    pub fn size(&self) -> usize {
        encoded_size(&self.inodes)
    }

    /// Index of the first element with key ≥ `key`, and whether it is equal.
    pub fn search(&self, key: &[u8]) -> (usize, bool) {
        match self.inodes.binary_search_by(|i| i.key.as_slice().cmp(key)) {
            Ok(i) => (i, true),
            Err(i) => (i, false),
        }
    }

    /// Sets the element found under `old_key` (or inserts one) to `inode`.
    pub fn put(&mut self, old_key: &[u8], inode: Inode) {
        match self.search(old_key) {
            (i, true) => self.inodes[i] = inode,
            (i, false) => self.inodes.insert(i, inode),
        }
    }

    /// Removes the element with `key`, if present.
    pub fn remove(&mut self, key: &[u8]) -> Option<Inode> {
        match self.search(key) {
            (i, true) => Some(self.inodes.remove(i)),
            _ => None,
        }
    }

    /// The leaf entry at `index` in the shape readers use.
    pub fn leaf_entry(&self, index: usize) -> LeafEntry<'_> {
        let i = &self.inodes[index];
        LeafEntry {
            flags: i.flags,
            key: &i.key,
            value: &i.value,
        }
    }

    /// Fewest elements a node of this kind may keep before it is merged.
    pub fn min_keys(&self) -> usize {
        if self.leaf { 1 } else { 2 }
    }
}

/// Bytes a page image of `inodes` takes.
pub(crate) fn encoded_size(inodes: &[Inode]) -> usize {
    node_size(
        inodes.len(),
        inodes.iter().map(|i| i.key.len() + i.value.len()).sum(),
    )
}

/// Where to cut `inodes` into nodes that fit pages: ranges covering them in order. A node is cut
/// only when it does not fit one page and has more than twice the minimum of keys; each piece
/// keeps at least the minimum, and fills about `fill` of a page.
pub(crate) fn split_ranges(
    inodes: &[Inode],
    page_size: usize,
    fill: f64,
) -> Vec<std::ops::Range<usize>> {
    let threshold = (page_size as f64 * fill.clamp(0.1, 1.0)) as usize;
    let mut remaining = encoded_size(inodes);
    let mut ranges = Vec::new();
    let mut start = 0;
    loop {
        let rest = &inodes[start..];
        if rest.len() <= 2 * MIN_KEYS_PER_PAGE || remaining <= page_size {
            ranges.push(start..inodes.len());
            return ranges;
        }
        let last_cut = rest.len() - MIN_KEYS_PER_PAGE;
        let mut size = PAGE_HEADER_SIZE;
        let mut cut = last_cut;
        for (i, inode) in rest[..last_cut].iter().enumerate() {
            let len = inode.encoded_len();
            if i >= MIN_KEYS_PER_PAGE && size + len > threshold {
                cut = i;
                break;
            }
            size += len;
        }
        let taken = &rest[..cut];
        remaining -= taken.iter().map(Inode::encoded_len).sum::<usize>();
        ranges.push(start..start + cut);
        start += cut;
    }
}

/// Writes the page image of `inodes` into `buf` (which must hold [`encoded_size`] bytes): header
/// with `id` and `overflow`, elements, then keys and values.
pub(crate) fn encode(inodes: &[Inode], leaf: bool, id: Pgid, overflow: u32, buf: &mut [u8]) {
    let flags = if leaf { FLAG_LEAF } else { FLAG_BRANCH };
    PageHeader {
        id,
        flags,
        count: inodes.len() as u16,
        overflow,
    }
    .encode(buf);
    let mut data = PAGE_HEADER_SIZE + inodes.len() * ELEMENT_SIZE;
    for (i, inode) in inodes.iter().enumerate() {
        let elem = PAGE_HEADER_SIZE + i * ELEMENT_SIZE;
        let pos = (data - elem) as u32;
        if leaf {
            put_u32(buf, elem, inode.flags);
            put_u32(buf, elem + 4, pos);
            put_u32(buf, elem + 8, inode.key.len() as u32);
            put_u32(buf, elem + 12, inode.value.len() as u32);
        } else {
            put_u32(buf, elem, pos);
            put_u32(buf, elem + 4, inode.key.len() as u32);
            put_u64(buf, elem + 8, inode.child);
        }
        buf[data..data + inode.key.len()].copy_from_slice(&inode.key);
        data += inode.key.len();
        buf[data..data + inode.value.len()].copy_from_slice(&inode.value);
        data += inode.value.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf_inode(k: &[u8], vlen: usize) -> Inode {
        Inode {
            flags: 0,
            key: k.to_vec(),
            value: vec![7; vlen],
            child: 0,
        }
    }

    #[test]
    fn encode_then_read_gives_the_same_inodes() {
        let inodes: Vec<Inode> = (0..20u8)
            .map(|i| leaf_inode(&[b'k', i], i as usize * 3))
            .collect();
        let mut buf = vec![0u8; 4096];
        encode(&inodes, true, 9, 0, &mut buf);
        let mut map = vec![0u8; 9 * 4096];
        map.extend_from_slice(&buf);
        let view = PageView::on_file(&map, 4096, 10, 9).unwrap();
        let node = Node::read(&view, 9, None).unwrap();
        assert_eq!(node.inodes, inodes);
        assert_eq!(node.key, b"k\0");
    }

    #[test]
    fn small_nodes_stay_whole_and_large_ones_split_at_the_fill_threshold() {
        let few: Vec<Inode> = (0..4u8).map(|i| leaf_inode(&[i + 1], 3000)).collect();
        assert_eq!(
            split_ranges(&few, 4096, 0.5),
            vec![0..4],
            "4 keys never split, whatever their size"
        );
        let many: Vec<Inode> = (0..100u8).map(|i| leaf_inode(&[i + 1], 100)).collect();
        let ranges = split_ranges(&many, 4096, 0.5);
        assert!(ranges.len() > 1);
        for r in &ranges {
            assert!(r.len() >= MIN_KEYS_PER_PAGE);
            assert!(encoded_size(&many[r.clone()]) <= 4096);
        }
        assert_eq!(ranges.iter().map(|r| r.len()).sum::<usize>(), 100);
        let dense = split_ranges(&many, 4096, 1.0);
        assert!(
            dense.len() < ranges.len(),
            "a higher fill percent packs pages fuller"
        );
    }
}
