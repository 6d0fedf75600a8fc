//! The sans-IO protomux state machine.
//!
//! [`Mux`] never touches a socket or a clock. Feed it every message the secret stream
//! delivers with [`Mux::handle_frame`], call the channel operations, then drain
//! [`Mux::poll_transmit`] (each item is one secret-stream message to send, in order) and
//! [`Mux::poll_event`] after every input.
//!
//! ```
//! use bytes::Bytes;
//! use corenet_mux::{ChannelOptions, Event, Mux};
//!
//! let (mut alice, mut bob) = (Mux::default(), Mux::default());
//! bob.pair("chat", None); // bob answers remote opens of "chat"
//! let a = alice.open_channel(&ChannelOptions::new("chat").with_handshake(&b"hi"[..]))?;
//! alice.send(a, 0, b"early")?; // bob holds it until he answers
//!
//! // The transport: every poll_transmit is one secret-stream message.
//! while let Some(frame) = alice.poll_transmit() {
//!     bob.handle_frame(frame)?;
//! }
//! let Some(Event::PairRequest { pairing, .. }) = bob.poll_event() else { panic!() };
//! let b = bob.accept_pairing(pairing, &ChannelOptions::new("chat"))?;
//! assert_eq!(bob.poll_event(), Some(Event::Opened { channel: b, handshake: Bytes::from_static(b"hi") }));
//! assert!(matches!(bob.poll_event(), Some(Event::Message { message_type: 0, .. })));
//!
//! while let Some(frame) = bob.poll_transmit() {
//!     alice.handle_frame(frame)?;
//! }
//! assert!(matches!(alice.poll_event(), Some(Event::Opened { channel, .. }) if channel == a));
//! # Ok::<(), corenet_mux::Error>(())
//! ```
//!
//! # Pairing
//! Both sides open channels independently; a channel is paired with the remote's channel of
//! the same `(protocol, id)` in FIFO order:
//! - a remote `open` pairs with our oldest unpaired channel for the key (local-first), or
//! - waits as a *pending* remote open when we have none: if a pairing hook ([`Mux::pair`])
//!   matches, [`Event::PairRequest`] asks the user, who answers by opening a channel for the
//!   key (which claims the oldest pending open) or with [`Mux::reject_pairing`]; without a
//!   hook it is rejected at once, as JS does. Messages the remote sends on a pending channel
//!   are held and delivered after [`Event::Opened`].
//!
//! # Closing and re-opening (protomux PR #30)
//! A channel closed before the remote answered its `open` keeps its local id reserved until
//! the remote's answer arrives: either the remote's `open` (which pairs with the closed
//! channel in FIFO order, so it must not pair with a newer one) or a `reject`. Two rules keep
//! both sides in step where JS protomux 3.12 can leave a channel hanging:
//! - a `close` for a remote channel that is still pending here is answered with a `reject`,
//!   which releases the remote's reserved id (JS ignores that `close`, so a JS peer whose
//!   channel was closed this way waits for an answer that never comes, and the next channel it
//!   opens for the key pairs with the stale entry);
//! - a remote `open` that pairs with a channel we already closed is answered with a second
//!   `close` (harmless when the remote already processed the first one, and it closes the
//!   channel a JS peer opened for a pending entry whose `close` it ignored).
//!
//! Simply skipping closed entries when pairing (as PR #30 proposes) would pair a remote
//! channel that answered the closed one with the new one, and the remote would reuse the id.
//!
//! # Bounds
//! - channels: at most [`Config::with_max_channels`] local ids and remote ids;
//! - pending remote opens: at most [`Config::with_max_pending_opens`]; more are rejected;
//! - messages held for pending channels: counted as JS counts them (512 + length each);
//!   above [`Config::with_pause_threshold`] [`Mux::is_paused`] asks the driver to stop reading
//!   (JS pauses the stream at 32 KiB), above [`Config::with_max_pending_buffer`] the
//!   connection fails with [`ProtocolError::PendingOverflow`];
//! - outgoing frames: [`Mux::queued_bytes`] tells the driver how much waits; sends fail with
//!   [`Error::SendQueueFull`] above [`Config::with_max_send_queue`];
//! - events: each input produces at most one event per frame item plus the held messages it
//!   releases, and the caller drains them after every input.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use corenet_codec::{encode, Decoder, Encode};
use tracing::{debug, trace};

use crate::error::{Error, ProtocolError};
use crate::wire::{
    safe_uint, BatchItems, BatchWriter, Control, CONTROL_CHANNEL, MAX_BATCH, TYPE_BATCH,
    TYPE_CLOSE, TYPE_OPEN, TYPE_REJECT,
};

/// JS `MAX_BUFFERED`: held messages for pending channels above which reading pauses.
pub const DEFAULT_PAUSE_THRESHOLD: usize = 32 * 1024;
/// Per-message overhead JS adds when it counts held messages (`byteSize`).
pub const HELD_MESSAGE_OVERHEAD: usize = 512;
/// Default hard limit on held messages (counted with [`HELD_MESSAGE_OVERHEAD`]).
pub const DEFAULT_MAX_PENDING_BUFFER: usize = 16 * 1024 * 1024;
/// Default limit on channel ids, local and remote.
pub const DEFAULT_MAX_CHANNELS: usize = 65_536;
/// Default limit on remote opens waiting for an answer.
pub const DEFAULT_MAX_PENDING_OPENS: usize = 1024;
/// Default hard limit on bytes queued for sending.
pub const DEFAULT_MAX_SEND_QUEUE: usize = 64 * 1024 * 1024;
/// Longest frame by default: the longest secret-stream message (a `uint24` frame length
/// less the 17 bytes of secretstream overhead).
pub const DEFAULT_MAX_FRAME_LEN: usize = 0xFF_FFFF - 17;
/// How deep batches may nest (JS allows any depth; nobody sends nested batches).
pub const MAX_BATCH_DEPTH: usize = 8;
/// Frames at most this long are packed together by [`Mux::poll_transmit_packed`]: below it
/// the secret stream's per-message cost dominates.
pub const PACK_ITEM_MAX: usize = 1024;
/// Default size limit of a packed frame.
pub const DEFAULT_PACK_LIMIT: usize = 64 * 1024;
/// Frames at least this long get a buffer of their own instead of a place in the arena.
pub const LARGE_FRAME: usize = 16 * 1024;
/// Buffers of sent large frames kept for reuse.
pub const SPARE_BUFFERS: usize = 16;
/// Largest buffer kept for reuse.
pub const MAX_SPARE_CAPACITY: usize = 256 * 1024;
/// Initial capacity of the outgoing frame arena.
const TX_CHUNK: usize = 64 * 1024;

/// Settings of a [`Mux`]. Every setter states its default.
#[derive(Debug, Clone)]
pub struct Config {
    /// Limit on local ids and on remote ids.
    max_channels: usize,
    /// Limit on remote opens waiting for an answer.
    max_pending_opens: usize,
    /// Held bytes above which reading should pause.
    pause_threshold: usize,
    /// Held bytes above which the connection fails.
    max_pending_buffer: usize,
    /// Longest frame sent.
    max_frame_len: usize,
    /// Queued bytes above which sends fail.
    max_send_queue: usize,
    /// Batch size at which a corked batch is sent.
    max_batch: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_channels: DEFAULT_MAX_CHANNELS,
            max_pending_opens: DEFAULT_MAX_PENDING_OPENS,
            pause_threshold: DEFAULT_PAUSE_THRESHOLD,
            max_pending_buffer: DEFAULT_MAX_PENDING_BUFFER,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_send_queue: DEFAULT_MAX_SEND_QUEUE,
            max_batch: MAX_BATCH,
        }
    }
}

impl Config {
    /// Limit on channel ids in use, ours and the remote's; a remote going past it fails the
    /// connection with [`ProtocolError::TooManyChannels`], and opening past it locally fails
    /// with [`Error::TooManyChannels`]. Default: [`DEFAULT_MAX_CHANNELS`] (65,536).
    pub fn with_max_channels(mut self, max: usize) -> Self {
        self.max_channels = max.clamp(1, u32::MAX as usize);
        self
    }

    /// Limit on remote opens waiting for the user's answer; further unmatched opens are
    /// rejected at once. Default: [`DEFAULT_MAX_PENDING_OPENS`] (1,024; JS has no limit).
    pub fn with_max_pending_opens(mut self, max: usize) -> Self {
        self.max_pending_opens = max;
        self
    }

    /// Bytes held for pending remote channels (512 + length per message, as JS counts) above
    /// which [`Mux::is_paused`] asks the driver to stop reading. Default:
    /// [`DEFAULT_PAUSE_THRESHOLD`] (32 KiB, JS `MAX_BUFFERED`).
    pub fn with_pause_threshold(mut self, bytes: usize) -> Self {
        self.pause_threshold = bytes;
        self
    }

    /// Bytes held for pending remote channels above which the connection fails with
    /// [`ProtocolError::PendingOverflow`]. Default: [`DEFAULT_MAX_PENDING_BUFFER`] (16 MiB).
    pub fn with_max_pending_buffer(mut self, bytes: usize) -> Self {
        self.max_pending_buffer = bytes;
        self
    }

    /// Longest frame sent; longer messages fail with [`Error::MessageTooLarge`]. Default:
    /// [`DEFAULT_MAX_FRAME_LEN`] (the longest secret-stream message, 16 MiB - 18).
    pub fn with_max_frame_len(mut self, bytes: usize) -> Self {
        self.max_frame_len = bytes.clamp(64, DEFAULT_MAX_FRAME_LEN);
        self
    }

    /// Bytes queued for sending above which [`Mux::send`] fails with
    /// [`Error::SendQueueFull`] (the async driver waits well before). Default:
    /// [`DEFAULT_MAX_SEND_QUEUE`] (64 MiB).
    pub fn with_max_send_queue(mut self, bytes: usize) -> Self {
        self.max_send_queue = bytes;
        self
    }

    /// Size at which a corked batch is sent before the next item joins it. Default:
    /// [`MAX_BATCH`] (8 MiB, as JS).
    pub fn with_max_batch(mut self, bytes: usize) -> Self {
        self.max_batch = bytes.max(1);
        self
    }
}

/// What pairs channels: a protocol name and an optional binary id (empty = none; JS treats
/// `null` and an empty id alike).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ChannelKey {
    /// Protocol name.
    protocol: Arc<str>,
    /// Binary id; empty for none.
    id: Bytes,
}

impl ChannelKey {
    /// A key from a protocol name and id.
    pub fn new(protocol: impl Into<Arc<str>>, id: impl Into<Bytes>) -> Self {
        ChannelKey {
            protocol: protocol.into(),
            id: id.into(),
        }
    }

    /// The protocol name.
    pub fn protocol(&self) -> &str {
        &self.protocol
    }

    /// The id (empty for none).
    pub fn id(&self) -> &Bytes {
        &self.id
    }
}

impl fmt::Debug for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}##{}", self.protocol, hex(&self.id))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// How to open a channel.
#[derive(Debug, Clone)]
pub struct ChannelOptions {
    /// Protocol and id.
    key: ChannelKey,
    /// Other protocol names a remote may open this channel under.
    aliases: Vec<Arc<str>>,
    /// Handshake bytes sent with our `open`.
    handshake: Bytes,
    /// Refuse to open while another channel with this key is open.
    unique: bool,
}

impl ChannelOptions {
    /// Options for `protocol` with no id, no handshake, no aliases, unique.
    pub fn new(protocol: impl Into<Arc<str>>) -> Self {
        ChannelOptions {
            key: ChannelKey::new(protocol, Bytes::new()),
            aliases: Vec::new(),
            handshake: Bytes::new(),
            unique: true,
        }
    }

    /// Options for a key.
    pub fn for_key(key: ChannelKey) -> Self {
        ChannelOptions {
            key,
            aliases: Vec::new(),
            handshake: Bytes::new(),
            unique: true,
        }
    }

    /// The binary id that, with the protocol, pairs the channel. Default: none.
    pub fn with_id(mut self, id: impl Into<Bytes>) -> Self {
        self.key.id = id.into();
        self
    }

    /// Handshake bytes sent in our `open` (encoded by the caller, e.g. with
    /// [`corenet_codec::to_bytes`]); the remote's arrive with [`Event::Opened`]. Default:
    /// none.
    pub fn with_handshake(mut self, handshake: impl Into<Bytes>) -> Self {
        self.handshake = handshake.into();
        self
    }

    /// Encodes `handshake` and sends it in our `open`. Default: none.
    pub fn with_handshake_encoded<E: Encode + ?Sized>(mut self, handshake: &E) -> Self {
        self.handshake = corenet_codec::to_bytes(handshake);
        self
    }

    /// Other protocol names under which a remote `open` pairs with this channel (hypercore
    /// uses `hypercore` for `hypercore/alpha`). Default: none.
    pub fn with_aliases<I, P>(mut self, aliases: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<Arc<str>>,
    {
        self.aliases = aliases.into_iter().map(Into::into).collect();
        self
    }

    /// Whether opening fails with [`Error::AlreadyOpen`] while a channel with the same key is
    /// open. Default: `true` (JS `unique: true`).
    pub fn with_unique(mut self, unique: bool) -> Self {
        self.unique = unique;
        self
    }

    /// The protocol and id.
    pub fn key(&self) -> &ChannelKey {
        &self.key
    }
}

/// A channel of a [`Mux`]: its local id plus a generation, so that an id of a closed channel
/// never addresses the channel that reuses its local id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId {
    /// Local id minus one (the index of the local slot).
    index: u32,
    /// Generation of the slot.
    generation: u32,
}

impl ChannelId {
    /// The local id this channel has on the wire (never 0).
    pub fn local_id(self) -> u64 {
        u64::from(self.index) + 1
    }

    /// The slot index (local id minus one), for tables indexed by channel.
    pub fn index(self) -> usize {
        self.index as usize
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.local_id(), self.generation)
    }
}

/// A registered pairing hook (see [`Mux::pair`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PairHook(u64);

/// A remote open waiting for an answer (see [`Event::PairRequest`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PairingId {
    /// Remote id minus one.
    remote: u32,
    /// Distinguishes reuses of the remote id.
    serial: u32,
}

/// Where a channel is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelState {
    /// Our `open` is sent; the remote's has not arrived.
    Opening,
    /// Paired with the remote's channel.
    Open,
}

/// Why a channel closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// We closed it.
    Local,
    /// The remote closed it.
    Remote,
    /// The remote rejected our open.
    Rejected,
    /// The whole mux closed (the stream ended or failed, or a protocol error).
    MuxClosed,
}

/// Something that happened, drained with [`Mux::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The channel is paired with the remote's (JS `onopen`).
    Opened {
        /// The channel.
        channel: ChannelId,
        /// The remote's handshake bytes (empty when it sent none).
        handshake: Bytes,
    },
    /// A message arrived on an open channel.
    Message {
        /// The channel.
        channel: ChannelId,
        /// Message type.
        message_type: u64,
        /// The payload, sharing the received frame's memory.
        payload: Bytes,
    },
    /// The channel closed (JS `onclose`); its id is free for reuse.
    Closed {
        /// The channel.
        channel: ChannelId,
        /// Why.
        reason: CloseReason,
    },
    /// The remote opened a channel we have none for, and a pairing hook matches (JS
    /// `pair(..., notify)`; this is how corestore learns discovery keys). Answer by opening a
    /// channel for the key (claims the oldest pending open of the key) or with
    /// [`Mux::reject_pairing`].
    PairRequest {
        /// The request.
        pairing: PairingId,
        /// The hook that matched.
        hook: PairHook,
        /// Protocol and id as the remote named them.
        key: ChannelKey,
    },
    /// The remote closed a channel it had opened before we answered its
    /// [`Event::PairRequest`]; the request is void.
    PairingCancelled {
        /// The request.
        pairing: PairingId,
    },
}

/// A local id slot.
#[derive(Debug)]
struct LocalSlot {
    /// Bumped whenever a channel in this slot ends.
    generation: u32,
    /// What the slot holds.
    state: LocalState,
}

#[derive(Debug)]
enum LocalState {
    /// Unused; listed in `free`.
    Free,
    /// Closed before the remote answered our open; the id waits for that answer (the
    /// remote's open or reject) before reuse. Still listed in the key's `outgoing`.
    Reserved { key: ChannelKey },
    /// Our open is sent, waiting for the remote's. Listed in the key's `outgoing`.
    Opening { key: ChannelKey },
    /// Paired with remote slot `remote`.
    Open { key: ChannelKey, remote: u32 },
}

/// A remote id slot.
#[derive(Debug)]
enum RemoteSlot {
    /// Not in use (or in use by a channel we ignore: closed, rejected, stale).
    Free,
    /// The remote opened it and we have not answered.
    Pending(Box<PendingOpen>),
    /// Paired with our local slot.
    Paired(u32),
}

/// A remote open waiting for an answer.
#[derive(Debug)]
struct PendingOpen {
    /// Identity for the user.
    pairing: PairingId,
    /// Canonical key.
    key: ChannelKey,
    /// The remote's handshake bytes.
    handshake: Bytes,
    /// Messages that arrived meanwhile: (type, payload).
    held: VecDeque<(u64, Bytes)>,
    /// Their size as JS counts it.
    held_bytes: usize,
}

/// Per-key pairing queues.
#[derive(Debug, Default)]
struct KeyInfo {
    /// Our unanswered opens (local slot indices), oldest first; includes reserved slots.
    outgoing: VecDeque<u32>,
    /// Pending remote opens (remote slot indices), oldest first.
    incoming: VecDeque<u32>,
    /// Our live channels (opening or open).
    opened: usize,
    /// Alias keys that point here.
    aliases: Vec<ChannelKey>,
}

impl KeyInfo {
    fn is_unused(&self) -> bool {
        self.opened == 0 && self.outgoing.is_empty() && self.incoming.is_empty()
    }
}

/// An outgoing frame in the queue.
#[derive(Debug)]
enum TxFrame {
    /// The next `len` bytes of the arena.
    Arena(usize),
    /// A frame built elsewhere (a batch).
    Owned(Bytes),
}

/// The protomux state machine. See the [module docs](self).
#[derive(Debug)]
pub struct Mux {
    /// Settings.
    config: Config,
    /// Local id slots (index = local id - 1).
    local: Vec<LocalSlot>,
    /// Free local slots; reused last-freed first, as JS does.
    free: Vec<u32>,
    /// Remote id slots (index = remote id - 1).
    remote: Vec<RemoteSlot>,
    /// Pairing queues by canonical key.
    keys: HashMap<ChannelKey, KeyInfo>,
    /// Alias key -> canonical key.
    aliases: HashMap<ChannelKey, ChannelKey>,
    /// Pairing hooks by key (an empty id matches any id).
    hooks: HashMap<ChannelKey, PairHook>,
    /// Next hook token.
    next_hook: u64,
    /// Next pairing serial.
    next_serial: u32,
    /// Pending remote opens.
    pending_opens: usize,
    /// Bytes held for pending remote opens, as JS counts them.
    held_bytes: usize,
    /// Outgoing frames, contiguous.
    arena: BytesMut,
    /// Buffers of sent large frames handed back with [`Mux::recycle`], for the next ones.
    spare: Vec<BytesMut>,
    /// Outgoing frames in order.
    tx: VecDeque<TxFrame>,
    /// Bytes in `tx`.
    tx_bytes: usize,
    /// Cork depth.
    corked: u32,
    /// The batch being built while corked.
    batch: BatchWriter,
    /// Events for the user.
    events: VecDeque<Event>,
    /// No more input or output: the stream ended or failed.
    closed: bool,
}

impl Default for Mux {
    fn default() -> Self {
        Mux::new(Config::default())
    }
}

impl Mux {
    /// A mux with no channels.
    pub fn new(config: Config) -> Self {
        Mux {
            config,
            local: Vec::new(),
            free: Vec::new(),
            remote: Vec::new(),
            keys: HashMap::new(),
            aliases: HashMap::new(),
            hooks: HashMap::new(),
            next_hook: 0,
            next_serial: 0,
            pending_opens: 0,
            held_bytes: 0,
            arena: BytesMut::new(),
            spare: Vec::new(),
            tx: VecDeque::new(),
            tx_bytes: 0,
            corked: 0,
            batch: BatchWriter::new(),
            events: VecDeque::new(),
            closed: false,
        }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ----- queries -----------------------------------------------------------------------

    /// The state of a channel; `None` once it closed.
    pub fn channel_state(&self, channel: ChannelId) -> Option<ChannelState> {
        match &self.slot(channel)?.state {
            LocalState::Opening { .. } => Some(ChannelState::Opening),
            LocalState::Open { .. } => Some(ChannelState::Open),
            _ => None,
        }
    }

    /// The remote's id of the channel it is paired with, while open.
    pub fn remote_id(&self, channel: ChannelId) -> Option<u64> {
        match &self.slot(channel)?.state {
            LocalState::Open { remote, .. } => Some(u64::from(*remote) + 1),
            _ => None,
        }
    }

    /// The protocol and id a live channel was opened with (canonical key).
    pub fn channel_key(&self, channel: ChannelId) -> Option<&ChannelKey> {
        match &self.slot(channel)?.state {
            LocalState::Opening { key } | LocalState::Open { key, .. } => Some(key),
            _ => None,
        }
    }

    /// True while we have a channel (opening or open) for `protocol` and `id` (JS
    /// `mux.opened({ protocol, id })`).
    pub fn is_opened(&self, protocol: &str, id: &[u8]) -> bool {
        let key = self.resolve(ChannelKey::new(protocol, Bytes::copy_from_slice(id)));
        self.keys.get(&key).is_some_and(|i| i.opened > 0)
    }

    /// True when no local id is in use (JS `isIdle`; ids reserved for unanswered opens of
    /// closed channels count as in use).
    pub fn is_idle(&self) -> bool {
        self.local.len() == self.free.len()
    }

    /// Live channels, in local id order (JS iterates the mux the same way).
    pub fn channels(&self) -> impl Iterator<Item = ChannelId> + '_ {
        self.local
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s.state {
                LocalState::Opening { .. } | LocalState::Open { .. } => Some(ChannelId {
                    index: i as u32,
                    generation: s.generation,
                }),
                _ => None,
            })
    }

    /// True once the mux closed ([`Mux::handle_close`] or a protocol error).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// True while so much is held for pending remote channels that the driver should stop
    /// feeding frames (JS pauses the stream). Answering pair requests resumes it.
    pub fn is_paused(&self) -> bool {
        self.held_bytes > self.config.pause_threshold
    }

    /// Bytes held for pending remote channels (512 + length per message, as JS counts).
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Remote opens waiting for an answer.
    pub fn pending_opens(&self) -> usize {
        self.pending_opens
    }

    /// Bytes waiting in [`Mux::poll_transmit`]'s queue (not counting an unsent corked
    /// batch).
    pub fn queued_bytes(&self) -> usize {
        self.tx_bytes
    }

    /// Bytes in the corked batch not yet sent.
    pub fn batched_bytes(&self) -> usize {
        if self.batch.is_empty() {
            0
        } else {
            self.batch.len()
        }
    }

    /// True when [`Mux::poll_transmit`] has a frame.
    pub fn has_transmit(&self) -> bool {
        !self.tx.is_empty()
    }

    /// True when [`Mux::poll_event`] has an event.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The cork depth.
    pub fn cork_depth(&self) -> u32 {
        self.corked
    }

    // ----- outputs -----------------------------------------------------------------------

    /// The next frame to send: one secret-stream message.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        let frame = match self.tx.pop_front()? {
            TxFrame::Arena(len) => self.arena.split_to(len).freeze(),
            TxFrame::Owned(b) => b,
        };
        self.tx_bytes -= frame.len();
        Some(frame)
    }

    /// Like [`Mux::poll_transmit`], but packs consecutive small frames (up to
    /// [`PACK_ITEM_MAX`] bytes each, batches excepted) into one batch frame of at most
    /// `limit` bytes. Nothing waits for more frames: only what is queued now is packed. The
    /// remote processes a batch exactly as the frames in it, in order (JS does so for any
    /// batch), while the secret stream encrypts one message instead of many.
    pub fn poll_transmit_packed(&mut self, limit: usize) -> Option<Bytes> {
        if self.packable(0).is_none() || self.packable(1).is_none() {
            return self.poll_transmit();
        }
        let mut batch = BatchWriter::new();
        let mut packed = 0;
        while let Some((channel, header)) = self.packable(0) {
            let len = self.front_len().unwrap_or(0);
            if packed > 0 && batch.len() + batch.item_cost(channel, len - header) > limit {
                break;
            }
            let Some(frame) = self.poll_transmit() else {
                break;
            };
            batch.push_raw(channel, &frame[header..]);
            packed += 1;
        }
        trace!(frames = packed, "frames packed into a batch");
        batch.take().map(BytesMut::freeze)
    }

    /// Length of the first queued frame.
    fn front_len(&self) -> Option<usize> {
        match self.tx.front()? {
            TxFrame::Arena(n) => Some(*n),
            TxFrame::Owned(b) => Some(b.len()),
        }
    }

    /// The channel and header length of queued frame `i` (0 or 1) if it can join a packed
    /// batch: short, and not a batch itself.
    fn packable(&self, i: usize) -> Option<(u64, usize)> {
        let bytes: &[u8] = match (self.tx.front()?, i) {
            (TxFrame::Arena(n), 0) => &self.arena[..*n],
            (TxFrame::Owned(b), 0) => b,
            (first, 1) => {
                let offset = match first {
                    TxFrame::Arena(n) => *n,
                    TxFrame::Owned(_) => 0,
                };
                match self.tx.get(1)? {
                    TxFrame::Arena(n) => &self.arena[offset..offset + *n],
                    TxFrame::Owned(b) => b,
                }
            }
            _ => return None,
        };
        if bytes.len() > PACK_ITEM_MAX || bytes.starts_with(&[0, TYPE_BATCH as u8]) {
            return None;
        }
        let mut dec = Decoder::new(bytes);
        let channel = dec.uint().ok()?;
        let header = dec.position();
        (header < bytes.len()).then_some((channel, header))
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ----- channel operations ------------------------------------------------------------

    /// Opens a channel: claims the oldest pending remote open of the key if there is one
    /// (then [`Event::Opened`] follows at once, with any messages held for it), otherwise
    /// sends our `open` and waits for the remote's. Either way our `open` goes out, carrying
    /// the handshake.
    pub fn open_channel(&mut self, options: &ChannelOptions) -> Result<ChannelId, Error> {
        if self.closed {
            return Err(Error::MuxClosed);
        }
        let open_len = encode::uint_len(u64::from(u32::MAX))
            + encode::buffer_len(options.key.protocol.len())
            + encode::buffer_len(options.key.id.len())
            + options.handshake.len()
            + 2;
        if open_len > self.config.max_frame_len {
            return Err(Error::MessageTooLarge {
                len: open_len,
                max: self.config.max_frame_len,
            });
        }
        let key = self.register_aliases(options);
        let info = self.keys.entry(key.clone()).or_default();
        if options.unique && info.opened > 0 {
            return Err(Error::AlreadyOpen {
                protocol: options.key.protocol.to_string(),
            });
        }
        let index = self.alloc_local()?;
        let info = self.keys.entry(key.clone()).or_default();
        info.opened += 1;
        // `incoming` only lists pending slots; skipping anything else is defensive.
        let claimed = loop {
            match info.incoming.pop_front() {
                None => break None,
                Some(r) => {
                    if let Some(RemoteSlot::Pending(_)) = self.remote.get(r as usize) {
                        break Some(r);
                    }
                }
            }
        };
        let generation = self.local[index as usize].generation;
        let channel = ChannelId { index, generation };
        self.emit_open(channel.local_id(), options);
        match claimed {
            Some(remote) => {
                let RemoteSlot::Pending(pending) =
                    std::mem::replace(&mut self.remote[remote as usize], RemoteSlot::Paired(index))
                else {
                    unreachable!("checked above");
                };
                self.pending_opens -= 1;
                self.held_bytes -= pending.held_bytes;
                self.local[index as usize].state = LocalState::Open { key, remote };
                debug!(%channel, remote_id = remote + 1, "channel opened (claimed a remote open)");
                let PendingOpen {
                    handshake, held, ..
                } = *pending;
                self.events.push_back(Event::Opened { channel, handshake });
                for (message_type, payload) in held {
                    self.events.push_back(Event::Message {
                        channel,
                        message_type,
                        payload,
                    });
                }
            }
            None => {
                debug!(%channel, ?key, "channel opening");
                if let Some(info) = self.keys.get_mut(&key) {
                    info.outgoing.push_back(index);
                }
                self.local[index as usize].state = LocalState::Opening { key };
            }
        }
        Ok(channel)
    }

    /// Closes a channel and sends `close`; [`Event::Closed`] with [`CloseReason::Local`]
    /// follows. Returns false when it was already closed.
    pub fn close(&mut self, channel: ChannelId) -> bool {
        if self.slot(channel).is_none() {
            return false;
        }
        let index = channel.index as usize;
        let slot = &mut self.local[index];
        match std::mem::replace(&mut slot.state, LocalState::Free) {
            LocalState::Opening { key } => {
                // The id stays reserved (and in `outgoing`) until the remote answers.
                slot.generation = slot.generation.wrapping_add(1);
                if let Some(info) = self.keys.get_mut(&key) {
                    info.opened -= 1;
                }
                slot.state = LocalState::Reserved { key };
                debug!(%channel, "channel closed before the remote answered");
            }
            LocalState::Open { key, remote } => {
                slot.generation = slot.generation.wrapping_add(1);
                self.remote[remote as usize] = RemoteSlot::Free;
                self.free.push(channel.index);
                if let Some(info) = self.keys.get_mut(&key) {
                    info.opened -= 1;
                }
                self.gc(&key);
                debug!(%channel, "channel closed");
            }
            other => {
                slot.state = other;
                return false;
            }
        }
        self.events.push_back(Event::Closed {
            channel,
            reason: CloseReason::Local,
        });
        self.emit_control(TYPE_CLOSE, channel.local_id());
        true
    }

    /// Sends a message of `message_type` on a channel (opening or open: the remote holds
    /// messages for channels it has not paired yet).
    pub fn send(
        &mut self,
        channel: ChannelId,
        message_type: u64,
        payload: &[u8],
    ) -> Result<(), Error> {
        self.send_with(channel, message_type, payload.len(), |b| {
            b.put_slice(payload)
        })
    }

    /// Encodes `message` straight into the outgoing frame and sends it.
    pub fn send_encoded<E: Encode + ?Sized>(
        &mut self,
        channel: ChannelId,
        message_type: u64,
        message: &E,
    ) -> Result<(), Error> {
        self.send_with(channel, message_type, message.encoded_len(), |b| {
            message.encode(b)
        })
    }

    /// Sends a message whose payload `write` puts into the frame (exactly `len` bytes).
    pub fn send_with(
        &mut self,
        channel: ChannelId,
        message_type: u64,
        len: usize,
        write: impl FnOnce(&mut BytesMut),
    ) -> Result<(), Error> {
        if self.closed {
            return Err(Error::MuxClosed);
        }
        if self.channel_state(channel).is_none() {
            return Err(Error::ChannelClosed);
        }
        if self.tx_bytes > self.config.max_send_queue {
            return Err(Error::SendQueueFull {
                queued: self.tx_bytes,
                max: self.config.max_send_queue,
            });
        }
        let frame_len = encode::uint_len(channel.local_id()) + encode::uint_len(message_type) + len;
        if frame_len > self.config.max_frame_len {
            return Err(Error::MessageTooLarge {
                len: frame_len,
                max: self.config.max_frame_len,
            });
        }
        trace!(%channel, message_type, len, "send");
        self.emit(channel.local_id(), message_type, len, write);
        Ok(())
    }

    /// Starts (or nests) a batch: until the matching [`Mux::uncork`], frames are collected
    /// into one batch frame (sent early when it reaches the batch limit).
    pub fn cork(&mut self) {
        self.corked += 1;
    }

    /// Ends a [`Mux::cork`]; the outermost one queues the batch.
    pub fn uncork(&mut self) {
        match self.corked {
            0 => {}
            1 => {
                self.corked = 0;
                self.flush_batch();
            }
            _ => self.corked -= 1,
        }
    }

    /// Registers a pairing hook for `protocol` and `id` (`None` matches every id without a
    /// more specific hook), replacing an earlier one for the same key. Unmatched remote opens
    /// that a hook matches wait for an answer and produce [`Event::PairRequest`]; the rest
    /// are rejected.
    pub fn pair(&mut self, protocol: &str, id: Option<&[u8]>) -> PairHook {
        let hook = PairHook(self.next_hook);
        self.next_hook += 1;
        let key = ChannelKey::new(protocol, Bytes::copy_from_slice(id.unwrap_or_default()));
        self.hooks.insert(key, hook);
        hook
    }

    /// Removes the hook for `protocol` and `id` (pending requests stay pending).
    pub fn unpair(&mut self, protocol: &str, id: Option<&[u8]>) {
        let key = ChannelKey::new(protocol, Bytes::copy_from_slice(id.unwrap_or_default()));
        self.hooks.remove(&key);
    }

    /// Removes a hook by its token, if it is still registered.
    pub fn unpair_hook(&mut self, hook: PairHook) {
        self.hooks.retain(|_, h| *h != hook);
    }

    /// True while the pairing request is waiting for an answer.
    pub fn is_pending(&self, pairing: PairingId) -> bool {
        matches!(self.remote.get(pairing.remote as usize),
            Some(RemoteSlot::Pending(p)) if p.pairing == pairing)
    }

    /// The canonical key of a pending request.
    pub fn pairing_key(&self, pairing: PairingId) -> Option<&ChannelKey> {
        match self.remote.get(pairing.remote as usize) {
            Some(RemoteSlot::Pending(p)) if p.pairing == pairing => Some(&p.key),
            _ => None,
        }
    }

    /// Accepts a pairing request: opens a channel with `options`, whose key must resolve to
    /// the request's. Like every open it claims the oldest pending open of the key (FIFO is
    /// how both sides pair), which is this one when requests are answered in order.
    pub fn accept_pairing(
        &mut self,
        pairing: PairingId,
        options: &ChannelOptions,
    ) -> Result<ChannelId, Error> {
        let Some(key) = self.pairing_key(pairing) else {
            return Err(Error::PairingGone);
        };
        let key = key.clone();
        let mine = self.resolve(options.key.clone());
        let matches = mine == key
            || options
                .aliases
                .iter()
                .any(|a| ChannelKey::new(a.clone(), options.key.id.clone()) == key);
        if !matches {
            return Err(Error::PairingMismatch);
        }
        self.open_channel(options)
    }

    /// Rejects a pending remote open: sends `reject` and drops what was held for it.
    pub fn reject_pairing(&mut self, pairing: PairingId) -> Result<(), Error> {
        if !self.is_pending(pairing) {
            return Err(Error::PairingGone);
        }
        let remote = pairing.remote;
        let pending = self.take_pending(remote);
        debug!(remote_id = remote + 1, key = ?pending.as_ref().map(|p| &p.key), "rejected a remote open");
        self.emit_control(TYPE_REJECT, u64::from(remote) + 1);
        Ok(())
    }

    // ----- inputs ------------------------------------------------------------------------

    /// Processes one message from the secret stream. A protocol violation closes the mux
    /// (every channel gets [`Event::Closed`] with [`CloseReason::MuxClosed`]) and returns the
    /// error; the caller then closes the stream. Empty frames are ignored, as are frames
    /// after the mux closed.
    pub fn handle_frame(&mut self, frame: Bytes) -> Result<(), Error> {
        if self.closed || frame.is_empty() {
            return Ok(());
        }
        trace!(len = frame.len(), "frame");
        let mut dec = Decoder::new(&frame);
        let result = safe_uint(&mut dec)
            .map_err(ProtocolError::from)
            .and_then(|channel| self.handle_item(&frame, channel, dec.rest(), 0));
        if let Err(e) = result {
            debug!(error = %e, "remote broke the protocol; closing");
            self.handle_close();
            return Err(Error::Protocol(e));
        }
        Ok(())
    }

    /// The stream ended or failed: closes every channel ([`CloseReason::MuxClosed`]), drops
    /// pending opens and queued frames. Idempotent.
    pub fn handle_close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        for (i, slot) in self.local.iter_mut().enumerate() {
            if let LocalState::Opening { .. } | LocalState::Open { .. } = slot.state {
                let channel = ChannelId {
                    index: i as u32,
                    generation: slot.generation,
                };
                slot.generation = slot.generation.wrapping_add(1);
                self.events.push_back(Event::Closed {
                    channel,
                    reason: CloseReason::MuxClosed,
                });
            }
            slot.state = LocalState::Free;
        }
        self.remote.clear();
        self.keys.clear();
        self.aliases.clear();
        self.pending_opens = 0;
        self.held_bytes = 0;
        self.tx.clear();
        self.tx_bytes = 0;
        self.arena = BytesMut::new();
        self.spare = Vec::new();
        self.batch = BatchWriter::new();
        debug!("mux closed");
    }

    // ----- frame handling ----------------------------------------------------------------

    /// Handles `uint type, payload` of `channel`.
    fn handle_item(
        &mut self,
        frame: &Bytes,
        channel: u64,
        data: &[u8],
        depth: usize,
    ) -> Result<(), ProtocolError> {
        let mut dec = Decoder::new(data);
        let message_type = safe_uint(&mut dec)?;
        if channel != CONTROL_CHANNEL {
            let payload = frame.slice_ref(dec.rest());
            self.on_message(channel, message_type, payload)?;
            return Ok(());
        }
        match Control::decode_body(message_type, &mut dec)? {
            Control::Batch(body) => {
                if depth >= MAX_BATCH_DEPTH {
                    return Err(ProtocolError::BatchTooDeep {
                        max: MAX_BATCH_DEPTH,
                    });
                }
                for item in BatchItems::new(body) {
                    let item = item?;
                    self.handle_item(frame, item.channel, item.data, depth + 1)?;
                    if self.closed {
                        break;
                    }
                }
                Ok(())
            }
            Control::Open(open) => {
                let handshake = frame.slice_ref(open.handshake);
                self.on_open(
                    open.local_id,
                    &open.protocol,
                    frame.slice_ref(open.id),
                    handshake,
                )
            }
            Control::Reject { remote_id } => self.on_reject(remote_id),
            Control::Close { local_id } => {
                self.on_close(local_id);
                Ok(())
            }
            Control::Unknown { message_type } => {
                trace!(message_type, "unknown control message ignored");
                Ok(())
            }
        }
    }

    fn on_message(
        &mut self,
        remote_id: u64,
        message_type: u64,
        payload: Bytes,
    ) -> Result<(), ProtocolError> {
        let slot = usize::try_from(remote_id - 1)
            .ok()
            .and_then(|i| self.remote.get_mut(i));
        match slot {
            Some(RemoteSlot::Paired(local)) => {
                let index = *local;
                let generation = self.local[index as usize].generation;
                self.events.push_back(Event::Message {
                    channel: ChannelId { index, generation },
                    message_type,
                    payload,
                });
            }
            Some(RemoteSlot::Pending(p)) => {
                let cost = HELD_MESSAGE_OVERHEAD + payload.len();
                p.held.push_back((message_type, payload));
                p.held_bytes += cost;
                self.held_bytes += cost;
                trace!(
                    remote_id,
                    held = self.held_bytes,
                    "message held for a pending channel"
                );
                if self.held_bytes > self.config.max_pending_buffer {
                    return Err(ProtocolError::PendingOverflow {
                        buffered: self.held_bytes,
                        max: self.config.max_pending_buffer,
                    });
                }
            }
            // A closed channel: could be a message in flight when we closed it.
            _ => trace!(remote_id, "message for an unknown channel ignored"),
        }
        Ok(())
    }

    fn on_open(
        &mut self,
        remote_id: u64,
        protocol: &str,
        id: Bytes,
        handshake: Bytes,
    ) -> Result<(), ProtocolError> {
        let invalid = ProtocolError::InvalidOpen { remote_id };
        if remote_id == 0 {
            return Err(invalid);
        }
        let rid = remote_id - 1;
        let len = self.remote.len() as u64;
        if rid == len {
            if self.remote.len() >= self.config.max_channels {
                return Err(ProtocolError::TooManyChannels {
                    remote_id,
                    max: self.config.max_channels,
                });
            }
            self.remote.push(RemoteSlot::Free);
        }
        if rid > len || !matches!(self.remote[rid as usize], RemoteSlot::Free) {
            return Err(invalid);
        }
        let rid = rid as u32;
        let named = ChannelKey::new(protocol, id);
        let key = self.resolve(named.clone());
        let info = self.keys.entry(key.clone()).or_default();

        if let Some(index) = info.outgoing.pop_front() {
            let slot = &mut self.local[index as usize];
            match std::mem::replace(&mut slot.state, LocalState::Free) {
                LocalState::Opening { key } => {
                    slot.state = LocalState::Open { key, remote: rid };
                    self.remote[rid as usize] = RemoteSlot::Paired(index);
                    let channel = ChannelId {
                        index,
                        generation: slot.generation,
                    };
                    debug!(%channel, remote_id, "channel opened");
                    self.events.push_back(Event::Opened { channel, handshake });
                }
                LocalState::Reserved { key } => {
                    // The remote answered a channel we closed already: release the id, and
                    // close the remote's side in case it missed our first close (see the
                    // module docs).
                    self.free.push(index);
                    self.gc(&key);
                    debug!(
                        local_id = index + 1,
                        remote_id, "open answered a closed channel"
                    );
                    self.emit_control(TYPE_CLOSE, u64::from(index) + 1);
                }
                other => {
                    debug_assert!(false, "outgoing lists a slot that is {other:?}");
                    slot.state = other;
                    return Err(invalid);
                }
            }
            return Ok(());
        }

        let hook = self
            .hooks
            .get(&named)
            .or_else(|| {
                self.hooks
                    .get(&ChannelKey::new(named.protocol.clone(), Bytes::new()))
            })
            .copied();
        let hook = match hook {
            Some(h) if self.pending_opens < self.config.max_pending_opens => h,
            other => {
                debug!(
                    ?named,
                    remote_id,
                    hooked = other.is_some(),
                    "remote open rejected"
                );
                self.gc(&key);
                self.emit_control(TYPE_REJECT, remote_id);
                return Ok(());
            }
        };
        let pairing = PairingId {
            remote: rid,
            serial: self.next_serial,
        };
        self.next_serial = self.next_serial.wrapping_add(1);
        self.remote[rid as usize] = RemoteSlot::Pending(Box::new(PendingOpen {
            pairing,
            key: key.clone(),
            handshake,
            held: VecDeque::new(),
            held_bytes: 0,
        }));
        if let Some(info) = self.keys.get_mut(&key) {
            info.incoming.push_back(rid);
        }
        self.pending_opens += 1;
        debug!(?named, remote_id, "remote open waits for an answer");
        self.events.push_back(Event::PairRequest {
            pairing,
            hook,
            key: named,
        });
        Ok(())
    }

    fn on_reject(&mut self, local_id: u64) -> Result<(), ProtocolError> {
        let invalid = ProtocolError::InvalidReject { local_id };
        let index = match local_id
            .checked_sub(1)
            .and_then(|i| usize::try_from(i).ok())
        {
            Some(i) if i < self.local.len() => i,
            _ => return Err(invalid),
        };
        let slot = &mut self.local[index];
        let (key, channel) = match std::mem::replace(&mut slot.state, LocalState::Free) {
            LocalState::Opening { key } => {
                let channel = ChannelId {
                    index: index as u32,
                    generation: slot.generation,
                };
                slot.generation = slot.generation.wrapping_add(1);
                (key, Some(channel))
            }
            LocalState::Reserved { key } => (key, None),
            other => {
                slot.state = other;
                return Err(invalid);
            }
        };
        if let Some(info) = self.keys.get_mut(&key) {
            if let Some(pos) = info.outgoing.iter().position(|&i| i as usize == index) {
                info.outgoing.remove(pos);
            }
            if channel.is_some() {
                info.opened -= 1;
            }
        }
        self.free.push(index as u32);
        self.gc(&key);
        if let Some(channel) = channel {
            debug!(%channel, "channel rejected by the remote");
            self.events.push_back(Event::Closed {
                channel,
                reason: CloseReason::Rejected,
            });
        }
        Ok(())
    }

    fn on_close(&mut self, remote_id: u64) {
        let Some(rid) = remote_id
            .checked_sub(1)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|&i| i < self.remote.len())
        else {
            return;
        };
        match std::mem::replace(&mut self.remote[rid], RemoteSlot::Free) {
            RemoteSlot::Free => trace!(remote_id, "close for an unknown channel ignored"),
            RemoteSlot::Paired(index) => {
                let slot = &mut self.local[index as usize];
                let LocalState::Open { key, .. } =
                    std::mem::replace(&mut slot.state, LocalState::Free)
                else {
                    debug_assert!(false, "a paired remote slot points at a closed channel");
                    return;
                };
                let channel = ChannelId {
                    index,
                    generation: slot.generation,
                };
                slot.generation = slot.generation.wrapping_add(1);
                self.free.push(index);
                if let Some(info) = self.keys.get_mut(&key) {
                    info.opened -= 1;
                }
                self.gc(&key);
                debug!(%channel, "channel closed by the remote");
                self.events.push_back(Event::Closed {
                    channel,
                    reason: CloseReason::Remote,
                });
            }
            pending @ RemoteSlot::Pending(_) => {
                self.remote[rid] = pending;
                if let Some(p) = self.take_pending(rid as u32) {
                    debug!(remote_id, "remote closed a channel before we answered it");
                    self.events
                        .push_back(Event::PairingCancelled { pairing: p.pairing });
                }
                // Answer the remote's open so that it releases its id (module docs).
                self.emit_control(TYPE_REJECT, remote_id);
            }
        }
    }

    // ----- helpers -----------------------------------------------------------------------

    /// Checks every internal cross-reference (tests only).
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        if self.closed {
            return;
        }
        let mut opened: HashMap<&ChannelKey, usize> = HashMap::new();
        for (i, slot) in self.local.iter().enumerate() {
            let i = i as u32;
            let in_free = self.free.iter().filter(|&&f| f == i).count();
            match &slot.state {
                LocalState::Free => assert_eq!(in_free, 1, "free slot {i} not listed once"),
                LocalState::Opening { key } | LocalState::Reserved { key } => {
                    assert_eq!(in_free, 0);
                    let info = &self.keys[key];
                    assert_eq!(info.outgoing.iter().filter(|&&o| o == i).count(), 1);
                    if matches!(slot.state, LocalState::Opening { .. }) {
                        *opened.entry(key).or_default() += 1;
                    }
                }
                LocalState::Open { key, remote } => {
                    assert_eq!(in_free, 0);
                    assert!(
                        matches!(self.remote[*remote as usize], RemoteSlot::Paired(l) if l == i)
                    );
                    *opened.entry(key).or_default() += 1;
                    assert!(!self.keys[key].outgoing.contains(&i));
                }
            }
        }
        let mut pending = 0;
        let mut held = 0;
        for (r, slot) in self.remote.iter().enumerate() {
            match slot {
                RemoteSlot::Free => {}
                RemoteSlot::Paired(l) => assert!(
                    matches!(self.local[*l as usize].state, LocalState::Open { remote, .. } if remote as usize == r)
                ),
                RemoteSlot::Pending(p) => {
                    pending += 1;
                    held += p.held_bytes;
                    assert_eq!(p.pairing.remote as usize, r);
                    assert_eq!(
                        self.keys[&p.key]
                            .incoming
                            .iter()
                            .filter(|&&x| x as usize == r)
                            .count(),
                        1
                    );
                }
            }
        }
        assert_eq!(pending, self.pending_opens);
        assert_eq!(held, self.held_bytes);
        for (key, info) in &self.keys {
            assert!(!info.is_unused(), "{key:?} should have been collected");
            assert_eq!(
                info.opened,
                opened.get(key).copied().unwrap_or(0),
                "{key:?} opened"
            );
            for &r in &info.incoming {
                assert!(
                    matches!(&self.remote[r as usize], RemoteSlot::Pending(p) if &p.key == key)
                );
            }
            for alias in &info.aliases {
                assert_eq!(self.aliases.get(alias), Some(key));
            }
        }
        let queued: usize = self
            .tx
            .iter()
            .map(|f| match f {
                TxFrame::Arena(n) => *n,
                TxFrame::Owned(b) => b.len(),
            })
            .sum();
        assert_eq!(queued, self.tx_bytes);
    }

    fn slot(&self, channel: ChannelId) -> Option<&LocalSlot> {
        self.local
            .get(channel.index as usize)
            .filter(|s| s.generation == channel.generation)
    }

    fn resolve(&self, key: ChannelKey) -> ChannelKey {
        match self.aliases.get(&key) {
            Some(k) => k.clone(),
            None => key,
        }
    }

    /// Registers the channel's aliases for its key and returns the canonical key. A remote
    /// open that arrived under an alias before the alias was known moves over to the
    /// canonical key (JS loses it).
    fn register_aliases(&mut self, options: &ChannelOptions) -> ChannelKey {
        let key = self.resolve(options.key.clone());
        for alias in &options.aliases {
            let alias_key = ChannelKey::new(alias.clone(), options.key.id.clone());
            if alias_key == key || self.aliases.contains_key(&alias_key) {
                continue;
            }
            if let Some(info) = self.keys.get(&alias_key) {
                if info.opened > 0 || !info.outgoing.is_empty() {
                    continue; // a channel of its own; leave it alone
                }
                let moved = self
                    .keys
                    .remove(&alias_key)
                    .map(|i| i.incoming)
                    .unwrap_or_default();
                for &rid in &moved {
                    if let Some(RemoteSlot::Pending(p)) = self.remote.get_mut(rid as usize) {
                        p.key = key.clone();
                    }
                }
                self.keys
                    .entry(key.clone())
                    .or_default()
                    .incoming
                    .extend(moved);
            }
            self.aliases.insert(alias_key.clone(), key.clone());
            self.keys
                .entry(key.clone())
                .or_default()
                .aliases
                .push(alias_key);
        }
        key
    }

    fn gc(&mut self, key: &ChannelKey) {
        if self.keys.get(key).is_some_and(KeyInfo::is_unused) {
            if let Some(info) = self.keys.remove(key) {
                for alias in info.aliases {
                    self.aliases.remove(&alias);
                }
            }
        }
    }

    fn alloc_local(&mut self) -> Result<u32, Error> {
        if let Some(i) = self.free.pop() {
            return Ok(i);
        }
        if self.local.len() >= self.config.max_channels {
            return Err(Error::TooManyChannels {
                max: self.config.max_channels,
            });
        }
        self.local.push(LocalSlot {
            generation: 0,
            state: LocalState::Free,
        });
        Ok((self.local.len() - 1) as u32)
    }

    /// Removes a pending remote open: frees its slot and its held messages.
    fn take_pending(&mut self, remote: u32) -> Option<PendingOpen> {
        let slot = self.remote.get_mut(remote as usize)?;
        let RemoteSlot::Pending(p) = std::mem::replace(slot, RemoteSlot::Free) else {
            return None;
        };
        self.pending_opens -= 1;
        self.held_bytes -= p.held_bytes;
        if let Some(info) = self.keys.get_mut(&p.key) {
            if let Some(pos) = info.incoming.iter().position(|&r| r == remote) {
                info.incoming.remove(pos);
            }
        }
        self.gc(&p.key.clone());
        Some(*p)
    }

    fn emit_open(&mut self, local_id: u64, options: &ChannelOptions) {
        let key = &options.key;
        let body_len = encode::uint_len(local_id)
            + encode::buffer_len(key.protocol.len())
            + encode::buffer_len(key.id.len())
            + options.handshake.len();
        self.emit(CONTROL_CHANNEL, TYPE_OPEN, body_len, |b| {
            encode::uint(b, local_id);
            encode::string(b, &key.protocol);
            encode::buffer(b, &key.id);
            b.put_slice(&options.handshake);
        });
    }

    fn emit_control(&mut self, message_type: u64, id: u64) {
        self.emit(CONTROL_CHANNEL, message_type, encode::uint_len(id), |b| {
            encode::uint(b, id)
        });
    }

    /// Queues a frame `channel, type, body`, or adds it to the batch while corked.
    fn emit(
        &mut self,
        channel: u64,
        message_type: u64,
        body_len: usize,
        body: impl FnOnce(&mut BytesMut),
    ) {
        if self.closed {
            return;
        }
        if self.corked > 0 {
            let item_len = encode::uint_len(message_type) + body_len;
            if self.batch.len() >= self.config.max_batch
                || self.batch.len() + self.batch.item_cost(channel, item_len)
                    > self.config.max_frame_len
            {
                self.flush_batch();
            }
            if self.batch.len() + self.batch.item_cost(channel, item_len)
                <= self.config.max_frame_len
            {
                self.batch.push(channel, message_type, body_len, body);
                return;
            }
            // Too large for any batch: it goes alone, after what was batched before it.
        }
        let len = encode::uint_len(channel) + encode::uint_len(message_type) + body_len;
        if len >= LARGE_FRAME {
            // Its own buffer, recycled once sent (see `recycle`).
            let mut buf = match self.spare.iter().position(|b| b.capacity() >= len) {
                Some(i) => self.spare.swap_remove(i),
                None => BytesMut::with_capacity(len),
            };
            encode::uint(&mut buf, channel);
            encode::uint(&mut buf, message_type);
            body(&mut buf);
            debug_assert_eq!(buf.len(), len, "body length disagrees");
            self.tx.push_back(TxFrame::Owned(buf.freeze()));
            self.tx_bytes += len;
            return;
        }
        if self.arena.capacity() - self.arena.len() < len {
            self.renew_arena(len);
        }
        let start = self.arena.len();
        encode::uint(&mut self.arena, channel);
        encode::uint(&mut self.arena, message_type);
        body(&mut self.arena);
        debug_assert_eq!(self.arena.len() - start, len, "body length disagrees");
        self.tx.push_back(TxFrame::Arena(len));
        self.tx_bytes += len;
    }

    /// Starts a fresh arena with room for `len` bytes. Frames still waiting in the old one
    /// become their own `Bytes` (no copy); growing the arena in place would copy them.
    fn renew_arena(&mut self, len: usize) {
        for frame in self.tx.iter_mut() {
            if let TxFrame::Arena(n) = *frame {
                *frame = TxFrame::Owned(self.arena.split_to(n).freeze());
            }
        }
        debug_assert!(self.arena.is_empty());
        // Reuses the allocation in place when every frame cut from it is gone, else
        // allocates (with nothing to copy).
        self.arena.reserve(len.max(TX_CHUNK));
    }

    /// Hands back the buffer of a large frame from [`Mux::poll_transmit`] once it is sent
    /// (`Bytes::try_into_mut` gives it back when nothing else holds it), so that the next
    /// large frames reuse its memory instead of fresh pages. At most [`SPARE_BUFFERS`] of
    /// [`LARGE_FRAME`] to [`MAX_SPARE_CAPACITY`] bytes are kept; others are dropped.
    pub fn recycle(&mut self, mut buf: BytesMut) {
        let cap = buf.capacity();
        if (LARGE_FRAME..=MAX_SPARE_CAPACITY).contains(&cap) && self.spare.len() < SPARE_BUFFERS {
            buf.clear();
            self.spare.push(buf);
        }
    }

    /// Drops the buffers kept for reuse (see [`Mux::recycle`]) and an empty frame arena. A
    /// driver calls this when the connection goes idle, so that a burst of large frames does
    /// not leave a connection holding up to [`SPARE_BUFFERS`] of them for the rest of its
    /// life.
    pub fn release_spares(&mut self) {
        self.spare = Vec::new();
        // The frame arena too, when no queued frame lives in it (frames already taken hold
        // their own reference to its memory).
        if self.arena.is_empty() && !self.tx.iter().any(|f| matches!(f, TxFrame::Arena(_))) {
            self.arena = BytesMut::new();
        }
    }

    /// Bytes held by the buffers kept for reuse.
    pub fn spare_capacity(&self) -> usize {
        self.spare.iter().map(BytesMut::capacity).sum()
    }

    fn flush_batch(&mut self) {
        if let Some(frame) = self.batch.take() {
            trace!(len = frame.len(), "batch queued");
            self.tx_bytes += frame.len();
            self.tx.push_back(TxFrame::Owned(frame.freeze()));
        }
    }
}

#[cfg(test)]
mod tests;
