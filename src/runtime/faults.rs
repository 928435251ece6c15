//! Faults the test suite switches on in the real binary, in debug builds only (release builds
//! never act on them): a core that panics on a put of a given key (`KEELSON_TEST_PANIC`), and a raft
//! core that stalls applying one (`KEELSON_TEST_STALL`), for tests of what a member does when a
//! core dies or its applies fall behind.
//!
//! Runs on: the core that reaches the point.

use std::time::Duration;

/// The value of variable `name`, read once.
fn wanted(cell: &'static std::sync::OnceLock<Option<String>>, name: &str) -> Option<&'static str> {
    cell.get_or_init(|| std::env::var(name).ok()).as_deref()
}

/// In debug builds, panics if `KEELSON_TEST_PANIC` names this place and key (`raft:<key>` when the
/// raft core applies a put of `<key>`, `serving:<key>` when a serving core receives one), so tests
/// can kill a core of the real binary. Release builds never panic here.
pub fn test_panic_point(place: &str, key: &[u8]) {
    if cfg!(debug_assertions) {
        static WANTED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        if let Some((at, wanted_key)) =
            wanted(&WANTED, "KEELSON_TEST_PANIC").and_then(|w| w.split_once(':'))
            && at == place
            && wanted_key.as_bytes() == key
        {
            panic!("KEELSON_TEST_PANIC: {place} core told to panic on a put of {wanted_key:?}");
        }
    }
}

/// In debug builds, how long the raft core is to stall before applying a put of `key`, if
/// `KEELSON_TEST_STALL` is `<key>:<milliseconds>`. Release builds never stall here.
pub fn test_stall(key: &[u8]) -> Option<Duration> {
    if !cfg!(debug_assertions) {
        return None;
    }
    static WANTED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let (wanted_key, millis) = wanted(&WANTED, "KEELSON_TEST_STALL")?.rsplit_once(':')?;
    (wanted_key.as_bytes() == key)
        .then(|| millis.parse().ok().map(Duration::from_millis))
        .flatten()
}
