//! Audio for the simulated calls: the shared test assets (read at compile time, so a run does no
//! file I/O) and helpers to compare timelines.

use voq_proto::SAMPLE_RATE;

static PROMPT_WAV: &[u8] = include_bytes!("../../../testdata/audio/prompt-carwash-24k.wav");
static REPLY_WAV: &[u8] = include_bytes!("../../../testdata/audio/reply-carwash-24k.wav");

/// The user's prompt: 2.765 s of speech, 24 kHz mono.
pub fn prompt() -> Vec<i16> {
    wav_pcm16(PROMPT_WAV).unwrap_or_default()
}

/// The agent's reply, cut to `ms` (at most its 16 s), 24 kHz mono.
pub fn reply(ms: u64) -> Vec<i16> {
    let mut samples = wav_pcm16(REPLY_WAV).unwrap_or_default();
    samples.truncate((ms * u64::from(SAMPLE_RATE) / 1000) as usize);
    samples
}

/// Synthetic speech-like samples (a deterministic sawtooth), for calls that need no real voice.
pub fn speech(n: usize, seed: i16) -> Vec<i16> {
    (0..n)
        .map(|i| ((i as i32 * 37 + i32::from(seed) * 101) % 20_000 - 10_000) as i16)
        .collect()
}

/// The samples of a RIFF/WAVE file that must be 24 kHz mono pcm16: walks the chunks, checks
/// `fmt `, returns `data`. `None` for anything else.
pub fn wav_pcm16(bytes: &[u8]) -> Option<Vec<i16>> {
    if bytes.get(..4)? != b"RIFF" || bytes.get(8..12)? != b"WAVE" {
        return None;
    }
    let mut pos = 12;
    let mut format_ok = false;
    while pos + 8 <= bytes.len() {
        let id = bytes.get(pos..pos + 4)?;
        let len = u32::from_le_bytes(bytes.get(pos + 4..pos + 8)?.try_into().ok()?) as usize;
        let body = bytes.get(pos + 8..(pos + 8 + len).min(bytes.len()))?;
        if id == b"fmt " {
            let u16_at = |i: usize| Some(u16::from_le_bytes(body.get(i..i + 2)?.try_into().ok()?));
            let rate = u32::from_le_bytes(body.get(4..8)?.try_into().ok()?);
            format_ok =
                u16_at(0)? == 1 && u16_at(2)? == 1 && rate == SAMPLE_RATE && u16_at(14)? == 16;
        } else if id == b"data" {
            return format_ok.then(|| to_samples(body));
        }
        pos += 8 + len + (len & 1);
    }
    None
}

/// pcm16 little-endian bytes of samples.
pub fn to_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// Samples of pcm16 little-endian bytes.
pub fn to_samples(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// FNV-1a over samples: a compact fingerprint of a timeline, for determinism checks.
pub fn fingerprint(samples: &[i16]) -> u64 {
    samples.iter().fold(0xcbf2_9ce4_8422_2325, |h, s| {
        s.to_le_bytes()
            .iter()
            .fold(h, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_assets_read_as_24k_mono() {
        assert_eq!(prompt().len(), 66_359);
        assert_eq!(reply(2000).len(), 48_000);
        assert_eq!(wav_pcm16(b"RIFF\0\0\0\0WAVE"), None);
    }
}
