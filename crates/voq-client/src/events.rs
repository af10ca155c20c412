//! `voq call --events FILE`: every control event of a call, both directions, exactly as it
//! crossed the wire (the JSON text, `event_id` included), for debugging a session and for
//! checking voq's events against other implementations' schemas (the Realtime conformance test).

use std::time::Instant;

use serde::Serialize;
use voq_proto::wire::{DecodedEvent, EventDecoder};

/// At most this many events are kept per call; later ones are counted in
/// [`EventLog::dropped`], so a long call cannot grow the log without bound.
pub const MAX_LOGGED_EVENTS: usize = 100_000;

/// Which way an event went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Client → server.
    Sent,
    /// Server → client.
    Received,
}

/// One control event as it crossed the wire.
#[derive(Debug, Clone, Serialize)]
pub struct LoggedEvent {
    /// Since the call's control stream opened, in ms.
    pub at_ms: f64,
    pub direction: Direction,
    /// The event's JSON, parsed but otherwise as sent (a body that is not JSON is kept as a
    /// string).
    pub event: serde_json::Value,
}

/// Reassembles the control stream's events in both directions.
#[derive(Debug)]
pub struct EventLog {
    start: Instant,
    sent: EventDecoder,
    received: EventDecoder,
    events: Vec<LoggedEvent>,
    dropped: u64,
}

impl EventLog {
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            sent: EventDecoder::default(),
            received: EventDecoder::default(),
            events: Vec::new(),
            dropped: 0,
        }
    }

    /// Bytes written to the control stream.
    pub fn sent(&mut self, now: Instant, bytes: &[u8]) {
        self.sent.push(bytes);
        self.drain(now, Direction::Sent);
    }

    /// Bytes read from the control stream.
    pub fn received(&mut self, now: Instant, bytes: &[u8]) {
        self.received.push(bytes);
        self.drain(now, Direction::Received);
    }

    fn drain(&mut self, now: Instant, direction: Direction) {
        let decoder = match direction {
            Direction::Sent => &mut self.sent,
            Direction::Received => &mut self.received,
        };
        while let Some(decoded) = decoder.poll_event() {
            let event = match decoded {
                DecodedEvent::Event(body) => serde_json::from_slice(&body).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
                }),
                DecodedEvent::Skipped(len) => {
                    serde_json::json!({ "voq_log": format!("an event of {len} bytes, over the size limit") })
                }
            };
            if self.events.len() >= MAX_LOGGED_EVENTS {
                self.dropped += 1;
                continue;
            }
            self.events.push(LoggedEvent {
                at_ms: now.saturating_duration_since(self.start).as_secs_f64() * 1000.0,
                direction,
                event,
            });
        }
    }

    /// Events not kept because the log was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn into_events(self) -> Vec<LoggedEvent> {
        self.events
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn events_are_reassembled_in_any_chunking_both_ways() {
        let t0 = Instant::now();
        let mut log = EventLog::new(t0);
        let mut bytes = Vec::new();
        voq_proto::wire::encode_event(br#"{"type":"a","event_id":"event_1"}"#, &mut bytes).unwrap();
        voq_proto::wire::encode_event(b"not json", &mut bytes).unwrap();
        for chunk in bytes.chunks(3) {
            log.received(t0, chunk);
        }
        let mut sent = Vec::new();
        voq_proto::wire::encode_event(br#"{"type":"b"}"#, &mut sent).unwrap();
        log.sent(t0, &sent);
        let events = log.into_events();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].event["event_id"], "event_1");
        assert_eq!(events[0].direction, Direction::Received);
        assert_eq!(events[1].event, "not json");
        assert_eq!(events[2].event["type"], "b");
        assert_eq!(events[2].direction, Direction::Sent);
    }
}
