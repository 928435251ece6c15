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
//! Invariants: a [`Change::Attributes`] for a member the bucket does not hold changes nothing (etcd
//! ignores a removed member's publish); a member's id and raft attributes (peer URLs, learner) are
//! never changed by its attributes.

use serde_json::Value;

use super::error::Result;
use super::read::corrupt;
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
    let Some(bucket) = view.view(MEMBERS)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut cursor = bucket.cursor();
    let mut entry = cursor.first()?;
    while let Some((_, value)) = entry {
        // A nested bucket (`None`) is not a member: etcd keeps none here.
        if let Some(value) = value {
            out.push(Member::from_json(value).ok_or_else(|| corrupt("a member does not decode"))?);
        }
        entry = cursor.next()?;
    }
    Ok(out)
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

/// Applies `change`.
pub(crate) fn apply(txn: &mut WriteTxn<'_>, change: &Change) -> Result<()> {
    match change {
        Change::Attributes {
            id,
            name,
            client_urls,
        } => {
            let mut bucket = txn.bucket(MEMBERS)?;
            let Some(stored) = bucket.get(&key(*id))? else {
                return Ok(());
            };
            let mut member =
                Member::from_json(stored).ok_or_else(|| corrupt("a member does not decode"))?;
            member.name = name.clone();
            member.client_urls = client_urls.clone();
            Ok(bucket.put(&key(*id), &member.to_json())?)
        }
    }
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
}
