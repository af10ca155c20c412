//! Test helpers: UDP "backends" that speak the tunnel, QUIC-shaped datagrams, a balancer.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use voq_lb::{Backend, Balancer, BalancerConfig, HealthConfig};
use voq_quic_lb::{Config, ServerId};
use voq_tunnel::proxy_v2::{self, Header};

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(5);

/// A datagram a backend received through the tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    pub client: SocketAddr,
    pub vip: SocketAddr,
    pub payload: Vec<u8>,
}

/// A plain UDP backend that decodes PROXY v2 headers like a `TunnelSocket`: it answers LOCAL
/// probes (unless told not to), reports every tunnelled datagram, and can echo payloads back
/// through the balancer.
pub struct UdpBackend {
    pub addr: SocketAddr,
    pub server_id: ServerId,
    rx: mpsc::UnboundedReceiver<Got>,
    pub answer_probes: Arc<AtomicBool>,
    pub echo_to: Arc<Mutex<Option<SocketAddr>>>,
    pub received: Arc<AtomicUsize>,
    pub store: Arc<AtomicBool>,
    pub bad: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for UdpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl UdpBackend {
    pub async fn start(server_id: &[u8]) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let answer_probes = Arc::new(AtomicBool::new(true));
        let echo_to: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let received = Arc::new(AtomicUsize::new(0));
        let store = Arc::new(AtomicBool::new(true));
        let bad = Arc::new(AtomicUsize::new(0));
        let task = {
            let (answer_probes, echo_to, received, store, bad) = (
                answer_probes.clone(),
                echo_to.clone(),
                received.clone(),
                store.clone(),
                bad.clone(),
            );
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut out = Vec::new();
                loop {
                    let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                        return;
                    };
                    match proxy_v2::decode(&buf[..n]) {
                        Ok((Header::Local, _)) => {
                            if answer_probes.load(Ordering::Relaxed) {
                                let _ = socket.send_to(&proxy_v2::LOCAL, from).await;
                            }
                        }
                        Ok((Header::Proxy { src, dst }, payload)) => {
                            received.fetch_add(1, Ordering::Relaxed);
                            let echo = *echo_to.lock().unwrap();
                            if let Some(lb) = echo {
                                out.clear();
                                proxy_v2::encode(dst, src, payload, &mut out);
                                let _ = socket.send_to(&out, lb).await;
                            }
                            if store.load(Ordering::Relaxed) {
                                let _ = tx.send(Got {
                                    client: src,
                                    vip: dst,
                                    payload: payload.to_vec(),
                                });
                            }
                        }
                        Err(_) => {
                            bad.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        };
        Self {
            addr,
            server_id: ServerId::from_slice(server_id).unwrap(),
            rx,
            answer_probes,
            echo_to,
            received,
            store,
            bad,
            task,
        }
    }

    pub fn backend(&self) -> Backend {
        Backend::new(self.server_id, self.addr)
    }

    pub fn count(&self) -> usize {
        self.received.load(Ordering::Relaxed)
    }

    /// The next tunnelled datagram, or `None` after `WAIT`.
    pub async fn next(&mut self) -> Option<Got> {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Everything received so far.
    pub fn drain(&mut self) -> Vec<Got> {
        let mut v = Vec::new();
        while let Ok(g) = self.rx.try_recv() {
            v.push(g);
        }
        v
    }

    /// Whether nothing more arrives within `d`.
    pub async fn quiet_for(&mut self, d: Duration) -> bool {
        tokio::time::timeout(d, self.rx.recv()).await.is_err()
    }
}

/// The QUIC-LB configuration of these tests: config id 1, 2-octet server id, 6-octet nonce,
/// four-pass encryption.
pub fn quic_lb() -> Config {
    Config::new(1, 2, 6).unwrap().with_key([0x5c; 16])
}

/// A balancer on 127.0.0.1 with these backends; probes off unless `health` is given.
pub async fn balancer(
    backends: Vec<Backend>,
    health: Option<HealthConfig>,
    listen: Option<SocketAddr>,
) -> Balancer {
    let mut config = BalancerConfig::new(
        listen.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap()),
        vec![quic_lb()],
        backends,
    );
    config.workers = 2;
    config.health = health.unwrap_or(HealthConfig {
        enabled: false,
        ..HealthConfig::default()
    });
    Balancer::start(config).await.unwrap()
}

/// A short-header datagram whose DCID names `server_id`; `tag` goes into the payload.
pub fn short(config: &Config, server_id: &[u8], nonce: u64, tag: u32) -> Vec<u8> {
    let mut n = [0u8; 6];
    n.copy_from_slice(&nonce.to_be_bytes()[2..]);
    let mut d = vec![0x40];
    d.extend_from_slice(&config.encode(server_id, &n).unwrap());
    d.extend_from_slice(&tag.to_be_bytes());
    d.extend_from_slice(&[0xab; 32]);
    d
}

/// A QUIC v1 Initial with this DCID; `tag` goes into the payload.
pub fn initial(dcid: &[u8], tag: u32) -> Vec<u8> {
    let mut d = vec![0xc3, 0, 0, 0, 1, dcid.len() as u8];
    d.extend_from_slice(dcid);
    d.push(8);
    d.extend_from_slice(&[0x11; 8]); // SCID
    d.push(0); // token length
    d.extend_from_slice(&[0x40, 0x40]); // length 64
    d.extend_from_slice(&tag.to_be_bytes());
    d.extend_from_slice(&[0u8; 60]);
    d
}

/// A client-chosen 8-octet DCID, deterministic in `i`, that the test configuration cannot
/// route (config id bits 0b010, which no configuration uses).
pub fn random_dcid(i: u32) -> [u8; 8] {
    let mut x = u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555_aaaa_1234_5678;
    let mut d = [0u8; 8];
    for b in &mut d {
        x ^= x >> 29;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        *b = (x >> 56) as u8;
    }
    d[0] = 0x40 | (d[0] & 0x1f);
    d
}

/// The tag an `initial` or `short` payload carries, or `None` for other datagrams.
pub fn tag_of(datagram: &[u8]) -> Option<u32> {
    let at = if datagram.first()? & 0x80 != 0 {
        let dcid_len = usize::from(*datagram.get(5)?);
        6 + dcid_len + 1 + 8 + 1 + 2
    } else {
        1 + 9
    };
    let b = datagram.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

pub async fn client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

/// Waits until `f` holds, polling every 2 ms, for at most `WAIT`.
pub async fn until(mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    f()
}
