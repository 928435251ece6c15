//! `keelson snapshot restore FILE`: a data dir for a new cluster from a snapshot, as `etcdctl
//! snapshot restore` makes one. The snapshot's SHA-256 (the 32 bytes `snapshot save` appends) is
//! checked unless `--skip-hash-check`; the page file goes to `<data-dir>/member/snap/db`, marked
//! applied through as many entries as the new cluster has members, at term 1 (etcd's numbering
//! for a restored cluster's first entries); the member starts with a new WAL on it. Keys,
//! revisions, leases and alarms stay as the snapshot has them.
//!
//! Runs on: the main thread.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use keelson_engine::mvcc::{self, Store};
use sha2::{Digest, Sha256};

use super::{SnapshotError, io};
use crate::config::{self, Member};
use crate::ids;

/// What a restore makes.
pub struct Restore<'a> {
    /// The snapshot file.
    pub snapshot: &'a Path,
    /// The data dir to make (it must not exist, or be empty).
    pub data_dir: &'a Path,
    /// This member's name.
    pub name: &'a str,
    /// The new cluster's members (`--initial-cluster`).
    pub initial_cluster: &'a str,
    /// Its token.
    pub token: &'a str,
    /// This member's peer URLs (`--initial-advertise-peer-urls`): `--initial-cluster` must give it
    /// these.
    pub peer_urls: &'a str,
    /// Whether to go on without a SHA-256 to check.
    pub skip_hash_check: bool,
}

/// Bytes of the checksum `snapshot save` appends.
const SHA_LEN: u64 = 32;

/// Whether a snapshot of `size` bytes ends in a SHA-256: its pages fill whole 512-byte units, so
/// 32 more bytes are the checksum (etcd's rule).
fn has_hash(size: u64) -> bool {
    size % 512 == SHA_LEN
}

/// Copies the page file of `snapshot` (its checksum checked, unless there is none and that is
/// allowed) into `db`.
fn copy_checked(snapshot: &Path, db: &Path, skip_hash_check: bool) -> Result<(), SnapshotError> {
    let mut from = std::fs::File::open(snapshot).map_err(io(snapshot))?;
    let size = from.metadata().map_err(io(snapshot))?.len();
    let hashed = has_hash(size);
    if !hashed && !skip_hash_check {
        return Err(SnapshotError::Failed(
            "snapshot missing hash but --skip-hash-check=false".into(),
        ));
    }
    let body = if hashed { size - SHA_LEN } else { size };
    let mut to = std::fs::File::create(db).map_err(io(db))?;
    let mut digest = Sha256::new();
    let mut left = body;
    let mut chunk = vec![0u8; 1 << 20];
    while left > 0 {
        let n = chunk.len().min(left as usize);
        from.read_exact(&mut chunk[..n]).map_err(io(snapshot))?;
        digest.update(&chunk[..n]);
        to.write_all(&chunk[..n]).map_err(io(db))?;
        left -= n as u64;
    }
    if hashed {
        let mut want = [0u8; SHA_LEN as usize];
        from.read_exact(&mut want).map_err(io(snapshot))?;
        if digest.finalize().as_slice() != want && !skip_hash_check {
            return Err(SnapshotError::Failed(
                "expected sha256 does not match the snapshot's".into(),
            ));
        }
    }
    to.sync_all().map_err(io(db))
}

/// Makes the data dir; returns the new member's id and its cluster's, and the revision restored.
pub fn restore(r: &Restore<'_>) -> Result<(u64, u64, i64), SnapshotError> {
    let members: Vec<Member> = config::parse_initial_cluster(r.initial_cluster, r.token)
        .map_err(|e| SnapshotError::Failed(e.to_string()))?;
    let me = members.iter().find(|m| m.name == r.name).ok_or_else(|| {
        SnapshotError::Failed(format!(
            "member {:?} is not in --initial-cluster {:?}",
            r.name, r.initial_cluster
        ))
    })?;
    let mut given: Vec<&str> = r.peer_urls.split(',').map(str::trim).collect();
    let mut listed: Vec<&str> = me.peer_urls.iter().map(String::as_str).collect();
    given.sort_unstable();
    listed.sort_unstable();
    if given != listed {
        return Err(SnapshotError::Failed(format!(
            "--initial-cluster has {}={} but --initial-advertise-peer-urls is {}",
            r.name,
            listed.join(","),
            r.peer_urls
        )));
    }
    let me = me.id;
    let occupied = std::fs::read_dir(r.data_dir).is_ok_and(|mut d| d.next().is_some());
    if occupied {
        return Err(SnapshotError::Failed(format!(
            "data-dir {:?} not empty or could not be read",
            r.data_dir.display().to_string()
        )));
    }
    let snap_dir: PathBuf = r.data_dir.join("member").join("snap");
    std::fs::create_dir_all(&snap_dir).map_err(io(&snap_dir))?;
    let db = snap_dir.join("db");
    copy_checked(r.snapshot, &db, r.skip_hash_check)?;
    let mut store = Store::open(&db, mvcc::Options::default())?;
    store.set_members(&members, true)?;
    store.restart_log_at(members.len() as u64, 1)?;
    let revision = store.revisions().current;
    Ok((me, ids::cluster_id(members.iter().map(|m| m.id)), revision))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_is_there_when_32_bytes_follow_the_pages() {
        assert!(has_hash(20480 + 32));
        assert!(!has_hash(20480));
    }
}
