//! The binaries as a user runs them: `voq serve` in one process, `voq call` in another.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

thread_local! {
    /// Each test's own cache directory: `voq call` keeps session tickets under it, so tests
    /// neither share tickets nor leave them in the user's cache.
    static CACHE: tempfile::TempDir = tempfile::tempdir().unwrap();
}

fn voq() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_voq"));
    CACHE.with(|dir| command.env("XDG_CACHE_HOME", dir.path()));
    command
}

fn asset(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/audio")
        .join(name)
}

/// `voq serve` on an OS-chosen port; returns the process and the URL it printed.
struct Serve(Child);

impl Serve {
    fn start(agent: &str) -> (Self, String, String) {
        Self::start_with(agent, &[])
    }

    fn start_with(agent: &str, extra: &[&str]) -> (Self, String, String) {
        let mut child = voq()
            .args(["serve", "--listen", "127.0.0.1:0", "--agent", agent])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let banner = lines.next().unwrap().unwrap();
        let addr = banner.rsplit(' ').next().unwrap().to_string();
        let hint = (0..3)
            .filter_map(|_| lines.next()?.ok())
            .find(|l| l.contains("--cert-hash"))
            .unwrap();
        let hash = hint
            .split("--cert-hash ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        (Self(child), format!("https://{addr}"), hash)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_and_call_echo_give_back_the_prompt_bit_exact() {
    let (_serve, url, _) = Serve::start("echo");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.wav");
    let status = voq()
        .args(["call", &url, "--input"])
        .arg(asset("prompt-carwash-24k.wav"))
        .arg("--output")
        .arg(&out)
        .args(["--codec", "pcm16", "--insecure", "--input-speed", "0"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let sent = voq_audio::read_wav_file(asset("prompt-carwash-24k.wav")).unwrap();
    let got = voq_audio::read_wav_file(&out).unwrap();
    assert_eq!(got.samples, sent.samples, "bit-exact");
}

/// `voq call --transport` against one `voq serve`: each carrier, as JSON, bit-exact.
#[test]
fn call_over_each_transport_from_the_command_line() {
    let (_serve, url, hash) = Serve::start("echo");
    let plain = url.replace("https://", "http://");
    for (transport, url) in [
        ("quic", &url),
        ("webtransport", &url),
        ("ws", &url),
        ("ws", &plain),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.wav");
        let run = voq()
            .args(["call", url, "--transport", transport, "--input"])
            .arg(asset("prompt-carwash-24k.wav"))
            .arg("--output")
            .arg(&out)
            .args(["--input-speed", "0", "--json", "--cert-hash", &hash])
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{transport} {url}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
        assert_eq!(report["transport"], transport);
        let sent = voq_audio::read_wav_file(asset("prompt-carwash-24k.wav")).unwrap();
        let got = voq_audio::read_wav_file(&out).unwrap();
        assert_eq!(got.samples, sent.samples, "{transport}: bit-exact");
    }
    let bad = voq()
        .args([
            "call",
            &url,
            "--transport",
            "carrier-pigeon",
            "--insecure",
            "--input",
        ])
        .arg(asset("prompt-carwash-24k.wav"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("carrier-pigeon"));
}

#[test]
fn interrupt_after_reports_a_truncation_at_the_played_position_as_json() {
    let agent = format!("file:{}", asset("reply-carwash-24k.wav").display());
    let (_serve, url, hash) = Serve::start(&agent);
    let out = voq()
        .args(["call", &url, "--input"])
        .arg(asset("prompt-carwash-24k.wav"))
        .args([
            "--interrupt-after",
            "1s",
            "--cert-hash",
            &hash,
            "--json",
            "--input-speed",
            "0",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["transport", "setup_ms", "prompt", "reply", "interrupt"] {
        assert!(report.get(key).is_some(), "missing {key}: {report}");
    }
    let i = &report["interrupt"];
    let played = i["played_ms"].as_u64().unwrap();
    assert!((1000..1200).contains(&played), "{report}");
    assert_eq!(i["truncated_audio_end_ms"].as_u64(), Some(played));
    assert!(i["unplayed_bytes"].as_u64().unwrap() > 0);
    assert!(report["reply"]["underruns"].is_u64() && report["reply"]["stall_ms"].is_u64());
    assert_eq!(
        report["prompt"]["frames_sent"],
        report["prompt"]["frames_confirmed"]
    );
}

#[test]
fn call_errors_are_one_clear_line() {
    let out = voq()
        .args([
            "call",
            "https://127.0.0.1:9",
            "--input",
            "/no/such.wav",
            "--insecure",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("/no/such.wav"), "{err}");
    let out = voq()
        .args(["call", "https://127.0.0.1:9", "--input"])
        .arg(asset("prompt-carwash-24k.wav"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--cert-hash"),
        "says how to trust the server"
    );
}

/// `voq netem` between `voq call` and `voq serve`: 10 % loss both ways, jitter and an uplink
/// blackout from a scenario file, and the echo is still the prompt, bit-exact.
#[test]
fn a_call_through_voq_netem_with_loss_is_still_bit_exact() {
    let (_serve, url, _) = Serve::start("echo");
    let target = url.trim_start_matches("https://").to_string();
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/netem/lossy.toml");
    let mut netem = voq()
        .args([
            "netem",
            "--listen",
            "127.0.0.1:0",
            "--target",
            &target,
            "--seed",
            "3",
            "--scenario",
        ])
        .arg(&scenario)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = BufReader::new(netem.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let proxy = line.split_whitespace().nth(3).unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.wav");
    let status = voq()
        .args(["call", &format!("https://{proxy}"), "--input"])
        .arg(asset("prompt-carwash-24k.wav"))
        .arg("--output")
        .arg(&out)
        .args(["--insecure", "--input-speed", "0", "--timeout", "60s"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    let _ = netem.kill();
    let _ = netem.wait();
    assert!(status.success());
    let sent = voq_audio::read_wav_file(asset("prompt-carwash-24k.wav")).unwrap();
    assert_eq!(
        voq_audio::read_wav_file(&out).unwrap().samples,
        sent.samples
    );
}

/// The operator's path to authenticated sessions: `voq token keygen` and `mint`, `voq serve
/// --auth-keys`, `voq call --token` (and `VOQ_TOKEN`); a call without one is refused with the
/// reason; and `voq serve` refuses to start off loopback with neither keys nor `--no-auth`.
#[test]
fn tokens_from_keygen_to_call() {
    let dir = tempfile::tempdir().unwrap();
    let (signing, jwks) = (
        dir.path().join("signing.json"),
        dir.path().join("jwks.json"),
    );
    let keygen = voq()
        .args(["token", "keygen", "--alg", "ES256", "--kid", "2026-12"])
        .arg("--signing-key")
        .arg(&signing)
        .arg("--jwks")
        .arg(&jwks)
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{keygen:?}");
    let public = std::fs::read_to_string(&jwks).unwrap();
    assert!(
        public.contains("\"kid\": \"2026-12\"") && !public.contains("pkcs8"),
        "{public}"
    );
    let mint = voq()
        .args([
            "token", "mint", "--sub", "alice", "--ttl", "2m", "--agent", "echo",
        ])
        .arg("--signing-key")
        .arg(&signing)
        .output()
        .unwrap();
    assert!(mint.status.success(), "{mint:?}");
    let token = String::from_utf8(mint.stdout).unwrap().trim().to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    let (_serve, url, _) = Serve::start_with("echo", &["--auth-keys", jwks.to_str().unwrap()]);
    let call = |token: Option<&str>| {
        let mut cmd = voq();
        cmd.args(["call", &url, "--input"])
            .arg(asset("prompt-carwash-24k.wav"))
            .args(["--insecure", "--input-speed", "0", "--json"])
            .env_remove("VOQ_TOKEN");
        if let Some(t) = token {
            cmd.env("VOQ_TOKEN", t);
        }
        cmd.output().unwrap()
    };
    let ok = call(Some(&token));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let refused = call(None);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("token is required"), "{why}");

    let open = voq()
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!open.status.success());
    let why = String::from_utf8_lossy(&open.stderr);
    assert!(
        why.contains("--auth-keys") && why.contains("--no-auth"),
        "{why}"
    );
}

/// The ticket file: a second `voq call` (another process) resumes with 0-RTT, its first prompt
/// byte in the first flight; `--no-resume` neither uses nor keeps tickets.
#[test]
fn a_second_voq_call_resumes_with_0rtt_from_the_ticket_file() {
    let (_serve, url, hash) = Serve::start("echo");
    let call = |extra: &[&str]| -> serde_json::Value {
        let run = voq()
            .args(["call", &url, "--input"])
            .arg(asset("prompt-carwash-24k.wav"))
            .args(["--input-speed", "0", "--json", "--cert-hash", &hash])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        serde_json::from_slice(&run.stdout).unwrap()
    };
    assert_eq!(call(&["--no-resume"])["setup"]["zero_rtt"], false);
    assert_eq!(
        call(&["--no-resume"])["setup"]["zero_rtt"],
        false,
        "nothing was kept"
    );
    assert_eq!(call(&[])["setup"]["zero_rtt"], false, "no ticket yet");
    let resumed = call(&[]);
    assert_eq!(resumed["setup"]["zero_rtt"], true, "{resumed}");
    assert_eq!(resumed["setup"]["first_prompt_byte_rtts"], 0.0);
    let file = CACHE.with(|d| d.path().join("voq/tickets"));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.lines().count() >= 1, "tickets are kept");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the ticket file is private: {mode:o}");
    }
}

/// `kill -9` of the server mid-reply: `voq call` notices the silence, gives up after
/// `--dead-after` (not QUIC's 30 s idle timeout), says what happened in words, prints the partial
/// report with an `error` under `--json`, and writes the reply audio it had received.
#[test]
fn a_server_killed_mid_reply_is_noticed_and_what_came_is_kept() {
    use std::io::Read;
    use std::time::{Duration, Instant};
    let mut serve = voq()
        .args(["serve", "--listen", "127.0.0.1:0", "--agent", "echo"])
        .args(["--metrics", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(serve.stdout.take().unwrap()).lines();
    let addr = stdout.next().unwrap().unwrap();
    let addr = addr.rsplit(' ').next().unwrap().to_string();
    // The metrics address is in the log; the rest of the log is drained so the server never
    // blocks on it.
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = serve.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("metrics at http://").nth(1) {
                let _ = tx.send(rest.split('/').next().unwrap_or("").to_string());
            }
        }
    });
    std::thread::spawn(move || for _ in stdout.by_ref() {});
    let metrics = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let agent_bytes = || -> u64 {
        let Ok(mut s) = std::net::TcpStream::connect(&metrics) else {
            return 0;
        };
        let _ = std::io::Write::write_all(&mut s, b"GET /metrics HTTP/1.0\r\n\r\n");
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.lines()
            .find(|l| l.starts_with("voq_agent_bytes_sent_total"))
            .and_then(|l| l.split_whitespace().last()?.parse().ok())
            .unwrap_or(0)
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("partial.wav");
    let call = voq()
        .args(["call", &format!("https://{addr}"), "--input"])
        .arg(asset("prompt-carwash-24k.wav"))
        .arg("--output")
        .arg(&out)
        .args([
            "--insecure",
            "--input-speed",
            "0",
            "--json",
            "--dead-after",
            "2s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill once a second of the reply has gone out: the send-ahead rule keeps the server at most
    // 2 s ahead of playback, so the rest of the 2.8 s echo is still to come.
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent_bytes() < 48_000 {
        assert!(Instant::now() < deadline, "the reply never got going");
        std::thread::sleep(Duration::from_millis(20));
    }
    serve.kill().unwrap(); // SIGKILL
    let killed = Instant::now();
    let _ = serve.wait();
    let output = call.wait_with_output().unwrap();
    let took = killed.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the call cannot have succeeded");
    // Given up after the 2 s of silence (plus what was in flight), not QUIC's 30 s.
    assert!(took < Duration::from_secs(5), "took {took:?}: {stderr}");
    assert!(
        took >= Duration::from_millis(1500),
        "took {took:?}: {stderr}"
    );
    assert!(stderr.contains("has not answered for"), "{stderr}");
    assert!(stderr.contains("stopped answering"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let message = report["error"]["message"].as_str().unwrap();
    assert!(message.contains("stopped answering"), "{message}");
    assert_eq!(report["prompt"]["frames_confirmed"], 139, "{report}");
    // What arrived before the kill is kept: part of the echo, exactly as sent.
    let got = voq_audio::read_wav_file(&out).unwrap().samples;
    let sent = voq_audio::read_wav_file(asset("prompt-carwash-24k.wav"))
        .unwrap()
        .samples;
    assert!(
        got.len() >= 24_000 && got.len() < sent.len(),
        "{} samples",
        got.len()
    );
    assert_eq!(
        got[..24_000],
        sent[..24_000],
        "the partial reply is the echo's start"
    );
}
