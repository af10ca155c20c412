//! `voq lb` vs nginx's UDP stream proxy, side by side in one run (docs/BENCHMARKS.md,
//! "voq lb vs nginx"). Normally run by `scripts/bench-lb`, which installs nginx, starts it
//! from a temporary config (`hash $remote_addr consistent` over the backend ports, one worker,
//! pinned to the proxy core) and passes its port and pid:
//!
//! ```text
//! cargo build --release -p voq --bin voq
//! cargo run --release -p voq-bench --example lb_vs_nginx -- [--voq-bin target/release/voq] \
//!     [--nginx-port P --nginx-pid PID --backend-ports P1,P2,P3 [--nginx-error-log FILE]] \
//!     [--seconds 1] [--windows 3] [--flows 100000] [--calls 12] [--json out/bench/lb.json]
//! ```
//!
//! Without `--nginx-port` only voq lb is measured. voq lb is the real `voq lb` command
//! (`--voq-bin`, by default the `voq` binary of the target directory this program was built
//! into) run as a child, so both proxies are separate processes whose CPU time and RSS are
//! read from /proc. The proxies run on core `--proxy-cpu` (1), everything else (load
//! generator, sinks, echo backends, voq servers and clients) on `--bench-cpu` (0), via
//! `taskset`.
//!
//! Phases, each proxy in turn with the same code (one module each):
//!
//! 1. [`throughput`]: packets per second, and per CPU-second of the proxy process, in four
//!    loads (GSO batches, one datagram per send over three backends, and that with the proxy
//!    stopped and continued every 5 ms, over three backends and over one).
//! 2. [`latency`]: round trip through the proxy minus the same directly to the backend.
//! 3. [`memory`]: proxy RSS before and after `--flows` distinct flows.
//! 4. [`migration`]: `--calls` real voq calls whose client changes IP mid-call.
//!
//! The other modules: [`proxies`] (the two proxy processes, pinning), [`backends`] (the
//! sockets that count or echo what the proxies forward), [`quic_lb`] (the QUIC-LB
//! configuration and routable packets), [`procfs`] (/proc readers), [`report`] (JSON and the
//! table).

#![allow(clippy::print_stdout)]

mod backends;
mod latency;
mod memory;
mod migration;
mod procfs;
mod proxies;
mod quic_lb;
mod report;
mod throughput;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use clap::Parser;
use voq_server::Tunnel;

use crate::backends::Backends;
use crate::proxies::VoqLb;
use crate::report::{Pinning, ProxyReport, Report};
use crate::throughput::LOADS;

const RELAXED: Ordering = Ordering::Relaxed;
/// Datagram sizes of the packet-rate and latency runs.
const SIZES: [usize; 2] = [100, 1200];

#[derive(Debug, Parser)]
struct Args {
    /// The `voq` binary whose `voq lb` is measured [default: `voq` in the target directory of
    /// this program, e.g. target/release/voq].
    #[arg(long, value_name = "PATH")]
    voq_bin: Option<PathBuf>,
    /// UDP port of the running nginx stream proxy (127.0.0.1); without it nginx is skipped.
    #[arg(long)]
    nginx_port: Option<u16>,
    /// PID of the nginx master process (its worker is measured).
    #[arg(long)]
    nginx_pid: Option<u32>,
    /// nginx's error log (to count the flows it refused).
    #[arg(long)]
    nginx_error_log: Option<PathBuf>,
    /// nginx's version, for the report.
    #[arg(long)]
    nginx_version: Option<String>,
    /// nginx's session cap (from its worker_connections), for the report.
    #[arg(long)]
    nginx_max_sessions: Option<usize>,
    /// The three backend ports nginx's upstream names (127.0.0.1); ephemeral without nginx.
    #[arg(long, value_delimiter = ',')]
    backend_ports: Vec<u16>,
    /// Seconds per measurement window of a packet-rate run.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Measurement windows per packet-rate run (after a 0.3 s warm-up); the median counts.
    #[arg(long, default_value_t = 3)]
    windows: usize,
    /// Round trips per latency measurement.
    #[arg(long, default_value_t = 5_000)]
    pings: usize,
    /// Distinct flows for the memory phase.
    #[arg(long, default_value_t = 100_000)]
    flows: usize,
    /// New flows per second in the memory phase.
    #[arg(long, default_value_t = 25_000)]
    flow_rate: u64,
    /// Calls per proxy in the address-change phase.
    #[arg(long, default_value_t = 12)]
    calls: usize,
    /// Core for the proxies.
    #[arg(long, default_value_t = 1)]
    proxy_cpu: usize,
    /// Core for everything else.
    #[arg(long, default_value_t = 0)]
    bench_cpu: usize,
    /// Do not pin anything.
    #[arg(long)]
    no_pin: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    match bench(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lb_vs_nginx: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Pins this process, runs the phases, prints the table and writes the JSON.
fn bench(args: Args) -> anyhow::Result<()> {
    let voq = proxies::voq_bin(args.voq_bin.clone())?;
    let pin = proxies::can_pin(args.no_pin);
    if pin {
        // Only the main thread exists yet; every thread started later inherits this.
        let status = Command::new("taskset")
            .args(["-a", "-p", "-c", &args.bench_cpu.to_string()])
            .arg(std::process::id().to_string())
            .stdout(Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "taskset could not pin the benchmark");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut report = Report {
        date: procfs::command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        machine: procfs::machine(),
        load_average_before: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_string(),
        nginx_version: args.nginx_version.clone(),
        nginx_max_sessions: args.nginx_max_sessions,
        pinned: pin.then_some(Pinning {
            proxy_cpu: args.proxy_cpu,
            bench_cpu: args.bench_cpu,
        }),
        seconds_per_window: args.seconds,
        windows_per_run: args.windows,
        proxies: Vec::new(),
    };
    // `run` is polled on this thread, which therefore starts the voq lb children and lives as
    // long as this process: their parent-death signal fires only when the process ends.
    runtime.block_on(run(&args, &voq, pin, &mut report))?;
    let table = report::render(&report);
    println!("{table}");
    if let Some(path) = &args.json {
        report::write_json(&report, path)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The phases in order, each proxy in turn.
async fn run(args: &Args, voq: &Path, pin: bool, report: &mut Report) -> anyhow::Result<()> {
    let proxy_cpu = pin.then_some(args.proxy_cpu);
    let nginx = match args.nginx_port {
        Some(port) => {
            let master = args.nginx_pid.context("--nginx-port needs --nginx-pid")?;
            anyhow::ensure!(
                args.backend_ports.len() == 3,
                "--nginx-port needs three --backend-ports"
            );
            let worker = proxies::nginx_worker(master).await?;
            Some((SocketAddr::from(([127, 0, 0, 1], port)), worker))
        }
        None => None,
    };
    let ports: Vec<u16> = if args.backend_ports.is_empty() {
        vec![0; 3]
    } else {
        args.backend_ports.clone()
    };
    // A GSO batch is one connection's burst: its CIDs name one server. Datagrams sent one by
    // one stand for many connections: their CIDs name the three servers in turn, so voq lb
    // cannot group consecutive datagrams into one GSO send (and, to show what that grouping
    // is worth, once all to server 1).
    let one_server = Arc::new(quic_lb::routable_cids(&[1])?);
    let all_servers = Arc::new(quic_lb::routable_cids(&[1, 2, 3])?);

    // Packets: both proxies side by side against the same three backend sockets, each
    // configuration voq lb then nginx, so background load on the shared machine hits both.
    let backends = Backends::start(&ports).await?;
    let ids: Vec<(u8, SocketAddr)> = (1..=3u8).zip(backends.addrs.iter().copied()).collect();
    let lb = VoqLb::start(voq, proxy_cpu, &ids)?;
    eprintln!("voq lb at {} (pid {})", lb.vip, lb.pid());
    let mut under_test = vec![(lb.vip, lb.pid())];
    if let Some((addr, worker)) = nginx {
        eprintln!("nginx at {addr} (worker pid {worker})");
        under_test.push((addr, worker));
    }
    for (i, &(_, pid)) in under_test.iter().enumerate() {
        report.proxies.push(ProxyReport {
            name: if i == 0 { "voq lb" } else { "nginx" }.into(),
            rss_idle_kib: procfs::rss_kib(pid),
            ..Default::default()
        });
    }
    for load in LOADS {
        let cids = if load.spread {
            &all_servers
        } else {
            &one_server
        };
        for size in SIZES {
            for (i, &(addr, pid)) in under_test.iter().enumerate() {
                let name = report.proxies[i].name.clone();
                let t =
                    throughput::throughput(args, addr, pid, &backends, cids, size, load).await?;
                eprintln!(
                    "  {name:<6} {size:>4} B, {}: {:>9.0} pkt/s forwarded of {:>9.0} offered, \
                     {:.2} cores (core {:.2} busy), {:>9.0} per CPU-s; dropped {} at the proxy, {} at backends",
                    load.label,
                    t.median.forwarded_pps,
                    t.median.offered_pps,
                    t.median.proxy_cores,
                    t.median.proxy_core_busy.unwrap_or(0.0),
                    t.median.forwarded_per_cpu_second,
                    t.median.dropped_at_proxy_socket,
                    t.median.dropped_at_backend_sockets,
                );
                report.proxies[i].throughput.push(t);
            }
        }
    }
    for (i, &(addr, pid)) in under_test.iter().enumerate() {
        let r = &mut report.proxies[i];
        latency::latency(args, pin, r, addr, pid, &backends, &one_server).await?;
    }
    report.proxies[0].memory = Some(memory::memory(args, lb.vip, lb.pid(), &backends, None).await?);
    drop(lb);
    backends.stop().await;

    // Calls whose client changes address.
    let prompt = migration::prompt()?;
    if args.calls > 0 {
        let servers = migration::start_servers(&[0, 0, 0], Tunnel::Learn).await?;
        let ids: Vec<(u8, SocketAddr)> = (1..=3u8)
            .zip(servers.iter().map(|s| s.local_addr()))
            .collect();
        let lb = VoqLb::start(voq, proxy_cpu, &ids)?;
        eprintln!("address change: {} calls through voq lb", args.calls);
        report.proxies[0].migration =
            Some(migration::migration(lb.vip, &servers, args.calls, &prompt).await);
        drop(lb);
        for s in servers {
            s.shutdown().await;
        }
        if let Some((addr, _)) = nginx {
            let servers = migration::start_servers(&ports, Tunnel::Off).await?;
            eprintln!("address change: {} calls through nginx", args.calls);
            report.proxies[1].migration =
                Some(migration::migration(addr, &servers, args.calls, &prompt).await);
            for s in servers {
                s.shutdown().await;
            }
        }
    }

    // nginx's memory last: its sessions hold an ephemeral UDP port each until it stops.
    if let Some((addr, worker)) = nginx {
        let backends = Backends::start(&ports).await?;
        let m = memory::memory(
            args,
            addr,
            worker,
            &backends,
            args.nginx_error_log.as_deref(),
        )
        .await?;
        report.proxies[1].memory = Some(m);
        backends.stop().await;
    }
    Ok(())
}
