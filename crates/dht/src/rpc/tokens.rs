//! Write tokens: proof that a requester can receive at the address it claims.
//!
//! `token(host, i) = BLAKE2b-256(key = secret[i], ASCII host)`. Replies carry `token(host, 1)`;
//! requests are accepted with `token(host, 1)` or `token(host, 0)`. Every [`ROTATE_EVERY`]
//! drains (7.5 s) `secret[0] = secret[1]` and `secret[1] = BLAKE2b-256(old secret[0])`, so a
//! token lives 7.5 to 15 s, as in JS.

use std::net::Ipv4Addr;

use corenet_codec::hash::{blake2b_256, blake2b_256_keyed};

/// Drains (of 750 ms) between secret rotations.
pub const ROTATE_EVERY: u32 = 10;

/// The two rotating secrets.
#[derive(Clone)]
pub struct Tokens {
    /// `[older, current]`.
    secrets: [[u8; 32]; 2],
    /// Drains until the next rotation.
    countdown: u32,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").finish_non_exhaustive()
    }
}

impl Tokens {
    /// Tokens from two random secrets.
    pub fn new(secrets: [[u8; 32]; 2]) -> Self {
        Tokens {
            secrets,
            countdown: ROTATE_EVERY,
        }
    }

    /// The token for `host` under secret `i` (0 older, 1 current).
    pub fn token(&self, host: &Ipv4Addr, i: usize) -> [u8; 32] {
        blake2b_256_keyed(&self.secrets[i & 1], host.to_string().as_bytes())
    }

    /// The token to hand out to `host` now.
    pub fn issue(&self, host: &Ipv4Addr) -> [u8; 32] {
        self.token(host, 1)
    }

    /// True if `token` was issued to `host` recently.
    pub fn verify(&self, host: &Ipv4Addr, token: &[u8; 32]) -> bool {
        use subtle_eq::ct_eq;
        ct_eq(&self.token(host, 1), token) || ct_eq(&self.token(host, 0), token)
    }

    /// Called every drain (750 ms).
    pub fn on_drain(&mut self) {
        self.countdown -= 1;
        if self.countdown == 0 {
            self.countdown = ROTATE_EVERY;
            let old = self.secrets[0];
            self.secrets[0] = self.secrets[1];
            self.secrets[1] = blake2b_256(&old);
        }
    }
}

mod subtle_eq {
    /// Constant-time equality of two tokens.
    pub(super) fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
        a.iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetime_is_one_to_two_rotations() {
        let mut t = Tokens::new([[1; 32], [2; 32]]);
        let host = Ipv4Addr::new(127, 0, 0, 1);
        let tok = t.issue(&host);
        assert!(t.verify(&host, &tok));
        assert!(!t.verify(&Ipv4Addr::new(127, 0, 0, 2), &tok));
        for _ in 0..ROTATE_EVERY {
            t.on_drain();
        }
        assert!(t.verify(&host, &tok), "valid after one rotation");
        for _ in 0..ROTATE_EVERY {
            t.on_drain();
        }
        assert!(!t.verify(&host, &tok), "expired after two");
    }
}
