//! The async shell: a [`Mux`] driven over a [`SecretStream`], with cloneable handles.
//!
//! - One [`MuxDriver`] future owns the secret stream and does all I/O: it moves frames from
//!   the core to the stream (several per wake-up, flushed together; small frames queued
//!   together are packed into one batch frame, see [`DriverConfig::with_packing`]) and feeds
//!   received frames to the core. Run it with `tokio::spawn` (or use [`MuxHandle::spawn`]).
//! - The core and the per-channel inboxes sit behind one mutex shared with the handles.
//!   A send locks it, encodes the frame straight into the core's outgoing queue and wakes the
//!   driver; a receive pops from the channel's inbox. No message crosses a channel or a
//!   mailbox, and received payloads are slices of the decrypted frame (no copy).
//! - Backpressure, sending: [`Channel::send`] waits while more than
//!   [`DriverConfig::with_send_buffer`] bytes wait for the stream. Receiving: each channel's
//!   inbox holds up to [`DriverConfig::with_channel_buffer`]; when one is full, or when the
//!   core holds too much for unanswered remote opens ([`Mux::is_paused`]), the driver stops
//!   reading the stream until the consumer catches up (the transport's flow control then
//!   slows the remote down). A channel nobody reads therefore stalls the connection once its
//!   inbox is full: read every channel you open, or drop it.
//! - Every handle type counts as a user; when the last one is dropped the mux closes
//!   gracefully, as after [`MuxHandle::close`].

use std::collections::VecDeque;
use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use corenet_codec::{Decode, DecodeError, Encode, PublicKey};
use corenet_noise::SecretStream;
use futures_core::Stream;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, trace};

use crate::core::{
    ChannelId, ChannelKey, ChannelOptions, CloseReason, Config, Event, Mux, PairHook, PairingId,
    DEFAULT_PACK_LIMIT,
};
use crate::error::Error;

/// Default bytes waiting for the stream above which [`Channel::send`] waits.
pub const DEFAULT_SEND_BUFFER: usize = 1024 * 1024;
/// Default bytes a channel's inbox holds before the driver stops reading.
pub const DEFAULT_CHANNEL_BUFFER: usize = 1024 * 1024;
/// Default messages a channel's inbox holds before the driver stops reading.
pub const DEFAULT_CHANNEL_BUFFER_MESSAGES: usize = 4096;
/// Frames the driver reads before it yields to other tasks.
const READ_BUDGET: usize = 128;
/// Frames the driver takes from the core per lock.
const WRITE_BATCH: usize = 64;
/// Rounds of [`WRITE_BATCH`] frames the driver writes before it gives reading a turn.
const WRITE_ROUNDS: usize = 16;

/// Settings of the async mux. Every setter states its default.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// The core's settings.
    core: Config,
    /// High-water mark of the outgoing queue.
    send_buffer: usize,
    /// Inbox limit in bytes.
    channel_buffer: usize,
    /// Inbox limit in messages.
    channel_buffer_messages: usize,
    /// Size limit of packed frames; 0 disables packing.
    pack_limit: usize,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            core: Config::default(),
            send_buffer: DEFAULT_SEND_BUFFER,
            channel_buffer: DEFAULT_CHANNEL_BUFFER,
            channel_buffer_messages: DEFAULT_CHANNEL_BUFFER_MESSAGES,
            pack_limit: DEFAULT_PACK_LIMIT,
        }
    }
}

impl DriverConfig {
    /// The protocol core's settings. Default: [`Config::default`]. Its frame limit must not
    /// exceed the secret stream's (both default to the largest secret-stream message): a frame
    /// the stream refuses fails the connection.
    pub fn with_core(mut self, core: Config) -> Self {
        self.core = core;
        self
    }

    /// Bytes waiting for the stream above which [`Channel::send`] waits. Default:
    /// [`DEFAULT_SEND_BUFFER`] (1 MiB).
    pub fn with_send_buffer(mut self, bytes: usize) -> Self {
        self.send_buffer = bytes.max(1);
        self
    }

    /// Bytes a channel's inbox holds before the driver stops reading the stream. Default:
    /// [`DEFAULT_CHANNEL_BUFFER`] (1 MiB).
    pub fn with_channel_buffer(mut self, bytes: usize) -> Self {
        self.channel_buffer = bytes.max(1);
        self
    }

    /// Messages a channel's inbox holds before the driver stops reading the stream.
    /// Default: [`DEFAULT_CHANNEL_BUFFER_MESSAGES`] (4,096).
    pub fn with_channel_buffer_messages(mut self, messages: usize) -> Self {
        self.channel_buffer_messages = messages.max(1);
        self
    }

    /// Whether the driver packs small frames that are queued together into one batch frame
    /// ([`Mux::poll_transmit_packed`], up to 64 KiB): one secret-stream message (one
    /// encryption) instead of many, with no waiting. Default: on. Off, every frame is its own
    /// message, as JS protomux writes them.
    pub fn with_packing(mut self, on: bool) -> Self {
        self.pack_limit = if on { DEFAULT_PACK_LIMIT } else { 0 };
        self
    }
}

/// A message received on a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Message type (the index of the message in the channel's protocol).
    pub message_type: u64,
    /// The payload, a slice of the received frame.
    pub payload: Bytes,
}

impl Message {
    /// Decodes the payload with compact-encoding; `Bytes` fields share the frame's memory.
    /// Trailing bytes are allowed, as JS decoders ignore them.
    pub fn decode<T>(&self) -> Result<T, DecodeError>
    where
        T: for<'a> Decode<'a>,
    {
        corenet_codec::decode_bytes(&self.payload)
    }
}

/// Facts about the secret stream under the mux.
#[derive(Debug, Clone, Copy)]
pub struct StreamInfo {
    /// The remote's static key.
    pub remote_public_key: PublicKey,
    /// Our static key.
    pub public_key: PublicKey,
    /// The handshake hash (hypercore derives its capabilities from it).
    pub handshake_hash: [u8; 64],
    /// True on the side that started the handshake.
    pub is_initiator: bool,
}

/// How the mux is shutting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// Running.
    No,
    /// Flush, end our side, wait for the remote to end.
    Graceful,
    /// Stop now.
    Destroy,
}

/// What the handles know about a channel.
#[derive(Debug)]
struct ChanState {
    /// The channel (generation included).
    id: ChannelId,
    /// The remote's handshake, once paired.
    opened: Option<Bytes>,
    /// Why it closed, once closed.
    closed: Option<CloseReason>,
    /// Received messages not yet taken.
    inbox: VecDeque<Message>,
    /// Payload bytes in `inbox`.
    inbox_bytes: usize,
    /// Counted in `State::blocked`.
    blocked: bool,
    /// The receiver waiting for a message.
    recv_waker: Option<Waker>,
    /// Tasks waiting for open or close.
    state_waiters: Vec<Waker>,
}

impl ChanState {
    fn new(id: ChannelId) -> Self {
        ChanState {
            id,
            opened: None,
            closed: None,
            inbox: VecDeque::new(),
            inbox_bytes: 0,
            blocked: false,
            recv_waker: None,
            state_waiters: Vec::new(),
        }
    }

    fn wake_all(&mut self) {
        if let Some(w) = self.recv_waker.take() {
            w.wake();
        }
        for w in self.state_waiters.drain(..) {
            w.wake();
        }
    }
}

/// A pairing hook's queue of requests.
#[derive(Debug)]
struct HookState {
    /// Requests not yet handed out.
    queue: VecDeque<(PairingId, ChannelKey)>,
    /// The task waiting for one.
    waker: Option<Waker>,
}

/// Everything behind the mutex.
#[derive(Debug)]
struct State {
    /// The protocol core.
    mux: Mux,
    /// Channel states by slot index.
    channels: Vec<Option<ChanState>>,
    /// Pairing hooks.
    hooks: Vec<(PairHook, HookState)>,
    /// Channels whose inbox is over its limit.
    blocked: usize,
    /// The driver, waiting for work.
    driver_waker: Option<Waker>,
    /// Senders waiting for the outgoing queue to drain.
    send_waiters: Vec<Waker>,
    /// Shutdown request.
    closing: Closing,
    /// The driver's result, once it finished.
    finished: Option<Result<(), Error>>,
    /// Tasks waiting for the driver to finish.
    finish_waiters: Vec<Waker>,
}

impl State {
    fn chan(&self, id: ChannelId) -> Option<&ChanState> {
        self.channels
            .get(id.index())
            .and_then(Option::as_ref)
            .filter(|c| c.id == id)
    }

    fn chan_mut(&mut self, id: ChannelId) -> Option<&mut ChanState> {
        self.channels
            .get_mut(id.index())
            .and_then(Option::as_mut)
            .filter(|c| c.id == id)
    }

    fn wake_driver(&mut self) {
        if let Some(w) = self.driver_waker.take() {
            w.wake();
        }
    }

    fn wake_senders(&mut self) {
        for w in self.send_waiters.drain(..) {
            w.wake();
        }
    }

    /// Hands the core's events to the channels and hooks.
    fn pump(&mut self, limits: &Limits) {
        while let Some(event) = self.mux.poll_event() {
            match event {
                Event::Opened { channel, handshake } => {
                    if let Some(c) = self.chan_mut(channel) {
                        c.opened = Some(handshake);
                        c.wake_all();
                    }
                }
                Event::Message {
                    channel,
                    message_type,
                    payload,
                } => {
                    let mut newly_blocked = false;
                    if let Some(c) = self.chan_mut(channel) {
                        c.inbox_bytes += payload.len();
                        c.inbox.push_back(Message {
                            message_type,
                            payload,
                        });
                        if !c.blocked
                            && (c.inbox_bytes >= limits.channel_buffer
                                || c.inbox.len() >= limits.channel_buffer_messages)
                        {
                            c.blocked = true;
                            newly_blocked = true;
                        }
                        if let Some(w) = c.recv_waker.take() {
                            w.wake();
                        }
                    }
                    if newly_blocked {
                        trace!(%channel, "inbox full: reading pauses");
                        self.blocked += 1;
                    }
                }
                Event::Closed { channel, reason } => {
                    let mut unblocked = false;
                    if let Some(c) = self.chan_mut(channel) {
                        c.closed = Some(reason);
                        // Nothing more arrives: what it holds must not stall the others.
                        unblocked = std::mem::take(&mut c.blocked);
                        c.wake_all();
                    }
                    if unblocked {
                        self.blocked -= 1;
                    }
                }
                Event::PairRequest { pairing, hook, key } => {
                    match self.hooks.iter_mut().find(|(h, _)| *h == hook) {
                        Some((_, hs)) => {
                            hs.queue.push_back((pairing, key));
                            if let Some(w) = hs.waker.take() {
                                w.wake();
                            }
                        }
                        None => {
                            let _ = self.mux.reject_pairing(pairing);
                        }
                    }
                }
                Event::PairingCancelled { pairing } => {
                    for (_, hs) in &mut self.hooks {
                        hs.queue.retain(|(p, _)| *p != pairing);
                    }
                }
            }
        }
    }

    /// Everything a closed mux owes its waiters.
    fn wake_everyone(&mut self) {
        self.wake_senders();
        for c in self.channels.iter_mut().flatten() {
            c.wake_all();
        }
        for (_, hs) in &mut self.hooks {
            if let Some(w) = hs.waker.take() {
                w.wake();
            }
        }
        for w in self.finish_waiters.drain(..) {
            w.wake();
        }
    }

    fn closed_error(&self) -> Error {
        match &self.finished {
            Some(Err(e)) => e.clone(),
            _ => Error::MuxClosed,
        }
    }

    fn is_shut(&self) -> bool {
        self.closing != Closing::No || self.mux.is_closed()
    }
}

/// Adds a waker to a wait list unless it is there already (a future polled again must not
/// grow the list).
fn register(list: &mut Vec<Waker>, waker: &Waker) {
    if !list.iter().any(|w| w.will_wake(waker)) {
        list.push(waker.clone());
    }
}

/// Limits copied out of the config for the hot path.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// See [`DriverConfig::with_send_buffer`].
    send_buffer: usize,
    /// See [`DriverConfig::with_channel_buffer`].
    channel_buffer: usize,
    /// See [`DriverConfig::with_channel_buffer_messages`].
    channel_buffer_messages: usize,
    /// See [`DriverConfig::with_packing`].
    pack_limit: usize,
}

/// State shared by the driver and every handle.
struct Shared {
    /// The core and the routing state.
    state: Mutex<State>,
    /// Limits.
    limits: Limits,
    /// Facts about the stream.
    info: StreamInfo,
    /// Live handles of any kind.
    users: AtomicUsize,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("info", &self.info)
            .field("users", &self.users)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough state for shutting down.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A counted reference to the shared state; the last one dropped closes the mux.
#[derive(Debug)]
struct UserRef(Arc<Shared>);

impl UserRef {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.users.fetch_add(1, Ordering::Relaxed);
        UserRef(shared.clone())
    }
}

impl Clone for UserRef {
    fn clone(&self) -> Self {
        UserRef::new(&self.0)
    }
}

impl Drop for UserRef {
    fn drop(&mut self) {
        if self.0.users.fetch_sub(1, Ordering::AcqRel) == 1 {
            let mut st = self.0.lock();
            if st.closing == Closing::No {
                debug!("last mux handle dropped: closing");
                st.closing = Closing::Graceful;
            }
            st.wake_driver();
        }
    }
}

impl std::ops::Deref for UserRef {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// A cloneable, `Send + Sync` handle to a mux running over a secret stream: opens channels,
/// registers pairing hooks, corks. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct MuxHandle {
    /// Shared state.
    shared: UserRef,
}

impl MuxHandle {
    /// Puts a mux on `stream`. Nothing happens until the returned driver runs, so channels
    /// and pairing hooks set up before spawning it see every frame the remote sends (JS users
    /// get the same by creating channels synchronously on connection). One mux per stream:
    /// the mux owns it.
    pub fn new<S>(stream: SecretStream<S>, config: DriverConfig) -> (MuxHandle, MuxDriver<S>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let info = StreamInfo {
            remote_public_key: stream.remote_public_key(),
            public_key: stream.public_key(),
            handshake_hash: stream.handshake_hash(),
            is_initiator: stream.is_initiator(),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                mux: Mux::new(config.core.clone()),
                channels: Vec::new(),
                hooks: Vec::new(),
                blocked: 0,
                driver_waker: None,
                send_waiters: Vec::new(),
                closing: Closing::No,
                finished: None,
                finish_waiters: Vec::new(),
            }),
            limits: Limits {
                send_buffer: config.send_buffer,
                channel_buffer: config.channel_buffer,
                channel_buffer_messages: config.channel_buffer_messages,
                pack_limit: config.pack_limit,
            },
            info,
            users: AtomicUsize::new(0),
        });
        let handle = MuxHandle {
            shared: UserRef::new(&shared),
        };
        let driver = MuxDriver {
            shared,
            stream,
            out: VecDeque::new(),
            sent: Vec::new(),
            wrote: false,
            shutdown: false,
            ending: false,
            done: false,
        };
        (handle, driver)
    }

    /// [`MuxHandle::new`] and `tokio::spawn` of the driver. Must be called within a tokio
    /// runtime.
    pub fn spawn<S>(stream: SecretStream<S>, config: DriverConfig) -> MuxHandle
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (handle, driver) = MuxHandle::new(stream, config);
        tokio::spawn(async move {
            if let Err(e) = driver.await {
                debug!(error = %e, "mux ended with an error");
            }
        });
        handle
    }

    /// Facts about the secret stream.
    pub fn stream_info(&self) -> &StreamInfo {
        &self.shared.info
    }

    /// Opens a channel (see [`Mux::open_channel`]): it pairs with the remote's channel of the
    /// same protocol and id, claiming a pending remote open if there is one.
    ///
    /// As in JS, a remote open that arrives while we have no channel for its key and no
    /// pairing hook matches it is rejected. When the remote may open first, register a hook
    /// with [`MuxHandle::pair`] (and answer its requests), or open before the driver runs.
    pub fn open(&self, options: &ChannelOptions) -> Result<Channel, Error> {
        let mut st = self.shared.lock();
        if st.is_shut() {
            return Err(st.closed_error());
        }
        let id = st.mux.open_channel(options)?;
        Ok(install_channel(&self.shared, &mut st, id))
    }

    /// Registers a pairing hook for `protocol` and `id` (`None`: any id without a more
    /// specific hook). Remote opens it matches arrive as [`PairRequest`]s; dropping the
    /// returned stream unregisters the hook and rejects what it did not hand out. Remote
    /// opens no hook matches, and that no local channel answers, are rejected (as in JS).
    pub fn pair(&self, protocol: &str, id: Option<&[u8]>) -> PairRequests {
        let mut st = self.shared.lock();
        let hook = st.mux.pair(protocol, id);
        st.hooks.push((
            hook,
            HookState {
                queue: VecDeque::new(),
                waker: None,
            },
        ));
        PairRequests {
            shared: self.shared.clone(),
            hook,
        }
    }

    /// Corks the mux: until the guard drops, every frame (from any task) joins one batch
    /// frame. Guards nest.
    pub fn cork(&self) -> CorkGuard {
        self.shared.lock().mux.cork();
        CorkGuard {
            shared: self.shared.clone(),
        }
    }

    /// True while a channel for `protocol` and `id` is opening or open (JS `mux.opened`).
    pub fn is_opened(&self, protocol: &str, id: &[u8]) -> bool {
        self.shared.lock().mux.is_opened(protocol, id)
    }

    /// Bytes held by buffers of sent large frames kept for reuse (memory accounting). They
    /// are released whenever the driver has nothing left to write.
    pub fn spare_capacity(&self) -> usize {
        self.shared.lock().mux.spare_capacity()
    }

    /// True when no channel uses a local id (JS `isIdle`).
    pub fn is_idle(&self) -> bool {
        self.shared.lock().mux.is_idle()
    }

    /// True once the mux is closing or closed.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().is_shut()
    }

    /// Closes gracefully: every channel closes, queued frames go out, our side of the stream
    /// ends, and the driver finishes when the remote ends its side.
    pub fn close(&self) {
        let mut st = self.shared.lock();
        if st.closing == Closing::No {
            st.closing = Closing::Graceful;
        }
        st.wake_driver();
    }

    /// Closes at once: the driver drops the stream without flushing.
    pub fn destroy(&self) {
        let mut st = self.shared.lock();
        st.closing = Closing::Destroy;
        st.wake_driver();
    }

    /// Waits until the driver finished; its result (a protocol or stream error, or `Ok`).
    pub async fn closed(&self) -> Result<(), Error> {
        poll_fn(|cx| {
            let mut st = self.shared.lock();
            match &st.finished {
                Some(r) => Poll::Ready(r.clone()),
                None => {
                    register(&mut st.finish_waiters, cx.waker());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

fn install_channel(shared: &UserRef, st: &mut State, id: ChannelId) -> Channel {
    let index = id.index();
    if st.channels.len() <= index {
        st.channels.resize_with(index + 1, || None);
    }
    st.channels[index] = Some(ChanState::new(id));
    let key = st.mux.channel_key(id).cloned();
    st.pump(&shared.limits);
    st.wake_driver();
    Channel {
        sender: ChannelSender {
            shared: shared.clone(),
            id,
        },
        key: key.unwrap_or_else(|| ChannelKey::new("", Bytes::new())),
    }
}

/// Undoes a [`MuxHandle::cork`] when dropped.
#[derive(Debug)]
pub struct CorkGuard {
    /// Shared state.
    shared: UserRef,
}

impl Drop for CorkGuard {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.mux.uncork();
        st.wake_driver();
    }
}

/// The sending half of a channel; cloneable.
#[derive(Debug, Clone)]
pub struct ChannelSender {
    /// Shared state.
    shared: UserRef,
    /// The channel.
    id: ChannelId,
}

impl ChannelSender {
    /// The channel.
    pub fn id(&self) -> ChannelId {
        self.id
    }

    /// Sends a message, waiting while the outgoing queue is over the send buffer. Messages
    /// may be sent before the remote opened its side (it holds them).
    pub async fn send(&self, message_type: u64, payload: &[u8]) -> Result<(), Error> {
        self.send_with(message_type, payload.len(), |b| {
            bytes::BufMut::put_slice(b, payload)
        })
        .await
    }

    /// Encodes `message` straight into the frame and sends it, waiting like
    /// [`ChannelSender::send`].
    pub async fn send_encoded<E: Encode + ?Sized>(
        &self,
        message_type: u64,
        message: &E,
    ) -> Result<(), Error> {
        self.send_with(message_type, message.encoded_len(), |b| message.encode(b))
            .await
    }

    async fn send_with(
        &self,
        message_type: u64,
        len: usize,
        write: impl FnOnce(&mut bytes::BytesMut),
    ) -> Result<(), Error> {
        let mut write = Some(write);
        poll_fn(|cx| {
            let mut st = self.shared.lock();
            if st.is_shut() {
                return Poll::Ready(Err(st.closed_error()));
            }
            if st.mux.queued_bytes() >= self.shared.limits.send_buffer {
                register(&mut st.send_waiters, cx.waker());
                st.wake_driver();
                return Poll::Pending;
            }
            let Some(write) = write.take() else {
                return Poll::Ready(Ok(()));
            };
            let r = st.mux.send_with(self.id, message_type, len, write);
            st.wake_driver();
            Poll::Ready(r)
        })
        .await
    }

    /// Sends at once, whatever the queue holds (up to the core's hard limit), like JS
    /// `send`; returns whether the queue is still under the send buffer (JS `drained`).
    pub fn send_now(&self, message_type: u64, payload: &[u8]) -> Result<bool, Error> {
        let mut st = self.shared.lock();
        if st.is_shut() {
            return Err(st.closed_error());
        }
        st.mux.send(self.id, message_type, payload)?;
        st.wake_driver();
        Ok(st.mux.queued_bytes() < self.shared.limits.send_buffer)
    }

    /// [`ChannelSender::send_now`] with an encoded message.
    pub fn send_encoded_now<E: Encode + ?Sized>(
        &self,
        message_type: u64,
        message: &E,
    ) -> Result<bool, Error> {
        let mut st = self.shared.lock();
        if st.is_shut() {
            return Err(st.closed_error());
        }
        st.mux.send_encoded(self.id, message_type, message)?;
        st.wake_driver();
        Ok(st.mux.queued_bytes() < self.shared.limits.send_buffer)
    }

    /// Closes the channel (sends `close`).
    pub fn close(&self) {
        let mut st = self.shared.lock();
        if st.mux.close(self.id) {
            st.pump(&self.shared.limits);
            st.wake_driver();
        }
    }

    /// True once the channel closed.
    pub fn is_closed(&self) -> bool {
        let st = self.shared.lock();
        st.chan(self.id).is_none_or(|c| c.closed.is_some())
    }
}

/// A channel: send, receive, wait for the remote to open it. Dropping it closes it.
#[derive(Debug)]
pub struct Channel {
    /// The sending half, with the shared state.
    sender: ChannelSender,
    /// Protocol and id.
    key: ChannelKey,
}

impl Channel {
    /// The channel.
    pub fn id(&self) -> ChannelId {
        self.sender.id
    }

    /// The protocol and id it was opened with.
    pub fn key(&self) -> &ChannelKey {
        &self.key
    }

    /// A sending half that other tasks can use.
    pub fn sender(&self) -> ChannelSender {
        self.sender.clone()
    }

    /// Waits until the remote opened its side; returns its handshake bytes. Fails with
    /// [`Error::ChannelClosed`] when the channel closed first (rejected, or the mux closed).
    pub async fn opened(&self) -> Result<Bytes, Error> {
        poll_fn(|cx| {
            let mut st = self.sender.shared.lock();
            let Some(c) = st.chan_mut(self.id()) else {
                return Poll::Ready(Err(Error::ChannelClosed));
            };
            if let Some(hs) = &c.opened {
                return Poll::Ready(Ok(hs.clone()));
            }
            if c.closed.is_some() {
                return Poll::Ready(Err(Error::ChannelClosed));
            }
            register(&mut c.state_waiters, cx.waker());
            Poll::Pending
        })
        .await
    }

    /// True once the remote opened its side (JS `channel.opened`).
    pub fn is_opened(&self) -> bool {
        let st = self.sender.shared.lock();
        st.chan(self.id())
            .is_some_and(|c| c.opened.is_some() && c.closed.is_none())
    }

    /// The remote's handshake, once it opened its side.
    pub fn remote_handshake(&self) -> Option<Bytes> {
        let st = self.sender.shared.lock();
        st.chan(self.id()).and_then(|c| c.opened.clone())
    }

    /// Why the channel closed, once it did.
    pub fn close_reason(&self) -> Option<CloseReason> {
        let st = self.sender.shared.lock();
        st.chan(self.id()).and_then(|c| c.closed)
    }

    /// Waits until the channel closes; why.
    pub async fn closed(&self) -> CloseReason {
        poll_fn(|cx| {
            let mut st = self.sender.shared.lock();
            let Some(c) = st.chan_mut(self.id()) else {
                return Poll::Ready(CloseReason::Local);
            };
            if let Some(r) = c.closed {
                return Poll::Ready(r);
            }
            register(&mut c.state_waiters, cx.waker());
            Poll::Pending
        })
        .await
    }

    /// See [`ChannelSender::send`].
    pub async fn send(&self, message_type: u64, payload: &[u8]) -> Result<(), Error> {
        self.sender.send(message_type, payload).await
    }

    /// See [`ChannelSender::send_encoded`].
    pub async fn send_encoded<E: Encode + ?Sized>(
        &self,
        message_type: u64,
        message: &E,
    ) -> Result<(), Error> {
        self.sender.send_encoded(message_type, message).await
    }

    /// See [`ChannelSender::send_now`].
    pub fn send_now(&self, message_type: u64, payload: &[u8]) -> Result<bool, Error> {
        self.sender.send_now(message_type, payload)
    }

    /// See [`ChannelSender::send_encoded_now`].
    pub fn send_encoded_now<E: Encode + ?Sized>(
        &self,
        message_type: u64,
        message: &E,
    ) -> Result<bool, Error> {
        self.sender.send_encoded_now(message_type, message)
    }

    /// The next message; `None` once the channel closed and its inbox is empty.
    pub async fn recv(&mut self) -> Option<Message> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next message (see [`Channel::recv`]).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        let shared = &self.sender.shared;
        let mut st = shared.lock();
        let id = self.sender.id;
        let Some(c) = st.chan_mut(id) else {
            return Poll::Ready(None);
        };
        match c.inbox.pop_front() {
            Some(m) => {
                c.inbox_bytes -= m.payload.len();
                let unblock = c.blocked
                    && c.inbox_bytes < shared.limits.channel_buffer
                    && c.inbox.len() < shared.limits.channel_buffer_messages;
                if unblock {
                    c.blocked = false;
                    st.blocked -= 1;
                    st.wake_driver();
                }
                Poll::Ready(Some(m))
            }
            None if c.closed.is_some() => Poll::Ready(None),
            None => {
                c.recv_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Closes the channel (sends `close`); messages already received can still be read.
    pub fn close(&self) {
        self.sender.close();
    }
}

impl Stream for Channel {
    type Item = Message;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.get_mut().poll_recv(cx)
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        let shared = &self.sender.shared;
        let mut st = shared.lock();
        let id = self.sender.id;
        if st.mux.close(id) {
            st.pump(&shared.limits);
        }
        if let Some(slot) = st.channels.get_mut(id.index()) {
            if slot.as_ref().is_some_and(|c| c.id == id) {
                if slot.as_ref().is_some_and(|c| c.blocked) {
                    st.blocked -= 1;
                }
                if let Some(slot) = st.channels.get_mut(id.index()) {
                    *slot = None;
                }
            }
        }
        st.wake_driver();
    }
}

/// Remote opens matched by a pairing hook (see [`MuxHandle::pair`]). Dropping it removes
/// the hook and rejects the requests it still holds.
#[derive(Debug)]
pub struct PairRequests {
    /// Shared state.
    shared: UserRef,
    /// The hook.
    hook: PairHook,
}

impl PairRequests {
    /// The next request; `None` once the mux closed.
    pub async fn recv(&mut self) -> Option<PairRequest> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next request (see [`PairRequests::recv`]).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<PairRequest>> {
        let mut st = self.shared.lock();
        if st.is_shut() {
            return Poll::Ready(None);
        }
        let hook = self.hook;
        let State { hooks, mux, .. } = &mut *st;
        let Some((_, hs)) = hooks.iter_mut().find(|(h, _)| *h == hook) else {
            return Poll::Ready(None);
        };
        while let Some((pairing, key)) = hs.queue.pop_front() {
            // A channel opened for the key may have claimed it meanwhile.
            if mux.is_pending(pairing) {
                return Poll::Ready(Some(PairRequest {
                    shared: self.shared.clone(),
                    pairing,
                    key,
                    answered: false,
                }));
            }
        }
        hs.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Stream for PairRequests {
    type Item = PairRequest;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<PairRequest>> {
        self.get_mut().poll_recv(cx)
    }
}

impl Drop for PairRequests {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.mux.unpair_hook(self.hook);
        if let Some(pos) = st.hooks.iter().position(|(h, _)| *h == self.hook) {
            let (_, hs) = st.hooks.remove(pos);
            for (pairing, _) in hs.queue {
                let _ = st.mux.reject_pairing(pairing);
            }
        }
        st.wake_driver();
    }
}

/// A remote opened a channel that a pairing hook matched and no local channel answered.
/// Accept it by opening a channel, or reject it; dropping it unanswered rejects it.
#[derive(Debug)]
pub struct PairRequest {
    /// Shared state.
    shared: UserRef,
    /// The request.
    pairing: PairingId,
    /// Protocol and id as the remote named them.
    key: ChannelKey,
    /// Accepted or rejected already.
    answered: bool,
}

impl PairRequest {
    /// Protocol and id as the remote named them.
    pub fn key(&self) -> &ChannelKey {
        &self.key
    }

    /// Options for a channel that answers this request (its protocol and id), to add a
    /// handshake or aliases to.
    pub fn options(&self) -> ChannelOptions {
        ChannelOptions::for_key(self.key.clone())
    }

    /// Opens a channel with `options` (whose key must be the request's, or name it as an
    /// alias), which pairs with the remote's (see [`Mux::accept_pairing`]).
    pub fn accept(mut self, options: &ChannelOptions) -> Result<Channel, Error> {
        let mut st = self.shared.lock();
        if st.is_shut() {
            return Err(st.closed_error());
        }
        let id = st.mux.accept_pairing(self.pairing, options)?;
        self.answered = true;
        Ok(install_channel(&self.shared, &mut st, id))
    }

    /// Rejects the remote's channel.
    pub fn reject(mut self) {
        self.answered = true;
        self.reject_now();
    }

    fn reject_now(&self) {
        let mut st = self.shared.lock();
        if st.mux.reject_pairing(self.pairing).is_ok() {
            st.wake_driver();
        }
    }
}

impl Drop for PairRequest {
    fn drop(&mut self) {
        if !self.answered {
            self.reject_now();
        }
    }
}

/// The future that runs a mux: owns the secret stream, writes what the core queues, feeds
/// it what arrives. Resolves when the mux is closed: `Ok` after a graceful end of both sides
/// or [`MuxHandle::destroy`], or the error that ended it.
pub struct MuxDriver<S> {
    /// Shared state (not a counted user: the driver does not keep the mux open).
    shared: Arc<Shared>,
    /// The stream.
    stream: SecretStream<S>,
    /// Frames taken from the core, not yet accepted by the stream.
    out: VecDeque<Bytes>,
    /// Buffers of sent frames, to hand back to the core (see [`Mux::recycle`]).
    sent: Vec<bytes::BytesMut>,
    /// Something was written since the last flush.
    wrote: bool,
    /// Our side of the stream is shut down.
    shutdown: bool,
    /// The remote ended: only flushing and ending our side remain.
    ending: bool,
    /// Finished; polling again returns the same result.
    done: bool,
}

impl<S> fmt::Debug for MuxDriver<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MuxDriver")
            .field("shared", &self.shared)
            .field("out", &self.out.len())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> MuxDriver<S> {
    /// Ends the mux with `result`: closes the core (every channel gets
    /// [`CloseReason::MuxClosed`]) and wakes every waiter.
    fn finish(&mut self, result: Result<(), Error>) -> Poll<Result<(), Error>> {
        self.done = true;
        let mut st = self.shared.lock();
        st.mux.handle_close();
        st.pump(&self.shared.limits);
        if st.closing == Closing::No {
            st.closing = Closing::Graceful;
        }
        if st.finished.is_none() {
            st.finished = Some(result.clone());
        }
        st.wake_everyone();
        match &result {
            Ok(()) => debug!("mux finished"),
            Err(e) => debug!(error = %e, "mux failed"),
        }
        Poll::Ready(result)
    }

    /// Writes queued frames; false when the stream could not take more.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Result<bool, Error> {
        while let Some(frame) = self.out.front() {
            match self.stream.poll_send(cx, frame) {
                Poll::Ready(Ok(())) => {
                    trace!(len = frame.len(), "frame sent");
                    if let Some(frame) = self.out.pop_front() {
                        // Large frames own their buffer: hand it back for the next ones.
                        if frame.len() >= crate::core::LARGE_FRAME
                            && self.sent.len() < crate::core::SPARE_BUFFERS
                        {
                            if let Ok(buf) = frame.try_into_mut() {
                                self.sent.push(buf);
                            }
                        }
                    }
                    self.wrote = true;
                }
                Poll::Ready(Err(e)) => return Err(e.into()),
                Poll::Pending => return Ok(false),
            }
        }
        if self.wrote {
            match Pin::new(&mut self.stream).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.wrote = false,
                Poll::Ready(Err(e)) => {
                    let err = corenet_noise::Error::from_io(&e)
                        .cloned()
                        .unwrap_or_else(|| corenet_noise::Error::from(e));
                    return Err(err.into());
                }
                Poll::Pending => {}
            }
        }
        Ok(true)
    }

    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let mut reads = 0;
        let mut write_rounds = 0;
        loop {
            // Take frames and the flags under the lock; register for wake-ups.
            let (closing, can_read) = {
                let mut st = self.shared.lock();
                st.driver_waker = Some(cx.waker().clone());
                for buf in self.sent.drain(..) {
                    st.mux.recycle(buf);
                }
                if st.closing == Closing::Destroy {
                    drop(st);
                    return self.finish(Ok(()));
                }
                if st.closing == Closing::Graceful && !st.mux.is_closed() {
                    // Queued frames still go out; then nothing more.
                    while let Some(f) = st.mux.poll_transmit() {
                        self.out.push_back(f);
                    }
                    st.mux.handle_close();
                    st.pump(&self.shared.limits);
                    st.wake_everyone();
                }
                // Frames move to the stream only as fast as it takes them, so that the core's
                // queue (which senders wait on) reflects what is really unsent.
                if self.out.is_empty() {
                    let pack = self.shared.limits.pack_limit;
                    for _ in 0..WRITE_BATCH {
                        let frame = if pack > 0 {
                            st.mux.poll_transmit_packed(pack)
                        } else {
                            st.mux.poll_transmit()
                        };
                        match frame {
                            Some(f) => self.out.push_back(f),
                            None => break,
                        }
                    }
                }
                if st.mux.queued_bytes() < self.shared.limits.send_buffer {
                    st.wake_senders();
                }
                let can_read = !st.mux.is_paused() && st.blocked == 0;
                (st.closing, can_read)
            };

            let drained = match self.poll_write_out(cx) {
                Ok(d) => d,
                Err(e) => return self.finish(Err(e)),
            };
            let more_to_write = {
                let st = self.shared.lock();
                st.mux.has_transmit()
            };
            if drained && more_to_write {
                write_rounds += 1;
                if write_rounds < WRITE_ROUNDS {
                    continue;
                }
                // Senders on other threads keep the queue full: let reading and other tasks
                // have a turn.
                write_rounds = 0;
                cx.waker().wake_by_ref();
                if reads >= READ_BUDGET {
                    return Poll::Pending;
                }
            }

            if closing == Closing::Graceful && drained && !self.wrote && !self.shutdown {
                match Pin::new(&mut self.stream).poll_shutdown(cx) {
                    Poll::Ready(_) => self.shutdown = true,
                    Poll::Pending => return Poll::Pending,
                }
            }

            if !can_read && closing == Closing::No {
                return Poll::Pending;
            }
            if reads >= READ_BUDGET {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match self.stream.poll_recv(cx) {
                Poll::Ready(Ok(Some(frame))) => {
                    reads += 1;
                    if closing != Closing::No {
                        continue; // closing: wait for the remote's end, ignore the rest
                    }
                    let mut st = self.shared.lock();
                    let r = st.mux.handle_frame(frame);
                    st.pump(&self.shared.limits);
                    if let Err(e) = r {
                        drop(st);
                        return self.finish(Err(e));
                    }
                }
                Poll::Ready(Ok(None)) => {
                    // The remote ended its side: end ours after what is queued (JS does
                    // `stream.end()` on 'end').
                    let mut st = self.shared.lock();
                    while let Some(f) = st.mux.poll_transmit() {
                        self.out.push_back(f);
                    }
                    if st.closing == Closing::No {
                        st.closing = Closing::Graceful;
                    }
                    st.mux.handle_close();
                    st.pump(&self.shared.limits);
                    drop(st);
                    return self.finish_after_flush(cx);
                }
                Poll::Ready(Err(e)) => return self.finish(Err(e.into())),
                Poll::Pending => {
                    if drained && !more_to_write && !self.wrote {
                        // Idle: everything written, nothing queued. Large-frame buffers kept
                        // for reuse would otherwise stay with the connection for good.
                        self.sent = Vec::new();
                        self.stream.release_write_buffer();
                        self.shared.lock().mux.release_spares();
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// After the remote ended: write what is left, end our side, finish.
    fn poll_flush_and_end(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        match self.poll_write_out(cx) {
            Ok(true) if !self.wrote => {}
            Ok(_) => return Poll::Pending,
            Err(e) => return self.finish(Err(e)),
        }
        if !self.shutdown {
            match Pin::new(&mut self.stream).poll_shutdown(cx) {
                Poll::Ready(_) => self.shutdown = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        self.finish(Ok(()))
    }

    fn finish_after_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.ending = true;
        self.poll_flush_and_end(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Future for MuxDriver<S> {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.done {
            let st = this.shared.lock();
            return Poll::Ready(st.finished.clone().unwrap_or(Ok(())));
        }
        if this.ending {
            return this.poll_flush_and_end(cx);
        }
        this.poll_run(cx)
    }
}

impl<S> Drop for MuxDriver<S> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Dropped before it finished (runtime shutdown, or the owner gave up): nobody will
        // move frames any more.
        let mut st = self.shared.lock();
        st.mux.handle_close();
        st.pump(&self.shared.limits);
        st.closing = Closing::Destroy;
        if st.finished.is_none() {
            st.finished = Some(Err(Error::MuxClosed));
        }
        st.wake_everyone();
    }
}
