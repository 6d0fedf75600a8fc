//! The `DhtActor`: an actix actor that owns the DHT's UDP sockets and drives the sans-IO
//! [`HyperDht`] core, and [`Dht`], a `Send + Sync + Clone` handle with async methods that
//! works from any tokio runtime (the actor runs on its own actix system thread unless started
//! inside an existing one).
//!
//! - Datagrams from both sockets arrive as actor stream items and go straight into the core.
//! - One actix timer is re-armed from [`HyperDht::poll_timeout`] after every input.
//! - Long-running operations return an id; their results come back through bounded channels
//!   (lookups stream records as they arrive).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use corenet_codec::PublicKey;
use corenet_noise::KeyPair;
use tokio::sync::{mpsc, oneshot};

use crate::hyper::messages::{MutableGet, PeerRecord};
use crate::hyper::{HyperConfig, HyperDht, HyperEvent, OpError, OpId, OpResult};
use crate::rpc::{self, Event as RpcEvent, SocketKind};

/// What the DHT needs from a UDP socket (shared with UDX streams in production).
pub trait DatagramSocket: Send + Sync + 'static {
    /// The bound address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// Sends without waiting; a full socket buffer drops the datagram (the DHT retries).
    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<()>;
    /// The next datagram that is not a UDX packet.
    fn poll_recv_datagram(&self, cx: &mut TaskContext<'_>)
        -> Poll<io::Result<(Bytes, SocketAddr)>>;
}

impl DatagramSocket for tokio::net::UdpSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::UdpSocket::local_addr(self)
    }
    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<()> {
        match tokio::net::UdpSocket::try_send_to(self, buf, to) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }
    fn poll_recv_datagram(
        &self,
        cx: &mut TaskContext<'_>,
    ) -> Poll<io::Result<(Bytes, SocketAddr)>> {
        let mut buf = [0u8; 2048];
        let mut rb = tokio::io::ReadBuf::new(&mut buf);
        match self.poll_recv_from(cx, &mut rb) {
            Poll::Ready(Ok(from)) => Poll::Ready(Ok((Bytes::copy_from_slice(rb.filled()), from))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Errors of the [`Dht`] handle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The actor is gone (the DHT was destroyed).
    #[error("the DHT has shut down")]
    Shutdown,
    /// Binding a socket failed.
    #[error("cannot bind the DHT sockets: {0}")]
    Bind(#[from] io::Error),
    /// An operation failed.
    #[error(transparent)]
    Op(#[from] OpError),
}

/// Settings of a [`Dht`] node. Every setter states its default.
#[derive(Debug, Clone)]
pub struct DhtConfig {
    host: Ipv4Addr,
    port: u16,
    bootstrap: Vec<SocketAddrV4>,
    ephemeral: Option<bool>,
    firewalled: bool,
    public_address: Option<SocketAddrV4>,
    results_buffer: usize,
}

impl Default for DhtConfig {
    fn default() -> Self {
        DhtConfig {
            host: Ipv4Addr::UNSPECIFIED,
            port: 0,
            bootstrap: Vec::new(),
            ephemeral: None,
            firewalled: true,
            public_address: None,
            results_buffer: 256,
        }
    }
}

impl DhtConfig {
    /// Address to bind. Default: 0.0.0.0.
    pub fn with_host(mut self, host: Ipv4Addr) -> Self {
        self.host = host;
        self
    }
    /// Port of the server socket. Default: 0 (any).
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
    /// Bootstrap nodes. Default: none.
    pub fn with_bootstrap(mut self, nodes: Vec<SocketAddrV4>) -> Self {
        self.bootstrap = nodes;
        self
    }
    /// `Some(true)` stays ephemeral, `Some(false)` becomes persistent at bootstrap, `None`
    /// (the default) adapts.
    pub fn with_ephemeral(mut self, e: Option<bool>) -> Self {
        self.ephemeral = e;
        self
    }
    /// Whether the server socket may be unreachable from outside. Default: true.
    pub fn with_firewalled(mut self, f: bool) -> Self {
        self.firewalled = f;
        self
    }
    /// Our public address, known in advance (bootstrap servers). Default: learned from peers.
    pub fn with_public_address(mut self, a: SocketAddrV4) -> Self {
        self.public_address = Some(a);
        self
    }
    /// Results buffered per streaming operation before the oldest is dropped. Default: 256.
    pub fn with_results_buffer(mut self, n: usize) -> Self {
        self.results_buffer = n.max(1);
        self
    }
}

/// A record set from one node during a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupItem {
    /// The node that answered.
    pub from: SocketAddrV4,
    /// Its records.
    pub peers: Vec<PeerRecord>,
    /// The newest bump it knows.
    pub bump: u64,
}

/// Facts about the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhtInfo {
    /// Routing id.
    pub id: [u8; 32],
    /// Server socket address (bound).
    pub local_address: SocketAddrV4,
    /// Our public address as peers report it.
    pub public_address: Option<SocketAddrV4>,
    /// Persistent (stores records for others).
    pub persistent: bool,
    /// Requests go out from the client socket.
    pub firewalled: bool,
    /// Bootstrap finished.
    pub bootstrapped: bool,
    /// Routing table size.
    pub table_size: usize,
}

/// Where an operation's results go.
#[derive(Debug)]
enum Sink {
    Lookup(
        mpsc::Sender<LookupItem>,
        Option<oneshot::Sender<Result<OpResult, OpError>>>,
    ),
    FindPeer(
        mpsc::Sender<(SocketAddrV4, PeerRecord)>,
        Option<oneshot::Sender<Result<OpResult, OpError>>>,
    ),
    Done(oneshot::Sender<Result<OpResult, OpError>>),
    MutableGet(
        Option<MutableGet>,
        oneshot::Sender<Result<Option<MutableGet>, OpError>>,
    ),
    ImmutableGet(
        Option<Bytes>,
        oneshot::Sender<Result<Option<Bytes>, OpError>>,
    ),
}

/// The actor. See the [module docs](self).
pub struct DhtActor {
    core: HyperDht,
    server: Arc<dyn DatagramSocket>,
    client: Arc<dyn DatagramSocket>,
    timer: Option<(Instant, SpawnHandle)>,
    sinks: HashMap<OpId, Sink>,
    bootstrap_waiters: Vec<oneshot::Sender<()>>,
    local: SocketAddrV4,
}

impl std::fmt::Debug for DhtActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhtActor")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

fn v4(a: SocketAddr) -> Option<SocketAddrV4> {
    match a {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(a) => a
            .ip()
            .to_ipv4_mapped()
            .map(|ip| SocketAddrV4::new(ip, a.port())),
    }
}

/// A datagram from one of the sockets.
struct Datagram(SocketKind, Bytes, SocketAddr);

impl DhtActor {
    /// An actor over the given sockets (the server socket's address is the node's identity).
    pub fn new(
        config: &DhtConfig,
        server: Arc<dyn DatagramSocket>,
        client: Arc<dyn DatagramSocket>,
    ) -> io::Result<Self> {
        let local = v4(server.local_addr()?)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "IPv4 socket required"))?;
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
        let mut rpc = rpc::Config::default()
            .with_bootstrap(config.bootstrap.clone())
            .with_ephemeral(config.ephemeral)
            .with_firewalled(config.firewalled)
            .with_server_port(local.port())
            .with_seed(seed);
        if let Some(p) = config.public_address {
            rpc = rpc.with_public_address(p);
        }
        let local_addresses = if local.ip().is_unspecified() {
            Vec::new()
        } else {
            vec![*local.ip()]
        };
        let core = HyperDht::new(
            HyperConfig {
                rpc,
                local_addresses,
                ..Default::default()
            },
            Instant::now(),
        );
        Ok(DhtActor {
            core,
            server,
            client,
            timer: None,
            sinks: HashMap::new(),
            bootstrap_waiters: Vec::new(),
            local,
        })
    }

    fn recv_stream(
        sock: Arc<dyn DatagramSocket>,
        kind: SocketKind,
    ) -> impl futures::Stream<Item = Datagram> {
        futures::stream::poll_fn(move |cx| loop {
            match sock.poll_recv_datagram(cx) {
                Poll::Ready(Ok((b, from))) => return Poll::Ready(Some(Datagram(kind, b, from))),
                // ICMP errors (connection refused) surface as recv errors on Linux: ignore.
                Poll::Ready(Err(e)) if e.kind() != io::ErrorKind::NotConnected => continue,
                Poll::Ready(Err(_)) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        })
    }

    /// Sends what the core queued, dispatches its events and re-arms the timer.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        while let Some(t) = self.core.poll_transmit() {
            let sock = match t.socket {
                SocketKind::Server => &self.server,
                SocketKind::Client => &self.client,
            };
            if let Err(e) = sock.try_send_to(&t.bytes, SocketAddr::V4(t.to)) {
                tracing::debug!(to = %t.to, error = %e, "datagram not sent");
            }
        }
        while let Some(e) = self.core.poll_event() {
            self.dispatch(e);
        }
        self.arm_timer(ctx);
    }

    fn arm_timer(&mut self, ctx: &mut Context<Self>) {
        let Some(at) = self.core.poll_timeout() else {
            return;
        };
        if let Some((t, h)) = self.timer {
            if t == at {
                return;
            }
            ctx.cancel_future(h);
        }
        let delay = at.saturating_duration_since(Instant::now());
        let h = ctx.run_later(delay, |act, ctx| {
            act.timer = None;
            act.core.handle_timeout(Instant::now());
            act.flush(ctx);
        });
        self.timer = Some((at, h));
    }

    fn dispatch(&mut self, e: HyperEvent) {
        match e {
            HyperEvent::LookupReply {
                op,
                from,
                peers,
                bump,
                ..
            } => {
                if let Some(Sink::Lookup(tx, _)) = self.sinks.get(&op) {
                    // A slow consumer loses results rather than stalling the DHT.
                    let _ = tx.try_send(LookupItem { from, peers, bump });
                }
            }
            HyperEvent::PeerFound { op, from, record } => {
                if let Some(Sink::FindPeer(tx, _)) = self.sinks.get(&op) {
                    let _ = tx.try_send((from, record));
                }
            }
            HyperEvent::MutableValue { op, value, .. } => {
                if let Some(Sink::MutableGet(best, _)) = self.sinks.get_mut(&op) {
                    if best.as_ref().is_none_or(|b| value.seq > b.seq) {
                        *best = Some(value);
                    }
                }
            }
            HyperEvent::ImmutableValue { op, value, .. } => {
                if let Some(Sink::ImmutableGet(found, _)) = self.sinks.get_mut(&op) {
                    found.get_or_insert(value);
                }
            }
            HyperEvent::OpDone { op, result } => match self.sinks.remove(&op) {
                Some(Sink::Lookup(_, done)) | Some(Sink::FindPeer(_, done)) => {
                    if let Some(d) = done {
                        let _ = d.send(result);
                    }
                }
                Some(Sink::Done(d)) => {
                    let _ = d.send(result);
                }
                Some(Sink::MutableGet(best, d)) => {
                    let _ = d.send(result.map(|_| best));
                }
                Some(Sink::ImmutableGet(found, d)) => {
                    let _ = d.send(result.map(|_| found));
                }
                None => {}
            },
            HyperEvent::Rpc(RpcEvent::Bootstrapped) => {
                for w in self.bootstrap_waiters.drain(..) {
                    let _ = w.send(());
                }
            }
            other => tracing::trace!(event = ?other, "dht event"),
        }
    }

    fn info(&self) -> DhtInfo {
        let n = self.core.node();
        DhtInfo {
            id: n.id().0,
            local_address: self.local,
            public_address: n.nat_address(),
            persistent: n.is_persistent(),
            firewalled: n.is_firewalled(),
            bootstrapped: n.is_bootstrapped(),
            table_size: n.table().len(),
        }
    }
}

impl Actor for DhtActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.add_stream(Self::recv_stream(self.server.clone(), SocketKind::Server));
        ctx.add_stream(Self::recv_stream(self.client.clone(), SocketKind::Client));
        self.flush(ctx);
    }
}

impl StreamHandler<Datagram> for DhtActor {
    fn handle(&mut self, Datagram(kind, bytes, from): Datagram, ctx: &mut Self::Context) {
        if let Some(from) = v4(from) {
            self.core
                .handle_datagram(Instant::now(), kind, from, &bytes);
            self.flush(ctx);
        }
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

/// `Lookup`: records announced under a topic, streamed as they arrive.
#[derive(Debug, Message)]
#[rtype(result = "(mpsc::Receiver<LookupItem>, oneshot::Receiver<Result<OpResult, OpError>>)")]
pub struct Lookup {
    /// The topic.
    pub topic: [u8; 32],
}

impl Handler<Lookup> for DhtActor {
    type Result = MessageResult<Lookup>;
    fn handle(&mut self, msg: Lookup, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = mpsc::channel(256);
        let (dtx, drx) = oneshot::channel();
        let op = self.core.lookup(Instant::now(), msg.topic);
        self.sinks.insert(op, Sink::Lookup(tx, Some(dtx)));
        self.flush(ctx);
        MessageResult((rx, drx))
    }
}

/// `FindPeer`: nodes that hold a server's record.
#[derive(Debug, Message)]
#[rtype(
    result = "(mpsc::Receiver<(SocketAddrV4, PeerRecord)>, oneshot::Receiver<Result<OpResult, OpError>>)"
)]
pub struct FindPeer {
    /// The server's key.
    pub public_key: PublicKey,
}

impl Handler<FindPeer> for DhtActor {
    type Result = MessageResult<FindPeer>;
    fn handle(&mut self, msg: FindPeer, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = mpsc::channel(64);
        let (dtx, drx) = oneshot::channel();
        let op = self.core.find_peer(Instant::now(), &msg.public_key);
        self.sinks.insert(op, Sink::FindPeer(tx, Some(dtx)));
        self.flush(ctx);
        MessageResult((rx, drx))
    }
}

/// `Announce`: store a signed record under a topic on the closest nodes.
#[derive(Debug, Message)]
#[rtype(result = "oneshot::Receiver<Result<OpResult, OpError>>")]
pub struct Announce {
    /// The topic.
    pub topic: [u8; 32],
    /// Whose record.
    pub key_pair: KeyPair,
    /// Nodes that forward handshakes to the announcer.
    pub relay_addresses: Vec<SocketAddrV4>,
}

impl Handler<Announce> for DhtActor {
    type Result = MessageResult<Announce>;
    fn handle(&mut self, msg: Announce, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let bump = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let op = self.core.announce(
            Instant::now(),
            msg.topic,
            &msg.key_pair,
            msg.relay_addresses,
            bump,
        );
        self.sinks.insert(op, Sink::Done(tx));
        self.flush(ctx);
        MessageResult(rx)
    }
}

/// `Unannounce`: remove a record.
#[derive(Debug, Message)]
#[rtype(result = "oneshot::Receiver<Result<OpResult, OpError>>")]
pub struct Unannounce {
    /// The topic.
    pub topic: [u8; 32],
    /// Whose record.
    pub key_pair: KeyPair,
}

impl Handler<Unannounce> for DhtActor {
    type Result = MessageResult<Unannounce>;
    fn handle(&mut self, msg: Unannounce, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let op = self
            .core
            .unannounce(Instant::now(), msg.topic, &msg.key_pair);
        self.sinks.insert(op, Sink::Done(tx));
        self.flush(ctx);
        MessageResult(rx)
    }
}

/// `MutablePut`: store a signed value at `BLAKE2b(public key)`.
#[derive(Debug, Message)]
#[rtype(result = "oneshot::Receiver<Result<OpResult, OpError>>")]
pub struct MutablePut {
    /// The signer.
    pub key_pair: KeyPair,
    /// The value.
    pub value: Bytes,
    /// Sequence number.
    pub seq: u64,
}

impl Handler<MutablePut> for DhtActor {
    type Result = MessageResult<MutablePut>;
    fn handle(&mut self, msg: MutablePut, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let op = self
            .core
            .mutable_put(Instant::now(), &msg.key_pair, msg.value, msg.seq);
        self.sinks.insert(op, Sink::Done(tx));
        self.flush(ctx);
        MessageResult(rx)
    }
}

/// `MutableGet`: the newest valid value with at least `seq`.
#[derive(Debug, Message)]
#[rtype(result = "oneshot::Receiver<Result<Option<MutableGet>, OpError>>")]
pub struct GetMutable {
    /// The signer.
    pub public_key: PublicKey,
    /// Lowest sequence number wanted.
    pub seq: u64,
}

impl Handler<GetMutable> for DhtActor {
    type Result = MessageResult<GetMutable>;
    fn handle(&mut self, msg: GetMutable, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let op = self
            .core
            .mutable_get(Instant::now(), &msg.public_key, msg.seq);
        self.sinks.insert(op, Sink::MutableGet(None, tx));
        self.flush(ctx);
        MessageResult(rx)
    }
}

/// `ImmutablePut`: store a content-addressed value; the target is returned with the result.
#[derive(Debug, Message)]
#[rtype(result = "([u8; 32], oneshot::Receiver<Result<OpResult, OpError>>)")]
pub struct ImmutablePut {
    /// The value.
    pub value: Bytes,
}

impl Handler<ImmutablePut> for DhtActor {
    type Result = MessageResult<ImmutablePut>;
    fn handle(&mut self, msg: ImmutablePut, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let (target, op) = self.core.immutable_put(Instant::now(), msg.value);
        self.sinks.insert(op, Sink::Done(tx));
        self.flush(ctx);
        MessageResult((target, rx))
    }
}

/// `GetImmutable`: a content-addressed value.
#[derive(Debug, Message)]
#[rtype(result = "oneshot::Receiver<Result<Option<Bytes>, OpError>>")]
pub struct GetImmutable {
    /// `BLAKE2b(value)`.
    pub target: [u8; 32],
}

impl Handler<GetImmutable> for DhtActor {
    type Result = MessageResult<GetImmutable>;
    fn handle(&mut self, msg: GetImmutable, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let op = self.core.immutable_get(Instant::now(), msg.target);
        self.sinks.insert(op, Sink::ImmutableGet(None, tx));
        self.flush(ctx);
        MessageResult(rx)
    }
}

/// `GetInfo`: facts about the node.
#[derive(Debug, Message)]
#[rtype(result = "DhtInfo")]
pub struct GetInfo;

impl Handler<GetInfo> for DhtActor {
    type Result = MessageResult<GetInfo>;
    fn handle(&mut self, _: GetInfo, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.info())
    }
}

/// `WaitBootstrapped`: resolves once the first bootstrap pass finished.
#[derive(Debug, Message)]
#[rtype(result = "oneshot::Receiver<()>")]
pub struct WaitBootstrapped;

impl Handler<WaitBootstrapped> for DhtActor {
    type Result = MessageResult<WaitBootstrapped>;
    fn handle(&mut self, _: WaitBootstrapped, _: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if self.core.node().is_bootstrapped() {
            let _ = tx.send(());
        } else {
            self.bootstrap_waiters.push(tx);
        }
        MessageResult(rx)
    }
}

/// `Destroy`: stop the actor (sockets close when it drops).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Destroy;

impl Handler<Destroy> for DhtActor {
    type Result = ();
    fn handle(&mut self, _: Destroy, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// The shared actix system thread that [`Dht::spawn`] uses.
fn system() -> &'static actix_rt::ArbiterHandle {
    static SYSTEM: OnceLock<actix_rt::ArbiterHandle> = OnceLock::new();
    SYSTEM.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("corenet-actors".into())
            .spawn(move || {
                let sys = actix_rt::System::new();
                let _ = tx.send(actix_rt::Arbiter::current());
                sys.run()
            })
            .map_err(|e| tracing::error!(error = %e, "cannot start the actor thread"))
            .ok();
        #[allow(clippy::expect_used)] // the thread sends before running; failure is fatal
        rx.recv().expect("the actor thread starts")
    })
}

/// A handle to a DHT node: `Send + Sync + Clone`, usable from any async runtime.
///
/// ```no_run
/// # async fn demo() -> Result<(), corenet_dht::Error> {
/// use corenet_dht::{Dht, DhtConfig};
/// let dht = Dht::spawn(DhtConfig::default().with_bootstrap(vec!["127.0.0.1:49737".parse().unwrap()])).await?;
/// dht.bootstrapped().await?;
/// let topic = [7u8; 32];
/// let kp = corenet_noise::KeyPair::generate();
/// dht.announce(topic, &kp, vec![]).await?;
/// let (peers, _done) = dht.lookup(topic).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Dht {
    addr: Addr<DhtActor>,
}

impl Dht {
    /// Binds the two sockets on `host` and starts a node on the shared actor thread.
    pub async fn spawn(config: DhtConfig) -> Result<Dht, Error> {
        let host = IpAddr::V4(config.host);
        let server = std::net::UdpSocket::bind((host, config.port)).or_else(|e| {
            if config.port != 0 {
                Err(e)
            } else {
                std::net::UdpSocket::bind((host, 0))
            }
        })?;
        let client = std::net::UdpSocket::bind((host, 0))?;
        server.set_nonblocking(true)?;
        client.set_nonblocking(true)?;
        let (tx, rx) = oneshot::channel();
        let cfg = config.clone();
        system().spawn(async move {
            let r = (|| -> io::Result<Addr<DhtActor>> {
                let server: Arc<dyn DatagramSocket> =
                    Arc::new(tokio::net::UdpSocket::from_std(server)?);
                let client: Arc<dyn DatagramSocket> =
                    Arc::new(tokio::net::UdpSocket::from_std(client)?);
                Ok(DhtActor::new(&cfg, server, client)?.start())
            })();
            let _ = tx.send(r);
        });
        let addr = rx.await.map_err(|_| Error::Shutdown)??;
        Ok(Dht { addr })
    }

    /// Wraps an actor started elsewhere.
    pub fn from_addr(addr: Addr<DhtActor>) -> Self {
        Dht { addr }
    }

    /// The actor's address (for actors that talk to it directly).
    pub fn addr(&self) -> &Addr<DhtActor> {
        &self.addr
    }

    async fn ask<M>(&self, m: M) -> Result<M::Result, Error>
    where
        M: actix::Message + Send + 'static,
        M::Result: Send,
        DhtActor: Handler<M>,
    {
        self.addr.send(m).await.map_err(|_| Error::Shutdown)
    }

    /// Waits for the first bootstrap pass.
    pub async fn bootstrapped(&self) -> Result<(), Error> {
        self.ask(WaitBootstrapped)
            .await?
            .await
            .map_err(|_| Error::Shutdown)
    }

    /// Facts about the node.
    pub async fn info(&self) -> Result<DhtInfo, Error> {
        self.ask(GetInfo).await
    }

    /// Records under a topic, as they arrive, and the lookup's completion.
    pub async fn lookup(
        &self,
        topic: [u8; 32],
    ) -> Result<
        (
            mpsc::Receiver<LookupItem>,
            oneshot::Receiver<Result<OpResult, OpError>>,
        ),
        Error,
    > {
        self.ask(Lookup { topic }).await
    }

    /// Nodes that hold a server's record, and the query's completion.
    pub async fn find_peer(
        &self,
        public_key: PublicKey,
    ) -> Result<
        (
            mpsc::Receiver<(SocketAddrV4, PeerRecord)>,
            oneshot::Receiver<Result<OpResult, OpError>>,
        ),
        Error,
    > {
        self.ask(FindPeer { public_key }).await
    }

    /// Announces `key_pair` under `topic`.
    pub async fn announce(
        &self,
        topic: [u8; 32],
        key_pair: &KeyPair,
        relay_addresses: Vec<SocketAddrV4>,
    ) -> Result<OpResult, Error> {
        let rx = self
            .ask(Announce {
                topic,
                key_pair: key_pair.clone(),
                relay_addresses,
            })
            .await?;
        Ok(rx.await.map_err(|_| Error::Shutdown)??)
    }

    /// Removes `key_pair`'s record under `topic`.
    pub async fn unannounce(&self, topic: [u8; 32], key_pair: &KeyPair) -> Result<OpResult, Error> {
        let rx = self
            .ask(Unannounce {
                topic,
                key_pair: key_pair.clone(),
            })
            .await?;
        Ok(rx.await.map_err(|_| Error::Shutdown)??)
    }

    /// Stores a signed mutable value.
    pub async fn mutable_put(
        &self,
        key_pair: &KeyPair,
        value: Bytes,
        seq: u64,
    ) -> Result<OpResult, Error> {
        let rx = self
            .ask(MutablePut {
                key_pair: key_pair.clone(),
                value,
                seq,
            })
            .await?;
        Ok(rx.await.map_err(|_| Error::Shutdown)??)
    }

    /// Reads the newest mutable value of `public_key` with at least `seq`.
    pub async fn mutable_get(
        &self,
        public_key: PublicKey,
        seq: u64,
    ) -> Result<Option<MutableGet>, Error> {
        let rx = self.ask(GetMutable { public_key, seq }).await?;
        Ok(rx.await.map_err(|_| Error::Shutdown)??)
    }

    /// Stores a content-addressed value and returns its target.
    pub async fn immutable_put(&self, value: Bytes) -> Result<([u8; 32], OpResult), Error> {
        let (target, rx) = self.ask(ImmutablePut { value }).await?;
        Ok((target, rx.await.map_err(|_| Error::Shutdown)??))
    }

    /// Reads a content-addressed value.
    pub async fn immutable_get(&self, target: [u8; 32]) -> Result<Option<Bytes>, Error> {
        let rx = self.ask(GetImmutable { target }).await?;
        Ok(rx.await.map_err(|_| Error::Shutdown)??)
    }

    /// Stops the node.
    pub async fn destroy(&self) {
        let _ = self.addr.send(Destroy).await;
    }
}

/// N DHT nodes on 127.0.0.1 in this process, for tests and the CLI: the first is a
/// persistent bootstrap node; the others bootstrap from it and become persistent.
#[derive(Debug)]
pub struct Testnet {
    /// The nodes.
    pub nodes: Vec<Dht>,
    /// The bootstrap address to give other nodes.
    pub bootstrap: Vec<SocketAddrV4>,
}

impl Testnet {
    /// Starts `size` nodes (at least 1); the first binds `port` (0: any).
    pub async fn new(size: usize, port: u16) -> Result<Testnet, Error> {
        let host = Ipv4Addr::LOCALHOST;
        let first_sock = std::net::UdpSocket::bind((host, port))?;
        let first_addr = match first_sock.local_addr()? {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => return Err(Error::Bind(io::Error::other("not IPv4"))),
        };
        drop(first_sock);
        let first = Dht::spawn(
            DhtConfig::default()
                .with_host(host)
                .with_port(first_addr.port())
                .with_ephemeral(Some(false))
                .with_firewalled(false)
                .with_public_address(first_addr),
        )
        .await?;
        let bootstrap = vec![first_addr];
        let mut nodes = vec![first];
        for _ in 1..size.max(1) {
            let n = Dht::spawn(
                DhtConfig::default()
                    .with_host(host)
                    .with_bootstrap(bootstrap.clone())
                    .with_ephemeral(Some(false))
                    .with_firewalled(false),
            )
            .await?;
            n.bootstrapped().await?;
            nodes.push(n);
        }
        // A second pass lets early nodes learn about later ones.
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(Testnet { nodes, bootstrap })
    }

    /// A node that bootstraps from this testnet (ephemeral unless told otherwise).
    pub async fn create_node(&self, config: DhtConfig) -> Result<Dht, Error> {
        let n = Dht::spawn(
            config
                .with_host(Ipv4Addr::LOCALHOST)
                .with_bootstrap(self.bootstrap.clone()),
        )
        .await?;
        n.bootstrapped().await?;
        Ok(n)
    }

    /// Stops every node.
    pub async fn destroy(&self) {
        for n in self.nodes.iter().rev() {
            n.destroy().await;
        }
    }
}
