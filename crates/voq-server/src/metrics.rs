//! `--metrics ADDR`: the server's counters in the Prometheus text format at `GET /metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use crate::stats::Stats;

/// Serves `/metrics` on `addr` until the task is aborted; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    stats: Arc<Stats>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    voq_metrics::serve(addr, Arc::new(move || stats.render_prometheus()))
        .await
        .with_context(|| format!("cannot listen on tcp {addr} for metrics"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_as_prometheus_text() {
        let stats = Stats::default();
        stats.turns_committed.add(3);
        stats
            .sessions_started
            .get(voq_transport::Carrier::WebSocket)
            .inc();
        let text = stats.render_prometheus();
        assert!(
            text.contains(
                "# TYPE voq_turns_committed_total counter\nvoq_turns_committed_total 3\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("voq_sessions_started_total{carrier=\"ws\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("voq_sessions_started_total{carrier=\"quic\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE voq_sessions_active gauge\nvoq_sessions_active 1\n"),
            "{text}"
        );
        stats.sessions_ended.inc();
        assert!(
            stats
                .render_prometheus()
                .contains("voq_sessions_active 0\n")
        );
    }
}
