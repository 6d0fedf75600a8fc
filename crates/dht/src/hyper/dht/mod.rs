//! The hyperdht state machine: storage commands, client operations, the handshake router,
//! servers with their announcer, and client connects. Sans-IO like [`crate::rpc::Node`],
//! which it wraps.
//!
//! # Layout
//! One file per machine, all `impl HyperDht`:
//! - `storage`: handlers (this node stores records for others),
//! - `ops`: client operations (queries and their commits),
//! - `announcer`: servers and their announcer,
//! - `router`: PEER_HANDSHAKE / PEER_HOLEPUNCH forwarding for others,
//! - `server`: incoming handshakes (the server side of a connect),
//! - `connect`: outgoing connects (the client side).

mod announcer;
mod connect;
mod ops;
mod router;
mod server;
mod storage;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use bytes::Bytes;
use corenet_codec::hash::blake2b_256;
use corenet_codec::{decode_prefix, to_bytes, PublicKey};
use corenet_noise::{Handshake, HandshakeOptions, HandshakeResult, KeyPair, Pattern};

use super::crypto::{mutable_signable, server_target, sign_announce, Namespaces};
use super::messages::{
    error as payload_error, firewall, mode, Announce, HandshakeMessage, LookupReply, MutableGet,
    MutablePut, NoisePayload, PeerRecord, RelayInfo, UdxInfo, MAX_RELAY_ADDRESSES,
};
use super::store::{PutResult, Store, StoreLimits};
use crate::rpc::message::errors as rpc_errors;
use crate::rpc::{
    self, Event as RpcEvent, IncomingRequest, Node, NodeId, QueryId, QuerySpec, Reply,
    ReplyOptions, RequestError, RequestId, RequestSpec, SocketKind, Transmit,
};

/// hyperdht command numbers (dht-rpc user commands).
pub mod command {
    /// Noise handshake routing.
    pub const PEER_HANDSHAKE: u64 = 0;
    /// Holepunch routing.
    pub const PEER_HOLEPUNCH: u64 = 1;
    /// A server's record.
    pub const FIND_PEER: u64 = 2;
    /// Topic records.
    pub const LOOKUP: u64 = 3;
    /// Store a record.
    pub const ANNOUNCE: u64 = 4;
    /// Remove a record.
    pub const UNANNOUNCE: u64 = 5;
    /// Store a signed mutable value.
    pub const MUTABLE_PUT: u64 = 6;
    /// Read a mutable value.
    pub const MUTABLE_GET: u64 = 7;
    /// Store a content-addressed value.
    pub const IMMUTABLE_PUT: u64 = 8;
    /// Read a content-addressed value.
    pub const IMMUTABLE_GET: u64 = 9;
}

/// How long a server keeps a handshake's reply for duplicate copies of the same message.
pub const HANDSHAKE_CLEAR_WAIT: Duration = Duration::from_secs(10);
/// Relays a server announces itself at.
pub const ANNOUNCE_RELAYS: usize = 3;
/// Relay pings between re-announces.
pub const ANNOUNCER_ITERATIONS: u32 = 100;
/// Interval of relay pings.
pub const ANNOUNCER_PING_INTERVAL: Duration = Duration::from_secs(3);
/// Longest a client connect may take before it fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Handshakes a server keeps waiting for the application's firewall decision.
pub const MAX_PENDING_HANDSHAKES: usize = 256;

/// Identifies an operation (lookup, announce, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub u64);

/// Identifies a listening server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerId(pub u64);

/// Identifies an incoming handshake awaiting [`HyperDht::accept`] or [`HyperDht::reject`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HandshakeId(pub u64);

/// Identifies an outgoing connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectId(pub u64);

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// No persistent node answered the query, so nothing could be stored.
    #[error("too few nodes responded")]
    TooFewNodes,
    /// Every write failed.
    #[error("no node accepted the write")]
    CommitFailed,
    /// The value is too large.
    #[error("value too large")]
    ValueTooLarge,
    /// Cancelled.
    #[error("cancelled")]
    Cancelled,
}

/// Why a connect failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// No node had the server's record.
    #[error("peer not found")]
    PeerNotFound,
    /// Records were found but no handshake succeeded.
    #[error("could not connect to the peer (no handshake succeeded)")]
    ConnectionFailed,
    /// The server's payload has an unsupported version.
    #[error("server is incompatible (payload version {0})")]
    ServerIncompatible(u64),
    /// The server answered with an error.
    #[error("server error {0}")]
    ServerError(u64),
    /// Neither side is directly reachable and holepunching is not available.
    #[error(
        "cannot connect: neither side is directly reachable and holepunching is not supported yet"
    )]
    CannotHolepunch,
    /// The connect took too long.
    #[error("connect timed out")]
    Timeout,
    /// The Noise handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(String),
}

/// Summary of a finished operation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpResult {
    /// The closest persistent nodes that answered (seed for the next query on the target).
    pub closest_nodes: Vec<SocketAddrV4>,
    /// Requests the query sent.
    pub requests: usize,
    /// Writes that succeeded (announce, put).
    pub commits: usize,
}

/// What [`HyperDht`] reports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum HyperEvent {
    /// Records from one node during a lookup.
    LookupReply {
        /// The lookup.
        op: OpId,
        /// The node that answered.
        from: SocketAddrV4,
        /// Records.
        peers: Vec<PeerRecord>,
        /// The newest bump the node saw.
        bump: u64,
        /// Hops from the query's seeds.
        hops: u8,
    },
    /// A node holds the record of the server being looked for.
    PeerFound {
        /// The find-peer (or connect) operation.
        op: OpId,
        /// The node holding it (it forwards handshakes).
        from: SocketAddrV4,
        /// The record.
        record: PeerRecord,
    },
    /// A valid mutable value.
    MutableValue {
        /// The get.
        op: OpId,
        /// Who returned it.
        from: SocketAddrV4,
        /// The value.
        value: MutableGet,
    },
    /// An immutable value matching its hash.
    ImmutableValue {
        /// The get.
        op: OpId,
        /// Who returned it.
        from: SocketAddrV4,
        /// The value.
        value: Bytes,
    },
    /// An operation finished.
    OpDone {
        /// Which.
        op: OpId,
        /// How.
        result: Result<OpResult, OpError>,
    },
    /// A server finished its first announce.
    ServerAnnounced {
        /// Which server.
        server: ServerId,
        /// The relays it is announced at.
        relay_addresses: Vec<SocketAddrV4>,
    },
    /// A client wants to connect; answer with [`HyperDht::accept`] or [`HyperDht::reject`]
    /// (the firewall decision).
    IncomingHandshake {
        /// Which server.
        server: ServerId,
        /// The handshake.
        handshake: HandshakeId,
        /// The client's static key, proven by Noise.
        remote_public_key: PublicKey,
        /// The client's address as the first relay (or we) saw it.
        client_address: SocketAddrV4,
        /// The client's payload.
        payload: NoisePayload,
        /// The socket the UDX stream for this connection must be created on.
        socket: SocketKind,
    },
    /// A handshake was accepted and answered: connect the UDX stream and start the secret
    /// stream from `result` (we are the responder).
    ServerConnection {
        /// Which server.
        server: ServerId,
        /// Which handshake.
        handshake: HandshakeId,
        /// Keys and hash.
        result: HandshakeResult,
        /// The client's UDX stream id.
        remote_udx_id: u32,
        /// Connect now to this address; `None` means wait for the client's first packet.
        connect: Option<SocketAddrV4>,
    },
    /// A connect succeeded at the Noise level: connect the UDX stream and start the secret
    /// stream from `result` (we are the initiator).
    Connected {
        /// Which connect.
        connect: ConnectId,
        /// Keys and hash.
        result: HandshakeResult,
        /// The server's UDX stream id.
        remote_udx_id: u32,
        /// Our socket to use.
        socket: SocketKind,
        /// The server's address.
        address: SocketAddrV4,
        /// The server's payload (firewall, relay addresses).
        payload: NoisePayload,
    },
    /// A connect failed.
    ConnectFailed {
        /// Which connect.
        connect: ConnectId,
        /// Why.
        error: ConnectError,
    },
    /// A dht-rpc event (bootstrap, persistence, NAT, table changes).
    Rpc(RpcEvent),
}

/// Settings of a [`HyperDht`].
#[derive(Debug, Clone, Default)]
pub struct HyperConfig {
    /// The dht-rpc node.
    pub rpc: rpc::Config,
    /// Storage limits.
    pub store: StoreLimits,
    /// Local interface addresses to advertise in handshakes (paired with the server port).
    pub local_addresses: Vec<Ipv4Addr>,
}

/// What an operation does with its query's replies.
#[derive(Debug)]
enum OpKind {
    Lookup,
    FindPeer {
        connect: Option<ConnectId>,
    },
    Announce {
        key_pair: KeyPair,
        peer: PeerRecord,
        bump: u64,
    },
    Unannounce {
        key_pair: KeyPair,
    },
    MutablePut {
        put: MutablePut,
    },
    MutableGet {
        public_key: PublicKey,
        seq: u64,
        best: Option<MutableGet>,
    },
    ImmutablePut {
        value: Bytes,
    },
    ImmutableGet,
    Announcer {
        server: ServerId,
    },
}

#[derive(Debug)]
struct Op {
    kind: OpKind,
    target: [u8; 32],
    query: Option<QueryId>,
    commits_outstanding: usize,
    commits_ok: usize,
    result: OpResult,
    silent: bool,
}

/// What a request made by this layer is for.
#[derive(Debug, Clone)]
enum Purpose {
    Commit(OpId),
    ServerAnnounce {
        server: ServerId,
        reply_to: SocketAddrV4,
        seen_as: SocketAddrV4,
        generation: u64,
    },
    RelayPing {
        server: ServerId,
        generation: u64,
    },
    UnannounceToken {
        key_pair: Box<KeyPair>,
        target: [u8; 32],
    },
    UnannounceSend,
    Handshake {
        connect: ConnectId,
        to: SocketAddrV4,
    },
}

#[derive(Debug)]
struct Server {
    key_pair: KeyPair,
    target: [u8; 32],
    record: Bytes,
    relays: Vec<RelayInfo>,
    relay_addresses: Vec<SocketAddrV4>,
    /// Relays of the last three announces, newest last.
    generations: VecDeque<Vec<SocketAddrV4>>,
    closest_nodes: Vec<SocketAddrV4>,
    announce_generation: u64,
    pending_announces: usize,
    new_relays: Vec<RelayInfo>,
    announced_once: bool,
    ping_iterations: u32,
    ping_outstanding: usize,
    ping_ok: usize,
    refreshing: bool,
    closed: bool,
}

#[derive(Debug)]
struct Waiter {
    req: IncomingRequest,
    msg: HandshakeMessage,
}

#[derive(Debug)]
enum SlotState {
    Pending {
        handshake: Box<Handshake>,
        id: HandshakeId,
        server: ServerId,
        payload: Box<NoisePayload>,
        client_address: SocketAddrV4,
        direct: bool,
        waiters: Vec<Waiter>,
    },
    Done(Bytes),
    Rejected,
}

#[derive(Debug)]
struct Slot {
    state: SlotState,
    expires: Instant,
}

#[derive(Debug)]
struct Connect {
    handshake: Option<Box<Handshake>>,
    msg1: Bytes,
    target: [u8; 32],
    tried: HashSet<SocketAddrV4>,
    attempts: usize,
    find_op: Option<OpId>,
    found: bool,
    deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    AnnouncerPing(ServerId),
    ConnectDeadline(ConnectId),
    SlotExpire,
}

/// The hyperdht state machine. See the [module docs](self).
#[derive(Debug)]
pub struct HyperDht {
    node: Node,
    ns: Namespaces,
    store: Store,
    local_addresses: Vec<Ipv4Addr>,
    ops: HashMap<OpId, Op>,
    query_ops: HashMap<QueryId, OpId>,
    requests: HashMap<RequestId, Purpose>,
    servers: HashMap<ServerId, Server>,
    server_targets: HashMap<[u8; 32], ServerId>,
    slots: HashMap<[u8; 32], Slot>,
    pending_handshakes: HashMap<HandshakeId, [u8; 32]>,
    connects: HashMap<ConnectId, Connect>,
    events: VecDeque<HyperEvent>,
    timers: BinaryHeap<Reverse<(Instant, TimerKind)>>,
    next_id: u64,
}

impl HyperDht {
    /// A node that starts bootstrapping at `now`.
    pub fn new(config: HyperConfig, now: Instant) -> Self {
        HyperDht {
            node: Node::new(config.rpc, now),
            ns: Namespaces::new(),
            store: Store::new(config.store),
            local_addresses: config.local_addresses,
            ops: HashMap::new(),
            query_ops: HashMap::new(),
            requests: HashMap::new(),
            servers: HashMap::new(),
            server_targets: HashMap::new(),
            slots: HashMap::new(),
            pending_handshakes: HashMap::new(),
            connects: HashMap::new(),
            events: VecDeque::new(),
            timers: BinaryHeap::new(),
            next_id: 1,
        }
    }

    /// The dht-rpc node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The dht-rpc node, mutably.
    pub fn node_mut(&mut self) -> &mut Node {
        &mut self.node
    }

    /// The store of records held for others.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    // ----- I/O plumbing -----

    /// Handles a datagram (dht-rpc only; the socket owner routes UDX packets elsewhere).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        socket: SocketKind,
        from: SocketAddrV4,
        bytes: &[u8],
    ) {
        self.node.handle_datagram(now, socket, from, bytes);
        self.process(now);
    }

    /// Handles due timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.node.handle_timeout(now);
        while let Some(Reverse((at, kind))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            match kind {
                TimerKind::AnnouncerPing(s) => self.announcer_ping(now, s),
                TimerKind::ConnectDeadline(c) => {
                    if self.connects.get(&c).is_some_and(|c| c.deadline <= now) {
                        self.fail_connect(c, ConnectError::Timeout);
                    }
                }
                TimerKind::SlotExpire => self
                    .slots
                    .retain(|_, s| s.expires > now || matches!(s.state, SlotState::Pending { .. })),
            }
        }
        self.store.gc(now);
        self.process(now);
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.node.poll_transmit()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<HyperEvent> {
        self.events.pop_front()
    }

    /// When [`HyperDht::handle_timeout`] should run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let t = self.node.poll_timeout();
        match (t, self.timers.peek()) {
            (Some(a), Some(Reverse((b, _)))) => Some(a.min(*b)),
            (a, b) => a.or(b.map(|Reverse((b, _))| *b)),
        }
    }

    fn process(&mut self, now: Instant) {
        while let Some(e) = self.node.poll_event() {
            match e {
                RpcEvent::Request(req) => self.on_request(now, req),
                RpcEvent::Response { id, result } => self.on_response(now, id, result),
                RpcEvent::QueryReply { query, reply, hops } => {
                    self.on_query_reply(now, query, reply, hops)
                }
                RpcEvent::QueryDone {
                    query,
                    closest,
                    requests,
                    ..
                } => self.on_query_done(now, query, closest, requests),
                other => self.events.push_back(HyperEvent::Rpc(other)),
            }
        }
    }

    fn send(
        &mut self,
        now: Instant,
        to: SocketAddrV4,
        spec: RequestSpec,
        purpose: Purpose,
    ) -> RequestId {
        let id = self.node.request(now, to, spec);
        self.requests.insert(id, purpose);
        id
    }

    fn on_response(&mut self, now: Instant, id: RequestId, result: Result<Reply, RequestError>) {
        let Some(purpose) = self.requests.remove(&id) else {
            return;
        };
        match purpose {
            Purpose::Commit(op_id) => {
                let Some(op) = self.ops.get_mut(&op_id) else {
                    return;
                };
                op.commits_outstanding -= 1;
                if matches!(&result, Ok(r) if r.error == 0) {
                    op.commits_ok += 1;
                }
                if op.commits_outstanding == 0 {
                    let ok = op.commits_ok > 0;
                    self.finish_op(
                        op_id,
                        if ok {
                            Ok(())
                        } else {
                            Err(OpError::CommitFailed)
                        },
                    );
                }
            }
            Purpose::ServerAnnounce {
                server,
                reply_to,
                seen_as,
                generation,
            } => {
                let ok = matches!(&result, Ok(r) if r.error == 0);
                self.announcer_on_commit(
                    now,
                    server,
                    generation,
                    ok.then_some((reply_to, seen_as)),
                );
            }
            Purpose::RelayPing { server, generation } => {
                self.announcer_on_ping(now, server, generation, result.is_ok());
            }
            Purpose::UnannounceToken { key_pair, target } => {
                let Ok(r) = result else { return };
                let (Some(token), Some(nid), true) = (r.token, r.from_id, r.value.is_some()) else {
                    return;
                };
                let peer = PeerRecord {
                    public_key: key_pair.public_key(),
                    relay_addresses: Vec::new(),
                };
                let signature = sign_announce(
                    &key_pair,
                    &self.ns.unannounce,
                    &target,
                    &nid.0,
                    &token,
                    &peer,
                    None,
                );
                let ann = Announce {
                    peer: Some(peer),
                    refresh: None,
                    signature: Some(signature),
                    bump: 0,
                };
                let spec = RequestSpec {
                    command: command::UNANNOUNCE,
                    target: Some(target),
                    token: Some(token),
                    value: Some(to_bytes(&ann)),
                    ..Default::default()
                };
                self.send(now, r.from, spec, Purpose::UnannounceSend);
            }
            Purpose::UnannounceSend => {}
            Purpose::Handshake { connect, to } => self.on_handshake_reply(now, connect, to, result),
        }
    }
}

/// Private, reserved and loopback IPv4 ranges (the JS `bogon` module).
pub fn is_bogon(ip: &Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == 10
        || (o[0] == 100 && (64..=127).contains(&o[1]))
        || o[0] == 127
        || (o[0] == 169 && o[1] == 254)
        || (o[0] == 172 && (16..=31).contains(&o[1]))
        || (o[0] == 192 && o[1] == 168)
        || o[0] == 0
        || (o[0] == 192 && o[1] == 0 && (o[2] == 0 || o[2] == 2))
        || (o[0] == 198 && (18..=19).contains(&o[1]))
        || (o[0] == 198 && o[1] == 51 && o[2] == 100)
        || (o[0] == 203 && o[1] == 0 && o[2] == 113)
        || o[0] >= 224
}
