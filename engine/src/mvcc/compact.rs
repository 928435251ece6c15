//! Compaction: forgetting the history below a revision, as etcd does.
//!
//! Accepting a compaction at `C` ([`schedule`]) only records it (etcd's `scheduledCompactRev`);
//! from then on reads below `C` fail. The versions go in batches ([`step`]), each its own write
//! transaction, so readers and writes carry on in between. For every key the newest version at or
//! below `C` stays, unless it is a deletion — then the key's history up to `C` goes entirely;
//! every version above `C` stays. The last batch records `finishedCompactRev`. A crash between
//! batches loses nothing: on open a compaction scheduled but not finished starts over, and batches
//! already done have nothing left to delete.

use keelson_proto::etcdserverpb::{CompactionRequest, CompactionResponse};

use super::error::{MvccError, Result};
use super::index::{self, Entry, Scan};
use super::ops::header;
use super::read::{Revisions, bucket};
use super::revision::Revision;
use super::schema::{
    FINISHED_COMPACT, INDEX, KEY, META, SCHEDULED_COMPACT, STATE, STATE_COMPACTED,
};
use crate::pagefile::WriteTxn;

/// Accepts a compaction (etcd's checks: not at or below the one already accepted, not beyond the
/// current revision) and records it as scheduled. The revision does not move.
pub(crate) fn schedule(
    txn: &mut WriteTxn<'_>,
    req: &CompactionRequest,
    revs: Revisions,
) -> Result<CompactionResponse> {
    if req.revision <= revs.compacted {
        return Err(MvccError::Compacted {
            requested: req.revision,
            compacted: revs.compacted,
        });
    }
    if req.revision > revs.current {
        return Err(MvccError::FutureRevision {
            requested: req.revision,
            current: revs.current,
        });
    }
    txn.bucket(META)?.put(
        SCHEDULED_COMPACT,
        &Revision::new(req.revision, 0).key(false),
    )?;
    Ok(CompactionResponse {
        header: header(revs.current),
    })
}

/// A version to remove.
struct Doomed {
    index_key: Vec<u8>,
    rev: Revision,
    tombstone: bool,
}

/// Removes what compaction at `at` removes for the keys from `from` (an encoded user key; empty
/// for the first), visiting about `batch` versions (whole keys only). Returns the encoded key to
/// continue from, or `None` once every key is done — then the compaction is recorded as finished
/// — and how many versions it removed.
pub(crate) fn step(
    txn: &mut WriteTxn<'_>,
    at: i64,
    from: &[u8],
    batch: usize,
) -> Result<(Option<Vec<u8>>, usize)> {
    let mut doomed = Vec::new();
    let mut resume = None;
    {
        let index = bucket(&*txn, INDEX)?;
        let mut scan = Scan::from(&index, from)?;
        let mut visited = 0;
        // The current key, and its newest version at or below `at` seen so far.
        let mut group: Option<(Vec<u8>, Option<Doomed>)> = None;
        while let Some(Entry {
            key,
            encoded,
            rev,
            version,
        }) = scan.next()?
        {
            if group
                .as_ref()
                .is_none_or(|(current, _)| current.as_slice() != encoded)
            {
                if visited >= batch {
                    resume = Some(encoded.to_vec());
                    break;
                }
                if let Some((_, Some(newest))) = group.take()
                    && newest.tombstone
                {
                    doomed.push(newest);
                }
                group = Some((encoded.to_vec(), None));
            }
            visited += 1;
            if rev.main <= at {
                let candidate = Doomed {
                    index_key: key.to_vec(),
                    rev,
                    tombstone: version.tombstone,
                };
                if let Some((_, newest)) = group.as_mut()
                    && let Some(older) = newest.replace(candidate)
                {
                    doomed.push(older);
                }
            }
        }
        if let Some((_, Some(newest))) = group
            && newest.tombstone
        {
            doomed.push(newest);
        }
    }
    for d in &doomed {
        index::remove(txn, &d.index_key)?;
        txn.bucket(KEY)?.delete(&d.rev.key(d.tombstone))?;
    }
    if resume.is_none() {
        txn.bucket(META)?
            .put(FINISHED_COMPACT, &Revision::new(at, 0).key(false))?;
        txn.bucket(STATE)?.put(STATE_COMPACTED, &at.to_le_bytes())?;
    }
    Ok((resume, doomed.len()))
}
