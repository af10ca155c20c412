//! WAV (RIFF/WAVE) reading and writing.
//!
//! [`read_wav`] accepts integer PCM (8-bit unsigned, 16, 24, 32-bit signed), IEEE float (32,
//! 64-bit), plain or `WAVE_FORMAT_EXTENSIBLE`, with any number of channels, and mixes it down to
//! 16-bit mono ([`Wav::samples`]). 16-bit mono input is returned bit-exactly. Unknown chunks
//! (`LIST`, `fact`, `cue `, …) are skipped, including the pad byte after an odd-sized chunk.
//! Every malformed input is an error, never a panic.
//!
//! [`write_wav`] writes 16-bit PCM mono, the format of the test assets and of voq's pcm16.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::SAMPLE_RATE;
use crate::resample::{ResampleError, resample_i16};

/// A decoded WAV file, mixed down to mono.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Wav {
    /// Sample rate in Hz.
    pub rate: u32,
    /// Channels in the file (the samples here are their average).
    pub channels: u16,
    /// How the samples were stored in the file.
    pub format: SampleFormat,
    /// Mono samples: the average of all channels, rounded to 16 bits.
    pub samples: Vec<i16>,
}

/// A WAV file's sample encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SampleFormat {
    /// Unsigned 8-bit integers (offset 128).
    U8,
    /// Signed 16-bit little-endian integers.
    I16,
    /// Signed 24-bit little-endian integers.
    I24,
    /// Signed 32-bit little-endian integers.
    I32,
    /// IEEE 754 32-bit floats, full scale ±1.0.
    F32,
    /// IEEE 754 64-bit floats, full scale ±1.0.
    F64,
}

impl SampleFormat {
    fn bytes(self) -> usize {
        match self {
            SampleFormat::U8 => 1,
            SampleFormat::I16 => 2,
            SampleFormat::I24 => 3,
            SampleFormat::I32 | SampleFormat::F32 => 4,
            SampleFormat::F64 => 8,
        }
    }

    /// One sample at the start of `b` (at least `self.bytes()` long), scaled to the i16 range.
    fn value(self, b: &[u8]) -> f64 {
        match (self, b) {
            (SampleFormat::U8, [x, ..]) => (f64::from(*x) - 128.0) * 256.0,
            (SampleFormat::I16, [a, b, ..]) => f64::from(i16::from_le_bytes([*a, *b])),
            (SampleFormat::I24, [a, b, c, ..]) => {
                f64::from(i32::from_le_bytes([0, *a, *b, *c]) >> 8) / 256.0
            }
            (SampleFormat::I32, [a, b, c, d, ..]) => {
                f64::from(i32::from_le_bytes([*a, *b, *c, *d])) / 65536.0
            }
            (SampleFormat::F32, [a, b, c, d, ..]) => {
                f64::from(f32::from_le_bytes([*a, *b, *c, *d])) * 32768.0
            }
            (SampleFormat::F64, [a, b, c, d, e, f, g, h, ..]) => {
                f64::from_le_bytes([*a, *b, *c, *d, *e, *f, *g, *h]) * 32768.0
            }
            _ => 0.0,
        }
    }
}

impl Wav {
    /// Duration of the audio.
    pub fn duration(&self) -> Duration {
        crate::metrics::duration(self.samples.len(), self.rate)
    }

    /// The audio as voq sends it: mono at [`SAMPLE_RATE`] (24 kHz), resampled if the file's
    /// rate differs. A 24 kHz file's samples are returned untouched.
    pub fn to_mono_24k(&self) -> Result<Vec<i16>, ResampleError> {
        if self.rate == SAMPLE_RATE {
            return Ok(self.samples.clone());
        }
        resample_i16(&self.samples, self.rate, SAMPLE_RATE)
    }
}

/// Why bytes could not be read as a WAV file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadWavError {
    /// The input does not start with `RIFF`…`WAVE`.
    #[error("not a RIFF/WAVE file")]
    NotWave,
    /// The input ends inside a chunk header or a chunk.
    #[error("truncated: chunk {chunk:?} at byte {offset} claims {size} bytes, {available} left")]
    Truncated {
        /// The chunk's id, lossily as text.
        chunk: String,
        /// Offset of the chunk header.
        offset: usize,
        /// Size the header claims.
        size: u64,
        /// Bytes actually left after the header.
        available: usize,
    },
    /// No `fmt ` chunk.
    #[error("no fmt chunk")]
    MissingFormat,
    /// No `data` chunk.
    #[error("no data chunk")]
    MissingData,
    /// The `fmt ` chunk is too short for its format.
    #[error("fmt chunk too short ({len} bytes)")]
    FormatTooShort {
        /// Length of the fmt chunk.
        len: usize,
    },
    /// A sample encoding this reader does not handle (compressed formats, odd bit depths).
    #[error("unsupported sample format: tag {tag:#06x}, {bits} bits")]
    UnsupportedFormat {
        /// The format tag (after resolving `WAVE_FORMAT_EXTENSIBLE`'s sub-format).
        tag: u16,
        /// Bits per sample (the container size).
        bits: u16,
    },
    /// The fmt chunk declares zero channels.
    #[error("zero channels")]
    ZeroChannels,
    /// The fmt chunk declares a sample rate of 0 Hz.
    #[error("sample rate is zero")]
    ZeroRate,
    /// The block alignment does not match channels × bytes per sample.
    #[error("block align {block_align} does not match {channels} channels of {bits} bits")]
    BlockAlign {
        /// Declared block alignment.
        block_align: u16,
        /// Declared channels.
        channels: u16,
        /// Declared bits per sample.
        bits: u16,
    },
}

/// Why a WAV file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadWavFileError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a WAV file voq can read.
    #[error("cannot parse {path} as WAV")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: ReadWavError,
    },
}

/// Why samples could not be written as WAV.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteWavError {
    /// The rate is 0 Hz, or so high that the byte rate overflows the header's 32 bits.
    #[error("sample rate {rate} Hz cannot be written (must be 1..=2147483647)")]
    InvalidRate {
        /// The rate given.
        rate: u32,
    },
    /// More samples than a RIFF file's 32-bit sizes can describe.
    #[error("{samples} samples do not fit in a WAV file")]
    TooLong {
        /// Samples given.
        samples: usize,
    },
}

/// Why a WAV file could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteWavFileError {
    /// The samples cannot be written as WAV.
    #[error(transparent)]
    Wav(#[from] WriteWavError),
    /// The file could not be written.
    #[error("cannot write {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

const WAVE_FORMAT_PCM: u16 = 0x0001;
const WAVE_FORMAT_IEEE_FLOAT: u16 = 0x0003;
const WAVE_FORMAT_EXTENSIBLE: u16 = 0xFFFE;
/// The tail shared by every `KSDATAFORMAT_SUBTYPE_*` GUID; the first two bytes are the tag.
const SUBTYPE_GUID_TAIL: [u8; 14] = [
    0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
];
/// Data sizes written by tools that stream a WAV header to a pipe and cannot seek back to fix
/// it (0xFFFFFFFF: ffmpeg, sox; 0x7FFFF000: espeak-ng `--stdout`). A `data` chunk declaring one
/// of these runs to the end of the input.
const STREAMING_DATA_SIZES: [u32; 2] = [0xFFFF_FFFF, 0x7FFF_F000];

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Parses a WAV file held in memory and mixes it down to mono.
///
/// The RIFF size field is not trusted beyond the input's end (many writers get it wrong); every
/// chunk must fit in the input, except a `data` chunk with a streaming placeholder size.
pub fn read_wav(bytes: &[u8]) -> Result<Wav, ReadWavError> {
    if bytes.get(0..4) != Some(b"RIFF") || bytes.get(8..12) != Some(b"WAVE") {
        return Err(ReadWavError::NotWave);
    }
    let riff_size = u32_at(bytes, 4).ok_or(ReadWavError::NotWave)?;
    // A RIFF size too small to hold even "WAVE" is a placeholder: read to the end.
    let riff_end = usize::try_from(riff_size)
        .ok()
        .filter(|&s| s >= 4)
        .and_then(|s| s.checked_add(8))
        .map_or(bytes.len(), |end| end.min(bytes.len()));

    let mut fmt: Option<&[u8]> = None;
    let mut data: Option<&[u8]> = None;
    let mut at = 12;
    while at + 8 <= riff_end && (fmt.is_none() || data.is_none()) {
        let id = &bytes[at..at + 4];
        let size = u32_at(bytes, at + 4).unwrap_or(0);
        let body = at + 8;
        let available = bytes.len() - body;
        let len = match usize::try_from(size) {
            Ok(len) if len <= available => len,
            _ if id == b"data" && STREAMING_DATA_SIZES.contains(&size) => available,
            _ => {
                return Err(ReadWavError::Truncated {
                    chunk: String::from_utf8_lossy(id).into_owned(),
                    offset: at,
                    size: u64::from(size),
                    available,
                });
            }
        };
        let chunk = &bytes[body..body + len];
        match id {
            b"fmt " if fmt.is_none() => fmt = Some(chunk),
            b"data" if data.is_none() => data = Some(chunk),
            _ => {}
        }
        // Chunks are padded to an even length (the pad byte is not counted in the size).
        at = body + len + (len & 1);
    }
    if at < riff_end && at + 8 > riff_end && (fmt.is_none() || data.is_none()) {
        return Err(ReadWavError::Truncated {
            chunk: String::from_utf8_lossy(&bytes[at..riff_end]).into_owned(),
            offset: at,
            size: 8,
            available: riff_end - at,
        });
    }
    let fmt = fmt.ok_or(ReadWavError::MissingFormat)?;
    let data = data.ok_or(ReadWavError::MissingData)?;

    let too_short = ReadWavError::FormatTooShort { len: fmt.len() };
    let tag = u16_at(fmt, 0).ok_or(too_short.clone())?;
    let channels = u16_at(fmt, 2).ok_or(too_short.clone())?;
    let rate = u32_at(fmt, 4).ok_or(too_short.clone())?;
    let block_align = u16_at(fmt, 12).ok_or(too_short.clone())?;
    let bits = u16_at(fmt, 14).ok_or(too_short.clone())?;
    let tag = if tag == WAVE_FORMAT_EXTENSIBLE {
        // cbSize(2) validBits(2) channelMask(4) subFormat GUID(16), after the 16-byte base.
        let guid = fmt.get(24..40).ok_or(too_short)?;
        if guid[2..] != SUBTYPE_GUID_TAIL {
            return Err(ReadWavError::UnsupportedFormat { tag, bits });
        }
        u16::from_le_bytes([guid[0], guid[1]])
    } else {
        tag
    };
    let format = match (tag, bits) {
        (WAVE_FORMAT_PCM, 8) => SampleFormat::U8,
        (WAVE_FORMAT_PCM, 16) => SampleFormat::I16,
        (WAVE_FORMAT_PCM, 24) => SampleFormat::I24,
        (WAVE_FORMAT_PCM, 32) => SampleFormat::I32,
        (WAVE_FORMAT_IEEE_FLOAT, 32) => SampleFormat::F32,
        (WAVE_FORMAT_IEEE_FLOAT, 64) => SampleFormat::F64,
        _ => return Err(ReadWavError::UnsupportedFormat { tag, bits }),
    };
    if channels == 0 {
        return Err(ReadWavError::ZeroChannels);
    }
    if rate == 0 {
        return Err(ReadWavError::ZeroRate);
    }
    let frame_bytes = usize::from(channels) * format.bytes();
    if usize::from(block_align) != frame_bytes {
        return Err(ReadWavError::BlockAlign {
            block_align,
            channels,
            bits,
        });
    }

    // A trailing partial frame (a writer's bug) is dropped.
    let width = format.bytes();
    let samples = data
        .chunks_exact(frame_bytes)
        .map(|frame| {
            let sum: f64 = frame.chunks_exact(width).map(|s| format.value(s)).sum();
            let mean = sum / f64::from(channels);
            // NaN (from a float file) saturates to 0, out-of-range values to the i16 limits.
            mean.round().clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16
        })
        .collect();
    Ok(Wav {
        rate,
        channels,
        format,
        samples,
    })
}

/// Reads and parses a WAV file; see [`read_wav`].
pub fn read_wav_file(path: impl AsRef<Path>) -> Result<Wav, ReadWavFileError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| ReadWavFileError::Io {
        path: path.to_owned(),
        source,
    })?;
    read_wav(&bytes).map_err(|source| ReadWavFileError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// Serialises mono 16-bit samples as a canonical 44-byte-header PCM WAV file.
pub fn write_wav(samples: &[i16], rate: u32) -> Result<Vec<u8>, WriteWavError> {
    let byte_rate = rate
        .checked_mul(2)
        .filter(|_| rate > 0)
        .ok_or(WriteWavError::InvalidRate { rate })?;
    let too_long = WriteWavError::TooLong {
        samples: samples.len(),
    };
    let data_len = samples
        .len()
        .checked_mul(2)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| n.checked_add(36).is_some())
        .ok_or(too_long)?;
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVE");
    out.extend_from_slice(b"fmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&WAVE_FORMAT_PCM.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // channels
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&byte_rate.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes()); // block align
    out.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    Ok(out)
}

/// Writes mono 16-bit samples to a WAV file; see [`write_wav`].
pub fn write_wav_file(
    path: impl AsRef<Path>,
    samples: &[i16],
    rate: u32,
) -> Result<(), WriteWavFileError> {
    let path = path.as_ref();
    let bytes = write_wav(samples, rate)?;
    std::fs::write(path, bytes).map_err(|source| WriteWavFileError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Builds a WAV file from a fmt chunk body and data, with optional extra chunks before fmt.
    fn build(extra: &[(&[u8; 4], &[u8])], fmt: &[u8], data: &[u8]) -> Vec<u8> {
        let mut body = b"WAVE".to_vec();
        let mut chunk = |id: &[u8; 4], payload: &[u8]| {
            body.extend_from_slice(id);
            body.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            body.extend_from_slice(payload);
            if payload.len() % 2 == 1 {
                body.push(0);
            }
        };
        for (id, payload) in extra {
            chunk(id, payload);
        }
        chunk(b"fmt ", fmt);
        chunk(b"data", data);
        let mut out = b"RIFF".to_vec();
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn fmt_chunk(tag: u16, channels: u16, rate: u32, bits: u16) -> Vec<u8> {
        let align = channels * bits / 8;
        let mut f = Vec::new();
        f.extend_from_slice(&tag.to_le_bytes());
        f.extend_from_slice(&channels.to_le_bytes());
        f.extend_from_slice(&rate.to_le_bytes());
        f.extend_from_slice(&(rate * u32::from(align)).to_le_bytes());
        f.extend_from_slice(&align.to_le_bytes());
        f.extend_from_slice(&bits.to_le_bytes());
        f
    }

    fn extensible(sub_tag: u16, channels: u16, rate: u32, bits: u16) -> Vec<u8> {
        let mut f = fmt_chunk(WAVE_FORMAT_EXTENSIBLE, channels, rate, bits);
        f.extend_from_slice(&22u16.to_le_bytes()); // cbSize
        f.extend_from_slice(&bits.to_le_bytes()); // valid bits
        f.extend_from_slice(&3u32.to_le_bytes()); // channel mask: FL | FR
        f.extend_from_slice(&sub_tag.to_le_bytes());
        f.extend_from_slice(&SUBTYPE_GUID_TAIL);
        f
    }

    #[test]
    fn round_trip() {
        let samples: Vec<i16> = vec![0, 1, -1, i16::MAX, i16::MIN, 1234];
        let bytes = write_wav(&samples, 24_000).unwrap();
        assert_eq!(bytes.len(), 44 + 12);
        let wav = read_wav(&bytes).unwrap();
        assert_eq!(wav.samples, samples);
        assert_eq!(
            (wav.rate, wav.channels, wav.format),
            (24_000, 1, SampleFormat::I16)
        );
        assert_eq!(wav.to_mono_24k().unwrap(), samples);
    }

    proptest! {
        #[test]
        fn round_trip_any(samples in proptest::collection::vec(any::<i16>(), 0..3000),
                          rate in 1u32..400_000) {
            let wav = read_wav(&write_wav(&samples, rate).unwrap()).unwrap();
            prop_assert_eq!(wav.rate, rate);
            prop_assert_eq!(wav.samples, samples);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = read_wav(&bytes);
        }

        #[test]
        fn never_panics_on_plausible_headers(
            tail in proptest::collection::vec(any::<u8>(), 0..200),
            cut in 0usize..120,
        ) {
            // Valid magic and chunk structure with random contents, then truncated anywhere.
            let mut bytes = build(&[(b"LIST", &tail[..])], &fmt_chunk(1, 2, 48_000, 16), &tail);
            let cut = cut.min(bytes.len());
            bytes.truncate(bytes.len() - cut);
            let _ = read_wav(&bytes);
        }

        #[test]
        fn never_panics_on_random_fmt(fmt in proptest::collection::vec(any::<u8>(), 0..48),
                                      data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = read_wav(&build(&[], &fmt, &data));
        }
    }

    #[test]
    fn skips_unknown_and_odd_chunks() {
        let data: Vec<u8> = [100i16, -200, 300]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let bytes = build(
            &[(b"LIST", b"INFOabc"), (b"junk", b"")],
            &fmt_chunk(1, 1, 24_000, 16),
            &data,
        );
        assert_eq!(read_wav(&bytes).unwrap().samples, [100, -200, 300]);
    }

    #[test]
    fn data_before_fmt() {
        let mut bytes = b"RIFF\0\0\0\0WAVE".to_vec();
        bytes.extend_from_slice(b"data\x02\0\0\0\x10\x00");
        bytes.extend_from_slice(b"fmt \x10\0\0\0");
        bytes.extend_from_slice(&fmt_chunk(1, 1, 8_000, 16));
        let len = bytes.len() as u32 - 8;
        bytes[4..8].copy_from_slice(&len.to_le_bytes());
        let wav = read_wav(&bytes).unwrap();
        assert_eq!((wav.rate, wav.samples.as_slice()), (8_000, &[16][..]));
    }

    #[test]
    fn stereo_is_averaged() {
        let data: Vec<u8> = [1000i16, 3000, -5, -6, i16::MAX, i16::MAX]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let wav = read_wav(&build(&[], &fmt_chunk(1, 2, 44_100, 16), &data)).unwrap();
        assert_eq!(wav.channels, 2);
        assert_eq!(wav.samples, [2000, -6, i16::MAX]); // -5.5 rounds away from zero
    }

    #[test]
    fn float32_stereo() {
        let data: Vec<u8> = [
            0.5f32,
            0.5,
            -1.0,
            -1.0,
            2.0,
            2.0,
            f32::NAN,
            0.0,
            0.25,
            -0.25,
        ]
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
        let wav = read_wav(&build(&[], &fmt_chunk(3, 2, 48_000, 32), &data)).unwrap();
        assert_eq!(wav.format, SampleFormat::F32);
        assert_eq!(wav.samples, [16384, -32768, 32767, 0, 0]);
    }

    #[test]
    fn extensible_float_and_pcm() {
        let data: Vec<u8> = [0.5f32, -0.5]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let wav = read_wav(&build(&[], &extensible(3, 2, 48_000, 32), &data)).unwrap();
        assert_eq!(
            (wav.format, wav.samples.as_slice()),
            (SampleFormat::F32, &[0][..])
        );

        let data: Vec<u8> = [7i16, 9].iter().flat_map(|s| s.to_le_bytes()).collect();
        let wav = read_wav(&build(&[], &extensible(1, 2, 16_000, 16), &data)).unwrap();
        assert_eq!(
            (wav.format, wav.samples.as_slice()),
            (SampleFormat::I16, &[8][..])
        );

        // A sub-format GUID that is not a KSDATAFORMAT_SUBTYPE.
        let mut f = extensible(1, 2, 16_000, 16);
        f[30] ^= 0xFF;
        let err = read_wav(&build(&[], &f, &data)).unwrap_err();
        assert!(
            matches!(err, ReadWavError::UnsupportedFormat { .. }),
            "{err}"
        );
        // Too short for the sub-format.
        let f = &extensible(1, 2, 16_000, 16)[..30];
        let err = read_wav(&build(&[], f, &data)).unwrap_err();
        assert!(
            matches!(err, ReadWavError::FormatTooShort { len: 30 }),
            "{err}"
        );
    }

    #[test]
    fn other_depths() {
        // 8-bit unsigned, 24-bit and 32-bit signed, 64-bit float, all mono.
        let cases: [(u16, u16, Vec<u8>, Vec<i16>); 4] = [
            (1, 8, vec![128, 255, 0], vec![0, 32512, -32768]),
            (
                1,
                24,
                vec![0x80, 0x34, 0x12, 0x00, 0x00, 0x80],
                vec![0x1235, -32768],
            ),
            (1, 32, (-65536i32 * 3).to_le_bytes().to_vec(), vec![-3]),
            (3, 64, 0.25f64.to_le_bytes().to_vec(), vec![8192]),
        ];
        for (tag, bits, data, want) in cases {
            let wav = read_wav(&build(&[], &fmt_chunk(tag, 1, 8_000, bits), &data)).unwrap();
            assert_eq!(wav.samples, want, "tag {tag} bits {bits}");
        }
    }

    #[test]
    fn malformed() {
        let good = write_wav(&[1, 2, 3, 4], 24_000).unwrap();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("wrong magic", {
                let mut b = good.clone();
                b[0..4].copy_from_slice(b"RIFX");
                b
            }),
            ("not WAVE", {
                let mut b = good.clone();
                b[8..12].copy_from_slice(b"AVI ");
                b
            }),
            ("header only", good[..12].to_vec()),
            ("cut in chunk header", good[..16].to_vec()),
            ("cut in data", good[..good.len() - 1].to_vec()),
            ("huge data size", {
                let mut b = good.clone();
                b[40..44].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
                b
            }),
            ("huge fmt size", {
                let mut b = good.clone();
                b[16..20].copy_from_slice(&0x7FFF_FFFFu32.to_le_bytes());
                b
            }),
            (
                "zero channels",
                build(&[], &fmt_chunk(1, 0, 24_000, 16), &[0, 0]),
            ),
            ("zero rate", build(&[], &fmt_chunk(1, 1, 0, 16), &[0, 0])),
            ("mu-law", build(&[], &fmt_chunk(7, 1, 8_000, 8), &[0])),
            ("12-bit", build(&[], &fmt_chunk(1, 1, 8_000, 12), &[0, 0])),
            ("short fmt", build(&[], &[1, 0, 1, 0], &[0, 0])),
            ("no data", {
                let mut b = build(&[], &fmt_chunk(1, 1, 8_000, 16), &[]);
                b.truncate(b.len() - 8);
                let len = b.len() as u32 - 8;
                b[4..8].copy_from_slice(&len.to_le_bytes());
                b
            }),
            (
                "no fmt",
                build(&[], &[], &[]).into_iter().take(12).collect(),
            ),
            ("bad block align", {
                let mut f = fmt_chunk(1, 2, 8_000, 16);
                f[12] = 2;
                build(&[], &f, &[0, 0, 0, 0])
            }),
        ];
        for (name, bytes) in cases {
            assert!(read_wav(&bytes).is_err(), "{name} should be rejected");
        }
        let err = read_wav(&build(&[], &fmt_chunk(1, 0, 24_000, 16), &[])).unwrap_err();
        assert_eq!(err, ReadWavError::ZeroChannels);
        let mut b = good.clone();
        b[40..44].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        assert!(matches!(
            read_wav(&b),
            Err(ReadWavError::Truncated {
                size: 0xFFFF_FFF0,
                ..
            })
        ));
    }

    #[test]
    fn streaming_data_size_runs_to_the_end() {
        // As `espeak-ng --stdout` writes it: sizes never patched.
        let mut b = write_wav(&[5, -5, 7], 22_050).unwrap();
        b[4..8].copy_from_slice(&0x7FFF_F024u32.to_le_bytes());
        b[40..44].copy_from_slice(&0x7FFF_F000u32.to_le_bytes());
        assert_eq!(read_wav(&b).unwrap().samples, [5, -5, 7]);
        b[40..44].copy_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
        assert_eq!(read_wav(&b).unwrap().samples, [5, -5, 7]);
    }

    #[test]
    fn write_errors() {
        assert_eq!(
            write_wav(&[1], 0),
            Err(WriteWavError::InvalidRate { rate: 0 })
        );
        // The largest rate whose byte rate still fits in 32 bits.
        assert!(write_wav(&[1], u32::MAX / 2).is_ok());
        let rate = u32::MAX / 2 + 1;
        assert_eq!(
            write_wav(&[1], rate),
            Err(WriteWavError::InvalidRate { rate })
        );
    }

    #[test]
    fn file_helpers() {
        let dir = std::env::temp_dir().join(format!("voq-audio-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.wav");
        write_wav_file(&path, &[3, 2, 1], 16_000).unwrap();
        let wav = read_wav_file(&path).unwrap();
        assert_eq!((wav.rate, wav.samples.as_slice()), (16_000, &[3, 2, 1][..]));
        std::fs::write(&path, b"RIFF").unwrap();
        assert!(matches!(
            read_wav_file(&path),
            Err(ReadWavFileError::Parse { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
        let err = read_wav_file(dir.join("missing.wav")).unwrap_err();
        assert!(matches!(err, ReadWavFileError::Io { .. }));
        assert!(err.to_string().contains("missing.wav"));
    }
}
