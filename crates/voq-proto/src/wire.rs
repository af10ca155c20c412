//! Byte-level framing of voq/1: control-stream event framing, audio stream headers and audio
//! frames. Every decoder here is incremental (bytes arrive in arbitrary pieces from a stream) and
//! total: any input yields a value, "need more bytes", or an error — never a panic.
//!
//! ```text
//! control stream : { u32 length (BE) ; length bytes of UTF-8 JSON event }*
//! audio stream   : u8 kind ; u16 header_length (BE) ; header_length bytes of JSON header ;
//!                  { u16 payload_length (BE) ; u32 pts (BE, in samples) ; payload }*  FIN
//! ```

use serde::{Deserialize, Serialize};

use crate::error::WireError;

/// Largest control event accepted (the length prefix is checked before anything is buffered).
pub const MAX_EVENT_LEN: usize = 64 * 1024;
/// Largest audio stream header.
pub const MAX_HEADER_LEN: usize = 4 * 1024;
/// Largest audio frame payload. pcm16 20 ms at 24 kHz is 960 bytes; 8 KiB leaves room for
/// longer frames without letting a peer make us buffer without bound.
pub const MAX_FRAME_PAYLOAD: usize = 8 * 1024;
/// Bytes before a frame's payload: u16 length + u32 pts.
pub const FRAME_OVERHEAD: usize = 6;

/// What an audio stream carries; the first byte of every unidirectional stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Client → server: one user turn (push-to-talk) or the continuous input (server VAD).
    UserAudio = 0x01,
    /// Server → client: one agent response.
    AgentAudio = 0x02,
}

impl StreamKind {
    fn from_byte(b: u8) -> Result<Self, WireError> {
        match b {
            0x01 => Ok(Self::UserAudio),
            0x02 => Ok(Self::AgentAudio),
            other => Err(WireError::UnknownStreamKind(other)),
        }
    }
}

/// The JSON header that opens an audio stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudioHeader {
    /// Conversation item this audio belongs to (user item, or the assistant item of a response).
    pub item_id: String,
    /// Set on agent audio: the response this stream carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_id: Option<String>,
    /// `pcm16` or `opus`.
    pub codec: String,
    /// Samples per second; pts count samples at this rate.
    pub sample_rate: u32,
    /// Nominal frame duration in milliseconds.
    pub frame_ms: u32,
}

/// One audio frame: a codec payload and its presentation timestamp in samples since the start of
/// the turn or response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioFrame {
    /// Presentation timestamp, in samples at the header's `sample_rate` (24 kHz).
    pub pts: u32,
    /// Codec bytes: little-endian pcm16 samples or one Opus packet.
    pub payload: Vec<u8>,
}

/// Appends one control event (already serialized JSON) to `out` with its length prefix.
pub fn encode_event(json: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
    if json.len() > MAX_EVENT_LEN {
        return Err(WireError::EventTooLarge(json.len()));
    }
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(json);
    Ok(())
}

/// Appends a stream preamble (kind + header) to `out`.
pub fn encode_header(kind: StreamKind, header: &AudioHeader, out: &mut Vec<u8>) {
    // Serializing a struct of strings and integers cannot fail.
    let json = serde_json::to_vec(header).unwrap_or_default();
    out.push(kind as u8);
    out.extend_from_slice(&(json.len() as u16).to_be_bytes());
    out.extend_from_slice(&json);
}

/// Appends one frame to `out`.
pub fn encode_frame(pts: u32, payload: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
    if payload.len() > MAX_FRAME_PAYLOAD {
        return Err(WireError::FrameTooLarge(payload.len()));
    }
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(&pts.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// One result of [`EventDecoder::poll_event`].
#[derive(Debug, PartialEq, Eq)]
pub enum DecodedEvent {
    /// A complete event body (JSON bytes, not yet parsed).
    Event(Vec<u8>),
    /// An event longer than [`MAX_EVENT_LEN`] was skipped whole; the stream stays in sync.
    Skipped(usize),
}

/// Incremental decoder of the control stream. Oversized events are skipped (the length prefix
/// tells how far), so one bad event never desynchronizes the stream.
#[derive(Debug, Default)]
pub struct EventDecoder {
    buf: Vec<u8>,
    skipping: usize,
}

impl EventDecoder {
    /// Feeds the next bytes of the control stream, in any pieces (the rest of an oversized event
    /// being skipped is dropped here, never buffered).
    pub fn push(&mut self, bytes: &[u8]) {
        let skip = self.skipping.min(bytes.len());
        self.skipping -= skip;
        self.buf.extend_from_slice(&bytes[skip..]);
    }

    /// Returns the next complete event, if any. Call until `None` after every `push`.
    pub fn poll_event(&mut self) -> Option<DecodedEvent> {
        if self.skipping > 0 || self.buf.len() < 4 {
            return None;
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_EVENT_LEN {
            let have = self.buf.len() - 4;
            let drop = have.min(len);
            self.buf.drain(..4 + drop);
            self.skipping = len - drop;
            return Some(DecodedEvent::Skipped(len));
        }
        if self.buf.len() < 4 + len {
            return None;
        }
        let body = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Some(DecodedEvent::Event(body))
    }

    /// Bytes buffered in an incomplete event (non-zero at end of stream means truncation).
    pub fn pending(&self) -> usize {
        self.buf.len() + self.skipping
    }
}

/// One result of [`AudioStreamDecoder::poll_item`].
#[derive(Debug, PartialEq, Eq)]
pub enum AudioItem {
    /// The stream's preamble: its kind byte and JSON header. Always the first item, once.
    Header(StreamKind, AudioHeader),
    /// The next audio frame.
    Frame(AudioFrame),
}

#[derive(Debug, Default)]
enum AudioState {
    #[default]
    Preamble,
    Frames,
    Failed,
}

/// Incremental decoder of one audio stream: the preamble, then frames. After an error it stays
/// failed (the caller stops the stream with the error's wire code).
#[derive(Debug, Default)]
pub struct AudioStreamDecoder {
    buf: Vec<u8>,
    state: AudioState,
}

impl AudioStreamDecoder {
    /// Feeds the next bytes of the stream, in any pieces (ignored once the decoder failed).
    pub fn push(&mut self, bytes: &[u8]) {
        if !matches!(self.state, AudioState::Failed) {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Next header or frame, `Ok(None)` if more bytes are needed. Call until `Ok(None)`.
    pub fn poll_item(&mut self) -> Result<Option<AudioItem>, WireError> {
        let item = match self.state {
            AudioState::Failed => return Err(WireError::Failed),
            AudioState::Preamble => self.preamble(),
            AudioState::Frames => self.frame(),
        };
        if item.is_err() {
            self.state = AudioState::Failed;
            self.buf = Vec::new();
        }
        item
    }

    /// Bytes of an incomplete header or frame (non-zero at FIN means a truncated stream).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    fn preamble(&mut self) -> Result<Option<AudioItem>, WireError> {
        if self.buf.len() < 3 {
            return Ok(None);
        }
        let kind = StreamKind::from_byte(self.buf[0])?;
        let len = u16::from_be_bytes([self.buf[1], self.buf[2]]) as usize;
        if len > MAX_HEADER_LEN {
            return Err(WireError::HeaderTooLarge(len));
        }
        if self.buf.len() < 3 + len {
            return Ok(None);
        }
        let header: AudioHeader = serde_json::from_slice(&self.buf[3..3 + len])
            .map_err(|e| WireError::BadHeader(e.to_string()))?;
        if header.sample_rate == 0 || header.frame_ms == 0 {
            return Err(WireError::BadHeader(
                "sample_rate and frame_ms must be > 0".into(),
            ));
        }
        self.buf.drain(..3 + len);
        self.state = AudioState::Frames;
        Ok(Some(AudioItem::Header(kind, header)))
    }

    fn frame(&mut self) -> Result<Option<AudioItem>, WireError> {
        if self.buf.len() < FRAME_OVERHEAD {
            return Ok(None);
        }
        let len = u16::from_be_bytes([self.buf[0], self.buf[1]]) as usize;
        if len > MAX_FRAME_PAYLOAD {
            return Err(WireError::FrameTooLarge(len));
        }
        if self.buf.len() < FRAME_OVERHEAD + len {
            return Ok(None);
        }
        let pts = u32::from_be_bytes([self.buf[2], self.buf[3], self.buf[4], self.buf[5]]);
        let payload = self.buf[FRAME_OVERHEAD..FRAME_OVERHEAD + len].to_vec();
        self.buf.drain(..FRAME_OVERHEAD + len);
        Ok(Some(AudioItem::Frame(AudioFrame { pts, payload })))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> AudioHeader {
        AudioHeader {
            item_id: "item_1".into(),
            response_id: None,
            codec: "pcm16".into(),
            sample_rate: 24_000,
            frame_ms: 20,
        }
    }

    #[test]
    fn frame_bytes_are_as_specified() {
        let mut out = Vec::new();
        encode_frame(0x0102_0304, &[0xaa, 0xbb], &mut out).unwrap();
        assert_eq!(out, [0x00, 0x02, 0x01, 0x02, 0x03, 0x04, 0xaa, 0xbb]);
        let mut ev = Vec::new();
        encode_event(br#"{"type":"x"}"#, &mut ev).unwrap();
        assert_eq!(&ev[..4], &[0, 0, 0, 12]);
    }

    #[test]
    fn oversized_frame_is_refused_both_ways() {
        let mut out = Vec::new();
        assert!(encode_frame(0, &vec![0; MAX_FRAME_PAYLOAD + 1], &mut out).is_err());
        let mut dec = AudioStreamDecoder::default();
        let mut bytes = Vec::new();
        encode_header(StreamKind::UserAudio, &header(), &mut bytes);
        bytes.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        dec.push(&bytes);
        assert!(matches!(dec.poll_item(), Ok(Some(AudioItem::Header(..)))));
        assert_eq!(dec.poll_item(), Err(WireError::FrameTooLarge(0xffff)));
        assert_eq!(dec.poll_item(), Err(WireError::Failed));
    }

    #[test]
    fn bad_preambles_are_errors() {
        for bytes in [
            &[0x07u8, 0, 0][..],
            &[0x01, 0xff, 0xff],
            &[0x01, 0, 2, b'{', b'x'],
        ] {
            let mut dec = AudioStreamDecoder::default();
            dec.push(bytes);
            assert!(dec.poll_item().is_err(), "{bytes:?}");
        }
    }

    #[test]
    fn oversized_event_is_skipped_and_stream_stays_in_sync() {
        let mut dec = EventDecoder::default();
        let big = MAX_EVENT_LEN + 10;
        let mut bytes = (big as u32).to_be_bytes().to_vec();
        bytes.extend(std::iter::repeat_n(b' ', big));
        encode_event(b"{}", &mut bytes).unwrap();
        for chunk in bytes.chunks(1000) {
            dec.push(chunk);
        }
        // Fed in pieces: the skip is reported once, then the following event arrives intact.
        let mut got = Vec::new();
        while let Some(e) = dec.poll_event() {
            got.push(e);
        }
        assert_eq!(
            got,
            vec![
                DecodedEvent::Skipped(big),
                DecodedEvent::Event(b"{}".to_vec())
            ]
        );
        assert_eq!(dec.pending(), 0);
    }

    proptest! {
        #[test]
        fn audio_stream_round_trips_in_any_chunking(
            frames in proptest::collection::vec((any::<u32>(), proptest::collection::vec(any::<u8>(), 0..2000)), 0..20),
            split in 1usize..97,
        ) {
            let mut bytes = Vec::new();
            encode_header(StreamKind::AgentAudio, &header(), &mut bytes);
            for (pts, p) in &frames { encode_frame(*pts, p, &mut bytes).unwrap(); }
            let mut dec = AudioStreamDecoder::default();
            let mut got = Vec::new();
            for chunk in bytes.chunks(split) {
                dec.push(chunk);
                while let Some(item) = dec.poll_item().unwrap() { got.push(item); }
            }
            prop_assert_eq!(dec.pending(), 0);
            prop_assert_eq!(&got[0], &AudioItem::Header(StreamKind::AgentAudio, header()));
            let decoded: Vec<_> = got[1..].iter().map(|i| match i {
                AudioItem::Frame(f) => (f.pts, f.payload.clone()),
                AudioItem::Header(..) => unreachable!(),
            }).collect();
            prop_assert_eq!(decoded, frames);
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let mut a = AudioStreamDecoder::default();
            a.push(&bytes);
            for _ in 0..1000 { if !matches!(a.poll_item(), Ok(Some(_))) { break; } }
            let mut e = EventDecoder::default();
            e.push(&bytes);
            while e.poll_event().is_some() {}
        }
    }
}
