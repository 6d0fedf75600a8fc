//! The async shell: a UDP socket whose one driver task runs every stream on it.
//!
//! - [`UdxSocket`] owns a tokio UDP socket and spawns one driver task at bind.
//! - The driver receives in batches (`recvmmsg`, GRO where available, via `quinn-udp`),
//!   demultiplexes each datagram ([`crate::core::classify`]): packets for live streams go to
//!   their [`Stream`] cores in place, everything else is queued for the owner
//!   ([`UdxSocket::recv_datagram`]). It then drains the cores' transmits into a staging buffer
//!   and sends them (GSO batches where available), re-arms one timer for the earliest stream
//!   deadline, and wakes the application tasks whose streams became readable or writable.
//! - Application tasks ([`UdxStream`]) lock the shared state only to copy bytes in or out of
//!   their stream's buffers and to nudge the driver: no channel, no message per packet.
//!
//! Backpressure: stream writes wait when the stream's send buffer is full; the owner's
//! datagram queue is bounded ([`SocketConfig::with_datagram_queue`]) and drops (and counts)
//! datagrams when the owner does not keep up, as a kernel socket buffer would.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::future::{poll_fn, Future};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use quinn_udp::{RecvMeta, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::config::{SocketConfig, StreamConfig};
use crate::core::{classify, Event, Route, Stream};
use crate::error::Error;
use crate::stream::UdxStream;
use crate::wire::MAX_DATAGRAM;

/// Largest GSO batch (UDP payload limit minus headroom).
const MAX_GSO_BYTES: usize = 65_000;
/// Bytes staged per driver pass before sending.
const STAGE_BYTES: usize = 4 * MAX_GSO_BYTES;
/// Receive batches per driver pass before yielding to other tasks.
const RECV_BATCHES_PER_PASS: usize = 4;
/// Packets a write to an idle stream sends from the writer's task (see
/// [`Inner::send_inline`]); the rest waits for the driver.
const INLINE_PACKETS: usize = 4;
/// Receive buffer per datagram without GRO (JS truncates beyond 2048 too).
const PLAIN_SLOT: usize = MAX_DATAGRAM;
/// Receive buffer per slot with GRO: the largest coalesced UDP payload.
const GRO_SLOT: usize = 65_536;

/// What a stream's firewall decides about a packet that arrives before it is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirewallDecision {
    /// Drop the packet (libudx's default for streams without a firewall).
    Drop,
    /// Process it; the stream stays unconnected (its ACKs wait for `connect`).
    Accept,
    /// Connect the stream to the packet's source with this remote id, then process it
    /// (hyperdht's firewall does this).
    Connect {
        /// The peer's stream id.
        remote_id: u32,
    },
}

/// A firewall for packets reaching a stream before it is connected (libudx
/// `udx_stream_firewall`): called with the packet's source address.
pub type Firewall = Arc<dyn Fn(SocketAddr) -> FirewallDecision + Send + Sync>;

/// Counters of a socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketStats {
    /// Datagrams received.
    pub datagrams_rx: u64,
    /// Datagrams sent (GSO segments counted one by one).
    pub datagrams_tx: u64,
    /// Datagrams handed to the owner.
    pub to_owner: u64,
    /// Datagrams for the owner dropped because its queue was full.
    pub owner_dropped: u64,
    /// UDX packets for unknown or closed stream ids (handed to the owner, as JS does).
    pub unknown_stream: u64,
    /// Packets dropped by a stream's firewall.
    pub firewall_dropped: u64,
    /// Send calls that failed.
    pub send_errors: u64,
}

/// Identity hasher for stream ids (random u32s chosen by us).
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

type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// A stream's state inside the socket.
pub(crate) struct Slot {
    pub(crate) stream: Stream,
    pub(crate) read_waker: Option<Waker>,
    pub(crate) write_waker: Option<Waker>,
    pub(crate) message_waker: Option<Waker>,
    pub(crate) change_waker: Option<Waker>,
    pub(crate) connect_waker: Option<Waker>,
    pub(crate) flush_waker: Option<Waker>,
    pub(crate) close_waker: Option<Waker>,
    pub(crate) firewall: Option<Firewall>,
    /// The application's handle exists.
    pub(crate) handle_alive: bool,
    /// Queued in `State::dirty`.
    dirty: bool,
    /// Deadline we pushed to the timer heap.
    armed: Option<Instant>,
}

impl Slot {
    /// Moves every waiting task's waker into `out` (the stream closed, or the socket did).
    fn take_all_wakers(&mut self, out: &mut Vec<Waker>) {
        out.extend(
            [
                self.read_waker.take(),
                self.write_waker.take(),
                self.message_waker.take(),
                self.change_waker.take(),
                self.flush_waker.take(),
                self.close_waker.take(),
                self.connect_waker.take(),
            ]
            .into_iter()
            .flatten(),
        );
    }
}

impl Slot {
    /// Queued for the driver.
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("stream", &self.stream.local_id())
            .field("handle_alive", &self.handle_alive)
            .finish_non_exhaustive()
    }
}

/// Everything the driver and the handles share, behind one lock.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) streams: IdMap<Slot>,
    dirty: Vec<u32>,
    timers: BinaryHeap<Reverse<(Instant, u32)>>,
    datagrams: VecDeque<(Vec<u8>, SocketAddr)>,
    datagram_cap: usize,
    datagram_waker: Option<Waker>,
    driver_waker: Option<Waker>,
    kicked: bool,
    /// The deadline the driver's timer is armed for (`None`: not armed); a stream deadline
    /// set outside the driver only needs a wake-up when it is earlier.
    sleep_at: Option<Instant>,
    /// Live `UdxSocket` and `UdxStream` handles.
    pub(crate) handles: usize,
    closing: bool,
    pub(crate) closed: bool,
    stats: SocketStats,
}

impl State {
    /// Queues a stream for the driver and returns the driver's waker to wake after unlocking.
    pub(crate) fn touch(&mut self, id: u32) -> Option<Waker> {
        if let Some(slot) = self.streams.get_mut(&id) {
            if !slot.dirty {
                slot.dirty = true;
                self.dirty.push(id);
            }
        }
        self.kick()
    }

    /// The socket is closing.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing
    }

    pub(crate) fn kick(&mut self) -> Option<Waker> {
        self.kicked = true;
        self.driver_waker.take()
    }
}

pub(crate) struct Inner {
    io: UdpSocket,
    udp: UdpSocketState,
    pub(crate) state: Mutex<State>,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends up to [`INLINE_PACKETS`] packets of stream `id` right away from the calling
    /// task, for a write to a stream that was idle ([`Stream::is_send_idle`]): a lone
    /// message then costs no hop through the driver task (which may be on another thread).
    /// Then does the driver's bookkeeping for the stream (events, timer). Returns true if
    /// the driver must run: more to send, or a deadline earlier than its timer.
    ///
    /// The stream had nothing in flight or queued, so no packet of its own is staged in the
    /// driver and order is kept. A packet the kernel refuses (full socket buffer) counts as
    /// a send error and is recovered as a loss, as one dropped on the path would be.
    pub(crate) fn send_inline(
        &self,
        st: &mut State,
        id: u32,
        now: Instant,
        wakers: &mut Vec<Waker>,
    ) -> bool {
        let Some(slot) = st.streams.get_mut(&id) else {
            return false;
        };
        let mut buf = [0u8; MAX_DATAGRAM];
        let (mut sent, mut errors) = (0, 0);
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
            match self.udp.send((&self.io).into(), &transmit) {
                Ok(()) => sent += 1,
                Err(e) => {
                    tracing::debug!(error = %e, dest = %t.destination, "udx inline send failed");
                    errors += 1;
                }
            }
        }
        let more = slot.stream.wants_transmit();
        st.stats.datagrams_tx += sent;
        st.stats.send_errors += errors;
        if more {
            return true;
        }
        match settle(st, id, wakers) {
            Some(at) => st.sleep_at.is_none_or(|armed| at < armed),
            None => false,
        }
    }
}

/// The driver's bookkeeping after a stream's transmits were drained: wakers for its
/// events, removal once finished and dropped, its next deadline on the timer heap. Returns
/// the deadline if a new one was pushed.
fn settle(st: &mut State, id: u32, wakers: &mut Vec<Waker>) -> Option<Instant> {
    let slot = st.streams.get_mut(&id)?;
    slot.dirty = false;
    collect_events(slot, wakers);
    if slot.stream.is_finished() && !slot.handle_alive {
        st.streams.remove(&id);
        return None;
    }
    let at = slot.stream.poll_timeout()?;
    if slot.armed.is_none_or(|a| at < a) {
        slot.armed = Some(at);
        st.timers.push(Reverse((at, id)));
        return Some(at);
    }
    None
}

/// A UDP socket carrying UDX streams and, on the same port, the owner's own datagrams
/// (dht-rpc, holepunch probes). Cheap to clone; the socket closes when every clone and every
/// stream is dropped (or on [`UdxSocket::close`]).
#[derive(Debug)]
pub struct UdxSocket {
    pub(crate) inner: Arc<Inner>,
}

impl Clone for UdxSocket {
    fn clone(&self) -> Self {
        self.inner.lock().handles += 1;
        UdxSocket {
            inner: self.inner.clone(),
        }
    }
}

impl Drop for UdxSocket {
    fn drop(&mut self) {
        let waker = {
            let mut st = self.inner.lock();
            st.handles -= 1;
            st.kick()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl UdxSocket {
    /// Binds a socket (IPv4 or IPv6) and starts its driver task on the current tokio runtime.
    pub async fn bind(addr: SocketAddr) -> Result<UdxSocket, Error> {
        Self::bind_with(addr, SocketConfig::default()).await
    }

    /// [`UdxSocket::bind`] with settings.
    pub async fn bind_with(addr: SocketAddr, config: SocketConfig) -> Result<UdxSocket, Error> {
        let domain = socket2::Domain::for_address(addr);
        let sock =
            socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        // Best effort: the kernel caps these.
        let _ = sock.set_recv_buffer_size(config.recv_buffer);
        let _ = sock.set_send_buffer_size(config.send_buffer);
        sock.set_nonblocking(true)?;
        sock.bind(&addr.into())?;
        let udp = UdpSocketState::new((&sock).into())?;
        let std_sock: std::net::UdpSocket = sock.into();
        let io = UdpSocket::from_std(std_sock)?;
        let local_addr = io.local_addr()?;
        let gso = if config.offload {
            udp.max_gso_segments().max(1)
        } else {
            1
        };
        let inner = Arc::new(Inner {
            io,
            udp,
            state: Mutex::new(State {
                streams: IdMap::default(),
                dirty: Vec::new(),
                timers: BinaryHeap::new(),
                datagrams: VecDeque::new(),
                datagram_cap: config.datagram_queue,
                datagram_waker: None,
                driver_waker: None,
                kicked: false,
                sleep_at: None,
                handles: 1,
                closing: false,
                closed: false,
                stats: SocketStats::default(),
            }),
            local_addr,
        });
        let driver = Driver::new(inner.clone(), &config, gso);
        tokio::spawn(driver.run());
        tracing::info!(%local_addr, gso, gro = inner.udp.gro_segments(), "udx socket bound");
        Ok(UdxSocket { inner })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Sends one raw datagram from this socket (the DHT's messages, holepunch probes). JS
    /// peers truncate datagrams beyond 2048 bytes.
    pub async fn send_to(&self, datagram: &[u8], to: SocketAddr) -> Result<(), Error> {
        self.inner.io.send_to(datagram, to).await?;
        Ok(())
    }

    /// Sends one raw datagram if the socket can take it now.
    ///
    /// This asks the kernel directly rather than tokio's readiness flag: on a socket that was
    /// just bound, tokio does not know yet that it is writable, and its `try_send_to` would
    /// fail with `WouldBlock` (a DHT's first bootstrap message would then wait for a retry).
    pub fn try_send_to(&self, datagram: &[u8], to: SocketAddr) -> Result<(), Error> {
        socket2::SockRef::from(&self.inner.io).send_to(datagram, &to.into())?;
        Ok(())
    }

    /// The next datagram that is not a packet for a live stream: dht-rpc messages,
    /// holepunch probes, and UDX packets for unknown ids (as in JS). `None` once the socket
    /// is closed. One consumer at a time.
    pub async fn recv_datagram(&self) -> Option<(Vec<u8>, SocketAddr)> {
        poll_fn(|cx| self.poll_recv_datagram(cx)).await
    }

    /// Polls for the next datagram for the owner (see [`UdxSocket::recv_datagram`]).
    pub fn poll_recv_datagram(&self, cx: &mut Context<'_>) -> Poll<Option<(Vec<u8>, SocketAddr)>> {
        let mut st = self.inner.lock();
        if let Some(d) = st.datagrams.pop_front() {
            return Poll::Ready(Some(d));
        }
        if st.closed {
            return Poll::Ready(None);
        }
        st.datagram_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Creates a stream with a fresh random id (unique on this socket, as hyperdht draws
    /// them). It is not connected: call [`UdxStream::connect`] once the remote is known.
    pub fn create_stream(&self, config: StreamConfig) -> Result<UdxStream, Error> {
        let mut st = self.inner.lock();
        if st.closing {
            return Err(Error::SocketClosed);
        }
        let id = loop {
            let id: u32 = rand::random();
            if !st.streams.contains_key(&id) {
                break id;
            }
        };
        Ok(self.insert(&mut st, id, config))
    }

    /// Creates a stream with a chosen id (hyperdht exchanges ids in its handshake).
    pub fn create_stream_with_id(&self, id: u32, config: StreamConfig) -> Result<UdxStream, Error> {
        let mut st = self.inner.lock();
        if st.closing {
            return Err(Error::SocketClosed);
        }
        if st.streams.contains_key(&id) {
            return Err(Error::IdInUse(id));
        }
        Ok(self.insert(&mut st, id, config))
    }

    fn insert(&self, st: &mut State, id: u32, config: StreamConfig) -> UdxStream {
        st.streams.insert(
            id,
            Slot {
                stream: Stream::new(id, config, Instant::now()),
                read_waker: None,
                write_waker: None,
                message_waker: None,
                change_waker: None,
                connect_waker: None,
                flush_waker: None,
                close_waker: None,
                firewall: None,
                handle_alive: true,
                dirty: false,
                armed: None,
            },
        );
        st.handles += 1;
        UdxStream::new(self.inner.clone(), id)
    }

    /// Stream ids currently registered (live or lingering).
    pub fn stream_count(&self) -> usize {
        self.inner.lock().streams.len()
    }

    /// Counters.
    pub fn stats(&self) -> SocketStats {
        self.inner.lock().stats.clone()
    }

    /// Closes the socket: every stream is destroyed (a DESTROY goes to each connected
    /// peer), pending owner datagrams are dropped, and the driver stops once those packets
    /// are out.
    pub fn close(&self) {
        let waker = {
            let mut st = self.inner.lock();
            st.closing = true;
            let now = Instant::now();
            let ids: Vec<u32> = st.streams.keys().copied().collect();
            for id in ids {
                if let Some(slot) = st.streams.get_mut(&id) {
                    slot.stream.destroy(now);
                }
                st.touch(id);
            }
            st.kick()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The driver task's private state.
struct Driver {
    inner: Arc<Inner>,
    gso: usize,
    slot_size: usize,
    recv_buf: Vec<u8>,
    metas: Vec<RecvMeta>,
    stage: Vec<u8>,
    staged: Vec<(usize, crate::core::Transmit)>,
    /// First staged transmit not yet sent (after a WouldBlock).
    send_from: usize,
    wakers: Vec<Waker>,
    sleep: Pin<Box<tokio::time::Sleep>>,
    sleep_at: Option<Instant>,
}

impl Driver {
    fn new(inner: Arc<Inner>, config: &SocketConfig, gso: usize) -> Self {
        let slot_size = if inner.udp.gro_segments() > 1 {
            GRO_SLOT
        } else {
            PLAIN_SLOT
        };
        let batch = config.recv_batch.clamp(1, quinn_udp::BATCH_SIZE.max(1));
        Driver {
            gso,
            slot_size,
            recv_buf: vec![0u8; slot_size * batch],
            metas: vec![RecvMeta::default(); batch],
            stage: vec![0u8; STAGE_BYTES],
            staged: Vec::new(),
            send_from: 0,
            wakers: Vec::new(),
            sleep: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
            sleep_at: None,
            inner,
        }
    }

    async fn run(mut self) {
        poll_fn(|cx| self.poll(cx)).await;
        // Dropping closes the socket.
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..RECV_BATCHES_PER_PASS {
            let received = self.poll_recv(cx);
            self.handle_timers();
            let blocked = self.flush(cx);
            self.wake_all();
            let mut st = self.inner.lock();
            let exit = (st.handles == 0 || st.closing)
                && st.dirty.is_empty()
                && !blocked
                && st.streams.values().all(|s| s.stream.is_finished());
            if exit {
                return Poll::Ready(());
            }
            if st.kicked || (received && !blocked) {
                st.kicked = false;
                continue;
            }
            st.driver_waker = Some(cx.waker().clone());
            drop(st);
            self.arm_sleep(cx);
            return Poll::Pending;
        }
        // Let other tasks run; come back at once.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Receives one batch if the socket is readable; true if anything arrived. When it is
    /// not, the read waker is registered.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> bool {
        let slot = self.slot_size;
        let n = loop {
            match self.inner.io.poll_recv_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "udx socket receive readiness failed");
                    return false;
                }
                Poll::Pending => return false,
            }
            let res = {
                let mut bufs: Vec<IoSliceMut<'_>> = self
                    .recv_buf
                    .chunks_mut(slot)
                    .map(IoSliceMut::new)
                    .collect();
                let inner = &self.inner;
                let metas = &mut self.metas;
                inner.io.try_io(Interest::READABLE, || {
                    inner.udp.recv((&inner.io).into(), &mut bufs, metas)
                })
            };
            match res {
                Ok(n) => break n,
                // Readiness was cleared: poll again to register the waker.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    // ICMP errors (port unreachable) and the like: not fatal for UDP.
                    tracing::debug!(error = %e, "udx socket receive error");
                    return true;
                }
            }
        };
        let now = Instant::now();
        let mut st = self.inner.lock();
        let st = &mut *st;
        for i in 0..n {
            let meta = self.metas[i];
            let data = &self.recv_buf[i * slot..i * slot + meta.len.min(slot)];
            let stride = if meta.stride == 0 {
                data.len().max(1)
            } else {
                meta.stride
            };
            for dgram in data.chunks(stride) {
                st.stats.datagrams_rx += 1;
                dispatch(st, now, dgram, meta.addr);
            }
        }
        true
    }

    fn handle_timers(&mut self) {
        let now = Instant::now();
        let mut st = self.inner.lock();
        let st = &mut *st;
        while let Some(Reverse((at, id))) = st.timers.peek().copied() {
            if at > now {
                break;
            }
            st.timers.pop();
            if let Some(slot) = st.streams.get_mut(&id) {
                if slot.armed == Some(at) {
                    slot.armed = None;
                    slot.stream.handle_timeout(now);
                    if !slot.dirty {
                        slot.dirty = true;
                        st.dirty.push(id);
                    }
                }
            }
        }
    }

    /// Drains transmits of dirty streams and sends them; returns true if the socket is full
    /// (the rest stays staged and the writable waker is registered).
    fn flush(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.send_staged(cx) {
                return true;
            }
            self.staged.clear();
            self.send_from = 0;
            let more = self.stage_transmits();
            if self.staged.is_empty() {
                return false;
            }
            if !more {
                let blocked = self.send_staged(cx);
                if !blocked {
                    self.staged.clear();
                    self.send_from = 0;
                }
                return blocked;
            }
        }
    }

    /// Fills the staging buffer from dirty streams; true if some stream still has more.
    fn stage_transmits(&mut self) -> bool {
        let now = Instant::now();
        let mut st = self.inner.lock();
        let st = &mut *st;
        let mut off = 0;
        let mut more = false;
        let mut i = 0;
        while i < st.dirty.len() {
            let id = st.dirty[i];
            let Some(slot) = st.streams.get_mut(&id) else {
                i += 1;
                continue;
            };
            let mut full = false;
            loop {
                if STAGE_BYTES - off < MAX_GSO_BYTES {
                    full = true;
                    break;
                }
                let buf = &mut self.stage[off..off + MAX_GSO_BYTES];
                match slot.stream.poll_transmit(now, buf, self.gso) {
                    Some(t) => {
                        st.stats.datagrams_tx += t.segments() as u64;
                        self.staged.push((off, t));
                        off += t.size;
                    }
                    None => break,
                }
            }
            if full {
                more = true;
                break;
            }
            i += 1;
        }
        // Streams fully drained: events, timers, cleanup.
        let done: Vec<u32> = st.dirty.drain(..i).collect();
        for id in done {
            settle(st, id, &mut self.wakers);
        }
        more
    }

    /// Sends staged transmits from `send_from`; true if the socket would block.
    fn send_staged(&mut self, cx: &mut Context<'_>) -> bool {
        while self.send_from < self.staged.len() {
            let (off, t) = self.staged[self.send_from];
            let transmit = quinn_udp::Transmit {
                destination: t.destination,
                ecn: None,
                contents: &self.stage[off..off + t.size],
                segment_size: (t.size > t.segment_size).then_some(t.segment_size),
                src_ip: None,
            };
            let inner = &self.inner;
            match inner.io.try_io(Interest::WRITABLE, || {
                inner.udp.send((&inner.io).into(), &transmit)
            }) {
                Ok(()) => self.send_from += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Wait for room; the waker is registered by poll_send_ready.
                    match inner.io.poll_send_ready(cx) {
                        Poll::Ready(_) => continue,
                        Poll::Pending => return true,
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, dest = %t.destination, "udx send failed");
                    inner.lock().stats.send_errors += 1;
                    self.send_from += 1;
                }
            }
        }
        false
    }

    fn wake_all(&mut self) {
        for w in self.wakers.drain(..) {
            w.wake();
        }
    }

    fn arm_sleep(&mut self, cx: &mut Context<'_>) {
        let next = {
            // Published under the same lock as the peek: a deadline pushed later by
            // `send_inline` compares against what the timer really is.
            let mut st = self.inner.lock();
            st.sleep_at = st.timers.peek().map(|Reverse((at, _))| *at);
            st.sleep_at
        };
        let Some(at) = next else {
            self.sleep_at = None;
            return;
        };
        if self.sleep_at != Some(at) {
            self.sleep
                .as_mut()
                .reset(tokio::time::Instant::from_std(at));
            self.sleep_at = Some(at);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.sleep_at = None;
            cx.waker().wake_by_ref();
        }
    }
}

/// The driver ends when the socket is closed and its streams are done, or when its runtime
/// shuts down (the task is dropped): either way the socket is closed for its handles, and
/// whoever waits on it is woken (and sees the socket closed).
impl Drop for Driver {
    fn drop(&mut self) {
        let mut wakers: Vec<Waker> = Vec::new();
        {
            let mut st = self.inner.lock();
            st.closed = true;
            st.closing = true;
            for slot in st.streams.values_mut() {
                slot.take_all_wakers(&mut wakers);
            }
            st.streams.clear();
            st.datagrams.clear();
            wakers.extend(st.datagram_waker.take());
        }
        for w in wakers {
            w.wake();
        }
        tracing::info!(local_addr = %self.inner.local_addr, "udx socket closed");
    }
}

/// Routes one datagram: to its stream (after the firewall for unconnected streams) or to the
/// owner's queue.
fn dispatch(st: &mut State, now: Instant, dgram: &[u8], from: SocketAddr) {
    if let Route::Stream(id) = classify(dgram) {
        if let Some(slot) = st.streams.get_mut(&id) {
            if !slot.stream.is_finished() {
                if !slot.stream.is_connected() {
                    let decision = match &slot.firewall {
                        None => FirewallDecision::Drop,
                        Some(f) => f(from),
                    };
                    match decision {
                        FirewallDecision::Drop => {
                            st.stats.firewall_dropped += 1;
                            tracing::debug!(id, %from, "udx: packet for unconnected stream dropped by firewall");
                            return;
                        }
                        FirewallDecision::Accept => {}
                        FirewallDecision::Connect { remote_id } => {
                            // Its waiters are woken with the batch's other wakers.
                            let _ = slot.stream.connect(now, remote_id, from);
                        }
                    }
                }
                slot.stream.handle_packet(now, dgram);
                if !slot.dirty {
                    slot.dirty = true;
                    st.dirty.push(id);
                }
                return;
            }
        }
        st.stats.unknown_stream += 1;
    }
    if st.datagrams.len() >= st.datagram_cap {
        st.stats.owner_dropped += 1;
        tracing::debug!(%from, "udx: owner datagram queue full, dropped");
        return;
    }
    st.stats.to_owner += 1;
    st.datagrams.push_back((dgram.to_vec(), from));
    if let Some(w) = st.datagram_waker.take() {
        w.wake();
    }
}

fn collect_events(slot: &mut Slot, wakers: &mut Vec<Waker>) {
    while let Some(e) = slot.stream.poll_event() {
        let w = match e {
            Event::Readable => slot.read_waker.take(),
            Event::Writable => slot.write_waker.take(),
            Event::Message => slot.message_waker.take(),
            Event::RemoteChanged => slot.change_waker.take(),
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
}
