//! Property tests: every encoder/decoder pair round-trips, `encoded_len` is exact, and every
//! truncation is rejected with an error (never a panic).

use std::net::{Ipv4Addr, SocketAddrV4};

use bytes::Bytes;
use corenet_codec::{decode_exact, encode, to_vec, Decode, DecodeError, Decoder, Encode};
use proptest::prelude::*;

/// A message using every primitive, with flag-driven optional fields.
#[derive(Debug, Clone, PartialEq)]
struct Everything {
    a: u64,
    b: i64,
    c: u8,
    d: u16,
    e: u32,
    f: u64,
    g: u32, // uint24
    key: [u8; 32],
    sig: [u8; 64],
    buf: Vec<u8>,
    text: String,
    addr: SocketAddrV4,
    addrs: Vec<SocketAddrV4>,
    opt_buf: Option<Vec<u8>>,
    opt_uint: Option<u64>,
    flag: bool,
}

impl Encode for Everything {
    fn encoded_len(&self) -> usize {
        encode::uint_len(self.flags())
            + encode::uint_len(self.a)
            + encode::int_len(self.b)
            + 1
            + 2
            + 4
            + 8
            + 3
            + 32
            + 64
            + self.buf.as_slice().encoded_len()
            + self.text.encoded_len()
            + self.addr.encoded_len()
            + self.addrs.encoded_len()
            + self
                .opt_buf
                .as_ref()
                .map_or(0, |b| b.as_slice().encoded_len())
            + self.opt_uint.map_or(0, encode::uint_len)
            + 1
    }
    fn encode<B: bytes::BufMut>(&self, out: &mut B) {
        encode::uint(out, self.flags());
        encode::uint(out, self.a);
        encode::int(out, self.b);
        out.put_u8(self.c);
        out.put_u16_le(self.d);
        out.put_u32_le(self.e);
        out.put_u64_le(self.f);
        encode::u24(out, self.g);
        self.key.encode(out);
        self.sig.encode(out);
        self.buf.as_slice().encode(out);
        self.text.encode(out);
        self.addr.encode(out);
        self.addrs.encode(out);
        if let Some(b) = &self.opt_buf {
            b.as_slice().encode(out);
        }
        if let Some(n) = self.opt_uint {
            encode::uint(out, n);
        }
        self.flag.encode(out);
    }
}

impl Everything {
    fn flags(&self) -> u64 {
        let mut f = corenet_codec::Flags::default();
        f.set(1, self.opt_buf.is_some());
        f.set(2, self.opt_uint.is_some());
        f.bits()
    }
}

impl<'a> Decode<'a> for Everything {
    fn decode(d: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        let flags = corenet_codec::Flags::from_bits(d.uint()?);
        Ok(Everything {
            a: d.uint()?,
            b: d.int()?,
            c: d.u8()?,
            d: d.u16()?,
            e: d.u32()?,
            f: d.u64()?,
            g: d.u24()?,
            key: d.fixed()?,
            sig: d.fixed()?,
            buf: d.buffer()?.to_vec(),
            text: String::decode(d)?,
            addr: d.ipv4_address()?,
            addrs: d.array(6, Decoder::ipv4_address)?,
            opt_buf: if flags.has(1) {
                Some(d.buffer()?.to_vec())
            } else {
                None
            },
            opt_uint: if flags.has(2) { Some(d.uint()?) } else { None },
            flag: d.bool()?,
        })
    }
}

fn addr() -> impl Strategy<Value = SocketAddrV4> {
    (any::<[u8; 4]>(), any::<u16>())
        .prop_map(|(ip, port)| SocketAddrV4::new(Ipv4Addr::from(ip), port))
}

/// Integers biased toward the varint boundaries.
fn uint() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..0x100,
        0xF0u64..0x1_0010,
        0xFFF0u64..0x1_0000_0010,
        0xFFFF_FFF0u64..=u64::MAX,
        any::<u64>(),
    ]
}

fn everything() -> impl Strategy<Value = Everything> {
    (
        (
            uint(),
            any::<i64>(),
            any::<u8>(),
            any::<u16>(),
            any::<u32>(),
            any::<u64>(),
            0u32..0x100_0000,
        ),
        (
            any::<[u8; 32]>(),
            proptest::collection::vec(any::<u8>(), 64),
            proptest::collection::vec(any::<u8>(), 0..300),
        ),
        (".{0,40}", addr(), proptest::collection::vec(addr(), 0..5)),
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            proptest::option::of(uint()),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (a, b, c, d, e, f, g),
                (key, sig, buf),
                (text, addr, addrs),
                (opt_buf, opt_uint, flag),
            )| Everything {
                a,
                b,
                c,
                d,
                e,
                f,
                g,
                key,
                sig: sig.try_into().unwrap(),
                buf,
                text,
                addr,
                addrs,
                opt_buf,
                opt_uint,
                flag,
            },
        )
}

proptest! {
    #[test]
    fn round_trip_and_exact_length(v in everything()) {
        let bytes = to_vec(&v);
        prop_assert_eq!(bytes.len(), v.encoded_len());
        prop_assert_eq!(decode_exact::<Everything>(&bytes).unwrap(), v.clone());
        // From Bytes too (zero-copy path).
        let shared = Bytes::from(bytes.clone());
        prop_assert_eq!(corenet_codec::decode_bytes::<Everything>(&shared).unwrap(), v);
    }

    #[test]
    fn every_truncation_is_an_error(v in everything()) {
        let bytes = to_vec(&v);
        for cut in 0..bytes.len() {
            let r = decode_exact::<Everything>(&bytes[..cut]);
            prop_assert!(r.is_err(), "truncated at {} decoded", cut);
        }
    }

    #[test]
    fn uint_round_trip(n in uint()) {
        let mut out = Vec::new();
        encode::uint(&mut out, n);
        prop_assert_eq!(out.len(), encode::uint_len(n));
        let mut d = Decoder::new(&out);
        prop_assert_eq!(d.uint().unwrap(), n);
        prop_assert!(d.is_empty());
        for cut in 0..out.len() {
            prop_assert!(Decoder::new(&out[..cut]).uint().unwrap_err().is_incomplete());
        }
    }

    #[test]
    fn z32_and_hex_keys_round_trip(bytes in any::<[u8; 32]>()) {
        let key = corenet_codec::PublicKey(bytes);
        let z32 = key.to_z32();
        prop_assert_eq!(z32.len(), corenet_codec::Z32_KEY_LEN);
        prop_assert_eq!(z32.parse::<corenet_codec::PublicKey>().unwrap(), key);
        prop_assert_eq!(key.to_hex().parse::<corenet_codec::PublicKey>().unwrap(), key);
    }

    #[test]
    fn int_round_trip(n in any::<i64>()) {
        let mut out = Vec::new();
        encode::int(&mut out, n);
        prop_assert_eq!(Decoder::new(&out).int().unwrap(), n);
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_exact::<Everything>(&bytes);
        let _ = decode_exact::<Vec<&[u8]>>(&bytes);
        let _ = decode_exact::<Vec<String>>(&bytes);
    }
}

#[test]
fn uint_boundaries_match_js() {
    // compact-encoding: n <= 0xfc is one byte.
    let cases: [(u64, &[u8]); 6] = [
        (0, &[0]),
        (0xFC, &[0xFC]),
        (0xFD, &[0xFD, 0xFD, 0x00]),
        (0xFFFF, &[0xFD, 0xFF, 0xFF]),
        (0x1_0000, &[0xFE, 0x00, 0x00, 0x01, 0x00]),
        (0x1_0000_0000, &[0xFF, 0, 0, 0, 0, 1, 0, 0, 0]),
    ];
    for (n, want) in cases {
        let mut out = Vec::new();
        encode::uint(&mut out, n);
        assert_eq!(out, want, "{n}");
    }
}

#[test]
fn huge_lengths_do_not_allocate() {
    // A buffer that claims 2^64-1 bytes, and an array that claims 2^32 items.
    let buf = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2];
    assert!(Decoder::new(&buf).buffer().unwrap_err().is_incomplete());
    let arr = [0xFE, 0, 0, 0, 1];
    assert!(decode_exact::<Vec<&[u8]>>(&arr).is_err());
}

#[test]
fn ipv4_address_layout() {
    let a = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 49737);
    assert_eq!(to_vec(&a), [127, 0, 0, 1, 0x49, 0xC2]);
}

#[test]
fn bytes_payloads_share_storage() {
    let mut out = Vec::new();
    encode::buffer(&mut out, b"payload");
    let shared = Bytes::from(out);
    let got: Bytes = corenet_codec::decode_bytes(&shared).unwrap();
    assert_eq!(&got[..], b"payload");
    // Same allocation: the slice points inside `shared`.
    let base = shared.as_ptr() as usize;
    let p = got.as_ptr() as usize;
    assert!(p > base && p < base + shared.len());
}
