//! A panic anywhere ends the process. A member that lost its raft core, a serving core or a helper
//! thread must not linger half alive — serving nothing, yet looking alive to its supervisor — so
//! the panic hook writes one last line (which thread, what, where) to the log and exits with status
//! 1 at once, as etcd exits on a fatal error. Nothing acknowledged is lost: a write is acknowledged
//! only once it is durable in the WAL, and a restart replays the WAL.
//!
//! [`test_panic_point`] is the test suite's way to make a core panic (debug builds only).
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

/// In debug builds, panics if `KEELSON_TEST_PANIC` names this place and key (`raft:<key>` when the
/// raft core applies a put of `<key>`, `serving:<key>` when a serving core receives one), so tests
/// can kill a core of the real binary. Release builds never panic here.
pub fn test_panic_point(place: &str, key: &[u8]) {
    if cfg!(debug_assertions) {
        static WANTED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        let wanted = WANTED.get_or_init(|| std::env::var("KEELSON_TEST_PANIC").ok());
        if let Some((at, wanted_key)) = wanted.as_deref().and_then(|w| w.split_once(':'))
            && at == place
            && wanted_key.as_bytes() == key
        {
            panic!("KEELSON_TEST_PANIC: {place} core told to panic on a put of {wanted_key:?}");
        }
    }
}
