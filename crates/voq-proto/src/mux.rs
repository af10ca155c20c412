//! The WebSocket stream mux (docs/PROTOCOL.md, "WebSocket stream mux"): QUIC-like streams inside
//! binary WebSocket messages, one frame per message, so that voq/1 runs unchanged where UDP is
//! blocked.
//!
//! Stream ids follow QUIC (RFC 9000 §2.1): bit 0 says who opened the stream (0 client, 1 server),
//! bit 1 its direction (0 bidirectional, 1 unidirectional).

mod connection;

pub use connection::{MuxConfig, MuxConnection, MuxOutput, Side, StreamError};

/// The control stream's id: the client's first bidirectional stream.
pub const CONTROL_STREAM: u64 = 0;

/// Largest value a QUIC varint holds.
pub const VARINT_MAX: u64 = (1 << 62) - 1;

const STREAM: u8 = 0x00;
const FIN: u8 = 0x01;
const RESET_STREAM: u8 = 0x02;
const STOP_SENDING: u8 = 0x03;
const PING: u8 = 0x10;
const PONG: u8 = 0x11;

/// One mux frame (= one binary WebSocket message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MuxFrame {
    /// The next bytes of a stream (opens it if new).
    Stream {
        /// The stream id (QUIC numbering).
        id: u64,
        /// The bytes, in stream order (may be empty).
        data: Vec<u8>,
    },
    /// The stream ends after the bytes already sent.
    Fin {
        /// The stream id.
        id: u64,
    },
    /// The sender abandons the stream (= QUIC RESET_STREAM).
    ResetStream {
        /// The stream id.
        id: u64,
        /// Why: a voq [`crate::Code`] number.
        code: u64,
    },
    /// The receiver wants no more of the stream (= QUIC STOP_SENDING).
    StopSending {
        /// The stream id.
        id: u64,
        /// Why: a voq [`crate::Code`] number.
        code: u64,
    },
    /// Answer at once with a [`MuxFrame::Pong`] carrying the same bytes.
    Ping([u8; 8]),
    /// The answer to a [`MuxFrame::Ping`], with its 8 bytes; the time between is an RTT sample.
    Pong([u8; 8]),
}

/// Why a message is not a mux frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MuxError {
    /// A message of zero bytes (not even a type).
    #[error("empty message")]
    Empty,
    /// A type byte the mux does not define.
    #[error("unknown mux frame type 0x{0:02x}")]
    UnknownType(u8),
    /// The message ends before the stream id or code is complete.
    #[error("message ends inside a varint")]
    TruncatedVarint,
    /// A PING or PONG whose stream id is not 0 or that does not carry exactly 8 bytes.
    #[error("PING/PONG must carry exactly 8 bytes after stream id 0")]
    BadPing,
    /// This many bytes follow a FIN, RESET_STREAM or STOP_SENDING frame.
    #[error("{0} bytes after the end of the frame")]
    TrailingBytes(usize),
}

/// Who opened a stream and which way it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamKind {
    /// The server opened it (id bit 0 set); otherwise the client.
    pub server_initiated: bool,
    /// Only its opener sends on it (id bit 1 set); otherwise both sides do.
    pub unidirectional: bool,
}

impl StreamKind {
    /// The kind of stream `id`, from its two low bits.
    pub fn of(id: u64) -> Self {
        Self {
            server_initiated: id & 1 == 1,
            unidirectional: id & 2 == 2,
        }
    }

    /// The `n`-th (0-based) stream id of this kind.
    pub fn nth(self, n: u64) -> u64 {
        (n << 2) | u64::from(self.unidirectional) << 1 | u64::from(self.server_initiated)
    }
}

/// Appends `v` as a minimal QUIC varint. Values above [`VARINT_MAX`] are clamped to it (no stream
/// id or code of voq comes near).
pub fn put_varint(v: u64, out: &mut Vec<u8>) {
    let v = v.min(VARINT_MAX);
    if v < 1 << 6 {
        out.push(v as u8);
    } else if v < 1 << 14 {
        out.extend_from_slice(&((v as u16) | 0x4000).to_be_bytes());
    } else if v < 1 << 30 {
        out.extend_from_slice(&((v as u32) | 0x8000_0000).to_be_bytes());
    } else {
        out.extend_from_slice(&(v | 0xc000_0000_0000_0000).to_be_bytes());
    }
}

/// Reads a QUIC varint (minimal or not) from the front of `buf`: the value and its length.
pub fn get_varint(buf: &[u8]) -> Result<(u64, usize), MuxError> {
    let first = *buf.first().ok_or(MuxError::TruncatedVarint)?;
    let len = 1usize << (first >> 6);
    let bytes = buf.get(..len).ok_or(MuxError::TruncatedVarint)?;
    let mut v = u64::from(first & 0x3f);
    for b in &bytes[1..] {
        v = v << 8 | u64::from(*b);
    }
    Ok((v, len))
}

impl MuxFrame {
    /// The frame as one WebSocket message payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        self.encode_into(&mut out);
        out
    }

    /// Appends the frame to `out` (for reusing a buffer; see [`MuxFrame::encode`]).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Self::Stream { id, data } => {
                out.reserve(9 + data.len());
                out.push(STREAM);
                put_varint(*id, out);
                out.extend_from_slice(data);
            }
            Self::Fin { id } => {
                out.push(FIN);
                put_varint(*id, out);
            }
            Self::ResetStream { id, code } => {
                out.push(RESET_STREAM);
                put_varint(*id, out);
                put_varint(*code, out);
            }
            Self::StopSending { id, code } => {
                out.push(STOP_SENDING);
                put_varint(*id, out);
                put_varint(*code, out);
            }
            Self::Ping(bytes) | Self::Pong(bytes) => {
                out.push(if matches!(self, Self::Ping(_)) {
                    PING
                } else {
                    PONG
                });
                out.push(0);
                out.extend_from_slice(bytes);
            }
        }
    }

    /// Parses one WebSocket message. Never panics.
    pub fn decode(msg: &[u8]) -> Result<Self, MuxError> {
        let (&ty, rest) = msg.split_first().ok_or(MuxError::Empty)?;
        if !matches!(ty, STREAM | FIN | RESET_STREAM | STOP_SENDING | PING | PONG) {
            return Err(MuxError::UnknownType(ty));
        }
        let (id, n) = get_varint(rest)?;
        let rest = &rest[n..];
        let with_code = |rest: &[u8]| -> Result<u64, MuxError> {
            let (code, n) = get_varint(rest)?;
            match rest.len() - n {
                0 => Ok(code),
                extra => Err(MuxError::TrailingBytes(extra)),
            }
        };
        let no_more = |rest: &[u8]| match rest.len() {
            0 => Ok(()),
            extra => Err(MuxError::TrailingBytes(extra)),
        };
        Ok(match ty {
            STREAM => Self::Stream {
                id,
                data: rest.to_vec(),
            },
            FIN => {
                no_more(rest)?;
                Self::Fin { id }
            }
            RESET_STREAM => Self::ResetStream {
                id,
                code: with_code(rest)?,
            },
            STOP_SENDING => Self::StopSending {
                id,
                code: with_code(rest)?,
            },
            _ => {
                let bytes: [u8; 8] = rest.try_into().map_err(|_| MuxError::BadPing)?;
                if id != 0 {
                    return Err(MuxError::BadPing);
                }
                if ty == PING {
                    Self::Ping(bytes)
                } else {
                    Self::Pong(bytes)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc9000_varint_examples() {
        // RFC 9000 §A.1.
        for (hex, v) in [
            ("c2197c5eff14e88c", 151_288_809_941_952_652u64),
            ("9d7f3e7d", 494_878_333),
            ("7bbd", 15_293),
            ("25", 37),
        ] {
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or_default())
                .collect();
            assert_eq!(get_varint(&bytes), Ok((v, bytes.len())));
            let mut out = Vec::new();
            put_varint(v, &mut out);
            assert_eq!(out, bytes);
        }
        assert_eq!(
            get_varint(&[0x40, 0x25]),
            Ok((37, 2)),
            "non-minimal decodes"
        );
        assert_eq!(get_varint(&[0x40]), Err(MuxError::TruncatedVarint));
    }

    #[test]
    fn stream_kinds_follow_quic() {
        let client_uni = StreamKind::of(2);
        assert!(client_uni.unidirectional && !client_uni.server_initiated);
        assert_eq!(client_uni.nth(0), 2);
        assert_eq!(client_uni.nth(2), 10);
        let server_uni = StreamKind::of(3);
        assert_eq!(server_uni.nth(1), 7);
        assert_eq!(StreamKind::of(CONTROL_STREAM).nth(0), 0);
    }

    #[test]
    fn rejects_malformed_messages() {
        assert_eq!(MuxFrame::decode(&[]), Err(MuxError::Empty));
        assert_eq!(MuxFrame::decode(&[0x07, 0]), Err(MuxError::UnknownType(7)));
        assert_eq!(MuxFrame::decode(&[0x00]), Err(MuxError::TruncatedVarint));
        assert_eq!(MuxFrame::decode(&[0x02, 3]), Err(MuxError::TruncatedVarint));
        assert_eq!(
            MuxFrame::decode(&[0x01, 3, 9]),
            Err(MuxError::TrailingBytes(1))
        );
        assert_eq!(MuxFrame::decode(&[0x10, 0, 1, 2]), Err(MuxError::BadPing));
        assert_eq!(
            MuxFrame::decode(&[0x10, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(MuxError::BadPing)
        );
    }

    fn frames() -> impl Strategy<Value = MuxFrame> {
        let id = 0..=VARINT_MAX;
        prop_oneof![
            (id.clone(), proptest::collection::vec(any::<u8>(), 0..64))
                .prop_map(|(id, data)| MuxFrame::Stream { id, data }),
            id.clone().prop_map(|id| MuxFrame::Fin { id }),
            (id.clone(), 0..=VARINT_MAX).prop_map(|(id, code)| MuxFrame::ResetStream { id, code }),
            (id, 0..=VARINT_MAX).prop_map(|(id, code)| MuxFrame::StopSending { id, code }),
            any::<[u8; 8]>().prop_map(MuxFrame::Ping),
            any::<[u8; 8]>().prop_map(MuxFrame::Pong),
        ]
    }

    proptest! {
        #[test]
        fn round_trips(frame in frames()) {
            prop_assert_eq!(MuxFrame::decode(&frame.encode()), Ok(frame));
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            let _ = MuxFrame::decode(&bytes);
        }
    }
}
