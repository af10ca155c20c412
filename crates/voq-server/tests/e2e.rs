//! End to end on loopback: a real server and a real client over QUIC.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use voq_client::{CallOptions, Client, Target, Trust};
use voq_proto::Codec;
use voq_server::{Server, Settings};

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/audio")
        .join(name)
}

fn prompt() -> Vec<i16> {
    voq_audio::read_wav_file(testdata("prompt-carwash-24k.wav"))
        .unwrap()
        .to_mono_24k()
        .unwrap()
}

async fn server(agent: &str, record: Option<PathBuf>) -> Server {
    let settings = Settings {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        agent: agent.into(),
        agent_speed: 4.0,
        record,
        drain_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    Server::start(settings).await.unwrap()
}

fn client(server: &Server) -> (Client, Target) {
    let trust = Trust::cert_hash(server.cert_sha256()).unwrap();
    let client = Client::new(&trust, "127.0.0.1:0".parse().unwrap()).unwrap();
    (
        client,
        Target {
            addr: server.local_addr(),
            server_name: "localhost".into(),
        },
    )
}

#[tokio::test]
async fn echo_in_pcm16_returns_the_prompt_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let server = server("echo", Some(dir.path().to_path_buf())).await;
    let (client, target) = client(&server);
    let prompt = prompt();
    let opts = CallOptions {
        turns: vec![prompt.clone()],
        input_speed: 4.0,
        ..Default::default()
    };
    let out = client.call(&target, opts).await.unwrap();
    assert_eq!(
        out.reply_received, prompt,
        "the echo is the prompt, sample for sample"
    );
    assert_eq!(
        out.reply_played, prompt,
        "and it played contiguously, no underrun gaps"
    );
    let r = &out.report;
    assert_eq!(r.prompt.frames_confirmed, r.prompt.frames_sent);
    assert_eq!(r.prompt.bytes_confirmed, prompt.len() as u64 * 2);
    assert_eq!(r.reply.underruns, 0);
    assert_eq!(r.reply.status.as_deref(), Some("completed"));
    server.shutdown().await;
    // --record wrote the turn and the response, each a WAV and a JSON sidecar.
    let session_dir = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut names: Vec<String> = std::fs::read_dir(&session_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 4, "{names:?}");
    let turn_wav = names
        .iter()
        .find(|n| n.starts_with("item_c1") && n.ends_with(".wav"))
        .unwrap();
    let recorded = voq_audio::read_wav_file(session_dir.join(turn_wav)).unwrap();
    assert_eq!(
        recorded.samples, prompt,
        "the recorded user turn is what the user said"
    );
}

#[tokio::test]
async fn opus_round_trip_keeps_the_speech() {
    let server = server("echo", None).await;
    let (client, target) = client(&server);
    let prompt = prompt();
    let opts = CallOptions {
        codec: Codec::Opus,
        turns: vec![prompt.clone()],
        input_speed: 0.0,
        ..Default::default()
    };
    let out = client.call(&target, opts).await.unwrap();
    let (corr, lag) = voq_audio::best_correlation(&prompt, &out.reply_received, 800);
    // Two Opus passes: about 2 × 6.5 ms of codec delay, and high similarity.
    assert!(corr > 0.85, "correlation {corr} at lag {lag}");
    assert!((250..=350).contains(&lag), "lag {lag}");
    assert_eq!(
        out.report.prompt.frames_confirmed,
        out.report.prompt.frames_sent
    );
    server.shutdown().await;
}

#[tokio::test]
async fn barge_in_truncates_at_the_played_position() {
    let reply = testdata("reply-carwash-24k.wav");
    let server = server(&format!("file:{}", reply.display()), None).await;
    let (client, target) = client(&server);
    let opts = CallOptions {
        turns: vec![prompt()],
        input_speed: 0.0,
        interrupt_after: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let out = client.call(&target, opts).await.unwrap();
    let i = out.report.interrupt.clone().unwrap();
    assert!(
        (1000..1200).contains(&i.played_ms),
        "heard {} ms",
        i.played_ms
    );
    assert_eq!(
        i.truncated_audio_end_ms,
        Some(i.played_ms),
        "truncated exactly where the user stopped hearing"
    );
    assert!(
        i.silence_ms.unwrap() <= 10.5,
        "silent within one 10 ms quantum: {:?}",
        i.silence_ms
    );
    assert!(i.unplayed_bytes > 0, "audio was sent ahead");
    // Sent ahead at most the 2 s lead (plus a little in flight): 48 kB/s of pcm16.
    assert!(
        i.unplayed_bytes < 2_300 * 48,
        "{} bytes unplayed",
        i.unplayed_bytes
    );
    assert_eq!(out.report.reply.status.as_deref(), Some("cancelled"));
    // The played timeline is exactly the reply's beginning.
    let file = voq_audio::read_wav_file(&reply)
        .unwrap()
        .to_mono_24k()
        .unwrap();
    let n = out.reply_played.len();
    assert!(n >= 24_000, "played {n} samples");
    assert_eq!(&out.reply_played[..], &file[..n]);
    server.shutdown().await;
}

#[tokio::test]
async fn exec_agent_in_python_round_trips() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/agents/echo_agent.py");
    let server = server(&format!("exec:python3 {}", script.display()), None).await;
    let (client, target) = client(&server);
    let prompt = prompt();
    let opts = CallOptions {
        turns: vec![prompt.clone(), prompt.clone()],
        input_speed: 0.0,
        ..Default::default()
    };
    let out = client.call(&target, opts).await.unwrap();
    // Two turns, each answered with the prompt at half volume (Python's // floors).
    let half: Vec<i16> = prompt
        .iter()
        .map(|s| (*s as i32).div_euclid(2) as i16)
        .collect();
    let expected: Vec<i16> = half.iter().chain(half.iter()).copied().collect();
    assert_eq!(out.reply_received.len(), expected.len());
    assert_eq!(out.reply_received, expected);
    assert!(
        out.report
            .turns
            .iter()
            .all(|t| t.reply_status.as_deref() == Some("completed"))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_crashing_exec_agent_fails_the_response_and_the_session_goes_on() {
    // Fails on the first turn (garbage, then exit), answers the second through a new process.
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("crashed");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/agents/echo_agent.py");
    let cmd = format!(
        "if [ -e {m} ]; then exec python3 {s}; else touch {m}; echo 'garbage line'; exit 3; fi",
        m = marker.display(),
        s = script.display()
    );
    let server = server(&format!("exec:{cmd}"), None).await;
    let (client, target) = client(&server);
    let short: Vec<i16> = prompt()[..24_000].to_vec();
    let opts = CallOptions {
        turns: vec![short.clone(), short],
        input_speed: 0.0,
        ..Default::default()
    };
    let out = client.call(&target, opts).await.unwrap();
    let statuses: Vec<_> = out
        .report
        .turns
        .iter()
        .map(|t| t.reply_status.clone())
        .collect();
    assert_eq!(
        statuses,
        [Some("failed".to_string()), Some("completed".to_string())]
    );
    assert_eq!(
        out.report.prompt.frames_confirmed, out.report.prompt.frames_sent,
        "no user audio lost"
    );
    assert_eq!(server.stats().agent_failures.get(), 1);
    server.shutdown().await;
}
