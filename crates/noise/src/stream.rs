//! The secret stream: `@hyperswarm/secret-stream` over any `AsyncRead + AsyncWrite`.
//!
//! Wire format (both directions):
//! 1. Noise handshake messages, each framed as `uint24le length || message` (skipped when the
//!    stream starts from a [`HandshakeResult`], as hyperdht does);
//! 2. one header frame: `uint24le(56) || stream id (32) || secretstream header (24)`, where the
//!    stream id is `BLAKE2b-256(key = handshake hash, NS_INITIATOR or NS_RESPONDER)` of the
//!    sender's role;
//! 3. messages: `uint24le(len) || crypto_secretstream_xchacha20poly1305_push(msg)`.
//!
//! Each write is one message, as in JS; message boundaries are visible through
//! [`SecretStream::recv`] (protomux relies on them) and invisible through `AsyncRead`.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use corenet_codec::hash::{blake2b_256_keyed, namespace};
use corenet_codec::PublicKey;
use rand::RngCore;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::error::Error;
use crate::handshake::{Handshake, HandshakeError, HandshakeOptions, HandshakeResult, Pattern};
use crate::keypair::KeyPair;
use crate::secretstream::{self, Pull, Push, ABYTES, TAG_MESSAGE};

/// Largest length a `uint24le` frame can announce.
pub const MAX_FRAME_LEN: usize = 0xFF_FFFF;
/// Length of the header frame's body: stream id and secretstream header.
pub const HEADER_FRAME_LEN: usize = 32 + secretstream::HEADER_LEN;
/// Default limit on a received frame (the whole `uint24` range, as in JS).
pub const DEFAULT_MAX_FRAME_LEN: usize = MAX_FRAME_LEN;
/// Default amount of encrypted, unsent data above which writes wait for the transport.
pub const DEFAULT_WRITE_BUFFER: usize = 256 * 1024;
/// Default limit on the whole handshake: a remote that stalls it is dropped after this.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most the reader asks the transport for at a time.
const READ_CHUNK: usize = 64 * 1024;
/// What an idle stream reads with: buffers start small and double (up to [`READ_CHUNK`])
/// while reads keep filling them, so an idle connection costs little memory.
const MIN_READ_CHUNK: usize = 4 * 1024;

/// Counts of the encrypted message bytes a [`SecretStream`] moved, readable from anywhere
/// (JS `rawBytesRead` / `rawBytesWritten`): frames after the header, keepalives included.
/// A clone shares the counts and stays valid after the stream moved (into a mux, say), so the
/// owner of a connection can tell whether traffic went both ways (hyperswarm's "established"
/// check).
#[derive(Debug, Clone, Default)]
pub struct Traffic(Arc<TrafficCounts>);

#[derive(Debug, Default)]
struct TrafficCounts {
    read: AtomicU64,
    written: AtomicU64,
}

impl Traffic {
    /// Encrypted message bytes received (length prefixes excluded, as in JS).
    pub fn read(&self) -> u64 {
        self.0.read.load(Ordering::Relaxed)
    }

    /// Encrypted message bytes queued for the transport (length prefixes included, as in JS).
    pub fn written(&self) -> u64 {
        self.0.written.load(Ordering::Relaxed)
    }
}

/// The secret-stream namespace: initiator id, responder id, unordered-send key.
pub fn stream_namespaces() -> [[u8; 32]; 3] {
    namespace("hyperswarm/secret-stream", [0, 1, 2])
}

/// The stream id a side with role `is_initiator` sends in its header frame.
pub fn stream_id(handshake_hash: &[u8; 64], is_initiator: bool) -> [u8; 32] {
    let [ns_initiator, ns_responder, _] = stream_namespaces();
    blake2b_256_keyed(
        handshake_hash,
        if is_initiator {
            &ns_initiator
        } else {
            &ns_responder
        },
    )
}

/// Settings of a [`SecretStream`]. Every setter states its default.
#[derive(Debug, Clone)]
pub struct Config {
    /// Longest frame accepted from the remote.
    max_frame_len: usize,
    /// Encrypted bytes buffered before writes wait.
    write_buffer: usize,
    /// Send an empty message after this long without writing.
    keepalive: Option<Duration>,
    /// Fail when nothing arrives for this long.
    timeout: Option<Duration>,
    /// Fail [`SecretStream::new`] when the handshake takes longer.
    handshake_timeout: Option<Duration>,
    /// The remote key we insist on, if any.
    remote_public_key: Option<PublicKey>,
    /// Handshake pattern for [`SecretStream::new`].
    pattern: Pattern,
    /// Seed for ephemeral keys and the stream header; `None` is the OS RNG.
    rng_seed: Option<[u8; 32]>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            write_buffer: DEFAULT_WRITE_BUFFER,
            keepalive: None,
            timeout: None,
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
            remote_public_key: None,
            pattern: Pattern::XX,
            rng_seed: None,
        }
    }
}

impl Config {
    /// Longest frame accepted from the remote; longer ones fail the stream with
    /// [`Error::FrameTooLarge`] before anything is allocated for them. It also caps what one
    /// write sends. Default: [`DEFAULT_MAX_FRAME_LEN`] (16 MiB - 1, the `uint24` range).
    pub fn with_max_frame_len(mut self, max: usize) -> Self {
        self.max_frame_len = max.clamp(HEADER_FRAME_LEN, MAX_FRAME_LEN);
        self
    }

    /// Encrypted bytes held for the transport before writes wait. Default:
    /// [`DEFAULT_WRITE_BUFFER`] (256 KiB).
    pub fn with_write_buffer(mut self, bytes: usize) -> Self {
        self.write_buffer = bytes.max(1);
        self
    }

    /// Send an empty message after `interval` without writes, so that NATs and the remote's
    /// idle timeout see traffic. Default: off. Keepalives go out while the stream is polled
    /// (a task that reads it is enough).
    pub fn with_keepalive(mut self, interval: Duration) -> Self {
        self.keepalive = Some(interval);
        self
    }

    /// Fail with [`Error::TimedOut`] when nothing arrives for `timeout` (the handshake
    /// included). Default: off.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Fail [`SecretStream::new`] with [`Error::TimedOut`] when the whole handshake takes
    /// longer than `timeout` (`None`: no limit), so that a remote that opens a connection and
    /// stalls does not hold it. Default: [`DEFAULT_HANDSHAKE_TIMEOUT`] (10 s).
    pub fn with_handshake_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Refuse the stream unless the remote proves this static key. Default: any key.
    pub fn with_remote_public_key(mut self, key: PublicKey) -> Self {
        self.remote_public_key = Some(key);
        self
    }

    /// Handshake pattern for [`SecretStream::new`]. Default: [`Pattern::XX`]. `IK` needs
    /// [`Config::with_remote_public_key`] on the initiator.
    pub fn with_pattern(mut self, pattern: Pattern) -> Self {
        self.pattern = pattern;
        self
    }

    /// Seed the RNG for ephemeral keys and the stream header (tests and simulations only).
    /// Default: the OS RNG.
    pub fn with_rng_seed(mut self, seed: [u8; 32]) -> Self {
        self.rng_seed = Some(seed);
        self
    }
}

/// A timer that re-arms itself. The tokio sleep is created on first poll, so a stream can be
/// built outside a runtime.
struct Timer {
    /// Interval.
    period: Duration,
    /// The pending sleep, once polled.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Timer {
    fn new(period: Duration) -> Self {
        Timer {
            period,
            sleep: None,
        }
    }
    fn reset(&mut self) {
        if let Some(s) = &mut self.sleep {
            s.as_mut().reset(Instant::now() + self.period);
        }
    }
    /// True (and re-armed) when the period has elapsed.
    fn poll_fired(&mut self, cx: &mut Context<'_>) -> bool {
        let period = self.period;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(period)));
        if sleep.as_mut().poll(cx).is_ready() {
            sleep.as_mut().reset(Instant::now() + period);
            // Register the new deadline with the waker.
            let _ = sleep.as_mut().poll(cx);
            true
        } else {
            false
        }
    }
}

/// Encryption state, once the handshake is done.
struct Crypto {
    /// Outgoing secretstream.
    push: Push,
    /// Incoming secretstream; `None` until the remote's header frame arrives.
    pull: Option<Pull>,
    /// The key the remote's header frame must use to derive `pull`.
    rx: zeroize::Zeroizing<[u8; 32]>,
    /// Handshake facts.
    result: HandshakeResult,
}

/// A Noise-encrypted, authenticated duplex over `S`, compatible with
/// `@hyperswarm/secret-stream`.
///
/// ```
/// use corenet_noise::{Config, KeyPair, SecretStream};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), corenet_noise::Error> {
/// let (a, b) = tokio::io::duplex(64 * 1024);
/// let (ka, kb) = (KeyPair::generate(), KeyPair::generate());
/// let expect = kb.public_key();
/// let client = tokio::spawn(async move {
///     let cfg = Config::default().with_remote_public_key(expect);
///     let mut s = SecretStream::new(a, true, &ka, cfg).await?;
///     s.send(b"hello").await?;
///     s.shutdown().await?;
///     Ok::<_, corenet_noise::Error>(s.handshake_hash())
/// });
/// let mut server = SecretStream::new(b, false, &kb, Config::default()).await?;
/// assert_eq!(server.recv().await?.as_deref(), Some(&b"hello"[..]));
/// assert_eq!(server.recv().await?, None); // the client shut down its side
/// assert_eq!(client.await.unwrap()?, server.handshake_hash());
/// # Ok(()) }
/// ```
pub struct SecretStream<S> {
    /// The transport.
    io: S,
    /// Settings.
    config: Config,
    /// Raw bytes read and not yet parsed into frames.
    rbuf: BytesMut,
    /// Current read size (adapts between [`MIN_READ_CHUNK`] and [`READ_CHUNK`]).
    read_chunk: usize,
    /// Encrypted bytes waiting for the transport.
    wbuf: BytesMut,
    /// Plaintext of the message being consumed through `AsyncRead`.
    readable: Bytes,
    /// Keys; `None` during the handshake.
    crypto: Option<Crypto>,
    /// The transport reported end of input.
    read_eof: bool,
    /// We shut down our write side.
    write_closed: bool,
    /// The transport's shutdown completed.
    shutdown_done: bool,
    /// The first fatal error; later calls return it again.
    failed: Option<Error>,
    /// The transport refused a write. Writes fail from then on, but what was already received
    /// can still be read (the remote may have sent its last messages and gone).
    write_failed: Option<Error>,
    /// Sends an empty message after a quiet period.
    keepalive: Option<Timer>,
    /// Fails the stream after a quiet period on the read side.
    timeout: Option<Timer>,
    /// Message bytes moved, shared with [`SecretStream::traffic`] handles.
    traffic: Traffic,
    /// The waker handed to the transport's `poll_write`: it wakes both the read-side and
    /// the write-side task (see [`FlushWaker`]).
    flush_waker: Arc<FlushWaker>,
    /// `flush_waker` as a [`Waker`], made once.
    flush_waker_handle: Waker,
}

/// Which side of the stream is flushing buffered ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Read,
    Write,
}

/// Both the read path (keepalives, the header frame) and the write path flush the one
/// ciphertext buffer through the transport's single write-waker slot. When the two sides
/// are polled by different tasks (`tokio::io::split`), the transport would keep only the
/// last task's waker and the other, waiting for room, would never wake. The transport is
/// given this waker instead, which wakes whichever tasks are waiting on either side.
#[derive(Debug, Default)]
struct FlushWaker {
    read: Mutex<Option<Waker>>,
    write: Mutex<Option<Waker>>,
}

impl FlushWaker {
    fn register(&self, side: Side, waker: &Waker) {
        let slot = match side {
            Side::Read => &self.read,
            Side::Write => &self.write,
        };
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }
}

impl Wake for FlushWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let take = |m: &Mutex<Option<Waker>>| m.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (r, w) = (take(&self.read), take(&self.write));
        for waker in [r, w].into_iter().flatten() {
            waker.wake();
        }
    }
}

impl<S> fmt::Debug for SecretStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("SecretStream");
        if let Some(c) = &self.crypto {
            d.field("initiator", &c.result.is_initiator)
                .field("remote_public_key", &c.result.remote_public_key);
        }
        d.field("read_eof", &self.read_eof)
            .field("write_closed", &self.write_closed)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> SecretStream<S> {
    /// Runs the Noise handshake (pattern from the config, XX by default, empty prologue) over
    /// `io` and sets up the encrypted stream. Returns once the handshake is done and our last
    /// handshake message is written; our header frame is handed to the transport as far as it
    /// takes it without waiting, and the rest goes out with the next poll of the stream (any
    /// read, write or flush). The remote's header is read with its first message.
    pub async fn new(
        io: S,
        is_initiator: bool,
        key_pair: &KeyPair,
        config: Config,
    ) -> Result<Self, Error> {
        let mut stream = Self::bare(io, config);
        let options = HandshakeOptions {
            prologue: Vec::new(),
            remote_public_key: stream.config.remote_public_key,
            rng_seed: stream.config.rng_seed,
        };
        let hs = Handshake::new(stream.config.pattern, is_initiator, key_pair, options)?;
        let done = match stream.config.handshake_timeout {
            Some(limit) => tokio::time::timeout(limit, stream.run_handshake(hs))
                .await
                .unwrap_or(Err(Error::TimedOut(limit))),
            None => stream.run_handshake(hs).await,
        };
        match done {
            Ok(result) => {
                stream.install(result);
                // Write what the transport takes now without waiting: if both sides waited
                // for their header frames to drain, transports with buffers smaller than a
                // frame would deadlock. The rest goes out with the next poll.
                // A refused write is recorded for the write side; what the remote already
                // sent can still be read.
                poll_fn(|cx| {
                    let _ = stream.poll_flush_wbuf(Side::Write, cx);
                    Poll::Ready(())
                })
                .await;
                Ok(stream)
            }
            Err(e) => {
                // Best effort: tell the transport we are done.
                let _ = poll_fn(|cx| Pin::new(&mut stream.io).poll_shutdown(cx)).await;
                Err(e)
            }
        }
    }

    /// Starts the encrypted stream from a finished handshake (hyperdht carries the Noise IK
    /// messages inside DHT requests, then starts here at the header frame). The header frame
    /// goes out with the first poll of the stream.
    pub fn from_handshake(io: S, result: HandshakeResult, config: Config) -> Self {
        let mut stream = Self::bare(io, config);
        stream.install(result);
        stream
    }

    fn bare(io: S, config: Config) -> Self {
        let timeout = config.timeout.map(Timer::new);
        let flush_waker = Arc::new(FlushWaker::default());
        SecretStream {
            io,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            read_chunk: MIN_READ_CHUNK,
            readable: Bytes::new(),
            crypto: None,
            read_eof: false,
            write_closed: false,
            shutdown_done: false,
            failed: None,
            write_failed: None,
            keepalive: None,
            timeout,
            traffic: Traffic::default(),
            flush_waker_handle: Waker::from(flush_waker.clone()),
            flush_waker,
            config,
        }
    }

    async fn run_handshake(&mut self, mut hs: Handshake) -> Result<HandshakeResult, Error> {
        let pattern = self.config.pattern;
        let mut index = 0;
        while !hs.is_finished() {
            if hs.is_my_turn() {
                let msg = hs.write_message(&[])?;
                put_frame_header(&mut self.wbuf, msg.len());
                self.wbuf.extend_from_slice(&msg);
            } else {
                poll_fn(|cx| self.poll_flush_wbuf(Side::Write, cx)).await?;
                // A handshake message has one possible length: a longer frame is refused
                // from its length prefix, before anything is read or reserved for it.
                let expected = Handshake::message_len(pattern, index, 0);
                let frame = poll_fn(|cx| self.poll_raw_frame(expected, cx))
                    .await
                    .map_err(|e| match e {
                        Error::FrameTooLarge { len, .. } => HandshakeError::WrongSize {
                            index,
                            len,
                            expected,
                        }
                        .into(),
                        e => e,
                    })?
                    .ok_or(Error::UnexpectedEof("during the handshake"))?;
                if frame.len() != expected {
                    return Err(HandshakeError::WrongSize {
                        index,
                        len: frame.len(),
                        expected,
                    }
                    .into());
                }
                hs.read_message(&frame)?;
            }
            index += 1;
        }
        // The remote is waiting for our last handshake message: it must go out now.
        poll_fn(|cx| self.poll_flush_wbuf(Side::Write, cx)).await?;
        Ok(hs.finish()?)
    }

    /// Sets up the secretstream and queues our header frame.
    fn install(&mut self, result: HandshakeResult) {
        let mut header = [0u8; secretstream::HEADER_LEN];
        match self.config.rng_seed {
            Some(seed) => {
                use rand::SeedableRng;
                let mut seed = seed;
                seed[0] ^= 0x5a; // a different stream than the ephemeral keys
                rand_chacha::ChaChaRng::from_seed(seed).fill_bytes(&mut header);
            }
            None => rand::rngs::OsRng.fill_bytes(&mut header),
        }
        let push = Push::new(&result.tx, &header);
        put_frame_header(&mut self.wbuf, HEADER_FRAME_LEN);
        self.wbuf
            .put_slice(&stream_id(&result.hash, result.is_initiator));
        self.wbuf.put_slice(&header);
        self.keepalive = self.config.keepalive.map(Timer::new);
        self.crypto = Some(Crypto {
            push,
            pull: None,
            rx: result.rx.clone(),
            result,
        });
    }

    /// The message bytes this stream moves, counted from now on wherever the stream goes.
    pub fn traffic(&self) -> Traffic {
        self.traffic.clone()
    }

    /// The remote's static public key, authenticated by the handshake.
    pub fn remote_public_key(&self) -> PublicKey {
        self.result().remote_public_key
    }

    /// Our static public key.
    pub fn public_key(&self) -> PublicKey {
        self.result().local_public_key
    }

    /// Releases the write buffer's storage if it holds nothing (it grows to the largest burst
    /// written, and stays allocated after it was written out). A multiplexer calls this when
    /// it goes idle, so that a connection that once sent large messages does not keep their
    /// buffer.
    pub fn release_write_buffer(&mut self) {
        if self.wbuf.is_empty() {
            self.wbuf = BytesMut::new();
        }
    }

    /// The 64-byte handshake hash both sides share.
    pub fn handshake_hash(&self) -> [u8; 64] {
        self.result().hash
    }

    /// True when we sent the first handshake message.
    pub fn is_initiator(&self) -> bool {
        self.result().is_initiator
    }

    fn result(&self) -> &HandshakeResult {
        // Every public constructor installs the keys before returning the stream.
        match &self.crypto {
            Some(c) => &c.result,
            None => unreachable!("secret stream used before its handshake finished"),
        }
    }

    /// The transport.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The transport, mutably (reading or writing it directly corrupts the stream).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Sends one message and waits until the transport has taken it.
    pub async fn send(&mut self, msg: &[u8]) -> Result<(), Error> {
        poll_fn(|cx| self.poll_send(cx, msg)).await?;
        poll_fn(|cx| self.poll_flush_all(cx)).await
    }

    /// Receives the next message; `Ok(None)` when the remote ended its side cleanly. Empty
    /// messages (keepalives) are skipped. The returned bytes share the read buffer; no copy.
    pub async fn recv(&mut self) -> Result<Option<Bytes>, Error> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Ends our side (the remote reads end of stream) after flushing; reading continues.
    pub async fn shutdown(&mut self) -> Result<(), Error> {
        poll_fn(|cx| self.poll_close(cx)).await
    }

    /// Sends an empty message now.
    pub async fn send_keepalive(&mut self) -> Result<(), Error> {
        self.send(&[]).await
    }

    fn fail(&mut self, e: Error) -> Error {
        tracing::debug!(error = %e, "secret stream failed");
        if self.failed.is_none() {
            self.failed = Some(e.clone());
            // Closing: drop what we hold; the owner drops the transport.
            self.rbuf = BytesMut::new();
            self.wbuf = BytesMut::new();
            self.readable = Bytes::new();
        }
        e
    }

    fn check(&self) -> Result<(), Error> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn check_write(&self) -> Result<(), Error> {
        self.check()?;
        match &self.write_failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn fail_write(&mut self, e: io::Error) -> Error {
        let e = Error::from(e);
        tracing::debug!(error = %e, "secret stream transport refused a write");
        self.wbuf = BytesMut::new();
        self.keepalive = None;
        self.write_failed.get_or_insert(e).clone()
    }

    /// Queues one message for sending. Ready once it is encrypted into the write buffer
    /// (waits while the buffer is over its limit).
    pub fn poll_send(&mut self, cx: &mut Context<'_>, msg: &[u8]) -> Poll<Result<(), Error>> {
        self.check_write()?;
        if self.write_closed {
            return Poll::Ready(Err(Error::WriteClosed));
        }
        let max = self.config.max_frame_len - ABYTES;
        if msg.len() > max {
            return Poll::Ready(Err(Error::MessageTooLarge {
                len: msg.len(),
                max,
            }));
        }
        if self.wbuf.len() >= self.config.write_buffer {
            ready!(self.poll_flush_wbuf(Side::Write, cx))?;
        }
        self.encrypt(msg);
        if let Some(k) = &mut self.keepalive {
            k.reset();
        }
        // Start writing now; if the transport is busy, the waker is registered.
        if let Poll::Ready(Err(e)) = self.poll_flush_wbuf(Side::Write, cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(()))
    }

    fn encrypt(&mut self, msg: &[u8]) {
        let Some(crypto) = &mut self.crypto else {
            return;
        };
        if self.write_failed.is_some() {
            return;
        }
        let len = msg.len() + ABYTES;
        self.traffic
            .0
            .written
            .fetch_add((3 + len) as u64, Ordering::Relaxed);
        self.wbuf.reserve(3 + len);
        put_frame_header(&mut self.wbuf, len);
        let start = self.wbuf.len();
        self.wbuf.put_u8(0);
        self.wbuf.put_slice(msg);
        self.wbuf.put_bytes(0, 16);
        crypto
            .push
            .push_in_place(&mut self.wbuf[start..], TAG_MESSAGE);
    }

    /// Writes buffered ciphertext to the transport until it is empty. `side` says which
    /// side's task is polling: it is woken when the transport has room again.
    fn poll_flush_wbuf(&mut self, side: Side, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.check_write()?;
        if self.wbuf.is_empty() {
            return Poll::Ready(Ok(()));
        }
        self.flush_waker.register(side, cx.waker());
        let mut tcx = Context::from_waker(&self.flush_waker_handle);
        while !self.wbuf.is_empty() {
            match Pin::new(&mut self.io).poll_write(&mut tcx, &self.wbuf) {
                Poll::Ready(Ok(0)) => {
                    let e = io::Error::new(io::ErrorKind::WriteZero, "transport took no bytes");
                    return Poll::Ready(Err(self.fail_write(e)));
                }
                Poll::Ready(Ok(n)) => self.wbuf.advance(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.fail_write(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.wbuf.clear();
        Poll::Ready(Ok(()))
    }

    fn poll_flush_all(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.check_write()?;
        self.poll_timers(Side::Write, cx)?;
        ready!(self.poll_flush_wbuf(Side::Write, cx))?;
        match ready!(Pin::new(&mut self.io).poll_flush(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(self.fail_write(e))),
        }
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.check_write()?;
        ready!(self.poll_flush_wbuf(Side::Write, cx))?;
        self.write_closed = true;
        self.keepalive = None;
        if !self.shutdown_done {
            if let Err(e) = ready!(Pin::new(&mut self.io).poll_shutdown(cx)) {
                return Poll::Ready(Err(self.fail_write(e)));
            }
            self.shutdown_done = true;
        }
        Poll::Ready(Ok(()))
    }

    /// Keepalive and idle timeout.
    fn poll_timers(&mut self, side: Side, cx: &mut Context<'_>) -> Result<(), Error> {
        if let Some(t) = &mut self.timeout {
            if t.poll_fired(cx) {
                let period = t.period;
                return Err(self.fail(Error::TimedOut(period)));
            }
        }
        let fire = match &mut self.keepalive {
            Some(k) if !self.write_closed => k.poll_fired(cx),
            _ => false,
        };
        if fire && self.wbuf.len() < self.config.write_buffer {
            self.encrypt(&[]);
            // A refused write is recorded for the write side; reading goes on.
            let _ = self.poll_flush_wbuf(side, cx);
        }
        Ok(())
    }

    /// Reads the next raw frame body (without its length prefix); a frame announced longer
    /// than `max` fails with [`Error::FrameTooLarge`].
    fn poll_raw_frame(
        &mut self,
        max: usize,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<BytesMut>, Error>> {
        loop {
            self.poll_timers(Side::Read, cx)?;
            if self.rbuf.len() >= 3 {
                let len = usize::from(self.rbuf[0])
                    | usize::from(self.rbuf[1]) << 8
                    | usize::from(self.rbuf[2]) << 16;
                if len > max {
                    return Poll::Ready(Err(self.fail(Error::FrameTooLarge { len, max })));
                }
                if self.rbuf.len() >= 3 + len {
                    let mut frame = self.rbuf.split_to(3 + len);
                    frame.advance(3);
                    return Poll::Ready(Ok(Some(frame)));
                }
                // Grow with what arrives, never by what the remote announced: a peer that
                // announces a 16 MiB frame and sends nothing more costs one read chunk.
                let missing = 3 + len - self.rbuf.len();
                self.rbuf.reserve(missing.min(self.read_chunk));
            } else {
                self.rbuf.reserve(self.read_chunk);
            }
            if self.read_eof {
                if self.rbuf.is_empty() {
                    return Poll::Ready(Ok(None));
                }
                return Poll::Ready(Err(self.fail(Error::UnexpectedEof("inside a frame"))));
            }
            let spare = self.rbuf.capacity() - self.rbuf.len();
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf) {
                Poll::Ready(Ok(0)) => self.read_eof = true,
                Poll::Ready(Ok(n)) => {
                    if n >= spare {
                        // The transport had more than we asked for: read bigger next time.
                        self.read_chunk = (self.read_chunk * 2).min(READ_CHUNK);
                    }
                    if let Some(t) = &mut self.timeout {
                        t.reset();
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.fail(e.into()))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Polls for the next message; see [`SecretStream::recv`].
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Error>> {
        self.check()?;
        // Keep our side moving (the header frame, keepalives) while we wait to read; a
        // refused write is recorded for the write side and does not stop reading.
        let _ = self.poll_flush_wbuf(Side::Read, cx);
        loop {
            let max = self.config.max_frame_len;
            let Some(mut frame) = ready!(self.poll_raw_frame(max, cx))? else {
                return Poll::Ready(Ok(None));
            };
            let Some(crypto) = &mut self.crypto else {
                return Poll::Ready(Err(self.fail(Error::InvalidHeader("stream not set up"))));
            };
            let Some(pull) = &mut crypto.pull else {
                if frame.len() != HEADER_FRAME_LEN {
                    return Poll::Ready(Err(self.fail(Error::InvalidHeader("wrong length"))));
                }
                let expected = stream_id(&crypto.result.hash, !crypto.result.is_initiator);
                if frame[..32] != expected {
                    return Poll::Ready(Err(self.fail(Error::InvalidHeader("wrong stream id"))));
                }
                let mut header = [0u8; secretstream::HEADER_LEN];
                header.copy_from_slice(&frame[32..]);
                crypto.pull = Some(Pull::new(&crypto.rx, &header));
                continue;
            };
            if pull.pull_in_place(&mut frame).is_err() {
                return Poll::Ready(Err(self.fail(Error::Decrypt)));
            }
            self.traffic
                .0
                .read
                .fetch_add(frame.len() as u64, Ordering::Relaxed);
            let end = frame.len() - 16;
            frame.truncate(end);
            frame.advance(1);
            if frame.is_empty() {
                continue; // keepalive
            }
            return Poll::Ready(Ok(Some(frame.freeze())));
        }
    }
}

fn put_frame_header(buf: &mut BytesMut, len: usize) {
    corenet_codec::encode::u24(buf, len as u32);
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for SecretStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.readable.is_empty() {
            match ready!(this.poll_recv(cx)) {
                Ok(Some(msg)) => this.readable = msg,
                Ok(None) => return Poll::Ready(Ok(())),
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
        let n = this.readable.len().min(buf.remaining());
        buf.put_slice(&this.readable[..n]);
        this.readable.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for SecretStream<S> {
    /// Each call sends one message of up to the frame limit.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = buf.len().min(this.config.max_frame_len - ABYTES);
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        match ready!(this.poll_send(cx, &buf[..n])) {
            Ok(()) => Poll::Ready(Ok(n)),
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_flush_all(cx).map_err(Into::into)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_close(cx).map_err(Into::into)
    }
}
