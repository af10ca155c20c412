//! Send-ahead pacing of agent audio (server side, one per response).
//!
//! Speech synthesis runs faster than real time, so the server sends agent audio ahead of the
//! client's playback — but never more than the *lead* past the client's played cursor, so that a
//! barge-in wastes at most `lead` of audio. The server does not see the client's cursor directly:
//! it estimates it from the last `output_audio_buffer.played` report, extrapolated at real time
//! but never past the audio the client said it had buffered (a starved client does not advance).
//!
//! Adaptation to RTT: a lost packet is repaired in roughly 1.5 RTT plus a probe timeout, so a
//! buffer shorter than a few RTTs underruns on a single loss. The effective lead is therefore
//! `max(lead, 3 × smoothed RTT)`. A lead of zero is *strict just-in-time pacing* (what many voice
//! stacks do today): frames leave at their real-time instant by the server's clock, reports and
//! RTT are ignored, and nothing is ever buffered ahead.

use std::time::{Duration, Instant};

/// The send-ahead policy: how far ahead of the client's playback audio may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lead {
    /// Strict just-in-time pacing by the server's clock (no buffering ahead).
    JustInTime,
    /// At most this far ahead of the client's estimated playback cursor.
    Bounded(Duration),
    /// Send as fast as the agent produces (no bound; every barge-in wastes the rest).
    Unbounded,
}

impl Lead {
    /// `0` → just in time; `u64::MAX` → unbounded; otherwise bounded.
    pub fn from_ms(ms: u64) -> Self {
        match ms {
            0 => Self::JustInTime,
            u64::MAX => Self::Unbounded,
            ms => Self::Bounded(Duration::from_millis(ms)),
        }
    }

    /// The inverse of [`Lead::from_ms`]: the `send_ahead_ms` this policy is configured as.
    pub fn as_ms(self) -> u64 {
        match self {
            Self::JustInTime => 0,
            Self::Bounded(d) => d.as_millis() as u64,
            Self::Unbounded => u64::MAX,
        }
    }
}

/// Multiplier of the smoothed RTT below which a bounded lead is not allowed to go.
pub const RTT_LEAD_FACTOR: u32 = 3;

/// Per-response pacing state. Call order: [`SendAhead::on_report`] whenever a played report
/// arrives, [`SendAhead::allowed`] before sending a frame; if it is not yet allowed, wait until
/// [`SendAhead::next_release`] (or the next report) and ask again.
#[derive(Debug, Clone)]
pub struct SendAhead {
    lead: Lead,
    /// When the first frame of the response was released.
    start: Option<Instant>,
    /// The last report: when it arrived, played ms, buffered ms.
    report: Option<(Instant, u64, u64)>,
}

impl SendAhead {
    /// Pacing for a new response, before its first frame and first report.
    pub fn new(lead: Lead) -> Self {
        Self {
            lead,
            start: None,
            report: None,
        }
    }

    /// The configured policy (before RTT adaptation; see [`SendAhead::effective_lead_ms`]).
    pub fn lead(&self) -> Lead {
        self.lead
    }

    /// Records an `output_audio_buffer.played` report for this response.
    pub fn on_report(&mut self, now: Instant, played_ms: u64, buffered_ms: u64) {
        self.report = Some((now, played_ms, buffered_ms));
    }

    /// The effective lead after RTT adaptation, in ms (`None` when unbounded).
    pub fn effective_lead_ms(&self, rtt: Duration) -> Option<u64> {
        match self.lead {
            Lead::JustInTime => Some(0),
            Lead::Bounded(lead) => Some(lead.max(rtt * RTT_LEAD_FACTOR).as_millis() as u64),
            Lead::Unbounded => None,
        }
    }

    /// The server's estimate of the client's playback cursor in ms.
    pub fn cursor_ms(&self, now: Instant) -> u64 {
        match (self.lead, self.report, self.start) {
            (Lead::JustInTime, _, Some(start)) | (_, None, Some(start)) => {
                now.saturating_duration_since(start).as_millis() as u64
            }
            (_, Some((at, played, buffered)), _) => {
                played + (now.saturating_duration_since(at).as_millis() as u64).min(buffered)
            }
            (_, None, None) => 0,
        }
    }

    /// Whether a frame starting at `pts_ms` may be sent now. Marks the response as started.
    pub fn allowed(&mut self, now: Instant, pts_ms: u64, rtt: Duration) -> bool {
        let Some(lead) = self.effective_lead_ms(rtt) else {
            self.start.get_or_insert(now);
            return true;
        };
        let ok = self.start.is_none() && pts_ms <= lead || pts_ms <= self.cursor_ms(now) + lead;
        if ok {
            self.start.get_or_insert(now);
        }
        ok
    }

    /// The instant at which a frame at `pts_ms` becomes sendable if nothing else changes (no new
    /// report). `None` if only a report can release it (the client is starved or has not
    /// started).
    pub fn next_release(&self, now: Instant, pts_ms: u64, rtt: Duration) -> Option<Instant> {
        let lead = self.effective_lead_ms(rtt)?;
        let cursor = self.cursor_ms(now);
        let need = pts_ms.saturating_sub(lead).saturating_sub(cursor);
        if need == 0 {
            return Some(now);
        }
        let headroom = match (self.lead, self.report) {
            (Lead::JustInTime, _) | (_, None) => u64::MAX,
            (_, Some((at, _, buffered))) => {
                buffered.saturating_sub(now.saturating_duration_since(at).as_millis() as u64)
            }
        };
        (self.start.is_some() && need <= headroom).then(|| now + Duration::from_millis(need))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTT: Duration = Duration::from_millis(20);

    #[allow(clippy::disallowed_methods)] // tests need one real base instant
    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn bounded_lead_sends_a_burst_then_follows_the_cursor() {
        let t = t0();
        let mut p = SendAhead::new(Lead::from_ms(2000));
        assert!(p.allowed(t, 0, RTT));
        assert!(p.allowed(t, 2000, RTT));
        assert!(!p.allowed(t, 2020, RTT));
        // One second later (no report): the estimate moved at real time.
        assert!(p.allowed(t + Duration::from_secs(1), 3000, RTT));
        // The client reports it is stalled at 500 ms with nothing buffered: hold at 2.5 s.
        let now = t + Duration::from_millis(1200);
        p.on_report(now, 500, 0);
        assert!(p.allowed(now + Duration::from_secs(5), 2500, RTT));
        assert!(!p.allowed(now + Duration::from_secs(5), 2520, RTT));
        assert_eq!(
            p.next_release(now, 2520, RTT),
            None,
            "only a report releases a starved client"
        );
    }

    #[test]
    fn extrapolation_stops_at_the_buffered_audio() {
        let t = t0();
        let mut p = SendAhead::new(Lead::from_ms(1000));
        assert!(p.allowed(t, 0, RTT));
        p.on_report(t, 100, 300);
        assert_eq!(p.cursor_ms(t + Duration::from_millis(200)), 300);
        assert_eq!(p.cursor_ms(t + Duration::from_millis(900)), 400);
        assert_eq!(
            p.next_release(t, 1250, RTT),
            Some(t + Duration::from_millis(150)),
            "released when the extrapolated cursor reaches pts - lead"
        );
    }

    #[test]
    fn just_in_time_paces_by_the_server_clock_and_ignores_reports() {
        let t = t0();
        let mut p = SendAhead::new(Lead::JustInTime);
        assert!(p.allowed(t, 0, RTT));
        assert!(!p.allowed(t, 20, RTT));
        p.on_report(t, 5000, 5000);
        assert!(!p.allowed(t + Duration::from_millis(19), 20, RTT));
        assert!(p.allowed(t + Duration::from_millis(20), 20, RTT));
        assert_eq!(
            p.next_release(t, 100, RTT),
            Some(t + Duration::from_millis(100))
        );
    }

    #[test]
    fn lead_never_goes_below_three_rtts() {
        let p = SendAhead::new(Lead::from_ms(100));
        assert_eq!(p.effective_lead_ms(Duration::from_millis(200)), Some(600));
        assert_eq!(p.effective_lead_ms(Duration::from_millis(10)), Some(100));
        assert_eq!(SendAhead::new(Lead::Unbounded).effective_lead_ms(RTT), None);
    }
}
