//! Errors and the application error codes voq/1 puts on the wire (RESET_STREAM, STOP_SENDING,
//! CONNECTION_CLOSE, and the `code` of `error` events).

/// Application error codes, shared by every carrier. On QUIC and WebTransport they are the
/// application error code of RESET_STREAM / STOP_SENDING / CONNECTION_CLOSE; over WebSocket they
/// travel in the mux's RESET_STREAM / STOP_SENDING frames and as close status `4000 + code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// Normal close.
    NoError = 0x00,
    /// A bug or resource failure on the sender's side.
    Internal = 0x01,
    /// The peer broke a rule of voq/1 (e.g. a frame's pts went backwards).
    ProtocolViolation = 0x02,
    /// An audio frame's payload exceeded [`crate::wire::MAX_FRAME_PAYLOAD`].
    FrameTooLarge = 0x03,
    /// An audio stream header was malformed or named an unsupported codec or rate.
    BadHeader = 0x04,
    /// The stream's content is no longer wanted: barge-in, `response.cancel`, turn cleared.
    Cancelled = 0x05,
    /// A stream of a kind the receiver does not accept in that direction, or too many at once.
    StreamRefused = 0x06,
    /// The server is shutting down; reconnect elsewhere.
    GoingAway = 0x07,
    /// The agent failed while producing this response.
    AgentFailed = 0x08,
    /// The peer sent the wrong application protocol version.
    VersionMismatch = 0x09,
    /// No valid token: missing, malformed, badly signed, expired, for another audience, or not
    /// allowing this server's agent. Nothing of the session was processed.
    Unauthorized = 0x0a,
    /// A limit of the session or of its token was reached: concurrent sessions per subject,
    /// call duration, event rate.
    LimitExceeded = 0x0b,
}

impl Code {
    /// The numeric code on the wire (the table in `docs/PROTOCOL.md`, "Error codes").
    pub fn to_u32(self) -> u32 {
        self as u32
    }

    /// The code with this number, `None` for numbers voq/1 does not define. Takes a `u64` (a
    /// QUIC varint's width), despite its name.
    pub fn from_u32(v: u64) -> Option<Self> {
        Some(match v {
            0x00 => Self::NoError,
            0x01 => Self::Internal,
            0x02 => Self::ProtocolViolation,
            0x03 => Self::FrameTooLarge,
            0x04 => Self::BadHeader,
            0x05 => Self::Cancelled,
            0x06 => Self::StreamRefused,
            0x07 => Self::GoingAway,
            0x08 => Self::AgentFailed,
            0x09 => Self::VersionMismatch,
            0x0a => Self::Unauthorized,
            0x0b => Self::LimitExceeded,
            _ => return None,
        })
    }

    /// The `error.code` an `error` event about this stream code carries (`None` for the two
    /// that are not errors: `no_error`, `cancelled`, and for `version_mismatch`, which closes
    /// the connection instead).
    pub fn error_code(self) -> Option<ErrorCode> {
        Some(match self {
            Self::Internal => ErrorCode::Internal,
            Self::ProtocolViolation => ErrorCode::ProtocolViolation,
            Self::FrameTooLarge => ErrorCode::FrameTooLarge,
            Self::BadHeader => ErrorCode::BadStreamHeader,
            Self::StreamRefused => ErrorCode::StreamRefused,
            Self::GoingAway => ErrorCode::GoingAway,
            Self::AgentFailed => ErrorCode::AgentFailed,
            Self::Unauthorized => ErrorCode::Unauthorized,
            Self::LimitExceeded => ErrorCode::LimitExceeded,
            Self::NoError | Self::Cancelled | Self::VersionMismatch => return None,
        })
    }

    /// The code's name (`docs/PROTOCOL.md`, "Error codes").
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoError => "no_error",
            Self::Internal => "internal_error",
            Self::ProtocolViolation => "protocol_violation",
            Self::FrameTooLarge => "frame_too_large",
            Self::BadHeader => "bad_stream_header",
            Self::Cancelled => "cancelled",
            Self::StreamRefused => "stream_refused",
            Self::GoingAway => "going_away",
            Self::AgentFailed => "agent_failed",
            Self::VersionMismatch => "version_mismatch",
            Self::Unauthorized => "unauthorized",
            Self::LimitExceeded => "limit_exceeded",
        }
    }
}

/// Every `error.code` voq sends in an `error` event: a closed set, so a code cannot be misspelt
/// at one call site, and mirrored in TypeScript (`ErrorCode` in `@voq/client`); both are checked
/// against `testdata/wire/error-codes.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// A bug or resource failure of the server.
    Internal,
    /// The client broke a rule of voq/1 on a stream.
    ProtocolViolation,
    /// An audio frame over [`crate::wire::MAX_FRAME_PAYLOAD`].
    FrameTooLarge,
    /// A malformed audio stream header, or one naming an unsupported codec or rate.
    BadStreamHeader,
    /// A stream refused: wrong kind or direction, or too many open.
    StreamRefused,
    /// The server is shutting down.
    GoingAway,
    /// The agent failed while producing a response.
    AgentFailed,
    /// A control event that is not a JSON object with a string `type`.
    InvalidJson,
    /// A control event of a type voq does not know.
    UnknownEventType,
    /// A known event type with missing or mistyped fields.
    InvalidEvent,
    /// A control event over [`crate::wire::MAX_EVENT_LEN`], skipped.
    EventTooLarge,
    /// A field with a value voq does not accept.
    InvalidValue,
    /// `input_audio_buffer.commit` with nothing to commit.
    InputAudioBufferCommitEmpty,
    /// `response.cancel` naming no response in progress.
    ResponseNotFound,
    /// `conversation.item.truncate` naming no assistant audio item.
    ItemNotFound,
    /// No valid token (see [`Code::Unauthorized`]).
    Unauthorized,
    /// A session or token limit was reached (see [`Code::LimitExceeded`]).
    LimitExceeded,
}

impl ErrorCode {
    /// Every code, in the order of `testdata/wire/error-codes.json`.
    pub const ALL: [ErrorCode; 17] = [
        Self::Internal,
        Self::ProtocolViolation,
        Self::FrameTooLarge,
        Self::BadStreamHeader,
        Self::StreamRefused,
        Self::GoingAway,
        Self::AgentFailed,
        Self::InvalidJson,
        Self::UnknownEventType,
        Self::InvalidEvent,
        Self::EventTooLarge,
        Self::InvalidValue,
        Self::InputAudioBufferCommitEmpty,
        Self::ResponseNotFound,
        Self::ItemNotFound,
        Self::Unauthorized,
        Self::LimitExceeded,
    ];

    /// The string on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Internal => "internal_error",
            Self::ProtocolViolation => "protocol_violation",
            Self::FrameTooLarge => "frame_too_large",
            Self::BadStreamHeader => "bad_stream_header",
            Self::StreamRefused => "stream_refused",
            Self::GoingAway => "going_away",
            Self::AgentFailed => "agent_failed",
            Self::InvalidJson => "invalid_json",
            Self::UnknownEventType => "unknown_event_type",
            Self::InvalidEvent => "invalid_event",
            Self::EventTooLarge => "event_too_large",
            Self::InvalidValue => "invalid_value",
            Self::InputAudioBufferCommitEmpty => "input_audio_buffer_commit_empty",
            Self::ResponseNotFound => "response_not_found",
            Self::ItemNotFound => "item_not_found",
            Self::Unauthorized => "unauthorized",
            Self::LimitExceeded => "limit_exceeded",
        }
    }

    /// The code a string names, if voq knows it (a newer server may send others).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The `error.type` this code goes with: the server's own failures are `server_error`,
    /// everything the client sent wrong `invalid_request_error` (the Realtime API's split).
    pub fn error_type(self) -> ErrorType {
        match self {
            Self::Internal | Self::GoingAway | Self::AgentFailed => ErrorType::ServerError,
            _ => ErrorType::InvalidRequestError,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `type` of an `error` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorType {
    /// Something the client sent was wrong.
    InvalidRequestError,
    /// The server failed (or is going away).
    ServerError,
}

impl ErrorType {
    /// Both types, in the order of `testdata/wire/error-codes.json`.
    pub const ALL: [ErrorType; 2] = [Self::InvalidRequestError, Self::ServerError];

    /// The string on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequestError => "invalid_request_error",
            Self::ServerError => "server_error",
        }
    }
}

/// Who a [`Problem`] is the fault of: what a shell counts it as (a client error is the peer's
/// doing and says nothing about our health; a local one is a bug or resource failure to alert on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Blame {
    /// The peer sent something voq/1 does not allow.
    Peer,
    /// This side failed: our bug, our agent, our resources.
    Local,
}

/// Something went wrong in a session and the session handled it (answered with an `error`
/// event, stopped a stream, failed a response): reported to the shell for its logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Whose fault it is.
    pub blame: Blame,
    /// The code sent to the peer, or that would be.
    pub code: ErrorCode,
    /// What happened, in words (never audio payloads).
    pub message: String,
}

impl Problem {
    /// A problem the peer caused.
    pub fn peer(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            blame: Blame::Peer,
            code,
            message: message.into(),
        }
    }

    /// A problem of our own.
    pub fn local(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            blame: Blame::Local,
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Framing errors of the byte-level decoders in [`crate::wire`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A control event of this many bytes, over [`crate::wire::MAX_EVENT_LEN`], was given to
    /// [`crate::wire::encode_event`] (received ones are skipped, not failed).
    #[error("control event of {0} bytes exceeds the {max} byte limit", max = crate::wire::MAX_EVENT_LEN)]
    EventTooLarge(usize),
    /// An audio stream's first byte is not a known [`crate::wire::StreamKind`].
    #[error("unknown audio stream kind 0x{0:02x}")]
    UnknownStreamKind(u8),
    /// An audio stream header's length prefix is over [`crate::wire::MAX_HEADER_LEN`].
    #[error("audio stream header of {0} bytes exceeds the {max} byte limit", max = crate::wire::MAX_HEADER_LEN)]
    HeaderTooLarge(usize),
    /// An audio stream header that is not valid JSON of the header's shape, or has a zero
    /// `sample_rate` or `frame_ms` (the message says which).
    #[error("malformed audio stream header: {0}")]
    BadHeader(String),
    /// An audio frame payload of this many bytes, over [`crate::wire::MAX_FRAME_PAYLOAD`].
    #[error("audio frame payload of {0} bytes exceeds the {max} byte limit", max = crate::wire::MAX_FRAME_PAYLOAD)]
    FrameTooLarge(usize),
    /// The decoder was polled again after it reported an error.
    #[error("the stream already failed")]
    Failed,
}

impl WireError {
    /// The wire code to reset or stop the offending stream with.
    pub fn code(&self) -> Code {
        match self {
            Self::FrameTooLarge(_) => Code::FrameTooLarge,
            Self::UnknownStreamKind(_) => Code::StreamRefused,
            Self::HeaderTooLarge(_) | Self::BadHeader(_) => Code::BadHeader,
            Self::EventTooLarge(_) | Self::Failed => Code::ProtocolViolation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_none() {
        for v in 0..=0x0b {
            let code = Code::from_u32(v).expect("defined");
            assert_eq!(code.to_u32() as u64, v);
            assert!(!code.as_str().is_empty());
        }
        assert_eq!(Code::from_u32(0x0c), None);
    }
}
