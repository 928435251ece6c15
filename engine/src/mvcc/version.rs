//! What keelson's index records for each version of a key (the value under its index key): enough
//! to answer keys-only and count-only ranges, compares and filters without reading the `key`
//! bucket, which holds the full `KeyValue`.
//!
//! Layout: a flags byte (bit 0: tombstone), then create revision, version and lease as protobuf
//! varints (of their two's-complement `u64`) — 4–6 bytes for most versions, at most 31. In the
//! index, a key's first version at its own revision with no lease takes no bytes ([`Version::pack`]).

use prost::encoding::{decode_varint, encode_varint};

use super::revision::Revision;

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

/// The longest encoding: the flags byte and three varints of ten bytes.
pub(crate) const MAX_LEN: usize = 1 + 3 * 10;

impl Version {
    /// A deletion.
    pub fn tombstone() -> Self {
        Version {
            tombstone: true,
            ..Version::default()
        }
    }

    /// Its encoding, written into `buf` (no allocation per write).
    pub fn encode<'b>(&self, buf: &'b mut [u8; MAX_LEN]) -> &'b [u8] {
        buf[0] = u8::from(self.tombstone);
        let mut rest = &mut buf[1..];
        for n in [self.create_revision, self.version, self.lease] {
            encode_varint(n as u64, &mut rest);
        }
        let len = MAX_LEN - rest.len();
        &buf[..len]
    }

    /// Its encoding beside revision `rev` in the index: nothing for a key's first version created
    /// at `rev` with no lease (most versions in a store of keys written once), else
    /// [`Version::encode`]'s.
    pub fn pack<'b>(&self, rev: Revision, buf: &'b mut [u8; MAX_LEN]) -> &'b [u8] {
        if *self == Version::first(rev) {
            &buf[..0]
        } else {
            self.encode(buf)
        }
    }

    /// The version [`Version::pack`] wrote beside `rev`.
    pub fn unpack(b: &[u8], rev: Revision) -> Option<Self> {
        if b.is_empty() {
            Some(Version::first(rev))
        } else {
            Version::decode(b)
        }
    }

    /// A key's first version, created at `rev` with no lease.
    pub(crate) fn first(rev: Revision) -> Self {
        Version {
            tombstone: false,
            create_revision: rev.main,
            version: 1,
            lease: 0,
        }
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        let (&flags, mut rest) = b.split_first()?;
        if flags > 1 {
            return None;
        }
        let mut field = || decode_varint(&mut rest).ok().map(|n| n as i64);
        let version = Version {
            tombstone: flags == 1,
            create_revision: field()?,
            version: field()?,
            lease: field()?,
        };
        rest.is_empty().then_some(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_what_it_did_not_write() {
        let v = Version {
            tombstone: false,
            create_revision: 5,
            version: 3,
            lease: -7,
        };
        let mut buf = [0; MAX_LEN];
        assert_eq!(Version::decode(v.encode(&mut buf)), Some(v));
        assert_eq!(
            Version::decode(Version::tombstone().encode(&mut buf)),
            Some(Version::tombstone())
        );
        assert_eq!(
            v.encode(&mut buf),
            [
                0, 5, 3, 0xF9, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1
            ]
        );
        let encoded = v.encode(&mut buf).to_vec();
        let mut long = encoded.clone();
        long.push(0);
        for bad in [&long[..], &encoded[..3], &[2, 0, 0, 0], &[]] {
            assert_eq!(Version::decode(bad), None, "{bad:?}");
        }
    }
}
