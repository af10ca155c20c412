//! Weighted rendezvous (highest random weight) hashing of unroutable DCIDs over backends.
//!
//! Every balancer instance must pick the same backend for the same DCID, across restarts and
//! versions, so the hash is spelled out here rather than borrowed from `std` (whose
//! `DefaultHasher` may change between Rust releases):
//!
//! - `h(bytes)`: start at `0x9e37_79b9_7f4a_7c15 ^ len`; for each 8-octet chunk (the last one
//!   zero-padded) read as a little-endian `u64` `c`: `h = fmix64(h ^ c) + 0x9e37_79b9_7f4a_7c15`
//!   (wrapping); finally `fmix64(h)`. `fmix64` is MurmurHash3's 64-bit finaliser.
//! - A backend's key is `h(server id)`, so moving a backend to a new address keeps its flows.
//! - The score of backend `b` for DCID `d` is `w_b / -ln(u)` with
//!   `u = (fmix64(h(d) ^ key_b) >> 11 + 0.5) / 2^53`, in (0, 1); the highest score wins (ties:
//!   the lower server id). This is the weighted form of rendezvous hashing: each backend gets a
//!   `w_b / Σw` share, and adding or removing one backend only moves the flows it gains or
//!   loses.

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// MurmurHash3's 64-bit finaliser: a bijection with full avalanche.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// The stable 64-bit hash of `bytes` described in the module docs.
pub(crate) fn hash64(bytes: &[u8]) -> u64 {
    let mut h = GOLDEN ^ bytes.len() as u64;
    for chunk in bytes.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = fmix64(h ^ u64::from_le_bytes(word)).wrapping_add(GOLDEN);
    }
    fmix64(h)
}

/// The rendezvous score of a backend with `key` and `weight` for a DCID hashed to `dcid`.
/// Weight 0 scores 0 (never chosen while another backend has weight).
pub(crate) fn score(dcid: u64, key: u64, weight: u32) -> f64 {
    let bits = fmix64(dcid ^ key) >> 11; // 53 bits, exact in an f64
    let u = (bits as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight) / -u.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Picks the winner among `(key, weight)` pairs the way the routing table does.
    fn pick(dcid: &[u8], backends: &[(u64, u32)]) -> Option<usize> {
        let h = hash64(dcid);
        let mut best: Option<(usize, f64)> = None;
        for (i, &(key, w)) in backends.iter().enumerate() {
            if w == 0 {
                continue;
            }
            let s = score(h, key, w);
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((i, s));
            }
        }
        best.map(|(i, _)| i)
    }

    fn dcid(i: u32) -> [u8; 8] {
        let mut d = [0u8; 8];
        d[..4].copy_from_slice(&i.to_be_bytes());
        d[4..].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_le_bytes());
        d
    }

    #[test]
    fn hash_is_pinned() {
        // Pinned values: a change here moves every unroutable flow; do it only on purpose.
        // Also checked against an independent Python transcription of the module docs.
        assert_eq!(hash64(b""), 0x9ca0_66f1_a4ab_2eea);
        assert_eq!(hash64(b"voq"), 0xd641_665c_6a68_c2b8);
        assert_eq!(
            hash64(&[0x07, 0xc4, 0x60, 0x5e, 0x45, 0x04, 0xcc, 0x4f, 0x01]),
            0xc0c6_4e0a_4bf7_fbe4
        );
        assert_ne!(hash64(b"a"), hash64(b"a\0"));
        assert_ne!(hash64(&[0; 8]), hash64(&[0; 9]));
        assert_eq!(hash64(b"voq"), hash64(b"voq"));
    }

    #[test]
    fn weights_set_the_shares() {
        let keys: Vec<(u64, u32)> = [b"a", b"b", b"c"]
            .iter()
            .zip([1, 1, 2])
            .map(|(k, w)| (hash64(*k), w))
            .collect();
        let mut counts = [0u32; 3];
        for i in 0..40_000 {
            if let Some(b) = pick(&dcid(i), &keys) {
                counts[b] += 1;
            }
        }
        // Expected 10k, 10k, 20k.
        assert!((9_000..11_000).contains(&counts[0]), "{counts:?}");
        assert!((9_000..11_000).contains(&counts[1]), "{counts:?}");
        assert!((19_000..21_000).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn removing_a_backend_moves_only_its_flows() {
        let all: Vec<(u64, u32)> = (0u8..5).map(|i| (hash64(&[i]), 1)).collect();
        let mut without = all.clone();
        without[2].1 = 0;
        for i in 0..10_000 {
            let before = pick(&dcid(i), &all);
            let after = pick(&dcid(i), &without);
            if before != Some(2) {
                assert_eq!(before, after, "dcid {i} moved although its backend stayed");
            } else {
                assert_ne!(after, Some(2));
            }
        }
    }
}
