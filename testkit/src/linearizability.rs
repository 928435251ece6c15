//! A linearizability checker for histories of single-key operations — put, get and compare-and-set
//! on registers — in the manner of Wing & Gong with Lowe's memoization (porcupine's algorithm).
//! Each key is checked on its own (linearizability is compositional), so histories of thousands of
//! operations over a few keys check in milliseconds.
//!
//! An operation whose outcome the client did not learn (a timeout, a lost connection) is recorded
//! as [`Outcome::Unknown`]: it may have taken effect at any time after it was called, or never. It
//! is given an infinite return time and any output, which is exactly that.
//!
//! Unknown writes make the search exponential (each may or may not have happened at every later
//! point), so a key is checked first without the unknown writes nobody observed (no read returned
//! their value, no successful compare-and-set expected it): if that history is linearizable, so is
//! the whole one (they take effect last, unseen). Only if it is not is the whole history searched,
//! within [`MAX_EXPLORED`] states.
//!
//! [`History`] records operations from many client threads: [`History::call`] when a client sends
//! one, [`Call::returned`] or [`Call::unknown`] when it learns how it ended.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What a client asked of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set the value.
    Put(String),
    /// Read the value.
    Get,
    /// Set the value to `new` if it is `expect` (`None`: the key is absent).
    Cas {
        /// The value it must have.
        expect: Option<String>,
        /// The value it gets.
        new: String,
    },
}

/// How an operation ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A put was acknowledged.
    Written,
    /// A get read this value (`None`: absent).
    Read(Option<String>),
    /// A compare-and-set succeeded (`true`) or found another value (`false`).
    Swapped(bool),
    /// The client does not know (it may or may not have taken effect).
    Unknown,
}

/// One operation of the history.
#[derive(Debug, Clone)]
pub struct Operation {
    /// The client that made it.
    pub client: usize,
    /// The key.
    pub key: String,
    /// What it asked.
    pub op: Op,
    /// Nanoseconds from the history's start to the call.
    pub called: u64,
    /// Nanoseconds to the return (`u64::MAX`: unknown).
    pub returned: u64,
    /// How it ended.
    pub outcome: Outcome,
}

/// The operations of a run, recorded from any thread.
#[derive(Debug, Clone)]
pub struct History {
    start: Instant,
    operations: Arc<Mutex<Vec<Operation>>>,
}

impl Default for History {
    fn default() -> Self {
        History {
            start: Instant::now(),
            operations: Arc::default(),
        }
    }
}

/// An operation called and not yet recorded.
#[must_use = "record how the operation ended"]
pub struct Call {
    history: History,
    client: usize,
    key: String,
    op: Op,
    called: u64,
}

impl History {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Client `client` calls `op` on `key` now.
    pub fn call(&self, client: usize, key: &str, op: Op) -> Call {
        Call {
            history: self.clone(),
            client,
            key: key.to_string(),
            called: self.now(),
            op,
        }
    }

    /// Every operation recorded so far.
    pub fn operations(&self) -> Vec<Operation> {
        self.operations.lock().unwrap().clone()
    }
}

impl Call {
    /// The operation ended now, with `outcome`.
    pub fn returned(self, outcome: Outcome) {
        let returned = if outcome == Outcome::Unknown {
            u64::MAX
        } else {
            self.history.now()
        };
        self.record(returned, outcome);
    }

    /// The client will never know how it ended.
    pub fn unknown(self) {
        self.record(u64::MAX, Outcome::Unknown);
    }

    /// The operation certainly did not happen (a read that failed): it is left out.
    pub fn failed(self) {}

    fn record(self, returned: u64, outcome: Outcome) {
        let operation = Operation {
            client: self.client,
            key: self.key,
            op: self.op,
            called: self.called,
            returned,
            outcome,
        };
        self.history.operations.lock().unwrap().push(operation);
    }
}

/// The most (linearized set, state) pairs the search of one key explores before it gives up.
pub const MAX_EXPLORED: usize = 1_000_000;

/// Why a history did not check: the key, and its operations in call order.
#[derive(Debug)]
pub struct Violation {
    /// The key whose operations cannot be ordered.
    pub key: String,
    /// Whether the search gave up (more than [`MAX_EXPLORED`] states) rather than found none.
    pub gave_up: bool,
    /// Its operations.
    pub operations: Vec<Operation>,
}

/// Checks every key of `operations`; the first key that is not linearizable, if any.
pub fn check(operations: &[Operation]) -> Result<(), Violation> {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for operation in operations {
        by_key.entry(&operation.key).or_default().push(operation);
    }
    for (key, ops) in by_key {
        let observed: HashSet<&str> = ops
            .iter()
            .filter_map(|o| match (&o.op, &o.outcome) {
                (_, Outcome::Read(Some(v))) => Some(v.as_str()),
                (
                    Op::Cas {
                        expect: Some(v), ..
                    },
                    Outcome::Swapped(true),
                ) => Some(v.as_str()),
                _ => None,
            })
            .collect();
        let seen: Vec<&Operation> = ops
            .iter()
            .copied()
            .filter(|o| match (&o.op, &o.outcome) {
                (Op::Put(v) | Op::Cas { new: v, .. }, Outcome::Unknown) => {
                    observed.contains(v.as_str())
                }
                _ => true,
            })
            .collect();
        if linearizable(&seen) == Some(true) {
            continue;
        }
        let found = linearizable(&ops);
        if found != Some(true) {
            let mut operations: Vec<Operation> = ops.into_iter().cloned().collect();
            operations.sort_by_key(|o| o.called);
            return Err(Violation {
                key: key.to_string(),
                gave_up: found.is_none(),
                operations,
            });
        }
    }
    Ok(())
}

/// The register's next state if `op` with `outcome` can happen in `state`.
fn step(state: &Option<String>, op: &Op, outcome: &Outcome) -> Option<Option<String>> {
    match (op, outcome) {
        (Op::Put(v), Outcome::Written | Outcome::Unknown) => Some(Some(v.clone())),
        (Op::Get, Outcome::Read(seen)) => (seen == state).then(|| state.clone()),
        (Op::Get, Outcome::Unknown) => Some(state.clone()),
        (Op::Cas { expect, new }, Outcome::Swapped(true)) => {
            (expect == state).then(|| Some(new.clone()))
        }
        (Op::Cas { expect, .. }, Outcome::Swapped(false)) => {
            (expect != state).then(|| state.clone())
        }
        (Op::Cas { expect, new }, Outcome::Unknown) => Some(if expect == state {
            Some(new.clone())
        } else {
            state.clone()
        }),
        _ => None,
    }
}

/// One end of an operation in the time-ordered list the search walks.
#[derive(Debug, Clone, Copy)]
struct Event {
    /// The operation's index.
    op: usize,
    /// A call (`true`) or a return.
    call: bool,
    /// The other end's position in the list.
    other: usize,
}

/// Wing & Gong's search over one key's operations, with the cache of (linearized set, state)
/// pairs already explored that makes it practical (`None`: it gave up).
fn linearizable(ops: &[&Operation]) -> Option<bool> {
    // Calls and returns in time order; at equal times calls come first (overlap is allowed).
    let mut ends: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
    for (i, o) in ops.iter().enumerate() {
        ends.push((o.called, true, i));
        ends.push((o.returned, false, i));
    }
    ends.sort_by_key(|&(time, call, op)| (time, !call, op));
    let mut position = vec![[0usize; 2]; ops.len()];
    for (at, &(_, call, op)) in ends.iter().enumerate() {
        position[op][usize::from(!call)] = at + 1;
    }
    // A doubly linked list over the events, with a head sentinel at 0.
    let n = ends.len();
    let events: Vec<Event> = std::iter::once(Event {
        op: usize::MAX,
        call: false,
        other: 0,
    })
    .chain(ends.iter().map(|&(_, call, op)| Event {
        op,
        call,
        other: position[op][usize::from(call)],
    }))
    .collect();
    let mut next: Vec<usize> = (1..=n + 1).collect();
    let mut prev: Vec<usize> = (0..=n).map(|i| i.wrapping_sub(1)).collect();
    let end = n + 1;
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, at: usize| {
        next[prev[at]] = next[at];
        if next[at] != end {
            prev[next[at]] = prev[at];
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, at: usize| {
        next[prev[at]] = at;
        if next[at] != end {
            prev[next[at]] = at;
        }
    };
    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut state: Option<String> = None;
    let mut seen: HashSet<(Vec<u64>, Option<String>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<String>)> = Vec::new();
    let mut at = next[0];
    while next[0] != end {
        let event = events[at];
        if event.call {
            let o = ops[event.op];
            if let Some(after) = step(&state, &o.op, &o.outcome) {
                let mut with = linearized.clone();
                with[event.op / 64] |= 1 << (event.op % 64);
                if seen.len() >= MAX_EXPLORED {
                    return None;
                }
                if seen.insert((with.clone(), after.clone())) {
                    stack.push((at, std::mem::replace(&mut state, after)));
                    linearized = with;
                    unlink(&mut next, &mut prev, at);
                    unlink(&mut next, &mut prev, event.other);
                    at = next[0];
                    continue;
                }
            }
            at = next[at];
        } else {
            // A return reached before its call was linearized (every call's return follows it in
            // the list, so the walk meets one before the list's end): undo the last choice.
            let Some((call, before)) = stack.pop() else {
                return Some(false);
            };
            let op = events[call].op;
            linearized[op / 64] &= !(1 << (op % 64));
            state = before;
            relink(&mut next, &mut prev, events[call].other);
            relink(&mut next, &mut prev, call);
            at = next[call];
        }
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: usize, op: Op, called: u64, returned: u64, outcome: Outcome) -> Operation {
        Operation {
            client,
            key: "k".into(),
            op,
            called,
            returned,
            outcome,
        }
    }

    fn put(v: &str) -> Op {
        Op::Put(v.into())
    }

    fn read(v: Option<&str>) -> Outcome {
        Outcome::Read(v.map(str::to_string))
    }

    #[test]
    fn overlapping_operations_may_take_effect_in_either_order() {
        let history = [
            op(0, put("a"), 0, 10, Outcome::Written),
            op(1, put("b"), 5, 15, Outcome::Written),
            op(2, Op::Get, 20, 30, read(Some("a"))),
        ];
        assert!(check(&history).is_ok());
    }

    #[test]
    fn a_stale_read_after_a_write_returned_is_caught() {
        let history = [
            op(0, put("a"), 0, 10, Outcome::Written),
            op(1, put("b"), 11, 20, Outcome::Written),
            op(2, Op::Get, 21, 30, read(Some("a"))),
        ];
        let violation = check(&history).unwrap_err();
        assert_eq!(violation.key, "k");
        assert_eq!(violation.operations.len(), 3);
        // A read of a value never written, or of nothing after a write, is caught too.
        assert!(check(&[op(0, Op::Get, 0, 1, read(Some("z")))]).is_err());
        let lost = [
            op(0, put("a"), 0, 10, Outcome::Written),
            op(1, Op::Get, 11, 12, read(None)),
        ];
        assert!(check(&lost).is_err());
    }

    #[test]
    fn an_unknown_write_may_have_happened_or_not_but_only_after_its_call() {
        let happened = [
            op(0, put("a"), 0, u64::MAX, Outcome::Unknown),
            op(1, Op::Get, 5, 6, read(Some("a"))),
            op(1, Op::Get, 7, 8, read(Some("a"))),
        ];
        assert!(check(&happened).is_ok());
        let did_not = [
            op(0, put("a"), 0, u64::MAX, Outcome::Unknown),
            op(1, Op::Get, 5, 6, read(None)),
        ];
        assert!(check(&did_not).is_ok());
        let before_its_call = [
            op(1, Op::Get, 0, 1, read(Some("a"))),
            op(0, put("a"), 5, u64::MAX, Outcome::Unknown),
        ];
        assert!(check(&before_its_call).is_err());
        // Once seen, it cannot be undone.
        let flickers = [
            op(0, put("a"), 0, u64::MAX, Outcome::Unknown),
            op(1, Op::Get, 5, 6, read(Some("a"))),
            op(1, Op::Get, 7, 8, read(None)),
        ];
        assert!(check(&flickers).is_err());
    }

    #[test]
    fn compare_and_set_sees_the_value_it_compares() {
        let cas = |expect: Option<&str>, new: &str| Op::Cas {
            expect: expect.map(str::to_string),
            new: new.into(),
        };
        let history = [
            op(0, put("a"), 0, 10, Outcome::Written),
            op(1, cas(Some("a"), "b"), 11, 20, Outcome::Swapped(true)),
            op(2, cas(Some("a"), "c"), 21, 30, Outcome::Swapped(false)),
            op(3, Op::Get, 31, 40, read(Some("b"))),
        ];
        assert!(check(&history).is_ok());
        let both_won = [
            op(0, put("a"), 0, 10, Outcome::Written),
            op(1, cas(Some("a"), "b"), 11, 20, Outcome::Swapped(true)),
            op(2, cas(Some("a"), "c"), 12, 21, Outcome::Swapped(true)),
        ];
        assert!(check(&both_won).is_err());
    }

    #[test]
    fn a_long_concurrent_history_checks_quickly() {
        // Four clients, each writing its own values and reading back, overlapping in pairs.
        let mut history = Vec::new();
        let mut t = 0;
        for round in 0..500 {
            let v = format!("v{round}");
            history.push(op(round % 4, put(&v), t, t + 15, Outcome::Written));
            history.push(op((round + 1) % 4, Op::Get, t + 16, t + 20, read(Some(&v))));
            t += 10;
        }
        // Each get overlaps the next put, which may come first only if it wrote the same: it
        // did not, so each get sits between its put and the next.
        assert!(check(&history).is_ok());
        // The same history with one get reading a value long overwritten is caught.
        let stale = history.len() - 3;
        history[stale].outcome = read(Some("v490"));
        assert!(check(&history).is_err());
    }
}
