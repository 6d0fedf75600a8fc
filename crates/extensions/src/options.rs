//! How an extension is registered: its encoding, handlers and limits.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::encoding::{Binary, Compact, Encoding, Json, Utf8};
use crate::error::Error;
use crate::limits::{PendingLimits, RateLimit};
use crate::peer::Peer;

/// Default largest message, sent or received: 64 KiB of encoded payload.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;
/// Default messages that may wait for one peer's channel to open.
pub const DEFAULT_MAX_PENDING_MESSAGES: usize = 256;
/// Default bytes that may wait for one peer's channel to open.
pub const DEFAULT_MAX_PENDING_BYTES: usize = 1024 * 1024;
/// Default time a message waits for a peer's channel to open before it fails.
pub const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default messages each [`crate::Messages`] stream buffers.
pub const DEFAULT_STREAM_BUFFER: usize = 1024;

/// A message handler.
pub(crate) type OnMessage<M> = Arc<dyn Fn(M, &Peer) + Send + Sync>;
/// An error handler.
pub(crate) type OnError = Arc<dyn Fn(Error, &Peer) + Send + Sync>;

/// The limits of an extension, copied into every channel.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Largest encoded message.
    pub(crate) max_message_size: usize,
    /// The queue for channels that are not open yet.
    pub(crate) pending: PendingLimits,
    /// Inbound rate limit per peer.
    pub(crate) rate: RateLimit,
    /// Capacity of each message stream.
    pub(crate) stream_buffer: usize,
}

/// How to register an extension: its encoding, optional handlers, and its limits. Every
/// setter states its default.
///
/// Handlers run in the task that serves the peer's channel, on the tokio runtime that added
/// the session (see [`crate::Extensions::add_session`]): one message at a time and in order
/// for each peer; on a multi-thread runtime, handlers for different peers may run at the same
/// time. Keep them short and never block in them (hand long work to a task): while a handler
/// runs, that peer's channel is not read. They may call [`crate::Extension::send`] and
/// [`crate::Extension::broadcast`]. A handler that panics is caught and logged.
///
/// **Flood policy.** Every peer gets a token bucket per extension ([`RateLimit`]; default
/// 1,000 messages per second with bursts of 2,000, and 8 MiB per second with bursts of
/// 16 MiB, each remote open of the channel counting as a message). A peer that empties a
/// bucket has its channel for the extension closed, `on_error` receives
/// [`Error::Flooded`], messages queued for it fail, and the extension stays off with that
/// peer until its connection is replaced (its re-opens are rejected). A slow consumer of a
/// [`crate::Messages`] stream is not the peer's fault: while the bus waits for room in a
/// stream, the peer's channel is not read (the connection's flow control slows the peer), and
/// its buckets are refilled afterwards.
pub struct ExtensionOptions<E: Encoding> {
    /// The encoding.
    pub(crate) encoding: E,
    /// Called with every message.
    pub(crate) on_message: Option<OnMessage<E::Message>>,
    /// Called with every error about a peer.
    pub(crate) on_error: Option<OnError>,
    /// Limits.
    pub(crate) limits: Limits,
}

impl<E: Encoding> fmt::Debug for ExtensionOptions<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExtensionOptions")
            .field("encoding", &self.encoding.name())
            .field("on_message", &self.on_message.is_some())
            .field("on_error", &self.on_error.is_some())
            .field("limits", &self.limits)
            .finish()
    }
}

/// The constructors for the built-in encodings. They sit in one impl so that
/// `ExtensionOptions::json::<T>()` names its type the way `ExtensionOptions::utf8()` does.
impl ExtensionOptions<Binary> {
    /// Raw bytes (JS `c.raw`): send `&[u8]`, receive [`bytes::Bytes`].
    pub fn binary() -> Self {
        ExtensionOptions::new(Binary)
    }

    /// UTF-8 strings (JS `c.string`): send `&str`, receive `String`.
    pub fn utf8() -> ExtensionOptions<Utf8> {
        ExtensionOptions::new(Utf8)
    }

    /// JSON values (JS `c.json`): send and receive `T`.
    pub fn json<T>() -> ExtensionOptions<Json<T>>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        ExtensionOptions::new(Json::new())
    }

    /// A compact-encoding type of `corenet-codec`: send and receive `T`.
    pub fn compact<T>() -> ExtensionOptions<Compact<T>>
    where
        Compact<T>: Encoding,
    {
        ExtensionOptions::new(Compact::new())
    }
}

impl<E: Encoding> ExtensionOptions<E> {
    /// Options for `encoding`, with no handlers and the default limits.
    pub fn new(encoding: E) -> Self {
        ExtensionOptions {
            encoding,
            on_message: None,
            on_error: None,
            limits: Limits {
                max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
                pending: PendingLimits {
                    messages: DEFAULT_MAX_PENDING_MESSAGES,
                    bytes: DEFAULT_MAX_PENDING_BYTES,
                    timeout: DEFAULT_OPEN_TIMEOUT,
                },
                rate: RateLimit::default(),
                stream_buffer: DEFAULT_STREAM_BUFFER,
            },
        }
    }

    /// Called with every message and the peer that sent it. Default: none (messages still
    /// reach [`crate::Extension::messages`] streams).
    pub fn on_message<F>(mut self, handler: F) -> Self
    where
        F: Fn(E::Message, &Peer) + Send + Sync + 'static,
    {
        self.on_message = Some(Arc::new(handler));
        self
    }

    /// Called with every error about a peer: a message that did not decode
    /// ([`Error::Decode`]) or was too large ([`Error::MessageTooLarge`]), a flood
    /// ([`Error::Flooded`]), messages queued with [`crate::Extension::send`] that were never
    /// sent ([`Error::Undelivered`]). Default: none (errors are logged at `debug`).
    pub fn on_error<F>(mut self, handler: F) -> Self
    where
        F: Fn(Error, &Peer) + Send + Sync + 'static,
    {
        self.on_error = Some(Arc::new(handler));
        self
    }

    /// Largest encoded message, sent or received. Larger sends fail with
    /// [`Error::MessageTooLarge`]; larger received messages are dropped and reported to
    /// `on_error`. Default: [`DEFAULT_MAX_MESSAGE_SIZE`] (64 KiB). The mux's frame limit
    /// (about 16 MiB) is the ceiling.
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.limits.max_message_size = bytes;
        self
    }

    /// How many messages, and how many bytes, may wait for one peer's channel to open.
    /// Default: [`DEFAULT_MAX_PENDING_MESSAGES`] (256) and [`DEFAULT_MAX_PENDING_BYTES`]
    /// (1 MiB).
    pub fn with_pending_limit(mut self, messages: usize, bytes: usize) -> Self {
        self.limits.pending.messages = messages;
        self.limits.pending.bytes = bytes;
        self
    }

    /// How long a message waits for a peer's channel to open before it fails with
    /// [`Error::Undelivered`]. Default: [`DEFAULT_OPEN_TIMEOUT`] (10 s).
    pub fn with_open_timeout(mut self, timeout: Duration) -> Self {
        self.limits.pending.timeout = timeout;
        self
    }

    /// The inbound rate limit per peer (see the flood policy above). Default:
    /// [`RateLimit::default`].
    pub fn with_rate_limit(mut self, limit: RateLimit) -> Self {
        self.limits.rate = limit;
        self
    }

    /// Messages each [`crate::Messages`] stream buffers before the bus waits for its
    /// reader. Default: [`DEFAULT_STREAM_BUFFER`] (1,024).
    pub fn with_stream_buffer(mut self, messages: usize) -> Self {
        self.limits.stream_buffer = messages.max(1);
        self
    }

    /// The encoding.
    pub fn encoding(&self) -> &E {
        &self.encoding
    }
}
