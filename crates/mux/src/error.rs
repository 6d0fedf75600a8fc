//! Errors of the mux.

use corenet_codec::DecodeError;

/// A remote broke the protocol. The mux closes the connection, as JS protomux destroys the
/// stream for the same input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame, or a control message in it, does not decode.
    #[error("malformed frame: {0}")]
    Decode(#[from] DecodeError),
    /// An `open` used id 0, skipped ids (a new id must be at most one past the highest in
    /// use), or reused an id that is still open. JS: "Invalid open message".
    #[error("invalid open message for remote channel {remote_id}")]
    InvalidOpen {
        /// The id the open carried.
        remote_id: u64,
    },
    /// A `reject` named an id we have no unanswered open for. JS: "Invalid reject message".
    #[error("invalid reject message for local channel {local_id}")]
    InvalidReject {
        /// The id the reject carried.
        local_id: u64,
    },
    /// The remote's channel ids went past the configured channel limit.
    #[error("remote channel id {remote_id} exceeds the limit of {max} channels")]
    TooManyChannels {
        /// The id the open carried.
        remote_id: u64,
        /// The configured limit.
        max: usize,
    },
    /// Messages held for channels the remote opened and nobody has answered yet went past
    /// the hard limit (reading pauses well before, at the soft limit; only a single huge frame
    /// can get here).
    #[error("{buffered} bytes held for unanswered remote channels exceed the limit of {max}")]
    PendingOverflow {
        /// Bytes held, counted as JS counts them (512 per message plus its length).
        buffered: usize,
        /// The configured limit.
        max: usize,
    },
    /// Batches nested deeper than the mux follows.
    #[error("batches nested more than {max} deep")]
    BatchTooDeep {
        /// The nesting limit.
        max: usize,
    },
}

/// Why a mux operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The remote broke the protocol; the connection is closed.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The secret stream failed; the connection is closed.
    #[cfg(feature = "driver")]
    #[error("stream error: {0}")]
    Stream(#[from] corenet_noise::Error),
    /// The mux is closed (locally, by the remote, or after an error).
    #[error("the mux is closed")]
    MuxClosed,
    /// The channel is closed (or was never opened on this mux).
    #[error("the channel is closed")]
    ChannelClosed,
    /// A unique channel with this protocol and id is already open (JS `createChannel`
    /// returns `null`).
    #[error("a channel for protocol {protocol:?} with this id is already open")]
    AlreadyOpen {
        /// The protocol name.
        protocol: String,
    },
    /// Opening another channel would pass the configured channel limit.
    #[error("the limit of {max} channels is reached")]
    TooManyChannels {
        /// The configured limit.
        max: usize,
    },
    /// A frame would be longer than the secret stream carries.
    #[error("a frame of {len} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// Frame length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The outgoing queue is over its hard limit; wait for it to drain (the async
    /// `Channel::send` does).
    #[error("{queued} bytes are queued for sending, over the limit of {max}")]
    SendQueueFull {
        /// Bytes queued.
        queued: usize,
        /// The configured hard limit.
        max: usize,
    },
    /// The pairing request was already answered or withdrawn by the remote.
    #[error("the pairing request is no longer pending")]
    PairingGone,
    /// The options do not match the pairing request they answer.
    #[error("the channel options name another protocol or id than the pairing request")]
    PairingMismatch,
}

impl Error {
    /// True when the error ended the whole connection (not just one call).
    pub fn is_fatal(&self) -> bool {
        match self {
            Error::Protocol(_) | Error::MuxClosed => true,
            #[cfg(feature = "driver")]
            Error::Stream(_) => true,
            _ => false,
        }
    }
}
