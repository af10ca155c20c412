//! Streams as both session cores name them, and the one vocabulary of stream operations that
//! both ask their shells to carry out.
//!
//! A session never sees a carrier's stream handles. Streams the **peer** opened are named by the
//! shell ([`StreamId`], e.g. the QUIC stream id); streams **this side** opens are named by the
//! session ([`OutStream`]) before the carrier has assigned them anything. Every write, finish,
//! reset and stop a session wants leaves it as one [`Transmit`], whichever side it runs on, so
//! a shell applies them with one piece of code (`voq_transport::Streams::apply`).

use crate::error::Code;

/// A stream the peer opened, named by the shell (e.g. the QUIC stream id).
pub type StreamId = u64;

/// A stream this side asks its shell to open, named by the session (the n-th it opened).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutStream(pub u64);

/// One operation on the control stream or a unidirectional stream (str0m's `Transmit`, quinn's
/// `poll_transmit`): what a session asks its shell to put on the carrier, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// Write these bytes on the control stream.
    Control(Vec<u8>),
    /// Open a unidirectional stream and write `bytes` (its header) on it.
    Open {
        /// The session's name for the new stream.
        stream: OutStream,
        /// The first bytes of the stream.
        bytes: Vec<u8>,
    },
    /// Write on a stream opened before.
    Write {
        /// A stream from an earlier [`Transmit::Open`].
        stream: OutStream,
        /// Bytes to append.
        bytes: Vec<u8>,
    },
    /// Finish the stream (FIN) after what was written.
    Finish {
        /// The stream to finish.
        stream: OutStream,
    },
    /// Abandon the stream (RESET_STREAM with `code`), dropping whatever is queued.
    Reset {
        /// The stream to reset.
        stream: OutStream,
        /// Why.
        code: Code,
    },
    /// Ask the peer to stop sending on one of its streams (STOP_SENDING with `code`).
    StopSending {
        /// The peer's stream.
        stream: StreamId,
        /// Why.
        code: Code,
    },
}

impl Transmit {
    /// Bytes of audio or events this operation puts on the wire (0 for finish, reset, stop).
    pub fn payload_len(&self) -> usize {
        match self {
            Self::Control(bytes) | Self::Open { bytes, .. } | Self::Write { bytes, .. } => {
                bytes.len()
            }
            Self::Finish { .. } | Self::Reset { .. } | Self::StopSending { .. } => 0,
        }
    }
}
