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
pub use connect::{
    is_private, is_reserved, HOLEPUNCH_RETRIES, MAX_TRY_LATER, PASSIVE_CONNECT_TIMEOUT,
    PUNCH_TIMEOUT, UNKNOWN_REMOTE_WAIT,
};
pub use server::{MAX_SERVER_PUNCHES, MAX_WAITING_PUNCH_REQUESTS, PREPUNCH_TIMEOUT};
mod ops;
mod router;
mod server;
mod storage;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use bytes::Bytes;
use corenet_codec::hash::blake2b_256;
use corenet_codec::{decode_prefix, to_bytes, PublicKey};
use corenet_noise::{Handshake, HandshakeOptions, HandshakeResult, KeyPair, Pattern};

use super::crypto::{mutable_signable, server_target, sign_announce, Namespaces};
use super::holepunch::{Puncher, RandomPunches, SocketOp, SocketPool};
use super::messages::{
    error as payload_error, firewall, mode, Announce, HandshakeMessage, LookupReply, MutableGet,
    MutablePut, NoisePayload, PeerRecord, RelayInfo, UdxInfo, MAX_RELAY_ADDRESSES,
};
use super::nat::NatType;
use super::store::{PutResult, Store, StoreLimits};
use crate::rpc::message::errors as rpc_errors;
use crate::rpc::{
    self, Event as RpcEvent, IncomingRequest, Node, QueryId, QuerySpec, Reply, ReplyOptions,
    RequestError, RequestId, RequestSpec, SocketKind, Transmit,
};
use rand::SeedableRng;
use rand_chacha::ChaChaRng;

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
/// Handshakes a server keeps waiting for the application's firewall decision; more are
/// dropped before their Noise message is read (so a full table costs no Diffie-Hellman).
pub const MAX_PENDING_HANDSHAKES: usize = 256;
/// Copies of one handshake (retransmissions, or the same message through other relays)
/// kept waiting for its firewall decision, each answered once it is made; more are dropped.
/// JS shares one promise among any number (`hyperdht/lib/server.js:499-502`).
pub const MAX_HANDSHAKE_WAITERS: usize = 8;

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

/// Why a connect failed. Each variant is one of hyperdht's errors; [`ConnectError::code`]
/// gives the JS error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// No node had the server's record (PEER_NOT_FOUND).
    #[error("peer not found")]
    PeerNotFound,
    /// Records were found but no handshake succeeded (PEER_CONNECTION_FAILED).
    #[error("could not connect to the peer (no handshake succeeded)")]
    ConnectionFailed,
    /// The server's payload has an unsupported version (SERVER_INCOMPATIBLE).
    #[error("server is incompatible (payload version {0})")]
    ServerIncompatible(u64),
    /// The server answered with an error (SERVER_ERROR).
    #[error("server error {0}")]
    ServerError(u64),
    /// The server cannot be punched to and is not reachable directly (CANNOT_HOLEPUNCH).
    #[error("cannot holepunch: the server is not reachable and sent no holepunch relays")]
    CannotHolepunch,
    /// The holepunch was given up (HOLEPUNCH_ABORTED): no probe got through in time, a
    /// random punch had to wait with no relay to fall back on, or nobody connected to us.
    #[error("holepunch aborted")]
    HolepunchAborted,
    /// The probe round did not tell either side's NAT type (HOLEPUNCH_PROBE_TIMEOUT).
    #[error("holepunch probe timed out: a NAT type stayed unknown")]
    HolepunchProbeTimeout,
    /// Both sides are behind port-randomizing NATs (HOLEPUNCH_DOUBLE_RANDOMIZED_NATS): only
    /// a relay can connect them.
    #[error("holepunch impossible: both sides are behind randomizing NATs")]
    DoubleRandomizedNats,
    /// A holepunch reply did not open with the connection's secret (HOLEPUNCH_INVALID).
    #[error("invalid holepunch payload")]
    HolepunchInvalid,
    /// A holepunch request got no answer (REQUEST_TIMEOUT from the relay path).
    #[error("holepunch request timed out")]
    HolepunchRequestTimeout,
    /// The server aborted the holepunch with this error code (REMOTE_ABORTED).
    #[error("remote aborted the holepunch (error {0})")]
    RemoteAborted(u64),
    /// The server has no address we could punch to (REMOTE_NOT_HOLEPUNCHABLE).
    #[error("remote is not holepunchable")]
    RemoteNotHolepunchable,
    /// The server did not start punching (REMOTE_NOT_HOLEPUNCHING).
    #[error("remote is not holepunching")]
    RemoteNotHolepunching,
    /// The blind relay did not pair us in time (RELAY_ABORTED).
    #[error("relay aborted")]
    RelayAborted,
    /// The connect took too long.
    #[error("connect timed out")]
    Timeout,
    /// The Noise handshake failed (HANDSHAKE_INVALID).
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// Cancelled locally, or the node is going away.
    #[error("connect cancelled")]
    Cancelled,
}

impl ConnectError {
    /// The error code hyperdht uses for the same failure.
    pub fn code(&self) -> &'static str {
        match self {
            ConnectError::PeerNotFound => "PEER_NOT_FOUND",
            ConnectError::ConnectionFailed => "PEER_CONNECTION_FAILED",
            ConnectError::ServerIncompatible(_) => "SERVER_INCOMPATIBLE",
            ConnectError::ServerError(_) => "SERVER_ERROR",
            ConnectError::CannotHolepunch => "CANNOT_HOLEPUNCH",
            ConnectError::HolepunchAborted => "HOLEPUNCH_ABORTED",
            ConnectError::HolepunchProbeTimeout => "HOLEPUNCH_PROBE_TIMEOUT",
            ConnectError::DoubleRandomizedNats => "HOLEPUNCH_DOUBLE_RANDOMIZED_NATS",
            ConnectError::HolepunchInvalid => "HOLEPUNCH_INVALID",
            ConnectError::HolepunchRequestTimeout => "REQUEST_TIMEOUT",
            ConnectError::RemoteAborted(_) => "REMOTE_ABORTED",
            ConnectError::RemoteNotHolepunchable => "REMOTE_NOT_HOLEPUNCHABLE",
            ConnectError::RemoteNotHolepunching => "REMOTE_NOT_HOLEPUNCHING",
            ConnectError::RelayAborted => "RELAY_ABORTED",
            ConnectError::Timeout => "CONNECT_TIMEOUT",
            ConnectError::Handshake(_) => "HANDSHAKE_INVALID",
            ConnectError::Cancelled => "CONNECT_CANCELLED",
        }
    }

    /// True for the failures after which hyperswarm retries through a blind relay
    /// (`shouldForceRelaying`: HOLEPUNCH_ABORTED, HOLEPUNCH_DOUBLE_RANDOMIZED_NATS,
    /// CANNOT_HOLEPUNCH, REMOTE_NOT_HOLEPUNCHABLE).
    pub fn forces_relaying(&self) -> bool {
        matches!(
            self,
            ConnectError::HolepunchAborted
                | ConnectError::DoubleRandomizedNats
                | ConnectError::CannotHolepunch
                | ConnectError::RemoteNotHolepunchable
        )
    }
}

/// How a connection's packets travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PathKind {
    /// Straight to an address one side could be reached at (an OPEN side, or the server
    /// answering the handshake itself).
    Direct,
    /// To the other side's LAN address (both behind the same NAT).
    Lan,
    /// Through a hole punched in both NATs.
    Holepunch,
    /// Through a blind relay.
    Relay,
}

impl PathKind {
    /// The word the CLI prints (`path <direct|lan|holepunch|relay> <ms>`).
    pub fn as_str(&self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::Lan => "lan",
            PathKind::Holepunch => "holepunch",
            PathKind::Relay => "relay",
        }
    }
}

impl std::fmt::Display for PathKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A blind-relay pairing one side must perform (hyperdht `relayConnection`): connect to
/// `relay`, open its `blind-relay` channel and send `pair { is_initiator, token, our stream
/// id }`; the relay's answer names the stream to connect ours to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayPairing {
    /// The relay's public key.
    pub relay: PublicKey,
    /// The pairing token both sides present.
    pub token: [u8; 32],
    /// We offered the relay (we pair as the initiator).
    pub is_initiator: bool,
}

/// Options of one connect (hyperdht `connect(publicKey, opts)`). Every field states its
/// default.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Offer this blind relay (`relayThrough`). Default: none.
    pub relay_through: Option<PublicKey>,
    /// Try the LAN shortcut when both sides share a public address (`localConnection`).
    /// Default: true.
    pub lan: bool,
    /// Send a low-TTL probe to the server before the probe round (`fastOpen`). Default: true.
    pub fast_open: bool,
    /// Offer `relay_through` only while this node's NAT randomizes ports (hyperswarm's rule
    /// for a dial it is not forcing through the relay). Default: false.
    pub relay_only_when_randomized: bool,
    /// Nodes known to forward handshakes to the server (from a lookup record), tried first.
    /// Default: none.
    pub relay_addresses: Vec<SocketAddrV4>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            relay_through: None,
            lan: true,
            fast_open: true,
            relay_only_when_randomized: false,
            relay_addresses: Vec::new(),
        }
    }
}

/// Options of a server (hyperdht `createServer(opts)`). Every field states its default.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    /// Offer this blind relay to clients (`relayThrough`). Default: none.
    pub relay_through: Option<PublicKey>,
    /// Offer the relay only while this node's NAT randomizes ports (hyperswarm's rule for
    /// servers). Default: false (offer it always when set).
    pub relay_only_when_randomized: bool,
    /// Advertise local interface addresses for the LAN shortcut (`shareLocalAddress`).
    /// Default: true.
    pub share_local_address: bool,
    /// Punch holes for clients (`holepunch !== false`). Default: true.
    pub holepunch: bool,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            relay_through: None,
            relay_only_when_randomized: false,
            share_local_address: true,
            holepunch: true,
        }
    }
}

/// Holepunch and relay counters of a node (hyperdht `dht.stats.punches`, `relaying`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PunchStats {
    /// Connections that needed no punch (an OPEN side).
    pub open: u64,
    /// Consistent/consistent punches started.
    pub consistent: u64,
    /// Random punches (random ports or birthday) started.
    pub random: u64,
    /// Punches that had to wait for the random-punch limit.
    pub try_later: u64,
    /// Punches that connected.
    pub succeeded: u64,
    /// Punches that gave up.
    pub failed: u64,
    /// LAN shortcuts taken.
    pub lan: u64,
    /// Probes sent.
    pub probes: u64,
    /// PEER_HOLEPUNCH messages forwarded for others.
    pub routed: u64,
    /// Blind-relay pairings started.
    pub relay_attempts: u64,
    /// Pairings that succeeded.
    pub relay_successes: u64,
    /// Pairings that failed or timed out.
    pub relay_aborts: u64,
    /// Relayed connections that moved to a direct path.
    pub relay_upgrades: u64,
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
    /// A handshake was accepted and answered (we are the responder). The UDX stream made for
    /// it waits unconnected for the client's first packet, on any socket of the node, unless
    /// `connect` says where to connect it now; start the secret stream from `result` once it
    /// is connected. A [`HyperEvent::ServerPathAborted`] may follow if no path opens.
    ServerConnection {
        /// Which server.
        server: ServerId,
        /// Which handshake.
        handshake: HandshakeId,
        /// Keys and hash.
        result: HandshakeResult,
        /// The client's UDX stream id.
        remote_udx_id: u32,
        /// Connect now, from this socket to this address (the client is reachable).
        connect: Option<(SocketKind, SocketAddrV4)>,
        /// Pair through a blind relay meanwhile.
        relay: Option<RelayPairing>,
    },
    /// No direct or punched path opened for an accepted handshake within the wait: destroy
    /// its stream unless a relay carries (or may still carry) it.
    ServerPathAborted {
        /// Which server.
        server: ServerId,
        /// Which handshake.
        handshake: HandshakeId,
        /// A relay pairing was part of the handshake.
        relayed: bool,
    },
    /// A connect finished its Noise handshake (we are the initiator). The path comes with
    /// [`HyperEvent::ConnectPath`] (at once when the server is reachable) or, after a failed
    /// punch, [`HyperEvent::ConnectFailed`]; with `relay`, pair through the blind relay
    /// meanwhile (a later `ConnectPath` then upgrades the relayed stream).
    Handshaked {
        /// Which connect.
        connect: ConnectId,
        /// Keys and hash.
        result: HandshakeResult,
        /// The server's UDX stream id.
        remote_udx_id: u32,
        /// The server's payload (firewall, addresses, relay addresses).
        payload: Box<NoisePayload>,
        /// Pair through a blind relay.
        relay: Option<RelayPairing>,
    },
    /// A path to the server was found: connect the stream there (or move it there from the
    /// relay).
    ConnectPath {
        /// Which connect.
        connect: ConnectId,
        /// Our socket (a pool socket after a punch: it now belongs to the connection).
        socket: SocketKind,
        /// The server's address.
        address: SocketAddrV4,
        /// How.
        kind: PathKind,
    },
    /// A connect failed (after [`HyperEvent::Handshaked`] this means no direct path: a relay
    /// pairing, if any, may still carry the connection).
    ConnectFailed {
        /// Which connect.
        connect: ConnectId,
        /// Why.
        error: ConnectError,
    },
    /// A NAT sample ([`HyperDht::sample_nat`]) concluded.
    NatSampled {
        /// Which sample.
        sample: u64,
        /// The class.
        nat: NatType,
        /// The public addresses seen (`host:0` when random).
        addresses: Vec<SocketAddrV4>,
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
    /// The IPv4 interface addresses of this machine (the driver lists them); with
    /// `bound_host` they give the local addresses advertised for the LAN shortcut. Update
    /// them with [`HyperDht::set_interfaces`].
    pub local_addresses: Vec<Ipv4Addr>,
    /// The host the server socket is bound to (`0.0.0.0` for every interface).
    pub bound_host: Option<Ipv4Addr>,
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
    /// A PEER_HOLEPUNCH round of a client connect.
    Holepunch {
        connect: ConnectId,
        stage: connect::HpStage,
    },
    /// A NAT-sampling PING from a puncher's socket.
    NatPing {
        punch: u64,
        socket: u32,
    },
    /// The LAN shortcut's PING.
    LanPing {
        connect: ConnectId,
        addr: SocketAddrV4,
    },
}

#[derive(Debug)]
struct Server {
    key_pair: KeyPair,
    opts: ListenOptions,
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
    /// Answered: the reply, and the socket it goes out from.
    Done(Bytes, Option<SocketKind>),
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
    opts: ConnectOptions,
    /// Our token when we offer a relay.
    relay_token: Option<[u8; 32]>,
    /// What we told the server about our firewall.
    firewall: u64,
    /// Set once the Noise handshake finished.
    est: Option<Box<connect::Established>>,
}

/// Who owns a puncher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PunchOwner {
    Client(ConnectId),
    Server(u64),
    /// A NAT sample on a fresh socket ([`HyperDht::sample_nat`]).
    Probe(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    AnnouncerPing(ServerId),
    ConnectDeadline(ConnectId),
    SlotExpire,
    /// A client connect's sleep (unknown remote, try later, passive wait) ends.
    ConnectWake(ConnectId),
    /// A puncher's next probe.
    Puncher(u64),
    /// A server holepunch slot's wait (10 s) or its clearing.
    ServerPunch(u64),
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
    /// Randomness for nonces, secrets, tokens, handshakes and punch ports, seeded from the
    /// node's seed.
    rng: ChaChaRng,
    bound_host: Option<Ipv4Addr>,
    pool: SocketPool,
    random_punches: RandomPunches,
    punchers: HashMap<u64, Puncher>,
    punch_owners: HashMap<u64, PunchOwner>,
    socket_owners: HashMap<u32, u64>,
    /// Server holepunch slots by the id sent in the Noise payload.
    server_punches: HashMap<u64, server::ServerPunch>,
    punch_stats: PunchStats,
    /// The time of the latest input (for bookkeeping that needs a time outside one).
    now: Instant,
}

impl HyperDht {
    /// A node that starts bootstrapping at `now`.
    pub fn new(config: HyperConfig, now: Instant) -> Self {
        // Its own stream of randomness, derived from (not equal to) the node's seed.
        let rng = ChaChaRng::from_seed(corenet_codec::hash::blake2b_256_batch(&[
            b"corenet hyperdht rng",
            &config.rpc.seed,
        ]));
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
            rng,
            bound_host: config.bound_host,
            pool: SocketPool::default(),
            random_punches: RandomPunches::default(),
            punchers: HashMap::new(),
            punch_owners: HashMap::new(),
            socket_owners: HashMap::new(),
            server_punches: HashMap::new(),
            punch_stats: PunchStats::default(),
            now,
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

    /// Holepunch and relay counters.
    pub fn punch_stats(&self) -> PunchStats {
        let mut s = self.punch_stats;
        s.probes += self
            .punchers
            .values()
            .map(Puncher::probes_sent)
            .sum::<u64>();
        s
    }

    /// Counts a blind-relay pairing the driver started.
    pub fn note_relaying(&mut self) {
        self.punch_stats.relay_attempts += 1;
    }

    /// Counts the outcome of a blind-relay pairing.
    pub fn note_relay_result(&mut self, ok: bool) {
        if ok {
            self.punch_stats.relay_successes += 1;
        } else {
            self.punch_stats.relay_aborts += 1;
        }
    }

    /// Counts a relayed connection that moved to a direct path.
    pub fn note_upgrade(&mut self) {
        self.punch_stats.relay_upgrades += 1;
    }

    /// Per-handshake state held: answer slots, handshakes waiting for a firewall decision
    /// and server holepunch slots.
    pub fn handshake_state(&self) -> usize {
        self.slots.len() + self.pending_handshakes.len() + self.server_punches.len()
    }

    /// Pool sockets open (punches in progress hold them).
    pub fn pool_sockets(&self) -> usize {
        self.pool.open()
    }

    /// Punchers alive.
    pub fn punchers(&self) -> usize {
        self.punchers.len()
    }

    /// Server holepunch slots alive (each is bounded in time).
    pub fn server_punch_slots(&self) -> usize {
        self.server_punches.len()
    }

    /// Connects in progress.
    pub fn connects_in_progress(&self) -> usize {
        self.connects.len()
    }

    /// The next pool socket to open or close. Drain it after every input, before
    /// [`HyperDht::poll_transmit`]: transmits may use a socket opened here.
    pub fn poll_socket_op(&mut self) -> Option<SocketOp> {
        let op = self.pool.poll_op()?;
        if let SocketOp::Close(id) = op {
            self.socket_owners.remove(&id);
        }
        Some(op)
    }

    /// The driver could not open pool socket `id` (out of file descriptors, say): the
    /// puncher that wanted it gives up, and the node carries on.
    pub fn socket_failed(&mut self, now: Instant, id: u32) {
        if let Some(pid) = self.socket_owners.get(&id).copied() {
            self.destroy_puncher(now, pid);
        }
        self.process(now);
    }

    /// Sets this machine's IPv4 interface addresses (advertised for the LAN shortcut).
    pub fn set_interfaces(&mut self, addresses: Vec<Ipv4Addr>) {
        self.local_addresses = addresses;
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
        self.now = self.now.max(now);
        if bytes.len() == 1 {
            // A holepunch probe: only pool sockets expect them (JS drops 1-byte datagrams
            // on the DHT's own sockets).
            if let SocketKind::Pool(id) = socket {
                if let Some(pid) = self.socket_owners.get(&id).copied() {
                    if let Some(p) = self.punchers.get_mut(&pid) {
                        p.on_probe(now, id, from, &mut self.pool, &mut self.random_punches);
                    }
                    self.service_puncher(now, pid);
                }
            }
            return;
        }
        self.node.handle_datagram(now, socket, from, bytes);
        self.process(now);
    }

    /// Handles due timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
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
                TimerKind::ConnectWake(c) => self.on_connect_wake(now, c),
                TimerKind::Puncher(pid) => {
                    if let Some(p) = self.punchers.get_mut(&pid) {
                        p.handle_timeout(
                            now,
                            &mut self.rng,
                            &mut self.pool,
                            &mut self.random_punches,
                        );
                    }
                    self.service_puncher(now, pid);
                }
                TimerKind::ServerPunch(id) => self.on_server_punch_timer(now, id),
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
            Purpose::Holepunch { connect, stage } => {
                self.on_holepunch_reply(now, connect, stage, result)
            }
            Purpose::NatPing { punch, socket } => {
                let cands = self.nat_candidates();
                let more = match self.punchers.get_mut(&punch) {
                    Some(p) if p.socket() == socket => match &result {
                        Ok(r) => p.nat_mut().on_pong(r.to, r.from, &cands),
                        Err(_) => p.nat_mut().on_ping_failed(&cands),
                    },
                    _ => return,
                };
                self.nat_pings(now, punch, socket, more);
                self.on_puncher_progress(now, punch);
            }
            Purpose::LanPing { connect, addr } => {
                self.on_lan_ping(now, connect, addr, result.is_ok())
            }
        }
    }

    // ----- punchers -----

    /// DHT nodes to NAT-sample against, most recently seen first.
    fn nat_candidates(&self) -> Vec<SocketAddrV4> {
        let mut v: Vec<(u32, u32, SocketAddrV4)> = self
            .node
            .table()
            .iter()
            .map(|e| (e.seen, e.added, e.addr))
            .collect();
        v.sort_by_key(|e| Reverse((e.0, e.1)));
        v.into_iter().take(32).map(|(_, _, a)| a).collect()
    }

    fn nat_pings(&mut self, now: Instant, punch: u64, socket: u32, to: Vec<SocketAddrV4>) {
        for addr in to {
            let spec = RequestSpec {
                internal: true,
                command: crate::rpc::message::internal::PING,
                retries: Some(0),
                socket: Some(SocketKind::Pool(socket)),
                ..Default::default()
            };
            self.send(now, addr, spec, Purpose::NatPing { punch, socket });
        }
    }

    /// A new puncher for `owner`, registered and sampling; `None` if the pool is full.
    fn new_puncher(
        &mut self,
        now: Instant,
        owner: PunchOwner,
        initiator: bool,
        remote_firewall: u64,
    ) -> Option<u64> {
        let firewalled = self.node.is_firewalled();
        let p = Puncher::new(&mut self.pool, initiator, remote_firewall, firewalled)?;
        let pid = self.next_id();
        self.punchers.insert(pid, p);
        self.punch_owners.insert(pid, owner);
        self.service_puncher(now, pid);
        Some(pid)
    }

    /// Moves a puncher's output out: sockets registered, sampling started, probes queued,
    /// its timer armed, its events delivered to its owner.
    fn service_puncher(&mut self, now: Instant, pid: u64) {
        let Some(p) = self.punchers.get_mut(&pid) else {
            return;
        };
        for s in p.sockets() {
            self.socket_owners.insert(*s, pid);
        }
        let mut sample = None;
        if p.take_fresh_socket() {
            sample = Some(p.socket());
        }
        while let Some((socket, to, ttl)) = p.poll_probe() {
            self.node.send_raw_ttl(
                SocketKind::Pool(socket),
                to,
                Bytes::from_static(&crate::hyper::holepunch::PROBE),
                ttl,
            );
        }
        let mut events = Vec::new();
        while let Some(e) = p.poll_event() {
            events.push(e);
        }
        if let Some(at) = p.poll_timeout() {
            self.timers.push(Reverse((at, TimerKind::Puncher(pid))));
        }
        let destroyed = p.is_destroyed();
        if let Some(socket) = sample {
            let cands = self.nat_candidates();
            let pings = match self.punchers.get_mut(&pid) {
                Some(p) => p.nat_mut().start(&cands),
                None => Vec::new(),
            };
            self.nat_pings(now, pid, socket, pings);
            // Sampling may conclude at once (no nodes to ask).
            self.on_puncher_progress(now, pid);
        }
        let owner = self.punch_owners.get(&pid).copied();
        for e in events {
            match owner {
                Some(PunchOwner::Client(c)) => self.on_client_punch_event(now, c, e),
                Some(PunchOwner::Server(id)) => self.on_server_punch_event(now, id, e),
                Some(PunchOwner::Probe(id)) => self.on_nat_sample_progress(now, pid, id, true),
                None => {}
            }
        }
        if destroyed {
            self.forget_puncher(pid);
        }
    }

    /// The puncher's NAT analysis moved: its owner may be waiting on it.
    fn on_puncher_progress(&mut self, now: Instant, pid: u64) {
        match self.punch_owners.get(&pid).copied() {
            Some(PunchOwner::Client(c)) => self.client_punch_step(now, c),
            Some(PunchOwner::Server(id)) => self.server_punch_step(now, id),
            Some(PunchOwner::Probe(id)) => self.on_nat_sample_progress(now, pid, id, false),
            None => {}
        }
    }

    /// Classifies this machine's NAT the way a connect would (hyperdht `nat.js`): a fresh
    /// socket PINGs a few DHT nodes and the answers are voted on. The result comes as
    /// [`HyperEvent::NatSampled`] (bounded by the PINGs' timeouts: a few seconds).
    pub fn sample_nat(&mut self, now: Instant) -> u64 {
        self.now = self.now.max(now);
        let id = self.next_id();
        if self
            .new_puncher(now, PunchOwner::Probe(id), true, firewall::UNKNOWN)
            .is_none()
        {
            self.events.push_back(HyperEvent::NatSampled {
                sample: id,
                nat: NatType::Unknown,
                addresses: Vec::new(),
            });
        }
        self.process(now);
        id
    }

    fn on_nat_sample_progress(&mut self, now: Instant, pid: u64, id: u64, gone: bool) {
        let Some(p) = self.punchers.get(&pid) else {
            if gone {
                self.events.push_back(HyperEvent::NatSampled {
                    sample: id,
                    nat: NatType::Unknown,
                    addresses: Vec::new(),
                });
            }
            return;
        };
        if !p.nat().is_resolved() && !gone {
            return;
        }
        let nat = NatType::from_firewall(p.nat().firewall());
        let addresses = p.nat().addresses().map(<[_]>::to_vec).unwrap_or_default();
        self.punch_owners.remove(&pid);
        self.destroy_puncher(now, pid);
        self.events.push_back(HyperEvent::NatSampled {
            sample: id,
            nat,
            addresses,
        });
    }

    fn destroy_puncher(&mut self, now: Instant, pid: u64) {
        if let Some(p) = self.punchers.get_mut(&pid) {
            p.destroy(now, &mut self.pool, &mut self.random_punches);
        }
        self.service_puncher(now, pid);
    }

    fn forget_puncher(&mut self, pid: u64) {
        if let Some(p) = self.punchers.remove(&pid) {
            self.punch_stats.probes += p.probes_sent();
            for s in p.sockets() {
                if self.socket_owners.get(s) == Some(&pid) {
                    self.socket_owners.remove(s);
                }
            }
        }
        self.punch_owners.remove(&pid);
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
