//! `voq lb` vs nginx's UDP stream proxy, side by side in one run (docs/BENCHMARKS.md,
//! "voq lb vs nginx"). Normally run by `scripts/bench-lb`, which installs nginx, starts it
//! from a temporary config (`hash $remote_addr consistent` over the backend ports, one worker,
//! pinned to the proxy core) and passes its port and pid:
//!
//! ```text
//! cargo run --release -p voq-bench --example lb_vs_nginx -- \
//!     [--nginx-port P --nginx-pid PID --backend-ports P1,P2,P3 [--nginx-error-log FILE]] \
//!     [--seconds 1] [--windows 3] [--flows 100000] [--calls 12] [--json out/bench/lb.json]
//! ```
//!
//! Without `--nginx-port` only voq lb is measured. `voq lb` is this program run again as a
//! child (`serve-lb`, the same `LbConfig` flags and `voq_lb::run` as the `voq lb` command),
//! so both proxies are separate processes whose CPU time and RSS are read from /proc. The
//! proxies run on core `--proxy-cpu` (1), everything else (load generator, sinks, echo
//! backends, voq servers and clients) on `--bench-cpu` (0), via `taskset`.
//!
//! Phases, each proxy in turn with the same code:
//!
//! 1. **Packets per second**: one generator thread sends short-header QUIC packets with
//!    routable DCIDs (1024 distinct CIDs; QUIC-LB config 1, 1-octet server id, 8-octet nonce,
//!    AES key: four-pass), 100 and 1200 octets, in four loads ([`LOADS`]): 32-segment GSO
//!    batches (one connection's burst: all CIDs name server 1); one datagram per `sendmsg`
//!    with the CIDs naming servers 1, 2, 3 in turn (many connections), which one core offers
//!    only below either proxy's capacity; the same with the proxy stopped and continued every
//!    5 ms ([`Duty`]), so that it always has a backlog as a loaded proxy does; and that loaded
//!    case once more with all CIDs naming server 1. Three backend sockets count what arrives
//!    (GRO segments one by one; PROXY v2 headers counted past, not stripped). Forwarded
//!    packets per second, and per CPU-second of the proxy process
//!    (`/proc/PID/task/*/schedstat`): the median of `--windows` windows.
//! 2. **Added latency**: ping-pong of one datagram at a time, echoed by a backend (through
//!    voq lb the echo goes back through the tunnel: PROXY v2 header, to the VIP); p50/p99
//!    round trip through the proxy minus the same directly to the backend.
//! 3. **Memory**: proxy RSS before and after `--flows` distinct flows (each a new client
//!    address and a long-header Initial with a random DCID).
//! 4. **Address change**: `--calls` real voq calls (voq servers with the echo agent, voq
//!    clients) through the proxy; mid-call each client rebinds to a new IP (127.0.0.10, …).
//!    A call survives when it completes with the echo bit-exact.

#![allow(clippy::print_stdout)]

use std::io::{BufRead, IoSliceMut, Read};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use serde::Serialize;
use tokio::io::Interest;
use tokio::task::JoinHandle;
use voq_bench::bench::report::percentile;
use voq_client::{CallOptions, Client, Target, Trust};
use voq_server::{QuicLbSettings, Server, Settings, Tunnel};
use voq_tunnel::proxy_v2::{self, Header};

const RELAXED: Ordering = Ordering::Relaxed;
/// The QUIC-LB configuration of every server and of the balancer (as in voq-server's
/// tests/lb.rs): config id 1, 1-octet server id, 8-octet nonce, AES-128 key.
const CONFIG_ID: u8 = 1;
const NONCE_LEN: usize = 8;
const KEY: [u8; 16] = [0x2b; 16];
const SIZES: [usize; 2] = [100, 1200];
/// Distinct routable CIDs the generator cycles through.
const CIDS: usize = 1024;
const SLOT: usize = 64 * 1024;
const WARMUP: Duration = Duration::from_millis(300);

/// How the generator offers packets.
#[derive(Debug, Clone, Copy)]
struct Load {
    label: &'static str,
    /// Datagrams per `sendmsg` (GSO segments).
    batch: usize,
    /// The CIDs name servers 1, 2, 3 in turn (many connections) instead of server 1 only.
    spread: bool,
    /// Stop and continue the proxy every 5 ms ([`Duty`]).
    duty: bool,
}

const LOADS: [Load; 4] = [
    Load {
        label: "GSO ×32, 1 backend",
        batch: 32,
        spread: false,
        duty: false,
    },
    Load {
        label: "1 per send, 3 backends",
        batch: 1,
        spread: true,
        duty: false,
    },
    Load {
        label: "1 per send, 3 backends, loaded",
        batch: 1,
        spread: true,
        duty: true,
    },
    Load {
        label: "1 per send, 1 backend, loaded",
        batch: 1,
        spread: false,
        duty: true,
    },
];

#[derive(Debug, Parser)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    child: Option<ChildCommand>,
    #[command(flatten)]
    args: Args,
}

#[derive(Debug, Subcommand)]
enum ChildCommand {
    /// Internal: run `voq lb` (the command's own code) as this benchmark's child process.
    ServeLb(voq_lb::LbConfig),
}

#[derive(Debug, clap::Args)]
struct Args {
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
    let cli = Cli::parse();
    let result = match cli.child {
        Some(ChildCommand::ServeLb(config)) => serve_lb(config),
        None => bench(cli.args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lb_vs_nginx: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The child: `voq lb` as the command runs it (multi-threaded runtime, one thread per core it
/// may use). Exits when the parent goes away (its end of our stdin closes).
fn serve_lb(config: voq_lb::LbConfig) -> anyhow::Result<()> {
    std::thread::spawn(|| {
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(voq_lb::run(config))
}

// ---------------------------------------------------------------------------------------------
// Results

#[derive(Debug, Default, Serialize)]
struct Report {
    date: String,
    machine: String,
    load_average_before: String,
    nginx_version: Option<String>,
    nginx_max_sessions: Option<usize>,
    pinned: Option<Pinning>,
    seconds_per_window: f64,
    windows_per_run: usize,
    proxies: Vec<ProxyReport>,
}

#[derive(Debug, Serialize)]
struct Pinning {
    proxy_cpu: usize,
    bench_cpu: usize,
}

#[derive(Debug, Default, Serialize)]
struct ProxyReport {
    name: String,
    rss_idle_kib: u64,
    throughput: Vec<Throughput>,
    latency: Vec<Latency>,
    memory: Option<Memory>,
    migration: Option<Migration>,
}

#[derive(Debug, Serialize)]
struct Throughput {
    load: &'static str,
    size: usize,
    /// Datagrams per `sendmsg` of the generator (GSO segments).
    batch: usize,
    /// Whether the CIDs named the three servers in turn (else server 1 only).
    spread: bool,
    /// Whether the proxy was stopped and continued every 5 ms (a backlog to work through).
    duty: bool,
    /// The window with the median packets per CPU-second.
    median: Window,
    windows: Vec<Window>,
}

#[derive(Debug, Serialize)]
struct Latency {
    placement: &'static str,
    size: usize,
    pings: usize,
    direct_p50_us: f64,
    direct_p99_us: f64,
    proxied_p50_us: f64,
    proxied_p99_us: f64,
    added_p50_us: f64,
    added_p99_us: f64,
    lost: usize,
}

#[derive(Debug, Serialize)]
struct Memory {
    flows_sent: usize,
    flows_seconds: f64,
    arrived_at_backends: u64,
    dropped_at_proxy_socket: u64,
    rss_before_kib: u64,
    rss_after_kib: u64,
    fds_before: Option<usize>,
    fds_after: Option<usize>,
    /// nginx: lines "worker_connections are not enough" in its error log during the phase.
    refused: Option<usize>,
}

#[derive(Debug, Serialize)]
struct Migration {
    calls: usize,
    survived: usize,
    sessions_per_server: Vec<u64>,
    calls_detail: Vec<CallResult>,
}

#[derive(Debug, Serialize)]
struct CallResult {
    new_ip: Ipv4Addr,
    survived: bool,
    error: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// The benchmark

fn bench(args: Args) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = !args.no_pin && cores >= 2 && Command::new("taskset").arg("-V").output().is_ok();
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
        date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        machine: machine(),
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
    runtime.block_on(run(&args, pin, &mut report))?;
    let table = render(&report);
    println!("{table}");
    if let Some(path) = &args.json {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

async fn run(args: &Args, pin: bool, report: &mut Report) -> anyhow::Result<()> {
    let proxy_cpu = pin.then_some(args.proxy_cpu);
    let nginx = match args.nginx_port {
        Some(port) => {
            let master = args.nginx_pid.context("--nginx-port needs --nginx-pid")?;
            anyhow::ensure!(
                args.backend_ports.len() == 3,
                "--nginx-port needs three --backend-ports"
            );
            let worker = nginx_worker(master).await?;
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
    let one_server = Arc::new(routable_cids(&[1])?);
    let all_servers = Arc::new(routable_cids(&[1, 2, 3])?);

    // Packets: both proxies side by side against the same three backend sockets, each
    // configuration voq lb then nginx, so background load on the shared machine hits both.
    let backends = Backends::start(&ports).await?;
    let ids: Vec<(u8, SocketAddr)> = (1..=3u8).zip(backends.addrs.iter().copied()).collect();
    let lb = LbChild::spawn(proxy_cpu, &ids)?;
    eprintln!("voq lb at {} (pid {})", lb.vip, lb.pid());
    let mut under_test = vec![(lb.vip, lb.pid())];
    if let Some((addr, worker)) = nginx {
        eprintln!("nginx at {addr} (worker pid {worker})");
        under_test.push((addr, worker));
    }
    for (i, &(_, pid)) in under_test.iter().enumerate() {
        report.proxies.push(ProxyReport {
            name: if i == 0 { "voq lb" } else { "nginx" }.into(),
            rss_idle_kib: rss_kib(pid),
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
                let t = throughput(args, addr, pid, &backends, cids, size, load).await?;
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
        latency(args, pin, r, addr, pid, &backends, &one_server).await?;
    }
    report.proxies[0].memory = Some(memory(args, lb.vip, lb.pid(), &backends, None).await?);
    drop(lb);
    backends.stop().await;

    // Calls whose client changes address.
    let prompt = prompt()?;
    if args.calls > 0 {
        let servers = start_servers(&[0, 0, 0], Tunnel::Learn).await?;
        let ids: Vec<(u8, SocketAddr)> = (1..=3u8)
            .zip(servers.iter().map(|s| s.local_addr()))
            .collect();
        let lb = LbChild::spawn(proxy_cpu, &ids)?;
        eprintln!("address change: {} calls through voq lb", args.calls);
        report.proxies[0].migration = Some(migration(lb.vip, &servers, args.calls, &prompt).await);
        drop(lb);
        for s in servers {
            s.shutdown().await;
        }
        if let Some((addr, _)) = nginx {
            let servers = start_servers(&ports, Tunnel::Off).await?;
            eprintln!("address change: {} calls through nginx", args.calls);
            report.proxies[1].migration =
                Some(migration(addr, &servers, args.calls, &prompt).await);
            for s in servers {
                s.shutdown().await;
            }
        }
    }

    // nginx's memory last: its sessions hold an ephemeral UDP port each until it stops.
    if let Some((addr, worker)) = nginx {
        let backends = Backends::start(&ports).await?;
        let m = memory(
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

/// Added round-trip time through one proxy.
#[allow(clippy::too_many_arguments)]
async fn latency(
    args: &Args,
    pinned: bool,
    r: &mut ProxyReport,
    proxy: SocketAddr,
    pid: u32,
    backends: &Backends,
    cids: &Arc<Vec<Vec<u8>>>,
) -> anyhow::Result<()> {
    backends.echo.store(true, RELAXED);
    // Cross-core: the proxy on its own core, as in the packet-rate runs; every hop wakes the
    // other core. Same-core: the proxy moved to the benchmark's core for the measurement, so
    // the figure is the proxy's own path (two more context switches per round trip).
    let placements: &[(&str, Option<usize>)] = if pinned {
        &[("cross-core", None), ("same-core", Some(args.bench_cpu))]
    } else {
        &[("unpinned", None)]
    };
    for &(placement, cpu) in placements {
        if let Some(cpu) = cpu {
            repin(pid, cpu)?;
        }
        for size in SIZES {
            let cid = cids[0].clone();
            let pings = args.pings;
            let direct = backends.addrs[0];
            let l = tokio::task::spawn_blocking(move || -> anyhow::Result<Latency> {
                let (d, _) = pingpong(direct, &cid, size, pings)?;
                let (p, lost) = pingpong(proxy, &cid, size, pings)?;
                let (d50, d99, p50, p99) = (
                    percentile(&d, 0.50),
                    percentile(&d, 0.99),
                    percentile(&p, 0.50),
                    percentile(&p, 0.99),
                );
                Ok(Latency {
                    placement,
                    size,
                    pings,
                    direct_p50_us: d50,
                    direct_p99_us: d99,
                    proxied_p50_us: p50,
                    proxied_p99_us: p99,
                    added_p50_us: p50 - d50,
                    added_p99_us: p99 - d99,
                    lost,
                })
            })
            .await??;
            eprintln!(
                "  {:<6} {size:>4} B ping, {placement}: +{:.1} µs p50, +{:.1} µs p99 over direct ({:.1} / {:.1})",
                r.name, l.added_p50_us, l.added_p99_us, l.direct_p50_us, l.direct_p99_us
            );
            r.latency.push(l);
        }
        if cpu.is_some() {
            repin(pid, args.proxy_cpu)?;
        }
    }
    backends.echo.store(false, RELAXED);
    Ok(())
}

/// One packet-rate run: the generator runs for a warm-up and `--windows` measurement
/// windows of `--seconds`; the window with the median packets per CPU-second is reported.
#[allow(clippy::too_many_arguments)]
async fn throughput(
    args: &Args,
    proxy: SocketAddr,
    pid: u32,
    backends: &Backends,
    cids: &Arc<Vec<Vec<u8>>>,
    size: usize,
    load: Load,
) -> anyhow::Result<Throughput> {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let batch = load.batch;
    let generator = {
        let (stop, sent, cids) = (stop.clone(), sent.clone(), cids.clone());
        std::thread::spawn(move || generate(proxy, size, batch, &cids, &stop, &sent))
    };
    let duty = if load.duty {
        Some(Duty::start(pid)?)
    } else {
        None
    };
    tokio::time::sleep(WARMUP).await;
    let snap = || Snapshot {
        t: Instant::now(),
        sent: sent.load(RELAXED),
        arrived: backends.count.load(RELAXED),
        cpu_ns: cpu_ns(pid),
        core: core_times(args.proxy_cpu),
        proxy_drops: udp_drops(proxy.port()),
        backend_drops: backends.addrs.iter().map(|a| udp_drops(a.port())).sum(),
    };
    let mut windows = Vec::new();
    let mut a = snap();
    for _ in 0..args.windows.max(1) {
        tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
        let b = snap();
        windows.push(Window::between(&a, &b));
        a = b;
    }
    drop(duty);
    stop.store(true, RELAXED);
    let used = generator
        .join()
        .map_err(|_| anyhow::anyhow!("generator panicked"))??;
    // Let the queues drain before the next run.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut order: Vec<usize> = (0..windows.len()).collect();
    order.sort_by(|&i, &j| {
        windows[i]
            .forwarded_per_cpu_second
            .total_cmp(&windows[j].forwarded_per_cpu_second)
    });
    let median = windows[order[order.len() / 2]].clone();
    Ok(Throughput {
        load: load.label,
        size,
        batch: used,
        spread: load.spread,
        duty: load.duty,
        median,
        windows,
    })
}

#[derive(Debug, Clone, Serialize)]
struct Window {
    seconds: f64,
    offered_pps: f64,
    forwarded_pps: f64,
    /// CPU time of the proxy process per wall-clock second (1.0 = one core busy).
    proxy_cores: f64,
    forwarded_per_cpu_second: f64,
    /// Busy share of the proxy's core as a whole (/proc/stat; includes softirq and anything
    /// else scheduled there).
    proxy_core_busy: Option<f64>,
    dropped_at_proxy_socket: u64,
    dropped_at_backend_sockets: u64,
}

impl Window {
    fn between(a: &Snapshot, b: &Snapshot) -> Self {
        let secs = (b.t - a.t).as_secs_f64();
        let forwarded = b.arrived.saturating_sub(a.arrived) as f64;
        let cpu_s = b.cpu_ns.saturating_sub(a.cpu_ns) as f64 / 1e9;
        Self {
            seconds: secs,
            offered_pps: b.sent.saturating_sub(a.sent) as f64 / secs,
            forwarded_pps: forwarded / secs,
            proxy_cores: cpu_s / secs,
            forwarded_per_cpu_second: if cpu_s > 0.0 { forwarded / cpu_s } else { 0.0 },
            proxy_core_busy: match (a.core, b.core) {
                (Some((busy0, all0)), Some((busy1, all1))) if all1 > all0 => {
                    Some((busy1 - busy0) as f64 / (all1 - all0) as f64)
                }
                _ => None,
            },
            dropped_at_proxy_socket: b.proxy_drops.saturating_sub(a.proxy_drops),
            dropped_at_backend_sockets: b.backend_drops.saturating_sub(a.backend_drops),
        }
    }
}

struct Snapshot {
    t: Instant,
    sent: u64,
    arrived: u64,
    cpu_ns: u64,
    core: Option<(u64, u64)>,
    proxy_drops: u64,
    backend_drops: u64,
}

/// The load generator: short-header packets to `target`, `batch` datagrams per `sendmsg`
/// (GSO) until `stop`. Returns the batch it could use.
fn generate(
    target: SocketAddr,
    size: usize,
    batch: usize,
    cids: &[Vec<u8>],
    stop: &AtomicBool,
    sent: &AtomicU64,
) -> anyhow::Result<usize> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let state = UdpSocketState::new((&socket).into())?;
    socket.set_nonblocking(false)?;
    let _ = state.set_send_buffer_size((&socket).into(), 4 << 20);
    let segments = batch.clamp(1, state.max_gso_segments().max(1));
    let buffers: Vec<Vec<u8>> = cids
        .chunks_exact(segments)
        .map(|chunk| {
            chunk
                .iter()
                .flat_map(|cid| short_header(cid, size))
                .collect()
        })
        .collect();
    let mut i = 0;
    while !stop.load(RELAXED) {
        let t = Transmit {
            destination: target,
            ecn: None,
            contents: &buffers[i % buffers.len()],
            segment_size: (segments > 1).then_some(size),
            src_ip: None,
        };
        i += 1;
        if state.send((&socket).into(), &t).is_ok() {
            sent.fetch_add(segments as u64, RELAXED);
        }
    }
    Ok(segments)
}

/// A short-header packet with `cid` as its DCID, padded to `size` octets.
fn short_header(cid: &[u8], size: usize) -> Vec<u8> {
    let mut d = Vec::with_capacity(size);
    d.push(0x40);
    d.extend_from_slice(cid);
    d.resize(size, 0xab);
    d
}

/// `n` round trips of one `size`-octet datagram to `target` (after 200 unmeasured ones);
/// round-trip times in µs, and how many got no answer within 200 ms.
fn pingpong(
    target: SocketAddr,
    cid: &[u8],
    size: usize,
    n: usize,
) -> anyhow::Result<(Vec<f64>, usize)> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut ping = short_header(cid, size);
    let at = 1 + cid.len();
    let mut buf = vec![0u8; 2048];
    let mut rtts = Vec::with_capacity(n);
    let mut lost = 0;
    for seq in 0..(n + 200) as u64 {
        ping[at..at + 8].copy_from_slice(&seq.to_le_bytes());
        let t0 = Instant::now();
        socket.send_to(&ping, target)?;
        loop {
            match socket.recv_from(&mut buf) {
                Ok((len, _)) if len == size && buf[at..at + 8] == seq.to_le_bytes() => {
                    if seq >= 200 {
                        rtts.push(t0.elapsed().as_secs_f64() * 1e6);
                    }
                    break;
                }
                Ok(_) => continue,
                Err(_) => {
                    lost += 1;
                    break;
                }
            }
        }
    }
    anyhow::ensure!(!rtts.is_empty(), "no answer from {target}");
    rtts.sort_by(f64::total_cmp);
    Ok((rtts, lost))
}

/// RSS before and after `--flows` new flows through the proxy.
async fn memory(
    args: &Args,
    proxy: SocketAddr,
    pid: u32,
    backends: &Backends,
    error_log: Option<&Path>,
) -> anyhow::Result<Memory> {
    let refused = |log: &Path| {
        std::fs::read_to_string(log)
            .map(|s| s.matches("worker_connections are not enough").count())
            .unwrap_or(0)
    };
    let refused_before = error_log.map(refused);
    let (rss_before, fds_before) = (rss_kib(pid), fd_count(pid));
    let (arrived0, drops0) = (backends.count.load(RELAXED), udp_drops(proxy.port()));
    let (flows, rate) = (args.flows, args.flow_rate);
    eprintln!("  {flows} new flows at {rate}/s");
    let (sent, secs) = tokio::task::spawn_blocking(move || send_flows(proxy, flows, rate)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(Memory {
        flows_sent: sent,
        flows_seconds: secs,
        arrived_at_backends: backends.count.load(RELAXED) - arrived0,
        dropped_at_proxy_socket: udp_drops(proxy.port()).saturating_sub(drops0),
        rss_before_kib: rss_before,
        rss_after_kib: rss_kib(pid),
        fds_before,
        fds_after: fd_count(pid),
        refused: error_log
            .map(refused)
            .zip(refused_before)
            .map(|(a, b)| a - b),
    })
}

/// New flows: each from its own address (127.77.0.x, ports 15000..55000) with a long-header
/// Initial of 1200 octets and a random DCID.
fn send_flows(target: SocketAddr, n: usize, rate: u64) -> (usize, f64) {
    let start = Instant::now();
    let mut rng = 0x5eed_u64;
    let mut sent = 0;
    let mut datagram = vec![0u8; 1200];
    datagram[..6].copy_from_slice(&[0xc3, 0, 0, 0, 1, 8]);
    for candidate in 0..4 * 40_000u32 {
        if sent == n {
            break;
        }
        let ip = Ipv4Addr::new(127, 77, 0, 1 + (candidate / 40_000) as u8);
        let port = 15_000 + (candidate % 40_000) as u16;
        let Ok(socket) = UdpSocket::bind((ip, port)) else {
            continue;
        };
        datagram[6..14].copy_from_slice(&splitmix(&mut rng).to_le_bytes());
        if socket.send_to(&datagram, target).is_ok() {
            sent += 1;
        }
        if sent % 50 == 0 {
            let due = start + Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }
    (sent, start.elapsed().as_secs_f64())
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Calls through `vip`; each client moves to a new IP mid-call.
async fn migration(vip: SocketAddr, servers: &[Server], calls: usize, prompt: &[i16]) -> Migration {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..calls {
        let prompt = prompt.to_vec();
        let new_ip = Ipv4Addr::new(127, 0, 0, 10 + i as u8);
        tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(50 * i as u64)).await;
            let result = one_call(vip, new_ip, prompt).await;
            CallResult {
                new_ip,
                survived: result.is_ok(),
                error: result.err().map(|e| format!("{e:#}")),
            }
        });
    }
    let mut detail = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(r) => detail.push(r),
            Err(e) => detail.push(CallResult {
                new_ip: Ipv4Addr::UNSPECIFIED,
                survived: false,
                error: Some(e.to_string()),
            }),
        }
    }
    detail.sort_by_key(|c| c.new_ip);
    Migration {
        calls,
        survived: detail.iter().filter(|c| c.survived).count(),
        sessions_per_server: servers
            .iter()
            .map(|s| s.stats().sessions_started.total())
            .collect(),
        calls_detail: detail,
    }
}

/// One call with the prompt in real time; 1 s in, the client rebinds to `new_ip`. Ok when
/// the call completes and the echo is bit-exact.
async fn one_call(vip: SocketAddr, new_ip: Ipv4Addr, prompt: Vec<i16>) -> anyhow::Result<()> {
    let client = Client::new(&Trust::Insecure, "127.0.0.1:0".parse()?)?;
    let target = Target {
        addr: vip,
        server_name: "localhost".into(),
        tls: true,
    };
    let opts = CallOptions {
        turns: vec![prompt.clone()],
        input_speed: 1.0,
        timeout: Duration::from_secs(6),
        ..Default::default()
    };
    let rebind = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let socket = UdpSocket::bind((new_ip, 0))?;
        client.endpoint().rebind(socket)?;
        anyhow::Ok(())
    };
    let (out, rebound) = tokio::join!(client.call(&target, opts), rebind);
    rebound.context("rebind")?;
    let out = out?;
    let p = &out.report.prompt;
    anyhow::ensure!(
        p.frames_confirmed == p.frames_sent,
        "{} of {} frames confirmed",
        p.frames_confirmed,
        p.frames_sent
    );
    anyhow::ensure!(out.reply_received == prompt, "the echo differs");
    client.endpoint().wait_idle().await;
    Ok(())
}

fn lb_settings(server_id: u8) -> QuicLbSettings {
    QuicLbSettings {
        config_id: CONFIG_ID,
        server_id: vec![server_id],
        nonce_len: NONCE_LEN,
        key: Some(KEY),
        cid_len: None,
        self_encoded_len: None,
    }
}

/// Three voq servers with the echo agent, server ids 1..=3, on `ports` (0 = any).
async fn start_servers(ports: &[u16], tunnel: Tunnel) -> anyhow::Result<Vec<Server>> {
    let mut servers = Vec::new();
    for (id, port) in (1..=3u8).zip(ports) {
        let settings = Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], *port)),
            agent: "echo".into(),
            quic_lb: Some(lb_settings(id)),
            tunnel,
            drain_timeout: Duration::from_secs(1),
            ..Default::default()
        };
        servers.push(Server::start(settings).await?);
    }
    Ok(servers)
}

/// The first 2 s of the test prompt, 24 kHz mono.
fn prompt() -> anyhow::Result<Vec<i16>> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/audio/prompt-carwash-24k.wav");
    let pcm = voq_audio::read_wav_file(&path)?.to_mono_24k()?;
    Ok(pcm[..pcm.len().min(48_000)].to_vec())
}

/// `CIDS` distinct CIDs that route to `servers` in turn.
fn routable_cids(servers: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
    let config = lb_settings(1).config()?;
    (0..CIDS as u64)
        .map(|i| {
            let server = servers[i as usize % servers.len()];
            let cid = config.encode(&[server], &(i + 1).to_be_bytes())?;
            Ok(cid.to_vec())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Processes: the voq lb child, nginx's worker, /proc

/// `voq lb` as a child process (on the proxy core when pinning).
struct LbChild {
    child: Child,
    vip: SocketAddr,
}

impl LbChild {
    fn spawn(cpu: Option<usize>, backends: &[(u8, SocketAddr)]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut cmd = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string()]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(["serve-lb", "--listen", "127.0.0.1:0", "--workers", "1"])
            .args([
                "--config-id",
                &CONFIG_ID.to_string(),
                "--server-id-len",
                "1",
            ])
            .args([
                "--nonce-len",
                &NONCE_LEN.to_string(),
                "--health-interval-ms",
                "0",
            ]);
        for (id, addr) in backends {
            cmd.arg("--backend").arg(format!("{id:02x}={addr}"));
        }
        let key: String = KEY.iter().map(|b| format!("{b:02x}")).collect();
        let mut child = cmd
            .env("VOQ_LB_KEY", key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start voq lb")?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            std::io::BufReader::new(out).read_line(&mut line)?;
        }
        let vip = line
            .trim()
            .strip_prefix("voq lb on udp ")
            .and_then(|a| a.parse().ok());
        match vip {
            Some(vip) => Ok(Self { child, vip }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("voq lb did not start: {line:?}")
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for LbChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The (one) worker process of the nginx master `master`.
async fn nginx_worker(master: u32) -> anyhow::Result<u32> {
    for _ in 0..50 {
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .with_context(|| format!("nginx master {master} is not running"))?;
        if let Some(pid) = children.split_whitespace().next() {
            return Ok(pid.parse()?);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("nginx master {master} has no worker")
}

/// Stops and continues `pid` every 5 ms (SIGSTOP/SIGCONT from a bash loop that forks
/// nothing), so that datagrams queue while it is stopped and it works through a backlog while
/// it runs: the proxy loaded although one generator core cannot saturate it. The loop ends,
/// leaving `pid` running, when dropped or when this process goes away.
struct Duty {
    child: Child,
    pid: u32,
}

const DUTY_LOOP: &str = r#"exec {t}<> <(:)
while kill -0 "$PPID" 2>/dev/null && kill -0 "$1" 2>/dev/null; do
  kill -STOP "$1"; read -t 0.005 -u "$t"
  kill -CONT "$1"; read -t 0.005 -u "$t"
done
kill -CONT "$1" 2>/dev/null"#;

impl Duty {
    fn start(pid: u32) -> anyhow::Result<Self> {
        let child = Command::new("bash")
            .args(["-c", DUTY_LOOP, "duty", &pid.to_string()])
            .stdin(Stdio::null())
            .spawn()
            .context("cannot start the duty cycle (bash)")?;
        Ok(Self { child, pid })
    }
}

impl Drop for Duty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("kill")
            .args(["-CONT", &self.pid.to_string()])
            .status();
    }
}

/// Moves all threads of `pid` to core `cpu`.
fn repin(pid: u32, cpu: usize) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(
        status.success(),
        "taskset could not move {pid} to core {cpu}"
    );
    Ok(())
}

/// CPU time of all threads of `pid`, in ns.
fn cpu_ns(pid: u32) -> u64 {
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
fn core_times(cpu: usize) -> Option<(u64, u64)> {
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

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Datagrams the kernel dropped at UDP sockets bound to `port` (/proc/net/udp, all owners).
fn udp_drops(port: u16) -> u64 {
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

fn command_output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine() -> String {
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

// ---------------------------------------------------------------------------------------------
// Backends for the packet phases

/// Three UDP sockets that count what arrives (GRO segments one by one) or echo it: a
/// datagram with a PROXY v2 header is answered through the tunnel (header with source and
/// destination swapped, to the sender: the VIP), anything else as it came.
struct Backends {
    addrs: Vec<SocketAddr>,
    count: Arc<AtomicU64>,
    echo: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Backends {
    async fn start(ports: &[u16]) -> anyhow::Result<Self> {
        let count = Arc::new(AtomicU64::new(0));
        let echo = Arc::new(AtomicBool::new(false));
        let mut addrs = Vec::new();
        let mut tasks = Vec::new();
        for port in ports {
            let std = bind_retrying(SocketAddr::from(([127, 0, 0, 1], *port))).await?;
            let state = UdpSocketState::new((&std).into())?;
            let _ = state.set_recv_buffer_size((&std).into(), 4 << 20);
            std.set_nonblocking(true)?;
            addrs.push(std.local_addr()?);
            let io = tokio::net::UdpSocket::from_std(std)?;
            tasks.push(tokio::spawn(backend(
                io,
                state,
                count.clone(),
                echo.clone(),
            )));
        }
        Ok(Self {
            addrs,
            count,
            echo,
            tasks,
        })
    }

    async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Binds `addr`, waiting up to 10 s for a server that just shut down to release it (quinn
/// closes its socket when the last connection has drained).
async fn bind_retrying(addr: SocketAddr) -> anyhow::Result<UdpSocket> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match UdpSocket::bind(addr) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot bind backend {addr}")),
        }
    }
}

async fn backend(
    io: tokio::net::UdpSocket,
    state: UdpSocketState,
    count: Arc<AtomicU64>,
    echo: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; quinn::udp::BATCH_SIZE * SLOT];
    let mut metas = [RecvMeta::default(); quinn::udp::BATCH_SIZE];
    let mut reply = Vec::with_capacity(2048);
    loop {
        if io.readable().await.is_err() {
            return;
        }
        loop {
            let received = {
                let mut iovs: Vec<IoSliceMut<'_>> =
                    buf.chunks_mut(SLOT).map(IoSliceMut::new).collect();
                io.try_io(Interest::READABLE, || {
                    state.recv((&io).into(), &mut iovs, &mut metas)
                })
            };
            let Ok(n) = received else { break };
            let echoing = echo.load(RELAXED);
            for (i, m) in metas.iter().take(n).enumerate() {
                let data = &buf[i * SLOT..i * SLOT + m.len];
                let stride = m.stride.max(1);
                count.fetch_add(data.len().div_ceil(stride).max(1) as u64, RELAXED);
                if !echoing {
                    continue;
                }
                for d in data.chunks(stride) {
                    let out = match proxy_v2::decode(d) {
                        Ok((Header::Proxy { src, dst }, payload)) => {
                            reply.clear();
                            proxy_v2::encode(dst, src, payload, &mut reply);
                            &reply[..]
                        }
                        _ => d,
                    };
                    let _ = io.send_to(out, m.addr).await;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The table

fn render(report: &Report) -> String {
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
