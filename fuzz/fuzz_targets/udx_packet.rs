//! UDX packet parsing (`corenet_udx::wire`): the 20-byte header, the SACK region and the
//! payload split, as every UDX socket parses datagrams from anyone.
//!
//! Invariants: no panic; the error says why (short, not UDX, bad data offset) and agrees
//! with `peek_stream_id` / `classify`; a parsed header re-encodes to the datagram's first 20
//! bytes; the payload is the tail after the data offset; SACK blocks fit the datagram, are at
//! most what the region holds, and re-encode to bytes that parse to the same blocks.
#![no_main]

use corenet_udx::core::{classify, Route};
use corenet_udx::wire::{
    encode_sacks, flags, peek_stream_id, Header, Packet, SackBlocks, WireError, HEADER_LEN, MAGIC,
    SACK_BLOCK_LEN, VERSION,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let header = Header::decode(data);
    let packet = Packet::decode(data);
    let is_udx = data.len() >= HEADER_LEN && data[0] == MAGIC && data[1] == VERSION;
    assert_eq!(peek_stream_id(data), header.ok().map(|h| h.id));
    assert_eq!(
        classify(data),
        match header {
            Ok(h) => Route::Stream(h.id),
            Err(_) => Route::Owner,
        }
    );
    let h = match header {
        Ok(h) => h,
        Err(WireError::Short(n)) => {
            assert!(n == data.len() && n < HEADER_LEN);
            assert_eq!(packet, Err(WireError::Short(n)));
            return;
        }
        Err(e) => {
            assert_eq!(e, WireError::NotUdx);
            assert!(!is_udx);
            assert_eq!(packet, Err(WireError::NotUdx));
            return;
        }
    };
    assert!(is_udx);
    let mut buf = [0u8; HEADER_LEN];
    h.encode(&mut buf).expect("20 bytes are enough");
    assert_eq!(&buf[..], &data[..HEADER_LEN]);
    let rest = &data[HEADER_LEN..];
    let p = match packet {
        Ok(p) => p,
        Err(WireError::BadDataOffset { offset, available }) => {
            assert_eq!(offset, h.data_offset);
            assert_eq!(available, rest.len());
            assert!(usize::from(offset) > rest.len());
            return;
        }
        Err(e) => panic!("a valid header gave {e:?}"),
    };
    assert_eq!(p.header, h);
    assert_eq!(p.payload, &rest[usize::from(h.data_offset)..]);
    if !h.has(flags::SACK) {
        assert!(p.sacks.is_empty());
    }
    let blocks: Vec<(u32, u32)> = p.sacks.iter().collect();
    assert_eq!(blocks.len(), p.sacks.len());
    assert!(blocks.len() * SACK_BLOCK_LEN <= rest.len());
    let mut out = vec![0u8; blocks.len() * SACK_BLOCK_LEN];
    assert_eq!(encode_sacks(&blocks, &mut out), Ok(out.len()));
    assert_eq!(
        &out[..],
        &rest[..out.len()],
        "SACK blocks are read from the region start"
    );
    assert_eq!(SackBlocks::new(&out).iter().collect::<Vec<_>>(), blocks);
    assert!(encode_sacks(&blocks, &mut [0u8; 7]).is_err() || blocks.is_empty());
});
