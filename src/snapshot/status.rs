//! `keelson snapshot status FILE`: the file's hash, revision, keys and size as `etcdctl snapshot
//! status` computes and prints them (`-w simple`, `table` or `json`), after the same consistency
//! check.
//!
//! Runs on: the main thread.

use std::io::Write;
use std::path::Path;

use keelson_engine::mvcc::{self, FileStatus};
use keelson_engine::pagefile::{Db, Options};

use super::SnapshotError;

/// How to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WriteOut {
    /// One line: hash, revision, keys, size.
    Simple,
    /// A table.
    Table,
    /// JSON.
    Json,
}

/// Reads `file`'s status, failing if its consistency check finds damage.
pub fn of(file: &Path) -> Result<FileStatus, SnapshotError> {
    let db = Db::open_read_only(file, Options::default())?;
    let read = db.begin_read()?;
    let problems = read.check();
    if !problems.is_empty() {
        return Err(SnapshotError::Failed(format!(
            "snapshot file integrity check failed. {} errors found.\n{}",
            problems.len(),
            problems.join("\n")
        )));
    }
    Ok(mvcc::file_status(&read)?)
}

/// Bytes as go-humanize's `Bytes` says them (powers of 1000: `20 kB`, `1.4 MB`).
pub fn humanize(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 10 {
        return format!("{bytes} B");
    }
    let exponent = ((bytes as f64).ln() / 1000f64.ln()).floor() as usize;
    let value = (bytes as f64 / 1000f64.powi(exponent as i32) * 10.0 + 0.5).floor() / 10.0;
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[exponent])
    } else {
        format!("{value:.0} {}", UNITS[exponent])
    }
}

/// Prints `status` as etcdctl prints it.
pub fn print(status: &FileStatus, how: WriteOut, out: &mut dyn Write) -> std::io::Result<()> {
    let size = humanize(status.total_size);
    match how {
        WriteOut::Simple => writeln!(
            out,
            "{:x}, {}, {}, {size}",
            status.hash, status.revision, status.total_keys
        ),
        WriteOut::Json => writeln!(
            out,
            "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{}}}",
            status.hash, status.revision, status.total_keys, status.total_size
        ),
        WriteOut::Table => {
            let header = ["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"];
            let row = [
                format!("{:x}", status.hash),
                status.revision.to_string(),
                status.total_keys.to_string(),
                size,
            ];
            let widths: Vec<usize> = header
                .iter()
                .zip(&row)
                .map(|(h, r)| h.len().max(r.len()))
                .collect();
            let rule: String = widths
                .iter()
                .map(|w| format!("+{}", "-".repeat(w + 2)))
                .collect::<String>()
                + "+";
            let centered: String = header
                .iter()
                .zip(&widths)
                .map(|(h, w)| {
                    let pad = w - h.len();
                    let left = pad / 2;
                    format!("| {}{h}{} ", " ".repeat(left), " ".repeat(pad - left))
                })
                .collect::<String>()
                + "|";
            let values: String = row
                .iter()
                .zip(&widths)
                .map(|(r, w)| format!("| {r:>w$} "))
                .collect::<String>()
                + "|";
            writeln!(out, "{rule}\n{centered}\n{rule}\n{values}\n{rule}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_go_humanize_writes_them() {
        assert_eq!(humanize(5), "5 B");
        assert_eq!(humanize(20480), "20 kB");
        assert_eq!(humanize(1417216), "1.4 MB");
        assert_eq!(humanize(49152), "49 kB");
    }

    #[test]
    fn the_table_is_etcdctls() {
        let status = FileStatus {
            hash: 0x3870d48c,
            revision: 10,
            total_keys: 13,
            total_size: 20480,
        };
        let mut out = Vec::new();
        print(&status, WriteOut::Table, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "+----------+----------+------------+------------+\n\
             |   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |\n\
             +----------+----------+------------+------------+\n\
             | 3870d48c |       10 |         13 |      20 kB |\n\
             +----------+----------+------------+------------+\n"
        );
    }
}
