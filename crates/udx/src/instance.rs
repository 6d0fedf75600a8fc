//! [`Udx`]: a UDX instance (libudx `udx_t`): sockets that share one stream table and one
//! driver task.
//!
//! - The instance's state lives behind one lock ([`Shared`]): the stream table (streams are
//!   looked up by id per instance, as libudx `udx->streams_by_id`), the sockets with their
//!   owner-datagram queues and counters, the driver's dirty list and timer heap.
//! - A stream is connected on one socket of the instance ([`Slot::socket`]) and can move to
//!   another (`change_remote_via`, or its firewall's [`FirewallDecision::Connect`]). Its
//!   transmits go out on its current socket.
//! - A stream holds a reference on each socket it uses (the one it was created from while it
//!   is unconnected, its current one, and the previous one until a change is acknowledged),
//!   released when it finishes. A socket closes when it has no handle and no such reference,
//!   or on [`UdxSocket::close`].
//! - One driver task per instance ([`crate::driver`]) polls every socket; it is spawned by
//!   the first bind and ends when the last socket closed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Wake, Waker};
use std::time::Instant;

use crate::config::{SocketConfig, StreamConfig};
use crate::core::{classify, Event, Route, Stream};
use crate::driver::{Driver, Relays};
use crate::error::Error;
use crate::socket::{SocketId, SocketIo, SocketStats, UdxSocket};
use crate::stream::UdxStream;
use crate::wire::MAX_DATAGRAM;

/// Most sockets one instance holds at once. A birthday-paradox holepunch opens about 256;
/// the cap keeps a runaway caller from exhausting file descriptors through one instance.
/// [`Udx::bind`] fails with [`Error::TooManySockets`] beyond it.
pub const MAX_SOCKETS: usize = 1024;

/// Packets a write to an idle stream sends from the writer's task (see [`send_inline`]);
/// the rest waits for the driver.
const INLINE_PACKETS: usize = 4;

/// What a stream's firewall decides about a packet that arrives on a socket other than the
/// stream's current one (for an unconnected stream: any packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirewallDecision {
    /// Drop the packet (what an unconnected stream without a firewall does).
    Drop,
    /// Process it; the stream stays as it is (an unconnected one stays unconnected and its
    /// ACKs wait for `connect`; a connected one keeps its socket and remote).
    Accept,
    /// Connect the stream on the arrival socket to the packet's source with this remote id,
    /// then process the packet (hyperdht's firewall does this). For a stream that is
    /// connected already, this moves it: its remote becomes the arrival socket and the
    /// packet's source (as `change_remote_via`), so switching to a punched path on the first
    /// packet that arrives there is one decision taken inside the driver.
    Connect {
        /// The peer's stream id.
        remote_id: u32,
    },
}

/// A stream's firewall (libudx `udx_stream_firewall`): called with the socket a packet
/// arrived on and the packet's source, for every packet that arrives on a socket other than
/// the stream's current one (unconnected streams have none, so they always ask).
///
/// It runs inside the driver with the instance's lock held: it must decide from what it
/// captured and must not call back into the stream or its sockets.
pub type Firewall = Arc<dyn Fn(SocketId, SocketAddr) -> FirewallDecision + Send + Sync>;

/// Identity hasher for stream and socket ids (random or sequential u32s chosen by us).
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(crate) type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// A stream's state inside the instance.
pub(crate) struct Slot {
    pub(crate) stream: Stream,
    pub(crate) read_waker: Option<Waker>,
    pub(crate) write_waker: Option<Waker>,
    pub(crate) message_waker: Option<Waker>,
    pub(crate) change_waker: Option<Waker>,
    pub(crate) connect_waker: Option<Waker>,
    pub(crate) flush_waker: Option<Waker>,
    pub(crate) close_waker: Option<Waker>,
    /// A [`StreamControl::closed`](crate::StreamControl::closed) waiter (apart from the
    /// application's, so neither takes the other's place).
    pub(crate) control_close_waker: Option<Waker>,
    pub(crate) firewall: Option<Firewall>,
    /// The application's handle exists.
    pub(crate) handle_alive: bool,
    /// Queued in `State::dirty`.
    dirty: bool,
    /// Deadline we pushed to the timer heap.
    armed: Option<Instant>,
    /// The socket `UdxSocket::create_stream` made it on: `connect` without a socket uses
    /// it. Referenced until the stream connects.
    pub(crate) home: Option<SocketId>,
    /// The socket it is connected on: its transmits go out there, and packets arriving on
    /// any other socket ask its firewall.
    pub(crate) socket: Option<SocketId>,
    /// The socket before a move, kept open until everything sent before the move is
    /// acknowledged (udx-native keeps `_previousSocket` the same way).
    pub(crate) prev_socket: Option<SocketId>,
    /// The socket references above were released (the stream finished).
    refs_released: bool,
    /// The stream whose peer gets our packets (libudx `relay_to`).
    pub(crate) relay_to: Option<u32>,
    /// Streams relaying to this one (libudx `relaying_streams`): destroyed when it closes.
    pub(crate) relaying: Vec<u32>,
    /// Packets for `relay_to` that arrived while it was not connected yet (its peer had not
    /// sent its first packet): forwarded once it connects. libudx drops them, and the
    /// sender's retransmission timer (about a second) pays for it.
    pub(crate) held: std::collections::VecDeque<Vec<u8>>,
    /// The close was seen by `settle` (relays unlinked, previous socket released).
    close_handled: bool,
}

impl Slot {
    fn new(stream: Stream, home: Option<SocketId>) -> Self {
        Slot {
            stream,
            read_waker: None,
            write_waker: None,
            message_waker: None,
            change_waker: None,
            connect_waker: None,
            flush_waker: None,
            close_waker: None,
            control_close_waker: None,
            firewall: None,
            handle_alive: true,
            dirty: false,
            armed: None,
            home,
            socket: None,
            prev_socket: None,
            refs_released: false,
            relay_to: None,
            relaying: Vec::new(),
            held: std::collections::VecDeque::new(),
            close_handled: false,
        }
    }

    /// Moves every waiting task's waker into `out` (the stream closed, or its socket did).
    fn take_all_wakers(&mut self, out: &mut Vec<Waker>) {
        out.extend(
            [
                self.read_waker.take(),
                self.write_waker.take(),
                self.message_waker.take(),
                self.change_waker.take(),
                self.flush_waker.take(),
                self.close_waker.take(),
                self.control_close_waker.take(),
                self.connect_waker.take(),
            ]
            .into_iter()
            .flatten(),
        );
    }

    /// Queued for the driver.
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Makes `sock` the stream's current socket (it was connected or moved there). With
    /// `keep_prev`, the old one stays referenced until the move is acknowledged.
    pub(crate) fn attach(&mut self, sockets: &mut Sockets, sock: SocketId, keep_prev: bool) {
        if self.refs_released {
            return;
        }
        if let Some(h) = self.home.take() {
            sockets.drop_ref(h);
        }
        if self.socket == Some(sock) {
            return;
        }
        sockets.add_ref(sock);
        if let Some(old) = self.socket.replace(sock) {
            if keep_prev {
                if let Some(p) = self.prev_socket.replace(old) {
                    sockets.drop_ref(p);
                }
            } else {
                sockets.drop_ref(old);
            }
        }
        if self.prev_socket == Some(sock) {
            // Moved back before the earlier move was acknowledged.
            self.prev_socket = None;
            sockets.drop_ref(sock);
        }
    }

    /// Releases every socket reference (the stream finished).
    fn release_refs(&mut self, sockets: &mut Sockets) {
        if self.refs_released {
            return;
        }
        self.refs_released = true;
        for s in [self.home.take(), self.socket, self.prev_socket.take()]
            .into_iter()
            .flatten()
        {
            sockets.drop_ref(s);
        }
    }

    /// True if the stream uses socket `sock` (connected there, or made there and
    /// unconnected).
    pub(crate) fn is_on(&self, sock: SocketId) -> bool {
        !self.refs_released && (self.socket == Some(sock) || self.home == Some(sock))
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("stream", &self.stream.local_id())
            .field("socket", &self.socket)
            .field("handle_alive", &self.handle_alive)
            .finish_non_exhaustive()
    }
}

/// One socket's part of the instance state.
#[derive(Debug)]
pub(crate) struct SocketEntry {
    pub(crate) io: Arc<SocketIo>,
    /// Datagrams for the owner (`recv_datagram`), bounded by `datagram_cap`.
    pub(crate) datagrams: VecDeque<(Vec<u8>, SocketAddr)>,
    datagram_cap: usize,
    pub(crate) datagram_waker: Option<Waker>,
    /// Live `UdxSocket` handles.
    pub(crate) handles: usize,
    /// References held by streams (see [`Slot`]).
    stream_refs: usize,
    /// `close()` was called: no new streams, the socket goes once its streams are done.
    pub(crate) closing: bool,
    pub(crate) stats: SocketStats,
}

/// The instance's sockets.
#[derive(Debug, Default)]
pub(crate) struct Sockets {
    map: IdMap<SocketEntry>,
    /// Next id to hand out (ids are not reused while the instance lives).
    next_id: u32,
    /// Some socket may be ready to close (a handle or stream reference went away, or
    /// `close()` was called): the driver looks at them on its next pass.
    pub(crate) maybe_close: bool,
}

impl Sockets {
    pub(crate) fn get(&self, id: SocketId) -> Option<&SocketEntry> {
        self.map.get(&id.0)
    }

    pub(crate) fn get_mut(&mut self, id: SocketId) -> Option<&mut SocketEntry> {
        self.map.get_mut(&id.0)
    }

    /// The socket exists and is not closing.
    pub(crate) fn is_open(&self, id: SocketId) -> bool {
        self.get(id).is_some_and(|e| !e.closing)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn add_ref(&mut self, id: SocketId) {
        if let Some(e) = self.get_mut(id) {
            e.stream_refs += 1;
        }
    }

    fn drop_ref(&mut self, id: SocketId) {
        if let Some(e) = self.get_mut(id) {
            e.stream_refs = e.stream_refs.saturating_sub(1);
            if e.stream_refs == 0 {
                self.maybe_close = true;
            }
        }
    }

    /// Sockets that should close now: closing or without handles, and no stream uses them.
    pub(crate) fn closable(&self) -> Vec<SocketId> {
        self.map
            .values()
            .filter(|e| (e.closing || e.handles == 0) && e.stream_refs == 0)
            .map(|e| e.io.id)
            .collect()
    }

    /// Removes a socket: its final counters stay readable through its handles, whoever
    /// waits for its datagrams is woken (and sees it closed).
    pub(crate) fn remove(
        &mut self,
        id: SocketId,
        wakers: &mut Vec<Waker>,
    ) -> Option<Arc<SocketIo>> {
        let mut e = self.map.remove(&id.0)?;
        e.io.set_final_stats(e.stats.clone());
        wakers.extend(e.datagram_waker.take());
        tracing::info!(local_addr = %e.io.local_addr, socket = %id, "udx socket closed");
        Some(e.io)
    }

    pub(crate) fn ids(&self) -> Vec<SocketId> {
        self.map.values().map(|e| e.io.id).collect()
    }
}

/// Everything the driver and the handles share, behind one lock.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) streams: IdMap<Slot>,
    pub(crate) sockets: Sockets,
    pub(crate) dirty: Vec<u32>,
    pub(crate) timers: BinaryHeap<Reverse<(Instant, u32)>>,
    pub(crate) driver_waker: Option<Waker>,
    pub(crate) kicked: bool,
    /// The deadline the driver's timer is armed for (`None`: not armed); a stream deadline
    /// set outside the driver only needs a wake-up when it is earlier.
    pub(crate) sleep_at: Option<Instant>,
    /// A driver task exists (spawned by a bind, cleared when it ends).
    pub(crate) driver_running: bool,
}

/// What to wake once the lock is released after a change to a stream.
#[must_use]
pub(crate) enum Nudge {
    /// Nothing.
    None,
    /// The driver task.
    Driver(Waker),
    /// Without a driver the change was settled in place: these tasks.
    Wakers(Vec<Waker>),
}

impl Nudge {
    pub(crate) fn wake(self) {
        match self {
            Nudge::None => {}
            Nudge::Driver(w) => w.wake(),
            Nudge::Wakers(ws) => ws.into_iter().for_each(Waker::wake),
        }
    }
}

impl State {
    /// Queues a stream for the driver; returns what to wake after unlocking. Without a
    /// driver (an instance with no socket), its events are settled here instead.
    pub(crate) fn touch(&mut self, id: u32) -> Nudge {
        if !self.driver_running {
            let mut wakers = Vec::new();
            let now = Instant::now();
            settle(self, id, now, &mut wakers);
            while let Some(other) = self.dirty.pop() {
                settle(self, other, now, &mut wakers);
            }
            return Nudge::Wakers(wakers);
        }
        if let Some(slot) = self.streams.get_mut(&id) {
            if !slot.dirty {
                slot.dirty = true;
                self.dirty.push(id);
            }
        }
        match self.kick() {
            Some(w) => Nudge::Driver(w),
            None => Nudge::None,
        }
    }

    pub(crate) fn kick(&mut self) -> Option<Waker> {
        self.kicked = true;
        self.driver_waker.take()
    }

    fn mark_dirty(&mut self, id: u32) {
        if let Some(slot) = self.streams.get_mut(&id) {
            if !slot.dirty {
                slot.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    /// Inserts a new stream (the caller checked the id is free).
    fn insert(&mut self, id: u32, config: StreamConfig, home: Option<SocketId>) {
        if let Some(h) = home {
            self.sockets.add_ref(h);
        }
        self.streams
            .insert(id, Slot::new(Stream::new(id, config, Instant::now()), home));
    }

    /// A fresh random id no stream of the instance has.
    fn fresh_id(&self) -> u32 {
        loop {
            let id: u32 = rand::random();
            if !self.streams.contains_key(&id) {
                break id;
            }
        }
    }
}

/// Sockets whose readiness fired, for the driver to poll. Each socket's readiness waker
/// ([`SocketWake`]) queues its id here and wakes the driver task, so a driver with hundreds
/// of sockets polls only those that became ready.
#[derive(Debug, Default)]
pub(crate) struct ReadyQueue {
    /// Something is queued (checked without the lock on every driver pass).
    pending: AtomicBool,
    inner: Mutex<ReadyInner>,
}

#[derive(Debug, Default)]
pub(crate) struct ReadyInner {
    /// Sockets whose readiness fired.
    pub(crate) ready: Vec<SocketId>,
    /// Sockets bound since the driver last looked (it polls them at once).
    pub(crate) added: Vec<Arc<SocketIo>>,
    /// The driver task's waker.
    waker: Option<Waker>,
}

impl ReadyQueue {
    fn lock(&self) -> MutexGuard<'_, ReadyInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores the driver's waker, and if anything is queued swaps the queues with the
    /// driver's (empty) ones. Returns true if it did.
    pub(crate) fn take(
        &self,
        waker: Option<&Waker>,
        ready: &mut Vec<SocketId>,
        added: &mut Vec<Arc<SocketIo>>,
    ) -> bool {
        let pending = self.pending.swap(false, Ordering::AcqRel);
        if !pending && waker.is_none() {
            return false;
        }
        let mut r = self.lock();
        if let Some(w) = waker {
            if !r.waker.as_ref().is_some_and(|x| x.will_wake(w)) {
                r.waker = Some(w.clone());
            }
        }
        if pending || !r.ready.is_empty() || !r.added.is_empty() {
            std::mem::swap(&mut r.ready, ready);
            std::mem::swap(&mut r.added, added);
            return true;
        }
        false
    }

    fn push(&self, f: impl FnOnce(&mut ReadyInner)) {
        let waker = {
            let mut r = self.lock();
            f(&mut r);
            self.pending.store(true, Ordering::Release);
            r.waker.clone()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Forgets everything (the driver ended).
    pub(crate) fn clear(&self) {
        let mut r = self.lock();
        r.ready.clear();
        r.added.clear();
        r.waker = None;
    }
}

/// A socket's readiness waker: queues the socket on the [`ReadyQueue`].
#[derive(Debug)]
pub(crate) struct SocketWake {
    id: SocketId,
    /// Queued and not yet taken by the driver (one entry per readiness event).
    queued: AtomicBool,
    ready: Weak<ReadyQueue>,
}

impl SocketWake {
    /// The driver took the socket off the queue: the next readiness queues it again.
    pub(crate) fn taken(&self) {
        self.queued.store(false, Ordering::Release);
    }
}

impl Wake for SocketWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(q) = self.ready.upgrade() {
            q.push(|r| r.ready.push(self.id));
        }
    }
}

/// The instance state shared by its handles and its driver.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) ready: Arc<ReadyQueue>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A UDX instance (libudx `udx_t`, udx-native's `UDX`): a set of UDP sockets that share one
/// stream table and one driver task.
///
/// Stream ids are unique per instance and a packet is matched to its stream by id whatever
/// socket it arrives on, so a stream can be connected on one socket and move to another
/// ([`UdxStream::change_remote_via`]), and a stream created unconnected
/// ([`Udx::create_stream`]) can be connected by its firewall on whichever socket its peer's
/// first packet reaches (holepunching). [`UdxSocket::bind`] is a shorthand for an instance
/// with one socket.
///
/// Cheap to clone (`Send + Sync`); the instance lives while any of its handles, sockets or
/// streams does. Binding needs a tokio runtime: the first socket starts the driver task on
/// it, and the driver ends once the instance has no socket left.
#[derive(Clone, Debug, Default)]
pub struct Udx {
    pub(crate) shared: Arc<Shared>,
}

impl Udx {
    /// A new instance without sockets (no task runs until the first bind).
    pub fn new() -> Udx {
        Udx::default()
    }

    /// Binds a socket (IPv4 or IPv6) in this instance with default settings.
    pub async fn bind(&self, addr: SocketAddr) -> Result<UdxSocket, Error> {
        self.bind_with(addr, SocketConfig::default()).await
    }

    /// [`Udx::bind`] with settings. Fails with [`Error::TooManySockets`] when the instance
    /// holds [`MAX_SOCKETS`] already. The new socket is polled by the instance's driver at
    /// once (the driver is started on the current tokio runtime if none runs).
    pub async fn bind_with(
        &self,
        addr: SocketAddr,
        config: SocketConfig,
    ) -> Result<UdxSocket, Error> {
        // The id is reserved first, so the socket is made outside the lock.
        let id = {
            let mut st = self.shared.lock();
            if st.sockets.len() >= MAX_SOCKETS {
                return Err(Error::TooManySockets { max: MAX_SOCKETS });
            }
            loop {
                let id = SocketId(st.sockets.next_id);
                st.sockets.next_id = st.sockets.next_id.wrapping_add(1);
                if st.sockets.get(id).is_none() {
                    break id;
                }
            }
        };
        let wake = Arc::new(SocketWake {
            id,
            queued: AtomicBool::new(false),
            ready: Arc::downgrade(&self.shared.ready),
        });
        let io = SocketIo::bind(addr, &config, id, wake)?;
        let mut st = self.shared.lock();
        let st = &mut *st;
        if st.sockets.len() >= MAX_SOCKETS {
            return Err(Error::TooManySockets { max: MAX_SOCKETS });
        }
        let io = Arc::new(io);
        st.sockets.map.insert(
            id.0,
            SocketEntry {
                io: io.clone(),
                datagrams: VecDeque::new(),
                datagram_cap: config.datagram_queue,
                datagram_waker: None,
                handles: 1,
                stream_refs: 0,
                closing: false,
                stats: SocketStats::default(),
            },
        );
        if !st.driver_running {
            st.driver_running = true;
            tokio::spawn(Driver::new(self.shared.clone()).run());
        }
        // Under the state lock, so a driver that ends (it checks under the same lock) never
        // misses it.
        let added = io.clone();
        self.shared.ready.push(move |r| r.added.push(added));
        tracing::info!(
            local_addr = %io.local_addr,
            socket = %id,
            gso = io.gso,
            gro = io.udp.gro_segments(),
            "udx socket bound"
        );
        Ok(UdxSocket {
            shared: self.shared.clone(),
            io,
        })
    }

    /// Creates an unconnected stream with a fresh random id (unique in the instance, as
    /// hyperdht draws them). It belongs to no socket until it is connected, by
    /// [`UdxStream::connect_via`] or by its firewall ([`UdxStream::set_firewall`]) on the
    /// socket its peer's first packet arrives on.
    pub fn create_stream(&self, config: StreamConfig) -> Result<UdxStream, Error> {
        let mut st = self.shared.lock();
        let id = st.fresh_id();
        st.insert(id, config, None);
        Ok(UdxStream::new(self.shared.clone(), id))
    }

    /// [`Udx::create_stream`] with a chosen id (hyperdht exchanges ids in its handshake).
    pub fn create_stream_with_id(&self, id: u32, config: StreamConfig) -> Result<UdxStream, Error> {
        let mut st = self.shared.lock();
        if st.streams.contains_key(&id) {
            return Err(Error::IdInUse(id));
        }
        st.insert(id, config, None);
        Ok(UdxStream::new(self.shared.clone(), id))
    }

    /// Stream ids registered in the instance (live or lingering in TIME_WAIT).
    pub fn stream_count(&self) -> usize {
        self.shared.lock().streams.len()
    }

    /// Sockets open in the instance (closing ones included until they are gone).
    pub fn socket_count(&self) -> usize {
        self.shared.lock().sockets.len()
    }

    /// True if both handles name the same instance.
    pub fn same(&self, other: &Udx) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

/// Creates a stream made on socket `home` (`UdxSocket::create_stream`).
pub(crate) fn create_on(
    shared: &Arc<Shared>,
    home: SocketId,
    id: Option<u32>,
    config: StreamConfig,
) -> Result<UdxStream, Error> {
    let mut st = shared.lock();
    if !st.sockets.is_open(home) {
        return Err(Error::SocketClosed);
    }
    let id = match id {
        Some(id) if st.streams.contains_key(&id) => return Err(Error::IdInUse(id)),
        Some(id) => id,
        None => st.fresh_id(),
    };
    st.insert(id, config, Some(home));
    Ok(UdxStream::new(shared.clone(), id))
}

/// Closes socket `sock` (`UdxSocket::close`): its streams are destroyed (a DESTROY goes to
/// each connected peer), its pending owner datagrams dropped; streams elsewhere are not
/// touched. The driver removes it once those streams are done.
pub(crate) fn close_socket(shared: &Shared, sock: SocketId) {
    let mut wakers = Vec::new();
    let nudge = {
        let mut st = shared.lock();
        let st = &mut *st;
        let Some(e) = st.sockets.get_mut(sock) else {
            return;
        };
        if e.closing {
            return;
        }
        e.closing = true;
        e.datagrams.clear();
        wakers.extend(e.datagram_waker.take());
        let now = Instant::now();
        let mut on: Vec<u32> = Vec::new();
        for (id, slot) in st.streams.iter_mut() {
            if slot.is_on(sock) {
                slot.stream.destroy(now);
                on.push(*id);
            } else if slot.prev_socket == Some(sock) {
                slot.prev_socket = None;
                st.sockets.drop_ref(sock);
            }
        }
        for id in on {
            st.mark_dirty(id);
        }
        st.sockets.maybe_close = true;
        match st.kick() {
            Some(w) => Nudge::Driver(w),
            None => Nudge::None,
        }
    };
    nudge.wake();
    wakers.into_iter().for_each(Waker::wake);
}

/// Sends up to [`INLINE_PACKETS`] packets of stream `id` right away from the calling task,
/// for a write to a stream that was idle ([`Stream::is_send_idle`]): a lone message then
/// costs no hop through the driver task (which may be on another thread). Then does the
/// driver's bookkeeping for the stream (events, timer). Returns true if the driver must
/// run: more to send, or a deadline earlier than its timer.
///
/// The stream had nothing in flight or queued, so no packet of its own is staged in the
/// driver and order is kept. A packet the kernel refuses (full socket buffer) counts as a
/// send error and is recovered as a loss, as one dropped on the path would be.
pub(crate) fn send_inline(st: &mut State, id: u32, now: Instant, wakers: &mut Vec<Waker>) -> bool {
    let State {
        streams, sockets, ..
    } = st;
    let Some(slot) = streams.get_mut(&id) else {
        return false;
    };
    let Some(entry) = slot.socket.and_then(|s| sockets.get_mut(s)) else {
        return true;
    };
    if entry.closing {
        return true;
    }
    let mut buf = [0u8; MAX_DATAGRAM];
    let (mut sent, mut errors) = (0, 0);
    {
        let io = &*entry.io;
        let _ttl = io.send_guard();
        for _ in 0..INLINE_PACKETS {
            let Some(t) = slot.stream.poll_transmit(now, &mut buf, 1) else {
                break;
            };
            let transmit = quinn_udp::Transmit {
                destination: t.destination,
                ecn: None,
                contents: &buf[..t.size],
                segment_size: None,
                src_ip: None,
            };
            match io.udp.send((&io.io).into(), &transmit) {
                Ok(()) => sent += 1,
                Err(e) => {
                    tracing::debug!(error = %e, dest = %t.destination, "udx inline send failed");
                    errors += 1;
                }
            }
        }
    }
    entry.stats.datagrams_tx += sent;
    entry.stats.send_errors += errors;
    if slot.stream.wants_transmit() {
        return true;
    }
    match settle(st, id, now, wakers) {
        Some(at) => st.sleep_at.is_none_or(|armed| at < armed),
        None => false,
    }
}

/// The driver's bookkeeping after a stream's transmits were drained: wakers for its events,
/// its socket references and relays once it closed or finished, removal once finished and
/// dropped, its next deadline on the timer heap. Returns the deadline if a new one was
/// pushed.
pub(crate) fn settle(
    st: &mut State,
    id: u32,
    now: Instant,
    wakers: &mut Vec<Waker>,
) -> Option<Instant> {
    let State {
        streams,
        sockets,
        timers,
        dirty,
        kicked,
        ..
    } = st;
    let slot = streams.get_mut(&id)?;
    slot.dirty = false;
    if collect_events(slot, wakers) {
        if let Some(p) = slot.prev_socket.take() {
            sockets.drop_ref(p);
        }
    }
    if slot.stream.is_closed() && !slot.close_handled {
        slot.close_handled = true;
        if let Some(p) = slot.prev_socket.take() {
            sockets.drop_ref(p);
        }
        let relay_to = slot.relay_to.take();
        let relaying = std::mem::take(&mut slot.relaying);
        if let Some(b) = relay_to.and_then(|b| streams.get_mut(&b)) {
            b.relaying.retain(|&x| x != id);
        }
        // libudx: a stream that closes destroys the streams relaying to it (they have
        // nowhere to forward to); being relayed, they close without a DESTROY.
        for a in relaying {
            if let Some(s) = streams.get_mut(&a) {
                s.relay_to = None;
                s.stream.destroy(now);
                if !s.dirty {
                    s.dirty = true;
                    dirty.push(a);
                    *kicked = true;
                }
            }
        }
    }
    let slot = streams.get_mut(&id)?;
    if slot.stream.is_finished() {
        slot.release_refs(sockets);
        if !slot.handle_alive {
            streams.remove(&id);
            return None;
        }
    }
    let at = slot.stream.poll_timeout()?;
    if slot.armed.is_none_or(|a| at < a) {
        slot.armed = Some(at);
        timers.push(Reverse((at, id)));
        return Some(at);
    }
    None
}

/// Pops due timers and runs the streams' timeouts.
pub(crate) fn run_timers(st: &mut State, now: Instant) {
    let State {
        streams,
        timers,
        dirty,
        ..
    } = st;
    while let Some(Reverse((at, id))) = timers.peek().copied() {
        if at > now {
            break;
        }
        timers.pop();
        if let Some(slot) = streams.get_mut(&id) {
            if slot.armed == Some(at) {
                slot.armed = None;
                slot.stream.handle_timeout(now);
                if !slot.dirty {
                    slot.dirty = true;
                    dirty.push(id);
                }
            }
        }
    }
}

/// Packets a relayed stream holds for a target that is not connected yet (libudx holds
/// none); more are dropped, and the sender's retransmissions carry their data later.
pub const MAX_HELD_RELAY_PACKETS: usize = 32;

/// Stream `b` just connected: the packets the streams relaying to it held go out now.
fn release_held(streams: &mut IdMap<Slot>, sockets: &Sockets, b: u32, relays: &mut Relays) {
    let Some(target) = streams.get(&b) else {
        return;
    };
    let (Some((rid, raddr)), Some(bsock)) = (target.stream.remote(), target.socket) else {
        return;
    };
    if sockets.get(bsock).is_none() {
        return;
    }
    let sources = target.relaying.clone();
    for a in sources {
        let Some(src) = streams.get_mut(&a) else {
            continue;
        };
        for mut p in src.held.drain(..) {
            if p.len() >= 8 {
                p[4..8].copy_from_slice(&rid.to_le_bytes());
                relays.push_owned(p, bsock, raddr);
            }
        }
    }
}

/// Routes one datagram that arrived on socket `arrival`: to its stream (after the firewall
/// when it arrived on a socket other than the stream's), forwarded for a relayed stream, or
/// to the arrival socket's owner queue. `dgram` sits at `off` in the driver's receive
/// buffer; a relayed packet is rewritten in place and queued on `relays`.
pub(crate) fn dispatch(
    st: &mut State,
    now: Instant,
    dgram: &mut [u8],
    off: usize,
    from: SocketAddr,
    arrival: SocketId,
    relays: &mut Relays,
) {
    if let Route::Stream(id) = classify(dgram) {
        let State {
            streams,
            sockets,
            dirty,
            ..
        } = &mut *st;
        let mut newly_connected = false;
        if let Some(slot) = streams.get_mut(&id) {
            if !slot.stream.is_finished() {
                if slot.socket != Some(arrival) {
                    let connected = slot.stream.is_connected();
                    let decision = match &slot.firewall {
                        Some(f) => f(arrival, from),
                        // libudx: without a firewall a connected stream takes packets from
                        // any socket of its instance; an unconnected one drops them (as
                        // udx-native's default firewall does).
                        None if connected => FirewallDecision::Accept,
                        None => FirewallDecision::Drop,
                    };
                    match decision {
                        FirewallDecision::Drop => {
                            if let Some(e) = sockets.get_mut(arrival) {
                                e.stats.firewall_dropped += 1;
                            }
                            tracing::debug!(id, %from, socket = %arrival, "udx: packet dropped by the stream's firewall");
                            return;
                        }
                        FirewallDecision::Accept => {}
                        FirewallDecision::Connect { remote_id } => {
                            if !sockets.is_open(arrival) {
                                return;
                            }
                            // Its waiters are woken with the batch's other wakers.
                            let done = if connected {
                                slot.stream.change_remote(now, remote_id, from).is_ok()
                            } else {
                                slot.stream.connect(now, remote_id, from).is_ok()
                            };
                            if done {
                                slot.attach(sockets, arrival, connected);
                                newly_connected = !connected && !slot.relaying.is_empty();
                            }
                        }
                    }
                }
                if !slot.dirty {
                    slot.dirty = true;
                    dirty.push(id);
                }
                let Some(target) = slot.relay_to else {
                    slot.stream.handle_packet(now, dgram);
                    return;
                };
                slot.stream.handle_relayed(now, dgram);
                // libudx `relay_packet`: forwarded unchanged but for the stream id, to the
                // target's remote on the target's socket. While the target is unconnected
                // a few packets are held for it (libudx drops them).
                let ready = streams.get(&target).and_then(|b| {
                    let (rid, raddr) = b.stream.remote()?;
                    let bsock = b.socket?;
                    (!b.stream.is_closed()).then_some((rid, raddr, bsock))
                });
                match ready {
                    Some((rid, raddr, bsock)) => {
                        if let Some(e) = sockets.get(bsock) {
                            dgram[4..8].copy_from_slice(&rid.to_le_bytes());
                            relays.push(off, dgram.len(), bsock, raddr, e.io.gso);
                        }
                    }
                    None => {
                        if let Some(a) = streams.get_mut(&id) {
                            if a.held.len() < MAX_HELD_RELAY_PACKETS {
                                a.held.push_back(dgram.to_vec());
                            }
                        }
                    }
                }
                if newly_connected {
                    release_held(streams, sockets, id, relays);
                }
                return;
            }
        }
        if let Some(e) = st.sockets.get_mut(arrival) {
            e.stats.unknown_stream += 1;
        }
    }
    let Some(e) = st.sockets.get_mut(arrival) else {
        return;
    };
    if e.closing {
        return;
    }
    if e.datagrams.len() >= e.datagram_cap {
        e.stats.owner_dropped += 1;
        tracing::debug!(%from, "udx: owner datagram queue full, dropped");
        return;
    }
    e.stats.to_owner += 1;
    e.datagrams.push_back((dgram.to_vec(), from));
    if let Some(w) = e.datagram_waker.take() {
        w.wake();
    }
}

/// Moves the wakers of the stream's events to `wakers`; true if its remote change was
/// acknowledged ([`Event::RemoteChanged`]).
fn collect_events(slot: &mut Slot, wakers: &mut Vec<Waker>) -> bool {
    let mut changed = false;
    while let Some(e) = slot.stream.poll_event() {
        let w = match e {
            Event::Readable => slot.read_waker.take(),
            Event::Writable => slot.write_waker.take(),
            Event::Message => slot.message_waker.take(),
            Event::RemoteChanged => {
                changed = true;
                slot.change_waker.take()
            }
            Event::Flushed => slot.flush_waker.take(),
            Event::Closed => {
                slot.take_all_wakers(wakers);
                None
            }
        };
        if let Some(w) = w {
            wakers.push(w);
        }
    }
    if slot.stream.is_connected() {
        if let Some(w) = slot.connect_waker.take() {
            wakers.push(w);
        }
    }
    changed
}

/// The driver went away (its instance has no socket left, or its runtime shut down): every
/// socket still there is closed for its handles, the streams on them are dropped, and
/// whoever waits on either is woken (and sees them closed). Unconnected streams of the
/// instance stay.
pub(crate) fn driver_gone(shared: &Shared) {
    let mut wakers: Vec<Waker> = Vec::new();
    {
        let mut st = shared.lock();
        let st = &mut *st;
        st.driver_running = false;
        st.driver_waker = None;
        st.sleep_at = None;
        for sid in st.sockets.ids() {
            st.sockets.remove(sid, &mut wakers);
        }
        st.streams.retain(|_, slot| {
            let attached = !slot.refs_released
                && (slot.socket.is_some() || slot.home.is_some() || slot.prev_socket.is_some());
            if attached {
                slot.take_all_wakers(&mut wakers);
            } else {
                slot.dirty = false;
                slot.armed = None;
            }
            !attached
        });
        st.dirty.clear();
        st.timers.clear();
        st.sockets.maybe_close = false;
    }
    shared.ready.clear();
    for w in wakers {
        w.wake();
    }
}
