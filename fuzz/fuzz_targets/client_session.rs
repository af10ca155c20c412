//! The client's session core fed by a malicious server: any control bytes, agent-audio stream
//! bytes, stream ends, resets and stops, interleaved with the user talking, barging in and
//! playback. Nothing may panic, and a render always fills exactly the buffer it was given.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use voq_proto::client::{ClientConfig, ClientOutput, ClientSession};

#[path = "common/ops.rs"]
mod ops;
use ops::{Ops, stream_op};

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let mut s = ClientSession::new(ClientConfig::default(), now);
    let mut ops = Ops(data);
    let mut pcm = vec![0i16; 480];
    while let Some(op) = ops.byte() {
        let op = op % 11;
        // Opcodes 0 to 4: control bytes and the peer's streams.
        match op {
            _ if stream_op(&mut s, op, &mut ops, now, 3) => {}
            5 => {
                let _ = s.start_turn(now);
            }
            6 => {
                let payload = ops.chunk();
                let _ = s.send_audio(now, payload, 480);
            }
            7 => s.end_turn(now),
            8 => {
                let _ = s.interrupt(now);
            }
            9 => {
                now += Duration::from_millis(u64::from(ops.byte().unwrap_or(0)));
                s.handle_timeout(now);
                let len = usize::from(ops.byte().unwrap_or(0)) * 4;
                pcm.resize(len, 0);
                let _ = s.render(now, &mut pcm);
                assert_eq!(pcm.len(), len);
            }
            _ => s.commit(),
        }
        while let Some(out) = s.poll_output() {
            if let ClientOutput::ReplyFrame {
                response_id,
                pts,
                payload,
                ..
            } = out
            {
                // pcm16 decoding, as a shell would.
                let samples: Vec<i16> = payload
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]))
                    .collect();
                s.push_reply_audio(&response_id, pts, &samples);
            }
        }
    }
});
