//! [`UdxStream`]: the application's handle on one stream of a [`Udx`](crate::Udx) instance.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::core::{StreamInfo, StreamStats};
use crate::error::Error;
use crate::instance::{send_inline, Firewall, FirewallDecision, Nudge, Shared, Slot, Sockets};
use crate::socket::{SocketId, UdxSocket};

/// One UDX stream: a reliable, ordered byte stream (`AsyncRead + AsyncWrite`, so a secret
/// stream runs over it) plus unordered MESSAGE datagrams.
///
/// - `poll_write` copies into the stream's send buffer and returns at once while it has room
///   (default 4 MiB); `poll_flush` returns at once (like TCP); [`UdxStream::flushed`] waits
///   until the peer acknowledged everything.
/// - `poll_shutdown` queues a graceful END and returns; reading goes on until the peer's END.
/// - Dropping the handle ends the write side gracefully (like closing a TCP socket): the
///   socket keeps the stream until its END is acknowledged, acknowledging and discarding what
///   still arrives. [`UdxStream::destroy`] aborts instead.
/// - It lives in a [`Udx`](crate::Udx) instance and is connected on one of its sockets
///   ([`UdxStream::connect`], [`UdxStream::connect_via`], or its firewall); it can move to
///   another socket of the instance ([`UdxStream::change_remote_via`]) and can relay its
///   peer's packets to another stream ([`UdxStream::relay_to`]).
#[derive(Debug)]
pub struct UdxStream {
    shared: Arc<Shared>,
    id: u32,
    /// A [`StreamControl`]'s inner handle: dropping it leaves the stream alone.
    detached: bool,
}

/// A second handle on a stream for moving it between paths, held by whoever manages its
/// path while the application owns the [`UdxStream`] (hyperdht's relay-to-direct upgrade).
/// It cannot read or write the byte stream, and dropping it does not end the stream; once
/// the stream is gone its calls fail with [`Error::SocketClosed`].
#[derive(Debug)]
pub struct StreamControl(UdxStream);

impl StreamControl {
    /// The stream's id.
    pub fn id(&self) -> u32 {
        self.0.id
    }

    /// The peer's stream id and address, once connected.
    pub fn remote(&self) -> Option<(u32, SocketAddr)> {
        self.0.remote()
    }

    /// The socket the stream is connected on.
    pub fn socket_id(&self) -> Option<SocketId> {
        self.0.socket_id()
    }

    /// As [`UdxStream::change_remote_via`].
    pub async fn change_remote_via(
        &self,
        socket: &UdxSocket,
        remote_id: u32,
        addr: SocketAddr,
    ) -> Result<(), Error> {
        self.0.change_remote_via(socket, remote_id, addr).await
    }

    /// As [`UdxStream::try_send_message`].
    pub fn try_send_message(&self, data: &[u8]) -> Result<(), Error> {
        self.0.try_send_message(data)
    }

    /// As [`UdxStream::destroy`].
    pub fn destroy(&self) {
        self.0.destroy()
    }

    /// The stream's counters.
    pub fn stats(&self) -> Option<StreamStats> {
        self.0.stats()
    }

    /// Waits until the stream closed (or is gone); returns how. It waits apart from the
    /// application's [`UdxStream::closed`], so both can wait at once.
    pub async fn closed(&self) -> Result<(), Error> {
        poll_fn(|cx| {
            self.0.with(false, |s| match s.stream.close_result() {
                Some(r) => Poll::Ready(r.clone()),
                None => {
                    s.control_close_waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            })?
        })
        .await
    }

    /// True while the stream exists and is not closed.
    pub fn is_alive(&self) -> bool {
        self.0
            .with(false, |s| !s.stream.is_closed())
            .unwrap_or(false)
    }
}

impl UdxStream {
    pub(crate) fn new(shared: Arc<Shared>, id: u32) -> Self {
        UdxStream {
            shared,
            id,
            detached: false,
        }
    }

    /// A [`StreamControl`] for this stream.
    pub fn control(&self) -> StreamControl {
        StreamControl(UdxStream {
            shared: self.shared.clone(),
            id: self.id,
            detached: true,
        })
    }

    /// Our stream id (the peer addresses its packets to it).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Runs `f` on this stream's slot; wakes the driver afterwards if `touch`.
    fn with<R>(&self, touch: bool, f: impl FnOnce(&mut Slot) -> R) -> Result<R, Error> {
        self.with_sockets(touch, |slot, _| f(slot))
    }

    /// [`UdxStream::with`] with the instance's sockets at hand.
    fn with_sockets<R>(
        &self,
        touch: bool,
        f: impl FnOnce(&mut Slot, &mut Sockets) -> R,
    ) -> Result<R, Error> {
        let (r, nudge) = {
            let mut st = self.shared.lock();
            let st = &mut *st;
            let Some(slot) = st.streams.get_mut(&self.id) else {
                return Err(Error::SocketClosed);
            };
            let r = f(slot, &mut st.sockets);
            let n = if touch {
                st.touch(self.id)
            } else {
                Nudge::None
            };
            (r, n)
        };
        nudge.wake();
        Ok(r)
    }

    /// Fails unless `socket` belongs to this stream's instance.
    fn check_instance(&self, socket: &UdxSocket) -> Result<(), Error> {
        if Arc::ptr_eq(&self.shared, &socket.shared) {
            Ok(())
        } else {
            Err(Error::OtherInstance)
        }
    }

    /// Connects to the peer's stream `remote_id` at `addr`, on the socket the stream was
    /// made on ([`UdxSocket::create_stream`]). Packets start flowing; what arrived before is
    /// acknowledged now. A stream made on the instance ([`Udx::create_stream`]) has no such
    /// socket: it fails with [`Error::NoSocket`] (use [`UdxStream::connect_via`]).
    ///
    /// [`Udx::create_stream`]: crate::Udx::create_stream
    pub fn connect(&self, remote_id: u32, addr: SocketAddr) -> Result<(), Error> {
        self.with_sockets(true, |s, sockets| {
            let sock = s.home.or(s.socket).ok_or(Error::NoSocket)?;
            connect_on(s, sockets, sock, remote_id, addr)
        })?
    }

    /// Connects to the peer's stream `remote_id` at `addr` on `socket` (of this stream's
    /// instance: else [`Error::OtherInstance`]). Its packets go out there from now on.
    pub fn connect_via(
        &self,
        socket: &UdxSocket,
        remote_id: u32,
        addr: SocketAddr,
    ) -> Result<(), Error> {
        self.check_instance(socket)?;
        let sock = socket.id();
        self.with_sockets(true, |s, sockets| {
            connect_on(s, sockets, sock, remote_id, addr)
        })?
    }

    /// Sets the firewall, consulted for every packet that arrives on a socket other than the
    /// stream's current one, with the arrival socket and the packet's source (libudx
    /// `udx_stream_firewall`). An unconnected stream has no current socket, so it asks for
    /// every packet. Without a firewall (the default), an unconnected stream drops such
    /// packets (as udx-native's default firewall) and a connected one processes them (as
    /// libudx does for a stream without a firewall).
    pub fn set_firewall(&self, firewall: Firewall) -> Result<(), Error> {
        self.with(false, |s| s.firewall = Some(firewall))
    }

    /// Accepts the first packet from any source and connects the stream to it on the
    /// socket it arrived on, with the given remote id (what hyperdht's firewall does once it
    /// knows the peer's id). Afterwards, a packet arriving on another socket of the instance
    /// moves the stream there (see [`FirewallDecision::Connect`]).
    pub fn connect_on_first_packet(&self, remote_id: u32) -> Result<(), Error> {
        self.set_firewall(Arc::new(move |_, _| FirewallDecision::Connect {
            remote_id,
        }))
    }

    /// The socket the stream is connected on (`None` while unconnected). Its transmits go
    /// out there.
    pub fn socket_id(&self) -> Option<SocketId> {
        self.with(false, |s| s.socket).ok().flatten()
    }

    /// Relays this stream (libudx `udx_stream_relay_to`, what a blind relay does): packets
    /// arriving for it are no longer processed here but forwarded unchanged, except for the
    /// header's stream id, which becomes `destination`'s remote id, on `destination`'s socket
    /// to its remote address (skipped while `destination` is unconnected). This stream keeps
    /// the highest seq it forwarded (as libudx), a forwarded DESTROY closes it, and destroying it sends no DESTROY. When `destination`
    /// closes, this stream is destroyed too (libudx). It still connects through its firewall
    /// on the first packet (a relay's firewall does that). Relay both ways by calling it on
    /// both streams.
    ///
    /// Fails with [`Error::OtherInstance`] for a stream of another instance,
    /// [`Error::AlreadyRelayed`] when called twice, and with the close reason (or
    /// [`Error::SocketClosed`]) when either stream is closed.
    pub fn relay_to(&self, destination: &UdxStream) -> Result<(), Error> {
        if !Arc::ptr_eq(&self.shared, &destination.shared) {
            return Err(Error::OtherInstance);
        }
        let nudge = {
            let mut st = self.shared.lock();
            let Some(b) = st.streams.get(&destination.id) else {
                return Err(Error::SocketClosed);
            };
            if let Some(r) = b.stream.close_result() {
                return Err(r.clone().err().unwrap_or(Error::SocketClosed));
            }
            let Some(a) = st.streams.get_mut(&self.id) else {
                return Err(Error::SocketClosed);
            };
            if a.stream.is_relayed() {
                return Err(Error::AlreadyRelayed);
            }
            if let Some(r) = a.stream.close_result() {
                return Err(r.clone().err().unwrap_or(Error::SocketClosed));
            }
            a.stream.set_relayed();
            a.relay_to = Some(destination.id);
            if let Some(b) = st.streams.get_mut(&destination.id) {
                b.relaying.push(self.id);
            }
            st.touch(self.id)
        };
        nudge.wake();
        Ok(())
    }

    /// Waits until the stream is connected (by [`UdxStream::connect`] or its firewall).
    pub async fn connected(&self) -> Result<(u32, SocketAddr), Error> {
        poll_fn(|cx| {
            self.with(false, |s| {
                if let Some(r) = s.stream.remote() {
                    return Poll::Ready(Ok(r));
                }
                if let Some(Err(e)) = s.stream.close_result() {
                    return Poll::Ready(Err(e.clone()));
                }
                s.connect_waker = Some(cx.waker().clone());
                Poll::Pending
            })?
        })
        .await
    }

    /// The peer's stream id and address, once connected.
    pub fn remote(&self) -> Option<(u32, SocketAddr)> {
        self.with(false, |s| s.stream.remote()).ok().flatten()
    }

    /// Moves the stream to another remote (holepunching), on the socket it is connected on.
    /// Resolves once everything sent before the change is acknowledged.
    pub async fn change_remote(&self, remote_id: u32, addr: SocketAddr) -> Result<(), Error> {
        self.with(true, |s| {
            s.stream.change_remote(Instant::now(), remote_id, addr)
        })??;
        self.remote_changed().await
    }

    /// Moves the stream to another remote on `socket` of its instance (libudx
    /// `udx_stream_change_remote`; hyperdht moves a connection to the socket a holepunch
    /// went through). New packets go out on `socket` to `addr`; packets sent before the move
    /// are retransmitted, if lost, the way they went (old socket, old address), so the
    /// previous socket stays open until the change resolves, which it does, as
    /// [`UdxStream::change_remote`], once everything sent before the change is
    /// acknowledged.
    pub async fn change_remote_via(
        &self,
        socket: &UdxSocket,
        remote_id: u32,
        addr: SocketAddr,
    ) -> Result<(), Error> {
        self.check_instance(socket)?;
        let sock = socket.id();
        self.with_sockets(true, |s, sockets| {
            if !sockets.is_open(sock) {
                return Err(Error::SocketClosed);
            }
            s.stream.change_remote(Instant::now(), remote_id, addr)?;
            s.attach(sockets, sock, true);
            Ok(())
        })??;
        self.remote_changed().await
    }

    /// Waits until a remote change is acknowledged.
    async fn remote_changed(&self) -> Result<(), Error> {
        poll_fn(|cx| {
            self.with(false, |s| {
                if !s.stream.is_remote_changing() {
                    return Poll::Ready(Ok(()));
                }
                if let Some(Err(e)) = s.stream.close_result() {
                    return Poll::Ready(Err(e.clone()));
                }
                s.change_waker = Some(cx.waker().clone());
                Poll::Pending
            })?
        })
        .await
    }

    /// Sends an unordered, unreliable MESSAGE (at most [`UdxStream::max_message_len`] bytes,
    /// possibly none: hyperdht sends an empty one to make its peer see a new path), waiting
    /// while the outgoing message queue is full.
    pub async fn send_message(&self, data: &[u8]) -> Result<(), Error> {
        poll_fn(|cx| {
            self.with(true, |s| match s.stream.send_message(data) {
                Err(Error::MessageQueueFull) => {
                    s.write_waker = Some(cx.waker().clone());
                    Poll::Pending
                }
                r => Poll::Ready(r),
            })?
        })
        .await
    }

    /// Sends a MESSAGE if the queue has room, else fails with
    /// [`Error::MessageQueueFull`].
    pub fn try_send_message(&self, data: &[u8]) -> Result<(), Error> {
        self.with(true, |s| s.stream.send_message(data))?
    }

    /// The next MESSAGE; `None` once the stream is closed and none are left.
    pub async fn recv_message(&self) -> Option<Vec<u8>> {
        poll_fn(|cx| {
            self.with(false, |s| {
                if let Some(m) = s.stream.recv_message() {
                    return Poll::Ready(Some(m));
                }
                if s.stream.is_closed() {
                    return Poll::Ready(None);
                }
                s.message_waker = Some(cx.waker().clone());
                Poll::Pending
            })
            .unwrap_or(Poll::Ready(None))
        })
        .await
    }

    /// The largest MESSAGE payload on this path.
    pub fn max_message_len(&self) -> usize {
        self.with(false, |s| s.stream.max_message_len())
            .unwrap_or(0)
    }

    /// Waits until the peer acknowledged every byte written so far (and the END, if shut
    /// down).
    pub async fn flushed(&self) -> Result<(), Error> {
        poll_fn(|cx| {
            self.with(false, |s| {
                if let Some(Err(e)) = s.stream.close_result() {
                    return Poll::Ready(Err(e.clone()));
                }
                if s.stream.is_flushed() || s.stream.is_closed() {
                    return Poll::Ready(Ok(()));
                }
                s.flush_waker = Some(cx.waker().clone());
                Poll::Pending
            })?
        })
        .await
    }

    /// Waits until the stream closed; returns how.
    pub async fn closed(&self) -> Result<(), Error> {
        poll_fn(|cx| {
            self.with(false, |s| match s.stream.close_result() {
                Some(r) => Poll::Ready(r.clone()),
                None => {
                    s.close_waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            })?
        })
        .await
    }

    /// Aborts the stream: a DESTROY goes to the peer, reads and writes fail with
    /// [`Error::Destroyed`].
    pub fn destroy(&self) {
        let _ = self.with(true, |s| s.stream.destroy(Instant::now()));
    }

    /// Counters of the stream.
    pub fn stats(&self) -> Option<StreamStats> {
        self.with(false, |s| s.stream.stats().clone()).ok()
    }

    /// A snapshot of the transport state (RTT, window, pacing rate, MTU).
    pub fn info(&self) -> Option<StreamInfo> {
        self.with(false, |s| s.stream.info()).ok()
    }

    /// Smoothed round-trip time.
    pub fn rtt(&self) -> Option<Duration> {
        self.with(false, |s| s.stream.rtt()).ok().flatten()
    }

    /// Bytes of send and receive buffer storage the stream holds (grown while data flows,
    /// released after a second without packets).
    pub fn buffer_storage(&self) -> usize {
        self.with(false, |s| s.stream.buffer_storage()).unwrap_or(0)
    }

    /// The confirmed MTU of the path (1200 to 1500).
    pub fn mtu(&self) -> u16 {
        self.with(false, |s| s.stream.mtu()).unwrap_or(0)
    }
}

impl AsyncRead for UdxStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let r = self.with(false, |s| {
            let dst = buf.initialize_unfilled();
            match s.stream.read(dst) {
                Ok(Some(n)) => {
                    buf.advance(n);
                    // A window update may be due.
                    (Poll::Ready(Ok(())), n > 0 && s.stream.wants_transmit())
                }
                Ok(None) => {
                    s.read_waker = Some(cx.waker().clone());
                    (Poll::Pending, false)
                }
                Err(e) => (Poll::Ready(Err(io::Error::from(e))), false),
            }
        });
        match r {
            Ok((p, nudge)) => {
                if nudge {
                    let _ = self.with(true, |_| ());
                }
                p
            }
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }
}

impl AsyncWrite for UdxStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut wakers = Vec::new();
        let (poll, driver) = {
            let mut st = self.shared.lock();
            let st = &mut *st;
            let Some(slot) = st.streams.get_mut(&self.id) else {
                return Poll::Ready(Err(Error::SocketClosed.into()));
            };
            let now = Instant::now();
            let idle = !slot.is_dirty() && slot.stream.is_send_idle();
            match slot.stream.write(now, data) {
                Ok(0) => {
                    slot.write_waker = Some(cx.waker().clone());
                    (Poll::Pending, st.touch(self.id))
                }
                Ok(n) if idle && st.driver_running => {
                    // A write to an idle stream goes out from here, not via the driver.
                    let kick = send_inline(st, self.id, now, &mut wakers);
                    (
                        Poll::Ready(Ok(n)),
                        if kick { st.touch(self.id) } else { Nudge::None },
                    )
                }
                Ok(n) => (Poll::Ready(Ok(n)), st.touch(self.id)),
                Err(e) => (Poll::Ready(Err(io::Error::from(e))), st.touch(self.id)),
            }
        };
        driver.wake();
        for w in wakers {
            w.wake();
        }
        poll
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = self.with(true, |s| s.stream.end(Instant::now()));
        match r {
            Ok(Ok(())) => Poll::Ready(Ok(())),
            Ok(Err(e)) | Err(e) => Poll::Ready(Err(e.into())),
        }
    }
}

impl Drop for UdxStream {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        let nudge = {
            let mut st = self.shared.lock();
            if let Some(slot) = st.streams.get_mut(&self.id) {
                slot.handle_alive = false;
                let now = Instant::now();
                if !slot.stream.is_connected() {
                    slot.stream.destroy(now);
                } else {
                    slot.stream.discard_reads();
                    let _ = slot.stream.end(now);
                }
            }
            st.touch(self.id)
        };
        nudge.wake();
    }
}

/// Connects the stream on socket `sock` (open, of the stream's instance).
fn connect_on(
    s: &mut Slot,
    sockets: &mut Sockets,
    sock: SocketId,
    remote_id: u32,
    addr: SocketAddr,
) -> Result<(), Error> {
    if !sockets.is_open(sock) {
        return Err(Error::SocketClosed);
    }
    s.stream.connect(Instant::now(), remote_id, addr)?;
    s.attach(sockets, sock, false);
    Ok(())
}
