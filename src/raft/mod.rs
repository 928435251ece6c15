//! Raft on the raft core: the log raft-rs reads ([`log`]), the entries it carries ([`entry`]), the
//! core's loop ([`node`]), and raft-rs's logging routed into `tracing`.

pub mod entry;
pub mod log;
pub mod node;

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
