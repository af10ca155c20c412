//! The voq server: one port number for every carrier. On UDP it accepts QUIC connections with ALPN
//! `voq/1` (raw QUIC) or `h3` (WebTransport at `/voq`); on TCP it serves the demo page, its config
//! and WebSocket sessions at `/voq` ([`web`]). Each connection runs one voq/1 session with its own
//! agent; shutdown is graceful.
//!
//! `voq serve` is a thin wrapper around [`run`]; tests and benchmarks use [`Server`] in-process.

pub mod agent;
pub mod announce;
pub mod auth;
pub mod config;
pub mod fleet;
pub mod metrics;
pub mod origin;
pub mod prefix;
mod realtime;
mod record;
pub mod resume;
mod session;
pub mod stats;
pub mod tls;
mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};
use voq_transport::quic::{ALPN_H3, ALPN_HTTP1, ALPN_VOQ};

pub use config::{AnycastSettings, QuicLbSettings, ServeConfig, Settings, Tunnel};
pub use record::Recorder;
pub use stats::{SessionEvent, SessionEventKind, Stats, wait_for_event};
pub use tls::Identity;

/// A running server.
#[derive(Debug)]
pub struct Server {
    endpoint: quinn::Endpoint,
    certs: Arc<tls::CertStore>,
    rotation: Option<tokio::task::JoinHandle<()>>,
    /// Logs the anycast socket's drops (a peer missing from the fleet, a full socket).
    fleet_watch: Option<tokio::task::JoinHandle<()>>,
    web: Option<tokio::task::JoinHandle<()>>,
    web_addr: Option<SocketAddr>,
    stats: Arc<Stats>,
    events: broadcast::Sender<SessionEvent>,
    shutdown: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
    drain_timeout: Duration,
    metrics: Option<tokio::task::JoinHandle<()>>,
    recorder: Option<Recorder>,
    /// This server's QUIC-LB identity, for re-making its fleet routes.
    quic_lb: Option<QuicLbSettings>,
    /// The anycast announcement: set `withdraw` to take the route away for good; the task
    /// ends once the routing daemon confirmed.
    announce: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
    /// After the withdrawal on shutdown, how long handshakes are still taken.
    withdraw_grace: Duration,
}

impl Server {
    /// The anycast socket's counters, on a server of an anycast fleet.
    pub fn anycast_stats(&self) -> Option<voq_tunnel::AnycastStats> {
        self.stats.anycast.as_ref().map(|s| s.stats())
    }

    /// The fleet's anycast address this server also listens on, if any.
    pub fn anycast_addr(&self) -> Option<SocketAddr> {
        self.stats.anycast.as_ref().map(|s| s.anycast_addr())
    }

    /// Replaces the other servers of this server's anycast fleet (server id → unicast
    /// address), e.g. when one joins or leaves. An error on a server without `--anycast`.
    pub fn set_fleet_peers(&self, peers: Vec<(Vec<u8>, SocketAddr)>) -> anyhow::Result<()> {
        let socket = self
            .stats
            .anycast
            .as_ref()
            .context("this server is not on an anycast address")?;
        let settings = config::AnycastSettings {
            addr: socket.anycast_addr(),
            peers,
        };
        socket.set_routes(fleet_routes(&settings, self.quic_lb.as_ref())?);
        Ok(())
    }

    /// Binds and starts serving.
    pub async fn start(settings: Settings) -> anyhow::Result<Self> {
        let agent = agent::from_spec(&settings.agent, settings.agent_speed)?;
        Self::start_with_agent(settings, agent).await
    }

    /// Starts with an agent of your own (see [`agent::Agent`]).
    pub async fn start_with_agent(
        settings: Settings,
        agent_factory: Arc<dyn agent::AgentFactory>,
    ) -> anyhow::Result<Self> {
        let identity = match &settings.cert {
            Some((cert, key)) => Identity::load(cert, key)?,
            None => Identity::generate_dev(&[])?,
        };
        let certs = tls::CertStore::new(identity)?;
        let mut tls = tls::server_config_with(&certs, &[ALPN_VOQ, ALPN_H3])?;
        if let Some(fleet) = &settings.fleet {
            // Stateless tickets any server of the fleet decrypts: 0-RTT wherever the next
            // connection lands.
            tls.ticketer = fleet.ticketer();
            // rustls takes early data only on single-use (stateful) tickets unless told
            // otherwise (our rustls patch). A replayed first flight is then accepted by TLS on
            // any server of the fleet, and harmless: nothing of 0-RTT is acted on before the
            // handshake completes (`accept_link`), which a replayer cannot do.
            tls.early_data_with_stateless_tickets = true;
        }
        let quic_tls = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .context("TLS configuration unusable for QUIC")?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(quic_tls));
        server_config.transport_config(voq_transport::quic::transport_config());
        let mut endpoint_config = quinn::EndpointConfig::default();
        if let Some(fleet) = &settings.fleet {
            // Tokens and stateless resets that every server of the fleet can check.
            server_config.token_key(fleet.token_key());
            endpoint_config = quinn::EndpointConfig::new(fleet.reset_key());
        }
        if let Some(lb) = &settings.quic_lb {
            let config = lb.config()?;
            let server_id = lb.server_id.clone();
            // Validate once here so that the factory below cannot fail.
            voq_quic_lb::Encoder::new(config.clone(), &server_id, random_seed()?)?;
            endpoint_config.cid_generator(move || {
                // Each endpoint gets a fresh random nonce start (draft-21 §5.3).
                let seed = random_seed().unwrap_or_default();
                match voq_quic_lb::Encoder::new(config.clone(), &server_id, seed) {
                    Ok(encoder) => Box::new(voq_quic_lb::CidGenerator::new(encoder)),
                    Err(_) => unreachable!("validated above with the same config and server id"),
                }
            });
        }
        // UDP and TCP share the port number. With port 0, the TCP port follows the one the
        // system gave UDP (retrying if that number is taken on TCP).
        let (udp, tcp) = bind_pair(settings.listen, settings.web)?;
        let unicast_addr = udp.local_addr()?;
        if let Some(bytes) = settings.udp_recv_buffer {
            size_recv_buffer(&udp, bytes);
        }
        let udp = std::cell::Cell::new(Some(udp));
        let bind = || {
            udp.take()
                .with_context(|| format!("cannot listen on udp {}", settings.listen))
        };
        let mut anycast_socket = None;
        let mut anycast_tcp: Option<std::net::TcpListener> = None;
        if let Some(anycast) = &settings.anycast {
            // Handshakes on the shared address hand their connection to our own (RFC 9000
            // §9.6); the client validates the path and moves once the handshake is confirmed.
            match unicast_addr {
                SocketAddr::V4(v4) => server_config.preferred_address_v4(Some(v4)),
                SocketAddr::V6(v6) => server_config.preferred_address_v6(Some(v6)),
            };
            let (any_udp, any_tcp) = bind_pair(anycast.addr, settings.web)?;
            if let Some(bytes) = settings.udp_recv_buffer {
                size_recv_buffer(&any_udp, bytes);
            }
            let routes = fleet_routes(anycast, settings.quic_lb.as_ref())?;
            anycast_socket = Some(Arc::new(voq_tunnel::AnycastSocket::new(
                any_udp,
                bind()?,
                routes,
            )?));
            anycast_tcp = any_tcp;
        }
        let endpoint = match (&anycast_socket, settings.tunnel) {
            (Some(socket), _) => {
                voq_tunnel::anycast_endpoint(endpoint_config, Some(server_config), socket.clone())
            }
            (None, tunnel) => match tunnel {
                // Behind voq lb: the tunnel socket strips and adds the PROXY v2 headers.
                config::Tunnel::Vip(vip) => {
                    let socket = voq_tunnel::TunnelSocket::new(bind()?, vip)?;
                    voq_tunnel::endpoint(endpoint_config, Some(server_config), Arc::new(socket))
                }
                config::Tunnel::Learn => {
                    let socket = voq_tunnel::TunnelSocket::learning(bind()?)?;
                    voq_tunnel::endpoint(endpoint_config, Some(server_config), Arc::new(socket))
                }
                config::Tunnel::Off => {
                    let runtime = quinn::default_runtime().context("no async runtime for quinn")?;
                    quinn::Endpoint::new(endpoint_config, Some(server_config), bind()?, runtime)
                }
            },
        }
        .with_context(|| format!("cannot listen on udp {}", settings.listen))?;
        let recorder = settings.record.as_deref().map(Recorder::new).transpose()?;
        let stats = Arc::new(Stats {
            auth: settings.auth.as_ref().map(|a| a.stats.clone()),
            anycast: anycast_socket.clone(),
            ..Stats::default()
        });
        let (events, _) = broadcast::channel(stats::SESSION_EVENTS_CAPACITY);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let proto = voq_proto::server::ServerConfig {
            transport: voq_transport::Carrier::Quic.as_str().into(),
            send_ahead: voq_proto::pacing::Lead::from_ms(settings.send_ahead_ms),
            server_id: settings
                .quic_lb
                .as_ref()
                .map(|lb| voq_quic_lb::hex::encode(&lb.server_id)),
            ..Default::default()
        };
        let ctx = session::SessionContext {
            agent_factory,
            proto,
            recorder: recorder.clone(),
            stats: stats.clone(),
            events: events.clone(),
            shutdown: shutdown_rx,
            origins: Arc::new(origin::OriginPolicy::new(
                &settings.allowed_origins,
                settings.listen.ip().is_loopback(),
            )),
            auth: settings.auth.clone(),
            agent_name: settings.agent.as_str().into(),
            max_call_duration: settings.max_call_duration,
            refusal_log: Arc::default(),
            carrier_name: None,
            resumption: settings.resumption.clone(),
            opus: settings.opus,
            prefixes: settings
                .prefix_caps
                .map(|caps| Arc::new(prefix::PrefixLimits::new(caps))),
        };
        let metrics = match settings.metrics {
            Some(addr) => {
                let (bound, task) = metrics::serve(addr, stats.clone()).await?;
                info!(addr = %bound, "metrics at http://{bound}/metrics");
                Some(task)
            }
            None => None,
        };
        let slots = Arc::new(Slots::new(settings.max_sessions));
        let (web, web_addr) = match tcp {
            Some(listener) => {
                let web_addr = listener.local_addr()?;
                let mut http_tls = tls::server_config_with(&certs, &[ALPN_HTTP1])?;
                // tokio-rustls never reads TLS early data: a resumed browser's 0-RTT request
                // would be dropped and the connection would hang.
                http_tls.max_early_data_size = 0;
                let web_ctx = web::WebContext {
                    certs: certs.clone(),
                    tls: tokio_rustls::TlsAcceptor::from(Arc::new(http_tls)),
                    session: ctx.clone(),
                    slots: slots.clone(),
                    pending: Arc::new(Slots::new(settings.max_handshakes)),
                    udp_port: endpoint.local_addr()?.port(),
                };
                let listener = tokio::net::TcpListener::from_std(listener)?;
                // A fleet server also answers the page and WebSocket on the anycast address
                // (TCP cannot move to the unicast address; a rehash ends such a connection).
                let task = match anycast_tcp {
                    Some(anycast) => {
                        let anycast = tokio::net::TcpListener::from_std(anycast)?;
                        // Pages fetched on the anycast address send browsers to its UDP port.
                        let mut anycast_ctx = web_ctx.clone();
                        anycast_ctx.udp_port = anycast.local_addr()?.port();
                        tokio::spawn(async move {
                            tokio::join!(
                                web::serve(listener, web_ctx),
                                web::serve(anycast, anycast_ctx)
                            );
                        })
                    }
                    None => tokio::spawn(web::serve(listener, web_ctx)),
                };
                (Some(task), Some(web_addr))
            }
            None => (None, None),
        };
        let handshakes = Arc::new(Slots::new(settings.max_handshakes));
        let accept = tokio::spawn(accept_loop(endpoint.clone(), ctx, slots, handshakes));
        info!(addr = %endpoint.local_addr()?, agent = %settings.agent, "voq server listening");
        let rotation = certs.spawn_rotation(tls::DEV_CERT_ROTATION);
        let fleet_watch = anycast_socket.clone().map(spawn_fleet_watch);
        // Announce the anycast route only now that every socket is listening.
        let announce = settings.announce.clone().map(|announce| {
            let (withdraw, withdrawn) = watch::channel(false);
            let counters = stats.clone();
            let task = tokio::spawn(announce::run(
                announce,
                stats.announce.clone(),
                move || counters.sessions_active(),
                withdrawn,
            ));
            (withdraw, task)
        });
        Ok(Self {
            endpoint,
            certs,
            rotation,
            fleet_watch,
            web,
            web_addr,
            stats,
            events,
            shutdown,
            accept,
            drain_timeout: settings.drain_timeout,
            metrics,
            recorder,
            quic_lb: settings.quic_lb.clone(),
            announce,
            withdraw_grace: settings
                .announce
                .as_ref()
                .map_or(Duration::ZERO, |a| a.withdraw_grace),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The TCP address of the page and WebSocket sessions (`None` with the TCP side off).
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web_addr
    }

    /// The demo page's URL.
    pub fn page_url(&self) -> Option<String> {
        self.web_addr.map(|a| format!("http://{}/", connectable(a)))
    }

    /// SHA-256 of the current server certificate, lowercase hex (for `voq call --cert-hash`).
    pub fn cert_sha256(&self) -> String {
        self.certs.sha256_hex()
    }

    /// The current server certificate as PEM (for `voq call --ca`).
    pub fn cert_pem(&self) -> String {
        self.certs.cert_pem()
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The observation hook: a live feed of [`SessionEvent`]s (first prompt frame held, turn
    /// committed, response started and ended) of every session, stamped with the monotonic clock
    /// when they happen. For benchmarks and tests in the same process; events before the
    /// subscription are not replayed, and a receiver more than
    /// [`stats::SESSION_EVENTS_CAPACITY`] events behind misses the oldest (`Lagged`). Without
    /// subscribers, emitting costs one uncontended lock.
    pub fn events(&self) -> broadcast::Receiver<SessionEvent> {
        self.events.subscribe()
    }

    /// How a client connects, for the start-up banner.
    pub fn connect_hint(&self) -> String {
        let addr = self.local_addr();
        if self.certs.is_dev() {
            format!(
                "voq call https://{addr} --input prompt.wav --output reply.wav --cert-hash {}\n  \
                 (development certificate: valid 13 days, replaced every 6; or use --insecure)",
                self.cert_sha256()
            )
        } else {
            format!("voq call https://{addr} --input prompt.wav --output reply.wav")
        }
    }

    /// Withdraws the anycast route for good (draining) and waits, at most a few seconds, until
    /// the routing daemon confirmed: new handshakes then go to other servers while this one's
    /// calls go on. Nothing without `--bird-socket`.
    /// Returns whether there was a route to withdraw.
    pub async fn withdraw(&mut self) -> bool {
        let Some((withdraw, task)) = self.announce.as_mut() else {
            return false;
        };
        let _ = withdraw.send(true);
        let wait = announce::bird::TIMEOUT + announce::SAMPLE_INTERVAL;
        if tokio::time::timeout(wait, task).await.is_err() {
            warn!("the anycast route's withdrawal was not confirmed in time");
        }
        self.announce = None;
        true
    }

    /// The first step of a graceful shutdown, at once: refuse new connections (rather than
    /// leaving their handshakes unanswered) and new turns; sessions in progress go on.
    /// [`shutdown`](Self::shutdown) begins with it; call it alone to take a server out of
    /// service and drain it later.
    pub fn stop_accepting(&self) {
        // The accept loop refuses what still arrives (see `accept_loop`).
        let _ = self.shutdown.send(true);
    }

    /// Ends the server as a crash would (`kill -9`): from now on nothing leaves its address —
    /// no goodbye reaches any client (its UDP socket is swapped for one nobody listens to, so the
    /// closes of its dropped connections go nowhere; its TCP connections are closed as the
    /// kernel closes a dead process's) — and every task stops. Sessions' last snapshots stay
    /// where they were saved. For tests and benchmarks of what survives a lost server.
    pub fn crash(&mut self) {
        let ip = self
            .endpoint
            .local_addr()
            .map_or(std::net::IpAddr::from([127, 0, 0, 1]), |a| a.ip());
        let ip = if ip.is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            ip
        };
        match std::net::UdpSocket::bind((ip, 0)) {
            Ok(dead) => {
                if let Err(e) = self.endpoint.rebind(dead) {
                    warn!("crash: cannot swap the socket: {e}");
                }
            }
            Err(e) => warn!("crash: no socket to swap in: {e}"),
        }
        self.endpoint.set_server_config(None);
        for task in [
            Some(&self.accept),
            self.web.as_ref(),
            self.metrics.as_ref(),
            self.rotation.as_ref(),
            self.fleet_watch.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            task.abort();
        }
    }

    /// Graceful shutdown: stop accepting, refuse new turns, let sessions finish what they are
    /// saying and their clients close (up to the drain timeout), then close what is left.
    pub async fn shutdown(mut self) {
        let grace = self.withdraw_grace;
        if self.withdraw().await {
            // New clients may still arrive while the routers converge: serve them meanwhile.
            tokio::time::sleep(grace).await;
        }
        self.stop_accepting();
        if let Some(w) = self.fleet_watch.take() {
            w.abort();
        }
        if let Some(r) = self.rotation.take() {
            r.abort();
        }
        let mut web = self.web.take();
        let drained = async {
            let _ = (&mut self.accept).await;
            if let Some(w) = web.as_mut() {
                let _ = w.await;
            }
        };
        if tokio::time::timeout(self.drain_timeout, drained)
            .await
            .is_err()
        {
            if let Some(w) = web.take() {
                // Dropping the WebSocket sessions closes their TCP connections.
                w.abort();
            }
            warn!("drain timeout: closing the remaining sessions");
            let code = quinn::VarInt::from_u32(voq_proto::Code::GoingAway.to_u32());
            self.endpoint.close(code, b"going away");
            // The accept loop may have ended already (only WebSocket sessions were left): a
            // finished task must not be polled again.
            if !self.accept.is_finished()
                && tokio::time::timeout(Duration::from_secs(1), &mut self.accept)
                    .await
                    .is_err()
            {
                self.accept.abort();
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
        if let Some(m) = self.metrics.take() {
            m.abort();
        }
        // The last recordings may still be on their way to disk.
        if let Some(r) = &self.recorder {
            r.flush().await;
        }
        for (carrier, value) in self.stats.sessions_started.iter() {
            info!(target: "voq::stats", "voq_sessions_started_total{{carrier={carrier}}} {value}");
        }
        for (name, _, value) in self.stats.snapshot() {
            info!(target: "voq::stats", "{name} {value}");
        }
    }
}

/// 32 bytes from the operating system's CSPRNG.
pub(crate) fn random_seed() -> anyhow::Result<[u8; 32]> {
    use ring::rand::SecureRandom;
    let mut seed = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| anyhow::anyhow!("the OS random number generator failed"))?;
    Ok(seed)
}

/// The next session id (`sess_N`), unique within the process.
pub(crate) fn next_session_id() -> String {
    static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);
    format!("sess_{}", NEXT_SESSION.fetch_add(1, Ordering::Relaxed))
}

/// The session limit, shared by every carrier.
#[derive(Debug)]
pub(crate) struct Slots {
    active: AtomicUsize,
    max: usize,
}

/// One taken slot; dropping it frees the slot.
pub(crate) struct Slot(Arc<Slots>);

impl Slots {
    fn new(max: usize) -> Self {
        Self {
            active: AtomicUsize::new(0),
            max,
        }
    }

    /// Slots taken now.
    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Slots in all.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Asks for a receive buffer of `bytes` on the UDP socket and says what the kernel granted (it
/// caps the request at net.core.rmem_max, and reports twice the usable size).
fn size_recv_buffer(udp: &std::net::UdpSocket, bytes: usize) {
    let socket = socket2::SockRef::from(udp);
    if let Err(e) = socket.set_recv_buffer_size(bytes) {
        warn!("cannot size the UDP receive buffer to {bytes} bytes: {e}");
        return;
    }
    let granted = socket.recv_buffer_size().unwrap_or(0);
    // Linux reports double the size asked for (half of it is bookkeeping).
    let granted = if cfg!(target_os = "linux") {
        granted / 2
    } else {
        granted
    };
    if granted < bytes {
        warn!(
            requested = bytes,
            granted,
            "the UDP receive buffer is smaller than asked: raise net.core.rmem_max (sysctl) so \
             that bursts are not dropped by the kernel"
        );
    } else {
        tracing::debug!(granted, "UDP receive buffer");
    }
}

/// How often the anycast socket's drops are summed up in the log.
const FLEET_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Logs, at most every [`FLEET_LOG_INTERVAL`], what the anycast socket dropped or could not
/// forward since the last line: one line per cause with its count and what usually causes it
/// (each datagram is counted in a metric; logging each would flood the log).
fn spawn_fleet_watch(socket: Arc<voq_tunnel::AnycastSocket>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = socket.stats();
        let mut tick = tokio::time::interval(FLEET_LOG_INTERVAL);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = socket.stats();
            let new = |f: fn(&voq_tunnel::AnycastStats) -> u64| f(&now).saturating_sub(f(&last));
            let n = new(|s| s.unknown_server);
            if n > 0 {
                warn!(
                    datagrams = n,
                    "anycast datagrams for a server id not in --fleet-peer were dropped: a peer \
                     missing from this server's list, or one that left the fleet"
                );
            }
            let n = new(|s| s.forward_errors);
            if n > 0 {
                warn!(
                    datagrams = n,
                    "datagrams for fleet peers could not be forwarded (the unicast socket's send \
                     buffer was full or the peer unreachable)"
                );
            }
            let n = new(|s| s.not_a_peer) + new(|s| s.bad_header);
            if n > 0 {
                warn!(
                    datagrams = n,
                    "tunnelled datagrams from addresses that are not fleet peers, or with a bad \
                     header, were dropped (check --fleet-peer on the sending server, or a spoofer)"
                );
            }
            let n = new(|s| s.too_large);
            if n > 0 {
                warn!(
                    datagrams = n,
                    "datagrams too large for quinn's buffers were dropped"
                );
            }
            last = now;
        }
    })
}

/// The forwarding table of an anycast server: its fleet peers by QUIC-LB server id.
fn fleet_routes(
    anycast: &config::AnycastSettings,
    quic_lb: Option<&config::QuicLbSettings>,
) -> anyhow::Result<voq_tunnel::FleetRoutes> {
    let Some(lb) = quic_lb else {
        // Without server ids nothing can be forwarded: every datagram is handled here.
        return Ok(voq_tunnel::FleetRoutes::default());
    };
    let id = |bytes: &[u8]| {
        voq_quic_lb::ServerId::from_slice(bytes)
            .with_context(|| format!("server id {} is too long", voq_quic_lb::hex::encode(bytes)))
    };
    let mut peers = std::collections::HashMap::new();
    for (peer, addr) in &anycast.peers {
        peers.insert(id(peer)?, *addr);
    }
    Ok(voq_tunnel::FleetRoutes {
        router: voq_quic_lb::Router::new().with_config(lb.config()?),
        own: Some(id(&lb.server_id)?),
        peers,
    })
}

/// Binds UDP (and, unless `web` is off, TCP) on one port number.
fn bind_pair(
    listen: SocketAddr,
    web: bool,
) -> anyhow::Result<(std::net::UdpSocket, Option<std::net::TcpListener>)> {
    let udp = || {
        std::net::UdpSocket::bind(listen).with_context(|| format!("cannot listen on udp {listen}"))
    };
    if !web {
        return Ok((udp()?, None));
    }
    let attempts = if listen.port() == 0 { 20 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = udp()?;
        let port = udp.local_addr()?.port();
        match std::net::TcpListener::bind(SocketAddr::new(listen.ip(), port)) {
            Ok(tcp) => {
                tcp.set_nonblocking(true)?;
                return Ok((udp, Some(tcp)));
            }
            Err(e) => last = Some(e),
        }
    }
    let e = last.map_or_else(|| "unknown".to_string(), |e| e.to_string());
    anyhow::bail!(
        "cannot listen on tcp {listen} (the page and WebSocket share the UDP port number): {e}; \
         pass --no-web to serve QUIC only"
    )
}

/// An address a browser can open: the unspecified address becomes loopback.
fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], addr.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

/// Accepts QUIC connections until shutdown, then waits for their sessions to end. The ALPN
/// decides the carrier: `voq/1` is raw QUIC, `h3` is WebTransport.
///
/// Handshakes have a budget of their own (`max_handshakes`), so packets that cost an attacker
/// nothing cannot take the session slots: a slot is taken only once the handshake is done.
/// Past a quarter of that budget, a client whose address is not validated yet is sent a QUIC
/// Retry first (stateless: its next Initial proves the address), which spoofed sources cannot
/// answer.
async fn accept_loop(
    endpoint: quinn::Endpoint,
    ctx: session::SessionContext,
    slots: Arc<Slots>,
    handshakes: Arc<Slots>,
) {
    let mut sessions = JoinSet::new();
    let mut shutdown = ctx.shutdown.clone();
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = shutdown.changed() => break,
        };
        let Some(incoming) = incoming else { break };
        while sessions.try_join_next().is_some() {}
        let source = incoming.remote_address().ip();
        // A network's handshake rate is charged only for handshakes that completed (their
        // address is proven): a spoofer can never spend a victim network's budget. An Initial
        // from a network over its rate is sent a Retry; once its address is validated, refused.
        let prefix_over = ctx
            .prefixes
            .as_ref()
            .is_some_and(|p| p.handshakes_exhausted(source, std::time::Instant::now()));
        if !incoming.remote_address_validated()
            && incoming.may_retry()
            && (prefix_over || handshakes.active() >= handshakes.max().div_ceil(4))
        {
            if prefix_over {
                let limit = stats::Limit::PrefixHandshakes;
                ctx.stats.limits_exceeded.get(limit).inc();
            }
            ctx.stats.handshakes_retried.inc();
            let _ = incoming.retry();
            continue;
        }
        if prefix_over {
            let limit = stats::Limit::PrefixHandshakes;
            ctx.stats.limits_exceeded.get(limit).inc();
            ctx.stats.handshakes_refused.inc();
            incoming.refuse();
            continue;
        }
        let Some(handshake) = handshakes.try_acquire() else {
            ctx.stats.handshakes_refused.inc();
            incoming.refuse();
            continue;
        };
        let mut ctx = ctx.clone();
        let slots = slots.clone();
        sessions.spawn(async move {
            let link = accept_link(incoming, &ctx).await;
            drop(handshake);
            let Some((link, credential)) = link else {
                ctx.stats.connections_refused.inc();
                return;
            };
            if let Some(prefixes) = &ctx.prefixes {
                let now = std::time::Instant::now();
                if prefixes.take_handshake(link.remote_address().ip(), now)
                    == prefix::Verdict::TableFull
                {
                    ctx.stats
                        .limits_exceeded
                        .get(stats::Limit::PrefixTable)
                        .inc();
                }
            }
            let Ok(_prefix_place) = ctx.take_prefix_session(link.remote_address().ip()) else {
                ctx.stats.connections_refused.inc();
                link.close(
                    voq_proto::Code::LimitExceeded,
                    "too many sessions from your network",
                );
                return;
            };
            let Some(_slot) = slots.try_acquire() else {
                ctx.stats.connections_refused.inc();
                link.close(voq_proto::Code::GoingAway, "server at capacity");
                return;
            };
            ctx.stats.connections_accepted.inc();
            ctx.proto.session_id = next_session_id();
            session::run(link, ctx, credential).await;
        });
    }
    // Draining: new connections are refused at once (CONNECTION_REFUSED) rather than left
    // unanswered, so a client taking its session elsewhere (or a new one behind a balancer
    // that still counts this server up) tries again at once instead of waiting out a
    // handshake timeout.
    let mut accepting = true;
    loop {
        tokio::select! {
            done = sessions.join_next() => if done.is_none() { break },
            incoming = endpoint.accept(), if accepting => match incoming {
                Some(incoming) => {
                    ctx.stats.connections_refused.inc();
                    incoming.refuse();
                }
                None => accepting = false,
            },
        }
    }
}

/// Completes the handshake as far as the carrier needs before the session starts.
async fn accept_link(
    incoming: quinn::Incoming,
    ctx: &session::SessionContext,
) -> Option<(voq_transport::Link, session::Credential)> {
    let mut connecting = match incoming.accept() {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("handshake failed: {e}");
            return None;
        }
    };
    let alpn = connecting
        .handshake_data()
        .await
        .ok()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol);
    // Take the connection before the handshake completes (0.5-RTT), so our first flight (and,
    // for WebTransport, our HTTP/3 SETTINGS) leaves with the handshake: the client's CONNECT can
    // follow at 1 RTT and a WebTransport session is up at 2 RTT (waiting first measured 3).
    //
    // But nothing of a 0-RTT flight is acted on before the handshake completes: 0-RTT can be
    // withheld by an on-path attacker and delivered later from any address, by someone who can
    // never finish the handshake. So the session (and with it every turn commit and every agent)
    // starts only once the handshake is done; until then quinn holds the early streams. A
    // resuming client still saves the round trip on its side: its prompt is already here.
    let (conn, handshake) = match connecting.into_0rtt() {
        Ok((conn, done)) => (conn, Some(done)),
        Err(connecting) => match connecting.await {
            Ok(c) => (c, None),
            Err(e) => {
                tracing::debug!("handshake failed: {e}");
                return None;
            }
        },
    };
    if alpn.as_deref() == Some(ALPN_H3) {
        return accept_webtransport(conn, handshake, ctx).await;
    }
    if !handshake_done(&conn, handshake).await {
        return None;
    }
    Some((voq_transport::Link::quic(conn), first_event_credential(ctx)))
}

/// The credential of a session whose token, if one is needed, comes in its first event.
fn first_event_credential(ctx: &session::SessionContext) -> session::Credential {
    match ctx.auth {
        Some(_) => session::Credential::FirstEvent,
        None => session::Credential::Open,
    }
}

/// Waits for a 0.5-RTT connection's handshake to complete; `false` if it never did (the
/// connection is gone: a replayed flight from someone without the keys ends here, at the idle
/// timeout, having done nothing).
async fn handshake_done(
    conn: &quinn::Connection,
    handshake: Option<quinn::ZeroRttAccepted>,
) -> bool {
    if let Some(done) = handshake {
        done.await;
    }
    match conn.close_reason() {
        None => true,
        Some(why) => {
            tracing::debug!("handshake did not complete: {why}");
            false
        }
    }
}

/// The HTTP/3 part of WebTransport: SETTINGS, then an extended CONNECT to `/voq`, answered once
/// the handshake is complete (see [`accept_link`] on 0-RTT).
async fn accept_webtransport(
    conn: quinn::Connection,
    handshake: Option<quinn::ZeroRttAccepted>,
    ctx: &session::SessionContext,
) -> Option<(voq_transport::Link, session::Credential)> {
    use voq_transport::web_transport_quinn as wtq;
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    // A plain HTTP/3 client (no WebTransport in its SETTINGS, or a GET rather than an extended
    // CONNECT) is answered 404 on every request, on a connection left open until it closes or
    // idles: it may be about to move to our preferred address (ngtcp2's client does).
    let accept = wtq::Request::accept_or_answer(conn.clone(), wtq::http::StatusCode::NOT_FOUND);
    let request = match tokio::time::timeout(CONNECT_TIMEOUT, accept).await {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) => {
            tracing::debug!("plain HTTP/3 request answered 404 (voq serves WebTransport)");
            ctx.stats.http_requests.inc();
            return None;
        }
        Ok(Err(e)) => {
            tracing::debug!("WebTransport request failed: {e}");
            return None;
        }
        Err(_) => {
            conn.close(
                quinn::VarInt::from_u32(0x0100),
                b"no WebTransport CONNECT in time",
            );
            return None;
        }
    };
    let connect = request.connect();
    let path = connect.url.path().to_string();
    let origin = connect
        .headers
        .get("origin")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let authority = connect.url.host_str().map(|h| match connect.url.port() {
        Some(port) => format!("{h}:{port}"),
        None => h.to_string(),
    });
    if let Err(refused) = ctx.origins.check(origin.as_deref(), authority.as_deref()) {
        tracing::info!("WebTransport CONNECT refused: {refused}");
        ctx.stats.connections_refused.inc();
        let _ = request.reject(wtq::http::StatusCode::FORBIDDEN).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
        return None;
    }
    if path != "/voq" {
        tracing::debug!(%path, "WebTransport CONNECT to an unknown path");
        let _ = request.reject(wtq::http::StatusCode::NOT_FOUND).await;
        // Let the 404 reach the client before the connection is dropped.
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
        return None;
    }
    // A browser cannot add headers to a WebTransport CONNECT, so the token may come in the URL
    // (`/voq?token=…`); without one there, it must come in the session's first event.
    let token = connect
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .map(str::to_string)
        .or_else(|| token_in_query(&connect.url));
    let credential = match (&ctx.auth, token) {
        (None, _) => session::Credential::Open,
        (Some(_), None) => session::Credential::FirstEvent,
        (Some(auth), Some(token)) => {
            match auth.admit(Some(&token), &ctx.agent_name, std::time::SystemTime::now()) {
                Ok((grant, admission)) => session::Credential::Admitted(grant, admission),
                Err(refused) => {
                    session::log_refusal(ctx, &refused);
                    let status = match refused.code() {
                        voq_proto::Code::LimitExceeded => wtq::http::StatusCode::TOO_MANY_REQUESTS,
                        _ => wtq::http::StatusCode::UNAUTHORIZED,
                    };
                    let _ = request.reject(status).await;
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
                    return None;
                }
            }
        }
    };
    if !handshake_done(&conn, handshake).await {
        return None;
    }
    match request.ok().await {
        Ok(session) => {
            ctx.stats.http_requests.inc();
            Some((voq_transport::Link::webtransport(session), credential))
        }
        Err(e) => {
            tracing::debug!("WebTransport session failed: {e}");
            None
        }
    }
}

/// The token of an `Authorization: Bearer TOKEN` header value.
pub(crate) fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// The `token` query parameter of a URL (how browsers, which cannot set headers on WebSocket
/// or WebTransport requests, present one).
pub(crate) fn token_in_query(url: &url::Url) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .filter(|t| !t.is_empty())
}

/// `voq serve`: start, print how to connect, serve until Ctrl-C or SIGTERM, drain, stop.
pub async fn run(config: ServeConfig) -> anyhow::Result<()> {
    let no_auth = config.no_auth == Some(true);
    let settings = config.resolve()?;
    if no_auth && !settings.listen.ip().is_loopback() {
        warn!(
            listen = %settings.listen,
            "AUTHENTICATION IS OFF (--no-auth): anyone who can reach {} can open sessions and \
             use the agent",
            settings.listen
        );
    }
    let server = Server::start(settings).await?;
    // The banner is this command's output. A closed stdout (`voq serve | head -1`) must not
    // stop the server, so write errors are ignored rather than panicking like println!.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "voq serving voq/1 (QUIC, WebTransport) on udp {}",
            server.local_addr()
        );
        if let (Some(web), Some(page)) = (server.web_addr(), server.page_url()) {
            let _ = writeln!(out, "voq page at {page} (tcp {web}: page, WebSocket)");
        }
        let _ = writeln!(out, "connect with:\n  {}", server.connect_hint());
        let _ = out.flush();
    }
    wait_for_signal().await;
    info!("shutting down");
    server.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
