//! Which CPUs keelson runs on: by default every CPU in the process's affinity mask (so
//! `taskset -c 1 keelson ...` runs on CPU 1 alone), or what `--cores` says — a count (the first N
//! CPUs of the mask) or a list like `0,2-3`. The first CPU is the raft core; the others serve
//! clients; with one CPU it does both.
//!
//! Runs on: the main thread, before any core starts.

/// A `--cores` value or affinity list that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("--cores: {0}")]
pub struct CoresError(String);

/// Parses a CPU list like `0,2-3`.
fn parse_list(list: &str) -> Result<Vec<usize>, CoresError> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || CoresError(format!("{part:?} is not a CPU or a range of CPUs"));
        let (from, to) = match part.split_once('-') {
            Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
            None => {
                let cpu: usize = part.parse().map_err(|_| bad())?;
                (cpu, cpu)
            }
        };
        if from > to {
            return Err(bad());
        }
        for cpu in from..=to {
            if !cpus.contains(&cpu) {
                cpus.push(cpu);
            }
        }
    }
    Ok(cpus)
}

/// The CPUs this process may run on (Linux: `Cpus_allowed_list` of /proc/self/status).
fn affinity() -> Vec<usize> {
    let listed = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .and_then(|l| parse_list(l.trim()).ok())
        })
        .filter(|cpus| !cpus.is_empty());
    listed.unwrap_or_else(|| {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        (0..n).collect()
    })
}

/// The CPUs to run on, raft core first.
pub fn select(cores: Option<&str>) -> Result<Vec<usize>, CoresError> {
    let allowed = affinity();
    let Some(cores) = cores else {
        return Ok(allowed);
    };
    if let Ok(count) = cores.trim().parse::<usize>() {
        if count == 0 || count > allowed.len() {
            return Err(CoresError(format!(
                "{count} cores asked for, {} allowed ({allowed:?})",
                allowed.len()
            )));
        }
        return Ok(allowed[..count].to_vec());
    }
    let cpus = parse_list(cores)?;
    if let Some(cpu) = cpus.iter().find(|c| !allowed.contains(c)) {
        return Err(CoresError(format!(
            "CPU {cpu} is not in this process's affinity mask {allowed:?}"
        )));
    }
    if cpus.is_empty() {
        return Err(CoresError("no CPU given".into()));
    }
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_counts() {
        assert_eq!(parse_list("0,2-3").unwrap(), vec![0, 2, 3]);
        assert!(parse_list("3-1").is_err());
        assert!(parse_list("x").is_err());
        let allowed = affinity();
        assert_eq!(select(Some("1")).unwrap(), allowed[..1].to_vec());
        assert!(select(Some("0")).is_err());
        assert_eq!(select(None).unwrap(), allowed);
    }
}
