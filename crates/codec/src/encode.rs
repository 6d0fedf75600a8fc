//! The writing half of compact-encoding.
//!
//! Writers take any [`BufMut`] (a `Vec<u8>`, a `BytesMut`, a slice); the `*_len` functions
//! give the encoded size of each primitive so that a message can size its buffer first.

use std::net::SocketAddrV4;

use bytes::BufMut;

/// Encoded size of a compact-encoding `uint`.
pub const fn uint_len(n: u64) -> usize {
    if n <= 0xFC {
        1
    } else if n <= 0xFFFF {
        3
    } else if n <= 0xFFFF_FFFF {
        5
    } else {
        9
    }
}

/// Writes a compact-encoding `uint`.
pub fn uint(out: &mut impl BufMut, n: u64) {
    if n <= 0xFC {
        out.put_u8(n as u8);
    } else if n <= 0xFFFF {
        out.put_u8(0xFD);
        out.put_u16_le(n as u16);
    } else if n <= 0xFFFF_FFFF {
        out.put_u8(0xFE);
        out.put_u32_le(n as u32);
    } else {
        out.put_u8(0xFF);
        out.put_u64_le(n);
    }
}

/// Zigzag-maps a signed integer onto the `uint` space.
pub const fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

/// Encoded size of a zigzag `int`.
pub const fn int_len(n: i64) -> usize {
    uint_len(zigzag(n))
}

/// Writes a zigzag-encoded signed `int`.
pub fn int(out: &mut impl BufMut, n: i64) {
    uint(out, zigzag(n));
}

/// Writes a little-endian `uint24`. Values above `0xFF_FFFF` are a caller bug: debug builds
/// assert, release builds keep the low 24 bits.
pub fn u24(out: &mut impl BufMut, n: u32) {
    debug_assert!(n <= 0xFF_FFFF, "uint24 out of range");
    out.put_slice(&n.to_le_bytes()[..3]);
}

/// Writes a `bool` as one byte.
pub fn bool(out: &mut impl BufMut, b: bool) {
    out.put_u8(u8::from(b));
}

/// Encoded size of a `buffer` or `string` of `len` bytes.
pub const fn buffer_len(len: usize) -> usize {
    uint_len(len as u64) + len
}

/// Writes a `buffer`: its length as `uint`, then the bytes.
pub fn buffer(out: &mut impl BufMut, b: &[u8]) {
    uint(out, b.len() as u64);
    out.put_slice(b);
}

/// Writes a UTF-8 `string`.
pub fn string(out: &mut impl BufMut, s: &str) {
    buffer(out, s.as_bytes());
}

/// Encoded size of an `ipv4Address`.
pub const IPV4_ADDRESS_LEN: usize = 6;

/// Writes an `ipv4Address`: four octets, then the port as `uint16` LE.
pub fn ipv4_address(out: &mut impl BufMut, addr: &SocketAddrV4) {
    out.put_slice(&addr.ip().octets());
    out.put_u16_le(addr.port());
}

/// Encoded size of an `array` header for `n` items (the items are counted by the caller).
pub const fn array_len(n: usize) -> usize {
    uint_len(n as u64)
}
