//! voq audio: the codecs, file formats and signal tools behind voq/1's audio streams.
//!
//! - [`Codec`], [`Encoder`], [`Decoder`]: `pcm16` (little-endian 16-bit samples, bit-exact)
//!   and `opus` (libopus, VOIP mode, 32 kbit/s by default, with packet-loss concealment), one
//!   20 ms frame at a time.
//! - [`read_wav`], [`write_wav`] (and `_file` variants): RIFF/WAVE in 8/16/24/32-bit PCM or
//!   32/64-bit float, plain or `WAVE_FORMAT_EXTENSIBLE`, any channel count mixed down to mono.
//! - [`Resampler`], [`resample()`], [`resample_i16`]: windowed-sinc conversion between any two
//!   rates, so a WAV of any rate becomes voq audio ([`Wav::to_mono_24k`]).
//! - [`Vad`]: a sans-IO energy voice-activity detector (speech started / stopped), timed by
//!   sample count, never by a clock.
//! - [`metrics`]: level in dBFS, best-lag cross-correlation, SNR and duration helpers for tests
//!   and benchmarks.
//!
//! # Why 24 kHz mono, 20 ms frames
//!
//! 24 kHz is the rate of the OpenAI Realtime API's `pcm16`, whose event names voq/1 reuses, and
//! one of Opus' native rates (8/12/16/24/48 kHz): no resampling anywhere between a Realtime-style
//! agent, the wire and the codec, and a 12 kHz audio band is more than speech needs. 20 ms
//! ([`FRAME_SAMPLES`] = 480 samples, 960 bytes of pcm16) is Opus' usual voice frame: long enough
//! for good compression and small per-frame overhead, short enough that framing adds little
//! latency, and the quantum in which voq times playback, interruption and VAD.
//!
//! # Example
//!
//! Send a WAV file as Opus frames and watch for speech at the receiver:
//!
//! ```
//! use voq_audio::{Codec, Decoder, Encoder, FRAME_SAMPLES, Vad, VadEvent, read_wav, write_wav};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let tone: Vec<i16> = (0..24_000).map(|i| ((i as f32 * 0.08).sin() * 8000.0) as i16).collect();
//! # let bytes = write_wav(&tone, 48_000)?;
//! let pcm = read_wav(&bytes)?.to_mono_24k()?; // any rate and layout in, 24 kHz mono out
//! let mut enc = Encoder::new(Codec::Opus)?;
//! let mut dec = Decoder::new(Codec::Opus)?;
//! let mut vad = Vad::default();
//! let (mut payload, mut heard) = (Vec::new(), Vec::new());
//! for frame in pcm.chunks(FRAME_SAMPLES) {
//!     payload.clear();
//!     enc.encode(frame, &mut payload)?; // the last, short frame is zero-padded
//!     let start = heard.len();
//!     dec.decode(&payload, &mut heard)?; // or dec.conceal(&mut heard)? if it was lost
//!     if let Some(VadEvent::SpeechStarted { at_ms }) = vad.push(&heard[start..]) {
//!         assert!(at_ms < 100);
//!     }
//! }
//! assert_eq!(heard.len(), pcm.len().div_ceil(FRAME_SAMPLES) * FRAME_SAMPLES);
//! assert!(vad.is_speaking());
//! # Ok(())
//! # }
//! ```
//!
//! Nothing here panics on bad input: malformed WAV bytes, corrupt Opus payloads and wrong frame
//! lengths are errors (one `thiserror` enum per operation).

pub mod codec;
pub mod metrics;
pub mod resample;
pub mod vad;
pub mod wav;

pub use codec::{
    Codec, CodecInitError, DecodeError, Decoder, EncodeError, Encoder, OpusConfig, UnknownCodec,
};
pub use metrics::{best_correlation, rms_dbfs};
pub use resample::{ResampleError, Resampler, resample, resample_i16};
pub use vad::{Vad, VadConfig, VadEvent};
pub use wav::{
    ReadWavError, ReadWavFileError, SampleFormat, Wav, WriteWavError, WriteWavFileError, read_wav,
    read_wav_file, write_wav, write_wav_file,
};

/// voq's audio sample rate: 24 kHz (mono).
pub const SAMPLE_RATE: u32 = 24_000;
/// Duration of one codec frame, in milliseconds.
pub const FRAME_MS: u32 = 20;
/// Samples in one 20 ms frame at 24 kHz.
pub const FRAME_SAMPLES: usize = (SAMPLE_RATE / 1000 * FRAME_MS) as usize;
