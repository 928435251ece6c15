//! The `keelson` binary: a member (etcd's flags), or the file inspectors (`keelson db`, `keelson
//! wal`). See `keelson --help`; the README's first command starts here. `ARCHITECTURE.md` maps the
//! cores and the files.
//!
//! Runs on: the main thread.

mod api;
mod apply;
mod bench;
mod cli;
mod config;
mod config_file;
mod duration;
mod grpc_client;
mod ids;
mod inspect;
mod logging;
mod metrics;
mod peer;
mod profile;
mod raft;
mod runtime;
mod server;
mod snapshot;
mod watch;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use runtime::shutdown::{self, Shutdown};

use cli::{Command, DbCommand, SnapshotCommand, WalCommand};
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

fn run_snapshot(
    command: SnapshotCommand,
    out: &mut dyn Write,
) -> Result<(), snapshot::SnapshotError> {
    match command {
        SnapshotCommand::Save { file, endpoints } => {
            snapshot::save::save(&endpoints, &file)?;
            writeln!(out, "Snapshot saved at {}", file.display())?;
            Ok(())
        }
        SnapshotCommand::Status { file, write_out } => {
            let status = snapshot::status::of(&file)?;
            snapshot::status::print(&status, write_out, out)?;
            Ok(())
        }
        SnapshotCommand::Restore {
            file,
            data_dir,
            name,
            initial_cluster,
            initial_cluster_token,
            initial_advertise_peer_urls,
            skip_hash_check,
        } => {
            let data_dir = data_dir.unwrap_or_else(|| PathBuf::from(format!("{name}.etcd")));
            let (member, cluster, revision) =
                snapshot::restore::restore(&snapshot::restore::Restore {
                    snapshot: &file,
                    data_dir: &data_dir,
                    name: &name,
                    initial_cluster: &initial_cluster,
                    token: &initial_cluster_token,
                    peer_urls: &initial_advertise_peer_urls,
                    skip_hash_check,
                })?;
            writeln!(
                out,
                "restored snapshot {} into {} (member {member:x} of cluster {cluster:x}, revision {revision})",
                file.display(),
                data_dir.display()
            )?;
            Ok(())
        }
    }
}

/// How long a member may take to stop once asked (or once a core failed) before the process ends
/// regardless: a crash at any instant loses nothing acknowledged.
const STOP_BOUND: Duration = Duration::from_secs(10);

/// Runs a member until it is stopped.
fn run_member(
    flags: &config::Flags,
    inert: &[String],
    config_file: Option<(PathBuf, Vec<String>)>,
) -> ExitCode {
    logging::init(&flags.log_level);
    runtime::fatal::install();
    if let Some((path, ignored)) = config_file {
        tracing::info!(
            path = %path.display(),
            "loaded server configuration, other configuration command line flags and environment variables will be ignored if provided"
        );
        for key in ignored {
            tracing::warn!(path = %path.display(), "{key:?} in the configuration file is no flag of etcd's or keelson's; ignored");
        }
    }
    let stopper = Shutdown::new(STOP_BOUND);
    if let Err(e) = shutdown::on_signals(&stopper) {
        tracing::error!("cannot watch for SIGTERM and SIGINT: {e}");
        logging::flush(Duration::from_millis(300));
        return ExitCode::FAILURE;
    }
    for flag in inert {
        tracing::warn!("--{flag} is an etcd flag keelson does not act on yet; ignored");
    }
    let result = config::Config::from_flags(flags)
        .map_err(|e| e.to_string())
        .and_then(|config| server::run(config, stopper).map_err(|e| e.to_string()));
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            logging::emit(format!("keelson: {e}\n").into_bytes());
            ExitCode::FAILURE
        }
    };
    logging::flush(Duration::from_millis(300));
    code
}

/// What `--version` prints: etcd's lines (scripts read `etcd Version:`), keelson's own beside.
fn version() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!(
        "etcd Version: {}\nGit SHA: Not provided\nGo Version: not Go: keelson {} (Rust)\nGo OS/Arch: {}/{arch}\n",
        api::maintenance::ETCD_VERSION,
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
    )
}

/// `keelson bench`'s flags as a run, and whether to print JSON.
fn bench_run(args: cli::BenchArgs) -> (bench::Run, bool) {
    let workload = match args.workload {
        cli::BenchWorkload::Put {
            shape,
            sequential_keys,
        } => bench::Workload::Put {
            shape,
            sequential: sequential_keys,
        },
        cli::BenchWorkload::Range {
            key,
            end,
            consistency,
        } => bench::Workload::Range {
            key: key.into_bytes(),
            end: end.unwrap_or_default().into_bytes(),
            serializable: consistency == "s",
        },
        cli::BenchWorkload::TxnPut { shape, txn_ops } => bench::Workload::TxnPut {
            shape,
            ops: txn_ops,
        },
        cli::BenchWorkload::LeaseKeepalive => bench::Workload::LeaseKeepalive,
        cli::BenchWorkload::Watch {
            streams,
            watch_per_stream,
            watched_key_total,
            put_rate,
            put_total,
            key_size,
            key_space,
            sequential_keys,
        } => bench::Workload::Watch(bench::Watch::Fanout {
            streams,
            per_stream: watch_per_stream,
            keys: bench::Watch::keys(watched_key_total, key_size, key_space, sequential_keys),
            puts: put_total,
            put_rate,
        }),
        cli::BenchWorkload::WatchLatency {
            put_rate,
            key_size,
            val_size,
        } => bench::Workload::Watch(bench::Watch::Latency {
            key: bench::Watch::keys(1, key_size, u64::MAX, false).remove(0),
            value: vec![b'v'; val_size],
            put_rate,
        }),
        cli::BenchWorkload::WatchGet {
            watchers,
            streams,
            events,
        } => bench::Workload::Watch(bench::Watch::Get {
            watchers,
            streams,
            events,
        }),
    };
    let total = match (args.total, args.duration) {
        (None, None) => Some(10_000),
        (total, _) => total,
    };
    let run = bench::Run {
        endpoint: args.endpoints,
        conns: args.conns,
        clients: args.clients,
        total,
        duration: args.duration,
        rate: args.rate,
        workload,
    };
    (run, args.json)
}

/// A subcommand's exit: its error, if any, on stderr as etcdctl prints one.
fn exit_code(done: Result<(), impl std::fmt::Display>) -> ExitCode {
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(io::stderr(), "Error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli::Parsed {
        args,
        inert,
        config_file,
    } = cli::parse();
    let Some(command) = args.command else {
        if args.flags.version {
            print!("{}", version());
            return ExitCode::SUCCESS;
        }
        return run_member(&args.flags, &inert, config_file);
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let result = match command {
        Command::Db(command) => run_db(command, &mut out),
        Command::Wal(WalCommand::Dump { dir, from, format }) => {
            inspect::wal::dump_wal(&dir, from, encoding(format.hex), &mut out)
        }
        Command::Bench(args) => {
            let (run, as_json) = bench_run(args);
            let done = bench::bench(run, as_json, &mut out).and_then(|()| Ok(out.flush()?));
            return exit_code(done);
        }
        Command::Profile {
            endpoints,
            duration,
        } => {
            let done =
                profile::profile(&endpoints, duration, &mut out).and_then(|()| Ok(out.flush()?));
            return exit_code(done);
        }
        Command::Snapshot(command) => {
            let done = run_snapshot(command, &mut out).and_then(|()| Ok(out.flush()?));
            return exit_code(done);
        }
    };
    let result = result.and_then(|()| out.flush().map_err(InspectError::from));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(InspectError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            let _ = out.flush();
            let _ = writeln!(io::stderr(), "keelson: {e}");
            ExitCode::FAILURE
        }
    }
}
