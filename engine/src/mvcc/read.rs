//! Reading the MVCC store at any revision, from any [`View`]: a read transaction on any core, or the
//! raft core's write transaction as it stands (a txn's reads see its own earlier writes). No
//! in-memory index: keelson's index bucket holds every version ordered by user key, so finding the
//! keys alive at a revision is one cursor scan, and values come from etcd's `key` bucket by exact
//! revision.
//!
//! [`range`] answers etcd's Range exactly as etcd 3.4 does, quirks included: `count` ignores limit
//! and filters, `more` does not; a sort target other than KEY with no sort order sorts only the
//! first `limit + 1` keys; the header carries the current revision even for reads at older ones.

use keelson_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use keelson_proto::etcdserverpb::{RangeRequest, RangeResponse};
use keelson_proto::mvccpb::KeyValue;
use prost::Message;

use super::error::{MvccError, Result};
use super::index::{Entry, Scan};
use super::index_key::{decode_user_key, encode_user_key};
use super::revision::Revision;
use super::schema::{INDEX, KEY, META, SCHEDULED_COMPACT, STATE, STATE_REVISION};
use super::version::Version;
use crate::pagefile::{Bucket, View};

/// The revisions that bound what can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revisions {
    /// The store's current revision (1 in a store nothing was ever written to).
    pub current: i64,
    /// The latest compaction requested (-1 if none): reads below it fail.
    pub compacted: i64,
}

/// The current and compacted revisions as `view` sees them.
pub fn revisions(view: &dyn View) -> Result<Revisions> {
    let current = match view.view(STATE)? {
        Some(state) => state
            .get(STATE_REVISION)?
            .map(decode_i64)
            .transpose()?
            .unwrap_or(1),
        None => 1,
    };
    let compacted = meta_revision(view, SCHEDULED_COMPACT)?;
    Ok(Revisions { current, compacted })
}

/// The main revision of a `meta` compaction record (-1 if absent).
pub(crate) fn meta_revision(view: &dyn View, name: &[u8]) -> Result<i64> {
    let Some(meta) = view.view(META)? else {
        return Ok(-1);
    };
    match meta.get(name)? {
        Some(k) => Ok(Revision::parse_key(k)
            .ok_or_else(|| corrupt("a compaction record is not a revision"))?
            .0
            .main),
        None => Ok(-1),
    }
}

pub(crate) fn decode_i64(b: &[u8]) -> Result<i64> {
    Ok(i64::from_le_bytes(b.try_into().map_err(|_| {
        corrupt("a stored revision is not 8 bytes")
    })?))
}

pub(crate) fn corrupt(what: &str) -> MvccError {
    MvccError::Corrupt(what.to_string())
}

/// The end of a key range, as etcd reads `range_end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End<'a> {
    /// Empty `range_end`: just the key.
    One,
    /// `range_end` of a single zero byte: every key from the start on.
    Unbounded,
    /// Every key before this one.
    Before(&'a [u8]),
}

impl<'a> End<'a> {
    pub fn of(range_end: &'a [u8]) -> Self {
        match range_end {
            [] => End::One,
            [0] => End::Unbounded,
            end => End::Before(end),
        }
    }
}

/// A key alive at some revision: its version there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// The key as the index encodes it ([`Found::key`] decodes it; a Range needs only `rev`).
    pub encoded: Vec<u8>,
    pub rev: Revision,
    pub version: Version,
}

impl Found {
    /// The user key.
    pub fn key(&self) -> Result<Vec<u8>> {
        decode_user_key(&self.encoded).ok_or_else(|| corrupt("index key does not decode"))
    }
}

/// Which keys a scan of the index covers: from an index key on, up to the end of a key range.
pub(crate) struct Span {
    /// The index key the scan starts at: the range's first encoded key, or past some key.
    from: Vec<u8>,
    /// The range's first encoded key, and how far the range goes.
    start: Vec<u8>,
    stop: Stop,
}

enum Stop {
    /// Just the start key.
    One,
    Unbounded,
    /// Every encoded key before this one.
    Before(Vec<u8>),
}

impl Span {
    /// The keys of the range `[key, end)`.
    pub fn of(key: &[u8], end: End<'_>) -> Self {
        let start = encode_user_key(key);
        let stop = match end {
            End::One => Stop::One,
            End::Unbounded => Stop::Unbounded,
            End::Before(e) => Stop::Before(encode_user_key(e)),
        };
        Span {
            from: start.clone(),
            start,
            stop,
        }
    }

    /// Whether the range holds encoded key `encoded` (one at or after its start).
    fn holds(&self, encoded: &[u8]) -> bool {
        match &self.stop {
            Stop::One => encoded == self.start.as_slice(),
            Stop::Unbounded => true,
            Stop::Before(stop) => encoded < stop.as_slice(),
        }
    }

    /// Starts the scan past every version of encoded key `encoded`: no encoded key is a prefix
    /// of another, so any other key's index keys differ from it within its length, and all of
    /// `encoded`'s are below it followed by 0xFF (a revision's first byte is at most 8).
    pub fn skip_past(&mut self, encoded: &[u8]) {
        self.from.clear();
        self.from.extend_from_slice(encoded);
        self.from.push(0xFF);
    }
}

/// The versions of one key seen so far by a scan, and the newest at or below the read revision.
#[derive(Default)]
struct Group {
    /// The key's encoding (empty before the first key).
    encoded: Vec<u8>,
    newest: Option<(Revision, Version)>,
}

/// What a scan has gathered: the first `keep` live keys, and how many there are (counted to the
/// end of the range only if `count_all`, else to the `keep`th).
struct Gathered {
    found: Vec<Found>,
    total: usize,
    keep: usize,
    count_all: bool,
}

impl Gathered {
    /// Counts the key `group` has finished, if alive, and keeps it if there is room. Whether the
    /// scan should go on.
    fn settle(&mut self, group: &Group) -> bool {
        let Some((rev, version)) = group.newest else {
            return true;
        };
        if version.tombstone {
            return true;
        }
        self.total += 1;
        if self.found.len() < self.keep {
            self.found.push(Found {
                encoded: group.encoded.clone(),
                rev,
                version,
            });
        }
        self.count_all || self.found.len() < self.keep
    }
}

/// The keys alive at revision `at` in `[key, end)`, in key order: for each, the newest version
/// whose main revision is `<= at`, unless that is a deletion. Returns the first `keep` of them and
/// how many there are.
pub(crate) fn live(
    view: &dyn View,
    key: &[u8],
    end: End<'_>,
    at: i64,
    keep: usize,
) -> Result<(Vec<Found>, usize)> {
    gather(view, &Span::of(key, end), at, keep, true)
}

/// The first `keep` keys of `span` alive at revision `at`, as [`live`] finds them, without
/// counting the rest: a large range taken a part at a time ([`Span::skip_past`] the last).
pub(crate) fn live_part(view: &dyn View, span: &Span, at: i64, keep: usize) -> Result<Vec<Found>> {
    Ok(gather(view, span, at, keep, false)?.0)
}

fn gather(
    view: &dyn View,
    span: &Span,
    at: i64,
    keep: usize,
    count_all: bool,
) -> Result<(Vec<Found>, usize)> {
    let Some(index) = view.view(INDEX)? else {
        return Ok((Vec::new(), 0));
    };
    let mut gathered = Gathered {
        found: Vec::new(),
        total: 0,
        keep,
        count_all,
    };
    let mut group = Group::default();
    let mut scan = Scan::from(&index, &span.from)?;
    while let Some(Entry {
        encoded,
        rev,
        version,
        ..
    }) = scan.next()?
    {
        if !span.holds(encoded) {
            break;
        }
        if group.encoded != encoded {
            if !gathered.settle(&group) {
                return Ok((gathered.found, gathered.total));
            }
            group.encoded.clear();
            group.encoded.extend_from_slice(encoded);
            group.newest = None;
        }
        if rev.main <= at {
            group.newest = Some((rev, version));
        }
    }
    gathered.settle(&group);
    Ok((gathered.found, gathered.total))
}

/// The stored `KeyValue` of a live version.
pub(crate) fn fetch(view: &dyn View, rev: Revision) -> Result<KeyValue> {
    let key_bucket = bucket(view, KEY)?;
    let bytes = key_bucket
        .get(&rev.key(false))?
        .ok_or_else(|| corrupt("indexed revision missing from the key bucket"))?;
    KeyValue::decode(bytes).map_err(|_| corrupt("a KeyValue does not decode"))
}

/// A bucket that must exist.
pub(crate) fn bucket<'v>(view: &'v dyn View, name: &[u8]) -> Result<Bucket<'v>> {
    view.view(name)?.ok_or_else(|| {
        corrupt(&format!(
            "bucket {} is missing",
            String::from_utf8_lossy(name)
        ))
    })
}

/// What `decode` makes of every entry of bucket `name` (key, and value: `None` for a nested
/// bucket), in key order, skipping those it returns `None` for; nothing if the bucket is missing.
pub(crate) fn decode_all<T>(
    view: &dyn View,
    name: &[u8],
    mut decode: impl FnMut(&[u8], Option<&[u8]>) -> Result<Option<T>>,
) -> Result<Vec<T>> {
    let Some(bucket) = view.view(name)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut cursor = bucket.cursor();
    let mut entry = cursor.first()?;
    while let Some((key, value)) = entry {
        out.extend(decode(key, value)?);
        entry = cursor.next()?;
    }
    Ok(out)
}

/// The newest live version of `key` at revision `at`, as stored.
pub(crate) fn get_at(view: &dyn View, key: &[u8], at: i64) -> Result<Option<KeyValue>> {
    let (found, _) = live(view, key, End::One, at, 1)?;
    found.first().map(|f| fetch(view, f.rev)).transpose()
}

fn sort_key_cmp(target: SortTarget, a: &KeyValue, b: &KeyValue) -> std::cmp::Ordering {
    match target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    }
}

/// Answers a Range as etcd 3.4 does, reading at `revs` (the store's revisions as the reader sees
/// them). Errors: a revision beyond the current one, or below the compacted one.
pub fn range(view: &dyn View, req: &RangeRequest, revs: Revisions) -> Result<RangeResponse> {
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    // etcd fetches everything when it must sort or filter, and one extra key to know `more`.
    let mut fetch_limit = if req.sort_order != SortOrder::None as i32 || filtered {
        0
    } else {
        req.limit
    };
    if fetch_limit > 0 {
        fetch_limit = fetch_limit.wrapping_add(1);
    }
    if req.revision > revs.current {
        return Err(MvccError::FutureRevision {
            requested: req.revision,
            current: revs.current,
        });
    }
    let at = if req.revision <= 0 {
        revs.current
    } else {
        req.revision
    };
    if at < revs.compacted {
        return Err(MvccError::Compacted {
            requested: at,
            compacted: revs.compacted,
        });
    }
    let header = super::ops::header(revs.current);
    // Negative (also after overflow) or zero: everything.
    let keep = match usize::try_from(fetch_limit) {
        _ if req.count_only => 0,
        Ok(n) if n > 0 => n,
        _ => usize::MAX,
    };
    let (found, total) = live(view, &req.key, End::of(&req.range_end), at, keep)?;
    if req.count_only {
        return Ok(RangeResponse {
            header,
            kvs: Vec::new(),
            more: false,
            count: total as i64,
        });
    }
    let mut kvs = Vec::with_capacity(found.len());
    for f in &found {
        kvs.push(fetch(view, f.rev)?);
    }
    if req.max_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision <= req.max_mod_revision);
    }
    if req.min_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision >= req.min_mod_revision);
    }
    if req.max_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision <= req.max_create_revision);
    }
    if req.min_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision >= req.min_create_revision);
    }
    let target = SortTarget::try_from(req.sort_target).ok();
    let mut order = SortOrder::try_from(req.sort_order).ok();
    if target != Some(SortTarget::Key) && order == Some(SortOrder::None) {
        order = Some(SortOrder::Ascend);
    }
    // A stable sort: the input is in key order, so ties stay in key order. etcd 3.4's Go sort
    // is unstable but matches this for up to 12 results (see the closing notes).
    if let Some(target) = target {
        match order {
            Some(SortOrder::Ascend) => kvs.sort_by(|a, b| sort_key_cmp(target, a, b)),
            Some(SortOrder::Descend) => kvs.sort_by(|a, b| sort_key_cmp(target, b, a)),
            _ => {}
        }
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() as i64 > req.limit {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    Ok(RangeResponse {
        header,
        kvs,
        more,
        count: total as i64,
    })
}
