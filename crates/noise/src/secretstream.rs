//! libsodium's `crypto_secretstream_xchacha20poly1305`, byte for byte.
//!
//! A stream key and a random 24-byte header give a per-stream key (HChaCha20 over the first
//! 16 header bytes) and a 12-byte nonce (`counter u32le = 1 || header[16..24]`). Each message
//! is `encrypted tag byte || ciphertext || 16-byte Poly1305 MAC` (17 bytes of overhead); after
//! each message the first 8 MAC bytes are XORed into the nonce and the counter increments,
//! with a rekey when it wraps or the `REKEY` tag is used. Encryption and decryption work in
//! place and never allocate.

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;
use poly1305::universal_hash::{KeyInit, UniversalHash};
use poly1305::Poly1305;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

/// Length of the stream header.
pub const HEADER_LEN: usize = 24;
/// Length of the stream key.
pub const KEY_LEN: usize = 32;
/// Bytes a message grows by: one tag byte and a 16-byte MAC.
pub const ABYTES: usize = 17;
/// Tag of an ordinary message.
pub const TAG_MESSAGE: u8 = 0;
/// Tag marking the end of a logical chunk.
pub const TAG_PUSH: u8 = 1;
/// Tag that rekeys after the message.
pub const TAG_REKEY: u8 = 2;
/// Tag of the last message.
pub const TAG_FINAL: u8 = 3;

const MAC_LEN: usize = 16;
const INONCE_LEN: usize = 8;
const COUNTER_LEN: usize = 4;

/// The message failed authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("secretstream message failed authentication")]
pub struct AuthError;

/// Shared state of both directions: the derived key and the nonce.
#[derive(Clone)]
struct State {
    /// The per-stream key (rotated on rekey).
    k: Zeroizing<[u8; 32]>,
    /// `counter (4 bytes LE) || inonce (8 bytes)`.
    nonce: [u8; 12],
}

impl Drop for State {
    fn drop(&mut self) {
        self.nonce.zeroize();
    }
}

impl State {
    fn new(key: &[u8; KEY_LEN], header: &[u8; HEADER_LEN]) -> Self {
        let mut input = [0u8; 16];
        input.copy_from_slice(&header[..16]);
        let subkey = chacha20::hchacha::<chacha20::R20>(&chacha20::Key::from(*key), &input.into());
        let mut k = Zeroizing::new([0u8; 32]);
        k.copy_from_slice(&subkey);
        let mut nonce = [0u8; 12];
        nonce[0] = 1;
        nonce[COUNTER_LEN..].copy_from_slice(&header[16..]);
        State { k, nonce }
    }

    fn cipher(&self) -> ChaCha20 {
        ChaCha20::new(
            &chacha20::Key::from(*self.k),
            &chacha20::Nonce::from(self.nonce),
        )
    }

    /// Keystream block 0 keys Poly1305; block 1 carries the tag; the message starts at 2.
    fn mac_and_tag(
        &self,
        cipher: &mut ChaCha20,
        tag_byte: u8,
        encrypting: bool,
    ) -> (Poly1305, u8, [u8; 64]) {
        let mut block0 = Zeroizing::new([0u8; 64]);
        cipher.apply_keystream(&mut block0[..]);
        let mut poly_key = Zeroizing::new([0u8; 32]);
        poly_key.copy_from_slice(&block0[..32]);
        let mac = Poly1305::new(&(*poly_key).into());
        let mut block = [0u8; 64];
        block[0] = tag_byte;
        cipher.apply_keystream(&mut block);
        // Encrypting: block[0] is now the ciphertext tag. Decrypting: it is the plain tag, and
        // the MAC covers the ciphertext tag, so put that back.
        let other = block[0];
        if !encrypting {
            block[0] = tag_byte;
        }
        (mac, other, block)
    }

    /// The MAC input is `block || c || zeros(c.len() % 16) || u64le(0) || u64le(64 + c.len())`.
    /// libsodium computes the padding as `(0x10 - 64 + mlen) & 0xf`, which is `mlen % 16`
    /// rather than the usual AEAD padding; the tail is therefore not block-aligned and is
    /// finished with Poly1305's own final-block rule. There is no additional data.
    fn mac_finish(mut mac: Poly1305, block: &[u8; 64], c: &[u8]) -> [u8; MAC_LEN] {
        mac.update_padded(block);
        let aligned = c.len() & !15;
        mac.update_padded(&c[..aligned]);
        let rest = &c[aligned..];
        let mut tail = [0u8; 48];
        tail[..rest.len()].copy_from_slice(rest);
        let pad = c.len() & 15;
        let lens_at = rest.len() + pad;
        tail[lens_at + 8..lens_at + 16].copy_from_slice(&((64 + c.len()) as u64).to_le_bytes());
        mac.compute_unpadded(&tail[..lens_at + 16]).into()
    }

    fn advance(&mut self, mac: &[u8; MAC_LEN], tag: u8) {
        for (n, m) in self.nonce[COUNTER_LEN..].iter_mut().zip(&mac[..INONCE_LEN]) {
            *n ^= m;
        }
        let counter =
            u32::from_le_bytes([self.nonce[0], self.nonce[1], self.nonce[2], self.nonce[3]])
                .wrapping_add(1);
        self.nonce[..COUNTER_LEN].copy_from_slice(&counter.to_le_bytes());
        if tag & TAG_REKEY != 0 || counter == 0 {
            self.rekey();
        }
    }

    fn rekey(&mut self) {
        let mut buf = Zeroizing::new([0u8; 32 + INONCE_LEN]);
        buf[..32].copy_from_slice(&self.k[..]);
        buf[32..].copy_from_slice(&self.nonce[COUNTER_LEN..]);
        self.cipher().apply_keystream(&mut buf[..]);
        self.k.copy_from_slice(&buf[..32]);
        self.nonce[COUNTER_LEN..].copy_from_slice(&buf[32..]);
        self.nonce[..COUNTER_LEN].copy_from_slice(&1u32.to_le_bytes());
    }
}

/// The sending half (`crypto_secretstream_xchacha20poly1305_init_push` / `_push`).
#[derive(Clone)]
pub struct Push {
    /// Key and nonce.
    state: State,
}

impl std::fmt::Debug for Push {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Push").finish_non_exhaustive()
    }
}

impl Push {
    /// Starts a stream with the given key and header (24 random bytes; send it to the
    /// receiver first).
    pub fn new(key: &[u8; KEY_LEN], header: &[u8; HEADER_LEN]) -> Self {
        Push {
            state: State::new(key, header),
        }
    }

    /// Encrypts in place. `buf` is `[1 spare byte][plaintext][16 spare bytes]`, i.e.
    /// `plaintext_len + ABYTES` bytes; on return it is the wire message.
    ///
    /// # Panics
    /// If `buf` is shorter than [`ABYTES`] (a caller bug, not remote input).
    pub fn push_in_place(&mut self, buf: &mut [u8], tag: u8) {
        assert!(
            buf.len() >= ABYTES,
            "buffer smaller than the secretstream overhead"
        );
        let mlen = buf.len() - ABYTES;
        let mut cipher = self.state.cipher();
        let (mac, c_tag, block) = self.state.mac_and_tag(&mut cipher, tag, true);
        buf[0] = c_tag;
        let (body, mac_out) = buf[1..].split_at_mut(mlen);
        // The cipher is positioned at block 2.
        cipher.apply_keystream(body);
        let m = State::mac_finish(mac, &block, body);
        mac_out.copy_from_slice(&m);
        self.state.advance(&m, tag);
    }

    /// Encrypts `msg` into a new vector (convenience for tests and small messages).
    pub fn push(&mut self, msg: &[u8], tag: u8) -> Vec<u8> {
        let mut out = vec![0u8; msg.len() + ABYTES];
        out[1..1 + msg.len()].copy_from_slice(msg);
        self.push_in_place(&mut out, tag);
        out
    }
}

/// The receiving half (`crypto_secretstream_xchacha20poly1305_init_pull` / `_pull`).
#[derive(Clone)]
pub struct Pull {
    /// Key and nonce.
    state: State,
}

impl std::fmt::Debug for Pull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pull").finish_non_exhaustive()
    }
}

impl Pull {
    /// Starts receiving a stream with the key and the header the sender sent.
    pub fn new(key: &[u8; KEY_LEN], header: &[u8; HEADER_LEN]) -> Self {
        Pull {
            state: State::new(key, header),
        }
    }

    /// Decrypts a wire message in place. On success returns the tag; the plaintext is then
    /// `buf[1..buf.len() - 16]`. On failure the state does not advance and `buf` is left
    /// undecrypted.
    pub fn pull_in_place(&mut self, buf: &mut [u8]) -> Result<u8, AuthError> {
        if buf.len() < ABYTES {
            return Err(AuthError);
        }
        let mlen = buf.len() - ABYTES;
        let mut cipher = self.state.cipher();
        let (mac, tag, block) = self.state.mac_and_tag(&mut cipher, buf[0], false);
        let (body, stored) = buf[1..].split_at_mut(mlen);
        let m = State::mac_finish(mac, &block, body);
        if !bool::from(m.ct_eq(&stored[..])) {
            return Err(AuthError);
        }
        // The cipher is positioned at block 2.
        cipher.apply_keystream(body);
        self.state.advance(&m, tag);
        Ok(tag)
    }

    /// Decrypts into a new vector (convenience): returns the plaintext and the tag.
    pub fn pull(&mut self, msg: &[u8]) -> Result<(Vec<u8>, u8), AuthError> {
        let mut buf = msg.to_vec();
        let tag = self.pull_in_place(&mut buf)?;
        let end = buf.len() - MAC_LEN;
        Ok((buf[1..end].to_vec(), tag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_rekey_and_tamper() {
        let key = [7u8; 32];
        let header = [9u8; 24];
        let mut push = Push::new(&key, &header);
        let mut pull = Pull::new(&key, &header);
        for (i, tag) in [TAG_MESSAGE, TAG_PUSH, TAG_REKEY, TAG_MESSAGE, TAG_FINAL]
            .into_iter()
            .enumerate()
        {
            let msg = vec![i as u8; i * 37];
            let c = push.push(&msg, tag);
            assert_eq!(c.len(), msg.len() + ABYTES);
            let (m, t) = pull.pull(&c).unwrap();
            assert_eq!((m, t), (msg, tag));
        }
        let mut c = push.push(b"hello", TAG_MESSAGE);
        c[3] ^= 1;
        let before = pull.clone();
        assert_eq!(pull.pull(&c), Err(AuthError));
        // A failed pull leaves the state where it was.
        assert_eq!(pull.state.nonce, before.state.nonce);
        assert_eq!(pull.pull(&[0u8; 16]), Err(AuthError));
    }

    #[test]
    fn counter_wrap_rekeys_both_sides() {
        let mut push = Push::new(&[1; 32], &[2; 24]);
        let mut pull = Pull::new(&[1; 32], &[2; 24]);
        push.state.nonce[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        pull.state.nonce[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        for _ in 0..3 {
            let c = push.push(b"x", TAG_MESSAGE);
            assert_eq!(pull.pull(&c).unwrap().0, b"x");
        }
    }
}
