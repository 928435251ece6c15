//! The cluster's members, as etcd keeps them in its `members` bucket: the member id in lowercase
//! hex → the member as JSON, etcd's own field names (`id`, `peerURLs`, `isLearner` when set, `name`
//! and `clientURLs` once known). etcd's tools and etcd itself read the bucket, so the bytes follow
//! etcd's encoding.
//!
//! Members change only through raft ([`Change`], applied by `Store::apply`), except the seed: a new
//! cluster's members, written once into an empty bucket from the flags every member of that cluster
//! was started with ([`super::Store::seed_members`]) — what etcd's first log entries (a
//! configuration change per initial member) write.
//!
//! A configuration change (add, promote, remove, update) is checked as etcd checks it when it is
//! applied ([`apply`]): a removed id is never reused, an added id or peer URL must be new, a
//! promotion is of a learner, the learners stay within the store's `max_learners`. A change
//! refused there changes nothing, and the raft core does not apply it to raft either (etcd's
//! `ValidateConfigurationChange`). A removed member's id goes to `members_removed`.
//!
//! Invariants: a [`Change::Attributes`] for a member the bucket does not hold changes nothing (etcd
//! ignores a removed member's publish); a member's id and raft attributes (peer URLs, learner) are
//! never changed by its attributes.

use serde_json::Value;

use super::error::{MvccError, Result};
use super::read::{corrupt, decode_all};
use super::schema::{MEMBERS, MEMBERS_REMOVED};
use crate::pagefile::{View, WriteTxn};

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Member {
    /// Its id.
    pub id: u64,
    /// The URLs its peers reach it on.
    pub peer_urls: Vec<String>,
    /// Whether it is a learner (a member that does not vote).
    pub is_learner: bool,
    /// Its name (empty until it publishes, for a member added at run time).
    pub name: String,
    /// The URLs its clients reach it on (empty until it publishes).
    pub client_urls: Vec<String>,
}

/// A change to the members, carried by the raft log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A member published its name and client URLs (etcd's v2 `PUT /0/members/<id>/attributes`).
    Attributes {
        /// The member.
        id: u64,
        /// Its name.
        name: String,
        /// Its client URLs.
        client_urls: Vec<String>,
    },
    /// A member joins, with its id, peer URLs and learner flag (raft's `AddNode` or
    /// `AddLearnerNode`).
    Add(Member),
    /// A learner becomes a voter (raft's `AddNode` with etcd's `isPromote`).
    Promote(u64),
    /// A member leaves for good (raft's `RemoveNode`).
    Remove(u64),
    /// A member's peer URLs change (raft's `UpdateNode`).
    Update {
        /// The member.
        id: u64,
        /// Its new peer URLs.
        peer_urls: Vec<String>,
    },
}

impl Member {
    /// The member as etcd's JSON: Go's field order, empty optional fields left out.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = format!(
            "{{\"id\":{},\"peerURLs\":{}",
            self.id,
            json(&self.peer_urls)
        );
        if self.is_learner {
            out.push_str(",\"isLearner\":true");
        }
        if !self.name.is_empty() {
            out.push_str(&format!(",\"name\":{}", json(&self.name)));
        }
        if !self.client_urls.is_empty() {
            out.push_str(&format!(",\"clientURLs\":{}", json(&self.client_urls)));
        }
        out.push('}');
        out.into_bytes()
    }

    /// The member as etcd's configuration change context: its JSON with etcd's `isPromote` flag
    /// (a promotion carries only the id).
    pub fn to_context(&self, is_promote: bool) -> Vec<u8> {
        let mut out = self.to_json();
        if is_promote {
            out.pop();
            out.extend_from_slice(b",\"isPromote\":true}");
        }
        out
    }

    /// A member from a configuration change's context, and whether it is a promotion (`None`:
    /// not a member's JSON).
    pub fn from_context(bytes: &[u8]) -> Option<(Member, bool)> {
        let value: Value = serde_json::from_slice(bytes).ok()?;
        let is_promote = value.get("isPromote").map_or(Some(false), Value::as_bool)?;
        let mut member = Member::from_json(bytes);
        if is_promote && member.is_none() {
            // etcd 3.4's promotion context names only the id.
            member = Some(Member {
                id: value.get("id")?.as_u64()?,
                ..Member::default()
            });
        }
        Some((member?, is_promote))
    }

    /// A member from etcd's JSON (`None`: not a member's JSON).
    pub fn from_json(bytes: &[u8]) -> Option<Member> {
        let value: Value = serde_json::from_slice(bytes).ok()?;
        let object = value.as_object()?;
        Some(Member {
            id: object.get("id")?.as_u64()?,
            peer_urls: strings(object.get("peerURLs"))?,
            is_learner: object
                .get("isLearner")
                .map_or(Some(false), Value::as_bool)?,
            name: object.get("name").map_or(Some(""), Value::as_str)?.into(),
            client_urls: strings(object.get("clientURLs"))?,
        })
    }
}

/// `value` as JSON (strings escaped as JSON escapes them).
fn json(value: &(impl serde::Serialize + ?Sized)) -> String {
    serde_json::to_string(value).expect("strings and lists of strings serialize")
}

/// A JSON list of strings (absent or null: empty).
fn strings(value: Option<&Value>) -> Option<Vec<String>> {
    match value {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(value) => value
            .as_array()?
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect(),
    }
}

/// A member id as etcd's bucket key: lowercase hex, no leading zeros.
fn key(id: u64) -> Vec<u8> {
    format!("{id:x}").into_bytes()
}

/// Every member, in the bucket's order.
pub fn members(view: &dyn View) -> Result<Vec<Member>> {
    decode_all(view, MEMBERS, |_, value| {
        // A nested bucket (`None`) is not a member: etcd keeps none here.
        value
            .map(|value| {
                Member::from_json(value).ok_or_else(|| corrupt("a member does not decode"))
            })
            .transpose()
    })
}

/// Makes `members` the bucket's members — what a restored snapshot's new cluster does, as etcd's
/// restore does, forgetting the removed ones too.
pub(crate) fn replace(txn: &mut WriteTxn<'_>, members: &[Member]) -> Result<()> {
    for name in [MEMBERS, MEMBERS_REMOVED] {
        txn.create_bucket_if_missing(name)?;
        txn.delete_bucket(name)?;
        txn.create_bucket(name)?;
    }
    let mut bucket = txn.bucket(MEMBERS)?;
    for member in members {
        bucket.put(&key(member.id), &member.to_json())?;
    }
    Ok(())
}

/// The ids of every member removed from the cluster.
pub fn removed(view: &dyn View) -> Result<Vec<u64>> {
    decode_all(view, MEMBERS_REMOVED, |key, _| {
        std::str::from_utf8(key)
            .ok()
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .map(Some)
            .ok_or_else(|| corrupt("a removed member's id does not decode"))
    })
}

/// Whether member `id` was removed from the cluster.
pub fn is_removed(view: &dyn View, id: u64) -> Result<bool> {
    match view.view(MEMBERS_REMOVED)? {
        Some(bucket) => Ok(bucket.get(&key(id))?.is_some()),
        None => Ok(false),
    }
}

/// Checks `change` against the members as they are, as etcd checks a configuration change.
fn check(view: &dyn View, change: &Change, max_learners: usize) -> Result<()> {
    let id = match change {
        Change::Attributes { .. } => return Ok(()),
        Change::Add(m) => m.id,
        Change::Promote(id) | Change::Remove(id) | Change::Update { id, .. } => *id,
    };
    if is_removed(view, id)? {
        return Err(MvccError::MemberRemoved);
    }
    let members = members(view)?;
    let found = members.iter().find(|m| m.id == id);
    let url_taken = |urls: &[String]| {
        members
            .iter()
            .filter(|m| m.id != id)
            .any(|m| m.peer_urls.iter().any(|u| urls.contains(u)))
    };
    match change {
        Change::Attributes { .. } => Ok(()),
        Change::Add(_) if found.is_some() => Err(MvccError::MemberExists),
        Change::Add(m) if url_taken(&m.peer_urls) => Err(MvccError::PeerUrlExists),
        Change::Add(m)
            if m.is_learner && members.iter().filter(|m| m.is_learner).count() >= max_learners =>
        {
            Err(MvccError::TooManyLearners)
        }
        Change::Add(_) => Ok(()),
        Change::Promote(_) => match found {
            None => Err(MvccError::MemberNotFound),
            Some(m) if !m.is_learner => Err(MvccError::MemberNotLearner),
            Some(_) => Ok(()),
        },
        Change::Remove(_) if found.is_none() => Err(MvccError::MemberNotFound),
        Change::Remove(_) => Ok(()),
        Change::Update { .. } if found.is_none() => Err(MvccError::MemberNotFound),
        Change::Update { peer_urls, .. } if url_taken(peer_urls) => Err(MvccError::PeerUrlExists),
        Change::Update { .. } => Ok(()),
    }
}

/// Applies `change` if etcd's checks allow it (the learners at most `max_learners`); returns the
/// members after it, by id.
pub(crate) fn apply(
    txn: &mut WriteTxn<'_>,
    change: &Change,
    max_learners: usize,
) -> Result<Vec<Member>> {
    check(&*txn, change, max_learners)?;
    let stored = |txn: &mut WriteTxn<'_>, id: u64| -> Result<Option<Member>> {
        let bucket = txn.bucket(MEMBERS)?;
        match bucket.get(&key(id))? {
            Some(bytes) => Ok(Some(
                Member::from_json(bytes).ok_or_else(|| corrupt("a member does not decode"))?,
            )),
            None => Ok(None),
        }
    };
    let changed = match change {
        Change::Attributes {
            id,
            name,
            client_urls,
        } => stored(txn, *id)?.map(|member| Member {
            name: name.clone(),
            client_urls: client_urls.clone(),
            ..member
        }),
        Change::Add(member) => Some(Member {
            name: String::new(),
            client_urls: Vec::new(),
            ..member.clone()
        }),
        Change::Promote(id) => stored(txn, *id)?.map(|member| Member {
            is_learner: false,
            ..member
        }),
        Change::Update { id, peer_urls } => stored(txn, *id)?.map(|member| Member {
            peer_urls: peer_urls.clone(),
            ..member
        }),
        Change::Remove(id) => {
            txn.bucket(MEMBERS)?.delete(&key(*id))?;
            txn.create_bucket_if_missing(MEMBERS_REMOVED)?;
            txn.bucket(MEMBERS_REMOVED)?.put(&key(*id), b"removed")?;
            None
        }
    };
    if let Some(member) = changed {
        txn.bucket(MEMBERS)?
            .put(&key(member.id), &member.to_json())?;
    }
    let mut all = members(&*txn)?;
    all.sort_unstable_by_key(|m| m.id);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_is_written_as_etcd_writes_it_and_read_back() {
        let member = Member {
            id: 0xf212_edd0_20c9_968f,
            peer_urls: vec!["http://127.0.0.1:2380".into()],
            name: "m1".into(),
            ..Member::default()
        };
        // etcd's encoding/json of membership.Member: the id as a number, empty fields left out.
        assert_eq!(
            String::from_utf8(member.to_json()).unwrap(),
            r#"{"id":17443265784918414991,"peerURLs":["http://127.0.0.1:2380"],"name":"m1"}"#
        );
        assert_eq!(Member::from_json(&member.to_json()), Some(member.clone()));
        let published = Member {
            is_learner: true,
            client_urls: vec!["http://127.0.0.1:2379".into()],
            ..member
        };
        assert_eq!(
            Member::from_json(&published.to_json()),
            Some(published.clone())
        );
        assert_eq!(Member::from_json(b"{\"peerURLs\":[]}"), None);
        assert_eq!(key(0xab), b"ab");
    }

    #[test]
    fn a_configuration_change_context_reads_back_and_etcds_promotion_names_only_the_id() {
        let member = Member {
            id: 7,
            peer_urls: vec!["http://10.0.0.4:2380".into()],
            is_learner: true,
            ..Member::default()
        };
        assert_eq!(
            Member::from_context(&member.to_context(false)),
            Some((member.clone(), false))
        );
        // etcd 3.4's promotion: `ConfigChangeContext{Member{ID}, IsPromote: true}`.
        let etcd = br#"{"id":7,"peerURLs":null,"isPromote":true}"#;
        let (promoted, is_promote) = Member::from_context(etcd).unwrap();
        assert_eq!((promoted.id, is_promote), (7, true));
        assert_eq!(Member::from_context(b"{\"isPromote\":true}"), None);
    }

    fn apply_all(changes: &[Change]) -> Vec<super::Result<Vec<Member>>> {
        use crate::mvcc::{Entry, Request, Response, Store};
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path().join("db"), Default::default()).unwrap();
        let seed = Member {
            id: 1,
            peer_urls: vec!["http://a:2380".into()],
            name: "a".into(),
            ..Member::default()
        };
        store.set_members(&[seed], true).unwrap();
        let entries: Vec<Entry> = changes
            .iter()
            .enumerate()
            .map(|(i, c)| Entry {
                index: i as u64 + 1,
                term: 1,
                request: Request::Members(c.clone()),
            })
            .collect();
        store
            .apply(&entries)
            .unwrap()
            .into_iter()
            .map(|applied| match applied.response {
                Ok(Response::Members(members)) => Ok(members),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e),
            })
            .collect()
    }

    #[test]
    fn configuration_changes_are_checked_as_etcd_checks_them() {
        let learner = |id: u64, url: &str| Member {
            id,
            peer_urls: vec![url.into()],
            is_learner: true,
            ..Member::default()
        };
        let got = apply_all(&[
            Change::Add(learner(2, "http://b:2380")),
            Change::Add(learner(2, "http://c:2380")),
            Change::Add(learner(3, "http://a:2380")),
            Change::Add(learner(3, "http://c:2380")),
            Change::Promote(1),
            Change::Promote(2),
            Change::Update {
                id: 2,
                peer_urls: vec!["http://a:2380".into()],
            },
            Change::Update {
                id: 2,
                peer_urls: vec!["http://b2:2380".into()],
            },
            Change::Remove(2),
            Change::Remove(2),
            Change::Add(learner(2, "http://d:2380")),
            Change::Promote(9),
        ]);
        let outcomes: Vec<String> = got
            .iter()
            .map(|r| match r {
                Ok(members) => format!("ok {}", members.len()),
                Err(e) => e.to_string(),
            })
            .collect();
        assert_eq!(
            outcomes,
            [
                "ok 2",
                "membership: ID exists",
                "membership: peerURL exists",
                "membership: too many learner members in cluster",
                "membership: can only promote a learner member",
                "ok 2",
                "membership: peerURL exists",
                "ok 2",
                "ok 1",
                "membership: ID removed",
                "membership: ID removed",
                "membership: ID not found",
            ]
        );
        let promoted_and_moved = got[7].as_ref().unwrap();
        assert!(!promoted_and_moved[1].is_learner);
        assert_eq!(promoted_and_moved[1].peer_urls, ["http://b2:2380"]);
    }
}
