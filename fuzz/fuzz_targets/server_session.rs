//! The server's session core driven by an attacker: any sequence of control bytes, user-audio
//! stream bytes, stream ends and resets, agent output and timer ticks, decoded from the input.
//! Nothing may panic, the session's stream bookkeeping stays bounded, and a closed session
//! stays silent.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use voq_proto::server::{MAX_REFUSED_STREAMS, ServerConfig, ServerOutput, ServerSession};

#[path = "common/ops.rs"]
mod ops;
use ops::{Ops, stream_op};

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut now = t0;
    let config = ServerConfig {
        max_open_turns: 3,
        max_turn_audio: Duration::from_millis(500),
        ..Default::default()
    };
    let max_open = config.max_open_turns;
    let mut s = ServerSession::new(config, now);
    let mut responses: Vec<String> = Vec::new();
    let mut ops = Ops(data);
    while let Some(op) = ops.byte() {
        let was_closed = s.is_closed();
        let op = op % 12;
        // Opcodes 0 to 4: control bytes and the peer's streams.
        match op {
            _ if stream_op(&mut s, op, &mut ops, now, 2) => {}
            5 => {
                let speech = ops.byte().unwrap_or(0) & 1 == 1;
                s.handle_vad(now, speech, u64::from(ops.byte().unwrap_or(0)) * 20);
            }
            6 => {
                let id = responses.last().cloned().unwrap_or_default();
                let samples = u32::from(ops.byte().unwrap_or(0)) * 8;
                s.handle_agent_frame(now, &id, ops.chunk().to_vec(), samples);
            }
            7 => {
                let id = responses.last().cloned().unwrap_or_default();
                if ops.byte().unwrap_or(0) & 1 == 0 {
                    s.handle_agent_done(now, &id);
                } else {
                    s.handle_agent_failed(now, &id, "fuzz");
                }
            }
            8 => {
                now += Duration::from_millis(u64::from(ops.byte().unwrap_or(0)) * 10);
                s.handle_timeout(now);
            }
            9 => s.handle_rtt(Duration::from_millis(u64::from(ops.byte().unwrap_or(0)))),
            10 => s.handle_going_away(now),
            _ => {
                if let Some(at) = s.poll_timeout() {
                    now = now.max(at);
                    s.handle_timeout(now);
                }
            }
        }
        let mut outputs = 0;
        while let Some(out) = s.poll_output() {
            outputs += 1;
            if let ServerOutput::StartResponse { response_id, .. } = out {
                responses.push(response_id);
            }
        }
        assert!(
            !was_closed || outputs == 0,
            "a closed session produced output"
        );
        assert!(s.tracked_streams() <= max_open + MAX_REFUSED_STREAMS);
    }
});
