//! 32-byte key newtypes that print as lower-case hex and parse from hex or z-base-32.
//!
//! JS apps print and share keys in z-base-32 (`hypercore-id-encoding`: 52 characters,
//! optionally as a `pear://<key>` link); [`PublicKey::from_str`](std::str::FromStr) and the
//! other key types take that and 64 hex characters alike, and [`PublicKey::to_z32`] writes
//! it.

use std::fmt;
use std::str::FromStr;

use bytes::BufMut;

use crate::{hash, Decode, DecodeError, Decoder, Encode};

/// Why a key could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseKeyError {
    /// The text is neither 64 characters (hex) nor, where z-base-32 is accepted, 52.
    #[error("expected 64 hex or 52 z-base-32 characters, got {0}")]
    Length(usize),
    /// The text has a character that is not a hex digit.
    #[error("not hexadecimal")]
    NotHex,
    /// The text has a character outside the z-base-32 alphabet.
    #[error("not z-base-32")]
    NotZ32,
}

/// The z-base-32 alphabet (`z32`, as `hypercore-id-encoding` uses it).
const Z32_ALPHABET: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";
/// Characters of a z-base-32 32-byte key: 256 bits in 5-bit groups, the last carrying one.
pub const Z32_KEY_LEN: usize = 52;

fn z32_value(c: u8) -> Option<u8> {
    Z32_ALPHABET.iter().position(|&a| a == c).map(|i| i as u8)
}

fn encode_z32(bytes: &[u8; 32]) -> String {
    let mut out = String::with_capacity(Z32_KEY_LEN);
    let (mut acc, mut bits) = (0u16, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u16::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(Z32_ALPHABET[usize::from((acc >> bits) & 31)] as char);
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(Z32_ALPHABET[usize::from((acc << (5 - bits)) & 31)] as char);
    }
    out
}

/// Decodes 52 z-base-32 characters, most significant bit first. The last character's four
/// unused bits are ignored, as JS ignores them.
fn parse_z32(s: &str) -> Result<[u8; 32], ParseKeyError> {
    if s.len() != Z32_KEY_LEN {
        return Err(ParseKeyError::Length(s.len()));
    }
    let mut out = [0u8; 32];
    let (mut acc, mut bits, mut n) = (0u16, 0u32, 0usize);
    for c in s.bytes() {
        acc = (acc << 5) | u16::from(z32_value(c).ok_or(ParseKeyError::NotZ32)?);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            if n < 32 {
                out[n] = (acc >> bits) as u8;
                n += 1;
            }
        }
        acc &= (1 << bits) - 1;
    }
    Ok(out)
}

/// A key as `hypercore-id-encoding` reads one: 52 z-base-32 characters, optionally as a
/// `pear://<key>[/...]` link, or 64 hex characters.
fn parse_key32(s: &str) -> Result<[u8; 32], ParseKeyError> {
    let s = match s.strip_prefix("pear://") {
        Some(rest) => rest.split('/').next().unwrap_or_default(),
        None => s,
    };
    match s.len() {
        Z32_KEY_LEN => parse_z32(s),
        _ => parse_hex32(s),
    }
}

fn parse_hex32(s: &str) -> Result<[u8; 32], ParseKeyError> {
    if s.len() != 64 {
        return Err(ParseKeyError::Length(s.len()));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| ParseKeyError::NotHex)?;
    Ok(out)
}

macro_rules! key_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Wraps raw bytes.
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                $name(bytes)
            }
            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
            /// The raw bytes, by value.
            pub const fn to_bytes(self) -> [u8; 32] {
                self.0
            }
            /// Lower-case hex, 64 characters.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            /// Parses 64 hex characters (either case).
            pub fn from_hex(s: &str) -> Result<Self, ParseKeyError> {
                parse_hex32(s).map($name)
            }
            /// z-base-32, 52 characters: how JS apps print keys (`hypercore-id-encoding`).
            pub fn to_z32(&self) -> String {
                encode_z32(&self.0)
            }
            /// Parses 52 z-base-32 characters.
            pub fn from_z32(s: &str) -> Result<Self, ParseKeyError> {
                parse_z32(s).map($name)
            }
            /// Builds one from a slice that must be exactly 32 bytes long.
            pub fn from_slice(s: &[u8]) -> Option<Self> {
                s.try_into().ok().map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for b in &self.0 {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }

        /// 64 hex characters, or 52 z-base-32 ones (also as a `pear://` link), as
        /// `hypercore-id-encoding` reads keys.
        impl FromStr for $name {
            type Err = ParseKeyError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_key32(s).map($name)
            }
        }

        impl AsRef<[u8]> for $name {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }

        impl From<[u8; 32]> for $name {
            fn from(b: [u8; 32]) -> Self {
                $name(b)
            }
        }

        impl From<$name> for [u8; 32] {
            fn from(k: $name) -> Self {
                k.0
            }
        }

        /// Encoded as `fixed32`.
        impl Encode for $name {
            fn encoded_len(&self) -> usize {
                32
            }
            fn encode<B: BufMut>(&self, out: &mut B) {
                out.put_slice(&self.0);
            }
        }

        /// Decoded from `fixed32`.
        impl<'a> Decode<'a> for $name {
            fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
                dec.fixed().map($name)
            }
        }
    };
}

key_type!(
    /// An Ed25519 public key: a peer's identity, or a compat hypercore's key.
    PublicKey
);

key_type!(
    /// A 32-byte swarm topic, used as a DHT target as is.
    Topic
);

key_type!(
    /// A hypercore discovery key: keyed BLAKE2b-256 of `"hypercore"` under the core key. It
    /// names a core on the network without revealing the key that reads it.
    DiscoveryKey
);

impl Topic {
    /// A topic from a human name: BLAKE2b-256 of its UTF-8 bytes. This is what the CLI does
    /// with a topic that is not 64 hex characters.
    pub fn from_name(name: &str) -> Self {
        Topic(hash::blake2b_256(name.as_bytes()))
    }
}

impl DiscoveryKey {
    /// The discovery key of a hypercore key (the manifest hash for v1 cores, the public key
    /// for compat cores).
    pub fn from_key(key: &[u8; 32]) -> Self {
        DiscoveryKey(hash::discovery_key(key))
    }
}

/// Discovery keys are what hypercore apps join as swarm topics.
impl From<DiscoveryKey> for Topic {
    fn from(dk: DiscoveryKey) -> Self {
        Topic(dk.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let k = PublicKey([0xab; 32]);
        let s = k.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s.parse::<PublicKey>().unwrap(), k);
        assert_eq!(s.to_uppercase().parse::<PublicKey>().unwrap(), k);
        assert_eq!("ab".parse::<PublicKey>(), Err(ParseKeyError::Length(2)));
        let bad = "zz".repeat(32);
        assert_eq!(bad.parse::<Topic>(), Err(ParseKeyError::NotHex));
        assert_eq!(format!("{k:?}"), format!("PublicKey({s})"));
    }

    #[test]
    fn discovery_key_from_spec() {
        // ../shared/spec/CONSTRUCTIONS.md 5.2 (datrs vector).
        let key: [u8; 32] =
            hex::decode("778f8d955175c92e4ced5e4f5563f69bfec0c86cc6f670352c457943666fe639")
                .unwrap()
                .try_into()
                .unwrap();
        assert_eq!(
            DiscoveryKey::from_key(&key).to_string(),
            "25a78aa81615847eba00995df29dd41d7ee30f3b01f892209f79b75a57d989e1"
        );
    }
}
