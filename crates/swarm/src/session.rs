//! Connections and the `SessionActor` that watches each one.
//!
//! A [`Connection`] is handed to the application: it is the encrypted stream itself
//! (`AsyncRead + AsyncWrite`, no hop through an actor per read or write) plus a small shared
//! state that counts bytes and carries the swarm's decision to close it (a duplicate that
//! lost the tie-break). The `SessionActor` for that connection reports its end to the swarm.

use corenet_dht::PathKind;
use std::io;
use std::net::SocketAddrV4;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Instant;

use actix::prelude::*;
use corenet_codec::PublicKey;
use corenet_noise::SecretStream;
use corenet_udx::UdxStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::core::connections::ConnId;

/// How the bytes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// A UDX stream (hyperdht).
    Udx,
}

/// Facts about a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The swarm's id for it.
    pub id: ConnId,
    /// The peer's public key (proven by Noise).
    pub remote_public_key: PublicKey,
    /// The peer's address.
    pub remote_address: SocketAddrV4,
    /// We dialled it.
    pub is_initiator: bool,
    /// The transport.
    pub transport: Transport,
    /// How its packets travel (when it opened: a relayed connection may move to a direct
    /// path later).
    pub path: PathKind,
}

/// State shared by a connection, its session actor and the swarm.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// A relayed connection's relay link: it lives as long as the connection.
    pub(crate) relay: Option<corenet_dht::RelayLink>,
    pub(crate) bytes_read: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    /// Set when the swarm closes the connection (the reason is kept).
    pub(crate) aborted: AtomicBool,
    pub(crate) reason: Mutex<Option<String>>,
    /// Wakes a pending read or write when the connection is aborted.
    pub(crate) wakers: Mutex<Vec<Waker>>,
    /// The connection ended (EOF, error, drop); reported once.
    pub(crate) ended: AtomicBool,
    /// Who to tell when it ends.
    pub(crate) on_end: Mutex<Option<Recipient<ConnectionEnded>>>,
    /// The secret stream's own counts, which go on when the stream leaves the connection
    /// ([`Connection::into_parts`], for a mux).
    pub(crate) traffic: Option<corenet_noise::Traffic>,
}

impl Shared {
    /// Sent and received bytes both: an established connection (hyperswarm checks the
    /// secret stream's `rawBytesRead` and `rawBytesWritten`). The stream's counts see every
    /// message, however the stream is used; the connection's own counts (and
    /// [`SessionGuard::count`]) are the fallback.
    pub(crate) fn established(&self) -> bool {
        let own = self.bytes_read.load(Ordering::Relaxed) > 0
            && self.bytes_written.load(Ordering::Relaxed) > 0;
        own || self
            .traffic
            .as_ref()
            .is_some_and(|t| t.read() > 0 && t.written() > 0)
    }

    pub(crate) fn abort(&self, reason: &str) {
        if let Ok(mut r) = self.reason.lock() {
            r.get_or_insert_with(|| reason.to_owned());
        }
        self.aborted.store(true, Ordering::Release);
        if let Ok(mut w) = self.wakers.lock() {
            for w in w.drain(..) {
                w.wake();
            }
        }
    }

    fn end(&self) {
        if self.ended.swap(true, Ordering::AcqRel) {
            return;
        }
        let recipient = self.on_end.lock().ok().and_then(|mut r| r.take());
        if let Some(r) = recipient {
            // One message per connection lifetime; a full mailbox means the session is gone.
            let _ = r.try_send(ConnectionEnded);
        }
    }

    fn aborted_error(&self) -> io::Error {
        let reason = self
            .reason
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .unwrap_or_else(|| "connection closed by the swarm".into());
        io::Error::new(io::ErrorKind::ConnectionAborted, reason)
    }
}

/// An encrypted connection to a peer: read and write it like a socket. Each write is one
/// secret-stream message; [`Connection::stream_mut`] gives the message interface.
#[derive(Debug)]
pub struct Connection {
    /// Always `Some` until [`Connection::into_parts`] takes it.
    stream: Option<SecretStream<UdxStream>>,
    info: ConnectionInfo,
    shared: Arc<Shared>,
}

impl Connection {
    pub(crate) fn new(
        stream: SecretStream<UdxStream>,
        info: ConnectionInfo,
        shared: Arc<Shared>,
    ) -> Self {
        Connection {
            stream: Some(stream),
            info,
            shared,
        }
    }

    /// Facts about the connection.
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// The peer's public key.
    pub fn remote_public_key(&self) -> PublicKey {
        self.info.remote_public_key
    }

    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddrV4 {
        self.info.remote_address
    }

    /// We dialled it.
    pub fn is_initiator(&self) -> bool {
        self.info.is_initiator
    }

    /// The 64-byte Noise handshake hash.
    pub fn handshake_hash(&self) -> [u8; 64] {
        self.stream().handshake_hash()
    }

    fn stream(&self) -> &SecretStream<UdxStream> {
        #[allow(clippy::expect_used)] // only into_parts takes it, consuming the connection
        self.stream
            .as_ref()
            .expect("a connection always holds its stream")
    }

    fn stream_pin(&mut self) -> Pin<&mut SecretStream<UdxStream>> {
        #[allow(clippy::expect_used)] // as above
        Pin::new(
            self.stream
                .as_mut()
                .expect("a connection always holds its stream"),
        )
    }

    /// Bytes read and written so far (plaintext).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.shared.bytes_read.load(Ordering::Relaxed),
            self.shared.bytes_written.load(Ordering::Relaxed),
        )
    }

    /// The secret stream (message-level `send` / `recv`, as protomux needs). Bytes moved
    /// through it directly are not counted.
    pub fn stream_mut(&mut self) -> &mut SecretStream<UdxStream> {
        self.stream_pin().get_mut()
    }

    /// Splits the connection into its secret stream (for a protocol that needs the message
    /// interface, such as protomux) and a [`SessionGuard`] that keeps the swarm's bookkeeping:
    /// drop the guard when the stream is done, and watch [`SessionGuard::aborted`] to close the
    /// stream when the swarm drops the connection (a duplicate, a ban, shutdown).
    pub fn into_parts(mut self) -> (SecretStream<UdxStream>, SessionGuard) {
        let guard = SessionGuard {
            shared: self.shared.clone(),
            info: self.info.clone(),
        };
        // Dropping a Connection without its stream does not end the session: the guard does.
        #[allow(clippy::expect_used)] // only this consuming method takes it
        let stream = self
            .stream
            .take()
            .expect("a connection always holds its stream");
        (stream, guard)
    }

    /// The path its packets took when it opened.
    pub fn path(&self) -> PathKind {
        self.info.path
    }

    /// True while the connection runs through a blind relay (it may move to a direct path
    /// when a punch succeeds later).
    pub fn is_relayed(&self) -> bool {
        self.shared.relay.as_ref().is_some_and(|r| {
            r.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_some()
        })
    }

    /// Closes the connection at once (the peer sees it end with an error).
    pub fn destroy(&self) {
        self.stream().get_ref().destroy();
        self.shared.end();
    }

    fn check(&mut self, cx: &mut TaskContext<'_>) -> Result<(), io::Error> {
        if self.shared.aborted.load(Ordering::Acquire) {
            self.stream().get_ref().destroy();
            self.shared.end();
            return Err(self.shared.aborted_error());
        }
        if let Ok(mut w) = self.shared.wakers.lock() {
            if w.len() < 4 && !w.iter().any(|x| x.will_wake(cx.waker())) {
                w.push(cx.waker().clone());
            }
        }
        Ok(())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.stream.is_some() {
            self.shared.end();
        }
    }
}

/// Keeps a connection's session alive after [`Connection::into_parts`]: the swarm hears that
/// the connection ended when the guard is dropped (or [`SessionGuard::end`] is called).
#[derive(Debug)]
pub struct SessionGuard {
    shared: Arc<Shared>,
    info: ConnectionInfo,
}

impl SessionGuard {
    /// Facts about the connection.
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// Resolves with the reason when the swarm drops this connection (a duplicate that lost
    /// the tie-break, a ban, shutdown): close the stream then.
    pub async fn aborted(&self) -> String {
        std::future::poll_fn(|cx| {
            if self.shared.aborted.load(Ordering::Acquire) {
                let reason = self
                    .shared
                    .reason
                    .lock()
                    .ok()
                    .and_then(|r| r.clone())
                    .unwrap_or_default();
                return Poll::Ready(reason);
            }
            if let Ok(mut w) = self.shared.wakers.lock() {
                if w.len() < 4 && !w.iter().any(|x| x.will_wake(cx.waker())) {
                    w.push(cx.waker().clone());
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Adds bytes moved outside the connection's own reads and writes (by a mux over the
    /// stream) to the connection's counts. The swarm's "established" check does not need
    /// them: it also reads the secret stream's own counts, which follow the stream.
    pub fn count(&self, read: u64, written: u64) {
        self.shared.bytes_read.fetch_add(read, Ordering::Relaxed);
        self.shared
            .bytes_written
            .fetch_add(written, Ordering::Relaxed);
    }

    /// Reports the connection as ended now.
    pub fn end(self) {}
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.shared.end();
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        let before = buf.filled().len();
        let r = this.stream_pin().poll_read(cx, buf);
        match &r {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                if n == 0 {
                    this.shared.end();
                } else {
                    this.shared
                        .bytes_read
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            Poll::Ready(Err(_)) => this.shared.end(),
            Poll::Pending => {}
        }
        r
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check(cx)?;
        let r = this.stream_pin().poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            this.shared
                .bytes_written
                .fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        this.stream_pin().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream_pin().poll_shutdown(cx)
    }
}

/// Sent by a [`Connection`] to its session when it ends (EOF, error, or drop).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ConnectionEnded;

/// Sent by a session to the swarm when its connection is over.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SessionClosed {
    /// Which connection.
    pub id: ConnId,
    /// Whose.
    pub remote_public_key: PublicKey,
    /// We dialled it.
    pub is_initiator: bool,
}

/// `CloseSession`: the swarm closes a connection (a lost tie-break, a ban, shutdown).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CloseSession {
    /// Why; the application's reads and writes fail with it.
    pub reason: String,
}

/// `GetSessionStats`: bytes and age of a connection.
#[derive(Debug, Message)]
#[rtype(result = "SessionStats")]
pub struct GetSessionStats;

/// Counters of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionStats {
    /// Plaintext bytes read.
    pub bytes_read: u64,
    /// Plaintext bytes written.
    pub bytes_written: u64,
    /// Seconds since it opened.
    pub age_secs: u64,
}

/// One actor per connection: it watches the connection and tells the swarm when it ends.
#[derive(Debug)]
pub struct SessionActor {
    info: ConnectionInfo,
    shared: Arc<Shared>,
    swarm: Recipient<SessionClosed>,
    opened: Instant,
}

impl SessionActor {
    /// A session for a connection; `swarm` hears about its end.
    pub(crate) fn new(
        info: ConnectionInfo,
        shared: Arc<Shared>,
        swarm: Recipient<SessionClosed>,
    ) -> Self {
        SessionActor {
            info,
            shared,
            swarm,
            opened: Instant::now(),
        }
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Ok(mut r) = self.shared.on_end.lock() {
            *r = Some(ctx.address().recipient());
        }
        // The connection may have ended before the session started.
        if self.shared.ended.load(Ordering::Acquire) {
            ctx.stop();
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let _ = self.swarm.try_send(SessionClosed {
            id: self.info.id,
            remote_public_key: self.info.remote_public_key,
            is_initiator: self.info.is_initiator,
        });
    }
}

impl Handler<ConnectionEnded> for SessionActor {
    type Result = ();
    fn handle(&mut self, _: ConnectionEnded, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<CloseSession> for SessionActor {
    type Result = ();
    fn handle(&mut self, msg: CloseSession, ctx: &mut Self::Context) {
        self.shared.abort(&msg.reason);
        ctx.stop();
    }
}

impl Handler<GetSessionStats> for SessionActor {
    type Result = MessageResult<GetSessionStats>;
    fn handle(&mut self, _: GetSessionStats, _: &mut Self::Context) -> Self::Result {
        MessageResult(SessionStats {
            bytes_read: self.shared.bytes_read.load(Ordering::Relaxed),
            bytes_written: self.shared.bytes_written.load(Ordering::Relaxed),
            age_secs: self.opened.elapsed().as_secs(),
        })
    }
}
