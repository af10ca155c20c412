//! The session targets read their input as a little program: one opcode byte, then its operands.

/// The rest of the input.
pub struct Ops<'a>(pub &'a [u8]);

impl<'a> Ops<'a> {
    /// The next byte, `None` at the end.
    pub fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    /// A length byte, then that many bytes (fewer at the end).
    pub fn chunk(&mut self) -> &'a [u8] {
        let len = usize::from(self.byte().unwrap_or(0)).min(self.0.len());
        let (c, rest) = self.0.split_at(len);
        self.0 = rest;
        c
    }
}

use std::time::Instant;

use voq_proto::client::ClientSession;
use voq_proto::server::ServerSession;
use voq_proto::stream::OutStream;

/// The stream inputs both session cores take (one vocabulary, `voq_proto::stream`).
pub trait StreamInputs {
    fn control(&mut self, now: Instant, bytes: &[u8]);
    fn data(&mut self, now: Instant, id: u64, bytes: &[u8]);
    fn fin(&mut self, now: Instant, id: u64);
    fn reset(&mut self, now: Instant, id: u64, code: u64);
    fn stopped(&mut self, now: Instant, stream: OutStream, code: u64);
}

macro_rules! stream_inputs {
    ($t:ty) => {
        impl StreamInputs for $t {
            fn control(&mut self, now: Instant, bytes: &[u8]) {
                self.handle_control(now, bytes)
            }
            fn data(&mut self, now: Instant, id: u64, bytes: &[u8]) {
                self.handle_stream_data(now, id, bytes)
            }
            fn fin(&mut self, now: Instant, id: u64) {
                self.handle_stream_fin(now, id)
            }
            fn reset(&mut self, now: Instant, id: u64, code: u64) {
                self.handle_stream_reset(now, id, code)
            }
            fn stopped(&mut self, now: Instant, stream: OutStream, code: u64) {
                self.handle_stream_stopped(now, stream, code)
            }
        }
    };
}
stream_inputs!(ServerSession);
stream_inputs!(ClientSession);

/// Opcodes 0 to 4, the same for both cores: control bytes, then data, FIN, reset and
/// STOP_SENDING on the peer's unidirectional streams (`first_stream`, then every fourth id: 2 for
/// a client's, 3 for a server's). `false` for any other opcode.
pub fn stream_op(
    s: &mut impl StreamInputs,
    op: u8,
    ops: &mut Ops<'_>,
    now: Instant,
    first_stream: u64,
) -> bool {
    let stream = |b: u8| first_stream + 4 * u64::from(b % 8);
    match op {
        0 => s.control(now, ops.chunk()),
        1 => {
            let id = stream(ops.byte().unwrap_or(0));
            s.data(now, id, ops.chunk());
        }
        2 => s.fin(now, stream(ops.byte().unwrap_or(0))),
        3 => {
            let id = stream(ops.byte().unwrap_or(0));
            s.reset(now, id, u64::from(ops.byte().unwrap_or(0)));
        }
        4 => {
            let id = OutStream(u64::from(ops.byte().unwrap_or(0) % 4));
            s.stopped(now, id, u64::from(ops.byte().unwrap_or(0)));
        }
        _ => return false,
    }
    true
}
