//! The two voq/1 codecs: `pcm16` (raw little-endian samples, bit-exact) and `opus`.
//!
//! Both work on one 20 ms frame of 24 kHz mono audio at a time ([`FRAME_SAMPLES`] samples).
//! [`Encoder`] and [`Decoder`] hide which codec is in use, so a sender or receiver is written
//! once for both.
//!
//! Opus is libopus (Debian `libopus-dev`, linked through the `opus` crate): application VOIP,
//! 32 kbit/s VBR by default ([`OpusConfig`]), no in-band FEC. The encoder has a fixed
//! algorithmic delay ([`Encoder::lookahead`], 156 samples = 6.5 ms at 24 kHz): decoded audio
//! lags the input by that much (cross-correlation of decoded speech peaks at 155 samples at
//! 32 kbit/s, where libopus codes speech with SILK, and at 156 in its CELT mode).

use crate::{FRAME_SAMPLES, SAMPLE_RATE};

/// The voq/1 codecs: one definition, in `voq_proto`, implemented here.
pub use voq_proto::{Codec, UnknownCodec};

/// Opus encoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusConfig {
    /// Target bitrate in bit/s, 6 000 ..= 510 000. Default 32 000 (transparent-ish wideband
    /// speech; 20 ms frames are then ~80 bytes).
    pub bitrate: u32,
    /// Encoder complexity, 0 ..= 10. Default 10 (libopus's). CPU per second of speech on the
    /// reference machine: 13 ms at 10, 7 ms at 5, 3 ms at 0 (`examples/opus_cost.rs`); a server
    /// encoding many replies may trade a little quality for half the CPU.
    pub complexity: u8,
}

impl OpusConfig {
    /// Lowest bitrate libopus accepts, in bit/s.
    pub const MIN_BITRATE: u32 = 6_000;
    /// Highest bitrate libopus accepts for one channel, in bit/s.
    pub const MAX_BITRATE: u32 = 510_000;

    /// The default settings with another bitrate (bit/s).
    pub fn with_bitrate(bitrate: u32) -> Self {
        OpusConfig {
            bitrate,
            ..Self::default()
        }
    }
}

impl Default for OpusConfig {
    fn default() -> Self {
        OpusConfig {
            bitrate: 32_000,
            complexity: 10,
        }
    }
}

/// Why an [`Encoder`] or [`Decoder`] could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecInitError {
    /// The Opus bitrate is outside what libopus accepts.
    #[error(
        "opus bitrate {bitrate} bit/s is out of range ({}..={})",
        OpusConfig::MIN_BITRATE,
        OpusConfig::MAX_BITRATE
    )]
    BitrateOutOfRange {
        /// The requested bitrate.
        bitrate: u32,
    },
    /// libopus refused to create or configure the encoder or decoder.
    #[error("libopus could not be initialised")]
    Opus(#[source] opus::Error),
}

/// Why a frame could not be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// Opus encodes one whole frame at a time: the input was empty or longer than a frame.
    #[error("opus encodes 1..={max} samples at a time, got {len}")]
    FrameLength {
        /// Samples given.
        len: usize,
        /// Samples in one frame.
        max: usize,
    },
    /// libopus failed to encode the frame.
    #[error("opus encoding failed")]
    Opus(#[source] opus::Error),
}

/// Why a payload could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A pcm16 payload must hold whole 2-byte samples.
    #[error("pcm16 payload has an odd length ({len} bytes)")]
    OddLength {
        /// Payload length in bytes.
        len: usize,
    },
    /// An empty Opus payload is not a packet (a lost frame is [`Decoder::conceal`]ed instead).
    #[error("empty opus payload")]
    Empty,
    /// Longer than any sensible Opus packet (48 frames of at most 1275 bytes fit in 61 440).
    #[error("opus payload of {len} bytes is longer than {max}")]
    TooLong {
        /// Payload length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// libopus rejected the payload (corrupt or not Opus) or failed to conceal.
    #[error("opus decoding failed")]
    Opus(#[source] opus::Error),
}

/// Longest Opus packet we produce (libopus' own bound for one frame is 1275 bytes).
const MAX_OPUS_PACKET: usize = 1500;
/// Longest Opus payload [`Decoder::decode`] accepts.
const MAX_OPUS_PAYLOAD: usize = 65_536;
/// Longest audio one Opus packet can carry: 120 ms at 24 kHz.
const MAX_OPUS_PACKET_SAMPLES: usize = SAMPLE_RATE as usize / 1000 * 120;

/// Encodes 20 ms frames of 24 kHz mono audio with one [`Codec`].
///
/// Call [`Encoder::encode`] once per frame, in order (Opus keeps state between frames).
#[derive(Debug)]
pub struct Encoder {
    inner: EncoderInner,
}

#[derive(Debug)]
enum EncoderInner {
    Pcm16,
    Opus {
        enc: opus::Encoder,
        /// A zero-padded copy of a short final frame.
        frame: Vec<i16>,
        packet: Vec<u8>,
    },
}

impl Encoder {
    /// An encoder for `codec` with default settings.
    pub fn new(codec: Codec) -> Result<Self, CodecInitError> {
        match codec {
            Codec::Pcm16 => Ok(Encoder {
                inner: EncoderInner::Pcm16,
            }),
            Codec::Opus => Self::opus(OpusConfig::default()),
        }
    }

    /// An encoder for `codec`, with `opus` as the settings if it is Opus.
    pub fn with_opus(codec: Codec, opus: OpusConfig) -> Result<Self, CodecInitError> {
        match codec {
            Codec::Opus => Self::opus(opus),
            other => Self::new(other),
        }
    }

    /// An Opus encoder with explicit settings.
    pub fn opus(config: OpusConfig) -> Result<Self, CodecInitError> {
        let bitrate = config.bitrate;
        if !(OpusConfig::MIN_BITRATE..=OpusConfig::MAX_BITRATE).contains(&bitrate) {
            return Err(CodecInitError::BitrateOutOfRange { bitrate });
        }
        let mut enc =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
                .map_err(CodecInitError::Opus)?;
        // In range, so the cast is exact.
        enc.set_bitrate(opus::Bitrate::Bits(bitrate as i32))
            .map_err(CodecInitError::Opus)?;
        enc.set_inband_fec(false).map_err(CodecInitError::Opus)?;
        enc.set_complexity(i32::from(config.complexity.min(10)))
            .map_err(CodecInitError::Opus)?;
        Ok(Encoder {
            inner: EncoderInner::Opus {
                enc,
                frame: vec![0; FRAME_SAMPLES],
                packet: vec![0; MAX_OPUS_PACKET],
            },
        })
    }

    /// The codec this encoder produces.
    pub fn codec(&self) -> Codec {
        match self.inner {
            EncoderInner::Pcm16 => Codec::Pcm16,
            EncoderInner::Opus { .. } => Codec::Opus,
        }
    }

    /// Samples by which decoded audio lags the input: the codec's algorithmic delay (0 for
    /// pcm16; for Opus libopus' look-ahead, 156 samples = 6.5 ms at 24 kHz in VOIP mode).
    pub fn lookahead(&mut self) -> Result<usize, EncodeError> {
        match &mut self.inner {
            EncoderInner::Pcm16 => Ok(0),
            EncoderInner::Opus { enc, .. } => {
                let n = enc.get_lookahead().map_err(EncodeError::Opus)?;
                Ok(usize::try_from(n).unwrap_or(0))
            }
        }
    }

    /// Encodes one frame and appends the payload to `out`; returns the payload's length.
    ///
    /// A frame is [`FRAME_SAMPLES`] samples. The last frame of a stream may be shorter:
    /// Opus zero-pads it to a whole frame (the decoder then returns a whole frame), pcm16
    /// encodes it as it is, so a pcm16 stream round-trips bit-exactly whatever its length.
    /// pcm16 accepts any length (even empty); Opus takes 1..=[`FRAME_SAMPLES`] samples.
    pub fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<usize, EncodeError> {
        match &mut self.inner {
            EncoderInner::Pcm16 => {
                out.reserve(pcm.len() * 2);
                for s in pcm {
                    out.extend_from_slice(&s.to_le_bytes());
                }
                Ok(pcm.len() * 2)
            }
            EncoderInner::Opus { enc, frame, packet } => {
                if pcm.is_empty() || pcm.len() > FRAME_SAMPLES {
                    return Err(EncodeError::FrameLength {
                        len: pcm.len(),
                        max: FRAME_SAMPLES,
                    });
                }
                let input: &[i16] = if pcm.len() == FRAME_SAMPLES {
                    pcm
                } else {
                    frame[..pcm.len()].copy_from_slice(pcm);
                    frame[pcm.len()..].fill(0);
                    frame
                };
                let n = enc.encode(input, packet).map_err(EncodeError::Opus)?;
                let payload = packet.get(..n).unwrap_or(packet);
                out.extend_from_slice(payload);
                Ok(payload.len())
            }
        }
    }
}

/// Decodes payloads made by an [`Encoder`] of the same [`Codec`].
///
/// Feed payloads in order; call [`Decoder::conceal`] in place of a payload that never came.
#[derive(Debug)]
pub struct Decoder {
    inner: DecoderInner,
}

#[derive(Debug)]
enum DecoderInner {
    Pcm16,
    Opus { dec: opus::Decoder, pcm: Vec<i16> },
}

impl Decoder {
    /// A decoder for `codec`.
    pub fn new(codec: Codec) -> Result<Self, CodecInitError> {
        let inner = match codec {
            Codec::Pcm16 => DecoderInner::Pcm16,
            Codec::Opus => DecoderInner::Opus {
                dec: opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono)
                    .map_err(CodecInitError::Opus)?,
                pcm: vec![0; MAX_OPUS_PACKET_SAMPLES],
            },
        };
        Ok(Decoder { inner })
    }

    /// The codec this decoder reads.
    pub fn codec(&self) -> Codec {
        match self.inner {
            DecoderInner::Pcm16 => Codec::Pcm16,
            DecoderInner::Opus { .. } => Codec::Opus,
        }
    }

    /// Decodes one payload and appends its samples to `out`; returns how many were appended.
    ///
    /// pcm16: `payload.len() / 2` samples, exactly as encoded. Opus: the packet's duration,
    /// [`FRAME_SAMPLES`] for packets from [`Encoder`] (any valid Opus packet up to 120 ms is
    /// accepted). On error nothing is appended.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<usize, DecodeError> {
        match &mut self.inner {
            DecoderInner::Pcm16 => {
                if !payload.len().is_multiple_of(2) {
                    return Err(DecodeError::OddLength { len: payload.len() });
                }
                out.extend(
                    payload
                        .chunks_exact(2)
                        .map(|b| i16::from_le_bytes([b[0], b[1]])),
                );
                Ok(payload.len() / 2)
            }
            DecoderInner::Opus { dec, pcm } => {
                if payload.is_empty() {
                    return Err(DecodeError::Empty);
                }
                if payload.len() > MAX_OPUS_PAYLOAD {
                    return Err(DecodeError::TooLong {
                        len: payload.len(),
                        max: MAX_OPUS_PAYLOAD,
                    });
                }
                let n = dec.decode(payload, pcm, false).map_err(DecodeError::Opus)?;
                let samples = pcm.get(..n).unwrap_or(pcm);
                out.extend_from_slice(samples);
                Ok(samples.len())
            }
        }
    }

    /// Appends one frame ([`FRAME_SAMPLES`] samples) standing in for a lost payload; returns
    /// how many samples were appended.
    ///
    /// Opus runs libopus packet-loss concealment (extrapolates from the previous frames and
    /// keeps the decoder in step); pcm16 has nothing to extrapolate from and appends silence.
    pub fn conceal(&mut self, out: &mut Vec<i16>) -> Result<usize, DecodeError> {
        match &mut self.inner {
            DecoderInner::Pcm16 => {
                out.resize(out.len() + FRAME_SAMPLES, 0);
                Ok(FRAME_SAMPLES)
            }
            DecoderInner::Opus { dec, pcm } => {
                // An empty input is libopus' "packet lost": the frame size must be exactly the
                // missing duration.
                let frame = &mut pcm[..FRAME_SAMPLES];
                let n = dec.decode(&[], frame, false).map_err(DecodeError::Opus)?;
                let samples = frame.get(..n).unwrap_or(frame);
                out.extend_from_slice(samples);
                Ok(samples.len())
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Encodes and decodes `pcm` frame by frame.
    fn round_trip(codec: Codec, pcm: &[i16]) -> Vec<i16> {
        let mut enc = Encoder::new(codec).unwrap();
        let mut dec = Decoder::new(codec).unwrap();
        let mut out = Vec::new();
        for frame in pcm.chunks(FRAME_SAMPLES) {
            let mut payload = Vec::new();
            let n = enc.encode(frame, &mut payload).unwrap();
            assert_eq!(n, payload.len());
            dec.decode(&payload, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn coders_can_move_between_threads() {
        fn send<T: Send>() {}
        send::<Encoder>();
        send::<Decoder>();
        let enc = Encoder::new(Codec::Opus).unwrap();
        let codec = std::thread::spawn(move || enc.codec()).join().unwrap();
        assert_eq!(codec, Codec::Opus);
    }

    #[test]
    fn names_round_trip() {
        for c in Codec::ALL {
            assert_eq!(c.name().parse::<Codec>().unwrap(), c);
            assert_eq!(c.to_string(), c.name());
            assert_eq!(c.frame_samples(), 480);
        }
        let err = "OPUS".parse::<Codec>().unwrap_err();
        assert_eq!(err.0, "OPUS");
        assert!(err.to_string().contains("unknown codec"));
        assert!("".parse::<Codec>().is_err());
    }

    #[test]
    fn pcm16_is_little_endian() {
        let mut enc = Encoder::new(Codec::Pcm16).unwrap();
        let mut out = vec![0xAA];
        assert_eq!(enc.encode(&[1, -2, 0x1234], &mut out).unwrap(), 6);
        assert_eq!(out, [0xAA, 0x01, 0x00, 0xFE, 0xFF, 0x34, 0x12]);
        assert_eq!(enc.lookahead().unwrap(), 0);
    }

    #[test]
    fn pcm16_rejects_odd_payload() {
        let mut dec = Decoder::new(Codec::Pcm16).unwrap();
        let mut out = vec![7];
        let err = dec.decode(&[1, 2, 3], &mut out).unwrap_err();
        assert!(matches!(err, DecodeError::OddLength { len: 3 }));
        assert_eq!(out, [7], "nothing appended on error");
    }

    #[test]
    fn pcm16_conceal_is_one_frame_of_silence() {
        let mut dec = Decoder::new(Codec::Pcm16).unwrap();
        let mut out = vec![5];
        assert_eq!(dec.conceal(&mut out).unwrap(), FRAME_SAMPLES);
        assert_eq!(out.len(), 1 + FRAME_SAMPLES);
        assert!(out[1..].iter().all(|&s| s == 0));
    }

    proptest! {
        #[test]
        fn pcm16_round_trip_is_bit_exact(pcm in proptest::collection::vec(any::<i16>(), 0..2000)) {
            prop_assert_eq!(round_trip(Codec::Pcm16, &pcm), pcm);
        }

        #[test]
        fn pcm16_any_frame_split_is_bit_exact(
            pcm in proptest::collection::vec(any::<i16>(), 0..1500),
            split in 0usize..1500,
        ) {
            let split = split.min(pcm.len());
            let mut enc = Encoder::new(Codec::Pcm16).unwrap();
            let mut dec = Decoder::new(Codec::Pcm16).unwrap();
            let mut payload = Vec::new();
            enc.encode(&pcm[..split], &mut payload).unwrap();
            let mut out = Vec::new();
            dec.decode(&payload, &mut out).unwrap();
            payload.clear();
            enc.encode(&pcm[split..], &mut payload).unwrap();
            dec.decode(&payload, &mut out).unwrap();
            prop_assert_eq!(out, pcm);
        }

        #[test]
        fn opus_decode_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut dec = Decoder::new(Codec::Opus).unwrap();
            let mut out = Vec::new();
            match dec.decode(&payload, &mut out) {
                Ok(n) => prop_assert_eq!(n, out.len()),
                Err(_) => prop_assert!(out.is_empty()),
            }
            // The decoder stays usable afterwards.
            prop_assert_eq!(dec.conceal(&mut out).unwrap(), FRAME_SAMPLES);
        }
    }

    #[test]
    fn opus_frame_length_is_checked() {
        let mut enc = Encoder::new(Codec::Opus).unwrap();
        let mut out = Vec::new();
        let err = enc.encode(&[], &mut out).unwrap_err();
        assert!(matches!(err, EncodeError::FrameLength { len: 0, max: 480 }));
        let err = enc.encode(&[0; 481], &mut out).unwrap_err();
        assert!(matches!(err, EncodeError::FrameLength { len: 481, .. }));
        assert!(out.is_empty());
    }

    /// The complexity reaches libopus: the same speech encodes to other bytes at 0 than at 10,
    /// and both decode.
    #[test]
    fn opus_complexity_is_applied() {
        let speech: Vec<i16> = (0..4_800)
            .map(|i| ((i as f64 * 0.07).sin() * 8_000.0 + (i as f64 * 0.31).sin() * 3_000.0) as i16)
            .collect();
        let encode = |complexity| {
            let mut enc = Encoder::opus(OpusConfig {
                complexity,
                ..OpusConfig::default()
            })
            .unwrap();
            let mut out = Vec::new();
            for frame in speech.chunks_exact(FRAME_SAMPLES) {
                enc.encode(frame, &mut out).unwrap();
            }
            out
        };
        let (low, high) = (encode(0), encode(10));
        assert_ne!(low, high);
        for bytes in [low, high] {
            assert!(!bytes.is_empty());
        }
    }

    #[test]
    fn opus_bitrate_is_checked() {
        for bitrate in [0, 5_999, 510_001] {
            let err = Encoder::opus(OpusConfig::with_bitrate(bitrate)).unwrap_err();
            assert!(
                matches!(err, CodecInitError::BitrateOutOfRange { .. }),
                "{bitrate}"
            );
        }
        assert!(Encoder::opus(OpusConfig::with_bitrate(6_000)).is_ok());
    }

    #[test]
    fn opus_short_final_frame_decodes_to_a_whole_frame() {
        let pcm: Vec<i16> = (0..1000).map(|i| ((i * 37) % 2000) as i16 - 1000).collect();
        let out = round_trip(Codec::Opus, &pcm);
        assert_eq!(out.len(), 3 * FRAME_SAMPLES);
    }

    #[test]
    fn opus_rejects_malformed_payloads() {
        let mut dec = Decoder::new(Codec::Opus).unwrap();
        let mut out = Vec::new();
        assert!(matches!(dec.decode(&[], &mut out), Err(DecodeError::Empty)));
        // TOC code 3 (arbitrary frame count) with a count byte of 0 frames: invalid (RFC 6716
        // §3.2.5: M must not be zero).
        assert!(matches!(
            dec.decode(&[0x03, 0x00], &mut out),
            Err(DecodeError::Opus(_))
        ));
        // Code 3, 48 frames of 20 ms = 960 ms: more than the 120 ms a packet may hold.
        assert!(matches!(
            dec.decode(&[0x0B, 0x30], &mut out),
            Err(DecodeError::Opus(_))
        ));
        // Code 2 (two frames of different sizes) whose first size runs past the end.
        assert!(matches!(
            dec.decode(&[0x02, 0xFB], &mut out),
            Err(DecodeError::Opus(_))
        ));
        let huge = vec![0xFC; MAX_OPUS_PAYLOAD + 1];
        assert!(matches!(
            dec.decode(&huge, &mut out),
            Err(DecodeError::TooLong { .. })
        ));
        assert!(out.is_empty());
        // Still a working decoder.
        let mut enc = Encoder::new(Codec::Opus).unwrap();
        let mut payload = Vec::new();
        enc.encode(&[0; FRAME_SAMPLES], &mut payload).unwrap();
        assert_eq!(dec.decode(&payload, &mut out).unwrap(), FRAME_SAMPLES);
    }

    #[test]
    fn opus_lookahead_is_6_5_ms() {
        let mut enc = Encoder::new(Codec::Opus).unwrap();
        assert_eq!(enc.lookahead().unwrap(), 156);
    }

    #[test]
    fn opus_conceal_returns_one_frame() {
        let mut enc = Encoder::new(Codec::Opus).unwrap();
        let mut dec = Decoder::new(Codec::Opus).unwrap();
        let tone: Vec<i16> = (0..FRAME_SAMPLES * 5)
            .map(|i| (8000.0 * (i as f64 * 0.05).sin()) as i16)
            .collect();
        let mut out = Vec::new();
        for (k, frame) in tone.chunks(FRAME_SAMPLES).enumerate() {
            let mut payload = Vec::new();
            enc.encode(frame, &mut payload).unwrap();
            if k == 3 {
                assert_eq!(dec.conceal(&mut out).unwrap(), FRAME_SAMPLES);
            } else {
                assert_eq!(dec.decode(&payload, &mut out).unwrap(), FRAME_SAMPLES);
            }
        }
        assert_eq!(out.len(), tone.len());
        // Concealment continues the tone rather than going silent.
        let concealed = &out[3 * FRAME_SAMPLES..4 * FRAME_SAMPLES];
        assert!(
            crate::rms_dbfs(concealed) > -30.0,
            "{}",
            crate::rms_dbfs(concealed)
        );
    }
}
