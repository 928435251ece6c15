//! A time-boxed mutation fuzzer for the path a client's bytes take into the store: a gRPC message
//! body decoded as one of etcd's requests (prost), checked as the API edge checks it
//! ([`validate`]), carried through the raft log (`InternalRaftRequest` encoded and decoded), and
//! applied to a real store or read from it. Whatever the bytes, nothing may panic, what passes the
//! edge must come out of the log as itself, and the store may refuse a request but never break
//! (no page-file or corruption error, and its own read of its revisions agrees).
//!
//! The inputs start as valid encodings of random requests (the MVCC tests' generator) and are
//! mutated in two ways: as protobuf (a field of the message or of one nested in it set to an edge
//! value, grown, shrunk, repeated or dropped, the encoding kept well formed), and as bytes (bits
//! flipped, bytes replaced, inserted, removed, chunks repeated, spliced from other inputs, the
//! request kind changed). Inputs the edge accepts join the corpus.
//!
//! It runs for `KEELSON_FUZZ_SECS` seconds (default 8, as part of the suite) from seed
//! `KEELSON_FUZZ_SEED` (default: from the clock; a failure prints it and the failing input).

mod support;

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::time::{Duration, Instant};

use keelson_engine::mvcc::{self, Entry, MvccError, Options, Store, validate};
use keelson_engine::pagefile;
use keelson_proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, InternalRaftRequest, LeaseGrantRequest,
    LeaseRevokeRequest, PutRequest, RangeRequest, TxnRequest,
};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::requests::{self, Request, Shape};

/// How many inputs the corpus holds at most.
const CORPUS: usize = 4096;
/// How many entries a store takes before the fuzzer starts a fresh one (keeps each apply cheap).
const STORE_ENTRIES: u64 = 20_000;

/// The request kinds an input's first byte chooses between, in this order.
const KINDS: u8 = 7;

/// Encodes `req` as an input: its kind, then its message as a client sends it.
fn encode(req: &Request) -> Vec<u8> {
    let (kind, body) = match req {
        Request::Range(r) => (0, r.encode_to_vec()),
        Request::Put(r) => (1, r.encode_to_vec()),
        Request::DeleteRange(r) => (2, r.encode_to_vec()),
        Request::Txn(r) => (3, r.encode_to_vec()),
        Request::Compact(r) => (4, r.encode_to_vec()),
        Request::Grant(r) => (5, r.encode_to_vec()),
        Request::Revoke(r) => (6, r.encode_to_vec()),
    };
    let mut input = vec![kind];
    input.extend(body);
    input
}

/// An input decoded as the request its first byte names; `None` if the bytes do not decode (the
/// client gets gRPC's decode error).
fn decode(input: &[u8]) -> Option<Request> {
    let (&kind, body) = input.split_first()?;
    Some(match kind % KINDS {
        0 => Request::Range(RangeRequest::decode(body).ok()?),
        1 => Request::Put(PutRequest::decode(body).ok()?),
        2 => Request::DeleteRange(DeleteRangeRequest::decode(body).ok()?),
        3 => Request::Txn(TxnRequest::decode(body).ok()?),
        4 => Request::Compact(CompactionRequest::decode(body).ok()?),
        5 => Request::Grant(LeaseGrantRequest::decode(body).ok()?),
        _ => Request::Revoke(LeaseRevokeRequest::decode(body).ok()?),
    })
}

/// A store in a temporary folder, and the next raft index to apply at.
struct Target {
    _dir: tempfile::TempDir,
    store: Store,
    next: u64,
}

impl Target {
    fn new() -> Target {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            pagefile: pagefile::Options {
                initial_map_size: 1 << 26,
                ..Default::default()
            },
            ..Default::default()
        };
        let store = Store::open(dir.path().join("db"), options).unwrap();
        Target {
            _dir: dir,
            store,
            next: 1,
        }
    }

    /// Runs one input through decode → validate → log → store. Returns whether the edge accepted it.
    fn run(&mut self, input: &[u8]) -> bool {
        let Some(request) = decode(input) else {
            return false;
        };
        let write = match request {
            Request::Range(r) => return self.range(&r),
            Request::Put(p) => validate::put(&p).map(|()| mvcc::Request::Put(p)),
            Request::DeleteRange(d) => {
                validate::delete_range(&d).map(|()| mvcc::Request::DeleteRange(d))
            }
            Request::Txn(t) => validate::txn(&t, validate::DEFAULT_MAX_TXN_OPS).map(|()| {
                if mvcc::is_read_only_txn(&t) {
                    self.read_only_txn(&t);
                }
                mvcc::Request::Txn(t)
            }),
            Request::Compact(c) => Ok(mvcc::Request::Compaction(c)),
            Request::Grant(g) => Ok(mvcc::Request::LeaseGrant(g)),
            Request::Revoke(r) => Ok(mvcc::Request::LeaseRevoke(r)),
        };
        let Ok(write) = write else {
            return false;
        };
        let logged = write.clone().into_internal(self.next).encode_to_vec();
        let internal =
            InternalRaftRequest::decode(logged.as_slice()).expect("a logged entry decodes");
        let (request, id) = mvcc::Request::from_internal(internal);
        assert_eq!(
            (&request, id),
            (&write, self.next),
            "the log carries the request unchanged"
        );
        let entry = Entry {
            index: self.next,
            term: 1,
            request,
        };
        self.next += 1;
        let applied = self
            .store
            .apply(&[entry])
            .expect("the store applies what the edge passed");
        assert_eq!(applied.len(), 1);
        if let Err(e) = &applied[0].response {
            unbroken(e);
        }
        self.store.compact_step().expect("compaction work");
        let view = self.store.db().begin_read().expect("a read view");
        assert_eq!(
            mvcc::revisions(&view).expect("revisions read"),
            self.store.revisions(),
            "readers see the store's revisions"
        );
        true
    }

    fn range(&self, r: &RangeRequest) -> bool {
        if validate::range(r).is_err() {
            return false;
        }
        let view = self.store.db().begin_read().expect("a read view");
        if let Err(e) = mvcc::range(&view, r, self.store.revisions()) {
            unbroken(&e);
        }
        true
    }

    fn read_only_txn(&self, t: &TxnRequest) {
        let view = self.store.db().begin_read().expect("a read view");
        if let Err(e) = mvcc::read_only_txn(&view, t, self.store.revisions()) {
            unbroken(&e);
        }
    }
}

/// A refusal is fine; a broken page file or an undecodable record is not.
fn unbroken(e: &MvccError) {
    assert!(
        !matches!(e, MvccError::PageFile(_) | MvccError::Corrupt(_)),
        "the store broke: {e}"
    );
}

/// One field of a protobuf message, as the wire format has it.
#[derive(Debug, Clone)]
enum Field {
    Varint(u32, u64),
    Fixed64(u32, [u8; 8]),
    Bytes(u32, Vec<u8>),
    Fixed32(u32, [u8; 4]),
}

fn read_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A message's fields, if `bytes` is a well-formed message.
fn fields(mut bytes: &[u8]) -> Option<Vec<Field>> {
    let mut fields = Vec::new();
    while !bytes.is_empty() {
        let key = read_varint(&mut bytes)?;
        let number = u32::try_from(key >> 3).ok()?;
        fields.push(match key & 7 {
            0 => Field::Varint(number, read_varint(&mut bytes)?),
            1 => {
                let (value, rest) = bytes.split_first_chunk::<8>()?;
                bytes = rest;
                Field::Fixed64(number, *value)
            }
            2 => {
                let len = usize::try_from(read_varint(&mut bytes)?).ok()?;
                let (value, rest) = bytes.split_at_checked(len)?;
                bytes = rest;
                Field::Bytes(number, value.to_vec())
            }
            5 => {
                let (value, rest) = bytes.split_first_chunk::<4>()?;
                bytes = rest;
                Field::Fixed32(number, *value)
            }
            _ => return None,
        });
    }
    Some(fields)
}

fn message(fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::new();
    for field in fields {
        let (number, wire) = match field {
            Field::Varint(n, _) => (n, 0),
            Field::Fixed64(n, _) => (n, 1),
            Field::Bytes(n, _) => (n, 2),
            Field::Fixed32(n, _) => (n, 5),
        };
        write_varint(&mut out, u64::from(*number) << 3 | wire);
        match field {
            Field::Varint(_, v) => write_varint(&mut out, *v),
            Field::Fixed64(_, v) => out.extend_from_slice(v),
            Field::Bytes(_, v) => {
                write_varint(&mut out, v.len() as u64);
                out.extend_from_slice(v);
            }
            Field::Fixed32(_, v) => out.extend_from_slice(v),
        }
    }
    out
}

/// Changes one field of the message `body` (or of a message nested in it), keeping the encoding
/// well formed: an integer set to an edge value, bytes grown, shrunk or emptied, a field repeated
/// or dropped. Returns false if `body` is not a message.
fn mutate_field(rng: &mut StdRng, body: &mut Vec<u8>) -> bool {
    const EDGES: [u64; 9] = [
        0,
        1,
        2,
        u64::MAX,
        i64::MAX as u64,
        i64::MIN as u64,
        u32::MAX as u64,
        1 << 31,
        100,
    ];
    let Some(mut fields) = fields(body) else {
        return false;
    };
    if fields.is_empty() {
        fields.push(Field::Varint(rng.random_range(1..16), rng.random()));
    } else {
        let at = rng.random_range(0..fields.len());
        match (&mut fields[at], rng.random_range(0..6)) {
            (Field::Varint(_, v), 0..=2) => *v = EDGES[rng.random_range(0..EDGES.len())],
            (Field::Bytes(_, v), 0) => {
                // A nested message changes inside; other bytes are left as they are.
                let _ = mutate_field(rng, v);
            }
            (Field::Bytes(_, v), 1) => {
                let grow = 1usize << rng.random_range(0..14);
                let byte: u8 = rng.random();
                v.extend(std::iter::repeat_n(byte, grow));
            }
            (Field::Bytes(_, v), 2) => v.truncate(rng.random_range(0..=v.len())),
            (_, 4) => {
                let copy = fields[at].clone();
                fields.insert(at, copy);
            }
            (_, 5) => {
                fields.remove(at);
            }
            (Field::Varint(n, _), 3) => *n = rng.random_range(1..16),
            _ => {}
        }
    }
    *body = message(&fields);
    true
}

/// Changes `input` in one of several ways; `other` is another corpus input to splice from.
fn mutate(rng: &mut StdRng, input: &mut Vec<u8>, other: &[u8]) {
    if input.len() > 1 && rng.random_bool(0.5) {
        let mut body = input.split_off(1);
        let _ = mutate_field(rng, &mut body);
        input.extend(body);
        return;
    }
    const INTERESTING: [u8; 8] = [0x00, 0x01, 0x7f, 0x80, 0xff, 0x0a, 0x12, 0x08];
    if input.is_empty() {
        input.push(rng.random());
        return;
    }
    let at = rng.random_range(0..input.len());
    match rng.random_range(0..9) {
        0 => input[at] ^= 1 << rng.random_range(0..8),
        1 => input[at] = INTERESTING[rng.random_range(0..INTERESTING.len())],
        2 => input[at] = rng.random(),
        3 => {
            let bytes: Vec<u8> = (0..rng.random_range(1..8)).map(|_| rng.random()).collect();
            input.splice(at..at, bytes);
        }
        4 => {
            let end = (at + rng.random_range(1..16)).min(input.len());
            input.drain(at..end);
        }
        5 => {
            let end = (at + rng.random_range(1..32)).min(input.len());
            let chunk = input[at..end].to_vec();
            input.splice(at..at, chunk);
        }
        6 if !other.is_empty() => {
            let from = rng.random_range(0..other.len());
            let end = (from + rng.random_range(1..64)).min(other.len());
            input.truncate(at.max(1));
            input.extend_from_slice(&other[from..end]);
        }
        7 => input[0] = rng.random_range(0..KINDS),
        _ => input.truncate(at.max(1)),
    }
}

/// Valid encodings of random requests of every kind.
fn seeds(seed: u64) -> Vec<Vec<u8>> {
    let config = proptest::test_runner::Config::default();
    let mut runner = TestRunner::new_with_rng(
        config,
        proptest::test_runner::TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &{
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&seed.to_le_bytes());
            bytes
        }),
    );
    let strategy = requests::request(Shape::All);
    (0..512)
        .map(|_| encode(&strategy.new_tree(&mut runner).unwrap().current()))
        .collect()
}

#[test]
fn client_bytes_never_panic_and_never_break_the_store() {
    let secs: u64 = std::env::var("KEELSON_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let seed: u64 = std::env::var("KEELSON_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("edge fuzz: KEELSON_FUZZ_SEED={seed}, {secs} s");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut corpus = seeds(seed);
    let mut target = Target::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut runs, mut accepted) = (0u64, 0u64);
    while Instant::now() < deadline {
        let mut input = corpus[rng.random_range(0..corpus.len())].clone();
        let other = corpus[rng.random_range(0..corpus.len())].clone();
        for _ in 0..rng.random_range(1..5) {
            mutate(&mut rng, &mut input, &other);
        }
        match catch_unwind(AssertUnwindSafe(|| target.run(&input))) {
            Ok(true) => {
                accepted += 1;
                if corpus.len() < CORPUS {
                    corpus.push(input);
                } else {
                    corpus[rng.random_range(0..CORPUS)] = input;
                }
            }
            Ok(false) => {}
            Err(panic) => {
                eprintln!("edge fuzz failed: KEELSON_FUZZ_SEED={seed}, after {runs} inputs");
                eprintln!("input (kind byte, then message): {input:02x?}");
                eprintln!("decoded: {:?}", decode(&input));
                resume_unwind(panic);
            }
        }
        runs += 1;
        if target.next > STORE_ENTRIES {
            target = Target::new();
        }
    }
    println!("edge fuzz: {runs} inputs, {accepted} passed the edge");
    assert!(accepted > 0, "some inputs must reach the store");
}
