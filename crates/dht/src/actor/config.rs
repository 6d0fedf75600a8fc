//! Settings, errors and the types the [`Dht`](super::Dht) handle hands out.

use super::*;

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
    /// A UDX socket or stream failed.
    #[error("UDX: {0}")]
    Udx(#[from] corenet_udx::Error),
    /// An operation failed.
    #[error(transparent)]
    Op(#[from] OpError),
    /// A connect failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

/// An encrypted connection made or accepted through the DHT: a secret stream over a UDX
/// stream, started from the Noise IK handshake.
#[derive(Debug)]
pub struct Connection {
    /// The stream.
    pub stream: SecretStream<UdxStream>,
    /// The remote's address (the relay's, for a relayed connection).
    pub remote_address: SocketAddrV4,
    /// We connected (the Noise initiator).
    pub is_initiator: bool,
    /// How the connection's packets travel (when it was made; a relayed connection may
    /// move to a direct path later).
    pub path: PathKind,
    /// The blind-relay link of a relayed connection: it lives as long as this connection
    /// (or until a direct path replaces it).
    pub relay: Option<RelayLink>,
}

/// A relayed connection's hold on its blind-relay link (shared with the node, which drops
/// it when the connection moves to a direct path). Keep it as long as the connection.
pub type RelayLink = Arc<std::sync::Mutex<Option<RelayHold>>>;

/// A NAT classification on a fresh socket ([`Dht::sample_nat`](super::Dht::sample_nat)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatSample {
    /// The class.
    pub nat: NatType,
    /// The public addresses seen (`host:0` for a random NAT).
    pub addresses: Vec<SocketAddrV4>,
}

/// The node's NAT as its dht-rpc layer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatStatus {
    /// Open when the reachability check passed; else consistent or random from the
    /// addresses other nodes see, unknown before enough of them answered.
    pub nat: NatType,
    /// Our public address as voted by other nodes (`host:0`: the NAT randomizes ports).
    pub public_address: Option<SocketAddrV4>,
    /// Unsolicited packets (probably) cannot reach the server socket.
    pub firewalled: bool,
}

/// The future a [`Firewall`] returns.
pub type FirewallFuture = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;

/// Decides whether a server accepts a client: `(remote public key, client address as the
/// relay saw it)` to `true` (accept) or `false` (refuse: the client gets no answer). It runs
/// before anything is sent back.
pub type Firewall = Arc<dyn Fn(PublicKey, SocketAddrV4) -> FirewallFuture + Send + Sync>;

/// The keepalive interval of DHT connections (hyperdht's `connectionKeepAlive`).
pub const CONNECTION_KEEPALIVE: Duration = Duration::from_secs(5);
/// Accepted client handshakes whose client has not started a path yet (no packet, punch or
/// relay on its stream): half-open connections. Each holds a UDX stream for up to
/// [`PUNCH_TIMEOUT`](crate::hyper::dht::PUNCH_TIMEOUT) (90 s); at this many, accepting one
/// more drops the oldest, so a flood of handshakes that never follow up holds a bounded
/// amount and cannot keep a real client out for long. JS has no count bound (only the time).
pub const MAX_HALF_OPEN: usize = 256;
/// Results buffered per lookup (and announce-and-lookup) stream by default.
pub const RESULTS_BUFFER: usize = 256;
/// Holders of a server's record buffered per find-peer stream.
pub const FIND_PEER_BUFFER: usize = 64;

/// Settings of a [`Dht`] node. Every setter states its default.
#[derive(Debug, Clone)]
pub struct DhtConfig {
    pub(super) host: Ipv4Addr,
    pub(super) port: u16,
    pub(super) bootstrap: Vec<SocketAddrV4>,
    pub(super) ephemeral: Option<bool>,
    pub(super) firewalled: bool,
    pub(super) public_address: Option<SocketAddrV4>,
    pub(super) results_buffer: usize,
    pub(super) quick_firewall: bool,
    pub(super) lan: bool,
    pub(super) answer_ping_nat: bool,
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
            results_buffer: RESULTS_BUFFER,
            quick_firewall: true,
            lan: true,
            answer_ping_nat: true,
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
    /// Run dht-rpc's quick reachability check while bootstrapping (a PING_NAT to the first
    /// node that answers). Default: true. Off, a node stays firewalled until its slower
    /// stability check (about 20 minutes): tests use it to make loopback peers behave as
    /// if behind a NAT.
    pub fn with_quick_firewall(mut self, on: bool) -> Self {
        self.quick_firewall = on;
        self
    }
    /// Use and offer the LAN shortcut (connects try the server's LAN address when both
    /// share a public address; servers advertise their interface addresses). Default:
    /// true. Off, same-host peers go through the holepunch: tests use it to exercise the
    /// punch on loopback.
    pub fn with_lan(mut self, on: bool) -> Self {
        self.lan = on;
        self
    }
    /// Answer other nodes' reachability checks (PING_NAT). Default: true. See
    /// [`Testnet::behind_nats`](super::Testnet::behind_nats).
    pub fn with_answer_ping_nat(mut self, on: bool) -> Self {
        self.answer_ping_nat = on;
        self
    }
    /// Results (one per answering node) buffered per lookup and announce-and-lookup stream;
    /// while the buffer is full, newer results are dropped, so a reader that falls behind
    /// loses results and never stalls the DHT. Default: [`RESULTS_BUFFER`] (256).
    /// Find-peer streams buffer [`FIND_PEER_BUFFER`].
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
    /// Nodes that answered the bootstrap walks ([`crate::rpc::Node::boot_replies`]): zero
    /// after bootstrap means no DHT node was reachable.
    pub boot_replies: usize,
    /// Routing table size.
    pub table_size: usize,
    /// The NAT as the dht-rpc layer sees it.
    pub nat: NatStatus,
    /// Holepunch counters.
    pub punches: crate::hyper::PunchStats,
    /// Pool sockets open for punches in progress.
    pub pool_sockets: usize,
    /// Accepted client handshakes whose client has not started a path yet (at most
    /// [`MAX_HALF_OPEN`]).
    pub half_open: usize,
    /// Streams in the node's UDX instance (live, or lingering in TIME_WAIT).
    pub streams: usize,
    /// Per-handshake state the hyperdht core holds (answer slots, pending firewall
    /// decisions, server holepunch slots); each goes a bounded time after its connection.
    pub handshakes: usize,
    /// Connections the actor tracks until their path opens (accepted handshakes, connects).
    pub pending_connections: usize,
}

pub(super) fn v4(a: SocketAddr) -> Option<SocketAddrV4> {
    match a {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(a) => a
            .ip()
            .to_ipv4_mapped()
            .map(|ip| SocketAddrV4::new(ip, a.port())),
    }
}
