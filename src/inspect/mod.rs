//! The inspectors of the `keelson` binary: `keelson db …` (page files) and `keelson wal …` (write-
//! ahead logs). They read files directly, without a server, and say precisely what is wrong with a
//! damaged one.
//!
//! Keys and values print as escaped text (`\xNN` for bytes that are not printable ASCII, `\\` for a
//! backslash), or as hex with `--hex`.
//!
//! Runs on: the main thread of `keelson db`/`keelson wal` (no member runs).

pub mod db;
pub mod wal;

use std::io;
use std::path::PathBuf;

use keelson_engine::pagefile::{self, escape};

/// Why an inspection failed.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The page file could not be opened or read.
    #[error(transparent)]
    PageFile(#[from] pagefile::Error),
    /// The write-ahead log could not be read, or is damaged (after what was printed).
    #[error(transparent)]
    Wal(#[from] keelson_engine::wal::WalError),
    /// Output failed (other than a closed pipe, which ends quietly).
    #[error("writing output: {0}")]
    Output(#[from] io::Error),
    /// A bucket named on the command line does not exist.
    #[error("{file}: bucket {bucket} not found")]
    BucketNotFound {
        /// The file.
        file: PathBuf,
        /// The path of bucket names, escaped.
        bucket: String,
    },
    /// The key does not exist in the bucket.
    #[error("{file}: key {key} not found")]
    KeyNotFound {
        /// The file.
        file: PathBuf,
        /// The key, escaped.
        key: String,
    },
    /// The key names a nested bucket, which has no value.
    #[error("{file}: key {key} is a bucket, not a value")]
    KeyIsBucket {
        /// The file.
        file: PathBuf,
        /// The key, escaped.
        key: String,
    },
    /// A bucket or key argument is not valid escaped text or hex.
    #[error("argument {arg:?}: {why}")]
    BadArgument {
        /// The argument as given.
        arg: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The consistency check found problems (already printed).
    #[error("{file}: check failed, {count} problem(s) found")]
    CheckFailed {
        /// The file.
        file: PathBuf,
        /// How many.
        count: usize,
    },
}

/// How bytes are written on the command line.
#[derive(Debug, Clone, Copy)]
pub enum Encoding {
    /// Printable ASCII as is, `\xNN` otherwise.
    Escaped,
    /// Lowercase hex.
    Hex,
}

impl Encoding {
    /// `bytes` in this encoding.
    pub fn show(self, bytes: &[u8]) -> String {
        match self {
            Encoding::Escaped => escape(bytes),
            Encoding::Hex => bytes.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

/// Reads a bucket or key argument: escaped text, `\\` and `\xNN` being the escapes.
pub fn parse_arg(arg: &str) -> Result<Vec<u8>, InspectError> {
    let bad = |why| InspectError::BadArgument {
        arg: arg.to_string(),
        why,
    };
    let hex_digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(arg.len());
    let mut bytes = arg.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => match (
                bytes.next().and_then(hex_digit),
                bytes.next().and_then(hex_digit),
            ) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => return Err(bad("\\x needs two hex digits")),
            },
            _ => return Err(bad("only \\\\ and \\xNN escapes are understood")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_read_back_what_escape_prints() {
        let raw = b"a\\b\x00\xff z".to_vec();
        assert_eq!(parse_arg(&Encoding::Escaped.show(&raw)).unwrap(), raw);
        assert_eq!(Encoding::Hex.show(&raw), "615c6200ff207a");
        assert!(parse_arg("\\q").is_err());
        assert!(parse_arg("\\x4").is_err());
    }
}
