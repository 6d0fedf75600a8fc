//! The swarm's sans-IO parts: peers, the dial queue, the connection set, the reconnect limit.

pub mod connections;
pub mod dialer;
pub mod peer;
pub mod reconnects;
