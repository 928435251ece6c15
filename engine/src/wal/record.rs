//! What the WAL stores: raft entries, the raft hard state, snapshot markers and member metadata,
//! and their payload encodings (`engine/docs/format.md`, "Records"). Pure bytes, no I/O.

use std::fmt;

/// Kind byte of each frame.
pub(crate) const KIND_SEED: u8 = 1;
pub(crate) const KIND_METADATA: u8 = 2;
pub(crate) const KIND_HARD_STATE: u8 = 3;
pub(crate) const KIND_ENTRY: u8 = 4;
pub(crate) const KIND_SNAPSHOT: u8 = 5;

/// Raft's persistent vote and commit state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HardState {
    /// Current term.
    pub term: u64,
    /// Member voted for in this term (0: none).
    pub vote: u64,
    /// Highest index known committed.
    pub commit: u64,
}

/// What a raft entry carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EntryKind {
    /// A proposal (etcd's `InternalRaftRequest`).
    #[default]
    Normal,
    /// A membership change (raft's `ConfChange`).
    ConfChange,
    /// A membership change (raft's `ConfChangeV2`).
    ConfChangeV2,
}

impl EntryKind {
    fn to_byte(self) -> u8 {
        match self {
            EntryKind::Normal => 0,
            EntryKind::ConfChange => 1,
            EntryKind::ConfChangeV2 => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(EntryKind::Normal),
            1 => Some(EntryKind::ConfChange),
            2 => Some(EntryKind::ConfChangeV2),
            _ => None,
        }
    }
}

/// A raft log entry.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log.
    pub index: u64,
    /// Term of the leader that created it.
    pub term: u64,
    /// What `data` is.
    pub kind: EntryKind,
    /// Raft's entry context (opaque).
    pub context: Vec<u8>,
    /// The entry's payload.
    pub data: Vec<u8>,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("index", &self.index)
            .field("term", &self.term)
            .field("kind", &self.kind)
            .field("context", &self.context.len())
            .field("data", &self.data.len())
            .finish()
    }
}

/// A raft entry to append, borrowed from wherever the caller keeps it (the WAL copies it once,
/// into its gather buffer).
#[derive(Debug, Clone, Copy)]
pub struct EntryRef<'a> {
    /// See [`Entry::index`].
    pub index: u64,
    /// See [`Entry::term`].
    pub term: u64,
    /// See [`Entry::kind`].
    pub kind: EntryKind,
    /// See [`Entry::context`].
    pub context: &'a [u8],
    /// See [`Entry::data`].
    pub data: &'a [u8],
}

impl<'a> From<&'a Entry> for Record<'a> {
    fn from(e: &'a Entry) -> Self {
        Record::Entry(EntryRef {
            index: e.index,
            term: e.term,
            kind: e.kind,
            context: &e.context,
            data: &e.data,
        })
    }
}

/// One record to append.
#[derive(Debug, Clone, Copy)]
pub enum Record<'a> {
    /// Member and cluster identity (opaque to the WAL; repeated at the head of every segment).
    Metadata(&'a [u8]),
    /// The raft hard state (also repeated at the head of every segment).
    HardState(HardState),
    /// A raft entry.
    Entry(EntryRef<'a>),
    /// The log restarts after `index` (at `term`): the page file holds everything up to it (a
    /// snapshot from the leader was installed), and every entry written before this record is
    /// void — the next entry is `index + 1`.
    Snapshot {
        /// Index covered.
        index: u64,
        /// Its term.
        term: u64,
    },
}

/// A record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// The first frame of a segment.
    Seed {
        /// The segment's sequence number.
        seq: u64,
        /// The raft index the segment starts at.
        first_index: u64,
        /// The crc the chain continues from.
        previous_crc: u32,
    },
    /// See [`Record::Metadata`].
    Metadata(Vec<u8>),
    /// See [`Record::HardState`].
    HardState(HardState),
    /// See [`Record::Entry`].
    Entry(Entry),
    /// See [`Record::Snapshot`].
    Snapshot {
        /// Index covered.
        index: u64,
        /// Its term.
        term: u64,
    },
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// The seed payload.
pub(crate) fn seed_payload(seq: u64, first_index: u64, previous_crc: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(20);
    p.extend_from_slice(&seq.to_le_bytes());
    p.extend_from_slice(&first_index.to_le_bytes());
    p.extend_from_slice(&previous_crc.to_le_bytes());
    p
}

impl Record<'_> {
    /// The frame kind.
    pub(crate) fn kind(&self) -> u8 {
        match self {
            Record::Metadata(_) => KIND_METADATA,
            Record::HardState(_) => KIND_HARD_STATE,
            Record::Entry(_) => KIND_ENTRY,
            Record::Snapshot { .. } => KIND_SNAPSHOT,
        }
    }

    /// Payload length.
    pub(crate) fn payload_len(&self) -> usize {
        match self {
            Record::Metadata(m) => m.len(),
            Record::HardState(_) => 24,
            Record::Entry(e) => 24 + e.context.len() + e.data.len(),
            Record::Snapshot { .. } => 16,
        }
    }

    /// Appends the payload to `out`.
    pub(crate) fn write_payload(&self, out: &mut Vec<u8>) {
        match self {
            Record::Metadata(m) => out.extend_from_slice(m),
            Record::HardState(hs) => {
                for v in [hs.term, hs.vote, hs.commit] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            Record::Entry(e) => {
                out.extend_from_slice(&e.index.to_le_bytes());
                out.extend_from_slice(&e.term.to_le_bytes());
                out.extend_from_slice(&[e.kind.to_byte(), 0, 0, 0]);
                out.extend_from_slice(&(e.context.len() as u32).to_le_bytes());
                out.extend_from_slice(e.context);
                out.extend_from_slice(e.data);
            }
            Record::Snapshot { index, term } => {
                out.extend_from_slice(&index.to_le_bytes());
                out.extend_from_slice(&term.to_le_bytes());
            }
        }
    }
}

/// Why a payload did not decode (the frame's crc was fine, so this is a format error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadPayload(pub &'static str);

impl Decoded {
    /// Decodes a payload of `kind`.
    pub(crate) fn decode(kind: u8, p: &[u8]) -> Result<Decoded, BadPayload> {
        let need = |n: usize, what| {
            if p.len() == n {
                Ok(())
            } else {
                Err(BadPayload(what))
            }
        };
        match kind {
            KIND_SEED => {
                need(20, "seed payload is not 20 bytes")?;
                Ok(Decoded::Seed {
                    seq: u64_at(p, 0),
                    first_index: u64_at(p, 8),
                    previous_crc: u32_at(p, 16),
                })
            }
            KIND_METADATA => Ok(Decoded::Metadata(p.to_vec())),
            KIND_HARD_STATE => {
                need(24, "hard state payload is not 24 bytes")?;
                Ok(Decoded::HardState(HardState {
                    term: u64_at(p, 0),
                    vote: u64_at(p, 8),
                    commit: u64_at(p, 16),
                }))
            }
            KIND_ENTRY => {
                if p.len() < 24 {
                    return Err(BadPayload("entry payload shorter than its header"));
                }
                let kind = EntryKind::from_byte(p[16]).ok_or(BadPayload("unknown entry kind"))?;
                if p[17..20] != [0, 0, 0] {
                    return Err(BadPayload("entry reserved bytes are not zero"));
                }
                let context_len = u32_at(p, 20) as usize;
                if context_len > p.len() - 24 {
                    return Err(BadPayload("entry context runs past the payload"));
                }
                Ok(Decoded::Entry(Entry {
                    index: u64_at(p, 0),
                    term: u64_at(p, 8),
                    kind,
                    context: p[24..24 + context_len].to_vec(),
                    data: p[24 + context_len..].to_vec(),
                }))
            }
            KIND_SNAPSHOT => {
                need(16, "snapshot payload is not 16 bytes")?;
                Ok(Decoded::Snapshot {
                    index: u64_at(p, 0),
                    term: u64_at(p, 8),
                })
            }
            _ => Err(BadPayload("unknown record kind")),
        }
    }

    /// A name for the record kind, for `keelson wal dump`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Decoded::Seed { .. } => "seed",
            Decoded::Metadata(_) => "metadata",
            Decoded::HardState(_) => "hardstate",
            Decoded::Entry(_) => "entry",
            Decoded::Snapshot { .. } => "snapshot",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(r: Record<'_>) -> Decoded {
        let mut p = Vec::new();
        r.write_payload(&mut p);
        assert_eq!(p.len(), r.payload_len());
        Decoded::decode(r.kind(), &p).unwrap()
    }

    #[test]
    fn every_record_kind_round_trips() {
        let e = Entry {
            index: 7,
            term: 3,
            kind: EntryKind::ConfChangeV2,
            context: b"ctx".to_vec(),
            data: b"data".to_vec(),
        };
        assert_eq!(round_trip(Record::from(&e)), Decoded::Entry(e));
        let hs = HardState {
            term: 9,
            vote: 2,
            commit: 40,
        };
        assert_eq!(round_trip(Record::HardState(hs)), Decoded::HardState(hs));
        assert_eq!(
            round_trip(Record::Metadata(b"m")),
            Decoded::Metadata(b"m".to_vec())
        );
        assert_eq!(
            round_trip(Record::Snapshot { index: 5, term: 1 }),
            Decoded::Snapshot { index: 5, term: 1 }
        );
        let seed = Decoded::decode(KIND_SEED, &seed_payload(3, 100, 0xdead_beef)).unwrap();
        assert_eq!(
            seed,
            Decoded::Seed {
                seq: 3,
                first_index: 100,
                previous_crc: 0xdead_beef
            }
        );
    }

    #[test]
    fn malformed_payloads_are_rejected() {
        assert!(Decoded::decode(KIND_HARD_STATE, &[0; 23]).is_err());
        assert!(Decoded::decode(KIND_ENTRY, &[0; 10]).is_err());
        let mut p = vec![0u8; 24];
        p[20] = 1; // context of 1 byte, but no bytes left
        assert!(Decoded::decode(KIND_ENTRY, &p).is_err());
        assert!(Decoded::decode(99, &[]).is_err());
    }
}
