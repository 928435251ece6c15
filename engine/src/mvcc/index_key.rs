//! Keys of keelson's version index: a user key, escaped so that byte order of the encoding equals
//! byte order of the keys and no encoding is a prefix of another, followed by the revision. All
//! versions of a key are then adjacent and ordered by revision, and a range of user keys is a
//! range of index keys — one cursor scan answers a Range at any revision.
//!
//! Escaping: each 0x00 byte becomes 0x00 0xFF, and the key ends with 0x00 0x01. (A raw key followed
//! by a raw revision would not do: `a` then its revision would sort after `a\0`'s versions only by
//! accident of the revision bytes.)

use super::revision::Revision;

const ESCAPE: u8 = 0xFF;
const TERMINATOR: u8 = 0x01;

/// Bytes of the revision at the end of an index key ([`Revision::ordered_bytes`]).
const ORDERED_REVISION_LEN: usize = 16;

/// The length of `key`'s index keys: escaped key, terminator, revision.
pub(crate) fn index_key_len(key: &[u8]) -> usize {
    key.len() + key.iter().filter(|&&b| b == 0).count() + 2 + ORDERED_REVISION_LEN
}

/// The escaped form of `key`, terminator included: every index key of `key` starts with it.
pub(crate) fn encode_user_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 18);
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(ESCAPE);
        }
    }
    out.extend_from_slice(&[0, TERMINATOR]);
    out
}

/// The index key of `key` at `rev`.
pub(crate) fn index_key(key: &[u8], rev: Revision) -> Vec<u8> {
    let mut out = encode_user_key(key);
    out.extend_from_slice(&rev.ordered_bytes());
    out
}

/// Splits an index key into the encoded user key (terminator included) and the revision.
pub(crate) fn split(index_key: &[u8]) -> Option<(&[u8], Revision)> {
    let cut = index_key.len().checked_sub(ORDERED_REVISION_LEN)?;
    let (user, rev) = index_key.split_at(cut);
    if user.len() < 2 || user[user.len() - 2..] != [0, TERMINATOR] {
        return None;
    }
    Some((user, Revision::from_ordered_bytes(rev.try_into().ok()?)))
}

/// The user key an encoded user key stands for.
pub(crate) fn decode_user_key(encoded: &[u8]) -> Option<Vec<u8>> {
    let body = encoded.strip_suffix(&[0, TERMINATOR])?;
    let mut out = Vec::with_capacity(body.len());
    let mut bytes = body.iter();
    while let Some(&b) = bytes.next() {
        out.push(b);
        if b == 0 && bytes.next() != Some(&ESCAPE) {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_key_sorts_before_its_extensions_whatever_the_revisions() {
        let short = index_key(b"a", Revision::new(i64::MAX, i64::MAX));
        let long = index_key(b"a\0", Revision::new(1, 0));
        assert!(short < long);
        assert!(index_key(b"a", Revision::new(1, 0)) < index_key(b"a", Revision::new(1, 1)));
        let (user, rev) = split(&long).unwrap();
        assert_eq!(
            (decode_user_key(user).unwrap(), rev),
            (b"a\0".to_vec(), Revision::new(1, 0))
        );
    }

    proptest! {
        #[test]
        fn encoding_preserves_order_and_round_trips(a in prop::collection::vec(any::<u8>(), 1..12), b in prop::collection::vec(any::<u8>(), 1..12), ra in 0i64..5, rb in 0i64..5) {
            let (ka, kb) = (index_key(&a, Revision::new(ra, 0)), index_key(&b, Revision::new(rb, 0)));
            prop_assert_eq!(ka.cmp(&kb), (a.clone(), ra).cmp(&(b.clone(), rb)));
            let (user, rev) = split(&ka).unwrap();
            prop_assert_eq!(decode_user_key(user).unwrap(), a.clone());
            prop_assert_eq!(rev, Revision::new(ra, 0));
            // A range of user keys [a, b) is the range of index keys [enc(a), enc(b)).
            prop_assert_eq!(ka < encode_user_key(&b), a < b);
        }
    }
}
