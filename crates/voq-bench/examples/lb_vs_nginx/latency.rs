//! Phase 2, added latency: what a proxy adds to a round trip. Ping-pong of one datagram at a
//! time, echoed by a backend (through voq lb the echo goes back through the tunnel: PROXY v2
//! header, to the VIP); the p50/p99 round trip through the proxy minus the same sent directly
//! to the backend, so the loopback's own cost cancels out.
//!
//! Pinned, it is measured twice: cross-core (the proxy on its own core as in the packet-rate
//! runs, so every hop wakes the other core) and same-core (the proxy moved to the
//! benchmark's core, so the figure is the proxy's own path).

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use voq_bench::bench::report::percentile;

use crate::backends::Backends;
use crate::proxies::repin;
use crate::quic_lb::short_header;
use crate::report::{Latency, ProxyReport};
use crate::{Args, RELAXED, SIZES};

/// Added round-trip time through one proxy.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn latency(
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
