//! Errors of the page file: I/O failures (with the file and operation), corruption (with the page
//! and byte offset, or the meta problem), misuse of the API (bbolt's bucket errors), and the
//! fail-stop state after a failed write or fsync.

use std::io;
use std::path::PathBuf;

use super::layout::Pgid;

/// Why a meta page was not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaProblem {
    /// The file ends before this meta page.
    #[error("file too short to hold it")]
    Missing,
    /// The page is not flagged as a meta page.
    #[error("not a meta page (flags {0:#06x})")]
    NotMeta(u16),
    /// The magic number is not bbolt's.
    #[error("bad magic {0:#010x}, not a bbolt file")]
    BadMagic(u32),
    /// The format version is not 2.
    #[error("unsupported version {0}")]
    BadVersion(u32),
    /// The checksum does not match the content (a torn or damaged write).
    #[error("checksum mismatch (stored {stored:#018x}, computed {computed:#018x})")]
    Checksum {
        /// What the page says.
        stored: u64,
        /// What its bytes hash to.
        computed: u64,
    },
    /// The page is not the meta page it is read as (its header names another page).
    #[error("header says it is page {0}")]
    WrongPage(u64),
    /// The root or freelist pointer names a meta page.
    #[error("{what} page {pgid} is a meta page")]
    PointsAtMeta {
        /// Which pointer ("root" or "freelist").
        what: &'static str,
        /// Where it points.
        pgid: Pgid,
    },
    /// The page size is not a power of two between 1 KiB and 64 KiB.
    #[error("invalid page size {0}")]
    BadPageSize(u32),
    /// The root or freelist page is at or above the high-water mark.
    #[error("{what} page {pgid} is at or above the high-water mark {hwm}")]
    OutOfRange {
        /// Which pointer ("root" or "freelist").
        what: &'static str,
        /// Where it points.
        pgid: Pgid,
        /// The meta's high-water mark.
        hwm: Pgid,
    },
    /// The file is shorter than the meta's high-water mark says.
    #[error("file is {len} bytes but the meta needs {needed} (truncated?)")]
    Truncated {
        /// File length.
        len: u64,
        /// `pgid × page_size`.
        needed: u64,
    },
}

/// What is wrong with a page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageProblem {
    /// The page number is at or above the high-water mark (or beyond the file).
    #[error("out of range (high-water mark {hwm})")]
    OutOfRange {
        /// The high-water mark of the transaction reading it.
        hwm: Pgid,
    },
    /// The page header does not carry the page's own number.
    #[error("header says it is page {found}")]
    IdMismatch {
        /// The id in the header.
        found: Pgid,
    },
    /// The page is not of the type the tree expects here.
    #[error("expected a {expected} page, found {found} (flags {flags:#06x})")]
    WrongType {
        /// What the reader wanted.
        expected: &'static str,
        /// What it found.
        found: &'static str,
        /// The raw flags.
        flags: u16,
    },
    /// An element or its key/value lies outside the page.
    #[error("element {index} lies outside the page")]
    ElementOutOfBounds {
        /// Element index.
        index: usize,
    },
    /// The element array does not fit in the page.
    #[error("{count} elements do not fit in {len} bytes")]
    TooManyElements {
        /// The header's count.
        count: usize,
        /// Bytes available.
        len: usize,
    },
    /// A key is empty.
    #[error("element {index} has an empty key")]
    EmptyKey {
        /// Element index.
        index: usize,
    },
    /// A key does not lie beyond the one before it in a walk of the tree (a subtree reached twice,
    /// or misplaced).
    #[error("key of element {index} is out of order in the tree (subtree repeated or misplaced)")]
    KeyOrder {
        /// Element index.
        index: usize,
    },
    /// A walk reached this page a second time (a cycle, or a page shared by two parents).
    #[error("reached twice in one walk (cycle or shared page)")]
    ReachedTwice,
    /// A branch page has no elements.
    #[error("branch page with no children")]
    EmptyBranch,
    /// The tree is deeper than any valid file could be (a cycle).
    #[error("tree deeper than {0} levels (cycle?)")]
    TooDeep(usize),
}

/// Corruption found while reading the file. Always names where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// Neither meta page is usable.
    #[error("no valid meta page: meta 0: {meta0}; meta 1: {meta1}")]
    NoValidMeta {
        /// Problem with meta 0.
        meta0: MetaProblem,
        /// Problem with meta 1.
        meta1: MetaProblem,
    },
    /// A page on file is bad.
    #[error("page {pgid} (offset {offset}): {problem}")]
    Page {
        /// Page number.
        pgid: Pgid,
        /// Byte offset of the page in the file.
        offset: u64,
        /// What is wrong.
        problem: PageProblem,
    },
    /// An inline bucket's page (stored inside a leaf value) is bad.
    #[error("inline bucket page: {problem}")]
    InlinePage {
        /// What is wrong.
        problem: PageProblem,
    },
    /// A nested bucket's value is not a bucket header.
    #[error("bucket {name}: its value of {len} bytes is not a bucket header")]
    BadBucket {
        /// The bucket's name, escaped.
        name: String,
        /// Length of the value.
        len: usize,
    },
    /// Buckets nest deeper than any real file does (a bucket that contains an ancestor).
    #[error("buckets nested more than {0} deep (a bucket containing its own ancestor?)")]
    NestingTooDeep(usize),
    /// The root bucket holds a plain key (bbolt's root holds only buckets).
    #[error("the root bucket holds key {0}, not a bucket")]
    KeyInRootBucket(String),
    /// The freelist page lists a page it cannot hold.
    #[error("freelist page {pgid}: {detail}")]
    Freelist {
        /// The freelist page.
        pgid: Pgid,
        /// What is wrong.
        detail: String,
    },
}

/// Errors of the page file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call on the file failed.
    #[error("page file {path}: {op}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done ("open", "write", "fdatasync", ...).
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file is damaged or not a bbolt file.
    #[error("page file {path}: {corruption}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where and what.
        corruption: Corruption,
    },
    /// Another process holds the file open for writing.
    #[error("page file {0}: locked by another process")]
    Locked(PathBuf),
    /// An earlier write or fsync failed; the writer refuses to go on (fail-stop).
    #[error("page file {path}: writes stopped after an earlier failure: {cause}")]
    Stopped {
        /// The file.
        path: PathBuf,
        /// The failure that stopped the writer.
        cause: String,
    },
    /// A sync was begun while another had not finished (a bug in the caller).
    #[error("page file {path}: a sync began while the sync to txid {txid} is in flight")]
    SyncInFlight {
        /// The file.
        path: PathBuf,
        /// The txid the unfinished sync writes.
        txid: u64,
    },
    /// A sync was finished that had not begun (a bug in the caller).
    #[error("page file {0}: no sync in flight to finish")]
    NoSyncInFlight(PathBuf),
    /// Every reader slot is in use.
    #[error("page file {path}: all {max} reader slots in use")]
    ReadersFull {
        /// The file.
        path: PathBuf,
        /// The configured maximum.
        max: usize,
    },
    /// The bucket does not exist.
    #[error("bucket not found")]
    BucketNotFound,
    /// The bucket already exists.
    #[error("bucket already exists")]
    BucketExists,
    /// A bucket name must be non-empty.
    #[error("bucket name required")]
    BucketNameRequired,
    /// A key must be non-empty.
    #[error("key required")]
    KeyRequired,
    /// The key exceeds bbolt's maximum.
    #[error("key too large ({len} bytes, at most {max})", max = super::layout::MAX_KEY_SIZE)]
    KeyTooLarge {
        /// Its length.
        len: usize,
    },
    /// The value exceeds bbolt's maximum.
    #[error("value too large ({len} bytes, at most {max})", max = super::layout::MAX_VALUE_SIZE)]
    ValueTooLarge {
        /// Its length.
        len: usize,
    },
    /// The operation expects a value where a bucket is, or the other way round.
    #[error("incompatible value")]
    IncompatibleValue,
    /// Creating the bucket would nest buckets deeper than allowed.
    #[error("buckets cannot nest more than {max} deep")]
    NestedTooDeep {
        /// The limit.
        max: usize,
    },
    /// The destination of a compaction already holds data.
    #[error("page file {0}: compaction target is not empty")]
    TargetNotEmpty(PathBuf),
}

/// Results of the page file.
pub type Result<T, E = Error> = std::result::Result<T, E>;
