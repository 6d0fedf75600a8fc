//! The Ed25519-form Diffie-Hellman of `noise-curve-ed`, plugged into snow.
//!
//! The JS stack runs Noise over Ed25519 keys: the DH output is the compressed *Edwards* point
//! `clamp(SHA-512(seed)[..32]) * remote_public_key`, not an X25519 value, and the remote key
//! must be a canonical point of the prime-order subgroup (libsodium
//! `crypto_scalarmult_ed25519_noclamp` rejects anything else). An X25519 DH does not
//! interoperate.

use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaChaRng;
use sha2::{Digest, Sha512};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use zeroize::Zeroizing;

use crate::keypair::{KeyPair, SEED_LEN};

/// Length of a public key and of the DH output.
pub const DH_LEN: usize = 32;

/// Computes the `noise-curve-ed` DH of a local seed and a remote Ed25519 public key.
///
/// Returns `None` when the remote key is not a canonical encoding of a point in the
/// prime-order subgroup, or when the result is the identity (libsodium fails the same
/// inputs).
pub fn ed25519_dh(
    local_seed: &[u8; SEED_LEN],
    remote_public_key: &[u8; DH_LEN],
) -> Option<[u8; DH_LEN]> {
    let compressed = CompressedEdwardsY(*remote_public_key);
    let point = compressed.decompress()?;
    // Canonical encoding only (libsodium `ge25519_is_canonical` + round trip).
    if point.compress() != compressed {
        return None;
    }
    if point.is_small_order() || !point.is_torsion_free() {
        return None;
    }
    let mut h = Zeroizing::new([0u8; 64]);
    h.copy_from_slice(&Sha512::digest(local_seed));
    let mut scalar_bytes = Zeroizing::new([0u8; 32]);
    scalar_bytes.copy_from_slice(&h[..32]);
    scalar_bytes[0] &= 248;
    scalar_bytes[31] &= 127;
    scalar_bytes[31] |= 64;
    // The point is in the prime-order subgroup, so reducing the clamped scalar mod l does not
    // change the product.
    let scalar = Zeroizing::new(Scalar::from_bytes_mod_order(*scalar_bytes));
    let out = point * *scalar;
    if out.is_identity() {
        return None;
    }
    Some(out.compress().to_bytes())
}

/// A snow `Dh` over Ed25519 keys. The private key snow stores is the 32-byte seed.
#[derive(Default)]
pub(crate) struct Ed25519Dh {
    /// The seed, when set.
    seed: Zeroizing<[u8; SEED_LEN]>,
    /// The matching public key.
    public: [u8; DH_LEN],
}

impl Dh for Ed25519Dh {
    fn name(&self) -> &'static str {
        "Ed25519"
    }
    fn pub_len(&self) -> usize {
        DH_LEN
    }
    fn priv_len(&self) -> usize {
        SEED_LEN
    }
    fn set(&mut self, privkey: &[u8]) {
        let mut seed = [0u8; SEED_LEN];
        let n = privkey.len().min(SEED_LEN);
        seed[..n].copy_from_slice(&privkey[..n]);
        let kp = KeyPair::from_seed(seed);
        self.public = kp.public_key().to_bytes();
        *self.seed = seed;
    }
    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut seed = Zeroizing::new([0u8; SEED_LEN]);
        rng.try_fill_bytes(&mut seed[..])?;
        self.set(&seed[..]);
        Ok(())
    }
    fn pubkey(&self) -> &[u8] {
        &self.public
    }
    fn privkey(&self) -> &[u8] {
        &self.seed[..]
    }
    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        // snow passes its whole key buffer; the key is the first DH_LEN bytes.
        let remote: [u8; DH_LEN] = pubkey
            .get(..DH_LEN)
            .and_then(|k| k.try_into().ok())
            .ok_or(snow::Error::Dh)?;
        let shared = ed25519_dh(&self.seed, &remote).ok_or(snow::Error::Dh)?;
        out[..DH_LEN].copy_from_slice(&shared);
        Ok(())
    }
}

/// Randomness for ephemeral keys: the OS RNG, or a seeded ChaCha stream in tests and
/// simulations.
pub(crate) enum HandshakeRng {
    /// `OsRng`.
    Os,
    /// A deterministic stream.
    Seeded(Box<ChaChaRng>),
}

impl Random for HandshakeRng {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        match self {
            HandshakeRng::Os => rand::rngs::OsRng
                .try_fill_bytes(dest)
                .map_err(|_| snow::Error::Rng),
            HandshakeRng::Seeded(r) => {
                r.fill_bytes(dest);
                Ok(())
            }
        }
    }
}

/// Resolves the DH to [`Ed25519Dh`] and everything else to snow's defaults.
pub(crate) struct EdResolver {
    /// Seed for a deterministic RNG; `None` uses the OS RNG.
    pub(crate) rng_seed: Option<[u8; 32]>,
}

impl CryptoResolver for EdResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(match self.rng_seed {
            Some(seed) => HandshakeRng::Seeded(Box::new(ChaChaRng::from_seed(seed))),
            None => HandshakeRng::Os,
        }))
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::<Ed25519Dh>::default()),
            _ => None,
        }
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}
