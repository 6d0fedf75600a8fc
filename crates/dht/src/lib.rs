//! dht-rpc and hyperdht, wire-compatible with the JavaScript DHT that hyperswarm runs on.
//!
//! This crate mirrors the JS modules `dht-rpc` (Kademlia over UDP: node ids from addresses,
//! tokens, a routing table, requests with retries and a congestion window, iterative queries,
//! NAT sampling, the ephemeral-to-persistent switch) and `hyperdht` (announce and lookup of
//! signed peer records, find-peer, mutable and immutable storage, the PEER_HANDSHAKE router
//! that carries Noise IK between a client and a server).
//!
//! # Layout
//! - [`rpc`]: dht-rpc as a sans-IO core ([`rpc::Node`]). It never touches the network or the
//!   clock: time and datagrams are inputs, datagrams and events are outputs.
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
    NatStatus, RelayHold, RelayLink, Server, Testnet,
};
pub use hyper::nat::NatType;
pub use hyper::{ConnectError, ConnectOptions, ListenOptions, PathKind, PunchStats};
