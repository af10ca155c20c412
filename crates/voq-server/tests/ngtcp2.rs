//! Interoperability with a QUIC stack nobody here wrote: ngtcp2's example client and server
//! (Debian `ngtcp2-client`, `ngtcp2-server`; `scripts/setup` installs them), on loopback.
//!
//! - `gtlsclient` dials a voq server's anycast address, gets an HTTP/3 answer, and moves to the
//!   server's preferred (unicast) address, which sees the client's packets arrive there.
//! - voq's QUIC client (quinn with our preferred-address patch) moves to `gtlsserver
//!   --preferred-ipv4-addr`, which validates the path (its own log says so).
//!
//! Without the programs the tests skip and say why; with `VOQ_NETNS_REQUIRED=1` (CI) they fail.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use voq_server::{AnycastSettings, QuicLbSettings, Server, Settings};

const GTLSCLIENT: &str = "/usr/bin/gtlsclient";
const GTLSSERVER: &str = "/usr/sbin/gtlsserver";

/// Whether `program` exists; if not, skips (or fails in CI) with the reason.
fn have(program: &str) -> bool {
    if Path::new(program).exists() {
        return true;
    }
    let why = format!("{program} is missing (Debian ngtcp2-client / ngtcp2-server; scripts/setup)");
    if std::env::var_os("VOQ_NETNS_REQUIRED").is_some_and(|v| v == "1") {
        panic!("VOQ_NETNS_REQUIRED=1 but {why}");
    }
    eprintln!("skipped: {why}");
    false
}

/// Runs a command to its end (at most `limit`) and returns stdout and stderr together.
async fn output(cmd: &mut tokio::process::Command, limit: Duration) -> String {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .expect("the program did not finish in time")
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn gtlsclient_moves_to_the_unicast_address_of_voq_serve() {
    if !have(GTLSCLIENT) {
        return;
    }
    let server = Server::start(Settings {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        web: false,
        quic_lb: Some(QuicLbSettings {
            config_id: 0,
            server_id: vec![1],
            nonce_len: 8,
            key: None,
            cid_len: None,
            self_encoded_len: None,
        }),
        anycast: Some(AnycastSettings {
            addr: SocketAddr::from(([127, 0, 0, 2], 0)),
            peers: Vec::new(),
        }),
        drain_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await
    .unwrap();
    let anycast = server.anycast_addr().unwrap();
    let unicast = server.local_addr();
    let out = output(
        tokio::process::Command::new(GTLSCLIENT)
            .args(["--no-quic-dump", "--timeout=2s"])
            .arg(anycast.ip().to_string())
            .arg(anycast.port().to_string())
            .arg(format!("https://{anycast}/voq")),
        Duration::from_secs(20),
    )
    .await;
    let moved = format!("remote:[{}]:{}}} succeeded", unicast.ip(), unicast.port());
    assert!(
        out.lines()
            .any(|l| l.starts_with("Path validation against path") && l.ends_with(&moved)),
        "gtlsclient did not validate the preferred address {unicast}:\n{out}"
    );
    // An HTTP answer, not a closed connection.
    assert!(out.contains(":status: 404"), "no HTTP/3 answer:\n{out}");
    assert!(
        !out.contains("ERR_DRAINING"),
        "voq closed the connection:\n{out}"
    );
    let stats = server.anycast_stats().unwrap();
    assert!(
        stats.unicast_received > 0,
        "nothing arrived on the unicast address: {stats:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn voq_client_moves_to_the_preferred_address_of_gtlsserver() {
    if !have(GTLSSERVER) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    // Two free ports: the server's address and its preferred address.
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            std::net::UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let original = SocketAddr::from(([127, 0, 0, 2], ports[0]));
    let preferred = SocketAddr::from(([127, 0, 0, 3], ports[1]));
    let mut child = tokio::process::Command::new(GTLSSERVER)
        .args(["--no-quic-dump", "--no-http-dump"])
        .arg(format!("--preferred-ipv4-addr={preferred}"))
        .arg(original.ip().to_string())
        .arg(original.port().to_string())
        .arg(&key)
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
    // Collect gtlsserver's log lines as they come.
    let lines = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = log.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    // voq's client endpoint and transport settings; ALPN h3, the only one gtlsserver speaks.
    let tls = voq_client::tls::client_config(&voq_client::Trust::Insecure, b"h3").unwrap();
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(voq_transport::quic::transport_config());
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    // gtlsserver may need a moment to bind: retry the connection until it answers.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let conn = loop {
        let attempt = endpoint
            .connect_with(config.clone(), original, "localhost")
            .unwrap();
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(conn)) => break conn,
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "no handshake with gtlsserver: {other:?}"
            ),
        }
    };
    let validated = format!(
        "Path validation against path {{local:[{}]:{},",
        preferred.ip(),
        preferred.port()
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut poked = None;
    loop {
        // Once moved, send something non-probing on the new path (a grease stream, which an
        // HTTP/3 server ignores), so the server sees the path in use and validates it in turn.
        if poked.is_none() && conn.stats().preferred_address.migrated {
            let mut grease = conn.open_uni().await.unwrap();
            grease.write_all(&[0x21]).await.unwrap();
            poked = Some(grease);
        }
        let seen = lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with(&validated) && l.ends_with("succeeded"));
        if seen && conn.stats().preferred_address.migrated {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no validated move to {preferred}; client: {:?}, remote {}; gtlsserver said:\n{}",
            conn.stats().preferred_address,
            conn.remote_address(),
            lines.lock().unwrap().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(conn.remote_address(), preferred);
    conn.close(0u32.into(), b"done");
    child.kill().await.ok();
}
