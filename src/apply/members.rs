//! Membership in the raft log, in etcd 3.4's forms. A member publishes its name and client URLs as
//! etcd 3.4 does: a v2 store request, `PUT /0/members/<id>/attributes` with the attributes as JSON,
//! proposed as a raft entry of its own ([`publish_request`]). Applying one ([`from_v2`]) updates the
//! member in the `members` bucket; any other v2 request (etcd's v2 store, which keelson does not
//! keep) applies as nothing.
//!
//! Runs on: the raft core.

use keelson_engine::mvcc::members::Change;
use keelson_proto::etcdserverpb::Request as V2Request;
use serde_json::Value;

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
