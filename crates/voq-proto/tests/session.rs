//! Behaviour of the session cores that needs no network at all: malformed and excessive turns,
//! who is blamed for a problem, a closed session, bounded bookkeeping. Calls between a client
//! and a server run in the simulator, crates/voq-sim (tests/sessions.rs on an ideal network,
//! tests/calls.rs over QUIC).
#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    clippy::single_range_in_vec_init
)]

use std::time::Instant;

use std::time::Duration;
use voq_proto::event::ResponseStatus;

use voq_proto::server::{ServerConfig, ServerOutput, ServerSession, SessionLimit};
use voq_proto::stream::Transmit;
use voq_proto::{Code, Codec, wire};

#[test]
fn malformed_turn_is_stopped_alone_and_other_turns_survive() {
    let mut s = ServerSession::new(ServerConfig::default(), Instant::now());
    let now = Instant::now();
    let header = user_audio_header;
    // Stream 1: pts goes backwards.
    let mut bad = header("a");
    wire::encode_frame(480, &[0; 960], &mut bad).unwrap();
    wire::encode_frame(0, &[0; 960], &mut bad).unwrap();
    // Stream 2: fine.
    let mut good = header("b");
    wire::encode_frame(0, &[1; 960], &mut good).unwrap();
    s.handle_stream_data(now, 2, &good);
    s.handle_stream_data(now, 1, &bad);
    s.handle_stream_fin(now, 1);
    s.handle_stream_fin(now, 2);
    // Stream 3: unsupported codec; stream 4: a server-kind stream from the client.
    let mut opus48 = Vec::new();
    let h = wire::AudioHeader {
        item_id: "c".into(),
        response_id: None,
        codec: "opus".into(),
        sample_rate: 48_000,
        frame_ms: 20,
    };
    wire::encode_header(wire::StreamKind::UserAudio, &h, &mut opus48);
    s.handle_stream_data(now, 3, &opus48);
    let mut wrong_kind = Vec::new();
    wire::encode_header(wire::StreamKind::AgentAudio, &h, &mut wrong_kind);
    s.handle_stream_data(now, 4, &wrong_kind);
    let mut outs = Vec::new();
    while let Some(o) = s.poll_output() {
        outs.push(o);
    }
    let stops: Vec<(u64, Code)> = outs
        .iter()
        .filter_map(|o| match o {
            ServerOutput::Transmit(Transmit::StopSending { stream, code }) => {
                Some((*stream, *code))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        stops,
        [
            (1, Code::ProtocolViolation),
            (3, Code::BadHeader),
            (4, Code::StreamRefused)
        ]
    );
    let committed: Vec<&str> = outs
        .iter()
        .filter_map(|o| match o {
            ServerOutput::TurnCommitted { item_id, .. } => Some(item_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(committed, ["b"]);
    assert!(
        outs.iter()
            .any(|o| matches!(o, ServerOutput::TurnDiscarded { item_id, .. } if item_id == "a"))
    );
}

#[test]
fn too_many_open_turns_are_refused() {
    let config = ServerConfig {
        max_open_turns: 2,
        ..Default::default()
    };
    let mut s = ServerSession::new(config, Instant::now());
    let now = Instant::now();
    for stream in 0..3 {
        s.handle_stream_data(now, stream, &[0x01]);
    }
    let outs: Vec<ServerOutput> = std::iter::from_fn(|| s.poll_output()).collect();
    let refused = outs
        .iter()
        .filter(|o| {
            matches!(
                o,
                ServerOutput::Transmit(Transmit::StopSending {
                    stream: 2,
                    code: Code::StreamRefused
                })
            )
        })
        .count();
    assert_eq!(refused, 1);
    let limits: Vec<_> = outs
        .iter()
        .filter(|o| matches!(o, ServerOutput::LimitReached(_)))
        .collect();
    assert_eq!(
        limits,
        [&ServerOutput::LimitReached(SessionLimit::OpenTurns)]
    );
}

#[test]
fn pcm16_codec_name_and_sizes() {
    assert_eq!("opus".parse::<Codec>().unwrap(), Codec::Opus);
    assert!("mp3".parse::<Codec>().is_err());
    assert_eq!(Codec::Pcm16.samples_in(&[0; 960], 20), 480);
    assert_eq!(Codec::Opus.samples_in(&[0; 60], 20), 480);
}

/// The server refuses a turn (here: it is shutting down) by stopping its stream. The client
/// core takes the same stream inputs as the server's: it stops writing that turn at once,
/// says so, and counts what the application still handed it.
/// A problem names who caused it: bad client input is the client's, an agent frame over the
/// limit is ours. A shell counts them apart (`client_errors` vs `internal_errors`).
#[test]
fn problems_say_who_is_to_blame() {
    use voq_proto::{Blame, ErrorCode};
    let now = Instant::now();
    let mut s = ServerSession::new(ServerConfig::default(), now);
    let mut bytes = Vec::new();
    wire::encode_event(br#"{"type":"response.cancel"}"#, &mut bytes).unwrap();
    wire::encode_event(br#"{"type":"response.create"}"#, &mut bytes).unwrap();
    s.handle_control(now, &bytes);
    let mut outs: Vec<ServerOutput> = std::iter::from_fn(|| s.poll_output()).collect();
    let response_id = outs
        .iter()
        .find_map(|o| match o {
            ServerOutput::StartResponse { response_id, .. } => Some(response_id.clone()),
            _ => None,
        })
        .unwrap();
    s.handle_agent_frame(now, &response_id, vec![0; wire::MAX_FRAME_PAYLOAD + 1], 480);
    outs.extend(std::iter::from_fn(|| s.poll_output()));
    let problems: Vec<(Blame, ErrorCode)> = outs
        .iter()
        .filter_map(|o| match o {
            ServerOutput::Problem(p) => Some((p.blame, p.code)),
            _ => None,
        })
        .collect();
    assert_eq!(
        problems,
        [
            (Blame::Peer, ErrorCode::ResponseNotFound),
            (Blame::Local, ErrorCode::Internal)
        ]
    );
    let ended = outs.iter().find_map(|o| match o {
        ServerOutput::ResponseEnded { status, .. } => Some(*status),
        _ => None,
    });
    assert_eq!(ended, Some(ResponseStatus::Failed));
}

/// Once the control stream is gone the session is closed, and no input brings it back to
/// life: nothing is sent, no agent is started.
#[test]
fn a_closed_session_ignores_every_input() {
    let now = Instant::now();
    let mut s = ServerSession::new(ServerConfig::default(), now);
    while s.poll_output().is_some() {}
    s.handle_control_closed(now);
    assert_eq!(s.state(), voq_proto::server::SessionState::Closed);
    let mut bytes = Vec::new();
    wire::encode_event(br#"{"type":"response.create"}"#, &mut bytes).unwrap();
    s.handle_control(now, &bytes);
    s.handle_stream_data(now, 2, &[0x01, 0x00]);
    s.handle_stream_fin(now, 2);
    s.handle_vad(now, true, 0);
    s.handle_going_away(now);
    s.handle_timeout(now);
    let after: Vec<ServerOutput> = std::iter::from_fn(|| s.poll_output()).collect();
    assert_eq!(after, []);
}

/// A refused `session.update` changes nothing: the codec named before the bad field is not
/// applied either.
/// A long call keeps bounded bookkeeping: only recent assistant items can be truncated.
#[test]
fn old_assistant_items_are_forgotten() {
    let now = Instant::now();
    let mut s = ServerSession::new(ServerConfig::default(), now);
    let mut bytes = Vec::new();
    for _ in 0..100 {
        wire::encode_event(br#"{"type":"response.create"}"#, &mut bytes).unwrap();
    }
    s.handle_control(now, &bytes);
    let items: Vec<String> = std::iter::from_fn(|| s.poll_output())
        .filter_map(|o| match o {
            ServerOutput::Transmit(Transmit::Control(b)) => Some(b),
            _ => None,
        })
        .filter_map(|b| {
            let v: serde_json::Value = serde_json::from_slice(&b[4..]).ok()?;
            (v["type"] == "response.created")
                .then(|| v["response"]["output"][0]["id"].as_str().map(String::from))?
        })
        .collect();
    assert_eq!(items.len(), 100);
    let truncate = |item: &str| {
        let mut b = Vec::new();
        let ev = format!(
            r#"{{"type":"conversation.item.truncate","item_id":"{item}","content_index":0,"audio_end_ms":0}}"#
        );
        wire::encode_event(ev.as_bytes(), &mut b).unwrap();
        b
    };
    let codes = |s: &mut ServerSession| -> Vec<String> {
        std::iter::from_fn(|| s.poll_output())
            .filter_map(|o| match o {
                ServerOutput::Transmit(Transmit::Control(b)) => {
                    serde_json::from_slice::<serde_json::Value>(&b[4..]).ok()
                }
                _ => None,
            })
            .map(|v| {
                format!(
                    "{}:{}",
                    v["type"].as_str().unwrap_or(""),
                    v["error"]["code"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    s.handle_control(now, &truncate(&items[0]));
    assert_eq!(codes(&mut s), ["error:item_not_found"]);
    // The newest is still playing: truncating it cancels the response, then confirms.
    s.handle_control(now, &truncate(&items[99]));
    assert_eq!(
        codes(&mut s),
        ["response.done:", "conversation.item.truncated:"]
    );
}

/// A client that opens stream after stream with a bad header and never ends them cannot grow
/// the session: only the ids of the most recent refused streams are kept (late bytes on those
/// are ignored quietly), however many it opens.
#[test]
fn refused_streams_that_never_end_do_not_grow_the_session() {
    let now = Instant::now();
    let mut s = ServerSession::new(ServerConfig::default(), now);
    let mut stops = 0;
    let mut limits = Vec::new();
    for i in 0..2_000u64 {
        // Kind 0xff: no such stream kind.
        s.handle_stream_data(now, 2 + 4 * i, &[0xff, 0, 0, 0, 0]);
        while let Some(out) = s.poll_output() {
            stops += usize::from(matches!(
                out,
                ServerOutput::Transmit(Transmit::StopSending { .. })
            ));
            if let ServerOutput::LimitReached(l) = out {
                assert_eq!(l, SessionLimit::RefusedStreams);
                limits.push(l);
            }
        }
    }
    assert_eq!(stops, 2_000, "every bad stream was stopped");
    assert_eq!(limits.len(), 2_000 - voq_proto::server::MAX_REFUSED_STREAMS);
    assert_eq!(
        s.tracked_streams(),
        voq_proto::server::MAX_REFUSED_STREAMS,
        "bounded, however many streams were refused"
    );
    // The most recent refused stream's late bytes are ignored: no second stop, no error.
    s.handle_stream_data(now, 2 + 4 * 1_999, &[1, 2, 3]);
    assert!(s.poll_output().is_none());
    // Its end frees its place.
    s.handle_stream_fin(now, 2 + 4 * 1_999);
    assert_eq!(
        s.tracked_streams(),
        voq_proto::server::MAX_REFUSED_STREAMS - 1
    );
}

fn user_audio_header(id: &str) -> Vec<u8> {
    let mut b = Vec::new();
    let h = wire::AudioHeader {
        item_id: id.into(),
        response_id: None,
        codec: "pcm16".into(),
        sample_rate: 24_000,
        frame_ms: 20,
    };
    wire::encode_header(wire::StreamKind::UserAudio, &h, &mut b);
    b
}

/// 20 ms pcm16 frames `from..to` (by index) of one stream.
fn frames(from: u32, to: u32, level: u8) -> Vec<u8> {
    let mut b = Vec::new();
    for i in from..to {
        wire::encode_frame(i * 480, &[level; 960], &mut b).unwrap();
    }
    b
}

fn drain(s: &mut ServerSession) -> Vec<ServerOutput> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

fn event_types(outs: &[ServerOutput]) -> Vec<String> {
    outs.iter()
        .filter_map(|o| match o {
            ServerOutput::Transmit(Transmit::Control(b)) => {
                let v: serde_json::Value = serde_json::from_slice(&b[4..]).unwrap();
                let code = v
                    .pointer("/error/code")
                    .and_then(|c| c.as_str())
                    .unwrap_or("");
                Some(format!("{}:{code}", v["type"].as_str().unwrap()))
            }
            _ => None,
        })
        .collect()
}

/// A push-to-talk turn that never ends cannot grow the session: past `max_turn_audio` it is
/// stopped with `limit_exceeded`, discarded and reported; the session goes on.
#[test]
fn a_turn_past_its_audio_limit_is_stopped_and_the_session_goes_on() {
    let now = Instant::now();
    let config = ServerConfig {
        max_turn_audio: Duration::from_secs(2),
        ..Default::default()
    };
    let mut s = ServerSession::new(config, now);
    let _ = drain(&mut s);
    let mut bytes = user_audio_header("long");
    bytes.extend(frames(0, 100, 1)); // exactly 2 s: allowed
    s.handle_stream_data(now, 2, &bytes);
    let outs = drain(&mut s);
    assert_eq!(
        outs.iter()
            .filter(|o| matches!(o, ServerOutput::TurnAudio { .. }))
            .count(),
        100
    );
    s.handle_stream_data(now, 2, &frames(100, 101, 1)); // one frame more
    let outs = drain(&mut s);
    assert!(outs.contains(&ServerOutput::LimitReached(SessionLimit::TurnAudio)));
    assert!(
        outs.contains(&ServerOutput::Transmit(Transmit::StopSending {
            stream: 2,
            code: Code::LimitExceeded
        }))
    );
    assert!(
        outs.iter()
            .any(|o| matches!(o, ServerOutput::TurnDiscarded { .. }))
    );
    assert_eq!(event_types(&outs), ["error:limit_exceeded"]);
    assert!(
        !outs
            .iter()
            .any(|o| matches!(o, ServerOutput::TurnAudio { .. }))
    );
    // A normal turn afterwards is committed.
    let mut ok = user_audio_header("short");
    ok.extend(frames(0, 10, 2));
    s.handle_stream_data(now, 6, &ok);
    s.handle_stream_fin(now, 6);
    let outs = drain(&mut s);
    assert!(
        outs.iter().any(
            |o| matches!(o, ServerOutput::TurnCommitted { item_id, .. } if item_id == "short")
        )
    );
    assert!(!s.is_closed());
}

/// With server VAD the one input stream lasts the whole call: silence that no speech follows is
/// dropped at the limit (nothing would ever commit it), and speech longer than the limit is
/// committed there and goes on as a new item.
#[test]
fn server_vad_bounds_silence_and_commits_long_speech() {
    let now = Instant::now();
    let config = ServerConfig {
        max_turn_audio: Duration::from_secs(1),
        ..Default::default()
    };
    let mut s = ServerSession::new(config, now);
    s.handle_control(
        now,
        &event(r#"{"type":"session.update","session":{"turn_detection":{"type":"server_vad"}}}"#),
    );
    let _ = drain(&mut s);
    let mut bytes = user_audio_header("mic");
    bytes.extend(frames(0, 50, 0)); // 1 s of silence
    s.handle_stream_data(now, 2, &bytes);
    let outs = drain(&mut s);
    assert!(outs.contains(&ServerOutput::TurnAudioDropped {
        source_item_id: "mic".into(),
        samples: 0..24_000
    }));
    assert!(outs.contains(&ServerOutput::LimitReached(SessionLimit::TurnAudio)));
    // Speech starts and lasts 1.5 s: committed at 1 s (the limit), then the rest at its stop.
    s.handle_vad(now, true, 1000);
    s.handle_stream_data(now, 2, &frames(50, 100, 9));
    let outs = drain(&mut s);
    let committed: Vec<_> = outs
        .iter()
        .filter_map(|o| match o {
            ServerOutput::TurnCommitted { samples, .. } => Some(samples.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(committed, [24_000..48_000]);
    s.handle_stream_data(now, 2, &frames(100, 125, 9));
    s.handle_vad(now, false, 2500);
    let outs = drain(&mut s);
    let committed: Vec<_> = outs
        .iter()
        .filter_map(|o| match o {
            ServerOutput::TurnCommitted { samples, .. } => Some(samples.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        committed,
        [48_000..60_000],
        "the rest of the speech, nothing lost"
    );
    assert!(event_types(&outs).contains(&"input_audio_buffer.speech_stopped:".to_string()));
}

fn event(json: &str) -> Vec<u8> {
    let mut b = Vec::new();
    wire::encode_event(json.as_bytes(), &mut b).unwrap();
    b
}

/// A client may send events in bursts and at a steady rate well above what it needs; a flood
/// closes the session with `limit_exceeded`, and nothing after it is processed.
#[test]
fn an_event_flood_closes_the_session() {
    let t0 = Instant::now();
    let config = ServerConfig {
        max_event_rate: 50,
        max_event_burst: 100,
        ..Default::default()
    };
    let mut s = ServerSession::new(config, t0);
    let ping = |id: u32| event(&format!(r#"{{"type":"voq.ping","id":{id}}}"#));
    // 10 s at 40 events a second, in bursts of 40: fine.
    for second in 0..10u32 {
        let now = t0 + Duration::from_secs(u64::from(second));
        for i in 0..40 {
            s.handle_control(now, &ping(second * 100 + i));
        }
    }
    let outs = drain(&mut s);
    assert_eq!(
        event_types(&outs)
            .iter()
            .filter(|t| t.starts_with("voq.pong"))
            .count(),
        400
    );
    assert!(!s.is_closed());
    // Then 1,000 at once.
    let now = t0 + Duration::from_secs(11);
    let flood: Vec<u8> = (0..1_000).flat_map(ping).collect();
    s.handle_control(now, &flood);
    let outs = drain(&mut s);
    let pongs = event_types(&outs)
        .iter()
        .filter(|t| t.starts_with("voq.pong"))
        .count();
    assert!(pongs <= 100, "at most the burst was answered: {pongs}");
    assert!(outs.contains(&ServerOutput::LimitReached(SessionLimit::EventRate)));
    assert!(event_types(&outs).contains(&"error:limit_exceeded".to_string()));
    assert!(s.is_closed());
    assert_eq!(s.closed_with().map(|(c, _)| c), Some(Code::LimitExceeded));
}

/// Every server event carries a top-level `event_id`, unique in the session (the Realtime API's
/// GA events require one); an error still echoes the client's own id under `error.event_id`.
#[test]
fn every_server_event_has_its_own_event_id() {
    let now = Instant::now();
    let mut s = ServerSession::new(ServerConfig::default(), now);
    let mut outs = drain(&mut s);
    s.handle_control(
        now,
        &event(r#"{"type":"session.update","event_id":"c1","session":{"turn_detection":null}}"#),
    );
    s.handle_control(now, &event(r#"{"type":"no.such.event","event_id":"c2"}"#));
    let mut turn = user_audio_header("t");
    turn.extend(frames(0, 5, 1));
    s.handle_stream_data(now, 2, &turn);
    s.handle_stream_fin(now, 2);
    outs.extend(drain(&mut s));
    let events: Vec<serde_json::Value> = outs
        .iter()
        .filter_map(|o| match o {
            ServerOutput::Transmit(Transmit::Control(b)) => {
                Some(serde_json::from_slice(&b[4..]).unwrap())
            }
            _ => None,
        })
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(types.len() >= 5, "{types:?}");
    let ids: std::collections::BTreeSet<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().expect("every event has an event_id"))
        .collect();
    assert_eq!(ids.len(), events.len(), "unique: {ids:?}");
    let error = events.iter().find(|e| e["type"] == "error").unwrap();
    assert_eq!(error["error"]["event_id"], "c2");
    assert_ne!(error["event_id"], "c2");
}

/// An agent's transcript goes to the client at once, under the response's ids, and whole before
/// `response.done`; text for a response that ended is dropped.
#[test]
fn agent_transcripts_are_passed_on_and_summed_up_before_the_response_ends() {
    let now = Instant::now();
    let mut s = ServerSession::new(ServerConfig::default(), now);
    drain(&mut s);
    s.handle_control(now, &event(r#"{"type":"response.create"}"#));
    let started = drain(&mut s);
    let response_id = started
        .iter()
        .find_map(|o| match o {
            ServerOutput::StartResponse { response_id, .. } => Some(response_id.clone()),
            _ => None,
        })
        .unwrap();
    s.handle_agent_transcript(now, &response_id, "Hello ");
    s.handle_agent_transcript(now, &response_id, "there.");
    s.handle_agent_transcript(now, "resp_other", "not this one");
    s.handle_agent_done(now, &response_id);
    let outs = drain(&mut s);
    assert_eq!(
        event_types(&outs),
        [
            "response.output_audio_transcript.delta:",
            "response.output_audio_transcript.delta:",
            "response.output_audio_transcript.done:",
            "response.done:"
        ]
    );
    let done = outs
        .iter()
        .find_map(|o| match o {
            ServerOutput::Transmit(Transmit::Control(b)) => {
                let v: serde_json::Value = serde_json::from_slice(&b[4..]).unwrap();
                (v["type"] == "response.output_audio_transcript.done").then_some(v)
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(done["transcript"], "Hello there.");
    assert_eq!(done["response_id"], response_id.as_str());
    s.handle_agent_transcript(now, &response_id, "too late");
    assert!(event_types(&drain(&mut s)).is_empty());
}
