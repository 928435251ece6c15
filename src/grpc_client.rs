//! A gRPC client on glommio for keelson's own tools (`keelson snapshot save`, `keelson bench`): an
//! HTTP/2 connection to a member through hyper's client over a glommio stream — as the server's
//! connections are — and etcd's calls framed as gRPC frames them.
//!
//! Runs on: a glommio executor (the tool's own).

use std::net::ToSocketAddrs;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
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

/// A call of the method at `uri` carrying `message`, framed as gRPC frames one: no compression,
/// its length, the message.
pub fn request(uri: &http::Uri, message: &impl prost::Message) -> http::Request<Full<Bytes>> {
    let len = message.encoded_len();
    let mut frame = BytesMut::with_capacity(5 + len);
    frame.put_u8(0);
    frame.put_u32(len as u32);
    message
        .encode(&mut frame)
        .expect("a BytesMut of the message's length holds it");
    let mut request = http::Request::new(Full::new(frame.freeze()));
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
pub fn status(headers: &http::HeaderMap) -> Option<(u32, String)> {
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
    channel.ready().await.map_err(|e| e.to_string())?;
    let response = channel
        .send_request(request(uri, message))
        .await
        .map_err(|e| e.to_string())?;
    let mut outcome = status(response.headers());
    let mut body = response.into_body();
    let mut received = Bytes::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(trailers) = frame.trailers_ref() {
            outcome = status(trailers).or(outcome);
        } else if let Ok(data) = frame.into_data() {
            received = if received.is_empty() {
                data
            } else {
                [received, data].concat().into()
            };
        }
    }
    match outcome {
        Some((0, _)) => Ok(received),
        Some((code, message)) => Err(format!("rpc error: code = {code} desc = {message}")),
        None => Err("the answer carried no grpc-status".into()),
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
