//! A panic anywhere ends the process. A member that lost its raft core, a serving core or a helper
//! thread must not linger half alive — serving nothing, yet looking alive to its supervisor — so
//! the panic hook writes one last line (which thread, what, where) to the log and exits with status
//! 1 at once, as etcd exits on a fatal error. Nothing acknowledged is lost: a write is acknowledged
//! only once it is durable in the WAL, and a restart replays the WAL.
//!
//! The test suite makes a core panic through [`super::faults`] (debug builds only).
//!
//! Runs on: whichever thread panics.

use std::time::Duration;

use crate::logging;

/// The exit status after a fatal error or a panic (etcd's on a fatal log line).
pub const EXIT_FATAL: i32 = 1;

/// Makes every panic end the process with one last log line.
pub fn install() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        let what = info.to_string().replace('\n', ": ");
        exit(&format!("thread {name} {what}"));
    }));
}

/// Writes `why` as the last log line (waiting briefly for the log to drain) and exits with
/// [`EXIT_FATAL`].
pub fn exit(why: &str) -> ! {
    logging::emit(format!("keelson: fatal: {why}; exiting\n").into_bytes());
    logging::flush(Duration::from_millis(300));
    std::process::exit(EXIT_FATAL)
}
