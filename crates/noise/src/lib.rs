//! Ed25519 key pairs, Noise XX / IK with the Ed25519 DH of the JS stack, and the hyperswarm
//! secret stream.
//!
//! This crate mirrors three JS modules: `noise-handshake` with `noise-curve-ed` (the
//! handshake), and `@hyperswarm/secret-stream` (the encrypted duplex every hyperswarm
//! connection and every `hypercore.replicate()` stream runs over). A JS peer and a corenet
//! peer complete handshakes with each other, agree on the 64-byte handshake hash, and read each
//! other's messages.
//!
//! # Layout
//! - [`KeyPair`]: Ed25519 identities; `from_seed` matches `crypto_sign_seed_keypair`.
//! - [`curve`]: the Ed25519-form DH (`noise-curve-ed`), which snow does not know; X25519 does
//!   not interoperate.
//! - [`Handshake`]: a sans-IO Noise handshake (XX or IK, prologue, payloads) over snow.
//! - [`secretstream`]: libsodium `crypto_secretstream_xchacha20poly1305`, in place.
//! - [`SecretStream`]: the framed, encrypted stream over any `AsyncRead + AsyncWrite`, with
//!   message and byte interfaces, keepalive, idle timeout and half-close; it also starts from
//!   a finished handshake ([`SecretStream::from_handshake`]) as hyperdht needs.
//!
//! # Example
//! A secret stream over TCP on loopback:
//! ```
//! use corenet_noise::{Config, KeyPair, SecretStream};
//! use tokio::net::{TcpListener, TcpStream};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let server_keys = KeyPair::generate();
//! let server_pk = server_keys.public_key();
//! let server = tokio::spawn(async move {
//!     let (tcp, _) = listener.accept().await?;
//!     let mut s = SecretStream::new(tcp, false, &server_keys, Config::default()).await?;
//!     let msg = s.recv().await?.expect("a message");
//!     s.send(&msg).await?; // echo
//!     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
//! });
//! let tcp = TcpStream::connect(addr).await?;
//! let config = Config::default().with_remote_public_key(server_pk);
//! let mut client = SecretStream::new(tcp, true, &KeyPair::generate(), config).await?;
//! client.send(b"ping").await?;
//! assert_eq!(client.recv().await?.as_deref(), Some(&b"ping"[..]));
//! server.await?.map_err(|e| e.to_string())?;
//! # Ok(()) }
//! ```

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod curve;
mod error;
mod handshake;
mod keypair;
pub mod secretstream;
mod stream;

pub use error::Error;
pub use handshake::{
    Handshake, HandshakeError, HandshakeOptions, HandshakeResult, Pattern, HANDSHAKE_HASH_LEN,
    MAX_MESSAGE_LEN,
};
pub use keypair::{verify, KeyPair, SECRET_KEY_LEN, SEED_LEN, SIGNATURE_LEN};
pub use stream::{
    stream_id, stream_namespaces, Config, SecretStream, Traffic, DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_FRAME_LEN, DEFAULT_WRITE_BUFFER, HEADER_FRAME_LEN, MAX_FRAME_LEN,
};
