//! Signal measurements for tests and benchmarks: level, alignment, distortion, durations.

use std::time::Duration;

/// RMS level in dBFS: `20·log10(rms / 32768)`. A full-scale square wave is 0 dBFS, a
/// full-scale sine −3.01 dBFS. Digital silence (and an empty slice) is `-inf`.
pub fn rms_dbfs(pcm: &[i16]) -> f32 {
    if pcm.is_empty() {
        return f32::NEG_INFINITY;
    }
    let energy: f64 = pcm.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (energy / pcm.len() as f64).sqrt();
    (20.0 * (rms / 32768.0).log10()) as f32
}

/// The lag that best aligns `b` with `a`, searching `-max_lag..=max_lag`: returns
/// `(coefficient, lag)`.
///
/// A positive lag means `b` is late: `b[i + lag]` matches `a[i]` (a codec's delay shows up as
/// its look-ahead in samples). The coefficient is `Σ a[i]·b[i+lag] / √(Σa² · Σb²)` with the
/// energies of the whole signals, so partial overlaps cannot score spuriously high; it is 1.0
/// when `b` is exactly `a` shifted (and scaled), and 0.0 if either signal is silent. Of equal
/// coefficients the smallest |lag| wins. Cost: `O(len · max_lag)`.
pub fn best_correlation(a: &[i16], b: &[i16], max_lag: usize) -> (f64, isize) {
    let a: Vec<f64> = a.iter().map(|&s| f64::from(s)).collect();
    let b: Vec<f64> = b.iter().map(|&s| f64::from(s)).collect();
    let norm = (a.iter().map(|x| x * x).sum::<f64>() * b.iter().map(|x| x * x).sum::<f64>()).sqrt();
    if norm == 0.0 {
        return (0.0, 0);
    }
    let max_lag = max_lag.min(a.len().max(b.len()));
    let dot = |lag: isize| -> f64 {
        // Pairs (a[i], b[i + lag]).
        let (a, b) = if lag >= 0 {
            (&a[..], b.get(lag.unsigned_abs()..).unwrap_or(&[]))
        } else {
            (a.get(lag.unsigned_abs()..).unwrap_or(&[]), &b[..])
        };
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    };
    let mut best = (dot(0) / norm, 0isize);
    for l in 1..=max_lag as isize {
        for lag in [l, -l] {
            let c = dot(lag) / norm;
            if c > best.0 {
                best = (c, lag);
            }
        }
    }
    best
}

/// Signal-to-noise ratio of `test` against `reference` in dB: `10·log10(Σr² / Σ(r−t)²)` over
/// their common length: `+inf` when they are identical there (or it is empty), `-inf` when the
/// reference is silent and they differ. Align first (see [`best_correlation`]) for codecs with delay.
pub fn snr_db(reference: &[i16], test: &[i16]) -> f64 {
    let (signal, noise) = reference
        .iter()
        .zip(test)
        .map(|(&r, &t)| (f64::from(r), f64::from(r) - f64::from(t)))
        .fold((0.0, 0.0), |(s, n), (r, d)| (s + r * r, n + d * d));
    if noise == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (signal / noise).log10()
}

/// Duration of `samples` samples at `rate` Hz (zero for a rate of 0).
pub fn duration(samples: usize, rate: u32) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    let nanos = samples as u128 * 1_000_000_000 / u128::from(rate);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Whole milliseconds in `samples` samples at `rate` Hz, rounded down (0 for a rate of 0).
pub fn samples_to_ms(samples: u64, rate: u32) -> u64 {
    if rate == 0 {
        return 0;
    }
    u64::try_from(u128::from(samples) * 1000 / u128::from(rate)).unwrap_or(u64::MAX)
}

/// Samples in `ms` milliseconds at `rate` Hz, rounded down.
pub fn ms_to_samples(ms: u64, rate: u32) -> u64 {
    u64::try_from(u128::from(ms) * u128::from(rate) / 1000).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize, amp: f64) -> Vec<i16> {
        (0..n)
            .map(|i| (amp * (i as f64 * 0.031).sin() * (1.0 + (i as f64 * 0.0007).sin())) as i16)
            .collect()
    }

    #[test]
    fn levels() {
        assert_eq!(rms_dbfs(&[]), f32::NEG_INFINITY);
        assert_eq!(rms_dbfs(&[0; 100]), f32::NEG_INFINITY);
        assert!(rms_dbfs(&[-32768, -32768]).abs() < 1e-6);
        let sine: Vec<i16> = (0..48_000)
            .map(|i| (32767.0 * (i as f64 * 2.0 * std::f64::consts::PI / 48.0).sin()) as i16)
            .collect();
        assert!((rms_dbfs(&sine) + 3.01).abs() < 0.01, "{}", rms_dbfs(&sine));
        assert!((rms_dbfs(&[3277; 10]) + 20.0).abs() < 0.01);
    }

    /// Deterministic noise: unlike a tone, it matches itself at one lag only.
    fn noise(n: usize) -> Vec<i16> {
        let mut x: u32 = 0x9E37_79B9;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 20) as i16 - 2048
            })
            .collect()
    }

    #[test]
    fn correlation_finds_the_shift() {
        let a = noise(5000);
        for shift in [0usize, 1, 37, 156] {
            // b = a delayed by `shift`.
            let mut b = vec![0; shift];
            b.extend_from_slice(&a);
            let (c, lag) = best_correlation(&a, &b, 300);
            assert_eq!(lag, shift as isize);
            assert!(c > 0.999_999, "{c}");
            // And the other way round.
            let (c, lag) = best_correlation(&b, &a, 300);
            assert_eq!(lag, -(shift as isize));
            assert!(c > 0.999_999);
        }
        // Out of the search range: the best is elsewhere and poor.
        let mut b = vec![0; 400];
        b.extend_from_slice(&a);
        let (c, lag) = best_correlation(&a, &b, 100);
        assert!(lag.abs() <= 100);
        assert!(c < 0.1, "{c}");
        // Inverted and scaled.
        let inv: Vec<i16> = a.iter().map(|&s| -s / 2).collect();
        assert!(best_correlation(&a, &inv, 0).0 < -0.99);
    }

    #[test]
    fn correlation_edge_cases() {
        assert_eq!(best_correlation(&[], &[], 10), (0.0, 0));
        assert_eq!(best_correlation(&[0; 10], &[1; 10], 10), (0.0, 0));
        let (c, _) = best_correlation(&[1, 2, 3], &[1, 2, 3], usize::MAX);
        assert!((c - 1.0).abs() < 1e-12);
    }

    #[test]
    fn snr() {
        let a = tone(1000, 8000.0);
        assert_eq!(snr_db(&a, &a), f64::INFINITY);
        let half: Vec<i16> = a.iter().map(|&s| s / 2).collect();
        assert!(
            (snr_db(&a, &half) - 6.02).abs() < 0.1,
            "{}",
            snr_db(&a, &half)
        );
    }

    #[test]
    fn durations() {
        assert_eq!(duration(24_000, 24_000), Duration::from_secs(1));
        assert_eq!(duration(480, 24_000), Duration::from_millis(20));
        assert_eq!(duration(1, 0), Duration::ZERO);
        assert_eq!(samples_to_ms(67_199, 24_000), 2799);
        assert_eq!(samples_to_ms(5, 0), 0);
        assert_eq!(ms_to_samples(20, 24_000), 480);
        assert_eq!(ms_to_samples(u64::MAX, u32::MAX), u64::MAX);
    }
}
