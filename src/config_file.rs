//! etcd's configuration file (`--config-file`, or `ETCD_CONFIG_FILE`): YAML whose keys are the
//! flags' names, read into the command-line arguments it stands for, so that one parser checks
//! both. As etcd, a member started with a configuration file takes nothing from the other flags
//! or from `ETCD_*` variables.
//!
//! Its `client-transport-security` and `peer-transport-security` maps hold the TLS flags
//! (`cert-file` in the first is `--cert-file`, in the second `--peer-cert-file`); a list is the
//! flag's comma-separated value; an empty value leaves the flag at its default; a key that names no
//! flag is ignored (returned, for a warning), as etcd ignores it. keelson's own flags (`cores`)
//! are keys like the others.
//!
//! Runs on: the main thread, before any core starts.

use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

/// Settings that are Go `time.Duration`s in etcd's configuration: a number in the file counts
/// nanoseconds (`backend-batch-interval: 100000000` is 100 ms), where the flag takes `100ms`.
/// (`heartbeat-interval` and `election-timeout` are milliseconds in both.)
const DURATIONS: &[&str] = &[
    "backend-batch-interval",
    "grpc-keepalive-min-time",
    "grpc-keepalive-interval",
    "grpc-keepalive-timeout",
    "experimental-corrupt-check-time",
    "corrupt-check-time",
    "experimental-watch-progress-notify-interval",
    "watch-progress-notify-interval",
    "experimental-warning-apply-duration",
    "warning-apply-duration",
    "experimental-lease-checkpoint-interval",
];

/// A configuration file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// It could not be read.
    #[error("--config-file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It is not YAML, or not a map of settings.
    #[error("--config-file {path}: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// The configuration file `argv` (normalised to `--flag` spellings) or the environment names.
pub fn named(argv: &[String]) -> Option<PathBuf> {
    let mut args = argv.iter();
    while let Some(arg) = args.next() {
        if arg == "--config-file" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config-file=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("ETCD_CONFIG_FILE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// The flags the file at `path` sets, as `--name=value` arguments, and the keys it has that name
/// no flag (`is_flag` says which do).
pub fn arguments(
    path: &Path,
    is_flag: impl Fn(&str) -> bool,
) -> Result<(Vec<String>, Vec<String>), ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |why: String| ConfigFileError::Invalid {
        path: path.to_path_buf(),
        why,
    };
    let documents = YamlLoader::load_from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let mut settings = Vec::new();
    match documents.first() {
        None | Some(Yaml::Null) => {}
        Some(Yaml::Hash(map)) => {
            for (key, value) in map {
                let key = key
                    .as_str()
                    .ok_or_else(|| invalid(format!("{key:?} is not a name")))?;
                match (key, value) {
                    ("client-transport-security" | "peer-transport-security", Yaml::Hash(tls)) => {
                        let prefix = if key.starts_with("peer") { "peer-" } else { "" };
                        for (name, value) in tls {
                            let name = name.as_str().unwrap_or_default();
                            settings.push((format!("{prefix}{name}"), value));
                        }
                    }
                    _ => settings.push((key.to_string(), value)),
                }
            }
        }
        Some(other) => return Err(invalid(format!("not a map of settings: {other:?}"))),
    }
    let mut args = Vec::new();
    let mut ignored = Vec::new();
    for (name, value) in settings {
        if !is_flag(&name) {
            ignored.push(name);
            continue;
        }
        let text = match value {
            Yaml::Integer(nanos) if DURATIONS.contains(&name.as_str()) => {
                Some(format!("{nanos}ns"))
            }
            _ => text_of(value).map_err(|why| invalid(format!("{name}: {why}")))?,
        };
        if let Some(text) = text {
            args.push(format!("--{name}={text}"));
        }
    }
    Ok((args, ignored))
}

/// A setting's value as the flag's text; `None` when it is empty.
fn text_of(value: &Yaml) -> Result<Option<String>, String> {
    Ok(match value {
        Yaml::Null => None,
        Yaml::String(s) if s.is_empty() => None,
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(n) => Some(n.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        Yaml::Array(items) => {
            let items: Vec<String> = items
                .iter()
                .map(text_of)
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .flatten()
                .collect();
            (!items.is_empty()).then(|| items.join(","))
        }
        other => return Err(format!("{other:?} is not a flag's value")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcds_sample_configuration_reads_as_its_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etcd.conf.yml");
        std::fs::write(
            &path,
            "# This is the configuration file for the etcd server.\n\
             name: 'default'\n\
             data-dir:\n\
             snapshot-count: 10000\n\
             listen-client-urls: http://localhost:2379\n\
             initial-cluster-state: 'new'\n\
             enable-v2: true\n\
             log-outputs: [stderr]\n\
             auto-compaction-retention: \"1\"\n\
             cores: 1\n\
             backend-batch-interval: 250000000\n\
             heartbeat-interval: 100\n\
             unheard-of: 3\n\
             client-transport-security:\n  cert-file:\n  client-cert-auth: false\n\
             peer-transport-security:\n  trusted-ca-file: /ca.pem\n",
        )
        .unwrap();
        let (args, ignored) = arguments(&path, |name| name != "unheard-of").unwrap();
        assert_eq!(
            args,
            [
                "--name=default",
                "--snapshot-count=10000",
                "--listen-client-urls=http://localhost:2379",
                "--initial-cluster-state=new",
                "--enable-v2=true",
                "--log-outputs=stderr",
                "--auto-compaction-retention=1",
                "--cores=1",
                "--backend-batch-interval=250000000ns",
                "--heartbeat-interval=100",
                "--client-cert-auth=false",
                "--peer-trusted-ca-file=/ca.pem",
            ]
        );
        assert_eq!(ignored, ["unheard-of"]);
    }

    #[test]
    fn a_file_that_is_not_a_map_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.yml");
        std::fs::write(&path, "- just\n- a list\n").unwrap();
        let err = arguments(&path, |_| true).unwrap_err().to_string();
        assert!(
            err.contains("bad.yml") && err.contains("not a map"),
            "{err}"
        );
        let missing = arguments(&dir.path().join("none.yml"), |_| true).unwrap_err();
        assert!(missing.to_string().contains("none.yml"), "{missing}");
    }
}
