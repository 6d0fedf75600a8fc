//! UDX: reliable, ordered, congestion-controlled streams over UDP, wire-compatible with
//! libudx / udx-native.

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod config;
pub mod core;
mod error;
pub mod wire;

pub use config::StreamConfig;
pub use error::{Error, IoError, ProtocolError};
