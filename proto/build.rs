//! Compiles the .proto files (written in this crate from etcd's API reference) with prost, and the
//! services with tonic's code generator (server side only: keelson serves them on its own HTTP/2
//! connections; methods not implemented yet answer `Unimplemented`), with keelson's observed codec
//! (`src/codec.rs`). Needs `protoc` (Debian:
//! protobuf-compiler).

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=etcd");
    println!("cargo:rerun-if-changed=grpc");
    tonic_prost_build::configure()
        .build_client(false)
        .build_transport(false)
        .generate_default_stubs(true)
        .codec_path("crate::codec::ObservedCodec")
        .compile_protos(
            &[
                "etcd/mvccpb/kv.proto",
                "etcd/leasepb/lease.proto",
                "etcd/authpb/auth.proto",
                "etcd/etcdserverpb/etcdserver.proto",
                "etcd/etcdserverpb/rpc.proto",
                "etcd/etcdserverpb/raft_internal.proto",
                "etcd/v3lockpb/v3lock.proto",
                "etcd/v3electionpb/v3election.proto",
                "etcd/walpb/record.proto",
                "etcd/raftpb/raft.proto",
                "grpc/health/v1/health.proto",
            ],
            &["."],
        )
}
