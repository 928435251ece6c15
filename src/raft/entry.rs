//! Raft entries as etcd writes them: a normal entry's data is an `InternalRaftRequest` (etcd's
//! message and field numbers), so keelson's log means what etcd's log means. This module encodes
//! the proposals of serving cores and turns committed entries back into store requests.

use keelson_engine::mvcc;
use keelson_engine::wal;
use keelson_proto::etcdserverpb::{InternalRaftRequest, RequestHeader};
use prost::Message;
use raft::eraftpb::{Entry, EntryType};

/// A client request, ready to be proposed: etcd's `InternalRaftRequest` with `id` in its header.
pub fn proposal(id: u64, request: mvcc::Request) -> Vec<u8> {
    let mut internal = InternalRaftRequest {
        header: Some(RequestHeader {
            id,
            ..RequestHeader::default()
        }),
        ..InternalRaftRequest::default()
    };
    match request {
        mvcc::Request::Put(r) => internal.put = Some(r),
        mvcc::Request::DeleteRange(r) => internal.delete_range = Some(r),
        mvcc::Request::Txn(r) => internal.txn = Some(r),
        mvcc::Request::Compaction(r) => internal.compaction = Some(r),
        mvcc::Request::LeaseGrant(r) => internal.lease_grant = Some(r),
        mvcc::Request::LeaseRevoke(r) => internal.lease_revoke = Some(r),
        mvcc::Request::Nothing => {}
    }
    internal.encode_to_vec()
}

/// A committed entry as the store applies it, and the id of the proposal it carries (if any).
/// Entries that carry nothing for the store (raft's empty entries, configuration changes, requests
/// keelson does not apply yet) are applied as [`mvcc::Request::Nothing`]: only their index counts.
pub fn committed(entry: &Entry) -> (mvcc::Entry, Option<u64>) {
    let (request, id) =
        if entry.get_entry_type() == EntryType::EntryNormal && !entry.data.is_empty() {
            match InternalRaftRequest::decode(&entry.data[..]) {
                Ok(internal) => request_of(internal),
                Err(e) => {
                    tracing::error!(
                        index = entry.index,
                        "a committed entry is not an InternalRaftRequest ({e}); applied as empty"
                    );
                    (mvcc::Request::Nothing, None)
                }
            }
        } else {
            (mvcc::Request::Nothing, None)
        };
    (
        mvcc::Entry {
            index: entry.index,
            term: entry.term,
            request,
        },
        id,
    )
}

fn request_of(internal: InternalRaftRequest) -> (mvcc::Request, Option<u64>) {
    let id = internal.header.as_ref().map(|h| h.id).or(Some(internal.id));
    let request = if let Some(r) = internal.put {
        mvcc::Request::Put(r)
    } else if let Some(r) = internal.delete_range {
        mvcc::Request::DeleteRange(r)
    } else if let Some(r) = internal.txn {
        mvcc::Request::Txn(r)
    } else if let Some(r) = internal.compaction {
        mvcc::Request::Compaction(r)
    } else if let Some(r) = internal.lease_grant {
        mvcc::Request::LeaseGrant(r)
    } else if let Some(r) = internal.lease_revoke {
        mvcc::Request::LeaseRevoke(r)
    } else {
        mvcc::Request::Nothing
    };
    (request, id)
}

/// A raft entry as a WAL record, borrowing its payload (the WAL copies it once, into its buffer).
pub fn to_wal(entry: &Entry) -> wal::Record<'_> {
    let kind = match entry.get_entry_type() {
        EntryType::EntryNormal => wal::EntryKind::Normal,
        EntryType::EntryConfChange => wal::EntryKind::ConfChange,
        EntryType::EntryConfChangeV2 => wal::EntryKind::ConfChangeV2,
    };
    wal::Record::Entry(wal::EntryRef {
        index: entry.index,
        term: entry.term,
        kind,
        context: &entry.context,
        data: &entry.data,
    })
}

/// A WAL entry as raft sees it.
pub fn from_wal(entry: wal::Entry) -> Entry {
    let kind = match entry.kind {
        wal::EntryKind::Normal => EntryType::EntryNormal,
        wal::EntryKind::ConfChange => EntryType::EntryConfChange,
        wal::EntryKind::ConfChangeV2 => EntryType::EntryConfChangeV2,
    };
    let mut out = Entry {
        index: entry.index,
        term: entry.term,
        context: entry.context,
        data: entry.data,
        ..Entry::default()
    };
    out.set_entry_type(kind);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use keelson_proto::etcdserverpb::PutRequest;

    #[test]
    fn a_proposal_comes_back_as_the_request_it_carried() {
        let put = PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        };
        let mut entry = Entry {
            index: 7,
            term: 2,
            data: proposal(42, mvcc::Request::Put(put.clone())),
            ..Entry::default()
        };
        entry.set_entry_type(EntryType::EntryNormal);
        let (applied, id) = committed(&entry);
        assert_eq!(id, Some(42));
        assert_eq!(applied.request, mvcc::Request::Put(put));
        assert_eq!((applied.index, applied.term), (7, 2));
        let wal::Record::Entry(record) = to_wal(&entry) else {
            panic!("an entry is an entry record");
        };
        let stored = wal::Entry {
            index: record.index,
            term: record.term,
            kind: record.kind,
            context: record.context.to_vec(),
            data: record.data.to_vec(),
        };
        assert_eq!(from_wal(stored), entry);
    }
}
