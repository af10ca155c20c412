//! The load balancer side: decode CIDs and route datagrams by the server id they carry.

use core::fmt;

use crate::UNROUTABLE_CONFIG_ID;
use crate::bytes::{Nonce, ServerId};
use crate::config::Config;
use crate::header::{self, FIXED_BIT, LONG_HEADER};

/// Number of usable config ids (0..=6).
const CONFIG_IDS: usize = UNROUTABLE_CONFIG_ID as usize;

/// Routes QUIC datagrams by the server id in their Destination Connection ID.
///
/// Holds up to seven [`Config`]s, one per config id, so CIDs of an old and a new configuration
/// route side by side during a rotation (draft-21 §3.1). [`Router::route`] neither allocates nor
/// panics, whatever the input: it runs once per datagram.
///
/// What to do with [`Route::Unroutable`] is the caller's choice: per draft-21 §4.2 and §4.3 the
/// packet goes to a fallback algorithm, e.g. a table or consistent hash of [`Router::dcid`] or
/// of the 4-tuple. Client-chosen DCIDs only appear in long headers (an assumption of §8), so an
/// unroutable short header carries a stale or foreign CID and a balancer may drop it.
#[derive(Debug, Clone, Default)]
pub struct Router {
    configs: [Option<Config>; CONFIG_IDS],
    fixed_bit: bool,
}

impl Router {
    /// A router with no configurations: every datagram is unroutable.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `config`, replacing any with the same config id.
    pub fn with_config(mut self, config: Config) -> Self {
        self.insert(config);
        self
    }

    /// Treats datagrams whose QUIC bit (0x40) is clear as [`Unroutable::NotQuic`].
    ///
    /// Off by default: the bit is not a QUIC invariant (RFC 8999), and RFC 9287 lets QUIC v1
    /// peers clear it (quinn greases it by default), so checking it drops legitimate packets.
    /// Version Negotiation packets (version 0) are never judged by it.
    pub fn with_fixed_bit_check(mut self, on: bool) -> Self {
        self.fixed_bit = on;
        self
    }

    /// Adds `config`, returning the one it replaces.
    pub fn insert(&mut self, config: Config) -> Option<Config> {
        let slot = &mut self.configs[usize::from(config.id())];
        slot.replace(config)
    }

    /// Removes the configuration of config id `id`.
    pub fn remove(&mut self, id: u8) -> Option<Config> {
        self.configs.get_mut(usize::from(id))?.take()
    }

    /// The configuration of config id `id`.
    pub fn config(&self, id: u8) -> Option<&Config> {
        self.configs.get(usize::from(id))?.as_ref()
    }

    /// All configurations, by config id.
    pub fn configs(&self) -> impl Iterator<Item = &Config> {
        self.configs.iter().flatten()
    }

    /// Decodes a CID (first octet included) into config id, server id and nonce.
    pub fn decode(&self, cid: &[u8]) -> Result<Decoded, DecodeError> {
        self.config_for(cid)?.decode(cid)
    }

    /// Routes one datagram: parses the header per RFC 8999, takes the DCID and extracts the
    /// server id. No allocation.
    ///
    /// Long header: the DCID length is in the header; with length self-encoding the first CID
    /// octet must agree with it. Short header: the DCID starts at offset 1 and its length is
    /// the self-encoded one, or the configuration's [`Config::cid_len`].
    ///
    /// Only the server id is recovered, with the fewest AES operations (draft-21 §5.5). Whether
    /// it names an active server is for the caller's server table to say.
    pub fn route(&self, datagram: &[u8]) -> Route {
        let Some(&first) = datagram.first() else {
            return Route::Unroutable(Unroutable::NotQuic);
        };
        if first & LONG_HEADER != 0 {
            let Some((version, dcid)) = header::long(datagram) else {
                return Route::Unroutable(Unroutable::NotQuic);
            };
            if self.fixed_bit && version != 0 && first & FIXED_BIT == 0 {
                return Route::Unroutable(Unroutable::NotQuic);
            }
            return match self.config_for(dcid) {
                Ok(config) => match config.check_len(dcid) {
                    Ok(()) => Route::Server {
                        config_id: config.id(),
                        server_id: config.server_id_unchecked(dcid),
                    },
                    Err(e) => Route::Unroutable(e.into()),
                },
                Err(e) => Route::Unroutable(e.into()),
            };
        }
        if self.fixed_bit && first & FIXED_BIT == 0 {
            return Route::Unroutable(Unroutable::NotQuic);
        }
        let rest = &datagram[1..];
        let config = match self.config_for(rest) {
            Ok(config) => config,
            Err(e) => return Route::Unroutable(e.into()),
        };
        let (len, self_encoded) = short_dcid_len(Some(config), rest[0]);
        let Some(dcid) = rest.get(..len) else {
            // A self-encoded length past the end of the datagram contradicts it; a configured
            // length past it means the datagram is too short.
            return Route::Unroutable(if self_encoded {
                Unroutable::DcidLengthMismatch
            } else {
                Unroutable::TooShort
            });
        };
        match config.check_len(dcid) {
            Ok(()) => Route::Server {
                config_id: config.id(),
                server_id: config.server_id_unchecked(dcid),
            },
            Err(e) => Route::Unroutable(e.into()),
        }
    }

    /// The Destination Connection ID of a datagram, for a fallback algorithm to hash when the
    /// datagram is unroutable. `None` when no DCID can be delimited.
    ///
    /// Short headers: configurations without length self-encoding give their
    /// [`Config::cid_len`]; otherwise (self-encoding configurations, the unroutable codepoint
    /// 0b111, which MUST self-encode per draft-21 §3.2, and unknown config ids) the first CID
    /// octet's self-encoded length is used. Either way, packets with the same DCID give the
    /// same answer, which is what a hash needs.
    pub fn dcid<'a>(&self, datagram: &'a [u8]) -> Option<&'a [u8]> {
        let &first = datagram.first()?;
        if first & LONG_HEADER != 0 {
            return header::long(datagram).map(|(_, dcid)| dcid);
        }
        let rest = &datagram[1..];
        let &cid0 = rest.first()?;
        let (len, _) = short_dcid_len(self.config(cid0 >> 5), cid0);
        rest.get(..len)
    }

    /// The configuration for a CID's config id, or why there is none.
    fn config_for(&self, cid: &[u8]) -> Result<&Config, DecodeError> {
        let Some(&first) = cid.first() else {
            return Err(DecodeError::Empty);
        };
        let config_id = first >> 5;
        if config_id == UNROUTABLE_CONFIG_ID {
            // draft-21 §4.1: a DCID with config ID codepoint 0b111 is always unroutable.
            return Err(DecodeError::ReservedConfig);
        }
        // draft-21 §4.1: config rotation bits that match no active configuration.
        self.config(config_id)
            .ok_or(DecodeError::UnknownConfig { config_id })
    }
}

/// A short header's DCID length and whether it came from the first CID octet.
fn short_dcid_len(config: Option<&Config>, cid0: u8) -> (usize, bool) {
    match config {
        Some(c) if !c.self_encodes_len() => (c.cid_len(), false),
        _ => (usize::from(cid0 & 0x1f) + 1, true),
    }
}

/// A decoded CID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decoded {
    /// The config id, 0..=6.
    pub config_id: u8,
    /// The server id.
    pub server_id: ServerId,
    /// The nonce.
    pub nonce: Nonce,
}

/// The routing decision for one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// The DCID decodes to this server id.
    Server {
        /// The config id the CID uses.
        config_id: u8,
        /// The server id, still to be looked up in the balancer's server table.
        server_id: ServerId,
    },
    /// The DCID cannot be decoded (draft-21 §4.1); use a fallback algorithm.
    Unroutable(Unroutable),
}

/// Why a datagram is unroutable. Cheap to copy and to count per reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Unroutable {
    /// Not a QUIC packet: empty, a long header shorter than its own length fields, or (with
    /// [`Router::with_fixed_bit_check`]) the QUIC bit clear.
    NotQuic,
    /// The DCID is shorter than its configuration needs, or missing.
    TooShort,
    /// The DCID is longer than the 20 octets a QUIC-LB CID can have.
    TooLong,
    /// The config id is 0b111, reserved for unroutable CIDs (draft-21 §3.2).
    ReservedConfig,
    /// No configuration for this config id.
    UnknownConfig {
        /// The config id in the first CID octet.
        config_id: u8,
    },
    /// The self-encoded length disagrees with the long header's DCID length, or runs past the
    /// end of a short-header datagram.
    DcidLengthMismatch,
}

impl Unroutable {
    /// Every reason's name, at its [`index`](Self::index): the label values of a per-reason
    /// metric, so a counter array can be sized and labelled from the type.
    pub const REASONS: [&'static str; 6] = [
        "not_quic",
        "too_short",
        "too_long",
        "reserved_config",
        "unknown_config",
        "dcid_length_mismatch",
    ];

    /// This reason's position in [`REASONS`](Self::REASONS).
    pub fn index(&self) -> usize {
        match self {
            Self::NotQuic => 0,
            Self::TooShort => 1,
            Self::TooLong => 2,
            Self::ReservedConfig => 3,
            Self::UnknownConfig { .. } => 4,
            Self::DcidLengthMismatch => 5,
        }
    }

    /// A short stable name, for logs and metrics labels.
    pub fn as_str(&self) -> &'static str {
        Self::REASONS[self.index()]
    }
}

impl fmt::Display for Unroutable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotQuic => f.write_str("not a QUIC packet"),
            Self::TooShort => f.write_str("DCID too short for its configuration"),
            Self::TooLong => f.write_str("DCID longer than 20 octets"),
            Self::ReservedConfig => f.write_str("DCID config id 0b111 is reserved (unroutable)"),
            Self::UnknownConfig { config_id } => {
                write!(f, "DCID config id {config_id} has no configuration")
            }
            Self::DcidLengthMismatch => {
                f.write_str("DCID self-encoded length disagrees with the packet")
            }
        }
    }
}

impl From<DecodeError> for Unroutable {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Empty | DecodeError::TooShort { .. } => Self::TooShort,
            DecodeError::TooLong { .. } => Self::TooLong,
            DecodeError::ReservedConfig => Self::ReservedConfig,
            DecodeError::UnknownConfig { config_id } => Self::UnknownConfig { config_id },
            DecodeError::LengthMismatch { .. } => Self::DcidLengthMismatch,
        }
    }
}

/// A CID that cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Zero octets.
    #[error("cid is empty")]
    Empty,
    /// Config id 0b111.
    #[error("cid config id is 0b111, reserved for unroutable CIDs")]
    ReservedConfig,
    /// No configuration for the config id.
    #[error("cid config id {config_id} has no configuration")]
    UnknownConfig {
        /// The config id in the first octet.
        config_id: u8,
    },
    /// Shorter than first octet, server id and nonce.
    #[error("cid length {len} is below the {min} octets config {config_id} needs")]
    TooShort {
        /// CID length.
        len: usize,
        /// `1 + sid_len + nonce_len`.
        min: usize,
        /// The config id.
        config_id: u8,
    },
    /// Longer than 20 octets.
    #[error("cid length {len} exceeds the maximum of 20 octets")]
    TooLong {
        /// CID length.
        len: usize,
    },
    /// The self-encoded length disagrees with the CID's length.
    #[error("cid self-encoded length {encoded} disagrees with its actual length {actual}")]
    LengthMismatch {
        /// `1 +` the low five bits of the first octet.
        encoded: usize,
        /// The CID's length.
        actual: usize,
    },
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_unroutable_reason_has_its_own_label() {
        let all = [
            Unroutable::NotQuic,
            Unroutable::TooShort,
            Unroutable::TooLong,
            Unroutable::ReservedConfig,
            Unroutable::UnknownConfig { config_id: 3 },
            Unroutable::DcidLengthMismatch,
        ];
        let indices: Vec<usize> = all.iter().map(Unroutable::index).collect();
        assert_eq!(indices, (0..Unroutable::REASONS.len()).collect::<Vec<_>>());
    }

    const KEY: [u8; 16] = [
        0x8f, 0x95, 0xf0, 0x92, 0x45, 0x76, 0x5f, 0x80, 0x25, 0x69, 0x34, 0xe5, 0x0c, 0x66, 0x20,
        0x7f,
    ];

    fn router() -> Router {
        Router::new()
            .with_config(Config::new(0, 3, 4).unwrap())
            .with_config(Config::new(1, 10, 5).unwrap().with_key(KEY))
            .with_config(Config::new(2, 8, 8).unwrap().with_key(KEY))
            .with_config(
                Config::new(4, 2, 4)
                    .unwrap()
                    .with_cid_len(9)
                    .unwrap()
                    .with_self_encoded_len(false),
            )
    }

    fn server(sid: &[u8], config_id: u8) -> Route {
        Route::Server {
            config_id,
            server_id: ServerId::from_slice(sid).unwrap(),
        }
    }

    /// draft-21 B.1 row 1 as a QUIC v1 Initial (long header).
    #[rustfmt::skip]
    const LONG: [u8; 24] = [
        0xc0, 0x00, 0x00, 0x00, 0x01,             // long header, version 1
        0x08,                                     // DCID length
        0x07, 0xc4, 0x60, 0x5e, 0x45, 0x04, 0xcc, 0x4f, // DCID
        0x00,                                     // SCID length
        0x00, 0x41, 0x00, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x00, // token length, length, pn...
    ];

    /// The same CID in a short header.
    #[rustfmt::skip]
    const SHORT: [u8; 14] = [
        0x41,                                     // short header, pn length 2
        0x07, 0xc4, 0x60, 0x5e, 0x45, 0x04, 0xcc, 0x4f, // DCID
        0x12, 0x34, 0xde, 0xad, 0xbe,             // packet number, payload
    ];

    #[test]
    fn routes_long_and_short_headers() {
        let r = router();
        assert_eq!(r.route(&LONG), server(&[0xc4, 0x60, 0x5e], 0));
        assert_eq!(r.route(&SHORT), server(&[0xc4, 0x60, 0x5e], 0));
        assert_eq!(r.dcid(&LONG), Some(&LONG[6..14]));
        assert_eq!(r.dcid(&SHORT), Some(&SHORT[1..9]));
        // B.2 row 2 (config 1, four-pass, 4 AES passes) and row 3 (config 2, single pass).
        let mut short = vec![0x40];
        short.extend(hex::decode("2fcc381bc74cb4fbad2823a3d1f8fed2").unwrap());
        short.extend([0; 20]);
        assert_eq!(
            r.route(&short),
            server(&hex::decode("ed793a51d49b8f5fab65").unwrap(), 1)
        );
        let mut short = vec![0x40];
        short.extend(hex::decode("504dd2d05a7b0de9b2b9907afb5ecf8cc3").unwrap());
        assert_eq!(
            r.route(&short),
            server(&hex::decode("ed793a51d49b8f5f").unwrap(), 2)
        );
    }

    #[test]
    fn short_header_length_from_config_without_self_encoding() {
        let r = router();
        // Config 4: cid_len 9, low bits random (0x1f here).
        let cid = r
            .config(4)
            .unwrap()
            .encode_parts(&[0xab, 0xcd], &[1, 2, 3, 4], 0x1f, &[7, 7]);
        assert_eq!(cid[0], 0x9f);
        let mut short = vec![0x40];
        short.extend_from_slice(&cid);
        assert_eq!(r.dcid(&short), Some(cid.as_bytes()));
        short.extend([0xee; 10]);
        assert_eq!(r.route(&short), server(&[0xab, 0xcd], 4));
        assert_eq!(r.dcid(&short), Some(cid.as_bytes()));
        // Truncated before the configured length.
        assert_eq!(
            r.route(&short[..6]),
            Route::Unroutable(Unroutable::TooShort)
        );
    }

    #[test]
    fn unroutable_reasons() {
        let r = router();
        let un = |d: &[u8]| match r.route(d) {
            Route::Unroutable(u) => u,
            other => panic!("routed {other:?}"),
        };
        assert_eq!(un(&[]), Unroutable::NotQuic);
        assert_eq!(un(&LONG[..10]), Unroutable::NotQuic); // truncated DCID
        assert_eq!(un(&LONG[..14]), Unroutable::NotQuic); // no SCID length
        assert_eq!(un(&[0x40]), Unroutable::TooShort); // short header, no DCID
        let mut reserved = SHORT;
        reserved[1] = 0xe7;
        assert_eq!(un(&reserved), Unroutable::ReservedConfig);
        let mut unknown = SHORT;
        unknown[1] = 0xa7; // config 5
        assert_eq!(un(&unknown), Unroutable::UnknownConfig { config_id: 5 });
        // Self-encoded length 3 for config 0, which needs 8.
        let mut short_cid = SHORT;
        short_cid[1] = 0x02;
        assert_eq!(un(&short_cid), Unroutable::TooShort);
        // Self-encoded length 20 runs past the 14-octet datagram.
        let mut past = SHORT;
        past[1] = 0x13;
        assert_eq!(un(&past), Unroutable::DcidLengthMismatch);
        // Long header: self-encoded 9 octets, header says 8.
        let mut mismatch = LONG;
        mismatch[6] = 0x08;
        assert_eq!(un(&mismatch), Unroutable::DcidLengthMismatch);
        // Long header, zero-length DCID (a client may use one).
        let empty = [0xc0, 0, 0, 0, 1, 0, 0, 0x00, 0x41];
        assert_eq!(un(&empty), Unroutable::TooShort);
        assert_eq!(r.dcid(&empty), Some(&[][..]));
        // Long header, 21-octet DCID whose first octet matches config 0 self-encoding 21.
        let mut too_long = vec![0xc0, 0, 0, 0, 1, 21, 0x14];
        too_long.extend([0; 20]);
        too_long.push(0);
        assert_eq!(un(&too_long), Unroutable::TooLong);
        // No configuration at all.
        assert_eq!(
            Router::new().route(&SHORT),
            Route::Unroutable(Unroutable::UnknownConfig { config_id: 0 })
        );
    }

    #[test]
    fn fixed_bit_is_ignored_unless_asked() {
        let mut greased = SHORT;
        greased[0] = 0x01; // QUIC bit cleared, as RFC 9287 allows
        assert_eq!(router().route(&greased), server(&[0xc4, 0x60, 0x5e], 0));
        let strict = router().with_fixed_bit_check(true);
        assert_eq!(
            strict.route(&greased),
            Route::Unroutable(Unroutable::NotQuic)
        );
        let mut long = LONG;
        long[0] = 0x80;
        assert_eq!(strict.route(&long), Route::Unroutable(Unroutable::NotQuic));
        // Version Negotiation (version 0) has no QUIC bit to check.
        long[1..5].copy_from_slice(&[0, 0, 0, 0]);
        assert_eq!(strict.route(&long), server(&[0xc4, 0x60, 0x5e], 0));
    }

    #[test]
    fn dcid_for_unknown_and_reserved_configs_uses_self_encoded_length() {
        let r = router();
        let mut d = [0u8; 30];
        d[0] = 0x40;
        d[1] = 0xe0 | 11; // 0b111, 12 octets
        assert_eq!(r.dcid(&d).map(<[u8]>::len), Some(12));
        d[1] = 0xa0 | 19; // unknown config 5, 20 octets
        assert_eq!(r.dcid(&d).map(<[u8]>::len), Some(20));
        assert_eq!(r.dcid(&d[..10]), None);
        assert_eq!(r.dcid(&[0x40]), None);
        assert_eq!(r.dcid(&[]), None);
    }

    #[test]
    fn insert_remove_replace() {
        let mut r = Router::new();
        assert!(r.insert(Config::new(3, 3, 4).unwrap()).is_none());
        let old = r.insert(Config::new(3, 4, 4).unwrap()).unwrap();
        assert_eq!(old.sid_len(), 3);
        assert_eq!(r.config(3).unwrap().sid_len(), 4);
        assert_eq!(r.configs().count(), 1);
        assert!(r.remove(3).is_some());
        assert!(r.remove(7).is_none());
        assert!(r.config(9).is_none());
    }

    #[test]
    fn decode_reports_every_field() {
        let r = router();
        let d = r.decode(&LONG[6..14]).unwrap();
        assert_eq!(d.config_id, 0);
        assert_eq!(d.server_id.as_bytes(), &[0xc4, 0x60, 0x5e]);
        assert_eq!(d.nonce.as_bytes(), &[0x45, 0x04, 0xcc, 0x4f]);
        assert_eq!(
            r.decode(&[0xa7]).unwrap_err(),
            DecodeError::UnknownConfig { config_id: 5 }
        );
        assert_eq!(Unroutable::from(DecodeError::Empty).as_str(), "too_short");
    }
}
