//! Real-time loss recovery: how voq's QUIC connections (server and native client alike) repair
//! loss at the speed of the network rather than at the pace of a bulk transfer.
//!
//! RFC 9002's defaults are tuned for bulk transfer, and each costs a voice call seconds
//! (docs/BENCHMARKS.md, "Loss recovery"): the probe timeout doubles per lost probe, so a burst
//! of lost acknowledgements leaves the sender silent for seconds; a lost tail (the last packets
//! of a turn, which nothing follows) waits for a probe *and* its acknowledgement; and under heavy
//! loss CUBIC shrinks the window to two packets, fewer than a call's 20 ms frames need per round
//! trip, so the prompt falls behind; the first ACK after an outage reports the outage as a round
//! trip. [`apply`] sets six rules (docs/PROTOCOL.md, "Loss recovery"):
//!
//! 1. **A window floor** ([`RealtimeFloor`]): CUBIC decides above it, but the window never falls
//!    below [`FLOOR_RTTS`] round trips of [`FLOOR_RATE`].
//! 2. **Probes carry data**: a probe timeout with nothing new to send resends a copy of the
//!    oldest unacknowledged stream data (our quinn-proto patch, `probes_resend_stream_data`).
//! 3. **No backoff for the first [`PTO_BACKOFF_GRACE`] probe timeouts** in a row (patch,
//!    `pto_backoff_grace`): a path that comes back is probed within one probe timeout; a path
//!    that stays dark gets RFC 9002's doubling after that, and the idle timeout ends the call.
//! 4. **An ACK held through an outage is no RTT sample** (patch, `discard_late_ack_rtt_samples`):
//!    its earlier copies were lost, and its sample would measure the outage.
//! 5. **Immediate acknowledgements** (the ACK frequency extension, between quinn peers): every
//!    ack-eliciting packet is acknowledged at once, and the peer's acknowledgement delay counted
//!    in the probe timeout is [`MAX_ACK_DELAY`] instead of 25 ms.
//! 6. **A doubled handshake** (patch, `redundant_handshake`): the client's first Initial and its
//!    Finished, and the server's first flight, each leave twice, so a flight is lost only when
//!    both copies are (p² for independent loss p); and an [`INITIAL_RTT`] of 100 ms, so the probe
//!    for a flight lost all the same comes after 300 ms, not a second.
//!
//! Why the floor stays congestion-safe: it is a fixed budget, [`FLOOR_RATE`] bytes a second
//! over [`FLOOR_RTTS`] round trips (~2 Mbit/s at most), whatever the loss; retransmissions and
//! probes are counted inside the window, so repairs cannot grow it; above the floor CUBIC
//! decides as before. A call's prompt is sent as it is spoken (~51 kB/s for pcm16, a tenth of
//! it for Opus), so it uses the floor to repair, not to grow; a sent-ahead reply may burst up to
//! it until its lead is filled. RTP's circuit-breaker rules (RFC 8083) treat fixed-rate media
//! the same way.
//!
//! `VOQ_RECOVERY=stock` in the environment turns all six off (quinn's defaults), and the
//! WebSocket carrier's TCP options with them ([`crate::ws::tune_tcp`]), for comparison and as an
//! operator's escape hatch.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn_proto::RttEstimator;
use quinn_proto::congestion::{Controller, ControllerFactory, ControllerMetrics, CubicConfig};

/// The floor's rate: pcm16 at 24 kHz is 48,000 B/s of samples, ~51,000 B/s in 20 ms frames
/// with framing and QUIC headers; 64,000 B/s leaves a quarter on top for repairs (20 % loss
/// resends a quarter). Opus needs a tenth of it.
pub const FLOOR_RATE: u64 = 64_000;
/// The floor covers this many RTTs of [`FLOOR_RATE`]: the data in flight, packets lost but not
/// yet declared lost (RFC 9002 declares after 9/8 RTT), their repairs and the probes. Measured
/// on virtual time (20 % loss, 60 ms RTT, 100 seeds, prompt p99 extra delay): 2 RTTs 964 ms,
/// 3 RTTs 490 ms, 4 RTTs 300 ms, 6 RTTs 312 ms.
pub const FLOOR_RTTS: u32 = 4;
/// Probe timeouts in a row that do not back off: about 2 s of darkness at 60 ms RTT (a probe
/// timeout is ~RTT + 30 ms), the default send-ahead lead. Measured on virtual time (Gilbert-Elliott
/// bursts, 60 seeds, worst prompt delay): 0 (RFC 9002) 54.6 s, 10 8.1 s, 20 0.4 s.
pub const PTO_BACKOFF_GRACE: u32 = 20;
/// The acknowledgement delay voq asks its peer for (the peer acknowledges every ack-eliciting
/// packet at once; this bounds a timer's slack).
pub const MAX_ACK_DELAY: Duration = Duration::from_millis(5);

/// The RTT assumed before the first sample (RFC 9002 §6.2.2 says 333 ms; Chromium uses 100 ms,
/// and so does voq): a handshake flight lost despite its copy (rule 6) is probed after three of
/// them, 300 ms. On paths longer than that the client's first probe may be spurious: one
/// datagram.
pub const INITIAL_RTT: Duration = Duration::from_millis(100);

/// Which loss recovery a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The six rules of this module (the default).
    Realtime,
    /// The stacks' own defaults: quinn's (RFC 9002 as written) and, on the WebSocket carrier,
    /// the kernel's TCP timers (only `TCP_NODELAY` is set): `VOQ_RECOVERY=stock`.
    Stock,
}

impl Mode {
    /// The mode the environment asks for: `VOQ_RECOVERY` = `realtime` (or unset) or `stock`;
    /// anything else is reported once on stderr and the default kept.
    pub fn from_env() -> Mode {
        static MODE: std::sync::OnceLock<Mode> = std::sync::OnceLock::new();
        *MODE.get_or_init(|| match std::env::var("VOQ_RECOVERY").as_deref() {
            Err(_) | Ok("") | Ok("realtime") => Mode::Realtime,
            Ok("stock") => Mode::Stock,
            Ok(other) => {
                eprintln!(
                    "voq: VOQ_RECOVERY={other:?} is neither \"realtime\" nor \"stock\"; using realtime"
                );
                Mode::Realtime
            }
        })
    }
}

/// Sets voq's loss recovery on a transport configuration, in the mode the environment asks for.
pub fn apply(transport: &mut quinn::TransportConfig) {
    apply_mode(transport, Mode::from_env());
}

/// Sets this recovery mode on a transport configuration.
pub fn apply_mode(transport: &mut quinn::TransportConfig, mode: Mode) {
    if mode == Mode::Stock {
        return;
    }
    transport.congestion_controller_factory(Arc::new(RealtimeFloorFactory::default()));
    transport.probes_resend_stream_data(true);
    transport.pto_backoff_grace(PTO_BACKOFF_GRACE);
    transport.discard_late_ack_rtt_samples(true);
    transport.redundant_handshake(true);
    transport.initial_rtt(INITIAL_RTT);
    let mut ack = quinn::AckFrequencyConfig::default();
    ack.ack_eliciting_threshold(0u32.into());
    ack.max_ack_delay(Some(MAX_ACK_DELAY));
    transport.ack_frequency_config(Some(ack));
}
/// RTT samples above this do not raise the floor further: an outage inflates the smoothed RTT
/// (the first ACK after a blackout measures the blackout), and the floor must stay a budget.
const FLOOR_MAX_RTT: Duration = Duration::from_millis(500);
/// Never less than this many full-size packets (CUBIC's own minimum is two).
const FLOOR_MIN_PACKETS: u64 = 4;

/// The window floor for a path with this smoothed RTT and MTU, in bytes.
pub fn floor_window(srtt: Duration, mtu: u16) -> u64 {
    let rtt = srtt.min(FLOOR_MAX_RTT);
    let by_rate =
        (u128::from(FLOOR_RATE) * rtt.as_micros() * u128::from(FLOOR_RTTS) / 1_000_000) as u64;
    by_rate.max(FLOOR_MIN_PACKETS * u64::from(mtu))
}

/// Builds [`RealtimeFloor`] controllers around quinn's CUBIC.
#[derive(Debug, Default)]
pub struct RealtimeFloorFactory {
    cubic: Arc<CubicConfig>,
}

impl ControllerFactory for RealtimeFloorFactory {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(RealtimeFloor {
            inner: self.cubic.clone().build(now, current_mtu),
            mtu: current_mtu,
            srtt: None,
        })
    }
}

/// CUBIC with a floor under its window (see the module's documentation).
pub struct RealtimeFloor {
    inner: Box<dyn Controller>,
    mtu: u16,
    /// The path's smoothed RTT as of the last ACK; none before the first.
    srtt: Option<Duration>,
}

impl std::fmt::Debug for RealtimeFloor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealtimeFloor")
            .field("window", &self.window())
            .field("floor", &self.floor())
            .field("srtt", &self.srtt)
            .finish_non_exhaustive()
    }
}

impl RealtimeFloor {
    fn floor(&self) -> u64 {
        match self.srtt {
            Some(srtt) => floor_window(srtt, self.mtu),
            None => FLOOR_MIN_PACKETS * u64::from(self.mtu),
        }
    }
}

impl Controller for RealtimeFloor {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.inner.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        self.srtt = Some(rtt.get());
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.inner
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.inner
            .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.mtu = new_mtu;
        self.inner.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        self.inner.window().max(self.floor())
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut metrics = self.inner.metrics();
        metrics.congestion_window = self.window();
        metrics
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(Self {
            inner: self.inner.clone_box(),
            mtu: self.mtu,
            srtt: self.srtt,
        })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window().max(self.floor())
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_carries_the_budget_over_four_rtts_and_stays_bounded() {
        // 60 ms: 4 × 64,000 × 0.06 = 15,360 B.
        assert_eq!(floor_window(Duration::from_millis(60), 1200), 15_360);
        // 10 ms: the packet minimum.
        assert_eq!(floor_window(Duration::from_millis(10), 1200), 4800);
        // An outage-sized RTT sample does not raise it past the 500 ms cap.
        assert_eq!(floor_window(Duration::from_secs(3), 1200), 128_000);
    }

    #[test]
    fn cubic_decides_above_the_floor_and_never_below_it() {
        let now = Instant::now();
        let mut c = Arc::new(RealtimeFloorFactory::default()).build(now, 1200);
        let cubic_initial = Arc::new(CubicConfig::default()).build(now, 1200).window();
        assert_eq!(c.window(), cubic_initial, "above the floor: CUBIC's window");
        // Persistent congestion collapses CUBIC to its minimum; the floor holds.
        c.on_congestion_event(now, now, true, 10_000);
        assert_eq!(c.window(), 4 * 1200);
    }
}
