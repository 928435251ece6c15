//! Joining an existing cluster (`--initial-cluster-state existing` on an empty data dir): as etcd
//! asks the members' peer URLs for the cluster (`GET /members`), a joining member dials each other
//! member of its `--initial-cluster` and says a [`Hello`] addressed to nobody (cluster, sender and
//! receiver all 0). A member answers it with an accepting [`Verdict`] and the cluster as it is
//! ([`encode`]): its id, then its members. The joining member then checks its `--initial-cluster`
//! against them as etcd does (the same members, matched by peer URLs) and takes their ids and the
//! cluster's id ([`assign`]).
//!
//! Runs on: the raft core (answering, in the listener); the main thread (asking, before any
//! executor starts).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use keelson_engine::mvcc::members::Member;

use super::frame::Hello;
use super::transport::Verdict;

/// How long asking one member may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest answer a joining member reads.
const MAX_ANSWER: usize = 1 << 20;

/// The hello that asks for the cluster.
pub const ASK: Hello = Hello {
    cluster_id: 0,
    from: 0,
    to: 0,
};

/// The answer's bytes after the verdict: the cluster id (8 bytes), the members' length (4 bytes),
/// then the members as a JSON list of etcd's member JSON.
pub fn encode(cluster_id: u64, members: &[Member]) -> Vec<u8> {
    let mut json = vec![b'['];
    for (i, member) in members.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        json.extend(member.to_json());
    }
    json.push(b']');
    let mut out = cluster_id.to_be_bytes().to_vec();
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend(json);
    out
}

/// The members an answer lists.
fn decode(bytes: &[u8]) -> Result<Vec<Member>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the members do not decode: {e}"))?;
    let list = value.as_array().ok_or("the members are not a list")?;
    list.iter()
        .map(|m| {
            Member::from_json(m.to_string().as_bytes()).ok_or_else(|| format!("not a member: {m}"))
        })
        .collect()
}

/// Asks the member at `url` for the cluster.
fn ask(url: &str) -> Result<(u64, Vec<Member>), String> {
    use std::net::ToSocketAddrs;
    let host_port = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: not an http:// peer URL"))?
        .trim_end_matches('/');
    let addr = host_port
        .to_socket_addrs()
        .map_err(|e| format!("{url}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: no address"))?;
    let io = |e: std::io::Error| format!("{url}: {e}");
    let mut stream = TcpStream::connect_timeout(&addr, ASK_TIMEOUT).map_err(io)?;
    stream.set_read_timeout(Some(ASK_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(ASK_TIMEOUT)).map_err(io)?;
    stream.write_all(&ASK.encode()).map_err(io)?;
    let mut head = [0u8; 13];
    stream.read_exact(&mut head).map_err(io)?;
    if Verdict::from_byte(head[0]) != Some(Verdict::Accepted) {
        return Err(format!("{url}: the member did not answer"));
    }
    let cluster_id = u64::from_be_bytes(head[1..9].try_into().expect("8 bytes"));
    let len = u32::from_be_bytes(head[9..13].try_into().expect("4 bytes")) as usize;
    if len > MAX_ANSWER {
        return Err(format!("{url}: an answer of {len} bytes"));
    }
    let mut json = vec![0u8; len];
    stream.read_exact(&mut json).map_err(io)?;
    let members = decode(&json).map_err(|e| format!("{url}: {e}"))?;
    Ok((cluster_id, members))
}

/// Asks the members at `urls` in turn for the cluster; the first answer counts. The error is
/// etcd's, with every member's failure.
pub fn fetch(urls: &[String]) -> Result<(u64, Vec<Member>), String> {
    let mut failures = Vec::new();
    for url in urls {
        match ask(url) {
            Ok(cluster) => return Ok(cluster),
            Err(e) => failures.push(e),
        }
    }
    Err(format!(
        "cannot fetch cluster info from peer urls: could not retrieve cluster information from the \
         given URLs ({})",
        failures.join("; ")
    ))
}

/// Checks this member's view of the cluster (`local`, from `--initial-cluster`) against the
/// cluster's `existing` members as etcd does, and gives each local member its existing id.
pub fn assign(local: &mut [Member], existing: &[Member]) -> Result<(), String> {
    if local.len() != existing.len() {
        return Err("error validating peerURLs: member count is unequal".into());
    }
    for e in existing {
        let mut urls = e.peer_urls.clone();
        urls.sort();
        let matching = local.iter_mut().find(|l| {
            let mut mine = l.peer_urls.clone();
            mine.sort();
            mine == urls
        });
        match matching {
            Some(l) => l.id = e.id,
            None => {
                return Err(format!(
                    "error validating peerURLs: PeerURLs: no match found for existing member \
                     ({:x}, {:?})",
                    e.id, e.peer_urls
                ));
            }
        }
    }
    Ok(())
}

/// Whether `hello` asks for the cluster.
pub fn is_ask(hello: &Hello) -> bool {
    *hello == ASK
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, url: &str) -> Member {
        Member {
            id,
            peer_urls: vec![url.into()],
            ..Member::default()
        }
    }

    #[test]
    fn an_answer_reads_back_and_local_members_take_the_existing_ids() {
        let existing = vec![member(7, "http://a:1"), member(9, "http://b:1")];
        let bytes = encode(0xabc, &existing);
        assert_eq!(u64::from_be_bytes(bytes[..8].try_into().unwrap()), 0xabc);
        assert_eq!(decode(&bytes[12..]).unwrap(), existing);
        let mut local = vec![member(1, "http://b:1"), member(2, "http://a:1")];
        assign(&mut local, &existing).unwrap();
        assert_eq!((local[0].id, local[1].id), (9, 7));
        let mut short = vec![member(1, "http://a:1")];
        assert!(
            assign(&mut short, &existing)
                .unwrap_err()
                .contains("unequal")
        );
        let mut other = vec![member(1, "http://a:1"), member(2, "http://c:1")];
        assert!(
            assign(&mut other, &existing)
                .unwrap_err()
                .contains("no match")
        );
    }
}
