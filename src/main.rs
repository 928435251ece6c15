//! The `keelson` binary. See `keelson --help`; the README's first command starts here.

mod cli;
mod inspect;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use cli::{Args, Command, DbCommand, WalCommand};
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

fn main() -> ExitCode {
    let args = Args::parse();
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let result = match args.command {
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
