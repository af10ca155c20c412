//! Errors and the application error codes voq/1 puts on the wire (RESET_STREAM, STOP_SENDING,
//! CONNECTION_CLOSE, and the `code` of `error` events).

/// Application error codes, shared by every carrier. On QUIC and WebTransport they are the
/// application error code of RESET_STREAM / STOP_SENDING / CONNECTION_CLOSE; over WebSocket they
/// travel in the mux's reset message.
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
}

impl Code {
    pub fn to_u32(self) -> u32 {
        self as u32
    }

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
            _ => return None,
        })
    }

    /// The string used as `error.code` in `error` events.
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
        }
    }
}

/// Framing errors of the byte-level decoders in [`crate::wire`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("control event of {0} bytes exceeds the {max} byte limit", max = crate::wire::MAX_EVENT_LEN)]
    EventTooLarge(usize),
    #[error("unknown audio stream kind 0x{0:02x}")]
    UnknownStreamKind(u8),
    #[error("audio stream header of {0} bytes exceeds the {max} byte limit", max = crate::wire::MAX_HEADER_LEN)]
    HeaderTooLarge(usize),
    #[error("malformed audio stream header: {0}")]
    BadHeader(String),
    #[error("audio frame payload of {0} bytes exceeds the {max} byte limit", max = crate::wire::MAX_FRAME_PAYLOAD)]
    FrameTooLarge(usize),
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
        for v in 0..=0x09 {
            let code = Code::from_u32(v).expect("defined");
            assert_eq!(code.to_u32() as u64, v);
            assert!(!code.as_str().is_empty());
        }
        assert_eq!(Code::from_u32(0x0a), None);
    }
}
