//! The page file beside redb (a well-kept Rust B-tree) on the same machine in the same run: bulk
//! loads (put), point reads (get) and full scans over 1M keys of 8 bytes with 256-byte values, in
//! sequential and random key order. After criterion's own report it prints each pair side by side
//! with the ratio keelson/redb (below 1: keelson is faster).
//!
//! `cargo bench --bench pagefile` (about six minutes). Loads publish one transaction per 10,000
//! keys without fsync (redb: `Durability::None`) and make the result durable once at the end, the
//! way keelson's server commits between page-file syncs.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, Throughput, measurement::WallTime};
use keelson_engine::pagefile::{Db, Options, Writer};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

const KEYS: u64 = 1_000_000;
const VALUE_LEN: usize = 256;
const KEYS_PER_TXN: usize = 10_000;
const BUCKET: &str = "data";
const TABLE: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new(BUCKET);

/// Time spent and iterations run, per (operation, engine), for the side-by-side table.
type Results = BTreeMap<(String, &'static str), (Duration, u64)>;
static RESULTS: Mutex<Results> = Mutex::new(BTreeMap::new());

fn key(k: u64) -> [u8; 8] {
    k.to_be_bytes()
}

fn value(k: u64) -> [u8; VALUE_LEN] {
    let mut v = [0u8; VALUE_LEN];
    for (i, b) in v.iter_mut().enumerate() {
        *b = (k as usize).wrapping_mul(31).wrapping_add(i) as u8;
    }
    v
}

/// A point read: key → the value's length.
type PointRead<'a> = dyn Fn(u64) -> usize + 'a;

/// The operations compared, on each engine.
trait Engine: Sized {
    const NAME: &'static str;
    /// Loads `keys` into a new file at `path`, `KEYS_PER_TXN` per transaction, durable at the end.
    fn load(path: &Path, keys: &[u64]) -> Self;
    /// Calls `f` with a point-read function (returning the value's length) over one read
    /// transaction.
    fn with_reader(&self, f: &mut dyn FnMut(&PointRead<'_>));
    /// One point read in a read transaction of its own.
    fn get_in_own_txn(&self, k: u64) -> usize;
    /// Reads every key and value in order: (keys, bytes).
    fn scan(&self) -> (u64, usize);
}

/// Keelson's page file (the writer is kept so the file stays open for writing, as in the server).
struct Keelson {
    db: Db,
    _writer: Writer,
}

impl Engine for Keelson {
    const NAME: &'static str = "keelson";

    fn load(path: &Path, keys: &[u64]) -> Self {
        let (db, mut w) = Db::open(path, Options::default()).unwrap();
        for chunk in keys.chunks(KEYS_PER_TXN) {
            let mut txn = w.begin().unwrap();
            let mut b = txn.create_bucket_if_missing(BUCKET.as_bytes()).unwrap();
            for &k in chunk {
                b.put(&key(k), &value(k)).unwrap();
            }
            txn.publish().unwrap();
        }
        w.sync().unwrap();
        Keelson { db, _writer: w }
    }

    fn with_reader(&self, f: &mut dyn FnMut(&PointRead<'_>)) {
        let read = self.db.begin_read().unwrap();
        let bucket = read.bucket(BUCKET.as_bytes()).unwrap().unwrap();
        f(&|k| bucket.get(&key(k)).unwrap().unwrap().len());
    }

    fn get_in_own_txn(&self, k: u64) -> usize {
        let read = self.db.begin_read().unwrap();
        read.bucket(BUCKET.as_bytes())
            .unwrap()
            .unwrap()
            .get(&key(k))
            .unwrap()
            .unwrap()
            .len()
    }

    fn scan(&self) -> (u64, usize) {
        let read = self.db.begin_read().unwrap();
        let mut cursor = read.bucket(BUCKET.as_bytes()).unwrap().unwrap().cursor();
        let (mut n, mut bytes) = (0, 0);
        let mut at = cursor.first().unwrap();
        while let Some((k, v)) = at {
            (n, bytes) = (n + 1, bytes + k.len() + v.unwrap().len());
            at = cursor.next().unwrap();
        }
        (n, bytes)
    }
}

struct Redb(Database);

impl Engine for Redb {
    const NAME: &'static str = "redb";

    fn load(path: &Path, keys: &[u64]) -> Self {
        let db = Database::create(path).unwrap();
        let chunks: Vec<&[u64]> = keys.chunks(KEYS_PER_TXN).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let mut txn = db.begin_write().unwrap();
            let last = i + 1 == chunks.len();
            txn.set_durability(if last {
                Durability::Immediate
            } else {
                Durability::None
            })
            .unwrap();
            {
                let mut table = txn.open_table(TABLE).unwrap();
                for &k in *chunk {
                    table
                        .insert(key(k).as_slice(), value(k).as_slice())
                        .unwrap();
                }
            }
            txn.commit().unwrap();
        }
        Redb(db)
    }

    fn with_reader(&self, f: &mut dyn FnMut(&PointRead<'_>)) {
        let read = self.0.begin_read().unwrap();
        let table = read.open_table(TABLE).unwrap();
        f(&|k| table.get(key(k).as_slice()).unwrap().unwrap().value().len());
    }

    fn get_in_own_txn(&self, k: u64) -> usize {
        let read = self.0.begin_read().unwrap();
        let table = read.open_table(TABLE).unwrap();
        table.get(key(k).as_slice()).unwrap().unwrap().value().len()
    }

    fn scan(&self) -> (u64, usize) {
        let read = self.0.begin_read().unwrap();
        let table = read.open_table(TABLE).unwrap();
        let (mut n, mut bytes) = (0, 0);
        for entry in table.iter().unwrap() {
            let (k, v) = entry.unwrap();
            (n, bytes) = (n + 1, bytes + k.value().len() + v.value().len());
        }
        (n, bytes)
    }
}

/// Benchmarks `run` (which does `iters` operations and returns the time they took) as
/// `engine/label`, and records it under `op` for the side-by-side table.
fn measure(
    group: &mut BenchmarkGroup<'_, WallTime>,
    engine: &'static str,
    label: &str,
    op: &str,
    mut run: impl FnMut(u64) -> Duration,
) {
    group.bench_function(format!("{engine}/{label}"), |b| {
        b.iter_custom(|iters| {
            let elapsed = run(iters);
            let mut results = RESULTS.lock().unwrap();
            let entry = results.entry((op.to_string(), engine)).or_default();
            *entry = (entry.0 + elapsed, entry.1 + iters);
            elapsed
        })
    });
}

fn orders() -> [(&'static str, Vec<u64>); 2] {
    let sequential: Vec<u64> = (0..KEYS).collect();
    let mut random = sequential.clone();
    random.shuffle(&mut rand::rngs::StdRng::seed_from_u64(7));
    [("sequential", sequential), ("random", random)]
}

fn bench_put<E: Engine>(c: &mut Criterion) {
    let mut group = c.benchmark_group("put");
    group.sample_size(10).throughput(Throughput::Elements(KEYS));
    for (order, keys) in orders() {
        measure(
            &mut group,
            E::NAME,
            order,
            &format!("put 1M, {order}"),
            |iters| {
                (0..iters)
                    .map(|_| {
                        let dir = tempfile::tempdir().unwrap();
                        let start = Instant::now();
                        black_box(E::load(&dir.path().join("db"), &keys));
                        start.elapsed()
                    })
                    .sum()
            },
        );
    }
}

fn bench_get<E: Engine>(c: &mut Criterion, engine: &E) {
    let mut group = c.benchmark_group("get");
    let [(_, sequential), (_, random)] = orders();
    for (order, keys) in [("sequential", &sequential), ("random", &random)] {
        let mut next = 0;
        measure(
            &mut group,
            E::NAME,
            order,
            &format!("get, {order}"),
            |iters| {
                let mut elapsed = Duration::ZERO;
                engine.with_reader(&mut |get| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(get(keys[next % keys.len()]));
                        next += 1;
                    }
                    elapsed = start.elapsed();
                });
                elapsed
            },
        );
    }
    let mut next = 0;
    measure(
        &mut group,
        E::NAME,
        "random-txn",
        "get, random, one read transaction each",
        |iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(engine.get_in_own_txn(random[next % random.len()]));
                next += 1;
            }
            start.elapsed()
        },
    );
}

fn bench_scan<E: Engine>(c: &mut Criterion, engine: &E) {
    let mut group = c.benchmark_group("scan");
    group.sample_size(10).throughput(Throughput::Elements(KEYS));
    measure(&mut group, E::NAME, "all", "full scan of 1M", |iters| {
        let start = Instant::now();
        for _ in 0..iters {
            let (n, bytes) = engine.scan();
            assert_eq!(n, KEYS);
            black_box(bytes);
        }
        start.elapsed()
    });
}

fn per_op(elapsed: Duration, iters: u64) -> String {
    let nanos = elapsed.as_nanos() as f64 / iters.max(1) as f64;
    match nanos {
        n if n >= 1e9 => format!("{:.2} s", n / 1e9),
        n if n >= 1e6 => format!("{:.2} ms", n / 1e6),
        n if n >= 1e3 => format!("{:.2} µs", n / 1e3),
        n => format!("{n:.0} ns"),
    }
}

fn print_side_by_side() {
    let results = RESULTS.lock().unwrap();
    println!(
        "\npage file vs redb, same machine, same run (time per operation; ratio = keelson / redb)"
    );
    println!(
        "{:<42} {:>12} {:>12} {:>8}",
        "operation", "keelson", "redb", "ratio"
    );
    for ((op, engine), &(kt, ki)) in results.iter() {
        if *engine != Keelson::NAME {
            continue;
        }
        let Some(&(rt, ri)) = results.get(&(op.clone(), Redb::NAME)) else {
            continue;
        };
        let ratio = (kt.as_secs_f64() / ki.max(1) as f64) / (rt.as_secs_f64() / ri.max(1) as f64);
        println!(
            "{op:<42} {:>12} {:>12} {ratio:>8.2}",
            per_op(kt, ki),
            per_op(rt, ri)
        );
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench_put::<Keelson>(&mut criterion);
    bench_put::<Redb>(&mut criterion);
    let dir = tempfile::tempdir().unwrap();
    let sequential: Vec<u64> = (0..KEYS).collect();
    let keelson = Keelson::load(&dir.path().join("keelson"), &sequential);
    let redb = Redb::load(&dir.path().join("redb"), &sequential);
    bench_get(&mut criterion, &keelson);
    bench_get(&mut criterion, &redb);
    bench_scan(&mut criterion, &keelson);
    bench_scan(&mut criterion, &redb);
    criterion.final_summary();
    print_side_by_side();
}
