//! What keelson's tests share: a real etcd 3.4 (Debian's `etcd-server`) started on free loopback
//! ports, and `etcdctl` (Debian's `etcd-client`), for tests that compare keelson with etcd or check
//! that etcd's tools accept keelson's files; and [`server::Server`], which starts etcd or the
//! keelson binary with the same etcd flags. Missing binaries fail the test with what to install;
//! nothing here skips.

pub mod etcd;
pub mod server;
