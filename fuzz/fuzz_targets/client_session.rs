//! The client's session core fed by a malicious server: any control bytes, agent-audio stream
//! bytes, stream ends, resets and stops, interleaved with the user talking, barging in and
//! playback. Nothing may panic, and a render always fills exactly the buffer it was given.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use voq_proto::client::{ClientConfig, ClientOutput, ClientSession};
use voq_proto::stream::OutStream;

#[path = "common/ops.rs"]
mod ops;
use ops::Ops;

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let mut s = ClientSession::new(ClientConfig::default(), now);
    let mut ops = Ops(data);
    let mut pcm = vec![0i16; 480];
    while let Some(op) = ops.byte() {
        // Server-initiated uni streams of a QUIC connection: 3, 7, 11, ...
        let stream = |b: u8| 3 + 4 * u64::from(b % 8);
        match op % 11 {
            0 => s.handle_control(now, ops.chunk()),
            1 => {
                let id = stream(ops.byte().unwrap_or(0));
                s.handle_stream_data(now, id, ops.chunk());
            }
            2 => s.handle_stream_fin(now, stream(ops.byte().unwrap_or(0))),
            3 => {
                let id = stream(ops.byte().unwrap_or(0));
                s.handle_stream_reset(now, id, u64::from(ops.byte().unwrap_or(0)));
            }
            4 => {
                let id = OutStream(u64::from(ops.byte().unwrap_or(0) % 4));
                s.handle_stream_stopped(now, id, u64::from(ops.byte().unwrap_or(0)));
            }
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
