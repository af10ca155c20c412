//! The physical limit of a reliable turn: the earliest a receiver could hold every frame of a
//! user's turn sent over a lossy link by a sender that repairs by retransmission.
//!
//! The model: frames leave as they are captured, one every `interval`; each transmission
//! attempt crosses the link (the same loss process: random loss, Gilbert-Elliott bursts,
//! blackouts, drawn by a [`Link`] in time order); a lost attempt is repaired exactly one RTT
//! after it left — the earliest its loss can be known (the acknowledgement of a packet sent
//! just after it) — and the repair crosses the same link. Nothing is lost twice for free and no
//! time is spent on timers, acknowledgement loss or congestion control, so a real protocol can
//! only be slower (proactive duplication or FEC could be faster, at the cost of bytes). The
//! result is the extra delay, beyond the loss-free case, until the last frame is held.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::{ConfigError, Link, LinkConfig};

/// The model's extra delay for one turn of `frames` frames on a link with this configuration
/// (its delay is irrelevant: the RTT is given), seeded; `start` is the origin of the link's
/// blackout windows and of the turn. See the module documentation.
pub fn turn_extra_delay(
    start: Instant,
    config: &LinkConfig,
    rtt: Duration,
    frames: usize,
    interval: Duration,
    seed: u64,
) -> Result<Duration, ConfigError> {
    let mut link: Link<()> = Link::new(config.clone(), seed, start)?;
    // (attempt time, frame), earliest first.
    let mut attempts: BinaryHeap<Reverse<(Duration, usize)>> = (0..frames)
        .map(|i| Reverse((interval * i as u32, i)))
        .collect();
    let mut last_held = Duration::ZERO;
    while let Some(Reverse((at, frame))) = attempts.pop() {
        let dropped = link.stats().dropped.total();
        // Only the drop counter matters; deliveries are never polled (that would move the
        // link's clock past later attempts).
        link.send(start + at, (), 1000);
        if link.stats().dropped.total() > dropped {
            attempts.push(Reverse((at + rtt, frame)));
        } else {
            last_held = last_held.max(at);
        }
    }
    let loss_free = interval * frames.saturating_sub(1) as u32;
    Ok(last_held.saturating_sub(loss_free))
}

/// [`turn_extra_delay`] over `runs` seeds (`seed`, `seed + 1`, …), sorted ascending.
pub fn turn_extra_delays(
    start: Instant,
    config: &LinkConfig,
    rtt: Duration,
    frames: usize,
    interval: Duration,
    seed: u64,
    runs: usize,
) -> Result<Vec<Duration>, ConfigError> {
    let mut all = (0..runs as u64)
        .map(|i| turn_extra_delay(start, config, rtt, frames, interval, seed.wrapping_add(i)))
        .collect::<Result<Vec<_>, _>>()?;
    all.sort();
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTT: Duration = Duration::from_millis(60);
    const FRAME: Duration = Duration::from_millis(20);

    fn start() -> Instant {
        // The one clock reading of the tests; everything after it is virtual time.
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    #[test]
    fn no_loss_no_extra_delay() -> Result<(), ConfigError> {
        let start = start();
        let d = turn_extra_delay(start, &LinkConfig::default(), RTT, 139, FRAME, 1)?;
        assert_eq!(d, Duration::ZERO);
        Ok(())
    }

    #[test]
    fn each_lost_attempt_costs_one_rtt_and_the_p99_at_20_percent_is_about_three()
    -> Result<(), ConfigError> {
        let start = start();
        let lossy = LinkConfig {
            loss: 0.2,
            ..LinkConfig::default()
        };
        let all = turn_extra_delays(start, &lossy, RTT, 139, FRAME, 7, 400)?;
        // Every extra delay is a whole number of RTTs minus whole frame intervals.
        assert!(all.iter().all(|d| d.as_millis() % 20 == 0));
        let p50 = all[all.len() / 2];
        let p99 = all[all.len() * 99 / 100];
        // P(extra ≤ x) = Π_j (1 − p^(⌊(x + 20 ms · j) / RTT⌋ + 1)) over frames j from the end:
        // ≈ 0.44 at 0, ≈ 0.6 at 20 ms; ≈ 0.985 at 160 ms, ≈ 0.994 at 180 ms.
        assert!(p50 <= Duration::from_millis(40), "{p50:?}");
        assert!(
            p99 >= Duration::from_millis(120) && p99 <= Duration::from_millis(240),
            "{p99:?}"
        );
        Ok(())
    }

    #[test]
    fn a_blackout_costs_its_length_and_no_more() -> Result<(), ConfigError> {
        let start = start();
        let dark = LinkConfig {
            blackouts: vec![crate::Blackout {
                start_ms: 1000.0,
                duration_ms: 1000.0,
            }],
            ..LinkConfig::default()
        };
        // Frames sent in the dark are repaired once a repair leaves after it ends; the turn
        // (2.76 s) ends after the blackout, so the extra delay is under one RTT.
        let d = turn_extra_delay(start, &dark, RTT, 139, FRAME, 1)?;
        assert!(d < RTT, "{d:?}");
        // A turn that ends inside the blackout waits for the link: 1.5 s − 1 s + up to 1 RTT.
        let short = turn_extra_delay(start, &dark, RTT, 76, FRAME, 1)?;
        assert!(
            short >= Duration::from_millis(500) && short <= Duration::from_millis(560),
            "{short:?}"
        );
        Ok(())
    }
}
