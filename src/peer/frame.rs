//! The bytes between two members. A connection carries raft messages one way, from the member that
//! dialled to the member that accepted. It opens with a [`Hello`]:
//! - an 8-byte magic (`KLSNPEER`);
//! - the cluster id, the sender's member id and the receiver's member id, each 8 bytes, big-endian.
//!
//! Frames follow: a 4-byte big-endian length, then a kind byte and its body:
//! - [`RAFT`]: one raft `Message` as protobuf (raft-rs's `eraftpb`);
//! - [`FORWARD`]: a request forwarded to the leader or its answer ([`Forward`]: a lease question,
//!   a membership change), in fixed big-endian fields (see [`encode_forward`]);
//! - [`SNAPSHOT`]: the length of a page file (8 bytes), then raft's `MsgSnapshot` as protobuf. The
//!   file's bytes follow the frame, and nothing else on that connection: a snapshot has a
//!   connection of its own, so heartbeats never wait behind it. The receiver answers one byte
//!   once the file is saved and verified (0) or refused (1).
//!
//! A writer puts every frame it has into one write; a reader decodes every whole frame a read
//! brought and hands them on together.
//!
//! Invariants: a frame is never longer than [`MAX_FRAME`] (one entry may be as large as the
//! largest request, and a message may carry several); a reader refuses a longer one, or one that
//! does not decode, and drops the connection rather than guess where the next frame starts.
//!
//! Runs on: the raft core.

// raft-rs's messages are generated with prost 0.11; its trait encodes and decodes them.
use prost_raft::Message as _;
use raft::eraftpb::Message;

use keelson_proto::raftpb::ConfChange;

use crate::apply::members;
use crate::raft::seams::Declined;
use crate::raft::seams::Forward;
use crate::runtime::link::{LeaseAnswer, LeaseAsk};

/// The refusals a forward frame names by number (1 for the first).
const DECLINED: [Declined; 5] = [
    Declined::NoLeader,
    Declined::NotLeader,
    Declined::NotEnoughStarted,
    Declined::LearnerNotReady,
    Declined::Unhealthy,
];

/// What a connection starts with.
pub const MAGIC: [u8; 8] = *b"KLSNPEER";
/// The length of a [`Hello`] on the wire.
pub const HELLO_LEN: usize = 32;
/// The longest frame a member sends or takes.
pub const MAX_FRAME: usize = 64 << 20;
/// The kind of a frame that holds a raft message.
pub const RAFT: u8 = 0;
/// The kind of a frame that holds a forwarded request or answer.
pub const FORWARD: u8 = 1;
/// The kind of a frame that holds a snapshot's raft message, the page file following it.
pub const SNAPSHOT: u8 = 2;

/// What one frame holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A raft message.
    Raft(Message),
    /// A forwarded request or answer.
    Forward(Forward),
    /// A snapshot's raft message; `len` bytes of page file follow the frame.
    Snapshot {
        /// raft's `MsgSnapshot`.
        message: Message,
        /// The length of the file after the frame.
        len: u64,
    },
}

/// Who is speaking to whom, in which cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// The cluster the sender belongs to.
    pub cluster_id: u64,
    /// The sender's member id.
    pub from: u64,
    /// The member id the sender thinks it is speaking to.
    pub to: u64,
}

/// Why bytes from a peer were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The connection did not start with [`MAGIC`].
    #[error("not a keelson peer connection (bad magic {0:02x?})")]
    Magic([u8; 8]),
    /// A frame claimed more than [`MAX_FRAME`] bytes.
    #[error("a frame of {0} bytes is longer than the {MAX_FRAME} a member takes")]
    TooLong(usize),
    /// A frame's bytes are not what its kind says.
    #[error("a frame does not hold what its kind says: {0}")]
    Decode(String),
}

impl Hello {
    /// The hello's bytes.
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut bytes = [0u8; HELLO_LEN];
        bytes[..8].copy_from_slice(&MAGIC);
        bytes[8..16].copy_from_slice(&self.cluster_id.to_be_bytes());
        bytes[16..24].copy_from_slice(&self.from.to_be_bytes());
        bytes[24..32].copy_from_slice(&self.to.to_be_bytes());
        bytes
    }

    /// Reads a hello from its bytes.
    pub fn decode(bytes: &[u8; HELLO_LEN]) -> Result<Hello, FrameError> {
        let word = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            word
        };
        if word(0) != MAGIC {
            return Err(FrameError::Magic(word(0)));
        }
        Ok(Hello {
            cluster_id: u64::from_be_bytes(word(8)),
            from: u64::from_be_bytes(word(16)),
            to: u64::from_be_bytes(word(24)),
        })
    }
}

/// Appends `frame` to `out`. A frame longer than [`MAX_FRAME`] is refused (the receiver would
/// refuse it): raft sends it again, and a member never makes one that large.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    match frame {
        Frame::Raft(message) => {
            out.push(RAFT);
            message
                .encode(out)
                .expect("a Vec grows to hold what is encoded into it");
        }
        Frame::Forward(lease) => {
            out.push(FORWARD);
            encode_forward(lease, out);
        }
        Frame::Snapshot { message, len } => {
            out.push(SNAPSHOT);
            out.extend_from_slice(&len.to_be_bytes());
            message
                .encode(out)
                .expect("a Vec grows to hold what is encoded into it");
        }
    }
    let len = out.len() - start - 4;
    if len > MAX_FRAME {
        out.truncate(start);
        return Err(FrameError::TooLong(len));
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Takes every whole frame at the front of `buffer`, decoded, into `into`, and returns how many
/// bytes they took (the caller drops them; what is left is the start of the next frame). It stops
/// after a snapshot's frame: what follows that is the file.
pub fn decode(buffer: &[u8], into: &mut Vec<Frame>) -> Result<usize, FrameError> {
    let mut at = 0;
    while let Some(header) = buffer.get(at..at + 4) {
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLong(len));
        }
        let Some(body) = buffer.get(at + 4..at + 4 + len) else {
            break;
        };
        let raft =
            |bytes: &[u8]| Message::decode(bytes).map_err(|e| FrameError::Decode(e.to_string()));
        let frame = match body.split_first() {
            Some((&RAFT, message)) => Frame::Raft(raft(message)?),
            Some((&SNAPSHOT, body)) => {
                let (len, message) = body
                    .split_first_chunk::<8>()
                    .ok_or_else(|| FrameError::Decode("a snapshot frame ends early".into()))?;
                Frame::Snapshot {
                    message: raft(message)?,
                    len: u64::from_be_bytes(*len),
                }
            }
            Some((&FORWARD, lease)) => Frame::Forward(decode_forward(lease)?),
            Some((kind, _)) => return Err(FrameError::Decode(format!("unknown kind {kind}"))),
            None => return Err(FrameError::Decode("an empty frame".into())),
        };
        let file_follows = matches!(frame, Frame::Snapshot { .. });
        into.push(frame);
        at += 4 + len;
        if file_follows {
            break;
        }
    }
    Ok(at)
}

/// A forward frame's body: a tag (1 lease question, 2 its answer, 3 membership change, 4 its
/// refusal), the asker's number (8 bytes), then
/// - a question: its kind (0 renew, 1 time to live, 2 every lease) and the lease id (8 bytes);
/// - an answer: its kind (0 none: not the leader, 1 renewed, 2 no such lease, 3 time to live,
///   4 every lease) and its numbers: the time to live renewed for; the seconds left and granted;
///   or a count (4 bytes) and that many lease ids;
/// - a membership change: etcd's configuration change as protobuf (its id the asker's number);
/// - a refusal: its kind (1 and on, as [`DECLINED`] lists them).
fn encode_forward(lease: &Forward, out: &mut Vec<u8>) {
    let numbers = |out: &mut Vec<u8>, values: &[i64]| {
        for v in values {
            out.extend_from_slice(&v.to_be_bytes());
        }
    };
    match lease {
        Forward::Ask { id, ask } => {
            out.push(1);
            out.extend_from_slice(&id.to_be_bytes());
            let (kind, lease) = match ask {
                LeaseAsk::Renew(lease) => (0, *lease),
                LeaseAsk::TimeToLive(lease) => (1, *lease),
                LeaseAsk::Leases => (2, 0),
            };
            out.push(kind);
            numbers(out, &[lease]);
        }
        Forward::Reconfigure { id, change } => {
            out.push(3);
            out.extend_from_slice(&id.to_be_bytes());
            if let Some(cc) = members::proposal(*id, change) {
                prost::Message::encode(&cc, out)
                    .expect("a Vec grows to hold what is encoded into it");
            }
        }
        Forward::Refused { id, declined } => {
            out.push(4);
            out.extend_from_slice(&id.to_be_bytes());
            let kind = DECLINED.iter().position(|d| d == declined).unwrap_or(0);
            out.push(kind as u8 + 1);
        }
        Forward::Answer { id, answer } => {
            out.push(2);
            out.extend_from_slice(&id.to_be_bytes());
            match answer {
                None => out.push(0),
                Some(LeaseAnswer::Renewed(ttl)) => {
                    out.push(1);
                    numbers(out, &[*ttl]);
                }
                Some(LeaseAnswer::TimeToLive(None)) => out.push(2),
                Some(LeaseAnswer::TimeToLive(Some((left, granted)))) => {
                    out.push(3);
                    numbers(out, &[*left, *granted]);
                }
                Some(LeaseAnswer::Leases(ids)) => {
                    out.push(4);
                    out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
                    numbers(out, ids);
                }
            }
        }
    }
}

/// Reads fixed big-endian fields off the front of a body.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or_else(|| FrameError::Decode("a forward frame ends early".into()))?;
        self.0 = rest;
        Ok(*head)
    }

    fn byte(&mut self) -> Result<u8, FrameError> {
        Ok(self.take::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_be_bytes(self.take()?))
    }

    fn i64(&mut self) -> Result<i64, FrameError> {
        Ok(i64::from_be_bytes(self.take()?))
    }
}

fn decode_forward(body: &[u8]) -> Result<Forward, FrameError> {
    let mut f = Fields(body);
    let bad =
        |what: &str, value: u8| FrameError::Decode(format!("a forward frame's {what} is {value}"));
    let lease = match f.byte()? {
        1 => {
            let id = f.u64()?;
            let kind = f.byte()?;
            let lease = f.i64()?;
            let ask = match kind {
                0 => LeaseAsk::Renew(lease),
                1 => LeaseAsk::TimeToLive(lease),
                2 => LeaseAsk::Leases,
                other => return Err(bad("question", other)),
            };
            Forward::Ask { id, ask }
        }
        2 => {
            let id = f.u64()?;
            let answer = match f.byte()? {
                0 => None,
                1 => Some(LeaseAnswer::Renewed(f.i64()?)),
                2 => Some(LeaseAnswer::TimeToLive(None)),
                3 => Some(LeaseAnswer::TimeToLive(Some((f.i64()?, f.i64()?)))),
                4 => {
                    let count = u32::from_be_bytes(f.take()?) as usize;
                    if count > f.0.len() / 8 {
                        return Err(FrameError::Decode("a forward frame ends early".into()));
                    }
                    let ids = (0..count).map(|_| f.i64()).collect::<Result<_, _>>()?;
                    Some(LeaseAnswer::Leases(ids))
                }
                other => return Err(bad("answer", other)),
            };
            Forward::Answer { id, answer }
        }
        3 => {
            let id = f.u64()?;
            let cc: ConfChange = prost::Message::decode(std::mem::take(&mut f.0))
                .map_err(|e| FrameError::Decode(e.to_string()))?;
            let (change, _) = members::from_conf_change(&cc).ok_or_else(|| {
                FrameError::Decode("a forwarded membership change is not etcd's".into())
            })?;
            Forward::Reconfigure { id, change }
        }
        4 => {
            let id = f.u64()?;
            let kind = f.byte()?;
            let declined = *DECLINED
                .get((kind as usize).wrapping_sub(1))
                .ok_or_else(|| bad("refusal", kind))?;
            Forward::Refused { id, declined }
        }
        other => return Err(bad("tag", other)),
    };
    if !f.0.is_empty() {
        return Err(FrameError::Decode(
            "a forward frame has bytes after its end".into(),
        ));
    }
    Ok(lease)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{Entry, MessageType};

    fn message(index: u64, data: &[u8]) -> Frame {
        Frame::Raft(Message {
            msg_type: MessageType::MsgAppend as i32,
            to: 2,
            from: 1,
            term: 3,
            index,
            entries: vec![Entry {
                index: index + 1,
                term: 3,
                data: data.to_vec(),
                ..Entry::default()
            }],
            ..Message::default()
        })
    }

    #[test]
    fn a_hello_reads_back_and_a_stranger_is_refused() {
        let hello = Hello {
            cluster_id: 0xcdf8_18ce_ca84_1b46,
            from: 1,
            to: u64::MAX,
        };
        assert_eq!(Hello::decode(&hello.encode()), Ok(hello));
        let mut bytes = hello.encode();
        bytes[..8].copy_from_slice(b"GET / HT");
        assert!(matches!(Hello::decode(&bytes), Err(FrameError::Magic(_))));
    }

    #[test]
    fn frames_split_anywhere_decode_whole_and_in_order() {
        let lease = |id, answer| Frame::Forward(Forward::Answer { id, answer });
        let sent = [
            message(1, b"a"),
            Frame::Forward(Forward::Ask {
                id: u64::MAX,
                ask: LeaseAsk::Renew(-5),
            }),
            Frame::Forward(Forward::Ask {
                id: 1,
                ask: LeaseAsk::TimeToLive(7),
            }),
            Frame::Forward(Forward::Ask {
                id: 2,
                ask: LeaseAsk::Leases,
            }),
            message(2, &[7; 300]),
            lease(3, None),
            lease(4, Some(LeaseAnswer::Renewed(60))),
            lease(5, Some(LeaseAnswer::TimeToLive(None))),
            lease(6, Some(LeaseAnswer::TimeToLive(Some((59, 60))))),
            lease(7, Some(LeaseAnswer::Leases(vec![1, i64::MIN, 3]))),
            lease(8, Some(LeaseAnswer::Leases(Vec::new()))),
            message(3, b""),
        ];
        let mut wire = Vec::new();
        for m in &sent {
            encode(m, &mut wire).unwrap();
        }
        for split in 0..=wire.len() {
            let mut got = Vec::new();
            let taken = decode(&wire[..split], &mut got).unwrap();
            let mut rest = wire[taken..split].to_vec();
            rest.extend_from_slice(&wire[split..]);
            let taken_rest = decode(&rest, &mut got).unwrap();
            assert_eq!(taken_rest, rest.len(), "split at {split}");
            assert_eq!(got, sent, "split at {split}");
        }
    }

    #[test]
    fn decoding_stops_after_a_snapshot_frame_where_the_file_begins() {
        let mut snapshot = Message {
            msg_type: raft::eraftpb::MessageType::MsgSnapshot as i32,
            from: 1,
            to: 2,
            ..Message::default()
        };
        snapshot.mut_snapshot().mut_metadata().index = 40;
        let frame = Frame::Snapshot {
            message: snapshot,
            len: 8192,
        };
        let mut wire = Vec::new();
        encode(&message(1, b"a"), &mut wire).unwrap();
        encode(&frame, &mut wire).unwrap();
        let file_starts = wire.len();
        // The file's first bytes would read as a frame header of a huge length.
        wire.extend_from_slice(&[0xff; 64]);
        let mut got = Vec::new();
        assert_eq!(decode(&wire, &mut got), Ok(file_starts));
        assert_eq!(got, vec![message(1, b"a"), frame]);
    }

    #[test]
    fn a_frame_too_long_or_not_what_its_kind_says_is_refused() {
        let wire = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        assert_eq!(
            decode(&wire, &mut Vec::new()),
            Err(FrameError::TooLong(MAX_FRAME + 1))
        );
        let mut answer = Vec::new();
        let leases = Forward::Answer {
            id: 1,
            answer: Some(LeaseAnswer::Leases(vec![1, 2])),
        };
        encode(&Frame::Forward(leases), &mut answer).unwrap();
        let body = answer[4..].to_vec();
        let framed = |body: &[u8]| {
            let mut wire = (body.len() as u32).to_be_bytes().to_vec();
            wire.extend_from_slice(body);
            wire
        };
        let refused = [
            framed(&[]),
            framed(&[RAFT, 0xff, 0xff]),
            framed(&[9]),
            framed(&[FORWARD, 3]),
            framed(&body[..body.len() - 1]),
            framed(&[&body[..], &[0]].concat()),
        ];
        for wire in refused {
            assert!(
                matches!(decode(&wire, &mut Vec::new()), Err(FrameError::Decode(_))),
                "{wire:?}"
            );
        }
        // A count larger than the bytes that follow is refused before anything is allocated.
        let mut huge = body.clone();
        huge[11..15].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode(&framed(&huge), &mut Vec::new()).is_err());
    }
}
