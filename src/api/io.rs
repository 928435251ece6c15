//! A glommio TCP stream as hyper's I/O: hyper 1.x reads and writes through its own `rt` traits;
//! glommio's stream speaks `futures` I/O. Reads go through a small owned buffer so no
//! uninitialised memory is ever handed out (one copy per read, far cheaper than the syscall).
//! Bytes already read off the socket (to tell HTTP/2 from HTTP/1) are handed out first. It keeps
//! the time of its last read that got bytes, for the `queue` stage of the calls those bytes carry.
//!
//! Runs on: every serving core.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

/// Bytes read from the socket per call at most.
const READ_CHUNK: usize = 16 << 10;

/// A connection, for hyper (the server's client connections; `keelson snapshot save`'s).
pub struct Io {
    stream: TcpStream,
    scratch: Vec<u8>,
    /// Read already, not yet handed out.
    unread: Vec<u8>,
    /// When the last read that got bytes returned.
    last_read: Rc<Cell<Instant>>,
}

impl Io {
    /// Wraps an accepted stream from which `unread` was read already.
    pub fn new(stream: TcpStream, unread: Vec<u8>) -> Io {
        Io {
            stream,
            scratch: vec![0; READ_CHUNK],
            unread,
            last_read: Rc::new(Cell::new(Instant::now())),
        }
    }

    /// When the connection's last read that got bytes returned, as it goes on reading.
    pub fn last_read(&self) -> Rc<Cell<Instant>> {
        self.last_read.clone()
    }
}

impl hyper::rt::Read for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.unread.is_empty() {
            let n = buf.remaining().min(this.unread.len());
            buf.put_slice(&this.unread[..n]);
            this.unread.drain(..n);
            return Poll::Ready(Ok(()));
        }
        let want = buf.remaining().min(READ_CHUNK);
        match Pin::new(&mut this.stream).poll_read(cx, &mut this.scratch[..want]) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.last_read.set(Instant::now());
                }
                buf.put_slice(&this.scratch[..n]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl hyper::rt::Write for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_close(cx)
    }
}
