//! Round trips over every configuration shape, and no panics on arbitrary input.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use proptest::prelude::*;
use voq_quic_lb::{Algorithm, Config, Encoder, Route, Router};

/// Every (sid_len, nonce_len) the draft allows: sid ≥ 1, nonce ≥ 4, sum ≤ 19.
fn shapes() -> impl Iterator<Item = (usize, usize)> {
    (1..=15).flat_map(|s| (4..=19 - s).map(move |n| (s, n)))
}

fn short_header(cid: &[u8]) -> Vec<u8> {
    let mut d = vec![0x41];
    d.extend_from_slice(cid);
    d.extend([0x5a; 30]);
    d
}

fn long_header(cid: &[u8]) -> Vec<u8> {
    let mut d = vec![0xc1, 0, 0, 0, 1, cid.len() as u8];
    d.extend_from_slice(cid);
    d.extend([8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0x44, 0xd0]);
    d.resize(1200, 0);
    d
}

/// Exhaustive over shapes, config ids and key/no key, with fixed contents.
#[test]
fn every_shape_and_config_id_round_trips() {
    let mut count = 0;
    for (sid_len, nonce_len) in shapes() {
        for id in 0..=6u8 {
            for key in [None, Some([id ^ 0x3c; 16])] {
                let mut config = Config::new(id, sid_len, nonce_len).unwrap();
                if let Some(key) = key {
                    config = config.with_key(key);
                }
                let expect = match (key.is_some(), sid_len + nonce_len) {
                    (false, _) => Algorithm::Plaintext,
                    (true, 16) => Algorithm::SinglePass,
                    (true, _) => Algorithm::FourPass,
                };
                assert_eq!(config.algorithm(), expect);
                let sid: Vec<u8> = (0..sid_len as u8).map(|i| i * 17 + id).collect();
                let nonce: Vec<u8> = (0..nonce_len as u8).map(|i| 0xff - i).collect();
                let cid = config.encode(&sid, &nonce).unwrap();
                assert_eq!(cid.len(), 1 + sid_len + nonce_len);
                assert_eq!(cid[0], (id << 5) | (sid_len + nonce_len) as u8);
                let d = config.decode(&cid).unwrap();
                assert_eq!(
                    (d.server_id.as_bytes(), d.nonce.as_bytes()),
                    (&*sid, &*nonce)
                );
                let router = Router::new().with_config(config);
                for datagram in [short_header(&cid), long_header(&cid)] {
                    match router.route(&datagram) {
                        Route::Server {
                            config_id,
                            server_id,
                        } => {
                            assert_eq!(config_id, id);
                            assert_eq!(server_id.as_bytes(), sid);
                        }
                        other => panic!("{sid_len}/{nonce_len}/{id}: {other:?}"),
                    }
                }
                count += 1;
            }
        }
    }
    assert_eq!(count, 120 * 7 * 2);
}

/// A configuration with arbitrary shape, key, server-use octets and length encoding, and a
/// server id and nonce that fit it.
fn configured() -> impl Strategy<Value = (Config, Vec<u8>, Vec<u8>)> {
    (
        1usize..=15,
        0u8..=6,
        any::<Option<[u8; 16]>>(),
        any::<bool>(),
    )
        .prop_flat_map(|(sid_len, id, key, self_encode)| {
            let nonce_len = 4usize..=19 - sid_len;
            (Just((sid_len, id, key, self_encode)), nonce_len)
        })
        .prop_flat_map(|((sid_len, id, key, self_encode), nonce_len)| {
            let extra = 0..=19 - sid_len - nonce_len;
            (
                Just((sid_len, nonce_len, id, key, self_encode)),
                extra,
                proptest::collection::vec(any::<u8>(), sid_len),
                proptest::collection::vec(any::<u8>(), nonce_len),
            )
        })
        .prop_map(
            |((sid_len, nonce_len, id, key, self_encode), extra, sid, nonce)| {
                let mut c = Config::new(id, sid_len, nonce_len)
                    .unwrap()
                    .with_cid_len(1 + sid_len + nonce_len + extra)
                    .unwrap()
                    .with_self_encoded_len(self_encode);
                if let Some(key) = key {
                    c = c.with_key(key);
                }
                (c, sid, nonce)
            },
        )
}

fn several_configs() -> Router {
    Router::new()
        .with_config(Config::new(0, 3, 4).unwrap())
        .with_config(Config::new(1, 8, 8).unwrap().with_key([1; 16]))
        .with_config(Config::new(2, 4, 7).unwrap().with_key([2; 16]))
        .with_config(Config::new(3, 10, 5).unwrap().with_key([3; 16]))
        .with_config(
            Config::new(4, 2, 4)
                .unwrap()
                .with_key([4; 16])
                .with_cid_len(12)
                .unwrap()
                .with_self_encoded_len(false),
        )
}

proptest! {
    #[test]
    fn encode_decode_round_trip((config, sid, nonce) in configured()) {
        let cid = config.encode(&sid, &nonce).unwrap();
        prop_assert_eq!(cid.len(), config.cid_len());
        let d = config.decode(&cid).unwrap();
        prop_assert_eq!(d.config_id, config.id());
        prop_assert_eq!(d.server_id.as_bytes(), &sid[..]);
        prop_assert_eq!(d.nonce.as_bytes(), &nonce[..]);
        let router = Router::new().with_config(config.clone());
        let want = Route::Server { config_id: config.id(), server_id: d.server_id };
        prop_assert_eq!(router.route(&short_header(&cid)), want);
        prop_assert_eq!(router.route(&long_header(&cid)), want);
        let short = short_header(&cid);
        prop_assert_eq!(router.dcid(&short), Some(cid.as_bytes()));
    }

    #[test]
    fn encoder_round_trip((config, sid, _nonce) in configured(), seed in any::<[u8; 32]>()) {
        let mut enc = Encoder::new(config.clone(), &sid, seed).unwrap();
        let router = Router::new().with_config(config.clone());
        let mut seen = HashSet::new();
        for _ in 0..16 {
            let cid = enc.generate();
            prop_assert_eq!(cid.len(), config.cid_len());
            prop_assert!(seen.insert(cid), "repeated CID");
            match router.route(&short_header(&cid)) {
                Route::Server { server_id, .. } => prop_assert_eq!(server_id.as_bytes(), &sid[..]),
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }

    #[test]
    fn route_never_panics(datagram in proptest::collection::vec(any::<u8>(), 0..64)) {
        let router = several_configs();
        let _ = router.route(&datagram);
        let _ = router.dcid(&datagram);
        let _ = router.decode(&datagram);
        for c in router.configs() {
            let _ = c.decode(&datagram);
            let _ = c.server_id(&datagram);
        }
    }

    /// Inputs shaped like QUIC headers reach deeper than uniform bytes do.
    #[test]
    fn route_never_panics_on_header_shapes(
        first in any::<u8>(),
        cid0 in any::<u8>(),
        dcid_len in 0u8..=24,
        body in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let router = several_configs();
        let mut short = vec![first & 0x7f, cid0];
        short.extend_from_slice(&body);
        let _ = router.route(&short);
        let _ = router.dcid(&short);
        let mut long = vec![first | 0x80, 0, 0, 0, 1, dcid_len, cid0];
        long.extend_from_slice(&body);
        let _ = router.route(&long);
        let _ = router.dcid(&long);
    }
}
