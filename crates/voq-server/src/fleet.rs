//! Key material a fleet of servers shares, derived from one secret (`--fleet-secret-file`,
//! `VOQ_FLEET_SECRET`), so that what one server issues another can check:
//!
//! - the **address-validation token key**: a client sent a Retry by one server (or a NEW_TOKEN)
//!   is validated by any other, e.g. after an ECMP rehash moved its next Initial;
//! - the **stateless-reset key**: any server can tell a client that a connection of a server
//!   that died is gone (a stateless reset), instead of the client waiting for its idle timeout.
//!
//! Each key is derived with HKDF-SHA256 under its own label, so one never doubles as another.
//! Without a fleet secret every server draws random keys at start (quinn's default).

use std::sync::Arc;

use anyhow::Context;
use ring::{hkdf, hmac};

/// The shortest secret accepted.
pub const MIN_SECRET_LEN: usize = 32;

/// The fleet secret and the keys derived from it.
#[derive(Clone)]
pub struct FleetKeys {
    prk: hkdf::Prk,
}

impl std::fmt::Debug for FleetKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FleetKeys(<secret>)")
    }
}

impl FleetKeys {
    /// From the secret's bytes (at least [`MIN_SECRET_LEN`]).
    pub fn new(secret: &[u8]) -> anyhow::Result<Self> {
        anyhow::ensure!(
            secret.len() >= MIN_SECRET_LEN,
            "the fleet secret has {} bytes; it needs at least {MIN_SECRET_LEN} \
             (e.g. `openssl rand -hex 32`)",
            secret.len()
        );
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"voq fleet v1").extract(secret);
        Ok(Self { prk })
    }

    /// From a file or environment value: 64 or more hex digits, or else the raw bytes
    /// (surrounding whitespace ignored).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        match voq_quic_lb::hex::decode(text) {
            Ok(bytes) if bytes.len() >= MIN_SECRET_LEN => Self::new(&bytes),
            _ => Self::new(text.as_bytes()),
        }
    }

    /// Reads the secret from a file.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the fleet secret {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("fleet secret {}", path.display()))
    }

    /// The key of Retry and NEW_TOKEN tokens.
    pub fn token_key(&self) -> Arc<hkdf::Prk> {
        let okm = self.expand(&[b"voq address validation token"], hkdf::HKDF_SHA256);
        Arc::new(hkdf::Prk::from(okm))
    }

    /// The key of stateless-reset tokens.
    pub fn reset_key(&self) -> Arc<hmac::Key> {
        let okm = self.expand(&[b"voq stateless reset"], hmac::HMAC_SHA256);
        Arc::new(hmac::Key::from(okm))
    }

    fn expand<'a, L: hkdf::KeyType>(&'a self, info: &'a [&'a [u8]], len: L) -> hkdf::Okm<'a, L> {
        match self.prk.expand(info, len) {
            Ok(okm) => okm,
            // Only an output longer than 255 hash lengths fails; ours are one.
            Err(_) => unreachable!("HKDF-SHA256 output of one hash length"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_checked_and_keys_depend_on_them() {
        assert!(FleetKeys::parse("short").is_err());
        let a = FleetKeys::parse(&"ab".repeat(32)).unwrap();
        let b = FleetKeys::parse(&"ab".repeat(32)).unwrap();
        let c = FleetKeys::parse(&"cd".repeat(32)).unwrap();
        let tag = |k: &FleetKeys| hmac::sign(&k.reset_key(), b"cid").as_ref().to_vec();
        assert_eq!(tag(&a), tag(&b));
        assert_ne!(tag(&a), tag(&c));
        // A long passphrase that is not hex is taken as bytes.
        assert!(FleetKeys::parse("correct horse battery staple and then some more").is_ok());
    }
}
