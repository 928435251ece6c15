//! The kill -9 harness: runs the calling test again as a child process (an environment variable
//! tells it to play the child), reads the numbers the child reports on stdout, kills it at a random
//! moment once it is under way, and says the highest number it reported.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rand::Rng;

/// Runs test `test` of this binary with `env` set to `dir`, waits for its first `prefix N` line,
/// lets it run up to `max_run` longer, kills it with SIGKILL, and returns the highest N reported.
pub fn run_then_kill(
    test: &str,
    env: &str,
    dir: &Path,
    prefix: &'static str,
    max_run: Duration,
) -> u64 {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(n) = line.strip_prefix(prefix) {
                let _ = tx.send(n.trim().parse::<u64>().unwrap());
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the child reports progress");
    std::thread::sleep(rand::rng().random_range(Duration::from_millis(1)..max_run));
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    rx.try_iter().max().unwrap_or(first).max(first)
}
