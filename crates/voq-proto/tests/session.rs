//! Client and server sessions wired together in memory on virtual time: turns, pacing,
//! playback, barge-in and bad input, with no sockets. The "network" delivers each output after a
//! fixed one-way delay, in order (a reliable carrier).
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use voq_proto::client::{ClientConfig, ClientOutput, ClientSession};
use voq_proto::event::ResponseStatus;
use voq_proto::event::ServerEvent;
use voq_proto::server::{ServerConfig, ServerOutput, ServerSession};
use voq_proto::stream::{OutStream, Transmit};
use voq_proto::{Code, Codec, wire};

const QUANTUM: usize = 240; // 10 ms at 24 kHz
const FRAME: usize = 480;

/// What crosses the network.
#[derive(Debug)]
enum ToServer {
    Control(Vec<u8>),
    Data(u64, Vec<u8>),
    Fin(u64),
    StopSending(u64),
}

#[derive(Debug)]
enum ToClient {
    Control(Vec<u8>),
    Data(u64, Vec<u8>),
    Fin(u64),
    Reset(u64, u64),
    /// STOP_SENDING on one of the client's streams, with its code.
    StopSending(u64, u64),
}

struct Harness {
    now: Instant,
    one_way: Duration,
    client: ClientSession,
    server: ServerSession,
    to_server: VecDeque<(Instant, ToServer)>,
    to_client: VecDeque<(Instant, ToClient)>,
    /// The agent: audio it will produce for the next response, frame by frame.
    agent_script: Vec<i16>,
    agent: Option<(String, usize)>,
    server_outputs: Vec<ServerOutput>,
    client_events: Vec<ServerEvent>,
    /// Everything the client's device rendered.
    rendered: Vec<i16>,
    turn_audio: Vec<(String, u32, Vec<u8>)>,
    /// Every stream operation the client asked for, in order.
    client_ops: Vec<Transmit>,
    /// `ClientOutput::TurnStopped`: (item id, code).
    turn_stops: Vec<(String, u64)>,
}

impl Harness {
    fn new(server: ServerConfig, client: ClientConfig, one_way_ms: u64) -> Self {
        let now = Instant::now();
        Self {
            now,
            one_way: Duration::from_millis(one_way_ms),
            client: ClientSession::new(client, now),
            server: ServerSession::new(server, now),
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            agent_script: Vec::new(),
            agent: None,
            server_outputs: Vec::new(),
            client_events: Vec::new(),
            rendered: Vec::new(),
            turn_audio: Vec::new(),
            client_ops: Vec::new(),
            turn_stops: Vec::new(),
        }
    }

    fn drain(&mut self) {
        let at = self.now + self.one_way;
        while let Some(o) = self.client.poll_output() {
            if let ClientOutput::Transmit(op) = &o {
                self.client_ops.push(op.clone());
            }
            match o {
                ClientOutput::Transmit(Transmit::Control(b)) => {
                    self.to_server.push_back((at, ToServer::Control(b)))
                }
                ClientOutput::Transmit(
                    Transmit::Open { stream, bytes } | Transmit::Write { stream, bytes },
                ) => self
                    .to_server
                    .push_back((at, ToServer::Data(stream.0, bytes))),
                ClientOutput::Transmit(Transmit::Finish { stream }) => {
                    self.to_server.push_back((at, ToServer::Fin(stream.0)))
                }
                ClientOutput::Transmit(Transmit::StopSending { stream, .. }) => self
                    .to_server
                    .push_back((at, ToServer::StopSending(stream))),
                ClientOutput::ReplyFrame {
                    response_id,
                    pts,
                    payload,
                    ..
                } => {
                    let pcm: Vec<i16> = payload
                        .chunks_exact(2)
                        .map(|c| i16::from_le_bytes([c[0], c[1]]))
                        .collect();
                    self.client.push_reply_audio(&response_id, pts, &pcm);
                }
                ClientOutput::Event(e) => self.client_events.push(e),
                ClientOutput::TurnStopped { item_id, code } => {
                    self.turn_stops.push((item_id, code))
                }
                ClientOutput::Transmit(Transmit::Reset { .. }) | ClientOutput::Problem(_) => {}
            }
        }
        while let Some(o) = self.server.poll_output() {
            match &o {
                ServerOutput::Transmit(Transmit::Control(b)) => {
                    self.to_client.push_back((at, ToClient::Control(b.clone())))
                }
                ServerOutput::Transmit(
                    Transmit::Open { stream, bytes } | Transmit::Write { stream, bytes },
                ) => self
                    .to_client
                    .push_back((at, ToClient::Data(1000 + stream.0, bytes.clone()))),
                ServerOutput::Transmit(Transmit::Finish { stream }) => self
                    .to_client
                    .push_back((at, ToClient::Fin(1000 + stream.0))),
                ServerOutput::Transmit(Transmit::Reset { stream, code }) => self
                    .to_client
                    .push_back((at, ToClient::Reset(1000 + stream.0, *code as u64))),
                ServerOutput::Transmit(Transmit::StopSending { stream, code }) => self
                    .to_client
                    .push_back((at, ToClient::StopSending(*stream, *code as u64))),
                ServerOutput::StartResponse { response_id, .. } => {
                    self.agent = Some((response_id.clone(), 0))
                }
                ServerOutput::CancelResponse { .. } => self.agent = None,
                ServerOutput::TurnAudio {
                    item_id,
                    pts,
                    payload,
                    ..
                } => self
                    .turn_audio
                    .push((item_id.clone(), *pts, payload.clone())),
                _ => {}
            }
            self.server_outputs.push(o);
        }
    }

    /// Advances virtual time by one quantum: deliver what is due, run the agent (faster than
    /// real time: 4 frames per quantum), fire timers, render one quantum.
    fn step(&mut self) {
        self.now += Duration::from_millis(10);
        let now = self.now;
        while self.to_server.front().is_some_and(|(t, _)| *t <= now) {
            let (_, m) = self.to_server.pop_front().unwrap();
            match m {
                ToServer::Control(b) => self.server.handle_control(now, &b),
                ToServer::Data(s, b) => self.server.handle_stream_data(now, s, &b),
                ToServer::Fin(s) => self.server.handle_stream_fin(now, s),
                ToServer::StopSending(s) => {
                    self.server
                        .handle_stream_stopped(now, OutStream(s - 1000), 5)
                }
            }
            self.drain();
        }
        while self.to_client.front().is_some_and(|(t, _)| *t <= now) {
            let (_, m) = self.to_client.pop_front().unwrap();
            match m {
                ToClient::Control(b) => self.client.handle_control(now, &b),
                ToClient::Data(s, b) => self.client.handle_stream_data(now, s, &b),
                ToClient::Fin(s) => self.client.handle_stream_fin(now, s),
                ToClient::Reset(s, c) => self.client.handle_stream_reset(now, s, c),
                ToClient::StopSending(s, c) => {
                    self.client.handle_stream_stopped(now, OutStream(s), c)
                }
            }
            self.drain();
        }
        for _ in 0..4 {
            let Some((id, pos)) = self.agent.clone() else {
                break;
            };
            if !self.server.wants_agent_audio() {
                break;
            }
            if pos >= self.agent_script.len() {
                self.server.handle_agent_done(now, &id);
                self.agent = None;
            } else {
                let end = (pos + FRAME).min(self.agent_script.len());
                let payload: Vec<u8> = self.agent_script[pos..end]
                    .iter()
                    .flat_map(|s| s.to_le_bytes())
                    .collect();
                self.server
                    .handle_agent_frame(now, &id, payload, (end - pos) as u32);
                self.agent = Some((id, end));
            }
            self.drain();
        }
        if self.server.poll_timeout().is_some_and(|t| t <= now) {
            self.server.handle_timeout(now);
        }
        if self.client.poll_timeout().is_some_and(|t| t <= now) {
            self.client.handle_timeout(now);
        }
        let mut q = [0i16; QUANTUM];
        self.client.render(now, &mut q);
        self.rendered.extend_from_slice(&q);
        self.drain();
    }

    fn run_for(&mut self, ms: u64) {
        for _ in 0..ms / 10 {
            self.step();
        }
    }

    fn send_turn(&mut self, samples: &[i16]) {
        self.client.start_turn(self.now);
        for chunk in samples.chunks(FRAME) {
            let payload: Vec<u8> = chunk.iter().flat_map(|s| s.to_le_bytes()).collect();
            self.client
                .send_audio(self.now, &payload, chunk.len() as u32)
                .unwrap();
        }
        self.client.end_turn(self.now);
        self.drain();
    }

    fn events_of(&self, kind: &str) -> Vec<&ServerEvent> {
        self.client_events
            .iter()
            .filter(|e| e.kind() == kind)
            .collect()
    }
}

fn speech(n: usize, seed: i16) -> Vec<i16> {
    (0..n)
        .map(|i| ((i as i32 * 37 + seed as i32 * 101) % 20_000 - 10_000) as i16)
        .collect()
}

#[test]
fn push_to_talk_turn_arrives_bit_exact_and_is_confirmed() {
    let mut h = Harness::new(ServerConfig::default(), ClientConfig::default(), 25);
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
    let mut h = Harness::new(server, ClientConfig::default(), 25);
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
    let mut h = Harness::new(ServerConfig::default(), ClientConfig::default(), 40);
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
    let mut h = Harness::new(ServerConfig::default(), ClientConfig::default(), 5);
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
    let mut h = Harness::new(ServerConfig::default(), ClientConfig::default(), 5);
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
fn server_vad_segments_one_stream_into_committed_items() {
    let client = ClientConfig {
        server_vad: true,
        ..Default::default()
    };
    let mut h = Harness::new(
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
    let ServerEvent::InputAudioBufferCommitted { frames, .. } = committed[0] else {
        unreachable!()
    };
    assert!(
        (29..=32).contains(frames),
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
fn pcm16_codec_name_and_sizes() {
    assert_eq!("opus".parse::<Codec>().unwrap(), Codec::Opus);
    assert!("mp3".parse::<Codec>().is_err());
    assert_eq!(Codec::Pcm16.samples_in(&[0; 960], 20), 480);
    assert_eq!(Codec::Opus.samples_in(&[0; 60], 20), 480);
}

/// The server refuses a turn (here: it is shutting down) by stopping its stream. The client
/// core takes the same stream inputs as the server's: it stops writing that turn at once,
/// says so, and counts what the application still handed it.
#[test]
fn a_turn_the_server_stopped_is_no_longer_written() {
    let mut h = Harness::new(ServerConfig::default(), ClientConfig::default(), 25);
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
#[test]
fn a_refused_session_update_changes_nothing() {
    let mut h = Harness::new(ServerConfig::default(), ClientConfig::default(), 25);
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
