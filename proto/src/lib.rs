//! etcd's v3 API, wire-compatible with etcd: the same protobuf packages, message names and field
//! numbers, from `.proto` files written in this crate (`proto/etcd/`), compiled with prost, and
//! the gRPC services with tonic's code generator (server traits; unimplemented methods answer
//! `Unimplemented`).
//!
//! - [`mvccpb`]: the records of etcd's MVCC store (`KeyValue`, the value of every revision in the
//!   `key` bucket) and watch events.
//! - [`etcdserverpb`]: the v3 API (KV, Watch, Lease, Cluster, Maintenance, Auth), the raft log's
//!   `InternalRaftRequest`, and the WAL's `Metadata`.
//! - [`leasepb`]: the lease record of the `lease` bucket.
//! - [`authpb`]: users and roles.
//! - [`v3lockpb`], [`v3electionpb`]: the lock and election services.
//! - [`health`]: gRPC's standard health service, which etcd registers too.
//! - [`walpb`], [`raftpb`]: the frames of etcd's own WAL and the raft records in them, for taking
//!   over a data dir etcd wrote.

pub mod codec;

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

/// etcd's users and roles (package `authpb`).
#[allow(missing_docs)]
pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
}

/// etcd's lock service (package `v3lockpb`).
#[allow(missing_docs)]
pub mod v3lockpb {
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
}

/// etcd's election service (package `v3electionpb`).
#[allow(missing_docs)]
pub mod v3electionpb {
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
}

/// The frames of etcd's WAL (package `walpb`).
#[allow(missing_docs)]
pub mod walpb {
    include!(concat!(env!("OUT_DIR"), "/walpb.rs"));
}

/// The raft records in etcd's WAL (package `raftpb`).
#[allow(missing_docs)]
pub mod raftpb {
    include!(concat!(env!("OUT_DIR"), "/raftpb.rs"));
}

/// gRPC's health service (package `grpc.health.v1`).
#[allow(missing_docs)]
pub mod health {
    include!(concat!(env!("OUT_DIR"), "/grpc.health.v1.rs"));
}
