//! The `keelson` binary: a member (etcd's flags), or the file inspectors (`keelson db`, `keelson
//! wal`). See `keelson --help`; the README's first command starts here.

mod api;
mod cli;
mod config;
mod cores;
mod ids;
mod inspect;
mod link;
mod metrics;
mod raft;
mod server;
mod status;

use std::io::{self, Write};
use std::process::ExitCode;

use cli::{Command, DbCommand, WalCommand};
use inspect::{Encoding, InspectError};

fn encoding(hex: bool) -> Encoding {
    if hex {
        Encoding::Hex
    } else {
        Encoding::Escaped
    }
}

fn parse_all(args: &[String]) -> Result<Vec<Vec<u8>>, InspectError> {
    args.iter().map(|a| inspect::parse_arg(a)).collect()
}

fn run_db(command: DbCommand, out: &mut dyn Write) -> Result<(), InspectError> {
    use inspect::db;
    match command {
        DbCommand::Check { file } => db::check(&file, out),
        DbCommand::Buckets { file, format } => db::buckets(&file, encoding(format.hex), out),
        DbCommand::Keys {
            file,
            buckets,
            format,
        } => db::keys(&file, &parse_all(&buckets)?, encoding(format.hex), out),
        DbCommand::Get { file, path, format } => {
            let mut path = parse_all(&path)?;
            let key = path.pop().unwrap_or_default();
            db::get(&file, &path, &key, encoding(format.hex), out)
        }
        DbCommand::Stats { file } => db::stats(&file, out),
    }
}

/// Logs to stderr at `--log-level` (etcd's levels: panic and fatal log errors only).
fn init_logging(level: &str) {
    let level = match level {
        "debug" => tracing::Level::DEBUG,
        "warn" => tracing::Level::WARN,
        "error" | "panic" | "fatal" => tracing::Level::ERROR,
        _ => tracing::Level::INFO,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .init();
}

/// Runs a member until it is stopped.
fn run_member(flags: &config::Flags, inert: &[String]) -> ExitCode {
    init_logging(&flags.log_level);
    let mut inert = inert.to_vec();
    if flags.snapshot_count != config::DEFAULT_SNAPSHOT_COUNT {
        // The page file syncs on time (every 100 ms), not on a count of entries.
        inert.push("snapshot-count".into());
    }
    if flags.quota_backend_bytes != 0 {
        inert.push("quota-backend-bytes".into());
    }
    for flag in inert {
        tracing::warn!("--{flag} is an etcd flag keelson does not act on yet; ignored");
    }
    let result = config::Config::from_flags(flags)
        .map_err(|e| e.to_string())
        .and_then(|config| server::run(config).map_err(|e| e.to_string()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("keelson: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli::Parsed { args, inert } = cli::parse();
    let Some(command) = args.command else {
        return run_member(&args.flags, &inert);
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let result = match command {
        Command::Db(command) => run_db(command, &mut out),
        Command::Wal(WalCommand::Dump { dir, from, format }) => {
            inspect::wal::dump_wal(&dir, from, encoding(format.hex), &mut out)
        }
    };
    let result = result.and_then(|()| out.flush().map_err(InspectError::from));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(InspectError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            let _ = out.flush();
            eprintln!("keelson: {e}");
            ExitCode::FAILURE
        }
    }
}
