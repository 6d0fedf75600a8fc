//! The UDX wire format (libudx `udx_write_header` / `process_packet`): a 20-byte little-endian
//! header, optional SACK blocks or MTU-probe padding, then the payload.
//!
//! ```text
//! 0      1        2      3            4        8       12      16      20
//! | 0xFF | 0x01   | type | data offset | id u32 | rwnd  | seq   | ack   | [sacks | padding] payload
//! ```
//!
//! Every decoder here returns an error for malformed bytes and never panics.

/// First byte of every UDX packet (`UDX_MAGIC_BYTE`).
pub const MAGIC: u8 = 0xFF;
/// Second byte: the protocol version (`UDX_VERSION`).
pub const VERSION: u8 = 0x01;
/// Header length in bytes (`UDX_HEADER_SIZE`).
pub const HEADER_LEN: usize = 20;
/// At most this many SACK blocks in one packet (`UDX_MAX_SACKS`).
pub const MAX_SACK_BLOCKS: usize = 50;
/// One SACK block: `u32le start, u32le end`.
pub const SACK_BLOCK_LEN: usize = 8;
/// JS sockets read into a 2048-byte buffer and truncate anything longer
/// (`UDX_SOCKET_PACKET_BUFFER_SIZE`): never send a larger datagram.
pub const MAX_DATAGRAM: usize = 2048;

/// Bit flags of the header's type byte.
pub mod flags {
    /// Carries stream bytes; uses a sequence number.
    pub const DATA: u8 = 0x01;
    /// Graceful end of the sender's write side; uses a sequence number.
    pub const END: u8 = 0x02;
    /// SACK blocks follow the header.
    pub const SACK: u8 = 0x04;
    /// Unordered, unreliable datagram for the stream.
    pub const MESSAGE: u8 = 0x08;
    /// Abortive close.
    pub const DESTROY: u8 = 0x10;
    /// Asks for an immediate ACK (keepalive, zero-window probe).
    pub const HEARTBEAT: u8 = 0x20;
}

/// Wrapping comparison of sequence numbers: `a - b` as a signed 32-bit difference.
#[inline]
pub fn seq_diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

/// `a < b` in sequence space.
#[inline]
pub fn seq_lt(a: u32, b: u32) -> bool {
    seq_diff(a, b) < 0
}

/// `a <= b` in sequence space.
#[inline]
pub fn seq_le(a: u32, b: u32) -> bool {
    seq_diff(a, b) <= 0
}

/// The fixed 20-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// Type flags (see [`flags`]); unknown bits are kept and ignored.
    pub flags: u8,
    /// Bytes between the header and the payload (MTU-probe padding, or SACK blocks).
    pub data_offset: u8,
    /// The **receiver's** stream id.
    pub id: u32,
    /// The sender's receive window in bytes.
    pub rwnd: u32,
    /// The sender's sequence number (its own for DATA/END/DESTROY, else its next unused one).
    pub seq: u32,
    /// Cumulative ack: the next sequence number the sender expects.
    pub ack: u32,
}

/// Why bytes are not a UDX packet, or not a well-formed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Shorter than the 20-byte header.
    #[error("datagram of {0} bytes is shorter than the UDX header")]
    Short(usize),
    /// First two bytes are not `FF 01`.
    #[error("not a UDX packet (magic or version mismatch)")]
    NotUdx,
    /// The data offset points past the end of the datagram.
    #[error("data offset {offset} beyond the {available} bytes after the header")]
    BadDataOffset {
        /// The header's data offset.
        offset: u8,
        /// Bytes after the header.
        available: usize,
    },
    /// A buffer given to an encoder is too small.
    #[error("output buffer too small")]
    BufferTooSmall,
}

impl Header {
    /// Reads the header, checking magic and version.
    pub fn decode(bytes: &[u8]) -> Result<Header, WireError> {
        let h: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(WireError::Short(bytes.len()))?;
        if h[0] != MAGIC || h[1] != VERSION {
            return Err(WireError::NotUdx);
        }
        Ok(Header {
            flags: h[2],
            data_offset: h[3],
            id: u32::from_le_bytes([h[4], h[5], h[6], h[7]]),
            rwnd: u32::from_le_bytes([h[8], h[9], h[10], h[11]]),
            seq: u32::from_le_bytes([h[12], h[13], h[14], h[15]]),
            ack: u32::from_le_bytes([h[16], h[17], h[18], h[19]]),
        })
    }

    /// Writes the header into the first 20 bytes of `out`.
    pub fn encode(&self, out: &mut [u8]) -> Result<(), WireError> {
        let h: &mut [u8; HEADER_LEN] = out
            .get_mut(..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(WireError::BufferTooSmall)?;
        h[0] = MAGIC;
        h[1] = VERSION;
        h[2] = self.flags;
        h[3] = self.data_offset;
        h[4..8].copy_from_slice(&self.id.to_le_bytes());
        h[8..12].copy_from_slice(&self.rwnd.to_le_bytes());
        h[12..16].copy_from_slice(&self.seq.to_le_bytes());
        h[16..20].copy_from_slice(&self.ack.to_le_bytes());
        Ok(())
    }

    /// True if any bit of `flag` is set.
    #[inline]
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// The stream id of a UDX packet, or `None` for anything the socket should hand to its owner
/// instead (shorter than a header, or not starting with `FF 01`).
#[inline]
pub fn peek_stream_id(datagram: &[u8]) -> Option<u32> {
    match datagram {
        [MAGIC, VERSION, _, _, a, b, c, d, ..] if datagram.len() >= HEADER_LEN => {
            Some(u32::from_le_bytes([*a, *b, *c, *d]))
        }
        _ => None,
    }
}

/// A parsed packet borrowing the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The header.
    pub header: Header,
    /// The raw SACK region (a multiple of 8 bytes; empty unless the SACK flag is set).
    pub sacks: SackBlocks<'a>,
    /// The payload after the data offset (empty for pure acks).
    pub payload: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Parses a datagram the way libudx does: the SACK region is `data_offset` bytes if
    /// `0 < data_offset < payload`, else the whole rest; the payload starts after
    /// `data_offset`, and an offset beyond the datagram is an error.
    pub fn decode(datagram: &'a [u8]) -> Result<Packet<'a>, WireError> {
        let header = Header::decode(datagram)?;
        let rest = datagram.get(HEADER_LEN..).unwrap_or_default();
        let offset = usize::from(header.data_offset);
        let sacks = if header.has(flags::SACK) {
            let region = if offset > 0 && offset < rest.len() {
                &rest[..offset]
            } else {
                rest
            };
            let n = region.len() / SACK_BLOCK_LEN;
            SackBlocks(&region[..n * SACK_BLOCK_LEN])
        } else {
            SackBlocks(&[])
        };
        let payload = rest.get(offset..).ok_or(WireError::BadDataOffset {
            offset: header.data_offset,
            available: rest.len(),
        })?;
        Ok(Packet {
            header,
            sacks,
            payload,
        })
    }
}

/// SACK blocks as they sit on the wire: `[start, end)` pairs of u32le.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SackBlocks<'a>(&'a [u8]);

impl<'a> SackBlocks<'a> {
    /// Wraps raw bytes; a trailing partial block is ignored.
    pub fn new(bytes: &'a [u8]) -> Self {
        let n = bytes.len() / SACK_BLOCK_LEN;
        SackBlocks(&bytes[..n * SACK_BLOCK_LEN])
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.0.len() / SACK_BLOCK_LEN
    }

    /// True when there are no blocks.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The blocks as `(start, end)` pairs, in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u32)> + 'a {
        self.0.chunks_exact(SACK_BLOCK_LEN).map(|c| {
            (
                u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            )
        })
    }
}

/// Writes SACK blocks after a header into `out` and returns the bytes written.
pub fn encode_sacks(blocks: &[(u32, u32)], out: &mut [u8]) -> Result<usize, WireError> {
    let len = blocks.len() * SACK_BLOCK_LEN;
    let region = out.get_mut(..len).ok_or(WireError::BufferTooSmall)?;
    for (chunk, (s, e)) in region.chunks_exact_mut(SACK_BLOCK_LEN).zip(blocks) {
        chunk[..4].copy_from_slice(&s.to_le_bytes());
        chunk[4..].copy_from_slice(&e.to_le_bytes());
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> impl Strategy<Value = Header> {
        (
            any::<u8>(),
            any::<u8>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
        )
            .prop_map(|(flags, data_offset, id, rwnd, seq, ack)| Header {
                flags,
                data_offset,
                id,
                rwnd,
                seq,
                ack,
            })
    }

    #[test]
    fn known_bytes() {
        // A DATA packet to stream 0x01020304, rwnd 4 MiB, seq 7, ack 9, payload "hi".
        let h = Header {
            flags: flags::DATA,
            data_offset: 0,
            id: 0x0102_0304,
            rwnd: 4_194_304,
            seq: 7,
            ack: 9,
        };
        let mut b = [0u8; 22];
        h.encode(&mut b).unwrap();
        b[20..].copy_from_slice(b"hi");
        assert_eq!(
            b[..20],
            [
                0xff, 0x01, 0x01, 0x00, 0x04, 0x03, 0x02, 0x01, 0x00, 0x00, 0x40, 0x00, 7, 0, 0, 0,
                9, 0, 0, 0
            ]
        );
        let p = Packet::decode(&b).unwrap();
        assert_eq!(p.header, h);
        assert_eq!(p.payload, b"hi");
        assert_eq!(peek_stream_id(&b), Some(0x0102_0304));
    }

    #[test]
    fn not_udx() {
        assert_eq!(peek_stream_id(&[0x03; 40]), None);
        assert_eq!(peek_stream_id(&[0xff, 0x02, 0, 0, 1, 0, 0, 0]), None);
        assert_eq!(peek_stream_id(&[0xff, 0x01, 0, 0, 1, 0, 0, 0]), None); // short
        assert_eq!(
            Header::decode(&[0xff, 0x02].repeat(10)),
            Err(WireError::NotUdx)
        );
        assert_eq!(Header::decode(&[0x00]), Err(WireError::Short(1)));
    }

    #[test]
    fn padded_probe_and_bad_offset() {
        let h = Header {
            flags: flags::DATA,
            data_offset: 5,
            ..Header::default()
        };
        let mut b = vec![0u8; 20 + 5 + 3];
        h.encode(&mut b).unwrap();
        b[25..].copy_from_slice(b"abc");
        assert_eq!(Packet::decode(&b).unwrap().payload, b"abc");
        // Offset exactly at the end: empty payload, fine.
        assert_eq!(Packet::decode(&b[..25]).unwrap().payload, b"");
        assert_eq!(
            Packet::decode(&b[..24]),
            Err(WireError::BadDataOffset {
                offset: 5,
                available: 4
            })
        );
    }

    #[test]
    fn sack_region_rules() {
        let h = Header {
            flags: flags::SACK,
            ..Header::default()
        };
        let mut b = vec![0u8; 20 + 16 + 3];
        h.encode(&mut b).unwrap();
        encode_sacks(&[(5, 7), (9, 12)], &mut b[20..]).unwrap();
        let p = Packet::decode(&b).unwrap();
        assert_eq!(p.sacks.iter().collect::<Vec<_>>(), [(5, 7), (9, 12)]);
        // data offset 8 limits the region to one block, the payload follows it.
        b[3] = 8;
        let p = Packet::decode(&b).unwrap();
        assert_eq!(p.sacks.iter().collect::<Vec<_>>(), [(5, 7)]);
        assert_eq!(p.payload.len(), 8 + 3);
    }

    proptest! {
        #[test]
        fn header_round_trip(h in header(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut b = vec![0u8; HEADER_LEN];
            h.encode(&mut b).unwrap();
            prop_assert_eq!(b.len(), HEADER_LEN);
            b.extend_from_slice(&payload);
            prop_assert_eq!(Header::decode(&b).unwrap(), h);
            prop_assert_eq!(peek_stream_id(&b), Some(h.id));
            // Decoding a whole packet never panics; the payload is what follows the offset.
            match Packet::decode(&b) {
                Ok(p) => prop_assert_eq!(p.payload, &payload[usize::from(h.data_offset)..]),
                Err(e) => { let bad = matches!(e, WireError::BadDataOffset { .. }); prop_assert!(bad) }
            }
            // Every truncation of the header is an error.
            for cut in 0..HEADER_LEN {
                prop_assert!(Header::decode(&b[..cut]).is_err());
                prop_assert_eq!(peek_stream_id(&b[..cut]), None);
            }
        }

        #[test]
        fn sacks_round_trip(blocks in proptest::collection::vec((any::<u32>(), any::<u32>()), 0..=MAX_SACK_BLOCKS)) {
            let mut b = vec![0u8; HEADER_LEN + blocks.len() * SACK_BLOCK_LEN];
            Header { flags: flags::SACK, ..Header::default() }.encode(&mut b).unwrap();
            let n = encode_sacks(&blocks, &mut b[HEADER_LEN..]).unwrap();
            prop_assert_eq!(n, blocks.len() * SACK_BLOCK_LEN);
            let p = Packet::decode(&b).unwrap();
            prop_assert_eq!(p.sacks.iter().collect::<Vec<_>>(), blocks.clone());
            prop_assert_eq!(p.sacks.len(), blocks.len());
            if !blocks.is_empty() {
                prop_assert!(encode_sacks(&blocks, &mut b[HEADER_LEN..HEADER_LEN + n - 1]).is_err());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Packet::decode(&b);
            let _ = peek_stream_id(&b);
        }
    }
}
