//! Nanoseconds per `Router::route` on 1200-octet datagrams, the load balancer's per-packet
//! cost: plaintext, single-pass and four-pass configs, short and long headers.
//!
//! Run: `cargo bench -p voq-quic-lb --bench route`. Results: docs/BENCHMARKS.md.
#![allow(clippy::unwrap_used)]

use divan::{Bencher, black_box};
use voq_quic_lb::{Config, Encoder, Route, Router};

fn main() {
    divan::main();
}

const DATAGRAM_LEN: usize = 1200;
const KEY: [u8; 16] = [
    0x8f, 0x95, 0xf0, 0x92, 0x45, 0x76, 0x5f, 0x80, 0x25, 0x69, 0x34, 0xe5, 0x0c, 0x66, 0x20, 0x7f,
];

/// Config ids: 0 plaintext (8 + 8), 1 single pass (8 + 8), 2 four-pass with 4-octet server
/// id and 8-octet nonce (3 AES operations), 3 four-pass with 10 + 5 (4 AES operations).
fn router() -> Router {
    Router::new()
        .with_config(Config::new(0, 8, 8).unwrap())
        .with_config(Config::new(1, 8, 8).unwrap().with_key(KEY))
        .with_config(Config::new(2, 4, 8).unwrap().with_key(KEY))
        .with_config(Config::new(3, 10, 5).unwrap().with_key(KEY))
}

fn cid(config_id: u8) -> Vec<u8> {
    let router = router();
    let config = router.config(config_id).unwrap().clone();
    let sid = vec![0x42; config.sid_len()];
    let mut enc = Encoder::new(config, &sid, [config_id; 32]).unwrap();
    enc.generate().to_vec()
}

fn short(config_id: u8) -> Vec<u8> {
    let cid = cid(config_id);
    let mut d = vec![0x41];
    d.extend_from_slice(&cid);
    d.resize(DATAGRAM_LEN, 0xa5);
    d
}

fn long(config_id: u8) -> Vec<u8> {
    let cid = cid(config_id);
    // QUIC v1 Initial: DCID, 8-octet SCID, then token length, length, and padding.
    let mut d = vec![0xc3, 0x00, 0x00, 0x00, 0x01, cid.len() as u8];
    d.extend_from_slice(&cid);
    d.push(8);
    d.extend([0x17; 8]);
    d.extend([0x00, 0x44, 0x9e]);
    d.resize(DATAGRAM_LEN, 0xa5);
    d
}

fn bench(bencher: Bencher<'_, '_>, datagram: Vec<u8>) {
    let router = router();
    assert!(matches!(router.route(&datagram), Route::Server { .. }));
    bencher.bench_local(|| router.route(black_box(&datagram)));
}

#[divan::bench]
fn plaintext_short(b: Bencher<'_, '_>) {
    bench(b, short(0));
}

#[divan::bench]
fn plaintext_long(b: Bencher<'_, '_>) {
    bench(b, long(0));
}

#[divan::bench]
fn single_pass_short(b: Bencher<'_, '_>) {
    bench(b, short(1));
}

#[divan::bench]
fn single_pass_long(b: Bencher<'_, '_>) {
    bench(b, long(1));
}

#[divan::bench]
fn four_pass_3aes_short(b: Bencher<'_, '_>) {
    bench(b, short(2));
}

#[divan::bench]
fn four_pass_3aes_long(b: Bencher<'_, '_>) {
    bench(b, long(2));
}

#[divan::bench]
fn four_pass_4aes_short(b: Bencher<'_, '_>) {
    bench(b, short(3));
}

#[divan::bench]
fn four_pass_4aes_long(b: Bencher<'_, '_>) {
    bench(b, long(3));
}

/// The unroutable path: a client Initial whose random DCID names no configuration.
#[divan::bench]
fn unroutable_long(b: Bencher<'_, '_>) {
    let mut d = long(0);
    d[6] = 0xa7; // config 5: none
    let router = router();
    assert!(matches!(router.route(&d), Route::Unroutable(_)));
    b.bench_local(|| router.route(black_box(&d)));
}
