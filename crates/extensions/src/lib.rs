//! The extension bus: application messages between peers, one protomux channel per extension
//! name on every connection. It mirrors what `@corestore/networker`'s `registerExtension`
//! gives JS apps (`onmessage(msg, peer)`, `onerror`, `send(msg, peer)`, `broadcast(msg)`,
//! `destroy()`), on the wire of plain [protomux] channels: a JS app that does
//! `Protomux.from(stream).createChannel({ protocol: name })` and adds one message with the
//! matching compact-encoding codec talks to an extension registered here.
//!
//! # Wire format
//! An extension named `name` is a protomux channel with protocol `name`, no id and no
//! handshake, opened by both sides. Its message type 0 carries one encoded message (see
//! [`encoding`] for the exact bytes): [`Binary`] is JS `c.raw`, [`Utf8`] is `c.string`,
//! [`Json`] is `c.json`; [`Compact`] takes any `corenet-codec` type. Messages of other types
//! are ignored, as protomux ignores types a channel did not add.
//!
//! # Behaviour a JS user would have to build by hand
//! - **Nothing sent early is lost** (hypercore #256: messages sent on `peer-add` were
//!   dropped). A message for a peer whose channel is not open yet waits in a bounded queue
//!   and goes out, in order, when the peer opens its side, including when the peer
//!   registers the extension after the connection started: its open is accepted through a
//!   pairing hook. A message whose channel never opens fails with [`Error::Undelivered`]
//!   (to `on_error`, or to the caller of [`Extension::send_when_open`]).
//! - **Bad input closes nothing else**: a message that does not decode, or is larger than
//!   the limit, goes to `on_error` with its peer and is dropped; the channel stays open. (JS
//!   protomux destroys the whole connection when a message fails to decode.)
//! - **Floods are cut off**: a token bucket per peer and extension; a peer that empties it
//!   has its channel closed and stays cut off from the extension until it reconnects (see
//!   [`ExtensionOptions`] for the policy and [`RateLimit`] for the defaults).
//! - Every queue is bounded: the pending queue per peer (256 messages, 1 MiB, 10 s), each
//!   message stream (1,024 messages, with backpressure), the message size (64 KiB).
//!
//! # Layout
//! - [`encoding`]: the [`Encoding`] trait and the JS-compatible encodings.
//! - `limits` (sans-IO): the token buckets ([`RateLimit`]) and the pending queue, driven with
//!   `now` as an input; no clock, no I/O.
//! - `extension`: [`Extension`] (send, broadcast, messages, destroy), the per-session slots
//!   and the task that runs each slot's channel.
//! - `bus`: the [`ExtensionBus`] actor (registrations and sessions; messages [`AddSession`],
//!   [`RemoveSession`], [`Register`], [`SendTo`], [`Broadcast`], [`GetSessions`],
//!   [`GetExtensions`], [`Shutdown`]) and [`Extensions`], its `Send + Sync + Clone` handle,
//!   which works from any tokio runtime and never exposes actix.
//! - [`Peer`], [`SessionId`], [`Transport`]: who a message is from or for.
//!
//! The owner of the connections (the swarm, or the `corenet` facade) tells the bus about
//! them: [`Extensions::add_session`] with the connection's [`corenet_mux::MuxHandle`] before
//! its driver runs, [`Extensions::remove_session`] when it ends (a session whose mux closes
//! is removed by the bus itself).
//!
//! # Example
//! Two peers over an in-memory pipe, each with its own bus; a message sent right after the
//! connection starts, before either side's channel is open, arrives.
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use corenet_extensions::{ExtensionOptions, Extensions, Peer};
//! use corenet_mux::{DriverConfig, MuxHandle};
//! use corenet_noise::{Config, KeyPair, SecretStream};
//!
//! let (a, b) = tokio::io::duplex(64 * 1024);
//! let client = tokio::spawn(async move {
//!     SecretStream::new(a, true, &KeyPair::generate(), Config::default()).await
//! });
//! let server = SecretStream::new(b, false, &KeyPair::generate(), Config::default()).await?;
//! let client = client.await??;
//!
//! let (alice, bob) = (Extensions::new(), Extensions::new());
//! let alice_chat = alice.register("chat", ExtensionOptions::utf8()).await?;
//! let bob_chat = bob.register("chat", ExtensionOptions::utf8()).await?;
//! let mut inbox = bob_chat.messages();
//!
//! // Each side adds its connection before the mux driver runs.
//! let (alice_mux, driver) = MuxHandle::new(client, DriverConfig::default());
//! let alice_key = alice_mux.stream_info().public_key;
//! let bob_as_seen_by_alice = Peer::new(alice_mux.stream_info().remote_public_key);
//! alice.add_session(bob_as_seen_by_alice.clone(), alice_mux).await?;
//! tokio::spawn(driver);
//! let (bob_mux, driver) = MuxHandle::new(server, DriverConfig::default());
//! bob.add_session(Peer::new(bob_mux.stream_info().remote_public_key), bob_mux).await?;
//! tokio::spawn(driver);
//!
//! alice_chat.send("hello bob", &bob_as_seen_by_alice)?; // queued until the channel opens
//! let (text, from) = inbox.recv().await.expect("a message");
//! assert_eq!(text, "hello bob");
//! assert_eq!(from.public_key(), &alice_key);
//! bob_chat.send("hi alice", &from)?; // open now: straight to the connection
//!
//! alice_chat.destroy().await; // closes alice's channel; bob sees the peer go
//! bob.close().await; // ends bob's streams
//! assert!(inbox.recv().await.is_none());
//! # Ok(()) }
//! ```
//!
//! [protomux]: https://github.com/holepunchto/protomux

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod bus;
pub mod encoding;
mod error;
mod extension;
mod limits;
mod options;
mod peer;

pub use bus::{
    AddSession, Broadcast, ExtensionBus, Extensions, GetExtensions, GetSessions, Register,
    RemoveSession, SendTo, Shutdown, Unregister, MAX_NAME_LEN, RESERVED_NAMES,
};
pub use encoding::{Binary, Compact, DecodeError, EncodeError, Encoding, Json, Utf8};
pub use error::{Error, Undelivered};
pub use extension::{Extension, Messages};
pub use limits::{Exceeded, RateLimit};
pub use options::{
    ExtensionOptions, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_PENDING_BYTES,
    DEFAULT_MAX_PENDING_MESSAGES, DEFAULT_OPEN_TIMEOUT, DEFAULT_STREAM_BUFFER,
};
pub use peer::{Peer, SessionId, Transport};
