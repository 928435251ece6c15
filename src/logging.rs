//! The member's log, which never holds a core up: tracing's formatter hands each finished line to a
//! bounded queue, and one helper thread (`keelson-log`) writes the queue to stderr. When stderr is
//! slower than the log (the queue is full) or gone (a closed pipe: `EPIPE`), the line is dropped
//! and counted (`keelson_log_lines_dropped_total` in `/metrics`) — logging is never a reason to
//! stop or slow serving. The queue is process-wide, as stderr is.
//!
//! Runs on: every thread writes to it; the helper thread alone touches stderr.

use std::io::{self, Write};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// Lines waiting for stderr at most; more are dropped.
const QUEUE_LINES: usize = 4096;

#[derive(Debug)]
struct Sink {
    queue: SyncSender<Vec<u8>>,
    queued: AtomicU64,
    /// Lines the helper thread has written or failed to write.
    handled: AtomicU64,
    dropped: AtomicU64,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Starts the helper thread and logs at `--log-level` (etcd's levels: panic and fatal log errors
/// only). Call once, first thing.
pub fn init(level: &str) {
    let level = match level {
        "debug" => tracing::Level::DEBUG,
        "warn" => tracing::Level::WARN,
        "error" | "panic" | "fatal" => tracing::Level::ERROR,
        _ => tracing::Level::INFO,
    };
    let (queue, lines) = mpsc::sync_channel::<Vec<u8>>(QUEUE_LINES);
    if SINK
        .set(Sink {
            queue,
            queued: AtomicU64::new(0),
            handled: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
        .is_err()
    {
        return;
    }
    let started = std::thread::Builder::new()
        .name("keelson-log".into())
        .spawn(move || {
            let Some(sink) = SINK.get() else { return };
            for line in lines {
                if io::stderr().write_all(&line).is_err() {
                    sink.dropped.fetch_add(1, Ordering::Relaxed);
                }
                sink.handled.fetch_add(1, Ordering::Release);
            }
        });
    if started.is_err() {
        // No thread, no log: every line counts as dropped.
        return;
    }
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(Lines)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .init();
}

/// Queues one line (with its newline) for stderr, or drops it.
pub fn emit(line: Vec<u8>) {
    let Some(sink) = SINK.get() else {
        // Not a member (no log set up): best effort, never panic.
        let _ = io::stderr().write_all(&line);
        return;
    };
    match sink.queue.try_send(line) {
        Ok(()) => {
            sink.queued.fetch_add(1, Ordering::Relaxed);
        }
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            sink.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Waits until every line queued so far is written (or failed), for at most `within`: a last line
/// before the process exits gets its chance, a stuck stderr cannot hold the exit up.
pub fn flush(within: Duration) {
    let Some(sink) = SINK.get() else { return };
    let target = sink.queued.load(Ordering::Relaxed);
    let deadline = Instant::now() + within;
    while sink.handled.load(Ordering::Acquire) < target && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Lines dropped so far.
pub fn dropped() -> u64 {
    SINK.get()
        .map_or(0, |sink| sink.dropped.load(Ordering::Relaxed))
}

/// tracing's writer: one per event, queued whole when the event is formatted.
struct Lines;

/// One event's text.
struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            emit(std::mem::take(&mut self.0));
        }
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line(Vec::with_capacity(160))
    }
}
