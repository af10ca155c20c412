//! Arbitrary bytes, split at an arbitrary point, into the voq/1 decoders a server runs on
//! untrusted input: the control-event decoder (then the event parser) and the audio-stream
//! decoder. Nothing may panic, and a decoder that failed stays failed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voq_proto::event::{CLIENT_EVENT_TYPES, ClientEvent, SERVER_EVENT_TYPES, ServerEvent, parse};
use voq_proto::wire::{AudioStreamDecoder, DecodedEvent, EventDecoder};

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| *b as usize).min(data.len());
    let (a, b) = data.split_at(split);

    let mut events = EventDecoder::default();
    for part in [a, b] {
        events.push(part);
        while let Some(e) = events.poll_event() {
            if let DecodedEvent::Event(body) = e {
                let _ = parse::<ClientEvent>(&body, CLIENT_EVENT_TYPES);
                let _ = parse::<ServerEvent>(&body, SERVER_EVENT_TYPES);
            }
        }
    }

    let mut audio = AudioStreamDecoder::default();
    let mut failed = false;
    for part in [a, b] {
        audio.push(part);
        loop {
            match audio.poll_item() {
                Ok(Some(_)) => assert!(!failed, "a failed decoder produced an item"),
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
    }
});
