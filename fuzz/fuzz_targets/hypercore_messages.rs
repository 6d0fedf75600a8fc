//! The `hypercore/alpha` replication channel's messages (`corenet_replication::messages`):
//! the ten message types by their protomux type, the channel handshake, manifests and the
//! multisig signature encodings that arrive inside `data` upgrades.
//!
//! The first byte picks the decoder: `0..=9` a message of that type (`Message::decode`, as
//! the replicator reads a channel message), 10 the channel `Handshake`, 11 a `Manifest`, 12
//! a `MultiSignature`, 13 a version-0 `MultiSignatureV0`.
//!
//! Invariants: no panic; allocation bounded by the input (arrays are checked against what is
//! left); decode(encode(m)) == m and the encoding is canonical.
#![no_main]

use bytes::Bytes;
use corenet_codec::{to_vec, Encode};
use corenet_fuzz::decode_and_check;
use corenet_replication::manifest::MultiSignatureV0;
use corenet_replication::messages::{Handshake, Message};
use corenet_replication::{Manifest, MultiSignature};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    match selector % 14 {
        t @ 0..=9 => {
            let payload = Bytes::copy_from_slice(input);
            let Ok(Some(m)) = Message::decode(u64::from(t), &payload) else {
                return;
            };
            assert_eq!(m.message_type(), u64::from(t));
            let bytes = to_vec(&m);
            assert_eq!(bytes.len(), m.encoded_len());
            let back = Message::decode(u64::from(t), &Bytes::from(bytes.clone()))
                .expect("re-encoded message decodes")
                .expect("a known type");
            assert_eq!(back, m, "decode(encode(m)) != m");
            assert_eq!(to_vec(&back), bytes, "encoding is not canonical");
        }
        10 => {
            decode_and_check::<Handshake>(input);
        }
        11 => {
            decode_and_check::<Manifest>(input);
        }
        12 => {
            decode_and_check::<MultiSignature>(input);
        }
        _ => {
            decode_and_check::<MultiSignatureV0>(input);
        }
    }
});
