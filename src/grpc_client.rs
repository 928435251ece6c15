//! A gRPC client on glommio for keelson's own tools (`keelson snapshot save`, `keelson bench`): an
//! HTTP/2 connection to a member through hyper's client over a glommio stream — as the server's
//! connections are — and etcd's calls framed as gRPC frames them: a unary call's whole answer, or
//! a streaming call's answers a message at a time ([`Answers`]). A call's request is sent whole,
//! then its sending side closes; etcd and keelson keep serving a Watch stream after that.
//!
//! Runs on: a glommio executor (the tool's own).

use std::net::ToSocketAddrs;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;

use crate::api::conn::LocalExec;
use crate::api::io::Io;

/// One HTTP/2 connection to a member; clones share it (each call is a stream of its own).
pub type Channel = SendRequest<Full<Bytes>>;

/// `endpoint` (`host:port`, or `http://host:port`) as `host:port`.
pub fn host(endpoint: &str) -> &str {
    endpoint.trim_start_matches("http://").trim_end_matches('/')
}

/// Connects to `endpoint`; the connection's I/O runs in a task of its own.
pub async fn connect(endpoint: &str) -> Result<Channel, String> {
    let addr = host(endpoint)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let stream = glommio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, connection) =
        hyper::client::conn::http2::handshake(LocalExec, Io::new(stream, Vec::new()))
            .await
            .map_err(|e| e.to_string())?;
    glommio::spawn_local(connection).detach();
    Ok(sender)
}

/// The URI of method `path` (`/package.Service/Method`) on `endpoint`; an error if `endpoint` does
/// not make one.
pub fn uri(endpoint: &str, path: &str) -> Result<http::Uri, String> {
    format!("http://{}{path}", host(endpoint))
        .parse()
        .map_err(|e: http::uri::InvalidUri| format!("{endpoint}: {e}"))
}

/// A call of the method at `uri` carrying `messages`, each framed as gRPC frames one: no
/// compression, its length, the message.
fn request<M: prost::Message>(uri: &http::Uri, messages: &[M]) -> http::Request<Full<Bytes>> {
    let len = messages.iter().map(|m| 5 + m.encoded_len()).sum();
    let mut frames = BytesMut::with_capacity(len);
    for message in messages {
        frames.put_u8(0);
        frames.put_u32(message.encoded_len() as u32);
        message
            .encode(&mut frames)
            .expect("a BytesMut of the messages' length holds them");
    }
    let mut request = http::Request::new(Full::new(frames.freeze()));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = uri.clone();
    let headers = request.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    request
}

/// gRPC's status in `headers`, if they carry one: its code and message.
fn status(headers: &http::HeaderMap) -> Option<(u32, String)> {
    let code = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Some((code, message))
}

/// A unary call of the method at `uri` (or a streaming one with one message each way): sends
/// `message` on `channel` and waits for the whole answer, whose body (gRPC frames) it returns; an
/// error is the transport's, or gRPC's status as etcd's clients print it.
pub async fn unary(
    channel: &mut Channel,
    uri: &http::Uri,
    message: &impl prost::Message,
) -> Result<Bytes, String> {
    let response = send(channel, uri, std::slice::from_ref(message)).await?;
    let mut outcome = status(response.headers());
    let mut body = response.into_body();
    let mut received = Bytes::new();
    while let Some(data) = next_data(&mut body, &mut outcome).await? {
        received = if received.is_empty() {
            data
        } else {
            [received, data].concat().into()
        };
    }
    ended(outcome).map(|()| received)
}

/// The next data of an answer's `body`, taking gRPC's status from its trailers into `outcome` on
/// the way; `None` once the body has ended.
async fn next_data(
    body: &mut Incoming,
    outcome: &mut Option<(u32, String)>,
) -> Result<Option<Bytes>, String> {
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(trailers) = frame.trailers_ref() {
            *outcome = status(trailers).or(outcome.take());
        } else if let Ok(data) = frame.into_data() {
            return Ok(Some(data));
        }
    }
    Ok(None)
}

async fn send<M: prost::Message>(
    channel: &mut Channel,
    uri: &http::Uri,
    messages: &[M],
) -> Result<http::Response<Incoming>, String> {
    channel.ready().await.map_err(|e| e.to_string())?;
    channel
        .send_request(request(uri, messages))
        .await
        .map_err(|e| e.to_string())
}

/// How a call ended, by the gRPC status it carried: OK, or an error as etcd's clients print one.
fn ended(outcome: Option<(u32, String)>) -> Result<(), String> {
    match outcome {
        Some((0, _)) => Ok(()),
        Some((code, message)) => Err(format!("rpc error: code = {code} desc = {message}")),
        None => Err("the answer carried no grpc-status".into()),
    }
}

/// The answers of a call, read a message at a time as they arrive.
pub struct Answers {
    body: Incoming,
    /// Bytes received and not yet read as messages.
    pending: BytesMut,
    status: Option<(u32, String)>,
}

/// Calls the method at `uri` with `messages` (a streaming call's whole request) on `channel`.
pub async fn call<M: prost::Message>(
    channel: &mut Channel,
    uri: &http::Uri,
    messages: &[M],
) -> Result<Answers, String> {
    let response = send(channel, uri, messages).await?;
    Ok(Answers {
        status: status(response.headers()),
        body: response.into_body(),
        pending: BytesMut::new(),
    })
}

impl Answers {
    /// The next message; `None` once the call has ended with OK. An error if it ended with another
    /// status (or none), broke, or sent what does not decode as an `M`.
    pub async fn next<M: prost::Message + Default>(&mut self) -> Result<Option<M>, String> {
        loop {
            if let Some((message, used)) = frame(&self.pending)? {
                let decoded = M::decode(message).map_err(|e| e.to_string());
                self.pending.advance(used);
                return decoded.map(Some);
            }
            let Some(data) = next_data(&mut self.body, &mut self.status).await? else {
                return ended(self.status.take()).map(|()| None);
            };
            self.pending.extend_from_slice(&data);
        }
    }
}

/// The first gRPC frame of `bytes` (a compression flag, a length, the message): its message and
/// the bytes the frame takes, or `None` while `bytes` holds only part of one; an error if it is
/// compressed (keelson's tools ask for no compression).
pub fn frame(bytes: &[u8]) -> Result<Option<(&[u8], usize)>, String> {
    let [flag, a, b, c, d, rest @ ..] = bytes else {
        return Ok(None);
    };
    if *flag != 0 {
        return Err("a compressed message".into());
    }
    let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
    Ok(rest.get(..len).map(|message| (message, 5 + len)))
}

/// The first message of an answer's body; an error if it holds no whole one, or one compressed or
/// not of type `M`.
pub fn first_message<M: prost::Message + Default>(body: &[u8]) -> Result<M, String> {
    let (message, _) = frame(body)?.ok_or("the answer holds no whole message")?;
    M::decode(message).map_err(|e| e.to_string())
}
