//! What saving a resumable session costs the server (issue #15): one
//! `ServerSession::snapshot().to_bytes()` with an open push-to-talk turn of 1, 5 and 20 s of
//! pcm16 held (the shell takes one every 100 ms while the turn grows, and at most 1 MiB of a
//! turn's audio is held: about 22 s). `cargo bench -p voq-proto --bench snapshot`.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use voq_proto::server::{ServerConfig, ServerSession};
use voq_proto::wire::{self, AudioHeader, StreamKind};

fn main() {
    divan::main();
}

/// A resumable session holding an open turn of `seconds` of pcm16 (480-sample frames).
fn session_with_turn(seconds: u32) -> ServerSession {
    let config = ServerConfig {
        resumable: true,
        ..Default::default()
    };
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut s = ServerSession::new(config, now);
    let header = AudioHeader {
        item_id: "item_c1".into(),
        response_id: None,
        codec: "pcm16".into(),
        sample_rate: 24_000,
        frame_ms: 20,
    };
    let mut bytes = Vec::new();
    wire::encode_header(StreamKind::UserAudio, &header, &mut bytes);
    for i in 0..seconds * 50 {
        let payload: Vec<u8> = (0..960).map(|k| (k as u32 * 7 + i) as u8).collect();
        wire::encode_frame(i * 480, &payload, &mut bytes).unwrap();
    }
    s.handle_stream_data(now, 2, &bytes);
    while s.poll_output().is_some() {}
    s
}

#[divan::bench(args = [1, 5, 20])]
fn snapshot_of_an_open_turn(bencher: divan::Bencher<'_, '_>, seconds: u32) {
    let session = session_with_turn(seconds);
    let bytes = session.snapshot().to_bytes().len();
    assert!(
        bytes > seconds as usize * 48_000,
        "the turn is held: {bytes} bytes"
    );
    bencher.bench(|| divan::black_box(session.snapshot().to_bytes()));
}
