//! Link configuration: what one direction of a path does to packets.

use serde::{Deserialize, Serialize};

/// The largest accepted value of any `*_ms` field: 30 days, in milliseconds.
pub const MAX_MS: f64 = 2_592_000_000.0;

/// What one direction of a path does to the packets sent through it.
///
/// Every field is optional in a file (`#[serde(default)]`) and unknown fields are rejected, so
/// it can be a section of a TOML scenario:
///
/// ```toml
/// delay_ms = 40
/// jitter_ms = 10
/// loss = 0.02
/// rate_kbps = 2000
/// burst = { p = 0.01, r = 0.25 }
/// blackouts = [{ start_ms = 5000, duration_ms = 1000 }]
/// ```
///
/// Durations are milliseconds (fractions allowed), probabilities are fractions in `0..=1`,
/// rates are kilobits per second (1 kbps = 1000 bit/s). [`LinkConfig::default`] is a perfect
/// link: no delay, no loss, no limit. See [`Link`](crate::Link) for the order in which the
/// impairments apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkConfig {
    /// Base one-way delay, ms. Default 0.
    pub delay_ms: f64,
    /// Jitter bound, ms: each packet's delay is `delay_ms` plus a value in
    /// `-jitter_ms..=jitter_ms` (uniform, then smoothed by `jitter_correlation`), never below
    /// zero. Default 0.
    pub jitter_ms: f64,
    /// Correlation of each packet's jitter with the previous packet's, `0..=1`:
    /// `jitter = c * previous + (1 - c) * uniform`. 0 is independent; 1 freezes the jitter at
    /// its initial value, zero. Correlation also narrows the spread (as in Linux netem).
    /// Default 0.
    pub jitter_correlation: f64,
    /// Let jitter reorder packets (what Linux netem does). Default `false`: a packet is never
    /// delivered before one sent earlier; a packet that drew a shorter delay than its
    /// predecessor waits for it.
    pub jitter_reorder: bool,
    /// Probability that a packet is lost at random (Bernoulli, independent). Default 0.
    pub loss: f64,
    /// Probability that a packet is held back by `reorder_delay_ms`, letting packets sent
    /// after it overtake it. Default 0.
    pub reorder: f64,
    /// Extra delay of a held-back packet, ms. Only used when `reorder > 0`. Default 10.
    pub reorder_delay_ms: f64,
    /// Probability that a packet is delivered twice (the copy right after the original).
    /// Default 0.
    pub duplicate: f64,
    /// Bottleneck rate, kilobits per second (1 kbps = 1000 bit/s). Packets are serialized at
    /// this rate after the delay, in arrival order, behind a drop-tail queue. Default none
    /// (unlimited).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_kbps: Option<u64>,
    /// Queue limit, packets waiting behind the one being transmitted; a packet that would make
    /// it longer is dropped. Only used with `rate_kbps`. Default 1000.
    pub queue_packets: u64,
    /// Queue limit, bytes waiting behind the packet being transmitted. Only used with
    /// `rate_kbps`. Default none (only `queue_packets` limits the queue).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_bytes: Option<u64>,
    /// Gilbert-Elliott burst loss. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<GilbertElliott>,
    /// Windows, relative to the link's start, in which every packet sent is lost. More can be
    /// added at run time with [`Link::add_blackout`](crate::Link::add_blackout). Default none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blackouts: Vec<Blackout>,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            delay_ms: 0.0,
            jitter_ms: 0.0,
            jitter_correlation: 0.0,
            jitter_reorder: false,
            loss: 0.0,
            reorder: 0.0,
            reorder_delay_ms: 10.0,
            duplicate: 0.0,
            rate_kbps: None,
            queue_packets: 1000,
            queue_bytes: None,
            burst: None,
            blackouts: Vec::new(),
        }
    }
}

impl LinkConfig {
    /// Checks every field; [`Link::new`](crate::Link::new) calls it. The error names the first
    /// bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        millis("delay_ms", self.delay_ms)?;
        millis("jitter_ms", self.jitter_ms)?;
        probability("jitter_correlation", self.jitter_correlation)?;
        probability("loss", self.loss)?;
        probability("reorder", self.reorder)?;
        millis("reorder_delay_ms", self.reorder_delay_ms)?;
        probability("duplicate", self.duplicate)?;
        if self.rate_kbps == Some(0) {
            return Err(ConfigError::NotPositive {
                field: "rate_kbps".to_owned(),
            });
        }
        if let Some(burst) = &self.burst {
            burst.validate().map_err(|e| e.within("burst"))?;
        }
        for (i, blackout) in self.blackouts.iter().enumerate() {
            blackout
                .validate()
                .map_err(|e| e.within(&format!("blackouts[{i}]")))?;
        }
        Ok(())
    }

    /// Whether this configuration may deliver packets out of send order.
    pub fn reorders(&self) -> bool {
        self.reorder > 0.0 || (self.jitter_reorder && self.jitter_ms > 0.0)
    }
}

/// Gilbert-Elliott burst loss: a two-state Markov chain, stepped once per packet.
///
/// The link starts in the good state. For each packet it first moves (good → bad with
/// probability `p`, bad → good with probability `r`), then loses the packet with the new
/// state's loss probability. With the defaults `loss_good = 0`, `loss_bad = 1`, losses come in
/// bursts of mean length `1 / r` packets, every `1 / p` packets on average, and the long-run
/// loss rate is `p / (p + r)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GilbertElliott {
    /// Probability of moving from the good to the bad state, per packet. Default 0.
    pub p: f64,
    /// Probability of moving from the bad to the good state, per packet. Default 1.
    pub r: f64,
    /// Loss probability in the good state. Default 0.
    pub loss_good: f64,
    /// Loss probability in the bad state. Default 1.
    pub loss_bad: f64,
}

impl Default for GilbertElliott {
    fn default() -> Self {
        Self {
            p: 0.0,
            r: 1.0,
            loss_good: 0.0,
            loss_bad: 1.0,
        }
    }
}

impl GilbertElliott {
    /// Bursts that start with probability `p` and end with probability `r` per packet, every
    /// packet of a burst lost.
    pub fn new(p: f64, r: f64) -> Self {
        Self {
            p,
            r,
            ..Self::default()
        }
    }

    /// The long-run fraction of packets lost, from the chain's stationary distribution
    /// (`loss_good` when the chain never leaves the good state).
    pub fn loss_rate(&self) -> f64 {
        if self.p + self.r == 0.0 {
            return self.loss_good;
        }
        let bad = self.p / (self.p + self.r);
        (1.0 - bad) * self.loss_good + bad * self.loss_bad
    }

    /// Mean number of consecutive packets in the bad state, `1 / r` (infinite for `r = 0`).
    pub fn mean_burst(&self) -> f64 {
        1.0 / self.r
    }

    fn validate(&self) -> Result<(), ConfigError> {
        probability("p", self.p)?;
        probability("r", self.r)?;
        probability("loss_good", self.loss_good)?;
        probability("loss_bad", self.loss_bad)
    }
}

/// A window, relative to the link's start, in which every packet sent is lost.
///
/// A packet is lost when it is *sent* at a time in `start_ms..start_ms + duration_ms`;
/// packets already in flight when the window opens are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blackout {
    /// Start, ms after the link's start.
    pub start_ms: f64,
    /// Length, ms; greater than 0.
    pub duration_ms: f64,
}

impl Blackout {
    fn validate(&self) -> Result<(), ConfigError> {
        millis("start_ms", self.start_ms)?;
        millis("duration_ms", self.duration_ms)?;
        if self.duration_ms == 0.0 {
            return Err(ConfigError::NotPositive {
                field: "duration_ms".to_owned(),
            });
        }
        Ok(())
    }
}

/// A [`LinkConfig`] field out of range. The `field` is the path of the field as written in a
/// file, like `burst.r` or `blackouts[1].duration_ms`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A probability outside `0..=1` (or NaN).
    #[error("{field} must be a probability in 0..=1, got {value}")]
    Probability {
        /// The field.
        field: String,
        /// Its value.
        value: f64,
    },
    /// A duration that is negative, not finite, or longer than [`MAX_MS`].
    #[error("{field} must be a duration in 0..={MAX_MS} ms, got {value}")]
    Millis {
        /// The field.
        field: String,
        /// Its value.
        value: f64,
    },
    /// A zero where only a positive value makes sense (a rate, a blackout's length).
    #[error("{field} must be greater than 0")]
    NotPositive {
        /// The field.
        field: String,
    },
}

impl ConfigError {
    /// The same error for the field nested under `prefix`.
    pub(crate) fn within(mut self, prefix: &str) -> Self {
        let (Self::Probability { field, .. }
        | Self::Millis { field, .. }
        | Self::NotPositive { field }) = &mut self;
        *field = format!("{prefix}.{field}");
        self
    }
}

fn probability(field: &str, value: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::Probability {
            field: field.to_owned(),
            value,
        })
    }
}

fn millis(field: &str, value: f64) -> Result<(), ConfigError> {
    if (0.0..=MAX_MS).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::Millis {
            field: field.to_owned(),
            value,
        })
    }
}

/// A validated millisecond value in nanoseconds.
pub(crate) fn nanos(ms: f64) -> u64 {
    // `as` saturates (and maps NaN to 0); validated values are far below u64::MAX anyway.
    (ms * 1e6).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_transparent() {
        let config = LinkConfig::default();
        assert_eq!(config.validate(), Ok(()));
        assert!(!config.reorders());
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(LinkConfig, &str)> = vec![
            (
                LinkConfig {
                    delay_ms: -1.0,
                    ..LinkConfig::default()
                },
                "delay_ms must be a duration in 0..=2592000000 ms, got -1",
            ),
            (
                LinkConfig {
                    jitter_ms: f64::NAN,
                    ..LinkConfig::default()
                },
                "jitter_ms must be a duration in 0..=2592000000 ms, got NaN",
            ),
            (
                LinkConfig {
                    jitter_correlation: 1.5,
                    ..LinkConfig::default()
                },
                "jitter_correlation must be a probability in 0..=1, got 1.5",
            ),
            (
                LinkConfig {
                    loss: -0.1,
                    ..LinkConfig::default()
                },
                "loss must be a probability in 0..=1, got -0.1",
            ),
            (
                LinkConfig {
                    reorder: 2.0,
                    ..LinkConfig::default()
                },
                "reorder must be a probability in 0..=1, got 2",
            ),
            (
                LinkConfig {
                    reorder_delay_ms: f64::INFINITY,
                    ..LinkConfig::default()
                },
                "reorder_delay_ms must be a duration in 0..=2592000000 ms, got inf",
            ),
            (
                LinkConfig {
                    duplicate: f64::NAN,
                    ..LinkConfig::default()
                },
                "duplicate must be a probability in 0..=1, got NaN",
            ),
            (
                LinkConfig {
                    rate_kbps: Some(0),
                    ..LinkConfig::default()
                },
                "rate_kbps must be greater than 0",
            ),
            (
                LinkConfig {
                    burst: Some(GilbertElliott::new(0.1, 1.1)),
                    ..LinkConfig::default()
                },
                "burst.r must be a probability in 0..=1, got 1.1",
            ),
            (
                LinkConfig {
                    burst: Some(GilbertElliott {
                        loss_bad: -1.0,
                        ..GilbertElliott::default()
                    }),
                    ..LinkConfig::default()
                },
                "burst.loss_bad must be a probability in 0..=1, got -1",
            ),
            (
                LinkConfig {
                    blackouts: vec![
                        Blackout {
                            start_ms: 0.0,
                            duration_ms: 1.0,
                        },
                        Blackout {
                            start_ms: 5.0,
                            duration_ms: 0.0,
                        },
                    ],
                    ..LinkConfig::default()
                },
                "blackouts[1].duration_ms must be greater than 0",
            ),
            (
                LinkConfig {
                    blackouts: vec![Blackout {
                        start_ms: 1e12,
                        duration_ms: 1.0,
                    }],
                    ..LinkConfig::default()
                },
                "blackouts[0].start_ms must be a duration in 0..=2592000000 ms, got 1000000000000",
            ),
        ];
        for (config, message) in cases {
            let err = config.validate().err().map(|e| e.to_string());
            assert_eq!(err.as_deref(), Some(message));
        }
    }

    #[test]
    fn gilbert_elliott_numbers() {
        let ge = GilbertElliott::new(0.01, 0.25);
        assert!((ge.loss_rate() - 0.01 / 0.26).abs() < 1e-12);
        assert_eq!(ge.mean_burst(), 4.0);
        let stuck_good = GilbertElliott {
            p: 0.0,
            r: 0.0,
            loss_good: 0.1,
            loss_bad: 1.0,
        };
        assert_eq!(stuck_good.loss_rate(), 0.1);
    }

    #[test]
    fn json_round_trip_defaults_and_unknown_fields() {
        let config: LinkConfig = serde_json::from_str(
            r#"{"delay_ms": 40, "loss": 0.02, "burst": {"p": 0.01, "r": 0.25},
                "blackouts": [{"start_ms": 5000, "duration_ms": 1000}], "rate_kbps": 2000}"#,
        )
        .expect("parses");
        assert_eq!(
            config,
            LinkConfig {
                delay_ms: 40.0,
                loss: 0.02,
                burst: Some(GilbertElliott::new(0.01, 0.25)),
                blackouts: vec![Blackout {
                    start_ms: 5000.0,
                    duration_ms: 1000.0
                }],
                rate_kbps: Some(2000),
                ..LinkConfig::default()
            }
        );
        let json = serde_json::to_string(&config).expect("serializes");
        let back: LinkConfig = serde_json::from_str(&json).expect("parses back");
        assert_eq!(back, config);

        let empty: LinkConfig = serde_json::from_str("{}").expect("parses");
        assert_eq!(empty, LinkConfig::default());

        let unknown = serde_json::from_str::<LinkConfig>(r#"{"delay": 40}"#)
            .err()
            .map(|e| e.to_string());
        assert!(
            unknown
                .as_deref()
                .is_some_and(|e| e.contains("unknown field `delay`")),
            "{unknown:?}"
        );
        let unknown_nested =
            serde_json::from_str::<LinkConfig>(r#"{"burst": {"p": 0.1, "q": 0.2}}"#);
        assert!(unknown_nested.is_err());
    }
}
