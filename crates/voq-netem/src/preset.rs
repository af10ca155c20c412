//! Named link configurations.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::config::{GilbertElliott, LinkConfig};

/// A named [`LinkConfig`], for one direction of a path. The numbers are illustrative, picked
/// to exercise a voice transport, not measurements of any particular network.
///
/// | preset | delay | jitter (correlation) | random loss | burst loss (p, r → mean loss, mean burst) | other | rate, queue |
/// |---|---|---|---|---|---|---|
/// | `none` | 0 | 0 | 0 | — | — | unlimited |
/// | `wifi` | 5 ms | 3 ms (0.5) | 0 | 0.005, 0.5 → ≈ 1 %, 2 packets | — | 50 000 kbps, 1000 packets |
/// | `cellular` | 40 ms | 15 ms (0.5) | 0.5 % | 0.002, 0.1 → ≈ 2 %, 10 packets | — | 4 000 kbps, 1000 packets and 250 000 bytes |
/// | `lossy` | 25 ms | 10 ms (0.25) | 5 % | 0.01, 0.3 → ≈ 3.2 %, 3.3 packets | duplicate 1 %, reorder 1 % by 15 ms | unlimited |
/// | `satellite` | 300 ms | 10 ms (0.75) | 0.5 % | 0.0005, 0.05 → ≈ 1 %, 20 packets | — | 5 000 kbps, 1000 packets |
///
/// Burst loss loses every packet in the bad state and none in the good state. Names parse
/// case-insensitively with [`FromStr`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// A perfect link: [`LinkConfig::default`].
    #[default]
    None,
    /// A good Wi-Fi hop: short delay, short loss bursts from interference.
    Wifi,
    /// A mobile link: longer, more variable delay, occasional long bursts (handovers), a
    /// moderate rate with a deep queue.
    Cellular,
    /// A bad network: heavy random and burst loss, some duplication and reordering.
    Lossy,
    /// A geostationary satellite hop: long delay, rare long bursts, a moderate rate.
    Satellite,
}

impl Preset {
    /// Every preset, in the order of the table above.
    pub const ALL: [Preset; 5] = [
        Preset::None,
        Preset::Wifi,
        Preset::Cellular,
        Preset::Lossy,
        Preset::Satellite,
    ];

    /// The name [`FromStr`] accepts.
    pub fn name(self) -> &'static str {
        match self {
            Preset::None => "none",
            Preset::Wifi => "wifi",
            Preset::Cellular => "cellular",
            Preset::Lossy => "lossy",
            Preset::Satellite => "satellite",
        }
    }

    /// The configuration, with the numbers in the table above.
    pub fn config(self) -> LinkConfig {
        let base = LinkConfig::default();
        match self {
            Preset::None => base,
            Preset::Wifi => LinkConfig {
                delay_ms: 5.0,
                jitter_ms: 3.0,
                jitter_correlation: 0.5,
                burst: Some(GilbertElliott::new(0.005, 0.5)),
                rate_kbps: Some(50_000),
                ..base
            },
            Preset::Cellular => LinkConfig {
                delay_ms: 40.0,
                jitter_ms: 15.0,
                jitter_correlation: 0.5,
                loss: 0.005,
                burst: Some(GilbertElliott::new(0.002, 0.1)),
                rate_kbps: Some(4_000),
                queue_bytes: Some(250_000),
                ..base
            },
            Preset::Lossy => LinkConfig {
                delay_ms: 25.0,
                jitter_ms: 10.0,
                jitter_correlation: 0.25,
                loss: 0.05,
                burst: Some(GilbertElliott::new(0.01, 0.3)),
                duplicate: 0.01,
                reorder: 0.01,
                reorder_delay_ms: 15.0,
                ..base
            },
            Preset::Satellite => LinkConfig {
                delay_ms: 300.0,
                jitter_ms: 10.0,
                jitter_correlation: 0.75,
                loss: 0.005,
                burst: Some(GilbertElliott::new(0.0005, 0.05)),
                rate_kbps: Some(5_000),
                ..base
            },
        }
    }
}

impl From<Preset> for LinkConfig {
    fn from(preset: Preset) -> Self {
        preset.config()
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = ParsePresetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| ParsePresetError::Unknown { name: s.to_owned() })
    }
}

/// A preset name that [`Preset::from_str`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParsePresetError {
    /// Not one of the names in [`Preset::ALL`].
    #[error("unknown netem preset {name:?}: expected none, wifi, cellular, lossy or satellite")]
    Unknown {
        /// The name given.
        name: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_is_valid_and_parses_by_name() {
        for preset in Preset::ALL {
            assert_eq!(preset.config().validate(), Ok(()), "{preset}");
            assert_eq!(preset.name().parse::<Preset>(), Ok(preset));
            assert_eq!(
                preset.to_string().to_uppercase().parse::<Preset>(),
                Ok(preset)
            );
            assert_eq!(LinkConfig::from(preset), preset.config());
        }
        assert_eq!(Preset::None.config(), LinkConfig::default());
    }

    #[test]
    fn unknown_name_is_an_error() {
        let err = "lte".parse::<Preset>().err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("unknown netem preset \"lte\": expected none, wifi, cellular, lossy or satellite")
        );
    }

    #[test]
    fn documented_burst_numbers_hold() {
        // The table's "≈" columns, recomputed.
        let loss = |p: Preset| p.config().burst.map_or(0.0, |b| b.loss_rate());
        assert!((loss(Preset::Wifi) - 0.0099).abs() < 0.0001);
        assert!((loss(Preset::Cellular) - 0.0196).abs() < 0.0001);
        assert!((loss(Preset::Lossy) - 0.0323).abs() < 0.0001);
        assert!((loss(Preset::Satellite) - 0.0099).abs() < 0.0001);
    }

    #[test]
    fn serde_uses_the_names() {
        assert_eq!(
            serde_json::to_string(&Preset::Cellular).ok().as_deref(),
            Some("\"cellular\"")
        );
        assert_eq!(
            serde_json::from_str::<Preset>("\"satellite\"").ok(),
            Some(Preset::Satellite)
        );
    }
}
