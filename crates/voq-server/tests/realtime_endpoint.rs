//! `/v1/realtime`: the OpenAI Realtime API's WebSocket protocol on voq's TCP port, driven by the
//! official `openai` Python SDK (scripts/peers/realtime_sdk.py, pinned in .venv by
//! scripts/setup) over `ws://` and `wss://`, and by hand with bad input.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use voq_server::{Server, Settings};

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

async fn echo_server() -> Server {
    Server::start(Settings {
        agent_speed: 8.0,
        ..Settings::loopback("echo")
    })
    .await
    .unwrap()
}

/// Runs the SDK application against `url`; returns its summary and output directory.
fn run_sdk(python: &Path, url: &str, insecure: bool) -> (Value, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(python);
    cmd.arg(repo("scripts/peers/realtime_sdk.py"))
        .arg(url)
        .arg(repo("testdata/audio/prompt-carwash-24k.wav"))
        .arg(out.path());
    if insecure {
        cmd.arg("--insecure");
    }
    let result = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{url}: {stderr}");
    let summary = serde_json::from_slice(&result.stdout)
        .unwrap_or_else(|e| panic!("{url}: no summary ({e}): {stderr}"));
    (summary, out)
}

#[tokio::test]
async fn the_official_python_sdk_talks_to_an_echo_agent_bit_exact_with_barge_in_and_vad() {
    let Some(python) = common::peer_python("the openai SDK") else {
        return;
    };
    let server = echo_server().await;
    let port = server.web_addr().unwrap().port();
    let prompt = std::fs::read(repo("testdata/audio/prompt-carwash-24k.wav")).unwrap();
    // The WAV's data chunk is the PCM the SDK appends (a 44-byte canonical header).
    let pcm = &prompt[44..];
    for (url, insecure) in [
        (format!("ws://127.0.0.1:{port}/v1"), false),
        (format!("wss://127.0.0.1:{port}/v1"), true),
    ] {
        let sdk_python = python.clone();
        let (summary, out) =
            tokio::task::spawn_blocking(move || run_sdk(&sdk_python, &url, insecure))
                .await
                .unwrap();
        // A Realtime session starts with server VAD, as the Realtime API's do.
        assert_eq!(summary["initial_turn_detection"]["type"], "server_vad");
        // Push-to-talk: commit + response.create answers the turn, bit-exact through base64.
        assert_eq!(summary["turn"]["status"], "completed", "{summary:#}");
        let reply = std::fs::read(out.path().join("reply.pcm")).unwrap();
        assert_eq!(reply.len(), pcm.len(), "{summary:#}");
        assert!(reply == pcm, "the echoed reply differs from the prompt");
        // Barge-in: truncated exactly where the client said, the response cancelled.
        let barge = &summary["barge_in"];
        assert_eq!(barge["audio_end_ms"], 400, "{summary:#}");
        assert_eq!(barge["truncated_item"], barge["item_id"]);
        assert_eq!(barge["status"], "cancelled");
        // Server VAD found the end of the speech in the silence after it, and answered.
        let stopped = summary["vad"]["speech_stopped_ms"].as_u64().unwrap();
        assert!((2000..=3400).contains(&stopped), "{summary:#}");
        assert_eq!(summary["vad"]["status"], "completed");
        // Every event both ways is a GA event (the translator's own included).
        let (code, report) = common::check_ga_file(&python, &out.path().join("events.jsonl"));
        assert_eq!(code, 0, "{report:#}");
        for kind in [
            "response.output_item.added",
            "response.content_part.added",
            "response.output_audio.delta",
            "response.output_audio.done",
            "response.output_item.done",
        ] {
            assert!(
                report["types"]["received"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(kind)),
                "{kind} not seen: {report:#}"
            );
        }
    }
    server.shutdown().await;
}

/// The official `openai` npm package (with `ws`), as web/package.json pins it.
fn node_sdk() -> Option<std::path::PathBuf> {
    let script = repo("web/e2e/realtime-sdk.mjs");
    if repo("web/node_modules/openai/realtime/ws.js").exists()
        && repo("web/node_modules/ws").exists()
    {
        return Some(script);
    }
    let why = "web/node_modules has no openai or ws: run scripts/setup";
    assert!(
        std::env::var_os("VOQ_NETNS_REQUIRED").is_none(),
        "VOQ_NETNS_REQUIRED=1 (CI) but {why}"
    );
    eprintln!("SKIPPED: the openai npm SDK: {why}");
    None
}

#[tokio::test]
async fn the_official_node_sdk_talks_to_an_echo_agent_over_wss() {
    let (Some(script), Some(python)) = (node_sdk(), common::peer_python("the openai SDK")) else {
        return;
    };
    let server = echo_server().await;
    let port = server.web_addr().unwrap().port();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_path_buf();
    let result = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(script)
            .arg(format!("https://127.0.0.1:{port}/v1"))
            .arg(repo("testdata/audio/prompt-carwash-24k.wav"))
            .arg(&dir)
            .current_dir(repo("web"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{stderr}");
    let summary: Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(summary["turn"]["status"], "completed", "{summary:#}");
    let prompt = std::fs::read(repo("testdata/audio/prompt-carwash-24k.wav")).unwrap();
    let reply = std::fs::read(out.path().join("reply.pcm")).unwrap();
    assert!(
        reply == prompt[44..],
        "the echoed reply differs from the prompt"
    );
    assert_eq!(summary["barge_in"]["audio_end_ms"], 400, "{summary:#}");
    assert_eq!(summary["barge_in"]["status"], "cancelled");
    let (code, report) = common::check_ga_file(&python, &out.path().join("events.jsonl"));
    assert_eq!(code, 0, "{report:#}");
    server.shutdown().await;
}

/// A raw Realtime WebSocket client.
struct Raw {
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
}

impl Raw {
    async fn connect(server: &Server) -> Self {
        let addr = server.web_addr().unwrap();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let url = format!("ws://{addr}/v1/realtime");
        let (ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
        Self { ws }
    }

    async fn send(&mut self, msg: Message) {
        self.ws.send(msg).await.unwrap();
    }

    async fn text(&mut self, event: Value) {
        self.send(Message::text(event.to_string())).await;
    }

    /// The next event of type `kind`, within 10 s.
    async fn until(&mut self, kind: &str) -> Value {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let Some(Ok(Message::Text(text))) = self.ws.next().await else {
                    panic!("the connection ended before {kind}")
                };
                let v: Value = serde_json::from_str(text.as_str()).unwrap();
                if v["type"] == kind {
                    return v;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {kind} within 10 s"))
    }
}

#[tokio::test]
async fn bad_realtime_input_gets_errors_with_codes_and_the_session_goes_on() {
    let server = echo_server().await;
    let mut c = Raw::connect(&server).await;
    c.until("session.created").await;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let cases: Vec<(Message, &str)> = vec![
        (Message::text("not json"), "invalid_json"),
        (Message::binary(vec![1u8, 2, 3]), "invalid_json"),
        (
            Message::text(r#"{"type":"input_audio_buffer.append","audio":"@@@"}"#),
            "invalid_value",
        ),
        (
            Message::text(
                json!({"type": "input_audio_buffer.append", "audio": b64(&[1, 2, 3])}).to_string(),
            ),
            "invalid_value",
        ),
        (
            Message::text(
                r#"{"type":"session.update","session":{"type":"realtime","audio":{"input":{"format":{"type":"audio/opus"}}}}}"#,
            ),
            "invalid_value",
        ),
        (
            Message::text(
                r#"{"type":"session.update","session":{"type":"realtime","audio":{"input":{"format":{"type":"audio/pcmu"}}}}}"#,
            ),
            "invalid_value",
        ),
        (
            Message::text(r#"{"type":"conversation.item.create","item":{}}"#),
            "unknown_event_type",
        ),
        (
            Message::text(r#"{"type":"response.cancel","event_id":"mine"}"#),
            "response_not_found",
        ),
        (
            Message::text(r#"{"type":"input_audio_buffer.commit"}"#),
            "input_audio_buffer_commit_empty",
        ),
        (
            Message::text(
                r#"{"type":"conversation.item.truncate","item_id":"nope","content_index":0,"audio_end_ms":5}"#,
            ),
            "item_not_found",
        ),
    ];
    for (msg, code) in cases {
        let shown = format!("{msg:?}");
        c.send(msg).await;
        let e = c.until("error").await;
        assert_eq!(e["error"]["code"], code, "{shown}: {e}");
    }
    // The session goes on: a push-to-talk turn is answered bit-exact.
    c.text(
        json!({"type": "session.update", "session": {"type": "realtime",
        "audio": {"input": {"turn_detection": null}}}}),
    )
    .await;
    c.until("session.updated").await;
    let pcm: Vec<u8> = (0..9600u32)
        .flat_map(|i| (i as i16).to_le_bytes())
        .collect();
    c.text(json!({"type": "input_audio_buffer.append", "audio": b64(&pcm)}))
        .await;
    c.text(json!({"type": "input_audio_buffer.commit"})).await;
    c.text(json!({"type": "response.create"})).await;
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let Some(Ok(Message::Text(text))) = c.ws.next().await else {
                panic!("connection ended")
            };
            let v: Value = serde_json::from_str(text.as_str()).unwrap();
            match v["type"].as_str() {
                Some("response.output_audio.delta") => reply.extend(
                    base64::engine::general_purpose::STANDARD
                        .decode(v["delta"].as_str().unwrap())
                        .unwrap(),
                ),
                Some("response.done") => break,
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    assert!(reply == pcm, "{} bytes back of {}", reply.len(), pcm.len());
    server.shutdown().await;
}

#[tokio::test]
async fn a_message_over_the_limit_closes_only_its_connection() {
    let server = echo_server().await;
    let mut big = Raw::connect(&server).await;
    big.until("session.created").await;
    let huge = "A".repeat(5 * 1024 * 1024);
    let append = json!({"type": "input_audio_buffer.append", "audio": huge}).to_string();
    // The server may close while the message is still being written.
    let _ = big.ws.send(Message::text(append)).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match big.ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(closed, Some(1009), "closed with 'message too big'");
    // Others are served.
    let mut next = Raw::connect(&server).await;
    next.until("session.created").await;
    server.shutdown().await;
}
