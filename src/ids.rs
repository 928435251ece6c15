//! Member and cluster ids, derived exactly as etcd derives them, so the same flags give the same
//! ids as etcd (clients and tools print and compare them).
//!
//! - member id: the first 8 bytes (big-endian) of SHA-1 over the member's peer URLs, sorted and
//!   concatenated, followed by the `--initial-cluster-token`;
//! - cluster id: the first 8 bytes (big-endian) of SHA-1 over the sorted member ids, each as 8
//!   big-endian bytes;
//! - request ids (and read-index contexts): as etcd makes them unique across members and restarts,
//!   the member in the top 16 bits, then a lane (a serving core, or the raft core), then a counter
//!   started from the clock.
//!
//! Runs on: the main thread (at start-up); the results are read by every core.

use sha1::{Digest, Sha1};

fn leading_u64(digest: &[u8]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The id of a member with these peer URLs, bootstrapped with `token`.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut hash = Sha1::new();
    for url in &urls {
        hash.update(url.as_bytes());
    }
    hash.update(token.as_bytes());
    leading_u64(&hash.finalize())
}

/// The id of a cluster of these members.
pub fn cluster_id(members: impl IntoIterator<Item = u64>) -> u64 {
    let mut ids: Vec<u64> = members.into_iter().collect();
    ids.sort_unstable();
    let mut hash = Sha1::new();
    for id in ids {
        hash.update(id.to_be_bytes());
    }
    leading_u64(&hash.finalize())
}

/// The lane of the raft core's own ids (its read-index contexts); serving cores use their index.
pub const RAFT_CORE_LANE: u8 = 0xff;
/// The lane of the id a member publishes its attributes with.
pub const MEMBERSHIP_LANE: u8 = 0xfe;

/// The first of a sequence of ids unique to `member_id` and `lane`, and to this start of the
/// process (a counter from the clock's milliseconds: it does not reach the next start's first id
/// unless it counts more than 256 ids a millisecond).
pub fn first_request_id(member_id: u64, lane: u8) -> u64 {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    (member_id << 48) | (u64::from(lane) << 40) | ((millis << 8) & ((1 << 40) - 1))
}
