//! [`UdxSocket`]: one UDP socket of a [`Udx`] instance, carrying UDX streams and, on the
//! same port, the owner's own datagrams (dht-rpc, holepunch probes).
//!
//! - [`SocketIo`] is the socket itself (tokio + `quinn-udp` state, GSO/GRO capabilities,
//!   its readiness waker); the instance's driver and every handle share it.
//! - The owner's datagram queue and the counters live in the instance state
//!   ([`crate::instance::SocketEntry`]), under the instance lock.
//!
//! Backpressure: the owner's datagram queue is bounded
//! ([`SocketConfig::with_datagram_queue`]) and drops (and counts) datagrams when the owner
//! does not keep up, as a kernel socket buffer would.

use std::fmt;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use quinn_udp::UdpSocketState;
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::config::{SocketConfig, StreamConfig};
use crate::error::Error;
use crate::instance::{close_socket, create_on, Shared, SocketWake, Udx};
use crate::stream::UdxStream;
use crate::wire::MAX_DATAGRAM;

/// Receive buffer per datagram without GRO (JS truncates beyond 2048 too).
pub(crate) const PLAIN_SLOT: usize = MAX_DATAGRAM;
/// Receive buffer per slot with GRO: the largest coalesced UDP payload.
pub(crate) const GRO_SLOT: usize = 65_536;

/// A socket's id in its instance: what a [`Firewall`](crate::Firewall) is told a packet
/// arrived on, and what [`UdxStream::socket_id`] reports. Small and `Copy`; ids are not
/// reused while the instance lives, and mean nothing across instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub(crate) u32);

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "socket#{}", self.0)
    }
}

/// Counters of a socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketStats {
    /// Datagrams received.
    pub datagrams_rx: u64,
    /// Datagrams sent (GSO segments counted one by one), forwarded ones included.
    pub datagrams_tx: u64,
    /// Datagrams handed to the owner.
    pub to_owner: u64,
    /// Datagrams for the owner dropped because its queue was full.
    pub owner_dropped: u64,
    /// UDX packets for unknown or closed stream ids (handed to the owner, as JS does).
    pub unknown_stream: u64,
    /// Packets dropped by a stream's firewall (or, without one, for an unconnected stream).
    pub firewall_dropped: u64,
    /// Packets of relayed streams forwarded from this socket.
    pub relayed: u64,
    /// Send calls that failed (a forwarded packet the kernel refused counts here too).
    pub send_errors: u64,
}

/// The UDP socket shared by the driver and the handles.
pub(crate) struct SocketIo {
    pub(crate) id: SocketId,
    pub(crate) io: UdpSocket,
    pub(crate) udp: UdpSocketState,
    pub(crate) local_addr: SocketAddr,
    /// Segments per GSO send (1: none).
    pub(crate) gso: usize,
    /// Receive buffer per datagram slot (64 KiB with GRO).
    pub(crate) slot_size: usize,
    /// Slots per `recvmmsg`.
    pub(crate) recv_batch: usize,
    /// Readiness waker: queues this socket for the driver.
    pub(crate) wake: Arc<SocketWake>,
    pub(crate) waker: Waker,
    /// The kernel refused a per-datagram TTL: TTL sends set and restore the socket option
    /// under `ttl_lock`, which every send then takes.
    ttl_fallback: AtomicBool,
    ttl_lock: Mutex<()>,
    /// Counters at close, for handles that outlive the socket.
    final_stats: Mutex<Option<SocketStats>>,
}

impl fmt::Debug for SocketIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketIo")
            .field("id", &self.id)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl SocketIo {
    /// Binds the socket (needs a tokio runtime for the registration).
    pub(crate) fn bind(
        addr: SocketAddr,
        config: &SocketConfig,
        id: SocketId,
        wake: Arc<SocketWake>,
    ) -> Result<SocketIo, Error> {
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
        let slot_size = if udp.gro_segments() > 1 {
            GRO_SLOT
        } else {
            PLAIN_SLOT
        };
        Ok(SocketIo {
            id,
            io,
            udp,
            local_addr,
            gso,
            slot_size,
            recv_batch: config.recv_batch.clamp(1, quinn_udp::BATCH_SIZE.max(1)),
            waker: Waker::from(wake.clone()),
            wake,
            ttl_fallback: AtomicBool::new(false),
            ttl_lock: Mutex::new(()),
            final_stats: Mutex::new(None),
        })
    }

    /// Held around every send once TTL sends fell back to setting the socket option, so
    /// that no stream packet leaves with a probe's TTL. `None` (no lock) otherwise.
    pub(crate) fn send_guard(&self) -> Option<MutexGuard<'_, ()>> {
        self.uses_ttl_lock()
            .then(|| self.ttl_lock.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// TTL sends fell back to the socket option (see [`SocketIo::send_guard`]).
    fn uses_ttl_lock(&self) -> bool {
        self.ttl_fallback.load(Ordering::Relaxed)
    }

    pub(crate) fn set_final_stats(&self, stats: SocketStats) {
        *self
            .final_stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(stats);
    }

    fn final_stats(&self) -> Option<SocketStats> {
        self.final_stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sends one datagram with IP TTL (IPv6: hop limit) `ttl`, leaving the socket's own TTL
    /// alone: the TTL rides along as `IP_TTL` / `IPV6_HOPLIMIT` ancillary data of this one
    /// `sendmsg`. A kernel that refuses that makes this socket fall back, for good, to
    /// setting the socket option around the send under a lock every send takes.
    fn send_ttl(&self, datagram: &[u8], to: SocketAddr, ttl: u8) -> io::Result<()> {
        let sock = socket2::SockRef::from(&self.io);
        let v4 = match to {
            SocketAddr::V4(_) => true,
            SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_some(),
        };
        if !self.ttl_fallback.load(Ordering::Relaxed) {
            match send_with_ttl_cmsg(&sock, datagram, to, ttl, v4) {
                Ok(()) => return Ok(()),
                Err(e) if is_unsupported(&e) => {
                    tracing::info!(error = %e, "udx: per-datagram TTL refused, setting the socket option instead");
                    self.ttl_fallback.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        let _g = self.ttl_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let v6_socket = self.local_addr.is_ipv6() && !v4;
        let old = if v6_socket {
            sock.unicast_hops_v6()?
        } else {
            sock.ttl_v4()?
        };
        let set = |t: u32| {
            if v6_socket {
                sock.set_unicast_hops_v6(t)
            } else {
                sock.set_ttl_v4(t)
            }
        };
        set(u32::from(ttl))?;
        let r = sock.send_to(datagram, &to.into()).map(|_| ());
        set(old)?;
        r
    }
}

/// Errors by which a kernel says it has no per-datagram TTL.
fn is_unsupported(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
    ) || e.raw_os_error() == Some(libc_enoprotoopt())
}

#[cfg(unix)]
fn libc_enoprotoopt() -> i32 {
    libc::ENOPROTOOPT
}

#[cfg(not(unix))]
fn libc_enoprotoopt() -> i32 {
    -1
}

/// `sendmsg` with one `IP_TTL` (IPv4) or `IPV6_HOPLIMIT` (IPv6) control message.
///
/// The control message is laid out by hand from `libc::cmsghdr`'s size and field offsets
/// (`CMSG_LEN` / `CMSG_SPACE` arithmetic: the header aligned to `size_t`, then an `int`
/// padded likewise), so no `unsafe` libc macro is needed.
#[cfg(unix)]
fn send_with_ttl_cmsg(
    sock: &socket2::SockRef<'_>,
    datagram: &[u8],
    to: SocketAddr,
    ttl: u8,
    v4: bool,
) -> io::Result<()> {
    use std::mem::{offset_of, size_of};
    let align = |n: usize| n.next_multiple_of(size_of::<usize>());
    let hdr = align(size_of::<libc::cmsghdr>());
    let int = size_of::<libc::c_int>();
    let cmsg_len = hdr + int;
    let space = hdr + align(int);
    let mut ctl = [0u8; 64];
    if space > ctl.len() {
        return Err(io::ErrorKind::Unsupported.into());
    }
    let (level, kind) = if v4 {
        (libc::IPPROTO_IP, libc::IP_TTL)
    } else {
        (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT)
    };
    // `cmsg_len` is a size_t (glibc) or a socklen_t next to padding (musl): write it with
    // the width up to `cmsg_level`, in native byte order.
    let len_at = offset_of!(libc::cmsghdr, cmsg_len);
    let level_at = offset_of!(libc::cmsghdr, cmsg_level);
    let type_at = offset_of!(libc::cmsghdr, cmsg_type);
    match level_at.checked_sub(len_at) {
        Some(8) => ctl[len_at..len_at + 8].copy_from_slice(&(cmsg_len as u64).to_ne_bytes()),
        Some(4) => ctl[len_at..len_at + 4].copy_from_slice(&(cmsg_len as u32).to_ne_bytes()),
        _ => return Err(io::ErrorKind::Unsupported.into()),
    }
    ctl[level_at..level_at + 4].copy_from_slice(&level.to_ne_bytes());
    ctl[type_at..type_at + 4].copy_from_slice(&kind.to_ne_bytes());
    ctl[hdr..hdr + int].copy_from_slice(&libc::c_int::from(ttl).to_ne_bytes());
    let addr = socket2::SockAddr::from(to);
    let bufs = [IoSlice::new(datagram)];
    let msg = socket2::MsgHdr::new()
        .with_addr(&addr)
        .with_buffers(&bufs)
        .with_control(&ctl[..space]);
    sock.sendmsg(&msg, 0).map(|_| ())
}

#[cfg(not(unix))]
fn send_with_ttl_cmsg(
    _sock: &socket2::SockRef<'_>,
    _datagram: &[u8],
    _to: SocketAddr,
    _ttl: u8,
    _v4: bool,
) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// A UDP socket of a [`Udx`] instance, carrying UDX streams and, on the same port, the
/// owner's own datagrams (dht-rpc, holepunch probes). Cheap to clone.
///
/// It closes when its last handle is dropped and no stream uses it any more (a stream
/// connected on it keeps it open until the stream finishes, and so does an unconnected
/// stream made with [`UdxSocket::create_stream`]), or at once on [`UdxSocket::close`].
#[derive(Debug)]
pub struct UdxSocket {
    pub(crate) shared: Arc<Shared>,
    pub(crate) io: Arc<SocketIo>,
}

impl Clone for UdxSocket {
    fn clone(&self) -> Self {
        if let Some(e) = self.shared.lock().sockets.get_mut(self.io.id) {
            e.handles += 1;
        }
        UdxSocket {
            shared: self.shared.clone(),
            io: self.io.clone(),
        }
    }
}

impl Drop for UdxSocket {
    fn drop(&mut self) {
        let waker = {
            let mut st = self.shared.lock();
            let Some(e) = st.sockets.get_mut(self.io.id) else {
                return;
            };
            e.handles = e.handles.saturating_sub(1);
            if e.handles > 0 {
                return;
            }
            st.sockets.maybe_close = true;
            st.kick()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl UdxSocket {
    /// Binds a socket (IPv4 or IPv6) in a new instance of its own and starts the instance's
    /// driver task on the current tokio runtime.
    pub async fn bind(addr: SocketAddr) -> Result<UdxSocket, Error> {
        Udx::new().bind(addr).await
    }

    /// [`UdxSocket::bind`] with settings.
    pub async fn bind_with(addr: SocketAddr, config: SocketConfig) -> Result<UdxSocket, Error> {
        Udx::new().bind_with(addr, config).await
    }

    /// The instance this socket belongs to.
    pub fn udx(&self) -> Udx {
        Udx {
            shared: self.shared.clone(),
        }
    }

    /// This socket's id in its instance.
    pub fn id(&self) -> SocketId {
        self.io.id
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.io.local_addr
    }

    /// Sends one raw datagram from this socket (the DHT's messages, holepunch probes). JS
    /// peers truncate datagrams beyond 2048 bytes.
    pub async fn send_to(&self, datagram: &[u8], to: SocketAddr) -> Result<(), Error> {
        if self.io.uses_ttl_lock() {
            return self.send_when_writable(datagram, to, 0).await;
        }
        self.io.io.send_to(datagram, to).await?;
        Ok(())
    }

    /// Sends one raw datagram if the socket can take it now.
    ///
    /// This asks the kernel directly rather than tokio's readiness flag: on a socket that was
    /// just bound, tokio does not know yet that it is writable, and its `try_send_to` would
    /// fail with `WouldBlock` (a DHT's first bootstrap message would then wait for a retry).
    pub fn try_send_to(&self, datagram: &[u8], to: SocketAddr) -> Result<(), Error> {
        let _g = self.io.send_guard();
        socket2::SockRef::from(&self.io.io).send_to(datagram, &to.into())?;
        Ok(())
    }

    /// Sends one raw datagram with IP TTL (IPv6: hop limit) `ttl` (libudx
    /// `udx_socket_send_ttl`; hyperdht sends its holepunch probes with TTL 5 so that they
    /// open our NAT's mapping without reaching the peer's NAT too early). `ttl == 0` means
    /// the socket's default. Only this datagram carries the TTL: streams on the socket are
    /// not affected (see [`UdxSocket::try_send_to_ttl`]).
    pub async fn send_to_ttl(&self, datagram: &[u8], to: SocketAddr, ttl: u8) -> Result<(), Error> {
        if ttl == 0 && !self.io.uses_ttl_lock() {
            self.io.io.send_to(datagram, to).await?;
            return Ok(());
        }
        self.send_when_writable(datagram, to, ttl).await
    }

    /// Waits until the socket is writable and sends with [`send_ttl_or_plain`].
    async fn send_when_writable(
        &self,
        datagram: &[u8],
        to: SocketAddr,
        ttl: u8,
    ) -> Result<(), Error> {
        let io = &self.io;
        let once = |ctx: &mut Context<'_>| loop {
            match io.io.poll_send_ready(ctx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
            match io.io.try_io(Interest::WRITABLE, || {
                send_ttl_or_plain(io, datagram, to, ttl)
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        };
        poll_fn(once).await?;
        Ok(())
    }

    /// [`UdxSocket::send_to_ttl`] if the socket can take the datagram now.
    ///
    /// The TTL goes as ancillary data of one `sendmsg` (`IP_TTL`, or `IPV6_HOPLIMIT` for
    /// IPv6 destinations). A kernel that refuses that makes the socket fall back to setting
    /// and restoring the socket's TTL around the send, under a lock that every send on the
    /// socket then takes, so stream packets never leave with the probe's TTL.
    pub fn try_send_to_ttl(&self, datagram: &[u8], to: SocketAddr, ttl: u8) -> Result<(), Error> {
        send_ttl_or_plain(&self.io, datagram, to, ttl)?;
        Ok(())
    }

    /// The next datagram that is not a packet for a live stream: dht-rpc messages,
    /// holepunch probes, and UDX packets for unknown ids (as in JS). `None` once the socket
    /// is closed (or closing). One consumer at a time.
    pub async fn recv_datagram(&self) -> Option<(Vec<u8>, SocketAddr)> {
        poll_fn(|cx| self.poll_recv_datagram(cx)).await
    }

    /// Polls for the next datagram for the owner (see [`UdxSocket::recv_datagram`]).
    pub fn poll_recv_datagram(&self, cx: &mut Context<'_>) -> Poll<Option<(Vec<u8>, SocketAddr)>> {
        let mut st = self.shared.lock();
        let Some(e) = st.sockets.get_mut(self.io.id) else {
            return Poll::Ready(None);
        };
        if let Some(d) = e.datagrams.pop_front() {
            return Poll::Ready(Some(d));
        }
        if e.closing {
            return Poll::Ready(None);
        }
        e.datagram_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Creates a stream with a fresh random id (unique in the instance, as hyperdht draws
    /// them), made on this socket: [`UdxStream::connect`] connects it here. It is not
    /// connected yet, and keeps the socket open while it lives.
    pub fn create_stream(&self, config: StreamConfig) -> Result<UdxStream, Error> {
        create_on(&self.shared, self.io.id, None, config)
    }

    /// [`UdxSocket::create_stream`] with a chosen id (hyperdht exchanges ids in its
    /// handshake).
    pub fn create_stream_with_id(&self, id: u32, config: StreamConfig) -> Result<UdxStream, Error> {
        create_on(&self.shared, self.io.id, Some(id), config)
    }

    /// Streams on this socket: connected here, or made here and not connected yet (live or
    /// lingering in TIME_WAIT). [`Udx::stream_count`] counts the whole instance.
    pub fn stream_count(&self) -> usize {
        let id = self.io.id;
        self.shared
            .lock()
            .streams
            .values()
            .filter(|s| s.is_on(id))
            .count()
    }

    /// True until the socket is closed (by [`UdxSocket::close`], or because nothing used it
    /// any more, or because its runtime shut down).
    pub fn is_open(&self) -> bool {
        self.shared.lock().sockets.is_open(self.io.id)
    }

    /// Counters.
    pub fn stats(&self) -> SocketStats {
        if let Some(e) = self.shared.lock().sockets.get(self.io.id) {
            return e.stats.clone();
        }
        self.io.final_stats().unwrap_or_default()
    }

    /// Closes the socket: every stream on it is destroyed (a DESTROY goes to each connected
    /// peer), pending owner datagrams are dropped, and it goes once those packets are out.
    /// Streams on the instance's other sockets are not affected.
    pub fn close(&self) {
        close_socket(&self.shared, self.io.id);
    }
}

/// A TTL send, or a plain one for `ttl == 0` (under the fallback's lock if it is in use).
fn send_ttl_or_plain(io: &SocketIo, datagram: &[u8], to: SocketAddr, ttl: u8) -> io::Result<()> {
    if ttl == 0 {
        let _g = io.send_guard();
        return socket2::SockRef::from(&io.io)
            .send_to(datagram, &to.into())
            .map(|_| ());
    }
    io.send_ttl(datagram, to, ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_ttl_fallback_restores_the_socket_ttl_and_delivers() {
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let a = UdxSocket::bind(lo).await.unwrap();
        let b = UdxSocket::bind(lo).await.unwrap();
        a.io.ttl_fallback.store(true, Ordering::Relaxed);
        let before = socket2::SockRef::from(&a.io.io).ttl_v4().unwrap();
        a.send_to_ttl(&[0x00], b.local_addr(), 5).await.unwrap();
        a.try_send_to_ttl(&[0x01], b.local_addr(), 5).unwrap();
        assert_eq!(socket2::SockRef::from(&a.io.io).ttl_v4().unwrap(), before);
        for want in [0x00, 0x01] {
            let (d, _) =
                tokio::time::timeout(std::time::Duration::from_secs(10), b.recv_datagram())
                    .await
                    .unwrap()
                    .unwrap();
            assert_eq!(d, [want]);
        }
    }
}
