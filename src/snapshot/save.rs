//! `keelson snapshot save FILE`: a snapshot from a running member, over etcd's Snapshot call, into
//! `FILE` as `etcdctl snapshot save` writes it — the page file, then its SHA-256 — by way of
//! `FILE.part`, renamed once complete. The checksum is checked on the way.
//!
//! Runs on: a glommio executor of its own (hyper's HTTP/2 client on a glommio stream, as the
//! server's connections are).

use std::io::Write;
use std::path::Path;

use keelson_proto::etcdserverpb::{SnapshotRequest, SnapshotResponse};
use sha2::{Digest, Sha256};

use super::{SnapshotError, io};
use crate::grpc_client;

/// Saves a snapshot of the member at `endpoint` (`host:port`, or a URL) into `file`; its size.
pub fn save(endpoint: &str, file: &Path) -> Result<u64, SnapshotError> {
    let endpoint = grpc_client::host(endpoint).to_string();
    let mut part = file.as_os_str().to_os_string();
    part.push(".part");
    let part = std::path::PathBuf::from(part);
    let fetched = {
        let part = part.clone();
        glommio::LocalExecutorBuilder::default()
            .name("keelson-snapshot")
            .spawn(move || async move { fetch(&endpoint, &part).await })
            .map_err(|e| SnapshotError::Failed(e.to_string()))?
            .join()
            .map_err(|e| SnapshotError::Failed(e.to_string()))?
    };
    let size = fetched?;
    std::fs::rename(&part, file).map_err(io(file))?;
    Ok(size)
}

fn failed(what: &str) -> impl FnOnce(String) -> SnapshotError + '_ {
    move |why| SnapshotError::Failed(format!("{what}: {why}"))
}

/// Streams the snapshot into `part`; the bytes written.
async fn fetch(endpoint: &str, part: &Path) -> Result<u64, SnapshotError> {
    let mut sender = grpc_client::connect(endpoint)
        .await
        .map_err(failed(endpoint))?;
    let uri = grpc_client::uri(endpoint, "/etcdserverpb.Maintenance/Snapshot")
        .map_err(failed("endpoint"))?;
    let mut answers = grpc_client::call(&mut sender, &uri, &[SnapshotRequest {}])
        .await
        .map_err(failed(endpoint))?;
    let mut out = std::fs::File::create(part).map_err(io(part))?;
    let mut digest = Sha256::new();
    let (mut written, mut data_done, mut checked) = (0u64, false, false);
    while let Some(chunk) = answers
        .next::<SnapshotResponse>()
        .await
        .map_err(failed("the snapshot stream"))?
    {
        if data_done {
            checked = digest.clone().finalize().as_slice() == chunk.blob;
            if !checked {
                return Err(SnapshotError::Failed(
                    "the snapshot's sha256 does not match what was received".into(),
                ));
            }
        } else {
            digest.update(&chunk.blob);
            data_done = chunk.remaining_bytes == 0;
        }
        out.write_all(&chunk.blob).map_err(io(part))?;
        written += chunk.blob.len() as u64;
    }
    if !checked {
        return Err(SnapshotError::Failed(
            "the snapshot stream ended before its sha256".into(),
        ));
    }
    out.sync_all().map_err(io(part))?;
    Ok(written)
}
