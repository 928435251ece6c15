//! A real etcd 3.4 (Debian's `etcd-server`) for interop tests: started on free loopback ports in a
//! temporary directory (new, or restored from a snapshot), written to through its JSON gateway,
//! stopped (by its own pid) on drop.
//! `etcdctl` runs against it or on files. Missing binaries are a test failure that says what to
//! install, never a skip.

use std::io::{Read, Write};
use std::net::TcpStream;

use crate::server::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use keelson_proto::mvccpb::KeyValue;

/// A running etcd we started.
pub struct Etcd {
    child: Child,
    pub client_port: u16,
    pub dir: tempfile::TempDir,
}

fn need(binary: &str) -> PathBuf {
    let path = Path::new("/usr/bin").join(binary);
    assert!(
        path.exists(),
        "{binary} not found: these tests run real etcd 3.4; install it with \
         `apt-get install -y etcd-server etcd-client` (or run .ci/run)"
    );
    path
}

/// Runs `etcdctl` with `args` and returns its output, failing the test if it fails.
pub fn etcdctl(args: &[&str]) -> Output {
    let out = Command::new(need("etcdctl"))
        .env("ETCDCTL_API", "3")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `etcdctl snapshot restore SNAPSHOT` into `data` for a one-member cluster of member `name` at
/// `peer`, checking the snapshot's SHA-256 unless `skip_hash_check`; fails the test if it fails.
pub fn restore(snapshot: &Path, data: &Path, name: &str, peer: &str, skip_hash_check: bool) {
    let (snapshot, data) = (snapshot.to_str().unwrap(), data.to_str().unwrap());
    let cluster = format!("{name}={peer}");
    let mut args = vec![
        "snapshot",
        "restore",
        snapshot,
        "--data-dir",
        data,
        "--name",
        name,
    ];
    args.extend([
        "--initial-cluster",
        &cluster,
        "--initial-advertise-peer-urls",
        peer,
    ]);
    if skip_hash_check {
        args.push("--skip-hash-check");
    }
    etcdctl(&args);
}

/// Decodes standard base64 (etcdctl's JSON encoding of bytes).
pub fn unbase64(text: &str) -> Vec<u8> {
    let sextet = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {text}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(sextet).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | u32::from(d) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// Standard base64 (the gateway's encoding of bytes).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Etcd {
    /// Starts etcd on a new data directory and waits until it answers.
    pub fn start() -> Etcd {
        Etcd::launch(|_, _| {})
    }

    /// Restores the snapshot (or data file) at `snapshot` with `etcdctl snapshot restore`
    /// (checking its SHA-256 unless `skip_hash_check`), starts etcd on the result and waits until
    /// it answers.
    pub fn restore(snapshot: &Path, skip_hash_check: bool) -> Etcd {
        Etcd::launch(|data, peer| restore(snapshot, data, "interop", peer, skip_hash_check))
    }

    /// Starts etcd on free ports, after `prepare` (given the data directory and the peer URL) has
    /// set up its data directory.
    fn launch(prepare: impl Fn(&Path, &str)) -> Etcd {
        let etcd = need("etcd");
        for _attempt in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let data = dir.path().join("data");
            let (client_port, peer_port) = (free_port(), free_port());
            let client = format!("http://127.0.0.1:{client_port}");
            let peer = format!("http://127.0.0.1:{peer_port}");
            prepare(&data, &peer);
            let child = Command::new(&etcd)
                .args(["--name", "interop", "--data-dir"])
                .arg(&data)
                .args([
                    "--listen-client-urls",
                    &client,
                    "--advertise-client-urls",
                    &client,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer,
                    "--initial-advertise-peer-urls",
                    &peer,
                ])
                .args(["--initial-cluster", &format!("interop={peer}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut server = Etcd {
                child,
                client_port,
                dir,
            };
            if server.wait_ready() {
                return server;
            }
        }
        panic!("etcd did not start on loopback ports after 5 attempts");
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if self.post("/v3/kv/range", "{\"key\":\"AA==\"}").is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// POSTs `body` to the JSON gateway at `path`; returns the response body.
    pub fn post(&self, path: &str, body: &str) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.client_port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut response = String::new();
        s.read_to_string(&mut response)?;
        match response.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
            _ => Err(std::io::Error::other(format!("gateway {path}: {response}"))),
        }
    }

    pub fn put(&self, key: &[u8], value: &[u8], lease: Option<i64>) {
        let lease = lease
            .map(|l| format!(",\"lease\":\"{l}\""))
            .unwrap_or_default();
        let body = format!(
            "{{\"key\":\"{}\",\"value\":\"{}\"{lease}}}",
            base64(key),
            base64(value)
        );
        self.post("/v3/kv/put", &body).unwrap();
    }

    pub fn delete(&self, key: &[u8]) {
        self.post(
            "/v3/kv/deleterange",
            &format!("{{\"key\":\"{}\"}}", base64(key)),
        )
        .unwrap();
    }

    /// Grants a lease and returns its id.
    pub fn grant_lease(&self, ttl: i64) -> i64 {
        let body = self
            .post("/v3/lease/grant", &format!("{{\"TTL\":\"{ttl}\"}}"))
            .unwrap();
        let id = body
            .split("\"ID\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap();
        id.parse().unwrap()
    }

    /// Every live key, as `etcdctl get "" --from-key -w json` lists them.
    pub fn list(&self) -> Vec<KeyValue> {
        let out = etcdctl(&[
            "--endpoints",
            &self.endpoint(),
            "get",
            "",
            "--from-key",
            "-w",
            "json",
        ]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let number = |kv: &serde_json::Value, field: &str| {
            kv.get(field)
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(0)
        };
        let bytes = |kv: &serde_json::Value, field: &str| {
            kv.get(field)
                .and_then(|v| v.as_str())
                .map(unbase64)
                .unwrap_or_default()
        };
        json["kvs"]
            .as_array()
            .map(|kvs| {
                kvs.iter()
                    .map(|kv| KeyValue {
                        key: bytes(kv, "key"),
                        create_revision: number(kv, "create_revision"),
                        mod_revision: number(kv, "mod_revision"),
                        version: number(kv, "version"),
                        value: bytes(kv, "value"),
                        lease: number(kv, "lease"),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `etcdctl snapshot save` into `path`.
    pub fn snapshot(&self, path: &Path) {
        etcdctl(&[
            "--endpoints",
            &self.endpoint(),
            "snapshot",
            "save",
            path.to_str().unwrap(),
        ]);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `etcdctl snapshot status -w json` reports.
#[derive(Debug, PartialEq, Eq)]
pub struct SnapshotStatus {
    pub hash: u32,
    pub revision: i64,
    pub total_key: u64,
    pub total_size: u64,
}

fn json_number(json: &str, field: &str) -> u64 {
    let rest = json
        .split(&format!("\"{field}\":"))
        .nth(1)
        .unwrap_or_else(|| panic!("no {field} in {json}"));
    rest.trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Runs `etcdctl snapshot status -w json FILE`: opens the file with bbolt itself, runs its
/// consistency check, and hashes every bucket.
pub fn snapshot_status(path: &Path) -> SnapshotStatus {
    let out = etcdctl(&["snapshot", "status", "-w", "json", path.to_str().unwrap()]);
    let json = String::from_utf8(out.stdout).unwrap();
    SnapshotStatus {
        hash: json_number(&json, "hash") as u32,
        revision: json_number(&json, "revision") as i64,
        total_key: json_number(&json, "totalKey"),
        total_size: json_number(&json, "totalSize"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for len in 0..10 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 250) as u8).collect();
            assert_eq!(unbase64(&base64(&bytes)), bytes);
        }
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(unbase64("Zm9vYg=="), b"foob");
    }
}
