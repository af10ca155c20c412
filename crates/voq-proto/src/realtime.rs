//! The Realtime API endpoint's translator (sans-IO): a client of the OpenAI Realtime API's
//! WebSocket protocol on one side, a voq/1 session on the other.
//!
//! A Realtime client sends JSON text messages; audio travels inside them as base64 pcm16
//! (`input_audio_buffer.append`, `response.output_audio.delta`). voq/1 carries audio on streams
//! of frames with timestamps. [`RealtimeAdapter`] turns one into the other, so that a voq server
//! session (its agents, VAD, send-ahead, barge-in) serves Realtime clients unchanged:
//!
//! - `input_audio_buffer.append` → frames of a user-audio stream (pts counting the samples
//!   appended). With `turn_detection: null`, `input_audio_buffer.commit` finishes that stream
//!   (voq's push-to-talk commit); with server VAD, the stream stays open and the server cuts it.
//! - Every other client event goes to the control stream as it came (voq's events are the
//!   Realtime GA ones), except that events after a push-to-talk commit wait until the server
//!   confirms the commit: `commit` then `response.create` must answer the turn just committed,
//!   though the two travel on different voq streams.
//! - Server events go to the client as they came. An agent-audio stream becomes
//!   `response.output_item.added` and `response.content_part.added` (its header),
//!   `response.output_audio.delta` (each frame, base64) and the `.done` events (its end).
//!
//! The translator's own events carry `event_id`s `event_rt_N`, apart from the server's.

use std::collections::{HashMap, VecDeque};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use crate::error::ErrorCode;
use crate::event::ErrorInfo;
use crate::stream::{OutStream, StreamId, Transmit};
use crate::wire::{self, AudioHeader, AudioItem, AudioStreamDecoder, DecodedEvent, EventDecoder};
use crate::{FRAME_MS, SAMPLE_RATE};

/// Largest audio one `input_audio_buffer.append` may carry, decoded (the Realtime API's limit).
pub const MAX_APPEND_BYTES: usize = 15 * 1024 * 1024;
/// Client events held while a push-to-talk commit awaits its confirmation; more are refused.
pub const MAX_HELD_EVENTS: usize = 64;
/// Samples in one frame of user audio sent to the server.
const FRAME_SAMPLES: usize = (SAMPLE_RATE * FRAME_MS / 1000) as usize;

/// What the translator asks its shell to do.
#[derive(Debug, Clone, PartialEq)]
pub enum RealtimeOutput {
    /// An operation on the voq/1 session's streams.
    ToSession(Transmit),
    /// A text message to the Realtime client.
    ToClient(String),
}

/// A user-audio stream being filled by `input_audio_buffer.append`.
#[derive(Debug)]
struct OpenTurn {
    stream: OutStream,
    /// Samples sent on it so far (the next frame's pts).
    samples: u64,
}

/// An agent-audio stream from the server, as far as it has been read.
#[derive(Debug, Default)]
struct AgentStream {
    decoder: AudioStreamDecoder,
    /// (response id, item id) once the header is in.
    ids: Option<(String, String)>,
}

/// One Realtime client's session, translated (see the module docs).
#[derive(Debug)]
pub struct RealtimeAdapter {
    /// Server VAD on, as the server last said (`session.created`, `session.updated`).
    server_vad: bool,
    turn: Option<OpenTurn>,
    /// Push-to-talk commits (streams finished) the server has not confirmed yet.
    commits_pending: usize,
    /// Client events held until those commits are confirmed, in order.
    held: VecDeque<String>,
    control: EventDecoder,
    agent: HashMap<StreamId, AgentStream>,
    next_stream: u64,
    next_item: u64,
    next_event: u64,
    /// The `voq.pong` answering the ping that opened the control stream, not yet seen.
    opening_pong: bool,
    out: VecDeque<RealtimeOutput>,
}

impl RealtimeAdapter {
    /// A session whose server starts with server VAD on or off (`server_vad`), until the server
    /// says otherwise (`session.created`, `session.updated`). Its first output opens the control
    /// stream (a stream opens with its first byte) with a `voq.ping`, whose pong is not passed
    /// on: the Realtime client's first event may be a long time coming, and the server waits
    /// only so long for the control stream.
    pub fn new(server_vad: bool) -> Self {
        let mut opening = Vec::new();
        if wire::encode_event(br#"{"type":"voq.ping","id":0}"#, &mut opening).is_err() {
            unreachable!("a short event")
        }
        Self {
            server_vad,
            turn: None,
            commits_pending: 0,
            held: VecDeque::new(),
            control: EventDecoder::default(),
            agent: HashMap::new(),
            next_stream: 0,
            next_item: 1,
            next_event: 1,
            opening_pong: true,
            out: VecDeque::from([RealtimeOutput::ToSession(Transmit::Control(opening))]),
        }
    }

    /// The next thing to do, in order.
    pub fn poll_output(&mut self) -> Option<RealtimeOutput> {
        self.out.pop_front()
    }

    // ---- from the Realtime client ----

    /// One text message from the Realtime client.
    pub fn handle_client_text(&mut self, text: &str) {
        let value: Value = match serde_json::from_str(text) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => return self.error(None, ErrorCode::InvalidJson, "event is not a JSON object"),
            Err(e) => {
                let msg = format!("event is not JSON: {e}");
                return self.error(None, ErrorCode::InvalidJson, &msg);
            }
        };
        let event_id = value
            .get("event_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        match value.get("type").and_then(Value::as_str) {
            Some("input_audio_buffer.append") => self.append(event_id, &value),
            Some("input_audio_buffer.commit") if !self.server_vad && self.turn.is_some() => {
                if let Some(turn) = self.turn.take() {
                    self.commits_pending += 1;
                    self.send_session(Transmit::Finish {
                        stream: turn.stream,
                    });
                }
            }
            Some("input_audio_buffer.clear") => {
                // The server stops every open turn; the next append starts a new one.
                self.turn = None;
                self.forward(text.to_owned(), event_id);
            }
            Some("session.update") => {
                let audio = value.pointer("/session/audio");
                let opus = ["/input/format/type", "/output/format/type"]
                    .iter()
                    .any(|p| audio.and_then(|a| a.pointer(p)) == Some(&json!("audio/opus")));
                if opus {
                    let msg = "the Realtime endpoint carries audio/pcm only (Opus is voq/1's: \
                               use a voq client)";
                    return self.error(event_id, ErrorCode::InvalidValue, msg);
                }
                self.forward(text.to_owned(), event_id);
            }
            Some(_) => self.forward(text.to_owned(), event_id),
            None => self.error(
                event_id,
                ErrorCode::InvalidJson,
                "event has no string field \"type\"",
            ),
        }
    }

    /// A binary message from the Realtime client: not an event.
    pub fn handle_client_binary(&mut self) {
        let msg = "a binary message: Realtime events are JSON text messages";
        self.error(None, ErrorCode::InvalidJson, msg);
    }

    fn append(&mut self, event_id: Option<String>, value: &Value) {
        let Some(audio) = value.get("audio").and_then(Value::as_str) else {
            let msg = "input_audio_buffer.append needs \"audio\": base64 pcm16";
            return self.error(event_id, ErrorCode::InvalidEvent, msg);
        };
        if audio.len() / 4 * 3 > MAX_APPEND_BYTES {
            let msg = format!("audio over {MAX_APPEND_BYTES} bytes in one append");
            return self.error(event_id, ErrorCode::EventTooLarge, &msg);
        }
        let pcm = match BASE64.decode(audio) {
            Ok(pcm) => pcm,
            Err(e) => {
                let msg = format!("audio is not base64: {e}");
                return self.error(event_id, ErrorCode::InvalidValue, &msg);
            }
        };
        if pcm.len() % 2 != 0 {
            let msg = "audio is pcm16: an even number of bytes";
            return self.error(event_id, ErrorCode::InvalidValue, msg);
        }
        if pcm.is_empty() {
            return;
        }
        let turn = match &mut self.turn {
            Some(turn) => turn,
            None => {
                let stream = OutStream(self.next_stream);
                self.next_stream += 1;
                let item_id = format!("item_rt_{}", self.next_item);
                self.next_item += 1;
                let header = AudioHeader {
                    item_id,
                    response_id: None,
                    codec: "pcm16".into(),
                    sample_rate: SAMPLE_RATE,
                    frame_ms: FRAME_MS,
                };
                let mut bytes = Vec::new();
                wire::encode_header(wire::StreamKind::UserAudio, &header, &mut bytes);
                self.out
                    .push_back(RealtimeOutput::ToSession(Transmit::Open { stream, bytes }));
                self.turn.insert(OpenTurn { stream, samples: 0 })
            }
        };
        let mut bytes = Vec::with_capacity(pcm.len() + pcm.len() / (FRAME_SAMPLES * 2) * 6 + 6);
        for chunk in pcm.chunks(FRAME_SAMPLES * 2) {
            // pts wraps after 49 h of one turn's audio, far past the server's turn limit.
            let pts = turn.samples as u32;
            if wire::encode_frame(pts, chunk, &mut bytes).is_err() {
                unreachable!("a 20 ms pcm16 frame is under the frame size limit");
            }
            turn.samples += chunk.len() as u64 / 2;
        }
        let stream = turn.stream;
        self.send_session(Transmit::Write { stream, bytes });
    }

    /// A client event for the control stream, held while a commit is unconfirmed.
    fn forward(&mut self, text: String, event_id: Option<String>) {
        if self.commits_pending > 0 {
            if self.held.len() >= MAX_HELD_EVENTS {
                let msg = "too many events while a commit is being confirmed";
                return self.error(event_id, ErrorCode::LimitExceeded, msg);
            }
            self.held.push_back(text);
            return;
        }
        let mut bytes = Vec::new();
        match wire::encode_event(text.as_bytes(), &mut bytes) {
            Ok(()) => self.send_session(Transmit::Control(bytes)),
            Err(_) => {
                let msg = format!("event over {} bytes", wire::MAX_EVENT_LEN);
                self.error(event_id, ErrorCode::EventTooLarge, &msg)
            }
        }
    }

    /// A commit was confirmed (or refused): release what waited for it.
    fn commit_settled(&mut self) {
        self.commits_pending = self.commits_pending.saturating_sub(1);
        while self.commits_pending == 0
            && let Some(text) = self.held.pop_front()
        {
            let event_id = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("event_id")?.as_str().map(str::to_owned));
            self.forward(text, event_id);
        }
    }

    // ---- from the voq/1 session ----

    /// Bytes of the session's control stream.
    pub fn handle_control(&mut self, bytes: &[u8]) {
        self.control.push(bytes);
        while let Some(decoded) = self.control.poll_event() {
            let DecodedEvent::Event(body) = decoded else {
                continue;
            };
            let text = String::from_utf8_lossy(&body).into_owned();
            let event: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if self.opening_pong && event.get("type") == Some(&json!("voq.pong")) {
                self.opening_pong = false;
                continue;
            }
            // The event goes to the client first: what it releases comes after it.
            self.out.push_back(RealtimeOutput::ToClient(text));
            match event.get("type").and_then(Value::as_str) {
                Some("session.created" | "session.updated") => {
                    self.server_vad = !event
                        .pointer("/session/audio/input/turn_detection")
                        .is_none_or(Value::is_null);
                }
                // Settles a push-to-talk commit of ours (with server VAD on, a commit of the
                // server's own may settle it early: events then go on a little sooner, never
                // held for good).
                Some("input_audio_buffer.committed") if self.commits_pending > 0 => {
                    self.commit_settled()
                }
                // A refused commit: nothing to wait for any more.
                Some("error")
                    if self.commits_pending > 0
                        && event.pointer("/error/code")
                            == Some(&json!("input_audio_buffer_commit_empty")) =>
                {
                    self.commit_settled()
                }
                _ => {}
            }
        }
    }

    /// The server stopped our user-audio stream (a refused or cleared turn).
    pub fn handle_stream_stopped(&mut self, stream: OutStream, _code: u64) {
        if self.turn.as_ref().is_some_and(|t| t.stream == stream) {
            self.turn = None;
        } else if self.commits_pending > 0 {
            // A finished turn the server refused: no confirmation will come.
            self.commit_settled();
        }
    }

    /// Bytes of an agent-audio stream the server opened.
    pub fn handle_stream_data(&mut self, stream: StreamId, bytes: &[u8]) {
        let agent = self.agent.entry(stream).or_default();
        agent.decoder.push(bytes);
        let mut events = Vec::new();
        loop {
            let item = match agent.decoder.poll_item() {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(e) => {
                    self.out
                        .push_back(RealtimeOutput::ToSession(Transmit::StopSending {
                            stream,
                            code: e.code(),
                        }));
                    break;
                }
            };
            match item {
                AudioItem::Header(_, header) => {
                    let response_id = header.response_id.clone().unwrap_or_default();
                    let item_id = header.item_id.clone();
                    events.push(json!({
                        "type": "response.output_item.added", "response_id": response_id,
                        "output_index": 0, "item": assistant_item(&item_id, "in_progress"),
                    }));
                    events.push(json!({
                        "type": "response.content_part.added", "response_id": response_id,
                        "item_id": item_id, "output_index": 0, "content_index": 0,
                        "part": {"type": "audio", "transcript": ""},
                    }));
                    agent.ids = Some((response_id, item_id));
                }
                AudioItem::Frame(frame) => {
                    let Some((response_id, item_id)) = &agent.ids else {
                        continue;
                    };
                    events.push(json!({
                        "type": "response.output_audio.delta", "response_id": response_id,
                        "item_id": item_id, "output_index": 0, "content_index": 0,
                        "delta": BASE64.encode(&frame.payload),
                    }));
                }
            }
        }
        for event in events {
            self.send_client(event);
        }
    }

    /// An agent-audio stream ended: whole (FIN) or cut (reset, e.g. barge-in).
    pub fn handle_stream_end(&mut self, stream: StreamId, whole: bool) {
        let Some(AgentStream {
            ids: Some((response_id, item_id)),
            ..
        }) = self.agent.remove(&stream)
        else {
            return;
        };
        let common = json!({"response_id": response_id, "item_id": item_id,
            "output_index": 0, "content_index": 0});
        let mut done = common.clone();
        done["type"] = json!("response.output_audio.done");
        self.send_client(done);
        let mut part = common;
        part["type"] = json!("response.content_part.done");
        part["part"] = json!({"type": "audio", "transcript": ""});
        self.send_client(part);
        let status = if whole { "completed" } else { "incomplete" };
        self.send_client(json!({
            "type": "response.output_item.done", "response_id": response_id,
            "output_index": 0, "item": assistant_item(&item_id, status),
        }));
    }

    // ---- helpers ----

    fn send_session(&mut self, op: Transmit) {
        self.out.push_back(RealtimeOutput::ToSession(op));
    }

    fn send_client(&mut self, mut event: Value) {
        event["event_id"] = json!(format!("event_rt_{}", self.next_event));
        self.next_event += 1;
        self.out
            .push_back(RealtimeOutput::ToClient(event.to_string()));
    }

    fn error(&mut self, event_id: Option<String>, code: ErrorCode, message: &str) {
        let mut info = ErrorInfo::new(code, message);
        info.event_id = event_id;
        self.send_client(json!({"type": "error", "error": info}));
    }
}

/// The assistant message item of a response, as Realtime's output-item events carry it.
fn assistant_item(item_id: &str, status: &str) -> Value {
    json!({"id": item_id, "type": "message", "object": "realtime.item", "role": "assistant",
           "status": status, "content": [{"type": "output_audio"}]})
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn drain(a: &mut RealtimeAdapter) -> Vec<RealtimeOutput> {
        std::iter::from_fn(|| a.poll_output()).collect()
    }

    /// An adapter past its opening ping, whose pong the client never sees.
    fn adapter() -> RealtimeAdapter {
        let mut a = RealtimeAdapter::new(false);
        let out = drain(&mut a);
        let [RealtimeOutput::ToSession(Transmit::Control(ping))] = &out[..] else {
            panic!("{out:?}")
        };
        assert!(String::from_utf8_lossy(ping).contains("voq.ping"));
        assert!(server_event(&mut a, json!({"type": "voq.pong", "id": 0})).is_empty());
        a
    }

    fn client_events(out: &[RealtimeOutput]) -> Vec<Value> {
        out.iter()
            .filter_map(|o| match o {
                RealtimeOutput::ToClient(t) => Some(serde_json::from_str(t).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn server_event(a: &mut RealtimeAdapter, event: Value) -> Vec<RealtimeOutput> {
        let mut bytes = Vec::new();
        wire::encode_event(event.to_string().as_bytes(), &mut bytes).unwrap();
        a.handle_control(&bytes);
        drain(a)
    }

    fn append(samples: &[i16]) -> String {
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        json!({"type": "input_audio_buffer.append", "audio": BASE64.encode(bytes)}).to_string()
    }

    #[test]
    fn appended_audio_becomes_one_stream_of_20_ms_frames_with_running_pts() {
        let mut a = adapter();
        let samples: Vec<i16> = (0..1000).map(|i| i as i16).collect();
        a.handle_client_text(&append(&samples));
        a.handle_client_text(&append(&samples[..10]));
        let out = drain(&mut a);
        let RealtimeOutput::ToSession(Transmit::Open { stream, bytes }) = &out[0] else {
            panic!("{out:?}")
        };
        let mut decoder = AudioStreamDecoder::default();
        decoder.push(bytes);
        for o in &out[1..] {
            let RealtimeOutput::ToSession(Transmit::Write { stream: s, bytes }) = o else {
                panic!("{o:?}")
            };
            assert_eq!(s, stream);
            decoder.push(bytes);
        }
        let mut frames = Vec::new();
        while let Some(item) = decoder.poll_item().unwrap() {
            if let AudioItem::Frame(f) = item {
                frames.push((f.pts, f.payload.len() / 2));
            }
        }
        assert_eq!(frames, vec![(0, 480), (480, 480), (960, 40), (1000, 10)]);
    }

    #[test]
    fn push_to_talk_commit_finishes_the_stream_and_holds_what_follows_until_confirmed() {
        let mut a = adapter();
        a.handle_client_text(&append(&[1, 2, 3]));
        drain(&mut a);
        a.handle_client_text(r#"{"type":"input_audio_buffer.commit"}"#);
        a.handle_client_text(r#"{"type":"response.create","event_id":"c2"}"#);
        let out = drain(&mut a);
        assert_eq!(
            out,
            vec![RealtimeOutput::ToSession(Transmit::Finish {
                stream: OutStream(0)
            })]
        );
        let out = server_event(
            &mut a,
            json!({"type": "input_audio_buffer.committed", "event_id": "event_3",
                   "item_id": "item_rt_1", "previous_item_id": null,
                   "voq": {"frames": 1, "audio_ms": 0, "bytes": 6}}),
        );
        // The confirmation goes to the client, then the held response.create to the server.
        assert!(matches!(&out[0], RealtimeOutput::ToClient(t) if t.contains("committed")));
        let RealtimeOutput::ToSession(Transmit::Control(bytes)) = &out[1] else {
            panic!("{out:?}")
        };
        assert!(String::from_utf8_lossy(bytes).contains("response.create"));
        // The next append opens a new turn.
        a.handle_client_text(&append(&[4]));
        assert!(matches!(
            drain(&mut a)[0],
            RealtimeOutput::ToSession(Transmit::Open {
                stream: OutStream(1),
                ..
            })
        ));
    }

    #[test]
    fn with_server_vad_commit_goes_to_the_server_and_the_stream_stays_open() {
        let mut a = adapter();
        server_event(
            &mut a,
            json!({"type": "session.created", "session": {"audio": {"input":
                {"turn_detection": {"type": "server_vad"}}}}}),
        );
        a.handle_client_text(&append(&[1]));
        drain(&mut a);
        a.handle_client_text(r#"{"type":"input_audio_buffer.commit"}"#);
        let out = drain(&mut a);
        assert!(matches!(
            &out[..],
            [RealtimeOutput::ToSession(Transmit::Control(_))]
        ));
        a.handle_client_text(&append(&[2]));
        assert!(matches!(
            drain(&mut a)[0],
            RealtimeOutput::ToSession(Transmit::Write {
                stream: OutStream(0),
                ..
            })
        ));
    }

    #[test]
    fn a_session_that_starts_with_server_vad_is_treated_so_before_the_server_says() {
        let mut a = RealtimeAdapter::new(true);
        drain(&mut a);
        a.handle_client_text(&append(&[1]));
        drain(&mut a);
        // Not a FIN: with server VAD the stream stays open and the commit goes to the server.
        a.handle_client_text(r#"{"type":"input_audio_buffer.commit"}"#);
        let out = drain(&mut a);
        assert!(
            matches!(&out[..], [RealtimeOutput::ToSession(Transmit::Control(_))]),
            "{out:?}"
        );
    }

    #[test]
    fn agent_audio_becomes_output_events_with_base64_deltas() {
        let mut a = adapter();
        let header = AudioHeader {
            item_id: "item_2".into(),
            response_id: Some("resp_1".into()),
            codec: "pcm16".into(),
            sample_rate: SAMPLE_RATE,
            frame_ms: FRAME_MS,
        };
        let mut bytes = Vec::new();
        wire::encode_header(wire::StreamKind::AgentAudio, &header, &mut bytes);
        wire::encode_frame(0, &[1, 0, 2, 0], &mut bytes).unwrap();
        for chunk in bytes.chunks(5) {
            a.handle_stream_data(3, chunk);
        }
        a.handle_stream_end(3, false);
        let events = client_events(&drain(&mut a));
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "response.output_item.added",
                "response.content_part.added",
                "response.output_audio.delta",
                "response.output_audio.done",
                "response.content_part.done",
                "response.output_item.done"
            ]
        );
        assert_eq!(events[2]["delta"], BASE64.encode([1, 0, 2, 0]));
        assert_eq!(events[2]["item_id"], "item_2");
        assert_eq!(events[5]["item"]["status"], "incomplete");
        assert_eq!(events[0]["event_id"], "event_rt_1");
    }

    #[test]
    fn bad_client_input_gets_an_error_and_nothing_reaches_the_session() {
        let mut a = adapter();
        for (text, code) in [
            ("nope", "invalid_json"),
            (r#"{"type":"input_audio_buffer.append"}"#, "invalid_event"),
            (
                r#"{"type":"input_audio_buffer.append","audio":"!!"}"#,
                "invalid_value",
            ),
            (
                r#"{"type":"input_audio_buffer.append","audio":"AAEC","event_id":"x"}"#,
                "invalid_value",
            ),
            (
                r#"{"type":"session.update","session":{"type":"realtime","audio":{"output":{"format":{"type":"audio/opus"}}}}}"#,
                "invalid_value",
            ),
        ] {
            a.handle_client_text(text);
            let out = drain(&mut a);
            let events = client_events(&out);
            assert_eq!(out.len(), 1, "{text}: {out:?}");
            assert_eq!(events[0]["error"]["code"], code, "{text}");
        }
    }
}
