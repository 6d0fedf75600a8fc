//! The reading half of compact-encoding.

use std::net::{Ipv4Addr, SocketAddrV4};

use bytes::Bytes;

use crate::DecodeError;

/// A cursor over an encoded message.
///
/// It reads from a borrowed `&[u8]`; payloads come back as sub-slices of it, never copies. A
/// decoder made with [`Decoder::from_bytes`] also remembers the [`Bytes`] it reads from, so
/// [`Decoder::bytes`] can hand out reference-counted slices of it, again without copying.
///
/// Every read checks the remaining length first and returns [`DecodeError::Incomplete`]
/// when the input is short; no read panics, whatever the input.
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    /// The whole input.
    buf: &'a [u8],
    /// Offset of the next unread byte.
    pos: usize,
    /// The owner of `buf` when it is a `Bytes`, for zero-copy `Bytes` payloads.
    origin: Option<&'a Bytes>,
}

impl<'a> Decoder<'a> {
    /// A decoder over a borrowed slice.
    pub fn new(buf: &'a [u8]) -> Self {
        Decoder {
            buf,
            pos: 0,
            origin: None,
        }
    }

    /// A decoder over a [`Bytes`]; [`Decoder::bytes`] then shares its storage.
    pub fn from_bytes(buf: &'a Bytes) -> Self {
        Decoder {
            buf: buf.as_ref(),
            pos: 0,
            origin: Some(buf),
        }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// How many bytes have been read.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// True when every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Fails with [`DecodeError::Invalid`] unless every byte has been read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Invalid("trailing bytes"))
        }
    }

    /// Reads `n` raw bytes.
    pub fn raw(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let rem = self.remaining();
        if n > rem {
            return Err(DecodeError::Incomplete { needed: n - rem });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Reads everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    /// Reads a fixed-size array by reference.
    pub fn fixed_ref<const N: usize>(&mut self) -> Result<&'a [u8; N], DecodeError> {
        let s = self.raw(N)?;
        s.try_into()
            .map_err(|_| DecodeError::Invalid("fixed-size read"))
    }

    /// Reads a fixed-size array (`fixed32`, `fixed64`, ...).
    pub fn fixed<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        self.fixed_ref::<N>().copied()
    }

    /// Reads a `uint8`.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.fixed::<1>()?[0])
    }

    /// Reads a little-endian `uint16`.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.fixed()?))
    }

    /// Reads a little-endian `uint24`.
    pub fn u24(&mut self) -> Result<u32, DecodeError> {
        let b: [u8; 3] = self.fixed()?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], 0]))
    }

    /// Reads a little-endian `uint32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.fixed()?))
    }

    /// Reads a little-endian `uint64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.fixed()?))
    }

    /// Reads a compact-encoding `uint` (varint: one byte below `0xFD`, else a marker byte
    /// `0xFD`/`0xFE`/`0xFF` followed by a `uint16`/`uint32`/`uint64`).
    ///
    /// Like the JS decoder it accepts non-minimal encodings.
    pub fn uint(&mut self) -> Result<u64, DecodeError> {
        match self.u8()? {
            0xFD => Ok(u64::from(self.u16()?)),
            0xFE => Ok(u64::from(self.u32()?)),
            0xFF => self.u64(),
            n => Ok(u64::from(n)),
        }
    }

    /// Reads a `uint` that must fit a `u32`.
    pub fn uint32(&mut self) -> Result<u32, DecodeError> {
        u32::try_from(self.uint()?).map_err(|_| DecodeError::Invalid("uint does not fit 32 bits"))
    }

    /// Reads a `uint` used as a length or index in memory.
    pub fn usize(&mut self) -> Result<usize, DecodeError> {
        usize::try_from(self.uint()?).map_err(|_| DecodeError::Invalid("uint does not fit usize"))
    }

    /// Reads a zigzag-encoded signed `int`.
    pub fn int(&mut self) -> Result<i64, DecodeError> {
        let n = self.uint()?;
        Ok(((n >> 1) as i64) ^ -((n & 1) as i64))
    }

    /// Reads a `bool` (one byte, 1 is true).
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        Ok(self.u8()? == 1)
    }

    /// Reads a `buffer` (`uint` length, then the bytes), borrowed from the input.
    ///
    /// A null buffer (length 0) reads as an empty slice.
    pub fn buffer(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.length("buffer", 1)?;
        self.raw(len)
    }

    /// Reads a `buffer` as [`Bytes`]: a shared slice when decoding from `Bytes`, a copy
    /// otherwise.
    pub fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let s = self.buffer()?;
        Ok(self.share(s))
    }

    /// Reads `n` raw bytes as [`Bytes`] (shared when possible, see [`Decoder::bytes`]).
    pub fn raw_bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let s = self.raw(n)?;
        Ok(self.share(s))
    }

    /// Reads everything that is left as [`Bytes`].
    pub fn rest_bytes(&mut self) -> Bytes {
        let s = self.rest();
        self.share(s)
    }

    fn share(&self, s: &'a [u8]) -> Bytes {
        match self.origin {
            Some(origin) => origin.slice_ref(s),
            None => Bytes::copy_from_slice(s),
        }
    }

    /// Reads a UTF-8 `string` (`uint` length, then the bytes).
    pub fn string(&mut self) -> Result<&'a str, DecodeError> {
        let b = self.buffer()?;
        std::str::from_utf8(b).map_err(|_| DecodeError::Invalid("string is not UTF-8"))
    }

    /// Reads an `ipv4Address`: four octets, then the port as `uint16` LE.
    pub fn ipv4_address(&mut self) -> Result<SocketAddrV4, DecodeError> {
        let ip: [u8; 4] = self.fixed()?;
        let port = self.u16()?;
        Ok(SocketAddrV4::new(Ipv4Addr::from(ip), port))
    }

    /// Reads the `uint` count that starts an `array`, checked so that a remote count cannot
    /// make the caller allocate more than the input could hold: every item takes at least
    /// `min_item_len` bytes.
    pub fn array_len(&mut self, min_item_len: usize) -> Result<usize, DecodeError> {
        self.length("array", min_item_len.max(1))
    }

    /// Reads an `array` whose items are read by `item`.
    pub fn array<T>(
        &mut self,
        min_item_len: usize,
        mut item: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let n = self.array_len(min_item_len)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(item(self)?);
        }
        Ok(out)
    }

    /// Reads a length and checks it against what is left, so that an untrusted length never
    /// drives an allocation larger than the input.
    fn length(&mut self, what: &'static str, unit: usize) -> Result<usize, DecodeError> {
        let len = self.uint()?;
        let rem = self.remaining() as u64;
        let need = len.saturating_mul(unit as u64);
        if need > rem {
            return Err(DecodeError::Incomplete {
                needed: usize::try_from(need - rem).unwrap_or(usize::MAX),
            });
        }
        usize::try_from(len).map_err(|_| DecodeError::TooLarge {
            what,
            len,
            max: usize::MAX as u64,
        })
    }
}
