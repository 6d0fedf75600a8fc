//! The `blind-relay` messages: `pair` (type 0) and `unpair` (type 1).
//!
//! ```text
//! pair:   bitfield(7) flags (bit 0: isInitiator) | fixed32 token | uint stream id | uint seq
//! unpair: bitfield(0) flags | fixed32 token
//! ```
//! A `bitfield(7)` is one byte (compact-encoding-bitfield: fewer than 8 bits).

use bytes::BufMut;
use corenet_codec::{encode, Decode, DecodeError, Decoder, Encode};

/// `pair`: a side asks to be paired (or the relay answers with the stream it made).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    /// The side that offered the relay.
    pub is_initiator: bool,
    /// The token both sides present.
    pub token: [u8; 32],
    /// The sender's UDX stream id.
    pub id: u32,
    /// Initial sequence number (always 0).
    pub seq: u64,
}

/// `unpair`: cancel the pairing (or the link) of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpair {
    /// The token.
    pub token: [u8; 32],
}

/// Reads a one-byte bitfield (compact-encoding-bitfield with fewer than 8 bits).
fn read_flags(d: &mut Decoder<'_>) -> Result<u8, DecodeError> {
    let b = d.u8()?;
    if b > 0xfc {
        // A longer bitfield: not what this protocol sends.
        return Err(DecodeError::Invalid("blind-relay flags"));
    }
    Ok(b)
}

impl Encode for Pair {
    fn encoded_len(&self) -> usize {
        1 + 32 + encode::uint_len(u64::from(self.id)) + encode::uint_len(self.seq)
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        out.put_u8(u8::from(self.is_initiator));
        out.put_slice(&self.token);
        encode::uint(out, u64::from(self.id));
        encode::uint(out, self.seq);
    }
}

impl<'a> Decode<'a> for Pair {
    fn decode(d: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        let flags = read_flags(d)?;
        let token = d.fixed()?;
        let id = d.uint()?;
        let id = u32::try_from(id).map_err(|_| DecodeError::Invalid("UDX stream id"))?;
        Ok(Pair {
            is_initiator: flags & 1 != 0,
            token,
            id,
            seq: d.uint()?,
        })
    }
}

impl Encode for Unpair {
    fn encoded_len(&self) -> usize {
        33
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        out.put_u8(0);
        out.put_slice(&self.token);
    }
}

impl<'a> Decode<'a> for Unpair {
    fn decode(d: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        read_flags(d)?;
        Ok(Unpair { token: d.fixed()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corenet_codec::{decode_exact, to_vec};
    use proptest::prelude::*;

    /// Bytes from the JS `blind-relay` 1.6.1 encoders.
    #[test]
    fn js_vectors() {
        let t = [9u8; 32];
        let cases = [
            (
                Pair {
                    is_initiator: true,
                    token: t,
                    id: 300,
                    seq: 0,
                },
                "010909090909090909090909090909090909090909090909090909090909090909fd2c0100",
            ),
            (
                Pair {
                    is_initiator: false,
                    token: t,
                    id: 5,
                    seq: 0,
                },
                "0009090909090909090909090909090909090909090909090909090909090909090500",
            ),
        ];
        for (p, hex) in cases {
            assert_eq!(hex::encode(to_vec(&p)), hex);
            assert_eq!(decode_exact::<Pair>(&hex::decode(hex).unwrap()), Ok(p));
        }
        let u = Unpair { token: t };
        let hex = "000909090909090909090909090909090909090909090909090909090909090909";
        assert_eq!(hex::encode(to_vec(&u)), hex);
        assert_eq!(decode_exact::<Unpair>(&hex::decode(hex).unwrap()), Ok(u));
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(decode_exact::<Pair>(&[0xfd, 0, 0]).is_err());
        assert!(decode_exact::<Pair>(&[1; 10]).is_err());
        // A stream id beyond u32.
        let mut b = vec![0u8; 33];
        b.extend_from_slice(&[0xfe, 0, 0, 0, 0, 1, 0]);
        let mut v = b.clone();
        v[33] = 0xff;
        v.extend_from_slice(&[0; 5]);
        assert!(decode_exact::<Pair>(&v).is_err());
    }

    proptest! {
        #[test]
        fn pair_round_trip(init: bool, token: [u8; 32], id: u32, seq in 0u64..1 << 40) {
            let p = Pair { is_initiator: init, token, id, seq };
            let b = to_vec(&p);
            prop_assert_eq!(b.len(), p.encoded_len());
            prop_assert_eq!(decode_exact::<Pair>(&b), Ok(p));
            for cut in 0..b.len() {
                prop_assert!(decode_exact::<Pair>(&b[..cut]).is_err());
            }
        }
    }
}
