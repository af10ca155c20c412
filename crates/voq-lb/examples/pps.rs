//! Loopback throughput of the balancer: clients → VIP → one backend sink.
//!
//! ```text
//! cargo run --release -p voq-lb --example pps -- [WORKERS] [SECONDS] [gso]
//! ```
//!
//! Client threads send routable short-header datagrams of 1200 octets (one at a time, or
//! 32-segment GSO batches with `gso`) to the VIP; a sink thread counts what the backend
//! receives. Prints forwarded datagrams per second and the balancer's system calls per
//! datagram. Client, sink and balancer share the machine's cores, so this is a floor.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quinn::udp::{Transmit, UdpSocketState};
use voq_lb::{Backend, Balancer, BalancerConfig, HealthConfig};
use voq_quic_lb::{Config, ServerId};

const CLIENTS: usize = 2;
const SIZE: usize = 1200;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let workers: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let gso = args.get(3).is_some_and(|a| a == "gso");

    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let _ = socket2::SockRef::from(&sink).set_recv_buffer_size(8 << 20);
    let sink_addr = sink.local_addr().unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (received, stop) = (received.clone(), stop.clone());
        sink.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if sink.recv_from(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }

    let config = Config::new(0, 2, 6).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    let lb = runtime.block_on(async {
        let mut c = BalancerConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            vec![config.clone()],
            vec![Backend::new(
                ServerId::from_slice(&[0, 1]).unwrap(),
                sink_addr,
            )],
        );
        c.workers = workers;
        c.health = HealthConfig {
            enabled: false,
            ..HealthConfig::default()
        };
        Balancer::start(c).await.unwrap()
    });
    let vip = lb.local_addr();

    let mut datagram = vec![0x40];
    datagram.extend_from_slice(&config.encode(&[0, 1], &[1, 2, 3, 4, 5, 6]).unwrap());
    datagram.resize(SIZE, 0xab);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (stop, datagram) = (stop.clone(), datagram.clone());
            std::thread::spawn(move || blast(vip, &datagram, gso, &stop))
        })
        .collect();

    std::thread::sleep(Duration::from_millis(500));
    let (r0, s0, t0) = (received.load(Ordering::Relaxed), lb.stats(), Instant::now());
    std::thread::sleep(Duration::from_secs(seconds));
    let (r1, s1, t1) = (received.load(Ordering::Relaxed), lb.stats(), Instant::now());
    stop.store(true, Ordering::Relaxed);
    let sent: u64 = clients.into_iter().map(|c| c.join().unwrap()).sum();

    let secs = (t1 - t0).as_secs_f64();
    let forwarded = r1 - r0;
    let rx = s1.received.packets - s0.received.packets;
    println!(
        "workers {workers}, {} clients{}, {SIZE}-octet datagrams, {secs:.1} s",
        CLIENTS,
        if gso { " (GSO ×32)" } else { "" }
    );
    println!(
        "  received at the VIP {:.0}/s, forwarded to the backend {:.0}/s ({:.0} Mbit/s)",
        rx as f64 / secs,
        forwarded as f64 / secs,
        forwarded as f64 * (SIZE + 28) as f64 * 8.0 / secs / 1e6,
    );
    println!(
        "  per received datagram: {:.3} recv calls, {:.3} send calls; clients sent {sent} in all",
        (s1.recv_calls - s0.recv_calls) as f64 / rx.max(1) as f64,
        (s1.send_calls - s0.send_calls) as f64 / rx.max(1) as f64,
    );
    runtime.block_on(lb.shutdown());
}

/// Sends `datagram` to `vip` until told to stop; returns how many it sent.
fn blast(vip: SocketAddr, datagram: &[u8], gso: bool, stop: &AtomicBool) -> u64 {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let state = UdpSocketState::new((&socket).into()).unwrap();
    socket.set_nonblocking(false).unwrap();
    let segments = if gso {
        state.max_gso_segments().min(32)
    } else {
        1
    };
    let batch: Vec<u8> = datagram.repeat(segments);
    let t = Transmit {
        destination: vip,
        ecn: None,
        contents: &batch,
        segment_size: (segments > 1).then_some(datagram.len()),
        src_ip: None,
    };
    let mut sent = 0;
    while !stop.load(Ordering::Relaxed) {
        if state.send((&socket).into(), &t).is_ok() {
            sent += segments as u64;
        }
    }
    sent
}
