//! Arbitrary bytes as a datagram to a router with plaintext, single-pass and four-pass
//! configurations (both four-pass decode paths: 3 and 4 AES passes), one without length
//! self-encoding. `route`, `dcid` and `decode` must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voq_quic_lb::{Config, Route, Router};

fn router() -> Router {
    let key = [0x8f; 16];
    let config = |id, sid, nonce| Config::new(id, sid, nonce).expect("valid config");
    Router::new()
        .with_config(config(0, 3, 4))
        .with_config(config(1, 8, 8).with_key(key))
        .with_config(config(2, 4, 8).with_key(key))
        .with_config(config(3, 10, 5).with_key(key))
        .with_config(
            config(4, 2, 4)
                .with_key(key)
                .with_cid_len(12)
                .expect("valid length")
                .with_self_encoded_len(false),
        )
}

fuzz_target!(|datagram: &[u8]| {
    let router = router();
    if let Route::Server {
        config_id,
        server_id,
    } = router.route(datagram)
    {
        let config = router.config(config_id).expect("routed by a known config");
        assert_eq!(server_id.len(), config.sid_len());
    }
    if let Some(dcid) = router.dcid(datagram) {
        let _ = router.decode(dcid);
    }
    let _ = router.decode(datagram);
});
