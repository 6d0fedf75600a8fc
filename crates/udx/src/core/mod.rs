//! The sans-IO protocol core: no sockets, no clock, no randomness. Time is an input (`now`),
//! packets go in as byte slices and come out written into caller buffers.
//!
//! - [`Stream`]: one UDX stream (sequencing, SACK, RACK-TLP loss detection, RTO, BBR
//!   congestion control, pacing, MTU probing, flow control, END/DESTROY, MESSAGEs,
//!   heartbeats, idle timeout).
//! - [`classify`]: the socket-level demultiplexing rule shared by every driver.

mod bbr;
mod ring;
mod rtt;
#[cfg(test)]
mod sim;
mod stream;
#[cfg(test)]
mod tests;

pub use stream::{Event, Stream, StreamInfo, StreamStats, Transmit, WINDOW_SLACK};

/// Where a datagram received on a UDX socket goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A UDX packet for the stream with this id, if one is live on the socket.
    Stream(u32),
    /// Anything else (dht-rpc, holepunch probes, non-UDX bytes): the socket's owner.
    Owner,
}

/// The demultiplexing rule of libudx `process_packet`: a datagram of at least 20 bytes that
/// starts with `FF 01` is a UDX packet for the stream id in bytes 4..8; everything else (and a
/// UDX packet for an id no live stream has, which the caller checks) goes to the owner.
pub fn classify(datagram: &[u8]) -> Route {
    match crate::wire::peek_stream_id(datagram) {
        Some(id) => Route::Stream(id),
        None => Route::Owner,
    }
}
