//! `voq lb`: a stateless QUIC-LB load balancer.
//!
//! The balancer listens on one UDP address, the **VIP**, and forwards every datagram to a
//! backend voq server without keeping any per-connection state:
//!
//! - a DCID that decodes (QUIC-LB, `voq_quic_lb::Router::route`) to a backend's server id goes
//!   to that backend, healthy or not, so existing connections keep routing;
//! - anything else with a DCID (a client's random Initial DCID, `0b111`, an unknown config or
//!   server id; or an Initial/0-RTT packet for a backend that is down) goes to the weighted
//!   rendezvous hash of the DCID over the healthy backends, so all packets of a client's first
//!   flight reach the same server;
//! - datagrams without a DCID are dropped and counted by reason.
//!
//! **Tunnel.** So that backends see clients' real addresses and clients see replies from the
//! VIP, each datagram goes to its backend with a PROXY protocol v2 header
//! ([`voq_tunnel::proxy_v2`]; source = client, destination = VIP). The backend's
//! `voq_tunnel::TunnelSocket` strips it for quinn and puts the same kind of header on every reply
//! (destination = client) and sends it to the VIP; the balancer checks that it comes from a
//! backend's address, strips it and sends the payload to the client from the VIP. Nothing is
//! remembered in either direction, so a balancer can restart, or several can share the VIP
//! (ECMP), without breaking connections.
//!
//! Parts: [`Balancer`] (workers, health probes, reloads, [`Stats`]), [`RoutingTable`] (the
//! pure per-datagram decision), [`LbConfig`] and [`run`] (the `voq lb` command). The server's
//! end of the tunnel is the `voq-tunnel` crate, so a server does not link the balancer.
//! Operator documentation: `docs/LB.md`.

mod balancer;
mod config;
mod hash;
mod stats;
mod table;

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tracing::{info, warn};

pub use balancer::{Balancer, BalancerConfig, HealthConfig, StartError};
pub use config::{BackendSpec, DEFAULT_LISTEN, HexKey, LbConfig, LbConfigError, QuicLbSpec};
pub use stats::{BackendStats, Stats, Traffic};
pub use table::{Backend, Decision, DropReason, Fallback, RoutingTable, TableError};

/// How often `run` checks the config file for changes.
const FILE_POLL: Duration = Duration::from_secs(1);
/// How often backend names are resolved again.
const DNS_REFRESH: Duration = Duration::from_secs(10);

/// `voq lb`: starts the balancer, prints the VIP, reloads backends and QUIC-LB configurations
/// when the config file changes or on SIGHUP, and stops on Ctrl-C or SIGTERM.
pub async fn run(config: LbConfig) -> anyhow::Result<()> {
    let mut term = signals::terminate()?;
    let mut hup = signals::hangup()?;
    let stop = async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = signals::next(&mut term) => {}
        }
    };
    serve(
        config,
        |vip| {
            // The banner is this command's output; a closed stdout must not stop the balancer.
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "voq lb on udp {vip}");
            let _ = out.flush();
        },
        stop,
        &mut hup,
    )
    .await
}

/// The body of [`run`]: start, report the VIP, reload on `hup` or a changed file, stop when
/// `stop` completes.
async fn serve(
    config: LbConfig,
    started: impl FnOnce(std::net::SocketAddr),
    stop: impl std::future::Future<Output = ()>,
    hup: &mut signals::Signal,
) -> anyhow::Result<()> {
    let settings = config.resolve().context("invalid voq lb configuration")?;
    let listen = settings.listen;
    let balancer = Balancer::start(settings)
        .await
        .with_context(|| format!("cannot start the load balancer on {listen}"))?;
    started(balancer.local_addr());
    let metrics = match config.metrics.or_else(|| {
        config
            .config
            .as_deref()
            .and_then(|p| LbConfig::from_file(p).ok()?.metrics)
    }) {
        Some(addr) => {
            let stats_of = balancer.stats_handle();
            let render = std::sync::Arc::new(move || stats_of().render_prometheus());
            let (bound, task) = voq_metrics::serve(addr, render)
                .await
                .with_context(|| format!("cannot listen on tcp {addr} for metrics"))?;
            info!(addr = %bound, "metrics at http://{bound}/metrics");
            Some(task)
        }
        None => None,
    };
    let mut modified = match &config.config {
        Some(path) => mtime(path).await,
        None => None,
    };
    let mut tick = tokio::time::interval(FILE_POLL);
    // Backends named by DNS (e.g. Kubernetes pods, whose IPs change on restart) are resolved
    // again periodically; literal addresses never need it.
    let mut dns = tokio::time::interval(DNS_REFRESH);
    dns.tick().await;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = signals::next(hup) => reload(&config, &balancer, "SIGHUP"),
            _ = dns.tick() => refresh_names(&config, &balancer),
            _ = tick.tick() => {
                if let Some(path) = &config.config {
                    let now = mtime(path).await;
                    if now != modified {
                        modified = now;
                        reload(&config, &balancer, "config file changed");
                    }
                }
            }
        }
    }
    info!("shutting down");
    if let Some(m) = metrics {
        m.abort();
    }
    balancer.shutdown().await;
    Ok(())
}

/// Re-reads the file under the same flags and swaps the routing table. A bad file keeps the
/// current table.
fn reload(config: &LbConfig, balancer: &Balancer, why: &str) {
    match config.resolve() {
        Ok(s) => {
            if s.listen.port() != balancer.local_addr().port() {
                warn!(listen = %s.listen, "a new listen address needs a restart; ignored");
            }
            match balancer.reload_routing(s.configs, s.backends) {
                Ok(()) => info!(reason = why, "reloaded"),
                Err(e) => {
                    warn!(reason = why, error = %e, "reload rejected; keeping the current table")
                }
            }
        }
        Err(e) => warn!(reason = why, error = %e, "reload failed; keeping the current table"),
    }
}

/// Resolves the backends' names again and reloads only if an address changed (a restarted
/// Kubernetes pod comes back with a new IP under the same name).
fn refresh_names(config: &LbConfig, balancer: &Balancer) {
    let Ok(settings) = config.resolve() else {
        return;
    };
    let table = balancer.table();
    let current: Vec<&Backend> = table.backends().collect();
    let changed = settings.backends.len() != current.len()
        || settings
            .backends
            .iter()
            .zip(&current)
            .any(|(new, old)| new.addr != old.addr);
    if changed {
        reload(config, balancer, "a backend name resolves to a new address");
    }
}

async fn mtime(path: &Path) -> Option<SystemTime> {
    tokio::fs::metadata(path).await.ok()?.modified().ok()
}

/// SIGTERM (stop) and SIGHUP (reload); never firing where there are no such signals.
mod signals {
    #[cfg(unix)]
    pub(crate) type Signal = Option<tokio::signal::unix::Signal>;
    #[cfg(not(unix))]
    pub(crate) type Signal = Option<std::convert::Infallible>;

    #[cfg(unix)]
    fn listen(kind: tokio::signal::unix::SignalKind, name: &str) -> anyhow::Result<Signal> {
        use anyhow::Context;
        tokio::signal::unix::signal(kind)
            .map(Some)
            .with_context(|| format!("cannot listen for {name}"))
    }

    pub(crate) fn terminate() -> anyhow::Result<Signal> {
        #[cfg(unix)]
        return listen(tokio::signal::unix::SignalKind::terminate(), "SIGTERM");
        #[cfg(not(unix))]
        Ok(None)
    }

    pub(crate) fn hangup() -> anyhow::Result<Signal> {
        #[cfg(unix)]
        return listen(tokio::signal::unix::SignalKind::hangup(), "SIGHUP");
        #[cfg(not(unix))]
        Ok(None)
    }

    pub(crate) async fn next(signal: &mut Signal) {
        #[cfg(unix)]
        if let Some(s) = signal {
            s.recv().await;
            return;
        }
        let _ = signal;
        std::future::pending::<()>().await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::net::UdpSocket;

    /// Receives one tunnelled datagram, or `None` within 3 s.
    async fn tunnelled(socket: &UdpSocket) -> Option<Vec<u8>> {
        let mut buf = [0u8; 2048];
        loop {
            let (n, _) = tokio::time::timeout(Duration::from_secs(3), socket.recv_from(&mut buf))
                .await
                .ok()?
                .ok()?;
            if let Ok((voq_tunnel::proxy_v2::Header::Proxy { .. }, payload)) =
                voq_tunnel::proxy_v2::decode(&buf[..n])
            {
                return Some(payload.to_vec());
            }
        }
    }

    #[tokio::test]
    async fn a_changed_config_file_is_reloaded_and_flags_still_win() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb.toml");
        let file = |backends: &str| {
            format!(
                "listen = \"127.0.0.1:0\"\nworkers = 1\nhealth-interval-ms = 0\nserver-id-len = 1\nnonce-len = 4\n{backends}"
            )
        };
        let backend = |sid: &str, s: &UdpSocket| {
            format!(
                "[[backend]]\nserver-id = \"{sid}\"\naddress = \"{}\"\n",
                s.local_addr().unwrap()
            )
        };
        std::fs::write(&path, file(&backend("0a", &a))).unwrap();
        let config = LbConfig {
            config: Some(path.clone()),
            // The flag wins over the file's nonce length on every reload.
            nonce_len: Some(5),
            ..Default::default()
        };
        let (vip_tx, vip_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut hup = None;
            serve(
                config,
                |vip| {
                    let _ = vip_tx.send(vip);
                },
                async {
                    let _ = stop_rx.await;
                },
                &mut hup,
            )
            .await
        });
        let vip = vip_rx.await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // A short header for server 0b (config 0, 1 + 1 + 5 octets, self-encoded length 6).
        let packet = [0x40, 0x06, 0x0b, 1, 2, 3, 4, 5, 0xee, 0xee];
        client.send_to(&packet, vip).await.unwrap();
        // No backend 0b yet: hashed to the only backend.
        assert_eq!(tunnelled(&a).await.unwrap(), packet);

        // mtime granularity: make sure the new file looks different.
        tokio::time::sleep(Duration::from_millis(20)).await;
        std::fs::write(&path, file(&(backend("0a", &a) + &backend("0b", &b)))).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut got = None;
        while got.is_none() && tokio::time::Instant::now() < deadline {
            client.send_to(&packet, vip).await.unwrap();
            got = tokio::time::timeout(Duration::from_millis(300), tunnelled(&b))
                .await
                .ok()
                .flatten();
        }
        assert_eq!(
            got.unwrap(),
            packet,
            "the new backend did not get its packet"
        );

        // A broken file keeps the current table.
        std::fs::write(&path, "server-id-len = \"two\"").unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        client.send_to(&packet, vip).await.unwrap();
        assert_eq!(tunnelled(&b).await.unwrap(), packet);

        stop_tx.send(()).unwrap();
        task.await.unwrap().unwrap();
    }
}
