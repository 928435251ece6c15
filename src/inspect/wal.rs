//! `keelson wal dump DIR`: every record of a write-ahead log, one line each — segment, byte offset,
//! type, index, term, and a short summary — as etcd-dump-logs does for etcd. A torn tail is noted
//! after the last good record; corruption ends the listing with an error naming the segment and
//! offset, after printing everything before it.
//!
//! Runs on: the main thread of `keelson wal` (no member runs).

use std::io::Write;
use std::path::Path;

use keelson_engine::wal::{Decoded, Entry, EntryKind, dump};

use super::{Encoding, InspectError};

/// Bytes of an entry's data shown in its summary.
const SHOWN: usize = 48;

fn summary(entry: &Entry, enc: Encoding) -> String {
    let kind = match entry.kind {
        EntryKind::Normal => "normal",
        EntryKind::ConfChange => "conf-change",
        EntryKind::ConfChangeV2 => "conf-change-v2",
    };
    let shown = &entry.data[..entry.data.len().min(SHOWN)];
    let more = if entry.data.len() > SHOWN { "…" } else { "" };
    format!(
        "{kind}, {} bytes: {}{more}",
        entry.data.len(),
        enc.show(shown)
    )
}

/// Writes one line per record of the WAL in `dir`, skipping entries below `from`.
pub fn dump_wal(
    dir: &Path,
    from: u64,
    enc: Encoding,
    out: &mut dyn Write,
) -> Result<(), InspectError> {
    writeln!(
        out,
        "{:<38} {:>10}  {:<9} {:>10} {:>6}  summary",
        "segment", "offset", "type", "index", "term"
    )?;
    let mut written = Ok(());
    let torn = dump(dir, &mut |line| {
        let (index, term, text) = match &line.record {
            Decoded::Entry(e) if e.index < from => return,
            Decoded::Entry(e) => (e.index.to_string(), e.term.to_string(), summary(e, enc)),
            Decoded::HardState(hs) => (
                "-".into(),
                hs.term.to_string(),
                format!("vote {} commit {}", hs.vote, hs.commit),
            ),
            Decoded::Snapshot { index, term } => (
                index.to_string(),
                term.to_string(),
                "page file synced up to here".into(),
            ),
            Decoded::Seed {
                seq,
                first_index,
                previous_crc,
            } => (
                "-".into(),
                "-".into(),
                format!(
                    "segment {seq} from index {first_index}, chained from crc {previous_crc:#010x}"
                ),
            ),
            Decoded::Metadata(m) => (
                "-".into(),
                "-".into(),
                format!("{} bytes: {}", m.len(), enc.show(m)),
            ),
        };
        if written.is_ok() {
            let kind = line.record.kind_name();
            written = writeln!(
                out,
                "{:<38} {:>10}  {kind:<9} {index:>10} {term:>6}  {text}",
                line.segment, line.offset
            );
        }
    });
    written?;
    if let Some((segment, offset, why)) = torn? {
        writeln!(
            out,
            "{segment:<38} {offset:>10}  torn tail: {why}; opening the WAL cuts it back here"
        )?;
    }
    Ok(())
}
