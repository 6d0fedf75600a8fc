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
//! - [`Udx`]: a UDX instance (libudx `udx_t`, udx-native's `UDX`), the async shell. Its
//!   sockets share one stream table (streams are matched by id whatever socket a packet
//!   arrives on) and one driver task, which polls every socket (each has its own readiness
//!   waker, so hundreds of holepunch sockets cost nothing while idle), receives in batches
//!   (`recvmmsg`, with GRO where available), demultiplexes on the first bytes (UDX packets
//!   for live stream ids to their streams, everything else, such as dht-rpc `0x03`/`0x13`
//!   and holepunch probes, to the arrival socket's [`UdxSocket::recv_datagram`]), and sends
//!   each stream's packets on its current socket as GSO batches. At most [`MAX_SOCKETS`]
//!   sockets per instance.
//! - [`UdxSocket`]: one socket of an instance ([`UdxSocket::bind`] makes an instance with
//!   one socket). The owner sends its own datagrams on it with [`UdxSocket::send_to`], or
//!   with a TTL ([`UdxSocket::send_to_ttl`], holepunch probes). It closes when its last
//!   handle is gone and no stream uses it, or on [`UdxSocket::close`].
//! - [`UdxStream`]: a stream handle, `AsyncRead + AsyncWrite` (so `corenet-noise`'s
//!   `SecretStream` runs over it unchanged) with MESSAGEs, `connect` / `connect_via` a
//!   socket, a [`Firewall`] for packets arriving on a socket other than its own (and before
//!   connect), `change_remote` / `change_remote_via` another socket, `relay_to` (blind
//!   relays), graceful shutdown and `destroy`.
//! - [`StreamConfig`], [`SocketConfig`]: settings with documented defaults; [`Error`].
//!
//! # Design notes
//! - **No hop per packet.** Application tasks and the driver share one lock per instance; a
//!   write copies into the stream's send buffer and nudges the driver (or, to an idle
//!   stream, sends from the writer's task), a read copies out. Received packets are
//!   processed in place in the receive buffer, and packets of relayed streams are forwarded
//!   from there with only their stream id rewritten.
//! - **The instance model is libudx's.** A stream belongs to the instance, is connected on
//!   one of its sockets and can move to another; its firewall is asked about packets that
//!   arrive on any other socket (hyperdht switches a connection to a punched path that way,
//!   with [`FirewallDecision::Connect`]); without a firewall a connected stream takes them
//!   (libudx), an unconnected one drops them (udx-native's default firewall). A stream
//!   holds the sockets it uses open until it finishes, like udx-native's socket refcount.
//! - **TTL per datagram.** [`UdxSocket::send_to_ttl`] passes `IP_TTL` / `IPV6_HOPLIMIT` as
//!   ancillary data of one `sendmsg`, so streams on the socket never see the probe's TTL;
//!   a kernel that refuses it gets the socket option set and restored under a lock every
//!   send on that socket then takes.
//! - **Batched socket I/O via [`quinn_udp`]** rather than our own `unsafe` `recvmmsg` /
//!   `sendmsg(UDP_SEGMENT)` code: it is the maintained, audited implementation of exactly
//!   these calls (GSO/GRO on Linux, fallbacks elsewhere, detection of NICs that reject
//!   GSO), so this crate stays free of `unsafe`. Its one gap, `sendmmsg` for many small
//!   datagrams, matters little here: DATA goes out in GSO batches and ACKs are coalesced
//!   per receive batch.
//! - **Memory is bounded**: per stream by the send buffer and receive window (4 MiB each by
//!   default, grown on demand), the reorder span, and the MESSAGE queues; per socket by the
//!   owner's datagram queue (drop-and-count when full); per instance by [`MAX_SOCKETS`] and
//!   one fixed receive buffer and staging buffer shared by all its sockets.
//! - **Bad input** (data offset beyond the packet, SACK ranges that make no sense, acks
//!   beyond what was sent, packets beyond the window or too far ahead, message floods) is
//!   dropped and counted in [`core::StreamStats`] with a `debug` log; a peer that violates
//!   the protocol (DATA after its END, conflicting ENDs) gets a DESTROY and the stream fails
//!   with [`Error::Protocol`].
//! - Differences from libudx that a peer cannot observe as a protocol change are listed
//!   where they are made (`core::bbr` for congestion control, the RTO streak rule, a real
//!   TIME_WAIT, ACK coalescing per receive batch).
//!
//! # Examples
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
//! An instance with two sockets: a stream made unconnected is connected by its firewall on
//! the socket its peer's first packet reaches, as after a holepunch:
//! ```
//! use std::sync::Arc;
//! use corenet_udx::{FirewallDecision, StreamConfig, Udx, UdxSocket};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let udx = Udx::new();
//! let _relayed = udx.bind("127.0.0.1:0".parse()?).await?;
//! let punched = udx.bind("127.0.0.1:0".parse()?).await?;
//! let peer = UdxSocket::bind("127.0.0.1:0".parse()?).await?;
//! let mut theirs = peer.create_stream(StreamConfig::default())?;
//! let mut ours = udx.create_stream(StreamConfig::default())?;
//! let (remote_id, via) = (theirs.id(), punched.id());
//! ours.set_firewall(Arc::new(move |socket, _from| {
//!     if socket == via {
//!         FirewallDecision::Connect { remote_id }
//!     } else {
//!         FirewallDecision::Drop
//!     }
//! }))?;
//! theirs.connect(ours.id(), punched.local_addr())?;
//! theirs.write_all(b"first").await?;
//! ours.connected().await?;
//! assert_eq!(ours.socket_id(), Some(punched.id()));
//! let mut buf = [0u8; 5];
//! ours.read_exact(&mut buf).await?;
//! ours.write_all(b"reply").await?;
//! theirs.read_exact(&mut buf).await?;
//! assert_eq!(&buf, b"reply");
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
pub use instance::{Firewall, FirewallDecision, Udx, MAX_HELD_RELAY_PACKETS, MAX_SOCKETS};
pub use socket::{SocketId, SocketStats, UdxSocket};
pub use stream::{StreamControl, UdxStream};
