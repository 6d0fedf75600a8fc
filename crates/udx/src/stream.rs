//! [`UdxStream`]: the application's handle on one stream of a [`UdxSocket`](crate::UdxSocket).

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
use crate::socket::{Firewall, FirewallDecision, Inner, Slot, State};

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
#[derive(Debug)]
pub struct UdxStream {
    inner: Arc<Inner>,
    id: u32,
}

impl UdxStream {
    pub(crate) fn new(inner: Arc<Inner>, id: u32) -> Self {
        UdxStream { inner, id }
    }

    /// Our stream id (the peer addresses its packets to it).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Runs `f` on this stream's slot; wakes the driver afterwards if `touch`.
    fn with<R>(&self, touch: bool, f: impl FnOnce(&mut Slot) -> R) -> Result<R, Error> {
        let (r, waker) = {
            let mut st = self.inner.lock();
            let Some(slot) = st.streams.get_mut(&self.id) else {
                return Err(Error::SocketClosed);
            };
            let r = f(slot);
            let w = if touch { st.touch(self.id) } else { None };
            (r, w)
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(r)
    }

    /// Connects to the peer's stream `remote_id` at `addr`. Packets start flowing; what
    /// arrived before is acknowledged now.
    pub fn connect(&self, remote_id: u32, addr: SocketAddr) -> Result<(), Error> {
        self.with(true, |s| s.stream.connect(Instant::now(), remote_id, addr))?
    }

    /// Sets the firewall consulted for packets that arrive before the stream is connected
    /// (default: drop them, as libudx does for streams without one).
    pub fn set_firewall(&self, firewall: Firewall) -> Result<(), Error> {
        self.with(false, |s| s.firewall = Some(firewall))
    }

    /// Accepts the first packet from any source and connects the stream to it, with the given
    /// remote id (what hyperdht's firewall does once it knows the peer's id).
    pub fn connect_on_first_packet(&self, remote_id: u32) -> Result<(), Error> {
        self.set_firewall(Arc::new(move |_| FirewallDecision::Connect { remote_id }))
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

    /// Moves the stream to another remote (holepunching). Resolves once everything sent to
    /// the old remote is acknowledged.
    pub async fn change_remote(&self, remote_id: u32, addr: SocketAddr) -> Result<(), Error> {
        self.with(true, |s| {
            s.stream.change_remote(Instant::now(), remote_id, addr)
        })??;
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

    /// Sends an unordered, unreliable MESSAGE (at most [`UdxStream::max_message_len`] bytes),
    /// waiting while the outgoing message queue is full.
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
            let mut st = self.inner.lock();
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
                Ok(n) if idle && !st.is_closing() => {
                    // A write to an idle stream goes out from here, not via the driver.
                    let kick = self.inner.send_inline(st, self.id, now, &mut wakers);
                    (
                        Poll::Ready(Ok(n)),
                        kick.then(|| st.touch(self.id)).flatten(),
                    )
                }
                Ok(n) => (Poll::Ready(Ok(n)), st.touch(self.id)),
                Err(e) => (Poll::Ready(Err(io::Error::from(e))), st.touch(self.id)),
            }
        };
        for w in driver.into_iter().chain(wakers) {
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
        let waker = {
            let mut st: std::sync::MutexGuard<'_, State> = self.inner.lock();
            st.handles -= 1;
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
        if let Some(w) = waker {
            w.wake();
        }
    }
}
