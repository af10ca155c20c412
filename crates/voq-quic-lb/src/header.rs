//! Just enough of the QUIC header to find the Destination Connection ID, using only the
//! version-independent properties of RFC 8999, so the load balancer keeps working when servers
//! deploy new QUIC versions (draft-21 §8).
//!
//! ```text
//! Long Header Packet {                 Short Header Packet {
//!   Header Form (1) = 1,                 Header Form (1) = 0,
//!   Version-Specific Bits (7),           Version-Specific Bits (7),
//!   Version (32),                        Destination Connection ID (..),
//!   Destination Connection ID Length (8),  Version-Specific Data (..),
//!   Destination Connection ID (0..2040), }
//!   Source Connection ID Length (8),
//!   Source Connection ID (0..2040),
//!   Version-Specific Data (..),
//! }
//! ```
//!
//! A short header does not carry the DCID length: the receiver must know it. QUIC-LB servers
//! either self-encode it in the first CID octet or use one fixed length per configuration.

/// Header Form bit: set for long headers (RFC 8999 §5.1).
pub(crate) const LONG_HEADER: u8 = 0x80;

/// The QUIC bit of versions 1 and 2 (RFC 9000 §17.2). Not an invariant: version 0 (Version
/// Negotiation) leaves it unspecified and RFC 9287 lets peers grease it.
pub(crate) const FIXED_BIT: u8 = 0x40;

/// Whether the datagram starts with a long header (RFC 8999 §5.1). Balancers treat unroutable
/// DCIDs by header form: client-chosen DCIDs only appear in long headers (an assumption of
/// draft-21 §8), so an unroutable long header goes to the fallback algorithm (§4.2, §4.3),
/// while an unroutable short header carries a stale or foreign CID.
pub fn is_long_header(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| b & LONG_HEADER != 0)
}

/// A parsed long header: the version and the DCID. `None` if the datagram is shorter than the
/// header says (first octet, version, DCID length and DCID, SCID length and SCID).
pub(crate) fn long(datagram: &[u8]) -> Option<(u32, &[u8])> {
    let version = u32::from_be_bytes(datagram.get(1..5)?.try_into().ok()?);
    let dcid_len = usize::from(*datagram.get(5)?);
    let dcid = datagram.get(6..6 + dcid_len)?;
    let scid_at = 6 + dcid_len;
    let scid_len = usize::from(*datagram.get(scid_at)?);
    datagram.get(scid_at + 1..scid_at + 1 + scid_len)?;
    Some((version, dcid))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A QUIC v1 Initial: 0xc3, version 1, DCID 8 octets, SCID 4 octets, then token length etc.
    const INITIAL: [u8; 22] = [
        0xc3, 0x00, 0x00, 0x00, 0x01, 0x08, 0x07, 0xc4, 0x60, 0x5e, 0x45, 0x04, 0xcc, 0x4f, 0x04,
        0xaa, 0xbb, 0xcc, 0xdd, 0x00, 0x41, 0x00,
    ];

    #[test]
    fn parses_long_header() {
        assert!(is_long_header(&INITIAL));
        let (version, dcid) = long(&INITIAL).expect("valid header");
        assert_eq!(version, 1);
        assert_eq!(dcid, &[0x07, 0xc4, 0x60, 0x5e, 0x45, 0x04, 0xcc, 0x4f]);
    }

    #[test]
    fn rejects_truncated_long_headers() {
        for len in 0..=18 {
            assert_eq!(long(&INITIAL[..len]), None, "length {len}");
        }
        assert!(long(&INITIAL[..19]).is_some());
    }

    #[test]
    fn zero_length_dcid_and_unknown_version() {
        // RFC 8999 allows any version and CIDs up to 255 octets; parse them, do not judge.
        let packet = [0x80, 0xfa, 0xce, 0xb0, 0x0c, 0x00, 0x00];
        assert_eq!(long(&packet), Some((0xfaceb00c, &[][..])));
        let mut long_cid = vec![0x80, 0, 0, 0, 2, 255];
        long_cid.extend([0x11; 255]);
        long_cid.push(0);
        assert_eq!(long(&long_cid).map(|(_, d)| d.len()), Some(255));
    }

    #[test]
    fn short_header_is_not_long() {
        assert!(!is_long_header(&[0x40, 0x07]));
        assert!(!is_long_header(&[]));
    }
}
