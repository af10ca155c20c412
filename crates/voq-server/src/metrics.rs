//! `--metrics ADDR`: the server's counters in the Prometheus text format at `GET /metrics`,
//! over a minimal HTTP/1.1 responder (one request per connection, bounded reads). Anything
//! else gets 404; a slow or malformed client is dropped after a timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::stats::Stats;

/// The counters as Prometheus text.
pub fn render(stats: &Stats) -> String {
    let mut out = String::new();
    for (name, help, value) in stats.snapshot() {
        out += &format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n");
    }
    out
}

/// Serves `/metrics` on `addr` until the task is dropped; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    stats: Arc<Stats>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on tcp {addr} for metrics"))?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let stats = stats.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
                else {
                    return;
                };
                let request = String::from_utf8_lossy(&buf[..n]);
                let response = if request.starts_with("GET /metrics ") {
                    let body = render(&stats);
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        .to_string()
                };
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn metrics_are_served_as_prometheus_text() -> anyhow::Result<()> {
        let stats = Arc::new(Stats::default());
        stats.turns_committed.add(3);
        let (addr, task) = serve("127.0.0.1:0".parse()?, stats).await?;
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
                .await?;
            let mut out = String::new();
            s.read_to_string(&mut out).await?;
            anyhow::Ok(out)
        };
        let ok = get("/metrics").await?;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(
            ok.contains("# TYPE voq_turns_committed counter\nvoq_turns_committed 3\n"),
            "{ok}"
        );
        assert!(get("/other").await?.starts_with("HTTP/1.1 404"));
        task.abort();
        Ok(())
    }
}
