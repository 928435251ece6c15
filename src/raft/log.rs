//! The raft log as raft-rs sees it ([`raft::Storage`]): the hard state, the voters, and the entries
//! since the page file's last sync, in memory. The WAL holds the same entries durably — the raft
//! core writes them there before it hands them to this log — and the page file holds everything
//! before them, applied; so this log starts right after the store's consistent index at startup
//! and is trimmed behind each page-file sync.
//!
//! A follower too far behind for the log to catch it up is sent the page file instead: the
//! snapshot this log describes is the state machine's applied index and term and the voters as
//! of then; the page file itself travels beside the raft message (`peer/`), and a follower that
//! installs one restarts this log after it ([`RaftLog::restart_after`]).
//!
//! Invariants: `entries` are contiguous, starting at `first`; `first - 1` is the index whose term
//! is `before_term` (the last entry the page file had applied when the log was trimmed or opened);
//! `applied` is the state machine's last applied entry, never before `first - 1`.
//!
//! Runs on: the raft core.

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

/// The in-memory tail of the raft log.
#[derive(Debug, Default)]
pub struct RaftLog {
    hard_state: HardState,
    conf_state: ConfState,
    /// Index of `entries[0]`.
    first: u64,
    /// Term of the entry at `first - 1`.
    before_term: u64,
    entries: Vec<Entry>,
    /// Index and term of the last entry the state machine applied.
    applied: (u64, u64),
}

impl RaftLog {
    /// A log whose entries start after `applied` (of `applied_term`), with these voters and
    /// learners.
    pub fn new(
        applied: u64,
        applied_term: u64,
        hard_state: HardState,
        conf_state: ConfState,
    ) -> Self {
        RaftLog {
            hard_state,
            conf_state,
            first: applied + 1,
            before_term: applied_term,
            entries: Vec::new(),
            applied: (applied, applied_term),
        }
    }

    /// Records the state machine's last applied entry (what a snapshot sent now would hold).
    pub fn set_applied(&mut self, applied: (u64, u64)) {
        self.applied = applied;
    }

    /// The voters and learners as of the last entry applied.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Records the voters and learners a configuration change just applied left.
    pub fn set_conf_state(&mut self, conf_state: ConfState) {
        self.conf_state = conf_state;
    }

    /// Restarts the log after `snapshot`, installed: its entries are gone, the next is the one
    /// after the snapshot's index, and its voters are the snapshot's.
    pub fn restart_after(&mut self, snapshot: &SnapshotMetadata) {
        self.first = snapshot.index + 1;
        self.before_term = snapshot.term;
        self.entries.clear();
        self.applied = (snapshot.index, snapshot.term);
        self.conf_state = snapshot.get_conf_state().clone();
        self.hard_state.commit = self.hard_state.commit.max(snapshot.index);
    }

    /// Appends `entries` (contiguous), replacing any suffix they overwrite. Entries at or below
    /// the applied index are never overwritten: those are skipped.
    pub fn append(&mut self, mut entries: Vec<Entry>) {
        let Some(head) = entries.first().map(|e| e.index) else {
            return;
        };
        let applied = (self.first.saturating_sub(head) as usize).min(entries.len());
        entries.drain(..applied);
        let Some(head) = entries.first().map(|e| e.index) else {
            return;
        };
        self.entries.truncate((head - self.first) as usize);
        self.entries.append(&mut entries);
    }

    /// Records the hard state.
    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    /// Records the commit index alone.
    pub fn set_commit(&mut self, commit: u64) {
        self.hard_state.commit = commit;
    }

    /// Drops the entries up to and including `index` (the page file holds them now).
    pub fn trim_through(&mut self, index: u64) {
        if index < self.first || self.entries.is_empty() {
            return;
        }
        let last = self.first + self.entries.len() as u64 - 1;
        let index = index.min(last);
        let n = (index + 1 - self.first) as usize;
        self.before_term = self.entries[n - 1].term;
        self.entries.drain(..n);
        self.first = index + 1;
    }

    fn last(&self) -> u64 {
        self.first + self.entries.len() as u64 - 1
    }
}

impl Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let from = (low - self.first) as usize;
        let to = (high - self.first) as usize;
        let mut out = self.entries[from..to].to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx + 1 == self.first {
            return Ok(self.before_term);
        }
        if idx < self.first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.entries.get((idx - self.first) as usize) {
            Some(e) => Ok(e.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    /// The state machine as applied now (the page file is read when the message goes out).
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let (index, term) = self.applied;
        if index == 0 || index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let mut snapshot = Snapshot::default();
        let metadata = snapshot.mut_metadata();
        metadata.index = index;
        metadata.term = term;
        metadata.set_conf_state(self.conf_state.clone());
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Entry::default()
        }
    }

    #[test]
    fn appends_overwrite_and_trim() {
        let mut log = RaftLog::new(10, 2, HardState::default(), ConfState::from((vec![1], [])));
        assert_eq!(log.first_index().unwrap(), 11);
        assert_eq!(log.last_index().unwrap(), 10);
        assert_eq!(log.term(10).unwrap(), 2);
        log.append(vec![entry(11, 2), entry(12, 2), entry(13, 2)]);
        log.append(vec![entry(12, 3)]);
        assert_eq!(log.last_index().unwrap(), 12);
        assert_eq!(log.term(12).unwrap(), 3);
        let got = log
            .entries(11, 13, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got, vec![entry(11, 2), entry(12, 3)]);
        log.trim_through(11);
        assert_eq!(log.first_index().unwrap(), 12);
        assert_eq!(log.term(11).unwrap(), 2);
        assert!(log.term(10).is_err());
        assert!(
            log.entries(11, 13, None, GetEntriesContext::empty(false))
                .is_err()
        );
    }

    #[test]
    fn a_snapshot_is_what_was_applied_and_restarts_the_log() {
        let mut log = RaftLog::new(
            10,
            2,
            HardState::default(),
            ConfState::from((vec![1, 2, 3], [])),
        );
        log.append(vec![entry(11, 2), entry(12, 2)]);
        log.set_applied((11, 2));
        let snapshot = log.snapshot(0, 2).unwrap();
        assert_eq!(
            (snapshot.get_metadata().index, snapshot.get_metadata().term),
            (11, 2)
        );
        assert_eq!(
            snapshot.get_metadata().get_conf_state().voters,
            vec![1, 2, 3]
        );
        assert!(log.snapshot(12, 2).is_err(), "nothing that new is applied");
        log.restart_after(&SnapshotMetadata {
            index: 40,
            term: 5,
            conf_state: Some(ConfState {
                voters: vec![1, 2, 3],
                ..ConfState::default()
            }),
        });
        assert_eq!(log.first_index().unwrap(), 41);
        assert_eq!(log.last_index().unwrap(), 40);
        assert_eq!(log.term(40).unwrap(), 5);
        assert_eq!(log.initial_state().unwrap().hard_state.commit, 40);
    }
}
