//! voq's control events against the OpenAI Realtime API's GA types, as the official `openai`
//! Python SDK defines them (pinned in .venv by scripts/setup; scripts/peers/realtime_ga.py):
//! every event of real sessions on every carrier, both directions, including what a Realtime
//! client sends that voq's own client never does.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use voq_client::CallOptions;
use voq_client::events::{Direction, EventLog, LoggedEvent};
use voq_server::{Server, Settings};
use voq_transport::Carrier;

/// The carwash prompt followed by `silence_ms` of silence.
fn prompt_then_silence(silence_ms: usize) -> Vec<i16> {
    let mut pcm = common::prompt(usize::MAX);
    pcm.extend(std::iter::repeat_n(0, silence_ms * 24));
    pcm
}

/// A session driven by hand over QUIC with the client events of a Realtime application (GA
/// shapes, fields voq ignores included), each awaited by the server event that answers it.
async fn realtime_client_events(server: &Server) -> Vec<LoggedEvent> {
    let conn = common::raw_connection(server).await;
    let (mut control, mut events) = conn.open_bi().await.unwrap();
    let mut log = EventLog::new(Instant::now());
    let exchanges: [(Value, &str); 8] = [
        (
            json!({"type": "session.update", "event_id": "c1", "session": {
                "type": "realtime", "instructions": "Be brief.", "output_modalities": ["audio"],
                "audio": {
                    "input": {"format": {"type": "audio/pcm", "rate": 24000},
                              "turn_detection": null},
                    "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"}}}}),
            "session.updated",
        ),
        (
            json!({"type": "session.update", "event_id": "c2",
                   "session": {"type": "transcription"}}),
            "error",
        ),
        (
            json!({"type": "input_audio_buffer.commit", "event_id": "c3"}),
            "error",
        ),
        (
            json!({"type": "input_audio_buffer.clear", "event_id": "c4"}),
            "input_audio_buffer.cleared",
        ),
        (
            json!({"type": "response.create", "event_id": "c5"}),
            "response.created",
        ),
        (
            json!({"type": "response.cancel", "event_id": "c6"}),
            "response.done",
        ),
        (
            json!({"type": "conversation.item.truncate", "event_id": "c7",
                   "item_id": "item_none", "content_index": 0, "audio_end_ms": 0}),
            "error",
        ),
        (
            json!({"type": "session.update", "event_id": "c8", "session": {"type": "realtime",
                   "audio": {"input": {"turn_detection": {"type": "server_vad"}}}}}),
            "session.updated",
        ),
    ];
    let mut decoder = voq_proto::wire::EventDecoder::default();
    for (event, answer) in exchanges {
        let mut bytes = Vec::new();
        voq_proto::wire::encode_event(event.to_string().as_bytes(), &mut bytes).unwrap();
        log.sent(Instant::now(), &bytes);
        control.write_all(&bytes).await.unwrap();
        let deadline = Duration::from_secs(10);
        tokio::time::timeout(deadline, async {
            loop {
                while let Some(voq_proto::wire::DecodedEvent::Event(body)) = decoder.poll_event() {
                    let mut framed = Vec::new();
                    voq_proto::wire::encode_event(&body, &mut framed).unwrap();
                    log.received(Instant::now(), &framed);
                    let v: Value = serde_json::from_slice(&body).unwrap();
                    if v["type"] == answer {
                        return;
                    }
                }
                let chunk = events.read_chunk(65_536, true).await.unwrap().unwrap();
                decoder.push(&chunk.bytes);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {answer} answered {event} within {deadline:?}"));
    }
    conn.close(0u32.into(), b"done");
    log.into_events()
}

#[tokio::test]
async fn every_event_of_real_sessions_validates_against_the_realtime_ga_types() {
    let Some(python) = common::peer_python("the openai SDK's Realtime types") else {
        return;
    };
    let server = Server::start(Settings {
        agent_speed: 8.0,
        ..Settings::loopback("echo")
    })
    .await
    .unwrap();
    let mut events = Vec::new();
    let mut carriers_seen = BTreeSet::new();
    for carrier in [Carrier::Quic, Carrier::WebTransport, Carrier::WebSocket] {
        // Push-to-talk with a barge-in: committed, response.created/done, truncate/truncated.
        let outcome = common::call(
            &server,
            CallOptions {
                turns: vec![prompt_then_silence(0)],
                input_speed: 0.0,
                interrupt_after: Some(Duration::from_millis(300)),
                transport: carrier,
                record_events: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{carrier:?}: {e:#}"));
        let created = outcome
            .events
            .iter()
            .find(|e| e.event["type"] == "session.created")
            .unwrap_or_else(|| panic!("{carrier:?}: no session.created"));
        carriers_seen.insert(created.event["session"]["voq"]["transport"].to_string());
        events.extend(outcome.events);
    }
    assert_eq!(carriers_seen.len(), 3, "{carriers_seen:?}");
    // Server VAD: speech_started, speech_stopped (the silence after the speech), committed.
    let vad = common::call(
        &server,
        CallOptions {
            turns: vec![prompt_then_silence(1500)],
            input_speed: 4.0,
            server_vad: true,
            record_events: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    events.extend(vad.events);
    events.extend(realtime_client_events(&server).await);

    let (code, summary) = common::check_ga(&python, &events);
    assert_eq!(code, 0, "{summary:#}");
    let seen = |direction: &str| -> BTreeSet<String> {
        summary["types"][direction]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    };
    // Every client event voq takes, but its own extensions.
    let sent: BTreeSet<String> = voq_proto::event::CLIENT_EVENT_TYPES
        .iter()
        .filter(|t| !t.starts_with("voq.") && **t != "output_audio_buffer.played")
        .map(|t| t.to_string())
        .collect();
    assert_eq!(sent.len(), 6, "{sent:?}");
    // Every server event voq has, but voq's own and the transcripts (no built-in agent has
    // one: tests/realtime_bridge.rs checks those).
    let received: BTreeSet<String> = voq_proto::event::SERVER_EVENT_TYPES
        .iter()
        .filter(|t| !t.starts_with("voq.") && !t.contains("transcript"))
        .map(|t| t.to_string())
        .collect();
    assert_eq!(received.len(), 10, "{received:?}");
    assert!(
        seen("sent").is_superset(&sent),
        "client events not exercised: {:?}",
        sent.difference(&seen("sent")).collect::<Vec<_>>()
    );
    assert!(
        seen("received").is_superset(&received),
        "server events not exercised: {:?}",
        received.difference(&seen("received")).collect::<Vec<_>>()
    );
    let checked = summary["checked"].as_u64().unwrap();
    assert!(checked >= 40, "only {checked} events checked: {summary:#}");
    // Every server event carries its own event_id, as GA events must.
    let ids: BTreeSet<&str> = events
        .iter()
        .filter(|e| e.direction == Direction::Received)
        .filter_map(|e| e.event["event_id"].as_str())
        .collect();
    assert!(!ids.is_empty());
    server.shutdown().await;
}

/// The check can fail: the shapes voq used before (beta formats, counts beside the GA fields,
/// the assistant item as `response.item_id`) and a wrong field type are each caught.
#[tokio::test]
async fn the_check_catches_beta_shapes_and_wrong_types() {
    let Some(python) = common::peer_python("the openai SDK's Realtime types") else {
        return;
    };
    let received = |event: Value| LoggedEvent {
        at_ms: 0.0,
        direction: Direction::Received,
        event,
    };
    let bad = vec![
        received(
            json!({"type": "session.created", "event_id": "e1", "session": {
            "id": "s", "input_audio_format": "pcm16", "output_audio_format": "pcm16",
            "turn_detection": null, "voq": {}}}),
        ),
        received(
            json!({"type": "input_audio_buffer.committed", "event_id": "e2",
            "item_id": "i", "previous_item_id": null, "frames": 1, "audio_ms": 20, "bytes": 2}),
        ),
        received(json!({"type": "response.created", "event_id": "e3",
            "response": {"id": "r", "status": "in_progress", "item_id": "i"}})),
        received(
            json!({"type": "conversation.item.truncated", "event_id": "e4",
            "item_id": "i", "content_index": 0, "audio_end_ms": "640"}),
        ),
        LoggedEvent {
            at_ms: 0.0,
            direction: Direction::Sent,
            event: json!({"type": "session.update", "session": {"input_audio_format": "pcm16"}}),
        },
    ];
    let (code, summary) = common::check_ga(&python, &bad);
    assert_eq!(code, 1, "{summary:#}");
    assert_eq!(
        summary["failures"].as_array().unwrap().len(),
        bad.len(),
        "{summary:#}"
    );
}
