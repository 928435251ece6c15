//! Compiles the .proto files (written in this crate from etcd's API reference) with prost. Needs
//! `protoc` (Debian: protobuf-compiler).

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=etcd");
    prost_build::Config::new().compile_protos(
        &[
            "etcd/mvccpb/kv.proto",
            "etcd/leasepb/lease.proto",
            "etcd/etcdserverpb/rpc.proto",
        ],
        &["."],
    )
}
