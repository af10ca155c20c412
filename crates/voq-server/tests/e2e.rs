//! End to end on loopback: a real server and a real client over QUIC.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use voq_proto::event::ResponseStatus;

use voq_client::{CallOptions, Client, Target, Trust};
use voq_proto::Codec;
use voq_server::{Server, SessionEventKind, Settings, wait_for_event};

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
        agent_speed: 4.0,
        record,
        ..Settings::loopback(agent)
    };
    Server::start(settings).await.unwrap()
}

fn client(server: &Server) -> (Client, Target) {
    let trust = Trust::cert_hash(&server.cert_sha256()).unwrap();
    let client = Client::new(&trust, "127.0.0.1:0".parse().unwrap()).unwrap();
    (
        client,
        Target {
            addr: server.local_addr(),
            server_name: "localhost".into(),
            tls: true,
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
    assert_eq!(
        r.reply.status,
        Some(voq_proto::event::ResponseStatus::Completed)
    );
    // Setup as the server saw it: one session's first audio, within the call's own time.
    let stats = server.stats();
    assert_eq!(stats.first_audio_sessions.get(), 1);
    assert!(
        stats.first_audio_ms.get() < 5_000,
        "{}",
        stats.first_audio_ms.get()
    );
    assert!(
        stats
            .render_prometheus()
            .contains("voq_first_audio_sessions_total 1"),
        "the metric is exported"
    );
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
    // Its sidecar says when the turn's first frame arrived, so setup needs no polling.
    let sidecar = session_dir.join(turn_wav.replace(".wav", ".json"));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sidecar).unwrap()).unwrap();
    let after = meta["first_frame_after_connected_ms"].as_u64().unwrap();
    assert!(after < 5_000, "{meta}");
    let at = meta["first_frame_unix_ms"].as_u64().unwrap();
    assert!(
        at <= meta["recorded_at_unix_ms"].as_u64().unwrap(),
        "{meta}"
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
    // At least the second the client waited; how much more depends on how busy the machine is
    // (the wait is wall-clock), so the upper bound is loose. What voq guarantees is below: the
    // truncation is exactly where the user stopped hearing.
    assert!(
        (1000..3000).contains(&i.played_ms),
        "heard {} ms",
        i.played_ms
    );
    assert_eq!(
        i.truncated_audio_end_ms,
        Some(i.played_ms),
        "truncated exactly where the user stopped hearing"
    );
    // Silent within one quantum, in audio terms: not one sample was rendered after the
    // interrupt (the wall-clock figure, which includes scheduling, is a benchmark's business).
    assert!(i.silence_ms.is_some(), "a silent quantum was rendered");
    assert!(i.unplayed_bytes > 0, "audio was sent ahead");
    // Sent ahead at most the 2 s lead (plus a little in flight): 48 kB/s of pcm16.
    assert!(
        i.unplayed_bytes < 2_300 * 48,
        "{} bytes unplayed",
        i.unplayed_bytes
    );
    assert_eq!(
        out.report.reply.status,
        Some(voq_proto::event::ResponseStatus::Cancelled)
    );
    // The played timeline is exactly the reply's beginning.
    let file = voq_audio::read_wav_file(&reply)
        .unwrap()
        .to_mono_24k()
        .unwrap();
    let n = out.reply_played.len();
    assert!(n >= 24_000, "played {n} samples");
    assert_eq!(
        n as u64 * 1000 / 24_000,
        i.played_ms,
        "nothing rendered after the interrupt"
    );
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
            .all(|t| t.reply_status == Some(voq_proto::event::ResponseStatus::Completed))
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
    let statuses: Vec<_> = out.report.turns.iter().map(|t| t.reply_status).collect();
    assert_eq!(
        statuses,
        [
            Some(ResponseStatus::Failed),
            Some(ResponseStatus::Completed)
        ]
    );
    assert_eq!(
        out.report.prompt.frames_confirmed, out.report.prompt.frames_sent,
        "no user audio lost"
    );
    assert_eq!(server.stats().agent_failures.get(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn server_vad_cuts_the_turn_at_the_end_of_speech() {
    let server = server("echo", None).await;
    let (client, target) = client(&server);
    // The prompt, then 1.5 s of silence: the VAD must end the turn by itself.
    let mut input = prompt();
    let speech_len = input.len();
    input.extend(std::iter::repeat_n(0i16, 36_000));
    let opts = CallOptions {
        turns: vec![input.clone()],
        input_speed: 0.0,
        server_vad: true,
        ..Default::default()
    };
    let out = client.call(&target, opts).await.unwrap();
    let p = &out.report.prompt;
    assert_eq!(p.items_committed, 1, "one speech segment");
    // The segment holds all the speech (and the VAD's hangover), not the whole trailing silence.
    let seg = out.reply_received.len();
    assert!(
        seg >= speech_len - 24_000 / 2 && seg < input.len(),
        "segment {seg} of {}",
        input.len()
    );
    assert_eq!(
        out.reply_received,
        input[..seg],
        "the echo is the committed segment, bit-exact"
    );
    assert!(
        p.frames_confirmed < p.frames_sent,
        "trailing silence is not a turn"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn speak_agent_answers_with_synthesized_speech() {
    if voq_server::agent::Speak::new().is_err() {
        // scripts/setup installs espeak-ng; CI always has it.
        eprintln!("SKIPPED: espeak-ng is not installed (run scripts/setup)");
        return;
    }
    let server = server("speak", None).await;
    let (client, target) = client(&server);
    let opts = CallOptions {
        turns: vec![prompt()],
        input_speed: 0.0,
        codec: Codec::Opus,
        ..Default::default()
    };
    let out = client.call(&target, opts).await.unwrap();
    let r = &out.report.reply;
    assert_eq!(r.status, Some(voq_proto::event::ResponseStatus::Completed));
    assert!(
        r.duration_ms > 2_000,
        "a sentence of speech: {} ms",
        r.duration_ms
    );
    // It is speech, not silence: the VAD finds it.
    let mut vad = voq_audio::Vad::default();
    let speech = out
        .reply_played
        .chunks(voq_audio::FRAME_SAMPLES)
        .filter_map(|f| vad.push(f))
        .count();
    assert!(speech >= 1, "the VAD found no speech in the reply");
    server.shutdown().await;
}

#[tokio::test]
async fn a_second_call_resumes_with_0rtt() {
    let server = server("echo", None).await;
    let (client, target) = client(&server);
    let short: Vec<i16> = prompt()[..4_800].to_vec();
    let opts = CallOptions {
        turns: vec![short.clone()],
        input_speed: 0.0,
        ..Default::default()
    };
    let first = client.call(&target, opts.clone()).await.unwrap();
    assert!(!first.report.zero_rtt);
    let second = client.call(&target, opts).await.unwrap();
    assert!(
        second.report.zero_rtt,
        "the second connection resumed the TLS session and sent 0-RTT"
    );
    assert_eq!(second.reply_received, short);
    server.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_lets_the_call_finish_and_refuses_new_ones() {
    let reply = testdata("reply-carwash-24k.wav");
    let settings = Settings {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        agent: format!("file:{}", reply.display()),
        drain_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let server = Server::start(settings).await.unwrap();
    let mut events = server.events();
    let (client, target) = client(&server);
    let short: Vec<i16> = prompt()[..9_600].to_vec();
    let opts = CallOptions {
        turns: vec![short],
        input_speed: 0.0,
        ..Default::default()
    };
    let call = tokio::spawn(async move { client.call(&target, opts).await });
    // Shut down once the 16 s reply is under way.
    let started = wait_for_event(&mut events, Duration::from_secs(10), |k| {
        matches!(k, SessionEventKind::ResponseStarted { .. })
    })
    .await;
    assert!(started.is_some(), "the reply started");
    let addr = server.local_addr();
    let stats = server.stats().clone();
    // Refusing starts now, not whenever the shutdown task first runs.
    server.stop_accepting();
    let shutdown = tokio::spawn(server.shutdown());
    // A new connection is refused while the old call goes on.
    let late = Client::new(&Trust::Insecure, "127.0.0.1:0".parse().unwrap()).unwrap();
    let late_target = Target {
        addr,
        server_name: "localhost".into(),
        tls: true,
    };
    let late_opts = CallOptions {
        turns: vec![vec![0; 480]],
        timeout: Duration::from_secs(5),
        ..Default::default()
    };
    assert!(
        late.call(&late_target, late_opts).await.is_err(),
        "new calls are refused while draining"
    );
    assert!(
        !shutdown.is_finished(),
        "the server waits for the call in progress"
    );
    let out = call.await.unwrap().unwrap();
    assert_eq!(
        out.report.reply.status,
        Some(voq_proto::event::ResponseStatus::Completed)
    );
    assert!(
        out.report.reply.duration_ms > 16_000,
        "the whole reply played: {} ms",
        out.report.reply.duration_ms
    );
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stats.sessions_started.total(), stats.sessions_ended.get());
}

/// Reads control events until one of `kind` arrives (with a deadline).
async fn next_event(
    recv: &mut quinn::RecvStream,
    decoder: &mut voq_proto::wire::EventDecoder,
    kind: &str,
) -> serde_json::Value {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            while let Some(voq_proto::wire::DecodedEvent::Event(body)) = decoder.poll_event() {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                if v["type"] == kind {
                    return v;
                }
            }
            let chunk = recv.read_chunk(65_536, true).await.unwrap().unwrap();
            decoder.push(&chunk.bytes);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind} event"))
}

#[tokio::test]
async fn malformed_input_gets_errors_and_the_session_goes_on() {
    let server = server("echo", None).await;
    let conn = common::raw_connection(&server).await;
    let (mut control, mut events) = conn.open_bi().await.unwrap();
    let mut decoder = voq_proto::wire::EventDecoder::default();
    // Opening the control stream needs a byte; an unknown event is also the first bad input.
    let mut bytes = Vec::new();
    voq_proto::wire::encode_event(br#"{"type":"no.such.event"}"#, &mut bytes).unwrap();
    control.write_all(&bytes).await.unwrap();
    let e = next_event(&mut events, &mut decoder, "error").await;
    assert_eq!(e["error"]["code"], "unknown_event_type");

    // A frame over the size limit: only that stream is stopped, with its wire code.
    let mut bad = conn.open_uni().await.unwrap();
    let mut oversized = common::turn_stream_bytes("bad", &[]);
    oversized.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    bad.write_all(&oversized).await.unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(5), bad.stopped())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stopped,
        Some(quinn::VarInt::from_u32(
            voq_proto::Code::FrameTooLarge.to_u32()
        ))
    );
    let e = next_event(&mut events, &mut decoder, "error").await;
    assert_eq!(e["error"]["code"], "frame_too_large");

    // Timestamps going backwards: stopped with protocol_violation.
    let mut backwards = conn.open_uni().await.unwrap();
    backwards
        .write_all(&common::turn_stream_bytes(
            "back",
            &[(480, vec![0; 960]), (0, vec![0; 960])],
        ))
        .await
        .unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(5), backwards.stopped())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stopped,
        Some(quinn::VarInt::from_u32(
            voq_proto::Code::ProtocolViolation.to_u32()
        ))
    );

    // The session goes on: a good turn is committed with every frame.
    let mut good = conn.open_uni().await.unwrap();
    good.write_all(&common::turn_stream_bytes(
        "good",
        &[(0, vec![1; 960]), (480, vec![2; 960])],
    ))
    .await
    .unwrap();
    good.finish().unwrap();
    let c = next_event(&mut events, &mut decoder, "input_audio_buffer.committed").await;
    assert_eq!(
        (c["item_id"].as_str(), c["voq"]["frames"].as_u64()),
        (Some("good"), Some(2))
    );
    conn.close(0u32.into(), b"done");
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_never_reads_does_not_hold_up_anyone_else() {
    let reply = testdata("reply-carwash-24k.wav");
    let settings = Settings {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        agent: format!("file:{}", reply.display()),
        agent_speed: 0.0, // as fast as the session takes it
        drain_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let server = Server::start(settings).await.unwrap();
    let mut server_events = server.events();
    // The stuck client: sends a turn, never accepts the response stream, never reads events.
    let stuck = common::raw_connection(&server).await;
    let (mut control, _events) = stuck.open_bi().await.unwrap();
    let mut bytes = Vec::new();
    voq_proto::wire::encode_event(br#"{"type":"input_audio_buffer.clear"}"#, &mut bytes).unwrap();
    control.write_all(&bytes).await.unwrap();
    let mut turn = stuck.open_uni().await.unwrap();
    turn.write_all(&common::turn_stream_bytes("stuck", &[(0, vec![0; 960])]))
        .await
        .unwrap();
    turn.finish().unwrap();
    // The stuck client's response is under way (and it reads none of it).
    let started = wait_for_event(&mut server_events, Duration::from_secs(10), |k| {
        matches!(k, SessionEventKind::ResponseStarted { .. })
    })
    .await;
    assert!(started.is_some(), "the stuck client's response started");
    // Meanwhile a normal call completes, with a barge-in, on the same server.
    let (client, target) = client(&server);
    let opts = CallOptions {
        turns: vec![prompt()[..9_600].to_vec()],
        input_speed: 0.0,
        interrupt_after: Some(Duration::from_millis(500)),
        timeout: Duration::from_secs(20),
        ..Default::default()
    };
    let out = client.call(&target, opts).await.unwrap();
    let i = out.report.interrupt.unwrap();
    assert_eq!(i.truncated_audio_end_ms, Some(i.played_ms));
    // The normal session ends; the stuck one is still there, and ends cleanly when its client
    // goes away.
    let stats = server.stats().clone();
    let ended = |n: u64| {
        let stats = stats.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(5), async {
                while stats.sessions_ended.get() < n {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
        }
    };
    ended(1).await.unwrap();
    // An observation window, not a wait for something: the stuck session must not end by
    // itself within it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        stats.sessions_ended.get(),
        1,
        "the stuck session is still alive"
    );
    stuck.close(0u32.into(), b"bye");
    ended(2).await.unwrap();
    server.shutdown().await;
}

/// A UDP relay in front of `server` that records what the client sends.
async fn recording_relay(
    server: SocketAddr,
) -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    let front = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let back = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    back.connect(server).await.unwrap();
    let addr = front.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        let (mut a, mut b) = (vec![0u8; 65_536], vec![0u8; 65_536]);
        let mut client = None;
        loop {
            tokio::select! {
                Ok((n, from)) = front.recv_from(&mut a) => {
                    client = Some(from);
                    record.lock().unwrap().push(a[..n].to_vec());
                    let _ = back.send(&a[..n]).await;
                }
                Ok(n) = back.recv(&mut b) => {
                    if let Some(c) = client { let _ = front.send_to(&b[..n], c).await; }
                }
            }
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn with_a_server_id_every_connection_id_routes_to_this_server() {
    let lb = voq_server::QuicLbSettings {
        config_id: 2,
        server_id: vec![0x0a, 0x01],
        nonce_len: 6,
        key: Some([0x5c; 16]),
        cid_len: None,
        self_encoded_len: None,
    };
    let settings = Settings {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        agent: "echo".into(),
        quic_lb: Some(lb.clone()),
        drain_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let server = Server::start(settings).await.unwrap();
    let (relay, seen) = recording_relay(server.local_addr()).await;
    let (client, _) = client(&server);
    let target = Target {
        addr: relay,
        server_name: "localhost".into(),
        tls: true,
    };
    let short: Vec<i16> = prompt()[..9_600].to_vec();
    let opts = CallOptions {
        turns: vec![short.clone()],
        input_speed: 0.0,
        ..Default::default()
    };
    let out = client.call(&target, opts).await.unwrap();
    assert_eq!(out.reply_received, short);
    let router = voq_quic_lb::Router::new().with_config(lb.config().unwrap());
    let packets = seen.lock().unwrap().clone();
    let short_header: Vec<_> = packets
        .iter()
        .filter(|p| !voq_quic_lb::is_long_header(p))
        .collect();
    assert!(
        short_header.len() > 10,
        "{} short-header packets",
        short_header.len()
    );
    for p in short_header {
        match router.route(p) {
            voq_quic_lb::Route::Server {
                server_id,
                config_id,
            } => {
                assert_eq!((config_id, server_id.as_bytes()), (2, &[0x0a, 0x01][..]));
            }
            voq_quic_lb::Route::Unroutable(why) => {
                panic!("a server-issued CID did not route: {why}")
            }
        }
    }
    server.shutdown().await;
}
