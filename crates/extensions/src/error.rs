//! Errors of the extension bus.

use std::time::Duration;

use crate::encoding::{DecodeError, EncodeError};
use crate::limits::Exceeded;
use crate::peer::SessionId;

/// Why an extension operation failed, or what went wrong with a peer (handed to `on_error`).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bus actor is gone (closed, or its thread ended).
    #[error("the extension bus has shut down")]
    Shutdown,
    /// The extension was destroyed.
    #[error("the extension was destroyed")]
    Destroyed,
    /// An extension with this name is registered on the bus already.
    #[error("an extension named {0:?} is registered already")]
    AlreadyRegistered(String),
    /// The name cannot be an extension's protocol name.
    #[error("invalid extension name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A session with this id was added already.
    #[error("session {0} was added already")]
    DuplicateSession(SessionId),
    /// No session with this id (never added, removed, or its connection closed).
    #[error("no session {0} on this bus")]
    UnknownPeer(SessionId),
    /// The session's connection is closed.
    #[error("the connection is closed")]
    Disconnected,
    /// The message is larger than the extension's limit (on send), or a peer sent one (to
    /// `on_error`; the message is dropped, the channel stays open).
    #[error("a message of {len} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// The encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The peer's channel is not open and its queue of waiting messages is full.
    #[error("{messages} message(s) of {bytes} bytes already wait for the peer's channel to open")]
    QueueFull {
        /// Messages waiting.
        messages: usize,
        /// Their bytes.
        bytes: usize,
    },
    /// Messages that were queued for a peer were never sent.
    #[error("{messages} message(s) were not delivered: {reason}")]
    Undelivered {
        /// How many.
        messages: usize,
        /// Why.
        reason: Undelivered,
    },
    /// The peer sent faster than the extension's rate limit: its channel was closed and the
    /// extension stays off with this peer until it reconnects.
    #[error("the peer exceeded the {exceeded:?} rate limit; its extension channel was closed")]
    Flooded {
        /// Which limit.
        exceeded: Exceeded,
    },
    /// The peer was cut off from this extension for flooding.
    #[error("the peer was cut off from this extension for flooding")]
    PeerBlocked,
    /// A message from the peer did not decode in the extension's encoding. The message is
    /// dropped; nothing is closed.
    #[error("a message does not decode as {encoding}: {source}")]
    Decode {
        /// The encoding's name.
        encoding: &'static str,
        /// What was wrong.
        source: DecodeError,
    },
    /// The message could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The mux refused the message (its send queue is over the hard limit).
    #[error("mux error: {0}")]
    Mux(#[from] corenet_mux::Error),
}

/// Why queued messages were never sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Undelivered {
    /// The peer did not open its side of the extension in time.
    #[error("the peer did not open the extension within {0:?}")]
    OpenTimeout(Duration),
    /// The connection closed, or the session was removed.
    #[error("the connection closed first")]
    Disconnected,
    /// The peer was cut off for flooding.
    #[error("the peer was cut off for flooding")]
    PeerBlocked,
    /// The extension was destroyed.
    #[error("the extension was destroyed")]
    Destroyed,
}
