//! Hex text of server ids and keys as operators write them (flags, TOML files, environment
//! variables): an optional `0x`/`0X` prefix, digits of either case. The one parser behind
//! `voq serve`, `voq lb` and `voq cid`, so the three accept and refuse the same text.

use std::fmt::Write as _;

/// Why hex text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    /// No digits at all.
    #[error("empty: no hex digits")]
    Empty,
    /// An odd number of digits: not whole octets.
    #[error("{0} hex digits, not an even number")]
    OddLength(usize),
    /// A character that is not a hex digit.
    #[error("{0:?} is not a hex digit")]
    NotHex(char),
    /// Whole octets, but not as many as needed.
    #[error("{got} octets where {needed} are needed ({} hex digits)", 2 * needed)]
    Length {
        /// Octets given.
        got: usize,
        /// Octets needed.
        needed: usize,
    },
}

/// Decodes hex text (optional `0x` prefix, either case) into octets.
pub fn decode(text: &str) -> Result<Vec<u8>, HexError> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    let chars: Vec<char> = digits.chars().collect();
    if chars.is_empty() {
        return Err(HexError::Empty);
    }
    if !chars.len().is_multiple_of(2) {
        return Err(HexError::OddLength(chars.len()));
    }
    let value = |c: char| c.to_digit(16).ok_or(HexError::NotHex(c));
    chars
        .chunks_exact(2)
        .map(|pair| match pair {
            [hi, lo] => Ok(((value(*hi)? << 4) | value(*lo)?) as u8),
            _ => Err(HexError::OddLength(chars.len())),
        })
        .collect()
}

/// Decodes hex text into exactly `N` octets (e.g. a 16-octet AES key).
pub fn decode_array<const N: usize>(text: &str) -> Result<[u8; N], HexError> {
    let bytes = decode(text)?;
    let got = bytes.len();
    bytes
        .try_into()
        .map_err(|_| HexError::Length { got, needed: N })
}

/// Lower-case hex, no prefix: the form voq prints server ids in.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 * bytes.len());
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_cases_are_accepted() {
        assert_eq!(decode("0a0B"), Ok(vec![0x0a, 0x0b]));
        assert_eq!(decode("0x0A0b"), Ok(vec![0x0a, 0x0b]));
        assert_eq!(decode("0XfF"), Ok(vec![0xff]));
        assert_eq!(encode(&[0x0a, 0xff]), "0aff");
    }

    #[test]
    fn bad_text_says_what_is_wrong() {
        assert_eq!(decode(""), Err(HexError::Empty));
        assert_eq!(decode("0x"), Err(HexError::Empty));
        assert_eq!(decode("abc"), Err(HexError::OddLength(3)));
        assert_eq!(decode("zz"), Err(HexError::NotHex('z')));
        assert_eq!(decode("é1"), Err(HexError::NotHex('é')));
        assert_eq!(
            decode_array::<16>("00"),
            Err(HexError::Length { got: 1, needed: 16 })
        );
        assert_eq!(decode_array::<2>("0x0102"), Ok([1, 2]));
    }
}
