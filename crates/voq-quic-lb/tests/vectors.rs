//! Every usable vector of draft-21 Appendix B and the §5.4.2.4 example
//! (testdata/quic-lb/test-vectors.json), plus the derived vectors (derived-vectors.json).
//!
//! Misprints followed, per testdata/quic-lb/README.md: B.1 row 2 is `usable: false` and
//! skipped; B.2 row 4's printed first octet (0x12) encodes config 0, so the verbatim CID is
//! tested with config 0 and `cid_hex_with_first_octet_from_cr_bits` with config 3.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use voq_quic_lb::{Algorithm, Config, Route, Router};

const VECTORS: &str = include_str!("../../../testdata/quic-lb/test-vectors.json");
const DERIVED: &str = include_str!("../../../testdata/quic-lb/derived-vectors.json");

fn hex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

/// One CID to check: config id, server id, nonce, key, expected CID, algorithm.
struct Case {
    name: String,
    config_id: u8,
    sid: Vec<u8>,
    nonce: Vec<u8>,
    key: Option<[u8; 16]>,
    cid: Vec<u8>,
    algorithm: Algorithm,
}

fn cases(text: &str) -> Vec<Case> {
    let json: Value = serde_json::from_str(text).unwrap();
    let mut out = Vec::new();
    for v in json["vectors"].as_array().unwrap() {
        let id = v["id"].as_str().unwrap();
        if !v["usable"].as_bool().unwrap() {
            continue;
        }
        let key = v["key_hex"]
            .as_str()
            .map(|k| <[u8; 16]>::try_from(hex::decode(k).unwrap()).unwrap());
        let algorithm = match v["algorithm"].as_str().unwrap() {
            "plaintext" => Algorithm::Plaintext,
            "single_pass_aes128_ecb" => Algorithm::SinglePass,
            "four_pass_feistel_aes128_ecb" => Algorithm::FourPass,
            other => panic!("{id}: unknown algorithm {other}"),
        };
        let sid = hex(&v["server_id_hex"]);
        let nonce = hex(&v["nonce_hex"]);
        assert_eq!(sid.len() as u64, v["sid_len"].as_u64().unwrap(), "{id}");
        assert_eq!(nonce.len() as u64, v["nonce_len"].as_u64().unwrap(), "{id}");
        // The config id as printed in the CID's first octet (B.2 row 4: 0, not its cr_bits 3).
        let config_id = v["first_octet"]["config_rotation"].as_u64().unwrap() as u8;
        out.push(Case {
            name: id.to_owned(),
            config_id,
            sid: sid.clone(),
            nonce: nonce.clone(),
            key,
            cid: hex(&v["cid_hex"]),
            algorithm,
        });
        if let Some(fixed) = v["cid_hex_with_first_octet_from_cr_bits"].as_str() {
            out.push(Case {
                name: format!("{id} (first octet from cr_bits)"),
                config_id: v["cr_bits"].as_u64().unwrap() as u8,
                sid,
                nonce,
                key,
                cid: hex::decode(fixed).unwrap(),
                algorithm,
            });
        }
    }
    out
}

fn config(case: &Case) -> Config {
    let c = Config::new(case.config_id, case.sid.len(), case.nonce.len()).unwrap();
    match case.key {
        Some(key) => c.with_key(key),
        None => c,
    }
}

fn check(case: &Case) {
    let name = &case.name;
    let config = config(case);
    assert_eq!(config.algorithm(), case.algorithm, "{name}: algorithm");

    let cid = config.encode(&case.sid, &case.nonce).unwrap();
    assert_eq!(hex::encode(cid), hex::encode(&case.cid), "{name}: encode");

    let decoded = config.decode(&case.cid).unwrap();
    assert_eq!(decoded.config_id, case.config_id, "{name}: config id");
    assert_eq!(decoded.server_id.as_bytes(), case.sid, "{name}: server id");
    assert_eq!(decoded.nonce.as_bytes(), case.nonce, "{name}: nonce");
    assert_eq!(
        config.server_id(&case.cid).unwrap().as_bytes(),
        case.sid,
        "{name}"
    );

    let router = Router::new().with_config(config);
    assert_eq!(
        router.decode(&case.cid).unwrap(),
        decoded,
        "{name}: router decode"
    );
    let want = Route::Server {
        config_id: case.config_id,
        server_id: decoded.server_id,
    };
    let mut short = vec![0x43];
    short.extend_from_slice(&case.cid);
    short.extend([0xab; 24]);
    assert_eq!(router.route(&short), want, "{name}: short header");
    let mut long = vec![0xc0, 0, 0, 0, 1, case.cid.len() as u8];
    long.extend_from_slice(&case.cid);
    long.extend([4, 1, 2, 3, 4, 0, 0x41, 0]);
    assert_eq!(router.route(&long), want, "{name}: long header");
}

#[test]
fn draft_vectors() {
    let cases = cases(VECTORS);
    let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    // B.1 row 1, B.2 rows 1-4, B.2 row 4 with config 3, and the §5.4.2.4 example.
    assert_eq!(cases.len(), 7, "{names:?}");
    for case in &cases {
        check(case);
    }
    assert!(names.contains(&"5.4.2.4-encryption-example"));
    assert!(
        !names.contains(&"B.1-unencrypted-1"),
        "unusable vector skipped"
    );
}

#[test]
fn b2_row4_verbatim_is_config_0() {
    let cases = cases(VECTORS);
    let verbatim = cases.iter().find(|c| c.name == "B.2-encrypted-3").unwrap();
    assert_eq!(verbatim.config_id, 0);
    assert_eq!(verbatim.cid[0], 0x12);
    let fixed = cases
        .iter()
        .find(|c| c.name.starts_with("B.2-encrypted-3 "))
        .unwrap();
    assert_eq!(fixed.config_id, 3);
    assert_eq!(fixed.cid[0], 0x72);
    assert_eq!(fixed.cid[1..], verbatim.cid[1..]);
}

#[test]
fn derived_vectors() {
    let cases = cases(DERIVED);
    assert_eq!(cases.len(), 45);
    let mut lengths = std::collections::BTreeSet::new();
    for case in &cases {
        check(case);
        lengths.insert(case.sid.len() + case.nonce.len());
    }
    assert_eq!(lengths, (5..=19).collect(), "every plaintext length 5..=19");
}
