//! A node of a write transaction: a branch or leaf page read into memory so it can change, and the
//! code that writes nodes back as page images (splitting those that outgrew a page).
//!
//! A write transaction materializes a node only to change it, so every node here is dirty and will
//! be rewritten to new pages at publish (copy-on-write). Until then the tree's shape is fixed: a node
//! keeps the page id it was read from, so children are found by page id either in memory or on file.
//!
//! A node keeps all its keys and values in one byte buffer, each element's key followed by its
//! value, and a small fixed-size record per element saying where they are: reading a page costs two
//! allocations however many keys it holds. Replaced and removed bytes stay in the buffer until they
//! outweigh the live ones, then the buffer is compacted.

use std::ops::Range;

use super::error::Corruption;
use super::layout::{
    ELEMENT_SIZE, FLAG_BRANCH, FLAG_LEAF, MIN_KEYS_PER_PAGE, PAGE_HEADER_SIZE, PageHeader, Pgid,
    node_size, put_u32, put_u64,
};
use super::page::{LeafEntry, PageView};

/// Index of a node in its bucket's arena.
pub(crate) type NodeId = usize;

/// Where one element's key and value lie in its node's buffer, with its flags (leaf) or child
/// page (branch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Element {
    at: usize,
    key_len: u32,
    value_len: u32,
    flags: u32,
    child: Pgid,
}

impl Element {
    fn data_len(&self) -> usize {
        self.key_len as usize + self.value_len as usize
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
    /// Lost keys in this transaction: may need merging at publish.
    pub unbalanced: bool,
    elements: Vec<Element>,
    bytes: Vec<u8>,
    /// Key and value bytes of the elements (the rest of `bytes` is garbage).
    live: usize,
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
            unbalanced: false,
            elements: Vec::new(),
            bytes: Vec::new(),
            live: 0,
        }
    }

    /// A new root branch over `children` (first key, page), in order.
    pub fn branch(children: Vec<(Vec<u8>, Pgid)>) -> Self {
        let mut node = Node {
            leaf: false,
            ..Node::empty_leaf()
        };
        for (key, child) in children {
            node.push(&key, &[], 0, child);
        }
        node
    }

    /// Reads a node from its page (page id 0 for an inline page).
    pub fn read(
        page: &PageView<'_>,
        pgid: Pgid,
        parent: Option<NodeId>,
    ) -> Result<Self, Corruption> {
        let mut node = Node {
            leaf: page.is_leaf(),
            pgid,
            parent,
            ..Node::empty_leaf()
        };
        node.elements.reserve_exact(page.count());
        node.bytes
            .reserve_exact(page.size().saturating_sub(PAGE_HEADER_SIZE));
        for i in 0..page.count() {
            if node.leaf {
                let e = page.leaf(i)?;
                node.push(e.key, e.value, e.flags, 0);
            } else {
                node.push(page.key(i)?, &[], 0, page.child(i)?);
            }
        }
        node.key = if node.is_empty() {
            Vec::new()
        } else {
            node.key(0).to_vec()
        };
        Ok(node)
    }

    fn push(&mut self, key: &[u8], value: &[u8], flags: u32, child: Pgid) {
        let element = self.store(key, value, flags, child);
        self.elements.push(element);
    }

    /// Appends `key` and `value` to the buffer and describes them.
    fn store(&mut self, key: &[u8], value: &[u8], flags: u32, child: Pgid) -> Element {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(key);
        self.bytes.extend_from_slice(value);
        self.live += key.len() + value.len();
        Element {
            at,
            key_len: key.len() as u32,
            value_len: value.len() as u32,
            flags,
            child,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.elements.len()
    }

    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// The key of element `index`.
    pub fn key(&self, index: usize) -> &[u8] {
        let e = &self.elements[index];
        &self.bytes[e.at..e.at + e.key_len as usize]
    }

    /// The child page of element `index` (branch).
    pub fn child(&self, index: usize) -> Pgid {
        self.elements[index].child
    }

    /// Element `index` of a leaf in the shape readers use.
    pub fn leaf_entry(&self, index: usize) -> LeafEntry<'_> {
        let e = &self.elements[index];
        let key_end = e.at + e.key_len as usize;
        LeafEntry {
            flags: e.flags,
            key: &self.bytes[e.at..key_end],
            value: &self.bytes[key_end..e.at + e.data_len()],
        }
    }

    /// Whether any element is flagged with `flag`.
    pub fn any_flagged(&self, flag: u32) -> bool {
        self.elements.iter().any(|e| e.flags & flag != 0)
    }

    /// Bytes this node takes as a page image.
    pub fn size(&self) -> usize {
        node_size(self.elements.len(), self.live)
    }

    /// Index of the first element with key ≥ `key`, and whether it is equal.
    pub fn search(&self, key: &[u8]) -> (usize, bool) {
        let key_of = |e: &Element| &self.bytes[e.at..e.at + e.key_len as usize];
        // Keys that arrive in order (etcd's revisions, in the `key` bucket) go past the last
        // element: one comparison instead of a binary search's.
        if self.elements.last().is_some_and(|last| key_of(last) < key) {
            return (self.elements.len(), false);
        }
        match self.elements.binary_search_by(|e| key_of(e).cmp(key)) {
            Ok(i) => (i, true),
            Err(i) => (i, false),
        }
    }

    /// Sets the element found under `old_key` (or inserts one) to `key`, `value`, `flags`,
    /// `child`.
    pub fn put(&mut self, old_key: &[u8], key: &[u8], value: &[u8], flags: u32, child: Pgid) {
        let (index, found) = self.search(old_key);
        let element = self.store(key, value, flags, child);
        if found {
            self.live -= self.elements[index].data_len();
            self.elements[index] = element;
            self.compact_if_wasteful();
        } else {
            self.elements.insert(index, element);
        }
    }

    /// Removes the element with `key`; returns whether it was there.
    pub fn remove(&mut self, key: &[u8]) -> bool {
        let (index, found) = self.search(key);
        if found {
            self.live -= self.elements.remove(index).data_len();
            self.compact_if_wasteful();
        }
        found
    }

    fn compact_if_wasteful(&mut self) {
        if self.bytes.len() - self.live <= self.live.max(4096) {
            return;
        }
        let mut bytes = Vec::with_capacity(self.live);
        for e in &mut self.elements {
            let at = bytes.len();
            bytes.extend_from_slice(&self.bytes[e.at..e.at + e.data_len()]);
            e.at = at;
        }
        self.bytes = bytes;
    }

    /// Moves every element out (this node is left empty but keeps its page, parent and key).
    pub fn take_elements(&mut self) -> Node {
        Node {
            leaf: self.leaf,
            elements: std::mem::take(&mut self.elements),
            bytes: std::mem::take(&mut self.bytes),
            live: std::mem::take(&mut self.live),
            ..Node::empty_leaf()
        }
    }

    /// Replaces this node's elements (and kind) with those of `other`.
    pub fn replace_elements(&mut self, other: Node) {
        self.leaf = other.leaf;
        self.elements = other.elements;
        self.bytes = other.bytes;
        self.live = other.live;
    }

    /// Adds the elements of `other`, whose keys are all larger, after this node's own.
    pub fn append(&mut self, other: &Node) {
        for e in &other.elements {
            let key_end = e.at + e.key_len as usize;
            let (key, value) = (
                &other.bytes[e.at..key_end],
                &other.bytes[key_end..e.at + e.data_len()],
            );
            self.push(key, value, e.flags, e.child);
        }
    }

    /// Fewest elements a node of this kind may keep before it is merged.
    pub fn min_keys(&self) -> usize {
        if self.leaf { 1 } else { 2 }
    }

    /// Bytes a page image of elements `range` takes.
    pub fn encoded_size(&self, range: Range<usize>) -> usize {
        let elements = &self.elements[range];
        node_size(elements.len(), elements.iter().map(Element::data_len).sum())
    }

    /// Where to cut this node into nodes that fit pages: ranges covering its elements in order. A
    /// node is cut only when it does not fit one page and has more than twice the minimum of keys;
    /// each piece keeps at least the minimum, and fills about `fill` of a page.
    pub fn split_ranges(&self, page_size: usize, fill: f64) -> Vec<Range<usize>> {
        let threshold = (page_size as f64 * fill.clamp(0.1, 1.0)) as usize;
        let encoded = |e: &Element| ELEMENT_SIZE + e.data_len();
        let mut remaining = self.size();
        let mut ranges = Vec::new();
        let mut start = 0;
        loop {
            let rest = &self.elements[start..];
            if rest.len() <= 2 * MIN_KEYS_PER_PAGE || remaining <= page_size {
                ranges.push(start..self.elements.len());
                return ranges;
            }
            let last_cut = rest.len() - MIN_KEYS_PER_PAGE;
            let mut size = PAGE_HEADER_SIZE;
            let mut cut = last_cut;
            for (i, e) in rest[..last_cut].iter().enumerate() {
                if i >= MIN_KEYS_PER_PAGE && size + encoded(e) > threshold {
                    cut = i;
                    break;
                }
                size += encoded(e);
            }
            remaining -= rest[..cut].iter().map(encoded).sum::<usize>();
            ranges.push(start..start + cut);
            start += cut;
        }
    }

    /// Writes the page image of elements `range` into `buf` (which must hold
    /// [`Node::encoded_size`] bytes): header with `id` and `overflow`, elements, then keys and
    /// values.
    pub fn encode(&self, range: Range<usize>, id: Pgid, overflow: u32, buf: &mut [u8]) {
        let elements = &self.elements[range];
        let flags = if self.leaf { FLAG_LEAF } else { FLAG_BRANCH };
        PageHeader {
            id,
            flags,
            count: elements.len() as u16,
            overflow,
        }
        .encode(buf);
        let mut data = PAGE_HEADER_SIZE + elements.len() * ELEMENT_SIZE;
        for (i, e) in elements.iter().enumerate() {
            let elem = PAGE_HEADER_SIZE + i * ELEMENT_SIZE;
            let pos = (data - elem) as u32;
            if self.leaf {
                put_u32(buf, elem, e.flags);
                put_u32(buf, elem + 4, pos);
                put_u32(buf, elem + 8, e.key_len);
                put_u32(buf, elem + 12, e.value_len);
            } else {
                put_u32(buf, elem, pos);
                put_u32(buf, elem + 4, e.key_len);
                put_u64(buf, elem + 8, e.child);
            }
            buf[data..data + e.data_len()].copy_from_slice(&self.bytes[e.at..e.at + e.data_len()]);
            data += e.data_len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf_of(entries: &[(Vec<u8>, usize)]) -> Node {
        let mut node = Node::empty_leaf();
        for (k, vlen) in entries {
            node.put(k, k, &vec![7; *vlen], 0, 0);
        }
        node
    }

    #[test]
    fn encode_then_read_gives_the_same_elements() {
        let entries: Vec<(Vec<u8>, usize)> =
            (0..20u8).map(|i| (vec![b'k', i], i as usize * 3)).collect();
        let node = leaf_of(&entries);
        let mut buf = vec![0u8; 4096];
        node.encode(0..node.len(), 9, 0, &mut buf);
        let mut map = vec![0u8; 9 * 4096];
        map.extend_from_slice(&buf);
        let view = PageView::on_file(&map, 4096, 10, 9).unwrap();
        let read = Node::read(&view, 9, None).unwrap();
        assert_eq!(read.len(), 20);
        for i in 0..20 {
            assert_eq!(read.leaf_entry(i), node.leaf_entry(i));
        }
        assert_eq!(read.key, b"k\0");
        assert_eq!(read.size(), node.size());
    }

    #[test]
    fn replacing_and_removing_keeps_sizes_and_compacts_garbage() {
        let mut node = leaf_of(&[(b"a".to_vec(), 10), (b"b".to_vec(), 10)]);
        for round in 0..1000u32 {
            node.put(b"a", b"a", &round.to_le_bytes(), 0, 0);
        }
        assert_eq!(node.size(), node_size(2, 1 + 4 + 1 + 10));
        assert!(
            node.bytes.len() < 8192,
            "garbage is compacted: {}",
            node.bytes.len()
        );
        assert_eq!(node.leaf_entry(0).value, 999u32.to_le_bytes());
        assert!(node.remove(b"a"));
        assert!(!node.remove(b"a"));
        assert_eq!((node.len(), node.key(0)), (1, &b"b"[..]));
    }

    #[test]
    fn small_nodes_stay_whole_and_large_ones_split_at_the_fill_threshold() {
        let few = leaf_of(&(0..4u8).map(|i| (vec![i + 1], 3000)).collect::<Vec<_>>());
        assert_eq!(
            few.split_ranges(4096, 0.5),
            vec![0..4],
            "4 keys never split, whatever their size"
        );
        let many = leaf_of(&(0..100u8).map(|i| (vec![i + 1], 100)).collect::<Vec<_>>());
        let ranges = many.split_ranges(4096, 0.5);
        assert!(ranges.len() > 1);
        for r in &ranges {
            assert!(r.len() >= MIN_KEYS_PER_PAGE);
            assert!(many.encoded_size(r.clone()) <= 4096);
        }
        assert_eq!(ranges.iter().map(|r| r.len()).sum::<usize>(), 100);
        assert!(
            many.split_ranges(4096, 1.0).len() < ranges.len(),
            "a higher fill percent packs pages fuller"
        );
    }
}
