//! What keelson's tests share: a real etcd 3.4 (Debian's `etcd-server`) started on free loopback
//! ports, and `etcdctl` (Debian's `etcd-client`), for tests that compare keelson with etcd or check
//! that etcd's tools accept keelson's files; and [`server::Server`], which starts etcd or the
//! keelson binary with the same etcd flags — one member or a cluster, its peer traffic through
//! [`proxy::Proxy`]s the test can cut — and a checker of the histories clients record
//! ([`linearizability`]). Missing binaries fail the test with what to install;
//! nothing here skips.

pub mod etcd;
pub mod linearizability;
pub mod proxy;
pub mod server;
