//! Sealed holepunch payloads and address tokens (hyperdht `lib/secure-payload.js`).
//!
//! Every PEER_HOLEPUNCH message carries a [`HolepunchPayload`] sealed with XSalsa20-Poly1305
//! (libsodium `crypto_secretbox_easy`) under the connection's holepunch secret
//! ([`holepunch_secret`](super::crypto::holepunch_secret)), laid out as
//! `nonce (24) | mac (16) | ciphertext`. Only the two ends of the Noise handshake know the
//! secret, so the DHT nodes relaying the messages can neither read nor forge them.
//!
//! An *address token* proves that a message came through a given address: a side issues
//! `BLAKE2b-256(key = local secret, host)` for the host it sees the other side at, and the
//! other side echoes it in a later round. The local secret never leaves this process.
//!
//! Sans-IO: nonces and the local secret come from the caller (the core's seeded RNG).

use std::net::Ipv4Addr;

use bytes::Bytes;
use corenet_codec::hash::blake2b_256_keyed;
use corenet_codec::{decode_exact, to_vec};
use crypto_secretbox::aead::{AeadInPlace, KeyInit};
use crypto_secretbox::{Nonce, Tag, XSalsa20Poly1305};

use super::messages::HolepunchPayload;

/// Bytes of the nonce that starts a sealed payload.
pub const NONCE_LEN: usize = 24;
/// Bytes of the Poly1305 tag after the nonce.
pub const MAC_LEN: usize = 16;
/// Largest sealed payload we open. A payload holds at most 64 addresses and two tokens
/// (under 500 bytes); anything bigger is not a hyperdht payload.
pub const MAX_SEALED_LEN: usize = 1024;

/// Why a sealed payload was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// Shorter than a nonce and a tag, or larger than [`MAX_SEALED_LEN`].
    #[error("holepunch payload has an impossible length")]
    Length,
    /// The tag did not verify: wrong secret, or tampered with.
    #[error("holepunch payload failed to open")]
    Open,
    /// It opened but the plaintext is not a holepunch payload.
    #[error("holepunch payload does not decode")]
    Decode,
}

/// Seals and opens the holepunch payloads of one connection and issues its address tokens.
pub struct SecurePayload {
    cipher: XSalsa20Poly1305,
    local_secret: [u8; 32],
}

impl std::fmt::Debug for SecurePayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurePayload").finish_non_exhaustive()
    }
}

impl SecurePayload {
    /// Payloads sealed under `holepunch_secret`; tokens keyed by `local_secret` (32 random
    /// bytes of the caller's RNG, new per connection).
    pub fn new(holepunch_secret: [u8; 32], local_secret: [u8; 32]) -> Self {
        SecurePayload {
            cipher: XSalsa20Poly1305::new(&holepunch_secret.into()),
            local_secret,
        }
    }

    /// Seals `payload` with `nonce` (24 random bytes, never reused under one secret).
    pub fn seal(&self, payload: &HolepunchPayload, nonce: [u8; NONCE_LEN]) -> Bytes {
        let mut body = to_vec(payload);
        let tag = self
            .cipher
            .encrypt_in_place_detached(&Nonce::from(nonce), b"", &mut body)
            // Only fails for plaintexts over 256 GiB.
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + MAC_LEN + body.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&tag);
        out.extend_from_slice(&body);
        Bytes::from(out)
    }

    /// Opens a sealed payload.
    pub fn open(&self, sealed: &[u8]) -> Result<HolepunchPayload, PayloadError> {
        // JS requires a non-empty plaintext (`end <= start` is refused).
        if sealed.len() <= NONCE_LEN + MAC_LEN || sealed.len() > MAX_SEALED_LEN {
            return Err(PayloadError::Length);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (tag, body) = rest.split_at(MAC_LEN);
        let mut body = body.to_vec();
        let nonce = Nonce::from_slice(nonce);
        let tag = Tag::from_slice(tag);
        self.cipher
            .decrypt_in_place_detached(nonce, b"", &mut body, tag)
            .map_err(|_| PayloadError::Open)?;
        decode_exact::<HolepunchPayload>(&body).map_err(|_| PayloadError::Decode)
    }

    /// The token for `host`: `BLAKE2b-256(key = local secret, host as dotted decimal)`.
    pub fn token(&self, host: &Ipv4Addr) -> [u8; 32] {
        blake2b_256_keyed(&self.local_secret, host.to_string().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddrV4;

    fn sample() -> HolepunchPayload {
        HolepunchPayload {
            connected: false,
            punching: true,
            error: 0,
            firewall: 2,
            round: 1,
            addresses: Some(vec![SocketAddrV4::new(Ipv4Addr::new(44, 0, 1, 2), 4000)]),
            remote_address: None,
            token: Some([7; 32]),
            remote_token: None,
        }
    }

    #[test]
    fn seal_open_round_trip() {
        let p = SecurePayload::new([1; 32], [2; 32]);
        let sealed = p.seal(&sample(), [3; 24]);
        assert_eq!(&sealed[..24], &[3; 24]);
        assert_eq!(p.open(&sealed), Ok(sample()));
    }

    #[test]
    fn tampering_and_wrong_keys_are_refused() {
        let p = SecurePayload::new([1; 32], [2; 32]);
        let sealed = p.seal(&sample(), [3; 24]);
        for i in [0, 24, 40, sealed.len() - 1] {
            let mut bad = sealed.to_vec();
            bad[i] ^= 1;
            assert_eq!(p.open(&bad), Err(PayloadError::Open), "byte {i}");
        }
        let other = SecurePayload::new([9; 32], [2; 32]);
        assert_eq!(other.open(&sealed), Err(PayloadError::Open));
        assert_eq!(p.open(&sealed[..40]), Err(PayloadError::Length));
        assert_eq!(p.open(&[0; 2048]), Err(PayloadError::Length));
        // A valid seal of bytes that are not a payload.
        let mut junk = vec![0xffu8; 3];
        let tag = p
            .cipher
            .encrypt_in_place_detached(&Nonce::from([5; 24]), b"", &mut junk)
            .unwrap();
        let sealed = [&[5u8; 24][..], &tag[..], &junk[..]].concat();
        assert_eq!(p.open(&sealed), Err(PayloadError::Decode));
    }

    /// Bytes from JS: `crypto_secretbox_easy` (sodium-native) over hyperdht's
    /// `holepunchPayload` encoding, and `crypto_generichash(host, localSecret)`.
    #[test]
    fn js_golden_vectors() {
        let p = SecurePayload::new([1; 32], [2; 32]);
        assert_eq!(
            hex::encode(to_vec(&sample())),
            "16000201012c000102a00f0707070707070707070707070707070707070707070707070707070707070707"
        );
        let sealed = "0303030303030303030303030303030303030303030303032500314d0ca1aa24775856cc5f8e7e8a307fe4f07545d98ff8be41efbe5b17651c88a7cd69c449b865fa6a497b91aec6adf21b5c6e81d7be3597a2";
        assert_eq!(hex::encode(p.seal(&sample(), [3; 24])), sealed);
        assert_eq!(p.open(&hex::decode(sealed).unwrap()), Ok(sample()));
        assert_eq!(
            hex::encode(p.token(&Ipv4Addr::new(44, 0, 0, 1))),
            "57a1bbb60bf731c2cda3f577307d3cd3bd4820911e7e1adceb0abd6136b35c7a"
        );
    }

    #[test]
    fn tokens_depend_on_host_and_secret() {
        let p = SecurePayload::new([1; 32], [2; 32]);
        let a = p.token(&Ipv4Addr::new(44, 0, 0, 1));
        assert_eq!(a, p.token(&Ipv4Addr::new(44, 0, 0, 1)));
        assert_ne!(a, p.token(&Ipv4Addr::new(44, 0, 0, 2)));
        assert_ne!(
            a,
            SecurePayload::new([1; 32], [3; 32]).token(&Ipv4Addr::new(44, 0, 0, 1))
        );
    }
}
