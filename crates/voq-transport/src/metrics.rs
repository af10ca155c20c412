//! A minimal `GET /metrics` responder (Prometheus text), shared by `voq serve` and `voq lb`:
//! one request per connection, bounded reads, a 5 s timeout, 404 for anything else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves `render()` at `http://addr/metrics` until the returned task is aborted; returns the
/// bound address.
pub async fn serve(
    addr: SocketAddr,
    render: Arc<dyn Fn() -> String + Send + Sync>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let render = render.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
                else {
                    return;
                };
                let response = if buf[..n].starts_with(b"GET /metrics ") {
                    let body = render();
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
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

    async fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn metrics_are_served_and_other_paths_are_404() -> std::io::Result<()> {
        let render: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(|| "x_total 3\n".to_string());
        let (addr, task) = serve(
            "127.0.0.1:0".parse().map_err(std::io::Error::other)?,
            render,
        )
        .await?;
        let ok = get(addr, "/metrics").await?;
        assert!(
            ok.starts_with("HTTP/1.1 200") && ok.ends_with("\r\n\r\nx_total 3\n"),
            "{ok}"
        );
        assert!(get(addr, "/other").await?.starts_with("HTTP/1.1 404"));
        task.abort();
        Ok(())
    }
}
