//! dht-rpc and hyperdht, wire-compatible with the JavaScript DHT that hyperswarm runs on.
//!
//! This crate mirrors the JS modules `dht-rpc` (Kademlia over UDP: node ids from addresses,
//! tokens, a routing table, requests with retries and a congestion window, iterative queries,
//! NAT sampling, the ephemeral-to-persistent switch) and `hyperdht` (announce and lookup of
//! signed peer records, find-peer, mutable and immutable storage, the PEER_HANDSHAKE and
//! PEER_HOLEPUNCH routers, servers and connects with NAT traversal: the LAN shortcut,
//! holepunching with the consistent, random and birthday strategies, and blind relays).
//!
//! # Layout
//! - [`rpc`]: dht-rpc as a sans-IO core ([`rpc::Node`]). It never touches the network or the
//!   clock: time and datagrams are inputs, datagrams and events are outputs.
//! - [`hyper`]: hyperdht as a sans-IO core ([`hyper::HyperDht`], over an [`rpc::Node`]), one
//!   module per machine (storage, client operations, announcer, routers, server, connect),
//!   and the pieces of NAT traversal: [`hyper::nat`] (per-socket NAT classification),
//!   [`hyper::holepunch`] (the puncher and its pool sockets), [`hyper::payload`] (sealed
//!   holepunch payloads and address tokens). Randomness comes from a seeded RNG the core
//!   owns (Noise ephemeral keys included), time is an input.
//! - [`relay`]: the blind-relay protocol ([`relay::messages`], the pairing table
//!   [`relay::core`]) and, with the actor, [`relay::RelayServer`].
//! - [`sim`]: a deterministic network simulator for the cores, with NAT models.
//! - `actor` (feature `actor`, default): [`Dht`], the handle, and the `DhtActor` that owns
//!   the UDX instance (every socket of the node, pool sockets included) and drives the core.
//!
//! # Connecting through NATs
//! [`Dht::connect_with`] finds the server, runs the Noise IK handshake through the nodes
//! that hold its record, and then takes the first path that opens: direct (an OPEN side),
//! the server's LAN address (both behind one NAT), a punched hole, or a blind relay named by
//! either side ([`hyper::ConnectOptions::relay_through`]). The [`Connection`] says which
//! ([`PathKind`]); a relayed connection moves to a punched path if one opens later. Failures
//! are typed with hyperdht's codes ([`ConnectError::code`]): `HOLEPUNCH_ABORTED`,
//! `HOLEPUNCH_DOUBLE_RANDOMIZED_NATS`, `RELAY_ABORTED`, ...
//!
//! # Example
//! ```
//! use corenet_dht::rpc::{Message, Request, message::internal};
//! // A FIND_NODE request as the JS stack encodes it.
//! let req = Request { tid: 7, internal: true, command: internal::FIND_NODE,
//!                     target: Some([0xaa; 32]), ..Default::default() };
//! let bytes = req.to_bytes();
//! assert_eq!(bytes[0], 0x03);
//! assert_eq!(Message::decode(&bytes).unwrap(), Message::Request(req));
//! ```

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "actor")]
pub mod actor;
pub mod hyper;
pub mod relay;
pub mod rpc;
pub mod sim;

/// The public bootstrap nodes of the hyperswarm network (hyperdht's defaults).
pub const DEFAULT_BOOTSTRAP: [std::net::SocketAddrV4; 3] = [
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(88, 99, 3, 86), 49737),
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(142, 93, 90, 113), 49737),
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(138, 68, 147, 8), 49737),
];

#[cfg(feature = "actor")]
pub use actor::{
    Connection, Dht, DhtActor, DhtConfig, DhtInfo, Error, Firewall, LookupItem, NatSample,
    NatStatus, RelayHold, RelayLink, Server, Testnet, MAX_HALF_OPEN,
};
pub use hyper::nat::NatType;
pub use hyper::{ConnectError, ConnectOptions, ListenOptions, PathKind, PunchStats};
