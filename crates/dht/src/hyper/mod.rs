//! hyperdht on top of dht-rpc: records, storage, the handshake router, servers and clients.

pub mod crypto;
pub mod dht;
pub mod holepunch;
pub mod messages;
pub mod nat;
pub mod payload;
pub mod store;

pub use dht::{
    command, ConnectError, ConnectId, ConnectOptions, HandshakeId, HyperConfig, HyperDht,
    HyperEvent, ListenOptions, OpError, OpId, OpResult, PathKind, PunchStats, RelayPairing,
    ServerId,
};
