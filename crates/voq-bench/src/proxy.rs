//! An impaired UDP path on loopback: a proxy that passes datagrams between clients and one
//! server through two [`voq_netem::Link`]s (client → server and back).
//!
//! Each client address gets its own upstream socket, so the server sees one distinct address
//! per client — and a new one when a client migrates, as it would behind a real NAT rebinding.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use voq_netem::{Link, LinkConfig, LinkStats};

/// Which way a command applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
    Both,
}

#[derive(Debug)]
enum Cmd {
    Blackout(Direction, Duration),
}

/// Counters of both directions.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProxyStats {
    pub up: Option<LinkStats>,
    pub down: Option<LinkStats>,
    pub flows: usize,
}

/// A running proxy; dropped or [`NetemProxy::stop`]ped, it stops.
#[derive(Debug)]
pub struct NetemProxy {
    addr: SocketAddr,
    cmds: mpsc::UnboundedSender<Cmd>,
    stats: Arc<Mutex<ProxyStats>>,
    task: JoinHandle<()>,
}

type Packet = (SocketAddr, Vec<u8>);

impl NetemProxy {
    /// Listens on `listen` and forwards to `target` with `up` (client → server) and `down`
    /// impairments, seeded by `seed`.
    pub async fn start(
        listen: SocketAddr,
        target: SocketAddr,
        up: LinkConfig,
        down: LinkConfig,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let now = Instant::now().into_std();
        let up = Link::new(up, seed, now).context("client-to-server impairment")?;
        let down = Link::new(down, seed.wrapping_add(0x9e37_79b9_7f4a_7c15), now)
            .context("server-to-client impairment")?;
        let socket = UdpSocket::bind(listen)
            .await
            .with_context(|| format!("cannot bind udp {listen}"))?;
        let addr = socket.local_addr()?;
        let (cmds, cmd_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Mutex::new(ProxyStats::default()));
        let task = tokio::spawn(run(socket, target, up, down, cmd_rx, stats.clone()));
        Ok(Self {
            addr,
            cmds,
            stats,
            task,
        })
    }

    /// Where clients send.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every packet sent in the next `duration`, starting now.
    pub fn blackout(&self, direction: Direction, duration: Duration) {
        let _ = self.cmds.send(Cmd::Blackout(direction, duration));
    }

    pub fn stats(&self) -> ProxyStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for NetemProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    socket: UdpSocket,
    target: SocketAddr,
    mut up: Link<Packet>,
    mut down: Link<Packet>,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    stats: Arc<Mutex<ProxyStats>>,
) {
    let socket = Arc::new(socket);
    let mut flows: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    // The flows' reader tasks end with this task (when it is aborted, this guard drops).
    let mut readers = AbortOnDrop(Vec::new());
    let (from_server_tx, mut from_server) = mpsc::unbounded_channel::<Packet>();
    let mut buf = vec![0u8; 65_536];
    loop {
        let wake = [up.poll_timeout(), down.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .map(Instant::from_std);
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let Ok((n, client)) = r else { continue };
                let now = Instant::now().into_std();
                if let std::collections::hash_map::Entry::Vacant(e) = flows.entry(client) {
                    match upstream(target, client, from_server_tx.clone()).await {
                        Ok((s, reader)) => { e.insert(s); readers.0.push(reader); }
                        Err(err) => { tracing::warn!("netem proxy: {err:#}"); continue; }
                    }
                }
                up.send(now, (client, buf[..n].to_vec()), n);
            }
            Some((client, bytes)) = from_server.recv() => {
                let n = bytes.len();
                down.send(Instant::now().into_std(), (client, bytes), n);
            }
            Some(cmd) = cmds.recv() => {
                let now = Instant::now().into_std();
                match cmd {
                    Cmd::Blackout(dir, d) => {
                        if dir != Direction::Down { up.add_blackout(now, d); }
                        if dir != Direction::Up { down.add_blackout(now, d); }
                    }
                }
            }
            _ = sleep_until(wake), if wake.is_some() => {}
        }
        let now = Instant::now().into_std();
        while let Some((client, bytes)) = up.poll_deliver(now) {
            if let Some(s) = flows.get(&client) {
                let _ = s.send(&bytes).await;
            }
        }
        while let Some((client, bytes)) = down.poll_deliver(now) {
            let _ = socket.send_to(&bytes, client).await;
        }
        if let Ok(mut s) = stats.lock() {
            *s = ProxyStats {
                up: Some(*up.stats()),
                down: Some(*down.stats()),
                flows: flows.len(),
            };
        }
    }
}

/// A socket connected to the server for one client, with a task forwarding its replies.
async fn upstream(
    target: SocketAddr,
    client: SocketAddr,
    tx: mpsc::UnboundedSender<Packet>,
) -> anyhow::Result<(Arc<UdpSocket>, tokio::task::AbortHandle)> {
    let bind: SocketAddr = if target.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    }
    .parse()?;
    let s = Arc::new(UdpSocket::bind(bind).await?);
    s.connect(target)
        .await
        .with_context(|| format!("cannot reach {target}"))?;
    let reader = s.clone();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok(n) = reader.recv(&mut buf).await {
            if tx.send((client, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    });
    Ok((s, task.abort_handle()))
}

struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
