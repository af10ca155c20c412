//! A **reference model** of how WebRTC treats the user's audio — not the voq protocol.
//!
//! The prompt's frames go out as unreliable QUIC DATAGRAM frames (RFC 9221; quinn
//! `send_datagram`), one per 20 ms at real time like RTP, through the same netem proxy and
//! network as the reliable path, into a fixed jitter buffer on the receiving side: frame `i`
//! plays at `arrival(first frame received) + (i − its index) × 20 ms + jitter_buffer_ms`, and
//! a frame that arrives after that deadline (or never) is lost to the listener. Nothing is
//! retransmitted or concealed here; the model counts what a real-time receiver could have
//! played exactly.
//!
//! The sender starts once the receiver signals (on a stream) that its handshake is complete, as
//! WebRTC starts media once ICE and DTLS are up; the handshake itself is not measured here (the
//! setup figure does that for voq). Its own ALPN (`voq-ref/1`) and endpoints keep it apart
//! from voq/1. The sender's congestion
//! window is fixed and large ([`FixedWindow`]): a WebRTC audio sender keeps sending at the
//! codec's rate whatever the loss, and we want loss, not QUIC's congestion response, to decide
//! what arrives.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;
use voq_client::Trust;
use voq_server::Identity;

use super::run::{Fired, Prepared, fire_blackouts, ms_between};
use super::scenario::{Phase, Reference, Scenario};
use crate::proxy::{NetemProxy, ProxyStats};

/// ALPN of the reference model.
pub const ALPN_REF: &[u8] = b"voq-ref/1";

const FRAME: Duration = Duration::from_millis(20);

/// What the reference receiver could play.
#[derive(Debug, Clone)]
pub struct RefOutcome {
    pub sent: u64,
    /// Frames that arrived (first copy) by their playout deadline.
    pub on_time: u64,
    /// Frames that arrived after their deadline.
    pub late: u64,
    pub fired: Vec<Fired>,
    pub netem: ProxyStats,
}

/// Sends the scenario's prompt as datagrams through a proxy with the scenario's network.
pub async fn run(
    s: &Scenario,
    r: &Reference,
    p: &Prepared,
    seed: u64,
) -> anyhow::Result<RefOutcome> {
    let identity = Identity::generate_dev(&[])?;
    let tls = voq_server::tls::server_config(&identity, &[ALPN_REF])?;
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(tls)?,
    ));
    server_config.transport_config(transport());
    let server = quinn::Endpoint::server(server_config, SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let proxy = NetemProxy::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        server.local_addr()?,
        s.network.up.clone(),
        s.network.down.clone(),
        seed,
    )
    .await?;
    let arrivals = Arc::new(Mutex::new(Vec::<(u32, Instant)>::new()));
    let receiver = tokio::spawn(receive(server.clone(), arrivals.clone()));

    let tls = voq_client::tls::client_config(&Trust::cert_hash(&identity.sha256_hex())?, ALPN_REF)?;
    let mut client_config = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls)?,
    ));
    client_config.transport_config(transport());
    let client = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;

    // The frames, encoded with the scenario's codec, each prefixed with its index.
    let mut encoder = voq_audio::Encoder::new(match s.call.codec {
        voq_proto::Codec::Pcm16 => voq_audio::Codec::Pcm16,
        voq_proto::Codec::Opus => voq_audio::Codec::Opus,
    })?;
    let mut frames = Vec::new();
    for (i, chunk) in p.prompt.chunks(voq_audio::FRAME_SAMPLES).enumerate() {
        let mut payload = (i as u32).to_be_bytes().to_vec();
        encoder.encode(chunk, &mut payload)?;
        frames.push(bytes::Bytes::from(payload));
    }

    let started = Instant::now();
    // Phase instants for the blackouts: connect = now, turn = the first datagram sent.
    let (phase_tx, phase_rx) = watch::channel(Vec::<(Phase, Instant)>::new());
    phase_tx.send_modify(|v| v.push((Phase::Connect, started)));
    let unsupported: Vec<_> = s
        .network
        .blackouts
        .iter()
        .filter(|b| !matches!(b.phase, Phase::Connect | Phase::Turn))
        .collect();
    anyhow::ensure!(
        unsupported.is_empty(),
        "the reference model has only the connect and turn phases"
    );
    let mut fired = Vec::new();
    let sent = {
        let send = async {
            let conn = client
                .connect_with(client_config, proxy.local_addr(), "localhost")?
                .await
                .context("reference model: cannot connect")?;
            // Like WebRTC, send audio once the connection is up at both ends: the receiver
            // says "go" on a stream when its handshake is complete. (Frames sent before that
            // are lost whenever the client's last handshake packet is, which would measure
            // the handshake, not the audio path.)
            let mut go = conn
                .accept_uni()
                .await
                .context("reference model: no start signal")?;
            go.read_to_end(16)
                .await
                .context("reference model: no start signal")?;
            let max = conn
                .max_datagram_size()
                .context("the peer does not accept datagrams")?;
            let t0 = Instant::now();
            let mut sent = 0u64;
            for (i, f) in frames.iter().enumerate() {
                anyhow::ensure!(
                    f.len() <= max,
                    "a {} byte frame exceeds the {max} byte datagram limit",
                    f.len()
                );
                tokio::time::sleep_until((t0 + FRAME * i as u32).into()).await;
                if i == 0 {
                    phase_tx.send_modify(|v| v.push((Phase::Turn, Instant::now())));
                }
                conn.send_datagram(f.clone())?;
                sent += 1;
            }
            // Let the last frames arrive (or miss their deadline) before closing.
            let grace =
                Duration::from_secs_f64((r.jitter_buffer_ms + s.network.rtt_ms() + 500.0) / 1000.0);
            tokio::time::sleep(grace).await;
            conn.close(0u32.into(), b"done");
            anyhow::Ok(sent)
        };
        let triggers = fire_blackouts(
            &s.network.blackouts,
            started,
            phase_rx,
            |phase, evs: &[(Phase, Instant)]| {
                evs.iter().find(|(p, _)| *p == phase).map(|(_, t)| *t)
            },
            |dir, d| proxy.blackout(dir, d),
            &mut fired,
        );
        tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(s.call.timeout_s), send) => {
                r.context("reference model: timed out")??
            }
            () = triggers => unreachable!("the triggers never complete"),
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), receiver).await;
    let netem = proxy.stats();
    proxy.stop();
    client.close(0u32.into(), b"");
    server.close(0u32.into(), b"");
    let arrivals = arrivals.lock().map(|a| a.clone()).unwrap_or_default();
    let (on_time, late) = playout(&arrivals, sent, r.jitter_buffer_ms);
    Ok(RefOutcome {
        sent,
        on_time,
        late,
        fired,
        netem,
    })
}

/// Counts, of frames `0..sent`, those arriving by their deadline and those arriving late, for a
/// fixed jitter buffer anchored on the first frame received.
pub fn playout(arrivals: &[(u32, Instant)], sent: u64, jitter_buffer_ms: f64) -> (u64, u64) {
    let Some(&(anchor_index, anchor_at)) = arrivals.first() else {
        return (0, 0);
    };
    let jb = Duration::from_secs_f64(jitter_buffer_ms / 1000.0);
    let mut seen = vec![false; sent as usize];
    let (mut on_time, mut late) = (0, 0);
    for &(i, at) in arrivals {
        let Some(slot) = seen.get_mut(i as usize) else {
            continue;
        };
        if std::mem::replace(slot, true) {
            continue; // a duplicate
        }
        let offset_ms = (f64::from(i) - f64::from(anchor_index)) * FRAME.as_secs_f64() * 1000.0;
        let deadline_ms = offset_ms + jb.as_secs_f64() * 1000.0;
        if ms_between(anchor_at, at) <= deadline_ms {
            on_time += 1;
        } else {
            late += 1;
        }
    }
    (on_time, late)
}

async fn receive(endpoint: quinn::Endpoint, arrivals: Arc<Mutex<Vec<(u32, Instant)>>>) {
    let Some(incoming) = endpoint.accept().await else {
        return;
    };
    let Ok(conn) = incoming.await else { return };
    let Ok(mut go) = conn.open_uni().await else {
        return;
    };
    if go.write_all(b"go").await.is_err() || go.finish().is_err() {
        return;
    }
    while let Ok(d) = conn.read_datagram().await {
        let at = Instant::now();
        if let Some(index) = d.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok())
            && let Ok(mut a) = arrivals.lock()
        {
            a.push((u32::from_be_bytes(index), at));
        }
    }
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.datagram_receive_buffer_size(Some(4 << 20));
    t.datagram_send_buffer_size(4 << 20);
    t.congestion_controller_factory(Arc::new(FixedWindow(8 << 20)));
    t.keep_alive_interval(Some(Duration::from_secs(1)));
    Arc::new(t)
}

/// A congestion "controller" that never backs off: the window is fixed. Only for the reference
/// model (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct FixedWindow(pub u64);

impl quinn::congestion::ControllerFactory for FixedWindow {
    fn build(
        self: Arc<Self>,
        _now: Instant,
        _current_mtu: u16,
    ) -> Box<dyn quinn::congestion::Controller> {
        Box::new(*self)
    }
}

impl quinn::congestion::Controller for FixedWindow {
    fn on_congestion_event(
        &mut self,
        _now: Instant,
        _sent: Instant,
        _is_persistent_congestion: bool,
        _lost_bytes: u64,
    ) {
    }

    fn on_mtu_update(&mut self, _new_mtu: u16) {}

    fn window(&self) -> u64 {
        self.0
    }

    fn clone_box(&self) -> Box<dyn quinn::congestion::Controller> {
        Box::new(*self)
    }

    fn initial_window(&self) -> u64 {
        self.0
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jitter_buffer_counts_late_and_missing_frames() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Frame 0 anchors; 1 on time; 2 late by 1 ms; 3 missing; 4 exactly on its deadline;
        // 1 again (a duplicate).
        let arrivals = [
            (0, at(0)),
            (1, at(30)),
            (2, at(40 + 60 + 1)),
            (4, at(80 + 60)),
            (1, at(35)),
        ];
        assert_eq!(playout(&arrivals, 5, 60.0), (3, 1));
        assert_eq!(playout(&[], 5, 60.0), (0, 0));
    }
}
