//! The routing table: QUIC-LB configurations and backends, and the per-datagram decision.
//!
//! A [`RoutingTable`] is immutable once built; a reload builds a new one and swaps it in. The
//! only things that change inside are the health flags (written by the prober) and counters.
//! Routing a datagram reads the table and allocates nothing: there is no per-connection state
//! to grow.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use voq_quic_lb::{Config, Route, Router, ServerId, Unroutable};
use voq_tunnel::canonical;

use crate::hash;

/// One backend voq server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The server id it puts into its connection IDs.
    pub server_id: ServerId,
    /// The address its [`TunnelSocket`](crate::TunnelSocket) is bound to.
    pub addr: SocketAddr,
    /// Its share of new (unroutable) flows, relative to the others. 0 drains it: no new flows,
    /// its existing connections keep routing.
    pub weight: u32,
}

impl Backend {
    /// A backend with weight 1.
    pub fn new(server_id: ServerId, addr: SocketAddr) -> Self {
        Self {
            server_id,
            addr,
            weight: 1,
        }
    }

    /// Sets the weight.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }
}

/// An invalid routing table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    /// No QUIC-LB configuration: nothing could ever be routed by server id.
    #[error(
        "no QUIC-LB configuration: give at least one (config id, server id length, nonce length)"
    )]
    NoConfig,
    /// Two configurations with the same config id.
    #[error("QUIC-LB config id {0} is given twice")]
    DuplicateConfig(u8),
    /// Two backends with the same server id.
    #[error("backend server id {0} is given twice")]
    DuplicateServerId(String),
    /// Two backends with the same address.
    #[error("backend address {0} is given twice")]
    DuplicateAddress(SocketAddr),
    /// A server id whose length matches no configuration's server id length.
    #[error(
        "backend server id {server_id} is {len} octets, but no QUIC-LB configuration has that server id length"
    )]
    ServerIdLength {
        /// The server id, hex.
        server_id: String,
        /// Its length.
        len: usize,
    },
}

/// Health of one backend, shared between table versions and written by the prober.
#[derive(Debug)]
pub(crate) struct Health {
    up: AtomicBool,
    hits: AtomicU32,
    misses: AtomicU32,
}

impl Health {
    fn new() -> Self {
        // A new backend is up until probes say otherwise, so a reload that adds one takes
        // traffic at once.
        Self {
            up: AtomicBool::new(true),
            hits: AtomicU32::new(0),
            misses: AtomicU32::new(0),
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Records one probe round; returns `Some(new state)` when it flips.
    pub(crate) fn record(&self, answered: bool, down_after: u32, up_after: u32) -> Option<bool> {
        if answered {
            self.misses.store(0, Ordering::Relaxed);
            let hits = self.hits.fetch_add(1, Ordering::Relaxed).saturating_add(1);
            if !self.is_up() && hits >= up_after {
                self.up.store(true, Ordering::Relaxed);
                return Some(true);
            }
        } else {
            self.hits.store(0, Ordering::Relaxed);
            let misses = self
                .misses
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            if self.is_up() && misses >= down_after {
                self.up.store(false, Ordering::Relaxed);
                return Some(false);
            }
        }
        None
    }

    pub(crate) fn set(&self, up: bool) {
        self.hits.store(0, Ordering::Relaxed);
        self.misses.store(0, Ordering::Relaxed);
        self.up.store(up, Ordering::Relaxed);
    }
}

/// Traffic of one backend. Kept across reloads by server id.
#[derive(Debug, Default)]
pub(crate) struct BackendCounters {
    pub(crate) packets_to: AtomicU64,
    pub(crate) bytes_to: AtomicU64,
    pub(crate) packets_from: AtomicU64,
    pub(crate) bytes_from: AtomicU64,
}

impl BackendCounters {
    pub(crate) fn record_to_backend(&self, bytes: usize) {
        self.packets_to.fetch_add(1, Ordering::Relaxed);
        self.bytes_to.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn record_to_client(&self, bytes: usize) {
        self.packets_from.fetch_add(1, Ordering::Relaxed);
        self.bytes_from.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) backend: Backend,
    /// `hash64(server id)`: the backend's rendezvous key.
    key: u64,
    pub(crate) health: Arc<Health>,
    pub(crate) counters: Arc<BackendCounters>,
}

/// Why a datagram went to the fallback hash instead of the backend its DCID names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fallback {
    /// The DCID is unroutable (client-chosen, 0b111, unknown config, …).
    Unroutable(Unroutable),
    /// The DCID decodes to a server id no backend has.
    UnknownServer,
    /// The DCID names a backend that is down, and the packet may start a connection (a long
    /// header Initial or 0-RTT packet).
    Down,
}

impl Fallback {
    /// Every reason's name, at its [`index`](Self::index): the labels of the `fallback` metric.
    pub const REASONS: [&'static str; 3] = ["unroutable", "unknown_server", "down"];

    /// This reason's position in [`REASONS`](Self::REASONS).
    pub fn index(&self) -> usize {
        match self {
            Self::Unroutable(_) => 0,
            Self::UnknownServer => 1,
            Self::Down => 2,
        }
    }

    /// A short stable name, for logs and metrics labels.
    pub fn as_str(&self) -> &'static str {
        Self::REASONS[self.index()]
    }
}

/// Where one client datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// To the backend at this index of [`RoutingTable::backends`], because its DCID names it.
    ServerId(usize),
    /// To the backend at this index, chosen by the hash of the DCID.
    Hashed(usize, Fallback),
    /// Dropped: unroutable, and no DCID to hash (not QUIC, or malformed).
    Unroutable(Unroutable),
    /// Dropped: no backend can take a new flow.
    NoBackend,
}

/// Why the balancer dropped a datagram. Labels of the `dropped` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DropReason {
    /// Unroutable and no DCID to hash: not QUIC (empty, truncated long header).
    NotQuic,
    /// Unroutable and no (or an empty) DCID: too short to carry one.
    TooShort,
    /// Unroutable and the DCID cannot be delimited for another reason (a self-encoded
    /// length past the end of the datagram).
    Malformed,
    /// No backend can take a new flow (none configured, or all down or drained).
    NoBackend,
    /// A PROXY header from a source that is not a backend.
    SpoofedProxyHeader,
    /// A datagram from a backend's address without a valid PROXY header.
    BadProxyHeader,
    /// A LOCAL (probe) header arriving at the VIP.
    UnexpectedLocal,
    /// A reply whose header carries no payload.
    EmptyPayload,
    /// A destination of the other address family than the VIP socket.
    AddressFamily,
    /// The socket refused to send.
    SendError,
}

impl DropReason {
    /// Every reason, in label order.
    pub const ALL: [DropReason; 10] = [
        Self::NotQuic,
        Self::TooShort,
        Self::Malformed,
        Self::NoBackend,
        Self::SpoofedProxyHeader,
        Self::BadProxyHeader,
        Self::UnexpectedLocal,
        Self::EmptyPayload,
        Self::AddressFamily,
        Self::SendError,
    ];

    /// A short stable name, for logs and metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NotQuic => "not_quic",
            Self::TooShort => "too_short",
            Self::Malformed => "malformed",
            Self::NoBackend => "no_backend",
            Self::SpoofedProxyHeader => "spoofed_proxy_header",
            Self::BadProxyHeader => "bad_proxy_header",
            Self::UnexpectedLocal => "unexpected_local",
            Self::EmptyPayload => "empty_payload",
            Self::AddressFamily => "address_family",
            Self::SendError => "send_error",
        }
    }

    /// The drop reason of an unroutable datagram without a DCID.
    pub fn unroutable(u: Unroutable) -> Self {
        match u {
            Unroutable::NotQuic => Self::NotQuic,
            Unroutable::TooShort => Self::TooShort,
            _ => Self::Malformed,
        }
    }

    pub(crate) fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// QUIC-LB configurations plus backends: decides where each datagram goes.
pub struct RoutingTable {
    router: Router,
    entries: Vec<Entry>,
    by_server_id: HashMap<ServerId, usize>,
    by_addr: HashMap<SocketAddr, usize>,
}

impl fmt::Debug for RoutingTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoutingTable")
            .field("configs", &self.router.configs().collect::<Vec<_>>())
            .field("backends", &self.entries)
            .finish()
    }
}

impl RoutingTable {
    /// A table over these QUIC-LB configurations (up to seven, one per config id) and backends.
    pub fn new(configs: Vec<Config>, backends: Vec<Backend>) -> Result<Self, TableError> {
        Self::build(configs, backends, None)
    }

    /// Like [`RoutingTable::new`], carrying over health and counters from `previous` for
    /// backends with the same server id (health only when the address is also the same).
    pub(crate) fn build(
        configs: Vec<Config>,
        backends: Vec<Backend>,
        previous: Option<&RoutingTable>,
    ) -> Result<Self, TableError> {
        if configs.is_empty() {
            return Err(TableError::NoConfig);
        }
        let mut router = Router::new();
        for config in configs {
            let id = config.id();
            if router.insert(config).is_some() {
                return Err(TableError::DuplicateConfig(id));
            }
        }
        let mut entries = Vec::with_capacity(backends.len());
        let mut by_server_id = HashMap::with_capacity(backends.len());
        let mut by_addr = HashMap::with_capacity(backends.len());
        for mut backend in backends {
            backend.addr = canonical(backend.addr);
            let sid_hex = voq_quic_lb::hex::encode(backend.server_id.as_bytes());
            let len = backend.server_id.len();
            if !router.configs().any(|c| c.sid_len() == len) {
                return Err(TableError::ServerIdLength {
                    server_id: sid_hex,
                    len,
                });
            }
            let i = entries.len();
            if by_server_id.insert(backend.server_id, i).is_some() {
                return Err(TableError::DuplicateServerId(sid_hex));
            }
            if by_addr.insert(backend.addr, i).is_some() {
                return Err(TableError::DuplicateAddress(backend.addr));
            }
            let old = previous.and_then(|p| p.entry_by_server_id(&backend.server_id));
            let health = match old {
                Some(o) if o.backend.addr == backend.addr => o.health.clone(),
                _ => Arc::new(Health::new()),
            };
            let counters = old.map_or_else(Default::default, |o| o.counters.clone());
            entries.push(Entry {
                key: hash::hash64(backend.server_id.as_bytes()),
                backend,
                health,
                counters,
            });
        }
        Ok(Self {
            router,
            entries,
            by_server_id,
            by_addr,
        })
    }

    /// The QUIC-LB router.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The QUIC-LB configurations.
    pub fn configs(&self) -> Vec<Config> {
        self.router.configs().cloned().collect()
    }

    /// The backends, in configuration order (the indexes of [`Decision`]).
    pub fn backends(&self) -> impl ExactSizeIterator<Item = &Backend> {
        self.entries.iter().map(|e| &e.backend)
    }

    /// Number of backends.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no backends.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The backend at `index`.
    pub fn backend(&self, index: usize) -> Option<&Backend> {
        self.entries.get(index).map(|e| &e.backend)
    }

    /// Whether the backend at `index` takes new flows (probes answered; see docs/LB.md).
    pub fn is_up(&self, index: usize) -> bool {
        self.entries.get(index).is_some_and(|e| e.health.is_up())
    }

    /// Marks a backend up or down by hand (an operator's drain, or tests). The prober may
    /// change it again on its next rounds.
    pub fn set_up(&self, server_id: &ServerId, up: bool) -> bool {
        match self.entry_by_server_id(server_id) {
            Some(e) => {
                e.health.set(up);
                true
            }
            None => false,
        }
    }

    /// The index of the backend bound to `addr` (replies come from there).
    pub fn backend_at(&self, addr: SocketAddr) -> Option<usize> {
        self.by_addr.get(&canonical(addr)).copied()
    }

    /// The index of the backend with `server_id`.
    pub fn backend_with(&self, server_id: &ServerId) -> Option<usize> {
        self.by_server_id.get(server_id).copied()
    }

    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub(crate) fn entry(&self, index: usize) -> Option<&Entry> {
        self.entries.get(index)
    }

    fn entry_by_server_id(&self, server_id: &ServerId) -> Option<&Entry> {
        self.backend_with(server_id)
            .and_then(|i| self.entries.get(i))
    }

    /// Decides where a datagram from a client goes. Pure apart from reading health flags; no
    /// allocation, never panics.
    ///
    /// 1. Its DCID names a server id (QUIC-LB) that a backend has → that backend, up or down,
    ///    so existing connections keep routing; except that a long-header Initial or 0-RTT
    ///    packet for a down backend is hashed like an unroutable one (it may be a client's
    ///    random DCID that happens to decode to that server id).
    /// 2. Otherwise, if a DCID can be delimited → the rendezvous hash of the DCID over the
    ///    backends that are up and have weight, so every packet of a client's first flight
    ///    reaches the same server.
    /// 3. Otherwise → dropped, with the router's reason.
    pub fn route(&self, datagram: &[u8]) -> Decision {
        let fallback = match self.router.route(datagram) {
            Route::Server { server_id, .. } => match self.by_server_id.get(&server_id) {
                Some(&i) => {
                    let up = self.entries.get(i).is_some_and(|e| e.health.is_up());
                    if up || !starts_connection(datagram) {
                        return Decision::ServerId(i);
                    }
                    Fallback::Down
                }
                None => Fallback::UnknownServer,
            },
            Route::Unroutable(reason) => Fallback::Unroutable(reason),
        };
        let dcid = match self.router.dcid(datagram) {
            Some(d) if !d.is_empty() => d,
            _ => {
                return Decision::Unroutable(match fallback {
                    Fallback::Unroutable(u) => u,
                    // A routable DCID can always be delimited; kept total for safety.
                    Fallback::UnknownServer | Fallback::Down => Unroutable::TooShort,
                });
            }
        };
        match self.hash(dcid) {
            Some(i) => Decision::Hashed(i, fallback),
            None => Decision::NoBackend,
        }
    }

    /// The backend the rendezvous hash picks for `dcid` among those up and with weight.
    pub fn hash(&self, dcid: &[u8]) -> Option<usize> {
        let h = hash::hash64(dcid);
        let mut best: Option<(usize, f64)> = None;
        for (i, e) in self.entries.iter().enumerate() {
            if e.backend.weight == 0 || !e.health.is_up() {
                continue;
            }
            let s = hash::score(h, e.key, e.backend.weight);
            let better = match best {
                None => true,
                Some((j, b)) => {
                    s > b
                        || (s == b
                            && self.entries.get(j).is_some_and(|o| {
                                e.backend.server_id.as_bytes() < o.backend.server_id.as_bytes()
                            }))
                }
            };
            if better {
                best = Some((i, s));
            }
        }
        best.map(|(i, _)| i)
    }
}

/// Whether a datagram is a long-header packet that can open a connection: QUIC v1 Initial
/// (type 0) or 0-RTT (1), QUIC v2 Initial (1) or 0-RTT (2) (RFC 9369 §3.2), or any packet of
/// a version this balancer does not know (the server will answer with Version Negotiation).
fn starts_connection(datagram: &[u8]) -> bool {
    let (Some(&first), Some(v)) = (datagram.first(), datagram.get(1..5)) else {
        return false;
    };
    if first & 0x80 == 0 {
        return false;
    }
    let ty = (first >> 4) & 0x03;
    match u32::from_be_bytes([v[0], v[1], v[2], v[3]]) {
        0 => false, // Version Negotiation
        1 => ty == 0 || ty == 1,
        0x6b33_43cf => ty == 1 || ty == 2,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sid(b: &[u8]) -> ServerId {
        ServerId::from_slice(b).unwrap()
    }

    fn table() -> RoutingTable {
        RoutingTable::new(
            vec![Config::new(0, 2, 6).unwrap()],
            vec![
                Backend::new(sid(&[0, 1]), "127.0.0.1:5001".parse().unwrap()),
                Backend::new(sid(&[0, 2]), "127.0.0.1:5002".parse().unwrap()),
                Backend::new(sid(&[0, 3]), "127.0.0.1:5003".parse().unwrap()).with_weight(0),
            ],
        )
        .unwrap()
    }

    fn short(config: &Config, server_id: &[u8]) -> Vec<u8> {
        let mut d = vec![0x40];
        d.extend_from_slice(&config.encode(server_id, &[9; 6]).unwrap());
        d.extend_from_slice(&[0xaa; 24]);
        d
    }

    fn initial(dcid: &[u8]) -> Vec<u8> {
        let mut d = vec![0xc0, 0, 0, 0, 1, dcid.len() as u8];
        d.extend_from_slice(dcid);
        d.extend_from_slice(&[0, 0, 0x41, 0x00]);
        d.extend_from_slice(&[0; 40]);
        d
    }

    #[test]
    fn routes_by_server_id_even_when_drained_or_down() {
        let t = table();
        let c = t.configs().remove(0);
        assert_eq!(t.route(&short(&c, &[0, 2])), Decision::ServerId(1));
        assert_eq!(t.route(&short(&c, &[0, 3])), Decision::ServerId(2));
        t.set_up(&sid(&[0, 2]), false);
        assert_eq!(t.route(&short(&c, &[0, 2])), Decision::ServerId(1));
        // A handshake packet (v1 type 2) for the down backend still goes there.
        let mut hs = initial(&c.encode(&[0, 2], &[1; 6]).unwrap());
        hs[0] = 0xe0;
        assert_eq!(t.route(&hs), Decision::ServerId(1));
        // An Initial that decodes to the down backend is hashed elsewhere.
        let ini = initial(&c.encode(&[0, 2], &[1; 6]).unwrap());
        assert_eq!(t.route(&ini), Decision::Hashed(0, Fallback::Down));
    }

    #[test]
    fn unknown_server_ids_and_unroutable_dcids_are_hashed_over_healthy_weighted_backends() {
        let t = table();
        let c = t.configs().remove(0);
        match t.route(&short(&c, &[0, 9])) {
            Decision::Hashed(i, Fallback::UnknownServer) => assert!(i < 2),
            other => panic!("{other:?}"),
        }
        for i in 0..200u32 {
            let mut dcid = [0xe7u8; 8]; // 0b111: unroutable
            dcid[1..5].copy_from_slice(&i.to_be_bytes());
            match t.route(&initial(&dcid)) {
                Decision::Hashed(b, Fallback::Unroutable(Unroutable::ReservedConfig)) => {
                    assert!(b < 2, "weight-0 backend got a new flow")
                }
                other => panic!("{other:?}"),
            }
        }
        t.set_up(&sid(&[0, 1]), false);
        t.set_up(&sid(&[0, 2]), false);
        assert_eq!(t.route(&initial(&[0xe7; 8])), Decision::NoBackend);
    }

    #[test]
    fn malformed_datagrams_are_dropped_by_reason() {
        let t = table();
        let un = |u| Decision::Unroutable(u);
        assert_eq!(t.route(&[]), un(Unroutable::NotQuic));
        assert_eq!(t.route(&[0xc0, 0, 0]), un(Unroutable::NotQuic));
        assert_eq!(t.route(&[0x40]), un(Unroutable::TooShort));
        // A long header with a zero-length DCID.
        assert_eq!(
            t.route(&[0xc0, 0, 0, 0, 1, 0, 0, 0, 0]),
            un(Unroutable::TooShort)
        );
        // Config 0 self-encodes 32 octets; the datagram has 3.
        assert_eq!(
            t.route(&[0x40, 0x1f, 1, 2]),
            un(Unroutable::DcidLengthMismatch)
        );
        assert_eq!(
            DropReason::unroutable(Unroutable::DcidLengthMismatch),
            DropReason::Malformed
        );
    }

    #[test]
    fn rejects_bad_tables_naming_the_field() {
        let c = || vec![Config::new(0, 2, 6).unwrap()];
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        assert_eq!(
            RoutingTable::new(vec![], vec![]).unwrap_err(),
            TableError::NoConfig
        );
        let e = RoutingTable::new(
            c(),
            vec![Backend::new(sid(&[1, 1]), a), Backend::new(sid(&[1, 1]), b)],
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "backend server id 0101 is given twice");
        let e = RoutingTable::new(
            c(),
            vec![Backend::new(sid(&[1, 1]), a), Backend::new(sid(&[1, 2]), a)],
        )
        .unwrap_err();
        assert_eq!(e, TableError::DuplicateAddress(a));
        let e = RoutingTable::new(c(), vec![Backend::new(sid(&[1]), a)]).unwrap_err();
        assert!(e.to_string().contains("1 octets"), "{e}");
        let e = RoutingTable::new(
            vec![Config::new(1, 2, 6).unwrap(), Config::new(1, 3, 6).unwrap()],
            vec![],
        )
        .unwrap_err();
        assert_eq!(e, TableError::DuplicateConfig(1));
    }

    #[test]
    fn reload_keeps_health_and_counters_of_the_same_backend() {
        let t = table();
        t.set_up(&sid(&[0, 1]), false);
        t.entries[0].counters.record_to_backend(100);
        let backends: Vec<Backend> = t.backends().cloned().collect();
        let t2 = RoutingTable::build(t.configs(), backends.clone(), Some(&t)).unwrap();
        assert!(!t2.is_up(0));
        assert_eq!(t2.entries[0].counters.bytes_to.load(Ordering::Relaxed), 100);
        // A new address is a new backend as far as health goes.
        let mut moved = backends;
        moved[0].addr = "127.0.0.1:6001".parse().unwrap();
        let t3 = RoutingTable::build(t.configs(), moved, Some(&t)).unwrap();
        assert!(t3.is_up(0));
        assert_eq!(t3.entries[0].counters.bytes_to.load(Ordering::Relaxed), 100);
    }

    #[test]
    fn health_needs_three_misses_and_two_hits() {
        let h = Health::new();
        assert_eq!(h.record(false, 3, 2), None);
        assert_eq!(h.record(false, 3, 2), None);
        assert_eq!(h.record(true, 3, 2), None); // a hit resets the misses
        assert_eq!(h.record(false, 3, 2), None);
        assert_eq!(h.record(false, 3, 2), None);
        assert_eq!(h.record(false, 3, 2), Some(false));
        assert_eq!(h.record(true, 3, 2), None);
        assert_eq!(h.record(true, 3, 2), Some(true));
    }

    #[test]
    fn starts_connection_knows_v1_and_v2_types() {
        let mut d = initial(&[1; 8]);
        assert!(starts_connection(&d));
        d[0] = 0xd0; // v1 0-RTT
        assert!(starts_connection(&d));
        d[0] = 0xe0; // v1 Handshake
        assert!(!starts_connection(&d));
        d[1..5].copy_from_slice(&0x6b33_43cfu32.to_be_bytes());
        d[0] = 0xd0; // v2 Initial
        assert!(starts_connection(&d));
        d[0] = 0xf0; // v2 Handshake
        assert!(!starts_connection(&d));
        assert!(!starts_connection(&[0x40, 1, 2, 3, 4, 5]));
    }
}
