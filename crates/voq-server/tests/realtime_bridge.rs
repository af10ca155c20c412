//! `--agent realtime:URL`: voq at the edge, an upstream Realtime model behind it. Against voq's
//! own `/v1/realtime` (voq → voq, bit-exact through the chain) and against a mock upstream that
//! records every event it receives (checked against the GA types of the official `openai`
//! SDK), that streams slowly enough to be interrupted, and that fails on purpose.
#![allow(clippy::unwrap_used)]
// tungstenite's handshake callback returns its error response by value.
#![allow(clippy::result_large_err)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use voq_client::CallOptions;
use voq_proto::event::ResponseStatus;
use voq_server::{Server, Settings};
use voq_transport::Carrier;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Calls `edge` with `turns`, captured all at once (`tweak` sets the rest): the outcome and each
/// turn's reply status.
async fn call_edge(
    edge: &Server,
    turns: Vec<Vec<i16>>,
    tweak: impl FnOnce(&mut CallOptions),
) -> (voq_client::CallOutcome, Vec<Option<ResponseStatus>>) {
    let mut opts = CallOptions {
        turns,
        input_speed: 0.0,
        ..Default::default()
    };
    tweak(&mut opts);
    let outcome = common::call(edge, opts).await.unwrap();
    let statuses = outcome
        .report
        .turns
        .iter()
        .map(|t| t.reply_status)
        .collect();
    (outcome, statuses)
}

async fn bridge_server(upstream: &str) -> Server {
    Server::start(Settings::loopback(&format!("realtime:{upstream}")))
        .await
        .unwrap()
}

#[tokio::test]
async fn voq_to_voq_through_the_bridge_is_bit_exact_on_every_carrier() {
    let upstream = Server::start(Settings {
        agent_speed: 8.0,
        ..Settings::loopback("echo")
    })
    .await
    .unwrap();
    let url = format!("ws://{}/v1/realtime", upstream.web_addr().unwrap());
    let edge = bridge_server(&url).await;
    let prompt = common::prompt(24_000 * 2);
    for transport in [Carrier::Quic, Carrier::WebTransport, Carrier::WebSocket] {
        let outcome = common::call(
            &edge,
            CallOptions {
                turns: vec![prompt.clone(), prompt.clone()],
                input_speed: 0.0,
                transport,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let half = outcome.reply_received.len() / 2;
        assert_eq!(
            outcome.reply_received.len(),
            2 * prompt.len(),
            "{transport:?}"
        );
        assert!(
            outcome.reply_received[..half] == prompt[..]
                && outcome.reply_received[half..] == prompt[..],
            "{transport:?}: the reply through the chain differs from the prompt"
        );
    }
    edge.shutdown().await;
    upstream.shutdown().await;
}

/// How the mock upstream behaves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mock {
    /// Echo the committed audio, 100 ms per delta, 4 deltas every 100 ms.
    Echo,
    /// Close the first connection right after `response.create` (before any audio).
    DropBeforeAudio,
    /// Close the first connection after the first audio delta.
    DropMidReply,
    /// Answer the session.update with G.711 output.
    WrongFormat,
    /// After a cancel, one more delta of the cancelled response and its response.done come only
    /// when the next response.create does, ahead of that response's events (a real server has
    /// audio in flight when the cancel arrives), or after 2 s.
    LateAfterCancel,
}

/// A Realtime upstream on loopback: what it received (each connection's events, and the
/// Authorization header of each connection).
struct MockUpstream {
    url: String,
    received: Arc<Mutex<Vec<Value>>>,
    auth: Arc<Mutex<Vec<Option<String>>>>,
}

async fn mock_upstream(mode: Mock) -> MockUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "ws://{}/v1/realtime?model=mock",
        listener.local_addr().unwrap()
    );
    let received = Arc::new(Mutex::new(Vec::new()));
    let auth = Arc::new(Mutex::new(Vec::new()));
    let (rec, seen_auth) = (received.clone(), auth.clone());
    tokio::spawn(async move {
        let mut connection = 0;
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            connection += 1;
            let header = Arc::new(Mutex::new(None));
            let keep = header.clone();
            let callback =
                move |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                    *keep.lock().unwrap() = req
                        .headers()
                        .get("authorization")
                        .map(|v| v.to_str().unwrap_or("").to_string());
                    Ok(resp)
                };
            let ws = tokio_tungstenite::accept_hdr_async(tcp, callback)
                .await
                .unwrap();
            seen_auth
                .lock()
                .unwrap()
                .push(header.lock().unwrap().clone());
            let drop_first = connection == 1 && mode != Mock::Echo;
            tokio::spawn(mock_session(ws, rec.clone(), mode, drop_first));
        }
    });
    MockUpstream {
        url,
        received,
        auth,
    }
}

async fn mock_session(
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    received: Arc<Mutex<Vec<Value>>>,
    mode: Mock,
    drop_this: bool,
) {
    let (mut tx, mut rx) = ws.split();
    let event = |kind: &str, mut body: Value| {
        body["type"] = json!(kind);
        body["event_id"] = json!(format!("mock_{kind}"));
        Message::text(body.to_string())
    };
    let session = json!({"session": {"type": "realtime", "id": "sess_mock"}});
    tx.send(event("session.created", session)).await.unwrap();
    let mut buffer: Vec<u8> = Vec::new();
    let mut committed: Vec<u8> = Vec::new();
    let mut responses = 0;
    // The response being streamed: (id, item, audio, next byte).
    let mut streaming: Option<(String, String, Vec<u8>, usize)> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    // A cancelled response still to be wound down: (id, item, when).
    let mut winding: Option<(String, String, tokio::time::Instant)> = None;
    loop {
        tokio::select! {
            msg = rx.next() => {
                let Some(Ok(Message::Text(text))) = msg else { return };
                let v: Value = serde_json::from_str(text.as_str()).unwrap();
                received.lock().unwrap().push(v.clone());
                match v["type"].as_str().unwrap() {
                    "session.update" => {
                        let format = if mode == Mock::WrongFormat {
                            json!({"type": "audio/pcmu"})
                        } else {
                            json!({"type": "audio/pcm", "rate": 24000})
                        };
                        let body = json!({"session": {"type": "realtime", "id": "sess_mock",
                            "audio": {"output": {"format": format}}}});
                        tx.send(event("session.updated", body)).await.unwrap();
                    }
                    "input_audio_buffer.append" => {
                        buffer.extend(B64.decode(v["audio"].as_str().unwrap()).unwrap());
                    }
                    "input_audio_buffer.commit" => {
                        committed = std::mem::take(&mut buffer);
                        let body = json!({"item_id": "item_user", "previous_item_id": null});
                        tx.send(event("input_audio_buffer.committed", body)).await.unwrap();
                    }
                    "response.create" => {
                        if drop_this && mode == Mock::DropBeforeAudio {
                            return; // the connection drops with the task
                        }
                        if let Some((id, item, _)) = winding.take() {
                            let body = json!({"response_id": id, "item_id": item,
                                "output_index": 0, "content_index": 0,
                                "delta": B64.encode([0x55u8; 4800])});
                            tx.send(event("response.output_audio.delta", body)).await.unwrap();
                            let body = json!({"response": {"id": id, "status": "cancelled"}});
                            tx.send(event("response.done", body)).await.unwrap();
                        }
                        responses += 1;
                        let (id, item) = (format!("resp_m{responses}"), format!("item_m{responses}"));
                        let body = json!({"response": {"id": id, "status": "in_progress",
                            "output": []}});
                        tx.send(event("response.created", body)).await.unwrap();
                        // Noise a bridge must skip: not JSON, and a type it does not know.
                        tx.send(Message::text("not json")).await.unwrap();
                        tx.send(event("mock.unknown", json!({}))).await.unwrap();
                        streaming = Some((id, item, committed.clone(), 0));
                    }
                    "response.cancel" => {
                        if let Some((id, item, ..)) = streaming.take() {
                            if mode == Mock::LateAfterCancel {
                                let at = tokio::time::Instant::now() + Duration::from_secs(2);
                                winding = Some((id, item, at));
                            } else {
                                let body = json!({"response": {"id": id, "status": "cancelled"}});
                                tx.send(event("response.done", body)).await.unwrap();
                            }
                        }
                    }
                    "conversation.item.truncate" => {
                        let body = json!({"item_id": v["item_id"], "content_index": 0,
                            "audio_end_ms": v["audio_end_ms"]});
                        tx.send(event("conversation.item.truncated", body)).await.unwrap();
                    }
                    _ => {}
                }
            }
            _ = tick.tick(), if streaming.is_some() || winding.is_some() => {
                if let Some((id, item, when)) = winding.take_if(|w| w.2 <= tokio::time::Instant::now()) {
                    let _ = when;
                    let body = json!({"response_id": id, "item_id": item, "output_index": 0,
                        "content_index": 0, "delta": B64.encode([0x55u8; 4800])});
                    tx.send(event("response.output_audio.delta", body)).await.unwrap();
                    let body = json!({"response": {"id": id, "status": "cancelled"}});
                    tx.send(event("response.done", body)).await.unwrap();
                }
                let Some((id, item, audio, at)) = streaming.as_mut() else { continue };
                for _ in 0..4 {
                    if *at >= audio.len() {
                        let body = json!({"response": {"id": id, "status": "completed"}});
                        tx.send(event("response.done", body)).await.unwrap();
                        streaming = None;
                        break;
                    }
                    let end = (*at + 4800).min(audio.len());
                    let words = json!({"response_id": id, "item_id": item, "output_index": 0,
                        "content_index": 0, "delta": format!("echo {} ", *at / 4800)});
                    tx.send(event("response.output_audio_transcript.delta", words)).await.unwrap();
                    let body = json!({"response_id": id, "item_id": item, "output_index": 0,
                        "content_index": 0, "delta": B64.encode(&audio[*at..end])});
                    *at = end;
                    tx.send(event("response.output_audio.delta", body)).await.unwrap();
                    if drop_this && mode == Mock::DropMidReply {
                        return;
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn the_bridge_speaks_ga_upstream_and_truncates_where_the_user_stopped_hearing() {
    let Some(python) = common::peer_python("the openai SDK's Realtime types") else {
        return;
    };
    let mock = mock_upstream(Mock::Echo).await;
    let bridge = voq_server::agent::RealtimeBridge::new(&mock.url)
        .unwrap()
        .with_api_key(Some("sk-test-not-a-secret".into()));
    let edge = Server::start_with_agent(Settings::loopback("realtime"), Arc::new(bridge))
        .await
        .unwrap();
    let prompt = common::prompt(24_000 * 3);
    let (outcome, statuses) = call_edge(&edge, vec![prompt.clone()], |o| {
        o.interrupt_after = Some(Duration::from_millis(600));
        o.record_events = true;
    })
    .await;
    assert_eq!(statuses, [Some(ResponseStatus::Cancelled)]);
    // The upstream's transcript reached the client under voq's ids, and in the end whole.
    let deltas: Vec<&Value> = outcome
        .events
        .iter()
        .map(|e| &e.event)
        .filter(|e| e["type"] == "response.output_audio_transcript.delta")
        .collect();
    assert!(!deltas.is_empty(), "no transcript reached the client");
    assert_eq!(deltas[0]["delta"], "echo 0 ");
    assert_eq!(deltas[0]["response_id"], "resp_1");
    assert_eq!(deltas[0]["item_id"], outcome.responses[0].item_id);
    let done = outcome
        .events
        .iter()
        .find(|e| e.event["type"] == "response.output_audio_transcript.done")
        .unwrap();
    let whole: String = deltas
        .iter()
        .map(|d| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(done.event["transcript"], whole);
    // The client's side of the call is GA too, transcripts included.
    let (code, summary) = common::check_ga(&python, &outcome.events);
    assert_eq!(code, 0, "{summary:#}");
    let heard = outcome
        .report
        .interrupt
        .as_ref()
        .unwrap()
        .truncated_audio_end_ms;
    let heard = heard.unwrap();
    // The upstream heard a cancel, then a truncation at exactly what the user heard.
    let received = common::until(Duration::from_secs(10), "the upstream's truncate", || {
        mock.received
            .lock()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "conversation.item.truncate")
    });
    received.await;
    let events = mock.received.lock().unwrap().clone();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let cancel = kinds.iter().position(|k| *k == "response.cancel").unwrap();
    let truncate = kinds
        .iter()
        .position(|k| *k == "conversation.item.truncate")
        .unwrap();
    assert!(cancel < truncate, "{kinds:?}");
    assert_eq!(
        events[truncate]["audio_end_ms"], heard,
        "{:?}",
        events[truncate]
    );
    assert_eq!(events[truncate]["item_id"], "item_m1");
    // The turn went up whole, then was committed and answered on request.
    let sent: Vec<u8> = events
        .iter()
        .filter(|e| e["type"] == "input_audio_buffer.append")
        .flat_map(|e| B64.decode(e["audio"].as_str().unwrap()).unwrap())
        .collect();
    let pcm: Vec<u8> = prompt.iter().flat_map(|s| s.to_le_bytes()).collect();
    assert!(
        sent == pcm,
        "the upstream got {} bytes of {}",
        sent.len(),
        pcm.len()
    );
    assert_eq!(kinds[0], "session.update");
    assert_eq!(
        events[0]["session"]["audio"]["input"]["turn_detection"],
        Value::Null
    );
    // The key went as a bearer token, and only there.
    assert_eq!(
        mock.auth.lock().unwrap()[0].as_deref(),
        Some("Bearer sk-test-not-a-secret")
    );
    // Every event the bridge sent is a GA client event.
    let log: Vec<voq_client::events::LoggedEvent> = events
        .into_iter()
        .map(|event| voq_client::events::LoggedEvent {
            at_ms: 0.0,
            direction: voq_client::events::Direction::Sent,
            event,
        })
        .collect();
    let (code, summary) = common::check_ga(&python, &log);
    assert_eq!(code, 0, "{summary:#}");
    edge.shutdown().await;
}

#[tokio::test]
async fn a_cancelled_responses_late_audio_never_reaches_the_next_reply() {
    let mock = mock_upstream(Mock::LateAfterCancel).await;
    let edge = bridge_server(&mock.url).await;
    let first = common::prompt(24_000 * 3);
    let second = common::prompt(24_000);
    let (outcome, statuses) = call_edge(&edge, vec![first, second.clone()], |o| {
        o.interrupt_after = Some(Duration::from_millis(300));
    })
    .await;
    assert_eq!(statuses[0], Some(ResponseStatus::Cancelled), "{statuses:?}");
    // The late delta is 2,400 samples of 0x5555, which speech never is: none of it reached the
    // client, in either response.
    let late = outcome
        .reply_received
        .windows(100)
        .any(|w| w.iter().all(|&s| s == 0x5555));
    assert!(
        !late,
        "late audio of the cancelled response reached the client"
    );
    // The second turn was answered with its own echo.
    let start = &second[..480];
    assert!(
        outcome.reply_received.windows(480).any(|w| w == start),
        "the second reply does not start with the second turn's echo"
    );
    edge.shutdown().await;
}

#[tokio::test]
async fn a_connection_lost_before_the_reply_sends_the_turn_again_and_nothing_is_lost() {
    let mock = mock_upstream(Mock::DropBeforeAudio).await;
    let edge = bridge_server(&mock.url).await;
    let prompt = common::prompt(24_000);
    let (outcome, statuses) = call_edge(&edge, vec![prompt.clone()], |_| {}).await;
    assert_eq!(statuses, [Some(ResponseStatus::Completed)]);
    assert!(
        outcome.reply_received == prompt,
        "the reply after the reconnect differs"
    );
    assert_eq!(mock.auth.lock().unwrap().len(), 2, "one reconnect");
    edge.shutdown().await;
}

#[tokio::test]
async fn a_connection_lost_mid_reply_fails_that_response_and_the_next_turn_reconnects() {
    let mock = mock_upstream(Mock::DropMidReply).await;
    let edge = bridge_server(&mock.url).await;
    let prompt = common::prompt(24_000);
    let (outcome, statuses) = call_edge(&edge, vec![prompt.clone(), prompt.clone()], |_| {}).await;
    assert_eq!(
        statuses,
        [
            Some(ResponseStatus::Failed),
            Some(ResponseStatus::Completed)
        ]
    );
    // The second reply is whole; the first kept what came before the loss.
    assert!(outcome.reply_received.ends_with(&prompt));
    edge.shutdown().await;
}

#[tokio::test]
async fn an_upstream_that_sends_another_audio_format_fails_the_response_clearly() {
    let mock = mock_upstream(Mock::WrongFormat).await;
    let edge = bridge_server(&mock.url).await;
    let (outcome, statuses) = call_edge(&edge, vec![common::prompt(4800)], |o| {
        o.record_events = true;
    })
    .await;
    assert_eq!(statuses, [Some(ResponseStatus::Failed)]);
    let error = outcome
        .events
        .iter()
        .find(|e| e.event["type"] == "error")
        .unwrap();
    let message = error.event["error"]["message"].as_str().unwrap();
    assert!(message.contains("audio/pcmu"), "{message}");
    edge.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_upstream_fails_the_response_clearly_and_the_session_goes_on() {
    // A port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/v1/realtime", closed.local_addr().unwrap());
    drop(closed);
    let bridge = voq_server::agent::RealtimeBridge::new(&url)
        .unwrap()
        .with_api_key(Some("sk-test-not-a-secret".into()));
    let edge = Server::start_with_agent(Settings::loopback("realtime"), Arc::new(bridge))
        .await
        .unwrap();
    let mut events = edge.events();
    let (outcome, statuses) = call_edge(
        &edge,
        vec![common::prompt(4800), common::prompt(4800)],
        |o| {
            o.record_events = true;
        },
    )
    .await;
    // The client is told what happened, in words, and never the key.
    let errors: Vec<&Value> = outcome
        .events
        .iter()
        .filter(|e| e.event["type"] == "error")
        .map(|e| &e.event["error"])
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    for e in errors {
        assert_eq!(e["code"], "agent_failed");
        let message = e["message"].as_str().unwrap();
        assert!(message.contains("unreachable"), "{message}");
        assert!(!message.contains("sk-test"), "{message}");
    }
    assert_eq!(
        statuses,
        [Some(ResponseStatus::Failed), Some(ResponseStatus::Failed)]
    );
    // The session saw both responses end (it went on after the first failure).
    let mut ended = 0;
    while let Ok(e) = events.try_recv() {
        ended += usize::from(matches!(
            e.kind,
            voq_server::SessionEventKind::ResponseEnded { .. }
        ));
    }
    assert_eq!(ended, 2);
    edge.shutdown().await;
}
