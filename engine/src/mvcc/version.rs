//! What keelson's index records for each version of a key (the value under its index key): enough
//! to answer keys-only and count-only ranges, compares and filters without reading the `key`
//! bucket, which holds the full `KeyValue`.
//!
//! Layout (little-endian, 25 bytes): flags (bit 0: tombstone), create revision, version, lease.

/// One version of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Version {
    /// The key was deleted at this revision.
    pub tombstone: bool,
    /// Revision that created the key's current generation (0 for a tombstone).
    pub create_revision: i64,
    /// Changes in the generation so far (0 for a tombstone).
    pub version: i64,
    /// Attached lease (0: none).
    pub lease: i64,
}

const LEN: usize = 25;

impl Version {
    /// A deletion.
    pub fn tombstone() -> Self {
        Version {
            tombstone: true,
            ..Version::default()
        }
    }

    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = u8::from(self.tombstone);
        b[1..9].copy_from_slice(&self.create_revision.to_le_bytes());
        b[9..17].copy_from_slice(&self.version.to_le_bytes());
        b[17..25].copy_from_slice(&self.lease.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != LEN || b[0] > 1 {
            return None;
        }
        let field = |at: usize| i64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        Some(Version {
            tombstone: b[0] == 1,
            create_revision: field(1),
            version: field(9),
            lease: field(17),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_other_lengths() {
        let v = Version {
            tombstone: false,
            create_revision: 5,
            version: 3,
            lease: -7,
        };
        assert_eq!(Version::decode(&v.encode()), Some(v));
        assert_eq!(
            Version::decode(&Version::tombstone().encode()),
            Some(Version::tombstone())
        );
        assert_eq!(Version::decode(&[0; 24]), None);
    }
}
