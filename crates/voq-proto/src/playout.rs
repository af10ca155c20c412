//! The client's playout buffer: agent audio is placed by its presentation timestamp and rendered
//! by the audio device's clock, one quantum at a time.
//!
//! Playback starts once `start_threshold` of audio is buffered (or the response is complete).
//! When the buffer runs dry before the response is complete the playout *stalls*: the device
//! renders silence, the stall is counted, and playback resumes from the same timestamp once
//! `start_threshold` is buffered again. A stall never skips audio: every sample the agent sent is
//! played (unless the user barges in), so `played` is an exact position in the agent's speech.

use std::collections::VecDeque;

/// Where a playout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayoutState {
    /// Waiting for the start threshold.
    Buffering,
    /// Rendering queued audio.
    Playing,
    /// Ran dry before the end; waiting for the start threshold again.
    Stalled,
    /// Every sample played.
    Finished,
    /// Stopped by a barge-in; the rest was discarded.
    Flushed,
}

/// What one [`Playout::render`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rendered {
    /// Samples of agent audio written (the rest of the quantum is silence).
    pub audio: usize,
    /// This quantum began an underrun.
    pub underrun_started: bool,
}

/// Gaps between frames' timestamps longer than this are not filled: the frame is discarded (a
/// broken or hostile server could otherwise ask for hours of silence). Mirrored by
/// `MAX_GAP_SAMPLES` in `@voq/client`.
pub const MAX_GAP_MS: u64 = 60_000;
/// Audio queued (not yet played, gaps included) beyond this is discarded: an honest server stays
/// within its send-ahead lead, far below. Mirrored by `MAX_QUEUED_SAMPLES` in `@voq/client`.
pub const MAX_QUEUED_MS: u64 = 120_000;

/// Playout of one response. Samples are mono at one fixed rate.
#[derive(Debug, Clone)]
pub struct Playout {
    rate: u32,
    start_threshold: usize,
    state: PlayoutState,
    /// Samples not yet played; `queue[0]` is at timestamp `played`.
    queue: VecDeque<i16>,
    /// Samples played so far (= the timestamp of the next sample to play).
    played: u64,
    complete: bool,
    underruns: u32,
    stalled_samples: u64,
    discarded: u64,
    /// Samples of silence inserted for a gap between frames' timestamps.
    gap_samples: u64,
    /// Samples dropped because a frame overlapped audio already queued.
    overlap_samples: u64,
}

impl Playout {
    /// An empty playout of samples at `rate` Hz that starts (and resumes after a stall) once
    /// `start_threshold_ms` of audio is queued.
    pub fn new(rate: u32, start_threshold_ms: u32) -> Self {
        Self {
            rate,
            start_threshold: (rate as u64 * start_threshold_ms as u64 / 1000) as usize,
            state: PlayoutState::Buffering,
            queue: VecDeque::new(),
            played: 0,
            complete: false,
            underruns: 0,
            stalled_samples: 0,
            discarded: 0,
            gap_samples: 0,
            overlap_samples: 0,
        }
    }

    /// Places decoded audio that starts at sample `pts`. Frames arrive in order on a reliable
    /// stream; a gap in timestamps is filled with silence, an overlap is trimmed.
    pub fn push(&mut self, pts: u64, samples: &[i16]) {
        if matches!(self.state, PlayoutState::Flushed | PlayoutState::Finished) {
            self.discarded += samples.len() as u64;
            return;
        }
        let end = self.played + self.queue.len() as u64;
        let rate = u64::from(self.rate);
        let (max_gap, max_queued) = (MAX_GAP_MS * rate / 1000, MAX_QUEUED_MS * rate / 1000);
        let mut samples = samples;
        let gap = pts.saturating_sub(end);
        if gap > max_gap || self.queue.len() as u64 + gap + samples.len() as u64 > max_queued {
            self.discarded += samples.len() as u64;
            return;
        }
        if gap > 0 {
            self.gap_samples += gap;
            self.queue.extend(std::iter::repeat_n(0, gap as usize));
        } else if pts < end {
            let overlap = ((end - pts) as usize).min(samples.len());
            self.overlap_samples += overlap as u64;
            samples = &samples[overlap..];
        }
        self.queue.extend(samples.iter().copied());
    }

    /// The response has no more audio: play out what is queued without waiting for the
    /// threshold.
    pub fn finish(&mut self) {
        self.complete = true;
    }

    /// Barge-in: stop at once, discard what is queued. Returns the samples discarded.
    pub fn flush(&mut self) -> u64 {
        let n = self.queue.len() as u64;
        self.discarded += n;
        self.queue.clear();
        self.state = PlayoutState::Flushed;
        n
    }

    /// Renders one device quantum into `out` (audio, then silence).
    pub fn render(&mut self, out: &mut [i16]) -> Rendered {
        let mut r = Rendered::default();
        if matches!(self.state, PlayoutState::Buffering | PlayoutState::Stalled)
            && (self.queue.len() >= self.start_threshold.max(1) || self.complete)
        {
            self.state = PlayoutState::Playing;
        }
        if self.state == PlayoutState::Playing {
            let n = out.len().min(self.queue.len());
            for (o, s) in out.iter_mut().zip(self.queue.drain(..n)) {
                *o = s;
            }
            self.played += n as u64;
            r.audio = n;
            if self.queue.is_empty() {
                if self.complete {
                    self.state = PlayoutState::Finished;
                } else if n < out.len() {
                    self.state = PlayoutState::Stalled;
                    self.underruns += 1;
                    r.underrun_started = true;
                }
            }
        }
        out[r.audio..].fill(0);
        if self.state == PlayoutState::Stalled {
            self.stalled_samples += (out.len() - r.audio) as u64;
        }
        r
    }

    /// Where the playout is.
    pub fn state(&self) -> PlayoutState {
        self.state
    }

    /// Samples of the response played so far: the exact position in the agent's speech.
    pub fn played_samples(&self) -> u64 {
        self.played
    }

    /// [`Playout::played_samples`] in ms, rounded down: the `played_ms` of
    /// `output_audio_buffer.played` and the `audio_end_ms` of a barge-in.
    pub fn played_ms(&self) -> u64 {
        self.played * 1000 / self.rate as u64
    }

    /// Samples queued and not yet played (gap silence included).
    pub fn buffered_samples(&self) -> usize {
        self.queue.len()
    }

    /// [`Playout::buffered_samples`] in ms, rounded down: the `buffered_ms` of
    /// `output_audio_buffer.played`.
    pub fn buffered_ms(&self) -> u64 {
        self.queue.len() as u64 * 1000 / self.rate as u64
    }

    /// Times the playout ran dry before the response was complete (each began a stall).
    pub fn underruns(&self) -> u32 {
        self.underruns
    }

    /// Silence rendered while stalled, in ms: how long the listener waited mid-response.
    pub fn stall_ms(&self) -> u64 {
        self.stalled_samples * 1000 / self.rate as u64
    }

    /// Samples received but never played (flushed by a barge-in or arriving after it).
    pub fn discarded_samples(&self) -> u64 {
        self.discarded
    }

    /// Samples of silence inserted where a frame's pts left a gap after the audio before it.
    pub fn gap_samples(&self) -> u64 {
        self.gap_samples
    }

    /// Samples trimmed from frames whose pts overlapped audio already queued or played.
    pub fn overlap_samples(&self) -> u64 {
        self.overlap_samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const Q: usize = 240; // 10 ms at 24 kHz

    fn ramp(start: i16, n: usize) -> Vec<i16> {
        (0..n).map(|i| start.wrapping_add(i as i16)).collect()
    }

    /// A hostile server's timestamps cannot make the client queue hours of silence (found by
    /// the client_session fuzz target: one frame at pts 2^31 asked for 12 GB).
    #[test]
    fn huge_gaps_and_overfull_queues_are_discarded_not_allocated() {
        let mut p = Playout::new(24_000, 100);
        p.push(0, &ramp(0, 480));
        p.push(u64::from(u32::MAX), &ramp(0, 480));
        assert_eq!(p.buffered_samples(), 480);
        assert_eq!(p.discarded_samples(), 480);
        // A gap under the limit is filled, until the queue is full.
        let gap = MAX_GAP_MS * 24 - 1;
        p.push(480 + gap, &ramp(0, 480));
        assert_eq!(p.buffered_samples() as u64, 480 + gap + 480);
        p.push(960 + 2 * gap, &ramp(0, 480));
        assert_eq!(
            p.buffered_samples() as u64,
            480 + gap + 480,
            "120 s queued at most"
        );
        assert_eq!(p.discarded_samples(), 960);
        assert!(p.buffered_samples() as u64 <= MAX_QUEUED_MS * 24);
    }

    #[test]
    fn waits_for_threshold_then_plays_in_order() {
        let mut p = Playout::new(24_000, 100);
        let mut out = [1i16; Q];
        p.push(0, &ramp(0, 480));
        assert_eq!(p.render(&mut out).audio, 0, "under the 100 ms threshold");
        assert!(out.iter().all(|&s| s == 0));
        p.push(480, &ramp(480, 2000));
        assert_eq!(p.render(&mut out).audio, Q);
        assert_eq!(out.to_vec(), ramp(0, Q));
        assert_eq!(p.played_ms(), 10);
    }

    #[test]
    fn underrun_is_counted_and_playback_resumes_where_it_stopped() {
        let mut p = Playout::new(24_000, 20);
        let mut out = [0i16; Q];
        p.push(0, &ramp(0, 600));
        p.render(&mut out);
        p.render(&mut out);
        let r = p.render(&mut out);
        assert_eq!((r.audio, r.underrun_started), (120, true));
        assert_eq!(p.state(), PlayoutState::Stalled);
        p.render(&mut out);
        assert_eq!(p.underruns(), 1);
        assert_eq!(p.stall_ms(), 5 + 10);
        p.push(600, &ramp(600, 480));
        assert_eq!(p.render(&mut out).audio, Q);
        assert_eq!(out[0], 600, "no sample skipped after a stall");
    }

    #[test]
    fn flush_silences_the_next_quantum_and_counts_discarded() {
        let mut p = Playout::new(24_000, 0);
        let mut out = [0i16; Q];
        p.push(0, &ramp(1, 24_000));
        p.render(&mut out);
        assert_eq!(p.flush(), 24_000 - Q as u64);
        assert_eq!(p.render(&mut out).audio, 0);
        assert!(out.iter().all(|&s| s == 0));
        p.push(24_000, &ramp(0, 100));
        assert_eq!(p.discarded_samples(), 24_000 - Q as u64 + 100);
        assert_eq!(p.played_samples(), Q as u64);
    }

    #[test]
    fn gaps_become_silence_and_overlaps_are_trimmed() {
        let mut p = Playout::new(24_000, 0);
        p.push(0, &[5; 10]);
        p.push(20, &[7; 10]);
        p.push(25, &[9; 10]);
        p.finish();
        let mut out = [1i16; 40];
        assert_eq!(p.render(&mut out).audio, 35);
        assert_eq!(&out[8..22], &[5, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 7]);
        assert_eq!(&out[28..36], &[7, 7, 9, 9, 9, 9, 9, 0]);
        assert_eq!((p.gap_samples(), p.overlap_samples()), (10, 5));
        assert_eq!(p.state(), PlayoutState::Finished);
    }

    proptest! {
        /// Whatever the arrival pattern, the played timeline is exactly the pushed audio in
        /// order: stalls insert silence between samples but never drop or repeat one.
        #[test]
        fn plays_every_sample_exactly_once(
            chunks in proptest::collection::vec(1usize..700, 1..40),
            renders_between in proptest::collection::vec(0usize..4, 40),
            threshold_ms in 0u32..200,
        ) {
            let mut p = Playout::new(24_000, threshold_ms);
            let mut played = Vec::new();
            let mut pts = 0u64;
            let mut out = [0i16; Q];
            let mut sent = Vec::new();
            for (i, n) in chunks.iter().enumerate() {
                let s = ramp(pts as i16, *n);
                sent.extend_from_slice(&s);
                p.push(pts, &s);
                pts += *n as u64;
                for _ in 0..renders_between[i] {
                    let r = p.render(&mut out);
                    played.extend_from_slice(&out[..r.audio]);
                }
            }
            p.finish();
            while p.state() != PlayoutState::Finished {
                let r = p.render(&mut out);
                played.extend_from_slice(&out[..r.audio]);
            }
            prop_assert_eq!(played, sent);
            prop_assert_eq!(p.played_samples(), pts);
        }
    }
}
