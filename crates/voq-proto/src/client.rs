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

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::error::Code;
use crate::event::{self, ClientEvent, ServerEvent, SessionUpdate, VoqSessionUpdate};
use crate::playout::{Playout, PlayoutState, Rendered};
use crate::server::{OutStream, StreamId};
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
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            input_codec: Codec::Pcm16,
            output_codec: Codec::Pcm16,
            start_threshold_ms: 100,
            send_ahead_ms: None,
            server_vad: false,
        }
    }
}

/// What the session asks its shell to do, or tells its application.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientOutput {
    /// Write these bytes on the control stream.
    Control(Vec<u8>),
    /// Open a unidirectional stream and write `bytes` on it.
    OpenStream {
        stream: OutStream,
        bytes: Vec<u8>,
    },
    StreamData {
        stream: OutStream,
        bytes: Vec<u8>,
    },
    FinishStream {
        stream: OutStream,
    },
    ResetStream {
        stream: OutStream,
        code: Code,
    },
    /// Ask the server to stop sending on its stream.
    StopSending {
        stream: StreamId,
        code: Code,
    },
    /// A frame of agent audio: decode it and call [`ClientSession::push_reply_audio`].
    ReplyFrame {
        response_id: String,
        codec: Codec,
        pts: u32,
        payload: Vec<u8>,
    },
    /// A server event, for the application.
    Event(ServerEvent),
    /// Something for the log (a server error, a malformed stream).
    Warning(String),
}

/// A user turn as the client sent it and the server confirmed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TurnStats {
    pub item_id: String,
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub audio_ms_sent: u64,
    /// From `input_audio_buffer.committed`.
    pub frames_confirmed: Option<u64>,
    pub audio_ms_confirmed: Option<u64>,
    pub bytes_confirmed: Option<u64>,
    pub ended_at: Option<Instant>,
    pub confirmed_at: Option<Instant>,
}

/// A response as the client received and played it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseStats {
    pub response_id: String,
    pub item_id: String,
    pub bytes_received: u64,
    pub frames_received: u64,
    pub first_frame_at: Option<Instant>,
    pub first_audio_at: Option<Instant>,
    pub played_ms: u64,
    pub underruns: u32,
    pub stall_ms: u64,
    /// `completed`, `cancelled` or `failed`, from `response.done`.
    pub status: Option<String>,
    pub interrupt: Option<InterruptStats>,
}

/// A barge-in and what came of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterruptStats {
    pub at: Option<Instant>,
    /// The user's position in the agent's speech when the client silenced it.
    pub played_ms: u64,
    /// When the first silent quantum was rendered.
    pub silenced_at: Option<Instant>,
    /// Bytes of agent audio received (before or after the interrupt) and never played.
    pub unplayed_bytes: u64,
    /// `audio_end_ms` of the server's `conversation.item.truncated`.
    pub truncated_audio_end_ms: Option<u64>,
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
}

#[derive(Debug)]
struct Sending {
    stream: OutStream,
    next_pts: u64,
    index: usize,
}

/// One voq/1 session, client side.
#[derive(Debug)]
pub struct ClientSession {
    config: ClientConfig,
    events: wire::EventDecoder,
    inbound: BTreeMap<StreamId, (AudioStreamDecoder, Option<(String, Codec)>)>,
    session: Option<event::SessionInfo>,
    report_interval: Duration,
    next_report: Option<Instant>,
    turns: Vec<TurnStats>,
    sending: Option<Sending>,
    replies: Vec<Reply>,
    next_turn: u64,
    out: VecDeque<ClientOutput>,
}

impl ClientSession {
    /// A session that asks for `config`'s codecs and modes in its first event.
    pub fn new(config: ClientConfig, _now: Instant) -> Self {
        let mut s = Self {
            config,
            events: wire::EventDecoder::default(),
            inbound: BTreeMap::new(),
            session: None,
            report_interval: Duration::from_millis(100),
            next_report: None,
            turns: Vec::new(),
            sending: None,
            replies: Vec::new(),
            next_turn: 1,
            out: VecDeque::new(),
        };
        let update = SessionUpdate {
            input_audio_format: Some(s.config.input_codec.name().into()),
            output_audio_format: Some(s.config.output_codec.name().into()),
            turn_detection: Some(if s.config.server_vad {
                serde_json::json!({"type": "server_vad"})
            } else {
                serde_json::Value::Null
            }),
            voq: s.config.send_ahead_ms.map(|ms| VoqSessionUpdate {
                send_ahead_ms: Some(ms),
            }),
        };
        s.send(ClientEvent::SessionUpdate { session: update });
        s
    }

    // ---- the user's audio ----

    /// Starts a user turn; returns its item id. A turn still open is ended first.
    pub fn start_turn(&mut self, now: Instant) -> String {
        if self.sending.is_some() {
            self.end_turn(now);
        }
        let index = self.turns.len();
        let item_id = format!("item_c{}", self.next_turn);
        let stream = OutStream(self.next_turn);
        self.next_turn += 1;
        let header = AudioHeader {
            item_id: item_id.clone(),
            response_id: None,
            codec: self.config.input_codec.name().into(),
            sample_rate: self.config.input_codec.sample_rate(),
            frame_ms: FRAME_MS,
        };
        let mut bytes = Vec::new();
        wire::encode_header(StreamKind::UserAudio, &header, &mut bytes);
        self.out
            .push_back(ClientOutput::OpenStream { stream, bytes });
        self.turns.push(TurnStats {
            item_id: item_id.clone(),
            ..Default::default()
        });
        self.sending = Some(Sending {
            stream,
            next_pts: 0,
            index,
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
        let mut bytes = Vec::with_capacity(payload.len() + wire::FRAME_OVERHEAD);
        wire::encode_frame(s.next_pts as u32, payload, &mut bytes)?;
        s.next_pts += samples as u64;
        let turn = &mut self.turns[s.index];
        turn.frames_sent += 1;
        turn.bytes_sent += payload.len() as u64;
        turn.audio_ms_sent = s.next_pts * 1000 / self.config.input_codec.sample_rate() as u64;
        self.out.push_back(ClientOutput::StreamData {
            stream: s.stream,
            bytes,
        });
        Ok(())
    }

    /// Ends the open turn (stream FIN): in push-to-talk mode the server commits it.
    pub fn end_turn(&mut self, now: Instant) {
        if let Some(s) = self.sending.take() {
            self.turns[s.index].ended_at = Some(now);
            self.out
                .push_back(ClientOutput::FinishStream { stream: s.stream });
        }
    }

    /// Server-VAD mode: ask the server to commit what it has now.
    pub fn commit(&mut self) {
        self.send(ClientEvent::InputAudioBufferCommit {});
    }

    // ---- the agent's audio ----

    /// Bytes on a stream the server opened (the first call opens it).
    pub fn handle_stream_data(&mut self, now: Instant, stream: StreamId, bytes: &[u8]) {
        let entry = self
            .inbound
            .entry(stream)
            .or_insert_with(|| (AudioStreamDecoder::default(), None));
        entry.0.push(bytes);
        loop {
            let Some((decoder, _)) = self.inbound.get_mut(&stream) else {
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
                    self.out
                        .push_back(ClientOutput::Warning(format!("agent audio stream: {e}")));
                    self.out.push_back(ClientOutput::StopSending {
                        stream,
                        code: e.code(),
                    });
                    if let Some(r) = self.reply_by_stream(stream) {
                        r.playout.finish();
                        r.ended = true;
                    }
                    return;
                }
            }
        }
    }

    /// The server finished a response stream: play out what is buffered.
    pub fn handle_stream_fin(&mut self, _now: Instant, stream: StreamId) {
        self.inbound.remove(&stream);
        if let Some(r) = self.reply_by_stream(stream) {
            r.playout.finish();
            r.ended = true;
        }
    }

    /// The server reset a response stream: cancelled (stop playing at once) or failed (play
    /// what arrived).
    pub fn handle_stream_reset(&mut self, now: Instant, stream: StreamId, code: u64) {
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

    /// Decoded samples of a [`ClientOutput::ReplyFrame`].
    pub fn push_reply_audio(&mut self, response_id: &str, pts: u32, samples: &[i16]) {
        if let Some(r) = self
            .replies
            .iter_mut()
            .find(|r| r.stats.response_id == response_id)
        {
            r.playout.push(pts as u64, samples);
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
            self.out.push_back(ClientOutput::StopSending {
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
                    self.out.push_back(ClientOutput::Warning(format!(
                        "server event of {len} bytes skipped"
                    )));
                    continue;
                }
            };
            match event::parse::<ServerEvent>(&body, event::SERVER_EVENT_TYPES) {
                Ok(r) => self.on_event(now, r.event),
                // A newer server's event: note it and go on.
                Err((_, e)) => self
                    .out
                    .push_back(ClientOutput::Warning(format!("server event: {e}"))),
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_report
    }

    /// Sends the periodic playback report when due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_report.is_some_and(|t| t <= now) {
            self.report(now);
        }
    }

    pub fn poll_output(&mut self) -> Option<ClientOutput> {
        self.out.pop_front()
    }

    // ---- what happened ----

    /// The session as the server described it (after `session.created`/`session.updated`).
    pub fn session(&self) -> Option<&event::SessionInfo> {
        self.session.as_ref()
    }

    pub fn turns(&self) -> &[TurnStats] {
        &self.turns
    }

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

    pub fn buffered_ms(&self) -> u64 {
        self.replies.last().map_or(0, |r| r.playout.buffered_ms())
    }
}

impl ClientSession {
    fn send(&mut self, event: ClientEvent) {
        let mut bytes = Vec::new();
        if wire::encode_event(&event::to_json(&event), &mut bytes).is_ok() {
            self.out.push_back(ClientOutput::Control(bytes));
        }
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
        });
        let n = self.replies.len();
        &mut self.replies[n - 1]
    }

    fn on_reply_header(
        &mut self,
        now: Instant,
        stream: StreamId,
        kind: StreamKind,
        header: AudioHeader,
    ) {
        let codec = header.codec.parse::<Codec>();
        let (Ok(codec), StreamKind::AgentAudio, Some(response_id)) =
            (codec, kind, header.response_id.clone())
        else {
            self.out.push_back(ClientOutput::Warning(format!(
                "refused server stream: bad header {header:?}"
            )));
            self.out.push_back(ClientOutput::StopSending {
                stream,
                code: Code::BadHeader,
            });
            self.inbound.remove(&stream);
            return;
        };
        if self.reply(&response_id).is_none() {
            self.new_reply(&response_id, &header.item_id, codec);
        }
        if let Some(r) = self.reply(&response_id) {
            r.stream = Some(stream);
            r.codec = codec;
        }
        if let Some(entry) = self.inbound.get_mut(&stream) {
            entry.1 = Some((response_id, codec));
        }
        self.next_report.get_or_insert(now + self.report_interval);
    }

    fn on_reply_frame(&mut self, now: Instant, stream: StreamId, pts: u32, payload: Vec<u8>) {
        let Some((response_id, codec)) = self.inbound.get(&stream).and_then(|(_, r)| r.clone())
        else {
            return;
        };
        let Some(r) = self.reply(&response_id) else {
            return;
        };
        let wire_bytes = (payload.len() + wire::FRAME_OVERHEAD) as u64;
        r.stats.bytes_received += wire_bytes;
        r.stats.frames_received += 1;
        r.stats.first_frame_at.get_or_insert(now);
        if let Some(i) = r.stats.interrupt.as_mut() {
            // In flight when the user interrupted: received, never played.
            i.unplayed_bytes += wire_bytes;
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
                self.session = Some(session.clone());
            }
            ServerEvent::InputAudioBufferCommitted {
                item_id,
                frames,
                audio_ms,
                bytes,
                ..
            } => {
                if let Some(t) = self.turns.iter_mut().find(|t| &t.item_id == item_id) {
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
                    r.stats.status = Some(response.status.clone());
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
            ServerEvent::Error { error } => {
                self.out.push_back(ClientOutput::Warning(format!(
                    "server error {}: {}",
                    error.code, error.message
                )));
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
