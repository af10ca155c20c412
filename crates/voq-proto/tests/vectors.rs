//! The shared wire vectors, `testdata/wire/vectors.json`: the Rust encoders and decoders must
//! reproduce every vector, and the TypeScript client (`web/packages/client`) tests itself
//! against the same file, so the two implementations cannot drift apart.
//!
//! The file is generated from the Rust encoders here. After a deliberate wire change, regenerate
//! it with `VOQ_UPDATE_VECTORS=1 cargo test -p voq-proto --test vectors` and review the diff.
// Reading the vectors file is the point of this test; the library itself stays sans-IO.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

use serde_json::{Value, json};
use voq_proto::Code;
use voq_proto::mux::{MuxError, MuxFrame, get_varint, put_varint};
use voq_proto::wire::{
    AudioHeader, AudioItem, AudioStreamDecoder, DecodedEvent, EventDecoder, StreamKind,
    encode_event, encode_frame, encode_header,
};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/wire/vectors.json")
}

const EVENTS: &[(&str, &str)] = &[
    (
        "session.update push-to-talk opus",
        r#"{"type":"session.update","session":{"type":"realtime","audio":{"input":{"format":{"type":"audio/opus","rate":24000},"turn_detection":null},"output":{"format":{"type":"audio/opus","rate":24000}}}}}"#,
    ),
    (
        "session.update server VAD with send-ahead",
        r#"{"type":"session.update","session":{"type":"realtime","audio":{"input":{"turn_detection":{"type":"server_vad"}}},"voq":{"send_ahead_ms":2500}}}"#,
    ),
    (
        "output_audio_buffer.played",
        r#"{"type":"output_audio_buffer.played","response_id":"resp_1","played_ms":1200,"buffered_ms":1800}"#,
    ),
    (
        "conversation.item.truncate",
        r#"{"type":"conversation.item.truncate","item_id":"item_2","content_index":0,"audio_end_ms":640}"#,
    ),
    (
        "error with non-ASCII text",
        r#"{"type":"error","error":{"type":"invalid_request_error","code":"invalid_value","message":"unsupported format \"bogus\" — use audio/pcm or audio/opus"}}"#,
    ),
    ("empty object", "{}"),
];

fn headers() -> Vec<(&'static str, StreamKind, AudioHeader)> {
    vec![
        (
            "user audio pcm16",
            StreamKind::UserAudio,
            AudioHeader {
                item_id: "item_1".into(),
                response_id: None,
                codec: "pcm16".into(),
                sample_rate: 24_000,
                frame_ms: 20,
            },
        ),
        (
            "agent audio opus",
            StreamKind::AgentAudio,
            AudioHeader {
                item_id: "item_2".into(),
                response_id: Some("resp_1".into()),
                codec: "opus".into(),
                sample_rate: 24_000,
                frame_ms: 20,
            },
        ),
    ]
}

fn frames() -> Vec<(&'static str, u32, Vec<u8>)> {
    vec![
        ("empty payload at 0", 0, vec![]),
        (
            "two pcm16 samples at 480",
            480,
            [1000i16, -1000]
                .iter()
                .flat_map(|s| s.to_le_bytes())
                .collect(),
        ),
        (
            "opus-sized payload, large pts",
            0x0102_0304,
            (0..=255u8).collect(),
        ),
    ]
}

const VARINTS: &[(u64, &str, bool)] = &[
    (0, "00", true),
    (37, "25", true),
    (63, "3f", true),
    (64, "4040", true),
    (15_293, "7bbd", true),
    (16_383, "7fff", true),
    (16_384, "80004000", true),
    (494_878_333, "9d7f3e7d", true),
    (1_073_741_824, "c000000040000000", true),
    (151_288_809_941_952_652, "c2197c5eff14e88c", true),
    (37, "4025", false),
    (37, "80000025", false),
];

fn mux() -> Vec<(&'static str, MuxFrame)> {
    vec![
        (
            "control stream bytes",
            MuxFrame::Stream {
                id: 0,
                data: b"\x00\x00\x00\x02{}".to_vec(),
            },
        ),
        (
            "empty stream frame on user audio 2",
            MuxFrame::Stream {
                id: 2,
                data: vec![],
            },
        ),
        (
            "agent audio stream 67 (two-byte id)",
            MuxFrame::Stream {
                id: 67,
                data: vec![0x02],
            },
        ),
        ("fin user audio 6", MuxFrame::Fin { id: 6 }),
        (
            "reset agent audio 3 cancelled",
            MuxFrame::ResetStream {
                id: 3,
                code: Code::Cancelled.to_u32().into(),
            },
        ),
        (
            "stop sending user audio 10 stream_refused",
            MuxFrame::StopSending {
                id: 10,
                code: Code::StreamRefused.to_u32().into(),
            },
        ),
        ("ping", MuxFrame::Ping(*b"\x00\x01\x02\x03\x04\x05\x06\x07")),
        ("pong", MuxFrame::Pong(*b"voq/1\xff\xfe\xfd")),
    ]
}

fn invalid_events() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let mut oversize = (65_537u32).to_be_bytes().to_vec();
    oversize.extend_from_slice(b"{}");
    vec![("length over 65536", oversize, "event_too_large")]
}

fn invalid_audio_streams() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let mut good_header = Vec::new();
    encode_header(StreamKind::UserAudio, &headers()[0].2, &mut good_header);
    let with_frame = |len: u16| {
        let mut v = good_header.clone();
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 0]);
        v
    };
    vec![
        (
            "unknown stream kind",
            vec![0x07, 0x00, 0x02, b'{', b'}'],
            "stream_refused",
        ),
        (
            "header length over 4096",
            vec![0x01, 0x10, 0x01],
            "bad_stream_header",
        ),
        (
            "header not JSON",
            [vec![0x01, 0x00, 0x02], b"{]".to_vec()].concat(),
            "bad_stream_header",
        ),
        (
            "header missing codec",
            {
                let h = br#"{"item_id":"i","sample_rate":24000,"frame_ms":20}"#;
                [vec![0x01, 0x00, h.len() as u8], h.to_vec()].concat()
            },
            "bad_stream_header",
        ),
        (
            "frame payload over 8192",
            with_frame(8193),
            "frame_too_large",
        ),
    ]
}

fn invalid_mux() -> Vec<(&'static str, Vec<u8>, MuxError)> {
    vec![
        ("empty message", vec![], MuxError::Empty),
        ("unknown type", vec![0x07, 0x00], MuxError::UnknownType(7)),
        (
            "stream id truncated",
            vec![0x00, 0x40],
            MuxError::TruncatedVarint,
        ),
        (
            "reset without code",
            vec![0x02, 0x03],
            MuxError::TruncatedVarint,
        ),
        (
            "fin with trailing bytes",
            vec![0x01, 0x02, 0x00],
            MuxError::TrailingBytes(1),
        ),
        (
            "ping of 4 bytes",
            vec![0x10, 0x00, 1, 2, 3, 4],
            MuxError::BadPing,
        ),
    ]
}

fn audio_error_code(bytes: &[u8]) -> Option<&'static str> {
    let mut d = AudioStreamDecoder::default();
    d.push(bytes);
    loop {
        match d.poll_item() {
            Ok(Some(_)) => continue,
            Ok(None) => return None,
            Err(e) => return Some(e.code().as_str()),
        }
    }
}

fn build() -> Value {
    let events: Vec<Value> = EVENTS
        .iter()
        .map(|(name, text)| {
            let mut out = Vec::new();
            encode_event(text.as_bytes(), &mut out).unwrap();
            json!({"name": name, "json": text, "hex": hex(&out)})
        })
        .collect();
    let stream_headers: Vec<Value> = headers()
        .into_iter()
        .map(|(name, kind, header)| {
            let mut out = Vec::new();
            encode_header(kind, &header, &mut out);
            let text = serde_json::to_string(&header).unwrap();
            json!({"name": name, "kind": kind as u8, "json": text, "hex": hex(&out)})
        })
        .collect();
    let frames: Vec<Value> = frames()
        .into_iter()
        .map(|(name, pts, payload)| {
            let mut out = Vec::new();
            encode_frame(pts, &payload, &mut out).unwrap();
            json!({"name": name, "pts": pts, "payload_hex": hex(&payload), "hex": hex(&out)})
        })
        .collect();
    let varints: Vec<Value> = VARINTS
        .iter()
        .map(|(v, h, minimal)| {
            // JSON numbers above 2^53 lose precision in JavaScript: those go as strings.
            let value = if *v > (1u64 << 53) {
                json!(v.to_string())
            } else {
                json!(v)
            };
            json!({"value": value, "hex": h, "minimal": minimal})
        })
        .collect();
    let mux: Vec<Value> = mux()
        .into_iter()
        .map(|(name, frame)| {
            let bytes = frame.encode();
            let mut v = match &frame {
                MuxFrame::Stream { id, data } => {
                    json!({"type": "stream", "stream_id": id, "payload_hex": hex(data)})
                }
                MuxFrame::Fin { id } => json!({"type": "fin", "stream_id": id}),
                MuxFrame::ResetStream { id, code } => {
                    json!({"type": "reset_stream", "stream_id": id, "code": code})
                }
                MuxFrame::StopSending { id, code } => {
                    json!({"type": "stop_sending", "stream_id": id, "code": code})
                }
                MuxFrame::Ping(b) => json!({"type": "ping", "stream_id": 0, "payload_hex": hex(b)}),
                MuxFrame::Pong(b) => json!({"type": "pong", "stream_id": 0, "payload_hex": hex(b)}),
            };
            v["name"] = json!(name);
            v["hex"] = json!(hex(&bytes));
            v
        })
        .collect();
    let bad = |name: &str, bytes: &[u8], error: String| json!({"name": name, "hex": hex(bytes), "error": error});
    json!({
        "comment": "voq/1 wire vectors shared by the Rust and TypeScript tests; generated by crates/voq-proto/tests/vectors.rs (VOQ_UPDATE_VECTORS=1). See docs/PROTOCOL.md.",
        "events": events,
        "stream_headers": stream_headers,
        "frames": frames,
        "varints": varints,
        "mux": mux,
        "invalid": {
            "events": invalid_events().iter().map(|(n, b, e)| bad(n, b, e.to_string())).collect::<Vec<_>>(),
            "audio_streams": invalid_audio_streams().iter().map(|(n, b, e)| bad(n, b, e.to_string())).collect::<Vec<_>>(),
            "mux": invalid_mux().iter().map(|(n, b, e)| bad(n, b, format!("{e:?}"))).collect::<Vec<_>>(),
        },
    })
}

#[test]
fn vectors_file_matches_the_encoders() {
    let built = serde_json::to_string_pretty(&build()).unwrap() + "\n";
    let path = path();
    if std::env::var_os("VOQ_UPDATE_VECTORS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &built).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (regenerate with VOQ_UPDATE_VECTORS=1)",
            path.display()
        )
    });
    assert!(
        on_disk == built,
        "{} differs from what the encoders produce; if the wire change is deliberate, regenerate \
         with VOQ_UPDATE_VECTORS=1 and review the diff",
        path.display()
    );
}

/// Decodes the file's bytes (not the in-memory lists), as the TypeScript tests do.
#[test]
fn decoders_read_every_vector() {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path()).unwrap()).unwrap();
    for e in v["events"].as_array().unwrap() {
        let mut d = EventDecoder::default();
        d.push(&unhex(e["hex"].as_str().unwrap()));
        let body = e["json"].as_str().unwrap().as_bytes().to_vec();
        assert_eq!(
            d.poll_event(),
            Some(DecodedEvent::Event(body)),
            "{}",
            e["name"]
        );
        assert_eq!(d.pending(), 0);
    }
    for h in v["stream_headers"].as_array().unwrap() {
        let mut d = AudioStreamDecoder::default();
        d.push(&unhex(h["hex"].as_str().unwrap()));
        let Ok(Some(AudioItem::Header(kind, header))) = d.poll_item() else {
            panic!("{}: no header", h["name"]);
        };
        assert_eq!(kind as u8 as u64, h["kind"].as_u64().unwrap());
        assert_eq!(
            serde_json::to_string(&header).unwrap(),
            h["json"].as_str().unwrap()
        );
    }
    for f in v["frames"].as_array().unwrap() {
        let mut d = AudioStreamDecoder::default();
        let mut bytes = Vec::new();
        encode_header(StreamKind::UserAudio, &headers()[0].2, &mut bytes);
        bytes.extend(unhex(f["hex"].as_str().unwrap()));
        d.push(&bytes);
        assert!(matches!(d.poll_item(), Ok(Some(AudioItem::Header(..)))));
        let Ok(Some(AudioItem::Frame(frame))) = d.poll_item() else {
            panic!("{}: no frame", f["name"]);
        };
        assert_eq!(u64::from(frame.pts), f["pts"].as_u64().unwrap());
        assert_eq!(frame.payload, unhex(f["payload_hex"].as_str().unwrap()));
    }
    for x in v["varints"].as_array().unwrap() {
        let bytes = unhex(x["hex"].as_str().unwrap());
        let value = match &x["value"] {
            Value::String(s) => s.parse::<u64>().unwrap(),
            n => n.as_u64().unwrap(),
        };
        assert_eq!(get_varint(&bytes), Ok((value, bytes.len())));
        let mut out = Vec::new();
        put_varint(value, &mut out);
        assert_eq!(out == bytes, x["minimal"].as_bool().unwrap(), "{x}");
    }
    for m in v["mux"].as_array().unwrap() {
        let bytes = unhex(m["hex"].as_str().unwrap());
        let frame = MuxFrame::decode(&bytes).unwrap();
        assert_eq!(frame.encode(), bytes, "{}", m["name"]);
        let id = m["stream_id"].as_u64().unwrap();
        match (m["type"].as_str().unwrap(), frame) {
            ("stream", MuxFrame::Stream { id: i, data }) => {
                assert_eq!((i, data), (id, unhex(m["payload_hex"].as_str().unwrap())))
            }
            ("fin", MuxFrame::Fin { id: i }) => assert_eq!(i, id),
            ("reset_stream", MuxFrame::ResetStream { id: i, code })
            | ("stop_sending", MuxFrame::StopSending { id: i, code }) => {
                assert_eq!((i, code), (id, m["code"].as_u64().unwrap()))
            }
            ("ping", MuxFrame::Ping(b)) | ("pong", MuxFrame::Pong(b)) => {
                assert_eq!(b.to_vec(), unhex(m["payload_hex"].as_str().unwrap()))
            }
            (ty, other) => panic!("{ty} decoded as {other:?}"),
        }
    }
    let invalid = &v["invalid"];
    for e in invalid["events"].as_array().unwrap() {
        let mut d = EventDecoder::default();
        d.push(&unhex(e["hex"].as_str().unwrap()));
        assert!(
            matches!(d.poll_event(), Some(DecodedEvent::Skipped(_))),
            "{}",
            e["name"]
        );
        assert_eq!(e["error"], "event_too_large");
    }
    for a in invalid["audio_streams"].as_array().unwrap() {
        let code = audio_error_code(&unhex(a["hex"].as_str().unwrap()));
        assert_eq!(code, a["error"].as_str(), "{}", a["name"]);
    }
    for m in invalid["mux"].as_array().unwrap() {
        let err = MuxFrame::decode(&unhex(m["hex"].as_str().unwrap())).unwrap_err();
        assert_eq!(
            format!("{err:?}"),
            m["error"].as_str().unwrap(),
            "{}",
            m["name"]
        );
    }
}

/// Every code voq puts on the wire is listed in `testdata/wire/error-codes.json`, which the
/// TypeScript client checks too: a code added on one side only fails both suites.
#[test]
fn error_codes_match_the_shared_list() {
    use voq_proto::{Code, ErrorCode, ErrorType};
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/wire/error-codes.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    let streams = json["stream_codes"].as_object().unwrap();
    let ours: Vec<(String, u64)> = (0..=u64::MAX)
        .map_while(Code::from_u32)
        .map(|c| (c.as_str().to_string(), c.to_u32() as u64))
        .collect();
    let shared: Vec<(String, u64)> = streams
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    let mut ours_sorted = ours.clone();
    ours_sorted.sort();
    assert_eq!(ours_sorted, shared, "stream codes");
    let events: Vec<&str> = json["event_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let ours: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(ours, events, "error.code values");
    for c in ErrorCode::ALL {
        assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
    }
    // Every stream code that is an error has an `error.code` of the same name.
    for (name, _) in &ours_sorted {
        let code = (0..=9).find_map(|v| Code::from_u32(v).filter(|c| c.as_str() == name));
        if let Some(e) = code.and_then(Code::error_code) {
            assert_eq!(e.as_str(), name);
        }
    }
    let types: Vec<&str> = json["error_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let ours: Vec<&str> = ErrorType::ALL.iter().map(|t| t.as_str()).collect();
    assert_eq!(ours, types);
}
