//! `voq fleet --call`: real `voq serve --anycast … --bird-socket … --fleet-peer …` processes in
//! an anycast fleet of network namespaces (BIRD, ECMP), called from the client namespace: every
//! call moves to its server's unicast address and gets its echo back bit-exact. Root and BIRD
//! only; `VOQ_NETNS_REQUIRED=1` (CI) turns a skip into a failure.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

#[test]
fn voq_fleet_calls_move_to_unicast_and_are_exact() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let bird = Path::new("/usr/sbin/bird").exists();
    if !(root && bird) {
        let why = format!("needs root ({root}) and BIRD 2 ({bird})");
        assert!(
            std::env::var_os("VOQ_NETNS_REQUIRED").is_none(),
            "VOQ_NETNS_REQUIRED=1 but voq fleet {why}"
        );
        eprintln!("SKIPPED: voq fleet {why}");
        return;
    }
    let prompt =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/audio/prompt-carwash-24k.wav");
    let out = Command::new(env!("CARGO_BIN_EXE_voq"))
        .args(["fleet", "--servers", "2", "--calls", "4", "--call"])
        .arg(&prompt)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reports.len(), 4, "{stdout}");
    for r in &reports {
        assert_eq!(r["preferred_address_used"], true, "{r}");
        assert_eq!(r["server"], "198.19.0.1:4433");
        assert_ne!(r["server_address"], r["server"]);
        assert_eq!(r["prompt"]["frames_confirmed"], r["prompt"]["frames_sent"]);
    }
}
