//! Blind relays (the JS `blind-relay` module, as hyperdht uses it).
//!
//! When two peers cannot punch a hole (both behind randomizing NATs, say), one of them names
//! a relay in its handshake payload (`relayThrough {publicKey, token}`). Both connect to the
//! relay over the DHT, open a protomux channel `blind-relay` (id: their own public key) and
//! send `pair { isInitiator, token, id: their UDX stream id, seq: 0 }`. Once the relay holds
//! both halves of a token it makes one raw UDX stream per side, each connected to its peer on
//! the peer's first packet, forwards every packet of one to the other with the stream id
//! rewritten (UDX `relay_to`), and answers each `pair` with the id of the stream made for
//! it. The peers then run their end-to-end secret stream through it: the relay sees only
//! ciphertext. `unpair { token }` cancels a pairing or tears a link down.
//!
//! # Layout
//! - [`messages`]: the two messages, byte for byte.
//! - [`core`]: the relay's pairing table, sans-IO and bounded.

pub mod core;
pub mod messages;

/// The protomux protocol name.
pub const PROTOCOL: &str = "blind-relay";
/// Message type of `pair`.
pub const MSG_PAIR: u64 = 0;
/// Message type of `unpair`.
pub const MSG_UNPAIR: u64 = 1;

#[cfg(feature = "actor")]
mod server;
#[cfg(feature = "actor")]
pub use server::{RelayServer, RelayStats, MAX_SESSIONS};
