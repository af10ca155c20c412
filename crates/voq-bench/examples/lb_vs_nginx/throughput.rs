//! Phase 1, packets per second: how many datagrams a proxy forwards per second and per
//! CPU-second of its own process. Per CPU-second is the figure that compares proxies on a
//! machine whose one generator core cannot saturate either of them.
//!
//! One generator thread sends short-header QUIC packets with routable DCIDs
//! ([`crate::quic_lb`]) in four [`LOADS`]: 32-segment GSO batches (one connection's burst:
//! all CIDs name server 1); one datagram per `sendmsg` with the CIDs naming servers 1, 2, 3 in
//! turn (many connections), which one core offers only below either proxy's capacity; the
//! same with the proxy stopped and continued every 5 ms ([`Duty`]), so that it always has a
//! backlog as a loaded proxy does; and that loaded case once more with all CIDs naming
//! server 1. After a warm-up, `--windows` windows of `--seconds` are measured; the window with
//! the median packets per CPU-second is reported.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use anyhow::Context;
use quinn::udp::{Transmit, UdpSocketState};

use crate::backends::Backends;
use crate::procfs::{core_times, cpu_ns, udp_drops};
use crate::quic_lb::short_header;
use crate::report::{Throughput, Window};
use crate::{Args, RELAXED};

const WARMUP: Duration = Duration::from_millis(300);

/// How the generator offers packets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    pub(crate) label: &'static str,
    /// Datagrams per `sendmsg` (GSO segments).
    batch: usize,
    /// The CIDs name servers 1, 2, 3 in turn (many connections) instead of server 1 only.
    pub(crate) spread: bool,
    /// Stop and continue the proxy every 5 ms ([`Duty`]).
    duty: bool,
}

pub(crate) const LOADS: [Load; 4] = [
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

/// One packet-rate run: the generator runs for a warm-up and `--windows` measurement
/// windows of `--seconds`; the window with the median packets per CPU-second is reported.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn throughput(
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

/// Counters at one instant; a window is the difference of two.
struct Snapshot {
    t: Instant,
    sent: u64,
    arrived: u64,
    cpu_ns: u64,
    core: Option<(u64, u64)>,
    proxy_drops: u64,
    backend_drops: u64,
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
