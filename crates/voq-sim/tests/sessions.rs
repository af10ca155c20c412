//! Specifications of the protocol cores on the ideal network of [`voq_sim::ideal::Pair`]:
//! turns, pacing, playback, barge-in and bad input, with no sockets and no loss. (The same cores
//! over real QUIC and impaired paths: tests/calls.rs; core behaviour that needs no network at
//! all: crates/voq-proto/tests/session.rs.)
#![allow(clippy::unwrap_used)]

use voq_proto::client::ClientConfig;
use voq_proto::event::{ResponseStatus, ServerEvent};
use voq_proto::server::{ServerConfig, ServerOutput};
use voq_proto::stream::{OutStream, Transmit};
use voq_proto::{Code, wire};
use voq_sim::audio::speech;
use voq_sim::ideal::Pair;

const FRAME: usize = 480;

#[test]
fn push_to_talk_turn_arrives_bit_exact_and_is_confirmed() {
    let mut h = Pair::new(ServerConfig::default(), ClientConfig::default(), 25);
    let prompt = speech(24_000 * 2 + 100, 1); // 2 s and a partial last frame
    h.send_turn(&prompt);
    h.run_for(200);
    let received: Vec<i16> = h
        .turn_audio
        .iter()
        .flat_map(|(_, _, p)| p.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])))
        .collect();
    assert_eq!(received, prompt, "the prompt arrives bit-exact");
    let turn = &h.client.turns()[0];
    assert_eq!(turn.frames_sent, 101);
    assert_eq!(turn.frames_confirmed, Some(101));
    assert_eq!(turn.audio_ms_confirmed, Some(2004));
    assert_eq!(turn.bytes_confirmed, Some(prompt.len() as u64 * 2));
    assert_eq!(
        h.events_of("response.created").len(),
        1,
        "auto response after commit"
    );
}

#[test]
fn reply_is_sent_ahead_within_the_lead_and_played_without_underruns() {
    let server = ServerConfig {
        send_ahead: voq_proto::pacing::Lead::from_ms(1000),
        ..Default::default()
    };
    let mut h = Pair::new(server, ClientConfig::default(), 25);
    h.agent_script = speech(24_000 * 5, 2); // a 5 s reply
    h.send_turn(&speech(4800, 3));
    // Check the lead while it plays: what the server sent never exceeds played + lead (+ RTT
    // slack for reports in flight and one frame).
    for _ in 0..700 {
        h.step();
        let sent_ms: u64 = h
            .server_outputs
            .iter()
            .filter(|o| matches!(o, ServerOutput::Transmit(Transmit::Write { .. })))
            .count() as u64
            * 20;
        if let Some(r) = h.client.current_response() {
            assert!(
                sent_ms <= r.played_ms + 1000 + 50 + 20 + 20,
                "sent {sent_ms} ms, played {}",
                r.played_ms
            );
        }
    }
    let r = h.client.responses().last().unwrap().clone();
    assert_eq!(r.played_ms, 5000);
    assert_eq!(r.underruns, 0);
    assert_eq!(r.status, Some(ResponseStatus::Completed));
    // The rendered timeline contains the reply exactly, contiguous.
    let start = h.rendered.iter().position(|&s| s != 0).unwrap();
    assert_eq!(
        &h.rendered[start..start + h.agent_script.len()],
        &h.agent_script[..]
    );
}

#[test]
fn barge_in_silences_at_once_and_truncates_at_the_played_position() {
    let mut h = Pair::new(ServerConfig::default(), ClientConfig::default(), 40);
    h.agent_script = speech(24_000 * 8, 4);
    h.send_turn(&speech(4800, 5));
    // Play until 1 s of the reply has been heard.
    while h
        .client
        .current_response()
        .is_none_or(|r| r.played_ms < 1000)
    {
        h.step();
    }
    let played = h.client.interrupt(h.now).unwrap();
    h.drain();
    let mark = h.rendered.len();
    h.run_for(500);
    assert!(
        h.rendered[mark..].iter().all(|&s| s == 0),
        "silent from the next quantum on"
    );
    let r = h.client.responses().last().unwrap().clone();
    let i = r.interrupt.unwrap();
    assert_eq!(i.played_ms, played);
    assert_eq!(
        i.truncated_audio_end_ms,
        Some(played),
        "server truncates exactly where the user stopped hearing"
    );
    assert!(i.unplayed_bytes > 0);
    assert!(i.reset_at.is_some() || r.status == Some(ResponseStatus::Cancelled));
    assert_eq!(r.status, Some(ResponseStatus::Cancelled));
    assert!(h.agent.is_none(), "the agent was stopped");
    let ended = h.server_outputs.iter().find_map(|o| match o {
        ServerOutput::ResponseEnded { status, stats, .. } => Some((*status, stats.clone())),
        _ => None,
    });
    let (status, stats) = ended.unwrap();
    assert_eq!(status, ResponseStatus::Cancelled);
    // Sent ahead but never played: at most the lead (2 s) plus in-flight slack.
    assert!(
        stats.audio_ms_sent <= played + 2000 + 200,
        "{} sent vs {played} played",
        stats.audio_ms_sent
    );
}

#[test]
fn bad_events_get_errors_and_the_session_goes_on() {
    let mut h = Pair::new(ServerConfig::default(), ClientConfig::default(), 5);
    let mut bytes = Vec::new();
    wire::encode_event(br#"{"type":"no.such.event","event_id":"e9"}"#, &mut bytes).unwrap();
    wire::encode_event(b"{not json", &mut bytes).unwrap();
    wire::encode_event(br#"{"type":"conversation.item.truncate","item_id":"nope","content_index":0,"audio_end_ms":5}"#, &mut bytes).unwrap();
    wire::encode_event(
        br#"{"type":"session.update","session":{"output_audio_format":"mp3"}}"#,
        &mut bytes,
    )
    .unwrap();
    h.server.handle_control(h.now, &bytes);
    h.drain();
    h.run_for(50);
    let codes: Vec<String> = h
        .events_of("error")
        .iter()
        .map(|e| match e {
            ServerEvent::Error { error } => error.code.clone(),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(
        codes,
        [
            "unknown_event_type",
            "invalid_json",
            "item_not_found",
            "invalid_value"
        ]
    );
    // Still alive: a turn goes through.
    h.send_turn(&speech(960, 6));
    h.run_for(100);
    assert_eq!(h.client.turns()[0].frames_confirmed, Some(2));
}

#[test]
fn voq_ping_is_answered_with_its_id() {
    let mut h = Pair::new(ServerConfig::default(), ClientConfig::default(), 5);
    let mut bytes = Vec::new();
    wire::encode_event(br#"{"type":"voq.ping","id":41}"#, &mut bytes).unwrap();
    wire::encode_event(br#"{"type":"voq.ping","id":42}"#, &mut bytes).unwrap();
    h.server.handle_control(h.now, &bytes);
    h.drain();
    h.run_for(50);
    let ids: Vec<u64> = h
        .events_of("voq.pong")
        .iter()
        .map(|e| match e {
            ServerEvent::VoqPong { id } => *id,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(ids, [41, 42]);
    assert!(h.events_of("error").is_empty());
}

#[test]
fn server_vad_segments_one_stream_into_committed_items() {
    let client = ClientConfig {
        server_vad: true,
        ..Default::default()
    };
    let mut h = Pair::new(
        ServerConfig {
            auto_response: false,
            ..Default::default()
        },
        client,
        5,
    );
    h.run_for(20);
    assert!(h.server.server_vad());
    h.client.start_turn(h.now);
    for i in 0..50 {
        let payload: Vec<u8> = speech(FRAME, i)
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        h.client.send_audio(h.now, &payload, FRAME as u32).unwrap();
        h.drain();
        h.step();
        match i {
            10 => h.server.handle_vad(h.now, true, 200),
            30 => h.server.handle_vad(h.now, false, 600),
            _ => {}
        }
    }
    h.run_for(50);
    assert_eq!(h.events_of("input_audio_buffer.speech_started").len(), 1);
    assert_eq!(h.events_of("input_audio_buffer.speech_stopped").len(), 1);
    let committed = h.events_of("input_audio_buffer.committed");
    assert_eq!(committed.len(), 1);
    let ServerEvent::InputAudioBufferCommitted { voq, .. } = committed[0] else {
        unreachable!()
    };
    let frames = voq.frames;
    assert!(
        (29..=32).contains(&frames),
        "frames since the stream began up to the stop: {frames}"
    );
    h.client.commit();
    h.drain();
    h.run_for(50);
    assert_eq!(
        h.events_of("input_audio_buffer.committed").len(),
        2,
        "explicit commit of the rest"
    );
}

#[test]
fn a_turn_the_server_stopped_is_no_longer_written() {
    let mut h = Pair::new(ServerConfig::default(), ClientConfig::default(), 25);
    h.run_for(100);
    h.server.handle_going_away(h.now);
    h.drain();
    let stream = OutStream(1);
    let item_id = h.client.start_turn(h.now);
    let frame: Vec<u8> = speech(FRAME, 4)
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    // Capture goes on in real time until the refusal arrives (one RTT later) and after it.
    for _ in 0..30 {
        h.client.send_audio(h.now, &frame, FRAME as u32).unwrap();
        h.drain();
        h.step();
        h.step();
    }
    h.client.end_turn(h.now);
    h.drain();
    h.run_for(200);

    assert_eq!(h.turn_stops, [(item_id, Code::GoingAway as u64)]);
    let turn = &h.client.turns()[0];
    assert_eq!(turn.stopped, Some(Code::GoingAway as u64));
    assert!(
        turn.frames_dropped > 0,
        "frames after the refusal were dropped"
    );
    assert_eq!(turn.frames_sent + turn.frames_dropped, 30);
    assert_eq!(turn.frames_confirmed, None);
    // Writes stop with the refusal: at most what one RTT of capture produced (50 ms of
    // network = 2-3 frames at 20 ms), never the whole turn; and no FIN on a stopped stream.
    let writes = h
        .client_ops
        .iter()
        .filter(|op| matches!(op, Transmit::Write { stream: s, .. } if *s == stream))
        .count() as u64;
    assert_eq!(writes, turn.frames_sent);
    assert!(writes <= 4, "{writes} frames written to a refused turn");
    assert!(
        !h.client_ops
            .iter()
            .any(|op| matches!(op, Transmit::Finish { .. })),
        "a stopped stream is not finished"
    );
    // The next turn opens a new stream (refused too: the server is still going away).
    h.client.start_turn(h.now);
    h.drain();
    assert!(h.client_ops.iter().any(|op| matches!(
        op,
        Transmit::Open {
            stream: OutStream(2),
            ..
        }
    )));
}

#[test]
fn a_refused_session_update_changes_nothing() {
    let mut h = Pair::new(ServerConfig::default(), ClientConfig::default(), 25);
    h.run_for(100);
    let mut bytes = Vec::new();
    let bad = br#"{"type":"session.update","session":{"input_audio_format":"opus","output_audio_format":"mp3"}}"#;
    wire::encode_event(bad, &mut bytes).unwrap();
    h.server.handle_control(h.now, &bytes);
    bytes.clear();
    wire::encode_event(br#"{"type":"session.update","session":{}}"#, &mut bytes).unwrap();
    h.server.handle_control(h.now, &bytes);
    h.drain();
    h.run_for(100);
    let errors = h.events_of("error");
    assert_eq!(errors.len(), 1);
    let Some(ServerEvent::SessionUpdated { session }) = h.events_of("session.updated").pop() else {
        panic!("no session.updated")
    };
    assert_eq!(session.input_audio_format, "pcm16");
}

/// The server is lost mid-turn (its store holds the first second); the client keeps capturing,
/// reconnects, and a new server takes the session back: the turn it commits is the whole prompt,
/// each frame once, and the client sent again only what the store did not hold.
#[test]
fn a_turn_survives_its_server_and_only_the_unheld_rest_is_sent_again() {
    let server = ServerConfig {
        resumable: true,
        resume_token: Some("token".into()),
        ..Default::default()
    };
    let mut h = Pair::new(server, ClientConfig::default(), 25);
    h.run_for(100);
    let prompt = speech(24_000 * 2, 4);
    let frames: Vec<&[i16]> = prompt.chunks(FRAME).collect();
    h.client.start_turn(h.now);
    let send = |h: &mut Pair, f: &[i16]| {
        let payload: Vec<u8> = f.iter().flat_map(|s| s.to_le_bytes()).collect();
        h.client
            .send_audio(h.now, &payload, f.len() as u32)
            .unwrap();
        h.drain();
    };
    for f in &frames[..50] {
        send(&mut h, f);
        h.step();
    }
    h.run_for(100);
    // The store saved 50 frames; then the server is gone.
    let snapshot = h.server.snapshot();
    assert_eq!(snapshot.open_turns.len(), 1);
    h.lose_server(snapshot);
    let writes_before = h.client_ops.len();
    // The user goes on talking while the client reconnects.
    for f in &frames[50..70] {
        send(&mut h, f);
        h.step();
    }
    assert_eq!(
        h.client_ops.len(),
        writes_before,
        "nothing is sent while the carrier is down"
    );
    h.reconnect();
    h.turn_audio.clear();
    for f in &frames[70..] {
        send(&mut h, f);
        h.step();
    }
    h.client.end_turn(h.now);
    h.run_for(300);
    let resumed = h.events_of("voq.session.resumed");
    assert_eq!(resumed.len(), 1);
    let ServerEvent::VoqSessionResumed { voq, .. } = resumed[0] else {
        unreachable!()
    };
    assert_eq!(voq.turns[0].held_pts, 50 * FRAME as u64);
    // The new server holds the 50 frames from the store and got the other 50 from the client:
    // each once, in order, the prompt exactly.
    let held: Vec<i16> = h
        .turn_audio
        .iter()
        .flat_map(|(_, _, p)| p.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])))
        .collect();
    assert_eq!(
        held.len(),
        prompt.len(),
        "held {} of {}",
        held.len(),
        prompt.len()
    );
    assert!(held == prompt, "the turn is the prompt exactly");
    let turn = &h.client.turns()[0];
    assert_eq!(turn.frames_confirmed, Some(100));
    // Sent twice in all: only the frames the server did not hold (50..100) after the break.
    let resent = h.client_ops[writes_before..]
        .iter()
        .filter(|o| matches!(o, Transmit::Write { .. }))
        .count();
    assert_eq!(resent, 50);
}

/// The server is lost mid-reply: the new server sends the rest from the sample the client had
/// reached, and the client plays on with nothing repeated or skipped.
#[test]
fn a_reply_survives_its_server_with_nothing_heard_twice_or_skipped() {
    let server = ServerConfig {
        resumable: true,
        resume_token: Some("token".into()),
        send_ahead: voq_proto::pacing::Lead::from_ms(1000),
        ..Default::default()
    };
    let mut h = Pair::new(server, ClientConfig::default(), 25);
    let reply = speech(24_000 * 3, 5);
    h.agent_script = reply.clone();
    h.send_turn(&speech(4800, 6));
    h.run_for(1200);
    let snapshot = h.server.snapshot();
    assert!(snapshot.reply.as_ref().is_some_and(|r| r.agent_done));
    h.lose_server(snapshot);
    h.run_for(200);
    h.reconnect();
    h.run_for(3000);
    let r = h.client.responses().next().unwrap();
    assert_eq!(r.status, Some(ResponseStatus::Completed));
    assert_eq!(r.underruns, 0, "the lead covered the break");
    let start = h.rendered.iter().position(|s| *s != 0).unwrap();
    let first = reply.iter().position(|s| *s != 0).unwrap();
    let played = &h.rendered[start - first..];
    assert!(
        played.len() >= reply.len(),
        "{} of {}",
        played.len(),
        reply.len()
    );
    assert!(
        played[..reply.len()] == reply[..],
        "played once, in order, nothing skipped"
    );
}
