//! The hyperdht state machine: storage commands, client operations, the handshake router,
//! servers with their announcer, and client connects. Sans-IO like [`crate::rpc::Node`],
//! which it wraps.

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

    // ----- storage commands (persistent nodes) -----

    fn on_request(&mut self, now: Instant, req: IncomingRequest) {
        match req.command {
            command::PEER_HANDSHAKE => return self.on_peer_handshake(now, req),
            command::PEER_HOLEPUNCH => return, // holepunching is a later layer
            _ => {}
        }
        if !self.node.is_persistent() {
            self.node
                .reply(&req, ReplyOptions::error(rpc_errors::UNKNOWN_COMMAND));
            return;
        }
        match req.command {
            command::FIND_PEER => {
                let Some(target) = req.target else { return };
                let value = match self
                    .server_targets
                    .get(&target)
                    .and_then(|s| self.servers.get(s))
                {
                    Some(s) => Some(s.record.clone()),
                    None => self.store.forward(now, &target).map(|f| f.record.clone()),
                };
                self.node.reply(&req, ReplyOptions::value(value));
            }
            command::LOOKUP => {
                let Some(target) = req.target else { return };
                let records = self.store.lookup(now, &target);
                let value = if records.is_empty() {
                    None
                } else {
                    let bump = self.store.bump(now, &target);
                    let mut out = Vec::new();
                    corenet_codec::encode::uint(&mut out, records.len() as u64);
                    for r in &records {
                        out.extend_from_slice(r);
                    }
                    corenet_codec::encode::uint(&mut out, bump);
                    Some(Bytes::from(out))
                };
                self.node.reply(&req, ReplyOptions::value(value));
            }
            command::ANNOUNCE => self.on_announce(now, &req),
            command::UNANNOUNCE => self.on_unannounce(&req),
            command::MUTABLE_GET => {
                let (Some(target), Some(v)) = (req.target, req.value.as_ref()) else {
                    return;
                };
                let Ok(seq) = corenet_codec::Decoder::new(v).uint() else {
                    return;
                };
                let value = self
                    .store
                    .mutable(now, &target)
                    .filter(|m| m.seq >= seq)
                    .map(to_bytes);
                self.node.reply(&req, ReplyOptions::value(value));
            }
            command::MUTABLE_PUT => {
                let (Some(target), Some(v), true) =
                    (req.target, req.value.as_ref(), req.token.is_some())
                else {
                    return;
                };
                let Ok((put, _)) = decode_prefix::<MutablePut>(v) else {
                    return;
                };
                if server_target(&put.public_key) != target
                    || put.value.len() > self.store.max_value_len()
                {
                    return;
                }
                let signable = mutable_signable(&self.ns.mutable_put, put.seq, &put.value);
                if !corenet_noise::verify(&put.public_key, &signable, &put.signature) {
                    return;
                }
                let stored = MutableGet {
                    seq: put.seq,
                    value: put.value,
                    signature: put.signature,
                };
                match self.store.put_mutable(now, target, stored) {
                    PutResult::Stored => self.node.reply(&req, ReplyOptions::value(None)),
                    PutResult::SeqReused => self
                        .node
                        .reply(&req, ReplyOptions::error(payload_error::SEQ_REUSED)),
                    PutResult::SeqTooLow => self
                        .node
                        .reply(&req, ReplyOptions::error(payload_error::SEQ_TOO_LOW)),
                    PutResult::Full => {}
                }
            }
            command::IMMUTABLE_GET => {
                let Some(target) = req.target else { return };
                let value = self.store.immutable(now, &target).cloned();
                self.node.reply(&req, ReplyOptions::value(value));
            }
            command::IMMUTABLE_PUT => {
                let (Some(target), Some(v), true) =
                    (req.target, req.value.clone(), req.token.is_some())
                else {
                    return;
                };
                if blake2b_256(&v) != target || v.len() > self.store.max_value_len() {
                    return;
                }
                if self.store.put_immutable(now, target, v) {
                    self.node.reply(&req, ReplyOptions::value(None));
                }
            }
            _ => self
                .node
                .reply(&req, ReplyOptions::error(rpc_errors::UNKNOWN_COMMAND)),
        }
    }

    fn on_announce(&mut self, now: Instant, req: &IncomingRequest) {
        let (Some(target), Some(v), Some(token)) = (req.target, req.value.as_ref(), req.token)
        else {
            return;
        };
        let Ok((ann, _)) = decode_prefix::<Announce>(v) else {
            return;
        };
        let Some(mut peer) = ann.peer.clone() else {
            if let Some(refresh) = ann.refresh {
                if self.store.apply_refresh(now, refresh, req.from).is_some() {
                    self.node.reply(req, ReplyOptions::ack());
                }
            }
            return;
        };
        if !self.signed_by_peer(&self.ns.announce, &target, &token, &peer, &ann) {
            tracing::debug!(from = %req.from, "announce with a bad signature");
            return;
        }
        peer.relay_addresses.truncate(MAX_RELAY_ADDRESSES);
        let record = to_bytes(&peer);
        let announce_self = server_target(&peer.public_key) == target;
        if announce_self {
            self.store
                .set_forward(now, target, req.from, record.clone());
            self.store.remove_record(&target, &peer.public_key);
        } else {
            if ann.bump > self.store.bump(now, &target) {
                self.store.set_bump(now, target, ann.bump);
            }
            self.store
                .add_record(now, target, peer.public_key, record.clone());
        }
        if let Some(r) = ann.refresh {
            self.store
                .set_refresh(now, r, target, peer.public_key, record, announce_self);
        }
        self.node.reply(req, ReplyOptions::ack());
    }

    /// True if `ann` carries a signature by `peer` over the announce (or unannounce, by
    /// `namespace`) signable for this node, `target` and our `token`.
    fn signed_by_peer(
        &self,
        namespace: &[u8; 32],
        target: &[u8; 32],
        token: &[u8; 32],
        peer: &PeerRecord,
        ann: &Announce,
    ) -> bool {
        let Some(sig) = &ann.signature else {
            return false;
        };
        let signable = super::crypto::announce_signable(
            namespace,
            target,
            &self.node.id().0,
            token,
            peer,
            ann.refresh.as_ref(),
        );
        corenet_noise::verify(&peer.public_key, &signable, sig)
    }

    fn on_unannounce(&mut self, req: &IncomingRequest) {
        let (Some(target), Some(v), Some(token)) = (req.target, req.value.as_ref(), req.token)
        else {
            return;
        };
        let Ok((ann, _)) = decode_prefix::<Announce>(v) else {
            return;
        };
        let Some(peer) = &ann.peer else { return };
        if !self.signed_by_peer(&self.ns.unannounce, &target, &token, peer, &ann) {
            tracing::debug!(from = %req.from, "unannounce with a bad signature");
            return;
        }
        if server_target(&peer.public_key) == target {
            self.store.remove_forward(&target);
        }
        self.store.remove_record(&target, &peer.public_key);
        self.node.reply(req, ReplyOptions::ack());
    }

    // ----- client operations -----

    fn start_op(&mut self, now: Instant, kind: OpKind, spec: QuerySpec, silent: bool) -> OpId {
        let id = OpId(self.next_id());
        let target = spec.target;
        let q = self.node.query(now, spec);
        self.query_ops.insert(q, id);
        self.ops.insert(
            id,
            Op {
                kind,
                target,
                query: Some(q),
                commits_outstanding: 0,
                commits_ok: 0,
                result: OpResult::default(),
                silent,
            },
        );
        self.process(now);
        id
    }

    /// Looks up the records announced under `topic`; each node's records arrive as
    /// [`HyperEvent::LookupReply`], then [`HyperEvent::OpDone`].
    pub fn lookup(&mut self, now: Instant, topic: [u8; 32]) -> OpId {
        self.start_op(
            now,
            OpKind::Lookup,
            QuerySpec::new(topic, command::LOOKUP),
            false,
        )
    }

    /// Finds the nodes holding a server's record ([`HyperEvent::PeerFound`]).
    pub fn find_peer(&mut self, now: Instant, public_key: &PublicKey) -> OpId {
        let target = server_target(public_key);
        self.start_op(
            now,
            OpKind::FindPeer { connect: None },
            QuerySpec::new(target, command::FIND_PEER),
            false,
        )
    }

    /// Announces `key_pair`'s public key under `topic` with the given relay addresses (the
    /// nodes that forward handshakes to it): a lookup, then a signed ANNOUNCE to each of the
    /// closest nodes.
    pub fn announce(
        &mut self,
        now: Instant,
        topic: [u8; 32],
        key_pair: &KeyPair,
        relay_addresses: Vec<SocketAddrV4>,
        bump: u64,
    ) -> OpId {
        let mut relay_addresses = relay_addresses;
        relay_addresses.truncate(MAX_RELAY_ADDRESSES);
        let peer = PeerRecord {
            public_key: key_pair.public_key(),
            relay_addresses,
        };
        self.start_op(
            now,
            OpKind::Announce {
                key_pair: key_pair.clone(),
                peer,
                bump,
            },
            QuerySpec::new(topic, command::LOOKUP),
            false,
        )
    }

    /// Removes `key_pair`'s records under `topic` from the closest nodes.
    pub fn unannounce(&mut self, now: Instant, topic: [u8; 32], key_pair: &KeyPair) -> OpId {
        self.start_op(
            now,
            OpKind::Unannounce {
                key_pair: key_pair.clone(),
            },
            QuerySpec::new(topic, command::LOOKUP),
            false,
        )
    }

    /// Stores a signed mutable value at `BLAKE2b(public key)`.
    pub fn mutable_put(
        &mut self,
        now: Instant,
        key_pair: &KeyPair,
        value: Bytes,
        seq: u64,
    ) -> OpId {
        let signature = key_pair.sign(&mutable_signable(&self.ns.mutable_put, seq, &value));
        let public_key = key_pair.public_key();
        let target = server_target(&public_key);
        let put = MutablePut {
            public_key,
            seq,
            value,
            signature,
        };
        let mut v = Vec::new();
        corenet_codec::encode::uint(&mut v, 0);
        self.start_op(
            now,
            OpKind::MutablePut { put },
            QuerySpec::new(target, command::MUTABLE_GET).with_value(Bytes::from(v)),
            false,
        )
    }

    /// Reads the mutable value of `public_key` with at least `seq`; valid values arrive as
    /// [`HyperEvent::MutableValue`].
    pub fn mutable_get(&mut self, now: Instant, public_key: &PublicKey, seq: u64) -> OpId {
        let target = server_target(public_key);
        let mut v = Vec::new();
        corenet_codec::encode::uint(&mut v, seq);
        self.start_op(
            now,
            OpKind::MutableGet {
                public_key: *public_key,
                seq,
                best: None,
            },
            QuerySpec::new(target, command::MUTABLE_GET).with_value(Bytes::from(v)),
            false,
        )
    }

    /// Stores a content-addressed value; its target is `BLAKE2b(value)`.
    pub fn immutable_put(&mut self, now: Instant, value: Bytes) -> ([u8; 32], OpId) {
        let target = blake2b_256(&value);
        let op = self.start_op(
            now,
            OpKind::ImmutablePut { value },
            QuerySpec::new(target, command::IMMUTABLE_GET),
            false,
        );
        (target, op)
    }

    /// Reads a content-addressed value ([`HyperEvent::ImmutableValue`]).
    pub fn immutable_get(&mut self, now: Instant, target: [u8; 32]) -> OpId {
        self.start_op(
            now,
            OpKind::ImmutableGet,
            QuerySpec::new(target, command::IMMUTABLE_GET),
            false,
        )
    }

    /// Stops an operation; no more events for it.
    pub fn cancel(&mut self, op: OpId) {
        if let Some(o) = self.ops.remove(&op) {
            if let Some(q) = o.query {
                self.node.cancel_query(q);
                self.query_ops.remove(&q);
            }
        }
    }

    fn on_query_reply(&mut self, now: Instant, q: QueryId, reply: Reply, hops: u8) {
        let Some(&op_id) = self.query_ops.get(&q) else {
            return;
        };
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        let target = op.target;
        match &mut op.kind {
            OpKind::Lookup | OpKind::Announce { .. } | OpKind::Unannounce { .. } => {
                // An announce starts with a lookup: its records are reported too (hyperswarm
                // uses them when a topic is joined as both server and client).
                if matches!(op.kind, OpKind::Unannounce { .. }) {
                    return;
                }
                let Some(v) = reply.value.as_ref() else {
                    return;
                };
                let Ok((lr, _)) = decode_prefix::<LookupReply>(v) else {
                    return;
                };
                self.events.push_back(HyperEvent::LookupReply {
                    op: op_id,
                    from: reply.from,
                    peers: lr.peers,
                    bump: lr.bump,
                    hops,
                });
            }
            OpKind::FindPeer { connect } => {
                let connect = *connect;
                let Some(v) = reply.value.as_ref() else {
                    return;
                };
                let Ok((record, _)) = decode_prefix::<PeerRecord>(v) else {
                    return;
                };
                if server_target(&record.public_key) != target {
                    return;
                }
                match connect {
                    Some(c) => self.connect_through(now, c, reply.from, true),
                    None => self.events.push_back(HyperEvent::PeerFound {
                        op: op_id,
                        from: reply.from,
                        record,
                    }),
                }
            }
            OpKind::MutableGet {
                public_key,
                seq,
                best,
            } => {
                let Some(v) = reply.value.as_ref() else {
                    return;
                };
                let Ok((m, _)) = decode_prefix::<MutableGet>(v) else {
                    return;
                };
                if m.seq < *seq {
                    return;
                }
                let signable = mutable_signable(&self.ns.mutable_put, m.seq, &m.value);
                if !corenet_noise::verify(public_key, &signable, &m.signature) {
                    return;
                }
                if best.as_ref().is_none_or(|b| m.seq > b.seq) {
                    *best = Some(m.clone());
                }
                self.events.push_back(HyperEvent::MutableValue {
                    op: op_id,
                    from: reply.from,
                    value: m,
                });
            }
            OpKind::ImmutableGet => {
                let Some(v) = reply.value.clone() else { return };
                if blake2b_256(&v) != target {
                    return;
                }
                self.events.push_back(HyperEvent::ImmutableValue {
                    op: op_id,
                    from: reply.from,
                    value: v,
                });
                // The first valid value is the answer.
                self.finish_op(op_id, Ok(()));
            }
            OpKind::MutablePut { .. } | OpKind::ImmutablePut { .. } | OpKind::Announcer { .. } => {}
        }
    }

    fn on_query_done(&mut self, now: Instant, q: QueryId, closest: Vec<Reply>, requests: usize) {
        let Some(op_id) = self.query_ops.remove(&q) else {
            return;
        };
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        op.query = None;
        op.result.closest_nodes = closest.iter().map(|r| r.from).collect();
        op.result.requests = requests;
        let target = op.target;
        let commit: Vec<(SocketAddrV4, RequestSpec)> = match &op.kind {
            OpKind::Lookup | OpKind::MutableGet { .. } | OpKind::ImmutableGet => {
                return self.finish_op(op_id, Ok(()));
            }
            OpKind::FindPeer { connect } => {
                if let Some(c) = *connect {
                    self.on_connect_find_done(now, c);
                }
                return self.finish_op(op_id, Ok(()));
            }
            OpKind::Announcer { server } => {
                let server = *server;
                self.ops.remove(&op_id);
                return self.announcer_commit(now, server, closest);
            }
            OpKind::Announce {
                key_pair,
                peer,
                bump,
            } => closest
                .iter()
                .filter_map(|r| {
                    let (token, id) = (r.token?, r.from_id?);
                    let signature = sign_announce(
                        key_pair,
                        &self.ns.announce,
                        &target,
                        &id.0,
                        &token,
                        peer,
                        None,
                    );
                    let ann = Announce {
                        peer: Some(peer.clone()),
                        refresh: None,
                        signature: Some(signature),
                        bump: *bump,
                    };
                    Some((
                        r.from,
                        RequestSpec {
                            command: command::ANNOUNCE,
                            target: Some(target),
                            token: Some(token),
                            value: Some(to_bytes(&ann)),
                            ..Default::default()
                        },
                    ))
                })
                .collect(),
            OpKind::Unannounce { key_pair } => {
                let peer = PeerRecord {
                    public_key: key_pair.public_key(),
                    relay_addresses: Vec::new(),
                };
                closest
                    .iter()
                    .filter_map(|r| {
                        let (token, id) = (r.token?, r.from_id?);
                        let signature = sign_announce(
                            key_pair,
                            &self.ns.unannounce,
                            &target,
                            &id.0,
                            &token,
                            &peer,
                            None,
                        );
                        let ann = Announce {
                            peer: Some(peer.clone()),
                            refresh: None,
                            signature: Some(signature),
                            bump: 0,
                        };
                        Some((
                            r.from,
                            RequestSpec {
                                command: command::UNANNOUNCE,
                                target: Some(target),
                                token: Some(token),
                                value: Some(to_bytes(&ann)),
                                ..Default::default()
                            },
                        ))
                    })
                    .collect()
            }
            OpKind::MutablePut { put } => {
                let value = to_bytes(put);
                closest
                    .iter()
                    .filter_map(|r| {
                        Some((
                            r.from,
                            RequestSpec {
                                command: command::MUTABLE_PUT,
                                target: Some(target),
                                token: Some(r.token?),
                                value: Some(value.clone()),
                                ..Default::default()
                            },
                        ))
                    })
                    .collect()
            }
            OpKind::ImmutablePut { value } => closest
                .iter()
                .filter_map(|r| {
                    Some((
                        r.from,
                        RequestSpec {
                            command: command::IMMUTABLE_PUT,
                            target: Some(target),
                            token: Some(r.token?),
                            value: Some(value.clone()),
                            ..Default::default()
                        },
                    ))
                })
                .collect(),
        };
        if commit.is_empty() {
            return self.finish_op(op_id, Err(OpError::TooFewNodes));
        }
        if let Some(op) = self.ops.get_mut(&op_id) {
            op.commits_outstanding = commit.len();
        }
        for (to, spec) in commit {
            self.send(now, to, spec, Purpose::Commit(op_id));
        }
    }

    fn finish_op(&mut self, op_id: OpId, result: Result<(), OpError>) {
        let Some(op) = self.ops.remove(&op_id) else {
            return;
        };
        if let Some(q) = op.query {
            self.node.cancel_query(q);
            self.query_ops.remove(&q);
        }
        if op.silent {
            return;
        }
        let mut res = op.result;
        res.commits = op.commits_ok;
        self.events.push_back(HyperEvent::OpDone {
            op: op_id,
            result: result.map(|()| res),
        });
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

    // ----- servers and the announcer -----

    /// Starts a server for `key_pair`: its record is announced at `BLAKE2b(public key)` on the
    /// closest nodes, which then forward handshakes to it. Incoming handshakes arrive as
    /// [`HyperEvent::IncomingHandshake`].
    pub fn listen(&mut self, now: Instant, key_pair: &KeyPair) -> ServerId {
        let id = ServerId(self.next_id());
        let target = server_target(&key_pair.public_key());
        let record = to_bytes(&PeerRecord {
            public_key: key_pair.public_key(),
            relay_addresses: Vec::new(),
        });
        self.servers.insert(
            id,
            Server {
                key_pair: key_pair.clone(),
                target,
                record,
                relays: Vec::new(),
                relay_addresses: Vec::new(),
                generations: VecDeque::new(),
                closest_nodes: Vec::new(),
                announce_generation: 0,
                pending_announces: 0,
                new_relays: Vec::new(),
                announced_once: false,
                ping_iterations: 0,
                ping_outstanding: 0,
                ping_ok: 0,
                refreshing: false,
                closed: false,
            },
        );
        self.server_targets.insert(target, id);
        self.announcer_update(now, id);
        id
    }

    /// The relay addresses of a server (its own address when reachable, then its relays).
    pub fn server_relay_addresses(&self, server: ServerId) -> Vec<SocketAddrV4> {
        self.servers
            .get(&server)
            .map(|s| s.relay_addresses.clone())
            .unwrap_or_default()
    }

    /// Stops a server and unannounces it from its relays.
    pub fn close_server(&mut self, now: Instant, server: ServerId) {
        let Some(mut s) = self.servers.remove(&server) else {
            return;
        };
        s.closed = true;
        self.server_targets.remove(&s.target);
        let mut all: Vec<SocketAddrV4> = s.generations.iter().flatten().copied().collect();
        all.sort();
        all.dedup();
        for relay in all {
            self.unannounce_relay(now, relay, &s.key_pair, s.target);
        }
        self.process(now);
    }

    /// Re-announces a server now (for example after a network change).
    pub fn refresh_server(&mut self, now: Instant, server: ServerId) {
        self.announcer_update(now, server);
    }

    fn unannounce_relay(
        &mut self,
        now: Instant,
        relay: SocketAddrV4,
        key_pair: &KeyPair,
        target: [u8; 32],
    ) {
        let spec = RequestSpec {
            command: command::FIND_PEER,
            target: Some(target),
            ..Default::default()
        };
        self.send(
            now,
            relay,
            spec,
            Purpose::UnannounceToken {
                key_pair: Box::new(key_pair.clone()),
                target,
            },
        );
    }

    fn announcer_update(&mut self, now: Instant, server: ServerId) {
        let Some(s) = self.servers.get_mut(&server) else {
            return;
        };
        if s.refreshing {
            return;
        }
        s.refreshing = true;
        let nodes = s.closest_nodes.clone();
        let target = s.target;
        self.start_op(
            now,
            OpKind::Announcer { server },
            QuerySpec::new(target, command::FIND_PEER).with_nodes(nodes),
            true,
        );
    }

    fn announcer_commit(&mut self, now: Instant, server: ServerId, closest: Vec<Reply>) {
        let remote = self.node.remote_address();
        let Some(s) = self.servers.get_mut(&server) else {
            return;
        };
        s.closest_nodes = closest.iter().map(|r| r.from).collect();
        s.announce_generation += 1;
        let generation = s.announce_generation;
        s.new_relays.clear();
        let peer = PeerRecord {
            public_key: s.key_pair.public_key(),
            relay_addresses: Vec::new(),
        };
        let mut sends = Vec::new();
        for r in closest.iter().take(ANNOUNCE_RELAYS) {
            let (Some(token), Some(id)) = (r.token, r.from_id) else {
                continue;
            };
            let signature = sign_announce(
                &s.key_pair,
                &self.ns.announce,
                &s.target,
                &id.0,
                &token,
                &peer,
                None,
            );
            let ann = Announce {
                peer: Some(peer.clone()),
                refresh: None,
                signature: Some(signature),
                bump: 0,
            };
            sends.push((
                r.from,
                r.to,
                RequestSpec {
                    command: command::ANNOUNCE,
                    target: Some(s.target),
                    token: Some(token),
                    value: Some(to_bytes(&ann)),
                    ..Default::default()
                },
            ));
        }
        s.pending_announces = sends.len();
        s.relay_addresses = remote.into_iter().collect();
        if sends.is_empty() {
            self.announcer_finish(now, server);
            return;
        }
        for (to, seen_as, spec) in sends {
            self.send(
                now,
                to,
                spec,
                Purpose::ServerAnnounce {
                    server,
                    reply_to: to,
                    seen_as,
                    generation,
                },
            );
        }
    }

    fn announcer_on_commit(
        &mut self,
        now: Instant,
        server: ServerId,
        generation: u64,
        ok: Option<(SocketAddrV4, SocketAddrV4)>,
    ) {
        let Some(s) = self.servers.get_mut(&server) else {
            return;
        };
        if s.announce_generation != generation {
            return;
        }
        if let Some((relay, seen_as)) = ok {
            s.new_relays.push(RelayInfo {
                relay_address: relay,
                peer_address: seen_as,
            });
            if s.relay_addresses.len() < ANNOUNCE_RELAYS {
                s.relay_addresses.push(relay);
            }
        }
        s.pending_announces -= 1;
        if s.pending_announces == 0 {
            self.announcer_finish(now, server);
        }
    }

    fn announcer_finish(&mut self, now: Instant, server: ServerId) {
        let Some(s) = self.servers.get_mut(&server) else {
            return;
        };
        s.relays = std::mem::take(&mut s.new_relays);
        let current: Vec<SocketAddrV4> = s.relays.iter().map(|r| r.relay_address).collect();
        s.generations.push_back(current.clone());
        let mut retired = Vec::new();
        while s.generations.len() > 3 {
            if let Some(old) = s.generations.pop_front() {
                retired.extend(old);
            }
        }
        if s.generations.len() >= 2 {
            let prev = &s.generations[s.generations.len() - 2];
            retired.extend(prev.iter().filter(|a| !current.contains(a)).copied());
        }
        retired.sort();
        retired.dedup();
        retired.retain(|a| !current.contains(a));
        s.refreshing = false;
        s.ping_iterations = 0;
        let first = !s.announced_once;
        s.announced_once = true;
        let relay_addresses = s.relay_addresses.clone();
        let key_pair = s.key_pair.clone();
        let target = s.target;
        for r in retired {
            self.unannounce_relay(now, r, &key_pair, target);
        }
        if first {
            self.events.push_back(HyperEvent::ServerAnnounced {
                server,
                relay_addresses,
            });
        }
        self.timers.push(Reverse((
            now + ANNOUNCER_PING_INTERVAL,
            TimerKind::AnnouncerPing(server),
        )));
    }

    fn announcer_ping(&mut self, now: Instant, server: ServerId) {
        let Some(s) = self.servers.get_mut(&server) else {
            return;
        };
        if s.refreshing {
            return;
        }
        s.ping_iterations += 1;
        if s.ping_iterations > ANNOUNCER_ITERATIONS {
            self.announcer_update(now, server);
            return;
        }
        let relays: Vec<SocketAddrV4> = s.relays.iter().map(|r| r.relay_address).collect();
        if relays.is_empty() {
            // Not announced anywhere yet (an empty network): try again.
            if self.node.table().is_empty() {
                self.timers.push(Reverse((
                    now + ANNOUNCER_PING_INTERVAL,
                    TimerKind::AnnouncerPing(server),
                )));
                return;
            }
            self.announcer_update(now, server);
            return;
        }
        s.ping_outstanding = relays.len();
        s.ping_ok = 0;
        let generation = s.announce_generation;
        for r in relays {
            let spec = RequestSpec {
                internal: true,
                command: crate::rpc::message::internal::PING,
                ..Default::default()
            };
            self.send(now, r, spec, Purpose::RelayPing { server, generation });
        }
    }

    fn announcer_on_ping(&mut self, now: Instant, server: ServerId, generation: u64, ok: bool) {
        let Some(s) = self.servers.get_mut(&server) else {
            return;
        };
        if s.announce_generation != generation || s.ping_outstanding == 0 {
            return;
        }
        s.ping_outstanding -= 1;
        if ok {
            s.ping_ok += 1;
        }
        if s.ping_outstanding > 0 {
            return;
        }
        let needed = s.relays.len().min(ANNOUNCE_RELAYS);
        if s.ping_ok < needed {
            self.announcer_update(now, server);
        } else {
            self.timers.push(Reverse((
                now + ANNOUNCER_PING_INTERVAL,
                TimerKind::AnnouncerPing(server),
            )));
        }
    }

    // ----- the handshake router -----

    fn on_peer_handshake(&mut self, now: Instant, req: IncomingRequest) {
        let Some(target) = req.target else { return };
        let Some(v) = req.value.as_ref() else { return };
        let Ok((msg, _)) = decode_prefix::<HandshakeMessage>(v) else {
            return;
        };
        if let Some(&server) = self.server_targets.get(&target) {
            return self.server_handshake(now, server, req, msg);
        }
        match msg.mode {
            mode::FROM_CLIENT => {
                if msg.noise.is_empty() {
                    return;
                }
                let relay = msg
                    .relay_address
                    .or_else(|| self.store.forward(now, &target).map(|f| f.relay));
                let Some(relay) = relay else {
                    // No route: help the client with closer nodes.
                    self.node.reply(
                        &req,
                        ReplyOptions {
                            closer_nodes: true,
                            ..ReplyOptions::ack()
                        },
                    );
                    return;
                };
                let fwd = HandshakeMessage {
                    mode: mode::FROM_RELAY,
                    noise: msg.noise,
                    peer_address: Some(req.from),
                    relay_address: None,
                };
                self.node.relay(&req, relay, Some(to_bytes(&fwd)), None);
            }
            mode::FROM_RELAY => {
                let Some(f) = self.store.forward(now, &target) else {
                    return;
                };
                let relay = f.relay;
                let fwd = HandshakeMessage {
                    mode: mode::FROM_SECOND_RELAY,
                    noise: msg.noise,
                    peer_address: msg.peer_address,
                    relay_address: Some(req.from),
                };
                self.node.relay(&req, relay, Some(to_bytes(&fwd)), None);
            }
            mode::FROM_SERVER => {
                let Some(peer) = msg.peer_address else { return };
                if msg.noise.is_empty() {
                    return;
                }
                let reply = HandshakeMessage {
                    mode: mode::REPLY,
                    noise: msg.noise,
                    peer_address: Some(req.from),
                    relay_address: None,
                };
                self.node.reply(
                    &req,
                    ReplyOptions {
                        value: Some(to_bytes(&reply)),
                        to: Some(peer),
                        ..ReplyOptions::ack()
                    },
                );
            }
            _ => {}
        }
    }

    /// Sends a server's Noise reply the way the request's mode asks.
    fn send_server_reply(&mut self, req: &IncomingRequest, msg: &HandshakeMessage, noise: Bytes) {
        match msg.mode {
            mode::FROM_CLIENT => {
                let reply = HandshakeMessage {
                    mode: mode::REPLY,
                    noise,
                    peer_address: None,
                    relay_address: None,
                };
                self.node.reply(
                    req,
                    ReplyOptions {
                        value: Some(to_bytes(&reply)),
                        ..ReplyOptions::ack()
                    },
                );
            }
            mode::FROM_RELAY => {
                let fwd = HandshakeMessage {
                    mode: mode::FROM_SERVER,
                    noise,
                    peer_address: msg.peer_address,
                    relay_address: None,
                };
                self.node.relay(req, req.from, Some(to_bytes(&fwd)), None);
            }
            mode::FROM_SECOND_RELAY => {
                if let Some(relay) = msg.relay_address {
                    let fwd = HandshakeMessage {
                        mode: mode::FROM_SERVER,
                        noise,
                        peer_address: msg.peer_address,
                        relay_address: None,
                    };
                    self.node.relay(req, relay, Some(to_bytes(&fwd)), None);
                }
            }
            _ => {}
        }
    }

    fn server_handshake(
        &mut self,
        now: Instant,
        server: ServerId,
        req: IncomingRequest,
        msg: HandshakeMessage,
    ) {
        if !matches!(
            msg.mode,
            mode::FROM_CLIENT | mode::FROM_RELAY | mode::FROM_SECOND_RELAY
        ) || msg.noise.is_empty()
        {
            return;
        }
        let key = blake2b_256(&msg.noise);
        if let Some(slot) = self.slots.get_mut(&key) {
            match &mut slot.state {
                SlotState::Done(noise) => {
                    let noise = noise.clone();
                    self.send_server_reply(&req, &msg, noise);
                }
                SlotState::Pending { waiters, .. } => {
                    if waiters.len() < 8 {
                        waiters.push(Waiter { req, msg });
                    }
                }
                SlotState::Rejected => {}
            }
            return;
        }
        if self.pending_handshakes.len() >= MAX_PENDING_HANDSHAKES {
            tracing::debug!("dropping a handshake: too many waiting for a firewall decision");
            return;
        }
        let Some(s) = self.servers.get(&server) else {
            return;
        };
        let options = HandshakeOptions {
            prologue: self.ns.peer_handshake.to_vec(),
            ..Default::default()
        };
        let Ok(mut hs) = Handshake::new(Pattern::IK, false, &s.key_pair, options) else {
            return;
        };
        let Ok(payload) = hs.read_message(&msg.noise) else {
            tracing::debug!(from = %req.from, "unreadable handshake");
            self.slots.insert(
                key,
                Slot {
                    state: SlotState::Rejected,
                    expires: now + HANDSHAKE_CLEAR_WAIT,
                },
            );
            self.timers
                .push(Reverse((now + HANDSHAKE_CLEAR_WAIT, TimerKind::SlotExpire)));
            return;
        };
        let Ok((payload, _)) = decode_prefix::<NoisePayload>(&payload) else {
            return;
        };
        let Some(remote_public_key) = hs.remote_public_key() else {
            return;
        };
        let client_address = msg.peer_address.unwrap_or(req.from);
        let direct = msg.peer_address.is_none();
        let req_socket = req.socket;
        let id = HandshakeId(self.next_id());
        self.pending_handshakes.insert(id, key);
        self.slots.insert(
            key,
            Slot {
                state: SlotState::Pending {
                    handshake: Box::new(hs),
                    id,
                    server,
                    payload: Box::new(payload.clone()),
                    client_address,
                    direct,
                    waiters: vec![Waiter { req, msg }],
                },
                expires: now + HANDSHAKE_CLEAR_WAIT,
            },
        );
        let socket = if direct {
            req_socket
        } else {
            self.node.request_socket()
        };
        self.events.push_back(HyperEvent::IncomingHandshake {
            server,
            handshake: id,
            remote_public_key,
            client_address,
            payload,
            socket,
        });
    }

    /// Accepts an incoming handshake: answers it with our UDX stream id `udx_id`. A
    /// [`HyperEvent::ServerConnection`] follows unless the client's payload is unusable (then
    /// the client gets an error payload).
    pub fn accept(&mut self, now: Instant, handshake: HandshakeId, udx_id: u32) {
        let Some(key) = self.pending_handshakes.remove(&handshake) else {
            return;
        };
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        let state = std::mem::replace(&mut slot.state, SlotState::Rejected);
        slot.expires = now + HANDSHAKE_CLEAR_WAIT;
        self.timers
            .push(Reverse((now + HANDSHAKE_CLEAR_WAIT, TimerKind::SlotExpire)));
        let SlotState::Pending {
            mut handshake,
            id,
            server,
            payload,
            client_address,
            direct,
            waiters,
            ..
        } = state
        else {
            return;
        };
        let error = if payload.version != 1 {
            payload_error::VERSION_MISMATCH
        } else if payload.udx.is_none() {
            payload_error::ABORTED
        } else {
            payload_error::NONE
        };
        let remote = self.node.remote_address();
        let relay_addresses = self
            .servers
            .get(&server)
            .map(|s| s.relay_addresses.clone())
            .unwrap_or_default();
        let relays = self
            .servers
            .get(&server)
            .map(|s| s.relays.clone())
            .unwrap_or_default();
        let ours = NoisePayload {
            version: 1,
            error,
            firewall: if remote.is_some() {
                firewall::OPEN
            } else {
                firewall::UNKNOWN
            },
            holepunch: None,
            addresses4: self.our_addresses(remote),
            addresses6: Vec::new(),
            udx: Some(UdxInfo {
                version: 1,
                reusable_socket: false,
                id: if error == 0 { u64::from(udx_id) } else { 0 },
                seq: 0,
            }),
            secret_stream: Some(1),
            relay_through: None,
            relay_addresses: (!relay_addresses.is_empty()).then_some(relay_addresses),
        };
        let _ = relays;
        let Ok(msg2) = handshake.write_message(&corenet_codec::to_vec(&ours)) else {
            return;
        };
        let msg2 = Bytes::from(msg2);
        let Ok(result) = handshake.finish() else {
            return;
        };
        if let Some(slot) = self.slots.get_mut(&key) {
            slot.state = SlotState::Done(msg2.clone());
        }
        for w in &waiters {
            self.send_server_reply(&w.req, &w.msg, msg2.clone());
        }
        if error != payload_error::NONE {
            return;
        }
        let remote_udx_id = payload.udx.map_or(0, |u| u.id as u32);
        let connect = (payload.firewall == firewall::OPEN || direct).then_some(client_address);
        self.events.push_back(HyperEvent::ServerConnection {
            server,
            handshake: id,
            result,
            remote_udx_id,
            connect,
        });
        self.process(now);
    }

    /// Refuses an incoming handshake: nothing is sent, and copies of it are ignored for a
    /// while.
    pub fn reject(&mut self, now: Instant, handshake: HandshakeId) {
        let Some(key) = self.pending_handshakes.remove(&handshake) else {
            return;
        };
        if let Some(slot) = self.slots.get_mut(&key) {
            slot.state = SlotState::Rejected;
            slot.expires = now + HANDSHAKE_CLEAR_WAIT;
        }
        self.timers
            .push(Reverse((now + HANDSHAKE_CLEAR_WAIT, TimerKind::SlotExpire)));
    }

    fn our_addresses(&self, remote: Option<SocketAddrV4>) -> Vec<SocketAddrV4> {
        let mut v: Vec<SocketAddrV4> = remote.into_iter().collect();
        let port = self.node_server_port();
        if port != 0 {
            for ip in &self.local_addresses {
                v.push(SocketAddrV4::new(*ip, port));
            }
        }
        v
    }

    fn node_server_port(&self) -> u16 {
        self.node
            .remote_address()
            .map(|a| a.port())
            .or_else(|| self.node.nat_address().map(|a| a.port()))
            .unwrap_or(0)
    }

    // ----- clients -----

    /// Connects to the server with `remote_public_key`, offering our UDX stream `udx_id`:
    /// finds its record, sends the Noise IK handshake through the nodes that hold it (and
    /// directly to `relay_addresses`), and reports [`HyperEvent::Connected`] or
    /// [`HyperEvent::ConnectFailed`] within [`CONNECT_TIMEOUT`].
    pub fn connect(
        &mut self,
        now: Instant,
        key_pair: &KeyPair,
        remote_public_key: PublicKey,
        udx_id: u32,
        relay_addresses: Vec<SocketAddrV4>,
    ) -> ConnectId {
        let id = ConnectId(self.next_id());
        let target = server_target(&remote_public_key);
        let options = HandshakeOptions {
            prologue: self.ns.peer_handshake.to_vec(),
            remote_public_key: Some(remote_public_key),
            rng_seed: None,
        };
        let remote = self.node.remote_address();
        let payload = NoisePayload {
            firewall: if remote.is_some() {
                firewall::OPEN
            } else {
                firewall::UNKNOWN
            },
            addresses4: self.our_addresses(remote),
            udx: Some(UdxInfo {
                version: 1,
                reusable_socket: false,
                id: u64::from(udx_id),
                seq: 0,
            }),
            secret_stream: Some(1),
            ..NoisePayload::default()
        };
        let hs = Handshake::new(Pattern::IK, true, key_pair, options).and_then(|mut hs| {
            let m = hs.write_message(&corenet_codec::to_vec(&payload))?;
            Ok((hs, m))
        });
        let (hs, msg1) = match hs {
            Ok(x) => x,
            Err(e) => {
                self.events.push_back(HyperEvent::ConnectFailed {
                    connect: id,
                    error: ConnectError::Handshake(e.to_string()),
                });
                return id;
            }
        };
        let deadline = now + CONNECT_TIMEOUT;
        self.connects.insert(
            id,
            Connect {
                handshake: Some(Box::new(hs)),
                msg1: Bytes::from(msg1),
                target,
                tried: HashSet::new(),
                attempts: 0,
                find_op: None,
                found: false,
                deadline,
            },
        );
        self.timers
            .push(Reverse((deadline, TimerKind::ConnectDeadline(id))));
        for addr in relay_addresses.into_iter().take(ANNOUNCE_RELAYS) {
            self.connect_through(now, id, addr, false);
        }
        // A persistent node may hold the server's forward itself.
        if let Some(f) = self.store.forward(now, &target).map(|f| f.relay) {
            self.connect_through(now, id, f, false);
        }
        let op = self.start_op(
            now,
            OpKind::FindPeer { connect: Some(id) },
            QuerySpec::new(target, command::FIND_PEER),
            true,
        );
        if let Some(c) = self.connects.get_mut(&id) {
            c.find_op = Some(op);
        }
        id
    }

    fn connect_through(&mut self, now: Instant, c: ConnectId, to: SocketAddrV4, found: bool) {
        let Some(conn) = self.connects.get_mut(&c) else {
            return;
        };
        if found {
            conn.found = true;
        }
        if !conn.tried.insert(to) || conn.handshake.is_none() {
            return;
        }
        conn.attempts += 1;
        let msg = HandshakeMessage {
            mode: mode::FROM_CLIENT,
            noise: conn.msg1.clone(),
            peer_address: None,
            relay_address: None,
        };
        let spec = RequestSpec {
            command: command::PEER_HANDSHAKE,
            target: Some(conn.target),
            value: Some(to_bytes(&msg)),
            ..Default::default()
        };
        self.send(now, to, spec, Purpose::Handshake { connect: c, to });
    }

    fn on_connect_find_done(&mut self, _now: Instant, c: ConnectId) {
        if let Some(conn) = self.connects.get_mut(&c) {
            conn.find_op = None;
        }
        self.check_connect_exhausted(c);
    }

    fn check_connect_exhausted(&mut self, c: ConnectId) {
        let Some(conn) = self.connects.get(&c) else {
            return;
        };
        if conn.find_op.is_some() || conn.handshake.is_none() {
            return;
        }
        let outstanding = self
            .requests
            .values()
            .any(|p| matches!(p, Purpose::Handshake { connect, .. } if *connect == c));
        if outstanding {
            return;
        }
        let err = if conn.attempts == 0 && !conn.found {
            ConnectError::PeerNotFound
        } else {
            ConnectError::ConnectionFailed
        };
        self.fail_connect(c, err);
    }

    fn fail_connect(&mut self, c: ConnectId, error: ConnectError) {
        let Some(conn) = self.connects.remove(&c) else {
            return;
        };
        if let Some(op) = conn.find_op {
            self.cancel(op);
        }
        self.requests
            .retain(|_, p| !matches!(p, Purpose::Handshake { connect, .. } if *connect == c));
        self.events
            .push_back(HyperEvent::ConnectFailed { connect: c, error });
    }

    fn on_handshake_reply(
        &mut self,
        now: Instant,
        c: ConnectId,
        to: SocketAddrV4,
        result: Result<Reply, RequestError>,
    ) {
        let reply = match result {
            Ok(r) if r.from == to => r,
            _ => return self.check_connect_exhausted(c),
        };
        let Some(v) = reply.value.as_ref() else {
            return self.check_connect_exhausted(c);
        };
        let Ok((msg, _)) = decode_prefix::<HandshakeMessage>(v) else {
            return self.check_connect_exhausted(c);
        };
        if msg.mode != mode::REPLY || msg.noise.is_empty() {
            return self.check_connect_exhausted(c);
        }
        let Some(conn) = self.connects.get_mut(&c) else {
            return;
        };
        let Some(mut hs) = conn.handshake.take() else {
            return;
        };
        let payload = match hs.read_message(&msg.noise) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(%to, error = %e, "bad handshake reply");
                conn.handshake = Some(hs);
                return self.check_connect_exhausted(c);
            }
        };
        let payload = match decode_prefix::<NoisePayload>(&payload) {
            Ok((p, _)) => p,
            Err(_) => return self.fail_connect(c, ConnectError::ServerIncompatible(0)),
        };
        if payload.version != 1 {
            return self.fail_connect(c, ConnectError::ServerIncompatible(payload.version));
        }
        if payload.error != payload_error::NONE {
            return self.fail_connect(c, ConnectError::ServerError(payload.error));
        }
        let Some(udx) = payload.udx else {
            return self.fail_connect(c, ConnectError::ServerError(payload_error::ABORTED));
        };
        let result = match hs.finish() {
            Ok(r) => r,
            Err(e) => return self.fail_connect(c, ConnectError::Handshake(e.to_string())),
        };
        let relayed = msg.peer_address.is_some();
        let server_address = msg.peer_address.unwrap_or(to);
        let (socket, address) = if !relayed {
            (reply.socket, to)
        } else if payload.firewall == firewall::OPEN
            || payload
                .holepunch
                .as_ref()
                .is_none_or(|h| h.relays.is_empty())
        {
            let addr = payload
                .addresses4
                .iter()
                .find(|a| !is_bogon(a.ip()))
                .copied()
                .unwrap_or(server_address);
            (self.node.request_socket(), addr)
        } else {
            return self.fail_connect(c, ConnectError::CannotHolepunch);
        };
        let Some(conn) = self.connects.remove(&c) else {
            return;
        };
        if let Some(op) = conn.find_op {
            self.cancel(op);
        }
        self.requests
            .retain(|_, p| !matches!(p, Purpose::Handshake { connect, .. } if *connect == c));
        self.events.push_back(HyperEvent::Connected {
            connect: c,
            result,
            remote_udx_id: udx.id as u32,
            socket,
            address,
            payload,
        });
        self.process(now);
    }

    /// Stops a connect; no event follows.
    pub fn cancel_connect(&mut self, c: ConnectId) {
        if let Some(conn) = self.connects.remove(&c) {
            if let Some(op) = conn.find_op {
                self.cancel(op);
            }
        }
    }

    /// The id a node persistent at `addr` has.
    pub fn node_id_of(addr: &SocketAddrV4) -> NodeId {
        NodeId::from_addr(addr)
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
