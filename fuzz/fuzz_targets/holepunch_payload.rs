//! Sealed holepunch payloads (`SecurePayload::open`, hyperdht `lib/secure-payload.js`): every
//! PEER_HOLEPUNCH message carries one, relayed by DHT nodes anyone can run.
//!
//! The first byte picks the mode:
//! - even: the rest is a sealed payload as received (length checks, tag check);
//! - odd: the rest (after a 24-byte nonce) is a *plaintext*, sealed here under the
//!   connection's secret, so the fuzzer reaches the decoder behind the MAC.
//!
//! Invariants: no panic; in the sealed-here mode `open` succeeds exactly when the plaintext
//! is a well-formed `HolepunchPayload` (no trailing bytes) within the length limits, and
//! returns what `decode_exact` reads; an opened payload round-trips, and sealing it again
//! opens to the same value; address tokens are deterministic.
#![no_main]

use std::net::Ipv4Addr;

use corenet_codec::decode_exact;
use corenet_dht::hyper::messages::HolepunchPayload;
use corenet_dht::hyper::payload::{
    PayloadError, SecurePayload, MAC_LEN, MAX_SEALED_LEN, NONCE_LEN,
};
use corenet_fuzz::check_roundtrip;
use crypto_secretbox::aead::{AeadInPlace, KeyInit};
use crypto_secretbox::{Nonce, XSalsa20Poly1305};
use libfuzzer_sys::fuzz_target;

const SECRET: [u8; 32] = [7; 32];
const LOCAL: [u8; 32] = [9; 32];

fn check_opened(sp: &SecurePayload, p: &HolepunchPayload) {
    check_roundtrip(p);
    let again = sp.seal(p, [1; NONCE_LEN]);
    if again.len() <= MAX_SEALED_LEN {
        assert_eq!(sp.open(&again).as_ref(), Ok(p));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let sp = SecurePayload::new(SECRET, LOCAL);
    if mode & 1 == 0 {
        if let Ok(p) = sp.open(rest) {
            check_opened(&sp, &p);
        }
        if rest.len() >= 4 {
            let host = Ipv4Addr::new(rest[0], rest[1], rest[2], rest[3]);
            assert_eq!(
                sp.token(&host),
                SecurePayload::new(SECRET, LOCAL).token(&host)
            );
        }
        return;
    }
    if rest.len() < NONCE_LEN {
        return;
    }
    let (nonce, plain) = rest.split_at(NONCE_LEN);
    let mut body = plain.to_vec();
    let cipher = XSalsa20Poly1305::new(&SECRET.into());
    let Ok(tag) = cipher.encrypt_in_place_detached(Nonce::from_slice(nonce), b"", &mut body) else {
        return;
    };
    let mut sealed = Vec::with_capacity(NONCE_LEN + MAC_LEN + body.len());
    sealed.extend_from_slice(nonce);
    sealed.extend_from_slice(&tag);
    sealed.extend_from_slice(&body);
    let opened = sp.open(&sealed);
    if plain.is_empty() || sealed.len() > MAX_SEALED_LEN {
        assert_eq!(opened, Err(PayloadError::Length));
        return;
    }
    match decode_exact::<HolepunchPayload>(plain) {
        Ok(expected) => {
            assert_eq!(opened.as_ref(), Ok(&expected));
            check_opened(&sp, &expected);
        }
        Err(_) => assert_eq!(opened, Err(PayloadError::Decode)),
    }
    // Any flipped bit of the sealed bytes fails the tag (or the length check).
    let i = usize::from(mode >> 1) % sealed.len();
    sealed[i] ^= 0x80;
    assert!(sp.open(&sealed).is_err(), "a tampered payload opened");
});
