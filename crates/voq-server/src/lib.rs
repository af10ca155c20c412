//! The voq server: accepts QUIC connections (ALPN `voq/1`), runs one voq/1 session per
//! connection with its own agent, and shuts down gracefully.
//!
//! `voq serve` is a thin wrapper around [`run`]; tests and benchmarks use [`Server`] in-process.

pub mod agent;
pub mod config;
pub mod metrics;
mod record;
mod session;
pub mod stats;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

pub use config::{QuicLbSettings, ServeConfig, Settings, Tunnel};
pub use record::Recorder;
pub use stats::{SessionEvent, SessionEventKind, Stats};
pub use tls::Identity;

/// A running server.
#[derive(Debug)]
pub struct Server {
    endpoint: quinn::Endpoint,
    identity_sha256: String,
    identity_pem: String,
    dev_cert: bool,
    stats: Arc<Stats>,
    events: broadcast::Sender<SessionEvent>,
    shutdown: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
    drain_timeout: Duration,
    metrics: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
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
        let tls = tls::server_config(&identity, &[tls::ALPN_VOQ])?;
        let quic_tls = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .context("TLS configuration unusable for QUIC")?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(quic_tls));
        let mut transport = quinn::TransportConfig::default();
        transport.max_concurrent_uni_streams(16u32.into());
        transport.max_concurrent_bidi_streams(1u32.into());
        transport.keep_alive_interval(Some(Duration::from_secs(5)));
        transport.max_idle_timeout(Some(Duration::from_secs(30).try_into()?));
        server_config.transport_config(Arc::new(transport));
        let mut endpoint_config = quinn::EndpointConfig::default();
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
        let bind = || {
            std::net::UdpSocket::bind(settings.listen)
                .with_context(|| format!("cannot listen on udp {}", settings.listen))
        };
        let endpoint = match settings.tunnel {
            // Behind voq lb: the tunnel socket strips and adds the PROXY v2 headers.
            config::Tunnel::Vip(vip) => {
                let socket = voq_lb::TunnelSocket::new(bind()?, vip)?;
                voq_lb::endpoint(endpoint_config, Some(server_config), Arc::new(socket))
            }
            config::Tunnel::Learn => {
                let socket = voq_lb::TunnelSocket::learning(bind()?)?;
                voq_lb::endpoint(endpoint_config, Some(server_config), Arc::new(socket))
            }
            config::Tunnel::Off => {
                let runtime = quinn::default_runtime().context("no async runtime for quinn")?;
                quinn::Endpoint::new(endpoint_config, Some(server_config), bind()?, runtime)
            }
        }
        .with_context(|| format!("cannot listen on udp {}", settings.listen))?;
        let recorder = settings.record.as_deref().map(Recorder::new).transpose()?;
        let stats = Arc::new(Stats::default());
        let (events, _) = broadcast::channel(stats::SESSION_EVENTS_CAPACITY);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let proto = voq_proto::server::ServerConfig {
            transport: "quic".into(),
            send_ahead: voq_proto::pacing::Lead::from_ms(settings.send_ahead_ms),
            ..Default::default()
        };
        let ctx = session::SessionContext {
            agent_factory,
            proto,
            recorder,
            stats: stats.clone(),
            events: events.clone(),
            shutdown: shutdown_rx,
        };
        let metrics = match settings.metrics {
            Some(addr) => {
                let (bound, task) = metrics::serve(addr, stats.clone()).await?;
                info!(addr = %bound, "metrics at http://{bound}/metrics");
                Some(task)
            }
            None => None,
        };
        let accept = tokio::spawn(accept_loop(endpoint.clone(), ctx, settings.max_sessions));
        info!(addr = %endpoint.local_addr()?, agent = %settings.agent, "voq server listening");
        Ok(Self {
            endpoint,
            identity_sha256: identity.sha256_hex(),
            identity_pem: identity.cert_pem(),
            dev_cert: identity.dev,
            stats,
            events,
            shutdown,
            accept,
            drain_timeout: settings.drain_timeout,
            metrics,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// SHA-256 of the server certificate, lowercase hex (for `voq call --cert-hash`).
    pub fn cert_sha256(&self) -> &str {
        &self.identity_sha256
    }

    /// The server certificate as PEM (for `voq call --ca`).
    pub fn cert_pem(&self) -> &str {
        &self.identity_pem
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
        if self.dev_cert {
            format!(
                "voq call https://{addr} --input prompt.wav --output reply.wav --cert-hash {}\n  \
                 (development certificate, valid 13 days; or use --insecure)",
                self.cert_sha256()
            )
        } else {
            format!("voq call https://{addr} --input prompt.wav --output reply.wav")
        }
    }

    /// Graceful shutdown: stop accepting, refuse new turns, let sessions finish what they are
    /// saying and their clients close (up to the drain timeout), then close what is left.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        // Refuse new connections at once (rather than leaving their handshakes unanswered).
        self.endpoint.set_server_config(None);
        if tokio::time::timeout(self.drain_timeout, &mut self.accept)
            .await
            .is_err()
        {
            warn!("drain timeout: closing the remaining sessions");
            let code = quinn::VarInt::from_u32(voq_proto::Code::GoingAway.to_u32());
            self.endpoint.close(code, b"going away");
            if tokio::time::timeout(Duration::from_secs(1), &mut self.accept)
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
        for (name, _, value) in self.stats.snapshot() {
            info!(target: "voq::stats", "{name} {value}");
        }
    }
}

/// 32 bytes from the operating system's CSPRNG.
fn random_seed() -> anyhow::Result<[u8; 32]> {
    use ring::rand::SecureRandom;
    let mut seed = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| anyhow::anyhow!("the OS random number generator failed"))?;
    Ok(seed)
}

/// Accepts connections until shutdown, then waits for its sessions to end.
async fn accept_loop(endpoint: quinn::Endpoint, ctx: session::SessionContext, max_sessions: usize) {
    static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);
    let mut sessions = JoinSet::new();
    let mut shutdown = ctx.shutdown.clone();
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = shutdown.changed() => break,
        };
        let Some(incoming) = incoming else { break };
        while sessions.try_join_next().is_some() {}
        if sessions.len() >= max_sessions {
            ctx.stats.connections_refused.inc();
            incoming.refuse();
            continue;
        }
        let mut ctx = ctx.clone();
        let stats = ctx.stats.clone();
        sessions.spawn(async move {
            // Take the connection before the handshake completes, so that a resuming client's
            // 0-RTT data (its prompt) is read as it arrives instead of one round trip later.
            // Replayed 0-RTT can only repeat audio into a session the attacker cannot read; a
            // turn is acted on when it is committed, after the handshake for any real turn.
            let conn = match incoming.accept() {
                Ok(connecting) => match connecting.into_0rtt() {
                    Ok((conn, _)) => conn,
                    Err(connecting) => match connecting.await {
                        Ok(c) => c,
                        Err(e) => {
                            stats.connections_refused.inc();
                            tracing::debug!("handshake failed: {e}");
                            return;
                        }
                    },
                },
                Err(e) => {
                    stats.connections_refused.inc();
                    tracing::debug!("handshake failed: {e}");
                    return;
                }
            };
            stats.connections_accepted.inc();
            let n = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
            ctx.proto.session_id = format!("sess_{n}");
            session::run(conn, ctx).await;
        });
    }
    while sessions.join_next().await.is_some() {}
}

/// `voq serve`: start, print how to connect, serve until Ctrl-C or SIGTERM, drain, stop.
pub async fn run(config: ServeConfig) -> anyhow::Result<()> {
    let settings = config.resolve()?;
    let server = Server::start(settings).await?;
    // The banner is this command's output. A closed stdout (`voq serve | head -1`) must not
    // stop the server, so write errors are ignored rather than panicking like println!.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "voq serving voq/1 on udp {}", server.local_addr());
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
