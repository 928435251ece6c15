//! `keelson profile`: where a running member's requests spend their time. It reads the member's
//! `/debug/latency` (JSON) twice, `--duration` apart, and prints what happened in between, stage
//! by stage: how many, how many a second, mean, p50, p99 and p99.9 — then a write's and a
//! linearizable read's path summed from their stages' medians, what every call waits and costs
//! around its handler, and how long the serving cores left their sockets unpolled.
//!
//! Runs on: the main thread (one blocking HTTP/1.1 GET at each end; no executor).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::metrics::latency::{self, Counts, Stage, Unit};

/// Why a profile could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{endpoint}: {why}")]
    Endpoint { endpoint: String, why: String },
    #[error("{endpoint}/debug/latency: {why}")]
    Answer { endpoint: String, why: String },
    #[error(transparent)]
    Output(#[from] std::io::Error),
}

/// The stages the member reported, by name (stages it does not know are skipped).
type Snapshot = Vec<(Stage, Counts)>;

/// GETs `path` from `endpoint` (`host:port` or `http://host:port`); the body of a 200 answer.
fn get(endpoint: &str, path: &str) -> Result<String, ProfileError> {
    let failed = |why: String| ProfileError::Endpoint {
        endpoint: endpoint.to_string(),
        why,
    };
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let addr = host
        .to_socket_addrs()
        .map_err(|e| failed(e.to_string()))?
        .next()
        .ok_or_else(|| failed("no address".into()))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| failed(e.to_string()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| failed(e.to_string()))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| failed(e.to_string()))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| failed(e.to_string()))?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| failed("not an HTTP answer".into()))?;
    if !head.starts_with("HTTP/1.1 200") {
        let status = head.lines().next().unwrap_or_default();
        return Err(failed(format!("{path}: {status}")));
    }
    Ok(body.to_string())
}

/// The member's stages now.
fn snapshot(endpoint: &str) -> Result<Snapshot, ProfileError> {
    let body = get(endpoint, "/debug/latency?format=json")?;
    let bad = |why: &str| ProfileError::Answer {
        endpoint: endpoint.to_string(),
        why: why.to_string(),
    };
    let json: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| bad(&format!("not JSON: {e}")))?;
    let stages = json["stages"]
        .as_array()
        .ok_or_else(|| bad("no \"stages\""))?;
    let mut out = Vec::new();
    for reported in stages {
        let name = reported["stage"].as_str().unwrap_or_default();
        let Some(stage) = Stage::ALL.into_iter().find(|s| s.name() == name) else {
            continue;
        };
        let buckets = reported["buckets"]
            .as_array()
            .ok_or_else(|| bad("a stage without buckets"))?
            .iter()
            .map(|pair| (pair[0].as_u64().unwrap_or(0), pair[1].as_u64().unwrap_or(0)));
        let sum = reported["sum"].as_u64().unwrap_or(0);
        out.push((stage, Counts::from_nonzero(buckets, sum)));
    }
    Ok(out)
}

/// What each stage recorded between `before` and `after`.
fn between(before: &Snapshot, after: &Snapshot) -> Snapshot {
    after
        .iter()
        .map(|(stage, counts)| {
            let earlier = before.iter().find(|(s, _)| s == stage).map(|(_, c)| c);
            (*stage, earlier.map_or(counts.clone(), |e| counts.since(e)))
        })
        .collect()
}

/// The counts of `stage` in `stages`, if it recorded anything.
fn recorded(stages: &Snapshot, stage: Stage) -> Option<&Counts> {
    stages
        .iter()
        .find(|(s, c)| *s == stage && c.count() > 0)
        .map(|(_, c)| c)
}

/// The median of `stage` in `stages`, if it recorded anything.
fn median(stages: &Snapshot, stage: Stage) -> Option<u64> {
    recorded(stages, stage).map(|c| c.quantile(0.5))
}

/// A path through `parts` stages with their medians, after the median of the end-to-end stage
/// `whole` if there is one; nothing if the path's first stage recorded nothing.
fn path(
    out: &mut dyn Write,
    stages: &Snapshot,
    what: &str,
    parts: &[Stage],
    whole: Option<Stage>,
) -> std::io::Result<()> {
    if median(stages, parts[0]).is_none() {
        return Ok(());
    }
    write!(out, "{what}, p50 of each stage:")?;
    if let Some(total) = whole.and_then(|w| median(stages, w)) {
        write!(out, " {} =", latency::human(total, Unit::Nanoseconds))?;
    }
    for (i, &stage) in parts.iter().enumerate() {
        let value = median(stages, stage).unwrap_or(0);
        let sep = if i == 0 { " " } else { " + " };
        write!(
            out,
            "{sep}{} {}",
            stage.name(),
            latency::human(value, Unit::Nanoseconds)
        )?;
    }
    writeln!(out)
}

/// Samples `endpoint` for `duration` and prints where requests' time went.
pub fn profile(
    endpoint: &str,
    duration: Duration,
    out: &mut dyn Write,
) -> Result<(), ProfileError> {
    let before = snapshot(endpoint)?;
    std::thread::sleep(duration);
    let after = snapshot(endpoint)?;
    let stages = between(&before, &after);
    writeln!(out, "{endpoint}, {:.1} s:", duration.as_secs_f64())?;
    let seconds = duration.as_secs_f64().max(1e-9);
    let table = latency::table(&stages);
    for (n, line) in table.lines().enumerate() {
        // The table's count column, followed by the rate it makes over the sample.
        let rate = match n {
            0 => "      /s".to_string(),
            _ => format!("{:>8.0}", stages[n - 1].1.count() as f64 / seconds),
        };
        let (name_and_count, rest) = line.split_at(23.min(line.len()));
        writeln!(out, "{name_and_count}{rate}{rest}")?;
    }
    writeln!(out)?;
    path(
        out,
        &stages,
        "a write",
        &[Stage::ToRaft, Stage::Proposal, Stage::FromRaft],
        Some(Stage::Write),
    )?;
    path(
        out,
        &stages,
        "  its proposal",
        &[Stage::WalSync, Stage::Apply, Stage::Publish],
        Some(Stage::Proposal),
    )?;
    path(
        out,
        &stages,
        "a linearizable read",
        &[Stage::ReadIndex, Stage::Read],
        None,
    )?;
    path(
        out,
        &stages,
        "every call, around its handler",
        &[Stage::Queue, Stage::Encode],
        None,
    )?;
    if let Some(lag) = recorded(&stages, Stage::Lag) {
        let at = |q| latency::human(lag.quantile(q), Unit::Nanoseconds);
        writeln!(
            out,
            "sockets left unpolled (lag): p50 {}, p99 {}, longest {}",
            at(0.5),
            at(0.99),
            at(1.0)
        )?;
    }
    Ok(())
}
