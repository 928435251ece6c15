//! etcd's Snapshot call: a copy of the page file, streamed from one read transaction on this core
//! — so writes go on while it streams, and the copy is of one instant — in chunks of etcd's size,
//! each with the bytes still to come, then a last message with the SHA-256 of everything sent,
//! which `etcdctl snapshot save` keeps at the end of the file and `snapshot restore` checks.
//!
//! Runs on: every serving core.

use std::time::Instant;

use keelson_engine::mvcc::MvccError;
use keelson_engine::pagefile::ReadTxn;
use keelson_proto::etcdserverpb::SnapshotResponse;
use sha2::{Digest, Sha256};
use tonic::Status;
use tonic::codegen::BoxStream;

use super::conn::send;
use super::streaming::{self, Out};
use super::{context, status};

/// Bytes per message (etcd's `snapshotSendBufferSize`).
pub const CHUNK: usize = 32 * 1024;
/// Messages waiting for the client at most.
const BUFFER: usize = 8;

/// Answers a Snapshot call.
pub fn serve() -> Result<BoxStream<SnapshotResponse>, Status> {
    let txn = context::with(|s| {
        s.db()
            .begin_read()
            .map_err(|e| status::of_mvcc(&MvccError::from(e)))
    })?;
    Ok(streaming::serve(
        "/etcdserverpb.Maintenance/Snapshot",
        BUFFER,
        |out| stream(txn, out),
    ))
}

/// The copy's bytes from `offset`, at most [`CHUNK`] of them: the head (meta pages), then the
/// tail (the other pages, from the memory map).
fn chunk(txn: &ReadTxn, head: &[u8], offset: usize) -> Vec<u8> {
    let end = offset + CHUNK;
    let tail = txn.copy_tail();
    let mut blob = Vec::with_capacity(CHUNK);
    if offset < head.len() {
        blob.extend_from_slice(&head[offset..end.min(head.len())]);
    }
    let from = offset.max(head.len()) - head.len();
    let to = (end - head.len().min(end)).min(tail.len());
    if from < to {
        blob.extend_from_slice(&tail[from..to]);
    }
    blob
}

async fn stream(txn: ReadTxn, mut out: Out<SnapshotResponse>) -> Result<(), Status> {
    let started = Instant::now();
    let head = txn.copy_head();
    let total = head.len() + txn.copy_tail().len();
    tracing::info!(total_bytes = total, "sending database snapshot to client");
    let mut digest = Sha256::new();
    let mut sent = 0;
    while sent < total {
        let blob = chunk(&txn, &head, sent);
        sent += blob.len();
        digest.update(&blob);
        let response = SnapshotResponse {
            remaining_bytes: (total - sent) as u64,
            blob,
            ..SnapshotResponse::default()
        };
        if !send(&mut out, Ok(response)).await {
            tracing::warn!(
                sent,
                total_bytes = total,
                "the client went before the snapshot was sent"
            );
            return Ok(());
        }
    }
    let checksum = SnapshotResponse {
        blob: digest.finalize().to_vec(),
        ..SnapshotResponse::default()
    };
    tracing::info!(
        total_bytes = total,
        "sending database sha256 checksum to client"
    );
    if send(&mut out, Ok(checksum)).await {
        let took = started.elapsed();
        tracing::info!(total_bytes = total, took = ?took, "successfully sent database snapshot to client");
        let _ = context::with(|s| {
            s.own_metrics().snapshot.observe(took);
            Ok(())
        });
    }
    Ok(())
}
