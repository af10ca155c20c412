//! One QUIC-LB configuration and the CID codec it defines.

use core::fmt;

use aes::Aes128;
use aes::cipher::KeyInit;

use crate::bytes::{Cid, Nonce, ServerId};
use crate::cipher::{self, BLOCK};
use crate::router::{DecodeError, Decoded};
use crate::{MAX_CID_LEN, UNROUTABLE_CONFIG_ID};

/// Shortest plaintext block (server id + nonce) the four-pass algorithm accepts
/// (draft-21 §5.4.2.2), and what the minimum lengths add up to anyway.
const MIN_PLAINTEXT_LEN: usize = 5;

/// Longest plaintext block: a 20-octet CID minus the first octet (draft-21 §5.3).
const MAX_PLAINTEXT_LEN: usize = 19;

/// How a configuration turns server id and nonce into CID octets. It follows from the
/// configuration (draft-21 §5.4), so it is reported, never chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// No key: server id and nonce in the clear. Anyone can read the server mapping.
    Plaintext,
    /// A key and `sid_len + nonce_len == 16`: one AES-128-ECB block (draft-21 §5.4.1).
    SinglePass,
    /// A key and any other length: a four-round Feistel network over AES-128-ECB
    /// (draft-21 §5.4.2). The load balancer needs 3 AES operations when
    /// `sid_len <= nonce_len`, 4 otherwise.
    FourPass,
}

impl Algorithm {
    /// A short name for logs and metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::SinglePass => "single-pass",
            Self::FourPass => "four-pass",
        }
    }
}

/// A QUIC-LB configuration: what servers and load balancers share for one config id.
///
/// The CID it defines is `first octet || plaintext block || server-use octets`, where the
/// plaintext block is `server id || nonce`, encrypted when there is a key. The first octet
/// carries the config id in its top three bits and, with length self-encoding on, the CID
/// length minus one in its low five bits (draft-21 §3).
///
/// The AES key schedule is computed once, in [`Config::with_key`], because the load balancer
/// decrypts with it for every datagram.
///
/// ```
/// use voq_quic_lb::{Algorithm, Config};
///
/// let config = Config::new(0, 3, 4)?.with_key([0x8f; 16]);
/// assert_eq!(config.algorithm(), Algorithm::FourPass);
/// assert_eq!(config.cid_len(), 8);
/// assert!(Config::new(7, 3, 4).is_err()); // 0b111 is reserved
/// # Ok::<(), voq_quic_lb::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Config {
    id: u8,
    sid_len: u8,
    nonce_len: u8,
    cid_len: u8,
    self_encode_len: bool,
    /// `None` means plaintext.
    aes: Option<Aes128>,
}

impl Config {
    /// A plaintext configuration with length self-encoding on and no server-use octets.
    ///
    /// Add a key with [`Config::with_key`], server-use octets with [`Config::with_cid_len`].
    pub fn new(id: u8, sid_len: usize, nonce_len: usize) -> Result<Self, ConfigError> {
        // draft-21 §3.1: a configuration MUST NOT use the reserved identifier 0b111.
        if id >= UNROUTABLE_CONFIG_ID {
            return Err(ConfigError::ConfigId(id));
        }
        // draft-21 §5.3: the server ID length MUST be at least 1 octet.
        if sid_len < 1 {
            return Err(ConfigError::ServerIdLen(sid_len));
        }
        // draft-21 §5.3: the nonce length MUST be at least 4 octets.
        if nonce_len < 4 {
            return Err(ConfigError::NonceLen(nonce_len));
        }
        // draft-21 §5.3: server ID and nonce lengths MUST sum to 19 octets or less.
        let sum = sid_len.saturating_add(nonce_len);
        if sum > MAX_PLAINTEXT_LEN {
            return Err(ConfigError::PlaintextLen { sid_len, nonce_len });
        }
        debug_assert!(sum >= MIN_PLAINTEXT_LEN);
        Ok(Self {
            id,
            sid_len: sid_len as u8,
            nonce_len: nonce_len as u8,
            cid_len: (1 + sum) as u8,
            self_encode_len: true,
            aes: None,
        })
    }

    /// Encrypts CIDs with this AES-128 key. Expands the key schedule once, here.
    pub fn with_key(mut self, key: [u8; 16]) -> Self {
        self.aes = Some(Aes128::new(&key.into()));
        self
    }

    /// Sets the total CID length, first octet included, to append `len - 1 - sid_len -
    /// nonce_len` server-use octets after the plaintext block (draft-21 §5.4: all servers of a
    /// configuration MUST add the same length). The encoder fills them with random octets.
    pub fn with_cid_len(mut self, len: usize) -> Result<Self, ConfigError> {
        let min = 1 + self.plaintext_len();
        if !(min..=MAX_CID_LEN).contains(&len) {
            return Err(ConfigError::CidLen { len, min });
        }
        self.cid_len = len as u8;
        Ok(self)
    }

    /// Turns length self-encoding on (the default) or off. Off, the low five bits of the first
    /// octet are random, and a load balancer takes a short header's DCID length from
    /// [`Config::cid_len`].
    pub fn with_self_encoded_len(mut self, on: bool) -> Self {
        self.self_encode_len = on;
        self
    }

    /// The config id, 0..=6: the top three bits of the first octet.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// Server id length in octets.
    pub fn sid_len(&self) -> usize {
        usize::from(self.sid_len)
    }

    /// Nonce length in octets.
    pub fn nonce_len(&self) -> usize {
        usize::from(self.nonce_len)
    }

    /// `sid_len + nonce_len`: the octets the algorithm works on.
    pub fn plaintext_len(&self) -> usize {
        self.sid_len() + self.nonce_len()
    }

    /// Total CID length, first octet and server-use octets included.
    pub fn cid_len(&self) -> usize {
        usize::from(self.cid_len)
    }

    /// Whether the first octet carries the CID length.
    pub fn self_encodes_len(&self) -> bool {
        self.self_encode_len
    }

    /// Whether CIDs are encrypted.
    pub fn has_key(&self) -> bool {
        self.aes.is_some()
    }

    /// The algorithm this configuration implies.
    pub fn algorithm(&self) -> Algorithm {
        match self.aes {
            None => Algorithm::Plaintext,
            Some(_) if self.plaintext_len() == BLOCK => Algorithm::SinglePass,
            Some(_) => Algorithm::FourPass,
        }
    }

    /// Encodes one CID deterministically: the first octet self-encodes the length (or has zero
    /// low bits when that is off) and server-use octets are zero.
    ///
    /// For tools and tests. A server issues CIDs through an [`Encoder`](crate::Encoder), which
    /// never repeats a nonce and randomizes the octets this leaves zero.
    pub fn encode(&self, server_id: &[u8], nonce: &[u8]) -> Result<Cid, EncodeError> {
        if server_id.len() != self.sid_len() {
            return Err(EncodeError::ServerIdLen {
                expected: self.sid_len(),
                actual: server_id.len(),
            });
        }
        if nonce.len() != self.nonce_len() {
            return Err(EncodeError::NonceLen {
                expected: self.nonce_len(),
                actual: nonce.len(),
            });
        }
        Ok(self.encode_parts(server_id, nonce, 0, &[]))
    }

    /// The encoder's path: lengths are already checked. `random_bits` fills the low five bits
    /// of the first octet when the length is not self-encoded; `server_use` fills the octets
    /// after the plaintext block (zero where it is short).
    pub(crate) fn encode_parts(
        &self,
        server_id: &[u8],
        nonce: &[u8],
        random_bits: u8,
        server_use: &[u8],
    ) -> Cid {
        let mut out = [0; MAX_CID_LEN];
        let cid_len = self.cid_len();
        let n = self.plaintext_len();
        let low = if self.self_encode_len {
            // draft-21 §3.3: the low five bits are the length of the CID after the first octet.
            (cid_len - 1) as u8
        } else {
            random_bits
        };
        out[0] = (self.id << 5) | (low & 0x1f);
        out[1..1 + self.sid_len()].copy_from_slice(server_id);
        out[1 + self.sid_len()..1 + n].copy_from_slice(nonce);
        let block = &mut out[1..1 + n];
        match &self.aes {
            None => {}
            Some(aes) if n == BLOCK => {
                let mut b = [0; BLOCK];
                b.copy_from_slice(block);
                cipher::single_pass_encrypt(aes, &mut b);
                block.copy_from_slice(&b);
            }
            Some(aes) => cipher::four_pass_encrypt(aes, block),
        }
        let extra = &mut out[1 + n..cid_len];
        let k = extra.len().min(server_use.len());
        extra[..k].copy_from_slice(&server_use[..k]);
        Cid::copy_of(&out[..cid_len])
    }

    /// Decodes a CID of this configuration into server id and nonce.
    pub fn decode(&self, cid: &[u8]) -> Result<Decoded, DecodeError> {
        self.check(cid)?;
        let n = self.plaintext_len();
        let mut plain = [0; MAX_CID_LEN];
        plain[..n].copy_from_slice(&cid[1..1 + n]);
        match &self.aes {
            None => {}
            Some(aes) if n == BLOCK => {
                let mut b = [0; BLOCK];
                b.copy_from_slice(&plain[..BLOCK]);
                cipher::single_pass_decrypt(aes, &mut b);
                plain[..BLOCK].copy_from_slice(&b);
            }
            Some(aes) => cipher::four_pass_decrypt(aes, &mut plain[..n]),
        }
        Ok(Decoded {
            config_id: self.id,
            server_id: ServerId::copy_of(&plain[..self.sid_len()]),
            nonce: Nonce::copy_of(&plain[self.sid_len()..n]),
        })
    }

    /// Extracts only the server id: what a load balancer needs, with the fewest AES
    /// operations (draft-21 §5.5).
    pub fn server_id(&self, cid: &[u8]) -> Result<ServerId, DecodeError> {
        self.check(cid)?;
        Ok(self.server_id_unchecked(cid))
    }

    /// `cid` passed [`Config::check`].
    pub(crate) fn server_id_unchecked(&self, cid: &[u8]) -> ServerId {
        let sid_len = self.sid_len();
        let n = self.plaintext_len();
        match &self.aes {
            // draft-21 §5.5: with no key, the first octets after the first are the server ID.
            None => ServerId::copy_of(&cid[1..1 + sid_len]),
            Some(aes) if n == BLOCK => {
                let mut b = [0; BLOCK];
                b.copy_from_slice(&cid[1..1 + BLOCK]);
                cipher::single_pass_decrypt(aes, &mut b);
                ServerId::copy_of(&b[..sid_len])
            }
            Some(aes) => {
                let mut sid = [0; crate::MAX_SERVER_ID_LEN];
                cipher::four_pass_server_id(aes, &cid[1..1 + n], sid_len, &mut sid);
                ServerId::copy_of(&sid[..sid_len])
            }
        }
    }

    /// Whether `cid` can be decoded with this configuration (draft-21 §4.1).
    pub(crate) fn check(&self, cid: &[u8]) -> Result<(), DecodeError> {
        let Some(&first) = cid.first() else {
            return Err(DecodeError::Empty);
        };
        let config_id = first >> 5;
        if config_id == UNROUTABLE_CONFIG_ID {
            // draft-21 §4.1: a DCID with config ID codepoint 0b111 is always unroutable.
            return Err(DecodeError::ReservedConfig);
        }
        if config_id != self.id {
            return Err(DecodeError::UnknownConfig { config_id });
        }
        self.check_len(cid)
    }

    /// The length checks of [`Config::check`], for a CID whose config id matched.
    pub(crate) fn check_len(&self, cid: &[u8]) -> Result<(), DecodeError> {
        let len = cid.len();
        if len > MAX_CID_LEN {
            return Err(DecodeError::TooLong { len });
        }
        let min = 1 + self.plaintext_len();
        if len < min {
            // draft-21 §4.1: the DCID is not long enough for the decoder to process.
            return Err(DecodeError::TooShort {
                len,
                min,
                config_id: self.id,
            });
        }
        if self.self_encode_len {
            let encoded = usize::from(cid[0] & 0x1f) + 1;
            if encoded != len {
                // draft-21 §4.1: MAY verify the self-encoded length against the header's.
                return Err(DecodeError::LengthMismatch {
                    encoded,
                    actual: len,
                });
            }
        }
        Ok(())
    }
}

/// Never prints the key.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("id", &self.id)
            .field("sid_len", &self.sid_len)
            .field("nonce_len", &self.nonce_len)
            .field("cid_len", &self.cid_len)
            .field("self_encode_len", &self.self_encode_len)
            .field("algorithm", &self.algorithm())
            .finish()
    }
}

/// An invalid [`Config`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config id is not 0..=6.
    #[error("config id {0} is out of range 0..=6 (0b111 is reserved for unroutable CIDs)")]
    ConfigId(u8),
    /// The server id length is below 1.
    #[error("server id length {0} is below the minimum of 1 octet")]
    ServerIdLen(usize),
    /// The nonce length is below 4.
    #[error("nonce length {0} is below the minimum of 4 octets")]
    NonceLen(usize),
    /// Server id and nonce lengths sum to more than 19.
    #[error(
        "server id length {sid_len} + nonce length {nonce_len} exceeds the maximum of 19 octets"
    )]
    PlaintextLen {
        /// Server id length.
        sid_len: usize,
        /// Nonce length.
        nonce_len: usize,
    },
    /// The total CID length cannot hold first octet, server id and nonce, or exceeds 20.
    #[error("cid length {len} is outside {min}..=20 (1 + server id length + nonce length)")]
    CidLen {
        /// Requested CID length.
        len: usize,
        /// `1 + sid_len + nonce_len`.
        min: usize,
    },
}

/// Invalid input to [`Config::encode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The server id does not have the configured length.
    #[error("server id is {actual} octets, the config needs {expected}")]
    ServerIdLen {
        /// Configured length.
        expected: usize,
        /// Given length.
        actual: usize,
    },
    /// The nonce does not have the configured length.
    #[error("nonce is {actual} octets, the config needs {expected}")]
    NonceLen {
        /// Configured length.
        expected: usize,
        /// Given length.
        actual: usize,
    },
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn validates_every_field() {
        assert_eq!(Config::new(7, 3, 4).unwrap_err(), ConfigError::ConfigId(7));
        assert_eq!(
            Config::new(0, 0, 4).unwrap_err(),
            ConfigError::ServerIdLen(0)
        );
        assert_eq!(Config::new(0, 3, 3).unwrap_err(), ConfigError::NonceLen(3));
        assert_eq!(
            Config::new(0, 10, 10).unwrap_err(),
            ConfigError::PlaintextLen {
                sid_len: 10,
                nonce_len: 10
            }
        );
        assert!(Config::new(6, 15, 4).is_ok());
        assert!(Config::new(6, 1, 18).is_ok());
        let c = Config::new(0, 3, 4).unwrap();
        assert_eq!(
            c.clone().with_cid_len(7).unwrap_err(),
            ConfigError::CidLen { len: 7, min: 8 }
        );
        assert_eq!(
            c.clone().with_cid_len(21).unwrap_err(),
            ConfigError::CidLen { len: 21, min: 8 }
        );
        assert_eq!(c.with_cid_len(20).unwrap().cid_len(), 20);
    }

    #[test]
    fn messages_name_the_field() {
        let msg = Config::new(0, 3, 2).unwrap_err().to_string();
        assert!(msg.contains("nonce length"), "{msg}");
        let msg = Config::new(9, 3, 4).unwrap_err().to_string();
        assert!(msg.contains("config id"), "{msg}");
    }

    #[test]
    fn algorithm_follows_from_lengths_and_key() {
        let key = [1; 16];
        assert_eq!(
            Config::new(0, 8, 8).unwrap().algorithm(),
            Algorithm::Plaintext
        );
        assert_eq!(
            Config::new(0, 8, 8).unwrap().with_key(key).algorithm(),
            Algorithm::SinglePass
        );
        assert_eq!(
            Config::new(0, 8, 9).unwrap().with_key(key).algorithm(),
            Algorithm::FourPass
        );
    }

    #[test]
    fn debug_hides_the_key() {
        let c = Config::new(2, 8, 8).unwrap().with_key([0xab; 16]);
        let s = format!("{c:?}");
        assert!(!s.contains("ab, ") && !s.contains("171"), "{s}");
        assert!(s.contains("SinglePass"), "{s}");
    }

    #[test]
    fn server_use_octets_and_length_encoding() {
        let c = Config::new(3, 2, 4).unwrap().with_cid_len(10).unwrap();
        let cid = c.encode_parts(&[0xaa, 0xbb], &[1, 2, 3, 4], 0x1f, &[9, 9, 9]);
        assert_eq!(cid.as_bytes(), &[0x69, 0xaa, 0xbb, 1, 2, 3, 4, 9, 9, 9]);
        let d = c.decode(&cid).unwrap();
        assert_eq!(d.server_id.as_bytes(), &[0xaa, 0xbb]);

        let c = c.with_self_encoded_len(false);
        let cid = c.encode_parts(&[0xaa, 0xbb], &[1, 2, 3, 4], 0x15, &[]);
        assert_eq!(cid[0], 0x75);
        // Without self-encoding, the low bits are not checked.
        assert!(c.decode(&cid).is_ok());
    }

    #[test]
    fn decode_rejects_bad_cids() {
        let c = Config::new(1, 3, 4).unwrap();
        assert_eq!(c.decode(&[]).unwrap_err(), DecodeError::Empty);
        assert_eq!(
            c.decode(&[0xe7, 0, 0, 0, 0, 0, 0, 0]).unwrap_err(),
            DecodeError::ReservedConfig
        );
        assert_eq!(
            c.decode(&[0x07, 0, 0, 0, 0, 0, 0, 0]).unwrap_err(),
            DecodeError::UnknownConfig { config_id: 0 }
        );
        assert_eq!(
            c.decode(&[0x27, 0, 0]).unwrap_err(),
            DecodeError::TooShort {
                len: 3,
                min: 8,
                config_id: 1
            }
        );
        assert_eq!(
            c.decode(&[0x28, 0, 0, 0, 0, 0, 0, 0]).unwrap_err(),
            DecodeError::LengthMismatch {
                encoded: 9,
                actual: 8
            }
        );
        assert_eq!(
            c.decode(&[0x34; 21]).unwrap_err(),
            DecodeError::TooLong { len: 21 }
        );
    }
}
