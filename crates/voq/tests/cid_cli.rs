//! `voq cid encode|decode` round-trips every usable draft-21 vector and every derived vector
//! through the built binary, and fails with one line on stderr for bad input.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

use serde_json::Value;

const VECTORS: &str = include_str!("../../../testdata/quic-lb/test-vectors.json");
const DERIVED: &str = include_str!("../../../testdata/quic-lb/derived-vectors.json");

fn voq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_voq"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// (name, config id, server id, nonce, key, CID) for every usable vector. B.2 row 4 appears
/// twice: its verbatim CID (first octet 0x12: config 0) and the variant whose first octet
/// carries its cr_bits (config 3), as testdata/quic-lb/README.md advises.
fn vectors(text: &str) -> Vec<(String, String, String, String, Option<String>, String)> {
    let json: Value = serde_json::from_str(text).unwrap();
    let mut out = Vec::new();
    for v in json["vectors"].as_array().unwrap() {
        if !v["usable"].as_bool().unwrap() {
            continue;
        }
        let s = |k: &str| v[k].as_str().unwrap().to_owned();
        let key = v["key_hex"].as_str().map(str::to_owned);
        let config_id = v["first_octet"]["config_rotation"].to_string();
        out.push((
            s("id"),
            config_id,
            s("server_id_hex"),
            s("nonce_hex"),
            key.clone(),
            s("cid_hex"),
        ));
        if let Some(fixed) = v["cid_hex_with_first_octet_from_cr_bits"].as_str() {
            out.push((
                format!("{} (config from cr_bits)", s("id")),
                v["cr_bits"].to_string(),
                s("server_id_hex"),
                s("nonce_hex"),
                key,
                fixed.to_owned(),
            ));
        }
    }
    out
}

fn round_trip(text: &str) -> usize {
    let cases = vectors(text);
    for (name, config_id, sid, nonce, key, cid) in &cases {
        let mut args = vec![
            "cid",
            "encode",
            "--config-id",
            config_id,
            "--server-id",
            sid,
            "--nonce",
            nonce,
        ];
        if let Some(key) = key {
            args.extend(["--key", key]);
        }
        let out = voq(&args);
        assert!(out.status.success(), "{name}: encode: {}", stderr(&out));
        assert_eq!(stdout(&out), format!("{cid}\n"), "{name}: encode");

        let sid_len = (sid.len() / 2).to_string();
        let nonce_len = (nonce.len() / 2).to_string();
        let mut args = vec![
            "cid",
            "decode",
            "--config-id",
            config_id,
            "--server-id-len",
            &sid_len,
            "--nonce-len",
            &nonce_len,
        ];
        if let Some(key) = key {
            args.extend(["--key", key]);
        }
        args.push(cid);
        let out = voq(&args);
        assert!(out.status.success(), "{name}: decode: {}", stderr(&out));
        assert_eq!(
            stdout(&out),
            format!("server_id={sid} nonce={nonce}\n"),
            "{name}: decode"
        );
    }
    cases.len()
}

#[test]
fn draft_vectors_round_trip() {
    assert_eq!(round_trip(VECTORS), 7);
}

#[test]
fn derived_vectors_round_trip() {
    assert_eq!(round_trip(DERIVED), 45);
}

/// Exits with `code`, nothing on stdout, one `voq: …` line on stderr that contains `needle`.
fn fails(args: &[&str], code: i32, needle: &str) {
    let out = voq(args);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
    assert!(out.stdout.is_empty(), "{args:?}");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{args:?}: {err:?}");
    assert!(err.starts_with("voq: "), "{err:?}");
    assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
}

#[test]
fn bad_cids_exit_1_with_one_line() {
    let decode = [
        "cid",
        "decode",
        "--config-id",
        "0",
        "--server-id-len",
        "3",
        "--nonce-len",
        "4",
    ];
    let with = |cid: &'static str| {
        let mut a = decode.to_vec();
        a.push(cid);
        a
    };
    fails(&with("zz"), 1, "malformed CID");
    fails(&with("07c4605e4504cc4"), 1, "malformed CID");
    fails(&with(""), 1, "empty");
    fails(&with("07c4605e"), 1, "length 4");
    fails(&with("e7c4605e4504cc4f"), 1, "0b111");
    fails(&with("27c4605e4504cc4f"), 1, "config id 1");
    fails(&with("08c4605e4504cc4f"), 1, "self-encoded length");
}

#[test]
fn bad_flags_exit_2_with_one_line() {
    fails(
        &[
            "cid",
            "encode",
            "--config-id",
            "7",
            "--server-id",
            "c4605e",
            "--nonce",
            "4504cc4f",
        ],
        2,
        "config id 7",
    );
    fails(
        &[
            "cid",
            "encode",
            "--config-id",
            "0",
            "--server-id",
            "c4605e",
            "--nonce",
            "4504cc",
        ],
        2,
        "nonce length 3",
    );
    fails(
        &[
            "cid",
            "encode",
            "--config-id",
            "0",
            "--server-id",
            "c46g5e",
            "--nonce",
            "4504cc4f",
        ],
        2,
        "--server-id",
    );
    fails(
        &[
            "cid",
            "encode",
            "--config-id",
            "0",
            "--server-id",
            "c4605e",
            "--nonce",
            "4504cc4f",
            "--key",
            "8f95",
        ],
        2,
        "--key",
    );
    fails(
        &[
            "cid",
            "decode",
            "--config-id",
            "0",
            "--server-id-len",
            "0",
            "--nonce-len",
            "4",
            "07",
        ],
        2,
        "server id length 0",
    );
}

#[test]
fn hex_may_have_0x_prefix() {
    let out = voq(&[
        "cid",
        "encode",
        "--config-id",
        "0",
        "--server-id",
        "0xc4605e",
        "--nonce",
        "0x4504CC4F",
    ]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "07c4605e4504cc4f\n");
}
