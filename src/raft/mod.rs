//! Raft on the raft core: its boot ([`boot`]: WAL replay → raft log → `RawNode`), the turn
//! ([`turn`]) and the seams it is written against ([`seams`]: the WAL, the state machine, the
//! transport), linearizable reads ([`reads`]), the lessor ([`lessor`]), the in-memory log raft-rs
//! reads ([`log`]), the WAL as
//! that log's durable home ([`durable`]), and the glommio driver that runs it all ([`run`]).
//! raft-rs's logging is routed into `tracing` here. `sim/` (tests only) drives the same turn in a
//! simulated cluster.
//!
//! Runs on: the raft core.

pub mod boot;
pub mod compactor;
pub mod durable;
pub mod lessor;
pub mod log;
pub mod membership;
pub mod reads;
pub mod run;
pub mod seams;
#[cfg(test)]
mod sim;
pub mod turn;

use std::fmt::Write as _;

/// Forwards raft-rs's `slog` records to `tracing` (target `raft`), key-value pairs included.
struct TracingDrain;

/// Collects a record's key-value pairs as `key=value` text.
struct Pairs(String);

impl slog::Serializer for Pairs {
    fn emit_arguments(&mut self, key: slog::Key, value: &std::fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={value}");
        Ok(())
    }
}

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        let mut pairs = Pairs(String::new());
        let _ = slog::KV::serialize(&record.kv(), record, &mut pairs);
        let _ = slog::KV::serialize(values, record, &mut pairs);
        let message = record.msg();
        let pairs = pairs.0;
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{message}{pairs}")
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{message}{pairs}"),
            slog::Level::Info => tracing::info!(target: "raft", "{message}{pairs}"),
            slog::Level::Debug | slog::Level::Trace => {
                tracing::debug!(target: "raft", "{message}{pairs}")
            }
        }
        Ok(())
    }
}

/// The logger to give raft-rs.
pub fn logger() -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!())
}
