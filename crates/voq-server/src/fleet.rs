//! Key material a fleet of servers shares, derived from one secret (`--fleet-secret-file`,
//! `VOQ_FLEET_SECRET`), so that what one server issues another can check:
//!
//! - the **address-validation token key**: a client sent a Retry by one server (or a NEW_TOKEN)
//!   is validated by any other, e.g. after an ECMP rehash moved its next Initial;
//! - the **stateless-reset key**: any server can tell a client that a connection of a server
//!   that died is gone (a stateless reset), instead of the client waiting for its idle timeout.
//!
//! - the **session-ticket keys** ([`FleetTicketer`]): a client resumes, with 0-RTT, on any
//!   server of the fleet, not only on the one that issued its ticket. One key per rotation
//!   period, derived from the secret and the period's number, so servers agree on the current
//!   key without talking to each other; tickets of the previous period still decrypt.
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

    /// The secret of resume tokens ([`crate::resume::ResumeKeys::from_secret`]).
    pub fn resume_secret(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        // Only an output longer than 255 hash lengths fails; this is one.
        let _ = self
            .expand(&[b"voq resume token"], hkdf::HKDF_SHA256)
            .fill(&mut out);
        out
    }

    /// The key of stateless-reset tokens.
    pub fn reset_key(&self) -> Arc<hmac::Key> {
        let okm = self.expand(&[b"voq stateless reset"], hmac::HMAC_SHA256);
        Arc::new(hmac::Key::from(okm))
    }

    /// The fleet's session-ticket encrypter (see [`FleetTicketer`]).
    pub fn ticketer(&self) -> Arc<FleetTicketer> {
        Arc::new(FleetTicketer {
            keys: self.clone(),
            period: TICKET_KEY_PERIOD,
            now: std::time::SystemTime::now,
        })
    }

    fn expand<'a, L: hkdf::KeyType>(&'a self, info: &'a [&'a [u8]], len: L) -> hkdf::Okm<'a, L> {
        match self.prk.expand(info, len) {
            Ok(okm) => okm,
            // Only an output longer than 255 hash lengths fails; ours are one.
            Err(_) => unreachable!("HKDF-SHA256 output of one hash length"),
        }
    }
}

/// How long one session-ticket key is used to encrypt. Tickets are valid for as long (their
/// lifetime hint), and decrypt until the end of the following period: a ticket lives at most
/// twice this. Short periods limit what a stolen key exposes (resumption secrets, and so 0-RTT
/// data, of the tickets it encrypted).
pub const TICKET_KEY_PERIOD: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// Session tickets every server of a fleet can decrypt: AES-256-GCM under a key derived from
/// the fleet secret and the rotation period's number (wall clock, so the servers' clocks must
/// agree to within a period). A ticket is `period (4 octets, big endian) || nonce (12) ||
/// ciphertext and tag`; the period number is the AEAD's associated data.
///
/// With it, a client's 0-RTT works on whichever server the anycast route (or a balancer's
/// hash) sends its next connection to. The trade-off is a fleet-wide blast radius: whoever
/// steals the secret can decrypt the tickets of every server (and so their resumption secrets
/// and 0-RTT data) for the periods it covers, where per-server keys would expose one server's.
/// Tickets carry no server id, so a resumed client is not linkable to the server it used
/// before (unlike steering resumptions back to their issuer, which would have to put the
/// issuer in the clear; see QUIC-LB draft-21 §10).
pub struct FleetTicketer {
    keys: FleetKeys,
    period: std::time::Duration,
    now: fn() -> std::time::SystemTime,
}

impl std::fmt::Debug for FleetTicketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetTicketer")
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

const TICKET_HEADER: usize = 4 + ring::aead::NONCE_LEN;

impl FleetTicketer {
    fn current_period(&self) -> u32 {
        let secs = (self.now)()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        (secs / self.period.as_secs().max(1)) as u32
    }

    fn key(&self, period: u32) -> ring::aead::LessSafeKey {
        let period = period.to_be_bytes();
        let info: [&[u8]; 2] = [b"voq session ticket", &period];
        let okm = self.keys.expand(&info, &ring::aead::AES_256_GCM);
        ring::aead::LessSafeKey::new(ring::aead::UnboundKey::from(okm))
    }
}

impl rustls::server::ProducesTickets for FleetTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.period.as_secs() as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        use ring::rand::SecureRandom;
        let period = self.current_period();
        let mut nonce = [0u8; ring::aead::NONCE_LEN];
        ring::rand::SystemRandom::new().fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(TICKET_HEADER + plain.len() + 16);
        out.extend_from_slice(&period.to_be_bytes());
        out.extend_from_slice(&nonce);
        let mut sealed = plain.to_vec();
        self.key(period)
            .seal_in_place_append_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(period.to_be_bytes()),
                &mut sealed,
            )
            .ok()?;
        out.extend_from_slice(&sealed);
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let period = u32::from_be_bytes(cipher.get(..4)?.try_into().ok()?);
        let current = self.current_period();
        // This period's and the previous one's: nothing older, nothing from the future.
        if period != current && Some(period) != current.checked_sub(1) {
            return None;
        }
        let nonce: [u8; ring::aead::NONCE_LEN] = cipher.get(4..TICKET_HEADER)?.try_into().ok()?;
        let mut sealed = cipher.get(TICKET_HEADER..)?.to_vec();
        let plain = self
            .key(period)
            .open_in_place(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(period.to_be_bytes()),
                &mut sealed,
            )
            .ok()?;
        Some(plain.to_vec())
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

    #[test]
    fn tickets_decrypt_on_every_server_of_the_fleet_and_only_there() {
        use rustls::server::ProducesTickets;
        let a = FleetKeys::parse(&"ab".repeat(32)).unwrap().ticketer();
        let b = FleetKeys::parse(&"ab".repeat(32)).unwrap().ticketer();
        let other = FleetKeys::parse(&"cd".repeat(32)).unwrap().ticketer();
        let ticket = a.encrypt(b"session state").unwrap();
        assert_eq!(b.decrypt(&ticket).unwrap(), b"session state");
        assert!(other.decrypt(&ticket).is_none());
        // Tampering, truncation and garbage are refused, never a panic.
        let mut bent = ticket.clone();
        *bent.last_mut().unwrap() ^= 1;
        assert!(b.decrypt(&bent).is_none());
        for cut in 0..ticket.len() {
            assert!(b.decrypt(&ticket[..cut]).is_none());
        }
        assert_ne!(a.encrypt(b"session state").unwrap(), ticket, "fresh nonces");
    }

    #[test]
    fn ticket_keys_rotate_and_the_previous_period_still_decrypts() {
        use rustls::server::ProducesTickets;
        use std::time::{Duration, SystemTime, UNIX_EPOCH};
        let keys = FleetKeys::parse(&"ab".repeat(32)).unwrap();
        let at = |now: fn() -> SystemTime| FleetTicketer {
            keys: keys.clone(),
            period: Duration::from_secs(3600),
            now,
        };
        let t0 = at(|| UNIX_EPOCH + Duration::from_secs(10 * 3600 + 5));
        let t1 = at(|| UNIX_EPOCH + Duration::from_secs(11 * 3600 + 5));
        let t2 = at(|| UNIX_EPOCH + Duration::from_secs(12 * 3600 + 5));
        let ticket = t0.encrypt(b"x").unwrap();
        assert_eq!(t1.decrypt(&ticket).unwrap(), b"x");
        assert!(t2.decrypt(&ticket).is_none(), "two periods on: expired");
        assert!(
            t0.decrypt(&t1.encrypt(b"x").unwrap()).is_none(),
            "from the future"
        );
        assert_eq!(t0.lifetime(), 3600);
    }
}
