//! UDX: reliable, ordered, congestion-controlled streams over UDP, wire-compatible with
//! libudx / udx-native.

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod config;
pub mod core;
mod error;
mod socket;
mod stream;
pub mod wire;

pub use config::{SocketConfig, StreamConfig};
pub use error::{Error, IoError, ProtocolError};
pub use socket::{Firewall, FirewallDecision, SocketStats, UdxSocket};
pub use stream::UdxStream;
