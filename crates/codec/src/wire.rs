//! The [`Encode`] / [`Decode`] traits for wire types, and their impls for the compact-encoding
//! types that have one obvious Rust shape.

use std::net::SocketAddrV4;

use bytes::{BufMut, Bytes, BytesMut};

use crate::{encode, DecodeError, Decoder};

/// A value with a compact-encoding wire form.
pub trait Encode {
    /// Exact number of bytes [`Encode::encode`] writes.
    fn encoded_len(&self) -> usize;
    /// Appends the encoding to `out`.
    fn encode<B: BufMut>(&self, out: &mut B);
}

/// A value that can be read from its compact-encoding wire form.
///
/// The lifetime lets a type borrow payloads from the input (`&'a [u8]`, `&'a str`); types
/// that own their payloads use [`Bytes`] and get zero-copy slices when decoded from `Bytes`.
pub trait Decode<'a>: Sized {
    /// Reads one value, advancing the decoder.
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError>;
}

/// Encodes a value into a new `Vec`, sized exactly.
pub fn to_vec<T: Encode + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.encoded_len());
    value.encode(&mut out);
    debug_assert_eq!(
        out.len(),
        value.encoded_len(),
        "encoded_len disagrees with encode"
    );
    out
}

/// Encodes a value into new [`Bytes`].
pub fn to_bytes<T: Encode + ?Sized>(value: &T) -> Bytes {
    let mut out = BytesMut::with_capacity(value.encoded_len());
    value.encode(&mut out);
    out.freeze()
}

/// Decodes a value that must fill the whole input (trailing bytes are an error).
pub fn decode_exact<'a, T: Decode<'a>>(input: &'a [u8]) -> Result<T, DecodeError> {
    let mut dec = Decoder::new(input);
    let v = T::decode(&mut dec)?;
    dec.finish()?;
    Ok(v)
}

/// Decodes a value from the start of the input, like the JS `c.decode`: trailing bytes are
/// allowed (newer peers append optional fields) and the number of bytes used is returned.
pub fn decode_prefix<'a, T: Decode<'a>>(input: &'a [u8]) -> Result<(T, usize), DecodeError> {
    let mut dec = Decoder::new(input);
    let v = T::decode(&mut dec)?;
    Ok((v, dec.position()))
}

/// Decodes a value from [`Bytes`], sharing its storage for `Bytes` payloads; trailing bytes
/// are allowed as in [`decode_prefix`].
pub fn decode_bytes<T>(input: &Bytes) -> Result<T, DecodeError>
where
    T: for<'a> Decode<'a>,
{
    let mut dec = Decoder::from_bytes(input);
    T::decode(&mut dec)
}

/// The bits of a flags `uint` that says which optional fields follow it.
///
/// ```
/// use corenet_codec::Flags;
/// let mut f = Flags::default();
/// f.set(1, true);
/// f.set(4, false);
/// assert!(f.has(1) && !f.has(4));
/// assert_eq!(f.bits(), 1);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags(u64);

impl Flags {
    /// Flags with these bits.
    pub const fn from_bits(bits: u64) -> Self {
        Flags(bits)
    }
    /// Sets `bit` (a mask) when `on`.
    pub fn set(&mut self, bit: u64, on: bool) {
        if on {
            self.0 |= bit;
        }
    }
    /// True when every bit of the mask `bit` is set.
    pub const fn has(self, bit: u64) -> bool {
        self.0 & bit == bit
    }
    /// The raw value.
    pub const fn bits(self) -> u64 {
        self.0
    }
}

macro_rules! fixed_array {
    ($($n:literal),*) => {$(
        impl Encode for [u8; $n] {
            fn encoded_len(&self) -> usize {
                $n
            }
            fn encode<B: BufMut>(&self, out: &mut B) {
                out.put_slice(self);
            }
        }
        impl<'a> Decode<'a> for [u8; $n] {
            fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
                dec.fixed()
            }
        }
    )*};
}
fixed_array!(32, 64);

impl Encode for bool {
    fn encoded_len(&self) -> usize {
        1
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::bool(out, *self);
    }
}

impl<'a> Decode<'a> for bool {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        dec.bool()
    }
}

impl Encode for [u8] {
    fn encoded_len(&self) -> usize {
        encode::buffer_len(self.len())
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::buffer(out, self);
    }
}

impl<'a> Decode<'a> for &'a [u8] {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        dec.buffer()
    }
}

impl Encode for Bytes {
    fn encoded_len(&self) -> usize {
        encode::buffer_len(self.len())
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::buffer(out, self);
    }
}

impl<'a> Decode<'a> for Bytes {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        dec.bytes()
    }
}

impl Encode for str {
    fn encoded_len(&self) -> usize {
        encode::buffer_len(self.len())
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::string(out, self);
    }
}

impl<'a> Decode<'a> for &'a str {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        dec.string()
    }
}

impl Encode for String {
    fn encoded_len(&self) -> usize {
        self.as_str().encoded_len()
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.as_str().encode(out);
    }
}

impl<'a> Decode<'a> for String {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        dec.string().map(str::to_owned)
    }
}

impl Encode for SocketAddrV4 {
    fn encoded_len(&self) -> usize {
        encode::IPV4_ADDRESS_LEN
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::ipv4_address(out, self);
    }
}

impl<'a> Decode<'a> for SocketAddrV4 {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        dec.ipv4_address()
    }
}

/// `array(T)`: a `uint` count, then the items.
impl<T: Encode> Encode for [T] {
    fn encoded_len(&self) -> usize {
        encode::array_len(self.len()) + self.iter().map(Encode::encoded_len).sum::<usize>()
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::uint(out, self.len() as u64);
        for item in self {
            item.encode(out);
        }
    }
}

impl<T: Encode> Encode for Vec<T> {
    fn encoded_len(&self) -> usize {
        self.as_slice().encoded_len()
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.as_slice().encode(out);
    }
}

/// `array(T)`; every item is assumed to take at least one byte when bounding the count.
impl<'a, T: Decode<'a>> Decode<'a> for Vec<T> {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        dec.array(1, T::decode)
    }
}

impl<T: Encode + ?Sized> Encode for &T {
    fn encoded_len(&self) -> usize {
        (**self).encoded_len()
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        (**self).encode(out);
    }
}
