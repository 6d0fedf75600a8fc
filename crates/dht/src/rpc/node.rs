//! The dht-rpc node state machine.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaChaRng;

use super::congestion::CongestionWindow;
use super::id::NodeId;
use super::message::{errors, internal, Message, Request, Response};
use super::nat::NatSampler;
use super::query::{Query, QuerySpec, Visit};
use super::ratelimit::Limiter;
use super::table::{AddResult, Entry, Table};
use super::tokens::Tokens;
use super::{
    Config, Event, IncomingRequest, QueryId, Reply, ReplyOptions, RequestError, RequestId,
    RequestSpec, SocketKind, Transmit, DOWN_HINTS_PER_TICK, DRAIN_INTERVAL, MAX_DELAYED_PINGS,
    MAX_DOWN_HINT_CHECKS, MAX_PING_DELAY, MAX_QUEUE, MORE_STABLE_TICKS, OLD_NODE, RECENT_NODE,
    REFRESH_TICKS, SLEEPING_INTERVAL, STABLE_TICKS, TICK_INTERVAL,
};

/// Who waits for a request's outcome.
#[derive(Debug, Clone)]
enum Owner {
    /// [`Node::request`].
    User(RequestId),
    /// A query.
    Query(QueryId),
    /// A liveness check of a table node.
    Check(NodeId),
    /// A ping of a full row's oldest node; `new` replaces it if it is gone.
    Reping { oldest: NodeId, new: Box<Entry> },
    /// The quick reachability test during bootstrap.
    QuickNat,
    /// One PING_NAT of a reachability check.
    NetCheck,
    /// Nobody (DOWN_HINT).
    Fire,
}

/// A request in flight.
#[derive(Debug)]
struct Inflight {
    /// Who gets the result.
    owner: Owner,
    /// Destination.
    to: SocketAddrV4,
    /// Destination's id, if it may be in our table (evicted on timeout).
    to_id: Option<NodeId>,
    /// The encoded datagram (retransmitted unchanged).
    bytes: Bytes,
    /// From which socket.
    socket: SocketKind,
    /// Transmissions so far.
    sent: u8,
    /// Transmissions allowed after the first.
    retries: u8,
    /// Wait per transmission.
    timeout: Duration,
    /// Bumped per transmission so stale timers are ignored.
    gen: u32,
    /// Waiting for the congestion window.
    queued: bool,
    /// Its first timer fired (queries count it as slow).
    slow: bool,
}

/// Progress of the bootstrap.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Boot {
    /// Walking toward our own id.
    Querying {
        query: QueryId,
        pass: u8,
        test_nat: bool,
        nat_pinged: bool,
    },
    /// Waiting for a reachability check before the next pass.
    Checking { pass: u8 },
    /// Finished.
    Done,
}

/// A reachability check: PING_NAT to a few nodes, counting answers that reach the server
/// socket.
#[derive(Debug)]
struct NetCheck {
    /// Requests still out.
    outstanding: usize,
    /// Answers that arrived on the server socket.
    count: usize,
    /// Their `to` fields.
    sampler: NatSampler,
    /// Nodes asked.
    asked: usize,
    /// Only clear the firewalled flag; do not become persistent.
    only_firewall: bool,
    /// The NAT address when the check started.
    started_with: Option<SocketAddrV4>,
}

/// Counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests sent (first transmissions).
    pub requests: u64,
    /// Retransmissions.
    pub retransmits: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Responses matched to a request.
    pub responses: u64,
    /// Requests received.
    pub incoming: u64,
    /// Datagrams dropped as malformed or unmatched.
    pub dropped: u64,
    /// Requests dropped unanswered because their source or the node was over its budget
    /// ([`super::RateLimits`]).
    pub rate_limited: u64,
}

/// The dht-rpc state machine; see the [module docs](super).
///
/// ```
/// use std::net::{Ipv4Addr, SocketAddrV4};
/// use std::time::Instant;
/// use corenet_dht::rpc::{Config, Node, Event, SocketKind};
///
/// let now = Instant::now();
/// let a_addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 10001);
/// let b_addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 10002);
/// // A bootstrap node that knows its address, and a node that bootstraps from it.
/// let mut a = Node::new(Config::default().with_public_address(a_addr).with_firewalled(false)
///     .with_ephemeral(Some(false)), now);
/// let mut b = Node::new(Config::default().with_bootstrap(vec![a_addr])
///     .with_ephemeral(Some(false)).with_firewalled(false).with_seed([2; 32]), now);
/// // Deliver datagrams until both are quiet (a real driver uses sockets and timers).
/// for _ in 0..20 {
///     while let Some(t) = a.poll_transmit() { b.handle_datagram(now, SocketKind::Server, a_addr, &t.bytes); }
///     while let Some(t) = b.poll_transmit() { a.handle_datagram(now, SocketKind::Server, b_addr, &t.bytes); }
/// }
/// let mut bootstrapped = false;
/// while let Some(e) = b.poll_event() { bootstrapped |= e == Event::Bootstrapped; }
/// assert!(bootstrapped);
/// assert!(b.is_persistent() && b.table().get(&a.id()).is_some());
/// ```
#[derive(Debug)]
pub struct Node {
    config: Config,
    rng: ChaChaRng,
    table: Table,
    tokens: Tokens,
    limiter: Limiter,
    nat: NatSampler,
    /// Addresses of id-less responders we took a NAT sample from.
    bootstrap_sampled: Vec<SocketAddrV4>,
    persistent: bool,
    firewalled: bool,
    adaptive: bool,
    tick: u32,
    last_tick_at: Instant,
    next_tick: Instant,
    next_drain: Instant,
    refresh_ticks: u32,
    stable_ticks: u32,
    last_host: Option<Ipv4Addr>,
    down_hints_sent: u32,
    congestion: CongestionWindow,
    next_tid: u16,
    inflight: HashMap<u16, Inflight>,
    waiting: VecDeque<u16>,
    timers: BinaryHeap<Reverse<(Instant, u16, u32)>>,
    delayed: BinaryHeap<Reverse<(Instant, u64)>>,
    delayed_replies: HashMap<u64, Transmit>,
    queries: HashMap<QueryId, Query>,
    next_id: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    boot: Boot,
    bootstrapped: bool,
    checks_inflight: usize,
    /// Successful replies to the bootstrap walks.
    boot_replies: usize,
    repinging: usize,
    net_check: Option<NetCheck>,
    suspended: bool,
    last_nat: Option<SocketAddrV4>,
    stats: Stats,
}

impl Node {
    /// A node that starts bootstrapping at `now`.
    pub fn new(config: Config, now: Instant) -> Self {
        let mut rng = ChaChaRng::from_seed(config.seed);
        let mut random_id = [0u8; 32];
        rng.fill_bytes(&mut random_id);
        let mut secrets = [[0u8; 32]; 2];
        rng.fill_bytes(&mut secrets[0]);
        rng.fill_bytes(&mut secrets[1]);
        let adaptive = config.ephemeral.is_none();
        let mut nat = NatSampler::new();
        let mut table_id = NodeId(random_id);
        let mut persistent = false;
        let mut firewalled = config.firewalled;
        if let Some(addr) = config.public_address {
            // A bootstrap server that knows its address: persistent from the start unless it
            // was told to stay ephemeral.
            nat.add(addr);
            if config.ephemeral != Some(true) {
                persistent = true;
                firewalled = false;
                table_id = NodeId::from_addr(&addr);
            }
        }
        let tick = 50 + rng.gen_range(1..=50);
        let refresh_ticks = 30 + rng.gen_range(1..=30);
        let next_tid = rng.gen();
        let last_nat = nat.address();
        let mut node = Node {
            table: Table::new(table_id, config.k),
            tokens: Tokens::new(secrets),
            limiter: Limiter::new(config.rate_limits, now),
            congestion: CongestionWindow::new(config.max_window),
            config,
            rng,
            nat,
            bootstrap_sampled: Vec::new(),
            persistent,
            firewalled,
            adaptive,
            tick,
            last_tick_at: now,
            next_tick: now + TICK_INTERVAL,
            next_drain: now + DRAIN_INTERVAL,
            refresh_ticks,
            stable_ticks: if adaptive { STABLE_TICKS } else { 0 },
            last_host: None,
            down_hints_sent: 0,
            next_tid,
            inflight: HashMap::new(),
            waiting: VecDeque::new(),
            timers: BinaryHeap::new(),
            delayed: BinaryHeap::new(),
            delayed_replies: HashMap::new(),
            queries: HashMap::new(),
            next_id: 1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            boot: Boot::Done,
            bootstrapped: false,
            checks_inflight: 0,
            boot_replies: 0,
            repinging: 0,
            net_check: None,
            suspended: false,
            last_nat,
            stats: Stats::default(),
        };
        if persistent {
            node.push_event(Event::Persistent { id: table_id });
        }
        node.start_boot_pass(now, 1);
        node
    }

    // ----- accessors -----

    /// The routing-table id (the address-derived id once persistent).
    pub fn id(&self) -> NodeId {
        self.table.id()
    }

    /// The routing table.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// True once the node sends its id and may store records.
    pub fn is_persistent(&self) -> bool {
        self.persistent
    }

    /// True while requests go out from the client socket.
    pub fn is_firewalled(&self) -> bool {
        self.firewalled
    }

    /// True after the first bootstrap pass.
    pub fn is_bootstrapped(&self) -> bool {
        self.bootstrapped
    }

    /// Successful replies the bootstrap walks got. Zero once bootstrapped means no node
    /// answered: the bootstrap addresses are wrong or the network is unreachable (the node
    /// still runs, and keeps trying on its refresh ticks, as in JS).
    pub fn boot_replies(&self) -> usize {
        self.boot_replies
    }

    /// Our public address as other nodes report it (port 0: the NAT randomizes ports).
    pub fn nat_address(&self) -> Option<SocketAddrV4> {
        self.nat.address()
    }

    /// Our server socket's public address, when it is reachable from outside (used to tell
    /// connecting peers we are OPEN).
    pub fn remote_address(&self) -> Option<SocketAddrV4> {
        let a = self.nat.address()?;
        if a.port() == 0 || self.firewalled {
            return None;
        }
        if self.config.server_port != 0 && a.port() != self.config.server_port {
            return None;
        }
        Some(a)
    }

    /// The server socket's local port (0 when unknown).
    pub fn server_port(&self) -> u16 {
        self.config.server_port
    }

    /// The current tick number.
    pub fn tick(&self) -> u32 {
        self.tick
    }

    /// The configured bootstrap nodes.
    pub fn bootstrap_nodes(&self) -> &[SocketAddrV4] {
        &self.config.bootstrap
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Queries running.
    pub fn active_queries(&self) -> usize {
        self.queries.len()
    }

    /// Requests in flight (or waiting for the congestion window).
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// The socket requests go out from.
    pub fn request_socket(&self) -> SocketKind {
        if self.firewalled {
            SocketKind::Client
        } else {
            SocketKind::Server
        }
    }

    /// A write token for `host` (what replies carry).
    pub fn issue_token(&self, host: &Ipv4Addr) -> [u8; 32] {
        self.tokens.issue(host)
    }

    /// The closest table nodes to a target (closer-node lists).
    pub fn closest_addrs(&self, target: &[u8; 32], n: usize) -> Vec<SocketAddrV4> {
        self.table
            .closest(&NodeId(*target), n)
            .into_iter()
            .map(|e| e.addr)
            .collect()
    }

    fn our_id_for(&self, socket: SocketKind) -> Option<NodeId> {
        (self.persistent && socket == SocketKind::Server).then_some(self.table.id())
    }

    // ----- outputs -----

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Node::handle_timeout`] should run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.suspended {
            return None;
        }
        // Drains only need a timer while requests wait for the window; otherwise they are
        // caught up lazily on the next input (see `catch_up`).
        let mut t = if self.waiting.is_empty() {
            self.next_tick
        } else {
            self.next_tick.min(self.next_drain)
        };
        if let Some(Reverse((d, _, _))) = self.timers.peek() {
            t = t.min(*d);
        }
        if let Some(Reverse((d, _))) = self.delayed.peek() {
            t = t.min(*d);
        }
        Some(t)
    }

    fn push_transmit(&mut self, t: Transmit) {
        if self.transmits.len() < MAX_QUEUE {
            self.transmits.push_back(t);
        } else {
            self.stats.dropped += 1;
        }
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() < MAX_QUEUE {
            self.events.push_back(e);
        }
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    // ----- commands -----

    /// Sends a request; its outcome arrives as [`Event::Response`].
    pub fn request(&mut self, now: Instant, to: SocketAddrV4, spec: RequestSpec) -> RequestId {
        self.catch_up(now);
        let id = RequestId(self.next_id());
        self.send_request(now, to, None, spec, Owner::User(id), false);
        id
    }

    /// Cancels a request made with [`Node::request`]; no event follows.
    pub fn cancel_request(&mut self, id: RequestId) {
        let tid = self
            .inflight
            .iter()
            .find(|(_, r)| matches!(r.owner, Owner::User(u) if u == id))
            .map(|(t, _)| *t);
        if let Some(tid) = tid {
            self.inflight.remove(&tid);
            self.congestion.recv();
        }
    }

    /// Starts a query; replies arrive as [`Event::QueryReply`], then [`Event::QueryDone`].
    pub fn query(&mut self, now: Instant, spec: QuerySpec) -> QueryId {
        self.catch_up(now);
        self.start_query(now, spec, false)
    }

    /// Stops a query; no further events for it.
    pub fn cancel_query(&mut self, id: QueryId) {
        self.queries.remove(&id);
    }

    /// Answers a user request.
    pub fn reply(&mut self, req: &IncomingRequest, opts: ReplyOptions) {
        let dest = opts.to.unwrap_or(req.from);
        let socket = opts.socket.unwrap_or(req.socket);
        let closer = if opts.closer_nodes {
            req.target
                .map(|t| self.closest_addrs(&t, self.config.k))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let res = Response {
            tid: req.tid,
            to: dest,
            id: self.our_id_for(socket),
            token: opts.token.then(|| self.tokens.issue(dest.ip())),
            closer_nodes: closer,
            error: opts.error,
            value: opts.value,
        };
        self.push_transmit(Transmit {
            socket,
            to: dest,
            bytes: res.to_bytes(),
            ttl: None,
        });
    }

    /// Forwards a user request to `to` with a new value, keeping its tid, command and target
    /// (hyperdht's handshake relays). No response is awaited.
    pub fn relay(
        &mut self,
        req: &IncomingRequest,
        to: SocketAddrV4,
        value: Option<Bytes>,
        socket: Option<SocketKind>,
    ) {
        let socket = socket.unwrap_or(req.socket);
        let r = Request {
            tid: req.tid,
            to,
            id: self.our_id_for(socket),
            token: None,
            internal: false,
            command: req.command,
            target: req.target,
            value,
        };
        self.push_transmit(Transmit {
            socket,
            to,
            bytes: r.to_bytes(),
            ttl: None,
        });
    }

    /// Sends a raw datagram from one of our sockets (hyperdht's holepunch probes).
    pub fn send_raw(&mut self, socket: SocketKind, to: SocketAddrV4, bytes: Bytes) {
        self.send_raw_ttl(socket, to, bytes, None);
    }

    /// [`Node::send_raw`] with an IP time-to-live for the datagram (`None`: the default).
    pub fn send_raw_ttl(
        &mut self,
        socket: SocketKind,
        to: SocketAddrV4,
        bytes: Bytes,
        ttl: Option<u8>,
    ) {
        self.push_transmit(Transmit {
            socket,
            to,
            bytes,
            ttl,
        });
    }

    /// Adds a node we know is reachable (no NAT sample is taken).
    pub fn add_node(&mut self, addr: SocketAddrV4) {
        let e = self.new_entry(NodeId::from_addr(&addr), addr, false);
        if self.table.add(e) == AddResult::Added {
            self.push_event(Event::NodeAdded(addr));
        }
    }

    /// Runs a background refresh now.
    pub fn refresh(&mut self, now: Instant) {
        let target = if self.table.is_empty() {
            self.table.id()
        } else {
            let i = self.rng.gen_range(0..self.table.len());
            self.table.nth(i).map_or(self.table.id(), |e| e.id)
        };
        self.start_query(now, QuerySpec::find_node(target.0), true);
    }

    /// Stops all traffic: in-flight requests and queries are dropped and incoming datagrams
    /// ignored until [`Node::resume`].
    pub fn suspend(&mut self) {
        self.suspended = true;
        self.inflight.clear();
        self.waiting.clear();
        self.timers.clear();
        self.queries.clear();
        self.congestion = CongestionWindow::new(self.config.max_window);
        self.net_check = None;
        self.checks_inflight = 0;
        self.repinging = 0;
    }

    /// Resumes after [`Node::suspend`], as after a wakeup: refreshes the table.
    pub fn resume(&mut self, now: Instant) {
        if !self.suspended {
            return;
        }
        self.suspended = false;
        self.last_tick_at = now;
        self.next_tick = now + TICK_INTERVAL;
        self.next_drain = now + DRAIN_INTERVAL;
        self.on_wakeup();
        self.refresh(now);
    }

    // ----- requests -----

    fn alloc_tid(&mut self) -> u16 {
        loop {
            let t = self.next_tid;
            self.next_tid = self.next_tid.wrapping_add(1);
            if !self.inflight.contains_key(&t) {
                return t;
            }
        }
    }

    fn send_request(
        &mut self,
        now: Instant,
        to: SocketAddrV4,
        to_id: Option<NodeId>,
        spec: RequestSpec,
        owner: Owner,
        force: bool,
    ) {
        if self.suspended {
            self.fail_owner(now, owner, to, RequestError::Cancelled);
            return;
        }
        let tid = self.alloc_tid();
        let socket = spec.socket.unwrap_or_else(|| self.request_socket());
        let req = Request {
            tid,
            to,
            id: self.our_id_for(socket),
            token: spec.token,
            internal: spec.internal,
            command: spec.command,
            target: spec.target,
            value: spec.value,
        };
        let r = Inflight {
            owner,
            to,
            to_id,
            bytes: req.to_bytes(),
            socket,
            sent: 0,
            retries: spec.retries.unwrap_or(super::DEFAULT_RETRIES),
            timeout: spec.timeout.unwrap_or(self.config.request_timeout),
            gen: 0,
            queued: false,
            slow: false,
        };
        self.inflight.insert(tid, r);
        self.stats.requests += 1;
        if !force && self.congestion.is_full() {
            self.queue(tid);
        } else {
            self.transmit_request(now, tid);
        }
    }

    fn queue(&mut self, tid: u16) {
        if let Some(r) = self.inflight.get_mut(&tid) {
            r.queued = true;
            self.waiting.push_back(tid);
        }
    }

    fn transmit_request(&mut self, now: Instant, tid: u16) {
        let Some(r) = self.inflight.get_mut(&tid) else {
            return;
        };
        r.queued = false;
        r.sent += 1;
        r.gen = r.gen.wrapping_add(1);
        let t = Transmit {
            socket: r.socket,
            to: r.to,
            bytes: r.bytes.clone(),
            ttl: None,
        };
        let deadline = now + r.timeout;
        let gen = r.gen;
        self.congestion.send();
        self.timers.push(Reverse((deadline, tid, gen)));
        self.push_transmit(t);
    }

    fn pump_waiting(&mut self, now: Instant) {
        while !self.congestion.is_full() {
            let Some(tid) = self.waiting.pop_front() else {
                break;
            };
            if self.inflight.get(&tid).is_some_and(|r| r.queued) {
                self.transmit_request(now, tid);
            }
        }
    }

    fn on_request_timer(&mut self, now: Instant, tid: u16, gen: u32) {
        let Some(r) = self.inflight.get_mut(&tid) else {
            return;
        };
        if r.gen != gen || r.queued {
            return;
        }
        if !r.slow {
            r.slow = true;
            if let Owner::Query(qid) = r.owner {
                if let Some(q) = self.queries.get_mut(&qid) {
                    q.slow += 1;
                }
                // A slow request frees a concurrency slot.
                self.query_read_more(now, qid);
            }
        }
        let Some(r) = self.inflight.get_mut(&tid) else {
            return;
        };
        if r.sent > r.retries {
            let r = self.inflight.remove(&tid).map(|r| (r.owner, r.to, r.to_id));
            self.congestion.recv();
            self.stats.timeouts += 1;
            if let Some((owner, to, to_id)) = r {
                if let Some(id) = to_id {
                    self.remove_node(&id);
                }
                self.fail_owner(now, owner, to, RequestError::Timeout);
            }
        } else {
            self.stats.retransmits += 1;
            if self.congestion.is_full() {
                self.queue(tid);
            } else {
                self.transmit_request(now, tid);
            }
        }
    }

    fn fail_owner(&mut self, now: Instant, owner: Owner, to: SocketAddrV4, err: RequestError) {
        match owner {
            Owner::User(id) => self.push_event(Event::Response {
                id,
                result: Err(err),
            }),
            Owner::Query(q) => self.query_on_error(now, q, to, err),
            Owner::Check(id) => {
                self.checks_inflight = self.checks_inflight.saturating_sub(1);
                self.remove_node(&id);
            }
            Owner::Reping { oldest, new } => {
                self.repinging = self.repinging.saturating_sub(1);
                self.remove_node(&oldest);
                self.insert_entry(now, *new);
            }
            Owner::QuickNat => {}
            Owner::NetCheck => self.net_check_result(now, None),
            Owner::Fire => {}
        }
    }

    // ----- input -----

    /// Handles a datagram that arrived on `socket` from `from`. Datagrams that are not
    /// dht-rpc messages, are malformed, or match nothing are dropped and counted.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        socket: SocketKind,
        from: SocketAddrV4,
        bytes: &[u8],
    ) {
        if self.suspended || bytes.len() < 2 || from.port() == 0 {
            return;
        }
        self.catch_up(now);
        let msg = match Message::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.stats.dropped += 1;
                tracing::trace!(%from, error = %e, "dropping malformed datagram");
                return;
            }
        };
        let external = socket != self.request_socket();
        match msg {
            Message::Request(req) => self.on_request(now, socket, from, external, req),
            Message::Response(res) => self.on_response(now, socket, from, external, res),
        }
    }

    fn validate_id(from: &SocketAddrV4, id: Option<NodeId>) -> Option<NodeId> {
        id.filter(|id| *id == NodeId::from_addr(from))
    }

    fn on_request(
        &mut self,
        now: Instant,
        socket: SocketKind,
        from: SocketAddrV4,
        external: bool,
        req: Request,
    ) {
        self.stats.incoming += 1;
        if !self.limiter.allow(*from.ip(), now) {
            self.stats.rate_limited += 1;
            return;
        }
        let from_id = Self::validate_id(&from, req.id);
        if let Some(token) = &req.token {
            if !self.tokens.verify(from.ip(), token) {
                let closer = req
                    .target
                    .map(|t| self.closest_addrs(&t, self.config.k))
                    .unwrap_or_default();
                let res = Response {
                    tid: req.tid,
                    to: from,
                    id: self.our_id_for(socket),
                    token: Some(self.tokens.issue(from.ip())),
                    closer_nodes: closer,
                    error: errors::INVALID_TOKEN,
                    value: None,
                };
                self.push_transmit(Transmit {
                    socket,
                    to: from,
                    bytes: res.to_bytes(),
                    ttl: None,
                });
                return;
            }
        }
        if from_id.is_some() {
            self.add_node_from_network(now, !external, from, from_id, req.to);
        }
        let incoming = IncomingRequest {
            tid: req.tid,
            from,
            from_id,
            to: req.to,
            socket,
            token: req.token,
            command: req.command,
            target: req.target,
            value: req.value,
        };
        if req.internal {
            self.on_internal(now, incoming);
        } else {
            self.push_event(Event::Request(incoming));
        }
    }

    fn on_internal(&mut self, now: Instant, req: IncomingRequest) {
        match req.command {
            internal::PING => self.reply(&req, ReplyOptions::ack()),
            internal::PING_NAT => {
                if !self.config.answer_ping_nat {
                    return;
                }
                let Some(v) = req.value.as_ref().filter(|v| v.len() >= 2) else {
                    return;
                };
                let port = u16::from_le_bytes([v[0], v[1]]);
                if port == 0 {
                    return;
                }
                let to = SocketAddrV4::new(*req.from.ip(), port);
                self.reply(
                    &req,
                    ReplyOptions {
                        to: Some(to),
                        ..ReplyOptions::ack()
                    },
                );
            }
            internal::FIND_NODE => {
                if req.target.is_none() {
                    return;
                }
                self.reply(
                    &req,
                    ReplyOptions {
                        closer_nodes: true,
                        ..ReplyOptions::ack()
                    },
                );
            }
            internal::DOWN_HINT => {
                let Some(v) = req.value.as_ref().filter(|v| v.len() >= 6) else {
                    return;
                };
                if self.checks_inflight < MAX_DOWN_HINT_CHECKS {
                    let mut d = corenet_codec::Decoder::new(v);
                    if let Ok(addr) = d.ipv4_address() {
                        let id = NodeId::from_addr(&addr);
                        let tick = self.tick;
                        let check = match self.table.get_mut(&id) {
                            Some(e) if e.pinged < tick || e.down_hints == 0 => {
                                e.down_hints = e.down_hints.saturating_add(1);
                                true
                            }
                            _ => false,
                        };
                        if check {
                            self.check(now, id);
                        }
                    }
                }
                self.reply(&req, ReplyOptions::ack());
            }
            internal::DELAYED_PING => {
                let Some(v) = req.value.as_ref().filter(|v| v.len() >= 4) else {
                    return;
                };
                let ms = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
                let delay = Duration::from_millis(u64::from(ms));
                if delay > MAX_PING_DELAY || self.delayed_replies.len() >= MAX_DELAYED_PINGS {
                    return;
                }
                let res = Response {
                    tid: req.tid,
                    to: req.from,
                    id: self.our_id_for(req.socket),
                    ..Default::default()
                };
                let key = self.next_id();
                self.delayed_replies.insert(
                    key,
                    Transmit {
                        socket: req.socket,
                        to: req.from,
                        bytes: res.to_bytes(),
                        ttl: None,
                    },
                );
                self.delayed.push(Reverse((now + delay, key)));
            }
            _ => self.reply(&req, ReplyOptions::error(errors::UNKNOWN_COMMAND)),
        }
    }

    fn on_response(
        &mut self,
        now: Instant,
        socket: SocketKind,
        from: SocketAddrV4,
        external: bool,
        res: Response,
    ) {
        let Some(r) = self.inflight.remove(&res.tid) else {
            self.stats.dropped += 1;
            return;
        };
        self.stats.responses += 1;
        self.congestion.recv();
        if r.queued {
            self.waiting.retain(|t| *t != res.tid);
        }
        let from_id = Self::validate_id(&from, res.id);
        self.add_node_from_network(now, !external, from, from_id, res.to);
        let reply = Reply {
            from,
            from_id,
            to: res.to,
            token: res.token,
            closer_nodes: res.closer_nodes,
            error: res.error,
            value: res.value,
            socket,
        };
        match r.owner {
            Owner::User(id) => self.push_event(Event::Response {
                id,
                result: Ok(reply),
            }),
            Owner::Query(q) => self.query_on_reply(now, q, r.slow, reply),
            Owner::Check(id) => {
                self.checks_inflight = self.checks_inflight.saturating_sub(1);
                if reply.from_id != Some(id) {
                    self.remove_node(&id);
                }
            }
            Owner::Reping { oldest, new } => {
                self.repinging = self.repinging.saturating_sub(1);
                if reply.from_id != Some(oldest) {
                    self.remove_node(&oldest);
                    self.insert_entry(now, *new);
                }
            }
            Owner::QuickNat => {
                if let Boot::Querying { test_nat, .. } = &mut self.boot {
                    *test_nat = true;
                }
            }
            Owner::NetCheck => self.net_check_result(now, Some(reply)),
            Owner::Fire => {}
        }
        self.pump_waiting(now);
    }

    /// Applies the 750 ms drains (congestion window, token rotation) due by `now`. Idle
    /// nodes do not wake up for them: they catch up here, on their next input.
    fn catch_up(&mut self, now: Instant) {
        if self.next_drain > now {
            return;
        }
        let behind = now.saturating_duration_since(self.next_drain).as_millis()
            / DRAIN_INTERVAL.as_millis()
            + 1;
        // Four drains clear the window; two rotations (20 drains) retire every token.
        for i in 0..behind.min(20) {
            if i < 4 {
                self.congestion.drain();
            }
            self.tokens.on_drain();
        }
        self.next_drain += DRAIN_INTERVAL * u32::try_from(behind).unwrap_or(u32::MAX);
        self.pump_waiting(now);
    }

    /// Handles timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.suspended {
            return;
        }
        while let Some(Reverse((d, key))) = self.delayed.peek().copied() {
            if d > now {
                break;
            }
            self.delayed.pop();
            if let Some(t) = self.delayed_replies.remove(&key) {
                self.push_transmit(t);
            }
        }
        while let Some(Reverse((d, tid, gen))) = self.timers.peek().copied() {
            if d > now {
                break;
            }
            self.timers.pop();
            self.on_request_timer(now, tid, gen);
        }
        self.catch_up(now);
        if self.next_tick <= now {
            self.on_tick(now);
        }
    }

    // ----- table maintenance -----

    fn new_entry(&self, id: NodeId, addr: SocketAddrV4, sampled: bool) -> Entry {
        Entry {
            id,
            addr,
            added: self.tick,
            pinged: self.tick,
            seen: self.tick,
            down_hints: 0,
            sampled: if sampled { self.tick } else { 0 },
        }
    }

    fn add_nat_sample(&mut self, to: SocketAddrV4) {
        self.nat.add(to);
        let now_addr = self.nat.address();
        if now_addr != self.last_nat {
            self.last_nat = now_addr;
            self.push_event(Event::NatUpdated(now_addr));
        }
    }

    fn add_node_from_network(
        &mut self,
        now: Instant,
        sample: bool,
        from: SocketAddrV4,
        from_id: Option<NodeId>,
        to: SocketAddrV4,
    ) {
        let Some(id) = from_id else {
            // Ephemeral responders (such as bootstrap nodes) still tell us our address, but
            // only a few of them count.
            let limit = self.config.bootstrap.len().max(1);
            if sample
                && self.bootstrap_sampled.len() < limit
                && !self.bootstrap_sampled.contains(&from)
            {
                self.bootstrap_sampled.push(from);
                self.add_nat_sample(to);
            }
            return;
        };
        let tick = self.tick;
        if let Some(e) = self.table.get_mut(&id) {
            e.pinged = tick;
            e.seen = tick;
            e.down_hints = 0;
            e.addr = from;
            let resample = sample && (e.sampled == 0 || tick.saturating_sub(e.sampled) >= OLD_NODE);
            if resample {
                e.sampled = tick;
                self.add_nat_sample(to);
            }
            return;
        }
        let entry = self.new_entry(id, from, sample);
        if self.insert_entry(now, entry) && sample {
            self.add_nat_sample(to);
        }
    }

    /// Inserts a node, handling a full row; true if it went in now.
    fn insert_entry(&mut self, now: Instant, entry: Entry) -> bool {
        let addr = entry.addr;
        match self.table.add(entry.clone()) {
            AddResult::Added => {
                self.push_event(Event::NodeAdded(addr));
                true
            }
            AddResult::Updated | AddResult::Own => false,
            AddResult::Full { oldest } => {
                self.on_full_row(now, oldest, entry);
                false
            }
        }
    }

    fn on_full_row(&mut self, now: Instant, oldest: NodeId, new: Entry) {
        if !self.bootstrapped || self.repinging >= 3 {
            return;
        }
        let tick = self.tick;
        let Some(o) = self.table.get_mut(&oldest) else {
            return;
        };
        if o.pinged == tick
            || (tick.saturating_sub(o.pinged) < RECENT_NODE
                && tick.saturating_sub(o.added) > OLD_NODE)
        {
            return;
        }
        o.pinged = tick;
        let addr = o.addr;
        self.repinging += 1;
        self.send_request(
            now,
            addr,
            None,
            RequestSpec {
                internal: true,
                command: internal::PING,
                ..Default::default()
            },
            Owner::Reping {
                oldest,
                new: Box::new(new),
            },
            false,
        );
    }

    fn remove_node(&mut self, id: &NodeId) {
        if let Some(e) = self.table.remove(id) {
            self.push_event(Event::NodeRemoved(e.addr));
        }
    }

    fn check(&mut self, now: Instant, id: NodeId) {
        let tick = self.tick;
        let Some(e) = self.table.get_mut(&id) else {
            return;
        };
        e.pinged = tick;
        let addr = e.addr;
        self.checks_inflight += 1;
        self.send_request(
            now,
            addr,
            None,
            RequestSpec {
                internal: true,
                command: internal::PING,
                ..Default::default()
            },
            Owner::Check(id),
            false,
        );
    }

    fn ping_some(&mut self, now: Instant) {
        if self.table.is_empty() {
            self.refresh(now);
            return;
        }
        let tick = self.tick;
        let mut candidates: Vec<(u32, u32, NodeId)> = self
            .table
            .iter()
            .filter(|e| e.pinged != tick)
            .map(|e| (e.pinged, e.added, e.id))
            .collect();
        candidates.sort();
        let mut cnt = if self.checks_inflight > 2 { 3 } else { 5 };
        if candidates
            .first()
            .is_some_and(|c| tick.saturating_sub(c.0) < RECENT_NODE)
        {
            cnt = 2;
        }
        for (_, _, id) in candidates.into_iter().take(cnt) {
            self.check(now, id);
        }
    }

    fn on_tick(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_tick_at) > SLEEPING_INTERVAL {
            self.on_wakeup();
        } else {
            self.tick = self.tick.wrapping_add(1);
        }
        self.last_tick_at = now;
        self.next_tick = now + TICK_INTERVAL;
        self.limiter.prune(now);
        if !self.bootstrapped {
            return;
        }
        if self.adaptive && !self.persistent && self.stable_ticks > 0 {
            self.stable_ticks -= 1;
            if self.stable_ticks == 0 {
                if self.last_host.is_some() && self.last_host == self.nat.host() {
                    self.stable_ticks = MORE_STABLE_TICKS;
                } else {
                    self.update_network_state(now, false);
                }
            }
        }
        if self.tick & 7 == 0 {
            self.ping_some(now);
        }
        self.refresh_ticks = self.refresh_ticks.saturating_sub(1);
        if (self.tick & 63 == 0 && self.table.len() < self.config.k) || self.refresh_ticks == 0 {
            self.refresh(now);
        }
        self.down_hints_sent = 0;
    }

    fn on_wakeup(&mut self) {
        self.tick = self.tick.wrapping_add(MORE_STABLE_TICKS);
        self.tick = self.tick.wrapping_add(8 - (self.tick & 7)).wrapping_sub(2);
        self.stable_ticks = MORE_STABLE_TICKS;
        self.refresh_ticks = 1;
        self.last_host = None;
        if self.adaptive && self.persistent {
            self.persistent = false;
            self.push_event(Event::Ephemeral);
        }
    }

    // ----- bootstrap and the persistent switch -----

    fn start_boot_pass(&mut self, now: Instant, pass: u8) {
        let target = self.table.id().0;
        let query = self.start_query(now, QuerySpec::find_node(target), true);
        self.boot = Boot::Querying {
            query,
            pass,
            test_nat: false,
            nat_pinged: false,
        };
        // An empty network (no bootstrap nodes, an empty table) finishes the walk inside
        // `start_query`, before `boot` names it: finish the pass here, as JS does.
        if !self.queries.contains_key(&query) {
            self.on_boot_query_done(now);
        }
    }

    fn force_persistent(&self) -> bool {
        self.config.ephemeral == Some(false)
    }

    fn on_boot_query_reply(&mut self, now: Instant, from: SocketAddrV4) {
        self.boot_replies += 1;
        let first = self.firewalled && self.config.quick_firewall && !self.force_persistent();
        let Boot::Querying { nat_pinged, .. } = &mut self.boot else {
            return;
        };
        if !first || *nat_pinged || self.config.server_port == 0 {
            return;
        }
        *nat_pinged = true;
        let port = self.config.server_port;
        self.send_request(
            now,
            from,
            None,
            RequestSpec {
                internal: true,
                command: internal::PING_NAT,
                value: Some(Bytes::copy_from_slice(&port.to_le_bytes())),
                retries: Some(0),
                socket: Some(SocketKind::Client),
                ..Default::default()
            },
            Owner::QuickNat,
            false,
        );
    }

    fn on_boot_query_done(&mut self, now: Instant) {
        let Boot::Querying { pass, test_nat, .. } = self.boot.clone() else {
            return;
        };
        if self.persistent || !(test_nat || self.force_persistent()) {
            self.finish_boot();
            return;
        }
        self.boot = Boot::Checking { pass };
        let only_firewall = !self.force_persistent();
        match self.update_network_state(now, only_firewall) {
            Some(true) => self.after_boot_check(now, true),
            Some(false) => self.after_boot_check(now, false),
            None => {} // a reachability check is running
        }
    }

    fn after_boot_check(&mut self, now: Instant, ok: bool) {
        let Boot::Checking { pass } = self.boot else {
            return;
        };
        if ok && pass < 2 {
            self.start_boot_pass(now, pass + 1);
        } else {
            self.finish_boot();
        }
    }

    fn finish_boot(&mut self) {
        self.boot = Boot::Done;
        if !self.bootstrapped {
            self.bootstrapped = true;
            self.push_event(Event::Bootstrapped);
        }
    }

    /// Tries to clear the firewalled flag (and, unless `only_firewall`, become persistent).
    /// `Some(result)` when decided now, `None` when a reachability check was started.
    fn update_network_state(&mut self, now: Instant, only_firewall: bool) -> Option<bool> {
        if self.persistent || (only_firewall && !self.firewalled) || self.net_check.is_some() {
            return Some(false);
        }
        let addr = self.nat.address();
        if !only_firewall {
            self.stable_ticks = MORE_STABLE_TICKS;
            self.last_host = addr.map(|a| *a.ip());
        }
        let addr = match addr {
            Some(a) if a.port() != 0 => a,
            _ => return Some(false),
        };
        if !self.firewalled {
            return Some(self.become_reachable(now, addr, only_firewall));
        }
        // Ask up to 5 nodes (newest first, then bootstrap nodes) to PING_NAT our server port.
        let mut nodes: Vec<(u32, SocketAddrV4)> =
            self.table.iter().map(|e| (e.added, e.addr)).collect();
        nodes.sort_by_key(|n| std::cmp::Reverse(n.0));
        let mut targets: Vec<SocketAddrV4> = nodes.into_iter().map(|n| n.1).take(5).collect();
        if targets.len() < 5 {
            for b in self.config.bootstrap.clone() {
                if !targets.contains(&b) {
                    targets.push(b);
                }
            }
        }
        if targets.is_empty() || self.config.server_port == 0 {
            return Some(false);
        }
        self.net_check = Some(NetCheck {
            outstanding: targets.len(),
            count: 0,
            sampler: NatSampler::new(),
            asked: targets.len(),
            only_firewall,
            started_with: Some(addr),
        });
        let port = self.config.server_port;
        for t in targets {
            self.send_request(
                now,
                t,
                None,
                RequestSpec {
                    internal: true,
                    command: internal::PING_NAT,
                    value: Some(Bytes::copy_from_slice(&port.to_le_bytes())),
                    socket: Some(SocketKind::Client),
                    ..Default::default()
                },
                Owner::NetCheck,
                false,
            );
        }
        None
    }

    fn net_check_result(&mut self, now: Instant, reply: Option<Reply>) {
        let Some(c) = &mut self.net_check else {
            return;
        };
        if let Some(r) = reply {
            if r.socket == SocketKind::Server {
                c.count += 1;
                c.sampler.add(r.to);
            }
        }
        c.outstanding -= 1;
        if c.outstanding > 0 {
            return;
        }
        let Some(c) = self.net_check.take() else {
            return;
        };
        let needed = if c.asked >= 5 { 3 } else { 1 };
        let nat_now = self.nat.address();
        let sampled = c.sampler.address();
        let reachable = c.count >= needed
            && sampled.is_some()
            && nat_now == c.started_with
            && sampled.map(|s| *s.ip()) == nat_now.map(|n| *n.ip())
            && sampled.is_some_and(|s| s.port() != 0 && s.port() == self.config.server_port);
        let ok = match (reachable, sampled) {
            (true, Some(addr)) => {
                // From now on our address is the one the server socket was seen at (JS
                // replaces its NAT sampler with the check's).
                self.nat = c.sampler;
                let voted = self.nat.address();
                if voted != self.last_nat {
                    self.last_nat = voted;
                    self.push_event(Event::NatUpdated(voted));
                }
                self.become_reachable(now, addr, c.only_firewall)
            }
            _ => false,
        };
        if matches!(self.boot, Boot::Checking { .. }) {
            self.after_boot_check(now, ok);
        }
    }

    fn become_reachable(&mut self, now: Instant, addr: SocketAddrV4, only_firewall: bool) -> bool {
        self.firewalled = false;
        let id = NodeId::from_addr(&addr);
        if !only_firewall {
            self.persistent = true;
        }
        if self.table.id() != id {
            self.table = self.table.rebuild(id);
            if self.bootstrapped {
                self.refresh(now);
            }
        }
        if self.persistent {
            self.push_event(Event::Persistent { id });
        }
        true
    }

    // ----- queries -----

    fn start_query(&mut self, now: Instant, spec: QuerySpec, background: bool) -> QueryId {
        let id = QueryId(self.next_id());
        self.refresh_ticks = REFRESH_TICKS;
        let mut spec = spec;
        if background {
            spec.concurrency = spec.concurrency.min(3);
        }
        let mut q = Query::new(spec, self.config.k, background);
        if q.spec.nodes.is_empty() {
            self.seed_from_table(&mut q);
        } else {
            let nodes = q.spec.nodes.clone();
            for addr in nodes.into_iter().rev() {
                q.add_pending(addr, None, None, 1);
            }
        }
        self.queries.insert(id, q);
        self.query_read_more(now, id);
        id
    }

    fn seed_from_table(&self, q: &mut Query) {
        q.from_table = true;
        let want = self.config.k.saturating_sub(q.pending.len());
        let closest: Vec<(SocketAddrV4, NodeId)> = self
            .table
            .closest(&q.target, want)
            .into_iter()
            .map(|e| (e.addr, e.id))
            .collect();
        for (addr, id) in closest.into_iter().rev() {
            q.add_pending(addr, Some(id), None, 1);
        }
        if q.pending.len() < self.config.k {
            for b in self.config.bootstrap.iter().rev() {
                q.add_pending(*b, None, None, 1);
            }
        }
    }

    fn query_read_more(&mut self, now: Instant, qid: QueryId) {
        loop {
            let Some(q) = self.queries.get_mut(&qid) else {
                return;
            };
            if q.inflight >= q.limit() {
                break;
            }
            let Some((addr, id)) = q.pending.pop() else {
                break;
            };
            if let Some(id) = &id {
                if !q.is_closer(id) {
                    if let Some(s) = q.seen.get_mut(&addr) {
                        s.visit = Visit::Done;
                    }
                    continue;
                }
            }
            if let Some(s) = q.seen.get_mut(&addr) {
                s.visit = Visit::InFlight;
            }
            q.inflight += 1;
            q.requests += 1;
            let spec = RequestSpec {
                internal: q.spec.internal,
                command: q.spec.command,
                target: Some(q.spec.target),
                value: q.spec.value.clone(),
                retries: Some(q.spec.retries),
                ..Default::default()
            };
            let to_id = Some(id.unwrap_or_else(|| NodeId::from_addr(&addr)));
            self.send_request(now, addr, to_id, spec, Owner::Query(qid), false);
        }
        self.finish_query_if_done(now, qid);
    }

    fn finish_query_if_done(&mut self, now: Instant, qid: QueryId) {
        let Some(q) = self.queries.get_mut(&qid) else {
            return;
        };
        if !q.is_done() {
            return;
        }
        if !q.from_table && q.successes < self.config.k / 4 {
            let mut q = match self.queries.remove(&qid) {
                Some(q) => q,
                None => return,
            };
            self.seed_from_table(&mut q);
            let more = !q.pending.is_empty();
            self.queries.insert(qid, q);
            if more {
                self.query_read_more(now, qid);
                return;
            }
        }
        let Some(q) = self.queries.remove(&qid) else {
            return;
        };
        let is_boot = matches!(self.boot, Boot::Querying { query, .. } if query == qid);
        if !q.background {
            self.push_event(Event::QueryDone {
                query: qid,
                closest: q.closest,
                successes: q.successes,
                errors: q.errors,
                requests: q.requests,
            });
        }
        if is_boot {
            self.on_boot_query_done(now);
        }
    }

    fn query_on_reply(&mut self, now: Instant, qid: QueryId, was_slow: bool, reply: Reply) {
        let own = self.table.id();
        let is_boot = matches!(self.boot, Boot::Querying { query, .. } if query == qid);
        let Some(q) = self.queries.get_mut(&qid) else {
            return;
        };
        q.inflight = q.inflight.saturating_sub(1);
        if was_slow {
            q.slow = q.slow.saturating_sub(1);
        }
        let depth = match q.seen.get_mut(&reply.from) {
            Some(s) => {
                s.visit = Visit::Done;
                s.depth
            }
            None => 1,
        };
        if reply.error == 0 {
            q.successes += 1;
        } else {
            q.errors += 1;
        }
        for addr in &reply.closer_nodes {
            let id = NodeId::from_addr(addr);
            if id == own || addr.port() == 0 {
                continue;
            }
            q.add_pending(*addr, Some(id), Some(reply.from), depth.saturating_add(1));
        }
        let background = q.background;
        if reply.error == 0 {
            if reply.from_id.is_some() {
                q.add_closest(reply.clone());
            }
            if is_boot {
                self.on_boot_query_reply(now, reply.from);
            }
            if !background {
                self.push_event(Event::QueryReply {
                    query: qid,
                    reply,
                    hops: depth,
                });
            }
        }
        self.query_read_more(now, qid);
    }

    fn query_on_error(&mut self, now: Instant, qid: QueryId, to: SocketAddrV4, _err: RequestError) {
        let Some(q) = self.queries.get_mut(&qid) else {
            return;
        };
        q.inflight = q.inflight.saturating_sub(1);
        // Timed-out requests were slow.
        q.slow = q.slow.saturating_sub(1);
        let referrers = match q.seen.get_mut(&to) {
            Some(s) => {
                s.visit = Visit::Down;
                std::mem::take(&mut s.referrers)
            }
            None => Vec::new(),
        };
        for r in referrers {
            if self.down_hints_sent >= DOWN_HINTS_PER_TICK {
                break;
            }
            self.down_hints_sent += 1;
            let mut v = Vec::with_capacity(6);
            corenet_codec::encode::ipv4_address(&mut v, &to);
            self.send_request(
                now,
                r,
                None,
                RequestSpec {
                    internal: true,
                    command: internal::DOWN_HINT,
                    value: Some(Bytes::from(v)),
                    retries: Some(0),
                    ..Default::default()
                },
                Owner::Fire,
                false,
            );
        }
        self.query_read_more(now, qid);
    }
}

#[cfg(test)]
mod tests {
    //! The node's DoS budgets (docs/dos-budgets.md §1), each driven to its bound.

    use super::*;

    const OWN: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 49737);

    /// A persistent, reachable node with an empty network: bootstrapped at once. Its request
    /// budgets are off ([`RateLimits::unlimited`]), so that the other bounds can be reached
    /// by floods; [`limited_node`] keeps the defaults.
    fn node(now: Instant) -> Node {
        node_with(now, super::super::RateLimits::unlimited())
    }

    fn limited_node(now: Instant) -> Node {
        node_with(now, super::super::RateLimits::default())
    }

    fn node_with(now: Instant, limits: super::super::RateLimits) -> Node {
        let mut n = Node::new(
            Config::default()
                .with_public_address(OWN)
                .with_firewalled(false)
                .with_ephemeral(Some(false))
                .with_seed([7; 32])
                .with_rate_limits(limits),
            now,
        );
        assert!(n.is_bootstrapped() && n.is_persistent());
        while n.poll_event().is_some() {}
        n
    }

    /// Source address number `i` (distinct hosts, so distinct tokens where it matters).
    fn peer(i: u32) -> SocketAddrV4 {
        let [_, b, c, d] = (i + 1).to_be_bytes();
        SocketAddrV4::new(Ipv4Addr::new(10, b | 0x80, c, d), 40_000)
    }

    fn request(tid: u16, internal: bool, command: u64, value: Option<Vec<u8>>) -> Request {
        Request {
            tid,
            to: OWN,
            internal,
            command,
            target: Some([3; 32]),
            value: value.map(Bytes::from),
            ..Default::default()
        }
    }

    fn send(n: &mut Node, now: Instant, from: SocketAddrV4, req: &Request) {
        n.handle_datagram(now, SocketKind::Server, from, &req.to_bytes());
    }

    fn drain(n: &mut Node) -> Vec<(SocketAddrV4, Message)> {
        let mut out = Vec::new();
        while let Some(t) = n.poll_transmit() {
            out.push((
                t.to,
                Message::decode(&t.bytes).expect("we send valid datagrams"),
            ));
        }
        out
    }

    fn delayed_ping(ms: u32) -> Option<Vec<u8>> {
        Some(ms.to_le_bytes().to_vec())
    }

    #[test]
    fn a_source_over_its_budget_is_not_answered_and_others_are() {
        use super::super::{DEFAULT_PER_SOURCE_BURST, DEFAULT_PER_SOURCE_RATE};
        let now = Instant::now();
        let mut n = limited_node(now);
        let flooder = peer(1);
        let burst = DEFAULT_PER_SOURCE_BURST as usize;
        for i in 0..burst + 500 {
            send(
                &mut n,
                now,
                flooder,
                &request(i as u16, true, internal::PING, None),
            );
            while n.poll_transmit().is_some() {}
        }
        assert_eq!(n.stats().rate_limited, 500);
        // Another host is answered at once; the flooder again once its bucket refilled.
        send(
            &mut n,
            now,
            peer(2),
            &request(1, true, internal::PING, None),
        );
        assert_eq!(drain(&mut n).len(), 1);
        send(
            &mut n,
            now,
            flooder,
            &request(2, true, internal::PING, None),
        );
        assert!(drain(&mut n).is_empty());
        let later = now + Duration::from_millis(10);
        let refilled = DEFAULT_PER_SOURCE_RATE as usize / 100;
        let answered = (0..refilled + 10)
            .filter(|&i| {
                send(
                    &mut n,
                    later,
                    flooder,
                    &request(i as u16, true, internal::PING, None),
                );
                !drain(&mut n).is_empty()
            })
            .count();
        assert_eq!(answered, refilled, "10 ms refill {refilled} tokens");
    }

    #[test]
    fn the_node_answers_at_most_its_global_budget_from_many_sources() {
        use super::super::DEFAULT_GLOBAL_BURST;
        let now = Instant::now();
        let mut n = limited_node(now);
        let global = DEFAULT_GLOBAL_BURST as usize;
        let mut answered = 0;
        // 100 hosts, each within its own burst, 50,000 requests in all.
        for i in 0..50_000usize {
            let from = peer((i % 100) as u32);
            send(
                &mut n,
                now,
                from,
                &request(i as u16, true, internal::PING, None),
            );
            while n.poll_transmit().is_some() {
                answered += 1;
            }
        }
        assert_eq!(answered, global);
        assert_eq!(n.stats().rate_limited, 50_000 - global as u64);
    }

    #[test]
    fn transmits_beyond_max_queue_are_dropped_and_counted() {
        let now = Instant::now();
        let mut n = node(now);
        for i in 0..=MAX_QUEUE {
            let req = request(i as u16, true, internal::PING, None);
            send(&mut n, now, peer(i as u32), &req);
        }
        assert_eq!(n.stats().incoming, MAX_QUEUE as u64 + 1);
        assert_eq!(n.stats().dropped, 1);
        let mut sent = 0;
        while n.poll_transmit().is_some() {
            sent += 1;
        }
        assert_eq!(sent, MAX_QUEUE);
        // Drained, the queue takes replies again.
        send(
            &mut n,
            now,
            peer(0),
            &request(1, true, internal::PING, None),
        );
        assert!(n.poll_transmit().is_some());
        assert_eq!(n.stats().dropped, 1);
    }

    #[test]
    fn events_beyond_max_queue_are_dropped() {
        let now = Instant::now();
        let mut n = node(now);
        for i in 0..MAX_QUEUE + 10 {
            send(
                &mut n,
                now,
                peer(i as u32),
                &request(i as u16, false, 3, None),
            );
        }
        let mut events = 0;
        while let Some(e) = n.poll_event() {
            assert!(matches!(e, Event::Request(_)), "{e:?}");
            events += 1;
        }
        assert_eq!(events, MAX_QUEUE);
    }

    #[test]
    fn a_forged_token_gets_invalid_token_and_a_fresh_one_and_is_not_processed() {
        let now = Instant::now();
        let mut n = node(now);
        let from = peer(1);
        let forged = Request {
            token: Some([0x5a; 32]),
            ..request(1, false, 4, Some(b"announce".to_vec()))
        };
        send(&mut n, now, from, &forged);
        assert_eq!(
            n.poll_event(),
            None,
            "a request with a forged token got through"
        );
        let out = drain(&mut n);
        assert_eq!(out.len(), 1);
        let fresh = match &out[0] {
            (to, Message::Response(r)) if *to == from && r.tid == 1 => {
                assert_eq!(r.error, errors::INVALID_TOKEN);
                assert_eq!(r.value, None);
                r.token
                    .expect("an INVALID_TOKEN reply carries a fresh token")
            }
            other => panic!("{other:?}"),
        };
        // The fresh token is good for this host, and not for another.
        let good = Request {
            token: Some(fresh),
            ..request(2, false, 4, Some(b"announce".to_vec()))
        };
        send(&mut n, now, from, &good);
        assert!(matches!(n.poll_event(), Some(Event::Request(r)) if r.token == Some(fresh)));
        assert!(drain(&mut n).is_empty());
        send(&mut n, now, peer(2), &good);
        assert_eq!(n.poll_event(), None);
        assert!(
            matches!(&drain(&mut n)[..], [(_, Message::Response(r))] if r.error == errors::INVALID_TOKEN)
        );
        // Still good just before the second rotation (19 drains), refused at it (20 drains,
        // 15 s): a token lives at most two rotations.
        let late = now + DRAIN_INTERVAL * 19;
        n.handle_timeout(late);
        send(&mut n, late, from, &good);
        assert!(matches!(n.poll_event(), Some(Event::Request(_))));
        let later = now + DRAIN_INTERVAL * 20;
        n.handle_timeout(later);
        send(&mut n, later, from, &good);
        assert_eq!(n.poll_event(), None);
        assert!(
            matches!(&drain(&mut n)[..], [(_, Message::Response(r))] if r.error == errors::INVALID_TOKEN && r.token.is_some() && r.token != Some(fresh))
        );
    }

    #[test]
    fn a_1025th_delayed_ping_is_not_answered() {
        let now = Instant::now();
        let mut n = node(now);
        let too_long = u32::try_from(MAX_PING_DELAY.as_millis()).unwrap() + 1;
        send(
            &mut n,
            now,
            peer(0),
            &request(0, true, internal::DELAYED_PING, delayed_ping(too_long)),
        );
        for i in 1..=MAX_DELAYED_PINGS + 1 {
            let req = request(i as u16, true, internal::DELAYED_PING, delayed_ping(5_000));
            send(&mut n, now, peer(i as u32), &req);
        }
        assert!(
            drain(&mut n).is_empty(),
            "a delayed ping was answered at once"
        );
        n.handle_timeout(now + Duration::from_millis(4_999));
        assert!(
            drain(&mut n).is_empty(),
            "a delayed ping was answered early"
        );
        let at = now + Duration::from_millis(5_000);
        n.handle_timeout(at);
        let out = drain(&mut n);
        assert_eq!(out.len(), MAX_DELAYED_PINGS);
        let mut tids: Vec<u16> = out
            .iter()
            .map(|(_, m)| match m {
                Message::Response(r) => r.tid,
                m => panic!("{m:?}"),
            })
            .collect();
        tids.sort_unstable();
        // The first 1,024 within the delay cap are answered; the over-long one and the
        // 1,025th are not.
        assert_eq!(tids, (1..=MAX_DELAYED_PINGS as u16).collect::<Vec<_>>());
        n.handle_timeout(now + Duration::from_secs(30));
        assert!(drain(&mut n).is_empty());
        // Answered, they free their places.
        let later = now + Duration::from_secs(30);
        send(
            &mut n,
            later,
            peer(1),
            &request(9, true, internal::DELAYED_PING, delayed_ping(0)),
        );
        n.handle_timeout(later);
        assert_eq!(drain(&mut n).len(), 1);
    }

    #[test]
    fn an_11th_down_hint_is_acknowledged_without_a_check() {
        let now = Instant::now();
        let mut n = node(now);
        let nodes: Vec<SocketAddrV4> = (0..11)
            .map(|i| SocketAddrV4::new(Ipv4Addr::new(172, 16, 0, 1 + i), 49737))
            .collect();
        for a in &nodes {
            n.add_node(*a);
        }
        assert_eq!(n.table().len(), nodes.len());
        let hinter = peer(0);
        for (i, a) in nodes.iter().enumerate() {
            let mut v = Vec::new();
            corenet_codec::encode::ipv4_address(&mut v, a);
            send(
                &mut n,
                now,
                hinter,
                &request(i as u16, true, internal::DOWN_HINT, Some(v)),
            );
        }
        let out = drain(&mut n);
        let acks = out
            .iter()
            .filter(|(to, m)| *to == hinter && matches!(m, Message::Response(r) if r.error == 0))
            .count();
        let pinged: Vec<SocketAddrV4> = out
            .iter()
            .filter(|(_, m)| matches!(m, Message::Request(r) if r.internal && r.command == internal::PING))
            .map(|(to, _)| *to)
            .collect();
        assert_eq!(acks, nodes.len(), "every hint is acknowledged");
        assert_eq!(pinged, nodes[..MAX_DOWN_HINT_CHECKS].to_vec());
        // The checks time out (4 sends of 1 s): the silent nodes leave the table, the one
        // that was hinted beyond the cap stays.
        for s in 1..=5 {
            n.handle_timeout(now + Duration::from_secs(s));
        }
        assert_eq!(n.table().len(), 1);
        assert!(n.table().get(&NodeId::from_addr(&nodes[10])).is_some());
    }

    /// Runs a FIND_NODE query seeded with `referrers`, each answering with `named`; every
    /// named node stays silent. Returns the DOWN_HINTs sent (to whom, about whom) within
    /// `run` of virtual time.
    fn hints_after_silent_referrals(
        referrers: &[SocketAddrV4],
        named: &[SocketAddrV4],
        run: Duration,
    ) -> Vec<(SocketAddrV4, SocketAddrV4)> {
        let start = Instant::now();
        let mut n = node(start);
        let mut spec = QuerySpec::find_node([9; 32])
            .with_nodes(referrers.to_vec())
            .with_concurrency(named.len() + referrers.len());
        spec.retries = 0;
        n.query(start, spec);
        let mut hints = Vec::new();
        let mut now = start;
        for _ in 0..10_000 {
            for (to, m) in drain(&mut n) {
                let Message::Request(r) = m else { continue };
                if r.internal && r.command == internal::DOWN_HINT {
                    let v = r.value.expect("a DOWN_HINT names a node");
                    let about = corenet_codec::Decoder::new(&v).ipv4_address().unwrap();
                    hints.push((to, about));
                } else if referrers.contains(&to) && r.command == internal::FIND_NODE {
                    let res = Response {
                        tid: r.tid,
                        to: OWN,
                        closer_nodes: named.to_vec(),
                        ..Default::default()
                    };
                    n.handle_datagram(now, SocketKind::Server, to, &res.to_bytes());
                }
            }
            match n.poll_timeout() {
                Some(t) if t <= start + run => {
                    now = t.max(now);
                    n.handle_timeout(now);
                }
                _ => break,
            }
        }
        hints
    }

    fn silent(count: u8) -> Vec<SocketAddrV4> {
        (0..count)
            .map(|i| SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 1 + i), 49737))
            .collect()
    }

    #[test]
    fn down_hints_stop_at_50_per_tick() {
        let referrers: Vec<SocketAddrV4> = (1..=4).map(peer).collect();
        // 64 silent nodes named by 4 referrers each would be 256 hints.
        let hints = hints_after_silent_referrals(&referrers, &silent(64), Duration::from_secs(4));
        assert_eq!(hints.len(), DOWN_HINTS_PER_TICK as usize);
        // The referrers of a silent node are used once: later ticks send no more.
        let hints = hints_after_silent_referrals(&referrers, &silent(64), Duration::from_secs(30));
        assert_eq!(hints.len(), DOWN_HINTS_PER_TICK as usize);
    }

    #[test]
    fn a_node_named_by_five_referrers_is_hinted_down_to_four() {
        let referrers: Vec<SocketAddrV4> = (1..=5).map(peer).collect();
        let hints = hints_after_silent_referrals(&referrers, &silent(1), Duration::from_secs(4));
        let mut to: Vec<SocketAddrV4> = hints.iter().map(|h| h.0).collect();
        to.sort_unstable();
        to.dedup();
        assert_eq!(hints.len(), 4);
        assert_eq!(to.len(), 4);
        assert!(hints.iter().all(|h| h.1 == silent(1)[0]));
    }
}
