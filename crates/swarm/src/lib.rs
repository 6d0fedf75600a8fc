//! Hyperswarm in Rust: join topics, find peers on the DHT, keep one encrypted connection per
//! peer, and redial with hyperswarm's retry rules.
//!
//! # Layout
//! - [`core`]: sans-IO state machines ([`core::dialer::Dialer`],
//!   [`core::connections::ConnectionSet`], [`core::peer::PeerInfo`]).

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod core;
