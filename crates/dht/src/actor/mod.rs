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
use std::task::Poll;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use corenet_codec::PublicKey;
use corenet_noise::KeyPair;
use tokio::sync::{mpsc, oneshot};

use corenet_noise::{Config as SecretConfig, SecretStream};
use corenet_udx::{StreamConfig, UdxSocket, UdxStream};

use crate::hyper::messages::{MutableGet, PeerRecord};
use crate::hyper::{
    ConnectError, ConnectId, HandshakeId, HyperConfig, HyperDht, HyperEvent, OpError, OpId,
    OpResult, ServerId,
};
use crate::rpc::{self, Event as RpcEvent, SocketKind};

mod config;
mod handle;
mod testnet;

pub use config::*;
pub use handle::{Dht, Server};
pub use testnet::Testnet;

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
    server: UdxSocket,
    client: UdxSocket,
    timer: Option<(Instant, SpawnHandle)>,
    sinks: HashMap<OpId, Sink>,
    bootstrap_waiters: Vec<oneshot::Sender<()>>,
    local: SocketAddrV4,
    servers: HashMap<ServerId, ServerState>,
    accepting: HashMap<HandshakeId, UdxStream>,
    connects: HashMap<ConnectId, (UdxStream, oneshot::Sender<Result<Connection, Error>>)>,
    handshaked: HashMap<ConnectId, (corenet_noise::HandshakeResult, u32)>,
}

/// A listening server's plumbing in the actor.
struct ServerState {
    firewall: Option<Firewall>,
    connections: mpsc::Sender<Connection>,
    announced: Option<oneshot::Sender<Vec<SocketAddrV4>>>,
}

impl std::fmt::Debug for DhtActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhtActor")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

/// A datagram from one of the sockets.
struct Datagram(SocketKind, Bytes, SocketAddr);

impl DhtActor {
    /// An actor over the given sockets (the server socket's address is the node's identity).
    pub fn new(config: &DhtConfig, server: UdxSocket, client: UdxSocket) -> io::Result<Self> {
        let local = v4(server.local_addr())
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
            servers: HashMap::new(),
            accepting: HashMap::new(),
            connects: HashMap::new(),
            handshaked: HashMap::new(),
        })
    }

    fn recv_stream(sock: UdxSocket, kind: SocketKind) -> impl futures::Stream<Item = Datagram> {
        futures::stream::poll_fn(move |cx| match sock.poll_recv_datagram(cx) {
            Poll::Ready(Some((b, from))) => Poll::Ready(Some(Datagram(kind, Bytes::from(b), from))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        })
    }

    fn socket(&self, kind: SocketKind) -> Option<&UdxSocket> {
        match kind {
            SocketKind::Server => Some(&self.server),
            SocketKind::Client => Some(&self.client),
            SocketKind::Pool(_) => None,
        }
    }

    /// Sends what the core queued, dispatches its events and re-arms the timer.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        while let Some(t) = self.core.poll_transmit() {
            let Some(socket) = self.socket(t.socket) else {
                continue;
            };
            if let Err(e) = socket.try_send_to(&t.bytes, SocketAddr::V4(t.to)) {
                tracing::debug!(to = %t.to, error = %e, "datagram not sent");
            }
        }
        while let Some(e) = self.core.poll_event() {
            self.dispatch(e, ctx);
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

    fn dispatch(&mut self, e: HyperEvent, ctx: &mut Context<Self>) {
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
            HyperEvent::ServerAnnounced {
                server,
                relay_addresses,
            } => {
                if let Some(tx) = self
                    .servers
                    .get_mut(&server)
                    .and_then(|s| s.announced.take())
                {
                    let _ = tx.send(relay_addresses);
                }
            }
            HyperEvent::IncomingHandshake {
                server,
                handshake,
                remote_public_key,
                client_address,
                socket,
                ..
            } => {
                let firewall = self.servers.get(&server).and_then(|s| s.firewall.clone());
                match firewall {
                    None => self.accept(handshake, socket, ctx),
                    Some(f) => {
                        let fut = f(remote_public_key, client_address);
                        ctx.spawn(fut.into_actor(self).map(move |allow, act, ctx| {
                            if allow {
                                act.accept(handshake, socket, ctx);
                            } else {
                                tracing::debug!(remote = %remote_public_key, "firewall refused a client");
                                act.core.reject(Instant::now(), handshake);
                                act.flush(ctx);
                            }
                        }));
                    }
                }
            }
            HyperEvent::ServerConnection {
                server,
                handshake,
                result,
                remote_udx_id,
                connect,
                ..
            } => {
                let connect = connect.map(|(_, a)| a);
                let Some(stream) = self.accepting.remove(&handshake) else {
                    return;
                };
                let Some(tx) = self.servers.get(&server).map(|s| s.connections.clone()) else {
                    stream.destroy();
                    return;
                };
                let connected = match connect {
                    Some(addr) => stream
                        .connect(remote_udx_id, SocketAddr::V4(addr))
                        .map(|()| Some(addr)),
                    None => stream.connect_on_first_packet(remote_udx_id).map(|()| None),
                };
                let addr = match connected {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot connect an accepted stream");
                        return;
                    }
                };
                ctx.spawn(
                    async move {
                        let remote_address = match addr {
                            Some(a) => a,
                            // Wait (bounded) for the client's first packet to learn its address.
                            None => {
                                match tokio::time::timeout(FIRST_PACKET_TIMEOUT, stream.connected())
                                    .await
                                {
                                    Ok(Ok((_, a))) => match v4(a) {
                                        Some(a) => a,
                                        None => return None,
                                    },
                                    _ => {
                                        stream.destroy();
                                        return None;
                                    }
                                }
                            }
                        };
                        let cfg = SecretConfig::default().with_keepalive(CONNECTION_KEEPALIVE);
                        let mut stream = SecretStream::from_handshake(stream, result, cfg);
                        send_header(&mut stream).await;
                        Some(Connection {
                            stream,
                            remote_address,
                            is_initiator: false,
                        })
                    }
                    .into_actor(self)
                    .map(move |conn, _act, _ctx| {
                        if let Some(conn) = conn {
                            if tx.try_send(conn).is_err() {
                                tracing::debug!(
                                    "server connection dropped: the application is not accepting"
                                );
                            }
                        }
                    }),
                );
            }
            HyperEvent::Handshaked {
                connect,
                result,
                remote_udx_id,
                ..
            } => {
                self.handshaked.insert(connect, (result, remote_udx_id));
            }
            HyperEvent::ConnectPath {
                connect, address, ..
            } => {
                let Some((stream, tx)) = self.connects.remove(&connect) else {
                    return;
                };
                let Some((result, remote_udx_id)) = self.handshaked.remove(&connect) else {
                    return;
                };
                if let Err(e) = stream.connect(remote_udx_id, SocketAddr::V4(address)) {
                    let _ = tx.send(Err(e.into()));
                    return;
                }
                let cfg = SecretConfig::default().with_keepalive(CONNECTION_KEEPALIVE);
                let mut stream = SecretStream::from_handshake(stream, result, cfg);
                // The header frame is the first packet the server sees from us: send it now.
                actix::spawn(async move {
                    send_header(&mut stream).await;
                    let _ = tx.send(Ok(Connection {
                        stream,
                        remote_address: address,
                        is_initiator: true,
                    }));
                });
            }
            HyperEvent::ConnectFailed { connect, error } => {
                self.handshaked.remove(&connect);
                if let Some((stream, tx)) = self.connects.remove(&connect) {
                    stream.destroy();
                    let _ = tx.send(Err(error.into()));
                }
            }
            other => tracing::trace!(event = ?other, "dht event"),
        }
    }

    fn accept(&mut self, handshake: HandshakeId, socket: SocketKind, ctx: &mut Context<Self>) {
        let Some(sock) = self.socket(socket) else {
            self.core.reject(Instant::now(), handshake);
            return self.flush(ctx);
        };
        match sock.create_stream(StreamConfig::default()) {
            Ok(stream) => {
                let id = stream.id();
                self.accepting.insert(handshake, stream);
                self.core.accept(Instant::now(), handshake, id);
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot create a stream for a client");
                self.core.reject(Instant::now(), handshake);
            }
        }
        self.flush(ctx);
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

/// `AnnounceAndLookup`: announce, and stream the records the announce's lookup finds.
#[derive(Debug, Message)]
#[rtype(result = "(mpsc::Receiver<LookupItem>, oneshot::Receiver<Result<OpResult, OpError>>)")]
pub struct AnnounceAndLookup {
    /// The topic.
    pub topic: [u8; 32],
    /// Whose record.
    pub key_pair: KeyPair,
    /// Nodes that forward handshakes to the announcer.
    pub relay_addresses: Vec<SocketAddrV4>,
}

impl Handler<AnnounceAndLookup> for DhtActor {
    type Result = MessageResult<AnnounceAndLookup>;
    fn handle(&mut self, msg: AnnounceAndLookup, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = mpsc::channel(256);
        let (dtx, drx) = oneshot::channel();
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
        self.sinks.insert(op, Sink::Lookup(tx, Some(dtx)));
        self.flush(ctx);
        MessageResult((rx, drx))
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

/// `Listen`: start a server for a key pair. Connections arrive on the returned channel; the
/// oneshot resolves with the relay addresses after the first announce.
#[derive(Message)]
#[rtype(result = "ListenResult")]
pub struct Listen {
    /// The server's identity.
    pub key_pair: KeyPair,
    /// Decides about each client before anything is answered; `None` accepts everyone.
    pub firewall: Option<Firewall>,
    /// Connections accepted but not yet taken by the application (extra ones are closed).
    pub backlog: usize,
}

impl std::fmt::Debug for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listen")
            .field("public_key", &self.key_pair.public_key())
            .finish_non_exhaustive()
    }
}

/// What [`Listen`] returns.
pub type ListenResult = (
    ServerId,
    mpsc::Receiver<Connection>,
    oneshot::Receiver<Vec<SocketAddrV4>>,
);

impl Handler<Listen> for DhtActor {
    type Result = MessageResult<Listen>;
    fn handle(&mut self, msg: Listen, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = mpsc::channel(msg.backlog.max(1));
        let (atx, arx) = oneshot::channel();
        let id = self.core.listen(Instant::now(), &msg.key_pair);
        self.servers.insert(
            id,
            ServerState {
                firewall: msg.firewall,
                connections: tx,
                announced: Some(atx),
            },
        );
        self.flush(ctx);
        MessageResult((id, rx, arx))
    }
}

/// `CloseServer`: stop a server and unannounce it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CloseServer {
    /// Which.
    pub server: ServerId,
}

impl Handler<CloseServer> for DhtActor {
    type Result = ();
    fn handle(&mut self, msg: CloseServer, ctx: &mut Self::Context) {
        self.servers.remove(&msg.server);
        self.core.close_server(Instant::now(), msg.server);
        self.flush(ctx);
    }
}

/// `GetRelayAddresses`: a server's current relay addresses.
#[derive(Debug, Message)]
#[rtype(result = "Vec<SocketAddrV4>")]
pub struct GetRelayAddresses {
    /// Which server.
    pub server: ServerId,
}

impl Handler<GetRelayAddresses> for DhtActor {
    type Result = MessageResult<GetRelayAddresses>;
    fn handle(&mut self, msg: GetRelayAddresses, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.core.server_relay_addresses(msg.server))
    }
}

/// `Connect`: an encrypted connection to the server with this public key.
#[derive(Message)]
#[rtype(result = "oneshot::Receiver<Result<Connection, Error>>")]
pub struct Connect {
    /// Our identity.
    pub key_pair: KeyPair,
    /// The server's key.
    pub remote_public_key: PublicKey,
    /// Nodes that forward handshakes to it (from a lookup record), tried first.
    pub relay_addresses: Vec<SocketAddrV4>,
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect")
            .field("remote_public_key", &self.remote_public_key)
            .finish_non_exhaustive()
    }
}

impl Handler<Connect> for DhtActor {
    type Result = MessageResult<Connect>;
    fn handle(&mut self, msg: Connect, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let socket = self.core.node().request_socket();
        let sock = self.socket(socket).unwrap_or(&self.server);
        match sock.create_stream(StreamConfig::default()) {
            Ok(stream) => {
                let id = self.core.connect(
                    Instant::now(),
                    &msg.key_pair,
                    msg.remote_public_key,
                    stream.id(),
                    crate::hyper::ConnectOptions {
                        relay_addresses: msg.relay_addresses,
                        ..Default::default()
                    },
                );
                self.connects.insert(id, (stream, tx));
                self.flush(ctx);
            }
            Err(e) => {
                let _ = tx.send(Err(e.into()));
            }
        }
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

/// The shared actix system thread that [`Dht::spawn`] (and the swarm's actors) run on; it
/// starts on first use. Spawn actors on it with `Actor::start_in_arbiter(system(), ..)`.
pub fn system() -> &'static actix_rt::ArbiterHandle {
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

/// Binds a node's server socket (on `config.port`, or any port if that one is taken, as JS
/// does) and client socket; their drivers run on the current runtime.
async fn bind_sockets(config: &DhtConfig) -> Result<(UdxSocket, UdxSocket), Error> {
    let host = IpAddr::V4(config.host);
    let server = match UdxSocket::bind(SocketAddr::new(host, config.port)).await {
        Ok(s) => s,
        Err(_) if config.port != 0 => UdxSocket::bind(SocketAddr::new(host, 0)).await?,
        Err(e) => return Err(Error::from(e)),
    };
    let client = UdxSocket::bind(SocketAddr::new(host, 0)).await?;
    Ok((server, client))
}

/// Writes the secret stream's header frame now (the first packet the other side sees).
async fn send_header(stream: &mut SecretStream<UdxStream>) {
    use tokio::io::AsyncWriteExt;
    if let Err(e) = stream.flush().await {
        tracing::debug!(error = %e, "header frame not sent");
    }
}
