//! dht-rpc as a sans-IO core: messages, routing table, requests with retries and a congestion
//! window, iterative queries, tokens, NAT sampling and the ephemeral/persistent switch.
//!
//! [`Node`] never touches a socket or a clock. Feed it datagrams
//! ([`Node::handle_datagram`]) and the time ([`Node::handle_timeout`]), give it commands
//! ([`Node::request`], [`Node::query`], [`Node::reply`]), and drain [`Node::poll_transmit`],
//! [`Node::poll_event`] and [`Node::poll_timeout`] after every input.
//!
//! A node has two sockets, as in JS: the *server* socket, whose address is the node's
//! identity once persistent (it also carries UDX streams), and the *client* socket that a
//! firewalled node sends its requests from. [`Transmit::socket`] says which to use.

mod congestion;
pub mod id;
pub mod message;
pub mod nat;
mod node;
pub mod query;
mod ratelimit;
pub mod table;
pub mod tokens;

use std::net::SocketAddrV4;
use std::time::Duration;

use bytes::Bytes;

pub use id::NodeId;
pub use message::{Message, Request, Response};
pub use node::Node;
pub use query::QuerySpec;
pub use ratelimit::{
    RateLimits, DEFAULT_GLOBAL_BURST, DEFAULT_GLOBAL_RATE, DEFAULT_PER_SOURCE_BURST,
    DEFAULT_PER_SOURCE_RATE, MAX_TRACKED_SOURCES,
};

/// k, the bucket size and the number of closest replies a query keeps.
pub const K: usize = 20;
/// How long a request waits for each transmission.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// Retransmissions of a plain request (4 sends in all).
pub const DEFAULT_RETRIES: u8 = 3;
/// Query concurrency.
pub const DEFAULT_CONCURRENCY: usize = 10;
/// Sends per 750 ms slot before the congestion window is full (160 over the 4 slots).
pub const DEFAULT_MAX_WINDOW: u32 = 80;
/// The tick: table maintenance runs on it.
pub const TICK_INTERVAL: Duration = Duration::from_secs(5);
/// The congestion-window and token-rotation interval.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(750);
/// A gap between ticks longer than this means the machine slept.
pub const SLEEPING_INTERVAL: Duration = Duration::from_secs(15);
/// Longest DELAYED_PING delay we honour.
pub const MAX_PING_DELAY: Duration = Duration::from_secs(10);
/// DELAYED_PING replies held at once; a request beyond it is ignored (no reply). JS keeps
/// every pending timer (`dht-rpc/index.js:697-702`), so a flood of 10 s delays grows without
/// bound there.
pub const MAX_DELAYED_PINGS: usize = 1024;
/// Liveness checks (PINGs of table nodes) in flight at once under which a DOWN_HINT starts
/// another; beyond it a hint is acknowledged and not acted on (JS: `this._checks < 10`,
/// `dht-rpc/index.js:666`). It keeps a hint flood from turning into a ping flood.
pub const MAX_DOWN_HINT_CHECKS: usize = 10;
/// Ticks a node must be quiet before re-sampling (30 min).
pub const OLD_NODE: u32 = 360;
/// Ticks under which a node counts as recently seen (1 min).
pub const RECENT_NODE: u32 = 12;
/// Ticks of stability before an adaptive node tries to become persistent (about 20 min).
pub const STABLE_TICKS: u32 = 240;
/// Ticks between retries of that check on the same network (about 1 h).
pub const MORE_STABLE_TICKS: u32 = 720;
/// Ticks between background refreshes when idle (5 min).
pub const REFRESH_TICKS: u32 = 60;
/// DOWN_HINTs sent per tick at most.
pub const DOWN_HINTS_PER_TICK: u32 = 50;
/// Longest queue of outgoing datagrams and events before new ones are dropped (a driver that
/// drains after every input never gets near it).
pub const MAX_QUEUE: usize = 65_536;

/// Which of the node's UDP sockets a datagram uses.
///
/// Besides its two sockets a node may have short-lived *pool* sockets (hyperdht opens a
/// fresh one per holepunch, and up to 256 for a birthday punch). Requests sent from a pool
/// socket are answered on it, and what arrives on it is handled like anything else; it is
/// never the node's identity and never sampled for the node's own NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SocketKind {
    /// The socket at the node's advertised address (and of its UDX streams).
    Server,
    /// The socket firewalled nodes send requests from.
    Client,
    /// A pool socket, by the id its owner gave it.
    Pool(u32),
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// From which socket.
    pub socket: SocketKind,
    /// To whom.
    pub to: SocketAddrV4,
    /// The datagram.
    pub bytes: Bytes,
    /// IP time-to-live for this datagram; `None` keeps the socket's default (64). hyperdht
    /// sends its first probes with a TTL of 5: far enough to open the local NAT's mapping,
    /// too short to reach (and trip) the remote's.
    pub ttl: Option<u8>,
}

/// Identifies a request made with [`Node::request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Identifies a query made with [`Node::query`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryId(pub u64);

/// A response, with what the node verified about its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The responder's address (UDP source).
    pub from: SocketAddrV4,
    /// The responder's id, only if it matches its address.
    pub from_id: Option<NodeId>,
    /// Our address as the responder saw it.
    pub to: SocketAddrV4,
    /// A write token for this responder.
    pub token: Option<[u8; 32]>,
    /// Closer nodes to the target.
    pub closer_nodes: Vec<SocketAddrV4>,
    /// Error code, 0 for success.
    pub error: u64,
    /// The value.
    pub value: Option<Bytes>,
    /// The socket it arrived on.
    pub socket: SocketKind,
}

/// A user (non-internal) request for the layer above to answer with [`Node::reply`] or
/// [`Node::relay`], or to ignore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingRequest {
    /// Transaction id.
    pub tid: u16,
    /// UDP source.
    pub from: SocketAddrV4,
    /// The sender's id, only if it matches its address.
    pub from_id: Option<NodeId>,
    /// The address the sender sent to.
    pub to: SocketAddrV4,
    /// The socket it arrived on.
    pub socket: SocketKind,
    /// The token the sender echoed, if any. It is always one we issued to this host: an
    /// invalid token is answered with INVALID_TOKEN and never gets here.
    pub token: Option<[u8; 32]>,
    /// The command.
    pub command: u64,
    /// The target.
    pub target: Option<[u8; 32]>,
    /// The value.
    pub value: Option<Bytes>,
}

/// How to answer an [`IncomingRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyOptions {
    /// Error code (0: success).
    pub error: u64,
    /// Value to return.
    pub value: Option<Bytes>,
    /// Include a write token.
    pub token: bool,
    /// Include closer nodes to the request's target (when it had one).
    pub closer_nodes: bool,
    /// Send to this address instead of the requester (hyperdht relays).
    pub to: Option<SocketAddrV4>,
    /// Send from this socket instead of the receiving one.
    pub socket: Option<SocketKind>,
}

impl ReplyOptions {
    /// The default answer of a storage command: value, token and closer nodes.
    pub fn value(value: Option<Bytes>) -> Self {
        ReplyOptions {
            value,
            token: true,
            closer_nodes: true,
            ..Default::default()
        }
    }

    /// An error answer with closer nodes and no token.
    pub fn error(code: u64) -> Self {
        ReplyOptions {
            error: code,
            closer_nodes: true,
            ..Default::default()
        }
    }

    /// A bare acknowledgement (no token, no closer nodes).
    pub fn ack() -> Self {
        ReplyOptions::default()
    }
}

/// What a request to another node is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestSpec {
    /// Internal (dht-rpc) command.
    pub internal: bool,
    /// Command.
    pub command: u64,
    /// Target.
    pub target: Option<[u8; 32]>,
    /// Value.
    pub value: Option<Bytes>,
    /// A token the receiver issued us.
    pub token: Option<[u8; 32]>,
    /// Retransmissions (default [`DEFAULT_RETRIES`]).
    pub retries: Option<u8>,
    /// Wait per transmission (default [`DEFAULT_REQUEST_TIMEOUT`]).
    pub timeout: Option<Duration>,
    /// Send from this socket instead of the node's usual one.
    pub socket: Option<SocketKind>,
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// No answer after every retransmission.
    #[error("request timed out")]
    Timeout,
    /// Cancelled locally.
    #[error("request cancelled")]
    Cancelled,
}

/// What the node reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A user command arrived.
    Request(IncomingRequest),
    /// A request made with [`Node::request`] finished.
    Response {
        /// Which request.
        id: RequestId,
        /// The reply or the failure.
        result: Result<Reply, RequestError>,
    },
    /// A query got a successful reply.
    QueryReply {
        /// Which query.
        query: QueryId,
        /// The reply.
        reply: Reply,
        /// How many referrals led to this node (the query's seeds are 1).
        hops: u8,
    },
    /// A query finished.
    QueryDone {
        /// Which query.
        query: QueryId,
        /// Up to k successful replies from persistent nodes, closest first.
        closest: Vec<Reply>,
        /// Successful replies in all.
        successes: usize,
        /// Error replies.
        errors: usize,
        /// Requests the query sent (first transmissions).
        requests: usize,
    },
    /// The first bootstrap pass finished.
    Bootstrapped,
    /// The node became persistent: it now sends its id and stores records.
    Persistent {
        /// Its id.
        id: NodeId,
    },
    /// The node went back to ephemeral (after a wakeup).
    Ephemeral,
    /// Our public address as voted by other nodes changed.
    NatUpdated(Option<SocketAddrV4>),
    /// A node entered the routing table.
    NodeAdded(SocketAddrV4),
    /// A node left the routing table.
    NodeRemoved(SocketAddrV4),
}

/// Settings of a [`Node`]. Every setter states its default.
#[derive(Debug, Clone)]
pub struct Config {
    /// Nodes to bootstrap from.
    pub(crate) bootstrap: Vec<SocketAddrV4>,
    /// `Some(true)`: always ephemeral; `Some(false)`: become persistent at bootstrap;
    /// `None`: adaptive.
    pub(crate) ephemeral: Option<bool>,
    /// Whether we assume unsolicited packets cannot reach the server socket.
    pub(crate) firewalled: bool,
    /// The server socket's local port (for PING_NAT reachability tests).
    pub(crate) server_port: u16,
    /// Our public address, if known in advance (a bootstrap server).
    pub(crate) public_address: Option<SocketAddrV4>,
    /// Bucket size.
    pub(crate) k: usize,
    /// Query concurrency.
    pub(crate) concurrency: usize,
    /// Congestion window per slot.
    pub(crate) max_window: u32,
    /// Per-transmission request timeout.
    pub(crate) request_timeout: Duration,
    /// Seed of the node's RNG.
    pub(crate) seed: [u8; 32],
    /// Run the quick PING_NAT reachability test during bootstrap.
    pub(crate) quick_firewall: bool,
    /// Answer other nodes' PING_NAT (their reachability checks).
    pub(crate) answer_ping_nat: bool,
    /// Budgets for incoming requests.
    pub(crate) rate_limits: RateLimits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bootstrap: Vec::new(),
            ephemeral: None,
            firewalled: true,
            server_port: 0,
            public_address: None,
            k: K,
            concurrency: DEFAULT_CONCURRENCY,
            max_window: DEFAULT_MAX_WINDOW,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            seed: [0; 32],
            quick_firewall: true,
            answer_ping_nat: true,
            rate_limits: RateLimits::default(),
        }
    }
}

impl Config {
    /// Bootstrap nodes. Default: none (the facade supplies the public ones).
    pub fn with_bootstrap(mut self, nodes: Vec<SocketAddrV4>) -> Self {
        self.bootstrap = nodes;
        self
    }
    /// `Some(true)` stays ephemeral; `Some(false)` becomes persistent as soon as bootstrap
    /// learns our address; `None` (the default) is adaptive.
    pub fn with_ephemeral(mut self, ephemeral: Option<bool>) -> Self {
        self.ephemeral = ephemeral;
        self
    }
    /// Whether the server socket may be unreachable from outside. Default: true.
    pub fn with_firewalled(mut self, firewalled: bool) -> Self {
        self.firewalled = firewalled;
        self
    }
    /// The server socket's local port. Default: 0 (unknown; reachability tests then fail).
    pub fn with_server_port(mut self, port: u16) -> Self {
        self.server_port = port;
        self
    }
    /// Our public address, known in advance (bootstrap servers). Default: learned.
    pub fn with_public_address(mut self, addr: SocketAddrV4) -> Self {
        self.public_address = Some(addr);
        self
    }
    /// Bucket size. Default: [`K`] (20).
    pub fn with_k(mut self, k: usize) -> Self {
        self.k = k.max(1);
        self
    }
    /// Query concurrency. Default: [`DEFAULT_CONCURRENCY`] (10).
    pub fn with_concurrency(mut self, c: usize) -> Self {
        self.concurrency = c.max(1);
        self
    }
    /// Congestion window per 750 ms slot. Default: [`DEFAULT_MAX_WINDOW`] (80).
    pub fn with_max_window(mut self, w: u32) -> Self {
        self.max_window = w.max(1);
        self
    }
    /// Wait per transmission. Default: [`DEFAULT_REQUEST_TIMEOUT`] (1 s).
    pub fn with_request_timeout(mut self, t: Duration) -> Self {
        self.request_timeout = t;
        self
    }
    /// Seed of the node's RNG (tids, tokens, refresh targets). Default: all zero; drivers
    /// pass a random seed.
    pub fn with_seed(mut self, seed: [u8; 32]) -> Self {
        self.seed = seed;
        self
    }
    /// Answer PING_NAT, the request other nodes test their reachability with. Default: true.
    /// A node that does not answer makes everyone who asks it look firewalled (a test
    /// network uses it to stand for a network of NATs, which loopback cannot show).
    pub fn with_answer_ping_nat(mut self, on: bool) -> Self {
        self.answer_ping_nat = on;
        self
    }
    /// Budgets for incoming requests, per source host and for the node (see
    /// [`RateLimits`]). Default: [`RateLimits::default`] (2,000/s per host with bursts of
    /// 10,000; 20,000/s in all with bursts of 40,000); dht-rpc has none
    /// ([`RateLimits::unlimited`]).
    pub fn with_rate_limits(mut self, limits: RateLimits) -> Self {
        self.rate_limits = limits;
        self
    }
    /// Run the quick reachability test during bootstrap. Default: true.
    pub fn with_quick_firewall(mut self, on: bool) -> Self {
        self.quick_firewall = on;
        self
    }
}
