//! The client side of a voq/1 session, sans-IO.
//!
//! Same drain rule as the server: **after every input (including [`ClientSession::render`]),
//! drain [`ClientSession::poll_output`] until `None`; wake at [`ClientSession::poll_timeout`]**.
//! The shell owns the connection, the codecs and the audio device: it decodes each
//! [`ClientOutput::ReplyFrame`] and hands the samples back with
//! [`ClientSession::push_reply_audio`], and it calls [`ClientSession::render`] once per device
//! quantum.
//!
//! Nothing is lost while the connection is being set up: the session queues its outputs, so
//! audio captured before the carrier is up is sent as soon as it is.
//!
//! # The methods, by kind
//!
//! - **Getters** (no effect): [`ClientSession::session`], [`ClientSession::turns`],
//!   [`ClientSession::responses`], [`ClientSession::current_response`],
//!   [`ClientSession::playback_done`], [`ClientSession::buffered_ms`].
//! - **Inputs** (`handle_*`), from the carrier: [`ClientSession::handle_control`],
//!   [`ClientSession::handle_stream_data`], [`ClientSession::handle_stream_fin`],
//!   [`ClientSession::handle_stream_reset`], [`ClientSession::handle_stream_stopped`] — the
//!   same inputs as the server's, so both cores react to every stream event; from the clock:
//!   [`ClientSession::handle_timeout`].
//! - **Commands**, from the application and its audio device: [`ClientSession::start_turn`],
//!   [`ClientSession::send_audio`], [`ClientSession::end_turn`], [`ClientSession::commit`],
//!   [`ClientSession::push_reply_audio`], [`ClientSession::render`],
//!   [`ClientSession::interrupt`].
//! - **Outputs** (`poll_*`): [`ClientSession::poll_output`], [`ClientSession::poll_timeout`].
//!
//! **The clock.** Every input and command that takes `now` advances the session's present;
//! [`ClientSession::poll_timeout`] (the next playback report) is scheduled from the instant
//! playback started or last reported. Instants must never go backwards.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::error::{Code, ErrorCode, Problem};
use crate::event::{
    self, ClientEvent, ResponseStatus, ServerEvent, SessionUpdate, VoqSessionUpdate,
};
use crate::playout::{Playout, PlayoutState, Rendered};
use crate::stream::{OutStream, StreamId, Transmit};
use crate::wire::{self, AudioHeader, AudioItem, AudioStreamDecoder, DecodedEvent, StreamKind};
use crate::{Codec, FRAME_MS};

/// Settings of one client session.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Codec for the user's audio.
    pub input_codec: Codec,
    /// Codec asked for agent audio.
    pub output_codec: Codec,
    /// Audio buffered before playback starts (and restarts after an underrun). Default 100 ms.
    pub start_threshold_ms: u32,
    /// Ask the server for this send-ahead lead (None: the server's default).
    pub send_ahead_ms: Option<u64>,
    /// Ask for server-side VAD instead of push-to-talk.
    pub server_vad: bool,
    /// The session token, sent in the first event (`session.update`, `voq.token`) for a server
    /// with authentication on. A carrier that carries it itself (a WebSocket upgrade's
    /// `Authorization` header) may leave it out here.
    pub token: Option<event::Token>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            input_codec: Codec::Pcm16,
            output_codec: Codec::Pcm16,
            start_threshold_ms: 100,
            send_ahead_ms: None,
            server_vad: false,
            token: None,
        }
    }
}

/// What the session asks its shell to do, or tells its application.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientOutput {
    /// A stream operation for the carrier (the same vocabulary as the server's).
    Transmit(Transmit),
    /// A frame of agent audio: decode it and call [`ClientSession::push_reply_audio`].
    ReplyFrame {
        /// The response it belongs to.
        response_id: String,
        /// How it is encoded.
        codec: Codec,
        /// Presentation timestamp, in samples from the response's start.
        pts: u32,
        /// The encoded audio.
        payload: Vec<u8>,
    },
    /// The server stopped a user turn's stream (it refused the turn: `going_away`, too many
    /// turns, a bad header). Nothing more of that turn is sent; see [`TurnStats::stopped`].
    TurnStopped {
        /// The turn's item id.
        item_id: String,
        /// The server's STOP_SENDING code (a [`Code`] when it is one voq knows).
        code: u64,
    },
    /// A server event, for the application.
    Event(ServerEvent),
    /// The server sent something the session could not use (a malformed event or stream);
    /// the session went on without it.
    Problem(Problem),
    /// The server refused to resume the session: reconnect and call
    /// [`ClientSession::handle_reconnected`] again, which then starts a new session and sends
    /// the unconfirmed turns from their start.
    ResumeRefused {
        /// The server's words.
        message: String,
    },
}

/// A user turn as the client sent it and the server confirmed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TurnStats {
    /// The turn's item id (`item_cN` for turns this client opened; the server's ids for the
    /// segments it cut with server VAD).
    pub item_id: String,
    /// Audio frames written to the turn's stream.
    pub frames_sent: u64,
    /// Codec payload bytes written (without frame headers).
    pub bytes_sent: u64,
    /// Audio written, in ms.
    pub audio_ms_sent: u64,
    /// Frames the server holds, from `input_audio_buffer.committed`.
    pub frames_confirmed: Option<u64>,
    /// Audio the server holds, in ms, from `input_audio_buffer.committed`.
    pub audio_ms_confirmed: Option<u64>,
    /// Payload bytes the server holds, from `input_audio_buffer.committed`.
    pub bytes_confirmed: Option<u64>,
    /// When the turn's stream was finished (or the stopped turn ended).
    pub ended_at: Option<Instant>,
    /// When `input_audio_buffer.committed` arrived.
    pub confirmed_at: Option<Instant>,
    /// The server stopped the turn's stream with this code: it was refused, not committed.
    pub stopped: Option<u64>,
    /// Frames the application handed over after the server stopped the turn: not sent.
    pub frames_dropped: u64,
}

/// A response as the client received and played it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseStats {
    /// The response's id (`resp_N`).
    pub response_id: String,
    /// The assistant item its audio belongs to (what a truncation names).
    pub item_id: String,
    /// Bytes of agent audio frames received, headers included.
    pub bytes_received: u64,
    /// Agent audio frames received.
    pub frames_received: u64,
    /// When the first frame arrived.
    pub first_frame_at: Option<Instant>,
    /// When the latest frame arrived.
    pub last_frame_at: Option<Instant>,
    /// The longest wait between two frames arriving: once the send-ahead lead is full they come
    /// at the speech's pace (20 ms), so more is an interruption (loss, an outage, a network
    /// change) that the lead had to cover.
    pub max_frame_gap: std::time::Duration,
    /// When the first non-silent quantum was rendered.
    pub first_audio_at: Option<Instant>,
    /// The playback position, in ms of the agent's speech.
    pub played_ms: u64,
    /// Times playback ran dry and stalled.
    pub underruns: u32,
    /// Silence rendered while stalled, in ms.
    pub stall_ms: u64,
    /// How the response ended, from `response.done`.
    pub status: Option<ResponseStatus>,
    /// The barge-in on this response, if the user interrupted it.
    pub interrupt: Option<InterruptStats>,
}

/// A barge-in and what came of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterruptStats {
    /// When [`ClientSession::interrupt`] was called.
    pub at: Option<Instant>,
    /// The user's position in the agent's speech when the client silenced it.
    pub played_ms: u64,
    /// When the first silent quantum was rendered.
    pub silenced_at: Option<Instant>,
    /// Bytes of agent audio received (before or after the interrupt) and never played.
    pub unplayed_bytes: u64,
    /// `audio_end_ms` of the server's `conversation.item.truncated`.
    pub truncated_audio_end_ms: Option<u64>,
    /// When `conversation.item.truncated` arrived.
    pub truncated_at: Option<Instant>,
    /// When the server's reset of the response stream arrived.
    pub reset_at: Option<Instant>,
}

#[derive(Debug)]
struct Reply {
    stats: ResponseStats,
    stream: Option<StreamId>,
    codec: Codec,
    playout: Playout,
    /// Received frames: (pts, encoded bytes on the wire) — what an interrupt wastes.
    frames: Vec<(u64, u64)>,
    ended: bool,
    /// End of the audio received, in samples (frames arrive in order: all before it is held).
    received_end: u64,
}

/// The user turn being captured.
#[derive(Debug)]
struct OpenTurn {
    stream: OutStream,
    next_pts: u64,
    index: usize,
    state: OpenTurnState,
}

/// A server stream being read.
#[derive(Debug)]
struct Inbound {
    decoder: AudioStreamDecoder,
    /// The response and codec its header named, once read.
    reply: Option<(String, Codec)>,
    /// The last frame's pts: each must be later than the one before.
    last_pts: Option<u32>,
}

/// Refused server streams remembered at once (their late bytes dropped).
const MAX_REFUSED: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenTurnState {
    /// Frames are written to the stream.
    Sending,
    /// The server stopped the stream: frames are dropped until the turn ends.
    Stopped,
}

/// One voq/1 session, client side.
#[derive(Debug)]
pub struct ClientSession {
    config: ClientConfig,
    events: wire::EventDecoder,
    inbound: BTreeMap<StreamId, Inbound>,
    /// Server streams this session refused (STOP_SENDING sent): what still arrives on them is
    /// dropped. Bounded: the oldest are forgotten first, and FIN or RESET ends an entry.
    refused: BTreeSet<StreamId>,
    session: Option<event::SessionInfo>,
    report_interval: Duration,
    next_report: Option<Instant>,
    turns: Vec<TurnStats>,
    /// Streams of turns ended by FIN, with their index in `turns`, until the server is done
    /// with them (it may still stop one).
    finished: BTreeMap<OutStream, usize>,
    sending: Option<OpenTurn>,
    replies: Vec<Reply>,
    next_turn: u64,
    out: VecDeque<ClientOutput>,
    /// The frames of push-to-talk turns the server has not confirmed, to send again after a
    /// resume (bounded by what the turns hold: a turn is at most 120 s).
    kept: Vec<KeptTurn>,
    /// Whether the carrier is up, down, or up and waiting for `voq.session.resumed`.
    link: LinkState,
    /// The latest resume token the server gave.
    resume_token: Option<String>,
}

/// The carrier as the session sees it ([`ClientSession::handle_disconnected`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    Up,
    /// Lost: stream operations are dropped; audio is kept.
    Down,
    /// A new carrier is up and the resume request sent: stream operations wait for the answer.
    Resuming,
}

/// A push-to-talk turn not yet confirmed: everything needed to send it again.
#[derive(Debug)]
struct KeptTurn {
    index: usize,
    frames: Vec<(u32, Vec<u8>)>,
    /// Its stream was finished (the turn is whole).
    ended: bool,
}

impl ClientSession {
    /// A session that asks for `config`'s codecs and modes in its first event.
    pub fn new(config: ClientConfig, _now: Instant) -> Self {
        let mut s = Self {
            config,
            events: wire::EventDecoder::default(),
            inbound: BTreeMap::new(),
            refused: BTreeSet::new(),
            session: None,
            report_interval: Duration::from_millis(100),
            next_report: None,
            turns: Vec::new(),
            finished: BTreeMap::new(),
            sending: None,
            replies: Vec::new(),
            next_turn: 1,
            out: VecDeque::new(),
            kept: Vec::new(),
            link: LinkState::Up,
            resume_token: None,
        };
        s.send_session_update(None);
        s
    }

    /// The first event of a connection: the settings, the token, and the session to resume.
    fn send_session_update(&mut self, resume: Option<event::ResumeRequest>) {
        let s = self;
        let update = SessionUpdate {
            session_type: Some("realtime".into()),
            input_audio_format: Some(s.config.input_codec.name().into()),
            output_audio_format: Some(s.config.output_codec.name().into()),
            turn_detection: Some(if s.config.server_vad {
                serde_json::json!({"type": "server_vad"})
            } else {
                serde_json::Value::Null
            }),
            voq: (s.config.send_ahead_ms.is_some() || s.config.token.is_some() || resume.is_some())
                .then(|| VoqSessionUpdate {
                    send_ahead_ms: s.config.send_ahead_ms,
                    token: s.config.token.clone(),
                    resume,
                }),
        };
        s.send(ClientEvent::SessionUpdate { session: update });
    }

    // ---- the user's audio ----

    /// Starts a user turn; returns its item id. A turn still open is ended first.
    pub fn start_turn(&mut self, now: Instant) -> String {
        if self.sending.is_some() {
            self.end_turn(now);
        }
        let index = self.turns.len();
        let item_id = format!("item_c{}", self.next_turn);
        let stream = self.open_turn_stream(&item_id);
        self.turns.push(TurnStats {
            item_id: item_id.clone(),
            ..Default::default()
        });
        if !self.config.server_vad {
            self.kept.push(KeptTurn {
                index,
                frames: Vec::new(),
                ended: false,
            });
        }
        self.sending = Some(OpenTurn {
            stream,
            next_pts: 0,
            index,
            state: OpenTurnState::Sending,
        });
        item_id
    }

    /// One encoded frame of user audio, `samples` long, on the open turn (one is started if
    /// none is open). Refuses payloads over the frame limit.
    pub fn send_audio(
        &mut self,
        now: Instant,
        payload: &[u8],
        samples: u32,
    ) -> Result<(), crate::WireError> {
        if self.sending.is_none() {
            self.start_turn(now);
        }
        let Some(s) = self.sending.as_mut() else {
            return Ok(());
        };
        if s.state == OpenTurnState::Stopped {
            // The server refused this turn (`ClientOutput::TurnStopped` said so): writing more
            // would only be discarded by the carrier.
            if let Some(turn) = self.turns.get_mut(s.index) {
                turn.frames_dropped += 1;
            }
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(payload.len() + wire::FRAME_OVERHEAD);
        wire::encode_frame(s.next_pts as u32, payload, &mut bytes)?;
        let (index, pts) = (s.index, s.next_pts as u32);
        s.next_pts += samples as u64;
        let stream = s.stream;
        if let Some(k) = self.kept.iter_mut().find(|k| k.index == index) {
            k.frames.push((pts, payload.to_vec()));
        }
        if let Some(turn) = self.turns.get_mut(s.index) {
            turn.frames_sent += 1;
            turn.bytes_sent += payload.len() as u64;
            turn.audio_ms_sent = s.next_pts * 1000 / self.config.input_codec.sample_rate() as u64;
        }
        self.transmit(Transmit::Write { stream, bytes });
        Ok(())
    }

    /// Ends the open turn (stream FIN): in push-to-talk mode the server commits it. A turn the
    /// server stopped just ends (its stream is gone).
    pub fn end_turn(&mut self, now: Instant) {
        if let Some(s) = self.sending.take() {
            if let Some(turn) = self.turns.get_mut(s.index) {
                turn.ended_at = Some(now);
            }
            if let Some(k) = self.kept.iter_mut().find(|k| k.index == s.index) {
                k.ended = true;
            }
            if s.state == OpenTurnState::Sending {
                self.transmit(Transmit::Finish { stream: s.stream });
                self.remember_finished(s.stream, s.index);
            }
        }
    }

    /// Server-VAD mode: ask the server to commit what it has now.
    pub fn commit(&mut self) {
        self.send(ClientEvent::InputAudioBufferCommit {});
    }

    // ---- the agent's audio ----

    /// Bytes on a stream the server opened (the first call opens it).
    pub fn handle_stream_data(&mut self, now: Instant, stream: StreamId, bytes: &[u8]) {
        if self.refused.contains(&stream) {
            return; // refused: the server has been asked to stop; what is in flight is dropped
        }
        let entry = self.inbound.entry(stream).or_insert_with(|| Inbound {
            decoder: AudioStreamDecoder::default(),
            reply: None,
            last_pts: None,
        });
        entry.decoder.push(bytes);
        loop {
            let Some(Inbound { decoder, .. }) = self.inbound.get_mut(&stream) else {
                return;
            };
            match decoder.poll_item() {
                Ok(None) => return,
                Ok(Some(AudioItem::Header(kind, header))) => {
                    self.on_reply_header(now, stream, kind, header)
                }
                Ok(Some(AudioItem::Frame(frame))) => {
                    self.on_reply_frame(now, stream, frame.pts, frame.payload)
                }
                Err(e) => {
                    self.refuse(stream, e.code(), format!("agent audio stream: {e}"));
                    return;
                }
            }
        }
    }

    /// The server finished a response stream: play out what is buffered.
    pub fn handle_stream_fin(&mut self, _now: Instant, stream: StreamId) {
        self.refused.remove(&stream);
        if let Some(inbound) = self.inbound.remove(&stream)
            && inbound.decoder.pending() > 0
        {
            let msg = format!(
                "agent audio stream ends inside a frame or its header ({} bytes left)",
                inbound.decoder.pending()
            );
            self.problem(Some(ErrorCode::ProtocolViolation), msg);
        }
        if let Some(r) = self.reply_by_stream(stream) {
            r.playout.finish();
            r.ended = true;
        }
    }

    /// The server reset a response stream: cancelled (stop playing at once) or failed (play
    /// what arrived).
    pub fn handle_stream_reset(&mut self, now: Instant, stream: StreamId, code: u64) {
        self.refused.remove(&stream);
        self.inbound.remove(&stream);
        let Some(r) = self.reply_by_stream(stream) else {
            return;
        };
        r.ended = true;
        if let Some(i) = r.stats.interrupt.as_mut() {
            i.reset_at.get_or_insert(now);
        } else if Code::from_u32(code) == Some(Code::Cancelled) {
            r.playout.flush();
        } else {
            r.playout.finish();
        }
    }

    /// The server sent STOP_SENDING on one of our user-turn streams: it refused the turn. The
    /// open turn stops being written (its frames are dropped and counted until
    /// [`ClientSession::end_turn`]); a turn already finished is marked refused.
    pub fn handle_stream_stopped(&mut self, _now: Instant, stream: OutStream, code: u64) {
        let index = match self.sending.as_mut() {
            Some(open) if open.stream == stream => {
                if open.state == OpenTurnState::Stopped {
                    return;
                }
                open.state = OpenTurnState::Stopped;
                open.index
            }
            _ => match self.finished.remove(&stream) {
                Some(index) => index,
                None => return,
            },
        };
        let Some(turn) = self.turns.get_mut(index) else {
            return;
        };
        turn.stopped = Some(code);
        let item_id = turn.item_id.clone();
        self.kept.retain(|k| k.index != index);
        self.out
            .push_back(ClientOutput::TurnStopped { item_id, code });
    }

    /// Decoded samples of a [`ClientOutput::ReplyFrame`].
    pub fn push_reply_audio(&mut self, response_id: &str, pts: u32, samples: &[i16]) {
        if let Some(r) = self
            .replies
            .iter_mut()
            .find(|r| r.stats.response_id == response_id)
        {
            r.playout.push(pts as u64, samples);
            r.received_end = r.received_end.max(pts as u64 + samples.len() as u64);
        }
    }

    /// Renders one device quantum of agent audio into `out` (silence when nothing plays).
    pub fn render(&mut self, now: Instant, out: &mut [i16]) -> Rendered {
        let Some(r) = self.replies.last_mut() else {
            out.fill(0);
            return Rendered::default();
        };
        let before = r.playout.state();
        let rendered = r.playout.render(out);
        if let Some(i) = r.stats.interrupt.as_mut() {
            i.silenced_at.get_or_insert(now);
        }
        if rendered.audio > 0 {
            r.stats.first_audio_at.get_or_insert(now);
        }
        r.stats.played_ms = r.playout.played_ms();
        r.stats.underruns = r.playout.underruns();
        r.stats.stall_ms = r.playout.stall_ms();
        let after = r.playout.state();
        // Report at once when playback starts, stalls or ends, so the server's cursor estimate
        // never drifts through a state change; otherwise on the timer.
        if before != after && after != PlayoutState::Flushed {
            self.report(now);
        }
        rendered
    }

    /// Barge-in: silence at once (the next rendered quantum is silent), flush the buffer, stop
    /// the response stream and tell the server exactly how much the user heard. Returns the
    /// played position in ms, or `None` if no response was playing.
    pub fn interrupt(&mut self, now: Instant) -> Option<u64> {
        let r = self.replies.last_mut()?;
        if r.stats.interrupt.is_some()
            || matches!(
                r.playout.state(),
                PlayoutState::Finished | PlayoutState::Flushed
            )
        {
            return None;
        }
        r.playout.flush();
        let played_samples = r.playout.played_samples();
        let played_ms = r.playout.played_ms();
        let unplayed_bytes = r
            .frames
            .iter()
            .filter(|(pts, _)| *pts >= played_samples)
            .map(|(_, b)| b)
            .sum();
        r.stats.played_ms = played_ms;
        r.stats.interrupt = Some(InterruptStats {
            at: Some(now),
            played_ms,
            unplayed_bytes,
            ..Default::default()
        });
        let item_id = r.stats.item_id.clone();
        let stream = r.stream;
        let ended = r.ended;
        self.send(ClientEvent::ConversationItemTruncate {
            item_id,
            content_index: 0,
            audio_end_ms: played_ms,
        });
        if let (Some(stream), false) = (stream, ended) {
            self.transmit(Transmit::StopSending {
                stream,
                code: Code::Cancelled,
            });
        }
        Some(played_ms)
    }

    // ---- control ----

    /// Bytes received on the control stream.
    pub fn handle_control(&mut self, now: Instant, bytes: &[u8]) {
        self.events.push(bytes);
        while let Some(decoded) = self.events.poll_event() {
            let body = match decoded {
                DecodedEvent::Event(body) => body,
                DecodedEvent::Skipped(len) => {
                    let msg = format!("server event of {len} bytes skipped");
                    self.problem(Some(ErrorCode::EventTooLarge), msg);
                    continue;
                }
            };
            match event::parse::<ServerEvent>(&body, event::SERVER_EVENT_TYPES) {
                Ok(r) => self.on_event(now, r.event),
                // A newer server's event: note it and go on.
                Err((_, e)) => self.problem(Some(e.code()), format!("server event: {e}")),
            }
        }
    }

    /// The carrier is gone (the connection closed, or the server stopped answering). Stream
    /// state dies with it; the turns the server has not confirmed are kept, audio handed over
    /// meanwhile is kept with them, and playback goes on from the buffer. Call
    /// [`ClientSession::handle_reconnected`] when a new carrier is up.
    pub fn handle_disconnected(&mut self, _now: Instant) {
        self.link = LinkState::Down;
        self.out.retain(|o| !matches!(o, ClientOutput::Transmit(_)));
        self.inbound.clear();
        self.refused.clear();
        self.finished.clear();
        for r in &mut self.replies {
            r.stream = None;
        }
    }

    /// Whether the session can be resumed: the server gave a resume token.
    pub fn can_resume(&self) -> bool {
        self.resume_token.is_some()
    }

    /// A new carrier is up (the shell opened its control stream). With a resume token the
    /// session asks for itself back (`session.update` with `voq.resume`) and waits for
    /// `voq.session.resumed` before sending turns; without one (or after
    /// [`ClientOutput::ResumeRefused`]) it starts a new session and sends every unconfirmed turn
    /// from its start. Returns whether it is resuming.
    pub fn handle_reconnected(&mut self, now: Instant) -> bool {
        self.events = wire::EventDecoder::default();
        self.out.retain(|o| !matches!(o, ClientOutput::Transmit(_)));
        match self.resume_token.clone() {
            Some(token) => {
                let reply = self
                    .replies
                    .last()
                    .filter(|r| r.stats.status.is_none() && r.stats.interrupt.is_none())
                    .map(|r| event::ResumeReply {
                        response_id: r.stats.response_id.clone(),
                        from_pts: r.received_end,
                        played_ms: r.playout.played_ms(),
                    });
                // The resume request goes out before the carrier counts as up for anything else.
                self.link = LinkState::Up;
                self.send_session_update(Some(event::ResumeRequest {
                    token: event::Token(token),
                    reply,
                }));
                self.link = LinkState::Resuming;
                true
            }
            None => {
                self.link = LinkState::Up;
                self.session = None;
                self.send_session_update(None);
                self.end_replies_of_lost_session();
                self.send_kept(now, &[]);
                false
            }
        }
    }

    /// A new session replaces a lost one: the old session's replies will not go on (they play
    /// what arrived).
    fn end_replies_of_lost_session(&mut self) {
        for r in &mut self.replies {
            if !r.ended {
                r.ended = true;
                r.playout.finish();
                r.stats.status.get_or_insert(ResponseStatus::Failed);
            }
        }
    }

    /// The server took the session back: mark what it says it confirmed, send the rest of every
    /// kept turn, and let the reply go on (or end it, if the server has it no more).
    fn on_resumed(&mut self, now: Instant, state: &event::ResumedState) {
        self.link = LinkState::Up;
        for held in &state.turns {
            let Some(c) = held.committed else { continue };
            if let Some(index) = self.turns.iter().position(|t| t.item_id == held.item_id)
                && self.turns[index].frames_confirmed.is_none()
            {
                self.kept.retain(|k| k.index != index);
                let t = &mut self.turns[index];
                t.frames_confirmed = Some(c.frames);
                t.audio_ms_confirmed = Some(c.audio_ms);
                t.bytes_confirmed = Some(c.bytes);
                t.confirmed_at = Some(now);
            }
        }
        let resumed = state.reply.as_ref().map(|r| r.response_id.as_str());
        if let Some(r) = self.replies.last_mut()
            && !r.ended
            && r.stats.status.is_none()
            && Some(r.stats.response_id.as_str()) != resumed
        {
            // The server holds this reply no more: play what arrived. A `response.done` it
            // repeats (it knows how the reply ended) overrides the provisional status.
            r.ended = true;
            r.playout.finish();
            r.stats.status = Some(ResponseStatus::Failed);
        }
        self.send_kept(now, &state.turns);
        self.next_report.get_or_insert(now + self.report_interval);
    }

    /// Sends every kept turn again on a new stream, from the frame that starts at its held
    /// end (`held`: the server's list; a turn not in it from its start).
    fn send_kept(&mut self, _now: Instant, held: &[event::HeldTurn]) {
        let kept = std::mem::take(&mut self.kept);
        for k in &kept {
            let Some(item_id) = self.turns.get(k.index).map(|t| t.item_id.clone()) else {
                continue;
            };
            let from = held
                .iter()
                .find(|h| h.item_id == item_id && h.committed.is_none())
                .map_or(0, |h| h.held_pts);
            let stream = self.open_turn_stream(&item_id);
            for (pts, payload) in k.frames.iter().filter(|(pts, _)| *pts as u64 >= from) {
                let mut bytes = Vec::with_capacity(payload.len() + wire::FRAME_OVERHEAD);
                if wire::encode_frame(*pts, payload, &mut bytes).is_ok() {
                    self.transmit(Transmit::Write { stream, bytes });
                }
            }
            match self.sending.as_mut() {
                Some(open) if open.index == k.index => open.stream = stream,
                _ => {
                    if k.ended {
                        self.transmit(Transmit::Finish { stream });
                        self.remember_finished(stream, k.index);
                    }
                }
            }
        }
        self.kept = kept;
    }

    /// When [`ClientSession::handle_timeout`] is due next (the next playback report).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_report
    }

    /// Sends the periodic playback report when due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_report.is_some_and(|t| t <= now) {
            self.report(now);
        }
    }

    /// The next thing for the shell or the application to do.
    pub fn poll_output(&mut self) -> Option<ClientOutput> {
        self.out.pop_front()
    }

    // ---- what happened ----

    /// The session as the server described it (after `session.created`/`session.updated`).
    pub fn session(&self) -> Option<&event::SessionInfo> {
        self.session.as_ref()
    }

    /// Every user turn of the session, oldest first.
    pub fn turns(&self) -> &[TurnStats] {
        &self.turns
    }

    /// Every response of the session, oldest first.
    pub fn responses(&self) -> impl Iterator<Item = &ResponseStats> {
        self.replies.iter().map(|r| &r.stats)
    }

    /// The response being received or played, if any.
    pub fn current_response(&self) -> Option<&ResponseStats> {
        self.replies
            .last()
            .filter(|r| {
                !matches!(
                    r.playout.state(),
                    PlayoutState::Finished | PlayoutState::Flushed
                )
            })
            .map(|r| &r.stats)
    }

    /// Whether the latest response has been played (or flushed) to its end.
    pub fn playback_done(&self) -> bool {
        self.replies.last().is_some_and(|r| {
            r.ended
                && matches!(
                    r.playout.state(),
                    PlayoutState::Finished | PlayoutState::Flushed
                )
        })
    }

    /// Agent audio buffered ahead of the playback position, in ms.
    pub fn buffered_ms(&self) -> u64 {
        self.replies.last().map_or(0, |r| r.playout.buffered_ms())
    }
}

impl ClientSession {
    /// Opens a user-audio stream for `item_id` (its header written): a new turn, or the rest of
    /// a kept one after a resume.
    fn open_turn_stream(&mut self, item_id: &str) -> OutStream {
        let stream = OutStream(self.next_turn);
        self.next_turn += 1;
        let header = AudioHeader {
            item_id: item_id.into(),
            response_id: None,
            codec: self.config.input_codec.name().into(),
            sample_rate: self.config.input_codec.sample_rate(),
            frame_ms: FRAME_MS,
        };
        let mut bytes = Vec::new();
        wire::encode_header(StreamKind::UserAudio, &header, &mut bytes);
        self.transmit(Transmit::Open { stream, bytes });
        stream
    }

    fn transmit(&mut self, op: Transmit) {
        // Without a carrier nothing can be sent: what matters is kept (turns) and sent again
        // once the session is back; the rest (reports, a truncate) is moot by then.
        if self.link == LinkState::Up {
            self.out.push_back(ClientOutput::Transmit(op));
        }
    }

    fn send(&mut self, event: ClientEvent) {
        let mut bytes = Vec::new();
        if wire::encode_event(&event::to_json(&event), &mut bytes).is_ok() {
            self.transmit(Transmit::Control(bytes));
        }
    }

    /// Something the server sent that the session could not use: always the peer's doing.
    fn problem(&mut self, code: Option<ErrorCode>, message: String) {
        let code = code.unwrap_or(ErrorCode::ProtocolViolation);
        self.out
            .push_back(ClientOutput::Problem(Problem::peer(code, message)));
    }

    /// Keeps a finished turn's stream until the server has confirmed or stopped it; bounded,
    /// since a server that never answers must not grow a long call's bookkeeping.
    fn remember_finished(&mut self, stream: OutStream, index: usize) {
        const MAX_UNCONFIRMED: usize = 64;
        if self.finished.len() >= MAX_UNCONFIRMED {
            self.finished.pop_first();
        }
        self.finished.insert(stream, index);
    }

    fn reply_by_stream(&mut self, stream: StreamId) -> Option<&mut Reply> {
        self.replies.iter_mut().find(|r| r.stream == Some(stream))
    }

    fn reply(&mut self, response_id: &str) -> Option<&mut Reply> {
        self.replies
            .iter_mut()
            .find(|r| r.stats.response_id == response_id)
    }

    fn new_reply(&mut self, response_id: &str, item_id: &str, codec: Codec) -> &mut Reply {
        // One response plays at a time: a new one supersedes whatever is still playing.
        if let Some(old) = self.replies.last_mut()
            && !matches!(
                old.playout.state(),
                PlayoutState::Finished | PlayoutState::Flushed
            )
        {
            old.playout.flush();
        }
        self.replies.push(Reply {
            stats: ResponseStats {
                response_id: response_id.into(),
                item_id: item_id.into(),
                ..Default::default()
            },
            stream: None,
            codec,
            playout: Playout::new(codec.sample_rate(), self.config.start_threshold_ms),
            frames: Vec::new(),
            ended: false,
            received_end: 0,
        });
        let n = self.replies.len();
        &mut self.replies[n - 1]
    }

    /// Refuses a server stream: a problem blamed on the server, STOP_SENDING with `code`, and
    /// what still arrives on it is dropped. A response already on it plays what arrived.
    fn refuse(&mut self, stream: StreamId, code: Code, message: String) {
        self.problem(code.error_code(), message);
        self.transmit(Transmit::StopSending { stream, code });
        self.inbound.remove(&stream);
        if self.refused.len() >= MAX_REFUSED
            && let Some(oldest) = self.refused.first().copied()
        {
            self.refused.remove(&oldest);
        }
        self.refused.insert(stream);
        if let Some(r) = self.reply_by_stream(stream) {
            r.playout.finish();
            r.ended = true;
        }
    }

    fn on_reply_header(
        &mut self,
        now: Instant,
        stream: StreamId,
        kind: StreamKind,
        header: AudioHeader,
    ) {
        if kind != StreamKind::AgentAudio {
            let msg = "servers may only open agent audio streams".to_string();
            return self.refuse(stream, Code::StreamRefused, msg);
        }
        let codec = header.codec.parse::<Codec>();
        let (Ok(codec), Some(response_id)) = (codec, header.response_id.clone()) else {
            let msg = format!("refused server stream: bad header {header:?}");
            return self.refuse(stream, Code::BadHeader, msg);
        };
        if codec.sample_rate() != header.sample_rate {
            let msg = format!(
                "{} needs sample_rate {}, got {}",
                codec.name(),
                codec.sample_rate(),
                header.sample_rate
            );
            return self.refuse(stream, Code::BadHeader, msg);
        }
        if self.reply(&response_id).is_none() {
            self.new_reply(&response_id, &header.item_id, codec);
        }
        if let Some(r) = self.reply(&response_id) {
            r.stream = Some(stream);
            r.codec = codec;
        }
        if let Some(entry) = self.inbound.get_mut(&stream) {
            entry.reply = Some((response_id, codec));
        }
        self.next_report.get_or_insert(now + self.report_interval);
    }

    fn on_reply_frame(&mut self, now: Instant, stream: StreamId, pts: u32, payload: Vec<u8>) {
        let Some(inbound) = self.inbound.get_mut(&stream) else {
            return;
        };
        if inbound.last_pts.is_some_and(|last| pts <= last) {
            let msg = format!("frame pts {pts} is not after the previous frame's");
            return self.refuse(stream, Code::ProtocolViolation, msg);
        }
        inbound.last_pts = Some(pts);
        let Some((response_id, codec)) = inbound.reply.clone() else {
            return;
        };
        let Some(r) = self.reply(&response_id) else {
            return;
        };
        let wire_bytes = (payload.len() + wire::FRAME_OVERHEAD) as u64;
        r.stats.bytes_received += wire_bytes;
        r.stats.frames_received += 1;
        r.stats.first_frame_at.get_or_insert(now);
        if let Some(last) = r.stats.last_frame_at {
            r.stats.max_frame_gap = r
                .stats
                .max_frame_gap
                .max(now.saturating_duration_since(last));
        }
        r.stats.last_frame_at = Some(now);
        if let Some(i) = r.stats.interrupt.as_mut() {
            // In flight when the user interrupted: received, never played.
            i.unplayed_bytes += wire_bytes;
            return;
        }
        if matches!(
            r.playout.state(),
            PlayoutState::Finished | PlayoutState::Flushed
        ) {
            // A response that was superseded or has ended: counted, never played.
            return;
        }
        r.frames.push((pts as u64, wire_bytes));
        self.out.push_back(ClientOutput::ReplyFrame {
            response_id,
            codec,
            pts,
            payload,
        });
    }

    fn on_event(&mut self, now: Instant, event: ServerEvent) {
        match &event {
            ServerEvent::SessionCreated { session } | ServerEvent::SessionUpdated { session } => {
                self.report_interval =
                    Duration::from_millis(session.voq.played_report_interval_ms.max(10));
                if session.voq.resume_token.is_some() || self.link == LinkState::Resuming {
                    self.resume_token = session.voq.resume_token.clone();
                }
                self.session = Some(session.clone());
                if self.link == LinkState::Resuming
                    && matches!(event, ServerEvent::SessionCreated { .. })
                {
                    // A new session where the old one was asked back (a server that does not
                    // resume sessions): the old session's reply is over, and every kept turn
                    // goes to this one from its start.
                    self.link = LinkState::Up;
                    self.end_replies_of_lost_session();
                    self.send_kept(now, &[]);
                }
            }
            ServerEvent::VoqSessionResumed { session, voq } => {
                self.report_interval =
                    Duration::from_millis(session.voq.played_report_interval_ms.max(10));
                self.resume_token = session.voq.resume_token.clone();
                self.session = Some(session.clone());
                let voq = voq.as_ref().clone();
                self.on_resumed(now, &voq);
            }
            ServerEvent::Error { error }
                if self.link == LinkState::Resuming
                    && error.error_code() == Some(ErrorCode::Unauthorized) =>
            {
                // The server will not give the session back (the token expired, was used, or
                // is not this fleet's). The shell starts a new session; nothing said is lost.
                self.resume_token = None;
                self.out.push_back(ClientOutput::ResumeRefused {
                    message: error.message.clone(),
                });
            }
            ServerEvent::InputAudioBufferCommitted {
                item_id,
                voq:
                    event::VoqCommitted {
                        frames,
                        audio_ms,
                        bytes,
                    },
                ..
            } => {
                if let Some(index) = self.turns.iter().position(|t| &t.item_id == item_id) {
                    // Confirmed: the server will not stop this turn's stream any more.
                    self.finished.retain(|_, i| *i != index);
                    self.kept.retain(|k| k.index != index);
                    let t = &mut self.turns[index];
                    t.frames_confirmed = Some(*frames);
                    t.audio_ms_confirmed = Some(*audio_ms);
                    t.bytes_confirmed = Some(*bytes);
                    t.confirmed_at = Some(now);
                } else {
                    // Server VAD: the server names the items it cut from our stream.
                    self.turns.push(TurnStats {
                        item_id: item_id.clone(),
                        frames_confirmed: Some(*frames),
                        audio_ms_confirmed: Some(*audio_ms),
                        bytes_confirmed: Some(*bytes),
                        confirmed_at: Some(now),
                        ..Default::default()
                    });
                }
            }
            ServerEvent::ResponseCreated { response } if self.reply(&response.id).is_none() => {
                let codec = self.config.output_codec;
                self.new_reply(&response.id, &response.item_id, codec);
            }
            ServerEvent::ResponseDone { response } => {
                if let Some(r) = self.reply(&response.id) {
                    r.stats.status = Some(response.status);
                    if r.stream.is_none()
                        && !r.ended
                        && response.status != ResponseStatus::Completed
                    {
                        // Ended before its stream reached us (a stream reset before its header
                        // arrived is never seen): nothing more will come for it.
                        r.ended = true;
                        r.playout.finish();
                    }
                }
            }
            ServerEvent::ConversationItemTruncated {
                item_id,
                audio_end_ms,
                ..
            } => {
                if let Some(i) = self
                    .replies
                    .iter_mut()
                    .find(|r| &r.stats.item_id == item_id)
                    .and_then(|r| r.stats.interrupt.as_mut())
                {
                    i.truncated_audio_end_ms = Some(*audio_end_ms);
                    i.truncated_at = Some(now);
                }
            }
            _ => {}
        }
        self.out.push_back(ClientOutput::Event(event));
    }

    fn report(&mut self, now: Instant) {
        let Some(r) = self.replies.last() else {
            self.next_report = None;
            return;
        };
        let active = !matches!(
            r.playout.state(),
            PlayoutState::Finished | PlayoutState::Flushed
        );
        let event = ClientEvent::OutputAudioBufferPlayed {
            response_id: r.stats.response_id.clone(),
            played_ms: r.playout.played_ms(),
            buffered_ms: r.playout.buffered_ms(),
        };
        self.send(event);
        self.next_report = active.then(|| now + self.report_interval);
    }
}
