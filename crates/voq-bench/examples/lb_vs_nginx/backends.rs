//! The three backend sockets of the packet phases (throughput, latency, memory). They stand
//! where the voq servers would and count what arrives, GRO segments one by one, since a
//! datagram reaching a backend is the forwarded rate's numerator. For the latency phase they
//! echo instead: a datagram with a PROXY v2 header (voq lb's tunnel) is answered through the
//! tunnel (header with source and destination swapped, to the sender: the VIP), anything
//! else (nginx) as it came. PROXY v2 headers are counted past, not stripped.

use std::io::IoSliceMut;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use anyhow::Context;
use quinn::udp::{RecvMeta, UdpSocketState};
use tokio::io::Interest;
use tokio::task::JoinHandle;
use voq_tunnel::proxy_v2::{self, Header};

use crate::RELAXED;

const SLOT: usize = 64 * 1024;

/// Three UDP sockets that count what arrives or echo it.
pub(crate) struct Backends {
    pub(crate) addrs: Vec<SocketAddr>,
    /// Datagrams arrived at any of the three.
    pub(crate) count: Arc<AtomicU64>,
    /// Echo what arrives (the latency phase) as well as counting it.
    pub(crate) echo: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Backends {
    /// Binds 127.0.0.1 at `ports` (0 = any).
    pub(crate) async fn start(ports: &[u16]) -> anyhow::Result<Self> {
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

    pub(crate) async fn stop(self) {
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
