//! The TCP side of the port: the demo page, `/voq/config.json` (the WebTransport URL and the
//! certificate hash browsers pin), `/healthz`, and WebSocket sessions at `/voq`.
//!
//! TLS is detected per connection from the first byte (0x16 opens a TLS handshake record), so the
//! one port serves `https://`/`wss://` with the server's certificate and plain `http://`/`ws://`
//! (which browsers accept as a secure context on localhost). One request per connection, except an
//! upgrade, which becomes a voq session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tracing::debug;
use voq_transport::Link;
use voq_transport::ws::{WsLink, websocket_config};

use crate::session::{self, SessionContext};
use crate::tls::CertStore;

/// The demo page and its script, built by `npm run build` in `web/` (committed; CI checks that
/// they match the sources).
const PAGE_HTML: &[u8] = include_bytes!("../../../web/dist/index.html");
const PAGE_JS: &[u8] = include_bytes!("../../../web/dist/app.js");

/// Largest request head read.
const MAX_HEAD: usize = 16 * 1024;
/// A client must send its request head within this time.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What the TCP front needs from its server.
#[derive(Clone)]
pub(crate) struct WebContext {
    pub certs: Arc<CertStore>,
    pub tls: tokio_rustls::TlsAcceptor,
    pub session: SessionContext,
    pub slots: Arc<crate::Slots>,
    /// TCP connections that have not become a session yet (TLS, the request head): their own
    /// budget, like QUIC handshakes, so that idle connections cannot take session slots or
    /// every file descriptor.
    pub pending: Arc<crate::Slots>,
    /// The UDP port of QUIC and WebTransport (the same number as the TCP port).
    pub udp_port: u16,
}

/// Serves until shutdown, then waits for its WebSocket sessions to end.
pub(crate) async fn serve(listener: TcpListener, ctx: WebContext) {
    let mut conns = JoinSet::new();
    let mut shutdown = ctx.session.shutdown.clone();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    debug!("tcp accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        while conns.try_join_next().is_some() {}
        if let Some(prefixes) = &ctx.session.prefixes
            && prefixes.take_handshake(peer.ip(), std::time::Instant::now())
                == crate::prefix::Verdict::Over
        {
            // A TCP peer's address is real (it completed the handshake): refuse at once.
            let limit = crate::stats::Limit::PrefixHandshakes;
            ctx.session.stats.limits_exceeded.get(limit).inc();
            continue;
        }
        let Some(pending) = ctx.pending.try_acquire() else {
            ctx.session.stats.handshakes_refused.inc();
            continue;
        };
        let ctx = ctx.clone();
        conns.spawn(async move {
            if let Err(e) = connection(stream, peer, ctx, pending).await {
                debug!(%peer, "http: {e:#}");
            }
        });
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: WebContext,
    pending: crate::Slot,
) -> anyhow::Result<()> {
    voq_transport::ws::tune_tcp(&stream);
    let mut first = [0u8; 1];
    let n = tokio::time::timeout(HEAD_TIMEOUT, stream.peek(&mut first)).await??;
    if n == 1 && first[0] == 0x16 {
        let tls = tokio::time::timeout(HEAD_TIMEOUT, ctx.tls.accept(stream)).await??;
        request(tls, peer, true, ctx, pending).await
    } else {
        request(stream, peer, false, ctx, pending).await
    }
}

/// A parsed request head.
struct Head {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    /// Bytes read after the head (the start of a WebSocket stream).
    rest: Vec<u8>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> anyhow::Result<Option<Head>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf)? {
            httparse::Status::Complete(len) => {
                let head = Head {
                    method: req.method.unwrap_or("").to_string(),
                    path: req.path.unwrap_or("/").to_string(),
                    headers: req
                        .headers
                        .iter()
                        .map(|h| {
                            let value = String::from_utf8_lossy(h.value).into_owned();
                            (h.name.to_string(), value)
                        })
                        .collect(),
                    rest: buf[len..].to_vec(),
                };
                return Ok(Some(head));
            }
            httparse::Status::Partial if buf.len() < MAX_HEAD => continue,
            httparse::Status::Partial => anyhow::bail!("request head over {MAX_HEAD} bytes"),
        }
    }
}

async fn request<S>(
    mut s: S,
    peer: SocketAddr,
    tls: bool,
    ctx: WebContext,
    pending: crate::Slot,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut s)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(e)) => {
            respond(
                &mut s,
                400,
                "text/plain",
                format!("bad request: {e}\n").as_bytes(),
            )
            .await?;
            return Ok(());
        }
        Err(_) => return Ok(()),
    };
    ctx.session.stats.http_requests.inc();
    let path = head.path.split('?').next().unwrap_or("/");
    if head.method != "GET" {
        return respond(&mut s, 405, "text/plain", b"only GET\n").await;
    }
    match path {
        "/voq" => websocket(s, head, peer, ctx, pending, Endpoint::Voq).await,
        "/v1/realtime" => websocket(s, head, peer, ctx, pending, Endpoint::Realtime).await,
        "/" | "/index.html" => {
            let page = page_html(&config_json(&ctx, head.header("host"), tls));
            respond(&mut s, 200, "text/html; charset=utf-8", page.as_bytes()).await
        }
        "/app.js" => respond(&mut s, 200, "text/javascript; charset=utf-8", PAGE_JS).await,
        "/voq/config.json" => {
            let body = config_json(&ctx, head.header("host"), tls);
            respond(&mut s, 200, "application/json", body.as_bytes()).await
        }
        "/healthz" => respond(&mut s, 200, "text/plain", b"ok\n").await,
        _ => respond(&mut s, 404, "text/plain", b"not found\n").await,
    }
}

/// `/voq/config.json`: where WebTransport is and, with a development certificate, the hash to
/// pin. The host is the one the browser used, so the page works under any name or address.
fn config_json(ctx: &WebContext, host: Option<&str>, tls: bool) -> String {
    let hostname = host.map(host_without_port).unwrap_or("127.0.0.1");
    let mut config = serde_json::json!({
        "version": voq_proto::event::PROTOCOL_VERSION,
        "webtransport": {
            "url": format!("https://{hostname}:{}/voq", ctx.udp_port),
        },
        "websocket": {"path": "/voq", "tls": tls},
    });
    if ctx.certs.is_dev() {
        config["webtransport"]["certificate_hashes"] = serde_json::json!([
            {"algorithm": "sha-256", "value": ctx.certs.sha256_hex()}
        ]);
    }
    config.to_string()
}

/// The demo page with `config` (what `/voq/config.json` says) in it, where the page's
/// `<!--voq-config…-->` comment is: the page then connects without fetching it, one round trip
/// sooner. The JSON is made safe inside a `<script>` element (`<`, `>` and `&` escaped).
fn page_html(config: &str) -> String {
    let page = String::from_utf8_lossy(PAGE_HTML);
    let Some(start) = page.find("<!--voq-config") else {
        return page.into_owned();
    };
    let Some(len) = page[start..].find("-->") else {
        return page.into_owned();
    };
    let safe = config
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    format!(
        "{}<script type=\"application/json\" id=\"voq-config\">{safe}</script>{}",
        &page[..start],
        &page[start + len + 3..]
    )
}

/// `example.com:443` → `example.com`, `[::1]:80` → `[::1]`, `[::1]` → `[::1]`.
fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    }
}

/// What a WebSocket upgrade is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// voq/1's stream mux (`/voq`).
    Voq,
    /// The OpenAI Realtime API's protocol (`/v1/realtime`).
    Realtime,
}

async fn websocket<S>(
    mut s: S,
    head: Head,
    peer: SocketAddr,
    ctx: WebContext,
    pending: crate::Slot,
    endpoint: Endpoint,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let upgrade = head
        .header("upgrade")
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    let (Some(key), true) = (head.header("sec-websocket-key"), upgrade) else {
        return respond(
            &mut s,
            426,
            "text/plain",
            b"a WebSocket endpoint: upgrade required\n",
        )
        .await;
    };
    if let Err(refused) = ctx
        .session
        .origins
        .check(head.header("origin"), head.header("host"))
    {
        tracing::info!(%peer, "WebSocket upgrade refused: {refused}");
        ctx.session.stats.connections_refused.inc();
        let body = format!("{refused}\n");
        return respond(&mut s, 403, "text/plain", body.as_bytes()).await;
    }
    if head.header("sec-websocket-version") != Some("13") {
        return respond(
            &mut s,
            426,
            "text/plain",
            b"WebSocket version 13 required\n",
        )
        .await;
    }
    // The token: `Authorization: Bearer` (native clients) or `?token=` (browsers cannot set
    // headers on a WebSocket). Checked before anything else of the session happens.
    let credential = match &ctx.session.auth {
        None => session::Credential::Open,
        Some(auth) => {
            let token = head
                .header("authorization")
                .and_then(crate::bearer)
                .map(str::to_string)
                .or_else(|| {
                    let url = url::Url::parse(&format!("http://voq{}", head.path)).ok()?;
                    crate::token_in_query(&url)
                });
            match auth.admit(
                token.as_deref(),
                &ctx.session.agent_name,
                std::time::SystemTime::now(),
            ) {
                Ok((grant, admission)) => session::Credential::Admitted(grant, admission),
                Err(refused) => {
                    session::log_refusal(&ctx.session, &refused);
                    let status = match refused.code() {
                        voq_proto::Code::LimitExceeded => 429,
                        _ => 401,
                    };
                    let body = format!("{}: {refused}\n", refused.code().as_str());
                    return respond(&mut s, status, "text/plain", body.as_bytes()).await;
                }
            }
        }
    };
    let Ok(prefix_place) = ctx.session.take_prefix_session(peer.ip()) else {
        ctx.session.stats.connections_refused.inc();
        return respond(
            &mut s,
            429,
            "text/plain",
            b"limit_exceeded: too many sessions from your network\n",
        )
        .await;
    };
    let Some(slot) = ctx.slots.try_acquire() else {
        ctx.session.stats.connections_refused.inc();
        return respond(&mut s, 503, "text/plain", b"server at capacity\n").await;
    };
    let accept =
        tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.trim().as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    s.write_all(response.as_bytes()).await?;
    let config = match endpoint {
        Endpoint::Voq => websocket_config(),
        Endpoint::Realtime => crate::realtime::client_config(),
    };
    let ws = tokio_tungstenite::WebSocketStream::from_partially_read(
        s,
        head.rest,
        tokio_tungstenite::tungstenite::protocol::Role::Server,
        Some(config),
    )
    .await;
    ctx.session.stats.connections_accepted.inc();
    // A session now: its slot holds it, not the pending budget.
    drop(pending);
    let mut session_ctx = ctx.session.clone();
    session_ctx.proto.session_id = crate::next_session_id();
    match endpoint {
        Endpoint::Voq => {
            let link = Link::WebSocket(WsLink::start(ws, true, peer));
            session::run(link, session_ctx, credential).await;
        }
        Endpoint::Realtime => crate::realtime::serve(ws, peer, session_ctx, credential).await,
    }
    drop(slot);
    drop(prefix_place);
    Ok(())
}

async fn respond<S: AsyncWrite + Unpin>(
    s: &mut S,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> anyhow::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        _ => "",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // A client that does not read its response is not waited for.
    tokio::time::timeout(HEAD_TIMEOUT, async {
        s.write_all(head.as_bytes()).await?;
        s.write_all(body).await?;
        s.shutdown().await
    })
    .await
    .map_err(|_| anyhow::anyhow!("the client did not read its response"))??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_their_ports() {
        assert_eq!(host_without_port("example.com:443"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod page_tests {
    use super::*;

    #[test]
    fn the_page_carries_the_config_and_nothing_in_it_can_end_the_script() {
        let config = r#"{"webtransport":{"url":"https://h:1/voq"},"x":"</script><b>&"}"#;
        let page = page_html(config);
        assert!(!page.contains("<!--voq-config"), "the marker is replaced");
        let start = page
            .find(r#"<script type="application/json" id="voq-config">"#)
            .unwrap();
        let body = &page[start..];
        let end = body.find("</script>").unwrap();
        let json = &body[body.find('>').unwrap() + 1..end];
        // The JSON parses back to the config, though no `<` survives inside the element.
        assert!(!json.contains('<') && !json.contains('>') && !json.contains('&'));
        let back: serde_json::Value = serde_json::from_str(json).unwrap();
        let want: serde_json::Value = serde_json::from_str(config).unwrap();
        assert_eq!(back, want);
        // The page's own script still follows.
        assert!(page.contains(r#"<script type="module" src="/app.js"></script>"#));
    }
}
