//! [`AnycastSocket`]: the socket of a fleet server that shares one anycast address with the
//! rest of its fleet and has a unicast address of its own.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, TokioRuntime, UdpPoller};
use serde::Serialize;
use voq_quic_lb::{Route, Router, ServerId};

use crate::proxy_v2::{self, Header};
use crate::socket::{RecvScratch, SEND_BUF};

/// Receive batches in which everything was forwarded or dropped before `poll_recv` yields.
const MAX_EMPTY_BATCHES: usize = 16;

/// Where an anycast server forwards datagrams that belong to another server of its fleet.
#[derive(Debug, Clone, Default)]
pub struct FleetRoutes {
    /// Decodes the server id in a connection ID (QUIC-LB), as `voq lb` does.
    pub router: Router,
    /// This server's id: its datagrams are never forwarded.
    pub own: Option<ServerId>,
    /// The other servers: server id → unicast address.
    pub peers: HashMap<ServerId, SocketAddr>,
}

/// What to do with a datagram that arrived on the anycast address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnycastDecision {
    /// It is ours (or a new connection's): quinn takes it.
    Local,
    /// Its connection ID names another server of the fleet: send it there.
    Forward(SocketAddr),
    /// Its connection ID names a server this one does not know; quinn takes it (and drops it
    /// without a stateless reset, as the connection ID generator rejects it).
    UnknownServer,
}

impl FleetRoutes {
    /// The decision for one datagram that arrived on the anycast address (pure, allocation
    /// free). A client's Initial and 0-RTT packets are always answered here, whatever their
    /// client-chosen DCID happens to look like: this server is the one the anycast route chose.
    pub fn decide(&self, datagram: &[u8]) -> AnycastDecision {
        if is_client_chosen_dcid(datagram) {
            return AnycastDecision::Local;
        }
        match self.router.route(datagram) {
            Route::Server { server_id, .. } if Some(server_id) == self.own => {
                AnycastDecision::Local
            }
            Route::Server { server_id, .. } => match self.peers.get(&server_id) {
                Some(&peer) => AnycastDecision::Forward(peer),
                None => AnycastDecision::UnknownServer,
            },
            Route::Unroutable(_) => AnycastDecision::Local,
        }
    }
}

/// Long-header Initial and 0-RTT packets (QUIC v1 and v2 type bits) and version negotiation:
/// their DCID is the client's choice, not a server's.
fn is_client_chosen_dcid(datagram: &[u8]) -> bool {
    let Some(&first) = datagram.first() else {
        return false;
    };
    if first & 0x80 == 0 {
        return false;
    }
    let version = match datagram.get(1..5) {
        Some(v) => u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
        None => return true,
    };
    let kind = (first >> 4) & 0x03;
    match version {
        0 => true,
        // QUIC v2 (RFC 9369): Initial 0b01, 0-RTT 0b10.
        0x6b33_43cf => kind == 0b01 || kind == 0b10,
        // QUIC v1 and anything else we may accept: Initial 0b00, 0-RTT 0b01.
        _ => kind == 0b00 || kind == 0b01,
    }
}

/// A [`quinn::AsyncUdpSocket`] over two UDP sockets: the fleet's shared **anycast** address,
/// where handshakes land, and this server's own **unicast** address, which it advertises as
/// its `preferred_address` and where its calls move once their clients migrate.
///
/// - **Anycast receive**: a datagram whose connection ID (QUIC-LB) names another server of the
///   fleet (a client that did not migrate, after the routers' ECMP set changed) is forwarded,
///   statelessly, to that server's unicast address inside a PROXY v2 header (source = the
///   client, destination = the anycast address). Everything else goes to quinn, with the
///   anycast IP as its local IP.
/// - **Unicast receive**: a datagram with a PROXY v2 header from a fleet peer's IP is a
///   forwarded one: quinn sees the client's address and the anycast IP, so it answers from the
///   anycast address, directly to the client. Any other datagram is a client's, with the
///   unicast IP as its local IP.
/// - **Send**: from the anycast socket when quinn's source IP is the anycast IP, else from the
///   unicast socket. Which one a connection uses follows the local address its client's latest
///   packets arrived on (our quinn-proto patch), so a call that moved to the unicast address
///   is answered from there.
///
/// The two addresses must differ in IP (quinn tells them apart by IP only).
pub struct AnycastSocket {
    anycast: Arc<dyn AsyncUdpSocket>,
    unicast: Arc<dyn AsyncUdpSocket>,
    anycast_addr: SocketAddr,
    unicast_addr: SocketAddr,
    routes: std::sync::RwLock<Arc<FleetRoutes>>,
    recv: [Mutex<RecvScratch>; 2],
    /// Which socket `poll_recv` reads first (alternates, so neither starves).
    anycast_first: AtomicBool,
    counters: AnycastCounters,
}

impl fmt::Debug for AnycastSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnycastSocket")
            .field("anycast", &self.anycast_addr)
            .field("unicast", &self.unicast_addr)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct AnycastCounters {
    anycast_received: AtomicU64,
    unicast_received: AtomicU64,
    forwarded_out: AtomicU64,
    forwarded_in: AtomicU64,
    forward_errors: AtomicU64,
    unknown_server: AtomicU64,
    not_a_peer: AtomicU64,
    bad_header: AtomicU64,
    too_large: AtomicU64,
}

/// Counters of an [`AnycastSocket`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AnycastStats {
    /// Datagrams from the anycast address passed to quinn.
    pub anycast_received: u64,
    /// Clients' datagrams from the unicast address passed to quinn.
    pub unicast_received: u64,
    /// Datagrams forwarded to another server of the fleet.
    pub forwarded_out: u64,
    /// Datagrams another server forwarded here, passed to quinn.
    pub forwarded_in: u64,
    /// Forwards that could not be sent (socket full or an error).
    pub forward_errors: u64,
    /// Anycast datagrams naming a server id this server does not know (passed to quinn, which
    /// drops them).
    pub unknown_server: u64,
    /// Dropped: a PROXY v2 header from an address that is not a fleet peer.
    pub not_a_peer: u64,
    /// Dropped: a PROXY v2 signature with an invalid, LOCAL or empty header.
    pub bad_header: u64,
    /// Dropped: the payload did not fit quinn's receive buffer.
    pub too_large: u64,
}

/// The two sockets of an [`AnycastSocket`], by index into `recv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Anycast = 0,
    Unicast = 1,
}

impl AnycastSocket {
    /// Wraps two bound sockets with quinn's tokio wrapper. Must be called inside a tokio
    /// runtime.
    pub fn new(
        anycast: std::net::UdpSocket,
        unicast: std::net::UdpSocket,
        routes: FleetRoutes,
    ) -> io::Result<Self> {
        let anycast_addr = anycast.local_addr()?;
        let unicast_addr = unicast.local_addr()?;
        if anycast_addr.ip() == unicast_addr.ip() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the anycast address {anycast_addr} and the unicast address {unicast_addr} \
                     must differ in IP: QUIC tells a connection's local addresses apart by IP"
                ),
            ));
        }
        if anycast_addr.ip().is_unspecified() || unicast_addr.ip().is_unspecified() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the anycast and unicast addresses must be specific addresses, not 0.0.0.0 or ::",
            ));
        }
        Ok(Self {
            anycast: TokioRuntime.wrap_udp_socket(anycast)?,
            unicast: TokioRuntime.wrap_udp_socket(unicast)?,
            anycast_addr,
            unicast_addr,
            routes: std::sync::RwLock::new(Arc::new(routes)),
            recv: [
                Mutex::new(RecvScratch::new()),
                Mutex::new(RecvScratch::new()),
            ],
            anycast_first: AtomicBool::new(true),
            counters: AnycastCounters::default(),
        })
    }

    /// The shared anycast address.
    pub fn anycast_addr(&self) -> SocketAddr {
        self.anycast_addr
    }

    /// This server's own address.
    pub fn unicast_addr(&self) -> SocketAddr {
        self.unicast_addr
    }

    /// Replaces the fleet's routes (a peer joined, left or moved).
    pub fn set_routes(&self, routes: FleetRoutes) {
        *self.routes.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(routes);
    }

    fn routes(&self) -> Arc<FleetRoutes> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> AnycastStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AnycastStats {
            anycast_received: l(&c.anycast_received),
            unicast_received: l(&c.unicast_received),
            forwarded_out: l(&c.forwarded_out),
            forwarded_in: l(&c.forwarded_in),
            forward_errors: l(&c.forward_errors),
            unknown_server: l(&c.unknown_server),
            not_a_peer: l(&c.not_a_peer),
            bad_header: l(&c.bad_header),
            too_large: l(&c.too_large),
        }
    }

    fn socket(&self, side: Side) -> &Arc<dyn AsyncUdpSocket> {
        match side {
            Side::Anycast => &self.anycast,
            Side::Unicast => &self.unicast,
        }
    }

    /// Handles one datagram from the kernel: `Some((client, local ip, payload))` when quinn
    /// should see it.
    fn accept<'a>(
        &self,
        side: Side,
        routes: &FleetRoutes,
        meta: &RecvMeta,
        datagram: &'a [u8],
    ) -> Option<(SocketAddr, IpAddr, &'a [u8])> {
        let bump = |c: &AtomicU64| {
            c.fetch_add(1, Ordering::Relaxed);
        };
        let source = crate::canonical(meta.addr);
        match side {
            Side::Anycast => match routes.decide(datagram) {
                AnycastDecision::Local => {
                    bump(&self.counters.anycast_received);
                    Some((source, self.anycast_addr.ip(), datagram))
                }
                AnycastDecision::UnknownServer => {
                    bump(&self.counters.unknown_server);
                    Some((source, self.anycast_addr.ip(), datagram))
                }
                AnycastDecision::Forward(peer) => {
                    self.forward(source, peer, datagram);
                    None
                }
            },
            Side::Unicast if proxy_v2::has_signature(datagram) => {
                if !routes.peers.values().any(|p| p.ip() == source.ip()) {
                    bump(&self.counters.not_a_peer);
                    return None;
                }
                match proxy_v2::decode(datagram) {
                    Ok((Header::Proxy { src, dst }, payload)) if !payload.is_empty() => {
                        bump(&self.counters.forwarded_in);
                        Some((crate::canonical(src), dst.ip().to_canonical(), payload))
                    }
                    _ => {
                        bump(&self.counters.bad_header);
                        None
                    }
                }
            }
            Side::Unicast => {
                bump(&self.counters.unicast_received);
                Some((source, self.unicast_addr.ip(), datagram))
            }
        }
    }

    /// Sends a client's datagram on to `peer`, from the unicast socket, with the client's
    /// address and the anycast address in a PROXY v2 header. Best effort, like any datagram.
    fn forward(&self, client: SocketAddr, peer: SocketAddr, datagram: &[u8]) {
        let sent = SEND_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            proxy_v2::encode(client, self.anycast_addr, datagram, &mut buf);
            let transmit = Transmit {
                destination: peer,
                ecn: None,
                contents: &buf,
                segment_size: None,
                src_ip: None,
            };
            self.unicast.try_send(&transmit)
        });
        let counter = match sent {
            Ok(()) => &self.counters.forwarded_out,
            Err(_) => &self.counters.forward_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Moves datagrams of one socket into quinn's buffers, from `out` on; reads the kernel when
    /// nothing is buffered. Returns the new `out`, or the socket's error when nothing was read.
    fn drain(
        &self,
        side: Side,
        routes: &FleetRoutes,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
        mut out: usize,
    ) -> io::Result<usize> {
        let max = bufs.len().min(meta.len());
        let mut scratch = self.recv[side as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for _ in 0..MAX_EMPTY_BATCHES {
            out = scratch.deliver(bufs, meta, out, &self.counters.too_large, |m, d| {
                self.accept(side, routes, m, d)
            });
            if out >= max {
                return Ok(out);
            }
            match scratch.refill(&**self.socket(side), cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) if out == 0 => return Err(e),
                Poll::Ready(Err(_)) | Poll::Pending => return Ok(out),
            }
        }
        // Batch after batch forwarded or dropped: come back after other tasks ran.
        cx.waker().wake_by_ref();
        Ok(out)
    }
}

impl AsyncUdpSocket for AnycastSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(BothWritable {
            anycast: self.anycast.clone().create_io_poller(),
            unicast: self.unicast.clone().create_io_poller(),
        })
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let anycast_ip = self.anycast_addr.ip();
        let socket = match transmit.src_ip.map(|ip| ip.to_canonical()) {
            Some(ip) if ip == anycast_ip => &self.anycast,
            _ => &self.unicast,
        };
        // Each socket is bound to its address: no source to pick.
        let transmit = Transmit {
            src_ip: None,
            ..*transmit
        };
        socket.try_send(&transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let routes = self.routes();
        let anycast_first = self.anycast_first.fetch_xor(true, Ordering::Relaxed);
        let order = if anycast_first {
            [Side::Anycast, Side::Unicast]
        } else {
            [Side::Unicast, Side::Anycast]
        };
        let mut out = 0;
        let mut error = None;
        for side in order {
            match self.drain(side, &routes, cx, bufs, meta, out) {
                Ok(n) => out = n,
                Err(e) => error = Some(e),
            }
        }
        match (out, error) {
            (0, Some(e)) => Poll::Ready(Err(e)),
            (0, None) => Poll::Pending,
            (n, _) => Poll::Ready(Ok(n)),
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.unicast_addr)
    }

    fn max_transmit_segments(&self) -> usize {
        self.anycast
            .max_transmit_segments()
            .min(self.unicast.max_transmit_segments())
    }

    fn max_receive_segments(&self) -> usize {
        1
    }

    fn may_fragment(&self) -> bool {
        self.anycast.may_fragment() || self.unicast.may_fragment()
    }
}

/// Writable when both sockets are: quinn retries a blocked send on whichever socket the
/// connection uses, and one socket is rarely blocked alone.
#[derive(Debug)]
struct BothWritable {
    anycast: Pin<Box<dyn UdpPoller>>,
    unicast: Pin<Box<dyn UdpPoller>>,
}

impl UdpPoller for BothWritable {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let a = this.anycast.as_mut().poll_writable(cx);
        let u = this.unicast.as_mut().poll_writable(cx);
        match (a, u) {
            (Poll::Ready(Err(e)), _) | (_, Poll::Ready(Err(e))) => Poll::Ready(Err(e)),
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => Poll::Ready(Ok(())),
            _ => Poll::Pending,
        }
    }
}

/// A quinn endpoint on an [`AnycastSocket`]. Set the unicast address as the server config's
/// preferred address, and install a QUIC-LB connection ID generator in `config` so the fleet
/// can forward its connections.
pub fn anycast_endpoint(
    config: quinn::EndpointConfig,
    server: Option<quinn::ServerConfig>,
    socket: Arc<AnycastSocket>,
) -> io::Result<quinn::Endpoint> {
    quinn::Endpoint::new_with_abstract_socket(config, server, socket, Arc::new(TokioRuntime))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use voq_quic_lb::{Config, Encoder};

    fn fleet() -> (FleetRoutes, Vec<Vec<u8>>) {
        let config = Config::new(0, 2, 6).unwrap();
        let router = Router::new().with_config(config.clone());
        let ids = [[0x0a, 0x01], [0x0a, 0x02]];
        let cids = ids
            .iter()
            .map(|id| {
                let mut e = Encoder::new(config.clone(), id, [7; 32]).unwrap();
                e.generate().as_bytes().to_vec()
            })
            .collect();
        let routes = FleetRoutes {
            router,
            own: ServerId::from_slice(&ids[0]),
            peers: HashMap::from([(
                ServerId::from_slice(&ids[1]).unwrap(),
                "198.18.22.2:4433".parse().unwrap(),
            )]),
        };
        (routes, cids)
    }

    fn short(dcid: &[u8]) -> Vec<u8> {
        let mut d = vec![0x40];
        d.extend_from_slice(dcid);
        d.extend_from_slice(&[0; 30]);
        d
    }

    fn long(first: u8, version: u32, dcid: &[u8]) -> Vec<u8> {
        let mut d = vec![first];
        d.extend_from_slice(&version.to_be_bytes());
        d.push(dcid.len() as u8);
        d.extend_from_slice(dcid);
        d.push(0);
        d.extend_from_slice(&[0; 30]);
        d
    }

    #[test]
    fn a_peers_connection_is_forwarded_and_ours_stays() {
        let (routes, cids) = fleet();
        assert_eq!(routes.decide(&short(&cids[0])), AnycastDecision::Local);
        assert_eq!(
            routes.decide(&short(&cids[1])),
            AnycastDecision::Forward("198.18.22.2:4433".parse().unwrap())
        );
        // A Handshake packet (v1 type 0b10) carries the server's CID: routed too.
        assert_eq!(
            routes.decide(&long(0xe0, 1, &cids[1])),
            AnycastDecision::Forward("198.18.22.2:4433".parse().unwrap())
        );
    }

    #[test]
    fn initials_are_always_answered_here() {
        let (routes, cids) = fleet();
        // A client's random DCID may look like a peer's CID: still ours (v1 Initial, 0-RTT).
        assert_eq!(
            routes.decide(&long(0xc0, 1, &cids[1])),
            AnycastDecision::Local
        );
        assert_eq!(
            routes.decide(&long(0xd0, 1, &cids[1])),
            AnycastDecision::Local
        );
        // v2 Initial is type 0b01.
        assert_eq!(
            routes.decide(&long(0xd0, 0x6b33_43cf, &cids[1])),
            AnycastDecision::Local
        );
    }

    #[test]
    fn unknown_servers_and_garbage_are_not_forwarded() {
        let (mut routes, cids) = fleet();
        routes.peers.clear();
        assert_eq!(
            routes.decide(&short(&cids[1])),
            AnycastDecision::UnknownServer
        );
        for junk in [&[][..], &[0x40][..], &[0xff, 0, 0][..]] {
            assert_ne!(
                std::mem::discriminant(&routes.decide(junk)),
                std::mem::discriminant(&AnycastDecision::Forward("1.2.3.4:5".parse().unwrap()))
            );
        }
    }
}
