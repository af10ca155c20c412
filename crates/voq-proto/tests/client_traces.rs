//! The shared behaviour traces of the client session (`testdata/session/client-traces.json`),
//! run against [`ClientSession`]. The TypeScript client runs the same file against its mirror
//! (web/packages/client/test/client-traces.test.ts), so the two session cores cannot drift
//! apart. The file's `about` says what a trace is.

// A test reads its own clock for time zero and reads the trace file: both outside the core.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use voq_proto::client::{ClientConfig, ClientOutput, ClientSession, ResponseStats, TurnStats};
use voq_proto::stream::{OutStream, Transmit};
use voq_proto::{Codec, WireError};

fn traces() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/session/client-traces.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(
        s.len().is_multiple_of(2) && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
        "not hex: {s}"
    );
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The key of a one-key object, and its value.
fn only(v: &Value) -> (&str, &Value) {
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("an object expected: {v}"));
    assert_eq!(o.len(), 1, "one key expected: {v}");
    let (k, v) = o.iter().next().unwrap();
    (k.as_str(), v)
}

/// The bytes a BYTES value of the trace file stands for.
fn bytes(spec: &Value) -> Vec<u8> {
    match spec {
        Value::String(s) => unhex(s),
        Value::Array(parts) => parts.iter().flat_map(bytes).collect(),
        Value::Object(_) => {
            let (kind, v) = only(spec);
            match kind {
                "repeat" => bytes(&v[0]).repeat(v[1].as_u64().unwrap() as usize),
                "utf8" => v.as_str().unwrap().as_bytes().to_vec(),
                "event" => {
                    let text = v.as_str().unwrap().as_bytes();
                    let mut out = (text.len() as u32).to_be_bytes().to_vec();
                    out.extend_from_slice(text);
                    out
                }
                "header" => {
                    let text = v[1].as_str().unwrap().as_bytes();
                    let mut out = vec![v[0].as_u64().unwrap() as u8];
                    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
                    out.extend_from_slice(text);
                    out
                }
                "frame" => {
                    let payload = bytes(&v[1]);
                    let mut out = (payload.len() as u16).to_be_bytes().to_vec();
                    out.extend_from_slice(&(v[0].as_u64().unwrap() as u32).to_be_bytes());
                    out.extend_from_slice(&payload);
                    out
                }
                other => panic!("unknown BYTES {other}"),
            }
        }
        other => panic!("not BYTES: {other}"),
    }
}

/// An expected output with every BYTES written out as hex, as [`describe`] writes it.
fn normalize(o: &Value) -> Value {
    let (kind, v) = only(o);
    match kind {
        "open" | "write" => {
            let mut m = Map::new();
            m.insert(kind.to_owned(), json!([v[0].clone(), hex(&bytes(&v[1]))]));
            Value::Object(m)
        }
        "reply_frame" => json!({
            "reply_frame": [v[0].clone(), v[1].clone(), v[2].clone(), hex(&bytes(&v[3]))]
        }),
        _ => o.clone(),
    }
}

/// The one event of a control write, parsed.
fn control_event(b: &[u8]) -> Value {
    assert!(
        b.len() >= 4,
        "a control write is one whole event: {}",
        hex(b)
    );
    let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    assert_eq!(
        b.len(),
        4 + len,
        "a control write is one whole event: {}",
        hex(b)
    );
    serde_json::from_slice(&b[4..]).unwrap()
}

/// An output as the trace file writes it.
fn describe(o: &ClientOutput) -> Value {
    match o {
        ClientOutput::Transmit(t) => match t {
            Transmit::Control(b) => json!({ "control": control_event(b) }),
            Transmit::Open { stream, bytes } => json!({ "open": [stream.0, hex(bytes)] }),
            Transmit::Write { stream, bytes } => json!({ "write": [stream.0, hex(bytes)] }),
            Transmit::Finish { stream } => json!({ "finish": stream.0 }),
            Transmit::Reset { stream, code } => json!({ "reset": [stream.0, code.to_u32()] }),
            Transmit::StopSending { stream, code } => {
                json!({ "stop_sending": [stream, code.to_u32()] })
            }
        },
        ClientOutput::ReplyFrame {
            response_id,
            codec,
            pts,
            payload,
        } => json!({ "reply_frame": [response_id, codec.name(), pts, hex(payload)] }),
        ClientOutput::TurnStopped { item_id, code } => {
            json!({ "turn_stopped": [item_id, code] })
        }
        ClientOutput::ResumeRefused { message } => json!({ "resume_refused": message }),
        ClientOutput::Event(e) => json!({ "event": e.kind() }),
        ClientOutput::Problem(p) => json!({ "problem": p.code.as_str() }),
    }
}

/// Drains the session, acting as the shell for agent audio: every reply frame's pcm16 samples
/// go into its response's playout at once.
fn drain(s: &mut ClientSession) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(o) = s.poll_output() {
        if let ClientOutput::ReplyFrame {
            response_id,
            codec,
            pts,
            payload,
        } = &o
        {
            assert_eq!(*codec, Codec::Pcm16, "the traces carry pcm16");
            let pcm: Vec<i16> = payload
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
            s.push_reply_audio(response_id, *pts, &pcm);
        }
        out.push(describe(&o));
    }
    out
}

/// A time as the trace file writes it: ms since the start, or null.
fn ms(t0: Instant, t: Option<Instant>) -> Value {
    t.map_or(Value::Null, |t| json!((t - t0).as_millis() as u64))
}

fn turn_record(t0: Instant, t: &TurnStats) -> Value {
    json!({
        "item_id": t.item_id,
        "frames_sent": t.frames_sent,
        "bytes_sent": t.bytes_sent,
        "audio_ms_sent": t.audio_ms_sent,
        "frames_confirmed": t.frames_confirmed,
        "audio_ms_confirmed": t.audio_ms_confirmed,
        "bytes_confirmed": t.bytes_confirmed,
        "ended_at": ms(t0, t.ended_at),
        "confirmed_at": ms(t0, t.confirmed_at),
        "stopped": t.stopped,
        "frames_dropped": t.frames_dropped,
    })
}

/// A response record as the trace file writes it (without the Rust-only `silenced_at`).
fn response_record(t0: Instant, r: &ResponseStats) -> Value {
    let interrupt = r.interrupt.as_ref().map_or(Value::Null, |i| {
        json!({
            "at": ms(t0, i.at),
            "played_ms": i.played_ms,
            "unplayed_bytes": i.unplayed_bytes,
            "truncated_audio_end_ms": i.truncated_audio_end_ms,
            "truncated_at": ms(t0, i.truncated_at),
            "reset_at": ms(t0, i.reset_at),
        })
    });
    json!({
        "response_id": r.response_id,
        "item_id": r.item_id,
        "bytes_received": r.bytes_received,
        "frames_received": r.frames_received,
        "first_frame_at": ms(t0, r.first_frame_at),
        "first_audio_at": ms(t0, r.first_audio_at),
        "played_ms": r.played_ms,
        "underruns": r.underruns,
        "stall_ms": r.stall_ms,
        "status": r.status.map(|s| s.as_str()),
        "interrupt": interrupt,
    })
}

const CONFIG_KEYS: [&str; 5] = [
    "input_codec",
    "output_codec",
    "start_threshold_ms",
    "send_ahead_ms",
    "server_vad",
];
const ACTIONS: [&str; 13] = [
    "at",
    "start_turn",
    "send_audio",
    "end_turn",
    "commit",
    "recv_event",
    "recv_control",
    "recv_data",
    "recv_fin",
    "recv_reset",
    "recv_stop_sending",
    "render",
    "interrupt",
];
const CHECKS: [&str; 8] = [
    "expect",
    "error",
    "rendered",
    "timeout",
    "session",
    "playback_done",
    "turns",
    "responses",
];

fn config(case: &Value) -> ClientConfig {
    let mut config = ClientConfig::default();
    let Some(c) = case.get("config") else {
        return config;
    };
    // A key this runner does not know would be ignored silently: refuse it instead.
    for key in c.as_object().unwrap().keys() {
        assert!(CONFIG_KEYS.contains(&key.as_str()), "unknown config {key}");
    }
    if let Some(name) = c["input_codec"].as_str() {
        config.input_codec = name.parse().unwrap();
    }
    if let Some(name) = c["output_codec"].as_str() {
        config.output_codec = name.parse().unwrap();
    }
    if let Some(ms) = c["start_threshold_ms"].as_u64() {
        config.start_threshold_ms = ms as u32;
    }
    if let Some(ms) = c["send_ahead_ms"].as_u64() {
        config.send_ahead_ms = Some(ms);
    }
    if let Some(vad) = c["server_vad"].as_bool() {
        config.server_vad = vad;
    }
    config
}

fn default_start() -> Vec<Value> {
    let pcm = json!({ "type": "audio/pcm", "rate": 24000 });
    vec![json!({ "control": { "type": "session.update", "session": {
        "type": "realtime",
        "audio": { "input": { "format": pcm, "turn_detection": null }, "output": { "format": pcm } }
    } } })]
}

fn stream_code(v: &Value) -> (u64, u64) {
    (v[0].as_u64().unwrap(), v[1].as_u64().unwrap())
}

/// Runs one case; every mismatch panics with the case, step and what differed.
fn run(case: &Value) {
    let name = case["name"].as_str().unwrap();
    let t0 = Instant::now();
    let mut now = t0;
    let mut s = ClientSession::new(config(case), now);
    let start: Vec<Value> = match case.get("start") {
        Some(v) => v.as_array().unwrap().iter().map(normalize).collect(),
        None => default_start(),
    };
    assert_eq!(drain(&mut s), start, "{name}: start");
    for (i, step) in case["steps"].as_array().unwrap().iter().enumerate() {
        let ctx = format!("{name}: step {i} ({step})");
        let keys: Vec<&str> = step
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let actions = keys.iter().filter(|k| ACTIONS.contains(*k)).count();
        assert_eq!(actions, 1, "{ctx}: one action");
        for k in &keys {
            assert!(
                ACTIONS.contains(k) || CHECKS.contains(k),
                "{ctx}: unknown key {k}"
            );
        }
        let mut error: Option<&'static str> = None;
        let mut rendered: Option<u64> = None;
        if let Some(at) = step.get("at") {
            now = t0 + Duration::from_millis(at.as_u64().unwrap());
            s.handle_timeout(now);
        } else if let Some(id) = step.get("start_turn") {
            assert_eq!(s.start_turn(now), id.as_str().unwrap(), "{ctx}: item id");
        } else if let Some(a) = step.get("send_audio") {
            let samples = a[1].as_u64().unwrap() as u32;
            if let Err(e) = s.send_audio(now, &bytes(&a[0]), samples) {
                error = Some(match e {
                    WireError::FrameTooLarge(_) => "frame_too_large",
                    other => panic!("{ctx}: unexpected error {other}"),
                });
            }
        } else if step.get("end_turn").is_some() {
            s.end_turn(now);
        } else if step.get("commit").is_some() {
            s.commit();
        } else if let Some(event) = step.get("recv_event") {
            let json = serde_json::to_vec(event).unwrap();
            let mut b = (json.len() as u32).to_be_bytes().to_vec();
            b.extend_from_slice(&json);
            s.handle_control(now, &b);
        } else if let Some(b) = step.get("recv_control") {
            s.handle_control(now, &bytes(b));
        } else if let Some(d) = step.get("recv_data") {
            s.handle_stream_data(now, d[0].as_u64().unwrap(), &bytes(&d[1]));
        } else if let Some(stream) = step.get("recv_fin") {
            s.handle_stream_fin(now, stream.as_u64().unwrap());
        } else if let Some(r) = step.get("recv_reset") {
            let (stream, code) = stream_code(r);
            s.handle_stream_reset(now, stream, code);
        } else if let Some(r) = step.get("recv_stop_sending") {
            let (n, code) = stream_code(r);
            s.handle_stream_stopped(now, OutStream(n), code);
        } else if let Some(n) = step.get("render") {
            let mut out = vec![0i16; n.as_u64().unwrap() as usize];
            rendered = Some(s.render(now, &mut out).audio as u64);
        } else if let Some(played) = step.get("interrupt") {
            assert_eq!(s.interrupt(now), played.as_u64(), "{ctx}: played ms");
        } else {
            panic!("{ctx}: no action");
        }
        assert_eq!(error, step["error"].as_str(), "{ctx}: command result");
        let expect: Vec<Value> = step["expect"]
            .as_array()
            .map_or_else(Vec::new, |a| a.iter().map(normalize).collect());
        assert_eq!(drain(&mut s), expect, "{ctx}");
        if let Some(n) = step.get("rendered") {
            assert_eq!(rendered, n.as_u64(), "{ctx}: rendered");
        }
        if let Some(t) = step.get("timeout") {
            assert_eq!(&ms(t0, s.poll_timeout()), t, "{ctx}: timeout");
        }
        if let Some(id) = step.get("session") {
            let got = s.session().map_or(Value::Null, |x| json!(x.id));
            assert_eq!(&got, id, "{ctx}: session");
        }
        if let Some(done) = step.get("playback_done") {
            assert_eq!(
                Some(s.playback_done()),
                done.as_bool(),
                "{ctx}: playback_done"
            );
        }
        if let Some(turns) = step.get("turns") {
            let got: Vec<Value> = s.turns().iter().map(|t| turn_record(t0, t)).collect();
            assert_eq!(&Value::Array(got), turns, "{ctx}: turns");
        }
        if let Some(responses) = step.get("responses") {
            let got: Vec<Value> = s.responses().map(|r| response_record(t0, r)).collect();
            assert_eq!(&Value::Array(got), responses, "{ctx}: responses");
        }
    }
}

#[test]
fn every_client_trace_passes() {
    let traces = traces();
    let cases = traces["cases"].as_array().unwrap();
    // A file that lost its cases would pass vacuously.
    assert!(cases.len() >= 20, "the trace file lost cases");
    let mut names: Vec<&str> = cases.iter().map(|c| c["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "trace names are unique");
    // Every case runs, so one run names every trace that fails (each one's panic is above).
    let failed: Vec<&str> = cases
        .iter()
        .filter(|c| std::panic::catch_unwind(|| run(c)).is_err())
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} client traces failed: {failed:#?}",
        failed.len(),
        cases.len()
    );
}

#[test]
fn bytes_are_written_out_as_the_wire_format_does() {
    assert_eq!(
        hex(&bytes(&json!([{ "repeat": ["ab", 3] }, { "utf8": "A" }]))),
        "ababab41"
    );
    assert_eq!(hex(&bytes(&json!({ "event": "{}" }))), "000000027b7d");
    assert_eq!(hex(&bytes(&json!({ "header": [2, "{}"] }))), "0200027b7d");
    assert_eq!(
        hex(&bytes(&json!({ "frame": [0x0102_0304, ["aa", "bb"]] }))),
        "000201020304aabb"
    );
}
