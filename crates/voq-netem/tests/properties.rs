//! Properties of `Link` over random configurations and random send schedules, and the
//! statistics of its random impairments over many packets.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use voq_netem::{Blackout, GilbertElliott, Link, LinkConfig, LinkStats};

/// A packet: its send index, when it was sent (since the start), its size.
type Packet = (u32, Duration, usize);

#[derive(Debug, Clone, PartialEq)]
struct Delivery {
    id: u32,
    sent: Duration,
    size: usize,
    at: Duration,
}

#[derive(Debug, Clone, PartialEq)]
struct Trace {
    deliveries: Vec<Delivery>,
    stats: LinkStats,
    in_flight: usize,
}

fn origin() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

/// Sends `schedule` (gap before each packet, size) through a link and drains it to the end.
/// With `poll_every`, the link is polled only at sends and at multiples of it (so deliveries
/// are observed late); without, exactly at every `poll_timeout`.
fn run(
    config: &LinkConfig,
    seed: u64,
    schedule: &[(Duration, usize)],
    poll_every: Option<Duration>,
) -> Trace {
    let start = origin();
    let mut link: Link<Packet> = Link::new(config.clone(), seed, start).expect("valid config");
    let mut sends = Vec::with_capacity(schedule.len());
    let mut t = Duration::ZERO;
    for &(gap, size) in schedule {
        t += gap;
        sends.push((t, size));
    }
    let mut next = 0;
    let mut now = Duration::ZERO;
    let mut deliveries = Vec::new();
    for _round in 0..1_000_000 {
        while let Some(&(at, size)) = sends.get(next)
            && at == now
        {
            link.send(start + now, (next as u32, at, size), size);
            next += 1;
        }
        while let Some((id, sent, size)) = link.poll_deliver(start + now) {
            deliveries.push(Delivery {
                id,
                sent,
                size,
                at: now,
            });
        }
        let timeout = link.poll_timeout().map(|t| t.duration_since(start));
        let timeout = match (timeout, poll_every) {
            (Some(t), Some(step)) => {
                let steps = t.as_nanos().div_ceil(step.as_nanos());
                Some(step * u32::try_from(steps).expect("test times are short"))
            }
            (t, _) => t,
        };
        let send = sends.get(next).map(|&(at, _)| at);
        match send.into_iter().chain(timeout).min() {
            Some(t) => {
                assert!(t >= now, "time went backwards: {t:?} < {now:?}");
                now = t;
            }
            None => {
                return Trace {
                    deliveries,
                    stats: *link.stats(),
                    in_flight: link.in_flight(),
                };
            }
        }
    }
    panic!("the run did not end");
}

/// Milliseconds to nanoseconds, rounded as the link does.
fn nanos(ms: f64) -> u64 {
    (ms * 1e6).round() as u64
}

fn probability() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), 0.0..0.5f64]
}

prop_compose! {
    fn burst()(p in 0.0..0.3f64, r in 0.05..=1.0f64, good in 0.0..0.2f64, bad in 0.5..=1.0f64)
        -> GilbertElliott
    {
        GilbertElliott { p, r, loss_good: good, loss_bad: bad }
    }
}

prop_compose! {
    fn link_config()(
        (delay_ms, jitter_ms, jitter_correlation, jitter_reorder) in
            (0.0..200.0f64, prop_oneof![Just(0.0), 0.0..80.0f64], 0.0..=1.0f64, any::<bool>()),
        (loss, reorder, reorder_delay_ms, duplicate) in
            (probability(), probability(), 0.0..50.0f64, probability()),
        (rate_kbps, queue_packets, queue_bytes) in (
            proptest::option::of(50u64..5000),
            0u64..40,
            proptest::option::of(0u64..20_000),
        ),
        burst in proptest::option::of(burst()),
        blackouts in proptest::collection::vec((0.0..2000.0f64, 0.1..500.0f64), 0..3),
    ) -> LinkConfig {
        LinkConfig {
            delay_ms,
            jitter_ms,
            jitter_correlation,
            jitter_reorder,
            loss,
            reorder,
            reorder_delay_ms,
            duplicate,
            rate_kbps,
            queue_packets,
            queue_bytes,
            burst,
            blackouts: blackouts
                .into_iter()
                .map(|(start_ms, duration_ms)| Blackout { start_ms, duration_ms })
                .collect(),
        }
    }
}

fn schedule() -> impl Strategy<Value = Vec<(Duration, usize)>> {
    let gap = prop_oneof![Just(0u64), 0u64..20_000].prop_map(Duration::from_micros);
    proptest::collection::vec((gap, 1usize..1500), 1..150)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn conservation(config in link_config(), seed in any::<u64>(), schedule in schedule()) {
        let trace = run(&config, seed, &schedule, None);
        let s = trace.stats;
        prop_assert_eq!(trace.in_flight, 0);
        prop_assert_eq!(s.sent, schedule.len() as u64);
        prop_assert_eq!(s.delivered, trace.deliveries.len() as u64);
        prop_assert_eq!(s.delivered + s.dropped.total(), s.sent + s.duplicated);
        let bytes: usize = trace.deliveries.iter().map(|d| d.size).sum();
        prop_assert_eq!(s.delivered_bytes, bytes as u64);
    }

    #[test]
    fn no_early_delivery(config in link_config(), seed in any::<u64>(), schedule in schedule()) {
        let floor = Duration::from_nanos(
            nanos(config.delay_ms).saturating_sub(nanos(config.jitter_ms)),
        );
        for d in run(&config, seed, &schedule, None).deliveries {
            prop_assert!(d.at >= d.sent + floor, "{d:?} earlier than {floor:?} after sending");
        }
    }

    #[test]
    fn send_order_kept_unless_reordering_is_configured(
        config in link_config(),
        seed in any::<u64>(),
        schedule in schedule(),
    ) {
        let config = LinkConfig { reorder: 0.0, jitter_reorder: false, ..config };
        prop_assert!(!config.reorders());
        let trace = run(&config, seed, &schedule, None);
        let ids: Vec<u32> = trace.deliveries.iter().map(|d| d.id).collect();
        prop_assert!(ids.is_sorted(), "out of order: {ids:?}");
        prop_assert_eq!(trace.stats.reordered, 0);
    }

    #[test]
    fn rate_limit_respected(config in link_config(), seed in any::<u64>(), schedule in schedule()) {
        let Some(kbps) = config.rate_kbps else {
            return Ok(());
        };
        // Over any window [t_i, t_j] between two deliveries, the bytes delivered in it are at
        // most rate × window plus one packet (the first): bytes(i+1..=j) × 8e6 ≤ kbps × ns.
        let d = run(&config, seed, &schedule, None).deliveries;
        for i in 0..d.len() {
            let mut bytes = 0u128;
            for j in i + 1..d.len() {
                bytes += d[j].size as u128;
                let window = (d[j].at - d[i].at).as_nanos();
                prop_assert!(
                    bytes * 8_000_000 <= u128::from(kbps) * window,
                    "{bytes} bytes after the delivery at {:?} within {window} ns at {kbps} kbps",
                    d[i].at
                );
            }
        }
    }

    #[test]
    fn same_seed_same_run(config in link_config(), seed in any::<u64>(), schedule in schedule()) {
        prop_assert_eq!(
            run(&config, seed, &schedule, None),
            run(&config, seed, &schedule, None)
        );
    }

    #[test]
    fn deliveries_do_not_depend_on_when_the_link_is_polled(
        config in link_config(),
        seed in any::<u64>(),
        schedule in schedule(),
        step_us in 1u64..50_000,
    ) {
        let exact = run(&config, seed, &schedule, None);
        let coarse = run(&config, seed, &schedule, Some(Duration::from_micros(step_us)));
        let ids = |t: &Trace| t.deliveries.iter().map(|d| d.id).collect::<Vec<_>>();
        prop_assert_eq!(ids(&exact), ids(&coarse));
        prop_assert_eq!(exact.stats, coarse.stats);
        // Observed late, never early.
        for (e, c) in exact.deliveries.iter().zip(&coarse.deliveries) {
            prop_assert!(c.at >= e.at);
        }
    }

    #[test]
    fn blackouts_drop_everything_sent_inside(
        config in link_config(),
        seed in any::<u64>(),
        schedule in schedule(),
    ) {
        let windows: Vec<(Duration, Duration)> = config
            .blackouts
            .iter()
            .map(|b| {
                let from = Duration::from_nanos(nanos(b.start_ms));
                (from, from + Duration::from_nanos(nanos(b.duration_ms)))
            })
            .collect();
        let inside = |t: Duration| windows.iter().any(|&(from, until)| from <= t && t < until);
        let trace = run(&config, seed, &schedule, None);
        for d in &trace.deliveries {
            prop_assert!(!inside(d.sent), "{d:?} was sent inside a blackout");
        }
        let mut t = Duration::ZERO;
        let sent_inside = schedule
            .iter()
            .filter(|&&(gap, _)| {
                t += gap;
                inside(t)
            })
            .count();
        prop_assert_eq!(trace.stats.dropped.blackout, sent_inside as u64);
    }

    #[test]
    fn different_seeds_differ_on_lossy_links(
        loss in 0.2..0.8f64,
        seeds in (any::<u64>(), any::<u64>()).prop_filter("distinct", |(a, b)| a != b),
    ) {
        // 100 packets each lost with probability p: two seeds agree on all of them with
        // probability (p² + (1-p)²)^100 < 1e-16.
        let config = LinkConfig { loss, ..LinkConfig::default() };
        let schedule = vec![(Duration::from_millis(1), 100); 100];
        let ids = |seed| {
            run(&config, seed, &schedule, None)
                .deliveries
                .into_iter()
                .map(|d| d.id)
                .collect::<Vec<_>>()
        };
        prop_assert_ne!(ids(seeds.0), ids(seeds.1));
    }
}

/// Sends `n` packets 1 ms apart through a link and returns which were lost.
fn losses(config: LinkConfig, seed: u64, n: u32) -> Vec<bool> {
    let start = origin();
    let mut link: Link<u32> = Link::new(config, seed, start).expect("valid config");
    let mut lost = vec![true; n as usize];
    for i in 0..n {
        let now = start + Duration::from_millis(u64::from(i));
        link.send(now, i, 100);
        while let Some(id) = link.poll_deliver(now) {
            lost[id as usize] = false;
        }
    }
    let end = start + Duration::from_secs(3600);
    while let Some(id) = link.poll_deliver(end) {
        lost[id as usize] = false;
    }
    lost
}

fn rate(lost: &[bool]) -> f64 {
    lost.iter().filter(|&&l| l).count() as f64 / lost.len() as f64
}

/// Lengths of the runs of consecutive losses.
fn bursts(lost: &[bool]) -> Vec<usize> {
    lost.split(|&l| !l)
        .map(<[bool]>::len)
        .filter(|&n| n > 0)
        .collect()
}

#[test]
fn random_loss_rate_converges() {
    let n = 100_000;
    for p in [0.01, 0.1, 0.5] {
        for seed in 1..=3 {
            let measured = rate(&losses(
                LinkConfig {
                    loss: p,
                    ..LinkConfig::default()
                },
                seed,
                n,
            ));
            // Five standard deviations of the binomial proportion.
            let tolerance = 5.0 * (p * (1.0 - p) / f64::from(n)).sqrt();
            assert!(
                (measured - p).abs() < tolerance,
                "loss {p}, seed {seed}: measured {measured}"
            );
        }
    }
}

#[test]
fn gilbert_elliott_makes_bursts_of_mean_length_one_over_r() {
    let n = 200_000;
    for (p, r) in [(0.02, 0.25), (0.005, 0.1), (0.05, 0.5)] {
        let ge = GilbertElliott::new(p, r);
        let lost = losses(
            LinkConfig {
                burst: Some(ge),
                ..LinkConfig::default()
            },
            7,
            n,
        );
        let bursts = bursts(&lost);
        let mean = bursts.iter().sum::<usize>() as f64 / bursts.len() as f64;
        assert!(
            (mean - 1.0 / r).abs() < 0.08 / r,
            "p {p}, r {r}: mean burst {mean} over {} bursts",
            bursts.len()
        );
        let measured = rate(&lost);
        assert!(
            (measured - ge.loss_rate()).abs() < 0.15 * ge.loss_rate(),
            "p {p}, r {r}: loss {measured}, expected {}",
            ge.loss_rate()
        );
    }

    // Independent loss at the same rate has runs of mean length 1 / (1 - rate): close to 1.
    let lost = losses(
        LinkConfig {
            loss: GilbertElliott::new(0.02, 0.25).loss_rate(),
            ..LinkConfig::default()
        },
        7,
        n,
    );
    let bursts = bursts(&lost);
    let mean = bursts.iter().sum::<usize>() as f64 / bursts.len() as f64;
    assert!(mean < 1.2, "random loss has mean run {mean}");
}

#[test]
fn gilbert_elliott_with_partial_loss_in_both_states_converges() {
    let ge = GilbertElliott {
        p: 0.05,
        r: 0.2,
        loss_good: 0.02,
        loss_bad: 0.6,
    };
    let measured = rate(&losses(
        LinkConfig {
            burst: Some(ge),
            ..LinkConfig::default()
        },
        11,
        200_000,
    ));
    assert!(
        (measured - ge.loss_rate()).abs() < 0.1 * ge.loss_rate(),
        "measured {measured}, expected {}",
        ge.loss_rate()
    );
}

#[test]
fn duplicate_rate_converges() {
    let start = origin();
    let config = LinkConfig {
        duplicate: 0.1,
        ..LinkConfig::default()
    };
    let mut link: Link<u32> = Link::new(config, 5, start).expect("valid config");
    for i in 0..100_000 {
        link.send(start, i, 1);
        while link.poll_deliver(start).is_some() {}
    }
    let duplicated = link.stats().duplicated as f64 / 100_000.0;
    assert!((duplicated - 0.1).abs() < 0.005, "{duplicated}");
}

#[test]
fn one_impairment_does_not_shift_another() {
    // The random-loss decisions for each packet are the same with or without duplication,
    // reordering, jitter and burst loss (bar the packets burst loss takes): each impairment
    // has its own stream.
    let plain = losses(
        LinkConfig {
            loss: 0.3,
            ..LinkConfig::default()
        },
        9,
        2000,
    );
    let busy = losses(
        LinkConfig {
            loss: 0.3,
            duplicate: 0.5,
            reorder: 0.5,
            jitter_ms: 5.0,
            burst: Some(GilbertElliott::new(0.1, 0.5)),
            ..LinkConfig::default()
        },
        9,
        2000,
    );
    let bursty = losses(
        LinkConfig {
            burst: Some(GilbertElliott::new(0.1, 0.5)),
            ..LinkConfig::default()
        },
        9,
        2000,
    );
    let expected: Vec<bool> = plain.iter().zip(&bursty).map(|(a, b)| *a || *b).collect();
    assert_eq!(busy, expected);
}
