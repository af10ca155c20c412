//! QUIC-LB routable connection IDs, per
//! [draft-ietf-quic-load-balancers-21](https://datatracker.ietf.org/doc/draft-ietf-quic-load-balancers/)
//! ("QUIC-LB"): the server encodes its server id in every connection ID it issues, and a
//! stateless load balancer decodes it from the Destination Connection ID of each datagram.
//!
//! Sans-IO (layer 0): no clock, no OS randomness, no I/O, no allocation on the routing path.
//! Randomness comes in as a seed (see [`Encoder::new`]).
//!
//! # Parts
//!
//! - [`Config`]: one configuration (config id 0..=6, server id length, nonce length, optional
//!   AES-128 key, total CID length, length self-encoding). The algorithm follows from it
//!   (draft-21 §5.4): no key → plaintext; key and `sid_len + nonce_len == 16` → single-pass
//!   AES-128-ECB; key and any other length → four-pass Feistel network.
//! - [`Encoder`]: the server side. Issues CIDs with nonces from a counter that starts at a
//!   random value, and unroutable CIDs (config bits `0b111`) once the nonce space is used up.
//! - [`Router`]: the load balancer side. Holds up to seven configs, decodes CIDs
//!   ([`Router::decode`]) and routes whole datagrams ([`Router::route`]) by parsing the QUIC
//!   header per the version-invariant rules of RFC 8999.
//! - [`nlb`]: a preset for AWS Network Load Balancer QUIC passthrough.
//! - `quinn` feature: `CidGenerator`, a `quinn_proto::ConnectionIdGenerator` over an
//!   [`Encoder`] whose `validate` rejects CIDs of other servers.
//!
//! # Example
//!
//! ```
//! use voq_quic_lb::{Config, Encoder, Route, Router};
//!
//! let key = [0x8f; 16];
//! // Config 1: 2-octet server id, 6-octet nonce, encrypted (four-pass: 2 + 6 != 16).
//! let config = Config::new(1, 2, 6)?.with_key(key);
//! let mut encoder = Encoder::new(config.clone(), &[0x01, 0x02], [7; 32])?;
//! let cid = encoder.generate();
//!
//! let router = Router::new().with_config(config);
//! // A short-header datagram: first octet, then the DCID, then protected payload.
//! let mut datagram = vec![0x40];
//! datagram.extend_from_slice(&cid);
//! datagram.extend_from_slice(&[0u8; 32]);
//! match router.route(&datagram) {
//!     Route::Server { server_id, .. } => assert_eq!(server_id.as_bytes(), &[0x01, 0x02]),
//!     Route::Unroutable(reason) => panic!("unroutable: {reason}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bytes;
mod cipher;
mod config;
mod encoder;
mod header;
pub mod hex;
pub mod nlb;
#[cfg(feature = "quinn")]
mod quinn;
mod router;

pub use bytes::{Cid, Nonce, ServerId};
pub use config::{Algorithm, Config, ConfigError, EncodeError};
pub use encoder::{Encoder, EncoderError};
pub use header::is_long_header;
#[cfg(feature = "quinn")]
pub use quinn::CidGenerator;
pub use router::{DecodeError, Decoded, Route, Router, Unroutable};

/// Longest connection ID QUIC version 1 allows (RFC 9000 §17.2), and so the longest
/// QUIC-LB CID including server-use octets.
pub const MAX_CID_LEN: usize = 20;

/// Longest server id: the nonce takes at least 4 of the 19 plaintext octets (draft-21 §5.3).
pub const MAX_SERVER_ID_LEN: usize = 15;

/// Longest nonce: the server id takes at least 1 of the 19 plaintext octets (draft-21 §5.3).
pub const MAX_NONCE_LEN: usize = 18;

/// The config-rotation codepoint reserved for unroutable CIDs (draft-21 §3.2).
pub const UNROUTABLE_CONFIG_ID: u8 = 0b111;
