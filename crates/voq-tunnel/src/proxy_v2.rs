//! PROXY protocol version 2 headers in their datagram form, sans-IO.
//!
//! The balancer prepends one header to every datagram it tunnels to a backend (source = the
//! client, destination = the VIP); the backend's [`TunnelSocket`](crate::TunnelSocket) prepends
//! one to every reply (source = the VIP, destination = the client), and the balancer strips it
//! and sends the payload from the VIP to that client. A header with the LOCAL command and no
//! addresses is the health probe, echoed back by the backend.
//!
//! Wire format (haproxy `doc/proxy-protocol.txt`, §2.2):
//!
//! ```text
//!  0..12  signature          0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A
//!  12     version | command  0x2_ ; 0x20 LOCAL, 0x21 PROXY
//!  13     family | transport 0x12 UDP over IPv4, 0x22 UDP over IPv6, 0x00 UNSPEC
//!  14..16 length (u16, big endian) of what follows: addresses, then TLVs
//!  16..   source address, destination address, source port, destination port
//! ```
//!
//! The spec describes one header per connection; for UDP it defines the DGRAM transport but
//! not how often the header comes. Here every datagram carries its own, which is what makes
//! the tunnel stateless in both directions.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12-octet signature every version 2 header starts with (§2.2).
pub const SIGNATURE: [u8; 12] = [
    0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
];

/// The fixed part: signature, version and command, family and transport, length.
pub const FIXED_LEN: usize = 16;

/// A whole header for UDP over IPv4: 16 + 2 × 4 + 2 × 2 octets. The tunnel's per-datagram
/// overhead for IPv4 clients.
pub const V4_LEN: usize = FIXED_LEN + 12;

/// A whole header for UDP over IPv6: 16 + 2 × 16 + 2 × 2 octets. The tunnel's per-datagram
/// overhead for IPv6 clients (and for IPv4 clients paired with an IPv6 VIP).
pub const V6_LEN: usize = FIXED_LEN + 36;

/// A LOCAL header with no address block: the health probe and its answer.
pub const LOCAL: [u8; FIXED_LEN] = [
    0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x20, 0x00, 0x00, 0x00,
];

const VERSION_2: u8 = 0x2;
const CMD_LOCAL: u8 = 0x0;
const CMD_PROXY: u8 = 0x1;
const UDP4: u8 = 0x12;
const UDP6: u8 = 0x22;

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Header {
    /// LOCAL command: the sender speaks for itself (a health probe). Any address block is
    /// ignored, as §2.2 requires.
    Local,
    /// PROXY command with UDP addresses.
    Proxy {
        /// The original source.
        src: SocketAddr,
        /// The original destination.
        dst: SocketAddr,
    },
}

/// Why a datagram does not start with a usable version 2 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The first octets are not the version 2 signature.
    #[error("no PROXY protocol v2 signature")]
    Signature,
    /// Shorter than the fixed 16 octets, or than the length the header declares.
    #[error("PROXY v2 header truncated: needs {needed} octets, the datagram has {len}")]
    Truncated {
        /// Octets the header needs.
        needed: usize,
        /// Octets in the datagram.
        len: usize,
    },
    /// Version nibble other than 2 (§2.2: "the receiver must only accept this value").
    #[error("PROXY header version {0} is not 2")]
    Version(u8),
    /// Command nibble other than LOCAL or PROXY (§2.2: receivers must drop these).
    #[error("PROXY v2 command {0:#x} is unassigned")]
    Command(u8),
    /// A PROXY command whose family/transport octet is not UDP over IPv4 or IPv6: UNSPEC,
    /// TCP, UNIX, or an invalid value. The tunnel needs the client's UDP address.
    #[error("PROXY v2 family/transport {0:#04x} is not UDP over IPv4 (0x12) or IPv6 (0x22)")]
    Family(u8),
    /// The declared length is shorter than the address block of the family.
    #[error("PROXY v2 address block of {len} octets is shorter than the {needed} its family needs")]
    AddressLength {
        /// Declared length.
        len: usize,
        /// Address block length of the family.
        needed: usize,
    },
}

impl Error {
    /// A short stable name, for logs and metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Signature => "no_signature",
            Self::Truncated { .. } => "truncated",
            Self::Version(_) => "version",
            Self::Command(_) => "command",
            Self::Family(_) => "family",
            Self::AddressLength { .. } => "address_length",
        }
    }
}

/// Whether `datagram` starts with the version 2 signature.
pub fn has_signature(datagram: &[u8]) -> bool {
    datagram.starts_with(&SIGNATURE)
}

/// The header length [`encode`] uses for this pair: [`V4_LEN`] when both addresses are IPv4
/// (or IPv4-mapped IPv6), [`V6_LEN`] otherwise.
pub fn header_len(src: SocketAddr, dst: SocketAddr) -> usize {
    if as_v4(src.ip()).is_some() && as_v4(dst.ip()).is_some() {
        V4_LEN
    } else {
        V6_LEN
    }
}

/// Appends a PROXY header (UDP, `src` → `dst`) and then `payload` to `out`.
///
/// Both addresses IPv4 (IPv4-mapped IPv6 counts as IPv4) → family 0x12; otherwise 0x22, with
/// any IPv4 address written IPv4-mapped. No TLVs. Returns the header length.
pub fn encode(src: SocketAddr, dst: SocketAddr, payload: &[u8], out: &mut Vec<u8>) -> usize {
    let len = encode_header(src, dst, out);
    out.extend_from_slice(payload);
    len
}

/// Appends only the PROXY header for `src` → `dst` (see [`encode`]). Returns its length.
pub fn encode_header(src: SocketAddr, dst: SocketAddr, out: &mut Vec<u8>) -> usize {
    out.extend_from_slice(&SIGNATURE);
    out.push(VERSION_2 << 4 | CMD_PROXY);
    match (as_v4(src.ip()), as_v4(dst.ip())) {
        (Some(s), Some(d)) => {
            out.push(UDP4);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        _ => {
            out.push(UDP6);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&as_v6(src.ip()).octets());
            out.extend_from_slice(&as_v6(dst.ip()).octets());
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    header_len(src, dst)
}

/// Splits a datagram into its header and payload. Never panics.
///
/// TLVs after the address block are skipped unread (§2.2 allows it). A LOCAL header's
/// family and address block are ignored, whatever they hold (§2.2: "discard the protocol
/// block including the family").
pub fn decode(datagram: &[u8]) -> Result<(Header, &[u8]), Error> {
    let sig_len = datagram.len().min(SIGNATURE.len());
    if datagram[..sig_len] != SIGNATURE[..sig_len] {
        return Err(Error::Signature);
    }
    let Some(fixed) = datagram.get(..FIXED_LEN) else {
        return Err(Error::Truncated {
            needed: FIXED_LEN,
            len: datagram.len(),
        });
    };
    let version = fixed[12] >> 4;
    if version != VERSION_2 {
        return Err(Error::Version(version));
    }
    let command = fixed[12] & 0x0f;
    let family = fixed[13];
    let block_len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    let total = FIXED_LEN + block_len;
    let Some(block) = datagram.get(FIXED_LEN..total) else {
        // §2.2: "The receiver must also reject incoming connections containing partial
        // protocol headers."
        return Err(Error::Truncated {
            needed: total,
            len: datagram.len(),
        });
    };
    let payload = &datagram[total..];
    match command {
        CMD_LOCAL => Ok((Header::Local, payload)),
        CMD_PROXY => {
            let (src, dst) = match family {
                UDP4 => {
                    let b = address_block::<12>(block)?;
                    let ip = |i: usize| IpAddr::from([b[i], b[i + 1], b[i + 2], b[i + 3]]);
                    (
                        SocketAddr::new(ip(0), u16::from_be_bytes([b[8], b[9]])),
                        SocketAddr::new(ip(4), u16::from_be_bytes([b[10], b[11]])),
                    )
                }
                UDP6 => {
                    let b = address_block::<36>(block)?;
                    let ip = |i: usize| {
                        let mut o = [0u8; 16];
                        o.copy_from_slice(&b[i..i + 16]);
                        IpAddr::from(Ipv6Addr::from(o)).to_canonical()
                    };
                    (
                        SocketAddr::new(ip(0), u16::from_be_bytes([b[32], b[33]])),
                        SocketAddr::new(ip(16), u16::from_be_bytes([b[34], b[35]])),
                    )
                }
                other => return Err(Error::Family(other)),
            };
            Ok((Header::Proxy { src, dst }, payload))
        }
        other => Err(Error::Command(other)),
    }
}

fn address_block<const N: usize>(block: &[u8]) -> Result<&[u8; N], Error> {
    block
        .get(..N)
        .and_then(|b| b.try_into().ok())
        .ok_or(Error::AddressLength {
            len: block.len(),
            needed: N,
        })
}

fn as_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    }
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    /// UDP over IPv4, PROXY, 192.168.0.1:56324 → 192.168.0.11:443 (the addresses of the
    /// spec's version 1 example, §2.1), then a 3-octet payload. Built field by field from
    /// the §2.2 layout.
    #[rustfmt::skip]
    const UDP4_EXAMPLE: [u8; 31] = [
        0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, // signature
        0x21,                   // version 2, PROXY
        0x12,                   // AF_INET, DGRAM
        0x00, 0x0c,             // 12 octets follow
        192, 168, 0, 1,         // source address
        192, 168, 0, 11,        // destination address
        0xdc, 0x04,             // source port 56324
        0x01, 0xbb,             // destination port 443
        0xca, 0xfe, 0x01,       // payload
    ];

    /// UDP over IPv6, PROXY, [2001:db8::1]:4433 → [2001:db8::2]:443, no payload.
    #[rustfmt::skip]
    const UDP6_EXAMPLE: [u8; 52] = [
        0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
        0x21, 0x22, 0x00, 0x24, // v2 PROXY, AF_INET6 DGRAM, 36 octets
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02,
        0x11, 0x51,             // 4433
        0x01, 0xbb,             // 443
    ];

    /// UDP over IPv4 followed by a PP2_TYPE_NOOP TLV (type 0x04, 2 octets) that a receiver
    /// must skip (§2.2 "Receivers MUST always consider this field to skip the appropriate
    /// number of bytes").
    #[rustfmt::skip]
    const UDP4_WITH_TLV: [u8; 34] = [
        0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
        0x21, 0x12, 0x00, 0x11, // 17 = 12 + TLV(3 + 2)
        10, 0, 0, 1, 10, 0, 0, 2, 0x30, 0x39, 0x01, 0xbb,
        0x04, 0x00, 0x02, 0xaa, 0xbb, // NOOP TLV
        0x7f,                   // payload
    ];

    /// LOCAL with a TCP/IPv4 address block, which must be skipped and ignored.
    #[rustfmt::skip]
    const LOCAL_WITH_BLOCK: [u8; 29] = [
        0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
        0x20, 0x11, 0x00, 0x0c,
        127, 0, 0, 1, 127, 0, 0, 1, 0x00, 0x50, 0x00, 0x51,
        0xee,
    ];

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn decodes_the_spec_layouts() {
        let (h, p) = decode(&UDP4_EXAMPLE).unwrap();
        assert_eq!(
            h,
            Header::Proxy {
                src: addr("192.168.0.1:56324"),
                dst: addr("192.168.0.11:443")
            }
        );
        assert_eq!(p, &[0xca, 0xfe, 0x01]);

        let (h, p) = decode(&UDP6_EXAMPLE).unwrap();
        assert_eq!(
            h,
            Header::Proxy {
                src: addr("[2001:db8::1]:4433"),
                dst: addr("[2001:db8::2]:443")
            }
        );
        assert!(p.is_empty());

        let (h, p) = decode(&UDP4_WITH_TLV).unwrap();
        assert_eq!(
            h,
            Header::Proxy {
                src: addr("10.0.0.1:12345"),
                dst: addr("10.0.0.2:443")
            }
        );
        assert_eq!(p, &[0x7f]);

        assert_eq!(
            decode(&LOCAL_WITH_BLOCK).unwrap(),
            (Header::Local, &[0xee][..])
        );
        assert_eq!(decode(&LOCAL).unwrap(), (Header::Local, &[][..]));
    }

    #[test]
    fn encodes_the_spec_layouts() {
        let mut out = Vec::new();
        let n = encode(
            addr("192.168.0.1:56324"),
            addr("192.168.0.11:443"),
            &[0xca, 0xfe, 0x01],
            &mut out,
        );
        assert_eq!(n, V4_LEN);
        assert_eq!(out, UDP4_EXAMPLE);
        out.clear();
        let n = encode(
            addr("[2001:db8::1]:4433"),
            addr("[2001:db8::2]:443"),
            &[],
            &mut out,
        );
        assert_eq!(n, V6_LEN);
        assert_eq!(out, UDP6_EXAMPLE);
    }

    #[test]
    fn mixed_families_use_ipv6_and_mapped_addresses_decode_as_ipv4() {
        let v4 = addr("192.0.2.7:1000");
        let v6 = addr("[2001:db8::9]:443");
        let mut out = Vec::new();
        assert_eq!(encode(v4, v6, b"x", &mut out), V6_LEN);
        assert_eq!(out[13], 0x22);
        assert_eq!(
            decode(&out).unwrap(),
            (Header::Proxy { src: v4, dst: v6 }, &b"x"[..])
        );
        // IPv4-mapped on both sides is IPv4.
        out.clear();
        let mapped = addr("[::ffff:192.0.2.7]:1000");
        assert_eq!(
            encode(mapped, addr("[::ffff:192.0.2.8]:443"), b"", &mut out),
            V4_LEN
        );
        assert_eq!(out[13], 0x12);
    }

    #[test]
    fn rejects_what_the_spec_says_to_reject() {
        let mut d = UDP4_EXAMPLE;
        d[0] = 0x0c;
        assert_eq!(decode(&d).unwrap_err(), Error::Signature);
        assert_eq!(decode(b"PROXY TCP4 1.2.3.4").unwrap_err(), Error::Signature);
        assert_eq!(
            decode(&[]).unwrap_err(),
            Error::Truncated { needed: 16, len: 0 }
        );
        assert_eq!(
            decode(&UDP4_EXAMPLE[..5]).unwrap_err(),
            Error::Truncated { needed: 16, len: 5 }
        );
        assert_eq!(
            decode(&UDP4_EXAMPLE[..27]).unwrap_err(),
            Error::Truncated {
                needed: 28,
                len: 27
            }
        );
        let mut d = UDP4_EXAMPLE;
        d[12] = 0x11; // version 1 nibble
        assert_eq!(decode(&d).unwrap_err(), Error::Version(1));
        d[12] = 0x22; // command 2
        assert_eq!(decode(&d).unwrap_err(), Error::Command(2));
        d[12] = 0x21;
        for fam in [0x00, 0x11, 0x21, 0x31, 0x32, 0x13, 0x42] {
            d[13] = fam;
            assert_eq!(decode(&d).unwrap_err(), Error::Family(fam));
        }
        // UDP over IPv6 declared with a 12-octet block.
        d[13] = 0x22;
        assert_eq!(
            decode(&d).unwrap_err(),
            Error::AddressLength {
                len: 12,
                needed: 36
            }
        );
        assert_eq!(Error::Signature.as_str(), "no_signature");
    }

    fn any_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, p)| SocketAddr::new(IpAddr::from(Ipv6Addr::from(ip)), p)),
        ]
    }

    fn canonical(a: SocketAddr) -> SocketAddr {
        SocketAddr::new(a.ip().to_canonical(), a.port())
    }

    proptest! {
        #[test]
        fn round_trips(src in any_addr(), dst in any_addr(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut out = Vec::new();
            let n = encode(src, dst, &payload, &mut out);
            prop_assert_eq!(n, header_len(src, dst));
            prop_assert_eq!(out.len(), n + payload.len());
            let (h, p) = decode(&out).unwrap();
            prop_assert_eq!(h, Header::Proxy { src: canonical(src), dst: canonical(dst) });
            prop_assert_eq!(p, &payload[..]);
        }

        #[test]
        fn never_panics(d in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode(&d);
        }

        #[test]
        fn never_panics_after_a_signature(rest in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut d = SIGNATURE.to_vec();
            d.extend_from_slice(&rest);
            if let Ok((_, payload)) = decode(&d) {
                prop_assert!(payload.len() <= d.len() - FIXED_LEN);
            }
        }
    }
}
