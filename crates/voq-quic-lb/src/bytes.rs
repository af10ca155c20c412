//! Small inline byte strings: a CID, a server id, a nonce.
//!
//! They live on the stack because [`Router::route`](crate::Router::route) runs once per
//! datagram on the load balancer and must not allocate.

use core::fmt;
use core::hash::{Hash, Hasher};
use core::ops::Deref;

use crate::{MAX_CID_LEN, MAX_NONCE_LEN, MAX_SERVER_ID_LEN};

macro_rules! inline_bytes {
    ($(#[$meta:meta])* $name:ident, $cap:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy)]
        pub struct $name {
            len: u8,
            bytes: [u8; $cap],
        }

        impl $name {
            /// The most octets this type holds.
            pub const CAPACITY: usize = $cap;

            /// Copies `bytes`, or returns `None` if it is longer than [`Self::CAPACITY`].
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                if bytes.len() > $cap {
                    return None;
                }
                let mut out = Self { len: bytes.len() as u8, bytes: [0; $cap] };
                out.bytes[..bytes.len()].copy_from_slice(bytes);
                Some(out)
            }

            /// The octets, in wire order.
            pub fn as_bytes(&self) -> &[u8] {
                &self.bytes[..usize::from(self.len)]
            }

            /// The octets, mutable (crate-internal: the encoder counts and permutes nonces).
            #[allow(dead_code)]
            pub(crate) fn as_mut_bytes(&mut self) -> &mut [u8] {
                &mut self.bytes[..usize::from(self.len)]
            }

            /// Callers guarantee `bytes.len() <= CAPACITY` (checked by the config).
            pub(crate) fn copy_of(bytes: &[u8]) -> Self {
                let mut out = Self { len: 0, bytes: [0; $cap] };
                let n = bytes.len().min($cap);
                out.bytes[..n].copy_from_slice(&bytes[..n]);
                out.len = n as u8;
                out
            }
        }

        impl Deref for $name {
            type Target = [u8];
            fn deref(&self) -> &[u8] {
                self.as_bytes()
            }
        }

        impl AsRef<[u8]> for $name {
            fn as_ref(&self) -> &[u8] {
                self.as_bytes()
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.as_bytes() == other.as_bytes()
            }
        }

        impl Eq for $name {}

        impl PartialEq<[u8]> for $name {
            fn eq(&self, other: &[u8]) -> bool {
                self.as_bytes() == other
            }
        }

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $name {
            fn cmp(&self, other: &Self) -> core::cmp::Ordering {
                self.as_bytes().cmp(other.as_bytes())
            }
        }

        impl Hash for $name {
            fn hash<H: Hasher>(&self, state: &mut H) {
                self.as_bytes().hash(state);
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }

        /// Lowercase hex, no prefix.
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for b in self.as_bytes() {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    };
}

inline_bytes!(
    /// A connection ID of at most 20 octets, first octet included.
    Cid,
    MAX_CID_LEN
);

inline_bytes!(
    /// A server id of 1..=15 octets: opaque octets, not an integer.
    ServerId,
    MAX_SERVER_ID_LEN
);

inline_bytes!(
    /// A nonce of 4..=18 octets.
    Nonce,
    MAX_NONCE_LEN
);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn from_slice_checks_capacity() {
        assert!(ServerId::from_slice(&[0; 15]).is_some());
        assert!(ServerId::from_slice(&[0; 16]).is_none());
        assert!(Cid::from_slice(&[0; 21]).is_none());
        let cid = Cid::from_slice(&[0x07, 0xab]).unwrap();
        assert_eq!(cid.as_bytes(), &[0x07, 0xab]);
        assert_eq!(cid.len(), 2);
        assert_eq!(cid.to_string(), "07ab");
        assert_eq!(format!("{cid:?}"), "Cid(07ab)");
    }

    #[test]
    fn equality_ignores_unused_capacity() {
        let mut a = Nonce::copy_of(&[1, 2, 3, 4, 5]);
        a.len = 4;
        let b = Nonce::from_slice(&[1, 2, 3, 4]).unwrap();
        assert_eq!(a, b);
        assert!(a == *[1u8, 2, 3, 4].as_slice());
    }
}
