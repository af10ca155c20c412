//! The results: what the JSON holds (`--json`, out/bench/lb.json from scripts/bench-lb) and
//! the Markdown table printed at the end, voq lb and nginx side by side with their ratio.
//! The structs are serialized as they are, so their fields (and order) are the JSON keys.

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

#[derive(Debug, Default, Serialize)]
pub(crate) struct Report {
    pub(crate) date: String,
    pub(crate) machine: String,
    pub(crate) load_average_before: String,
    pub(crate) nginx_version: Option<String>,
    pub(crate) nginx_max_sessions: Option<usize>,
    pub(crate) pinned: Option<Pinning>,
    pub(crate) seconds_per_window: f64,
    pub(crate) windows_per_run: usize,
    pub(crate) proxies: Vec<ProxyReport>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Pinning {
    pub(crate) proxy_cpu: usize,
    pub(crate) bench_cpu: usize,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct ProxyReport {
    pub(crate) name: String,
    pub(crate) rss_idle_kib: u64,
    pub(crate) throughput: Vec<Throughput>,
    pub(crate) latency: Vec<Latency>,
    pub(crate) memory: Option<Memory>,
    pub(crate) migration: Option<Migration>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Throughput {
    pub(crate) load: &'static str,
    pub(crate) size: usize,
    /// Datagrams per `sendmsg` of the generator (GSO segments).
    pub(crate) batch: usize,
    /// Whether the CIDs named the three servers in turn (else server 1 only).
    pub(crate) spread: bool,
    /// Whether the proxy was stopped and continued every 5 ms (a backlog to work through).
    pub(crate) duty: bool,
    /// The window with the median packets per CPU-second.
    pub(crate) median: Window,
    pub(crate) windows: Vec<Window>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Window {
    pub(crate) seconds: f64,
    pub(crate) offered_pps: f64,
    pub(crate) forwarded_pps: f64,
    /// CPU time of the proxy process per wall-clock second (1.0 = one core busy).
    pub(crate) proxy_cores: f64,
    pub(crate) forwarded_per_cpu_second: f64,
    /// Busy share of the proxy's core as a whole (/proc/stat; includes softirq and anything
    /// else scheduled there).
    pub(crate) proxy_core_busy: Option<f64>,
    pub(crate) dropped_at_proxy_socket: u64,
    pub(crate) dropped_at_backend_sockets: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Latency {
    pub(crate) placement: &'static str,
    pub(crate) size: usize,
    pub(crate) pings: usize,
    pub(crate) direct_p50_us: f64,
    pub(crate) direct_p99_us: f64,
    pub(crate) proxied_p50_us: f64,
    pub(crate) proxied_p99_us: f64,
    pub(crate) added_p50_us: f64,
    pub(crate) added_p99_us: f64,
    pub(crate) lost: usize,
}

#[derive(Debug, Serialize)]
pub(crate) struct Memory {
    pub(crate) flows_sent: usize,
    pub(crate) flows_seconds: f64,
    pub(crate) arrived_at_backends: u64,
    pub(crate) dropped_at_proxy_socket: u64,
    pub(crate) rss_before_kib: u64,
    pub(crate) rss_after_kib: u64,
    pub(crate) fds_before: Option<usize>,
    pub(crate) fds_after: Option<usize>,
    /// nginx: lines "worker_connections are not enough" in its error log during the phase.
    pub(crate) refused: Option<usize>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Migration {
    pub(crate) calls: usize,
    pub(crate) survived: usize,
    pub(crate) sessions_per_server: Vec<u64>,
    pub(crate) calls_detail: Vec<CallResult>,
}

#[derive(Debug, Serialize)]
pub(crate) struct CallResult {
    pub(crate) new_ip: Ipv4Addr,
    pub(crate) survived: bool,
    pub(crate) error: Option<String>,
}

/// Writes the report as pretty JSON to `path`, creating its directory.
pub(crate) fn write_json(report: &Report, path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The table: one row per figure, voq lb's column, nginx's (– without it), and the ratio.
pub(crate) fn render(report: &Report) -> String {
    let lb = &report.proxies[0];
    let nginx = report.proxies.get(1);
    let mut s = String::new();
    let mut row = |what: String, a: String, b: String, ratio: String| {
        s += &format!("| {what} | {a} | {b} | {ratio} |\n");
    };
    let name = |p: &ProxyReport| match (&p.name[..], &report.nginx_version) {
        ("nginx", Some(v)) => format!("nginx {v}"),
        (n, _) => n.to_string(),
    };
    row(
        "".into(),
        name(lb),
        nginx.map_or("–".into(), name),
        "voq lb / nginx".into(),
    );
    row("---".into(), "---".into(), "---".into(), "---".into());
    let ratio = |a: f64, b: Option<f64>| match b {
        Some(b) if b > 0.0 => format!("{:.1}×", a / b),
        _ => "–".into(),
    };
    for (i, t) in lb.throughput.iter().enumerate() {
        let n = nginx.and_then(|n| n.throughput.get(i)).map(|n| &n.median);
        let (size, how, t) = (t.size, t.load, &t.median);
        row(
            format!("{size} B, {how}: forwarded/s"),
            mpps(t.forwarded_pps),
            n.map_or("–".into(), |n| mpps(n.forwarded_pps)),
            ratio(t.forwarded_pps, n.map(|n| n.forwarded_pps)),
        );
        row(
            format!("{size} B, {how}: proxy CPU (cores)"),
            format!("{:.2}", t.proxy_cores),
            n.map_or("–".into(), |n| format!("{:.2}", n.proxy_cores)),
            String::new(),
        );
        row(
            format!("{size} B, {how}: **forwarded per CPU-second**"),
            format!("**{}**", mpps(t.forwarded_per_cpu_second)),
            n.map_or("–".into(), |n| {
                format!("**{}**", mpps(n.forwarded_per_cpu_second))
            }),
            ratio(
                t.forwarded_per_cpu_second,
                n.map(|n| n.forwarded_per_cpu_second),
            ),
        );
    }
    for (i, l) in lb.latency.iter().enumerate() {
        let n = nginx.and_then(|n| n.latency.get(i));
        let f = |l: &Latency| {
            format!(
                "+{:.1} / +{:.1} µs (direct {:.1} / {:.1})",
                l.added_p50_us, l.added_p99_us, l.direct_p50_us, l.direct_p99_us
            )
        };
        row(
            format!("{} B, {}: added RTT p50 / p99", l.size, l.placement),
            f(l),
            n.map_or("–".into(), f),
            String::new(),
        );
    }
    let mem = |p: &ProxyReport| match &p.memory {
        Some(m) => {
            let mut s = format!(
                "{:.1} → {:.1} → {:.1} MiB",
                p.rss_idle_kib as f64 / 1024.0,
                m.rss_before_kib as f64 / 1024.0,
                m.rss_after_kib as f64 / 1024.0
            );
            if let (Some(a), Some(b)) = (m.fds_after, m.fds_before) {
                s += &format!(", +{} sockets", a.saturating_sub(b));
            }
            if let Some(r) = m.refused.filter(|&r| r > 0) {
                s += &format!(", {r} flows refused");
            }
            s
        }
        None => "–".into(),
    };
    let flows = lb.memory.as_ref().map_or(0, |m| m.flows_sent);
    row(
        format!("RSS idle → before → after {flows} new flows"),
        mem(lb),
        nginx.map_or("–".into(), mem),
        String::new(),
    );
    let mig = |p: &ProxyReport| match &p.migration {
        Some(m) => format!(
            "{} / {} (sessions per server {:?})",
            m.survived, m.calls, m.sessions_per_server
        ),
        None => "–".into(),
    };
    row(
        "calls surviving a client address change".into(),
        mig(lb),
        nginx.map_or("–".into(), mig),
        String::new(),
    );
    s
}

fn mpps(pps: f64) -> String {
    if pps >= 1e6 {
        format!("{:.2} M", pps / 1e6)
    } else {
        format!("{:.0} k", pps / 1e3)
    }
}
