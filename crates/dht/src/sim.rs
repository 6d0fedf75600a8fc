//! A deterministic network simulator for sans-IO DHT cores.
//!
//! Nodes are addressed by IPv4 socket addresses; every datagram goes through one seeded
//! event queue with a latency range and a loss rate, and time is virtual. The same seed gives
//! the same run, so a failing simulation is replayed from the seed it prints.
//!
//! Nodes may sit behind simulated NATs ([`Network::add_nat`], [`Network::add_host`]), modelled
//! on Linux `masquerade` with a stateful firewall (what the NAT lab uses):
//! - mapping: [`NatKind::Consistent`] keeps one public port per internal socket (port
//!   preserving when free); [`NatKind::Random`] picks a new random port per destination;
//! - filtering: an inbound datagram passes only if the internal socket sent to exactly that
//!   remote address before (connection tracking), never unsolicited, and never hairpinned;
//! - a datagram with a low TTL (under [`LOW_TTL_HOPS`]) opens the mapping but dies before it
//!   reaches anything beyond the NAT.
//!
//! Nodes behind the same NAT reach each other's LAN addresses directly.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaChaRng;

use crate::rpc::{SocketKind, Transmit};

/// What the simulator needs from a node.
pub trait SimCore {
    /// A datagram arrived.
    fn handle_datagram(
        &mut self,
        now: Instant,
        socket: SocketKind,
        from: SocketAddrV4,
        bytes: &[u8],
    );
    /// Timers are due.
    fn handle_timeout(&mut self, now: Instant);
    /// The next datagram to send.
    fn poll_transmit(&mut self) -> Option<Transmit>;
    /// The next timer.
    fn poll_timeout(&self) -> Option<Instant>;
}

impl SimCore for crate::rpc::Node {
    fn handle_datagram(
        &mut self,
        now: Instant,
        socket: SocketKind,
        from: SocketAddrV4,
        bytes: &[u8],
    ) {
        crate::rpc::Node::handle_datagram(self, now, socket, from, bytes)
    }
    fn handle_timeout(&mut self, now: Instant) {
        crate::rpc::Node::handle_timeout(self, now)
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        crate::rpc::Node::poll_transmit(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        crate::rpc::Node::poll_timeout(self)
    }
}

impl SimCore for crate::hyper::HyperDht {
    fn handle_datagram(
        &mut self,
        now: Instant,
        socket: SocketKind,
        from: SocketAddrV4,
        bytes: &[u8],
    ) {
        crate::hyper::HyperDht::handle_datagram(self, now, socket, from, bytes)
    }
    fn handle_timeout(&mut self, now: Instant) {
        crate::hyper::HyperDht::handle_timeout(self, now)
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        crate::hyper::HyperDht::poll_transmit(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        crate::hyper::HyperDht::poll_timeout(self)
    }
}

/// Link model of the simulated network.
#[derive(Debug, Clone)]
pub struct LinkModel {
    /// One-way latency, uniformly drawn from this range.
    pub latency: (Duration, Duration),
    /// Probability that a datagram is lost.
    pub loss: f64,
}

impl Default for LinkModel {
    fn default() -> Self {
        LinkModel {
            latency: (Duration::from_millis(10), Duration::from_millis(50)),
            loss: 0.0,
        }
    }
}

/// TTL a datagram needs to get past its own NAT and across the simulated internet.
pub const LOW_TTL_HOPS: u8 = 10;

/// How a simulated NAT maps internal sockets to public ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// One public port per internal socket, whatever the destination (port preserving when
    /// the port is free): hyperdht's CONSISTENT.
    Consistent,
    /// A new random public port per destination: hyperdht's RANDOM.
    Random,
}

/// A simulated NAT.
#[derive(Debug)]
struct SimNat {
    ip: Ipv4Addr,
    kind: NatKind,
    /// (internal socket, destination for random NATs) to public port.
    map: HashMap<(SocketAddrV4, Option<SocketAddrV4>), u16>,
    /// Public port to internal socket.
    rev: HashMap<u16, SocketAddrV4>,
    /// Conntrack: (public port, remote) pairs that may send in.
    allowed: HashSet<(u16, SocketAddrV4)>,
}

impl SimNat {
    fn map_out(&mut self, rng: &mut ChaChaRng, src: SocketAddrV4, dst: SocketAddrV4) -> u16 {
        let key = match self.kind {
            NatKind::Consistent => (src, None),
            NatKind::Random => (src, Some(dst)),
        };
        let port = match self.map.get(&key) {
            Some(p) => *p,
            None => {
                let mut p = match self.kind {
                    NatKind::Consistent => src.port(),
                    NatKind::Random => rng.gen_range(1024..=65535),
                };
                while self.rev.contains_key(&p) {
                    p = rng.gen_range(1024..=65535);
                }
                self.map.insert(key, p);
                self.rev.insert(p, src);
                p
            }
        };
        self.allowed.insert((port, dst));
        port
    }
}

/// A node slot in the simulation.
#[derive(Debug)]
struct Slot<N> {
    node: N,
    /// Address of its server socket; the client socket is the next port.
    server: SocketAddrV4,
    /// The NAT it is behind.
    nat: Option<usize>,
    /// Killed nodes drop everything.
    alive: bool,
    /// The timer currently scheduled in the queue.
    scheduled: Option<Instant>,
}

/// Something that happens at a point of virtual time.
#[derive(Debug)]
enum Item {
    Deliver {
        to: usize,
        socket: SocketKind,
        from: SocketAddrV4,
        bytes: Bytes,
    },
    Timer {
        node: usize,
        at: Instant,
    },
}

/// A tap on the simulated network.
type TapFn = Box<dyn FnMut(usize, usize, &mut Bytes) -> bool + Send>;
struct Tap(TapFn);

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tap")
    }
}

/// The simulated network.
#[derive(Debug)]
pub struct Network<N> {
    slots: Vec<Slot<N>>,
    by_addr: HashMap<SocketAddrV4, (usize, SocketKind)>,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    items: HashMap<u64, Item>,
    seq: u64,
    now: Instant,
    rng: ChaChaRng,
    link: LinkModel,
    nats: Vec<SimNat>,
    /// Sees (and may change or drop) every datagram as it is sent: `(from node, to node,
    /// bytes)` to keep (`true`) or drop.
    tap: Option<Tap>,
    /// Datagrams handed to the network.
    pub datagrams: u64,
    /// Datagrams lost by the link model or sent to dead or unknown addresses.
    pub lost: u64,
}

impl<N: SimCore> Network<N> {
    /// An empty network starting at `start` with a seeded RNG.
    pub fn new(start: Instant, seed: u64, link: LinkModel) -> Self {
        Network {
            slots: Vec::new(),
            by_addr: HashMap::new(),
            queue: BinaryHeap::new(),
            items: HashMap::new(),
            seq: 0,
            now: start,
            rng: ChaChaRng::seed_from_u64(seed),
            link,
            nats: Vec::new(),
            tap: None,
            datagrams: 0,
            lost: 0,
        }
    }

    /// Virtual time now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The address the `i`-th node gets: 10.x.y.z:49737 (server) and :49738 (client).
    pub fn address_of(i: usize) -> SocketAddrV4 {
        let n = i as u32 + 1;
        SocketAddrV4::new(
            Ipv4Addr::new(10, (n >> 16) as u8, (n >> 8) as u8, n as u8),
            49737,
        )
    }

    /// Adds a node built by `make(index, server_address)`; returns its index.
    pub fn add(&mut self, make: impl FnOnce(usize, SocketAddrV4) -> N) -> usize {
        let server = Self::address_of(self.slots.len());
        self.add_host(*server.ip(), None, make)
    }

    /// Adds a NAT with public address `ip`; returns its id for [`Network::add_host`].
    pub fn add_nat(&mut self, ip: Ipv4Addr, kind: NatKind) -> usize {
        self.nats.push(SimNat {
            ip,
            kind,
            map: HashMap::new(),
            rev: HashMap::new(),
            allowed: HashSet::new(),
        });
        self.nats.len() - 1
    }

    /// Adds a node at host `ip` (its server socket on port 49737), behind NAT `nat` (then
    /// `ip` is its LAN address) or on the public network; returns its index.
    pub fn add_host(
        &mut self,
        ip: Ipv4Addr,
        nat: Option<usize>,
        make: impl FnOnce(usize, SocketAddrV4) -> N,
    ) -> usize {
        let i = self.slots.len();
        let server = SocketAddrV4::new(ip, 49737);
        let client = SocketAddrV4::new(ip, 49738);
        let node = make(i, server);
        self.slots.push(Slot {
            node,
            server,
            nat,
            alive: true,
            scheduled: None,
        });
        self.by_addr.insert(server, (i, SocketKind::Server));
        self.by_addr.insert(client, (i, SocketKind::Client));
        self.flush(i);
        i
    }

    /// Number of nodes (alive or not).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True without nodes.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The node at `i`.
    pub fn node(&self, i: usize) -> &N {
        &self.slots[i].node
    }

    /// The node at `i`, mutably. Call [`Network::flush`] after giving it commands.
    pub fn node_mut(&mut self, i: usize) -> &mut N {
        &mut self.slots[i].node
    }

    /// The server address of node `i`.
    pub fn server_addr(&self, i: usize) -> SocketAddrV4 {
        self.slots[i].server
    }

    /// True unless killed.
    pub fn is_alive(&self, i: usize) -> bool {
        self.slots[i].alive
    }

    /// Kills a node: it stops sending and receiving.
    pub fn kill(&mut self, i: usize) {
        self.slots[i].alive = false;
    }

    fn push(&mut self, at: Instant, item: Item) {
        self.seq += 1;
        self.items.insert(self.seq, item);
        self.queue.push(Reverse((at, self.seq)));
    }

    /// The internal address of node `i`'s socket `kind` (pool sockets get the ports after
    /// the client socket's).
    pub fn socket_addr(&self, i: usize, kind: SocketKind) -> SocketAddrV4 {
        let server = self.slots[i].server;
        let port = match kind {
            SocketKind::Server => server.port(),
            SocketKind::Client => server.port() + 1,
            SocketKind::Pool(p) => server.port().wrapping_add(2).wrapping_add(p as u16),
        };
        SocketAddrV4::new(*server.ip(), port)
    }

    /// Where a datagram from node `i`'s socket `kind` to `to` lands, and the source address
    /// the receiver sees; updates NAT state as sending it would. `None`: it is dropped (no
    /// such address, filtered by a NAT, or a low TTL).
    pub fn route(
        &mut self,
        i: usize,
        kind: SocketKind,
        to: SocketAddrV4,
        ttl: Option<u8>,
    ) -> Option<(usize, SocketKind, SocketAddrV4)> {
        let src = self.socket_addr(i, kind);
        self.by_addr.entry(src).or_insert((i, kind));
        let mut from = src;
        if let Some(n) = self.slots[i].nat {
            // Same LAN: straight there.
            if let Some(&(to_node, to_kind)) = self.by_addr.get(&to) {
                if self.slots[to_node].nat == Some(n) {
                    return Some((to_node, to_kind, src));
                }
            }
            let port = self.nats[n].map_out(&mut self.rng, src, to);
            from = SocketAddrV4::new(self.nats[n].ip, port);
        }
        if ttl.is_some_and(|t| t < LOW_TTL_HOPS) {
            return None;
        }
        if let Some(m) = self.nats.iter().position(|n| n.ip == *to.ip()) {
            if self.slots[i].nat == Some(m) {
                return None; // no hairpinning
            }
            let nat = &self.nats[m];
            if !nat.allowed.contains(&(to.port(), from)) {
                return None;
            }
            let internal = *nat.rev.get(&to.port())?;
            let &(to_node, to_kind) = self.by_addr.get(&internal)?;
            return Some((to_node, to_kind, from));
        }
        let &(to_node, to_kind) = self.by_addr.get(&to)?;
        if self.slots[to_node].nat.is_some() {
            return None; // a LAN address from outside the LAN
        }
        Some((to_node, to_kind, from))
    }

    /// Moves node `i`'s outgoing datagrams into the network and schedules its timer.
    pub fn flush(&mut self, i: usize) {
        if !self.slots[i].alive {
            return;
        }
        while let Some(t) = self.slots[i].node.poll_transmit() {
            self.datagrams += 1;
            let Some((to, socket, from)) = self.route(i, t.socket, t.to, t.ttl) else {
                self.lost += 1;
                continue;
            };
            let mut bytes = t.bytes;
            if let Some(Tap(tap)) = self.tap.as_mut() {
                if !tap(i, to, &mut bytes) {
                    self.lost += 1;
                    continue;
                }
            }
            if self.link.loss > 0.0 && self.rng.gen_bool(self.link.loss) {
                self.lost += 1;
                continue;
            }
            let (lo, hi) = self.link.latency;
            let lat = if hi > lo {
                self.rng.gen_range(lo..=hi)
            } else {
                lo
            };
            let at = self.now + lat;
            self.push(
                at,
                Item::Deliver {
                    to,
                    socket,
                    from,
                    bytes,
                },
            );
        }
        if let Some(at) = self.slots[i].node.poll_timeout() {
            if self.slots[i].scheduled != Some(at) {
                self.slots[i].scheduled = Some(at);
                self.push(at, Item::Timer { node: i, at });
            }
        }
    }

    /// Sets the tap (see the field): a test's hostile or faulty network.
    pub fn set_tap(&mut self, tap: impl FnMut(usize, usize, &mut Bytes) -> bool + Send + 'static) {
        self.tap = Some(Tap(Box::new(tap)));
    }

    /// Removes the tap.
    pub fn clear_tap(&mut self) {
        self.tap = None;
    }

    /// Delivers `bytes` to node `to`'s socket `socket` now, as if sent from `from` (an
    /// attacker that needs no node of its own).
    pub fn inject(&mut self, to: usize, socket: SocketKind, from: SocketAddrV4, bytes: &[u8]) {
        if !self.slots[to].alive {
            return;
        }
        let now = self.now;
        self.slots[to]
            .node
            .handle_datagram(now, socket, from, bytes);
        self.flush(to);
    }

    /// Runs one queued item; false when the queue is empty or the next item is after
    /// `until`.
    pub fn step(&mut self, until: Instant) -> bool {
        let Some(Reverse((at, seq))) = self.queue.peek().copied() else {
            return false;
        };
        if at > until {
            return false;
        }
        self.queue.pop();
        let Some(item) = self.items.remove(&seq) else {
            return true;
        };
        self.now = self.now.max(at);
        match item {
            Item::Deliver {
                to,
                socket,
                from,
                bytes,
            } => {
                if !self.slots[to].alive {
                    self.lost += 1;
                    return true;
                }
                let now = self.now;
                self.slots[to]
                    .node
                    .handle_datagram(now, socket, from, &bytes);
                self.flush(to);
            }
            Item::Timer { node, at } => {
                if self.slots[node].scheduled != Some(at) || !self.slots[node].alive {
                    return true;
                }
                self.slots[node].scheduled = None;
                let now = self.now;
                self.slots[node].node.handle_timeout(now);
                self.flush(node);
            }
        }
        true
    }

    /// Runs until virtual time `until` (inclusive), calling `each` after every item.
    pub fn run_until(&mut self, until: Instant, mut each: impl FnMut(&mut Self)) {
        while self.step(until) {
            each(self);
        }
        self.now = self.now.max(until);
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until, |_| {});
    }
}
