//! Errors of UDX streams and sockets.

use std::io;
use std::sync::Arc;

/// Why a stream or socket operation failed, or why a stream closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer aborted the stream with a DESTROY packet (JS `ECONNRESET`).
    #[error("stream reset by the peer")]
    ConnectionReset,
    /// We destroyed the stream.
    #[error("stream destroyed locally")]
    Destroyed,
    /// The peer stopped acknowledging (too many retransmission timeouts) or, with an idle
    /// timeout configured, sent nothing for too long (JS `ETIMEDOUT`).
    #[error("stream timed out")]
    TimedOut,
    /// The peer kept a zero receive window longer than the configured limit.
    #[error("peer kept a zero receive window too long")]
    ZeroWindow,
    /// The peer violated the protocol; the stream was destroyed.
    #[error("protocol violation: {0}")]
    Protocol(#[from] ProtocolError),
    /// Writing after `end()` / shutdown.
    #[error("write side already ended")]
    WriteAfterEnd,
    /// The operation needs a connected stream.
    #[error("stream not connected")]
    NotConnected,
    /// `connect` on a stream that already has a remote.
    #[error("stream already connected")]
    AlreadyConnected,
    /// A stream with this id already exists on the socket.
    #[error("stream id {0} already in use")]
    IdInUse(u32),
    /// A MESSAGE longer than one packet allows.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// Message length.
        len: usize,
        /// Limit for this path.
        max: usize,
    },
    /// The outgoing MESSAGE queue is full.
    #[error("message queue full")]
    MessageQueueFull,
    /// The socket was closed.
    #[error("socket closed")]
    SocketClosed,
    /// `connect` on a stream made on the instance rather than on a socket: it needs
    /// `connect_via` (or its firewall) to say which socket.
    #[error("stream has no socket to connect on")]
    NoSocket,
    /// A socket or stream of another UDX instance (stream ids are per instance, so streams
    /// cannot move or relay across instances).
    #[error("socket or stream of another udx instance")]
    OtherInstance,
    /// `relay_to` on a stream that relays already.
    #[error("stream already relayed")]
    AlreadyRelayed,
    /// The instance holds the most sockets it may.
    #[error("too many sockets in one udx instance (at most {max})")]
    TooManySockets {
        /// The cap ([`crate::MAX_SOCKETS`]).
        max: usize,
    },
    /// A socket operation failed.
    #[error("socket error: {0}")]
    Io(Arc<IoError>),
}

/// An `io::Error` wrapper so that [`Error`] stays `Clone + PartialEq`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct IoError(pub io::Error);

impl PartialEq for IoError {
    fn eq(&self, other: &Self) -> bool {
        self.0.kind() == other.0.kind()
    }
}
impl Eq for IoError {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(Arc::new(IoError(e)))
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        let kind = match &e {
            Error::ConnectionReset | Error::Destroyed => io::ErrorKind::ConnectionReset,
            Error::TimedOut | Error::ZeroWindow => io::ErrorKind::TimedOut,
            Error::Protocol(_) => io::ErrorKind::InvalidData,
            Error::WriteAfterEnd => io::ErrorKind::BrokenPipe,
            Error::NotConnected => io::ErrorKind::NotConnected,
            Error::AlreadyConnected => io::ErrorKind::AlreadyExists,
            Error::IdInUse(_) => io::ErrorKind::AddrInUse,
            Error::MessageTooLarge { .. } => io::ErrorKind::InvalidInput,
            Error::MessageQueueFull => io::ErrorKind::WouldBlock,
            Error::SocketClosed => io::ErrorKind::NotConnected,
            Error::NoSocket => io::ErrorKind::NotConnected,
            Error::OtherInstance => io::ErrorKind::InvalidInput,
            Error::AlreadyRelayed => io::ErrorKind::AlreadyExists,
            Error::TooManySockets { .. } => io::ErrorKind::OutOfMemory,
            Error::Io(inner) => inner.0.kind(),
        };
        io::Error::new(kind, e)
    }
}

/// How a peer violated the protocol. The stream is destroyed (a DESTROY is sent) and fails
/// with [`Error::Protocol`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Two END packets with different sequence numbers.
    #[error("END at seq {first} and again at seq {second}")]
    ConflictingEnd {
        /// The first END's seq.
        first: u32,
        /// The conflicting one.
        second: u32,
    },
    /// DATA sequenced after the peer's END.
    #[error("DATA at seq {seq} after END at seq {end}")]
    DataAfterEnd {
        /// The DATA packet's seq.
        seq: u32,
        /// The END's seq.
        end: u32,
    },
}
