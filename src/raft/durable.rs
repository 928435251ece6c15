//! The raft log's durable home: keelson's WAL. Raft entries and hard states become WAL records
//! (borrowing the entries' payloads — the WAL copies them once, into its buffer), and WAL entries
//! become raft entries again at boot. A raft entry's data is etcd's `InternalRaftRequest`, so the
//! WAL means what etcd's means.
//!
//! Runs on: the raft core.

use keelson_engine::wal::{self, Record, Wal};
use raft::eraftpb::{Entry, EntryType, HardState};

use super::seams::DurableLog;
use super::turn::RaftCoreError;

/// A raft entry as a WAL record.
pub fn to_wal(entry: &Entry) -> Record<'_> {
    let kind = match entry.get_entry_type() {
        EntryType::EntryNormal => wal::EntryKind::Normal,
        EntryType::EntryConfChange => wal::EntryKind::ConfChange,
        EntryType::EntryConfChangeV2 => wal::EntryKind::ConfChangeV2,
    };
    Record::Entry(wal::EntryRef {
        index: entry.index,
        term: entry.term,
        kind,
        context: &entry.context,
        data: &entry.data,
    })
}

/// A WAL entry as raft sees it.
pub fn from_wal(entry: wal::Entry) -> Entry {
    let kind = match entry.kind {
        wal::EntryKind::Normal => EntryType::EntryNormal,
        wal::EntryKind::ConfChange => EntryType::EntryConfChange,
        wal::EntryKind::ConfChangeV2 => EntryType::EntryConfChangeV2,
    };
    let mut out = Entry {
        index: entry.index,
        term: entry.term,
        context: entry.context,
        data: entry.data,
        ..Entry::default()
    };
    out.set_entry_type(kind);
    out
}

impl DurableLog for Wal {
    /// One write and one fdatasync for the entries and hard state of a turn (group commit).
    async fn persist(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), RaftCoreError> {
        let mut records: Vec<Record<'_>> = entries.iter().map(to_wal).collect();
        if let Some(hs) = hard_state {
            records.push(Record::HardState(wal::HardState {
                term: hs.term,
                vote: hs.vote,
                commit: hs.commit,
            }));
        }
        Ok(self.append_durably(&records).await?)
    }

    async fn release_before(&mut self, index: u64) -> Result<(), RaftCoreError> {
        Ok(Wal::release_before(self, index).await?)
    }

    async fn restart_after(&mut self, index: u64, term: u64) -> Result<(), RaftCoreError> {
        Ok(Wal::restart_after(self, index, term).await?)
    }

    async fn close(self) {
        Wal::close(self).await
    }

    fn written(&self) -> u64 {
        self.stats().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_comes_back_from_the_wal_as_itself() {
        let mut entry = Entry {
            index: 7,
            term: 2,
            data: b"request".to_vec(),
            context: b"ctx".to_vec(),
            ..Entry::default()
        };
        entry.set_entry_type(EntryType::EntryConfChange);
        let Record::Entry(record) = to_wal(&entry) else {
            panic!("an entry is an entry record");
        };
        let stored = wal::Entry {
            index: record.index,
            term: record.term,
            kind: record.kind,
            context: record.context.to_vec(),
            data: record.data.to_vec(),
        };
        assert_eq!(from_wal(stored), entry);
    }
}
