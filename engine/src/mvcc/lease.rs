//! Leases as they touch the key-value store: granting (a record in etcd's `lease` bucket),
//! revoking (deleting every key attached, at one revision, in key order), checkpoints (the time
//! to live a lease has left, kept in its record as etcd 3.6 keeps it), and the existence checks
//! puts make. Timing — expiry, keep-alives — is the server's lessor's business; it revokes
//! through here.

use keelson_proto::etcdserverpb::{
    LeaseCheckpointRequest, LeaseCheckpointResponse, LeaseGrantRequest, LeaseGrantResponse,
    LeaseRevokeRequest, LeaseRevokeResponse,
};
use keelson_proto::leasepb::Lease;
use prost::Message;

use super::error::{MvccError, Result};
use super::ops::header;
use super::read::corrupt;
use super::schema::{LEASE, LEASE_KEYS};
use super::write::{Doomed, Writes};
use crate::pagefile::View;

/// Largest time to live etcd grants, in seconds.
const MAX_TTL: i64 = 9_000_000_000;

/// The `lease` bucket's key for `id`: 8 bytes, big-endian (etcd's encoding).
fn lease_key(id: i64) -> [u8; 8] {
    id.to_be_bytes()
}

/// Whether lease `id` exists.
pub(crate) fn exists(view: &dyn View, id: i64) -> Result<bool> {
    Ok(match view.view(LEASE)? {
        Some(leases) => leases.get(&lease_key(id))?.is_some(),
        None => false,
    })
}

/// The keys attached to lease `id`, in key order.
pub fn keys_of(view: &dyn View, id: i64) -> Result<Vec<Vec<u8>>> {
    let prefix = lease_key(id);
    let mut keys = Vec::new();
    if let Some(links) = view.view(LEASE_KEYS)? {
        let mut cursor = links.cursor();
        let mut at = cursor.seek(&prefix)?;
        while let Some((link, _)) = at {
            let Some(key) = link.strip_prefix(&prefix) else {
                break;
            };
            keys.push(key.to_vec());
            at = cursor.next()?;
        }
    }
    Ok(keys)
}

/// Every lease granted and not revoked, as stored (the time to live granted; the lessor keeps
/// expiry times in memory).
pub fn leases(view: &dyn View) -> Result<Vec<Lease>> {
    let mut all = Vec::new();
    if let Some(leases) = view.view(LEASE)? {
        let mut cursor = leases.cursor();
        let mut at = cursor.first()?;
        while let Some((_, value)) = at {
            all.push(
                Lease::decode(value.unwrap_or_default())
                    .map_err(|_| corrupt("a lease record does not decode"))?,
            );
            at = cursor.next()?;
        }
    }
    Ok(all)
}

/// Grants lease `req.id` (the server picks an id for requests that left it 0) with the asked time to
/// live, raised to `min_ttl`.
pub(crate) fn grant(
    w: &mut Writes<'_, '_>,
    req: &LeaseGrantRequest,
    min_ttl: i64,
) -> Result<LeaseGrantResponse> {
    if req.id == 0 {
        // Id 0 means "no lease"; etcd's lessor answers it so too.
        return Err(MvccError::LeaseNotFound(0));
    }
    if req.ttl > MAX_TTL {
        return Err(MvccError::LeaseTtlTooLarge);
    }
    if exists(&*w.txn, req.id)? {
        return Err(MvccError::LeaseExists(req.id));
    }
    let ttl = req.ttl.max(min_ttl);
    let record = Lease {
        id: req.id,
        ttl,
        remaining_ttl: 0,
    };
    w.txn
        .bucket(LEASE)?
        .put(&lease_key(req.id), &record.encode_to_vec())?;
    Ok(LeaseGrantResponse {
        header: header(w.main - 1),
        id: req.id,
        ttl,
        error: String::new(),
    })
}

/// Revokes lease `req.id`, deleting its keys.
pub(crate) fn revoke(
    w: &mut Writes<'_, '_>,
    req: &LeaseRevokeRequest,
) -> Result<LeaseRevokeResponse> {
    if !exists(&*w.txn, req.id)? {
        return Err(MvccError::LeaseNotFound(req.id));
    }
    let keys = keys_of(&*w.txn, req.id)?
        .into_iter()
        .map(|key| Doomed::new(key, req.id))
        .collect::<Vec<_>>();
    w.delete_all(&keys)?;
    w.txn.bucket(LEASE)?.delete(&lease_key(req.id))?;
    let revision = if keys.is_empty() { w.main - 1 } else { w.main };
    Ok(LeaseRevokeResponse {
        header: header(revision),
    })
}

/// Records each lease's remaining time to live (leases revoked meanwhile are passed over, as etcd
/// passes them over). Changes no key: the revision stays.
pub(crate) fn checkpoint(
    w: &mut Writes<'_, '_>,
    req: &LeaseCheckpointRequest,
) -> Result<LeaseCheckpointResponse> {
    for c in &req.checkpoints {
        let Some(stored) = record(&*w.txn, c.id)? else {
            continue;
        };
        let record = Lease {
            remaining_ttl: c.remaining_ttl,
            ..stored
        };
        w.txn
            .bucket(LEASE)?
            .put(&lease_key(c.id), &record.encode_to_vec())?;
    }
    Ok(LeaseCheckpointResponse {
        header: header(w.main - 1),
    })
}

/// Lease `id`'s record, if it exists.
fn record(view: &dyn View, id: i64) -> Result<Option<Lease>> {
    let Some(leases) = view.view(LEASE)? else {
        return Ok(None);
    };
    leases
        .get(&lease_key(id))?
        .map(|value| Lease::decode(value).map_err(|_| corrupt("a lease record does not decode")))
        .transpose()
}
