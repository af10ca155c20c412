//! [`TunnelSocket`]: the socket a voq server uses behind the balancer.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, TokioRuntime, UdpPoller};
use serde::Serialize;

use crate::proxy_v2::{self, Header};

/// Receive slots read from the kernel at once (recvmmsg batch).
const SLOTS: usize = 8;
/// Bytes per slot: a GRO batch can hold up to 64 KiB.
const SLOT_LEN: usize = 64 * 1024;
/// Receive batches in which everything was dropped before `poll_recv` yields.
const MAX_EMPTY_BATCHES: usize = 16;

/// A [`quinn::AsyncUdpSocket`] for a server behind `voq lb`: it speaks the balancer's PROXY
/// protocol v2 tunnel, so quinn sees clients' real addresses and replies go back through the
/// balancer's VIP.
///
/// - **Receive**: each datagram must start with a PROXY v2 header (PROXY command, UDP); the
///   header is stripped and quinn sees the payload with the header's *source* (the client) as
///   its address and the header's destination IP (the VIP) as its local IP. Datagrams
///   without a valid header, or from a source IP not allowed (by default only the
///   balancer's IP), are dropped and counted, never passed to quinn.
/// - **Send**: every datagram quinn sends gets a header with destination = the transmit's
///   destination (the client) and source = the VIP (the transmit's source IP if quinn gives
///   one, else the balancer address's IP, with the balancer address's port), and goes to the
///   one configured balancer address. No per-client state: the return address is
///   configuration.
/// - **Health probes**: a LOCAL header (16 octets, no payload) is answered at once with the
///   same 16 octets, sent back to the probe's source from the address it arrived at. It is
///   never passed to quinn.
///
/// Batching: receives use quinn's own tokio socket (recvmmsg, GRO on Linux). A GRO batch may
/// mix clients, so it is split into one datagram per client before quinn sees it
/// ([`max_receive_segments`](AsyncUdpSocket::max_receive_segments) is 1), at the cost of one
/// copy per datagram. Sends keep GSO: each segment gets its own header (all headers of one
/// transmit have the same length, so the segments stay equal-sized).
///
/// Every tunnelled datagram is [`proxy_v2::V4_LEN`] (28) or [`proxy_v2::V6_LEN`] (52) octets
/// longer than the QUIC datagram inside: give the balancer–backend path that much more MTU
/// than the client path, or lower quinn's `max_udp_payload_size` / MTU discovery bound.
pub struct TunnelSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    /// Where replies go: the balancer's VIP, configured or learned.
    lb: std::sync::RwLock<Option<SocketAddr>>,
    /// Learn `lb` from the source of tunnelled datagrams (see [`TunnelSocket::learning`]).
    learn: bool,
    allowed: Allowed,
    recv: Mutex<RecvScratch>,
    counters: TunnelCounters,
}

/// Which sources may send tunnelled datagrams.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    Any,
    Ips(Vec<IpAddr>),
    /// Loopback and private addresses (RFC 1918, RFC 4193, link-local): a balancer on the same
    /// host or network, never one across the internet.
    Private,
}

impl fmt::Debug for TunnelSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelSocket")
            .field("local", &self.inner.local_addr().ok())
            .field("lb", &self.lb())
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct TunnelCounters {
    received: AtomicU64,
    sent: AtomicU64,
    probes: AtomicU64,
    no_header: AtomicU64,
    bad_header: AtomicU64,
    not_allowed: AtomicU64,
    too_large: AtomicU64,
    empty: AtomicU64,
    no_lb: AtomicU64,
}

/// Counters of a [`TunnelSocket`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TunnelStats {
    /// Datagrams passed to quinn.
    pub received: u64,
    /// Datagrams sent to the balancer (GSO segments counted one by one).
    pub sent: u64,
    /// Health probes answered.
    pub probes: u64,
    /// Dropped: no PROXY v2 signature.
    pub no_header: u64,
    /// Dropped: a PROXY v2 signature but an invalid or unsupported header.
    pub bad_header: u64,
    /// Dropped: from a source IP that is not allowed.
    pub not_allowed: u64,
    /// Dropped: the payload did not fit quinn's receive buffer.
    pub too_large: u64,
    /// Replies dropped because no balancer address is known yet (learning mode).
    pub no_lb: u64,
    /// Dropped: a PROXY header with no payload.
    pub empty: u64,
}

impl TunnelStats {
    /// All dropped datagrams.
    pub fn dropped(&self) -> u64 {
        self.no_header
            + self.bad_header
            + self.not_allowed
            + self.too_large
            + self.empty
            + self.no_lb
    }
}

impl TunnelSocket {
    /// Binds a UDP socket at `addr` that tunnels through the balancer at `lb` (its VIP).
    /// Must be called inside a tokio runtime.
    pub fn bind(addr: SocketAddr, lb: SocketAddr) -> io::Result<Self> {
        Self::new(std::net::UdpSocket::bind(addr)?, lb)
    }

    /// Wraps a bound socket with quinn's tokio wrapper. Must be called inside a tokio runtime.
    pub fn new(socket: std::net::UdpSocket, lb: SocketAddr) -> io::Result<Self> {
        let local = socket.local_addr()?;
        let lb = crate::canonical(lb);
        let lb = for_socket(lb, local.is_ipv6()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("balancer address {lb} is IPv6 but the socket {local} is IPv4"),
            )
        })?;
        Ok(Self {
            inner: TokioRuntime.wrap_udp_socket(socket)?,
            lb: std::sync::RwLock::new(Some(lb)),
            learn: false,
            allowed: Allowed::Ips(vec![lb.ip().to_canonical()]),
            recv: Mutex::new(RecvScratch::new()),
            counters: TunnelCounters::default(),
        })
    }

    /// A tunnel socket that learns the balancer's address from the datagrams it tunnels: every
    /// tunnelled datagram and probe comes from the VIP socket, so replies go to the source of
    /// the latest one. One address for the whole socket — no per-connection state. Tunnelled
    /// datagrams are accepted only from loopback and private addresses; pin the VIP with
    /// [`TunnelSocket::new`] for a balancer on a public address.
    pub fn learning(socket: std::net::UdpSocket) -> io::Result<Self> {
        Ok(Self {
            inner: TokioRuntime.wrap_udp_socket(socket)?,
            lb: std::sync::RwLock::new(None),
            learn: true,
            allowed: Allowed::Private,
            recv: Mutex::new(RecvScratch::new()),
            counters: TunnelCounters::default(),
        })
    }

    /// Accepts tunnelled datagrams (and probes) only from these source IPs. The default is
    /// the balancer address's IP; `None` accepts any source (only behind a firewall).
    pub fn with_allowed_sources(mut self, allowed: Option<Vec<IpAddr>>) -> Self {
        self.allowed = match allowed {
            None => Allowed::Any,
            Some(ips) => Allowed::Ips(ips.into_iter().map(|ip| ip.to_canonical()).collect()),
        };
        self
    }

    /// The balancer address replies go to (`None` while learning and nothing came yet).
    pub fn lb(&self) -> Option<SocketAddr> {
        *self.lb.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> TunnelStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TunnelStats {
            received: l(&c.received),
            sent: l(&c.sent),
            probes: l(&c.probes),
            no_header: l(&c.no_header),
            bad_header: l(&c.bad_header),
            not_allowed: l(&c.not_allowed),
            too_large: l(&c.too_large),
            no_lb: l(&c.no_lb),
            empty: l(&c.empty),
        }
    }

    fn allowed(&self, source: IpAddr) -> bool {
        match &self.allowed {
            Allowed::Any => true,
            Allowed::Ips(ips) => ips.contains(&source.to_canonical()),
            Allowed::Private => match source.to_canonical() {
                IpAddr::V4(ip) => ip.is_loopback() || ip.is_private() || ip.is_link_local(),
                IpAddr::V6(ip) => {
                    ip.is_loopback() || ip.is_unique_local() || ip.is_unicast_link_local()
                }
            },
        }
    }

    /// In learning mode, remembers where tunnelled datagrams come from.
    fn learn_from(&self, source: SocketAddr) {
        if self.learn && self.lb() != Some(source) {
            *self.lb.write().unwrap_or_else(|e| e.into_inner()) = Some(source);
        }
    }

    /// Handles one datagram from the kernel. Returns the client address, the VIP and the
    /// payload range when it is for quinn.
    fn accept<'a>(
        &self,
        meta: &RecvMeta,
        datagram: &'a [u8],
    ) -> Option<(SocketAddr, SocketAddr, &'a [u8])> {
        let bump = |c: &AtomicU64| {
            c.fetch_add(1, Ordering::Relaxed);
        };
        if !self.allowed(meta.addr.ip()) {
            bump(&self.counters.not_allowed);
            return None;
        }
        match proxy_v2::decode(datagram) {
            Ok((Header::Proxy { src, dst }, payload)) => {
                if payload.is_empty() {
                    bump(&self.counters.empty);
                    return None;
                }
                self.learn_from(meta.addr);
                Some((src, dst, payload))
            }
            Ok((Header::Local, _)) => {
                self.learn_from(meta.addr);
                // The health probe: echo it to where it came from, from where it arrived.
                // Best effort; a probe lost to a full socket buffer is a missed probe.
                let reply = Transmit {
                    destination: meta.addr,
                    ecn: None,
                    contents: &proxy_v2::LOCAL,
                    segment_size: None,
                    src_ip: meta.dst_ip,
                };
                if self.inner.try_send(&reply).is_ok() {
                    bump(&self.counters.probes);
                }
                None
            }
            Err(proxy_v2::Error::Signature) => {
                bump(&self.counters.no_header);
                None
            }
            Err(_) => {
                bump(&self.counters.bad_header);
                None
            }
        }
    }
}

impl AsyncUdpSocket for TunnelSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let Some(lb) = self.lb() else {
            // Learning and nothing tunnelled has arrived: there is no one to reply to.
            self.counters.no_lb.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        let dst = transmit.destination;
        let src = SocketAddr::new(
            transmit.src_ip.map_or(lb.ip(), |ip| ip.to_canonical()),
            lb.port(),
        );
        let seg = transmit
            .segment_size
            .filter(|&s| s > 0)
            .unwrap_or(transmit.contents.len())
            .max(1);
        SEND_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            let mut segments = 0usize;
            let mut hlen = 0;
            for chunk in transmit.contents.chunks(seg) {
                hlen = proxy_v2::encode(src, dst, chunk, &mut buf);
                segments += 1;
            }
            let tunnelled = Transmit {
                destination: lb,
                ecn: transmit.ecn,
                contents: &buf,
                segment_size: (segments > 1).then_some(seg + hlen),
                src_ip: None,
            };
            self.inner.try_send(&tunnelled)?;
            self.counters
                .sent
                .fetch_add(segments as u64, Ordering::Relaxed);
            Ok(())
        })
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut scratch = self.recv.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..MAX_EMPTY_BATCHES {
            let out = scratch.deliver(bufs, meta, 0, &self.counters.too_large, |m, d| {
                self.accept(m, d)
                    .map(|(client, vip, p)| (client, vip.ip(), p))
            });
            if out > 0 {
                self.counters
                    .received
                    .fetch_add(out as u64, Ordering::Relaxed);
                return Poll::Ready(Ok(out));
            }
            // Everything buffered is used up (or was dropped): read the next batch.
            match scratch.refill(&*self.inner, cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        // Batch after batch of datagrams that were all dropped: let other tasks run, then
        // come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        1
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

thread_local! {
    /// Where [`TunnelSocket::try_send`] builds header + payload (quinn sends from many tasks).
    pub(crate) static SEND_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Datagrams read from the kernel and not yet handed to quinn.
pub(crate) struct RecvScratch {
    buf: Box<[u8]>,
    metas: [RecvMeta; SLOTS],
    filled: usize,
    slot: usize,
    offset: usize,
}

/// What a socket makes of one datagram from the kernel: the address and the local IP quinn should
/// see, and the payload (part of the datagram); `None` when it was dropped or handled there.
pub(crate) type Accepted<'d> = Option<(SocketAddr, IpAddr, &'d [u8])>;

impl RecvScratch {
    /// Hands buffered datagrams, each through `accept`, to quinn's `bufs` and `meta` from slot
    /// `out` on, until either runs out; returns the next free slot. A payload larger than its
    /// slot is dropped and counted in `too_large`.
    pub(crate) fn deliver(
        &mut self,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
        mut out: usize,
        too_large: &AtomicU64,
        mut accept: impl for<'d> FnMut(&RecvMeta, &'d [u8]) -> Accepted<'d>,
    ) -> usize {
        let max = bufs.len().min(meta.len());
        while out < max {
            let Some((m, range)) = self.next() else {
                break;
            };
            let Some(datagram) = self.buf.get(range) else {
                continue;
            };
            let Some((addr, local_ip, payload)) = accept(&m, datagram) else {
                continue;
            };
            let (Some(buf), Some(slot)) = (bufs.get_mut(out), meta.get_mut(out)) else {
                break;
            };
            let Some(dst) = buf.get_mut(..payload.len()) else {
                too_large.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            dst.copy_from_slice(payload);
            *slot = RecvMeta {
                addr,
                len: payload.len(),
                stride: payload.len(),
                ecn: m.ecn,
                dst_ip: Some(local_ip),
            };
            out += 1;
        }
        out
    }

    /// Reads the next batch from the kernel (recvmmsg, GRO) once everything buffered is used.
    pub(crate) fn refill(
        &mut self,
        socket: &dyn AsyncUdpSocket,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        let read = {
            let mut iovs = crate::recv_slots::<SLOTS>(&mut self.buf, SLOT_LEN);
            socket.poll_recv(cx, &mut iovs, &mut self.metas)
        };
        match read {
            Poll::Ready(Ok(n)) => {
                self.reset(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    pub(crate) fn new() -> Self {
        Self {
            buf: vec![0; SLOTS * SLOT_LEN].into_boxed_slice(),
            metas: [RecvMeta::default(); SLOTS],
            filled: 0,
            slot: 0,
            offset: 0,
        }
    }

    fn reset(&mut self, filled: usize) {
        self.filled = filled.min(SLOTS);
        self.slot = 0;
        self.offset = 0;
    }

    /// The next datagram: its slot's meta and its byte range in `buf`. GRO batches are split
    /// at `stride`.
    fn next(&mut self) -> Option<(RecvMeta, std::ops::Range<usize>)> {
        while self.slot < self.filled {
            let m = self.metas[self.slot];
            let len = m.len.min(SLOT_LEN);
            let start = self.slot * SLOT_LEN + self.offset;
            if len == 0 {
                // An empty datagram: reported once, so it is counted as dropped.
                self.slot += 1;
                return Some((m, start..start));
            }
            if self.offset < len {
                let stride = if m.stride == 0 { len } else { m.stride };
                let n = stride.min(len - self.offset);
                self.offset += n;
                return Some((m, start..start + n));
            }
            self.slot += 1;
            self.offset = 0;
        }
        None
    }
}

/// `addr` in the family of a socket (IPv4-mapped for IPv6 sockets); `None` when an IPv6
/// address cannot reach an IPv4 socket.
pub fn for_socket(addr: SocketAddr, socket_is_v6: bool) -> Option<SocketAddr> {
    match (addr, socket_is_v6) {
        (SocketAddr::V4(a), true) => Some(SocketAddr::new(
            IpAddr::V6(a.ip().to_ipv6_mapped()),
            a.port(),
        )),
        (SocketAddr::V6(a), false) => a
            .ip()
            .to_ipv4_mapped()
            .map(|v4| SocketAddr::new(IpAddr::V4(v4), a.port())),
        (a, _) => Some(a),
    }
}

/// A quinn endpoint on a [`TunnelSocket`]: what `voq serve` behind `voq lb` uses instead of
/// `quinn::Endpoint::server`. Install the QUIC-LB connection ID generator in `config` (see
/// `voq_quic_lb::CidGenerator`) so the balancer can route its connections.
pub fn endpoint(
    config: quinn::EndpointConfig,
    server: Option<quinn::ServerConfig>,
    socket: Arc<TunnelSocket>,
) -> io::Result<quinn::Endpoint> {
    quinn::Endpoint::new_with_abstract_socket(config, server, socket, Arc::new(TokioRuntime))
}
