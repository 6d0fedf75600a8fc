//! hyperdht values carried inside dht-rpc requests and replies, and the blind-relay messages:
//! the first byte picks the decoder, the rest is its input (as `decode_prefix`, the way the
//! routers, storage and connect code read them).
//!
//! | byte % 11 | type |
//! | --- | --- |
//! | 0 | `PeerRecord` | 1 `LookupReply` | 2 `Announce` | 3 `MutablePut` | 4 `MutableGet` |
//! | 5 | `HandshakeMessage` | 6 `HolepunchMessage` | 7 `NoisePayload` | 8 `HolepunchPayload` |
//! | 9 | blind-relay `Pair` | 10 blind-relay `Unpair` |
//!
//! Invariants: no panic; address lists within their caps; decode(encode(v)) == v and the
//! encoding is canonical (for `NoisePayload` after normalising the fields the encoder always
//! writes as 1: sub-versions and the secret-stream version).
#![no_main]

use corenet_dht::hyper::messages::{
    Announce, HandshakeMessage, HolepunchMessage, HolepunchPayload, LookupReply, MutableGet,
    MutablePut, NoisePayload, PeerRecord, MAX_ADDRESSES,
};
use corenet_dht::relay::messages::{Pair, Unpair};
use corenet_fuzz::{check_roundtrip, decode_and_check};
use libfuzzer_sys::fuzz_target;

fn noise_payload(input: &[u8]) {
    let Ok((p, used)) = corenet_codec::decode_prefix::<NoisePayload>(input) else {
        return;
    };
    assert!(used <= input.len());
    if p.version != 1 {
        // Other versions decode with every field empty (hyperdht does the same).
        assert_eq!(
            p,
            NoisePayload {
                version: p.version,
                ..NoisePayload::default()
            }
        );
        return;
    }
    assert!(p.addresses4.len() <= MAX_ADDRESSES && p.addresses6.len() <= MAX_ADDRESSES);
    assert!(p
        .holepunch
        .as_ref()
        .is_none_or(|h| h.relays.len() <= MAX_ADDRESSES));
    assert!(p
        .relay_addresses
        .as_ref()
        .is_none_or(|r| r.len() <= MAX_ADDRESSES));
    // The encoder writes version 1 for the udx and relayThrough sub-messages and for
    // secretStream; the decoder keeps what it read.
    let mut canonical = p.clone();
    if let Some(u) = &mut canonical.udx {
        u.version = 1;
    }
    if let Some(r) = &mut canonical.relay_through {
        r.version = 1;
    }
    if canonical.secret_stream.is_some() {
        canonical.secret_stream = Some(1);
    }
    check_roundtrip(&canonical);
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    match selector % 11 {
        0 => {
            if let Some(r) = decode_and_check::<PeerRecord>(input) {
                assert!(r.relay_addresses.len() <= MAX_ADDRESSES);
            }
        }
        1 => {
            decode_and_check::<LookupReply>(input);
        }
        2 => {
            decode_and_check::<Announce>(input);
        }
        3 => {
            decode_and_check::<MutablePut>(input);
        }
        4 => {
            decode_and_check::<MutableGet>(input);
        }
        5 => {
            decode_and_check::<HandshakeMessage>(input);
        }
        6 => {
            decode_and_check::<HolepunchMessage>(input);
        }
        7 => noise_payload(input),
        8 => {
            if let Some(p) = decode_and_check::<HolepunchPayload>(input) {
                assert!(p
                    .addresses
                    .as_ref()
                    .is_none_or(|a| a.len() <= MAX_ADDRESSES));
            }
        }
        9 => {
            decode_and_check::<Pair>(input);
        }
        _ => {
            decode_and_check::<Unpair>(input);
        }
    }
});
