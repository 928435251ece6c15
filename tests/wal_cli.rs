//! `keelson wal dump` against the real binary, on WALs written by the engine: every record listed
//! with its segment and offset, `--from`, a torn tail noted, and corruption reported after
//! everything before it.

use std::path::Path;
use std::process::{Command, Output};

use glommio::{LocalExecutorBuilder, Placement};
use keelson_engine::wal::{Entry, EntryKind, HardState, Options, Record, Wal};

fn keelson(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keelson"))
        .args(args)
        .output()
        .unwrap()
}

/// Writes a WAL of `n` entries (the last `last_len` bytes long), then a hard state and a snapshot
/// marker, into `dir`.
fn write_wal(dir: &Path, n: u64, last_len: usize) {
    let dir = dir.to_path_buf();
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let wal = Wal::create(
                &dir,
                b"member-1",
                1,
                Options {
                    segment_size: 64 << 10,
                    ..Options::default()
                },
            )
            .await
            .unwrap();
            for i in 1..=n {
                let data = if i == n {
                    vec![b'v'; last_len]
                } else {
                    format!("put key{i}").into_bytes()
                };
                let e = Entry {
                    index: i,
                    term: 2,
                    kind: EntryKind::Normal,
                    context: vec![],
                    data,
                };
                wal.append_durably(&[Record::from(&e)]).await.unwrap();
            }
            wal.append_durably(&[
                Record::HardState(HardState {
                    term: 2,
                    vote: 1,
                    commit: n,
                }),
                Record::Snapshot {
                    index: n / 2,
                    term: 2,
                },
            ])
            .await
            .unwrap();
        })
        .unwrap()
        .join()
        .unwrap();
}

fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn dump_lists_every_record_with_where_it_is() {
    let dir = tempfile::tempdir().unwrap();
    write_wal(dir.path(), 5, 8);
    let dir = dir.path().to_str().unwrap();
    let out = keelson(&["wal", "dump", dir]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = stdout_lines(&out);
    assert!(lines[0].starts_with("segment"), "a header line: {lines:?}");
    let kinds: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().nth(2).unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "seed",
            "metadata",
            "hardstate",
            "entry",
            "entry",
            "entry",
            "entry",
            "entry",
            "hardstate",
            "snapshot"
        ]
    );
    let first_entry: Vec<&str> = lines[4].split_whitespace().collect();
    assert_eq!(first_entry[0], "0000000000000000-0000000000000001.wal");
    assert_eq!(&first_entry[2..5], ["entry", "1", "2"]);
    assert!(
        lines[4].ends_with("normal, 8 bytes: put key1"),
        "{}",
        lines[4]
    );
    assert!(lines[2].ends_with("8 bytes: member-1"), "{}", lines[2]);
    assert!(
        lines[10].contains("snapshot")
            && lines[10].contains(" 2 ")
            && lines[10].split_whitespace().nth(3) == Some("2")
    );

    let from = stdout_lines(&keelson(&["wal", "dump", dir, "--from", "4"]));
    let indexes: Vec<&str> = from
        .iter()
        .filter(|l| l.contains(" entry "))
        .map(|l| l.split_whitespace().nth(3).unwrap())
        .collect();
    assert_eq!(indexes, ["4", "5"]);
    let hex = stdout_lines(&keelson(&["wal", "dump", dir, "--hex"]));
    assert!(hex[4].ends_with("707574206b657931"), "{}", hex[4]);
}

#[test]
fn dump_notes_a_torn_tail_and_stops_at_corruption_with_what_came_before() {
    let tmp = tempfile::tempdir().unwrap();
    write_wal(tmp.path(), 20, 3000);
    let segment = tmp.path().join("0000000000000000-0000000000000001.wal");
    let bytes = std::fs::read(&segment).unwrap();
    let out = keelson(&["wal", "dump", tmp.path().to_str().unwrap()]);
    let all = stdout_lines(&out);
    let offset_of = |index: &str| -> usize {
        let line = all
            .iter()
            .find(|l| {
                l.split_whitespace().nth(2) == Some("entry")
                    && l.split_whitespace().nth(3) == Some(index)
            })
            .unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };

    // The last entry (3000 bytes) cut short after its first sector, so what followed it is gone
    // too: noted, everything before it listed.
    let last = offset_of("20");
    let mut torn = bytes.clone();
    torn[(last / 512 + 1) * 512..].fill(0);
    std::fs::write(&segment, &torn).unwrap();
    let out = keelson(&["wal", "dump", tmp.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = stdout_lines(&out);
    assert!(
        listed
            .last()
            .unwrap()
            .contains(&format!("{last}  torn tail: crc mismatch")),
        "{:?}",
        listed.last()
    );
    let kept = all.len() - 3 + 1;
    assert_eq!(
        listed.len(),
        kept,
        "all but the torn entry and the two records after it, plus the note"
    );

    // A record in the middle damaged: the ones before it, then an error naming file and offset.
    let bad = offset_of("10");
    let mut corrupt = bytes.clone();
    corrupt[bad + 30] ^= 0xff;
    std::fs::write(&segment, &corrupt).unwrap();
    let out = keelson(&["wal", "dump", tmp.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let listed = stdout_lines(&out);
    assert_eq!(
        listed.last().unwrap().split_whitespace().nth(3),
        Some("9"),
        "entries up to 9 are printed"
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err.trim(),
        format!(
            "keelson: wal {} at byte {bad}: crc mismatch (no sign of a torn write)",
            segment.display()
        )
    );
}
