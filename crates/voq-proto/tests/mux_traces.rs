//! The shared behaviour traces of the WebSocket mux (`testdata/mux/traces.json`), run against
//! [`MuxConnection`]. The TypeScript client runs the same file against its mirror
//! (web/packages/client/test/muxconn.test.ts), so the two implementations of the mux rules
//! cannot drift apart. The file's `about` says what a trace is.

// A test reads its own clock for time zero and reads the trace file: both outside the core.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use serde_json::Value;
use voq_proto::Code;
use voq_proto::mux::{MuxConfig, MuxConnection, MuxFrame, MuxOutput, Side, StreamError};

fn traces() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/mux/traces.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn hex(v: &Value) -> Vec<u8> {
    let s = v.as_str().expect("hex string");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn id_code(v: &Value) -> (u64, u64) {
    (v[0].as_u64().unwrap(), v[1].as_u64().unwrap())
}

/// A structural frame of the trace file as message bytes.
fn message(frame: &Value) -> Vec<u8> {
    let (kind, v) = frame.as_object().unwrap().iter().next().unwrap();
    let eight = |v: &Value| -> [u8; 8] { hex(v).try_into().unwrap() };
    let frame = match kind.as_str() {
        "raw" => return hex(v),
        "stream" => MuxFrame::Stream {
            id: v[0].as_u64().unwrap(),
            data: hex(&v[1]),
        },
        "fin" => MuxFrame::Fin {
            id: v.as_u64().unwrap(),
        },
        "reset_stream" => {
            let (id, code) = id_code(v);
            MuxFrame::ResetStream { id, code }
        }
        "stop_sending" => {
            let (id, code) = id_code(v);
            MuxFrame::StopSending { id, code }
        }
        "ping" => MuxFrame::Ping(eight(v)),
        "pong" => MuxFrame::Pong(eight(v)),
        other => panic!("unknown frame {other}"),
    };
    frame.encode()
}

/// A voq code by its trace name (`protocol_violation`).
fn code(name: &Value) -> Code {
    let name = name.as_str().unwrap();
    (0..256)
        .filter_map(Code::from_u32)
        .find(|code| code.as_str() == name)
        .unwrap_or_else(|| panic!("unknown code {name}"))
}

/// An output as the trace file writes it.
fn describe(output: &MuxOutput) -> Value {
    let hex = |b: &[u8]| Value::from(b.iter().map(|x| format!("{x:02x}")).collect::<String>());
    match output {
        MuxOutput::Transmit(bytes) => {
            let frame = match MuxFrame::decode(bytes).unwrap() {
                MuxFrame::Stream { id, data } => serde_json::json!({ "stream": [id, hex(&data)] }),
                MuxFrame::Fin { id } => serde_json::json!({ "fin": id }),
                MuxFrame::ResetStream { id, code } => {
                    serde_json::json!({ "reset_stream": [id, code] })
                }
                MuxFrame::StopSending { id, code } => {
                    serde_json::json!({ "stop_sending": [id, code] })
                }
                MuxFrame::Ping(p) => serde_json::json!({ "ping": hex(&p) }),
                MuxFrame::Pong(p) => serde_json::json!({ "pong": hex(&p) }),
            };
            serde_json::json!({ "send": frame })
        }
        MuxOutput::Opened { id } => serde_json::json!({ "opened": id }),
        MuxOutput::Data { id, data } => serde_json::json!({ "data": [id, hex(data)] }),
        MuxOutput::Fin { id } => serde_json::json!({ "fin": id }),
        MuxOutput::Reset { id, code } => serde_json::json!({ "reset": [id, code] }),
        MuxOutput::Stopped { id, code } => serde_json::json!({ "stopped": [id, code] }),
        MuxOutput::Close { code, .. } => serde_json::json!({ "close": code.as_str() }),
    }
}

fn drain(conn: &mut MuxConnection) -> Vec<Value> {
    std::iter::from_fn(|| conn.poll_output())
        .map(|o| describe(&o))
        .collect()
}

fn error_name(e: &StreamError) -> &'static str {
    match e {
        StreamError::Stopped(_) => "stopped",
        StreamError::NotWritable => "not_writable",
        StreamError::Closed(_) => "closed",
    }
}

fn config(case: &Value) -> MuxConfig {
    let mut config = MuxConfig::default();
    let c = &case["config"];
    if let Some(ms) = c["ping_interval_ms"].as_u64() {
        config.ping_interval = Duration::from_millis(ms);
    }
    if let Some(ms) = c["idle_timeout_ms"].as_u64() {
        config.idle_timeout = Duration::from_millis(ms);
    }
    if let Some(n) = c["max_peer_uni_streams"].as_u64() {
        config.max_peer_uni_streams = n as usize;
    }
    if let Some(n) = c["max_frame_data"].as_u64() {
        config.max_frame_data = n as usize;
    }
    config
}

fn run(case: &Value) {
    let name = case["name"].as_str().unwrap();
    let side = match case["side"].as_str().unwrap() {
        "client" => Side::Client,
        "server" => Side::Server,
        other => panic!("{name}: side {other}"),
    };
    let t0 = Instant::now();
    let mut now = t0;
    let mut conn = MuxConnection::new(side, config(case), now);
    let start = match case.get("start") {
        Some(v) => v.as_array().unwrap().clone(),
        None => vec![serde_json::json!({ "send": { "ping": "0000000000000000" } })],
    };
    assert_eq!(drain(&mut conn), start, "{name}: start");
    for (i, step) in case["steps"].as_array().unwrap().iter().enumerate() {
        let mut error: Option<&'static str> = None;
        let mut check = |r: Result<(), StreamError>| {
            if let Err(e) = r {
                error = Some(error_name(&e));
            }
        };
        if let Some(ms) = step["at"].as_u64() {
            now = t0 + Duration::from_millis(ms);
            conn.handle_timeout(now);
        } else if let Some(frame) = step.get("recv") {
            conn.handle_message(now, &message(frame));
        } else if step.get("recv_text").is_some() {
            conn.handle_text();
        } else if let Some(reason) = step["peer_closed"].as_str() {
            conn.handle_peer_closed(reason);
        } else if let Some(kind) = step["open"].as_str() {
            match conn.open(kind == "bidi") {
                Ok(id) => assert_eq!(Some(id), step["id"].as_u64(), "{name}: step {i}"),
                Err(e) => error = Some(error_name(&e)),
            }
        } else if let Some(w) = step.get("write") {
            check(conn.write(w[0].as_u64().unwrap(), &hex(&w[1])));
        } else if let Some(id) = step["finish"].as_u64() {
            check(conn.finish(id));
        } else if let Some(r) = step.get("reset") {
            conn.reset(
                r[0].as_u64().unwrap(),
                Code::from_u32(r[1].as_u64().unwrap()).unwrap(),
            );
        } else if let Some(s) = step.get("stop") {
            conn.stop(
                s[0].as_u64().unwrap(),
                Code::from_u32(s[1].as_u64().unwrap()).unwrap(),
            );
        } else if let Some(id) = step["release_send"].as_u64() {
            conn.release_send(id);
        } else if let Some(id) = step["release_recv"].as_u64() {
            conn.release_recv(id);
        } else if let Some(c) = step.get("close") {
            conn.close(code(c), "trace");
        } else {
            panic!("{name}: step {i} has no action: {step}");
        }
        assert_eq!(
            error,
            step["error"].as_str(),
            "{name}: step {i} ({step}): command result"
        );
        let expect = step["expect"].as_array().cloned().unwrap_or_default();
        assert_eq!(drain(&mut conn), expect, "{name}: step {i} ({step})");
        if let Some(ms) = step["rtt_ms"].as_u64() {
            assert_eq!(
                conn.rtt(),
                Some(Duration::from_millis(ms)),
                "{name}: step {i}: rtt"
            );
        }
    }
}

#[test]
fn every_mux_trace_passes() {
    let traces = traces();
    let cases = traces["cases"].as_array().unwrap();
    assert!(cases.len() >= 20, "the trace file lost cases");
    for case in cases {
        run(case);
    }
}

#[test]
fn a_violation_leaves_the_connection_closed_with_the_reason() {
    let mut conn = MuxConnection::new(Side::Server, MuxConfig::default(), Instant::now());
    conn.handle_text();
    assert!(conn.is_closed());
    assert!(conn.close_reason().unwrap().contains("text message"));
    assert_eq!(conn.poll_timeout(), None);
}

#[test]
fn a_closed_connection_keeps_the_reason_it_closed_with() {
    let mut conn = MuxConnection::new(Side::Client, MuxConfig::default(), Instant::now());
    drain(&mut conn); // the first PING
    conn.handle_peer_closed("closed by peer: 4000 bye");
    conn.handle_text();
    conn.handle_message(Instant::now(), &[0xff]);
    assert_eq!(conn.close_reason(), Some("closed by peer: 4000 bye"));
    assert_eq!(conn.poll_output(), None);
}
