//! Ed25519 key pairs in the form the JS stack uses.

use std::fmt;

use corenet_codec::PublicKey;
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

/// Length of an Ed25519 seed.
pub const SEED_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Length of a libsodium secret key (`seed || public key`).
pub const SECRET_KEY_LEN: usize = 64;

/// An Ed25519 key pair: a peer's identity, and its Noise static key.
///
/// `KeyPair::from_seed` is RFC 8032 / libsodium `crypto_sign_seed_keypair`, so the same seed
/// gives the same public key as `DHT.keyPair(seed)` or `crypto.keyPair(seed)` in JS. The
/// secret key in libsodium form is `seed || public key` (64 bytes).
///
/// ```
/// use corenet_noise::KeyPair;
/// let kp = KeyPair::from_seed([1; 32]);
/// assert_eq!(kp.public_key().to_string(),
///            "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c");
/// let sig = kp.sign(b"hello");
/// assert!(corenet_noise::verify(&kp.public_key(), b"hello", &sig));
/// ```
#[derive(Clone)]
pub struct KeyPair {
    /// The signing key; it holds the seed and caches the public key.
    signing: SigningKey,
}

impl KeyPair {
    /// A fresh random key pair from the operating system's RNG.
    pub fn generate() -> Self {
        Self::generate_with(&mut rand::rngs::OsRng)
    }

    /// A fresh key pair from the given RNG (seeded RNGs make tests and simulations
    /// reproducible).
    pub fn generate_with(rng: &mut impl CryptoRngCore) -> Self {
        let mut seed = Zeroizing::new([0u8; SEED_LEN]);
        rng.fill_bytes(&mut seed[..]);
        Self::from_seed(*seed)
    }

    /// The key pair of a 32-byte seed (RFC 8032).
    pub fn from_seed(seed: [u8; SEED_LEN]) -> Self {
        KeyPair {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// Rebuilds a key pair from a libsodium secret key (`seed || public key`); `None` when
    /// the public half does not belong to the seed.
    pub fn from_secret_key(secret: &[u8; SECRET_KEY_LEN]) -> Option<Self> {
        let mut seed = [0u8; SEED_LEN];
        seed.copy_from_slice(&secret[..SEED_LEN]);
        let kp = Self::from_seed(seed);
        (kp.public_key().as_bytes()[..] == secret[SEED_LEN..]).then_some(kp)
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    /// The 32-byte seed.
    pub fn seed(&self) -> Zeroizing<[u8; SEED_LEN]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The libsodium secret key: `seed || public key`.
    pub fn secret_key(&self) -> Zeroizing<[u8; SECRET_KEY_LEN]> {
        let mut out = Zeroizing::new([0u8; SECRET_KEY_LEN]);
        out[..SEED_LEN].copy_from_slice(&self.signing.to_bytes());
        out[SEED_LEN..].copy_from_slice(self.public_key().as_bytes());
        out
    }

    /// An Ed25519 signature of `msg` (`crypto_sign_detached`).
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.signing.sign(msg).to_bytes()
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

/// Verifies an Ed25519 signature (`crypto_sign_verify_detached`). Returns false for a
/// malformed key or signature.
pub fn verify(public_key: &PublicKey, msg: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
    let Ok(vk) = VerifyingKey::from_bytes(public_key.as_bytes()) else {
        return false;
    };
    let sig = ed25519_dalek::Signature::from_bytes(signature);
    vk.verify(msg, &sig).is_ok()
}
