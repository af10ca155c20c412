//! The same voq/1 session over all three carriers on one port number: raw QUIC, WebTransport
//! (HTTP/3) and WebSocket (TCP, plain and TLS), plus the TCP port's page, config and bad input.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use voq_client::{CallOptions, Client, Target, Trust};
use voq_proto::Codec;
use voq_server::{Server, Settings};
use voq_transport::Carrier;

fn prompt() -> Vec<i16> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/audio/prompt-carwash-24k.wav");
    voq_audio::read_wav_file(path)
        .unwrap()
        .to_mono_24k()
        .unwrap()
}

async fn server() -> Server {
    Server::start(Settings::loopback("echo")).await.unwrap()
}

fn target(server: &Server, tls: bool) -> Target {
    Target {
        addr: server.local_addr(),
        server_name: "localhost".into(),
        tls,
    }
}

async fn echo_call(server: &Server, transport: Carrier, tls: bool) -> voq_client::CallOutcome {
    let trust = Trust::cert_hash(&server.cert_sha256()).unwrap();
    let client = Client::new(&trust, "127.0.0.1:0".parse().unwrap()).unwrap();
    let opts = CallOptions {
        turns: vec![prompt()],
        input_speed: 8.0,
        transport,
        timeout: Duration::from_secs(30),
        ..Default::default()
    };
    client.call(&target(server, tls), opts).await.unwrap()
}

#[tokio::test]
async fn every_carrier_echoes_bit_exact_on_one_port() {
    let server = server().await;
    assert_eq!(
        server.web_addr().unwrap().port(),
        server.local_addr().port()
    );
    let prompt = prompt();
    for (carrier, tls) in [
        (Carrier::Quic, true),
        (Carrier::WebTransport, true),
        (Carrier::WebSocket, true),
        (Carrier::WebSocket, false),
    ] {
        let out = echo_call(&server, carrier, tls).await;
        let r = &out.report;
        assert_eq!(
            r.transport,
            carrier.as_str(),
            "the report names the carrier"
        );
        assert_eq!(
            out.reply_received, prompt,
            "{carrier} (tls {tls}): echo bit-exact"
        );
        assert_eq!(
            r.prompt.frames_confirmed, r.prompt.frames_sent,
            "{carrier}: nothing lost"
        );
        assert_eq!(
            r.reply.status,
            Some(voq_proto::event::ResponseStatus::Completed),
            "{carrier}"
        );
        assert!(
            r.rtt_ms > 0.0,
            "{carrier}: an RTT was measured ({} ms)",
            r.rtt_ms
        );
    }
    let stats = server.stats();
    assert_eq!(stats.sessions_started.get(Carrier::Quic).get(), 1);
    assert_eq!(stats.sessions_started.get(Carrier::WebTransport).get(), 1);
    assert_eq!(stats.sessions_started.get(Carrier::WebSocket).get(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn opus_and_barge_in_over_websocket() {
    let server = server().await;
    let trust = Trust::cert_hash(&server.cert_sha256()).unwrap();
    let client = Client::new(&trust, "127.0.0.1:0".parse().unwrap()).unwrap();
    let opts = CallOptions {
        codec: Codec::Opus,
        turns: vec![prompt()],
        input_speed: 8.0,
        interrupt_after: Some(Duration::from_millis(500)),
        transport: Carrier::WebSocket,
        timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let out = client.call(&target(&server, true), opts).await.unwrap();
    let i = out.report.interrupt.as_ref().expect("the call barged in");
    assert_eq!(
        i.truncated_audio_end_ms,
        Some(i.played_ms),
        "the server truncated at exactly what the user heard"
    );
    assert!(i.played_ms >= 400, "{i:?}");
    server.shutdown().await;
}

async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost:{}\r\n\r\n",
        addr.port()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn tcp_port_serves_page_config_and_refuses_nonsense() {
    let server = server().await;
    let web = server.web_addr().unwrap();
    let (status, page) = http_get(web, "/").await;
    assert_eq!(status, 200);
    assert!(page.contains("app.js"), "the page loads its script");
    assert_eq!(http_get(web, "/app.js").await.0, 200);
    assert_eq!(http_get(web, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(http_get(web, "/nope").await.0, 404);
    assert_eq!(
        http_get(web, "/voq").await.0,
        426,
        "a plain GET of /voq needs an upgrade"
    );
    let (status, config) = http_get(web, "/voq/config.json?x=1").await;
    assert_eq!(status, 200);
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(
        config["webtransport"]["url"],
        format!("https://localhost:{}/voq", server.local_addr().port())
    );
    assert_eq!(
        config["webtransport"]["certificate_hashes"][0]["value"],
        server.cert_sha256(),
        "the page pins the certificate the server uses now"
    );
    // Garbage instead of HTTP: a 400, and the server goes on.
    let mut tcp = tokio::net::TcpStream::connect(web).await.unwrap();
    tcp.write_all(b"\x00\x01\x02 not http\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    // A bad mux frame closes that WebSocket with 4002 (protocol_violation) ...
    let tcp = tokio::net::TcpStream::connect(web).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{web}/voq"), tcp)
        .await
        .unwrap();
    ws.send(Message::Binary(vec![0x7f, 0x00].into()))
        .await
        .unwrap();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(u16::from(close.unwrap().code), 4002);
    // ... and the server still serves calls.
    let out = echo_call(&server, Carrier::WebSocket, false).await;
    assert_eq!(
        out.report.reply.status,
        Some(voq_proto::event::ResponseStatus::Completed)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn webtransport_to_another_path_is_refused() {
    use voq_transport::web_transport_quinn as wtq;
    let server = server().await;
    let hash = voq_client::Trust::cert_hash(&server.cert_sha256()).unwrap();
    let voq_client::Trust::CertHash(hash) = hash else {
        unreachable!()
    };
    let client = wtq::ClientBuilder::new()
        .with_server_certificate_hashes(vec![hash.to_vec()])
        .unwrap();
    let url = url::Url::parse(&format!(
        "https://localhost:{}/other",
        server.local_addr().port()
    ))
    .unwrap();
    let Err(err) = client.connect(url).await else {
        panic!("the CONNECT to /other was accepted")
    };
    assert!(err.to_string().contains("404"), "{err}");
    server.shutdown().await;
}

/// A raw HTTP/1.1 request to the TCP port; returns the status line and headers.
async fn raw_get(server: &Server, path: &str, extra: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    let host = server.local_addr();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A page on another site cannot drive the server: its WebSocket upgrade is refused (403),
/// while native clients (no Origin), the server's own pages and loopback pages for a loopback
/// server get through; the config is not shared with every site (no `*` CORS header).
#[tokio::test]
async fn websocket_upgrades_from_other_sites_are_refused() {
    let server = server().await;
    let evil = raw_get(&server, "/voq", "Origin: http://evil.example\r\n").await;
    assert!(evil.starts_with("HTTP/1.1 403"), "{evil}");
    let own = format!("Origin: http://{}\r\n", server.local_addr());
    assert!(
        raw_get(&server, "/voq", &own)
            .await
            .starts_with("HTTP/1.1 101")
    );
    let local_dev = raw_get(&server, "/voq", "Origin: http://localhost:5173\r\n").await;
    assert!(local_dev.starts_with("HTTP/1.1 101"), "{local_dev}");
    assert!(
        raw_get(&server, "/voq", "")
            .await
            .starts_with("HTTP/1.1 101")
    );
    let config = raw_get(
        &server,
        "/voq/config.json",
        "Origin: http://evil.example\r\n",
    )
    .await;
    assert!(
        config.starts_with("HTTP/1.1 200") && !config.contains("Access-Control-Allow-Origin"),
        "{config}"
    );
    assert!(server.stats().connections_refused.get() >= 1);
    server.shutdown().await;
}

/// A client that floods its control stream with events (here: 5,000 pings in one WebSocket
/// message) has its session closed with `limit_exceeded` (close status 4011), counted as
/// `voq_limits_exceeded_total{limit="event_rate"}`; other calls go on.
#[tokio::test]
async fn an_event_flood_closes_that_session_only() {
    use voq_proto::mux::MuxFrame;
    let server = server().await;
    let web = server.web_addr().unwrap();
    let tcp = tokio::net::TcpStream::connect(web).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{web}/voq"), tcp)
        .await
        .unwrap();
    let mut flood = Vec::new();
    for id in 0..5_000 {
        let ping = format!(r#"{{"type":"voq.ping","id":{id}}}"#);
        voq_proto::wire::encode_event(ping.as_bytes(), &mut flood).unwrap();
    }
    let frame = MuxFrame::Stream { id: 0, data: flood }.encode();
    ws.send(Message::Binary(frame.into())).await.unwrap();
    let mut pongs = 0;
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(Message::Binary(b))) => {
                pongs += String::from_utf8_lossy(&b).matches("voq.pong").count()
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let close = close.unwrap();
    assert_eq!(u16::from(close.code), 4000 + 0x0b, "{close:?}");
    assert!(close.reason.contains("events a second"), "{close:?}");
    assert!(pongs <= 200, "no more than the burst was answered: {pongs}");
    let metrics = server.stats().render_prometheus();
    assert!(
        metrics.contains("voq_limits_exceeded_total{limit=\"event_rate\"} 1"),
        "{metrics}"
    );
    let out = echo_call(&server, Carrier::WebSocket, false).await;
    assert_eq!(
        out.report.reply.status,
        Some(voq_proto::event::ResponseStatus::Completed)
    );
    server.shutdown().await;
}
