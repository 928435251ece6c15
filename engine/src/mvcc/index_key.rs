//! Keys of keelson's version index: a user key, encoded so that byte order of the encoding equals
//! byte order of the keys and no encoding is a prefix of another, followed by the revision. All
//! versions of a key are then adjacent and ordered by revision, and a range of user keys is a
//! range of index keys — one cursor scan answers a Range at any revision.
//!
//! The user key: each non-zero byte as it is; each run of zero bytes as 0x00 and a code for its
//! length; the end of the key as 0x00 and a code for the zeros it ends with (none, often). A run
//! that more follows is coded `0x100 - length` (0xFF for one zero, down to 0x81 for 127; a longer
//! run takes several tokens), a run that ends the key `length` (0x00 for none, up to 0x7F). So:
//! - a run followed by more sorts after a longer run followed by more (`a\0b` > `a\0\0b`), and
//!   after any key that ends there or sooner (`a\0b` > `a\0\0`);
//! - keys that end in zeros sort by how many (`a` < `a\0` < `a\0\0`).
//!
//! So the encoding compares as the keys do. A key with no zero byte takes two bytes more; a key
//! padded with zeros (etcdctl's `check perf` pads 256-byte keys) takes a few, not twice its
//! zeros. (A raw key followed by a raw revision would not do: `a` then its revision would sort
//! after `a\0`'s versions only by accident of the revision bytes.)
//!
//! The revision follows as two order-preserving numbers, main then sub: each is a byte counting
//! its significant big-endian bytes (0–8), then those bytes. A longer number is a larger one, so
//! byte order is numeric order for the non-negative numbers revisions are; a store's revisions
//! take 4–5 bytes instead of a fixed 16 (the index is part of the file's footprint).

use super::revision::Revision;

/// The longest run of zeros one token codes.
const MAX_RUN: usize = 127;

/// The code of a run of `zeros` (1–127) that more of the key follows.
fn inner_run(zeros: usize) -> u8 {
    (0x100 - zeros) as u8
}

/// The code of the end of the key, after `zeros` (0–127) zero bytes.
fn final_run(zeros: usize) -> u8 {
    zeros as u8
}

/// A code's run length, and whether the key ends there (`None`: no code).
fn run_of(code: u8) -> Option<(usize, bool)> {
    if code <= final_run(MAX_RUN) {
        Some((usize::from(code), true))
    } else if code >= inner_run(MAX_RUN) {
        Some((0x100 - usize::from(code), false))
    } else {
        None
    }
}

/// Bytes of the longest revision at the end of an index key.
const MAX_REVISION_LEN: usize = 2 * 9;

/// The length of `key`'s longest index key: encoded key, revision. (Counted, not encoded: every
/// request's keys are checked with it.)
pub(crate) fn index_key_len(key: &[u8]) -> usize {
    let mut len = 0;
    tokens(key, |token| len += token.len());
    len + MAX_REVISION_LEN
}

/// The encoded form of `key`, its end included: every index key of `key` starts with it.
pub(crate) fn encode_user_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2 + MAX_REVISION_LEN);
    tokens(key, |token| out.extend_from_slice(token));
    out
}

/// Hands `emit` the encoding of `key`, a piece at a time: its runs of non-zero bytes, its runs of
/// zeros' tokens, and its end.
fn tokens(key: &[u8], mut emit: impl FnMut(&[u8])) {
    let mut rest = key;
    loop {
        let bytes = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        emit(&rest[..bytes]);
        rest = &rest[bytes..];
        let mut zeros = rest.iter().position(|&b| b != 0).unwrap_or(rest.len());
        rest = &rest[zeros..];
        let ends = rest.is_empty();
        while zeros > MAX_RUN || (!ends && zeros > 0) {
            let run = zeros.min(MAX_RUN);
            emit(&[0, inner_run(run)]);
            zeros -= run;
        }
        if ends {
            emit(&[0, final_run(zeros)]);
            return;
        }
    }
}

/// The index key of `key` at `rev`.
pub(crate) fn index_key(key: &[u8], rev: Revision) -> Vec<u8> {
    let mut out = encode_user_key(key);
    push_revision(&mut out, rev);
    out
}

/// Appends `rev` to an encoded user key, making it an index key.
pub(crate) fn push_revision(out: &mut Vec<u8>, rev: Revision) {
    push_number(out, rev.main);
    push_number(out, rev.sub);
}

/// Splits an index key into the encoded user key (terminator included) and the revision.
pub(crate) fn split(index_key: &[u8]) -> Option<(&[u8], Revision)> {
    let mut at = 0;
    let cut = loop {
        at += index_key[at..].iter().position(|&b| b == 0)?;
        let (_, ends) = run_of(*index_key.get(at + 1)?)?;
        at += 2;
        if ends {
            break at;
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

/// The user key an encoded user key stands for (`None` unless [`encode_user_key`] wrote it).
pub(crate) fn decode_user_key(encoded: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(encoded.len());
    let mut bytes = encoded.iter();
    // The run just decoded, if the last token was a run that more followed.
    let mut run_before = None;
    while let Some(&b) = bytes.next() {
        if b != 0 {
            out.push(b);
            run_before = None;
            continue;
        }
        let (zeros, ends) = run_of(*bytes.next()?)?;
        match run_before {
            // Runs are as long as they can be: only a longest run is followed by another run,
            // and then by one of at least one zero.
            Some(before) if before < MAX_RUN || zeros == 0 => return None,
            _ => {}
        }
        out.resize(out.len() + zeros, 0);
        if ends {
            return bytes.next().is_none().then_some(out);
        }
        run_before = Some(zeros);
    }
    None
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
    fn runs_of_zeros_take_a_token_of_two_bytes_each_127() {
        assert_eq!(encode_user_key(b"ab"), b"ab\0\0");
        assert_eq!(encode_user_key(b"a\0b\0\0"), b"a\0\xFFb\0\x02");
        let mut padded = b"/check/k".to_vec();
        padded.resize(256, 0);
        let encoded = encode_user_key(&padded);
        assert_eq!(encoded, b"/check/k\0\x81\0\x79");
        assert_eq!(decode_user_key(&encoded), Some(padded));
        let mut long_inner = vec![b'a'; 1];
        long_inner.extend([0; 130]);
        long_inner.push(b'b');
        assert_eq!(encode_user_key(&long_inner), b"a\0\x81\0\xFDb\0\0");
        // Not what the encoder writes: a short run followed by a run, a longest run followed by
        // an empty end, a key with nothing after its end, no end at all, a code for no run.
        for bad in [
            &b"a\0\xFE\0\xFFb\0\0"[..],
            b"a\0\x81\0\0",
            b"a\0\0b",
            b"a",
            b"a\0\x80",
        ] {
            assert_eq!(decode_user_key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_revision_takes_its_significant_bytes() {
        let key = index_key(b"a", Revision::new(0x01_0203, 0));
        assert_eq!(key, [b'a', 0, 0, 3, 1, 2, 3, 0]);
        for bad in [
            &key[..key.len() - 1],
            &[b'a', 0, 0, 9, 0][..],
            b"a\0\x80\0\0\0\0",
        ] {
            assert_eq!(split(bad), None, "{bad:?}");
        }
    }

    /// Keys of every shape, runs of zeros longer than a token holds included.
    fn key() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            prop::collection::vec(any::<u8>(), 1..4),
            (0usize..300).prop_map(|n| vec![0; n]),
            prop::collection::vec(
                prop_oneof![Just(0u8), Just(1), Just(0x7F), Just(0x80), Just(0xFF)],
                1..6
            ),
        ];
        prop::collection::vec(piece, 1..5)
            .prop_map(|pieces| pieces.concat())
            .prop_filter("a key is not empty", |k| !k.is_empty())
    }

    proptest! {
        #[test]
        fn encoding_preserves_order_and_round_trips(a in key(), b in key(), ra in 0i64..5, rb in 0i64..5) {
            let (ka, kb) = (index_key(&a, Revision::new(ra, 0)), index_key(&b, Revision::new(rb, 0)));
            prop_assert_eq!(ka.cmp(&kb), (a.clone(), ra).cmp(&(b.clone(), rb)));
            prop_assert_eq!(index_key_len(&a), encode_user_key(&a).len() + MAX_REVISION_LEN);
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
