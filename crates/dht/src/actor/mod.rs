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
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use corenet_codec::PublicKey;
use corenet_noise::{HandshakeResult, KeyPair};
use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};

use corenet_noise::{Config as SecretConfig, SecretStream};
use corenet_udx::{SocketId, StreamConfig, StreamControl, Udx, UdxSocket, UdxStream};

use crate::hyper::dht::PUNCH_TIMEOUT;
use crate::hyper::holepunch::SocketOp;
use crate::hyper::messages::{MutableGet, PeerRecord};
use crate::hyper::nat::NatType;
use crate::hyper::{
    ConnectError, ConnectId, ConnectOptions, HandshakeId, HyperConfig, HyperDht, HyperEvent,
    ListenOptions, OpError, OpId, OpResult, PathKind, RelayPairing, ServerId,
};
use crate::rpc::{self, Event as RpcEvent, SocketKind};

mod config;
mod handle;
mod paths;
mod testnet;

pub use config::*;
pub use handle::{Dht, Server};
pub use paths::{RelayHold, RELAY_KEEPALIVE, RELAY_PAIR_TIMEOUT};
pub use testnet::Testnet;

use paths::{lock, pair_through, path_firewall, Note, Paired, PathState, SharedPath, StreamKey};

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
    /// The UDX instance every socket of this node is in (libudx `udx_t`): streams are looked
    /// up across all of them, so a stream can be answered on whichever socket a punch opened.
    udx: Udx,
    server: UdxSocket,
    client: UdxSocket,
    /// Pool sockets by the core's id, with their receive loop.
    pool: HashMap<u32, (UdxSocket, SpawnHandle)>,
    /// Socket ids of the instance to the core's names for them.
    kinds: HashMap<SocketId, SocketKind>,
    host: Ipv4Addr,
    timer: Option<(Instant, SpawnHandle)>,
    sinks: HashMap<OpId, Sink>,
    bootstrap_waiters: Vec<oneshot::Sender<()>>,
    local: SocketAddrV4,
    servers: HashMap<ServerId, ServerState>,
    /// Accepted handshakes and their streams, until the path opens (or they give up); a
    /// relayed one until its stream closes or moves to a direct path.
    server_conns: HashMap<HandshakeId, ServerConn>,
    connects: HashMap<ConnectId, ClientConn>,
    nat_samples: HashMap<u64, oneshot::Sender<NatSample>>,
    notes: mpsc::Sender<Note>,
    notes_rx: Option<mpsc::Receiver<Note>>,
    /// The handle of this node, for relay connections (set when started).
    this: Option<Dht>,
    /// [`DhtConfig::with_lan`].
    lan: bool,
    /// [`DhtConfig::with_results_buffer`]: the capacity of each lookup's result channel.
    results_buffer: usize,
}

/// A listening server's plumbing in the actor.
struct ServerState {
    key_pair: KeyPair,
    firewall: Option<Firewall>,
    connections: mpsc::Sender<Connection>,
    announced: Option<oneshot::Sender<Vec<SocketAddrV4>>>,
}

/// An accepted handshake whose stream is waiting for its path.
struct ServerConn {
    server: ServerId,
    stream: Option<UdxStream>,
    path: SharedPath,
    /// Set by [`HyperEvent::ServerConnection`].
    result: Option<HandshakeResult>,
    /// The stream connected (its path note may come before the core's event).
    connected: Option<SocketAddrV4>,
    relay_pending: bool,
    relay: Option<Arc<Mutex<Option<RelayHold>>>>,
    started: bool,
    /// The core gave up on a direct or punched path (only a relay is left).
    punch_failed: bool,
    /// When we accepted the handshake (the oldest half-open one goes first at the cap).
    accepted_at: Instant,
}

/// A client connect in flight.
struct ClientConn {
    key_pair: KeyPair,
    stream: Option<UdxStream>,
    path: SharedPath,
    tx: Option<oneshot::Sender<Result<Connection, Error>>>,
    result: Option<HandshakeResult>,
    remote_udx_id: u32,
    started_at: Instant,
    relay_pending: bool,
    relay: Option<Arc<Mutex<Option<RelayHold>>>>,
    /// Why the core gave up (kept while a relay may still carry the connection).
    failed: Option<ConnectError>,
    /// The core is done with it (path found or failed).
    core_done: bool,
    started: bool,
    /// Kept after the stream went to the application, for a later relay-to-direct move.
    control: Option<StreamControl>,
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

/// This machine's IPv4 interface addresses (for the LAN shortcut).
fn interfaces() -> Vec<Ipv4Addr> {
    if_addrs::get_if_addrs()
        .map(|v| {
            v.into_iter()
                .filter_map(|i| match i.ip() {
                    IpAddr::V4(ip) if !ip.is_loopback() => Some(ip),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

impl DhtActor {
    /// An actor over the given sockets (the server socket's address is the node's identity;
    /// both must be in one UDX instance, see [`Udx`]).
    pub fn new(config: &DhtConfig, server: UdxSocket, client: UdxSocket) -> io::Result<Self> {
        let local = v4(server.local_addr())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "IPv4 socket required"))?;
        if !server.udx().same(&client.udx()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the server and client sockets must be in one UDX instance",
            ));
        }
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
        let mut rpc = rpc::Config::default()
            .with_bootstrap(config.bootstrap.clone())
            .with_ephemeral(config.ephemeral)
            .with_firewalled(config.firewalled)
            .with_server_port(local.port())
            .with_quick_firewall(config.quick_firewall)
            .with_answer_ping_nat(config.answer_ping_nat)
            .with_seed(seed);
        if let Some(p) = config.public_address {
            rpc = rpc.with_public_address(p);
        }
        let core = HyperDht::new(
            HyperConfig {
                rpc,
                local_addresses: interfaces(),
                bound_host: Some(*local.ip()),
                ..Default::default()
            },
            Instant::now(),
        );
        let (notes, notes_rx) = mpsc::channel(256);
        let mut kinds = HashMap::new();
        kinds.insert(server.id(), SocketKind::Server);
        kinds.insert(client.id(), SocketKind::Client);
        Ok(DhtActor {
            core,
            udx: server.udx(),
            server,
            client,
            pool: HashMap::new(),
            kinds,
            host: *local.ip(),
            timer: None,
            sinks: HashMap::new(),
            bootstrap_waiters: Vec::new(),
            local,
            servers: HashMap::new(),
            server_conns: HashMap::new(),
            connects: HashMap::new(),
            nat_samples: HashMap::new(),
            notes,
            notes_rx: Some(notes_rx),
            this: None,
            lan: config.lan,
            results_buffer: config.results_buffer,
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
            SocketKind::Pool(id) => self.pool.get(&id).map(|(s, _)| s),
        }
    }

    fn socket_by_id(&self, id: SocketId) -> Option<&UdxSocket> {
        self.kinds.get(&id).and_then(|k| self.socket(*k))
    }

    /// Opens and closes the pool sockets the core asks for.
    fn socket_ops(&mut self, ctx: &mut Context<Self>) {
        while let Some(op) = self.core.poll_socket_op() {
            match op {
                SocketOp::Open(id) => {
                    let addr = SocketAddr::new(IpAddr::V4(self.host), 0);
                    let bound = self.udx.bind(addr).now_or_never();
                    match bound {
                        Some(Ok(sock)) => {
                            self.kinds.insert(sock.id(), SocketKind::Pool(id));
                            let h = ctx
                                .add_stream(Self::recv_stream(sock.clone(), SocketKind::Pool(id)));
                            self.pool.insert(id, (sock, h));
                        }
                        other => {
                            // Out of file descriptors (or the instance's socket cap): the
                            // punch that wanted it gives up; everything else carries on.
                            let e = match other {
                                Some(Err(e)) => e.to_string(),
                                _ => "bind did not complete".into(),
                            };
                            tracing::debug!(error = %e, "cannot open a pool socket");
                            self.core.socket_failed(Instant::now(), id);
                        }
                    }
                }
                SocketOp::Close(id) => {
                    if let Some((sock, h)) = self.pool.remove(&id) {
                        ctx.cancel_future(h);
                        // A stream connected on it keeps it open in the instance.
                        self.kinds.remove(&sock.id());
                    }
                }
            }
        }
    }

    /// Sends what the core queued, dispatches its events and re-arms the timer.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        loop {
            self.socket_ops(ctx);
            let mut sent = false;
            while let Some(t) = self.core.poll_transmit() {
                sent = true;
                let Some(socket) = self.socket(t.socket) else {
                    continue;
                };
                let to = SocketAddr::V4(t.to);
                let r = match t.ttl {
                    Some(ttl) => socket.try_send_to_ttl(&t.bytes, to, ttl),
                    None => socket.try_send_to(&t.bytes, to),
                };
                if let Err(e) = r {
                    tracing::debug!(to = %t.to, error = %e, "datagram not sent");
                }
            }
            let mut any = false;
            while let Some(e) = self.core.poll_event() {
                any = true;
                self.dispatch(e, ctx);
            }
            if !any && !sent {
                break;
            }
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
            HyperEvent::OpDone { op, result } => self.on_op_done(op, result),
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
                payload,
                ..
            } => {
                let remote_id = payload.udx.map(|u| u.id as u32);
                self.on_incoming_handshake(
                    server,
                    handshake,
                    remote_public_key,
                    client_address,
                    remote_id,
                    ctx,
                );
            }
            HyperEvent::ServerConnection {
                server,
                handshake,
                result,
                remote_udx_id,
                connect,
                relay,
            } => self.on_server_connection(
                server,
                handshake,
                result,
                remote_udx_id,
                connect,
                relay,
                ctx,
            ),
            HyperEvent::ServerPathAborted { handshake, .. } => {
                if let Some(c) = self.server_conns.get_mut(&handshake) {
                    c.punch_failed = true;
                    if !c.started && !c.relay_pending && c.connected.is_none() {
                        self.drop_server_conn(handshake);
                    }
                }
            }
            HyperEvent::Handshaked {
                connect,
                result,
                remote_udx_id,
                relay,
                ..
            } => self.on_handshaked(connect, result, remote_udx_id, relay, ctx),
            HyperEvent::ConnectPath {
                connect,
                socket,
                address,
                kind,
            } => self.on_connect_path(connect, socket, address, kind, ctx),
            HyperEvent::ConnectFailed { connect, error } => self.on_connect_failed(connect, error),
            HyperEvent::NatSampled {
                sample,
                nat,
                addresses,
            } => {
                if let Some(tx) = self.nat_samples.remove(&sample) {
                    let _ = tx.send(NatSample { nat, addresses });
                }
            }
            other => tracing::trace!(event = ?other, "dht event"),
        }
    }

    fn on_op_done(&mut self, op: OpId, result: Result<OpResult, OpError>) {
        match self.sinks.remove(&op) {
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
        }
    }

    // ----- the server side of a connect -----

    fn on_incoming_handshake(
        &mut self,
        server: ServerId,
        handshake: HandshakeId,
        remote_public_key: PublicKey,
        client_address: SocketAddrV4,
        remote_id: Option<u32>,
        ctx: &mut Context<Self>,
    ) {
        let firewall = self.servers.get(&server).and_then(|s| s.firewall.clone());
        match firewall {
            None => self.accept(server, handshake, remote_id, ctx),
            Some(f) => {
                let fut = f(remote_public_key, client_address);
                ctx.spawn(fut.into_actor(self).map(move |allow, act, ctx| {
                    if allow {
                        act.accept(server, handshake, remote_id, ctx);
                    } else {
                        tracing::debug!(remote = %remote_public_key, "firewall refused a client");
                        act.core.reject(Instant::now(), handshake);
                        act.flush(ctx);
                    }
                }));
            }
        }
    }

    fn accept(
        &mut self,
        server: ServerId,
        handshake: HandshakeId,
        remote_id: Option<u32>,
        ctx: &mut Context<Self>,
    ) {
        self.core.set_interfaces(interfaces());
        let path: SharedPath = Arc::new(Mutex::new(PathState {
            remote_id,
            ..Default::default()
        }));
        let made = self
            .udx
            .create_stream(StreamConfig::default())
            .and_then(|s| {
                s.set_firewall(path_firewall(
                    path.clone(),
                    StreamKey::Server(handshake),
                    self.notes.clone(),
                ))?;
                Ok(s)
            });
        match made {
            Ok(stream) => {
                let id = stream.id();
                self.make_room_for_half_open();
                self.server_conns.insert(
                    handshake,
                    ServerConn {
                        server,
                        stream: Some(stream),
                        path,
                        result: None,
                        connected: None,
                        relay_pending: false,
                        relay: None,
                        started: false,
                        punch_failed: false,
                        accepted_at: Instant::now(),
                    },
                );
                self.core.accept(Instant::now(), handshake, id);
                // A bound on the whole wait, whatever happens to the punch or the relay.
                ctx.run_later(PUNCH_TIMEOUT, move |act, _| {
                    if act.server_conns.get(&handshake).is_some_and(|c| !c.started) {
                        act.drop_server_conn(handshake);
                    }
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot create a stream for a client");
                self.core.reject(Instant::now(), handshake);
            }
        }
        self.flush(ctx);
    }

    /// Accepted handshakes whose client has not started a path yet.
    fn half_open(&self) -> usize {
        self.server_conns.values().filter(|c| !c.started).count()
    }

    /// At [`MAX_HALF_OPEN`], drops the oldest half-open connection.
    fn make_room_for_half_open(&mut self) {
        if self.half_open() < MAX_HALF_OPEN {
            return;
        }
        let oldest = self
            .server_conns
            .iter()
            .filter(|(_, c)| !c.started)
            .min_by_key(|(_, c)| c.accepted_at)
            .map(|(h, _)| *h);
        if let Some(h) = oldest {
            tracing::debug!("{MAX_HALF_OPEN} half-open connections: dropping the oldest");
            self.drop_server_conn(h);
        }
    }

    fn drop_server_conn(&mut self, handshake: HandshakeId) {
        if let Some(mut c) = self.server_conns.remove(&handshake) {
            if let Some(s) = c.stream.take() {
                s.destroy();
            }
        }
        self.core.server_stream_closed(Instant::now(), handshake);
    }

    /// A relayed server connection's stream closed: its relay link and its handshake go.
    fn relayed_server_conn_closed(&mut self, handshake: HandshakeId, ctx: &mut Context<Self>) {
        let Some(c) = self.server_conns.remove(&handshake) else {
            // Upgraded to a direct path meanwhile (the relay went with the upgrade).
            return;
        };
        if let Some(hold) = c.relay {
            drop(lock_hold(&hold).take());
        }
        self.core.server_stream_closed(Instant::now(), handshake);
        self.flush(ctx);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_server_connection(
        &mut self,
        server: ServerId,
        handshake: HandshakeId,
        result: HandshakeResult,
        remote_udx_id: u32,
        connect: Option<(SocketKind, SocketAddrV4)>,
        relay: Option<RelayPairing>,
        ctx: &mut Context<Self>,
    ) {
        let Some(c) = self.server_conns.get_mut(&handshake) else {
            return;
        };
        c.result = Some(result);
        lock(&c.path).remote_id = Some(remote_udx_id);
        if let Some((kind, addr)) = connect {
            let taken = std::mem::replace(&mut lock(&c.path).taken, true);
            if !taken {
                let sock = self.socket(kind).cloned();
                let c = self.server_conns.get_mut(&handshake);
                if let (Some(c), Some(sock)) = (c, sock) {
                    if let Some(s) = &c.stream {
                        if let Err(e) = s.connect_via(&sock, remote_udx_id, SocketAddr::V4(addr)) {
                            tracing::debug!(error = %e, "cannot connect an accepted stream");
                        }
                    }
                    c.connected = Some(addr);
                }
            }
        }
        if let Some(pairing) = relay {
            self.start_relay(StreamKey::Server(handshake), pairing, ctx);
        }
        if let Some(c) = self.server_conns.get(&handshake) {
            if c.connected.is_some() {
                self.core.server_stream_connected(Instant::now(), handshake);
                self.start_server_conn(handshake, PathKind::Direct, ctx);
            }
        }
        let _ = server;
    }

    /// Starts the secret stream of an accepted connection and hands it to its server.
    fn start_server_conn(
        &mut self,
        handshake: HandshakeId,
        path: PathKind,
        ctx: &mut Context<Self>,
    ) {
        let Some(c) = self.server_conns.get_mut(&handshake) else {
            return;
        };
        if c.started || c.result.is_none() {
            return;
        }
        let (Some(stream), Some(result)) = (c.stream.take(), c.result.take()) else {
            return;
        };
        c.started = true;
        let relayed = path == PathKind::Relay;
        let relay = c.relay.clone();
        let remote_address = c
            .connected
            .or_else(|| stream.remote().and_then(|(_, a)| v4(a)))
            .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        let Some(tx) = self.servers.get(&c.server).map(|s| s.connections.clone()) else {
            stream.destroy();
            return;
        };
        if !relayed {
            // Nothing more to wait for on this handshake.
            self.server_conns.remove(&handshake);
        } else {
            // Kept for a relay-to-direct upgrade, until the stream closes (hyperdht: the
            // raw stream's close destroys the relay connection and clears the handshake).
            let control = stream.control();
            ctx.spawn(
                async move {
                    let _ = control.closed().await;
                }
                .into_actor(self)
                .map(move |(), act, ctx| act.relayed_server_conn_closed(handshake, ctx)),
            );
        }
        ctx.spawn(
            async move {
                let cfg = SecretConfig::default().with_keepalive(CONNECTION_KEEPALIVE);
                let mut stream = SecretStream::from_handshake(stream, result, cfg);
                send_header(&mut stream).await;
                Connection {
                    stream,
                    remote_address,
                    is_initiator: false,
                    path,
                    relay: if relayed { relay } else { None },
                }
            }
            .into_actor(self)
            .map(move |conn, _act, _ctx| {
                if tx.try_send(conn).is_err() {
                    tracing::debug!("server connection dropped: the application is not accepting");
                }
            }),
        );
    }

    // ----- the client side -----

    fn on_handshaked(
        &mut self,
        connect: ConnectId,
        result: HandshakeResult,
        remote_udx_id: u32,
        relay: Option<RelayPairing>,
        ctx: &mut Context<Self>,
    ) {
        let Some(c) = self.connects.get_mut(&connect) else {
            return;
        };
        c.result = Some(result);
        c.remote_udx_id = remote_udx_id;
        let seen = {
            let mut st = lock(&c.path);
            st.remote_id = Some(remote_udx_id);
            if st.seen.is_some() && !st.taken {
                st.taken = true;
                st.seen
            } else {
                None
            }
        };
        if let Some(pairing) = relay {
            self.start_relay(StreamKey::Client(connect), pairing, ctx);
        }
        if let Some((sid, addr)) = seen {
            // The server reached us before its answer did: connect there.
            let sock = self.socket_by_id(sid).cloned();
            if let (Some(c), Some(sock), Some(addr)) = (self.connects.get(&connect), sock, v4(addr))
            {
                if let Some(s) = &c.stream {
                    let _ = s.connect_via(&sock, remote_udx_id, SocketAddr::V4(addr));
                }
                self.core.connect_path_taken(Instant::now(), connect);
                self.start_client_conn(connect, addr, PathKind::Direct, ctx);
            }
        }
    }

    fn on_connect_path(
        &mut self,
        connect: ConnectId,
        socket: SocketKind,
        address: SocketAddrV4,
        kind: PathKind,
        ctx: &mut Context<Self>,
    ) {
        let sock = self.socket(socket).cloned();
        if let SocketKind::Pool(id) = socket {
            // The punched socket now belongs to the connection (its stream keeps it open).
            if let Some((_, h)) = self.pool.remove(&id) {
                ctx.cancel_future(h);
            }
        }
        let Some(c) = self.connects.get_mut(&connect) else {
            return;
        };
        c.core_done = true;
        let Some(sock) = sock else {
            return self.fail_client(connect, Error::Connect(ConnectError::ConnectionFailed));
        };
        let remote_id = c.remote_udx_id;
        let (taken, relayed) = {
            let mut st = lock(&c.path);
            let t = std::mem::replace(&mut st.taken, true);
            (t, st.relayed)
        };
        if !taken {
            if let Some(s) = &c.stream {
                if let Err(e) = s.connect_via(&sock, remote_id, SocketAddr::V4(address)) {
                    return self.fail_client(connect, Error::Udx(e));
                }
            }
            return self.start_client_conn(connect, address, kind, ctx);
        }
        if relayed && c.started {
            // A punch that finished after the relay paired: move the stream to it.
            lock(&c.path).upgraded = true;
            let relay = c.relay.clone();
            let stream = c.control.take();
            self.connects.remove(&connect);
            if let Some(raw) = stream {
                actix::spawn(upgrade(raw, sock, remote_id, address, relay));
            }
        }
    }

    fn on_connect_failed(&mut self, connect: ConnectId, error: ConnectError) {
        let Some(c) = self.connects.get_mut(&connect) else {
            return;
        };
        c.core_done = true;
        if c.started || c.relay_pending {
            // A relay carries (or may still carry) the connection.
            c.failed = Some(error);
            if c.started {
                self.connects.remove(&connect);
            }
            return;
        }
        self.fail_client(connect, Error::Connect(error));
    }

    fn fail_client(&mut self, connect: ConnectId, error: Error) {
        if let Some(mut c) = self.connects.remove(&connect) {
            self.core.cancel_connect(connect);
            if let Some(s) = c.stream.take() {
                s.destroy();
            }
            if let Some(tx) = c.tx.take() {
                let _ = tx.send(Err(error));
            }
        }
    }

    fn start_client_conn(
        &mut self,
        connect: ConnectId,
        address: SocketAddrV4,
        path: PathKind,
        ctx: &mut Context<Self>,
    ) {
        let _ = ctx;
        let Some(c) = self.connects.get_mut(&connect) else {
            return;
        };
        if c.started {
            return;
        }
        let (Some(stream), Some(result), Some(tx)) =
            (c.stream.take(), c.result.take(), c.tx.take())
        else {
            return;
        };
        c.started = true;
        c.control = Some(stream.control());
        let relayed = path == PathKind::Relay;
        let relay = c.relay.clone();
        let took = c.started_at.elapsed();
        if !relayed || c.core_done {
            self.connects.remove(&connect);
        }
        tracing::debug!(%address, %path, ?took, "connected");
        let cfg = SecretConfig::default().with_keepalive(CONNECTION_KEEPALIVE);
        let mut stream = SecretStream::from_handshake(stream, result, cfg);
        // The header frame is the first packet the server sees from us: send it now.
        actix::spawn(async move {
            send_header(&mut stream).await;
            let _ = tx.send(Ok(Connection {
                stream,
                remote_address: address,
                is_initiator: true,
                path,
                relay: if relayed { relay } else { None },
            }));
        });
    }

    // ----- relays -----

    fn start_relay(&mut self, key: StreamKey, pairing: RelayPairing, ctx: &mut Context<Self>) {
        let Some(dht) = self.this.clone() else {
            return;
        };
        let (key_pair, stream_id) = match key {
            StreamKey::Client(c) => match self.connects.get_mut(&c) {
                Some(cc) => {
                    cc.relay_pending = true;
                    (cc.key_pair.clone(), cc.stream.as_ref().map(UdxStream::id))
                }
                None => return,
            },
            StreamKey::Server(h) => {
                let kp = self
                    .server_conns
                    .get(&h)
                    .and_then(|c| self.servers.get(&c.server))
                    .map(|s| s.key_pair.clone());
                match (kp, self.server_conns.get_mut(&h)) {
                    (Some(kp), Some(c)) => {
                        c.relay_pending = true;
                        (kp, c.stream.as_ref().map(UdxStream::id))
                    }
                    _ => return,
                }
            }
        };
        let Some(stream_id) = stream_id else { return };
        self.core.note_relaying();
        ctx.spawn(
            pair_through(dht, key_pair, pairing, stream_id)
                .into_actor(self)
                .map(move |r, act, ctx| act.on_relay(key, r, ctx)),
        );
    }

    fn on_relay(&mut self, key: StreamKey, r: Result<Paired, Error>, ctx: &mut Context<Self>) {
        let paired = match r {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "relay pairing failed");
                self.core.note_relay_result(false);
                return self.on_relay_failed(key);
            }
        };
        self.core.note_relay_result(true);
        let sock = self.socket_by_id(paired.socket).cloned();
        let hold = Arc::new(Mutex::new(Some(paired.hold)));
        let (path, stream) = match key {
            StreamKey::Client(c) => match self.connects.get_mut(&c) {
                Some(cc) => {
                    cc.relay_pending = false;
                    cc.relay = Some(hold.clone());
                    (cc.path.clone(), cc.stream.as_ref().map(|s| (s.id(), ())))
                }
                None => return,
            },
            StreamKey::Server(h) => match self.server_conns.get_mut(&h) {
                Some(sc) => {
                    sc.relay_pending = false;
                    sc.relay = Some(hold.clone());
                    (sc.path.clone(), sc.stream.as_ref().map(|s| (s.id(), ())))
                }
                None => return,
            },
        };
        let taken = {
            let mut st = lock(&path);
            let t = std::mem::replace(&mut st.taken, true);
            if !t {
                st.relayed = true;
                st.relay = Some((paired.socket, paired.address));
            }
            t
        };
        tracing::debug!(?key, taken, remote_id = paired.remote_id, address = %paired.address, "relay paired");
        if taken || stream.is_none() {
            // A direct path won meanwhile: the relay is not needed.
            return;
        }
        let Some(sock) = sock else { return };
        let connected = match key {
            StreamKey::Client(c) => self.connects.get(&c).and_then(|cc| cc.stream.as_ref()),
            StreamKey::Server(h) => self.server_conns.get(&h).and_then(|sc| sc.stream.as_ref()),
        }
        .map(|s| s.connect_via(&sock, paired.remote_id, paired.address));
        if let Some(Err(e)) = connected {
            tracing::debug!(error = %e, "cannot connect a stream to its relay");
            return self.on_relay_failed(key);
        }
        let relay_address =
            v4(paired.address).unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        match key {
            StreamKey::Client(c) => self.start_client_conn(c, relay_address, PathKind::Relay, ctx),
            StreamKey::Server(h) => {
                if let Some(sc) = self.server_conns.get_mut(&h) {
                    sc.connected = Some(relay_address);
                }
                self.start_server_conn(h, PathKind::Relay, ctx)
            }
        }
    }

    fn on_relay_failed(&mut self, key: StreamKey) {
        match key {
            StreamKey::Client(c) => {
                let Some(cc) = self.connects.get_mut(&c) else {
                    return;
                };
                cc.relay_pending = false;
                if cc.started {
                    return;
                }
                if cc.core_done {
                    // As hyperdht: once only the relay was left, its failure is the error.
                    if let Some(e) = cc.failed.take() {
                        tracing::debug!(error = %e, "the punch had failed too");
                    }
                    self.fail_client(c, Error::Connect(ConnectError::RelayAborted));
                }
            }
            StreamKey::Server(h) => {
                let Some(sc) = self.server_conns.get_mut(&h) else {
                    return;
                };
                sc.relay_pending = false;
                if sc.punch_failed && !sc.started && sc.connected.is_none() {
                    self.drop_server_conn(h);
                }
            }
        }
    }

    fn on_note(&mut self, note: Note, ctx: &mut Context<Self>) {
        tracing::debug!(?note, "stream path note");
        match note {
            Note::Connected(StreamKey::Client(c), sid, from) => {
                let Some(addr) = v4(from) else { return };
                self.core.connect_path_taken(Instant::now(), c);
                let _ = sid;
                self.start_client_conn(c, addr, PathKind::Direct, ctx);
            }
            Note::Connected(StreamKey::Server(h), sid, from) => {
                // Through a pool socket it is a punched path; the DHT sockets are reached
                // directly (an OPEN server, or the LAN shortcut).
                let kind = match self.kinds.get(&sid) {
                    Some(SocketKind::Pool(_)) => PathKind::Holepunch,
                    _ => PathKind::Direct,
                };
                let Some(c) = self.server_conns.get_mut(&h) else {
                    return;
                };
                c.connected = v4(from);
                self.core.server_stream_connected(Instant::now(), h);
                self.start_server_conn(h, kind, ctx);
            }
            Note::Upgraded(key, from) => {
                tracing::debug!(%from, "relayed connection upgraded to a direct path");
                self.core.note_upgrade();
                let hold = match key {
                    StreamKey::Client(c) => self.connects.remove(&c).and_then(|c| c.relay),
                    StreamKey::Server(h) => self.server_conns.remove(&h).and_then(|c| c.relay),
                };
                if let StreamKey::Server(h) = key {
                    self.core.server_stream_connected(Instant::now(), h);
                }
                // The relay link goes once the direct path has carried traffic.
                if let Some(hold) = hold {
                    actix::spawn(async move {
                        tokio::time::sleep(UPGRADE_GRACE).await;
                        drop(lock_hold(&hold).take());
                    });
                }
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
            boot_replies: n.boot_replies(),
            table_size: n.table().len(),
            nat: nat_status(n),
            punches: self.core.punch_stats(),
            pool_sockets: self.core.pool_sockets(),
            half_open: self.half_open(),
            streams: self.udx.stream_count(),
            handshakes: self.core.handshake_state(),
            pending_connections: self.server_conns.len() + self.connects.len(),
        }
    }
}

impl Actor for DhtActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.this = Some(Dht::from_addr(ctx.address()));
        ctx.add_stream(Self::recv_stream(self.server.clone(), SocketKind::Server));
        ctx.add_stream(Self::recv_stream(self.client.clone(), SocketKind::Client));
        if let Some(rx) = self.notes_rx.take() {
            ctx.add_stream(tokio_stream_of(rx));
        }
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

impl StreamHandler<Note> for DhtActor {
    fn handle(&mut self, note: Note, ctx: &mut Self::Context) {
        self.on_note(note, ctx);
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

fn tokio_stream_of(mut rx: mpsc::Receiver<Note>) -> impl futures::Stream<Item = Note> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn lock_hold(h: &Arc<Mutex<Option<RelayHold>>>) -> std::sync::MutexGuard<'_, Option<RelayHold>> {
    h.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How long a relay link stays after the stream moved to a direct path (packets still in
/// flight through the relay arrive meanwhile).
pub const UPGRADE_GRACE: Duration = Duration::from_secs(5);

/// Moves a relayed stream to the punched path; the relay link goes once everything sent
/// before the move was acknowledged (plus [`UPGRADE_GRACE`]).
async fn upgrade(
    raw: StreamControl,
    sock: UdxSocket,
    remote_id: u32,
    address: SocketAddrV4,
    relay: Option<Arc<Mutex<Option<RelayHold>>>>,
) {
    match raw
        .change_remote_via(&sock, remote_id, SocketAddr::V4(address))
        .await
    {
        Ok(()) => {
            // An empty message lets the other side see the direct path at once (JS
            // `confirmDirectUpgrade`), without writing into the secret stream.
            let _ = raw.try_send_message(&[]);
            tokio::time::sleep(UPGRADE_GRACE).await;
            if let Some(h) = relay {
                drop(lock_hold(&h).take());
            }
        }
        Err(e) => tracing::debug!(error = %e, "relay upgrade failed; staying relayed"),
    }
}

/// The dht-rpc level NAT view of a node.
fn nat_status(n: &rpc::Node) -> NatStatus {
    let addr = n.nat_address();
    let nat = if !n.is_firewalled() {
        NatType::Open
    } else {
        match addr {
            Some(a) if a.port() == 0 => NatType::Random,
            Some(_) => NatType::Consistent,
            None => NatType::Unknown,
        }
    };
    NatStatus {
        nat,
        public_address: addr,
        firewalled: n.is_firewalled(),
    }
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
        let (tx, rx) = mpsc::channel(self.results_buffer);
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
        let (tx, rx) = mpsc::channel(FIND_PEER_BUFFER);
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
        let (tx, rx) = mpsc::channel(self.results_buffer);
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
    /// Relay offer, LAN sharing, holepunching.
    pub options: ListenOptions,
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
        let mut options = msg.options;
        options.share_local_address &= self.lan;
        let id = self
            .core
            .listen_with(Instant::now(), &msg.key_pair, options);
        self.servers.insert(
            id,
            ServerState {
                key_pair: msg.key_pair,
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
    /// Relay addresses, relay offer, LAN shortcut, fast open.
    pub options: ConnectOptions,
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
        self.core.set_interfaces(interfaces());
        let path: SharedPath = Arc::new(Mutex::new(PathState::default()));
        let made = self.udx.create_stream(StreamConfig::default());
        let stream = match made {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Err(e.into()));
                return MessageResult(rx);
            }
        };
        let mut options = msg.options;
        options.lan &= self.lan;
        let id = self.core.connect(
            Instant::now(),
            &msg.key_pair,
            msg.remote_public_key,
            stream.id(),
            options,
        );
        if let Err(e) = stream.set_firewall(path_firewall(
            path.clone(),
            StreamKey::Client(id),
            self.notes.clone(),
        )) {
            self.core.cancel_connect(id);
            let _ = tx.send(Err(e.into()));
            return MessageResult(rx);
        }
        self.connects.insert(
            id,
            ClientConn {
                key_pair: msg.key_pair,
                stream: Some(stream),
                path,
                tx: Some(tx),
                result: None,
                remote_udx_id: 0,
                started_at: Instant::now(),
                relay_pending: false,
                relay: None,
                failed: None,
                core_done: false,
                started: false,
                control: None,
            },
        );
        self.flush(ctx);
        MessageResult(rx)
    }
}

/// `SampleNat`: classify this machine's NAT on a fresh socket, as a connect would.
#[derive(Debug, Message)]
#[rtype(result = "oneshot::Receiver<NatSample>")]
pub struct SampleNat;

impl Handler<SampleNat> for DhtActor {
    type Result = MessageResult<SampleNat>;
    fn handle(&mut self, _: SampleNat, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let id = self.core.sample_nat(Instant::now());
        self.nat_samples.insert(id, tx);
        self.flush(ctx);
        MessageResult(rx)
    }
}

/// `CreateRawStream`: an unconnected UDX stream in this node's UDX instance, connected to
/// the first packet that reaches it for `remote_id` (what a blind relay makes per side).
#[derive(Debug, Message)]
#[rtype(result = "Result<UdxStream, Error>")]
pub struct CreateRawStream {
    /// The peer's stream id.
    pub remote_id: u32,
}

impl Handler<CreateRawStream> for DhtActor {
    type Result = Result<UdxStream, Error>;
    fn handle(&mut self, msg: CreateRawStream, _: &mut Self::Context) -> Self::Result {
        let s = self.udx.create_stream(StreamConfig::default())?;
        s.connect_on_first_packet(msg.remote_id)?;
        Ok(s)
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
    let udx = Udx::new();
    let server = match udx.bind(SocketAddr::new(host, config.port)).await {
        Ok(s) => s,
        Err(_) if config.port != 0 => udx.bind(SocketAddr::new(host, 0)).await?,
        Err(e) => return Err(Error::from(e)),
    };
    let client = udx.bind(SocketAddr::new(host, 0)).await?;
    Ok((server, client))
}

/// Writes the secret stream's header frame now (the first packet the other side sees).
async fn send_header(stream: &mut SecretStream<UdxStream>) {
    use tokio::io::AsyncWriteExt;
    if let Err(e) = stream.flush().await {
        tracing::debug!(error = %e, "header frame not sent");
    }
}
