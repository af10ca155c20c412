//! Arbitrary bytes as one WebSocket message of the voq stream mux: decoding never panics, and
//! whatever decodes re-encodes to a message that decodes to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voq_proto::mux::MuxFrame;

fuzz_target!(|msg: &[u8]| {
    if let Ok(frame) = MuxFrame::decode(msg) {
        let again = MuxFrame::decode(&frame.encode());
        assert_eq!(again.as_ref(), Ok(&frame));
    }
});
