//! The requests the raft log carries to the store, and their responses — one table, [`kinds!`],
//! from which every conversion follows: a request kind's etcd request and response messages, its
//! field in etcd's `InternalRaftRequest` (so the log means what etcd's log means), the `From` that
//! makes a [`Request`] of an etcd request, the `TryFrom` that takes the etcd response back out of a
//! [`Response`], and the header every response carries. Adding a kind is a line here, an arm in
//! [`super::Store::apply`], and the handler at the API edge.

use keelson_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, CompactionRequest, CompactionResponse, DeleteRangeRequest,
    DeleteRangeResponse, InternalRaftRequest, LeaseCheckpointRequest, LeaseCheckpointResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse, PutRequest,
    PutResponse, RangeResponse, RequestHeader, ResponseHeader, TxnRequest, TxnResponse,
};

/// An etcd response: it carries a header (the store fills the revision, the server the rest).
pub trait WithHeader {
    /// The response's header.
    fn header_mut(&mut self) -> &mut Option<ResponseHeader>;
}

impl WithHeader for RangeResponse {
    fn header_mut(&mut self) -> &mut Option<ResponseHeader> {
        &mut self.header
    }
}

/// Defines [`Request`], [`Response`] and their conversions from the table of request kinds:
/// `Kind(EtcdRequest) -> EtcdResponse, internal_raft_request_field;`.
macro_rules! kinds {
    ($( $(#[$doc:meta])* $kind:ident($request:ty) -> $response:ty, $field:ident; )*) => {
        /// A request the raft log carries to the store.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Request {
            $( $(#[$doc])* $kind($request), )*
            /// A change to the cluster's members. It travels in etcd's forms — a v2 publish
            /// request, a raft configuration change — never as an `InternalRaftRequest`.
            Members(super::members::Change),
            /// An entry with nothing for the store (raft's own entries, kinds keelson does not
            /// apply), applied only as an index.
            Nothing,
        }

        /// The response to a [`Request`]. Headers carry only the revision; the server fills the
        /// rest.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Response {
            $( #[doc = concat!("To a ", stringify!($kind), ".")] $kind($response), )*
            /// To [`Request::Members`]: the members once it is applied, by id.
            Members(Vec<super::members::Member>),
            /// To [`Request::Nothing`].
            Nothing,
        }

        impl Request {
            /// The request as etcd logs it: an `InternalRaftRequest` whose header has `id`.
            pub fn into_internal(self, id: u64) -> InternalRaftRequest {
                let mut internal = InternalRaftRequest {
                    header: Some(RequestHeader {
                        id,
                        ..RequestHeader::default()
                    }),
                    ..InternalRaftRequest::default()
                };
                match self {
                    $( Request::$kind(r) => internal.$field = Some(r), )*
                    // Not an InternalRaftRequest's to carry (see the variant).
                    Request::Members(_) | Request::Nothing => {}
                }
                internal
            }

            /// The request an `InternalRaftRequest` carries, and its id (the header's, or the
            /// older top-level one).
            pub fn from_internal(internal: InternalRaftRequest) -> (Request, u64) {
                let id = internal.header.as_ref().map_or(internal.id, |h| h.id);
                $( if let Some(r) = internal.$field {
                    return (Request::$kind(r), id);
                } )*
                (Request::Nothing, id)
            }
        }

        $(
            impl From<$request> for Request {
                fn from(request: $request) -> Request {
                    Request::$kind(request)
                }
            }

            impl TryFrom<Response> for $response {
                type Error = Response;

                fn try_from(response: Response) -> Result<$response, Response> {
                    match response {
                        Response::$kind(r) => Ok(r),
                        other => Err(other),
                    }
                }
            }

            impl WithHeader for $response {
                fn header_mut(&mut self) -> &mut Option<ResponseHeader> {
                    &mut self.header
                }
            }
        )*
    };
}

kinds! {
    /// etcd's Put.
    Put(PutRequest) -> PutResponse, put;
    /// etcd's DeleteRange.
    DeleteRange(DeleteRangeRequest) -> DeleteRangeResponse, delete_range;
    /// etcd's Txn (with writes: one without is answered from a read view).
    Txn(TxnRequest) -> TxnResponse, txn;
    /// etcd's Compact.
    Compaction(CompactionRequest) -> CompactionResponse, compaction;
    /// etcd's LeaseGrant, with the id already chosen.
    LeaseGrant(LeaseGrantRequest) -> LeaseGrantResponse, lease_grant;
    /// etcd's LeaseRevoke (also how a lease expires).
    LeaseRevoke(LeaseRevokeRequest) -> LeaseRevokeResponse, lease_revoke;
    /// etcd's lease checkpoint: the leader's record of the time to live each lease has left.
    LeaseCheckpoint(LeaseCheckpointRequest) -> LeaseCheckpointResponse, lease_checkpoint;
    /// etcd's Alarm: list, raise or clear an alarm.
    Alarm(AlarmRequest) -> AlarmResponse, alarm;
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn every_kind_survives_the_log_and_comes_back_as_itself() {
        let kinds = [
            Request::Put(PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                lease: 7,
                ..PutRequest::default()
            }),
            Request::DeleteRange(DeleteRangeRequest {
                key: b"a".to_vec(),
                range_end: b"b".to_vec(),
                prev_kv: true,
            }),
            Request::Txn(TxnRequest::default()),
            Request::Compaction(CompactionRequest {
                revision: 5,
                physical: true,
            }),
            Request::LeaseGrant(LeaseGrantRequest { ttl: 10, id: 3 }),
            Request::LeaseRevoke(LeaseRevokeRequest { id: 3 }),
            Request::LeaseCheckpoint(LeaseCheckpointRequest::default()),
            Request::Alarm(AlarmRequest {
                action: 1,
                member_id: 7,
                alarm: 1,
            }),
            Request::Nothing,
        ];
        for (id, request) in kinds.into_iter().enumerate() {
            let bytes = request
                .clone()
                .into_internal(id as u64 + 40)
                .encode_to_vec();
            let decoded = InternalRaftRequest::decode(&bytes[..]).unwrap();
            assert_eq!(
                Request::from_internal(decoded),
                (request, id as u64 + 40),
                "kind {id}"
            );
        }
    }

    #[test]
    fn a_response_is_taken_out_only_as_its_own_kind() {
        let put = Response::Put(PutResponse::default());
        assert!(PutResponse::try_from(put.clone()).is_ok());
        assert_eq!(TxnResponse::try_from(put.clone()), Err(put));
    }

    #[test]
    fn an_etcd_2_entry_id_is_read_from_the_top_level_field() {
        let internal = InternalRaftRequest {
            id: 9,
            put: Some(PutRequest::default()),
            ..InternalRaftRequest::default()
        };
        assert_eq!(Request::from_internal(internal).1, 9);
    }
}
