//! Control-stream events. Names and fields follow the OpenAI Realtime API wherever it has one, so
//! developers who know it feel at home; voq additions are marked as extensions in
//! `docs/PROTOCOL.md` (`output_audio_buffer.played`, the `voq` objects, frame/ms counts).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::error::{ErrorCode, ErrorType};

/// Application protocol version carried in `session.created`.
pub const PROTOCOL_VERSION: &str = "voq/1";

/// Events a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
#[non_exhaustive]
pub enum ClientEvent {
    /// Change the session's audio formats, turn detection or send-ahead lead; answered by
    /// `session.updated` or an `error` (`invalid_value`).
    #[serde(rename = "session.update")]
    SessionUpdate {
        /// The fields to change; absent ones keep their value.
        session: SessionUpdate,
    },
    /// Server-VAD mode: end the current user turn now. Push-to-talk ends a turn with stream FIN.
    #[serde(rename = "input_audio_buffer.commit")]
    InputAudioBufferCommit {},
    /// Discard the uncommitted user audio.
    #[serde(rename = "input_audio_buffer.clear")]
    InputAudioBufferClear {},
    /// Ask for a response now (when automatic responses are off, or to respond again).
    #[serde(rename = "response.create")]
    ResponseCreate {},
    /// Stop the response being generated; the server resets its audio stream.
    #[serde(rename = "response.cancel")]
    ResponseCancel {
        /// The response to stop; absent means the one in progress. Naming any other is an
        /// `error` (`response_not_found`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        response_id: Option<String>,
    },
    /// Barge-in: the user heard `audio_end_ms` of the assistant item and no more.
    #[serde(rename = "conversation.item.truncate")]
    ConversationItemTruncate {
        /// The assistant item being played ([`ResponseInfo::item_id`]).
        item_id: String,
        /// The Realtime API's content part index; voq does not check it and echoes it in
        /// `conversation.item.truncated`.
        content_index: u32,
        /// Audio of the item played, in ms from its start; more than the server sent is an
        /// `error` (`invalid_value`).
        audio_end_ms: u64,
    },
    /// voq extension: the client's playback cursor in a response.
    #[serde(rename = "output_audio_buffer.played")]
    OutputAudioBufferPlayed {
        /// The response being played; reports for a response that has ended are ignored.
        response_id: String,
        /// Audio of the response played so far, in ms from its start.
        played_ms: u64,
        /// Audio received but not yet played, in ms: the server's estimate of the cursor never
        /// runs further than this past `played_ms`.
        buffered_ms: u64,
    },
    /// voq extension: answered at once by `voq.pong` with the same `id`, for clients whose
    /// carrier exposes no RTT (a browser's WebTransport has no `getStats()` in Chromium 156).
    #[serde(rename = "voq.ping")]
    VoqPing {
        /// Any number the client chooses; `voq.pong` carries it back.
        id: u64,
    },
}

/// `session.update` body. Every field is optional: absent fields keep their value. Unknown
/// Realtime fields (instructions, voice, tools, …) are accepted and ignored.
///
/// On the wire this is the Realtime API's GA session object: `type: "realtime"`,
/// `audio.input.format`, `audio.output.format` (`{"type":"audio/pcm","rate":24000}`, or voq's
/// `{"type":"audio/opus"}`), `audio.input.turn_detection`. The beta spellings
/// (`input_audio_format: "pcm16"`, `output_audio_format`, top-level `turn_detection`) are still
/// accepted; where both are given, the GA field wins. voq serializes the GA shape only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(into = "ga::SessionUpdate", from = "ga::SessionUpdate")]
pub struct SessionUpdate {
    /// The session `type` as sent: `realtime` (or absent) is the only one voq runs.
    pub session_type: Option<String>,
    /// Codec of user audio, as a codec name (`pcm16`, `opus`) or, for a format voq does not
    /// run, a description of it (the server answers `invalid_value`).
    pub input_audio_format: Option<String>,
    /// Codec of agent audio, as [`SessionUpdate::input_audio_format`].
    pub output_audio_format: Option<String>,
    /// `null` turns server VAD off (push-to-talk); `{"type":"server_vad", …}` turns it on.
    /// Absent leaves it unchanged.
    pub turn_detection: Option<Value>,
    /// voq extension: the `voq` object (`send_ahead_ms`).
    pub voq: Option<VoqSessionUpdate>,
}

/// voq extension fields of `session.update`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoqSessionUpdate {
    /// How far ahead of the client's playback the server may send agent audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_ahead_ms: Option<u64>,
    /// The session token (a JWT), when the carrier did not carry one already: it counts only in
    /// the session's first event, which a server with authentication on reads before anything
    /// else (docs/PROTOCOL.md, "Authentication"). Never echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Token>,
    /// Resume a session this client lost (docs/PROTOCOL.md, "Resuming a session"): counts only
    /// in the first event of a connection, like `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumeRequest>,
}

/// `session.voq.resume` of a connection's first `session.update`: the session to take back and
/// where the client stands in the reply it was receiving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeRequest {
    /// The resume token of the session's latest `session.created` / `voq.session.resumed`.
    pub token: Token,
    /// The reply the client was receiving when the connection broke, if it has not all of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<ResumeReply>,
}

/// Where the client stands in a reply: it holds every sample before `from_pts` and wants the
/// rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeReply {
    /// The response.
    pub response_id: String,
    /// The first sample the client does not hold (24 kHz samples from the response's start).
    pub from_pts: u64,
    /// The client's playback position in the reply, in ms: where the server's send-ahead
    /// cursor starts on the new connection.
    #[serde(default)]
    pub played_ms: u64,
}

/// What a resumed session holds, in `voq.session.resumed`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumedState {
    /// User turns of the session that the server holds audio of: open turns (send the rest
    /// from `held_pts`) and turns committed lately (with their `committed` counts: the
    /// confirmation the client may have missed).
    pub turns: Vec<HeldTurn>,
    /// The reply that goes on, if any: its audio comes on a new agent-audio stream for the same
    /// response, from `from_pts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<ResumedReply>,
}

/// A user turn as the resumed session holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldTurn {
    /// The turn's item id (its stream header's).
    pub item_id: String,
    /// The end of the audio held, in samples: the client sends the turn again from the first
    /// frame that starts at or after it, on a new stream with the same item id.
    pub held_pts: u64,
    /// The turn was committed: what `input_audio_buffer.committed` said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed: Option<VoqCommitted>,
}

/// The reply that goes on after a resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumedReply {
    /// The response.
    pub response_id: String,
    /// Its assistant item.
    pub item_id: String,
    /// The first sample the new stream carries.
    pub from_pts: u64,
}

/// A bearer token (a JWT). Its `Debug` never shows it: debug output ends up in logs, and whoever
/// reads a token can use it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(pub String);

impl Token {
    /// The token itself.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token(<{} bytes>)", self.0.len())
    }
}

/// Keeps `null` distinct from "absent" (absent fields never reach this function).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Events a server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
#[non_exhaustive]
pub enum ServerEvent {
    /// The first event of every session, sent when the control stream opens.
    #[serde(rename = "session.created")]
    SessionCreated {
        /// The settings the session starts with.
        session: SessionInfo,
    },
    /// Answers a `session.update` that was applied.
    #[serde(rename = "session.updated")]
    SessionUpdated {
        /// Every setting after the update, not only the changed ones.
        session: SessionInfo,
    },
    /// Server VAD: the user started speaking.
    #[serde(rename = "input_audio_buffer.speech_started")]
    SpeechStarted {
        /// The user item this speech will be committed as.
        item_id: String,
        /// Where speech starts, in ms from the start of the user-audio stream.
        audio_start_ms: u64,
    },
    /// Server VAD: the user stopped speaking; `input_audio_buffer.committed` follows.
    #[serde(rename = "input_audio_buffer.speech_stopped")]
    SpeechStopped {
        /// The user item of `input_audio_buffer.speech_started`.
        item_id: String,
        /// Where speech stops, in ms from the start of the user-audio stream.
        audio_end_ms: u64,
    },
    /// The server holds the whole user turn. `voq` (frames, ms and bytes held) is a voq
    /// extension: the client compares it with what it sent.
    #[serde(rename = "input_audio_buffer.committed")]
    InputAudioBufferCommitted {
        /// The user item: push-to-talk, the `item_id` of the turn's stream header; server VAD,
        /// the item of `input_audio_buffer.speech_started`.
        item_id: String,
        /// The user item committed before this one (`null` for the session's first).
        #[serde(default)]
        previous_item_id: Option<String>,
        /// voq extension: what the server holds of the turn.
        voq: VoqCommitted,
    },
    /// Answers `input_audio_buffer.clear`: the open user turns were stopped and discarded.
    #[serde(rename = "input_audio_buffer.cleared")]
    InputAudioBufferCleared {},
    /// A response started; its agent-audio stream follows.
    #[serde(rename = "response.created")]
    ResponseCreated {
        /// The response, with `status` `in_progress`.
        response: ResponseInfo,
    },
    /// A response ended: its audio stream was finished (`completed`) or reset.
    #[serde(rename = "response.done")]
    ResponseDone {
        /// The response, with how it ended and (voq extension) what was sent.
        response: ResponseInfo,
    },
    /// What the agent is saying, as text, as it is generated (a model's audio transcript; voq's
    /// built-in agents have none). Ahead of the audio, which plays by timestamp.
    #[serde(rename = "response.output_audio_transcript.delta")]
    ResponseOutputAudioTranscriptDelta {
        /// The response.
        response_id: String,
        /// Its assistant item.
        item_id: String,
        /// Always 0: a voq response has one output item.
        output_index: u32,
        /// Always 0: its one audio content part.
        content_index: u32,
        /// The next piece of text.
        delta: String,
    },
    /// The response's whole transcript, when it ends (before `response.done`).
    #[serde(rename = "response.output_audio_transcript.done")]
    ResponseOutputAudioTranscriptDone {
        /// The response.
        response_id: String,
        /// Its assistant item.
        item_id: String,
        /// Always 0.
        output_index: u32,
        /// Always 0.
        content_index: u32,
        /// Everything the deltas said (at most [`crate::server::MAX_TRANSCRIPT`] bytes).
        transcript: String,
    },
    /// Confirms `conversation.item.truncate`, after the response was stopped.
    #[serde(rename = "conversation.item.truncated")]
    ConversationItemTruncated {
        /// The assistant item truncated.
        item_id: String,
        /// As in the request.
        content_index: u32,
        /// Where the item now ends, in ms from its start (as in the request).
        audio_end_ms: u64,
    },
    /// Something went wrong; the session goes on (`going_away`: finish up and reconnect).
    #[serde(rename = "error")]
    Error {
        /// What went wrong, and the client event it is about.
        error: ErrorInfo,
    },
    /// voq extension: the session of a `session.update` with `voq.resume` was taken back
    /// (instead of `session.created`): same id and conversation, a new resume token, and what
    /// the server holds.
    #[serde(rename = "voq.session.resumed")]
    VoqSessionResumed {
        /// The session's settings, as `session.created` has them.
        session: SessionInfo,
        /// What the server holds of the session's turns and reply.
        voq: Box<ResumedState>,
    },
    /// voq extension: the answer to `voq.ping`.
    #[serde(rename = "voq.pong")]
    VoqPong {
        /// The `id` of the `voq.ping` this answers.
        id: u64,
    },
}

/// voq extension of `input_audio_buffer.committed`: what the server holds of the turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoqCommitted {
    /// Audio frames received in the turn.
    pub frames: u64,
    /// Audio held, in ms (Opus counts whole 20 ms frames).
    pub audio_ms: u64,
    /// Codec payload bytes received (frame headers not counted).
    pub bytes: u64,
}

/// The session as the server runs it. On the wire this is the Realtime API's GA session object
/// (`type: "realtime"`, formats under `audio.input` / `audio.output`, turn detection under
/// `audio.input`), plus `id` and the `voq` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "ga::Session", try_from = "ga::Session")]
pub struct SessionInfo {
    /// The session's id, chosen by the server.
    pub id: String,
    /// Codec of user audio, by its codec name (`pcm16` or `opus`).
    pub input_audio_format: String,
    /// Codec of agent audio, by its codec name (`pcm16` or `opus`).
    pub output_audio_format: String,
    /// `null` for push-to-talk, `{"type":"server_vad", …}` with server VAD.
    pub turn_detection: Option<Value>,
    /// voq extension: the `voq` object.
    pub voq: VoqSessionInfo,
}

/// voq extension fields of the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoqSessionInfo {
    /// The application protocol, [`PROTOCOL_VERSION`].
    pub version: String,
    /// Configured send-ahead lead.
    pub send_ahead_ms: u64,
    /// How often the client should send `output_audio_buffer.played` while playing.
    pub played_report_interval_ms: u64,
    /// The carrier the session runs on (`quic`, `webtransport`, `ws`).
    pub transport: String,
    /// The server's id in its fleet (QUIC-LB server id, hex), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
    /// A token to take the session back on a new connection, to any server of the fleet,
    /// when this one is lost (docs/PROTOCOL.md, "Resuming a session"); present when the server
    /// keeps sessions in a store. Each one works once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_token: Option<String>,
}

/// Where a response is: `in_progress` in `response.created`, how it ended in `response.done`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseStatus {
    /// Being generated and sent.
    InProgress,
    /// All of the agent's audio was sent.
    Completed,
    /// Stopped early: barge-in, `response.cancel`, a newer response, or the session ended.
    Cancelled,
    /// The agent failed; what was sent before stands.
    Failed,
}

impl ResponseStatus {
    /// The string on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }
}

impl std::fmt::Display for ResponseStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A response and, in `response.done`, how it ended. On the wire this is the Realtime API's GA
/// response object: `object: "realtime.response"`, and the assistant item as the one entry of
/// `output` (`{"type":"message","role":"assistant","id":ITEM,…}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "ga::Response", try_from = "ga::Response")]
pub struct ResponseInfo {
    /// The response's id, chosen by the server; also the `response_id` of its agent-audio
    /// stream header.
    pub id: String,
    /// `in_progress` in `response.created`; how it ended in `response.done`.
    pub status: ResponseStatus,
    /// The assistant item whose audio this response carries.
    pub item_id: String,
    /// voq extension: audio generated and sent, filled in `response.done`.
    pub voq: Option<VoqResponseStats>,
}

/// voq extension: what a response produced and sent (`response.voq` in `response.done`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoqResponseStats {
    /// Audio the agent produced for the response, in ms.
    pub audio_ms_generated: u64,
    /// Audio written to the agent-audio stream, in ms (up to the end of the last frame sent).
    pub audio_ms_sent: u64,
    /// Bytes of audio frames written, 6-byte frame headers included (stream header not).
    pub bytes_sent: u64,
    /// Audio frames written.
    pub frames_sent: u64,
}

/// The body of an `error` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// `invalid_request_error` for what the client sent, `server_error` for our own failures.
    #[serde(rename = "type")]
    pub kind: String,
    /// What went wrong, as an [`ErrorCode`] string (`docs/PROTOCOL.md`); see
    /// [`ErrorInfo::error_code`].
    pub code: String,
    /// What went wrong, in words for people: do not match on it.
    pub message: String,
    /// The `event_id` of the client event this error is about, if it carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

impl ErrorInfo {
    /// An error with `code`, typed by [`ErrorCode::error_type`].
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            kind: code.error_type().as_str().into(),
            code: code.as_str().into(),
            message: message.into(),
            event_id: None,
        }
    }

    /// The code, if this version of voq knows it (a newer server may send others).
    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::parse(&self.code)
    }

    /// The type, if known.
    pub fn error_type(&self) -> Option<ErrorType> {
        ErrorType::ALL.into_iter().find(|t| t.as_str() == self.kind)
    }
}

/// The Realtime format object of a codec: `{"type":"audio/pcm","rate":24000}` for pcm16 (as in the
/// Realtime API), `{"type":"audio/opus","rate":24000}` for Opus (a voq extension).
pub fn audio_format(codec_name: &str) -> Value {
    let kind = match codec_name {
        "pcm16" => "audio/pcm",
        "opus" => "audio/opus",
        other => other,
    };
    serde_json::json!({ "type": kind, "rate": crate::SAMPLE_RATE })
}

/// The codec name a format names: a Realtime format object (`{"type":"audio/pcm"}` at 24 kHz or
/// with no rate → `pcm16`; `{"type":"audio/opus"}` → `opus`) or a beta string (`"pcm16"`, taken
/// as it is). A format voq does not run comes back as a description for the error message
/// (`audio/pcmu`, `audio/pcm at 16000 Hz`), which no codec name matches.
pub fn codec_name_of_format(format: &Value) -> String {
    match format {
        Value::String(name) => name.clone(),
        Value::Object(o) => {
            let kind = o.get("type").and_then(Value::as_str).unwrap_or("(no type)");
            let rate = o.get("rate");
            let rate_ok = match rate {
                None | Some(Value::Null) => true,
                Some(r) => r.as_u64() == Some(crate::SAMPLE_RATE as u64),
            };
            match (kind, rate_ok) {
                ("audio/pcm", true) => "pcm16".into(),
                ("audio/opus", true) => "opus".into(),
                ("audio/pcm" | "audio/opus", false) => format!(
                    "{kind} at {} Hz",
                    rate.map(Value::to_string).unwrap_or_default()
                ),
                (other, _) => other.into(),
            }
        }
        other => other.to_string(),
    }
}

/// The Realtime GA wire shapes of the session and response objects. The Rust types above keep a
/// flat, voq-shaped API; these convert to and from what the Realtime API's GA types describe.
mod ga {
    use super::*;

    /// Keeps `null` distinct from "absent", as [`super::present`].
    fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
        super::present(d)
    }

    #[derive(Serialize, Deserialize)]
    pub(super) struct Session {
        #[serde(rename = "type")]
        kind: String,
        id: String,
        audio: SessionAudio,
        voq: VoqSessionInfo,
    }

    #[derive(Serialize, Deserialize)]
    struct SessionAudio {
        input: SessionAudioInput,
        output: SessionAudioOutput,
    }

    #[derive(Serialize, Deserialize)]
    struct SessionAudioInput {
        format: Value,
        turn_detection: Option<Value>,
    }

    #[derive(Serialize, Deserialize)]
    struct SessionAudioOutput {
        format: Value,
    }

    impl From<SessionInfo> for Session {
        fn from(s: SessionInfo) -> Self {
            Self {
                kind: "realtime".into(),
                id: s.id,
                audio: SessionAudio {
                    input: SessionAudioInput {
                        format: audio_format(&s.input_audio_format),
                        turn_detection: s.turn_detection,
                    },
                    output: SessionAudioOutput {
                        format: audio_format(&s.output_audio_format),
                    },
                },
                voq: s.voq,
            }
        }
    }

    impl TryFrom<Session> for SessionInfo {
        type Error = String;

        fn try_from(s: Session) -> Result<Self, String> {
            if s.kind != "realtime" {
                return Err(format!(
                    "session type \"{}\" (expected \"realtime\")",
                    s.kind
                ));
            }
            Ok(Self {
                id: s.id,
                input_audio_format: codec_name_of_format(&s.audio.input.format),
                output_audio_format: codec_name_of_format(&s.audio.output.format),
                turn_detection: s.audio.input.turn_detection,
                voq: s.voq,
            })
        }
    }

    #[derive(Serialize, Deserialize)]
    pub(super) struct SessionUpdate {
        #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
        kind: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audio: Option<UpdateAudio>,
        /// Beta spelling, read only.
        #[serde(default, skip_serializing)]
        input_audio_format: Option<Value>,
        /// Beta spelling, read only.
        #[serde(default, skip_serializing)]
        output_audio_format: Option<Value>,
        /// Beta spelling, read only.
        #[serde(default, deserialize_with = "present", skip_serializing)]
        turn_detection: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        voq: Option<VoqSessionUpdate>,
    }

    #[derive(Default, Serialize, Deserialize)]
    struct UpdateAudio {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<UpdateAudioInput>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<UpdateAudioOutput>,
    }

    #[derive(Default, Serialize, Deserialize)]
    struct UpdateAudioInput {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        format: Option<Value>,
        #[serde(
            default,
            deserialize_with = "present",
            skip_serializing_if = "Option::is_none"
        )]
        turn_detection: Option<Value>,
    }

    #[derive(Default, Serialize, Deserialize)]
    struct UpdateAudioOutput {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        format: Option<Value>,
    }

    impl From<super::SessionUpdate> for SessionUpdate {
        fn from(u: super::SessionUpdate) -> Self {
            let input = UpdateAudioInput {
                format: u.input_audio_format.as_deref().map(audio_format),
                turn_detection: u.turn_detection,
            };
            let output = UpdateAudioOutput {
                format: u.output_audio_format.as_deref().map(audio_format),
            };
            let input = (input.format.is_some() || input.turn_detection.is_some()).then_some(input);
            let output = output.format.is_some().then_some(output);
            Self {
                kind: Some(u.session_type.unwrap_or_else(|| "realtime".into())),
                audio: (input.is_some() || output.is_some())
                    .then_some(UpdateAudio { input, output }),
                input_audio_format: None,
                output_audio_format: None,
                turn_detection: None,
                voq: u.voq,
            }
        }
    }

    impl From<SessionUpdate> for super::SessionUpdate {
        fn from(u: SessionUpdate) -> Self {
            let audio = u.audio.unwrap_or_default();
            let input = audio.input.unwrap_or_default();
            let output = audio.output.unwrap_or_default();
            Self {
                session_type: u.kind,
                input_audio_format: input
                    .format
                    .or(u.input_audio_format)
                    .map(|f| codec_name_of_format(&f)),
                output_audio_format: output
                    .format
                    .or(u.output_audio_format)
                    .map(|f| codec_name_of_format(&f)),
                turn_detection: input.turn_detection.or(u.turn_detection),
                voq: u.voq,
            }
        }
    }

    #[derive(Serialize, Deserialize)]
    pub(super) struct Response {
        object: String,
        id: String,
        status: ResponseStatus,
        output_modalities: Vec<String>,
        output: Vec<OutputItem>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        voq: Option<VoqResponseStats>,
    }

    #[derive(Serialize, Deserialize)]
    struct OutputItem {
        id: String,
        #[serde(rename = "type")]
        kind: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        object: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<String>,
        #[serde(default)]
        content: Vec<Value>,
    }

    impl From<ResponseInfo> for Response {
        fn from(r: ResponseInfo) -> Self {
            let item_status = match r.status {
                ResponseStatus::InProgress => "in_progress",
                ResponseStatus::Completed => "completed",
                ResponseStatus::Cancelled | ResponseStatus::Failed => "incomplete",
            };
            Self {
                object: "realtime.response".into(),
                id: r.id,
                status: r.status,
                output_modalities: vec!["audio".into()],
                output: vec![OutputItem {
                    id: r.item_id,
                    kind: "message".into(),
                    object: Some("realtime.item".into()),
                    role: Some("assistant".into()),
                    status: Some(item_status.into()),
                    content: vec![serde_json::json!({ "type": "output_audio" })],
                }],
                voq: r.voq,
            }
        }
    }

    impl TryFrom<Response> for ResponseInfo {
        type Error = String;

        fn try_from(r: Response) -> Result<Self, String> {
            let item = r
                .output
                .into_iter()
                .find(|i| i.kind == "message" && i.role.as_deref() == Some("assistant"))
                .ok_or("response.output has no assistant message item")?;
            Ok(Self {
                id: r.id,
                status: r.status,
                item_id: item.id,
                voq: r.voq,
            })
        }
    }
}

impl ServerEvent {
    /// An `error` event with `code` (its `type` follows from the code).
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            error: ErrorInfo::new(code, message),
        }
    }

    /// The event's `type` string, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::SessionCreated { .. } => "session.created",
            Self::SessionUpdated { .. } => "session.updated",
            Self::SpeechStarted { .. } => "input_audio_buffer.speech_started",
            Self::SpeechStopped { .. } => "input_audio_buffer.speech_stopped",
            Self::InputAudioBufferCommitted { .. } => "input_audio_buffer.committed",
            Self::InputAudioBufferCleared {} => "input_audio_buffer.cleared",
            Self::ResponseCreated { .. } => "response.created",
            Self::ResponseDone { .. } => "response.done",
            Self::ResponseOutputAudioTranscriptDelta { .. } => {
                "response.output_audio_transcript.delta"
            }
            Self::ResponseOutputAudioTranscriptDone { .. } => {
                "response.output_audio_transcript.done"
            }
            Self::ConversationItemTruncated { .. } => "conversation.item.truncated",
            Self::Error { .. } => "error",
            Self::VoqSessionResumed { .. } => "voq.session.resumed",
            Self::VoqPong { .. } => "voq.pong",
        }
    }
}

/// Why a received control event could not be used. The session answers with an `error` event
/// carrying [`ParseError::code`] and goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The body is not JSON (the parser's message). Answered with `invalid_json`.
    #[error("event is not a JSON object: {0}")]
    NotJson(String),
    /// The body is JSON but has no string field `type`. Answered with `invalid_json`.
    #[error("event has no string field \"type\"")]
    MissingType,
    /// A `type` not in the list passed to [`parse`]. Answered with `unknown_event_type`.
    #[error("unknown event type \"{0}\"")]
    UnknownType(String),
    /// A known `type` with missing or mistyped fields. Answered with `invalid_event`.
    #[error("invalid \"{kind}\" event: {message}")]
    Invalid {
        /// The event's `type`.
        kind: String,
        /// What the deserializer found wrong.
        message: String,
    },
    /// An event of this many bytes, over [`crate::wire::MAX_EVENT_LEN`], was skipped unread.
    /// Answered with `event_too_large`.
    #[error("event of {0} bytes is over the size limit and was skipped")]
    TooLarge(usize),
}

impl ParseError {
    /// The `error.code` that answers this.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotJson(_) | Self::MissingType => ErrorCode::InvalidJson,
            Self::UnknownType(_) => ErrorCode::UnknownEventType,
            Self::Invalid { .. } => ErrorCode::InvalidEvent,
            Self::TooLarge(_) => ErrorCode::EventTooLarge,
        }
    }
}

/// A parsed event with its optional `event_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Received<E> {
    /// The event's `event_id`, for an `error` about it to echo.
    pub event_id: Option<String>,
    /// The event, without its `event_id`.
    pub event: E,
}

/// Parses one event body. Unknown types are reported as such (not as malformed), so a newer
/// peer's events get a precise error and the session goes on.
pub fn parse<E: for<'de> Deserialize<'de>>(
    body: &[u8],
    known: &[&str],
) -> Result<Received<E>, (Option<String>, ParseError)> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| (None, ParseError::NotJson(e.to_string())))?;
    let event_id = value
        .get("event_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let Some(kind) = value.get("type").and_then(Value::as_str).map(str::to_owned) else {
        return Err((event_id, ParseError::MissingType));
    };
    if !known.contains(&kind.as_str()) {
        return Err((event_id, ParseError::UnknownType(kind)));
    }
    match E::deserialize(value) {
        Ok(event) => Ok(Received { event_id, event }),
        Err(e) => Err((
            event_id,
            ParseError::Invalid {
                kind,
                message: e.to_string(),
            },
        )),
    }
}

/// `type` strings of [`ClientEvent`].
pub const CLIENT_EVENT_TYPES: &[&str] = &[
    "session.update",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "response.create",
    "response.cancel",
    "conversation.item.truncate",
    "output_audio_buffer.played",
    "voq.ping",
];

/// `type` strings of [`ServerEvent`].
pub const SERVER_EVENT_TYPES: &[&str] = &[
    "session.created",
    "session.updated",
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "input_audio_buffer.cleared",
    "response.created",
    "response.done",
    "response.output_audio_transcript.delta",
    "response.output_audio_transcript.done",
    "conversation.item.truncated",
    "error",
    "voq.session.resumed",
    "voq.pong",
];

/// Serializes an event to JSON bytes (events are plain data: this cannot fail).
pub fn to_json<E: Serialize>(event: &E) -> Vec<u8> {
    serde_json::to_vec(event).unwrap_or_default()
}

/// A server event as JSON with its top-level `event_id` (`event_N`): every server event has one,
/// as in the Realtime API's GA events, so that logs and clients can name it.
pub fn to_json_with_id(event: &ServerEvent, event_id: &str) -> Vec<u8> {
    let mut value = serde_json::to_value(event).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert("event_id".into(), Value::String(event_id.into()));
    }
    serde_json::to_vec(&value).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn client(json: &str) -> Result<Received<ClientEvent>, (Option<String>, ParseError)> {
        parse(json.as_bytes(), CLIENT_EVENT_TYPES)
    }

    #[test]
    fn realtime_shapes_parse() {
        let r = client(r#"{"type":"conversation.item.truncate","event_id":"e1","item_id":"it","content_index":0,"audio_end_ms":1500}"#).unwrap();
        assert_eq!(r.event_id.as_deref(), Some("e1"));
        assert_eq!(
            r.event,
            ClientEvent::ConversationItemTruncate {
                item_id: "it".into(),
                content_index: 0,
                audio_end_ms: 1500
            }
        );
        let r = client(r#"{"type":"input_audio_buffer.commit"}"#).unwrap();
        assert_eq!(r.event, ClientEvent::InputAudioBufferCommit {});
    }

    #[test]
    fn turn_detection_null_differs_from_absent() {
        let ClientEvent::SessionUpdate { session } =
            client(r#"{"type":"session.update","session":{"turn_detection":null,"voice":"x"}}"#)
                .unwrap()
                .event
        else {
            panic!("wrong variant")
        };
        assert_eq!(session.turn_detection, Some(Value::Null));
        let ClientEvent::SessionUpdate { session } =
            client(r#"{"type":"session.update","session":{}}"#)
                .unwrap()
                .event
        else {
            panic!("wrong variant")
        };
        assert_eq!(session.turn_detection, None);
    }

    fn update(json: &str) -> SessionUpdate {
        match client(json).unwrap().event {
            ClientEvent::SessionUpdate { session } => session,
            other => panic!("not a session.update: {other:?}"),
        }
    }

    #[test]
    fn session_update_reads_the_ga_shape_and_the_beta_one() {
        let ga = update(
            r#"{"type":"session.update","session":{"type":"realtime","instructions":"hi",
            "audio":{"input":{"format":{"type":"audio/pcm","rate":24000},"turn_detection":null},
            "output":{"format":{"type":"audio/opus"},"voice":"marin"}}}}"#,
        );
        assert_eq!(ga.session_type.as_deref(), Some("realtime"));
        assert_eq!(ga.input_audio_format.as_deref(), Some("pcm16"));
        assert_eq!(ga.output_audio_format.as_deref(), Some("opus"));
        assert_eq!(ga.turn_detection, Some(Value::Null));
        let beta = update(
            r#"{"type":"session.update","session":{"input_audio_format":"opus","turn_detection":{"type":"server_vad"}}}"#,
        );
        assert_eq!(beta.session_type, None);
        assert_eq!(beta.input_audio_format.as_deref(), Some("opus"));
        assert_eq!(beta.output_audio_format, None);
        assert_eq!(
            beta.turn_detection,
            Some(serde_json::json!({"type": "server_vad"}))
        );
        // Where both spellings are given, the GA one wins.
        let both = update(
            r#"{"type":"session.update","session":{"input_audio_format":"opus","audio":{"input":{"format":{"type":"audio/pcm"}}}}}"#,
        );
        assert_eq!(both.input_audio_format.as_deref(), Some("pcm16"));
        // Formats voq does not run keep a description, which no codec name matches.
        let other = update(
            r#"{"type":"session.update","session":{"audio":{"input":{"format":{"type":"audio/pcmu"}},"output":{"format":{"type":"audio/pcm","rate":16000}}}}}"#,
        );
        assert_eq!(other.input_audio_format.as_deref(), Some("audio/pcmu"));
        assert_eq!(
            other.output_audio_format.as_deref(),
            Some("audio/pcm at 16000 Hz")
        );
    }

    #[test]
    fn session_update_writes_the_ga_shape_and_reads_it_back() {
        let u = SessionUpdate {
            input_audio_format: Some("opus".into()),
            turn_detection: Some(Value::Null),
            ..Default::default()
        };
        let json = serde_json::to_value(&u).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "realtime", "audio": {"input": {
                "format": {"type": "audio/opus", "rate": 24000}, "turn_detection": null}}})
        );
        let back: SessionUpdate = serde_json::from_value(json).unwrap();
        assert_eq!(back.input_audio_format, u.input_audio_format);
        assert_eq!(back.turn_detection, u.turn_detection);
    }

    #[test]
    fn session_and_response_objects_round_trip_through_the_ga_shape() {
        let session = SessionInfo {
            id: "sess_1".into(),
            input_audio_format: "pcm16".into(),
            output_audio_format: "opus".into(),
            turn_detection: None,
            voq: VoqSessionInfo {
                version: PROTOCOL_VERSION.into(),
                send_ahead_ms: 2000,
                played_report_interval_ms: 50,
                transport: "quic".into(),
                server_id: None,
                resume_token: None,
            },
        };
        let json = serde_json::to_value(&session).unwrap();
        assert_eq!(json["type"], "realtime");
        assert_eq!(
            json["audio"]["input"]["format"],
            serde_json::json!({"type": "audio/pcm", "rate": 24000})
        );
        assert_eq!(json["audio"]["input"]["turn_detection"], Value::Null);
        assert_eq!(json["audio"]["output"]["format"]["type"], "audio/opus");
        assert_eq!(
            serde_json::from_value::<SessionInfo>(json).unwrap(),
            session
        );

        let response = ResponseInfo {
            id: "resp_1".into(),
            status: ResponseStatus::Cancelled,
            item_id: "item_2".into(),
            voq: Some(VoqResponseStats::default()),
        };
        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(json["object"], "realtime.response");
        assert_eq!(json["output"][0]["id"], "item_2");
        assert_eq!(json["output"][0]["role"], "assistant");
        assert_eq!(json["output"][0]["status"], "incomplete");
        assert_eq!(
            serde_json::from_value::<ResponseInfo>(json).unwrap(),
            response
        );
        let no_item = serde_json::json!({"object": "realtime.response", "id": "r",
            "status": "completed", "output_modalities": ["audio"], "output": []});
        assert!(serde_json::from_value::<ResponseInfo>(no_item).is_err());
    }

    #[test]
    fn errors_are_classified() {
        assert_eq!(
            client("nope").unwrap_err().1.code().as_str(),
            "invalid_json"
        );
        assert_eq!(
            client(r#"{"a":1}"#).unwrap_err().1.code().as_str(),
            "invalid_json"
        );
        let (id, e) = client(r#"{"type":"future.thing","event_id":"x"}"#).unwrap_err();
        assert_eq!(
            (id.as_deref(), e.code().as_str()),
            (Some("x"), "unknown_event_type")
        );
        let e = client(r#"{"type":"output_audio_buffer.played","played_ms":"many"}"#).unwrap_err();
        assert_eq!(e.1.code().as_str(), "invalid_event");
    }

    #[test]
    fn type_lists_match_the_enums() {
        // Every listed type must deserialize into its enum given the right fields; a missing
        // entry would turn a valid event into "unknown_event_type".
        for t in SERVER_EVENT_TYPES {
            let e = parse::<ServerEvent>(
                format!(r#"{{"type":"{t}"}}"#).as_bytes(),
                SERVER_EVENT_TYPES,
            );
            assert!(!matches!(e, Err((_, ParseError::UnknownType(_)))), "{t}");
        }
        let ev = ServerEvent::error(ErrorCode::AgentFailed, "y");
        assert!(SERVER_EVENT_TYPES.contains(&ev.kind()));
        let back: ServerEvent = serde_json::from_slice(&to_json(&ev)).unwrap();
        assert_eq!(back, ev);
    }
}
