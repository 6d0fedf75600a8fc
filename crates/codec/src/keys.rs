//! 32-byte key newtypes that print and parse as lower-case hex.

use std::fmt;
use std::str::FromStr;

use bytes::BufMut;

use crate::{hash, Decode, DecodeError, Decoder, Encode};

/// Why a hex key could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseKeyError {
    /// The text is not 64 characters long.
    #[error("expected 64 hex characters, got {0}")]
    Length(usize),
    /// The text has a character that is not a hex digit.
    #[error("not hexadecimal")]
    NotHex,
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

        impl FromStr for $name {
            type Err = ParseKeyError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::from_hex(s)
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
