//! `voq bench --quick` as CI runs it, one test per group of figures (each well under the
//! nextest time limit). Only invariants are asserted — the reliable path delivers the prompt
//! whole and bit-exact on every network, the JSON has its keys, the HTML is written — never
//! timings: those are the bench's output, not its pass criteria.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use voq_bench::bench::{BenchArgs, run};

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench")
}

/// Whether network namespaces are available; when not, says why `what` is skipped (and fails
/// when `VOQ_NETNS_REQUIRED` is set, as in CI).
fn netns_or_skip(what: &str) -> bool {
    match voq_netns::NetnsLink::available() {
        Ok(()) => true,
        Err(why) => {
            assert!(
                std::env::var_os("VOQ_NETNS_REQUIRED").is_none(),
                "network namespaces required but unavailable: {why}"
            );
            eprintln!("SKIPPED: {what} needs network namespaces: {why}");
            false
        }
    }
}

/// Runs the quick bench on `scenarios` into a temporary directory; returns the parsed JSON.
async fn quick(scenarios: &[&str]) -> Value {
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("bench.json");
    let html = out.path().join("report.html");
    let args = BenchArgs {
        quick: true,
        json: Some(json.clone()),
        html: Some(html.clone()),
        scenarios: scenarios.iter().map(|s| s.to_string()).collect(),
        dir: Some(scenario_dir()),
        list: false,
    };
    // Ok means every call of every run completed.
    tokio::time::timeout(Duration::from_secs(110), run(args))
        .await
        .expect("the quick bench took more than 110 s")
        .unwrap();
    let html = std::fs::read_to_string(html).unwrap();
    assert!(html.starts_with("<!doctype html>") && html.contains("<svg"));
    let doc: Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    let list = doc["scenarios"].as_array().unwrap();
    assert!(!list.is_empty());
    for s in list {
        for key in ["name", "carrier", "network", "metrics"] {
            assert!(s.get(key).is_some(), "{key} missing in {s}");
        }
        assert!(
            ["quic", "webtransport", "ws"].contains(&s["carrier"].as_str().unwrap()),
            "{s}"
        );
        assert!(s["network"]["description"].is_string());
        let m = &s["metrics"];
        let name = s["name"].as_str().unwrap();
        // The reliable path: every frame sent is confirmed, in every scenario.
        assert_eq!(
            m["prompt_delivered_fraction"].as_f64(),
            Some(1.0),
            "{name}: prompt not delivered whole"
        );
        assert!(m["setup_rtts"].is_number(), "{name}");
    }
    doc
}

fn scenario<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("scenario {name} missing"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_integrity_is_exact_through_every_loss_scenario() {
    let doc = quick(&["prompt"]).await;
    let names = [
        "prompt-loss-0",
        "prompt-loss-1",
        "prompt-loss-5",
        "prompt-loss-10",
        "prompt-loss-20",
        "prompt-bursts",
        "prompt-blackout-1s",
    ];
    for name in names {
        let m = &scenario(&doc, name)["metrics"];
        assert_eq!(m["prompt_delivered_fraction"].as_f64(), Some(1.0), "{name}");
        assert_eq!(
            m["prompt_bit_exact"].as_f64(),
            Some(1.0),
            "{name}: echo differs"
        );
        for key in [
            "prompt_extra_delay_p50_ms",
            "prompt_extra_delay_p99_ms",
            "reference_delivered_fraction",
        ] {
            assert!(m[key].is_number(), "{name}: {key} missing");
        }
        let r = m["reference_delivered_fraction"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&r), "{name}: {r}");
    }
    // The physical limit is computed for each lossy scenario (quick: a 1 s turn, 50 frames),
    // and the ratio printed beside it where the limit is not zero.
    let m = &scenario(&doc, "prompt-loss-20")["metrics"];
    let limit = m["prompt_limit_p99_ms"].as_f64().expect("limit at 20 %");
    assert!((60.0..=400.0).contains(&limit), "20 % limit p99 {limit} ms");
    let ratio = m["prompt_extra_delay_p99_ratio"].as_f64().expect("ratio");
    let p99 = m["prompt_extra_delay_p99_ms"].as_f64().unwrap();
    assert!((ratio - p99.max(0.0) / limit).abs() < 1e-9);
    let lossless = &scenario(&doc, "prompt-loss-0")["metrics"];
    assert_eq!(lossless["prompt_limit_p99_ms"].as_f64(), Some(0.0));
    assert!(lossless["prompt_extra_delay_p99_ratio"].is_null());
    // The loss was real: the emulator dropped packets of the lossy runs.
    let runs = &scenario(&doc, "prompt-loss-20")["runs"];
    let dropped = &runs[0]["netem"]["up"]["dropped"]["random_loss"];
    assert!(dropped.as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_and_bargein_report_their_metrics() {
    let doc = quick(&["setup", "bargein"]).await;
    for name in ["setup-rtt-20", "setup-rtt-100", "setup-rtt-300"] {
        let m = &scenario(&doc, name)["metrics"];
        for key in [
            "setup_rtts",
            "first_prompt_byte_rtts",
            "zero_rtt_setup_rtts",
            "zero_rtt_first_prompt_byte_rtts",
        ] {
            assert!(m[key].is_number(), "{name}: {key} missing");
        }
        assert_eq!(m["prompt_bit_exact"].as_f64(), Some(1.0), "{name}");
        assert_eq!(
            m["zero_rtt_prompt_delivered_fraction"].as_f64(),
            Some(1.0),
            "{name}"
        );
    }
    for name in [
        "bargein-rtt-20",
        "bargein-rtt-60",
        "bargein-rtt-300",
        "bargein-opus-rtt-60",
    ] {
        let m = &scenario(&doc, name)["metrics"];
        for key in [
            "bargein_silence_ms",
            "bargein_server_stop_ms",
            "unplayed_bytes",
            "truncation_error_ms",
        ] {
            assert!(m[key].is_number(), "{name}: {key} missing");
        }
    }
}

fn check_replies(doc: &Value) {
    for s in doc["scenarios"].as_array().unwrap() {
        let m = &s["metrics"];
        assert!(m["reply_underruns"].is_number() && m["reply_stall_ms"].is_number());
        // The blackouts fired.
        if s["network"]["blackouts"]
            .as_array()
            .is_some_and(|b| !b.is_empty())
        {
            assert!(
                !s["runs"][0]["blackouts_fired"]
                    .as_array()
                    .unwrap()
                    .is_empty()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playback_reports_stalls() {
    let doc = quick(&["playback"]).await;
    check_replies(&doc);
    // 0.5, 1, 1.5, 2 and 4 s.
    assert_eq!(doc["scenarios"].as_array().unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_ahead_sweep_reports_both_sides_of_the_trade_off() {
    let doc = quick(&["send-ahead"]).await;
    check_replies(&doc);
    for lead in ["0", "500", "2000", "unbounded"] {
        let m = &scenario(&doc, &format!("lead-{lead}-bargein"))["metrics"];
        assert!(m["unplayed_bytes"].is_number(), "lead {lead}");
        let m = &scenario(&doc, &format!("lead-{lead}-blackout"))["metrics"];
        assert!(m["reply_stall_ms"].is_number(), "lead {lead}");
    }
}

/// The same call over each carrier through one netns link (root only; CI runs as root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_carrier_delivers_the_prompt_through_the_same_emulated_path() {
    if !netns_or_skip("the carriers figure") {
        return;
    }
    let doc = quick(&["carriers"]).await;
    for (name, carrier) in [
        ("carrier-quic-rtt-100", "quic"),
        ("carrier-webtransport-rtt-100", "webtransport"),
        ("carrier-ws-rtt-100", "ws"),
    ] {
        let s = scenario(&doc, name);
        assert_eq!(s["carrier"], carrier);
        assert!(
            s["network"]["description"]
                .as_str()
                .unwrap()
                .contains("netns"),
            "{name} ran through the namespace link"
        );
    }
}

/// A call beside a TCP bulk transfer through one 2 Mbit/s bottleneck, over each carrier (root
/// only): both flows moved data, and together no more than the bottleneck carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_and_a_tcp_bulk_transfer_share_one_bottleneck() {
    if !netns_or_skip("the fairness figure") {
        return;
    }
    let doc = quick(&["fairness-quic", "fairness-ws"]).await;
    for name in ["fairness-quic", "fairness-ws"] {
        let m = &scenario(&doc, name)["metrics"];
        let tcp = m["tcp_bulk_kbps"].as_f64().unwrap();
        let voq = m["voq_down_kbps"].as_f64().unwrap();
        assert!(tcp > 100.0, "{name}: the TCP flow moved {tcp} kbit/s");
        assert!(voq > 50.0, "{name}: the call moved {voq} kbit/s");
        // Both through one 2 Mbit/s link (a little slack for the header estimate).
        assert!(tcp + voq < 2100.0, "{name}: {tcp} + {voq} kbit/s");
        let share = m["tcp_bulk_share"].as_f64().unwrap();
        assert!((share - tcp / 2000.0).abs() < 1e-9);
    }
}

/// The recovery figure's same-path comparison at 20 % loss (root only): every frame confirmed
/// over both carriers, the limit and setup percentiles reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_and_websocket_recover_a_prompt_through_20_percent_loss_on_one_path() {
    if !netns_or_skip("the recovery figure") {
        return;
    }
    let doc = quick(&["recovery-quic-60-20", "recovery-ws-60-20"]).await;
    for name in ["recovery-quic-60-20", "recovery-ws-60-20"] {
        let m = &scenario(&doc, name)["metrics"];
        assert_eq!(m["prompt_delivered_fraction"].as_f64(), Some(1.0), "{name}");
        for key in [
            "prompt_extra_delay_p99_ms",
            "prompt_limit_p99_ms",
            "setup_rtts_p99",
            "first_prompt_byte_rtts_p99",
        ] {
            assert!(m[key].is_number(), "{name}: {key} missing");
        }
    }
}

/// The migration figure: each call moved once and lost nothing (QUIC on the proxy path;
/// WebTransport through a netns link, root only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_moves_each_call_once_and_loses_nothing() {
    let netns = voq_netns::NetnsLink::available();
    if let Err(why) = &netns {
        assert!(
            std::env::var_os("VOQ_NETNS_REQUIRED").is_none(),
            "network namespaces required but unavailable: {why}"
        );
    }
    let names: &[&str] = if netns.is_ok() {
        &["migration"]
    } else {
        eprintln!("the WebTransport migration scenarios need network namespaces: QUIC only");
        &[
            "migration-quic-none",
            "migration-quic-mid-turn",
            "migration-quic-mid-reply",
        ]
    };
    let doc = quick(names).await;
    for s in doc["scenarios"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        let m = &s["metrics"];
        if name.ends_with("-none") {
            assert!(m.get("rebinds").is_none(), "{name}");
            continue;
        }
        assert_eq!(m["rebinds"].as_f64(), Some(1.0), "{name}: {m}");
        assert_eq!(m["reply_underruns"].as_f64(), Some(0.0), "{name}: {m}");
        assert!(m["prompt_max_gap_ms"].is_number() && m["reply_max_gap_ms"].is_number());
        if name.ends_with("mid-turn") {
            assert_eq!(m["prompt_bit_exact"].as_f64(), Some(1.0), "{name}: {m}");
        }
    }
}
