//! The server side: issue routable CIDs that never repeat a nonce.

use core::fmt;

use aes::Aes128;
use aes::cipher::KeyInit;

use crate::bytes::{Cid, Nonce, ServerId};
use crate::cipher::{self, BLOCK};
use crate::config::Config;
use crate::{MAX_CID_LEN, MAX_NONCE_LEN, UNROUTABLE_CONFIG_ID};

/// Issues CIDs for one server under one [`Config`].
///
/// # Nonce policy (draft-21 §9.6)
///
/// Nonces come from a counter that starts at a random value, wraps from all-ones to zero, and
/// is used up when it comes back to its start: the server MUST NOT reuse a nonce until it
/// switches to a configuration with new keys. Once used up, [`Encoder::exhausted`] turns true
/// and every further CID is unroutable (config bits `0b111`, length self-encoded, random rest),
/// as a server that has exhausted its nonces MUST do when it has no other configuration. The
/// caller should log that, export [`Encoder::unroutable`] as a metric, and obtain a new
/// configuration; [`Encoder::remaining`] says how close that moment is.
///
/// With a key the counter value is the nonce: encryption hides it. Without a key the draft
/// forbids nonces with an observable relationship to earlier ones, so the counter goes through
/// a keyed permutation (the four-pass Feistel network over the nonce length, with a key of the
/// encoder's own): still never repeating, no longer visibly counting.
///
/// # Randomness
///
/// Sans-IO: the encoder reads no OS randomness. The caller passes a 32-octet `seed` from a
/// cryptographic source (e.g. `getrandom` at start-up); the encoder runs AES-128 in counter
/// mode over it for the start nonce, the plaintext-nonce permutation key, server-use octets,
/// unencoded first-octet bits and unroutable CIDs. Two encoders with the same seed, config and
/// server id issue the same CIDs: never reuse a seed.
#[derive(Clone)]
pub struct Encoder {
    config: Config,
    server_id: ServerId,
    /// Where the counter started; it is used up when `next` comes back here.
    start: Nonce,
    next: Nonce,
    /// Hides the counter of plaintext configurations; `None` with a key.
    mask: Option<Aes128>,
    rng: Rng,
    exhausted: bool,
    issued: u64,
    unroutable: u64,
}

impl Encoder {
    /// An encoder for `server_id` under `config`, its nonce counter starting at a random value
    /// drawn from `seed`.
    pub fn new(config: Config, server_id: &[u8], seed: [u8; 32]) -> Result<Self, EncoderError> {
        let mut rng = Rng::new(seed);
        let mut start = [0; MAX_NONCE_LEN];
        rng.fill(&mut start[..config.nonce_len()]);
        let start = Nonce::copy_of(&start[..config.nonce_len()]);
        Self::build(config, server_id, start, start, rng)
    }

    /// Continues a counter saved from [`Encoder::counter`], e.g. across a restart with the
    /// same configuration: nonces from `next` up to (not including) `start` remain.
    /// `next == start` means nothing was issued yet.
    pub fn resume(
        config: Config,
        server_id: &[u8],
        start: &[u8],
        next: &[u8],
        seed: [u8; 32],
    ) -> Result<Self, EncoderError> {
        for (field, nonce) in [("start", start), ("next", next)] {
            if nonce.len() != config.nonce_len() {
                return Err(EncoderError::NonceLen {
                    field,
                    expected: config.nonce_len(),
                    actual: nonce.len(),
                });
            }
        }
        let rng = Rng::new(seed);
        Self::build(
            config,
            server_id,
            Nonce::copy_of(start),
            Nonce::copy_of(next),
            rng,
        )
    }

    fn build(
        config: Config,
        server_id: &[u8],
        start: Nonce,
        next: Nonce,
        mut rng: Rng,
    ) -> Result<Self, EncoderError> {
        if server_id.len() != config.sid_len() {
            return Err(EncoderError::ServerIdLen {
                expected: config.sid_len(),
                actual: server_id.len(),
            });
        }
        let mask = if config.has_key() {
            None
        } else {
            let mut key = [0; 16];
            rng.fill(&mut key);
            Some(Aes128::new(&key.into()))
        };
        Ok(Self {
            server_id: ServerId::copy_of(server_id),
            config,
            start,
            next,
            mask,
            rng,
            exhausted: false,
            issued: 0,
            unroutable: 0,
        })
    }

    /// Issues the next CID: routable while nonces last, unroutable afterwards.
    pub fn generate(&mut self) -> Cid {
        if self.exhausted {
            return self.generate_unroutable();
        }
        let mut nonce = self.next;
        increment(self.next.as_mut_bytes());
        if self.next == self.start {
            // draft-21 §9.6: the configuration is usable until the nonce wraps around and
            // reaches its initial value again. This was the last one.
            self.exhausted = true;
        }
        if let Some(mask) = &self.mask {
            // draft-21 §5.4: without a key, nonces MUST have no observable relationship to
            // earlier ones. A permutation keeps them unique.
            cipher::four_pass_encrypt(mask, nonce.as_mut_bytes());
        }
        let mut extra = [0; MAX_CID_LEN];
        let extra_len = self.config.cid_len() - 1 - self.config.plaintext_len();
        self.rng.fill(&mut extra[..extra_len + 1]);
        self.issued += 1;
        self.config.encode_parts(
            &self.server_id,
            &nonce,
            extra[extra_len],
            &extra[..extra_len],
        )
    }

    /// An unroutable CID of the configured length: config bits 0b111, length self-encoded
    /// (draft-21 §3.2 MUST), random rest.
    fn generate_unroutable(&mut self) -> Cid {
        let len = self.config.cid_len();
        let mut out = [0; MAX_CID_LEN];
        self.rng.fill(&mut out[1..len]);
        out[0] = (UNROUTABLE_CONFIG_ID << 5) | (len - 1) as u8;
        self.unroutable += 1;
        Cid::copy_of(&out[..len])
    }

    /// Whether the nonce space is used up: every CID from now on is unroutable.
    pub fn exhausted(&self) -> bool {
        self.exhausted
    }

    /// Routable CIDs issued so far.
    pub fn issued(&self) -> u64 {
        self.issued
    }

    /// Unroutable CIDs issued since the nonces ran out: a metric to alert on.
    pub fn unroutable(&self) -> u64 {
        self.unroutable
    }

    /// Nonces left before exhaustion, saturating at `u128::MAX`.
    pub fn remaining(&self) -> u128 {
        if self.exhausted {
            return 0;
        }
        // (start - next) mod 2^(8n); 0 means the whole space is left.
        let n = self.config.nonce_len();
        let mut diff = [0u8; MAX_NONCE_LEN];
        let mut borrow = 0u16;
        for i in (0..n).rev() {
            let a = u16::from(self.start[i]);
            let b = u16::from(self.next[i]) + borrow;
            diff[i] = a.wrapping_sub(b) as u8;
            borrow = u16::from(a < b);
        }
        let diff = &diff[..n];
        let lead = diff.iter().take_while(|b| **b == 0).count();
        if lead == n {
            // Whole space: 2^(8n).
            return if n < 16 { 1u128 << (8 * n) } else { u128::MAX };
        }
        if n - lead > 16 {
            return u128::MAX;
        }
        diff[lead..]
            .iter()
            .fold(0u128, |acc, b| (acc << 8) | u128::from(*b))
    }

    /// The counter `(start, next)`, to save and pass to [`Encoder::resume`].
    pub fn counter(&self) -> (Nonce, Nonce) {
        (self.start, self.next)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This server's id.
    pub fn server_id(&self) -> ServerId {
        self.server_id
    }
}

/// Never prints keys or random state.
impl fmt::Debug for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoder")
            .field("config", &self.config)
            .field("server_id", &self.server_id)
            .field("exhausted", &self.exhausted)
            .field("issued", &self.issued)
            .field("unroutable", &self.unroutable)
            .finish_non_exhaustive()
    }
}

/// Big-endian increment modulo 2^(8·len).
fn increment(bytes: &mut [u8]) {
    for b in bytes.iter_mut().rev() {
        let (v, carry) = b.overflowing_add(1);
        *b = v;
        if !carry {
            return;
        }
    }
}

/// AES-128 in counter mode: a deterministic random generator keyed by the caller's seed.
#[derive(Clone)]
struct Rng {
    aes: Aes128,
    counter: u128,
    buf: [u8; BLOCK],
    used: usize,
}

impl Rng {
    fn new(seed: [u8; 32]) -> Self {
        let (key, counter) = seed.split_at(16);
        let mut ctr = [0; 16];
        ctr.copy_from_slice(counter);
        let mut k = [0; 16];
        k.copy_from_slice(key);
        Self {
            aes: Aes128::new(&k.into()),
            counter: u128::from_be_bytes(ctr),
            buf: [0; BLOCK],
            used: BLOCK,
        }
    }

    fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            if self.used == BLOCK {
                self.buf = self.counter.to_be_bytes();
                self.counter = self.counter.wrapping_add(1);
                cipher::encrypt_block(&self.aes, &mut self.buf);
                self.used = 0;
            }
            *b = self.buf[self.used];
            self.used += 1;
        }
    }
}

/// Invalid input to [`Encoder::new`] or [`Encoder::resume`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncoderError {
    /// The server id does not have the configured length.
    #[error("server id is {actual} octets, the config needs {expected}")]
    ServerIdLen {
        /// Configured length.
        expected: usize,
        /// Given length.
        actual: usize,
    },
    /// A saved counter value does not have the configured nonce length.
    #[error("nonce counter {field} is {actual} octets, the config needs {expected}")]
    NonceLen {
        /// `start` or `next`.
        field: &'static str,
        /// Configured length.
        expected: usize,
        /// Given length.
        actual: usize,
    },
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeSet;

    use super::*;
    use crate::router::Router;

    const KEY: [u8; 16] = [0x11; 16];

    #[test]
    fn increments_with_carry_and_wraps() {
        let mut b = [0x00, 0xff, 0xff];
        increment(&mut b);
        assert_eq!(b, [0x01, 0x00, 0x00]);
        let mut b = [0xff, 0xff];
        increment(&mut b);
        assert_eq!(b, [0x00, 0x00]);
    }

    #[test]
    fn rng_is_deterministic_per_seed() {
        let mut a = Rng::new([1; 32]);
        let mut b = Rng::new([1; 32]);
        let mut c = Rng::new([2; 32]);
        let (mut x, mut y, mut z) = ([0; 40], [0; 40], [0; 40]);
        a.fill(&mut x);
        b.fill(&mut y[..7]);
        b.fill(&mut y[7..]);
        c.fill(&mut z);
        assert_eq!(x, y);
        assert_ne!(x, z);
    }

    /// A 4-octet nonce whose counter resumes 16 before the end of the space and started 16
    /// after zero: 32 routable CIDs across the wrap, then only unroutable ones, no repeats.
    #[test]
    fn exhaustion_after_wrapping() {
        for config in [
            Config::new(2, 3, 4).unwrap().with_key(KEY),
            Config::new(2, 3, 4).unwrap(),
        ] {
            let mut enc = Encoder::resume(
                config.clone(),
                &[1, 2, 3],
                &[0, 0, 0, 0x10],
                &[0xff, 0xff, 0xff, 0xf0],
                [9; 32],
            )
            .unwrap();
            let router = Router::new().with_config(config);
            assert_eq!(enc.remaining(), 32);
            let mut nonces = BTreeSet::new();
            let mut cids = BTreeSet::new();
            for i in 0..32 {
                assert!(!enc.exhausted(), "exhausted early at {i}");
                let cid = enc.generate();
                let d = router.decode(&cid).unwrap();
                assert_eq!(d.server_id.as_bytes(), &[1, 2, 3]);
                assert!(nonces.insert(d.nonce), "nonce repeated at {i}");
                assert!(cids.insert(cid));
            }
            assert!(enc.exhausted());
            assert_eq!(enc.remaining(), 0);
            assert_eq!(enc.issued(), 32);
            for _ in 0..100 {
                let cid = enc.generate();
                assert_eq!(cid.len(), 8);
                assert_eq!(cid[0], 0xe7, "0b111 and self-encoded length 8");
                assert_eq!(
                    router.decode(&cid).unwrap_err(),
                    crate::DecodeError::ReservedConfig
                );
                assert!(cids.insert(cid), "unroutable CID repeated");
            }
            assert_eq!(enc.unroutable(), 100);
            assert_eq!(enc.issued(), 32);
        }
    }

    #[test]
    fn keyed_nonces_count_from_a_random_start() {
        let config = Config::new(0, 2, 6).unwrap().with_key(KEY);
        let mut enc = Encoder::new(config.clone(), &[0xaa, 0xbb], [5; 32]).unwrap();
        let (start, _) = enc.counter();
        let a = config.decode(&enc.generate()).unwrap().nonce;
        let b = config.decode(&enc.generate()).unwrap().nonce;
        assert_eq!(a, start);
        let mut expect = a;
        increment(expect.as_mut_bytes());
        assert_eq!(b, expect);
        assert_eq!(enc.remaining(), (1u128 << 48) - 2);
        let other = Encoder::new(config, &[0xaa, 0xbb], [6; 32]).unwrap();
        assert_ne!(other.counter().0, start, "start depends on the seed");
    }

    #[test]
    fn plaintext_nonces_do_not_visibly_count() {
        let config = Config::new(0, 2, 6).unwrap();
        let mut enc = Encoder::new(config.clone(), &[0xaa, 0xbb], [5; 32]).unwrap();
        let a = config.decode(&enc.generate()).unwrap().nonce;
        let b = config.decode(&enc.generate()).unwrap().nonce;
        let mut next = a;
        increment(next.as_mut_bytes());
        assert_ne!(b, next);
        assert_ne!(a, enc.counter().0);
    }

    #[test]
    fn server_use_octets_and_first_octet_bits_are_random() {
        let config = Config::new(1, 2, 4)
            .unwrap()
            .with_key(KEY)
            .with_cid_len(12)
            .unwrap()
            .with_self_encoded_len(false);
        let mut enc = Encoder::new(config.clone(), &[7, 7], [3; 32]).unwrap();
        let cids: Vec<Cid> = (0..64).map(|_| enc.generate()).collect();
        let low: BTreeSet<u8> = cids.iter().map(|c| c[0] & 0x1f).collect();
        assert!(low.len() > 8, "first-octet bits look constant: {low:?}");
        let tails: BTreeSet<&[u8]> = cids.iter().map(|c| &c[7..]).collect();
        assert_eq!(tails.len(), 64);
        for c in &cids {
            assert_eq!(c.len(), 12);
            assert_eq!(c[0] >> 5, 1);
            assert_eq!(config.server_id(c).unwrap().as_bytes(), &[7, 7]);
        }
    }

    #[test]
    fn rejects_wrong_lengths() {
        let config = Config::new(0, 3, 4).unwrap();
        assert_eq!(
            Encoder::new(config.clone(), &[1, 2], [0; 32]).unwrap_err(),
            EncoderError::ServerIdLen {
                expected: 3,
                actual: 2
            }
        );
        let err = Encoder::resume(config, &[1, 2, 3], &[0; 4], &[0; 5], [0; 32]).unwrap_err();
        assert!(err.to_string().contains("next"), "{err}");
    }

    #[test]
    fn remaining_saturates_for_long_nonces() {
        let config = Config::new(0, 1, 18).unwrap().with_key(KEY);
        let enc = Encoder::new(config, &[1], [0; 32]).unwrap();
        assert_eq!(enc.remaining(), u128::MAX);
        let config = Config::new(0, 3, 4).unwrap().with_key(KEY);
        let enc = Encoder::new(config, &[1, 2, 3], [0; 32]).unwrap();
        assert_eq!(enc.remaining(), 1 << 32);
    }

    #[test]
    fn debug_shows_no_secrets() {
        let enc = Encoder::new(Config::new(0, 3, 4).unwrap(), &[1, 2, 3], [0; 32]).unwrap();
        let s = format!("{enc:?}");
        assert!(s.contains("issued: 0"), "{s}");
        assert!(!s.contains("rng") && !s.contains("mask"), "{s}");
    }
}
