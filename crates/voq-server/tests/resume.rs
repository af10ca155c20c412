//! Resume tokens and the store under bad input (issue #15): a token works once (two clients
//! racing with one get one session between them), a forged or expired one gets a clear error and
//! no session, audio that contradicts what the server holds is refused without mixing it into
//! the turn, a store that is down costs resumption and nothing else, and the server keeps
//! serving everyone meanwhile. The kill -9 tests with real processes and Redis are
//! `crates/voq/tests/resume.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use voq_client::CallOptions;
use voq_server::resume::{MemoryStore, RedisStore, ResumeKeys, Resumption, SessionStore};
use voq_server::{Server, Settings};

const SECRET: &[u8] = b"a fleet secret of thirty-two bytes!";

async fn server(store: Arc<dyn SessionStore>) -> Server {
    let settings = Settings {
        resumption: Some(Arc::new(Resumption {
            keys: ResumeKeys::from_secret(SECRET),
            store,
            window: Duration::from_secs(60),
        })),
        ..Settings::loopback("echo")
    };
    Server::start(settings).await.unwrap()
}

/// One voq/1 connection driven by hand.
struct Raw {
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn open(server: &Server, first: serde_json::Value) -> Self {
        let conn = common::raw_connection(server).await;
        let (send, recv) = conn.open_bi().await.unwrap();
        let mut raw = Self {
            conn,
            send,
            recv,
            buf: Vec::new(),
        };
        raw.event(first).await;
        raw
    }

    async fn event(&mut self, event: serde_json::Value) {
        let mut bytes = Vec::new();
        voq_proto::wire::encode_event(event.to_string().as_bytes(), &mut bytes).unwrap();
        self.send.write_all(&bytes).await.unwrap();
    }

    /// The next server event (`None` once the stream or connection ends).
    async fn next(&mut self) -> Option<serde_json::Value> {
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes(self.buf[..4].try_into().unwrap()) as usize;
                if self.buf.len() >= 4 + len {
                    let body: Vec<u8> = self.buf.drain(..4 + len).skip(4).collect();
                    return Some(serde_json::from_slice(&body).unwrap());
                }
            }
            let chunk =
                tokio::time::timeout(Duration::from_secs(10), self.recv.read_chunk(65536, true))
                    .await
                    .expect("no server event within 10 s");
            match chunk {
                Ok(Some(c)) => self.buf.extend_from_slice(&c.bytes),
                _ => return None,
            }
        }
    }

    /// Events until one of type `kind`.
    async fn until(&mut self, kind: &str) -> serde_json::Value {
        loop {
            let e = self
                .next()
                .await
                .unwrap_or_else(|| panic!("ended before {kind}"));
            if e["type"] == kind {
                return e;
            }
        }
    }

    /// A user-audio stream for `item_id` with pcm16 frames of 480 samples at `pts`, each filled
    /// with `fill`; finished if `fin`.
    async fn turn(&self, item_id: &str, frames: &[(u32, i16)], fin: bool) -> quinn::SendStream {
        let mut stream = self.conn.open_uni().await.unwrap();
        let frames: Vec<(u32, Vec<u8>)> = frames
            .iter()
            .map(|(pts, fill)| {
                let payload = std::iter::repeat_n(*fill, 480)
                    .flat_map(i16::to_le_bytes)
                    .collect();
                (*pts, payload)
            })
            .collect();
        let bytes = common::turn_stream_bytes(item_id, &frames);
        stream.write_all(&bytes).await.unwrap();
        if fin {
            stream.finish().unwrap();
        }
        stream
    }
}

fn update() -> serde_json::Value {
    serde_json::json!({"type": "session.update", "session": {"type": "realtime"}})
}

fn resume(token: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "session.update",
        "session": {"type": "realtime", "voq": {"resume": {"token": token}}}
    })
}

/// A session with an open turn of 10 frames, saved and then lost: its token.
async fn lost_session(server: &Server) -> (String, String) {
    let mut a = Raw::open(server, update()).await;
    let created = a.until("session.created").await;
    let token = created["session"]["voq"]["resume_token"]
        .as_str()
        .expect("a resumable server gives a resume token")
        .to_string();
    let id = created["session"]["id"].as_str().unwrap().to_string();
    let frames: Vec<(u32, i16)> = (0..10).map(|i| (i * 480, i as i16 + 1)).collect();
    let _open = a.turn("item_c1", &frames, false).await;
    let stats = server.stats().clone();
    common::until(Duration::from_secs(5), "ten frames", || {
        stats.prompt_frames.get() >= 10
    })
    .await;
    let saved = stats.snapshot_bytes.get();
    common::until(Duration::from_secs(5), "a snapshot with them", || {
        stats.snapshot_bytes.get() > saved
    })
    .await;
    // Lost without a word (as after a network change): the server keeps the session.
    a.conn.close(0u32.into(), b"");
    (token, id)
}

#[tokio::test]
async fn a_token_works_once_and_races_forgeries_and_expiry_get_no_session() {
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::default());
    let server = server(store).await;
    let (token, id) = lost_session(&server).await;

    // Two clients race with one token: one session between them.
    let mut b = Raw::open(&server, resume(&token)).await;
    let mut c = Raw::open(&server, resume(&token)).await;
    let (first_b, first_c) = (b.next().await.unwrap(), c.next().await.unwrap());
    let (mut winner, loser) = match (first_b["type"].as_str(), first_c["type"].as_str()) {
        (Some("voq.session.resumed"), Some("error")) => ((b, first_b), first_c),
        (Some("error"), Some("voq.session.resumed")) => ((c, first_c), first_b),
        other => panic!("expected one resume and one refusal, got {other:?}"),
    };
    assert_eq!(loser["error"]["code"], "unauthorized", "{loser}");
    let message = loser["error"]["message"].as_str().unwrap();
    assert!(message.contains("resumed already"), "{message}");
    let (ref mut w, resumed) = winner;
    assert_eq!(resumed["session"]["id"], id.as_str());
    let new_token = resumed["session"]["voq"]["resume_token"].as_str().unwrap();
    assert_ne!(new_token, token, "each resume hands out a new token");
    let held = &resumed["voq"]["turns"][0];
    assert_eq!(held["item_id"], "item_c1", "{resumed}");
    assert_eq!(held["held_pts"], 4800, "{resumed}");

    // The rest of the turn, from where the server holds it: one turn of 15 frames.
    let rest: Vec<(u32, i16)> = (10..15).map(|i| (i * 480, i as i16 + 1)).collect();
    w.turn("item_c1", &rest, true).await;
    let committed = w.until("input_audio_buffer.committed").await;
    assert_eq!(committed["voq"]["frames"], 15, "{committed}");
    assert_eq!(committed["item_id"], "item_c1");
    w.until("response.done").await;

    // Forged (another fleet's key, or an altered one) and expired tokens.
    let other = ResumeKeys::from_secret(b"another fleet, another secret!!!!");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ours = ResumeKeys::from_secret(SECRET);
    for (bad, words) in [
        (other.mint(&id, 1, now + 60), "signature"),
        (
            format!("{}x", &new_token[..new_token.len() - 1]),
            "resume token",
        ),
        (ours.mint(&id, 1, now - 10), "expired"),
        (ours.mint("sess_nobody", 0, now + 60), "cannot be resumed"),
        ("not a token".to_string(), "malformed"),
    ] {
        let mut r = Raw::open(&server, resume(&bad)).await;
        let e = r.next().await.unwrap();
        assert_eq!(e["type"], "error", "{bad}: {e}");
        assert_eq!(e["error"]["code"], "unauthorized", "{e}");
        let message = e["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{bad}: {message}");
        assert!(r.next().await.is_none(), "no session after a refusal");
        let reason = r.conn.closed().await.to_string();
        assert!(
            reason.contains("10") || reason.contains("unauthorized"),
            "{reason}"
        );
    }
    use voq_server::stats::ResumeResult;
    assert_eq!(server.stats().resumes.get(ResumeResult::Succeeded).get(), 1);
    assert_eq!(server.stats().resumes.get(ResumeResult::Refused).get(), 6);
    // Everyone else is served all along.
    let outcome = common::call(
        &server,
        CallOptions {
            turns: vec![common::prompt(4800)],
            input_speed: 0.0,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(outcome.reply_received[..4800], common::prompt(4800)[..]);
}

/// A resumed client that sends audio the server already holds, with other bytes, gets its turn
/// refused: the held audio is never mixed with contradicting audio.
#[tokio::test]
async fn audio_that_contradicts_what_the_server_holds_is_refused() {
    let server = server(Arc::new(MemoryStore::default())).await;
    let (token, _) = lost_session(&server).await;
    let mut b = Raw::open(&server, resume(&token)).await;
    b.until("voq.session.resumed").await;
    // From pts 0 again, with other samples.
    let again: Vec<(u32, i16)> = (0..15).map(|i| (i * 480, -7)).collect();
    b.turn("item_c1", &again, true).await;
    let e = b.until("error").await;
    assert_eq!(e["error"]["code"], "protocol_violation", "{e}");
    // Nothing was committed of it, and the session goes on.
    b.event(serde_json::json!({"type": "voq.ping", "id": 7}))
        .await;
    loop {
        let e = b.next().await.unwrap();
        assert_ne!(e["type"], "input_audio_buffer.committed", "{e}");
        if e["type"] == "voq.pong" {
            break;
        }
    }
}

/// With the store down, sessions work as ever (saves fail and are counted), and a resume gets a
/// clear error at once.
#[tokio::test]
async fn a_store_that_is_down_costs_resumption_and_nothing_else() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = Arc::new(RedisStore::new(&format!("redis://127.0.0.1:{port}")).unwrap());
    let server = server(store).await;
    let outcome = common::call(
        &server,
        CallOptions {
            turns: vec![common::prompt(24_000)],
            input_speed: 0.0,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(outcome.reply_received[..24_000], common::prompt(24_000)[..]);
    let stats = server.stats().clone();
    common::until(Duration::from_secs(5), "failed saves counted", || {
        stats.store_failures.get() > 0
    })
    .await;
    let keys = ResumeKeys::from_secret(SECRET);
    let token = keys.mint("sess_1", 0, u64::MAX / 2);
    let started = std::time::Instant::now();
    let mut r = Raw::open(&server, resume(&token)).await;
    let e = r.next().await.unwrap();
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("store is unavailable"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(3));
    use voq_server::stats::ResumeResult;
    assert_eq!(stats.resumes.get(ResumeResult::StoreFailed).get(), 1);
}

/// An error earlier in the call (here a failed response) does not stop a later resume: only
/// errors that end a session do. The agent fails the first turn's response; the server holding
/// the call is lost during the second turn; the call goes on, on a server taking the same
/// address and store, and the second turn's reply is whole.
#[tokio::test]
async fn a_failed_response_earlier_does_not_stop_a_resume() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("agent.py");
    std::fs::write(
        &script,
        r#"import base64, json, sys
buf = bytearray()
item = None
for line in sys.stdin:
    ev = json.loads(line)
    t = ev.get("type")
    if t == "input_audio_buffer.append":
        buf += base64.b64decode(ev["audio"])
    elif t == "input_audio_buffer.commit":
        item = ev["item_id"]
    elif t == "response.create":
        rid = ev["response"]["id"]
        if item == "item_c1":
            print(json.dumps({"type": "error", "error": {"message": "the first answer fails"}}), flush=True)
        else:
            print(json.dumps({"type": "response.output_audio.delta", "response_id": rid,
                              "delta": base64.b64encode(bytes(buf)).decode()}), flush=True)
            print(json.dumps({"type": "response.done", "response": {"id": rid, "status": "completed"}}), flush=True)
        buf = bytearray()
"#,
    )
    .unwrap();
    let agent = format!("exec:python3 {}", script.display());
    let resumption = Arc::new(Resumption {
        keys: ResumeKeys::from_secret(SECRET),
        store: Arc::new(MemoryStore::default()),
        window: Duration::from_secs(60),
    });
    let settings = |listen: std::net::SocketAddr| Settings {
        listen,
        resumption: Some(resumption.clone()),
        ..Settings::loopback(&agent)
    };
    let mut a = Server::start(settings("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let addr = a.local_addr();
    let trust = voq_client::Trust::Insecure;
    let client = voq_client::Client::new(&trust, "127.0.0.1:0".parse().unwrap()).unwrap();
    let target = voq_client::Target {
        addr,
        server_name: "localhost".into(),
        tls: true,
    };
    let turn = common::prompt(24_000);
    let opts = CallOptions {
        turns: vec![turn.clone(), turn.clone()],
        input_speed: 1.0,
        timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let call = tokio::spawn(async move { client.call(&target, opts).await });
    // A second into the second turn (the first is 50 frames).
    let stats = a.stats().clone();
    common::until(Duration::from_secs(20), "the second turn under way", || {
        stats.prompt_frames.get() >= 50 + 25 && stats.agent_failures.get() == 1
    })
    .await;
    let saved = stats.store_requests.get();
    common::until(Duration::from_secs(5), "a fresh snapshot", || {
        stats.store_requests.get() >= saved + 2
    })
    .await;
    a.crash();
    drop(a);
    // The address is free once the crashed server's endpoint has let its socket go.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let b = loop {
        match Server::start(settings(addr)).await {
            Ok(b) => break b,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "{e:#}");
                tokio::task::yield_now().await;
            }
        }
    };
    let outcome = call.await.unwrap().unwrap();
    assert_eq!(outcome.report.resumes.len(), 1, "{:?}", outcome.report);
    assert!(outcome.report.resumes[0].resumed, "{:?}", outcome.report);
    let statuses: Vec<_> = outcome.responses.iter().map(|r| r.status).collect();
    use voq_proto::event::ResponseStatus;
    assert_eq!(
        statuses,
        [
            Some(ResponseStatus::Failed),
            Some(ResponseStatus::Completed)
        ]
    );
    assert_eq!(
        b.stats()
            .resumes
            .get(voq_server::stats::ResumeResult::Succeeded)
            .get(),
        1
    );
}
