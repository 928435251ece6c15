//! The gRPC codec of keelson's services: prost's encoding, counting the bytes of every message it
//! encodes and decodes — etcd's `etcd_network_client_grpc_{sent,received}_bytes_total`, which
//! count the marshalled messages (gRPC's 5-byte framing not included).
//!
//! Invariant: each thread counts into the [`Bytes`] it was given with [`count_into`] (a serving
//! core its own), so counting shares nothing between cores; a thread given none counts nothing.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message;
use prost::bytes::Buf;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Message bytes sent and received on one thread.
#[derive(Debug, Default)]
pub struct Bytes {
    sent: AtomicU64,
    received: AtomicU64,
}

impl Bytes {
    /// Bytes of the messages encoded.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Bytes of the messages decoded.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

thread_local! {
    static COUNTER: RefCell<Option<Arc<Bytes>>> = const { RefCell::new(None) };
}

/// Counts this thread's messages into `bytes` from now on.
pub fn count_into(bytes: Arc<Bytes>) {
    COUNTER.with(|c| *c.borrow_mut() = Some(bytes));
}

fn count(of: fn(&Bytes) -> &AtomicU64, n: usize) {
    COUNTER.with(|c| {
        if let Some(bytes) = c.borrow().as_ref() {
            of(bytes).fetch_add(n as u64, Ordering::Relaxed);
        }
    });
}

/// prost's codec, counting message bytes.
#[derive(Debug, Clone, Default)]
pub struct CountingCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Codec for CountingCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = Counted<ProstEncoder<T>>;
    type Decoder = Counted<ProstDecoder<U>>;

    fn encoder(&mut self) -> Self::Encoder {
        Counted(self.0.encoder())
    }

    fn decoder(&mut self) -> Self::Decoder {
        Counted(self.0.decoder())
    }
}

/// An encoder or decoder that counts what passes through it.
#[derive(Debug, Clone)]
pub struct Counted<C>(C);

impl<T: Message> Encoder for Counted<ProstEncoder<T>> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        count(|b| &b.sent, item.encoded_len());
        self.0.encode(item, buf)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

impl<U: Message + Default> Decoder for Counted<ProstDecoder<U>> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        count(|b| &b.received, buf.remaining());
        self.0.decode(buf)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
