//! Phase 3, memory: the proxy's RSS (and open descriptors) before and after `--flows`
//! distinct flows, each a new client address sending one long-header Initial with a random
//! DCID. A stateless balancer (voq lb routes such packets by hash) should stay flat; a
//! session-keeping proxy (nginx) grows by a socket and some memory per flow, up to its
//! session cap, and refuses flows beyond it (counted from its error log).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::backends::Backends;
use crate::procfs::{fd_count, rss_kib, udp_drops};
use crate::report::Memory;
use crate::{Args, RELAXED};

/// RSS before and after `--flows` new flows through the proxy.
pub(crate) async fn memory(
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
