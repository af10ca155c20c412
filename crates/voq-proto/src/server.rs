//! The server side of a voq/1 session, sans-IO.
//!
//! The shell (one per carrier: QUIC, WebTransport, WebSocket) owns the sockets and streams, the
//! codecs and the agent. It feeds everything that happens into the session with `handle_*`
//! calls and, **after every input, drains [`ServerSession::poll_output`] until it returns
//! `None`**, then sleeps until [`ServerSession::poll_timeout`] (or the next input) and calls
//! [`ServerSession::handle_timeout`].
//!
//! ```
//! use std::time::{Duration, Instant};
//! use voq_proto::server::{ServerConfig, ServerOutput, ServerSession};
//!
//! # #[allow(clippy::disallowed_methods)]
//! let now = Instant::now();
//! let mut session = ServerSession::new(ServerConfig::default(), now);
//! // The client opened its control stream and sent an event.
//! let mut bytes = Vec::new();
//! voq_proto::wire::encode_event(br#"{"type":"response.create"}"#, &mut bytes).unwrap();
//! session.handle_control(now, &bytes);
//! while let Some(output) = session.poll_output() {
//!     match output {
//!         ServerOutput::Control(bytes) => { /* write to the control stream */ }
//!         ServerOutput::StartResponse { response_id, .. } => {
//!             /* start the agent; feed its audio with handle_agent_frame(now, &response_id, ..) */
//!         }
//!         _ => { /* open, write, finish or reset streams; hand turns to the agent */ }
//!     }
//! }
//! let wake_at: Option<Instant> = session.poll_timeout();
//! # let _ = wake_at;
//! session.handle_timeout(now + Duration::from_millis(20));
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::error::{Code, WireError};
use crate::event::{
    self, ClientEvent, ResponseInfo, ServerEvent, SessionInfo, VoqResponseStats, VoqSessionInfo,
};
use crate::pacing::{Lead, SendAhead};
use crate::wire::{self, AudioHeader, AudioItem, AudioStreamDecoder, DecodedEvent, StreamKind};
use crate::{Codec, frame_samples};

/// A stream the peer opened, named by the shell (e.g. the QUIC stream id).
pub type StreamId = u64;

/// A stream the session asks the shell to open, named by the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutStream(pub u64);

/// Settings of one server session.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `sess_…` identifier, unique per server.
    pub session_id: String,
    /// Carrier name reported to the client: `quic`, `webtransport` or `ws`.
    pub transport: String,
    /// Send-ahead lead for agent audio. Default 2 s.
    pub send_ahead: Lead,
    /// How often clients should report their playback cursor. Default 100 ms.
    pub played_report_interval: Duration,
    /// Codec for agent audio until the client asks for another. Default pcm16.
    pub output_codec: Codec,
    /// Respond automatically when a user turn is committed (Realtime's `create_response`).
    pub auto_response: bool,
    /// User turns that may be open at once; more are refused with `StreamRefused`.
    pub max_open_turns: usize,
    /// Agent audio queued beyond the lead before [`ServerSession::wants_agent_audio`] says no.
    pub max_queued: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            session_id: "sess_0".into(),
            transport: "quic".into(),
            send_ahead: Lead::from_ms(2000),
            played_report_interval: Duration::from_millis(100),
            output_codec: Codec::Pcm16,
            auto_response: true,
            max_open_turns: 4,
            max_queued: Duration::from_secs(30),
        }
    }
}

/// What the session asks its shell to do.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerOutput {
    /// Write these bytes on the control stream.
    Control(Vec<u8>),
    /// Open a unidirectional stream and write `bytes` (its header) on it.
    OpenStream { stream: OutStream, bytes: Vec<u8> },
    /// Write on a stream opened before.
    StreamData { stream: OutStream, bytes: Vec<u8> },
    /// Finish the stream (FIN).
    FinishStream { stream: OutStream },
    /// Abandon the stream (RESET_STREAM with `code`).
    ResetStream { stream: OutStream, code: Code },
    /// Ask the peer to stop sending on one of its streams (STOP_SENDING with `code`).
    StopSending { stream: StreamId, code: Code },
    /// A user audio frame arrived (for VAD, recording, streaming agents). Frames of one item
    /// arrive in order, each exactly once.
    TurnAudio {
        item_id: String,
        codec: Codec,
        pts: u32,
        payload: Vec<u8>,
    },
    /// The server holds the whole user turn; `input_audio_buffer.committed` was sent. Its audio
    /// is `samples` (by pts) of the stream whose header named `source_item_id`: the same item in
    /// push-to-talk mode, a segment of the one input stream with server VAD.
    TurnCommitted {
        item_id: String,
        frames: u64,
        audio_ms: u64,
        source_item_id: String,
        samples: std::ops::Range<u64>,
    },
    /// A user turn ended without being committed (cleared, aborted or malformed): forget its
    /// audio.
    TurnDiscarded { item_id: String, reason: String },
    /// Start the agent. Feed its audio with [`ServerSession::handle_agent_frame`] and end with
    /// [`ServerSession::handle_agent_done`]. `input_item_id` is the user turn it answers.
    StartResponse {
        response_id: String,
        input_item_id: Option<String>,
        codec: Codec,
    },
    /// Stop the agent's generation for this response now.
    CancelResponse { response_id: String },
    /// A response ended: how, and what it sent (for metrics and recordings).
    ResponseEnded {
        response_id: String,
        status: ResponseStatus,
        stats: VoqResponseStats,
    },
    /// Something for the log: a client error or a protocol violation answered with an `error`.
    Warning(String),
}

/// How a response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseStatus {
    Completed,
    Cancelled,
    Failed,
}

impl ResponseStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }
}

#[derive(Debug)]
struct Turn {
    decoder: AudioStreamDecoder,
    header: Option<(AudioHeader, Codec)>,
    frames: u64,
    bytes: u64,
    /// End of the last frame, in samples.
    end: u64,
    last_pts: Option<u32>,
    failed: bool,
}

#[derive(Debug)]
struct Response {
    id: String,
    item_id: String,
    stream: OutStream,
    codec: Codec,
    pacer: SendAhead,
    /// Frames produced by the agent and not yet sent: (pts, payload).
    queue: VecDeque<(u32, Vec<u8>)>,
    /// Next pts to assign, in samples.
    next_pts: u64,
    agent_done: bool,
    stats: VoqResponseStats,
}

/// A user turn the server now holds, as `commit` announces it.
#[derive(Debug)]
struct CommittedTurn {
    item_id: String,
    frames: u64,
    audio_ms: u64,
    bytes: u64,
    source_item_id: String,
    samples: std::ops::Range<u64>,
}

/// Server VAD state: the current segment's item id and what it holds so far.
#[derive(Debug, Default)]
struct VadSegment {
    item_id: Option<String>,
    /// The input stream's item id (from its header).
    source: Option<String>,
    frames: u64,
    bytes: u64,
    start_sample: u64,
    end_sample: u64,
}

/// One voq/1 session, server side. See the module docs for the call order.
#[derive(Debug)]
pub struct ServerSession {
    config: ServerConfig,
    input_codec: Codec,
    output_codec: Codec,
    server_vad: Option<serde_json::Value>,
    events: wire::EventDecoder,
    turns: BTreeMap<StreamId, Turn>,
    seen_items: std::collections::BTreeSet<String>,
    /// Assistant items by id: (response id, ms of audio sent) — what a truncation checks.
    items: BTreeMap<String, (String, u64)>,
    response: Option<Response>,
    last_committed: Option<String>,
    vad: VadSegment,
    rtt: Duration,
    last_now: Option<Instant>,
    next_id: u64,
    next_stream: u64,
    out: VecDeque<ServerOutput>,
    closed: bool,
    going_away: bool,
}

impl ServerSession {
    /// Starts a session; `session.created` is the first output.
    pub fn new(config: ServerConfig, _now: Instant) -> Self {
        let mut s = Self {
            input_codec: Codec::Pcm16,
            output_codec: config.output_codec,
            server_vad: None,
            config,
            events: wire::EventDecoder::default(),
            turns: BTreeMap::new(),
            seen_items: Default::default(),
            items: BTreeMap::new(),
            response: None,
            last_committed: None,
            vad: VadSegment::default(),
            rtt: Duration::from_millis(100),
            last_now: None,
            next_id: 1,
            next_stream: 0,
            out: VecDeque::new(),
            closed: false,
            going_away: false,
        };
        let session = s.info();
        s.send(ServerEvent::SessionCreated { session });
        s
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Whether the session runs server-side VAD (the shell then runs a VAD on `TurnAudio` and
    /// calls [`ServerSession::handle_vad`]).
    pub fn server_vad(&self) -> bool {
        self.server_vad.is_some()
    }

    /// The server is shutting down: the response in progress and turns already open finish;
    /// new turns are refused with `going_away`, and the client is told to reconnect elsewhere
    /// once it is done. The shell closes the connection when the client does, or at its drain
    /// timeout.
    pub fn handle_going_away(&mut self, _now: Instant) {
        if self.going_away {
            return;
        }
        self.going_away = true;
        self.send(ServerEvent::error(
            "server_error",
            Code::GoingAway.as_str(),
            "the server is shutting down: finish this response, then reconnect",
        ));
    }

    /// Updates the smoothed RTT the pacer adapts to (from the carrier's estimator).
    pub fn handle_rtt(&mut self, rtt: Duration) {
        self.rtt = rtt;
    }

    /// Bytes received on the control stream.
    pub fn handle_control(&mut self, now: Instant, bytes: &[u8]) {
        self.events.push(bytes);
        while let Some(decoded) = self.events.poll_event() {
            match decoded {
                DecodedEvent::Skipped(len) => self.client_error(
                    None,
                    "event_too_large",
                    &format!("event of {len} bytes skipped"),
                ),
                DecodedEvent::Event(body) => {
                    match event::parse::<ClientEvent>(&body, event::CLIENT_EVENT_TYPES) {
                        Ok(r) => self.on_event(now, r.event_id, r.event),
                        Err((id, e)) => self.client_error(id, e.code(), &e.to_string()),
                    }
                }
            }
        }
    }

    /// The control stream ended (FIN or reset): the session is over.
    pub fn handle_control_closed(&mut self, now: Instant) {
        self.close(now);
    }

    /// Bytes on a unidirectional stream the client opened (the first call opens it).
    pub fn handle_stream_data(&mut self, _now: Instant, stream: StreamId, bytes: &[u8]) {
        if !self.turns.contains_key(&stream) {
            if self.going_away {
                self.out.push_back(ServerOutput::StopSending {
                    stream,
                    code: Code::GoingAway,
                });
                self.turns.insert(stream, Turn::failed());
                return;
            }
            if self.turns.values().filter(|t| !t.failed).count() >= self.config.max_open_turns {
                self.out.push_back(ServerOutput::StopSending {
                    stream,
                    code: Code::StreamRefused,
                });
                self.client_error(
                    None,
                    Code::StreamRefused.as_str(),
                    "too many user turns open at once",
                );
                // Remember it as failed so later bytes are ignored quietly.
                self.turns.insert(stream, Turn::failed());
                return;
            }
            self.turns.insert(stream, Turn::new());
        }
        let Some(turn) = self.turns.get_mut(&stream) else {
            return;
        };
        if turn.failed {
            return;
        }
        turn.decoder.push(bytes);
        loop {
            let Some(turn) = self.turns.get_mut(&stream) else {
                return;
            };
            match turn.decoder.poll_item() {
                Ok(None) => break,
                Ok(Some(AudioItem::Header(kind, header))) => {
                    self.on_turn_header(stream, kind, header)
                }
                Ok(Some(AudioItem::Frame(frame))) => {
                    self.on_turn_frame(stream, frame.pts, frame.payload)
                }
                Err(e) => {
                    self.fail_turn(stream, e.code(), &e.to_string());
                    break;
                }
            }
        }
    }

    /// The client finished a turn stream (FIN): in push-to-talk mode this commits the turn.
    pub fn handle_stream_fin(&mut self, now: Instant, stream: StreamId) {
        let Some(turn) = self.turns.get(&stream) else {
            return;
        };
        if turn.failed {
            self.turns.remove(&stream);
            return;
        }
        if turn.decoder.pending() > 0 || turn.header.is_none() {
            let e = WireError::BadHeader("stream ended inside a header or frame".into());
            self.fail_turn(stream, Code::ProtocolViolation, &e.to_string());
            self.turns.remove(&stream);
            return;
        }
        let Some(turn) = self.turns.remove(&stream) else {
            return;
        };
        let Some((header, codec)) = turn.header else {
            return;
        };
        if self.server_vad.is_some() {
            // Server VAD: the stream's end commits a segment whose speech has started but not
            // yet stopped. Audio after the last `speech_stopped` is silence, not a turn.
            if self.vad.item_id.is_some() && self.vad.frames > 0 {
                self.commit_vad_segment(now);
            } else {
                self.vad = VadSegment::default();
            }
            return;
        }
        let committed = CommittedTurn {
            audio_ms: turn.end * 1000 / codec.sample_rate() as u64,
            source_item_id: header.item_id.clone(),
            item_id: header.item_id,
            frames: turn.frames,
            bytes: turn.bytes,
            samples: 0..turn.end,
        };
        self.commit(now, committed);
    }

    /// The client reset a turn stream: the turn is abandoned (nothing was confirmed).
    pub fn handle_stream_reset(&mut self, _now: Instant, stream: StreamId, code: u64) {
        if let Some(turn) = self.turns.remove(&stream)
            && let (false, Some((header, _))) = (turn.failed, turn.header)
        {
            self.out.push_back(ServerOutput::TurnDiscarded {
                item_id: header.item_id,
                reason: format!("client reset the stream (code {code})"),
            });
        }
    }

    /// The client sent STOP_SENDING on a response stream: it does not want the rest.
    pub fn handle_stream_stopped(&mut self, _now: Instant, stream: OutStream, _code: u64) {
        if self.response.as_ref().is_some_and(|r| r.stream == stream) {
            self.end_response(ResponseStatus::Cancelled);
        }
    }

    /// A server-VAD decision on the user audio of `item_id`'s stream, at `at_ms` from the start
    /// of the input stream.
    pub fn handle_vad(&mut self, now: Instant, speech: bool, at_ms: u64) {
        if self.server_vad.is_none() {
            return;
        }
        if speech {
            let item_id = self.new_id("item");
            self.vad.item_id = Some(item_id.clone());
            // The user talks over the agent: stop it (Realtime's interrupt_response).
            if self.response.is_some() {
                self.end_response(ResponseStatus::Cancelled);
            }
            self.send(ServerEvent::SpeechStarted {
                item_id,
                audio_start_ms: at_ms,
            });
        } else if let Some(item_id) = self.vad.item_id.clone() {
            self.send(ServerEvent::SpeechStopped {
                item_id,
                audio_end_ms: at_ms,
            });
            self.commit_vad_segment(now);
        }
    }

    /// One encoded frame of agent audio for `response_id`, `samples` long. Ignored if the
    /// response was cancelled (the agent may still be winding down).
    pub fn handle_agent_frame(
        &mut self,
        now: Instant,
        response_id: &str,
        payload: Vec<u8>,
        samples: u32,
    ) {
        let Some(r) = self.response.as_mut().filter(|r| r.id == response_id) else {
            return;
        };
        let pts = r.next_pts as u32;
        r.next_pts += samples as u64;
        r.stats.audio_ms_generated = r.next_pts * 1000 / r.codec.sample_rate() as u64;
        r.queue.push_back((pts, payload));
        self.release(now);
    }

    /// The agent finished `response_id`: once its queued audio is sent, the stream is finished.
    pub fn handle_agent_done(&mut self, now: Instant, response_id: &str) {
        if let Some(r) = self.response.as_mut().filter(|r| r.id == response_id) {
            r.agent_done = true;
            self.release(now);
        }
    }

    /// The agent failed: the response ends with `failed` and an `error` event.
    pub fn handle_agent_failed(&mut self, _now: Instant, response_id: &str, reason: &str) {
        if self.response.as_ref().is_some_and(|r| r.id == response_id) {
            self.send(ServerEvent::error(
                "server_error",
                Code::AgentFailed.as_str(),
                reason,
            ));
            self.end_response(ResponseStatus::Failed);
        }
    }

    /// Whether the shell should pull more audio from the agent: false while more than
    /// `max_queued` waits unsent (backpressure for agents much faster than real time).
    pub fn wants_agent_audio(&self) -> bool {
        self.response.as_ref().is_some_and(|r| {
            let queued: u64 = r.queue.len() as u64 * frame_samples(r.codec) as u64;
            queued * 1000 / (r.codec.sample_rate() as u64)
                < self.config.max_queued.as_millis() as u64
        })
    }

    /// The next instant pacing wants to run, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let r = self.response.as_ref()?;
        let (pts, _) = r.queue.front()?;
        let pts_ms = *pts as u64 * 1000 / r.codec.sample_rate() as u64;
        // The cursor estimate moves linearly until the next input, so a release time computed
        // from the last input's instant is exact.
        r.pacer.next_release(self.last_now?, pts_ms, self.rtt)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.release(now);
    }

    /// The next thing for the shell to do.
    pub fn poll_output(&mut self) -> Option<ServerOutput> {
        self.out.pop_front()
    }

    /// No response is playing and no user turn is open: a graceful shutdown may close now.
    pub fn is_idle(&self) -> bool {
        self.response.is_none() && self.turns.values().all(|t| t.failed)
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }
}

impl Turn {
    fn new() -> Self {
        Self {
            decoder: AudioStreamDecoder::default(),
            header: None,
            frames: 0,
            bytes: 0,
            end: 0,
            last_pts: None,
            failed: false,
        }
    }

    fn failed() -> Self {
        Self {
            failed: true,
            ..Self::new()
        }
    }
}

impl ServerSession {
    fn info(&self) -> SessionInfo {
        SessionInfo {
            id: self.config.session_id.clone(),
            input_audio_format: self.input_codec.name().into(),
            output_audio_format: self.output_codec.name().into(),
            turn_detection: self.server_vad.clone(),
            voq: VoqSessionInfo {
                version: event::PROTOCOL_VERSION.into(),
                send_ahead_ms: self.config.send_ahead.as_ms(),
                played_report_interval_ms: self.config.played_report_interval.as_millis() as u64,
                transport: self.config.transport.clone(),
            },
        }
    }

    fn new_id(&mut self, prefix: &str) -> String {
        let id = format!("{prefix}_{}", self.next_id);
        self.next_id += 1;
        id
    }

    fn send(&mut self, event: ServerEvent) {
        let mut bytes = Vec::new();
        // Our own events are far below the size limit.
        if wire::encode_event(&event::to_json(&event), &mut bytes).is_ok() {
            self.out.push_back(ServerOutput::Control(bytes));
        }
    }

    fn client_error(&mut self, event_id: Option<String>, code: &str, message: &str) {
        self.out
            .push_back(ServerOutput::Warning(format!("{code}: {message}")));
        let mut ev = ServerEvent::error("invalid_request_error", code, message);
        if let ServerEvent::Error { error } = &mut ev {
            error.event_id = event_id;
        }
        self.send(ev);
    }

    fn on_event(&mut self, now: Instant, event_id: Option<String>, event: ClientEvent) {
        self.last_now = Some(now);
        match event {
            ClientEvent::SessionUpdate { session } => {
                for (field, value, target) in [
                    ("input_audio_format", &session.input_audio_format, 0),
                    ("output_audio_format", &session.output_audio_format, 1),
                ] {
                    let Some(name) = value else { continue };
                    match name.parse::<Codec>() {
                        Ok(c) if target == 0 => self.input_codec = c,
                        Ok(c) => self.output_codec = c,
                        Err(_) => {
                            let msg = format!(
                                "{field}: unsupported codec \"{name}\" (use pcm16 or opus)"
                            );
                            return self.client_error(event_id, "invalid_value", &msg);
                        }
                    }
                }
                match session.turn_detection {
                    None => {}
                    Some(serde_json::Value::Null) => self.server_vad = None,
                    Some(v) if v.get("type").and_then(|t| t.as_str()) == Some("server_vad") => {
                        self.server_vad = Some(v)
                    }
                    Some(_) => {
                        let msg = "turn_detection: use null or {\"type\":\"server_vad\"}";
                        return self.client_error(event_id, "invalid_value", msg);
                    }
                }
                if let Some(ms) = session.voq.and_then(|v| v.send_ahead_ms) {
                    self.config.send_ahead = Lead::from_ms(ms);
                }
                let session = self.info();
                self.send(ServerEvent::SessionUpdated { session });
            }
            ClientEvent::InputAudioBufferCommit {} => {
                if self.server_vad.is_some() && self.vad.frames > 0 {
                    self.commit_vad_segment(now);
                } else {
                    let msg = "nothing to commit: in push-to-talk mode a turn is committed by \
                               finishing its stream";
                    self.client_error(event_id, "input_audio_buffer_commit_empty", msg);
                }
            }
            ClientEvent::InputAudioBufferClear {} => {
                let open: Vec<StreamId> = self
                    .turns
                    .iter()
                    .filter(|(_, t)| !t.failed)
                    .map(|(s, _)| *s)
                    .collect();
                for stream in open {
                    self.out.push_back(ServerOutput::StopSending {
                        stream,
                        code: Code::Cancelled,
                    });
                    self.handle_stream_reset(now, stream, Code::Cancelled as u64);
                    self.turns.insert(stream, Turn::failed());
                }
                self.vad = VadSegment {
                    item_id: None,
                    ..Default::default()
                };
                self.send(ServerEvent::InputAudioBufferCleared {});
            }
            ClientEvent::ResponseCreate {} => {
                self.create_response(now, self.last_committed.clone())
            }
            ClientEvent::ResponseCancel { response_id } => {
                let active = self.response.as_ref().map(|r| r.id.clone());
                match (active, response_id) {
                    (Some(a), Some(want)) if a != want => self.client_error(
                        event_id,
                        "response_not_found",
                        &format!("response {want} is not in progress (active: {a})"),
                    ),
                    (Some(_), _) => self.end_response(ResponseStatus::Cancelled),
                    (None, _) => {
                        self.client_error(event_id, "response_not_found", "no response in progress")
                    }
                }
            }
            ClientEvent::ConversationItemTruncate {
                item_id,
                content_index,
                audio_end_ms,
            } => {
                let Some((response_id, sent_ms)) = self.items.get(&item_id).cloned() else {
                    let msg = format!("no assistant audio item \"{item_id}\"");
                    return self.client_error(event_id, "item_not_found", &msg);
                };
                // Stop first: every ms counts for a barge-in.
                if self.response.as_ref().is_some_and(|r| r.id == response_id) {
                    self.end_response(ResponseStatus::Cancelled);
                }
                let sent_ms = self.items.get(&item_id).map_or(sent_ms, |(_, ms)| *ms);
                if audio_end_ms > sent_ms {
                    let msg = format!("audio_end_ms {audio_end_ms} is past the {sent_ms} ms sent");
                    return self.client_error(event_id, "invalid_value", &msg);
                }
                self.send(ServerEvent::ConversationItemTruncated {
                    item_id,
                    content_index,
                    audio_end_ms,
                });
            }
            ClientEvent::OutputAudioBufferPlayed {
                response_id,
                played_ms,
                buffered_ms,
            } => {
                if let Some(r) = self.response.as_mut().filter(|r| r.id == response_id) {
                    r.pacer.on_report(now, played_ms, buffered_ms);
                    self.release(now);
                }
                // Reports for an ended response are normal (they cross the reset): ignore.
            }
            ClientEvent::VoqPing { id } => self.send(ServerEvent::VoqPong { id }),
        }
    }

    fn on_turn_header(&mut self, stream: StreamId, kind: StreamKind, header: AudioHeader) {
        let problem = if kind != StreamKind::UserAudio {
            Some((
                Code::StreamRefused,
                "clients may only open user audio streams".to_string(),
            ))
        } else if header.item_id.is_empty() || self.seen_items.contains(&header.item_id) {
            Some((
                Code::BadHeader,
                format!("item_id \"{}\" is empty or reused", header.item_id),
            ))
        } else {
            match header.codec.parse::<Codec>() {
                Err(_) => Some((
                    Code::BadHeader,
                    format!("unsupported codec \"{}\"", header.codec),
                )),
                Ok(c) if c.sample_rate() != header.sample_rate => Some((
                    Code::BadHeader,
                    format!(
                        "{} needs sample_rate {}, got {}",
                        c.name(),
                        c.sample_rate(),
                        header.sample_rate
                    ),
                )),
                Ok(c) => {
                    self.seen_items.insert(header.item_id.clone());
                    if let Some(t) = self.turns.get_mut(&stream) {
                        t.header = Some((header, c));
                    }
                    None
                }
            }
        };
        if let Some((code, msg)) = problem {
            self.fail_turn(stream, code, &msg);
        }
    }

    fn on_turn_frame(&mut self, stream: StreamId, pts: u32, payload: Vec<u8>) {
        let Some(turn) = self.turns.get_mut(&stream) else {
            return;
        };
        let Some((header, codec)) = turn.header.clone() else {
            return;
        };
        if turn.last_pts.is_some_and(|last| pts <= last) {
            let msg = format!("frame pts {pts} is not after the previous frame's");
            return self.fail_turn(stream, Code::ProtocolViolation, &msg);
        }
        let samples = codec.samples_in(&payload, header.frame_ms);
        turn.last_pts = Some(pts);
        turn.frames += 1;
        turn.bytes += payload.len() as u64;
        turn.end = turn.end.max(pts as u64 + samples);
        if self.server_vad.is_some() {
            if self.vad.frames == 0 {
                self.vad.start_sample = pts as u64;
                self.vad.source = Some(header.item_id.clone());
            }
            self.vad.frames += 1;
            self.vad.bytes += payload.len() as u64;
            self.vad.end_sample = pts as u64 + samples;
        }
        self.out.push_back(ServerOutput::TurnAudio {
            item_id: header.item_id,
            codec,
            pts,
            payload,
        });
    }

    fn fail_turn(&mut self, stream: StreamId, code: Code, message: &str) {
        let item_id = self
            .turns
            .get(&stream)
            .and_then(|t| t.header.as_ref())
            .map(|(h, _)| h.item_id.clone());
        self.turns.insert(stream, Turn::failed());
        self.out
            .push_back(ServerOutput::StopSending { stream, code });
        if let Some(item_id) = item_id {
            self.out.push_back(ServerOutput::TurnDiscarded {
                item_id,
                reason: message.into(),
            });
        }
        self.client_error(None, code.as_str(), message);
    }

    fn commit(&mut self, now: Instant, turn: CommittedTurn) {
        let CommittedTurn {
            item_id,
            frames,
            audio_ms,
            bytes,
            source_item_id,
            samples,
        } = turn;
        let previous_item_id = self.last_committed.replace(item_id.clone());
        self.send(ServerEvent::InputAudioBufferCommitted {
            item_id: item_id.clone(),
            previous_item_id,
            frames,
            audio_ms,
            bytes,
        });
        self.out.push_back(ServerOutput::TurnCommitted {
            item_id: item_id.clone(),
            frames,
            audio_ms,
            source_item_id,
            samples,
        });
        if self.config.auto_response {
            self.create_response(now, Some(item_id));
        }
    }

    fn commit_vad_segment(&mut self, now: Instant) {
        let seg = std::mem::take(&mut self.vad);
        let rate = self.input_codec.sample_rate() as u64;
        let turn = CommittedTurn {
            item_id: seg.item_id.unwrap_or_else(|| self.new_id("item")),
            frames: seg.frames,
            audio_ms: (seg.end_sample - seg.start_sample) * 1000 / rate,
            bytes: seg.bytes,
            source_item_id: seg.source.unwrap_or_default(),
            samples: seg.start_sample..seg.end_sample,
        };
        self.commit(now, turn);
    }

    fn create_response(&mut self, now: Instant, input_item_id: Option<String>) {
        self.last_now = Some(now);
        if self.response.is_some() {
            // One response at a time: a new one replaces the old (the user moved on).
            self.end_response(ResponseStatus::Cancelled);
        }
        let id = self.new_id("resp");
        let item_id = self.new_id("item");
        let stream = OutStream(self.next_stream);
        self.next_stream += 1;
        let codec = self.output_codec;
        let header = AudioHeader {
            item_id: item_id.clone(),
            response_id: Some(id.clone()),
            codec: codec.name().into(),
            sample_rate: codec.sample_rate(),
            frame_ms: crate::FRAME_MS,
        };
        let mut bytes = Vec::new();
        wire::encode_header(StreamKind::AgentAudio, &header, &mut bytes);
        self.items.insert(item_id.clone(), (id.clone(), 0));
        self.send(ServerEvent::ResponseCreated {
            response: ResponseInfo {
                id: id.clone(),
                status: "in_progress".into(),
                item_id: item_id.clone(),
                voq: None,
            },
        });
        self.out
            .push_back(ServerOutput::OpenStream { stream, bytes });
        self.out.push_back(ServerOutput::StartResponse {
            response_id: id.clone(),
            input_item_id,
            codec,
        });
        self.response = Some(Response {
            id,
            item_id,
            stream,
            codec,
            pacer: SendAhead::new(self.config.send_ahead),
            queue: VecDeque::new(),
            next_pts: 0,
            agent_done: false,
            stats: VoqResponseStats::default(),
        });
    }

    /// Sends every queued frame the pacer allows; finishes the stream when all is sent.
    fn release(&mut self, now: Instant) {
        self.last_now = Some(now);
        let Some(r) = self.response.as_mut() else {
            return;
        };
        let rate = r.codec.sample_rate() as u64;
        while let Some((pts, _)) = r.queue.front() {
            let pts_ms = *pts as u64 * 1000 / rate;
            if !r.pacer.allowed(now, pts_ms, self.rtt) {
                break;
            }
            let Some((pts, payload)) = r.queue.pop_front() else {
                break;
            };
            let mut bytes = Vec::with_capacity(payload.len() + wire::FRAME_OVERHEAD);
            if wire::encode_frame(pts, &payload, &mut bytes).is_err() {
                // An agent frame over the limit is our bug, not the client's: fail the response.
                self.out.push_back(ServerOutput::Warning(format!(
                    "agent frame of {} bytes is over the frame limit",
                    payload.len()
                )));
                return self.end_response(ResponseStatus::Failed);
            }
            r.stats.frames_sent += 1;
            r.stats.bytes_sent += bytes.len() as u64;
            let end = r.queue.front().map_or(r.next_pts, |(p, _)| *p as u64);
            r.stats.audio_ms_sent = end * 1000 / rate;
            if let Some(item) = self.items.get_mut(&r.item_id) {
                item.1 = r.stats.audio_ms_sent;
            }
            self.out.push_back(ServerOutput::StreamData {
                stream: r.stream,
                bytes,
            });
        }
        if r.agent_done && r.queue.is_empty() {
            self.out
                .push_back(ServerOutput::FinishStream { stream: r.stream });
            self.end_response(ResponseStatus::Completed);
        }
    }

    fn end_response(&mut self, status: ResponseStatus) {
        let Some(r) = self.response.take() else {
            return;
        };
        if status != ResponseStatus::Completed {
            self.out.push_back(ServerOutput::ResetStream {
                stream: r.stream,
                code: if status == ResponseStatus::Failed {
                    Code::AgentFailed
                } else {
                    Code::Cancelled
                },
            });
            self.out.push_back(ServerOutput::CancelResponse {
                response_id: r.id.clone(),
            });
        }
        self.out.push_back(ServerOutput::ResponseEnded {
            response_id: r.id.clone(),
            status,
            stats: r.stats.clone(),
        });
        self.send(ServerEvent::ResponseDone {
            response: ResponseInfo {
                id: r.id,
                status: status.as_str().into(),
                item_id: r.item_id,
                voq: Some(r.stats),
            },
        });
    }

    fn close(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        self.closed = true;
        if self.response.is_some() {
            self.end_response(ResponseStatus::Cancelled);
        }
        let open: Vec<StreamId> = self.turns.keys().copied().collect();
        for stream in open {
            self.handle_stream_reset(now, stream, Code::NoError as u64);
        }
    }
}
