//! hyperdht on top of dht-rpc: records, storage, the handshake router, servers and clients.

pub mod crypto;
pub mod dht;
pub mod messages;
pub mod payload;
pub mod store;

pub use dht::{
    command, ConnectError, ConnectId, HandshakeId, HyperConfig, HyperDht, HyperEvent, OpError,
    OpId, OpResult, ServerId,
};
