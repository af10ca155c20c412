//! Energy voice-activity detection, sans-IO.
//!
//! [`Vad`] is fed consecutive frames (normally 20 ms of 24 kHz audio) and tells when speech
//! starts and stops. It reads no clock: time is the number of samples pushed so far, so the
//! same input always gives the same events, whether it arrives in real time or from a file.
//!
//! A frame is *voiced* when its RMS level exceeds the threshold: the fixed
//! [`VadConfig::threshold_dbfs`], raised to the noise floor plus [`VadConfig::noise_margin_db`]
//! in a noisy room. The noise floor is the quietest frame of the last [`NOISE_WINDOW_MS`]
//! (speech has pauses, noise has none); it is used once that much audio has been seen.
//!
//! Speech starts after [`VadConfig::min_speech_ms`] of consecutive voiced frames and stops
//! after [`VadConfig::hangover_ms`] without one. Events carry the time the speech itself
//! started (first voiced frame) or ended (end of the last voiced frame), so the stop event is
//! reported `hangover_ms` after its `at_ms`, the start event `min_speech_ms` after its `at_ms`.

use std::collections::VecDeque;

use crate::SAMPLE_RATE;
use crate::metrics::rms_dbfs;

/// How much audio the noise floor is the minimum of, in milliseconds.
pub const NOISE_WINDOW_MS: u32 = 3_000;
/// Frame levels are clamped to this, so digital silence (−∞ dBFS) stays comparable.
const FLOOR_DBFS: f32 = -120.0;

/// [`Vad`] settings. The defaults suit speech captured at normal level.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadConfig {
    /// Frames louder than this (RMS, dBFS; a full-scale sine is −3 dBFS) may be speech.
    /// Default −40 dBFS.
    pub threshold_dbfs: f32,
    /// If set, the threshold rises to the noise floor plus this many dB when that is higher
    /// than `threshold_dbfs`. `None` keeps the threshold fixed. Default 10 dB.
    pub noise_margin_db: Option<f32>,
    /// Voiced audio needed, without a break, before speech counts as started; shorter clicks
    /// and bumps are ignored. Default 80 ms (4 frames).
    pub min_speech_ms: u32,
    /// Unvoiced audio after which speech counts as stopped; pauses between words are shorter.
    /// Default 500 ms.
    pub hangover_ms: u32,
}

impl Default for VadConfig {
    fn default() -> Self {
        VadConfig {
            threshold_dbfs: -40.0,
            noise_margin_db: Some(10.0),
            min_speech_ms: 80,
            hangover_ms: 500,
        }
    }
}

/// A change in speech activity. Times are milliseconds of audio since the first sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VadEvent {
    /// Speech began at `at_ms` (the start of its first voiced frame).
    SpeechStarted {
        /// Where the speech starts.
        at_ms: u64,
    },
    /// Speech ended at `at_ms` (the end of its last voiced frame).
    SpeechStopped {
        /// Where the speech ends.
        at_ms: u64,
    },
}

/// An energy voice-activity detector for 24 kHz mono audio; see the [module docs](self).
///
/// Call order: [`Vad::push`] every frame in order, acting on the event it returns; at the end
/// of the input, [`Vad::finish`] closes speech that is still going on.
#[derive(Debug, Clone)]
pub struct Vad {
    config: VadConfig,
    /// Samples pushed so far.
    now: u64,
    speaking: bool,
    /// Start (in samples) of the current run of voiced frames while not speaking.
    run_start: Option<u64>,
    /// End (in samples) of the last voiced frame while speaking.
    voiced_end: u64,
    /// (end in samples, level in dBFS) of the frames in the noise window.
    levels: VecDeque<(u64, f32)>,
}

impl Vad {
    /// A detector with `config`.
    pub fn new(config: VadConfig) -> Self {
        Vad {
            config,
            now: 0,
            speaking: false,
            run_start: None,
            voiced_end: 0,
            levels: VecDeque::new(),
        }
    }

    /// Classifies the next frame and returns the event it causes, if any.
    ///
    /// Frames are normally [`FRAME_SAMPLES`](crate::FRAME_SAMPLES) long; any length works
    /// (time advances by the frame's length), an empty frame does nothing.
    pub fn push(&mut self, frame: &[i16]) -> Option<VadEvent> {
        if frame.is_empty() {
            return None;
        }
        let start = self.now;
        let end = start + frame.len() as u64;
        self.now = end;
        let level = rms_dbfs(frame).max(FLOOR_DBFS);
        self.track_noise(end, level);
        let voiced = level > self.threshold_dbfs();

        if self.speaking {
            if voiced {
                self.voiced_end = end;
            } else if end - self.voiced_end >= ms_to_samples(self.config.hangover_ms) {
                self.speaking = false;
                return Some(VadEvent::SpeechStopped {
                    at_ms: samples_to_ms(self.voiced_end),
                });
            }
            return None;
        }
        if !voiced {
            self.run_start = None;
            return None;
        }
        let run_start = *self.run_start.get_or_insert(start);
        if end - run_start >= ms_to_samples(self.config.min_speech_ms) {
            self.speaking = true;
            self.run_start = None;
            self.voiced_end = end;
            return Some(VadEvent::SpeechStarted {
                at_ms: samples_to_ms(run_start),
            });
        }
        None
    }

    /// Ends the input: if speech is going on, it stops at the end of its last voiced frame.
    /// The detector is then ready for more input, continuing the same timeline.
    pub fn finish(&mut self) -> Option<VadEvent> {
        self.run_start = None;
        if !self.speaking {
            return None;
        }
        self.speaking = false;
        Some(VadEvent::SpeechStopped {
            at_ms: samples_to_ms(self.voiced_end),
        })
    }

    /// Whether speech is going on (started and not yet stopped).
    pub fn is_speaking(&self) -> bool {
        self.speaking
    }

    /// Milliseconds of audio pushed so far.
    pub fn elapsed_ms(&self) -> u64 {
        samples_to_ms(self.now)
    }

    /// The threshold in force now, in dBFS.
    pub fn threshold_dbfs(&self) -> f32 {
        let fixed = self.config.threshold_dbfs;
        let Some(margin) = self.config.noise_margin_db else {
            return fixed;
        };
        // Only once the window spans a full NOISE_WINDOW_MS: before that, the quietest frame
        // may be speech.
        if self.now < ms_to_samples(NOISE_WINDOW_MS) {
            return fixed;
        }
        let floor = self
            .levels
            .iter()
            .map(|&(_, l)| l)
            .fold(f32::INFINITY, f32::min);
        fixed.max(floor + margin)
    }

    fn track_noise(&mut self, end: u64, level: f32) {
        if self.config.noise_margin_db.is_none() {
            return;
        }
        self.levels.push_back((end, level));
        let window = ms_to_samples(NOISE_WINDOW_MS);
        while self
            .levels
            .front()
            .is_some_and(|&(e, _)| end.saturating_sub(e) >= window)
        {
            self.levels.pop_front();
        }
    }
}

impl Default for Vad {
    fn default() -> Self {
        Vad::new(VadConfig::default())
    }
}

fn ms_to_samples(ms: u32) -> u64 {
    u64::from(ms) * u64::from(SAMPLE_RATE) / 1000
}

fn samples_to_ms(samples: u64) -> u64 {
    samples * 1000 / u64::from(SAMPLE_RATE)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::FRAME_SAMPLES;

    /// A tone of `amp` (peak) at 24 kHz, `ms` long.
    fn tone(ms: usize, amp: f64) -> Vec<i16> {
        (0..ms * 24)
            .map(|i| {
                (amp * (i as f64 * 2.0 * std::f64::consts::PI * 300.0 / 24_000.0).sin()) as i16
            })
            .collect()
    }

    /// Deterministic white-ish noise of peak `amp` (xorshift).
    fn noise(ms: usize, amp: f64, seed: &mut u64) -> Vec<i16> {
        (0..ms * 24)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                ((*seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * amp
            })
            .map(|v| v as i16)
            .collect()
    }

    /// Runs the VAD over `pcm` in 20 ms frames: (emitted at ms, event).
    fn run(config: VadConfig, pcm: &[i16]) -> Vec<(u64, VadEvent)> {
        let mut vad = Vad::new(config);
        let mut events: Vec<_> = pcm
            .chunks(FRAME_SAMPLES)
            .filter_map(|f| vad.push(f).map(|e| (vad.elapsed_ms(), e)))
            .collect();
        events.extend(vad.finish().map(|e| (vad.elapsed_ms(), e)));
        events
    }

    #[test]
    fn silence_has_no_events() {
        assert!(run(VadConfig::default(), &vec![0; 24_000 * 5]).is_empty());
        // Quiet noise (peak -50 dBFS) is not speech either.
        let quiet = noise(5_000, 100.0, &mut 1);
        assert!(run(VadConfig::default(), &quiet).is_empty());
    }

    #[test]
    fn tone_burst_in_silence() {
        // 1.01 s silence, 1 s tone at -10 dBFS, 2 s silence.
        let mut pcm = vec![0; 24 * 1010];
        pcm.extend(tone(1000, 10_000.0));
        pcm.extend(vec![0; 24 * 2000]);
        let events = run(VadConfig::default(), &pcm);
        assert_eq!(events.len(), 2, "{events:?}");
        // The frame 1000..1020 ms is half tone: voiced.
        assert_eq!(events[0].1, VadEvent::SpeechStarted { at_ms: 1000 });
        assert_eq!(events[0].0, 1080, "reported after min_speech_ms");
        // The tone ends at 2010 ms, inside the frame 2000..2020.
        assert_eq!(events[1].1, VadEvent::SpeechStopped { at_ms: 2020 });
        assert_eq!(events[1].0, 2520, "reported after the hangover");
    }

    #[test]
    fn clicks_and_short_pauses() {
        // A 40 ms click is shorter than min_speech_ms: ignored.
        let mut pcm = vec![0; 24 * 500];
        pcm.extend(tone(40, 10_000.0));
        pcm.extend(vec![0; 24 * 1000]);
        // Two words with a 300 ms pause (shorter than the hangover): one utterance.
        pcm.extend(tone(400, 10_000.0));
        pcm.extend(vec![0; 24 * 300]);
        pcm.extend(tone(400, 10_000.0));
        // Ends while speaking: finish() closes it.
        let events = run(VadConfig::default(), &pcm);
        assert_eq!(
            events.iter().map(|e| e.1).collect::<Vec<_>>(),
            [
                VadEvent::SpeechStarted { at_ms: 1540 },
                VadEvent::SpeechStopped { at_ms: 2640 }
            ]
        );
        assert_eq!(events[1].0, 2640, "finish() reports at once");
    }

    #[test]
    fn adaptive_threshold_ignores_steady_noise() {
        // Noise at about -35 dBFS RMS (above the fixed -40 dBFS), 5 s of it, then a -10 dBFS
        // burst in it, then more noise.
        let mut seed = 0x1234_5678;
        let mut pcm = noise(5_000, 1_000.0, &mut seed);
        let mut burst = tone(1_000, 10_000.0);
        for (b, n) in burst.iter_mut().zip(noise(1_000, 1_000.0, &mut seed)) {
            *b = b.saturating_add(n);
        }
        pcm.extend(burst);
        pcm.extend(noise(3_000, 1_000.0, &mut seed));

        let events = run(VadConfig::default(), &pcm);
        // The noise starts "speech" under the fixed threshold, which stops once the window has
        // learnt the noise floor; then the burst is found exactly.
        assert_eq!(events.len(), 4, "{events:?}");
        assert_eq!(events[0].1, VadEvent::SpeechStarted { at_ms: 0 });
        assert!(matches!(events[1].1, VadEvent::SpeechStopped { at_ms } if at_ms < 5_000));
        assert_eq!(events[2].1, VadEvent::SpeechStarted { at_ms: 5_000 });
        assert_eq!(events[3].1, VadEvent::SpeechStopped { at_ms: 6_000 });

        // Without adaptation the noise is one long utterance.
        let fixed = VadConfig {
            noise_margin_db: None,
            ..VadConfig::default()
        };
        let events = run(fixed, &pcm);
        assert_eq!(
            events.iter().map(|e| e.1).collect::<Vec<_>>(),
            [
                VadEvent::SpeechStarted { at_ms: 0 },
                VadEvent::SpeechStopped { at_ms: 9_000 }
            ]
        );
    }

    #[test]
    fn odd_frame_sizes_keep_time() {
        let mut vad = Vad::default();
        assert_eq!(vad.push(&[]), None);
        for _ in 0..7 {
            assert_eq!(vad.push(&[0; 100]), None);
        }
        assert_eq!(vad.elapsed_ms(), 29); // 700 samples = 29.17 ms
        assert_eq!(
            vad.push(&tone(100, 10_000.0)),
            Some(VadEvent::SpeechStarted { at_ms: 29 })
        );
        assert!(vad.is_speaking());
        assert_eq!(vad.threshold_dbfs(), -40.0);
    }
}
