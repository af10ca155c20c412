//! Behaviour of the session cores that needs no network at all: malformed and excessive turns,
//! who is blamed for a problem, a closed session, bounded bookkeeping. Calls between a client
//! and a server run in the simulator, crates/voq-sim (tests/sessions.rs on an ideal network,
//! tests/calls.rs over QUIC).
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::time::Instant;

use voq_proto::event::ResponseStatus;
use voq_proto::server::{ServerConfig, ServerOutput, ServerSession};
use voq_proto::stream::Transmit;
use voq_proto::{Code, Codec, wire};

#[test]
fn malformed_turn_is_stopped_alone_and_other_turns_survive() {
    let mut s = ServerSession::new(ServerConfig::default(), Instant::now());
    let now = Instant::now();
    let header = |id: &str| {
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
    };
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
    let refused = std::iter::from_fn(|| s.poll_output())
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
                .then(|| v["response"]["item_id"].as_str().map(String::from))?
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
    for i in 0..2_000u64 {
        // Kind 0xff: no such stream kind.
        s.handle_stream_data(now, 2 + 4 * i, &[0xff, 0, 0, 0, 0]);
        while let Some(out) = s.poll_output() {
            stops += usize::from(matches!(
                out,
                ServerOutput::Transmit(Transmit::StopSending { .. })
            ));
        }
    }
    assert_eq!(stops, 2_000, "every bad stream was stopped");
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
