//! The bytes between two members. A connection carries raft messages one way, from the member that
//! dialled to the member that accepted. It opens with a [`Hello`]:
//! - an 8-byte magic (`KLSNPEER`);
//! - the cluster id, the sender's member id and the receiver's member id, each 8 bytes, big-endian.
//!
//! Frames follow: a 4-byte big-endian length, then one raft `Message` as protobuf (raft-rs's
//! `eraftpb`). A writer puts every message it has into one write; a reader decodes every whole frame
//! a read brought and hands them on together.
//!
//! Invariants: a frame is never longer than [`MAX_FRAME`] (one entry may be as large as the
//! largest request, and a message may carry several); a reader refuses a longer one, or one that
//! does not decode, and drops the connection rather than guess where the next frame starts.
//!
//! Runs on: the raft core.

// raft-rs's messages are generated with prost 0.11; its trait encodes and decodes them.
use prost_raft::Message as _;
use raft::eraftpb::Message;

/// What a connection starts with.
pub const MAGIC: [u8; 8] = *b"KLSNPEER";
/// The length of a [`Hello`] on the wire.
pub const HELLO_LEN: usize = 32;
/// The longest frame a member sends or takes.
pub const MAX_FRAME: usize = 64 << 20;

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
    /// A frame's bytes are not a raft message.
    #[error("a frame does not hold a raft message: {0}")]
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

/// Appends `message` as one frame to `out`. A message longer than [`MAX_FRAME`] is refused (the
/// receiver would refuse it): raft sends it again, and a member never makes one that large.
pub fn encode(message: &Message, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let len = message.encoded_len();
    if len > MAX_FRAME {
        return Err(FrameError::TooLong(len));
    }
    out.reserve(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    message
        .encode(out)
        .expect("a Vec grows to hold what it was reserved for");
    Ok(())
}

/// Takes every whole frame at the front of `buffer`, decoded, into `into`, and returns how many
/// bytes they took (the caller drops them; what is left is the start of the next frame).
pub fn decode(buffer: &[u8], into: &mut Vec<Message>) -> Result<usize, FrameError> {
    let mut at = 0;
    while let Some(header) = buffer.get(at..at + 4) {
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLong(len));
        }
        let Some(body) = buffer.get(at + 4..at + 4 + len) else {
            break;
        };
        let message = Message::decode(body).map_err(|e| FrameError::Decode(e.to_string()))?;
        into.push(message);
        at += 4 + len;
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{Entry, MessageType};

    fn message(index: u64, data: &[u8]) -> Message {
        Message {
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
        }
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
        let sent = [message(1, b"a"), message(2, &[7; 300]), message(3, b"")];
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
    fn a_frame_too_long_or_not_a_message_is_refused() {
        let mut wire = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        assert_eq!(
            decode(&wire, &mut Vec::new()),
            Err(FrameError::TooLong(MAX_FRAME + 1))
        );
        wire = vec![0, 0, 0, 2, 0xff, 0xff];
        assert!(matches!(
            decode(&wire, &mut Vec::new()),
            Err(FrameError::Decode(_))
        ));
    }
}
