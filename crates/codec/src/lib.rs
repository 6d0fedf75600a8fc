//! compact-encoding, BLAKE2b helpers and key types for the Hypercore stack.
//!
//! This crate implements the byte-level layer that every other corenet crate shares, mirroring
//! the JS modules [compact-encoding] (with compact-encoding-net's `ipv4Address`) and the hash
//! constructions of [hypercore-crypto]:
//!
//! - a [`Decoder`] that reads `uint` varints, fixed-width little-endian integers, buffers,
//!   strings, fixed arrays, IPv4 addresses and arrays from a `&[u8]` or a [`bytes::Bytes`]
//!   without copying payloads, and never panics on any input;
//! - writers in [`encode`] and the [`Encode`] / [`Decode`] traits that wire types implement;
//! - BLAKE2b-256 plain, keyed and batched as libsodium computes it, `namespace(name, ids)`,
//!   discovery keys and the Merkle tree hashes, in [`hash`];
//! - the [`PublicKey`], [`Topic`] and [`DiscoveryKey`] newtypes with hex `Display`/`FromStr`.
//!
//! # Layout
//! - [`decode`]: [`Decoder`], the reading half.
//! - [`encode`]: the writing half, one function per primitive plus its `*_len`.
//! - [`wire`]: the [`Encode`] / [`Decode`] traits, [`Flags`], helpers.
//! - [`hash`]: BLAKE2b and hypercore-crypto constructions.
//! - [`keys`]: key newtypes.
//!
//! # Example
//! ```
//! use bytes::BufMut;
//! use corenet_codec::{encode, Decode, Decoder, DecodeError, Encode, Flags};
//!
//! /// `uint flags, uint seq, [buffer value]` (bit 1: value present).
//! #[derive(Debug, PartialEq)]
//! struct Put<'a> { seq: u64, value: Option<&'a [u8]> }
//!
//! impl Encode for Put<'_> {
//!     fn encoded_len(&self) -> usize {
//!         1 + encode::uint_len(self.seq) + self.value.map_or(0, |v| encode::buffer_len(v.len()))
//!     }
//!     fn encode<B: BufMut>(&self, out: &mut B) {
//!         let mut flags = Flags::default();
//!         flags.set(1, self.value.is_some());
//!         encode::uint(out, flags.bits());
//!         encode::uint(out, self.seq);
//!         if let Some(v) = self.value { encode::buffer(out, v) }
//!     }
//! }
//!
//! impl<'a> Decode<'a> for Put<'a> {
//!     fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
//!         let flags = Flags::from_bits(dec.uint()?);
//!         let seq = dec.uint()?;
//!         let value = if flags.has(1) { Some(dec.buffer()?) } else { None };
//!         Ok(Put { seq, value })
//!     }
//! }
//!
//! let put = Put { seq: 300, value: Some(b"hello") };
//! let bytes = corenet_codec::to_vec(&put);
//! assert_eq!(bytes, [1, 0xfd, 0x2c, 0x01, 5, b'h', b'e', b'l', b'l', b'o']);
//! assert_eq!(corenet_codec::decode_exact::<Put<'_>>(&bytes)?, put);
//! // Every truncation is an error, never a panic.
//! assert!(corenet_codec::decode_exact::<Put<'_>>(&bytes[..4]).unwrap_err().is_incomplete());
//! # Ok::<(), DecodeError>(())
//! ```
//!
//! [compact-encoding]: https://github.com/holepunchto/compact-encoding
//! [hypercore-crypto]: https://github.com/holepunchto/hypercore-crypto

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod decode;
pub mod encode;
mod error;
pub mod hash;
pub mod keys;
pub mod wire;

pub use decode::Decoder;
pub use error::DecodeError;
pub use keys::{DiscoveryKey, ParseKeyError, PublicKey, Topic, Z32_KEY_LEN};
pub use wire::{
    decode_bytes, decode_exact, decode_prefix, to_bytes, to_vec, Decode, Encode, Flags,
};
