//! Put and DeleteRange as etcd applies them, standalone or inside a txn.

use keelson_proto::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, ResponseHeader,
};

use super::error::{MvccError, Result};
use super::lease;
use super::read::{self, End, Span};
use super::write::{Doomed, Writes};

/// A response header carrying only a revision (the server fills in the rest at the top level).
pub(crate) fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..ResponseHeader::default()
    })
}

/// How a put was checked before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checked {
    /// Standalone: check the lease, then (for `ignore_*`) that the key exists.
    No,
    /// Inside a txn: both were checked against the state before the txn.
    BeforeTxn,
}

/// Applies a Put.
pub(crate) fn put(
    w: &mut Writes<'_, '_>,
    req: &PutRequest,
    checked: Checked,
) -> Result<PutResponse> {
    if checked == Checked::No && req.lease != 0 && !lease::exists(&*w.txn, req.lease)? {
        return Err(MvccError::LeaseNotFound(req.lease));
    }
    let needs_prior = req.ignore_value || req.ignore_lease || req.prev_kv;
    let mut prior = if needs_prior {
        read::get_at(&*w.txn, &req.key, w.read_revision())?
    } else {
        None
    };
    if prior.is_none() && checked == Checked::BeforeTxn && (req.ignore_value || req.ignore_lease) {
        // The key existed before the txn (that was checked) but an earlier op of this txn deleted
        // it. etcd 3.4 crashes here; keelson keeps the txn atomic by taking what the key held
        // before the txn.
        prior = read::get_at(&*w.txn, &req.key, w.main - 1)?;
    }
    if (req.ignore_value || req.ignore_lease) && prior.is_none() {
        return Err(MvccError::KeyNotFound);
    }
    let value = match (&prior, req.ignore_value) {
        (Some(p), true) => p.value.clone(),
        _ => req.value.clone(),
    };
    let lease = match (&prior, req.ignore_lease) {
        (Some(p), true) => p.lease,
        _ => req.lease,
    };
    w.put(&req.key, value, lease)?;
    Ok(PutResponse {
        header: header(w.main),
        prev_kv: prior.filter(|_| req.prev_kv),
    })
}

/// How many keys a DeleteRange deletes at a time: a range of a million keys is read and indexed
/// in parts, so what it holds besides its events stays small.
const DELETE_PART: usize = 4096;

/// Applies a DeleteRange: every key alive in the range, in key order, at one revision.
pub(crate) fn delete_range(
    w: &mut Writes<'_, '_>,
    req: &DeleteRangeRequest,
) -> Result<DeleteRangeResponse> {
    let had_changes = w.changes > 0;
    let at = w.read_revision();
    let mut span = Span::of(&req.key, End::of(&req.range_end));
    let mut prev_kvs = Vec::new();
    let mut deleted = 0;
    loop {
        let part = read::live_part(&*w.txn, &span, at, DELETE_PART)?;
        if req.prev_kv {
            for f in &part {
                prev_kvs.push(read::fetch(&*w.txn, f.rev)?);
            }
        }
        let full = part.len() == DELETE_PART;
        let keys = part
            .into_iter()
            .map(|f| {
                Ok(Doomed {
                    key: f.key()?,
                    encoded: f.encoded,
                    lease: f.version.lease,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        w.delete_all(&keys)?;
        deleted += keys.len();
        match keys.last() {
            Some(last) if full => span.skip_past(&last.encoded),
            _ => break,
        }
    }
    // A delete that matched nothing changes nothing, and does not move the revision.
    let revision = if deleted > 0 || had_changes {
        w.main
    } else {
        w.main - 1
    };
    Ok(DeleteRangeResponse {
        header: header(revision),
        deleted: deleted as i64,
        prev_kvs,
    })
}
