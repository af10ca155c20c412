//! The balancer: worker sockets on the VIP, the health prober, reloads.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use quinn::udp::{EcnCodepoint, RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use voq_quic_lb::Config;

use crate::stats::{Counters, Stats};
use crate::table::{Backend, Decision, DropReason, RoutingTable, TableError};
use voq_tunnel::proxy_v2::{self, Header};
use voq_tunnel::{canonical, for_socket, recv_slots};

/// Datagram slots per receive call (recvmmsg).
const BATCH: usize = quinn::udp::BATCH_SIZE;
/// Bytes per slot: a GRO batch can hold up to 64 KiB.
const SLOT_LEN: usize = 64 * 1024;
/// Upper bound of one GSO send, below the 65 507-octet UDP payload limit.
const MAX_GSO_BYTES: usize = 60 * 1024;
/// Receive batches a worker handles before yielding to other tasks.
const BATCHES_PER_YIELD: u32 = 16;

/// Health probing of backends (see docs/LB.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Probe at all; off, every backend counts as up (unless marked down by hand).
    pub enabled: bool,
    /// Time between probe rounds, and how long a round waits for answers.
    pub interval: Duration,
    /// Consecutive unanswered rounds before a backend is down for new flows.
    pub down_after: u32,
    /// Consecutive answered rounds before a down backend is up again.
    pub up_after: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_millis(500),
            down_after: 3,
            up_after: 2,
        }
    }
}

/// What [`Balancer::start`] needs.
#[derive(Debug, Clone)]
pub struct BalancerConfig {
    /// The VIP: the UDP address clients connect to and backends reply to.
    pub listen: SocketAddr,
    /// Worker sockets (SO_REUSEPORT) on the VIP; 0 = one per available core.
    pub workers: usize,
    /// QUIC-LB configurations, at most one per config id 0..=6.
    pub configs: Vec<Config>,
    /// Backends.
    pub backends: Vec<Backend>,
    /// Health probes.
    pub health: HealthConfig,
}

impl BalancerConfig {
    /// A configuration with default health probing and one worker per core.
    pub fn new(listen: SocketAddr, configs: Vec<Config>, backends: Vec<Backend>) -> Self {
        Self {
            listen,
            workers: 0,
            configs,
            backends,
            health: HealthConfig::default(),
        }
    }
}

/// Why the balancer did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The routing table is invalid.
    #[error(transparent)]
    Table(#[from] TableError),
    /// A VIP socket could not be bound.
    #[error("cannot bind the VIP socket to {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// A socket could not be set up.
    #[error("cannot set up the {what} socket: {source}")]
    Socket {
        /// Which one.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

struct Shared {
    table: RwLock<Arc<RoutingTable>>,
    /// One per worker, then the prober's.
    counters: Vec<Arc<Counters>>,
    workers: usize,
}

impl Shared {
    fn table(&self) -> Arc<RoutingTable> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn stats(&self) -> Stats {
        Stats::collect(
            self.workers,
            self.counters.iter().map(|c| &**c),
            &self.table(),
        )
    }
}

/// A running stateless QUIC-LB load balancer. See the crate docs and docs/LB.md.
///
/// Dropping it stops the workers too; [`Balancer::shutdown`] also waits for them.
pub struct Balancer {
    shared: Arc<Shared>,
    local: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("local", &self.local)
            .field("workers", &self.shared.workers)
            .finish_non_exhaustive()
    }
}

impl Balancer {
    /// Binds the VIP sockets and starts the workers and the prober on the current tokio
    /// runtime.
    pub async fn start(config: BalancerConfig) -> Result<Self, StartError> {
        let table = Arc::new(RoutingTable::new(config.configs, config.backends)?);
        let workers = match config.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        // Without SO_REUSEPORT several sockets cannot share the VIP.
        let workers = if cfg!(unix) { workers } else { 1 };
        let first = bind_vip(config.listen)?;
        let local = first.local_addr().map_err(|source| StartError::Socket {
            what: "VIP",
            source,
        })?;
        let mut sockets = vec![first];
        for _ in 1..workers {
            sockets.push(bind_vip(local)?);
        }
        let counters: Vec<Arc<Counters>> = (0..=workers)
            .map(|_| Arc::new(Counters::default()))
            .collect();
        let shared = Arc::new(Shared {
            table: RwLock::new(table.clone()),
            counters: counters.clone(),
            workers,
        });
        let mut tasks = Vec::with_capacity(workers + 1);
        for (socket, counters) in sockets.into_iter().zip(&counters) {
            let worker =
                Worker::new(socket, local, shared.clone(), counters.clone()).map_err(|source| {
                    StartError::Socket {
                        what: "VIP",
                        source,
                    }
                })?;
            tasks.push(tokio::spawn(worker.run()));
        }
        if config.health.enabled {
            let prober = Prober::new(
                local.ip(),
                config.health,
                shared.clone(),
                counters[workers].clone(),
            )
            .map_err(|source| StartError::Socket {
                what: "health probe",
                source,
            })?;
            tasks.push(tokio::spawn(prober.run()));
        }
        info!(
            vip = %local,
            workers,
            backends = table.len(),
            "load balancer started"
        );
        Ok(Self {
            shared,
            local,
            tasks,
        })
    }

    /// The VIP (with the port the OS chose if the configuration said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The routing table in use.
    pub fn table(&self) -> Arc<RoutingTable> {
        self.shared.table()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// A function that takes a snapshot of the counters whenever called (for a metrics
    /// endpoint that outlives borrows of the balancer).
    pub fn stats_handle(&self) -> impl Fn() -> Stats + Send + Sync + 'static {
        let shared = self.shared.clone();
        move || shared.stats()
    }

    /// Replaces the backends, keeping the QUIC-LB configurations. Traffic keeps flowing:
    /// workers pick up the new table at their next receive batch.
    pub fn reload(&self, backends: Vec<Backend>) -> Result<(), TableError> {
        let configs = self.table().configs();
        self.reload_routing(configs, backends)
    }

    /// Replaces QUIC-LB configurations and backends (key rotation: keep the old config id
    /// next to the new one until the old connections are gone).
    pub fn reload_routing(
        &self,
        configs: Vec<Config>,
        backends: Vec<Backend>,
    ) -> Result<(), TableError> {
        let old = self.table();
        let new = Arc::new(RoutingTable::build(configs, backends, Some(&old))?);
        info!(
            backends = new.len(),
            configs = new.router().configs().count(),
            "routing table reloaded"
        );
        *self.shared.table.write().unwrap_or_else(|e| e.into_inner()) = new;
        Ok(())
    }

    /// Stops the workers and the prober and waits until their sockets are closed.
    pub async fn shutdown(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        info!(vip = %self.local, "load balancer stopped");
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A UDP socket on the VIP with SO_REUSEPORT, so every worker can have one.
fn bind_vip(addr: SocketAddr) -> Result<std::net::UdpSocket, StartError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let setup = |source| StartError::Socket {
        what: "VIP",
        source,
    };
    let socket =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(setup)?;
    if addr.is_ipv6() {
        // Dual stack where the OS allows it; IPv4 clients then appear IPv4-mapped.
        let _ = socket.set_only_v6(false);
    }
    #[cfg(unix)]
    socket.set_reuse_port(true).map_err(setup)?;
    // Best effort: bursts of Initials need room.
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.set_nonblocking(true).map_err(setup)?;
    socket
        .bind(&addr.into())
        .map_err(|source| StartError::Bind { addr, source })?;
    Ok(socket.into())
}

/// One datagram or a GSO run of equal-sized datagrams to one destination.
#[derive(Debug)]
struct Run {
    dst: SocketAddr,
    src_ip: Option<IpAddr>,
    ecn: Option<EcnCodepoint>,
    buf: Vec<u8>,
    seg: usize,
    count: usize,
    closed: bool,
}

/// The datagrams one receive batch produces, grouped into GSO runs per destination.
///
/// Datagrams for one destination keep their order; datagrams for different destinations may be
/// sent in another order than they arrived (they belong to different backends or clients, so no
/// flow is reordered). Grouping non-consecutive datagrams is what turns a batch from many
/// clients, interleaved over the backends, into one send per backend instead of one per
/// datagram.
#[derive(Debug, Default)]
struct Out {
    runs: Vec<Run>,
    /// Emptied buffers of earlier batches, reused to avoid allocating per batch.
    spare: Vec<Vec<u8>>,
}

impl Out {
    fn clear(&mut self) {
        for mut r in self.runs.drain(..) {
            r.buf.clear();
            self.spare.push(r.buf);
        }
    }

    /// Appends one datagram written by `write` to the latest run to the same destination (same
    /// source and ECN) when GSO allows: fewer than `max_segments`, not longer than the run's
    /// segments, and the run not closed by a shorter segment. Otherwise it starts a run.
    fn push(
        &mut self,
        dst: SocketAddr,
        src_ip: Option<IpAddr>,
        ecn: Option<EcnCodepoint>,
        max_segments: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> usize {
        let open = self
            .runs
            .iter()
            .rposition(|r| r.dst == dst && r.src_ip == src_ip && r.ecn == ecn)
            .filter(|&i| !self.runs[i].closed && self.runs[i].count < max_segments);
        if let Some(i) = open {
            let r = &mut self.runs[i];
            let start = r.buf.len();
            write(&mut r.buf);
            let len = r.buf.len() - start;
            if len <= r.seg && r.buf.len() <= MAX_GSO_BYTES {
                r.count += 1;
                r.closed = len < r.seg;
                return len;
            }
            // It does not fit this run (longer, or over the GSO size): move it to a new one.
            let mut buf = self.spare.pop().unwrap_or_default();
            buf.extend_from_slice(&r.buf[start..]);
            r.buf.truncate(start);
            return self.start_run(dst, src_ip, ecn, buf);
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        write(&mut buf);
        self.start_run(dst, src_ip, ecn, buf)
    }

    fn start_run(
        &mut self,
        dst: SocketAddr,
        src_ip: Option<IpAddr>,
        ecn: Option<EcnCodepoint>,
        buf: Vec<u8>,
    ) -> usize {
        let len = buf.len();
        self.runs.push(Run {
            dst,
            src_ip,
            ecn,
            buf,
            seg: len,
            count: 1,
            closed: false,
        });
        len
    }
}

struct Worker {
    io: UdpSocket,
    state: UdpSocketState,
    local: SocketAddr,
    v6: bool,
    /// Bound to 0.0.0.0 or [::]: replies need an explicit source IP (the VIP the client used).
    unspecified: bool,
    shared: Arc<Shared>,
    counters: Arc<Counters>,
}

impl Worker {
    fn new(
        socket: std::net::UdpSocket,
        local: SocketAddr,
        shared: Arc<Shared>,
        counters: Arc<Counters>,
    ) -> io::Result<Self> {
        let state = UdpSocketState::new((&socket).into())?;
        let io = UdpSocket::from_std(socket)?;
        Ok(Self {
            io,
            state,
            local,
            v6: local.is_ipv6(),
            unspecified: local.ip().is_unspecified(),
            shared,
            counters,
        })
    }

    async fn run(self) {
        let mut buf = vec![0u8; BATCH * SLOT_LEN].into_boxed_slice();
        let mut metas = [RecvMeta::default(); BATCH];
        let mut out = Out::default();
        loop {
            if let Err(e) = self.io.readable().await {
                warn!(error = %e, "VIP socket failed; worker stops");
                return;
            }
            let mut batches = 0u32;
            loop {
                let received = {
                    let mut iovs = recv_slots::<BATCH>(&mut buf, SLOT_LEN);
                    self.io.try_io(Interest::READABLE, || {
                        self.state.recv((&self.io).into(), &mut iovs, &mut metas)
                    })
                };
                let n = match received {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        debug!(error = %e, "receive error");
                        break;
                    }
                };
                self.counters.rx_calls.fetch_add(1, RELAXED);
                let table = self.shared.table();
                let max_segments = self.state.max_gso_segments().max(1);
                out.clear();
                for (i, meta) in metas.iter().take(n).enumerate() {
                    let Some(slot) = buf.get(i * SLOT_LEN..(i + 1) * SLOT_LEN) else {
                        continue;
                    };
                    let data = &slot[..meta.len.min(SLOT_LEN)];
                    let stride = if meta.stride == 0 {
                        data.len().max(1)
                    } else {
                        meta.stride
                    };
                    if data.is_empty() {
                        // An empty datagram: not QUIC, but counted like any other.
                        self.handle(&table, meta, data, max_segments, &mut out);
                    }
                    for datagram in data.chunks(stride) {
                        self.handle(&table, meta, datagram, max_segments, &mut out);
                    }
                }
                self.flush(&out).await;
                batches += 1;
                if batches.is_multiple_of(BATCHES_PER_YIELD) {
                    tokio::task::yield_now().await;
                }
            }
        }
    }

    /// Routes one datagram into `out`.
    fn handle(
        &self,
        table: &RoutingTable,
        meta: &RecvMeta,
        datagram: &[u8],
        max_segments: usize,
        out: &mut Out,
    ) {
        let c = &self.counters;
        c.rx_packets.fetch_add(1, RELAXED);
        c.rx_bytes.fetch_add(datagram.len() as u64, RELAXED);
        let source = canonical(meta.addr);
        let from_backend = table.backend_at(source);

        if proxy_v2::has_signature(datagram) {
            // A reply from a backend, or a forgery: only backends may speak PROXY to the VIP.
            let Some(i) = from_backend else {
                c.dropped(DropReason::SpoofedProxyHeader);
                return;
            };
            match proxy_v2::decode(datagram) {
                Ok((Header::Proxy { src, dst }, payload)) => {
                    if payload.is_empty() {
                        c.dropped(DropReason::EmptyPayload);
                        return;
                    }
                    let Some(client) = for_socket(dst, self.v6) else {
                        c.dropped(DropReason::AddressFamily);
                        return;
                    };
                    let src_ip = (self.unspecified && !src.ip().is_unspecified())
                        .then(|| src_ip_for_socket(src.ip(), self.v6));
                    out.push(client, src_ip, meta.ecn, max_segments, |b| {
                        b.extend_from_slice(payload)
                    });
                    if let Some(e) = table.entry(i) {
                        e.counters.record_to_client(payload.len());
                    }
                }
                Ok((Header::Local, _)) => c.dropped(DropReason::UnexpectedLocal),
                Err(_) => c.dropped(DropReason::BadProxyHeader),
            }
            return;
        }
        if from_backend.is_some() {
            c.dropped(DropReason::BadProxyHeader);
            return;
        }

        let i = match table.route(datagram) {
            Decision::ServerId(i) => {
                c.routed.fetch_add(1, RELAXED);
                i
            }
            Decision::Hashed(i, why) => {
                c.fallback(why);
                i
            }
            Decision::Unroutable(u) => {
                c.unroutable_dropped(u);
                return;
            }
            Decision::NoBackend => {
                c.dropped(DropReason::NoBackend);
                return;
            }
        };
        let Some(entry) = table.entry(i) else {
            c.dropped(DropReason::NoBackend);
            return;
        };
        let Some(backend) = for_socket(entry.backend.addr, self.v6) else {
            c.dropped(DropReason::AddressFamily);
            return;
        };
        let vip = SocketAddr::new(
            meta.dst_ip.map_or(self.local.ip(), |ip| ip.to_canonical()),
            self.local.port(),
        );
        let len = out.push(backend, None, meta.ecn, max_segments, |b| {
            proxy_v2::encode(source, vip, datagram, b);
        });
        entry.counters.record_to_backend(len);
    }

    /// Sends every run; a failed GSO run is retried datagram by datagram.
    async fn flush(&self, out: &Out) {
        for r in &out.runs {
            let contents = &r.buf[..];
            let t = Transmit {
                destination: r.dst,
                ecn: r.ecn,
                contents,
                segment_size: (r.count > 1).then_some(r.seg),
                src_ip: r.src_ip,
            };
            match self.send(&t).await {
                Ok(()) => self.sent(r.count, contents.len()),
                Err(e) if r.count > 1 => {
                    debug!(error = %e, dst = %r.dst, "GSO send failed; sending one by one");
                    for seg in contents.chunks(r.seg) {
                        let single = Transmit {
                            contents: seg,
                            segment_size: None,
                            ..t.clone()
                        };
                        match self.send(&single).await {
                            Ok(()) => self.sent(1, seg.len()),
                            Err(_) => self.counters.dropped(DropReason::SendError),
                        }
                    }
                }
                Err(e) => {
                    debug!(error = %e, dst = %r.dst, "send failed");
                    self.counters.dropped(DropReason::SendError);
                }
            }
        }
    }

    fn sent(&self, packets: usize, bytes: usize) {
        self.counters.tx_calls.fetch_add(1, RELAXED);
        self.counters.tx_packets.fetch_add(packets as u64, RELAXED);
        self.counters.tx_bytes.fetch_add(bytes as u64, RELAXED);
    }

    /// Sends one transmit, waiting while the socket buffer is full.
    async fn send(&self, t: &Transmit<'_>) -> io::Result<()> {
        loop {
            match self.io.try_io(Interest::WRITABLE, || {
                self.state.try_send((&self.io).into(), t)
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.io.writable().await?,
                other => return other,
            }
        }
    }
}

const RELAXED: std::sync::atomic::Ordering = std::sync::atomic::Ordering::Relaxed;

fn src_ip_for_socket(ip: IpAddr, v6: bool) -> IpAddr {
    match (ip.to_canonical(), v6) {
        (IpAddr::V4(v4), true) => IpAddr::V6(v4.to_ipv6_mapped()),
        (ip, _) => ip,
    }
}

/// Sends LOCAL probes to every backend each interval and flips their health.
struct Prober {
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
    config: HealthConfig,
    shared: Arc<Shared>,
    counters: Arc<Counters>,
}

impl Prober {
    /// Probes leave from the VIP's IP when it is a specific address (so a backend that only
    /// accepts the balancer's IP accepts them), from an ephemeral port outside the VIP's
    /// SO_REUSEPORT group (which would otherwise take a share of client traffic).
    fn new(
        vip: IpAddr,
        config: HealthConfig,
        shared: Arc<Shared>,
        counters: Arc<Counters>,
    ) -> io::Result<Self> {
        let bind = |unspecified: IpAddr, same_family: bool| -> Option<UdpSocket> {
            let ip = if same_family && !vip.is_unspecified() {
                vip
            } else {
                unspecified
            };
            let socket = std::net::UdpSocket::bind((ip, 0)).ok()?;
            socket.set_nonblocking(true).ok()?;
            UdpSocket::from_std(socket).ok()
        };
        let v4 = bind(IpAddr::V4(Ipv4Addr::UNSPECIFIED), vip.is_ipv4());
        let v6 = bind(IpAddr::V6(Ipv6Addr::UNSPECIFIED), vip.is_ipv6());
        if v4.is_none() && v6.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                "no IPv4 or IPv6 socket for probes",
            ));
        }
        Ok(Self {
            v4,
            v6,
            config,
            shared,
            counters,
        })
    }

    async fn run(self) {
        let mut answered = HashSet::new();
        let mut buf4 = [0u8; 512];
        let mut buf6 = [0u8; 512];
        loop {
            let table = self.shared.table();
            answered.clear();
            for e in table.entries() {
                let addr = e.backend.addr;
                let socket = if addr.is_ipv4() { &self.v4 } else { &self.v6 };
                let Some(s) = socket else { continue };
                // Waits only while the socket buffer is full, and never past one interval.
                let sent =
                    tokio::time::timeout(self.config.interval, s.send_to(&proxy_v2::LOCAL, addr))
                        .await;
                if matches!(sent, Ok(Ok(_))) {
                    self.counters.probes_sent.fetch_add(1, RELAXED);
                }
            }
            let deadline = tokio::time::Instant::now() + self.config.interval;
            loop {
                let from = tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    r = recv(self.v4.as_ref(), &mut buf4) => r.map(|(n, a)| (buf4.get(..n).map(is_local), a)),
                    r = recv(self.v6.as_ref(), &mut buf6) => r.map(|(n, a)| (buf6.get(..n).map(is_local), a)),
                };
                // Only backends' answers count (and are kept: the set stays small).
                if let Ok((Some(true), addr)) = from
                    && table.backend_at(addr).is_some()
                {
                    self.counters.probes_answered.fetch_add(1, RELAXED);
                    answered.insert(canonical(addr));
                }
            }
            for e in table.entries() {
                let ok = answered.contains(&e.backend.addr);
                match e
                    .health
                    .record(ok, self.config.down_after, self.config.up_after)
                {
                    Some(true) => {
                        info!(server_id = %e.backend.server_id, addr = %e.backend.addr, "backend up")
                    }
                    Some(false) => {
                        warn!(server_id = %e.backend.server_id, addr = %e.backend.addr, "backend down for new flows")
                    }
                    None => {}
                }
            }
        }
    }
}

fn is_local(d: &[u8]) -> bool {
    matches!(proxy_v2::decode(d), Ok((Header::Local, _)))
}

async fn recv(socket: Option<&UdpSocket>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    #[test]
    fn runs_group_equal_segments_to_one_destination() {
        let mut out = Out::default();
        let x = a("127.0.0.1:1");
        let y = a("127.0.0.1:2");
        for len in [100, 100, 100, 60] {
            out.push(x, None, None, 64, |b| b.extend(std::iter::repeat_n(1, len)));
        }
        // A shorter segment closed the run; same size again starts a new one.
        out.push(x, None, None, 64, |b| b.extend([1; 100]));
        out.push(y, None, None, 64, |b| b.extend([1; 100]));
        out.push(y, None, Some(EcnCodepoint::Ect0), 64, |b| {
            b.extend([1; 100])
        });
        // A longer segment cannot join.
        out.push(y, None, Some(EcnCodepoint::Ect0), 64, |b| {
            b.extend([1; 120])
        });
        let shape: Vec<(usize, usize)> = out.runs.iter().map(|r| (r.count, r.seg)).collect();
        assert_eq!(shape, [(4, 100), (1, 100), (1, 100), (1, 100), (1, 120)]);
        // Interleaved destinations: one run per destination, each in its own arrival order.
        out.clear();
        for k in 0..12u8 {
            let dst = if k % 3 == 0 {
                x
            } else if k % 3 == 1 {
                y
            } else {
                a("127.0.0.1:3")
            };
            out.push(dst, None, None, 64, |b| b.extend([k; 50]));
        }
        let shape: Vec<(SocketAddr, usize)> = out.runs.iter().map(|r| (r.dst, r.count)).collect();
        assert_eq!(shape, [(x, 4), (y, 4), (a("127.0.0.1:3"), 4)]);
        let firsts: Vec<u8> = out.runs[1].buf.chunks(50).map(|c| c[0]).collect();
        assert_eq!(firsts, [1, 4, 7, 10], "order kept within a destination");
        // The segment limit.
        out.clear();
        for _ in 0..5 {
            out.push(x, None, None, 2, |b| b.extend([1; 10]));
        }
        let counts: Vec<usize> = out.runs.iter().map(|r| r.count).collect();
        assert_eq!(counts, [2, 2, 1]);
    }
}
