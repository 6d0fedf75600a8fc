//! The swarm's sans-IO parts: peers, the dial queue, the connection set.

pub mod connections;
pub mod dialer;
pub mod peer;
