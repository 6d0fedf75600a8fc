//! Noise XX and IK handshakes with the Ed25519 DH of the JS stack (sans-IO).
//!
//! The protocol names are `Noise_XX_Ed25519_ChaChaPoly_BLAKE2b` (plain secret streams, empty
//! prologue) and `Noise_IK_Ed25519_ChaChaPoly_BLAKE2b` (hyperdht, prologue
//! `NS.PEER_HANDSHAKE`). BLAKE2b makes the handshake hash 64 bytes.

use std::fmt;

use corenet_codec::PublicKey;
use snow::params::NoiseParams;
use zeroize::Zeroizing;

use crate::curve::EdResolver;
use crate::keypair::KeyPair;

/// Largest Noise message.
pub const MAX_MESSAGE_LEN: usize = 65535;
/// Length of the handshake hash (BLAKE2b-512).
pub const HANDSHAKE_HASH_LEN: usize = 64;
/// Length of each split key.
pub(crate) const KEY_LEN: usize = 32;

/// The handshake patterns the stack uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// `XX`: both sides learn each other's static key during the handshake (secret streams
    /// over TCP or any duplex).
    XX,
    /// `IK`: the initiator knows the responder's static key in advance (hyperdht).
    IK,
}

impl Pattern {
    /// The Noise protocol name as the JS `noise-handshake` module builds it.
    pub fn protocol_name(self) -> &'static str {
        match self {
            Pattern::XX => "Noise_XX_Ed25519_ChaChaPoly_BLAKE2b",
            Pattern::IK => "Noise_IK_Ed25519_ChaChaPoly_BLAKE2b",
        }
    }

    /// The same name with the DH spelled as snow parses it; the name hashed into the state
    /// is replaced by [`Pattern::protocol_name`].
    fn snow_name(self) -> &'static str {
        match self {
            Pattern::XX => "Noise_XX_25519_ChaChaPoly_BLAKE2b",
            Pattern::IK => "Noise_IK_25519_ChaChaPoly_BLAKE2b",
        }
    }

    /// How many messages the pattern exchanges.
    pub fn message_count(self) -> usize {
        match self {
            Pattern::XX => 3,
            Pattern::IK => 2,
        }
    }
}

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// `IK` initiators must know the responder's key.
    #[error("the IK pattern needs the remote public key")]
    MissingRemoteKey,
    /// A handshake message could not be read: a wrong size, a bad point, a failed
    /// authentication tag.
    #[error("invalid handshake message: {0}")]
    InvalidMessage(String),
    /// A message arrived whose length does not match the pattern.
    #[error("handshake message {index} has {len} bytes, expected {expected}")]
    WrongSize {
        /// Which message (0-based).
        index: usize,
        /// Its length.
        len: usize,
        /// The length the pattern requires.
        expected: usize,
    },
    /// The remote proved a different static key than the one we expected.
    #[error("remote public key {got} does not match the expected {expected}")]
    RemoteKeyMismatch {
        /// The key we asked for.
        expected: PublicKey,
        /// The key the remote has.
        got: PublicKey,
    },
    /// The call does not fit the handshake state (reading when it is our turn, finishing
    /// early, ...).
    #[error("handshake state error: {0}")]
    State(&'static str),
    /// A payload is too large for a Noise message.
    #[error("payload too large for a Noise message")]
    PayloadTooLarge,
}

impl From<snow::Error> for HandshakeError {
    fn from(e: snow::Error) -> Self {
        HandshakeError::InvalidMessage(e.to_string())
    }
}

/// Options of a [`Handshake`].
#[derive(Debug, Clone, Default)]
pub struct HandshakeOptions {
    /// Bytes mixed into the handshake hash before the first message (empty by default; hyperdht
    /// uses `NS.PEER_HANDSHAKE`).
    pub prologue: Vec<u8>,
    /// The remote static key: required for `IK` initiators; for `XX` it is checked once the
    /// remote reveals its key, and a different key fails the handshake with
    /// [`HandshakeError::RemoteKeyMismatch`].
    pub remote_public_key: Option<PublicKey>,
    /// Seed for the ephemeral-key RNG; `None` (the default) uses the OS RNG. Only for tests and
    /// deterministic simulation.
    pub rng_seed: Option<[u8; 32]>,
}

/// What a completed handshake yields; enough to start a secret stream.
#[derive(Clone)]
pub struct HandshakeResult {
    /// Whether we sent the first handshake message.
    pub is_initiator: bool,
    /// Our static public key.
    pub local_public_key: PublicKey,
    /// The remote's static public key, authenticated by the handshake.
    pub remote_public_key: PublicKey,
    /// The 64-byte handshake hash; it binds everything exchanged.
    pub hash: [u8; HANDSHAKE_HASH_LEN],
    /// Key for what we send (first 32 bytes of our half of the Noise split).
    pub tx: Zeroizing<[u8; KEY_LEN]>,
    /// Key for what we receive.
    pub rx: Zeroizing<[u8; KEY_LEN]>,
}

impl fmt::Debug for HandshakeResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandshakeResult")
            .field("is_initiator", &self.is_initiator)
            .field("local_public_key", &self.local_public_key)
            .field("remote_public_key", &self.remote_public_key)
            .field("hash", &hex::encode(self.hash))
            .finish_non_exhaustive()
    }
}

/// A Noise handshake in progress. It never touches I/O: feed it received messages, send what
/// it writes.
///
/// ```
/// use corenet_noise::{Handshake, HandshakeOptions, KeyPair, Pattern};
/// let (a, b) = (KeyPair::from_seed([1; 32]), KeyPair::from_seed([2; 32]));
/// let mut init = Handshake::new(Pattern::XX, true, &a, HandshakeOptions::default())?;
/// let mut resp = Handshake::new(Pattern::XX, false, &b, HandshakeOptions::default())?;
/// let m1 = init.write_message(&[])?;
/// resp.read_message(&m1)?;
/// let m2 = resp.write_message(&[])?;
/// init.read_message(&m2)?;
/// let m3 = init.write_message(&[])?;
/// resp.read_message(&m3)?;
/// let (ri, rr) = (init.finish()?, resp.finish()?);
/// assert_eq!(ri.hash, rr.hash);
/// assert_eq!(ri.remote_public_key, b.public_key());
/// assert_eq!(*ri.tx, *rr.rx);
/// # Ok::<(), corenet_noise::HandshakeError>(())
/// ```
pub struct Handshake {
    /// snow's state machine.
    state: snow::HandshakeState,
    /// The pattern, for message sizes.
    pattern: Pattern,
    /// Our static key.
    local_public_key: PublicKey,
    /// The key we require the remote to have, if any.
    expected_remote: Option<PublicKey>,
    /// Messages processed so far (sent and received).
    messages: usize,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("pattern", &self.pattern)
            .field("initiator", &self.state.is_initiator())
            .field("messages", &self.messages)
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// Starts a handshake.
    pub fn new(
        pattern: Pattern,
        is_initiator: bool,
        key_pair: &KeyPair,
        options: HandshakeOptions,
    ) -> Result<Self, HandshakeError> {
        let mut params: NoiseParams = pattern
            .snow_name()
            .parse()
            .map_err(|_| HandshakeError::State("protocol name"))?;
        params.name = pattern.protocol_name().to_owned();
        let seed = key_pair.seed();
        let resolver = EdResolver {
            rng_seed: options.rng_seed,
        };
        let mut builder = snow::Builder::with_resolver(params, Box::new(resolver))
            .local_private_key(&seed[..])?
            .prologue(&options.prologue)?;
        let remote_bytes = options.remote_public_key.map(|k| k.to_bytes());
        if pattern == Pattern::IK && is_initiator {
            let rk = remote_bytes
                .as_ref()
                .ok_or(HandshakeError::MissingRemoteKey)?;
            builder = builder.remote_public_key(rk)?;
        }
        let state = if is_initiator {
            builder.build_initiator()?
        } else {
            builder.build_responder()?
        };
        Ok(Handshake {
            state,
            pattern,
            local_public_key: key_pair.public_key(),
            expected_remote: options.remote_public_key,
            messages: 0,
        })
    }

    /// True when we started the handshake.
    pub fn is_initiator(&self) -> bool {
        self.state.is_initiator()
    }

    /// True when the next step is [`Handshake::write_message`].
    pub fn is_my_turn(&self) -> bool {
        !self.is_finished() && self.state.is_my_turn()
    }

    /// True when every message has been exchanged; call [`Handshake::finish`].
    pub fn is_finished(&self) -> bool {
        self.state.is_handshake_finished()
    }

    /// The exact size of handshake message `index` with a payload of `payload_len` bytes.
    pub fn message_len(pattern: Pattern, index: usize, payload_len: usize) -> usize {
        // Tokens per message, with 16-byte tags once a key is mixed in.
        let body = match (pattern, index) {
            (Pattern::XX, 0) => 32,      // e
            (Pattern::XX, 1) => 32 + 48, // e, ee, s (encrypted), es
            (Pattern::XX, 2) => 48,      // s (encrypted), se
            (Pattern::IK, 0) => 32 + 48, // e, es, s (encrypted), ss
            (Pattern::IK, 1) => 32,      // e, ee, se
            _ => 0,
        };
        let tag = match (pattern, index) {
            (Pattern::XX, 0) => 0,
            _ => 16,
        };
        body + payload_len + tag
    }

    /// Writes the next handshake message carrying `payload`.
    pub fn write_message(&mut self, payload: &[u8]) -> Result<Vec<u8>, HandshakeError> {
        if !self.is_my_turn() {
            return Err(HandshakeError::State("not our turn to write"));
        }
        if payload.len() + 128 > MAX_MESSAGE_LEN {
            return Err(HandshakeError::PayloadTooLarge);
        }
        // snow wants room for a tag even where the message has none.
        let mut out = vec![0u8; Self::message_len(self.pattern, self.messages, payload.len()) + 16];
        let n = self.state.write_message(payload, &mut out)?;
        out.truncate(n);
        self.messages += 1;
        Ok(out)
    }

    /// Reads the remote's next handshake message and returns its payload.
    ///
    /// When an expected remote key was given, a different key fails here, before we send
    /// anything that depends on it.
    pub fn read_message(&mut self, message: &[u8]) -> Result<Vec<u8>, HandshakeError> {
        if self.is_finished() || self.state.is_my_turn() {
            return Err(HandshakeError::State("not our turn to read"));
        }
        let min = Self::message_len(self.pattern, self.messages, 0);
        if message.len() < min || message.len() > MAX_MESSAGE_LEN {
            return Err(HandshakeError::WrongSize {
                index: self.messages,
                len: message.len(),
                expected: min,
            });
        }
        let mut payload = vec![0u8; message.len()];
        let n = self.state.read_message(message, &mut payload)?;
        payload.truncate(n);
        self.messages += 1;
        self.check_remote()?;
        Ok(payload)
    }

    /// The remote static key, once known.
    pub fn remote_public_key(&self) -> Option<PublicKey> {
        self.state
            .get_remote_static()
            .and_then(PublicKey::from_slice)
    }

    fn check_remote(&self) -> Result<(), HandshakeError> {
        if let (Some(expected), Some(got)) = (self.expected_remote, self.remote_public_key()) {
            if expected != got {
                return Err(HandshakeError::RemoteKeyMismatch { expected, got });
            }
        }
        Ok(())
    }

    /// Finishes a completed handshake: the split keys and the handshake hash.
    pub fn finish(mut self) -> Result<HandshakeResult, HandshakeError> {
        if !self.is_finished() {
            return Err(HandshakeError::State("handshake not finished"));
        }
        let remote_public_key = self
            .remote_public_key()
            .ok_or(HandshakeError::State("remote key unknown"))?;
        let mut hash = [0u8; HANDSHAKE_HASH_LEN];
        hash.copy_from_slice(self.state.get_handshake_hash());
        let (k1, k2) = self.state.dangerously_get_raw_split();
        let (k1, k2) = (Zeroizing::new(k1), Zeroizing::new(k2));
        let is_initiator = self.is_initiator();
        let (tx, rx) = if is_initiator { (k1, k2) } else { (k2, k1) };
        Ok(HandshakeResult {
            is_initiator,
            local_public_key: self.local_public_key,
            remote_public_key,
            hash,
            tx,
            rx,
        })
    }
}
