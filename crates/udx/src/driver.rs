//! The driver: one task per [`Udx`](crate::Udx) instance runs every stream of every socket.
//!
//! - Each socket has its own readiness waker ([`crate::instance::SocketWake`]): when tokio
//!   reports a socket readable (or writable again), the socket is queued and the task woken,
//!   so a driver with hundreds of sockets (a birthday-paradox holepunch) polls only those
//!   that are ready. A socket just bound is polled at once.
//! - It receives in batches (`recvmmsg`, GRO where available, via `quinn-udp`) into one
//!   receive buffer shared by all sockets, demultiplexes each datagram in place
//!   ([`crate::instance::dispatch`]): packets for live streams go to their [`Stream`]
//!   cores, packets of relayed streams are rewritten in place and forwarded (GSO batches
//!   where they line up), everything else is queued for the arrival socket's owner.
//! - It then drains the cores' transmits into a staging buffer, each tagged with the
//!   stream's current socket, and sends them (GSO batches, which never mix sockets), re-arms
//!   one timer for the earliest stream deadline, and wakes the application tasks whose
//!   streams became readable or writable.
//! - Application tasks ([`crate::UdxStream`]) lock the shared state only to copy bytes in or
//!   out of their stream's buffers and to nudge the driver: no channel, no message per
//!   packet. A write to an idle stream is sent from the writer's task
//!   ([`crate::instance::send_inline`]).
//!
//! [`Stream`]: crate::core::Stream

use std::future::{poll_fn, Future};
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use quinn_udp::RecvMeta;
use tokio::io::Interest;

use crate::core::Transmit;
use crate::instance::{dispatch, driver_gone, run_timers, settle, IdMap, Shared, State};
use crate::socket::{SocketId, SocketIo, PLAIN_SLOT};

/// Largest GSO batch (UDP payload limit minus headroom).
pub(crate) const MAX_GSO_BYTES: usize = 65_000;
/// Bytes staged per driver pass before sending.
const STAGE_BYTES: usize = 4 * MAX_GSO_BYTES;
/// Receive batches per driver pass before yielding to other tasks.
const RECV_BATCHES_PER_PASS: usize = 4;

/// A forwarded packet (or a GSO run of them) waiting in the receive buffer.
#[derive(Debug, Clone, Copy)]
struct RelayOut {
    off: usize,
    len: usize,
    /// Segment size (equal to `len` for one datagram).
    seg: usize,
    sock: SocketId,
    dest: SocketAddr,
    sent: bool,
}

/// Packets of relayed streams to forward after a receive batch. They stay where they were
/// received (only their stream id is rewritten), so forwarding copies nothing.
#[derive(Debug, Default)]
pub(crate) struct Relays {
    out: Vec<RelayOut>,
    /// Held packets released when their target connected (copies, sent one by one).
    owned: Vec<(Vec<u8>, SocketId, SocketAddr)>,
}

impl Relays {
    /// Queues a held packet (already rewritten) for `dest` on socket `sock`.
    pub(crate) fn push_owned(&mut self, packet: Vec<u8>, sock: SocketId, dest: SocketAddr) {
        self.owned.push((packet, sock, dest));
    }

    /// Queues `len` bytes at `off` for `dest` on socket `sock`, extending the last run into
    /// a GSO batch when it is contiguous, for the same socket and destination, and of the
    /// same segment size (the last segment may be shorter).
    pub(crate) fn push(
        &mut self,
        off: usize,
        len: usize,
        sock: SocketId,
        dest: SocketAddr,
        gso: usize,
    ) {
        if let Some(last) = self.out.last_mut() {
            if gso > 1
                && last.sock == sock
                && last.dest == dest
                && last.off + last.len == off
                && last.len % last.seg == 0
                && len <= last.seg
                && last.len / last.seg < gso
                && last.len + len <= MAX_GSO_BYTES
            {
                last.len += len;
                return;
            }
        }
        self.out.push(RelayOut {
            off,
            len,
            seg: len.max(1),
            sock,
            dest,
            sent: false,
        });
    }
}

/// A socket as the driver sees it.
#[derive(Debug)]
struct DrvSock {
    io: Arc<SocketIo>,
    /// In `Driver::polling`.
    polling: bool,
}

/// The driver task's private state.
pub(crate) struct Driver {
    shared: Arc<Shared>,
    socks: IdMap<DrvSock>,
    /// Sockets to receive from on the next pass: queued by their readiness, or still
    /// readable after the last batch.
    polling: Vec<SocketId>,
    ready_scratch: Vec<SocketId>,
    added_scratch: Vec<Arc<SocketIo>>,
    slot_size: usize,
    recv_buf: Vec<u8>,
    metas: Vec<RecvMeta>,
    relays: Relays,
    stage: Vec<u8>,
    staged: Vec<(usize, Transmit, SocketId)>,
    /// First staged transmit not yet sent (after a WouldBlock).
    send_from: usize,
    /// Streams drained in a staging pass (scratch).
    done: Vec<u32>,
    wakers: Vec<Waker>,
    sleep: Pin<Box<tokio::time::Sleep>>,
    sleep_at: Option<Instant>,
    /// Ended because the instance had no socket left (not dropped with its runtime).
    exited: bool,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("sockets", &self.socks.len())
            .finish_non_exhaustive()
    }
}

impl Driver {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Driver {
            shared,
            socks: IdMap::default(),
            polling: Vec::new(),
            ready_scratch: Vec::new(),
            added_scratch: Vec::new(),
            slot_size: PLAIN_SLOT,
            recv_buf: Vec::new(),
            metas: Vec::new(),
            relays: Relays::default(),
            stage: vec![0u8; STAGE_BYTES],
            staged: Vec::new(),
            send_from: 0,
            done: Vec::new(),
            wakers: Vec::new(),
            sleep: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
            sleep_at: None,
            exited: false,
        }
    }

    pub(crate) async fn run(mut self) {
        poll_fn(|cx| self.poll(cx)).await;
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.take_ready(Some(cx.waker()));
        for _ in 0..RECV_BATCHES_PER_PASS {
            let received = self.poll_recv_all();
            self.handle_timers();
            let blocked = self.flush();
            self.wake_all();
            let shared = &self.shared;
            let mut st = shared.lock();
            if st.sockets.maybe_close && !blocked {
                close_sockets(
                    &mut st,
                    &mut self.socks,
                    &mut self.polling,
                    &mut self.wakers,
                );
            }
            if st.sockets.is_empty() && st.dirty.is_empty() && !blocked {
                // Under the lock a bind takes: one that comes later starts a new driver.
                st.driver_running = false;
                st.driver_waker = None;
                shared.ready.clear();
                drop(st);
                self.exited = true;
                self.wake_all();
                return Poll::Ready(());
            }
            if st.kicked || (received && !blocked) {
                st.kicked = false;
                drop(st);
                self.wake_all();
                self.take_ready(None);
                continue;
            }
            st.driver_waker = Some(cx.waker().clone());
            drop(st);
            self.wake_all();
            self.arm_sleep(cx);
            return Poll::Pending;
        }
        // Let other tasks run; come back at once.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Picks up sockets that became ready or were bound (and stores the task's waker).
    fn take_ready(&mut self, waker: Option<&Waker>) {
        if !self
            .shared
            .ready
            .take(waker, &mut self.ready_scratch, &mut self.added_scratch)
        {
            return;
        }
        while let Some(io) = self.added_scratch.pop() {
            self.add_socket(io);
        }
        for id in self.ready_scratch.drain(..) {
            if let Some(ds) = self.socks.get_mut(&id.0) {
                ds.io.wake.taken();
                if !ds.polling {
                    ds.polling = true;
                    self.polling.push(id);
                }
            }
        }
    }

    fn add_socket(&mut self, io: Arc<SocketIo>) {
        let slot = io.slot_size.max(self.slot_size);
        let batch = io.recv_batch.max(self.metas.len());
        if slot != self.slot_size || batch != self.metas.len() {
            self.slot_size = slot;
            self.recv_buf = vec![0u8; slot * batch];
            self.metas = vec![RecvMeta::default(); batch];
        }
        let id = io.id;
        if self
            .socks
            .insert(id.0, DrvSock { io, polling: true })
            .is_none()
        {
            self.polling.push(id);
        }
    }

    /// Receives one batch from every socket in `polling`; true if anything arrived.
    fn poll_recv_all(&mut self) -> bool {
        let mut any = false;
        let mut i = 0;
        while i < self.polling.len() {
            let id = self.polling[i];
            if self.poll_recv(id) {
                any = true;
                i += 1;
            } else {
                self.polling.swap_remove(i);
                if let Some(ds) = self.socks.get_mut(&id.0) {
                    ds.polling = false;
                }
            }
        }
        any
    }

    /// Receives one batch from socket `id` if it is readable; true if anything arrived (it
    /// may have more). When it is not, its readiness waker is registered.
    fn poll_recv(&mut self, id: SocketId) -> bool {
        let Some(ds) = self.socks.get(&id.0) else {
            return false;
        };
        let io = &*ds.io;
        let slot = self.slot_size;
        let batch = io.recv_batch.min(self.metas.len());
        let mut cx = Context::from_waker(&io.waker);
        let n = loop {
            match io.io.poll_recv_ready(&mut cx) {
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
                    .take(batch)
                    .map(IoSliceMut::new)
                    .collect();
                let metas = &mut self.metas[..batch];
                io.io.try_io(Interest::READABLE, || {
                    io.udp.recv((&io.io).into(), &mut bufs, metas)
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
        {
            let mut st = self.shared.lock();
            let st = &mut *st;
            let mut count = 0u64;
            for i in 0..n {
                let meta = self.metas[i];
                let base = i * slot;
                let len = meta.len.min(slot);
                let stride = if meta.stride == 0 {
                    len.max(1)
                } else {
                    meta.stride
                };
                let mut o = 0;
                while o < len {
                    let end = (o + stride).min(len);
                    count += 1;
                    dispatch(
                        st,
                        now,
                        &mut self.recv_buf[base + o..base + end],
                        base + o,
                        meta.addr,
                        id,
                        &mut self.relays,
                    );
                    o = end;
                }
            }
            if let Some(e) = st.sockets.get_mut(id) {
                e.stats.datagrams_rx += count;
            }
        }
        self.send_relays();
        true
    }

    /// Forwards the packets of relayed streams from the receive buffer. One the kernel
    /// refuses (full socket buffer) is dropped and counted, as a router's full queue would
    /// drop it; the endpoints recover it as a loss.
    fn send_relays(&mut self) {
        self.send_owned_relays();
        if self.relays.out.is_empty() {
            return;
        }
        for r in &mut self.relays.out {
            let Some(ds) = self.socks.get(&r.sock.0) else {
                continue;
            };
            let io = &*ds.io;
            let transmit = quinn_udp::Transmit {
                destination: r.dest,
                ecn: None,
                contents: &self.recv_buf[r.off..r.off + r.len],
                segment_size: (r.len > r.seg).then_some(r.seg),
                src_ip: None,
            };
            let _ttl = io.send_guard();
            match io.udp.send((&io.io).into(), &transmit) {
                Ok(()) => r.sent = true,
                Err(e) => tracing::debug!(error = %e, dest = %r.dest, "udx relay send failed"),
            }
        }
        let mut st = self.shared.lock();
        for r in self.relays.out.drain(..) {
            if let Some(e) = st.sockets.get_mut(r.sock) {
                if r.sent {
                    let n = r.len.div_ceil(r.seg) as u64;
                    e.stats.datagrams_tx += n;
                    e.stats.relayed += n;
                } else {
                    e.stats.send_errors += 1;
                }
            }
        }
    }

    /// Sends held relay packets released by their target's first packet.
    fn send_owned_relays(&mut self) {
        if self.relays.owned.is_empty() {
            return;
        }
        let mut sent = Vec::new();
        for (p, sock, dest) in self.relays.owned.drain(..) {
            let Some(ds) = self.socks.get(&sock.0) else {
                continue;
            };
            let io = &*ds.io;
            let transmit = quinn_udp::Transmit {
                destination: dest,
                ecn: None,
                contents: &p,
                segment_size: None,
                src_ip: None,
            };
            let _ttl = io.send_guard();
            sent.push((sock, io.udp.send((&io.io).into(), &transmit).is_ok()));
        }
        let mut st = self.shared.lock();
        for (sock, ok) in sent {
            if let Some(e) = st.sockets.get_mut(sock) {
                if ok {
                    e.stats.datagrams_tx += 1;
                    e.stats.relayed += 1;
                } else {
                    e.stats.send_errors += 1;
                }
            }
        }
    }

    fn handle_timers(&mut self) {
        let now = Instant::now();
        run_timers(&mut self.shared.lock(), now);
    }

    /// Drains transmits of dirty streams and sends them; returns true if a socket is full
    /// (the rest stays staged and that socket's writable waker is registered).
    fn flush(&mut self) -> bool {
        // A socket bound since the pass began may carry a stream already.
        self.take_ready(None);
        loop {
            if self.send_staged() {
                return true;
            }
            self.staged.clear();
            self.send_from = 0;
            let more = self.stage_transmits();
            if self.staged.is_empty() {
                return false;
            }
            if !more {
                let blocked = self.send_staged();
                if !blocked {
                    self.staged.clear();
                    self.send_from = 0;
                }
                return blocked;
            }
        }
    }

    /// Fills the staging buffer from dirty streams, each transmit tagged with the stream's
    /// current socket; true if some stream still has more.
    fn stage_transmits(&mut self) -> bool {
        let now = Instant::now();
        let mut guard = self.shared.lock();
        let st: &mut State = &mut guard;
        let mut off = 0;
        let mut more = false;
        let mut i = 0;
        while i < st.dirty.len() {
            let id = st.dirty[i];
            let Some(slot) = st.streams.get_mut(&id) else {
                i += 1;
                continue;
            };
            let Some(entry) = slot.socket.and_then(|s| st.sockets.get(s)) else {
                // Unconnected: nothing to send.
                i += 1;
                continue;
            };
            let (sid, gso) = (entry.io.id, entry.io.gso);
            // Retransmissions of packets sent before a move go where those went: to the old
            // address (the core keeps it per packet) on the old socket, open until they
            // are acknowledged.
            let current = slot.stream.remote().map(|(_, a)| a);
            let prev = slot.prev_socket;
            let mut full = false;
            loop {
                if STAGE_BYTES - off < MAX_GSO_BYTES {
                    full = true;
                    break;
                }
                let buf = &mut self.stage[off..off + MAX_GSO_BYTES];
                match slot.stream.poll_transmit(now, buf, gso) {
                    Some(t) => {
                        let to = match prev {
                            Some(p) if Some(t.destination) != current => p,
                            _ => sid,
                        };
                        if let Some(e) = st.sockets.get_mut(to) {
                            e.stats.datagrams_tx += t.segments() as u64;
                        }
                        self.staged.push((off, t, to));
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
        self.done.clear();
        self.done.extend(st.dirty.drain(..i));
        for &id in &self.done {
            settle(st, id, now, &mut self.wakers);
        }
        more
    }

    /// Sends staged transmits from `send_from`; true if a socket would block.
    fn send_staged(&mut self) -> bool {
        while self.send_from < self.staged.len() {
            let (off, t, sid) = self.staged[self.send_from];
            let Some(ds) = self.socks.get(&sid.0) else {
                self.send_from += 1;
                continue;
            };
            let io = &*ds.io;
            let transmit = quinn_udp::Transmit {
                destination: t.destination,
                ecn: None,
                contents: &self.stage[off..off + t.size],
                segment_size: (t.size > t.segment_size).then_some(t.segment_size),
                src_ip: None,
            };
            let res = {
                let _ttl = io.send_guard();
                io.io.try_io(Interest::WRITABLE, || {
                    io.udp.send((&io.io).into(), &transmit)
                })
            };
            match res {
                Ok(()) => self.send_from += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Wait for room; the socket's waker is registered by poll_send_ready.
                    let mut cx = Context::from_waker(&io.waker);
                    match io.io.poll_send_ready(&mut cx) {
                        Poll::Ready(_) => continue,
                        Poll::Pending => return true,
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, dest = %t.destination, "udx send failed");
                    if let Some(e) = self.shared.lock().sockets.get_mut(sid) {
                        e.stats.send_errors += 1;
                    }
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
            let mut st = self.shared.lock();
            st.sleep_at = st.timers.peek().map(|std::cmp::Reverse((at, _))| *at);
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

/// Removes the sockets that may close (no handle or closing, no stream on them); called
/// only when nothing is staged, so their last packets are out.
fn close_sockets(
    st: &mut State,
    socks: &mut IdMap<DrvSock>,
    polling: &mut Vec<SocketId>,
    wakers: &mut Vec<Waker>,
) {
    st.sockets.maybe_close = false;
    for sid in st.sockets.closable() {
        if st.sockets.remove(sid, wakers).is_some() {
            socks.remove(&sid.0);
            if let Some(p) = polling.iter().position(|x| *x == sid) {
                polling.swap_remove(p);
            }
        }
    }
}

/// A driver dropped with its runtime closes its sockets for their handles and wakes their
/// waiters (see [`driver_gone`]). One that ended normally had none left.
impl Drop for Driver {
    fn drop(&mut self) {
        if !self.exited {
            driver_gone(&self.shared);
        }
    }
}
