//! `voq load` as an operator runs it: a short two-step run against its own `voq serve` child,
//! with JSON out. The figures themselves are benchmarks (docs/BENCHMARKS.md); this checks that
//! the tool measures something real: sessions completed, the server's CPU counted, no failure.
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn load_runs_real_sessions_and_reports_the_servers_cost() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("load.json");
    let out = Command::new(env!("CARGO_BIN_EXE_voq"))
        .args([
            "load", "--calls", "1,4", "--step", "3s", "--turns", "1", "--codec", "pcm16",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("rated load:"), "{table}");
    let steps: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let steps = steps.as_array().unwrap();
    assert_eq!(steps.len(), 2);
    for (step, calls) in steps.iter().zip([1, 4]) {
        assert_eq!(step["calls"], calls);
        assert_eq!(step["sessions_failed"], 0, "{step}");
        assert!(step["sessions_ok"].as_u64().unwrap() >= calls, "{step}");
        assert!(step["server_cpu_s"].as_f64().unwrap() > 0.0, "{step}");
        assert!(step["call_seconds"].as_f64().unwrap() > 2.0, "{step}");
        assert!(step["server_rss_mb"].as_f64().unwrap() > 1.0, "{step}");
        assert!(step["setup_ms_p99"].as_f64().unwrap() > 0.0, "{step}");
    }
}
