//! The puncher: opening a UDP path through two NATs (hyperdht `lib/holepuncher.js`,
//! `lib/socket-pool.js`).
//!
//! One [`Puncher`] per connection attempt, on each side. It owns pool sockets (a fresh one
//! to start, more for a birthday punch), a [`NatAnalyzer`] of its main socket, and what the
//! other side said about itself (firewall class, addresses, which of them are verified by a
//! token echo, whether it is punching). Once both sides agree to punch, [`Puncher::punch`]
//! picks the strategy from the two (coerced) firewall classes:
//!
//! | local | remote | what is sent |
//! | --- | --- | --- |
//! | consistent | consistent | up to 10 rounds, 1 s apart, a probe to every remote address (unverified ones every 4th round); the responder waits 1 s first |
//! | consistent | random | 1750 probes, 20 ms apart, to the remote's verified host at random ports 1000-65535 |
//! | random | consistent | a *birthday* punch: up to 256 sockets, each sending one TTL-5 probe to the remote's verified address; after 100 ms, 1750 probes 20 ms apart round-robin over the sockets (TTL 5 for the first round, 64 after) |
//! | random | random | nothing (the caller reports DOUBLE_RANDOMIZED_NATS) |
//!
//! A probe is the 1-byte datagram `0x00`. The initiator (the client) takes the first probe
//! that reaches any of its sockets as the path ([`PunchEvent::Connected`]); the responder
//! echoes every probe back so the initiator sees one.
//!
//! Sans-IO: sockets are numbers handed out by a [`SocketPool`] that records what the driver
//! must open and close; probes are queued for the owner to send; time is an input.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::{Rng, RngCore};

use super::messages::firewall;
use super::nat::NatAnalyzer;

/// The probe datagram.
pub const PROBE: [u8; 1] = [0];
/// TTL of a "low TTL" probe: it opens our NAT's mapping but dies before the remote's NAT.
pub const HOLEPUNCH_TTL: u8 = 5;
/// Sockets of a birthday punch.
pub const BIRTHDAY_SOCKETS: usize = 256;
/// Fresh sockets tried when the NAT looks unstable.
pub const MAX_REOPENS: u32 = 3;
/// Rounds of the consistent strategy.
pub const CONSISTENT_TRIES: u32 = 10;
/// Interval of the consistent strategy (and the responder's initial wait).
pub const CONSISTENT_INTERVAL: Duration = Duration::from_secs(1);
/// Probes of the random and birthday strategies (~35 s at [`RANDOM_INTERVAL`]).
pub const RANDOM_PROBES: u32 = 1750;
/// Interval of the random and birthday strategies.
pub const RANDOM_INTERVAL: Duration = Duration::from_millis(20);
/// Pause after a birthday burst before the keep-alive probes start.
pub const BIRTHDAY_PAUSE: Duration = Duration::from_millis(100);
/// Random punches that may run at once on a node (JS `_randomPunchLimit`).
pub const RANDOM_PUNCH_LIMIT: u32 = 1;
/// Least time between random punches (JS `randomPunchInterval`).
pub const RANDOM_PUNCH_INTERVAL: Duration = Duration::from_secs(20);
/// Pool sockets a node holds at most (all punches together): one birthday punch and a few
/// hundred ordinary ones.
pub const MAX_POOL_SOCKETS: usize = 1024;

/// What the driver must do with a pool socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketOp {
    /// Bind a new socket with this id (any port, on the node's host).
    Open(u32),
    /// Drop the socket (it stays open in UDX while a stream is connected on it).
    Close(u32),
}

/// Hands out pool socket ids and records the opens and closes for the driver.
#[derive(Debug)]
pub struct SocketPool {
    next: u32,
    open: usize,
    limit: usize,
    ops: VecDeque<SocketOp>,
}

impl Default for SocketPool {
    fn default() -> Self {
        Self::new(MAX_POOL_SOCKETS)
    }
}

impl SocketPool {
    /// A pool of at most `limit` sockets.
    pub fn new(limit: usize) -> Self {
        SocketPool {
            next: 1,
            open: 0,
            limit,
            ops: VecDeque::new(),
        }
    }

    /// A new socket, or `None` at the limit.
    pub fn acquire(&mut self) -> Option<u32> {
        if self.open >= self.limit {
            return None;
        }
        let id = self.next;
        self.next = self.next.wrapping_add(1).max(1);
        self.open += 1;
        self.ops.push_back(SocketOp::Open(id));
        Some(id)
    }

    /// Gives a socket back.
    pub fn release(&mut self, id: u32) {
        self.open = self.open.saturating_sub(1);
        self.ops.push_back(SocketOp::Close(id));
    }

    /// Hands a socket over to a connection: it leaves the pool without a close (the driver
    /// keeps it with the connection's stream).
    pub fn detach(&mut self, _id: u32) {
        self.open = self.open.saturating_sub(1);
    }

    /// Sockets open.
    pub fn open(&self) -> usize {
        self.open
    }

    /// The next socket operation for the driver.
    pub fn poll_op(&mut self) -> Option<SocketOp> {
        self.ops.pop_front()
    }
}

/// The node-wide limit on random punches (they cost hundreds of sockets or probes).
#[derive(Debug, Clone)]
pub struct RandomPunches {
    /// Random punches running.
    pub active: u32,
    /// When the last one connected.
    pub last: Option<Instant>,
    /// [`RANDOM_PUNCH_LIMIT`].
    pub limit: u32,
    /// [`RANDOM_PUNCH_INTERVAL`].
    pub interval: Duration,
}

impl Default for RandomPunches {
    fn default() -> Self {
        RandomPunches {
            active: 0,
            last: None,
            limit: RANDOM_PUNCH_LIMIT,
            interval: RANDOM_PUNCH_INTERVAL,
        }
    }
}

impl RandomPunches {
    /// True if a random punch must wait (JS: `_randomPunches >= limit || now - last <
    /// interval`).
    pub fn busy(&self, now: Instant) -> bool {
        self.active >= self.limit
            || self
                .last
                .is_some_and(|l| now.saturating_duration_since(l) < self.interval)
    }
}

/// What the other side said it can be reached at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteAddress {
    /// The address.
    pub addr: SocketAddrV4,
    /// Its host echoed our token: probes there are worth sending often.
    pub verified: bool,
}

/// What a puncher reports to its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PunchEvent {
    /// (Initiator) a probe arrived: this socket and address are the path.
    Connected {
        /// The pool socket it arrived on.
        socket: u32,
        /// Where it came from.
        address: SocketAddrV4,
    },
    /// The puncher gave up or was destroyed before connecting (JS `onabort`).
    Aborted,
}

/// The firewall class with OPEN counted as CONSISTENT.
pub fn coerce(fw: u64) -> u64 {
    if fw == firewall::OPEN {
        firewall::CONSISTENT
    } else {
        fw
    }
}

/// Which punch strategy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Both consistent.
    Consistent,
    /// Local consistent, remote random: random ports at the remote host.
    Random,
    /// Local random, remote consistent: many local sockets at one remote address.
    Birthday,
}

#[derive(Debug, Clone)]
enum Running {
    Idle,
    Consistent {
        tries: u32,
    },
    Random {
        host: Ipv4Addr,
        left: u32,
    },
    Birthday {
        to: SocketAddrV4,
        next: usize,
        low_ttl_rounds: u32,
        left: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reopen {
    NotStarted,
    Running { done: u32 },
    Finished(bool),
}

/// One side of a holepunch; see the [module docs](self).
#[derive(Debug)]
pub struct Puncher {
    initiator: bool,
    /// Pool sockets; the first is the main one (NAT-sampled, sends the probes of the
    /// consistent and random strategies).
    holders: Vec<u32>,
    nat: NatAnalyzer,
    dht_firewalled: bool,
    remote_firewall: u64,
    remote_addresses: Vec<RemoteAddress>,
    remote_holepunching: bool,
    punching: bool,
    connected: bool,
    destroyed: bool,
    randomized: bool,
    strategy: Option<Strategy>,
    running: Running,
    next_at: Option<Instant>,
    reopen: Reopen,
    probes: VecDeque<(u32, SocketAddrV4, Option<u8>)>,
    events: VecDeque<PunchEvent>,
    /// Probes sent, for stats and tests.
    sent: u64,
    /// The main socket is new and its sampling has not been started by the owner.
    fresh_socket: bool,
}

impl Puncher {
    /// A puncher on a fresh socket from `pool`; `None` if the pool is exhausted. Start its
    /// NAT sampling with [`Puncher::nat_mut`]`.start(..)` on [`Puncher::socket`].
    pub fn new(
        pool: &mut SocketPool,
        initiator: bool,
        remote_firewall: u64,
        dht_firewalled: bool,
    ) -> Option<Self> {
        let socket = pool.acquire()?;
        Some(Puncher {
            initiator,
            holders: vec![socket],
            nat: NatAnalyzer::new(dht_firewalled),
            dht_firewalled,
            remote_firewall,
            remote_addresses: Vec::new(),
            remote_holepunching: false,
            punching: false,
            connected: false,
            destroyed: false,
            randomized: false,
            strategy: None,
            running: Running::Idle,
            next_at: None,
            reopen: Reopen::NotStarted,
            probes: VecDeque::new(),
            events: VecDeque::new(),
            sent: 0,
            fresh_socket: true,
        })
    }

    /// The main socket (NAT-sampled; holepunch messages go out from it).
    pub fn socket(&self) -> u32 {
        self.holders[0]
    }

    /// Every socket the puncher holds.
    pub fn sockets(&self) -> &[u32] {
        &self.holders
    }

    /// The NAT analysis of the main socket.
    pub fn nat(&self) -> &NatAnalyzer {
        &self.nat
    }

    /// The NAT analysis, mutably (samples from holepunch replies go in here).
    pub fn nat_mut(&mut self) -> &mut NatAnalyzer {
        &mut self.nat
    }

    /// The remote's firewall class.
    pub fn remote_firewall(&self) -> u64 {
        self.remote_firewall
    }

    /// The remote's addresses.
    pub fn remote_addresses(&self) -> &[RemoteAddress] {
        &self.remote_addresses
    }

    /// The remote said it punches.
    pub fn remote_holepunching(&self) -> bool {
        self.remote_holepunching
    }

    /// A strategy is running.
    pub fn is_punching(&self) -> bool {
        self.punching
    }

    /// (Initiator) a probe arrived.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Destroyed (gave up, or done).
    pub fn is_destroyed(&self) -> bool {
        self.destroyed
    }

    /// The strategy chosen by [`Puncher::punch`].
    pub fn strategy(&self) -> Option<Strategy> {
        self.strategy
    }

    /// Probes sent so far.
    pub fn probes_sent(&self) -> u64 {
        self.sent
    }

    /// Updates what the remote said (JS `updateRemote`). `verified` is the remote host whose
    /// token was echoed; hosts verified before stay verified.
    pub fn update_remote(
        &mut self,
        punching: bool,
        firewall: u64,
        addresses: Option<&[SocketAddrV4]>,
        verified: Option<Ipv4Addr>,
    ) {
        let mut out = Vec::new();
        for a in addresses.unwrap_or_default() {
            let v = verified == Some(*a.ip())
                || self
                    .remote_addresses
                    .iter()
                    .any(|r| r.verified && r.addr.ip() == a.ip());
            out.push(RemoteAddress {
                addr: *a,
                verified: v,
            });
        }
        self.remote_firewall = firewall;
        self.remote_addresses = out;
        self.remote_holepunching = punching;
    }

    fn unstable(&self) -> bool {
        let fw = self.nat.firewall();
        (self.remote_firewall >= firewall::RANDOM && fw >= firewall::RANDOM)
            || fw == firewall::UNKNOWN
    }

    fn done(&self) -> bool {
        self.destroyed || self.connected
    }

    /// JS `analyze(allowReopen)`: `None` while the NAT analysis (or a reopen) is under way,
    /// else whether the socket is stable enough to punch from. With `allow_reopen`, an
    /// unstable socket is replaced by a fresh one up to [`MAX_REOPENS`] times; the new
    /// socket's sampling must be started by the owner (see [`Puncher::take_fresh_socket`]).
    pub fn analyze(&mut self, allow_reopen: bool, pool: &mut SocketPool) -> Option<bool> {
        if let Reopen::Finished(r) = self.reopen {
            if allow_reopen {
                return Some(r);
            }
        }
        if !self.nat.is_resolved() {
            return None;
        }
        if !self.unstable() && self.reopen == Reopen::NotStarted {
            return Some(true);
        }
        if !allow_reopen {
            return Some(!self.unstable());
        }
        let done = match self.reopen {
            Reopen::NotStarted => 0,
            Reopen::Running { done } => done,
            Reopen::Finished(r) => return Some(r),
        };
        if self.unstable()
            && done < MAX_REOPENS
            && !self.done()
            && !self.punching
            && self.reset(pool)
        {
            self.reopen = Reopen::Running { done: done + 1 };
            return None;
        }
        let r = coerce(self.nat.firewall()) == firewall::CONSISTENT;
        self.reopen = Reopen::Finished(r);
        Some(r)
    }

    fn reset(&mut self, pool: &mut SocketPool) -> bool {
        let Some(fresh) = pool.acquire() else {
            return false;
        };
        let prev = std::mem::replace(&mut self.holders[0], fresh);
        pool.release(prev);
        self.nat.destroy();
        self.nat = NatAnalyzer::new(self.dht_firewalled);
        self.fresh_socket = true;
        true
    }

    /// True once after the puncher was made and after each reopen: the main socket is new
    /// and the owner must start its NAT sampling ([`NatAnalyzer::start`]).
    pub fn take_fresh_socket(&mut self) -> bool {
        std::mem::take(&mut self.fresh_socket) && !self.destroyed
    }

    /// Starts punching (JS `punch()`): picks a strategy and schedules its probes. Returns
    /// false when no strategy applies (no remote address, no verified address where one is
    /// needed, or both sides random).
    pub fn punch(
        &mut self,
        now: Instant,
        rng: &mut impl RngCore,
        pool: &mut SocketPool,
        random: &mut RandomPunches,
    ) -> bool {
        if self.strategy.is_some() {
            return self.punching;
        }
        if self.done() || self.remote_addresses.is_empty() {
            return false;
        }
        self.punching = true;
        let local = coerce(self.nat.firewall());
        let remote = coerce(self.remote_firewall);
        let verified = self
            .remote_addresses
            .iter()
            .find(|a| a.verified)
            .map(|a| a.addr);
        if local == firewall::CONSISTENT && remote == firewall::CONSISTENT {
            self.strategy = Some(Strategy::Consistent);
            self.running = Running::Consistent { tries: 0 };
            self.next_at = Some(if self.initiator {
                now
            } else {
                now + CONSISTENT_INTERVAL
            });
            self.handle_timeout(now, rng, pool, random);
            return true;
        }
        let Some(verified) = verified else {
            self.punching = false;
            return false;
        };
        if local == firewall::CONSISTENT && remote >= firewall::RANDOM {
            self.strategy = Some(Strategy::Random);
            self.increment_randomized(random);
            self.running = Running::Random {
                host: *verified.ip(),
                left: RANDOM_PROBES,
            };
            self.next_at = Some(now);
            self.handle_timeout(now, rng, pool, random);
            return true;
        }
        if local >= firewall::RANDOM && remote == firewall::CONSISTENT {
            self.strategy = Some(Strategy::Birthday);
            self.increment_randomized(random);
            // The burst: every new socket fires one low-TTL probe as it opens.
            while self.holders.len() < BIRTHDAY_SOCKETS {
                let Some(s) = pool.acquire() else { break };
                self.holders.push(s);
                self.probe(s, verified, Some(HOLEPUNCH_TTL));
            }
            self.running = Running::Birthday {
                to: verified,
                next: 0,
                low_ttl_rounds: 1,
                left: RANDOM_PROBES,
            };
            self.next_at = Some(now + BIRTHDAY_PAUSE);
            return true;
        }
        self.punching = false;
        false
    }

    fn probe(&mut self, socket: u32, to: SocketAddrV4, ttl: Option<u8>) {
        self.sent += 1;
        self.probes.push_back((socket, to, ttl));
    }

    /// Sends a probe to `to` from the main socket (JS `ping`: the responder's fast-mode
    /// answer, and the LAN shortcut).
    pub fn ping(&mut self, to: SocketAddrV4) {
        let s = self.socket();
        self.probe(s, to, None);
    }

    /// Sends a low-TTL probe to `to` from the main socket (JS `openSession`): it opens our
    /// NAT's mapping toward `to` without reaching its NAT.
    pub fn open_session(&mut self, to: SocketAddrV4) {
        let s = self.socket();
        self.probe(s, to, Some(HOLEPUNCH_TTL));
    }

    /// Runs the strategy's due probes.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        rng: &mut impl RngCore,
        pool: &mut SocketPool,
        random: &mut RandomPunches,
    ) {
        while let Some(at) = self.next_at {
            if at > now || !self.punching || self.done() {
                break;
            }
            match self.running.clone() {
                Running::Idle => {
                    self.next_at = None;
                }
                Running::Consistent { tries } => {
                    let tries = tries + 1;
                    if tries > CONSISTENT_TRIES {
                        self.next_at = None;
                        self.auto_destroy(now, pool, random);
                        break;
                    }
                    let socket = self.socket();
                    let targets: Vec<SocketAddrV4> = self
                        .remote_addresses
                        .iter()
                        .filter(|a| a.verified || tries & 3 == 0)
                        .map(|a| a.addr)
                        .collect();
                    for t in targets {
                        self.probe(socket, t, None);
                    }
                    self.running = Running::Consistent { tries };
                    self.next_at = Some(at + CONSISTENT_INTERVAL);
                }
                Running::Random { host, left } => {
                    if left == 0 {
                        self.next_at = None;
                        self.auto_destroy(now, pool, random);
                        break;
                    }
                    let port = rng.gen_range(1000..=65535u16);
                    let socket = self.socket();
                    self.probe(socket, SocketAddrV4::new(host, port), None);
                    self.running = Running::Random {
                        host,
                        left: left - 1,
                    };
                    self.next_at = Some(at + RANDOM_INTERVAL);
                }
                Running::Birthday {
                    to,
                    mut next,
                    mut low_ttl_rounds,
                    left,
                } => {
                    if left == 0 {
                        self.next_at = None;
                        self.auto_destroy(now, pool, random);
                        break;
                    }
                    if next >= self.holders.len() {
                        next = 0;
                        low_ttl_rounds = low_ttl_rounds.saturating_sub(1);
                    }
                    let socket = self.holders[next];
                    let ttl = (low_ttl_rounds > 0).then_some(HOLEPUNCH_TTL);
                    self.probe(socket, to, ttl);
                    self.running = Running::Birthday {
                        to,
                        next: next + 1,
                        low_ttl_rounds,
                        left: left - 1,
                    };
                    self.next_at = Some(at + RANDOM_INTERVAL);
                }
            }
        }
    }

    /// When [`Puncher::handle_timeout`] should run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.punching && !self.done() {
            self.next_at
        } else {
            None
        }
    }

    /// A 1-byte probe arrived on one of our sockets from `from`. The responder echoes it;
    /// the initiator takes the first as its path.
    pub fn on_probe(
        &mut self,
        now: Instant,
        socket: u32,
        from: SocketAddrV4,
        pool: &mut SocketPool,
        random: &mut RandomPunches,
    ) {
        if self.destroyed || !self.holders.contains(&socket) {
            return;
        }
        if !self.initiator {
            self.probe(socket, from, None);
            return;
        }
        if self.connected {
            return;
        }
        self.connected = true;
        self.punching = false;
        for s in std::mem::take(&mut self.holders) {
            if s == socket {
                pool.detach(s);
            } else {
                pool.release(s);
            }
        }
        self.holders = vec![socket];
        self.decrement_randomized(now, random);
        self.events.push_back(PunchEvent::Connected {
            socket,
            address: from,
        });
    }

    /// A strategy ran out without a probe arriving (JS `_autoDestroy`).
    fn auto_destroy(&mut self, now: Instant, pool: &mut SocketPool, random: &mut RandomPunches) {
        if !self.connected {
            self.destroy(now, pool, random);
        }
    }

    fn increment_randomized(&mut self, random: &mut RandomPunches) {
        if !self.randomized {
            self.randomized = true;
            random.active += 1;
        }
    }

    fn decrement_randomized(&mut self, now: Instant, random: &mut RandomPunches) {
        if self.randomized {
            random.last = Some(now);
            self.randomized = false;
            random.active = random.active.saturating_sub(1);
        }
    }

    /// Stops everything and gives the sockets back (a connected initiator's path socket has
    /// been detached already). Reports [`PunchEvent::Aborted`] if it never connected.
    pub fn destroy(&mut self, now: Instant, pool: &mut SocketPool, random: &mut RandomPunches) {
        if self.destroyed {
            return;
        }
        self.destroyed = true;
        self.punching = false;
        self.next_at = None;
        if !self.connected {
            for s in self.holders.drain(..) {
                pool.release(s);
            }
        }
        self.nat.destroy();
        if !self.connected {
            // A random punch that never connected does not delay the next one.
            self.decrement_randomized(now, random);
            self.events.push_back(PunchEvent::Aborted);
        }
    }

    /// The next probe to send: `(socket, to, ttl)`.
    pub fn poll_probe(&mut self) -> Option<(u32, SocketAddrV4, Option<u8>)> {
        self.probes.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<PunchEvent> {
        self.events.pop_front()
    }
}

/// The local addresses worth advertising for the LAN shortcut (JS `localAddresses`):
/// `127.0.0.1` when bound there, else every non-loopback IPv4 interface address, else
/// `127.0.0.1`; each with the server socket's port.
pub fn local_addresses(bound: Ipv4Addr, interfaces: &[Ipv4Addr], port: u16) -> Vec<SocketAddrV4> {
    if bound == Ipv4Addr::LOCALHOST {
        return vec![SocketAddrV4::new(bound, port)];
    }
    let mut v: Vec<SocketAddrV4> = interfaces
        .iter()
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .filter(|ip| bound.is_unspecified() || **ip == bound)
        .map(|ip| SocketAddrV4::new(*ip, port))
        .collect();
    if v.is_empty() {
        v.push(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    }
    v
}

/// The remote LAN address sharing the longest prefix (/24, then /16, then /8) with one of
/// ours (JS `matchAddress`); `None` if none shares even the first octet.
pub fn match_address(local: &[SocketAddrV4], remote: &[SocketAddrV4]) -> Option<SocketAddrV4> {
    let mut best: (u8, Option<SocketAddrV4>) = (1, None);
    for l in local {
        let a = l.ip().octets();
        for r in remote {
            let b = r.ip().octets();
            if a[0] == b[0] {
                if best.0 == 1 {
                    best = (2, Some(*r));
                }
                if a[1] == b[1] {
                    if best.0 == 2 {
                        best = (3, Some(*r));
                    }
                    if a[2] == b[2] {
                        return Some(*r);
                    }
                }
            }
        }
    }
    best.1
}

/// Owner bookkeeping: which puncher a pool socket belongs to.
pub type SocketOwners<K> = HashMap<u32, K>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_1025th_pool_socket_is_refused_until_one_is_released() {
        let mut pool = SocketPool::default();
        let ids: Vec<u32> = (0..MAX_POOL_SOCKETS)
            .map(|_| pool.acquire().expect("under the cap"))
            .collect();
        assert_eq!(pool.open(), MAX_POOL_SOCKETS);
        assert_eq!(pool.acquire(), None);
        let mut opens = 0;
        while let Some(op) = pool.poll_op() {
            assert!(matches!(op, SocketOp::Open(_)));
            opens += 1;
        }
        assert_eq!(opens, MAX_POOL_SOCKETS, "the refused socket was opened");
        // A released socket is closed and frees a place; a detached one frees a place and
        // is not closed (its connection keeps it).
        pool.release(ids[0]);
        assert_eq!(pool.poll_op(), Some(SocketOp::Close(ids[0])));
        let again = pool.acquire().expect("a place was freed");
        assert!(!ids.contains(&again), "an id was reused while open");
        assert_eq!(pool.acquire(), None);
        pool.detach(ids[1]);
        assert_eq!(pool.poll_op(), Some(SocketOp::Open(again)));
        assert_eq!(pool.poll_op(), None);
        assert!(pool.acquire().is_some());
        assert_eq!(pool.open(), MAX_POOL_SOCKETS);
    }
}
