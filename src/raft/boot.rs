//! The raft core's boot: open the WAL (or create it, for a new member; or take over etcd's, in a
//! data dir etcd wrote), replay it from the page file's consistent index into the in-memory raft
//! log, merge the hard state, and build raft-rs's `RawNode` with keelson's raft configuration
//! (etcd's timings, pre-vote and check-quorum on).
//! Every consensus decision made at start lives here; [`raft_log`] and [`raft_config`] are shared
//! with the simulated cluster so it boots members exactly as the binary does.
//!
//! Runs on: the raft core (the WAL is written on its executor).

use keelson_engine::mvcc::members::Member;
use keelson_engine::wal::{self, Wal};
use keelson_proto::etcdserverpb::Metadata;
use prost::Message;
use raft::RawNode;
use raft::eraftpb::{ConfState, Entry, HardState};

use super::durable::from_wal;
use super::log::RaftLog;
use super::logger;
use super::turn::RaftCoreError;
use crate::config::Config;

/// A booted member: its raft node and its WAL, open for appends.
pub struct Booted {
    /// raft-rs's node over the replayed log.
    pub node: RawNode<RaftLog>,
    /// The WAL.
    pub wal: Wal,
}

/// Opens (or creates) the WAL of `config` and boots raft from it, after the state machine's
/// `applied` index and term, with its `members` as raft's voters and learners.
pub async fn boot(
    config: &Config,
    applied: (u64, u64),
    members: &[Member],
) -> Result<Booted, RaftCoreError> {
    let index = applied.0;
    // A data dir etcd left (or `etcdctl snapshot restore` made) holds etcd's WAL: keelson's takes
    // its place, with the entries the page file has not applied.
    wal::etcd::take_over_etcd(&config.wal_dir, index, wal::Options::default()).await?;
    let (wal, hard_state, entries) = if wal::has_segments(&config.wal_dir) {
        // A cluster member keeps entries behind its page file for followers to catch up from.
        let keep = config.catch_up_entries;
        let (wal, replay) =
            Wal::open_keeping(&config.wal_dir, index, keep, wal::Options::default()).await?;
        let entries: Vec<Entry> = replay.entries.into_iter().map(from_wal).collect();
        tracing::info!(
            applied = index,
            replayed = entries.len(),
            "opened the WAL; replaying entries after the page file's consistent index"
        );
        let hs = replay.hard_state;
        let hard_state = HardState {
            term: hs.term,
            vote: hs.vote,
            commit: hs.commit,
        };
        (wal, hard_state, entries)
    } else {
        let metadata = Metadata {
            node_id: Some(config.member_id),
            cluster_id: Some(config.cluster_id),
        }
        .encode_to_vec();
        let wal = Wal::create(
            &config.wal_dir,
            &metadata,
            index + 1,
            wal::Options::default(),
        )
        .await?;
        (wal, HardState::default(), Vec::new())
    };
    let log = raft_log(applied, hard_state, entries, conf_state(members));
    let raft_config = raft_config(config.member_id, config.election_ticks, index);
    raft_config.validate()?;
    let node = RawNode::new(&raft_config, log, &logger())?;
    Ok(Booted { node, wal })
}

/// raft's voters and learners: the members as the page file holds them (etcd's `members` bucket,
/// kept by every configuration change applied; the WAL's entries after it apply the rest).
pub fn conf_state(members: &[Member]) -> ConfState {
    let ids = |learners: bool| {
        members
            .iter()
            .filter(move |m| m.is_learner == learners)
            .map(|m| m.id)
    };
    ConfState::from((ids(false), ids(true)))
}

/// The in-memory raft log after the state machine's `applied` (index, term): the hard state the
/// WAL last recorded — its commit raised to what the page file holds, which may have been applied
/// (and synced) past the last commit the WAL recorded, and its term to the newest term of an entry
/// applied or replayed (a torn WAL tail can keep entries and lose the hard state written after
/// them; a member's term is never below its log's) — and the entries replayed, which may begin
/// before `applied` (those kept for followers to catch up from).
pub fn raft_log(
    applied: (u64, u64),
    hard_state: HardState,
    mut entries: Vec<Entry>,
    conf_state: ConfState,
) -> RaftLog {
    let (index, term) = applied;
    let newest = entries.last().map_or(term, |e| e.term.max(term));
    let commit = hard_state.commit.max(index);
    let hard_state = if newest > hard_state.term {
        // A vote recorded belongs to an older term; none was cast in this one (a vote is durable
        // before it is sent).
        HardState {
            term: newest,
            vote: raft::INVALID_ID,
            commit,
        }
    } else {
        HardState {
            commit,
            ..hard_state
        }
    };
    // Entries that all end before `applied`, or whose entry at `applied` is of another term, are
    // older than the page file: a leader's snapshot was installed over them (and the member
    // stopped before its WAL restarted after it). The log starts after `applied`.
    let superseded = entries.last().is_some_and(|e| e.index < index)
        || entries.iter().any(|e| e.index == index && e.term != term);
    if superseded {
        entries.clear();
    }
    // The log must know the term of the entry before its first. The log's very beginning has it
    // (index 0, term 0), so a WAL that starts there is kept whole; a later first entry that is
    // applied already lends its term and is dropped; otherwise the log starts after `applied`.
    let before = match entries.first() {
        Some(first) if first.index == 1 => (0, 0),
        Some(first) if first.index <= index => {
            let first = entries.remove(0);
            (first.index, first.term)
        }
        _ => applied,
    };
    let mut log = RaftLog::new(before.0, before.1, hard_state, conf_state);
    log.append(entries);
    log.set_applied(applied);
    log
}

/// raft-rs's configuration for member `id`: a tick is etcd's heartbeat interval, an election
/// timeout is `election_ticks` of them; pre-vote and check-quorum on, as etcd runs them.
pub fn raft_config(id: u64, election_ticks: usize, applied: u64) -> raft::Config {
    raft::Config {
        id,
        election_tick: election_ticks,
        heartbeat_tick: 1,
        applied,
        pre_vote: true,
        check_quorum: true,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        ..raft::Config::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entries(indexes: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
        indexes
            .map(|index| Entry {
                index,
                term,
                ..Entry::default()
            })
            .collect()
    }

    fn state(term: u64, vote: u64, commit: u64) -> HardState {
        HardState { term, vote, commit }
    }

    #[test]
    fn a_log_from_the_first_entry_keeps_every_entry() {
        let log = raft_log(
            (3, 1),
            state(1, 1, 3),
            entries(1..=5, 1),
            ConfState::from((vec![1, 2, 3], [])),
        );
        assert_eq!(
            log.first_index().unwrap(),
            1,
            "a follower with nothing can catch up"
        );
        assert_eq!(log.last_index().unwrap(), 5);
        assert_eq!(log.term(0).unwrap(), 0);
    }

    #[test]
    fn a_later_first_entry_lends_its_term_and_an_empty_log_starts_after_applied() {
        let log = raft_log(
            (7, 2),
            state(2, 1, 7),
            entries(4..=9, 2),
            ConfState::from((vec![1], [])),
        );
        assert_eq!(log.first_index().unwrap(), 5);
        assert_eq!(log.term(4).unwrap(), 2);
        let log = raft_log(
            (7, 2),
            state(2, 1, 5),
            Vec::new(),
            ConfState::from((vec![1], [])),
        );
        assert_eq!(log.first_index().unwrap(), 8);
        assert_eq!(log.term(7).unwrap(), 2);
        assert_eq!(log.initial_state().unwrap().hard_state, state(2, 1, 7));
    }

    #[test]
    fn entries_older_than_an_installed_snapshot_are_left_out() {
        // The page file came from the leader at 40; the WAL kept entries up to 12 from before.
        let log = raft_log(
            (40, 5),
            state(5, 0, 40),
            entries(8..=12, 2),
            ConfState::from((vec![1, 2, 3], [])),
        );
        assert_eq!(log.first_index().unwrap(), 41);
        assert_eq!(log.last_index().unwrap(), 40);
        assert_eq!(log.term(40).unwrap(), 5);
        // Or a stale tail of term 2 through 45, and the snapshot at 40 of term 5.
        let voters = ConfState::from((vec![1, 2, 3], []));
        let log = raft_log((40, 5), state(5, 0, 40), entries(30..=45, 2), voters);
        assert_eq!(log.first_index().unwrap(), 41);
        assert_eq!(log.last_index().unwrap(), 40);
        assert_eq!(log.term(40).unwrap(), 5);
    }

    #[test]
    fn a_hard_state_lost_behind_its_entries_is_raised_to_their_term_without_a_vote() {
        // Entries of term 3 survived a torn write; the hard state of term 3 after them did not.
        let mut replayed = entries(1..=2, 1);
        replayed.extend(entries(3..=4, 3));
        let log = raft_log(
            (0, 0),
            state(1, 2, 2),
            replayed,
            ConfState::from((vec![1, 2, 3], [])),
        );
        assert_eq!(log.initial_state().unwrap().hard_state, state(3, 0, 2));
        // A hard state as new as the log keeps its vote.
        let log = raft_log(
            (0, 0),
            state(3, 2, 2),
            entries(1..=2, 3),
            ConfState::from((vec![1, 2, 3], [])),
        );
        assert_eq!(log.initial_state().unwrap().hard_state, state(3, 2, 2));
    }
}
