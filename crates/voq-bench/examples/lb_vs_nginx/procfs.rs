//! What the kernel says about a proxy process and the machine, read from /proc: the figures
//! the report divides by (CPU time of all the proxy's threads, its core's busy share), its
//! RSS and open descriptors (memory per flow), and datagrams dropped at UDP sockets (so a
//! forwarded rate is not read without the losses behind it). Each reader returns 0 or
//! `None` when the process or file is gone, rather than failing the run.

use std::process::Command;

/// CPU time of all threads of `pid`, in ns (`/proc/PID/task/*/schedstat`).
pub(crate) fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Busy and total jiffies of one core (/proc/stat).
pub(crate) fn core_times(cpu: usize) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&format!("cpu{cpu}")))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let all: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((all - idle, all))
}

/// Resident set size of `pid` in KiB (`VmRSS`).
pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Open file descriptors of `pid` (each UDP session of nginx holds one).
pub(crate) fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Datagrams the kernel dropped at UDP sockets bound to `port` (/proc/net/udp, all owners).
pub(crate) fn udp_drops(port: u16) -> u64 {
    let Ok(table) = std::fs::read_to_string("/proc/net/udp") else {
        return 0;
    };
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            (local_port == port).then(|| f.last()?.parse::<u64>().ok())?
        })
        .sum()
}

/// A command's standard output, trimmed; empty when it cannot run.
pub(crate) fn command_output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Cores, CPU model and kernel, for the report.
pub(crate) fn machine() -> String {
    let lscpu = command_output("lscpu", &[]);
    let model = lscpu
        .lines()
        .find_map(|l| l.strip_prefix("Model name:"))
        .map_or("?", str::trim);
    // Not available_parallelism(): this process is pinned to one core by now.
    let cores = lscpu
        .lines()
        .find_map(|l| l.strip_prefix("CPU(s):"))
        .map_or("?", str::trim);
    format!(
        "{cores} cores, {model}, Linux {}",
        command_output("uname", &["-r"])
    )
}
