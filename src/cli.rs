//! The command line of the `keelson` binary (clap). Today: `keelson db …` and `keelson wal …`, the
//! inspectors; the server's etcd-compatible flags join them with the server.

use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser, Subcommand};

/// An etcd-compatible, strongly consistent key-value store for control planes.
#[derive(Debug, Parser)]
#[command(name = "keelson", version)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
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
