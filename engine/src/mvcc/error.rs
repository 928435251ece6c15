//! Errors of the MVCC store, as typed values. [`MvccError::status`] is the one place each maps to
//! the gRPC code and exact message etcd answers with; the `Display` texts are for logs.

use crate::pagefile;

/// Errors of the MVCC store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MvccError {
    /// The page file failed (I/O, corruption, a stopped writer).
    #[error(transparent)]
    PageFile(#[from] pagefile::Error),
    /// A record in the file does not decode.
    #[error("mvcc: {0}")]
    Corrupt(String),
    /// The revision asked for has been compacted (etcd: ErrCompacted).
    #[error("mvcc: required revision {requested} has been compacted (compacted up to {compacted})")]
    Compacted {
        /// The revision requested.
        requested: i64,
        /// The compaction revision.
        compacted: i64,
    },
    /// The revision asked for is beyond the current one (etcd: ErrFutureRev).
    #[error("mvcc: required revision {requested} is a future revision (current {current})")]
    FutureRevision {
        /// The revision requested.
        requested: i64,
        /// The current revision.
        current: i64,
    },
    /// `ignore_value` or `ignore_lease` on a key that does not exist (etcd: ErrKeyNotFound).
    #[error("mvcc: key not found")]
    KeyNotFound,
    /// The lease does not exist (etcd: ErrLeaseNotFound).
    #[error("mvcc: lease {0:#x} not found")]
    LeaseNotFound(i64),
    /// A lease with that id exists already (etcd: ErrLeaseExist).
    #[error("mvcc: lease {0:#x} already exists")]
    LeaseExists(i64),
    /// A put gave a value together with `ignore_value` (etcd: ErrValueProvided).
    #[error("mvcc: value given with ignore_value")]
    ValueProvided,
    /// A put gave a lease together with `ignore_lease` (etcd: ErrLeaseProvided).
    #[error("mvcc: lease given with ignore_lease")]
    LeaseProvided,
    /// A txn branch writes a key twice (etcd: ErrDuplicateKey).
    #[error("mvcc: duplicate key given in txn request")]
    DuplicateKey,
    /// A txn has more operations than allowed (etcd: ErrTooManyOps).
    #[error("mvcc: too many operations in txn request (at most {max})")]
    TooManyOps {
        /// The limit that applied.
        max: usize,
    },
    /// A lease's time to live is beyond etcd's limit (etcd: ErrLeaseTTLTooLarge).
    #[error("mvcc: too large lease TTL")]
    LeaseTtlTooLarge,
    /// A key too long for the page file's index keys; etcd's nearest answer is ErrRequestTooLarge.
    #[error("key of {0} bytes too large to index")]
    KeyTooLarge(usize),
    /// A key was empty (etcd: ErrEmptyKey).
    #[error("mvcc: key is not provided")]
    EmptyKey,
    /// A write beyond the backend quota, or while the NOSPACE alarm is raised (etcd: ErrNoSpace).
    #[error("mvcc: database space exceeded")]
    NoSpace,
    /// A write while the CORRUPT alarm is raised (etcd: ErrCorrupt).
    #[error("mvcc: the cluster's data is corrupt (CORRUPT alarm)")]
    ClusterCorrupt,
    /// A membership change for a member that was removed (etcd: ErrIDRemoved).
    #[error("membership: ID removed")]
    MemberRemoved,
    /// A member added with an id the cluster has (etcd: ErrIDExists).
    #[error("membership: ID exists")]
    MemberExists,
    /// A membership change for a member the cluster does not have (etcd: ErrIDNotFound).
    #[error("membership: ID not found")]
    MemberNotFound,
    /// A member's peer URL is another member's (etcd: ErrPeerURLexists).
    #[error("membership: peerURL exists")]
    PeerUrlExists,
    /// A promotion of a member that is not a learner (etcd: ErrMemberNotLearner).
    #[error("membership: can only promote a learner member")]
    MemberNotLearner,
    /// A learner added past `--max-learners` (etcd: ErrTooManyLearners).
    #[error("membership: too many learner members in cluster")]
    TooManyLearners,
}

/// The gRPC status codes etcd answers key-value errors with (gRPC's numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCode {
    /// Anything etcd does not map: its text goes out as is.
    Unknown = 2,
    /// A request that can never succeed as given.
    InvalidArgument = 3,
    /// A lease or a member that does not exist.
    NotFound = 5,
    /// A lease that exists already; a membership change the cluster refuses.
    FailedPrecondition = 9,
    /// A revision or time to live out of range.
    OutOfRange = 11,
    /// The backend quota is used up.
    ResourceExhausted = 8,
    /// The cluster's data diverged.
    DataLoss = 15,
}

impl MvccError {
    /// Whether this is the storage failing, as opposed to an answer to a request.
    pub fn is_storage(&self) -> bool {
        matches!(self, MvccError::PageFile(_) | MvccError::Corrupt(_))
    }

    /// The gRPC status etcd 3.4 answers with: code and exact message (etcd's `rpctypes`).
    pub fn status(&self) -> (StatusCode, String) {
        use StatusCode::*;
        let (code, message) = match self {
            MvccError::PageFile(_) | MvccError::Corrupt(_) => return (Unknown, self.to_string()),
            MvccError::Compacted { .. } => (
                OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            MvccError::FutureRevision { .. } => (
                OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
            MvccError::KeyNotFound => (InvalidArgument, "etcdserver: key not found"),
            MvccError::LeaseNotFound(_) => (NotFound, "etcdserver: requested lease not found"),
            MvccError::LeaseExists(_) => (FailedPrecondition, "etcdserver: lease already exists"),
            MvccError::ValueProvided => (InvalidArgument, "etcdserver: value is provided"),
            MvccError::LeaseProvided => (InvalidArgument, "etcdserver: lease is provided"),
            MvccError::DuplicateKey => (
                InvalidArgument,
                "etcdserver: duplicate key given in txn request",
            ),
            MvccError::TooManyOps { .. } => (
                InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
            MvccError::LeaseTtlTooLarge => (OutOfRange, "etcdserver: too large lease TTL"),
            MvccError::EmptyKey => (InvalidArgument, "etcdserver: key is not provided"),
            MvccError::KeyTooLarge(_) => (InvalidArgument, "etcdserver: request is too large"),
            MvccError::NoSpace => (
                ResourceExhausted,
                "etcdserver: mvcc: database space exceeded",
            ),
            MvccError::ClusterCorrupt => (DataLoss, "etcdserver: corrupt cluster"),
            MvccError::MemberRemoved | MvccError::MemberNotFound => {
                (NotFound, "etcdserver: member not found")
            }
            MvccError::MemberExists => (FailedPrecondition, "etcdserver: member ID already exist"),
            MvccError::PeerUrlExists => {
                (FailedPrecondition, "etcdserver: Peer URLs already exists")
            }
            MvccError::MemberNotLearner => (
                FailedPrecondition,
                "etcdserver: can only promote a learner member",
            ),
            MvccError::TooManyLearners => (
                FailedPrecondition,
                "etcdserver: too many learner members in cluster",
            ),
        };
        (code, message.to_string())
    }
}

/// Results of the MVCC store.
pub type Result<T, E = MvccError> = std::result::Result<T, E>;
