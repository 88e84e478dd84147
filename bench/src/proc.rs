//! A process's counters, from `/proc`.

/// The number after `key` in `/proc/PID/FILE` (`VmRSS:` of `status`, in KiB; `wchar:`
/// of `io`, in bytes); 0 when the process or the key is missing.
pub fn field(pid: u32, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Field `index` of `/proc/PID/stat`, counted from the one after the command name
/// (1 is the parent's pid, 11 and 12 the user and system time in clock ticks).
pub fn stat_field(pid: u32, index: usize) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after) = stat.rsplit_once(')')?;
    after.split_whitespace().nth(index)?.parse().ok()
}

/// utime + stime of `pid`, in clock ticks (0 when it is gone).
pub fn cpu_ticks(pid: u32) -> u64 {
    stat_field(pid, 11).unwrap_or(0) + stat_field(pid, 12).unwrap_or(0)
}

/// The CPU time, in clock ticks, that each of `pids` used from `before` (their
/// times then, 0 for a process started since) to now, summed.
pub fn ticks_since(before: &[(u32, u64)], pids: &[u32]) -> u64 {
    pids.iter()
        .map(|&pid| {
            let then = before
                .iter()
                .find(|(p, _)| *p == pid)
                .map_or(0, |(_, t)| *t);
            cpu_ticks(pid).saturating_sub(then)
        })
        .sum()
}

/// Each of `pids` with its CPU time now, for [`ticks_since`].
pub fn ticks_now(pids: &[u32]) -> Vec<(u32, u64)> {
    pids.iter().map(|&pid| (pid, cpu_ticks(pid))).collect()
}
