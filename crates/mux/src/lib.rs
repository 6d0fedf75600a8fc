//! protomux: many message channels over one secret stream, wire- and behaviour-compatible
//! with the JS [`protomux`](https://github.com/holepunchto/protomux) 3.x module.
//!
//! Channels are identified by a protocol name and an optional binary id; each side opens its
//! own channel and the mux pairs them. Messages on a channel have a type (a small integer) and
//! a payload; this layer treats payloads as bytes, and users encode them with
//! [`corenet_codec`] (see [`Message::decode`], [`Channel::send_encoded`]). The control
//! channel carries `open` (with the opener's handshake bytes), `reject`, `close` and batches
//! of frames (cork/uncork). A remote open with no local channel goes to a pairing hook (JS
//! `mux.pair`), which is how corestore learns the discovery keys a peer asks for.
//!
//! Where this crate differs from JS protomux 3.12 on purpose:
//! - a remote `close` of a channel we have not answered yet is answered with a `reject`, and
//!   an `open` that answers a channel we closed already gets a second `close`, so that a
//!   channel closed and re-opened before the remote answered always pairs again (JS can leave
//!   the replacement hanging: protomux PR #30; see [`core`] for why skipping the stale entry,
//!   as that PR proposes, is not enough);
//! - every queue is bounded: channel ids, remote opens waiting for an answer, messages held
//!   for them, outgoing bytes, per-channel inboxes ([`Config`], [`DriverConfig`]);
//! - the async driver packs small frames that are queued at the same moment into one batch
//!   frame (one secret-stream message, one encryption; [`DriverConfig::with_packing`]), which
//!   any protomux peer unpacks in order; JS writes one message per frame;
//! - JS callbacks (`onopen`, `onmessage`, `onclose`) become [`Event`]s in the sans-IO core and
//!   futures/streams in the async layer; `destroyed` (all handler promises settled) has no
//!   counterpart, since handlers are not awaited by the mux.
//!
//! # Layout
//! - [`wire`]: frame and control message encodings, batch reader and writer.
//! - [`core`]: [`Mux`], the sans-IO state machine: pairing, ids, cork/uncork, held messages,
//!   pairing hooks. No I/O, no clock.
//! - [`driver`] (feature `driver`, on by default): [`MuxHandle`] (cloneable, `Send + Sync`),
//!   [`Channel`], [`PairRequests`] and the [`MuxDriver`] future that runs a [`Mux`] over a
//!   [`corenet_noise::SecretStream`] with tokio. Without the feature the crate is the pure
//!   core (no tokio, no noise).
//!
//! # Example
//! Two muxes over an in-memory pipe: a channel opened on one side, answered through a
//! pairing hook on the other.
//! ```
//! # #[cfg(not(feature = "driver"))] fn main() {}
//! # #[cfg(feature = "driver")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use corenet_mux::{ChannelOptions, DriverConfig, MuxHandle};
//! use corenet_noise::{Config, KeyPair, SecretStream};
//!
//! let (a, b) = tokio::io::duplex(64 * 1024);
//! let client = tokio::spawn(async move {
//!     SecretStream::new(a, true, &KeyPair::generate(), Config::default()).await
//! });
//! let server = SecretStream::new(b, false, &KeyPair::generate(), Config::default()).await?;
//! let client = client.await??;
//!
//! let alice = MuxHandle::spawn(client, DriverConfig::default());
//! let bob = MuxHandle::spawn(server, DriverConfig::default());
//!
//! // Bob answers remote opens of "chat" with any id.
//! let mut requests = bob.pair("chat", None);
//! let room = ChannelOptions::new("chat").with_id(&b"lobby"[..]).with_handshake(&b"hi"[..]);
//! let alice_chat = alice.open(&room)?;
//! alice_chat.send_encoded(0, "hello bob").await?; // held by bob until he answers
//!
//! let request = requests.recv().await.expect("a pairing request");
//! assert_eq!(request.key().id()[..], b"lobby"[..]);
//! let options = request.options(); // its protocol and id; add a handshake here
//! let mut bob_chat = request.accept(&options)?;
//! assert_eq!(bob_chat.remote_handshake().as_deref(), Some(&b"hi"[..]));
//! let message = bob_chat.recv().await.expect("a message");
//! assert_eq!((message.message_type, message.decode::<String>()?), (0, "hello bob".into()));
//! alice_chat.opened().await?; // bob's open arrived
//!
//! alice.close();
//! alice.closed().await?;
//! # Ok(()) }
//! ```

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod core;
#[cfg(feature = "driver")]
pub mod driver;
mod error;
pub mod wire;

pub use crate::core::{
    ChannelId, ChannelKey, ChannelOptions, ChannelState, CloseReason, Config, Event, Mux, PairHook,
    PairingId,
};
#[cfg(feature = "driver")]
pub use driver::{
    Channel, ChannelSender, CorkGuard, DriverConfig, Message, MuxDriver, MuxHandle, PairRequest,
    PairRequests, StreamInfo,
};
pub use error::{Error, ProtocolError};
