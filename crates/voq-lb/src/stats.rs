//! Counters and their snapshot: JSON (serde) and the Prometheus text format.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use voq_metrics::{Exposition, Kind};
use voq_quic_lb::Unroutable;

use crate::table::{DropReason, Fallback, RoutingTable};

/// Counters of one worker (or of the prober). Relaxed atomics: each worker writes its own.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) rx_packets: AtomicU64,
    pub(crate) rx_bytes: AtomicU64,
    pub(crate) rx_calls: AtomicU64,
    pub(crate) tx_packets: AtomicU64,
    pub(crate) tx_bytes: AtomicU64,
    pub(crate) tx_calls: AtomicU64,
    pub(crate) routed: AtomicU64,
    unroutable: [AtomicU64; Unroutable::REASONS.len()],
    fallback: [AtomicU64; Fallback::REASONS.len()],
    dropped: [AtomicU64; DropReason::ALL.len()],
    pub(crate) probes_sent: AtomicU64,
    pub(crate) probes_answered: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn dropped(&self, reason: DropReason) {
        if let Some(c) = self.dropped.get(reason.index()) {
            bump(c);
        }
    }

    pub(crate) fn fallback(&self, why: Fallback) {
        if let Fallback::Unroutable(u) = why
            && let Some(c) = self.unroutable.get(u.index())
        {
            bump(c);
        }
        if let Some(c) = self.fallback.get(why.index()) {
            bump(c);
        }
    }

    /// An unroutable datagram that was dropped rather than hashed (no DCID).
    pub(crate) fn unroutable_dropped(&self, u: Unroutable) {
        if let Some(c) = self.unroutable.get(u.index()) {
            bump(c);
        }
        self.dropped(DropReason::unroutable(u));
    }
}

/// A per-backend metric family: name, help, and how to read its value.
type BackendFamily = (&'static str, &'static str, fn(&BackendStats) -> u64);
/// A per-backend, per-direction metric family.
type TrafficFamily = (&'static str, &'static str, fn(Traffic) -> u64);

/// Packets and octets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    /// Datagrams.
    pub packets: u64,
    /// UDP payload octets (PROXY headers included where the datagram carries one).
    pub bytes: u64,
}

/// One backend's view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendStats {
    /// Server id, lowercase hex.
    pub server_id: String,
    /// Tunnel address.
    pub address: SocketAddr,
    /// Weight for new flows.
    pub weight: u32,
    /// Whether it takes new flows (probes answered).
    pub up: bool,
    /// Client datagrams tunnelled to it (octets include the PROXY header).
    pub to_backend: Traffic,
    /// Replies it tunnelled back, sent on to clients (octets without the header).
    pub to_client: Traffic,
}

/// A snapshot of the balancer's counters (monotonic since start, except per-backend ones,
/// which live as long as the backend stays in the table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Worker count.
    pub workers: usize,
    /// Datagrams received on the VIP (GRO segments counted one by one).
    pub received: Traffic,
    /// Datagrams sent from the VIP, to backends and clients.
    pub sent: Traffic,
    /// Receive system calls (one may return a batch).
    pub recv_calls: u64,
    /// Send system calls (a GSO batch is one).
    pub send_calls: u64,
    /// Client datagrams routed by the server id in their DCID.
    pub routed: u64,
    /// Client datagrams routed by the hash of their DCID, by reason: `unroutable`,
    /// `unknown_server`, `down`.
    pub fallback: BTreeMap<String, u64>,
    /// Unroutable client datagrams by the QUIC-LB router's reason (hashed or dropped).
    pub unroutable: BTreeMap<String, u64>,
    /// Dropped datagrams by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Health probes sent.
    pub probes_sent: u64,
    /// Health probe answers received.
    pub probes_answered: u64,
    /// Per backend.
    pub backends: Vec<BackendStats>,
}

impl Stats {
    pub(crate) fn collect<'a>(
        workers: usize,
        counters: impl IntoIterator<Item = &'a Counters>,
        table: &RoutingTable,
    ) -> Self {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut s = Stats {
            workers,
            received: Traffic::default(),
            sent: Traffic::default(),
            recv_calls: 0,
            send_calls: 0,
            routed: 0,
            fallback: Fallback::REASONS
                .iter()
                .map(|k| (k.to_string(), 0))
                .collect(),
            unroutable: Unroutable::REASONS
                .iter()
                .map(|k| (k.to_string(), 0))
                .collect(),
            dropped: DropReason::ALL
                .iter()
                .map(|r| (r.as_str().to_string(), 0))
                .collect(),
            probes_sent: 0,
            probes_answered: 0,
            backends: Vec::new(),
        };
        let add = |map: &mut BTreeMap<String, u64>, key: &str, n: u64| {
            if let Some(v) = map.get_mut(key) {
                *v += n;
            }
        };
        for c in counters {
            s.received.packets += load(&c.rx_packets);
            s.received.bytes += load(&c.rx_bytes);
            s.sent.packets += load(&c.tx_packets);
            s.sent.bytes += load(&c.tx_bytes);
            s.recv_calls += load(&c.rx_calls);
            s.send_calls += load(&c.tx_calls);
            s.routed += load(&c.routed);
            s.probes_sent += load(&c.probes_sent);
            s.probes_answered += load(&c.probes_answered);
            for (k, v) in Unroutable::REASONS.iter().zip(&c.unroutable) {
                add(&mut s.unroutable, k, load(v));
            }
            for (k, v) in Fallback::REASONS.iter().zip(&c.fallback) {
                add(&mut s.fallback, k, load(v));
            }
            for (r, v) in DropReason::ALL.iter().zip(&c.dropped) {
                add(&mut s.dropped, r.as_str(), load(v));
            }
        }
        s.backends = table
            .entries()
            .iter()
            .map(|e| BackendStats {
                server_id: e.backend.server_id.to_string(),
                address: e.backend.addr,
                weight: e.backend.weight,
                up: e.health.is_up(),
                to_backend: Traffic {
                    packets: load(&e.counters.packets_to),
                    bytes: load(&e.counters.bytes_to),
                },
                to_client: Traffic {
                    packets: load(&e.counters.packets_from),
                    bytes: load(&e.counters.bytes_from),
                },
            })
            .collect();
        s
    }

    /// All datagrams routed by hash.
    pub fn fallback_total(&self) -> u64 {
        self.fallback.values().sum()
    }

    /// All dropped datagrams.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }

    /// Dropped datagrams with this reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped.get(reason.as_str()).copied().unwrap_or(0)
    }

    /// The backend with this server id (hex).
    pub fn backend(&self, server_id: &str) -> Option<&BackendStats> {
        self.backends.iter().find(|b| b.server_id == server_id)
    }

    /// The Prometheus text exposition format (version 0.0.4), metric names `voq_lb_*`, in
    /// the convention of `voq-metrics`.
    pub fn render_prometheus(&self) -> String {
        let mut out = Exposition::new();
        let by = |map: &BTreeMap<String, u64>| {
            map.iter().map(|(k, v)| (k.clone(), *v)).collect::<Vec<_>>()
        };
        out.single(
            "voq_lb_workers",
            Kind::Gauge,
            "Worker sockets on the VIP.",
            self.workers as u64,
        );
        let counters = [
            (
                "voq_lb_received_packets_total",
                "Datagrams received on the VIP.",
                self.received.packets,
            ),
            (
                "voq_lb_received_bytes_total",
                "UDP payload octets received on the VIP.",
                self.received.bytes,
            ),
            (
                "voq_lb_sent_packets_total",
                "Datagrams sent from the VIP.",
                self.sent.packets,
            ),
            (
                "voq_lb_sent_bytes_total",
                "UDP payload octets sent from the VIP.",
                self.sent.bytes,
            ),
            (
                "voq_lb_recv_calls_total",
                "Receive system calls.",
                self.recv_calls,
            ),
            (
                "voq_lb_send_calls_total",
                "Send system calls (a GSO batch is one).",
                self.send_calls,
            ),
            (
                "voq_lb_routed_total",
                "Client datagrams routed by the server id in the DCID.",
                self.routed,
            ),
        ];
        for (name, help, value) in counters {
            out.single(name, Kind::Counter, help, value);
        }
        let labelled = [
            (
                "voq_lb_fallback_total",
                "Client datagrams routed by the hash of the DCID.",
                by(&self.fallback),
            ),
            (
                "voq_lb_unroutable_total",
                "Unroutable client datagrams by QUIC-LB reason.",
                by(&self.unroutable),
            ),
            (
                "voq_lb_dropped_total",
                "Dropped datagrams by reason.",
                by(&self.dropped),
            ),
        ];
        for (name, help, rows) in labelled {
            let mut family = out.family(name, Kind::Counter, help);
            for (reason, value) in rows {
                family.sample(&[("reason", &reason)], value);
            }
        }
        out.single(
            "voq_lb_probes_sent_total",
            Kind::Counter,
            "Health probes sent.",
            self.probes_sent,
        );
        out.single(
            "voq_lb_probes_answered_total",
            Kind::Counter,
            "Health probe answers received.",
            self.probes_answered,
        );
        let gauges: [BackendFamily; 2] = [
            (
                "voq_lb_backend_up",
                "1 when the backend takes new flows.",
                |b| u64::from(b.up),
            ),
            (
                "voq_lb_backend_weight",
                "Weight of the backend for new flows.",
                |b| u64::from(b.weight),
            ),
        ];
        for (name, help, value) in gauges {
            let mut family = out.family(name, Kind::Gauge, help);
            for b in &self.backends {
                let address = b.address.to_string();
                family.sample(
                    &[("server_id", &b.server_id), ("address", &address)],
                    value(b),
                );
            }
        }
        let traffic: [TrafficFamily; 2] = [
            (
                "voq_lb_backend_packets_total",
                "Datagrams tunnelled per backend and direction.",
                |t| t.packets,
            ),
            (
                "voq_lb_backend_bytes_total",
                "Octets tunnelled per backend and direction.",
                |t| t.bytes,
            ),
        ];
        for (name, help, value) in traffic {
            let mut family = out.family(name, Kind::Counter, help);
            for b in &self.backends {
                let address = b.address.to_string();
                for (direction, t) in [("to_backend", b.to_backend), ("to_client", b.to_client)] {
                    family.sample(
                        &[
                            ("server_id", &b.server_id),
                            ("address", &address),
                            ("direction", direction),
                        ],
                        value(t),
                    );
                }
            }
        }
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::table::Backend;
    use voq_quic_lb::{Config, ServerId};

    #[test]
    fn prometheus_text_has_every_family_and_label() {
        let table = RoutingTable::new(
            vec![Config::new(0, 1, 4).unwrap()],
            vec![Backend::new(
                ServerId::from_slice(&[0x0a]).unwrap(),
                "127.0.0.1:5001".parse().unwrap(),
            )],
        )
        .unwrap();
        let c = Counters::default();
        c.dropped(DropReason::SpoofedProxyHeader);
        c.fallback(Fallback::Unroutable(Unroutable::ReservedConfig));
        table.entries()[0].counters.record_to_backend(40);
        let s = Stats::collect(1, [&c], &table);
        assert_eq!(s.dropped(DropReason::SpoofedProxyHeader), 1);
        assert_eq!(s.fallback_total(), 1);
        assert_eq!(s.unroutable["reserved_config"], 1);
        let text = s.render_prometheus();
        assert!(text.contains("voq_lb_dropped_total{reason=\"spoofed_proxy_header\"} 1\n"));
        assert!(text.contains("voq_lb_fallback_total{reason=\"unroutable\"} 1\n"));
        assert!(text.contains(
            "voq_lb_backend_bytes_total{server_id=\"0a\",address=\"127.0.0.1:5001\",direction=\"to_backend\"} 40\n"
        ));
        assert!(
            text.contains("voq_lb_backend_up{server_id=\"0a\",address=\"127.0.0.1:5001\"} 1\n")
        );
        assert!(text.contains("# TYPE voq_lb_received_packets_total counter\n"));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["backends"][0]["to_backend"]["bytes"], 40);
    }
}
