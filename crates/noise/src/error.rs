//! Errors of the secret stream.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::handshake::HandshakeError;

/// Why a secret stream failed. Every error except [`Error::MessageTooLarge`] closes the
/// stream: later calls return the same error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The underlying transport failed.
    #[error("transport error: {0}")]
    Io(Arc<io::Error>),
    /// The Noise handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// The remote announced a frame longer than the configured limit.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// Configured limit.
        max: usize,
    },
    /// A message we were asked to send is longer than the configured limit (the stream stays
    /// usable).
    #[error("message of {len} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// Message length.
        len: usize,
        /// Configured limit.
        max: usize,
    },
    /// The header frame that starts the encrypted stream is malformed or carries the wrong
    /// stream id.
    #[error("invalid header frame: {0}")]
    InvalidHeader(&'static str),
    /// A message failed authentication (tampered, truncated, or out of order).
    #[error("message failed authentication")]
    Decrypt,
    /// The transport ended in the middle of a frame or before the handshake finished.
    #[error("transport ended unexpectedly ({0})")]
    UnexpectedEof(&'static str),
    /// Nothing arrived within the idle timeout.
    #[error("no data for {0:?}: stream timed out")]
    TimedOut(Duration),
    /// The stream was shut down for writing.
    #[error("stream is closed for writing")]
    WriteClosed,
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(Arc::new(e))
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        let kind = match &e {
            Error::Io(inner) => inner.kind(),
            Error::Handshake(_)
            | Error::FrameTooLarge { .. }
            | Error::InvalidHeader(_)
            | Error::Decrypt => io::ErrorKind::InvalidData,
            Error::MessageTooLarge { .. } => io::ErrorKind::InvalidInput,
            Error::UnexpectedEof(_) => io::ErrorKind::UnexpectedEof,
            Error::TimedOut(_) => io::ErrorKind::TimedOut,
            Error::WriteClosed => io::ErrorKind::BrokenPipe,
        };
        io::Error::new(kind, e)
    }
}

impl Error {
    /// Recovers the secret-stream error from an `io::Error` returned by the `AsyncRead` /
    /// `AsyncWrite` side, if it is one.
    pub fn from_io(e: &io::Error) -> Option<&Error> {
        e.get_ref().and_then(|inner| inner.downcast_ref::<Error>())
    }
}
