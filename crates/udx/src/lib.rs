//! UDX: reliable, ordered, congestion-controlled byte streams over UDP, plus unordered
//! datagrams per stream, wire-compatible with [libudx] / [udx-native] (the transport under
//! every hyperdht connection).
//!
//! A UDX packet is a 20-byte little-endian header (magic `FF`, version `01`, type flags
//! DATA/END/SACK/MESSAGE/DESTROY/HEARTBEAT, data offset, the receiver's stream id, receive
//! window, seq, ack) followed by SACK blocks or MTU-probe padding and the payload. Sequence
//! numbers count packets and start at 0; there is no handshake: both sides learn each
//! other's stream ids out of band (hyperdht carries them in its Noise payload). The protocol
//! as implemented here is described in `docs/protocol/udx.md`.
//!
//! # Layout
//! - [`wire`]: the header, SACK blocks and the demultiplexing peek ([`wire::peek_stream_id`]).
//! - [`core`]: the sans-IO [`core::Stream`] state machine. It never touches the network or
//!   the clock: packets and `now` go in, datagrams (written into caller buffers), events and
//!   the next deadline come out. It implements per-packet ACKs with SACK, RACK-TLP loss
//!   detection, RTO with libudx's constant `2·RTO` spacing, BBR congestion control, pacing,
//!   MTU probing (1200 up to 1500 with padded DATA, as libudx), a bounded and enforced
//!   receive window, zero-window probes, keepalive heartbeats, an optional idle timeout,
//!   graceful END both ways, DESTROY, MESSAGEs and `change_remote`.
//! - [`UdxSocket`]: the async shell. One driver task per socket runs all its streams: it
//!   receives in batches (`recvmmsg`, with GRO where available), demultiplexes on the first
//!   bytes (UDX packets for live stream ids to their streams, everything else, such as
//!   dht-rpc `0x03`/`0x13` and holepunch probes, to [`UdxSocket::recv_datagram`]), and sends
//!   equal-size DATA packets as GSO batches. The owner sends its own datagrams on the same
//!   socket with [`UdxSocket::send_to`].
//! - [`UdxStream`]: a stream handle, `AsyncRead + AsyncWrite` (so `corenet-noise`'s
//!   `SecretStream` runs over it unchanged) with MESSAGEs, `connect`, a firewall for packets
//!   arriving before connect, `change_remote`, graceful shutdown and `destroy`.
//! - [`StreamConfig`], [`SocketConfig`]: settings with documented defaults; [`Error`].
//!
//! # Design notes
//! - **No hop per packet.** Application tasks and the driver share one lock per socket; a
//!   write copies into the stream's send buffer and nudges the driver, a read copies out.
//!   Received packets are processed in place in the receive buffers.
//! - **Batched socket I/O via [`quinn_udp`]** rather than our own `unsafe` `recvmmsg` /
//!   `sendmsg(UDP_SEGMENT)` code: it is the maintained, audited implementation of exactly
//!   these calls (GSO/GRO on Linux, fallbacks elsewhere, detection of NICs that reject
//!   GSO), so this crate stays free of `unsafe`. Its one gap, `sendmmsg` for many small
//!   datagrams, matters little here: DATA goes out in GSO batches and ACKs are coalesced
//!   per receive batch.
//! - **Memory is bounded**: per stream by the send buffer and receive window (4 MiB each by
//!   default, grown on demand), the reorder span, and the MESSAGE queues; per socket by the
//!   owner's datagram queue (drop-and-count when full) and fixed receive buffers.
//! - **Bad input** (data offset beyond the packet, SACK ranges that make no sense, acks
//!   beyond what was sent, packets beyond the window or too far ahead, message floods) is
//!   dropped and counted in [`core::StreamStats`] with a `debug` log; a peer that violates
//!   the protocol (DATA after its END, conflicting ENDs) gets a DESTROY and the stream fails
//!   with [`Error::Protocol`].
//! - Differences from libudx that a peer cannot observe as a protocol change are listed
//!   where they are made (`core::bbr` for congestion control, the RTO streak rule, a real
//!   TIME_WAIT, ACK coalescing per receive batch).
//!
//! # Example
//! Two sockets on loopback, a stream each way, a message and a graceful close:
//! ```
//! use corenet_udx::{StreamConfig, UdxSocket};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let a = UdxSocket::bind("127.0.0.1:0".parse()?).await?;
//! let b = UdxSocket::bind("127.0.0.1:0".parse()?).await?;
//! let mut sa = a.create_stream(StreamConfig::default())?;
//! let mut sb = b.create_stream(StreamConfig::default())?;
//! // Stream ids are exchanged out of band (hyperdht: in the handshake).
//! sa.connect(sb.id(), b.local_addr())?;
//! sb.connect(sa.id(), a.local_addr())?;
//!
//! sa.write_all(b"hello over udx").await?;
//! sa.shutdown().await?; // END
//! let mut got = Vec::new();
//! sb.read_to_end(&mut got).await?;
//! assert_eq!(got, b"hello over udx");
//!
//! sb.send_message(b"unordered").await?;
//! assert_eq!(sa.recv_message().await.as_deref(), Some(&b"unordered"[..]));
//!
//! sb.shutdown().await?;
//! sa.closed().await?; // both ENDs acknowledged
//! # Ok(()) }
//! ```
//!
//! [libudx]: https://github.com/holepunchto/libudx
//! [udx-native]: https://github.com/holepunchto/udx-native

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod config;
pub mod core;
mod driver;
mod error;
mod instance;
mod socket;
mod stream;
pub mod wire;

pub use config::{SocketConfig, StreamConfig};
pub use error::{Error, IoError, ProtocolError};
pub use instance::{Firewall, FirewallDecision, Udx, MAX_SOCKETS};
pub use socket::{SocketId, SocketStats, UdxSocket};
pub use stream::UdxStream;
