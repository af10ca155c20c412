//! Arbitrary message sequences and local commands against one end of the WebSocket mux
//! (`MuxConnection`): it never panics, everything it transmits decodes as a mux frame, it
//! reports data only for streams it opened or announced, and after its close it is silent.
#![no_main]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use voq_proto::Code;
use voq_proto::mux::{MuxConfig, MuxConnection, MuxFrame, MuxOutput, Side};

fuzz_target!(|input: &[u8]| {
    let Some((&first, mut rest)) = input.split_first() else {
        return;
    };
    let side = if first & 1 == 0 {
        Side::Client
    } else {
        Side::Server
    };
    let config = MuxConfig {
        max_peer_uni_streams: usize::from(first >> 1 & 7),
        max_frame_data: 3,
        ..MuxConfig::default()
    };
    #[allow(clippy::disallowed_methods)]
    let t0 = Instant::now();
    let mut now = t0;
    let mut conn = MuxConnection::new(side, config, now);
    let mut known = BTreeSet::new();
    let mut closed = false;
    while let Some((&op, tail)) = rest.split_first() {
        let len = usize::from(op >> 3).min(tail.len());
        let (arg, tail) = tail.split_at(len);
        rest = tail;
        let id = u64::from(arg.first().copied().unwrap_or(0) & 0x3f);
        match op & 7 {
            0 | 1 => conn.handle_message(now, arg),
            2 => {
                now += Duration::from_millis(u64::from(op) * 100);
                conn.handle_timeout(now);
            }
            3 => {
                if let Ok(id) = conn.open(op & 8 != 0) {
                    known.insert(id);
                }
            }
            4 => {
                let _ = conn.write(id, arg);
            }
            5 => {
                let _ = conn.finish(id);
                conn.reset(id, Code::Cancelled);
            }
            6 => conn.stop(id, Code::Cancelled),
            _ => conn.close(Code::NoError, "fuzz"),
        }
        while let Some(output) = conn.poll_output() {
            assert!(!closed, "output after Close: {output:?}");
            match output {
                MuxOutput::Transmit(bytes) => {
                    assert!(MuxFrame::decode(&bytes).is_ok(), "undecodable {bytes:?}");
                }
                MuxOutput::Opened { id } => {
                    known.insert(id);
                }
                MuxOutput::Data { id, .. }
                | MuxOutput::Fin { id }
                | MuxOutput::Reset { id, .. } => {
                    assert!(known.contains(&id), "data for unannounced stream {id}");
                }
                MuxOutput::Stopped { id, .. } => assert!(known.contains(&id)),
                MuxOutput::Close { .. } => closed = true,
            }
        }
    }
});
