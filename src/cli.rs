//! The command line of the `keelson` binary (clap): with no subcommand, a member with etcd's flags
//! ([`crate::config::Flags`]); `keelson db …` and `keelson wal …` are the file inspectors.
//!
//! Like etcd (Go's `flag` package), a long flag may be written with one dash (`-name x`); an
//! unknown flag is refused with etcd's wording and exit status 2.
//!
//! Runs on: the main thread, before any core starts.

use std::path::PathBuf;

use clap::{
    Arg, ArgAction, ArgMatches, Args as ClapArgs, CommandFactory, FromArgMatches, Parser,
    Subcommand,
};

use crate::config::{Flags, INERT_FLAGS};
use crate::config_file;

/// An etcd-compatible, strongly consistent key-value store for control planes. With no
/// subcommand, runs a member; its flags are etcd's.
#[derive(Debug, Parser)]
#[command(name = "keelson", args_conflicts_with_subcommands = true)]
pub struct Args {
    /// Inspect files instead of running a member.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The member's flags.
    #[command(flatten)]
    pub flags: Flags,
}

/// The parsed command line, and the etcd flags given that keelson does not act on yet.
pub struct Parsed {
    /// What to do.
    pub args: Args,
    /// `--flag` names given that keelson accepts and ignores.
    pub inert: Vec<String>,
    /// The configuration file the flags came from, if they did, and its keys that name no flag.
    pub config_file: Option<(PathBuf, Vec<String>)>,
}

fn with_inert_flags(command: clap::Command) -> clap::Command {
    INERT_FLAGS.iter().fold(command, |command, name| {
        let env = format!("ETCD_{}", name.to_uppercase().replace('-', "_"));
        command.arg(
            Arg::new(*name)
                .long(*name)
                .env(env)
                .num_args(0..=1)
                .require_equals(false)
                .action(ArgAction::Set)
                .hide(true),
        )
    })
}

/// Go's flag syntax allows `-name`; clap wants `--name`.
fn normalize(arg: String) -> String {
    let single_dash_long = arg.starts_with('-')
        && !arg.starts_with("--")
        && arg.len() > 2
        && arg[1..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic());
    if single_dash_long {
        format!("-{arg}")
    } else {
        arg
    }
}

/// Parses the process's command line — or, for a member given `--config-file`, that file's
/// settings alone ([`crate::config_file`]) — or exits as etcd does on a bad one.
pub fn parse() -> Parsed {
    let mut argv: Vec<String> = std::env::args()
        .enumerate()
        .map(|(i, a)| if i == 0 { a } else { normalize(a) })
        // Go's `--flag=` sets an empty value, which etcd takes as "not given" (`--wal-dir=`).
        .filter(|a| !(a.starts_with("--") && a.ends_with('=') && a.matches('=').count() == 1))
        .collect();
    let mut command = with_inert_flags(Args::command());
    let subcommand = argv
        .get(1)
        .is_some_and(|first| command.find_subcommand(first).is_some());
    let mut config_file = None;
    if let Some(path) = config_file::named(&argv[1..]).filter(|_| !subcommand) {
        let flags: Vec<String> = command
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_string))
            .collect();
        match config_file::arguments(&path, |name| flags.iter().any(|f| f == name)) {
            Ok((settings, ignored)) => {
                argv.truncate(1);
                argv.extend(settings);
                // As etcd: the file alone configures the member, not ETCD_* variables either.
                command = command.mut_args(|arg| arg.env(None));
                config_file = Some((path, ignored));
            }
            Err(e) => {
                eprintln!("keelson: {e}");
                std::process::exit(1);
            }
        }
    }
    let matches: ArgMatches = match command.try_get_matches_from(argv) {
        Ok(m) => m,
        Err(e) => {
            if e.kind() == clap::error::ErrorKind::UnknownArgument {
                let flag = e
                    .get(clap::error::ContextKind::InvalidArg)
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                let flag = flag
                    .split('=')
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches('-');
                eprintln!("flag provided but not defined: -{flag}");
                eprintln!("Try 'keelson --help' for the flags (etcd's).");
                std::process::exit(2);
            }
            e.exit()
        }
    };
    let inert = INERT_FLAGS
        .iter()
        .filter(|name| matches.value_source(name).is_some())
        .map(|name| name.to_string())
        .collect();
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    Parsed {
        args,
        inert,
        config_file,
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect a page file (keelson's or etcd's member/snap/db, or a snapshot), like bbolt's CLI.
    #[command(subcommand)]
    Db(DbCommand),
    /// Inspect a write-ahead log directory (member/wal), like etcd-dump-logs.
    #[command(subcommand)]
    Wal(WalCommand),
    /// Save, describe and restore snapshots, as etcdctl (and etcdutl) do.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Load an etcd-compatible endpoint (keelson or etcd) as etcd's `benchmark` tool does, with its
    /// flags, and print the latency distribution.
    Bench(BenchArgs),
    /// Sample a running member's /debug/latency and print where its requests' time went, stage by
    /// stage (count, rate, mean, p50, p90, p99, p99.9).
    Profile {
        /// The member's client (or metrics) endpoint.
        #[arg(long, default_value = "127.0.0.1:2379")]
        endpoints: String,
        /// How long to sample (Go duration: 10s, 1m).
        #[arg(long, default_value = "10s", value_parser = crate::duration::parse)]
        duration: std::time::Duration,
    },
}

/// `keelson bench`: the run's shape (flags may come before or after the workload, as etcd's
/// `benchmark` takes them).
#[derive(Debug, ClapArgs)]
pub struct BenchArgs {
    /// The endpoint to load (host:port).
    #[arg(long, global = true, default_value = "127.0.0.1:2379")]
    pub endpoints: String,
    /// HTTP/2 connections.
    #[arg(long, global = true, default_value_t = 1)]
    pub conns: usize,
    /// Clients, each one request at a time, sharing the connections round-robin.
    #[arg(long, global = true, default_value_t = 1)]
    pub clients: usize,
    /// Requests in all (10000 if neither this nor --duration is given).
    #[arg(long, global = true)]
    pub total: Option<u64>,
    /// How long to run (Go duration: 30s, 1m).
    #[arg(long, global = true, value_parser = crate::duration::parse)]
    pub duration: Option<std::time::Duration>,
    /// Requests per second in all (0: as fast as the clients go).
    #[arg(long, global = true, default_value_t = 0)]
    pub rate: u64,
    /// Print the summary as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub workload: BenchWorkload,
}

/// `keelson bench` workloads.
#[derive(Debug, Subcommand)]
pub enum BenchWorkload {
    /// Puts.
    Put {
        #[command(flatten)]
        shape: crate::bench::Shape,
        /// Keys in order instead of at random.
        #[arg(long)]
        sequential_keys: bool,
    },
    /// Ranges of one key, or of [KEY, END).
    Range {
        key: String,
        end: Option<String>,
        /// l (linearizable) or s (serializable).
        #[arg(long, default_value = "l", value_parser = ["l", "s"])]
        consistency: String,
    },
    /// Txns of puts (no compare), their keys in order over the key space.
    TxnPut {
        #[command(flatten)]
        shape: crate::bench::Shape,
        /// Puts per txn.
        #[arg(long, default_value_t = 1)]
        txn_ops: usize,
    },
    /// Renewals of a lease each client grants first, one keep-alive stream each.
    LeaseKeepalive,
    /// Watchers on streams, then puts of the watched keys from the clients: events a second, and
    /// each event's latency from its put's sending.
    Watch {
        /// Watch streams.
        #[arg(long, default_value_t = 10)]
        streams: usize,
        /// Watchers per stream.
        #[arg(long, default_value_t = 100)]
        watch_per_stream: usize,
        /// Keys watched (watcher w watches key w mod this).
        #[arg(long, default_value_t = 1)]
        watched_key_total: usize,
        /// Puts per second (0: as fast as the clients go).
        #[arg(long, default_value_t = 0)]
        put_rate: u64,
        /// Puts in all, of the watched keys in turn.
        #[arg(long, default_value_t = 1000)]
        put_total: u64,
        /// Bytes per key.
        #[arg(long, default_value_t = 32)]
        key_size: usize,
        /// How many different keys the watched keys are drawn from.
        #[arg(long = "key-space-size", default_value_t = 1)]
        key_space: u64,
        /// Watched keys in order instead of at random.
        #[arg(long)]
        sequential_keys: bool,
    },
    /// Each client watches one key; --total puts of it, one at a time: the latency from each
    /// put's answer to each watcher's event.
    WatchLatency {
        /// Puts per second.
        #[arg(long, default_value_t = 100)]
        put_rate: u64,
        /// Bytes of the key.
        #[arg(long, default_value_t = 32)]
        key_size: usize,
        /// Bytes of the value.
        #[arg(long, default_value_t = 32)]
        val_size: usize,
    },
    /// Serializable Gets (their latency) while watchers catch up on past events.
    WatchGet {
        /// Watchers in all.
        #[arg(long, default_value_t = 10000)]
        watchers: usize,
        /// Watch streams the watchers share.
        #[arg(long, default_value_t = 1)]
        streams: usize,
        /// Past events each watcher catches up on.
        #[arg(long, default_value_t = 8)]
        events: usize,
    },
}

/// `keelson snapshot` subcommands.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Fetch a snapshot from a running member into FILE (with its SHA-256 appended).
    Save {
        /// Where to write it.
        file: PathBuf,
        /// The member's client endpoint.
        #[arg(long, default_value = "127.0.0.1:2379")]
        endpoints: String,
    },
    /// Print a snapshot's hash, revision, total keys and size.
    Status {
        /// The snapshot file.
        file: PathBuf,
        /// simple, table or json.
        #[arg(short = 'w', long = "write-out", value_enum, default_value = "simple")]
        write_out: crate::snapshot::status::WriteOut,
    },
    /// Make a data dir for a new cluster from a snapshot.
    Restore {
        /// The snapshot file.
        file: PathBuf,
        /// The data dir to make (default: <name>.etcd).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// This member's name.
        #[arg(long, default_value = "default")]
        name: String,
        /// The new cluster: name=peerURL,...
        #[arg(long, default_value = "default=http://localhost:2380")]
        initial_cluster: String,
        /// The new cluster's token.
        #[arg(long, default_value = "etcd-cluster")]
        initial_cluster_token: String,
        /// This member's peer URLs (taken for etcd's command line; --initial-cluster names them).
        #[arg(long, default_value = "http://localhost:2380")]
        initial_advertise_peer_urls: String,
        /// Restore a file without a SHA-256 (a data dir's db file).
        #[arg(long)]
        skip_hash_check: bool,
    },
}

/// `keelson wal` subcommands.
#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// Print every record, one line each: segment, offset, type, index, term, summary.
    Dump {
        /// The WAL directory.
        dir: PathBuf,
        /// Skip entries with a lower index.
        #[arg(long, value_name = "INDEX", default_value_t = 0)]
        from: u64,
        #[command(flatten)]
        format: Format,
    },
}

/// How keys and values are shown.
#[derive(Debug, ClapArgs)]
pub struct Format {
    /// Print keys and values as hex instead of escaped text (arguments are always escaped text).
    #[arg(long)]
    pub hex: bool,
}

/// `keelson db` subcommands.
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Check the file's consistency: every page used once or free, pages well-formed, keys in order.
    Check {
        /// The page file.
        file: PathBuf,
    },
    /// List the top-level buckets.
    Buckets {
        /// The page file.
        file: PathBuf,
        #[command(flatten)]
        format: Format,
    },
    /// List the keys of a bucket (name nested buckets one after another).
    Keys {
        /// The page file.
        file: PathBuf,
        /// The bucket, then nested buckets inside it.
        #[arg(required = true, value_name = "BUCKET")]
        buckets: Vec<String>,
        #[command(flatten)]
        format: Format,
    },
    /// Print the value of a key.
    Get {
        /// The page file.
        file: PathBuf,
        /// The bucket (then nested buckets), then the key.
        #[arg(required = true, num_args = 2.., value_name = "BUCKET... KEY")]
        path: Vec<String>,
        #[command(flatten)]
        format: Format,
    },
    /// Print page, key and fill statistics, in total and per bucket.
    Stats {
        /// The page file.
        file: PathBuf,
    },
}
