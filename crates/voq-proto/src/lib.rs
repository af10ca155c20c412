//! voq/1: the wire format and the session state machines of voq ("voice over QUIC"), sans-IO.
//!
//! Nothing here touches a socket, a clock or a random number generator: time comes in as `now`
//! arguments, bytes come in through `handle_*` calls and leave through `poll_*` calls. The same
//! core therefore runs over QUIC, WebTransport and WebSocket, and in deterministic simulations on
//! virtual time.
//!
//! - [`stream`]: stream names and [`stream::Transmit`], the stream operations both sessions
//!   output (one vocabulary, applied by one piece of shell code).
//! - [`error`]: wire codes ([`Code`]), `error` event codes ([`ErrorCode`]) and [`Problem`]s.
//! - [`wire`]: control-event framing, audio stream headers and frames.
//! - [`mux`]: the WebSocket stream mux (QUIC-like streams in binary messages).
//! - [`event`]: the control events (OpenAI Realtime names where one exists).
//! - [`server`], [`client`]: the two session state machines.
//! - [`pacing`]: how far ahead agent audio is sent ([`pacing::SendAhead`]).
//! - [`playout`]: the client's timestamp-driven playout buffer.
//!
//! The drain rule, for both sessions: **after every input, drain `poll_output` until it returns
//! `None`, then wait until `poll_timeout`**. See [`server`] for a compiled example.
#![warn(missing_docs)]

pub mod client;
pub mod error;
pub mod event;
pub mod mux;
pub mod pacing;
pub mod playout;
pub mod realtime;
pub mod resume;
pub mod server;
pub mod stream;
pub mod wire;

pub use error::{Blame, Code, ErrorCode, ErrorType, Problem, WireError};

/// Sample rate of every voq/1 audio stream (the Realtime API's pcm16 rate; Opus runs natively at
/// it too).
pub const SAMPLE_RATE: u32 = 24_000;
/// Nominal frame duration.
pub const FRAME_MS: u32 = 20;

/// The audio codecs of voq/1, by their wire names: the one definition every crate uses
/// (`voq_audio` implements them).
///
/// Not `#[non_exhaustive]` on purpose: a new codec must be handled by every `match` on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// 16-bit signed little-endian PCM, 24 kHz mono. Lossless: decode(encode(x)) == x.
    Pcm16,
    /// Opus, 24 kHz mono, 20 ms frames. Lossy, with a fixed algorithmic delay.
    Opus,
}

/// A codec name that voq/1 does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown codec \"{0}\" (use pcm16 or opus)")]
pub struct UnknownCodec(pub String);

impl Codec {
    /// Every codec, in preference order of a lossless-first session.
    pub const ALL: [Codec; 2] = [Codec::Pcm16, Codec::Opus];

    /// The wire name (`pcm16`, `opus`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Pcm16 => "pcm16",
            Self::Opus => "opus",
        }
    }

    /// Samples per second (every voq/1 codec runs at [`SAMPLE_RATE`]).
    pub fn sample_rate(self) -> u32 {
        SAMPLE_RATE
    }

    /// Samples in one nominal frame ([`FRAME_MS`] at [`SAMPLE_RATE`]).
    pub fn frame_samples(self) -> usize {
        (self.sample_rate() * FRAME_MS / 1000) as usize
    }

    /// Whether decoding returns exactly what was encoded.
    pub fn is_lossless(self) -> bool {
        matches!(self, Self::Pcm16)
    }

    /// Samples a frame's payload decodes to: exact for pcm16, the nominal frame for Opus.
    pub fn samples_in(self, payload: &[u8], frame_ms: u32) -> u64 {
        match self {
            Self::Pcm16 => payload.len() as u64 / 2,
            Self::Opus => self.sample_rate() as u64 * frame_ms as u64 / 1000,
        }
    }
}

impl std::str::FromStr for Codec {
    type Err = UnknownCodec;

    /// Parses a wire name, exactly as [`Codec::name`] spells it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| UnknownCodec(s.into()))
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
