//! The gRPC codec of keelson's services: prost's encoding, reporting each message it encodes (its
//! bytes, and how long encoding it took) and decodes (its bytes) to the thread's [`Observer`]. The
//! server counts etcd's `etcd_network_client_grpc_{sent,received}_bytes_total` from them (the
//! marshalled messages, gRPC's 5-byte framing not included) and times its `encode` stage.
//!
//! Invariant: each thread reports to the observer it was given with [`observe_with`] (a serving
//! core its own), so reporting shares nothing between cores; a thread given none reports nothing
//! and reads no clock.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use prost::Message;
use prost::bytes::Buf;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// What a thread is told of the messages its codecs handle.
pub trait Observer {
    /// A message of `bytes` bytes was encoded, in `took`.
    fn encoded(&self, bytes: usize, took: Duration);
    /// A message of `bytes` bytes is being decoded.
    fn decoded(&self, bytes: usize);
}

thread_local! {
    static OBSERVER: RefCell<Option<Rc<dyn Observer>>> = const { RefCell::new(None) };
}

/// Reports this thread's messages to `observer` from now on.
pub fn observe_with(observer: Rc<dyn Observer>) {
    OBSERVER.with(|o| *o.borrow_mut() = Some(observer));
}

fn observer() -> Option<Rc<dyn Observer>> {
    OBSERVER.with(|o| o.borrow().clone())
}

/// prost's codec, reporting what it encodes and decodes.
#[derive(Debug, Clone, Default)]
pub struct ObservedCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Codec for ObservedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = Observed<ProstEncoder<T>>;
    type Decoder = Observed<ProstDecoder<U>>;

    fn encoder(&mut self) -> Self::Encoder {
        Observed(self.0.encoder())
    }

    fn decoder(&mut self) -> Self::Decoder {
        Observed(self.0.decoder())
    }
}

/// An encoder or decoder that reports what passes through it.
#[derive(Debug, Clone)]
pub struct Observed<C>(C);

impl<T: Message> Encoder for Observed<ProstEncoder<T>> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        let Some(observer) = observer() else {
            return self.0.encode(item, buf);
        };
        let bytes = item.encoded_len();
        let started = Instant::now();
        let encoded = self.0.encode(item, buf);
        observer.encoded(bytes, started.elapsed());
        encoded
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

impl<U: Message + Default> Decoder for Observed<ProstDecoder<U>> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        if let Some(observer) = observer() {
            observer.decoded(buf.remaining());
        }
        self.0.decode(buf)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
