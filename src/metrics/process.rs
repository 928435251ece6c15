//! The process's own metrics, as Prometheus' process collector (which etcd registers) reports
//! them — CPU time, memory, file descriptors, start time — and etcd's `os_fd_*`, read from
//! `/proc/self` at scrape time. procfs answers from the kernel's memory, never from a disk.
//!
//! Runs on: the serving core that answers `/metrics`.

/// `sysconf(name)`, for the clock tick and the page size.
fn sysconf(name: libc::c_int) -> f64 {
    // SAFETY: sysconf only reads a system constant; any name is allowed (an unknown one gives -1).
    let value = unsafe { libc::sysconf(name) };
    value.max(1) as f64
}

/// What `/proc/self` says of the process.
#[derive(Debug, Default, PartialEq)]
struct Stats {
    cpu_seconds: f64,
    start_seconds: f64,
    virtual_bytes: u64,
    resident_bytes: u64,
    open_fds: u64,
    max_fds: u64,
    max_address_space: f64,
}

/// Reads the fields of `/proc/self/stat` after the command's parenthesised name: user and system
/// time and start time (seconds after boot, at `ticks` a second), virtual and resident (pages)
/// size.
fn parse_stat(stat: &str, ticks: f64) -> Option<(f64, f64, u64, u64)> {
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split(' ').collect();
    // Fields 14, 15, 22, 23 and 24 of proc(5), counted from the state (field 3) here.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let cpu = (field(14)? + field(15)?) as f64 / ticks;
    let start = field(22)? as f64 / ticks;
    Some((cpu, start, field(23)?, field(24)?))
}

/// The soft limit of `name` in `/proc/self/limits` (`unlimited`: the largest value).
fn limit(limits: &str, name: &str) -> Option<f64> {
    let line = limits.lines().find(|l| l.starts_with(name))?;
    let soft = line[name.len()..].split_whitespace().next()?;
    Some(if soft == "unlimited" {
        u64::MAX as f64
    } else {
        soft.parse().ok()?
    })
}

fn read() -> Option<Stats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (cpu_seconds, since_boot, virtual_bytes, resident_pages) =
        parse_stat(&stat, sysconf(libc::_SC_CLK_TCK))?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let booted: f64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(Stats {
        cpu_seconds,
        start_seconds: booted + since_boot,
        virtual_bytes,
        resident_bytes: resident_pages * sysconf(libc::_SC_PAGESIZE) as u64,
        open_fds,
        max_fds: limit(&limits, "Max open files")? as u64,
        max_address_space: limit(&limits, "Max address space")?,
    })
}

/// Writes the process families into `out` (nothing if `/proc` cannot be read).
pub fn render(out: &mut String) {
    let Some(stats) = read() else { return };
    let families: [(&str, &str, &str, f64); 9] = [
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            stats.cpu_seconds,
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            stats.start_seconds,
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            stats.virtual_bytes as f64,
        ),
        (
            "process_virtual_memory_max_bytes",
            "gauge",
            "Maximum amount of virtual memory available in bytes.",
            stats.max_address_space,
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            stats.resident_bytes as f64,
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            stats.open_fds as f64,
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            stats.max_fds as f64,
        ),
        (
            "os_fd_used",
            "gauge",
            "The number of used file descriptors.",
            stats.open_fds as f64,
        ),
        (
            "os_fd_limit",
            "gauge",
            "The file descriptor limit.",
            stats.max_fds as f64,
        ),
    ];
    for (name, kind, help, value) in families {
        super::family(out, name, kind, help, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_limits_read_as_procfs_writes_them() {
        let stat = "4242 (keel son) S 1 4242 4242 0 -1 4194560 1200 0 0 0 250 50 0 0 20 0 \
                    5 0 123456 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 4096 17920";
        assert_eq!(
            parse_stat(stat, 100.0),
            Some((3.0, 1234.56, 104857600, 2560))
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 1048576              files\n\
                      Max address space         unlimited            unlimited            bytes\n";
        assert_eq!(limit(limits, "Max open files"), Some(1024.0));
        assert_eq!(limit(limits, "Max address space"), Some(u64::MAX as f64));
        assert!(read().is_some_and(|s| s.resident_bytes > 0 && s.open_fds > 0));
    }
}
