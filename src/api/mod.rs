//! The client API on the serving cores: the serving core's life ([`serving`]), its client
//! connections (gRPC over HTTP/2 with hyper on glommio, tonic-generated services; [`conn`],
//! [`io`]), one module per etcd service (lock and election on the recipes of [`concurrency`]),
//! plain HTTP for health, version and metrics, the per-core context the handlers reach the raft
//! core and the page file through, and the one place outcomes become gRPC statuses ([`status`]).
//!
//! Runs on: every serving core.

pub mod cluster;
pub mod concurrency;
pub mod conn;
pub mod context;
pub mod election;
pub mod health;
pub mod http;
pub mod io;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod quota;
pub mod serving;
pub mod snapshot;
pub mod status;
pub mod streaming;
pub mod timer;
pub mod watch;
