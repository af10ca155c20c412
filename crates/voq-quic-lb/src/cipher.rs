//! The two keyed algorithms of draft-21 §5.4 (server) and §5.5 (load balancer): single-pass
//! AES-128-ECB when server id and nonce fill exactly one block, otherwise a four-round Feistel
//! network whose round function is AES-128-ECB.
//!
//! Everything works on stack arrays: the load balancer runs this once per datagram.

use aes::Aes128;
use aes::cipher::{BlockDecrypt, BlockEncrypt};

/// AES block size in octets.
pub(crate) const BLOCK: usize = 16;

/// `expand(length, pass, input_bytes)` (draft-21 §5.4.2.2): the input octets, zero padding,
/// then `length` as the 15th and `pass` as the 16th octet. `input` holds the octets (a Feistel
/// half, at most 10) at its big-endian top with zeros after them. Drafts ≤ 18 used another
/// layout; see testdata/quic-lb/README.md.
fn expand(length: usize, pass: u8, input: u128) -> [u8; BLOCK] {
    (input | ((length as u128) << 8) | u128::from(pass)).to_be_bytes()
}

/// Encrypts one AES block in place.
pub(crate) fn encrypt_block(aes: &Aes128, block: &mut [u8; BLOCK]) {
    aes.encrypt_block(aes::Block::from_mut_slice(block));
}

/// Single-pass encryption (draft-21 §5.4.1): the 16 plaintext octets form one AES block.
pub(crate) fn single_pass_encrypt(aes: &Aes128, block: &mut [u8; BLOCK]) {
    encrypt_block(aes, block);
}

/// Single-pass decryption (draft-21 §5.5.1).
pub(crate) fn single_pass_decrypt(aes: &Aes128, block: &mut [u8; BLOCK]) {
    aes.decrypt_block(aes::Block::from_mut_slice(block));
}

/// The two halves of the Feistel network (draft-21 §5.4.2.3 step 2), each held as the first
/// `half_len` octets of a big-endian `u128` with zeros after them. Then `expand` is an OR, the
/// XOR with `truncate(result, half_len)` is an AND with a mask, and no step copies a
/// variable number of octets: this runs once per datagram on the load balancer.
struct Halves {
    left: u128,
    right: u128,
    /// Keeps the first `half_len` octets of `left`, minus its last nibble for odd lengths
    /// (steps 7 and 11: clear the last four bits of left_1 and left_2).
    left_mask: u128,
    /// Keeps the first `half_len` octets of `right`, minus its first nibble for odd lengths
    /// (steps 5 and 9: clear the first four bits of right_1 and right_2). The draft-21 §5.5.2
    /// pseudocode clears `left_1` in its second step; that is a misprint for `right_1`
    /// (testdata/quic-lb/README.md, problem 4).
    right_mask: u128,
    /// `half_len`: `plaintext_len / 2` rounded up.
    half: usize,
    /// `plaintext_len`.
    len: usize,
}

impl Halves {
    /// Splits into two halves of `half_len` octets. For an odd length the middle octet goes
    /// to both: its high nibble to `left`, its low nibble to `right`.
    fn split(block: &[u8]) -> Self {
        let len = block.len();
        let half = len.div_ceil(2);
        let odd = len % 2 == 1;
        let keep = !0u128 << (8 * (BLOCK - half));
        let left_mask = if odd {
            keep & !(0x0f << (8 * (BLOCK - half)))
        } else {
            keep
        };
        let right_mask = if odd { keep & !(0xf0 << 120) } else { keep };
        // One fixed-size buffer holds both windows: `right` starts at `len - half` ≤ 9.
        let mut buf = [0u8; 2 * BLOCK];
        buf[..len].copy_from_slice(block);
        let at = len - half;
        Self {
            left: u128::from_be_bytes(window(&buf, 0)) & left_mask,
            right: u128::from_be_bytes(window(&buf, at)) & right_mask,
            left_mask,
            right_mask,
            half,
            len,
        }
    }

    /// `AES(expand(plaintext_len, pass, half))`, truncated to `half_len` by the caller's mask.
    fn round(&self, aes: &Aes128, pass: u8, half: u128) -> u128 {
        let mut block = expand(self.len, pass, half);
        encrypt_block(aes, &mut block);
        u128::from_be_bytes(block)
    }

    /// `right ^= truncate(AES(expand(len, pass, left)), half_len)`, then clear its nibble.
    fn round_right(&mut self, aes: &Aes128, pass: u8) {
        self.right ^= self.round(aes, pass, self.left) & self.right_mask;
    }

    /// `left ^= truncate(AES(expand(len, pass, right)), half_len)`, then clear its nibble.
    fn round_left(&mut self, aes: &Aes128, pass: u8) {
        self.left ^= self.round(aes, pass, self.right) & self.left_mask;
    }

    /// Concatenates the halves (step 12); for an odd length the zero nibbles overlap.
    fn join(&self, out: &mut [u8]) {
        let mut buf = [0u8; 2 * BLOCK];
        buf[..BLOCK].copy_from_slice(&self.left.to_be_bytes());
        let at = self.len - self.half;
        for (b, r) in buf[at..at + BLOCK].iter_mut().zip(self.right.to_be_bytes()) {
            *b |= r;
        }
        out.copy_from_slice(&buf[..self.len]);
    }

    #[cfg(test)]
    fn left_bytes(&self) -> Vec<u8> {
        self.left.to_be_bytes()[..self.half].to_vec()
    }

    #[cfg(test)]
    fn right_bytes(&self) -> Vec<u8> {
        self.right.to_be_bytes()[..self.half].to_vec()
    }
}

/// The 16 octets of `buf` from `at`.
fn window(buf: &[u8; 2 * BLOCK], at: usize) -> [u8; BLOCK] {
    let mut w = [0; BLOCK];
    w.copy_from_slice(&buf[at..at + BLOCK]);
    w
}

/// Four-pass encryption in place (draft-21 §5.4.2.3). `block.len()` is 2..=20; QUIC-LB uses
/// 5..=19 (§5.4.2.2), the encoder also uses it to permute plaintext nonces.
pub(crate) fn four_pass_encrypt(aes: &Aes128, block: &mut [u8]) {
    let mut h = Halves::split(block);
    h.round_right(aes, 1); // right_1
    h.round_left(aes, 2); // left_1
    h.round_right(aes, 3); // right_2
    h.round_left(aes, 4); // left_2
    h.join(block);
}

/// Four-pass decryption in place (draft-21 §5.5.2), all four passes.
pub(crate) fn four_pass_decrypt(aes: &Aes128, block: &mut [u8]) {
    let mut h = Halves::split(block);
    h.round_left(aes, 4); // left_1
    h.round_right(aes, 3); // right_1
    h.round_left(aes, 2); // left_0
    h.round_right(aes, 1); // right_0
    h.join(block);
}

/// Recovers only the first `sid_len` plaintext octets: three passes when the server id lies
/// entirely in `left_0` (`sid_len <= nonce_len`), four otherwise (draft-21 §5.5.2).
pub(crate) fn four_pass_server_id(aes: &Aes128, block: &[u8], sid_len: usize, out: &mut [u8]) {
    let mut h = Halves::split(block);
    h.round_left(aes, 4); // left_1
    h.round_right(aes, 3); // right_1
    h.round_left(aes, 2); // left_0
    if sid_len <= block.len() / 2 {
        out[..sid_len].copy_from_slice(&h.left.to_be_bytes()[..sid_len]);
        return;
    }
    h.round_right(aes, 1); // right_0
    let mut plain = [0; 2 * BLOCK];
    h.join(&mut plain[..block.len()]);
    out[..sid_len].copy_from_slice(&plain[..sid_len]);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use aes::cipher::KeyInit;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    fn examples() -> serde_json::Value {
        let text = include_str!("../../../testdata/quic-lb/test-vectors.json");
        let json: serde_json::Value = serde_json::from_str(text).unwrap();
        json["function_examples"].clone()
    }

    /// The §5.4.2.2 `expand` and `truncate` examples and the §5.4.2.3 odd split example.
    #[test]
    fn function_examples() {
        let examples = examples();
        let mut seen = 0;
        for ex in examples.as_array().unwrap() {
            match ex["function"].as_str().unwrap() {
                "expand" => {
                    let a = &ex["args"];
                    let len = hex(a["length"].as_str().unwrap())[0];
                    let pass = hex(a["pass"].as_str().unwrap())[0];
                    let mut input = [0; BLOCK];
                    let bytes = hex(a["input_bytes"].as_str().unwrap());
                    input[..bytes.len()].copy_from_slice(&bytes);
                    let got = expand(len.into(), pass, u128::from_be_bytes(input));
                    assert_eq!(got.to_vec(), hex(ex["result_hex"].as_str().unwrap()));
                }
                "truncate" => {
                    // truncate(x, n) is the first n octets, what a half keeps after its mask.
                    let input = hex(ex["args"]["input"].as_str().unwrap());
                    let n = ex["args"]["n"].as_u64().unwrap() as usize;
                    let mut target = vec![0; n];
                    for (t, i) in target.iter_mut().zip(&input) {
                        *t ^= i;
                    }
                    assert_eq!(target, hex(ex["result_hex"].as_str().unwrap()));
                }
                "split" => {
                    let pt = hex(ex["args"]["plaintext_cid"].as_str().unwrap());
                    let h = Halves::split(&pt);
                    assert_eq!(h.left_bytes(), hex(ex["left_0_hex"].as_str().unwrap()));
                    assert_eq!(h.right_bytes(), hex(ex["right_0_hex"].as_str().unwrap()));
                }
                other => panic!("unknown function example {other}"),
            }
            seen += 1;
        }
        assert_eq!(seen, 3);
    }

    /// The §5.4.2.4 worked example, step by step (step 10's XOR operand is misprinted in the
    /// draft; the AES output and the result are right, see README problem 3).
    #[test]
    fn encryption_example_steps() {
        let key = hex("fdf726a9893ec05c0632d3956680baf0");
        let aes = Aes128::new_from_slice(&key).unwrap();
        let mut h = Halves::split(&hex("31441a9c69c275"));
        assert_eq!(h.left_bytes(), hex("31441a90"));
        assert_eq!(h.right_bytes(), hex("0c69c275"));
        h.round_right(&aes, 1);
        assert_eq!(h.right_bytes(), hex("0e3c1ff9"));
        h.round_left(&aes, 2);
        assert_eq!(h.left_bytes(), hex("d4a04850"));
        h.round_right(&aes, 3);
        assert_eq!(h.right_bytes(), hex("09be054a"));
        h.round_left(&aes, 4);
        assert_eq!(h.left_bytes(), hex("67947d20"));
        let mut out = [0; 7];
        h.join(&mut out);
        assert_eq!(out.to_vec(), hex("67947d29be054a"));
    }

    #[test]
    fn four_pass_is_a_permutation_for_every_length() {
        let aes = Aes128::new_from_slice(&[0x42; 16]).unwrap();
        for n in 2..=20 {
            let plain: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
            let mut block = plain.clone();
            four_pass_encrypt(&aes, &mut block);
            assert_ne!(block, plain, "length {n}");
            let mut sid = [0; 20];
            four_pass_server_id(&aes, &block, n - 1, &mut sid);
            assert_eq!(sid[..n - 1], plain[..n - 1], "length {n}");
            four_pass_decrypt(&aes, &mut block);
            assert_eq!(block, plain, "length {n}");
        }
    }
}
