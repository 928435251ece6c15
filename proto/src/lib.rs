//! etcd's v3 API messages, wire-compatible with etcd: the same protobuf packages, message names and
//! field numbers, from `.proto` files written in this crate (`proto/etcd/`) and compiled with
//! prost at build time.
//!
//! - [`mvccpb`]: the records of etcd's MVCC store (`KeyValue`, the value of every revision in the
//!   `key` bucket) and watch events.
//! - [`etcdserverpb`]: the v3 API's requests and responses (key-value and lease, so far).
//! - [`leasepb`]: the lease record of the `lease` bucket.

/// etcd's MVCC records (package `mvccpb`).
#[allow(missing_docs)]
pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
}

/// etcd's v3 API messages (package `etcdserverpb`).
#[allow(missing_docs)]
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
}

/// etcd's lease record (package `leasepb`).
#[allow(missing_docs)]
pub mod leasepb {
    include!(concat!(env!("OUT_DIR"), "/leasepb.rs"));
}
