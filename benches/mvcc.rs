//! The MVCC store beside etcd 3.4's own storage layer, same workload, same machine, same run: a
//! store of 1M keys (25-byte keys in groups of 100, 256-byte values), then
//!
//! - apply throughput: puts to random existing keys, applied in batches of 1, 100 and 1000 raft
//!   entries (each its own request and revision), synced every 100 ms or 10 000 puts — etcd's
//!   backend commit defaults. etcd applies each entry in its own write transaction, so it has one
//!   figure, shown beside each batch size;
//! - Range latency (a read transaction, the read and its end): one key, a 100-key prefix, and
//!   `count_only` over 100k keys.
//!
//! The etcd side is `benches/mvcc_etcd/main.go`, built here against Debian's etcd sources
//! (`apt-get install golang-go golang-etcd-server-dev`), driving `go.etcd.io/etcd/mvcc` on its bbolt
//! backend in process — neither side has network or raft in the way.
//!
//! `cargo bench --bench mvcc` (a few minutes; `KEELSON_BENCH_DIR` picks the disk, default the
//! system temp directory; `MVCC_BENCH_KEYS` shrinks the store for a quick look).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use keelson_engine::mvcc::{self, Entry, Options, Request, Store};
use keelson_proto::etcdserverpb::{PutRequest, RangeRequest};
use rand::Rng;

const VALUE: usize = 256;
const PUTS: usize = 200_000;
const RANGES: usize = 2_000;
/// etcd's backend commits every 100 ms or 10 000 changes, whichever comes first.
const SYNC_EVERY: Duration = Duration::from_millis(100);
const SYNC_PUTS: usize = 10_000;

fn key(i: usize) -> Vec<u8> {
    format!("/registry/g{:05}/k{i:07}", i / 100).into_bytes()
}

/// The keys of group `g` (100 keys): `[start, end)`.
fn group(g: usize) -> (Vec<u8>, Vec<u8>) {
    (
        format!("/registry/g{g:05}/").into_bytes(),
        format!("/registry/g{g:05}0").into_bytes(),
    )
}

/// One figure of one side.
#[derive(Debug, Clone)]
struct Figure {
    name: String,
    unit: String,
    value: f64,
}

/// The keelson side: the store, and the raft index of the next entry.
struct Keelson {
    store: Store,
    index: u64,
    value: Vec<u8>,
}

impl Keelson {
    /// Applies puts of `keys` in batches of `batch` entries, syncing as etcd's backend commits.
    fn put(&mut self, keys: impl Iterator<Item = usize>, batch: usize) -> usize {
        let (mut since_sync, mut synced_at, mut total) = (0, Instant::now(), 0);
        let mut entries = Vec::with_capacity(batch);
        let mut keys = keys.peekable();
        while keys.peek().is_some() {
            entries.clear();
            for k in keys.by_ref().take(batch) {
                self.index += 1;
                let put = PutRequest {
                    key: key(k),
                    value: self.value.clone(),
                    ..PutRequest::default()
                };
                entries.push(Entry {
                    index: self.index,
                    term: 1,
                    request: Request::Put(put),
                });
            }
            let applied = self.store.apply(&entries).expect("apply");
            assert!(applied.iter().all(|a| a.response.is_ok()));
            since_sync += entries.len();
            total += entries.len();
            if since_sync >= SYNC_PUTS || synced_at.elapsed() >= SYNC_EVERY {
                self.store.sync().expect("sync");
                (since_sync, synced_at) = (0, Instant::now());
            }
        }
        self.store.sync().expect("sync");
        total
    }

    fn range_latency(
        &self,
        name: &str,
        mut pick: impl FnMut() -> RangeRequest,
        out: &mut Vec<Figure>,
    ) {
        let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
        for _ in 0..RANGES {
            let req = pick();
            let start = Instant::now();
            let view = self.store.db().begin_read().expect("read");
            let revs = mvcc::revisions(&view).expect("revisions");
            let resp = mvcc::range(&view, &req, revs).expect("range");
            drop(view);
            latency
                .record(start.elapsed().as_nanos() as u64)
                .expect("record");
            assert!(resp.count > 0, "{name}: nothing found");
        }
        for (label, q) in [("p50", 0.5), ("p99", 0.99)] {
            let value = latency.value_at_quantile(q) as f64 / 1000.0;
            out.push(Figure {
                name: format!("{name} {label}"),
                unit: "us".into(),
                value,
            });
        }
    }
}

fn run_keelson(dir: &Path, keys: usize) -> Vec<Figure> {
    let mut rng = rand::rng();
    let mut value = vec![0u8; VALUE];
    rng.fill(&mut value[..]);
    let store = Store::open(dir.join("keelson.db"), Options::default()).expect("open");
    let mut k = Keelson {
        store,
        index: 0,
        value,
    };
    let mut out = Vec::new();
    let start = Instant::now();
    let loaded = k.put(0..keys, 1000);
    out.push(Figure {
        name: "load".into(),
        unit: "puts/s".into(),
        value: loaded as f64 / start.elapsed().as_secs_f64(),
    });
    for batch in [1, 100, 1000] {
        // Fewer puts one at a time: each is a write transaction of its own.
        let puts = if batch == 1 { PUTS / 4 } else { PUTS };
        let picks: Vec<usize> = (0..puts).map(|_| rng.random_range(0..keys)).collect();
        let start = Instant::now();
        let done = k.put(picks.into_iter(), batch);
        let per_second = done as f64 / start.elapsed().as_secs_f64();
        out.push(Figure {
            name: format!("apply, batches of {batch}"),
            unit: "puts/s".into(),
            value: per_second,
        });
    }
    let groups = keys / 100;
    k.range_latency(
        "range one key",
        || RangeRequest {
            key: key(rand::rng().random_range(0..keys)),
            ..RangeRequest::default()
        },
        &mut out,
    );
    k.range_latency(
        "range 100-key prefix",
        || {
            let (key, range_end) = group(rand::rng().random_range(0..groups));
            RangeRequest {
                key,
                range_end,
                ..RangeRequest::default()
            }
        },
        &mut out,
    );
    k.range_latency(
        "count 100k keys",
        || {
            let g = rand::rng().random_range(0..=groups - 1000);
            RangeRequest {
                key: group(g).0,
                range_end: group(g + 1000).0,
                count_only: true,
                ..RangeRequest::default()
            }
        },
        &mut out,
    );
    out
}

/// Builds and runs the etcd side; `Err` says what is missing.
fn run_etcd(dir: &Path, keys: usize) -> Result<Vec<Figure>, String> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/mvcc_etcd");
    let gopath = "/usr/share/gocode";
    if !Path::new(gopath).join("src/go.etcd.io/etcd/mvcc").exists() {
        return Err(
            "etcd's Go sources are missing: apt-get install golang-go golang-etcd-server-dev"
                .into(),
        );
    }
    let binary = dir.join("mvcc_etcd");
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(&source)
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("GOPATH", gopath)
        .env("GOCACHE", dir.join("gocache"))
        .env("CGO_ENABLED", "0")
        .status()
        .map_err(|e| format!("go: {e} (apt-get install golang-go golang-etcd-server-dev)"))?;
    if !built.success() {
        return Err("go build of benches/mvcc_etcd failed".into());
    }
    let out = Command::new(&binary)
        .arg(dir)
        .args([keys, VALUE, PUTS, RANGES].map(|n| n.to_string()))
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "mvcc_etcd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(parse_figure)
        .collect())
}

/// Reads `{"name":"…","unit":"…","value":…}`.
fn parse_figure(line: &str) -> Figure {
    let field = |name: &str| {
        let rest = line
            .split(&format!("\"{name}\":"))
            .nth(1)
            .unwrap_or_else(|| panic!("no {name} in {line}"));
        rest.trim_start_matches('"')
            .split(['"', ',', '}'])
            .next()
            .unwrap_or_default()
            .to_string()
    };
    Figure {
        name: field("name"),
        unit: field("unit"),
        value: field("value").parse().expect("a number"),
    }
}

fn main() {
    let keys: usize = std::env::var("MVCC_BENCH_KEYS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    assert!(
        keys >= 100_000,
        "MVCC_BENCH_KEYS below 100000 leaves no 100k-key range to count"
    );
    let base = std::env::var_os("KEELSON_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(base).expect("bench dir");
    println!(
        "MVCC store: {keys} keys of 25 bytes, {VALUE}-byte values, in {}",
        dir.path().display()
    );
    let keelson = run_keelson(dir.path(), keys);
    let etcd = run_etcd(dir.path(), keys);
    println!(
        "\n{:<34}{:>14}{:>14}{:>16}",
        "figure", "keelson", "etcd 3.4", "keelson/etcd"
    );
    for mine in &keelson {
        // etcd applies every entry in a transaction of its own: one figure for every batch size.
        let theirs_name = if mine.name.starts_with("apply") {
            "apply"
        } else {
            mine.name.as_str()
        };
        let theirs = etcd
            .as_ref()
            .ok()
            .and_then(|figures| figures.iter().find(|f| f.name == theirs_name));
        let label = format!("{} ({})", mine.name, mine.unit);
        match theirs {
            Some(t) => println!(
                "{label:<34}{:>14.1}{:>14.1}{:>16.2}",
                mine.value,
                t.value,
                mine.value / t.value
            ),
            None => println!("{label:<34}{:>14.1}{:>14}{:>16}", mine.value, "-", "-"),
        }
    }
    if let Err(why) = etcd {
        println!("\netcd side not run: {why}");
    }
    println!(
        "\nputs/s: higher is better (ratio > 1: keelson faster); latency: lower is better (ratio < 1: keelson faster)."
    );
}
