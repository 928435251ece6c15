//! Where the MVCC store keeps things: etcd's buckets and meta keys (so etcd's tools and etcd itself
//! read the file), and keelson's own buckets beside them (etcd ignores buckets it does not know).

/// etcd: revision key → `mvccpb.KeyValue`.
pub(crate) const KEY: &[u8] = b"key";
/// etcd: consistent index, term, compaction revisions.
pub(crate) const META: &[u8] = b"meta";
/// etcd: encoded `AlarmMember` → empty: the alarms raised.
pub(crate) const ALARM: &[u8] = b"alarm";
/// etcd: lease id (8-byte big-endian) → `leasepb.Lease`.
pub(crate) const LEASE: &[u8] = b"lease";
/// etcd: member id (lowercase hex) → the member as JSON.
pub(crate) const MEMBERS: &[u8] = b"members";
/// etcd: removed member id (lowercase hex) → `removed`.
pub(crate) const MEMBERS_REMOVED: &[u8] = b"members_removed";
/// Every bucket of etcd's schema, created in a new file so it is a complete etcd data file.
pub(crate) const ETCD_BUCKETS: [&[u8]; 10] = [
    KEY,
    META,
    LEASE,
    MEMBERS,
    MEMBERS_REMOVED,
    b"cluster",
    b"auth",
    b"authUsers",
    b"authRoles",
    ALARM,
];

/// `meta` key: index of the last raft entry applied (8-byte big-endian).
pub(crate) const CONSISTENT_INDEX: &[u8] = b"consistent_index";
/// `meta` key: term of that entry (8-byte big-endian; etcd 3.5 writes it, 3.4 ignores it).
pub(crate) const TERM: &[u8] = b"term";
/// `meta` key: revision (as a `key` bucket key) of the latest compaction requested.
pub(crate) const SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";
/// `meta` key: revision (as a `key` bucket key) of the latest compaction completed.
pub(crate) const FINISHED_COMPACT: &[u8] = b"finishedCompactRev";

/// keelson: every version by user key (see `index_key.rs`) with its [`super::version::Version`],
/// packed in blocks (see `index.rs`).
pub(crate) const INDEX: &[u8] = b"keelson_index";
/// keelson: lease id (8-byte big-endian) then user key → empty: the keys attached to each lease.
pub(crate) const LEASE_KEYS: &[u8] = b"keelson_lease_keys";
/// keelson: the store's own state, below.
pub(crate) const STATE: &[u8] = b"keelson";

/// keelson's own buckets (etcd ignores them; hashes of etcd's data leave them out).
pub(crate) const KEELSON_BUCKETS: [&[u8]; 3] = [INDEX, LEASE_KEYS, STATE];

/// `keelson` key: the store's current revision, written with every change. Compared with the
/// `key` bucket on open: if etcd changed the file meanwhile, keelson's buckets are rebuilt.
pub(crate) const STATE_REVISION: &[u8] = b"revision";
/// `keelson` key: how many keys are alive at the current revision (etcd's `keys_total`), kept
/// with every change.
pub(crate) const STATE_KEYS: &[u8] = b"keys";
/// `keelson` key: the finished compaction keelson's buckets reflect.
pub(crate) const STATE_COMPACTED: &[u8] = b"compacted";
/// `keelson` key: the layout version of keelson's buckets.
pub(crate) const STATE_FORMAT: &[u8] = b"format";
/// The layout version written now.
pub(crate) const FORMAT: i64 = 4;
