//! Keys of keelson's version index: a user key, escaped so that byte order of the encoding equals
//! byte order of the keys and no encoding is a prefix of another, followed by the revision. All
//! versions of a key are then adjacent and ordered by revision, and a range of user keys is a
//! range of index keys — one cursor scan answers a Range at any revision.
//!
//! Escaping: each 0x00 byte becomes 0x00 0xFF, and the key ends with 0x00 0x01. (A raw key followed
//! by a raw revision would not do: `a` then its revision would sort after `a\0`'s versions only by
//! accident of the revision bytes.) The first 0x00 0x01 of an index key is so its terminator.
//!
//! The revision follows as two order-preserving numbers, main then sub: each is a byte counting
//! its significant big-endian bytes (0–8), then those bytes. A longer number is a larger one, so
//! byte order is numeric order for the non-negative numbers revisions are; a store's revisions
//! take 4–5 bytes instead of a fixed 16 (the index is part of the file's footprint).

use super::revision::Revision;

const ESCAPE: u8 = 0xFF;
const TERMINATOR: u8 = 0x01;

/// Bytes of the longest revision at the end of an index key.
const MAX_REVISION_LEN: usize = 2 * 9;

/// The length of `key`'s longest index key: escaped key, terminator, revision.
pub(crate) fn index_key_len(key: &[u8]) -> usize {
    key.len() + key.iter().filter(|&&b| b == 0).count() + 2 + MAX_REVISION_LEN
}

/// The escaped form of `key`, terminator included: every index key of `key` starts with it.
pub(crate) fn encode_user_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2 + MAX_REVISION_LEN);
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
    push_number(&mut out, rev.main);
    push_number(&mut out, rev.sub);
    out
}

/// Splits an index key into the encoded user key (terminator included) and the revision.
pub(crate) fn split(index_key: &[u8]) -> Option<(&[u8], Revision)> {
    let mut at = 0;
    let cut = loop {
        at += index_key[at..].iter().position(|&b| b == 0)?;
        match *index_key.get(at + 1)? {
            TERMINATOR => break at + 2,
            ESCAPE => at += 2,
            _ => return None,
        }
    };
    let (user, mut rest) = index_key.split_at(cut);
    let main = take_number(&mut rest)?;
    let sub = take_number(&mut rest)?;
    rest.is_empty().then_some((user, Revision::new(main, sub)))
}

/// Appends `n` (non-negative) as a length byte and its significant big-endian bytes.
fn push_number(out: &mut Vec<u8>, n: i64) {
    let bytes = n.to_be_bytes();
    let significant = 8 - (n.leading_zeros() / 8) as usize;
    out.push(significant as u8);
    out.extend_from_slice(&bytes[8 - significant..]);
}

/// Reads a number [`push_number`] wrote from the front of `rest`.
fn take_number(rest: &mut &[u8]) -> Option<i64> {
    let (&len, tail) = rest.split_first()?;
    let len = usize::from(len);
    if len > 8 || tail.len() < len {
        return None;
    }
    let (digits, tail) = tail.split_at(len);
    *rest = tail;
    let mut bytes = [0u8; 8];
    bytes[8 - len..].copy_from_slice(digits);
    Some(i64::from_be_bytes(bytes))
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

    #[test]
    fn a_revision_takes_its_significant_bytes() {
        let key = index_key(b"a", Revision::new(0x01_0203, 0));
        assert_eq!(key, [b'a', 0, TERMINATOR, 3, 1, 2, 3, 0]);
        for bad in [
            &key[..key.len() - 1],
            &[b'a', 0, TERMINATOR, 9, 0][..],
            b"a\0\x02\0\0",
        ] {
            assert_eq!(split(bad), None, "{bad:?}");
        }
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

        #[test]
        fn revisions_sort_as_numbers_and_round_trip(main_a in 0i64..=i64::MAX, sub_a in 0i64..=i64::MAX, main_b in 0i64..=i64::MAX, sub_b in 0i64..=i64::MAX) {
            let (ra, rb) = (Revision::new(main_a, sub_a), Revision::new(main_b, sub_b));
            let (ka, kb) = (index_key(b"k", ra), index_key(b"k", rb));
            prop_assert_eq!(ka.cmp(&kb), ra.cmp(&rb));
            prop_assert_eq!(split(&ka).map(|(_, rev)| rev), Some(ra));
            prop_assert!(ka.len() <= index_key_len(b"k"));
        }
    }
}
