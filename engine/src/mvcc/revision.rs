//! etcd's revisions and how the `key` bucket names them: 8-byte big-endian main revision, `_`,
//! 8-byte big-endian sub revision, and a `t` after a deletion (a tombstone). Big-endian so that
//! byte order equals numeric order: the bucket is ordered by revision.

/// A revision: the main revision of a write (one per request that changes the store) and the
/// position of a change within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision {
    /// The store revision of the request.
    pub main: i64,
    /// The change's position within the request (0, 1, …).
    pub sub: i64,
}

/// Bytes of a revision key (a tombstone's has one more).
pub(crate) const REVISION_KEY_LEN: usize = 17;
/// Marks a tombstone's revision key.
const TOMBSTONE_MARK: u8 = b't';

impl Revision {
    /// A revision.
    pub fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }

    /// Its `key` bucket key; `tombstone` appends the deletion mark.
    pub fn key(&self, tombstone: bool) -> Vec<u8> {
        let mut k = Vec::with_capacity(REVISION_KEY_LEN + 1);
        k.extend_from_slice(&self.main.to_be_bytes());
        k.push(b'_');
        k.extend_from_slice(&self.sub.to_be_bytes());
        if tombstone {
            k.push(TOMBSTONE_MARK);
        }
        k
    }

    /// Parses a `key` bucket key: the revision, and whether it is a tombstone's.
    pub fn parse_key(k: &[u8]) -> Option<(Revision, bool)> {
        let tombstone = match k.len() {
            REVISION_KEY_LEN => false,
            18 if k[17] == TOMBSTONE_MARK => true,
            _ => return None,
        };
        if k[8] != b'_' {
            return None;
        }
        let main = i64::from_be_bytes(k[..8].try_into().ok()?);
        let sub = i64::from_be_bytes(k[9..17].try_into().ok()?);
        Some((Revision { main, sub }, tombstone))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sort_by_revision() {
        let r = Revision::new(0x0102, 3);
        assert_eq!(
            r.key(false),
            [0, 0, 0, 0, 0, 0, 1, 2, b'_', 0, 0, 0, 0, 0, 0, 0, 3]
        );
        assert_eq!(Revision::parse_key(&r.key(true)), Some((r, true)));
        assert_eq!(Revision::parse_key(&r.key(false)), Some((r, false)));
        assert_eq!(Revision::parse_key(b"short"), None);
        let mut keys: Vec<Vec<u8>> = [(300, 0), (2, 5), (2, 0), (256, 1)]
            .iter()
            .map(|&(m, s)| Revision::new(m, s).key(false))
            .collect();
        keys.sort();
        let sorted: Vec<Revision> = keys
            .iter()
            .map(|k| Revision::parse_key(k).unwrap().0)
            .collect();
        assert_eq!(
            sorted,
            [
                Revision::new(2, 0),
                Revision::new(2, 5),
                Revision::new(256, 1),
                Revision::new(300, 0)
            ]
        );
    }
}
