//! Helpers shared by the server's attack tests.
#![allow(dead_code)] // each test file uses some of them

use std::sync::{Arc, Mutex};
use std::time::Duration;

use voq_client::{CallOptions, Client, Target, Trust};
use voq_server::Server;

/// How to reach `server` over TLS as `localhost`.
pub fn target(server: &Server) -> Target {
    Target {
        addr: server.local_addr(),
        server_name: "localhost".into(),
        tls: true,
    }
}

/// One call to `server` from a fresh client (its own socket), trusting the server's
/// certificate by its hash; `opts` as given, with a 20 s timeout unless it sets one.
pub async fn call(server: &Server, opts: CallOptions) -> anyhow::Result<voq_client::CallOutcome> {
    let trust = Trust::cert_hash(&server.cert_sha256())?;
    let client = Client::new(&trust, "127.0.0.1:0".parse()?)?;
    let opts = CallOptions {
        timeout: if opts.timeout == CallOptions::default().timeout {
            Duration::from_secs(20)
        } else {
            opts.timeout
        },
        ..opts
    };
    client.call(&target(server), opts).await
}

/// A sans-IO QUIC client endpoint and its configuration (ALPN voq/1, the simulator's TLS): real
/// first flights without sockets.
pub fn sans_io_client() -> (quinn_proto::Endpoint, quinn_proto::ClientConfig) {
    let (_, client) = voq_sim::tls::quic_configs();
    let endpoint = quinn_proto::Endpoint::new(
        Arc::new(quinn_proto::EndpointConfig::default()),
        None,
        true,
        None,
    );
    (endpoint, client)
}

/// A UDP socket that answers nothing and keeps a copy of every datagram sent to it: where a
/// client's first flight goes to be withheld (an on-path attacker's tap).
pub async fn tap() -> (std::net::SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("cannot bind the tap: {e}"));
    let addr = socket
        .local_addr()
        .unwrap_or_else(|e| panic!("the tap has no address: {e}"));
    let captured = Arc::new(Mutex::new(Vec::new()));
    let keep = captured.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, _)) = socket.recv_from(&mut buf).await {
            if let Ok(mut c) = keep.lock() {
                c.push(buf[..n].to_vec());
            }
        }
    });
    (addr, captured)
}

/// QUIC-LB settings of test server `server_id` (config 1, one-octet server ids, 8-octet nonces,
/// one shared key), as the balancer and fleet tests configure them.
pub fn lb_settings(server_id: u8) -> voq_server::QuicLbSettings {
    voq_server::QuicLbSettings {
        config_id: 1,
        server_id: vec![server_id],
        nonce_len: 8,
        key: Some([0x2b; 16]),
        cid_len: None,
        self_encoded_len: None,
    }
}

/// The first `samples` of the carwash prompt (24 kHz mono pcm16); all of it for `usize::MAX`.
pub fn prompt(samples: usize) -> Vec<i16> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/audio/prompt-carwash-24k.wav");
    let pcm = voq_audio::read_wav_file(path)
        .unwrap_or_else(|e| panic!("the test prompt: {e}"))
        .to_mono_24k()
        .unwrap_or_else(|e| panic!("the test prompt: {e}"));
    pcm[..samples.min(pcm.len())].to_vec()
}

/// Waits until `done` holds, checking every 10 ms; fails after `within` with `what`. For
/// conditions with no event to await (a counter, a connection's statistics).
pub async fn until(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A bare QUIC connection speaking voq/1 by hand, for sending what a real client never would.
pub async fn raw_connection(server: &Server) -> quinn::Connection {
    let tls = voq_client::tls::client_config(&Trust::Insecure, voq_transport::quic::ALPN_VOQ)
        .unwrap_or_else(|e| panic!("client TLS: {e}"));
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .unwrap_or_else(|e| panic!("client QUIC TLS: {e}"));
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()))
            .unwrap_or_else(|e| panic!("client endpoint: {e}"));
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    endpoint
        .connect(server.local_addr(), "localhost")
        .unwrap_or_else(|e| panic!("connect: {e}"))
        .await
        .unwrap_or_else(|e| panic!("handshake: {e}"))
}

/// The Python venv that `scripts/setup` makes for the independent peers (aioquic, the `openai`
/// SDK). Missing, the caller skips, saying why; in CI (`VOQ_NETNS_REQUIRED=1`) that fails.
pub fn peer_python(peer: &str) -> Option<std::path::PathBuf> {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    if python.exists() {
        return Some(python);
    }
    let why = format!("{} is missing: run scripts/setup", python.display());
    assert!(
        std::env::var_os("VOQ_NETNS_REQUIRED").is_none(),
        "VOQ_NETNS_REQUIRED=1 (CI) but {why}"
    );
    eprintln!("SKIPPED: {peer}: {why}");
    None
}

/// Runs scripts/peers/realtime_ga.py (the `openai` SDK's Realtime GA types) over a JSON-lines
/// event log: (exit code, its summary). 0: every event conforms.
pub fn check_ga_file(python: &std::path::Path, log: &std::path::Path) -> (i32, serde_json::Value) {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/peers/realtime_ga.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(log)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the GA check: {e}"));
    let summary = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "the GA check printed no summary ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), summary)
}

/// [`check_ga_file`] over events in memory, written as `voq call --events` writes them.
pub fn check_ga(
    python: &std::path::Path,
    events: &[voq_client::events::LoggedEvent],
) -> (i32, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("a temporary directory: {e}"));
    let path = dir.path().join("events.jsonl");
    let lines: Vec<String> = events
        .iter()
        .filter_map(|e| serde_json::to_string(e).ok())
        .collect();
    std::fs::write(&path, lines.join("\n")).unwrap_or_else(|e| panic!("writing the log: {e}"));
    check_ga_file(python, &path)
}

/// A pcm16 user-audio stream's bytes: the header for `item_id` and `frames` (pts, payload).
pub fn turn_stream_bytes(item_id: &str, frames: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let header = voq_proto::wire::AudioHeader {
        item_id: item_id.into(),
        response_id: None,
        codec: "pcm16".into(),
        sample_rate: 24_000,
        frame_ms: 20,
    };
    let mut bytes = Vec::new();
    voq_proto::wire::encode_header(voq_proto::wire::StreamKind::UserAudio, &header, &mut bytes);
    for (pts, payload) in frames {
        voq_proto::wire::encode_frame(*pts, payload, &mut bytes)
            .unwrap_or_else(|e| panic!("frame: {e}"));
    }
    bytes
}
