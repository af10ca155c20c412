//! A client and a server on virtual time, talking over an impaired `Path`: the client sends a
//! 20 ms audio frame every 20 ms, the server echoes every frame it receives. The result table
//! is a snapshot: a change to it is a change in what a seed means, and must be deliberate.

use std::time::{Duration, Instant};

use voq_netem::{Blackout, LinkConfig, Path, Preset};

const FRAMES: u32 = 1500;
const FRAME: Duration = Duration::from_millis(20);
/// An Opus frame at 64 kbit/s plus UDP/IP/QUIC overhead.
const FRAME_BYTES: usize = 160 + 60;

#[derive(Debug, Clone, Copy)]
struct Frame {
    id: u32,
    sent: Instant,
}

struct Outcome {
    echoed: u32,
    rtts_ms: Vec<f64>,
    duplicates: u64,
    reordered: u64,
    last_event: Duration,
}

fn simulate(config: LinkConfig, seed: u64) -> Outcome {
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let mut path: Path<Frame> = Path::symmetric(config, seed, start).expect("valid config");
    let mut echoed = vec![false; FRAMES as usize];
    let mut rtts_ms = Vec::new();
    let mut now = start;
    let mut next_frame = Some(start);
    let mut sent = 0;
    loop {
        // Client input: the next frame, when due.
        if next_frame == Some(now) {
            path.forward.send(
                now,
                Frame {
                    id: sent,
                    sent: now,
                },
                FRAME_BYTES,
            );
            sent += 1;
            next_frame = (sent < FRAMES).then(|| now + FRAME);
        }
        // Drain both directions; the server's output is the reverse link's input.
        while let Some(frame) = path.forward.poll_deliver(now) {
            path.reverse.send(now, frame, FRAME_BYTES);
        }
        while let Some(frame) = path.reverse.poll_deliver(now) {
            let seen = &mut echoed[frame.id as usize];
            if !*seen {
                *seen = true;
                rtts_ms.push((now - frame.sent).as_secs_f64() * 1e3);
            }
        }
        match [next_frame, path.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
        {
            Some(next) => now = next,
            None => break,
        }
    }
    let (up, down) = (path.forward.stats(), path.reverse.stats());
    for s in [up, down] {
        assert_eq!(s.delivered + s.dropped.total(), s.sent + s.duplicated);
    }
    rtts_ms.sort_by(f64::total_cmp);
    Outcome {
        echoed: echoed.iter().filter(|&&e| e).count() as u32,
        rtts_ms,
        duplicates: up.duplicated + down.duplicated,
        reordered: up.reordered + down.reordered,
        last_event: now - start,
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn table() -> String {
    let blackout = LinkConfig {
        blackouts: vec![Blackout {
            start_ms: 3000.0,
            duration_ms: 1000.0,
        }],
        ..Preset::Wifi.config()
    };
    let mut scenarios: Vec<(String, LinkConfig)> = Preset::ALL
        .into_iter()
        .map(|p| (p.to_string(), p.config()))
        .collect();
    scenarios.push(("wifi+blackout".to_owned(), blackout));
    scenarios.push((
        "64kbps".to_owned(),
        LinkConfig {
            delay_ms: 10.0,
            rate_kbps: Some(64),
            queue_packets: 10,
            ..LinkConfig::default()
        },
    ));

    let mut out = String::from(
        "scenario       echoed  loss%  rtt_min  rtt_p50  rtt_p99  rtt_max  dup  reord  end_ms\n",
    );
    for (name, config) in scenarios {
        let o = simulate(config, 7);
        out += &format!(
            "{name:<14} {:>6} {:>6.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>4} {:>6} {:>7}\n",
            o.echoed,
            100.0 * f64::from(FRAMES - o.echoed) / f64::from(FRAMES),
            percentile(&o.rtts_ms, 0.0),
            percentile(&o.rtts_ms, 0.5),
            percentile(&o.rtts_ms, 0.99),
            percentile(&o.rtts_ms, 1.0),
            o.duplicates,
            o.reordered,
            o.last_event.as_millis(),
        );
    }
    out
}

#[test]
fn echo_over_presets_snapshot() {
    let expected = "\
scenario       echoed  loss%  rtt_min  rtt_p50  rtt_p99  rtt_max  dup  reord  end_ms
none             1500    0.0      0.0      0.0      0.0      0.0    0      0   29980
wifi             1476    1.6      5.9     10.1     13.1     14.3    0      0   29990
cellular         1467    2.2     58.9     81.0     96.2    104.1    0      0   30056
lossy            1307   12.9     31.7     50.7     66.1     91.7   25      6   30025
satellite        1487    0.9    591.4    600.9    607.3    610.4    0      0   30581
wifi+blackout    1426    4.9      6.3     10.1     13.3     13.9    0      0   29991
64kbps           1101   26.6     75.0    340.0    350.0    350.0    0      0   30325
";
    let actual = table();
    assert_eq!(actual, expected, "\nactual table:\n{actual}");
}

#[test]
fn echo_is_deterministic() {
    let a = simulate(Preset::Lossy.config(), 99);
    let b = simulate(Preset::Lossy.config(), 99);
    assert_eq!(a.echoed, b.echoed);
    assert_eq!(a.rtts_ms, b.rtts_ms);
    assert_eq!(a.last_event, b.last_event);
}
