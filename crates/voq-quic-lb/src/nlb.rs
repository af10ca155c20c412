//! Preset for AWS Network Load Balancer QUIC passthrough (QUIC and TCP_QUIC listeners, the
//! AWS feature announced in late 2025).
//!
//! The NLB routes on plaintext QUIC-LB CIDs: config id 0, no key, an 8-octet server id that
//! AWS assigns per target. The AWS API writes it as `0x` followed by 16 lowercase hex digits
//! (`TargetDescription.QuicServerId`); the AWS Load Balancer Controller for Kubernetes injects
//! it into pods as base64 in the environment variable [`SERVER_ID_ENV`]
//! (`AWS_LBC_QUIC_SERVER_ID`, e.g. `LWV1oW+gjqQ=`). [`parse_server_id`] accepts both.
//!
//! # CID length: sources disagree
//!
//! - <https://github.com/moq-dev/moq/pull/848> (January 2026, found by trial against a live
//!   NLB) reports that the NLB needs the CID to be *exactly 16 octets* (1 + 8-octet server id
//!   + 7-octet nonce) and plaintext mode; other lengths did not route.
//! - The AWS Load Balancer Controller's QUIC guide (kubernetes-sigs/aws-load-balancer-controller,
//!   `docs/guide/use_cases/quic/index.md`) configures Envoy's QUIC-LB generator with
//!   `nonce_length_bytes: 10`, i.e. 19-octet CIDs; the draft allows up to 20.
//! - AWS's own API reference only fixes the server id (`0x` + 16 hex digits) and says nothing
//!   about the CID length.
//!
//! So the length is a parameter; [`DEFAULT_CID_LEN`] is 16, the one reported to work in
//! practice. Check against your listener before changing it.
//!
//! Plaintext CIDs let anyone read the server mapping (draft-21 §9); the draft advises servers
//! using them to avoid NEW_CONNECTION_ID frames beyond what config rotation needs.

use crate::config::{Config, ConfigError};
use crate::encoder::{Encoder, EncoderError};

/// The config id the NLB uses.
pub const CONFIG_ID: u8 = 0;

/// Server id length the NLB assigns.
pub const SERVER_ID_LEN: usize = 8;

/// Default total CID length: 16, the length reported to route through the NLB.
pub const DEFAULT_CID_LEN: usize = 16;

/// Shortest CID the preset allows: first octet, 8-octet server id, 4-octet nonce.
pub const MIN_CID_LEN: usize = 1 + SERVER_ID_LEN + 4;

/// Environment variable the AWS Load Balancer Controller injects (its default name; the
/// controller's `--quic-environment-variable-name` flag changes it).
pub const SERVER_ID_ENV: &str = "AWS_LBC_QUIC_SERVER_ID";

/// The NLB configuration for CIDs of `cid_len` octets (13..=20): plaintext, config id 0,
/// 8-octet server id, the rest nonce, length self-encoded.
pub fn config(cid_len: usize) -> Result<Config, ConfigError> {
    let nonce_len = match cid_len.checked_sub(1 + SERVER_ID_LEN) {
        Some(n) if (MIN_CID_LEN..=crate::MAX_CID_LEN).contains(&cid_len) => n,
        _ => {
            return Err(ConfigError::CidLen {
                len: cid_len,
                min: MIN_CID_LEN,
            });
        }
    };
    Config::new(CONFIG_ID, SERVER_ID_LEN, nonce_len)
}

/// An encoder for the NLB preset. `seed` as in [`Encoder::new`].
pub fn encoder(
    server_id: [u8; SERVER_ID_LEN],
    cid_len: usize,
    seed: [u8; 32],
) -> Result<Encoder, NlbError> {
    let config = config(cid_len)?;
    Ok(Encoder::new(config, &server_id, seed)?)
}

/// Parses an NLB server id: `0x` and 16 hex digits (the AWS API form) or the base64 of 8
/// octets (the Kubernetes controller's form, padded or not). Surrounding whitespace is ignored.
pub fn parse_server_id(s: &str) -> Result<[u8; SERVER_ID_LEN], ServerIdError> {
    let s = s.trim();
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return parse_hex(hex);
    }
    parse_base64(s)
}

fn parse_hex(hex: &str) -> Result<[u8; SERVER_ID_LEN], ServerIdError> {
    if hex.len() != 2 * SERVER_ID_LEN {
        return Err(ServerIdError::HexLen(hex.len()));
    }
    crate::hex::decode_array(hex).map_err(|_| ServerIdError::HexDigit)
}

/// Standard or URL-safe alphabet, `=` padding optional.
fn parse_base64(s: &str) -> Result<[u8; SERVER_ID_LEN], ServerIdError> {
    // 8 octets = 64 bits = 11 sextets (66 bits, the last 2 zero), padded to 12 characters.
    let body = s.strip_suffix('=').unwrap_or(s).as_bytes();
    if body.len() != 11 {
        return Err(ServerIdError::Base64);
    }
    let mut acc: u128 = 0;
    for &c in body {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return Err(ServerIdError::Base64),
        };
        acc = (acc << 6) | u128::from(v);
    }
    if acc & 0b11 != 0 {
        // Non-canonical: the two padding bits must be zero.
        return Err(ServerIdError::Base64);
    }
    Ok(((acc >> 2) as u64).to_be_bytes())
}

/// An unparsable NLB server id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServerIdError {
    /// `0x` form with the wrong number of digits.
    #[error("server id has {0} hex digits after 0x, needs 16")]
    HexLen(usize),
    /// `0x` form with a character that is not a hex digit.
    #[error("server id contains a character that is not a hex digit")]
    HexDigit,
    /// Not `0x` form, and not the base64 of 8 octets.
    #[error("server id is neither 0x and 16 hex digits nor the base64 of 8 octets")]
    Base64,
}

/// Invalid input to [`encoder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NlbError {
    /// The CID length is outside 13..=20.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The encoder rejected its input.
    #[error(transparent)]
    Encoder(#[from] EncoderError),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{Algorithm, Route, Router};

    #[test]
    fn parses_both_forms() {
        let want = [0x2d, 0x65, 0x75, 0xa1, 0x6f, 0xa0, 0x8e, 0xa4];
        assert_eq!(parse_server_id("LWV1oW+gjqQ=").unwrap(), want);
        assert_eq!(parse_server_id("LWV1oW+gjqQ").unwrap(), want);
        assert_eq!(parse_server_id(" LWV1oW-gjqQ=\n").unwrap(), want);
        assert_eq!(parse_server_id("0x2d6575a16fa08ea4").unwrap(), want);
        assert_eq!(parse_server_id("0X2D6575A16FA08EA4").unwrap(), want);
        let other = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef];
        assert_eq!(parse_server_id("ASNFZ4mrze8=").unwrap(), other);
    }

    #[test]
    fn rejects_malformed_ids() {
        assert_eq!(
            parse_server_id("0x2d65").unwrap_err(),
            ServerIdError::HexLen(4)
        );
        assert_eq!(
            parse_server_id("0x2d6575a16fa08eag").unwrap_err(),
            ServerIdError::HexDigit
        );
        assert_eq!(parse_server_id("").unwrap_err(), ServerIdError::Base64);
        assert_eq!(
            parse_server_id("LWV1oW+gjq!=").unwrap_err(),
            ServerIdError::Base64
        );
        // Non-canonical trailing bits.
        assert_eq!(
            parse_server_id("LWV1oW+gjqR=").unwrap_err(),
            ServerIdError::Base64
        );
        assert_eq!(
            parse_server_id("LWV1oW+gjqQ=AA").unwrap_err(),
            ServerIdError::Base64
        );
    }

    #[test]
    fn preset_config() {
        let c = config(DEFAULT_CID_LEN).unwrap();
        assert_eq!(c.id(), 0);
        assert_eq!(c.sid_len(), 8);
        assert_eq!(c.nonce_len(), 7);
        assert_eq!(c.cid_len(), 16);
        assert_eq!(c.algorithm(), Algorithm::Plaintext);
        assert_eq!(config(20).unwrap().nonce_len(), 11);
        assert_eq!(config(13).unwrap().nonce_len(), 4);
        assert_eq!(
            config(12).unwrap_err(),
            ConfigError::CidLen { len: 12, min: 13 }
        );
        assert_eq!(
            config(21).unwrap_err(),
            ConfigError::CidLen { len: 21, min: 13 }
        );
        assert!(config(0).is_err());
    }

    #[test]
    fn encoder_issues_nlb_cids() {
        let sid = parse_server_id("LWV1oW+gjqQ=").unwrap();
        let mut enc = encoder(sid, 16, [1; 32]).unwrap();
        let cid = enc.generate();
        assert_eq!(cid.len(), 16);
        assert_eq!(cid[0], 0x0f, "config 0, self-encoded length 15");
        assert_eq!(&cid[1..9], &sid, "server id in the clear");
        let router = Router::new().with_config(config(16).unwrap());
        let mut datagram = vec![0x40];
        datagram.extend_from_slice(&cid);
        datagram.extend([0; 40]);
        match router.route(&datagram) {
            Route::Server { server_id, .. } => assert_eq!(server_id.as_bytes(), &sid),
            other => panic!("{other:?}"),
        }
        assert!(matches!(encoder(sid, 8, [1; 32]), Err(NlbError::Config(_))));
    }
}
