//! Control-stream events. Names and fields follow the OpenAI Realtime API wherever it has one, so
//! developers who know it feel at home; voq additions are marked as extensions in
//! `docs/PROTOCOL.md` (`output_audio_buffer.played`, the `voq` objects, frame/ms counts).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// Application protocol version carried in `session.created`.
pub const PROTOCOL_VERSION: &str = "voq/1";

/// Events a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
#[non_exhaustive]
pub enum ClientEvent {
    #[serde(rename = "session.update")]
    SessionUpdate { session: SessionUpdate },
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
        #[serde(default, skip_serializing_if = "Option::is_none")]
        response_id: Option<String>,
    },
    /// Barge-in: the user heard `audio_end_ms` of the assistant item and no more.
    #[serde(rename = "conversation.item.truncate")]
    ConversationItemTruncate {
        item_id: String,
        content_index: u32,
        audio_end_ms: u64,
    },
    /// voq extension: the client's playback cursor in a response.
    #[serde(rename = "output_audio_buffer.played")]
    OutputAudioBufferPlayed {
        response_id: String,
        played_ms: u64,
        buffered_ms: u64,
    },
    /// voq extension: answered at once by `voq.pong` with the same `id`, for clients whose
    /// carrier exposes no RTT (a browser's WebTransport has no `getStats()` in Chromium 156).
    #[serde(rename = "voq.ping")]
    VoqPing { id: u64 },
}

/// `session.update` body. Every field is optional: absent fields keep their value. Unknown
/// Realtime fields (instructions, voice, …) are accepted and ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_audio_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_audio_format: Option<String>,
    /// `null` turns server VAD off (push-to-talk); `{"type":"server_vad", …}` turns it on.
    /// Absent leaves it unchanged.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub turn_detection: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voq: Option<VoqSessionUpdate>,
}

/// voq extension fields of `session.update`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoqSessionUpdate {
    /// How far ahead of the client's playback the server may send agent audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_ahead_ms: Option<u64>,
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
    #[serde(rename = "session.created")]
    SessionCreated { session: SessionInfo },
    #[serde(rename = "session.updated")]
    SessionUpdated { session: SessionInfo },
    #[serde(rename = "input_audio_buffer.speech_started")]
    SpeechStarted {
        item_id: String,
        audio_start_ms: u64,
    },
    #[serde(rename = "input_audio_buffer.speech_stopped")]
    SpeechStopped { item_id: String, audio_end_ms: u64 },
    /// The server holds the whole user turn. `frames`, `audio_ms` and `bytes` are voq extensions:
    /// the client compares them with what it sent.
    #[serde(rename = "input_audio_buffer.committed")]
    InputAudioBufferCommitted {
        item_id: String,
        #[serde(default)]
        previous_item_id: Option<String>,
        frames: u64,
        audio_ms: u64,
        bytes: u64,
    },
    #[serde(rename = "input_audio_buffer.cleared")]
    InputAudioBufferCleared {},
    #[serde(rename = "response.created")]
    ResponseCreated { response: ResponseInfo },
    #[serde(rename = "response.done")]
    ResponseDone { response: ResponseInfo },
    #[serde(rename = "conversation.item.truncated")]
    ConversationItemTruncated {
        item_id: String,
        content_index: u32,
        audio_end_ms: u64,
    },
    #[serde(rename = "error")]
    Error { error: ErrorInfo },
    /// voq extension: the answer to `voq.ping`.
    #[serde(rename = "voq.pong")]
    VoqPong { id: u64 },
}

/// The session as the server runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub id: String,
    pub input_audio_format: String,
    pub output_audio_format: String,
    /// `null` for push-to-talk, `{"type":"server_vad", …}` with server VAD.
    pub turn_detection: Option<Value>,
    pub voq: VoqSessionInfo,
}

/// voq extension fields of the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoqSessionInfo {
    pub version: String,
    /// Configured send-ahead lead.
    pub send_ahead_ms: u64,
    /// How often the client should send `output_audio_buffer.played` while playing.
    pub played_report_interval_ms: u64,
    /// The carrier the session runs on (`quic`, `webtransport`, `ws`).
    pub transport: String,
}

/// A response and, in `response.done`, how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseInfo {
    pub id: String,
    /// `in_progress`, `completed`, `cancelled` or `failed`.
    pub status: String,
    /// The assistant item whose audio this response carries.
    pub item_id: String,
    /// voq extension: audio generated and sent, filled in `response.done`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voq: Option<VoqResponseStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoqResponseStats {
    pub audio_ms_generated: u64,
    pub audio_ms_sent: u64,
    pub bytes_sent: u64,
    pub frames_sent: u64,
}

/// The body of an `error` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// `invalid_request_error` for what the client sent, `server_error` for our own failures.
    #[serde(rename = "type")]
    pub kind: String,
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

impl ServerEvent {
    pub fn error(kind: &str, code: &str, message: impl Into<String>) -> Self {
        Self::Error {
            error: ErrorInfo {
                kind: kind.into(),
                code: code.into(),
                message: message.into(),
                event_id: None,
            },
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
            Self::ConversationItemTruncated { .. } => "conversation.item.truncated",
            Self::Error { .. } => "error",
            Self::VoqPong { .. } => "voq.pong",
        }
    }
}

/// Why a received control event could not be used. The session answers with an `error` event
/// carrying [`ParseError::code`] and goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("event is not a JSON object: {0}")]
    NotJson(String),
    #[error("event has no string field \"type\"")]
    MissingType,
    #[error("unknown event type \"{0}\"")]
    UnknownType(String),
    #[error("invalid \"{kind}\" event: {message}")]
    Invalid { kind: String, message: String },
    #[error("event of {0} bytes is over the size limit and was skipped")]
    TooLarge(usize),
}

impl ParseError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotJson(_) | Self::MissingType => "invalid_json",
            Self::UnknownType(_) => "unknown_event_type",
            Self::Invalid { .. } => "invalid_event",
            Self::TooLarge(_) => "event_too_large",
        }
    }
}

/// A parsed event with its optional `event_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Received<E> {
    pub event_id: Option<String>,
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
    "conversation.item.truncated",
    "error",
    "voq.pong",
];

/// Serializes an event to JSON bytes (events are plain data: this cannot fail).
pub fn to_json<E: Serialize>(event: &E) -> Vec<u8> {
    serde_json::to_vec(event).unwrap_or_default()
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

    #[test]
    fn errors_are_classified() {
        assert_eq!(client("nope").unwrap_err().1.code(), "invalid_json");
        assert_eq!(client(r#"{"a":1}"#).unwrap_err().1.code(), "invalid_json");
        let (id, e) = client(r#"{"type":"future.thing","event_id":"x"}"#).unwrap_err();
        assert_eq!((id.as_deref(), e.code()), (Some("x"), "unknown_event_type"));
        let e = client(r#"{"type":"output_audio_buffer.played","played_ms":"many"}"#).unwrap_err();
        assert_eq!(e.1.code(), "invalid_event");
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
        let ev = ServerEvent::error("server_error", "x", "y");
        assert!(SERVER_EVENT_TYPES.contains(&ev.kind()));
        let back: ServerEvent = serde_json::from_slice(&to_json(&ev)).unwrap();
        assert_eq!(back, ev);
    }
}
