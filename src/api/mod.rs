//! The client API on the serving cores: gRPC over HTTP/2 (hyper on glommio, tonic-generated
//! services), one module per etcd service, plain HTTP for health, version and metrics, and the
//! per-core context the handlers reach the raft core and the page file through.

pub mod cluster;
pub mod conn;
pub mod context;
pub mod http;
pub mod io;
pub mod kv;
pub mod maintenance;
