//! `--metrics ADDR`: the server's counters in the Prometheus text format at `GET /metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use crate::stats::Stats;

/// The counters as Prometheus text.
pub fn render(stats: &Stats) -> String {
    let mut out = String::new();
    for (name, help, value) in stats.snapshot() {
        out += &format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n");
    }
    out
}

/// Serves `/metrics` on `addr` until the task is aborted; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    stats: Arc<Stats>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    voq_transport::metrics::serve(addr, Arc::new(move || render(&stats)))
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
        let text = render(&stats);
        assert!(
            text.contains("# TYPE voq_turns_committed counter\nvoq_turns_committed 3\n"),
            "{text}"
        );
        assert!(text.contains("voq_sessions_started 0\n"));
    }
}
