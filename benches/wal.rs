//! The WAL's group commit beside the disk's own floor, same disk, same run: records per second,
//! fsyncs per 1000 records and append-to-durable latency, for 1, 64 and 1024 concurrent appenders
//! of 256-byte records (each waits for its record to be durable before appending the next). The
//! floor is a plain loop of one 4 KiB O_DIRECT write + fdatasync, on a file prepared the way WAL
//! segments are (zero-filled), and on a merely fallocated one for reference.
//!
//! `cargo bench --bench wal` (about half a minute; `KEELSON_BENCH_DIR` picks the disk, default the
//! system temp directory). Aims: one appender within 1.2× the floor's latency; 1024 appenders at
//! least 100× the floor's records per second.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::io::DmaFile;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use keelson_engine::wal::{Entry, EntryKind, Options, Record, Wal};

const RECORD: usize = 256;
const RUN: Duration = Duration::from_secs(4);

/// One measured configuration.
struct Row {
    name: String,
    records: u64,
    fsyncs: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

impl Row {
    fn per_second(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }

    fn micros(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

/// The floor: 4 KiB O_DIRECT write + fdatasync, one after another, for `RUN`.
async fn floor(dir: &Path, zero_filled: bool) -> Row {
    let path = dir.join(if zero_filled {
        "floor-zeroed"
    } else {
        "floor-fallocated"
    });
    let file = DmaFile::create(&path).await.unwrap();
    let size: u64 = 64 << 20;
    file.pre_allocate(size, false).await.unwrap();
    if zero_filled {
        for at in (0..size).step_by(1 << 20) {
            let mut zeros = file.alloc_dma_buffer(1 << 20);
            zeros.as_bytes_mut().fill(0);
            file.write_at(zeros, at).await.unwrap();
        }
        file.fdatasync().await.unwrap();
    }
    let mut latency = histogram();
    let (mut records, start) = (0u64, Instant::now());
    while start.elapsed() < RUN {
        let mut block = file.alloc_dma_buffer(4096);
        block.as_bytes_mut().fill(records as u8 | 1);
        let t = Instant::now();
        file.write_at(block, (records * 4096) % size).await.unwrap();
        file.fdatasync().await.unwrap();
        latency.record(t.elapsed().as_nanos() as u64).unwrap();
        records += 1;
    }
    file.close().await.unwrap();
    let _ = std::fs::remove_file(&path);
    let kind = if zero_filled {
        "zero-filled"
    } else {
        "fallocated"
    };
    Row {
        name: format!("floor: 4 KiB write+fdatasync, {kind}"),
        records,
        fsyncs: records,
        elapsed: start.elapsed(),
        latency,
    }
}

/// `appenders` tasks appending 256-byte entries for `RUN`, each waiting for durability.
async fn wal(dir: &Path, appenders: usize) -> Row {
    let wal_dir = dir.join(format!("wal-{appenders}"));
    let wal = Wal::create(&wal_dir, b"bench", 1, Options::default())
        .await
        .unwrap();
    let next = Rc::new(Cell::new(1u64));
    let latency = Rc::new(RefCell::new(histogram()));
    let start = Instant::now();
    let tasks: Vec<_> = (0..appenders)
        .map(|_| {
            let (wal, next, latency) = (wal.clone(), next.clone(), latency.clone());
            glommio::spawn_local(async move {
                while start.elapsed() < RUN {
                    let index = next.get();
                    next.set(index + 1);
                    let entry = Entry {
                        index,
                        term: 1,
                        kind: EntryKind::Normal,
                        context: Vec::new(),
                        data: vec![7; RECORD],
                    };
                    let t = Instant::now();
                    wal.append(&[Record::from(&entry)])
                        .await
                        .unwrap()
                        .await
                        .unwrap();
                    latency
                        .borrow_mut()
                        .record(t.elapsed().as_nanos() as u64)
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await;
    }
    let elapsed = start.elapsed();
    let stats = wal.stats();
    wal.close().await;
    let _ = std::fs::remove_dir_all(&wal_dir);
    let latency = Rc::try_unwrap(latency)
        .map(RefCell::into_inner)
        .unwrap_or_else(|rc| rc.borrow().clone());
    Row {
        name: format!(
            "wal, {appenders} appender{}",
            if appenders == 1 { "" } else { "s" }
        ),
        records: stats.records,
        fsyncs: stats.fsyncs,
        elapsed,
        latency,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo's bench discovery
    }
    let dir: PathBuf = std::env::var_os("KEELSON_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(dir).unwrap();
    let path = dir.path().to_path_buf();
    let rows = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let mut rows = vec![floor(&path, true).await, floor(&path, false).await];
            for appenders in [1, 64, 1024] {
                rows.push(wal(&path, appenders).await);
            }
            rows
        })
        .unwrap()
        .join()
        .unwrap();

    println!(
        "\nWAL group commit beside the disk's floor ({}; 256-byte records)",
        dir.path().display()
    );
    println!(
        "{:<44} {:>12} {:>14} {:>11} {:>11}",
        "", "records/s", "fsyncs/1000", "p50 µs", "p99 µs"
    );
    for r in &rows {
        let per_thousand = r.fsyncs as f64 * 1000.0 / r.records.max(1) as f64;
        println!(
            "{:<44} {:>12.0} {:>14.1} {:>11.1} {:>11.1}",
            r.name,
            r.per_second(),
            per_thousand,
            r.micros(0.5),
            r.micros(0.99)
        );
    }
    let floor = &rows[0];
    let one = &rows[2];
    let many = &rows[4];
    println!(
        "\n1 appender, p50 latency vs the floor's: {:.2}× (aim ≤ 1.2)",
        one.micros(0.5) / floor.micros(0.5)
    );
    println!(
        "1024 appenders, records/s vs the floor's: {:.0}× (aim ≥ 100)",
        many.per_second() / floor.per_second()
    );
}
