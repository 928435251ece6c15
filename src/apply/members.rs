//! Membership in the raft log, in etcd 3.4's forms. A member publishes its name and client URLs as
//! etcd 3.4 does: a v2 store request, `PUT /0/members/<id>/attributes` with the attributes as JSON,
//! proposed as a raft entry of its own ([`publish_request`]). Applying one ([`from_v2`]) updates the
//! member in the `members` bucket; any other v2 request (etcd's v2 store, which keelson does not
//! keep) applies as nothing.
//!
//! Membership changes are raft configuration changes carrying etcd's context: the member's JSON
//! (with `isPromote` for a promotion). [`proposal`] makes one of a [`Change`], [`from_conf_change`]
//! reads one back from a committed entry, and [`raft_change`] is what an applied change does to
//! raft's configuration (an update of peer URLs does nothing there).
//!
//! Runs on: the raft core.

use keelson_engine::mvcc::members::{Change, Member};
use keelson_proto::etcdserverpb::Request as V2Request;
use keelson_proto::raftpb::{ConfChange, ConfChangeType};
use serde_json::Value;

/// The configuration change, as etcd logs it, that proposes `change` as request `id` (`None`: a
/// change that is no configuration change — a publish of attributes).
pub fn proposal(id: u64, change: &Change) -> Option<ConfChange> {
    let (kind, node_id, context) = match change {
        Change::Attributes { .. } => return None,
        Change::Add(member) if member.is_learner => (
            ConfChangeType::ConfChangeAddLearnerNode,
            member.id,
            member.to_context(false),
        ),
        Change::Add(member) => (
            ConfChangeType::ConfChangeAddNode,
            member.id,
            member.to_context(false),
        ),
        Change::Promote(member) => {
            let promoted = Member {
                id: *member,
                ..Member::default()
            };
            (
                ConfChangeType::ConfChangeAddNode,
                *member,
                promoted.to_context(true),
            )
        }
        Change::Remove(member) => (ConfChangeType::ConfChangeRemoveNode, *member, Vec::new()),
        Change::Update { id, peer_urls } => {
            let updated = Member {
                id: *id,
                peer_urls: peer_urls.clone(),
                ..Member::default()
            };
            (ConfChangeType::ConfChangeUpdateNode, *id, updated.to_json())
        }
    };
    Some(ConfChange {
        id,
        r#type: kind as i32,
        node_id,
        context,
    })
}

/// The change a committed configuration change makes to the members, and its request id (`None`:
/// its context is not etcd's, or names another member than the change does).
pub fn from_conf_change(cc: &ConfChange) -> Option<(Change, u64)> {
    let kind = ConfChangeType::try_from(cc.r#type).ok()?;
    let change = match kind {
        ConfChangeType::ConfChangeAddNode | ConfChangeType::ConfChangeAddLearnerNode => {
            let (member, is_promote) = Member::from_context(&cc.context)?;
            if member.id != cc.node_id {
                return None;
            }
            if is_promote {
                Change::Promote(member.id)
            } else {
                let is_learner = kind == ConfChangeType::ConfChangeAddLearnerNode;
                Change::Add(Member {
                    is_learner,
                    ..member
                })
            }
        }
        ConfChangeType::ConfChangeRemoveNode => Change::Remove(cc.node_id),
        ConfChangeType::ConfChangeUpdateNode => {
            let member = Member::from_json(&cc.context)?;
            if member.id != cc.node_id {
                return None;
            }
            Change::Update {
                id: member.id,
                peer_urls: member.peer_urls,
            }
        }
    };
    Some((change, cc.id))
}

/// What an applied `change` does to raft's configuration, in raft-rs's terms (`None`: nothing).
pub fn raft_change(change: &Change) -> Option<raft::eraftpb::ConfChange> {
    use raft::eraftpb::ConfChangeType as Raft;
    let (kind, node_id) = match change {
        Change::Attributes { .. } | Change::Update { .. } => return None,
        Change::Add(member) if member.is_learner => (Raft::AddLearnerNode, member.id),
        Change::Add(member) => (Raft::AddNode, member.id),
        Change::Promote(id) => (Raft::AddNode, *id),
        Change::Remove(id) => (Raft::RemoveNode, *id),
    };
    let mut cc = raft::eraftpb::ConfChange {
        node_id,
        ..raft::eraftpb::ConfChange::default()
    };
    cc.set_change_type(kind);
    Some(cc)
}

/// The v2 store path a member's attributes live at.
fn attributes_path(id: u64) -> String {
    format!("/0/members/{id:x}/attributes")
}

/// The entry data of member `id` publishing `name` and `client_urls`, as proposal `request_id`.
pub fn publish_request(request_id: u64, id: u64, name: &str, client_urls: &[String]) -> V2Request {
    // Go's encoding of etcd's `Attributes`: its field order.
    let attributes = format!(
        "{{\"name\":{},\"clientURLs\":{}}}",
        Value::from(name),
        Value::from(client_urls.to_vec())
    );
    V2Request {
        id: Some(request_id),
        method: Some("PUT".into()),
        path: Some(attributes_path(id)),
        val: Some(attributes),
        ..V2Request::default()
    }
}

/// The change a v2 request makes to the members (`None`: nothing keelson keeps).
pub fn from_v2(request: &V2Request) -> Option<Change> {
    if request.method.as_deref() != Some("PUT") {
        return None;
    }
    let id = request
        .path
        .as_deref()?
        .strip_prefix("/0/members/")?
        .strip_suffix("/attributes")?;
    let id = u64::from_str_radix(id, 16).ok()?;
    let attributes: Value = serde_json::from_str(request.val.as_deref()?).ok()?;
    let name = attributes
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let client_urls = match attributes.get("clientURLs") {
        Some(Value::Array(urls)) => urls
            .iter()
            .filter_map(|u| u.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    Some(Change::Attributes {
        id,
        name: name.to_string(),
        client_urls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_reads_back_as_the_attributes_it_carries() {
        let urls = vec!["http://127.0.0.1:2379".to_string()];
        let request = publish_request(7, 0x8e9e_05c5_2164_694d, "default", &urls);
        assert_eq!(
            request.path.as_deref(),
            Some("/0/members/8e9e05c52164694d/attributes")
        );
        // etcd 3.4's own publish, as its log holds it.
        assert_eq!(
            request.val.as_deref(),
            Some(r#"{"name":"default","clientURLs":["http://127.0.0.1:2379"]}"#)
        );
        assert_eq!(
            from_v2(&request),
            Some(Change::Attributes {
                id: 0x8e9e_05c5_2164_694d,
                name: "default".into(),
                client_urls: urls,
            })
        );
        let other = V2Request {
            method: Some("PUT".into()),
            path: Some("/0/version".into()),
            val: Some("3.4.0".into()),
            ..V2Request::default()
        };
        assert_eq!(from_v2(&other), None);
    }
}
