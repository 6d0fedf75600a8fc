//! The dial queue as a sans-IO state machine: peer bookkeeping, the five-level shuffled
//! priority queue, the retry tiers (1 s / 5 s / 15 s / 10 min with jitter), the parallel and
//! peer limits, explicit peers, bans, and `flush` accounting. It never dials itself: it asks
//! with [`DialAction::Dial`] and is told what happened.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use corenet_codec::{PublicKey, Topic};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaChaRng;

use super::peer::{PeerInfo, Priority};

/// Default `max_peers`.
pub const MAX_PEERS: usize = 64;
/// Default `max_parallel` (dials in flight).
pub const MAX_PARALLEL: usize = 3;
/// Retry tiers: short, medium, long, and the explicit-peer tier.
pub const BACKOFFS: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(15),
    Duration::from_secs(600),
];
/// Jitter added to each tier (scaled 1x, 2x, 4x, 240x as in hyperswarm).
pub const BACKOFF_JITTER: Duration = Duration::from_millis(500);

/// Settings of a [`Dialer`].
#[derive(Debug, Clone)]
pub struct DialerConfig {
    /// Connections (dialled and accepted) before client dials stop.
    pub max_peers: usize,
    /// Dials in flight.
    pub max_parallel: usize,
    /// Dialled connections at most.
    pub max_client_connections: usize,
    /// Retry tiers.
    pub backoffs: [Duration; 4],
    /// Retry jitter.
    pub jitter: Duration,
    /// RNG seed (queue shuffling, jitter).
    pub seed: u64,
}

impl Default for DialerConfig {
    fn default() -> Self {
        DialerConfig {
            max_peers: MAX_PEERS,
            max_parallel: MAX_PARALLEL,
            max_client_connections: usize::MAX,
            backoffs: BACKOFFS,
            jitter: BACKOFF_JITTER,
            seed: 0,
        }
    }
}

/// What the dialer asks its owner to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialAction {
    /// Connect to this peer (then report [`Dialer::dial_opened`] / [`Dialer::dial_closed`]).
    Dial {
        /// Who.
        public_key: PublicKey,
        /// Nodes that forward handshakes to it.
        relay_addresses: Vec<SocketAddrV4>,
        /// Dial through the swarm's blind relay whatever our NAT (see
        /// [`Dialer::force_relaying`]).
        force_relay: bool,
    },
    /// A `flush` finished.
    Flushed(u64),
}

/// A hyperswarm bulk timer: entries added now fire after one to two periods.
#[derive(Debug)]
struct BulkTimer {
    period: Duration,
    next_fire: Option<Instant>,
    next: Vec<PublicKey>,
    pending: Vec<PublicKey>,
}

impl BulkTimer {
    fn new(time: Duration) -> Self {
        BulkTimer {
            period: time.mul_f64(0.66),
            next_fire: None,
            next: Vec::new(),
            pending: Vec::new(),
        }
    }

    fn add(&mut self, now: Instant, pk: PublicKey) {
        if self.next_fire.is_none() {
            self.next_fire = Some(now + self.period);
        }
        self.pending.push(pk);
    }

    /// Fires every period due by `now` (a fixed cadence, like `setInterval`).
    fn tick(&mut self, now: Instant) -> Vec<PublicKey> {
        let mut fired = Vec::new();
        while let Some(t) = self.next_fire.filter(|t| *t <= now) {
            fired.append(&mut self.next);
            self.next = std::mem::take(&mut self.pending);
            self.next_fire = if self.next.is_empty() {
                None
            } else {
                Some(t + self.period)
            };
        }
        fired
    }
}

#[derive(Debug)]
struct PendingFlush {
    id: u64,
    missing: usize,
    tick: u64,
}

/// The dial queue. See the [module docs](self).
#[derive(Debug)]
pub struct Dialer {
    config: DialerConfig,
    rng: ChaChaRng,
    peers: HashMap<PublicKey, PeerInfo>,
    queue: [Vec<PublicKey>; 5],
    timers: [BulkTimer; 4],
    /// Our own key: never dialled.
    local: PublicKey,
    /// Every connection (open or being dialled), as the swarm reports them.
    connections: HashSet<PublicKey>,
    /// Dials in flight.
    connecting: usize,
    client_connections: usize,
    explicit: Vec<PublicKey>,
    active_topics: HashSet<Topic>,
    flush_tick: u64,
    flushes: Vec<PendingFlush>,
    next_flush: u64,
    actions: VecDeque<DialAction>,
    suspended: bool,
}

impl Dialer {
    /// A dialer for the swarm whose key is `local`.
    pub fn new(config: DialerConfig, local: PublicKey) -> Self {
        let mut rng = ChaChaRng::seed_from_u64(config.seed);
        let j = config.jitter;
        let mut jit = |scale: u32| j.mul_f64(f64::from(scale) * rng.gen::<f64>());
        let b = config.backoffs;
        let timers = [
            BulkTimer::new(b[0] + jit(1) + jit(1)),
            BulkTimer::new(b[1] + jit(2) + jit(1)),
            BulkTimer::new(b[2] + jit(4) + jit(1)),
            BulkTimer::new(b[3] + jit(240) + jit(1)),
        ];
        Dialer {
            config,
            rng,
            peers: HashMap::new(),
            queue: Default::default(),
            timers,
            local,
            connections: HashSet::new(),
            connecting: 0,
            client_connections: 0,
            explicit: Vec::new(),
            active_topics: HashSet::new(),
            flush_tick: 0,
            flushes: Vec::new(),
            next_flush: 1,
            actions: VecDeque::new(),
            suspended: false,
        }
    }

    /// The peers known.
    pub fn peers(&self) -> impl Iterator<Item = &PeerInfo> {
        self.peers.values()
    }

    /// One peer.
    pub fn peer(&self, pk: &PublicKey) -> Option<&PeerInfo> {
        self.peers.get(pk)
    }

    /// Dials in flight.
    pub fn connecting(&self) -> usize {
        self.connecting
    }

    /// Peers waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queue.iter().map(Vec::len).sum()
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<DialAction> {
        self.actions.pop_front()
    }

    /// When [`Dialer::handle_timeout`] should run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.iter().filter_map(|t| t.next_fire).min()
    }

    fn upsert(
        &mut self,
        pk: PublicKey,
        relay_addresses: Option<Vec<SocketAddrV4>>,
    ) -> Option<&mut PeerInfo> {
        if pk == self.local {
            return None;
        }
        let p = self
            .peers
            .entry(pk)
            .or_insert_with(|| PeerInfo::new(pk, Vec::new()));
        if let Some(r) = relay_addresses {
            p.relay_addresses = r; // newer is better
        }
        Some(p)
    }

    /// Marks a topic as joined (client mode) or left: dropped peers of left topics are not
    /// redialled.
    pub fn set_topic_active(&mut self, topic: Topic, active: bool) {
        if active {
            self.active_topics.insert(topic);
        } else {
            self.active_topics.remove(&topic);
        }
    }

    /// A lookup found a peer under a topic.
    pub fn peer_discovered(
        &mut self,
        now: Instant,
        topic: Topic,
        pk: PublicKey,
        relay_addresses: Vec<SocketAddrV4>,
    ) {
        let connected = self.connections.contains(&pk);
        let Some(p) = self.upsert(pk, Some(relay_addresses)) else {
            return;
        };
        p.add_topic(topic);
        if connected {
            return;
        }
        if !p.prioritized() || !p.client {
            p.reset();
        }
        if p.update_priority() {
            self.enqueue(pk);
        }
        self.attempt(now);
    }

    /// Dial this peer and keep redialling it (outside `max_peers`).
    pub fn join_peer(&mut self, now: Instant, pk: PublicKey) {
        let connected = self.connections.contains(&pk);
        let Some(p) = self.upsert(pk, None) else {
            return;
        };
        p.explicit = true;
        if !self.explicit.contains(&pk) {
            self.explicit.push(pk);
        }
        if connected {
            return;
        }
        let p = self.peers.get_mut(&pk);
        if p.is_some_and(PeerInfo::update_priority) {
            self.enqueue(pk);
        }
        self.attempt(now);
    }

    /// Stop redialling an explicit peer.
    pub fn leave_peer(&mut self, pk: &PublicKey) {
        self.explicit.retain(|e| e != pk);
        if let Some(p) = self.peers.get_mut(pk) {
            p.explicit = false;
        }
        self.maybe_forget(pk);
    }

    /// Bans (or unbans) a peer: it is never dialled while banned.
    pub fn ban(&mut self, pk: PublicKey, banned: bool) {
        if let Some(p) = self.upsert(pk, None) {
            p.banned = banned;
        }
        if banned {
            for q in &mut self.queue {
                q.retain(|k| *k != pk);
            }
            if let Some(p) = self.peers.get_mut(&pk) {
                p.queued = false;
            }
        }
    }

    /// True if banned.
    pub fn is_banned(&self, pk: &PublicKey) -> bool {
        self.peers.get(pk).is_some_and(|p| p.banned)
    }

    /// Sets whether a peer is redialled when its connection drops.
    pub fn set_reconnect(&mut self, pk: &PublicKey, reconnect: bool) {
        if let Some(p) = self.peers.get_mut(pk) {
            p.reconnecting = reconnect;
        }
    }

    fn enqueue(&mut self, pk: PublicKey) {
        let tick = self.flush_tick;
        let Some(p) = self.peers.get_mut(&pk) else {
            return;
        };
        if p.queued {
            return;
        }
        p.queued = true;
        p.flush_tick = tick;
        self.queue[p.priority as usize].push(pk);
    }

    fn dequeue(&mut self) -> Option<PublicKey> {
        for level in (0..5).rev() {
            let q = &mut self.queue[level];
            if !q.is_empty() {
                let i = self.rng.gen_range(0..q.len());
                return Some(q.swap_remove(i));
            }
        }
        None
    }

    fn within_max_peers(&self) -> bool {
        let e = self.explicit.len();
        let factor = match e {
            0 => 1,
            1 => 2,
            2 | 3 => 3,
            _ => 4,
        };
        factor * self.connections.len() < self.config.max_peers
    }

    fn should_connect(&self) -> bool {
        !self.suspended
            && self.connecting < self.config.max_parallel
            && self.within_max_peers()
            && self.client_connections < self.config.max_client_connections
    }

    /// Starts as many dials as the limits allow.
    fn attempt(&mut self, now: Instant) {
        if self.suspended {
            return;
        }
        // Explicit peers first, outside max_peers, with a short per-attempt backoff.
        for pk in self.explicit.clone() {
            if self.connecting >= self.config.max_parallel {
                break;
            }
            let Some(p) = self.peers.get(&pk) else {
                continue;
            };
            let recent = p.disconnected_at.is_some_and(|d| {
                now.saturating_duration_since(d) < Duration::from_secs(u64::from(p.attempts))
            });
            if p.attempts >= 5 || recent || self.connections.contains(&pk) || p.banned {
                continue;
            }
            if p.queued {
                for q in &mut self.queue {
                    q.retain(|k| *k != pk);
                }
            }
            self.dial(pk, false);
        }
        while self.should_connect() {
            let Some(pk) = self.dequeue() else { break };
            if let Some(p) = self.peers.get_mut(&pk) {
                p.queued = false;
            }
            self.dial(pk, true);
        }
        if self.connecting == 0 {
            self.flush_all_maybe();
        }
    }

    fn dial(&mut self, pk: PublicKey, queued: bool) {
        let Some(p) = self.peers.get_mut(&pk) else {
            return;
        };
        p.queued = false;
        if p.banned || self.connections.contains(&pk) {
            if queued {
                self.flush_maybe(&pk);
            }
            return;
        }
        p.tried = true;
        let relay_addresses = p.relay_addresses.clone();
        let force_relay = p.force_relaying;
        self.connections.insert(pk);
        self.connecting += 1;
        self.client_connections += 1;
        self.actions.push_back(DialAction::Dial {
            public_key: pk,
            relay_addresses,
            force_relay,
        });
    }

    /// The last dial to `pk` failed in a way only a relay can get around (hyperswarm: after
    /// HOLEPUNCH_ABORTED, HOLEPUNCH_DOUBLE_RANDOMIZED_NATS, CANNOT_HOLEPUNCH or
    /// REMOTE_NOT_HOLEPUNCHABLE, with a relay configured): its next dials go through the
    /// relay, and its attempts restart so the next one comes soon. Call before
    /// [`Dialer::dial_closed`].
    pub fn force_relaying(&mut self, pk: &PublicKey) {
        if let Some(p) = self.peers.get_mut(pk) {
            p.force_relaying = true;
            p.attempts = 0;
        }
    }

    /// A dial we asked for opened.
    pub fn dial_opened(&mut self, now: Instant, pk: &PublicKey) {
        self.connecting = self.connecting.saturating_sub(1);
        if let Some(p) = self.peers.get_mut(pk) {
            p.on_connected(now);
            p.client = true;
        }
        self.flush_maybe(pk);
        self.attempt(now);
    }

    /// A dialled connection closed (`opened` false: the dial failed).
    pub fn dial_closed(&mut self, now: Instant, pk: &PublicKey, opened: bool) {
        if !opened {
            self.connecting = self.connecting.saturating_sub(1);
        }
        self.client_connections = self.client_connections.saturating_sub(1);
        self.connections.remove(pk);
        self.after_close(now, pk);
        if !opened {
            self.flush_maybe(pk);
        }
        self.attempt(now);
    }

    /// The swarm accepted a connection from `pk`.
    pub fn server_opened(&mut self, pk: &PublicKey) {
        self.connections.insert(*pk);
        if let Some(p) = self.upsert(*pk, None) {
            p.client = false;
        }
    }

    /// An accepted connection closed.
    pub fn server_closed(&mut self, now: Instant, pk: &PublicKey) {
        self.connections.remove(pk);
        self.maybe_forget(pk);
        self.attempt(now);
    }

    fn after_close(&mut self, now: Instant, pk: &PublicKey) {
        let requeue = self.should_requeue(pk);
        let Some(p) = self.peers.get_mut(pk) else {
            return;
        };
        p.on_disconnected(now);
        let tier = if requeue { select_tier(p) } else { None };
        p.waiting = tier.is_some();
        if let Some(t) = tier {
            self.timers[t].add(now, *pk);
        }
        self.maybe_forget(pk);
    }

    fn should_requeue(&self, pk: &PublicKey) -> bool {
        if self.suspended {
            return false;
        }
        match self.peers.get(pk) {
            Some(p) => p.explicit || p.topics.iter().any(|t| self.active_topics.contains(t)),
            None => false,
        }
    }

    fn maybe_forget(&mut self, pk: &PublicKey) {
        let gc = self.peers.get(pk).is_some_and(PeerInfo::should_gc);
        if gc && !self.connections.contains(pk) {
            self.peers.remove(pk);
        }
    }

    /// Retry timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut batch = Vec::new();
        for t in &mut self.timers {
            batch.extend(t.tick(now));
        }
        if batch.is_empty() || self.suspended {
            return;
        }
        for pk in batch {
            let connected = self.connections.contains(&pk);
            let Some(p) = self.peers.get_mut(&pk) else {
                continue;
            };
            p.waiting = false;
            if !p.update_priority() || connected || p.queued {
                continue;
            }
            self.enqueue(pk);
        }
        self.attempt(now);
    }

    /// Starts a flush: [`DialAction::Flushed`] follows once every peer queued so far has been
    /// dialled (or the limits say no more dials will happen).
    pub fn flush(&mut self) -> u64 {
        let id = self.next_flush;
        self.next_flush += 1;
        let pending = self.connecting;
        let missing = self.queued() + pending;
        if self.flush_all_possible() || missing == 0 {
            self.actions.push_back(DialAction::Flushed(id));
            return id;
        }
        self.flushes.push(PendingFlush {
            id,
            missing,
            tick: self.flush_tick,
        });
        self.flush_tick += 1;
        id
    }

    fn flush_all_possible(&self) -> bool {
        !(self.connecting > 0
            || (self.within_max_peers()
                && self.client_connections < self.config.max_client_connections))
    }

    fn flush_all_maybe(&mut self) {
        if !self.flush_all_possible() {
            return;
        }
        for f in self.flushes.drain(..) {
            self.actions.push_back(DialAction::Flushed(f.id));
        }
    }

    fn flush_maybe(&mut self, pk: &PublicKey) {
        let tick = self.peers.get(pk).map_or(0, |p| p.flush_tick);
        let mut done = Vec::new();
        self.flushes.retain_mut(|f| {
            if tick > f.tick {
                return true;
            }
            f.missing = f.missing.saturating_sub(1);
            if f.missing == 0 {
                done.push(f.id);
                false
            } else {
                true
            }
        });
        for id in done {
            self.actions.push_back(DialAction::Flushed(id));
        }
    }

    /// Stops dialling (mobile background); [`Dialer::resume`] restarts.
    pub fn suspend(&mut self) {
        self.suspended = true;
        for q in &mut self.queue {
            q.clear();
        }
        for p in self.peers.values_mut() {
            p.queued = false;
        }
    }

    /// Resumes dialling.
    pub fn resume(&mut self, now: Instant) {
        self.suspended = false;
        self.attempt(now);
    }

    /// Peers to report as priority levels (for tests and stats).
    pub fn priority_of(&self, pk: &PublicKey) -> Option<Priority> {
        self.peers.get(pk).map(|p| p.priority)
    }
}

/// Which retry tier a dropped peer goes to (hyperswarm `_selectRetryTimer`).
fn select_tier(p: &PeerInfo) -> Option<usize> {
    if p.banned || !p.reconnecting {
        return None;
    }
    if p.attempts > 3 {
        return p.explicit.then_some(3);
    }
    match (p.attempts, p.proven) {
        (0, _) => Some(0),
        (1, true) => Some(0),
        (2, true) => Some(1),
        (3, true) => Some(2),
        (1, false) => Some(1),
        (2, false) | (3, false) => Some(2),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pk(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    fn drain(d: &mut Dialer) -> Vec<DialAction> {
        std::iter::from_fn(|| d.poll_action()).collect()
    }

    #[test]
    fn parallel_limit_and_no_dial_when_connected() {
        let now = Instant::now();
        let mut d = Dialer::new(DialerConfig::default(), pk(0));
        let t = Topic([9; 32]);
        d.set_topic_active(t, true);
        for i in 1..=5 {
            d.peer_discovered(now, t, pk(i), vec![]);
        }
        let dials = drain(&mut d);
        assert_eq!(dials.len(), MAX_PARALLEL);
        assert_eq!(d.queued(), 2);
        // Our own key and connected peers are skipped.
        d.peer_discovered(now, t, pk(0), vec![]);
        d.server_opened(&pk(9));
        d.peer_discovered(now, t, pk(9), vec![]);
        assert_eq!(d.queued(), 2);
        // A dial finishing lets the next one go.
        d.dial_opened(now, &pk(1));
        assert_eq!(drain(&mut d).len(), 1);
    }

    #[test]
    fn retry_tiers_and_fast_retry() {
        let t0 = Instant::now();
        let mut d = Dialer::new(
            DialerConfig {
                jitter: Duration::ZERO,
                ..Default::default()
            },
            pk(0),
        );
        let t = Topic([9; 32]);
        d.set_topic_active(t, true);
        d.peer_discovered(t0, t, pk(1), vec![]);
        assert_eq!(drain(&mut d).len(), 1);
        // Failed dial of an unproven peer: medium tier (5 s * 0.66 per bulk tick).
        d.dial_closed(t0, &pk(1), false);
        assert_eq!(d.peer(&pk(1)).map(|p| p.attempts), Some(1));
        d.handle_timeout(t0 + Duration::from_secs(4));
        assert!(drain(&mut d).is_empty(), "not before the tier");
        d.handle_timeout(t0 + Duration::from_secs(7));
        assert_eq!(drain(&mut d).len(), 1, "redialled after the medium tier");
        assert_eq!(
            d.priority_of(&pk(1)),
            Some(Priority::VeryLow),
            "tried and not proven"
        );
        // A connection that lived 15 s gets the short tier with attempts reset.
        let t1 = t0 + Duration::from_secs(10);
        d.dial_opened(t1, &pk(1));
        d.dial_closed(t1 + Duration::from_secs(20), &pk(1), true);
        assert_eq!(d.peer(&pk(1)).map(|p| p.attempts), Some(1));
        d.handle_timeout(t1 + Duration::from_secs(22));
        assert_eq!(
            drain(&mut d).len(),
            1,
            "short tier after a long-lived connection"
        );
    }

    #[test]
    fn left_topics_and_bans_stop_redials() {
        let t0 = Instant::now();
        let mut d = Dialer::new(DialerConfig::default(), pk(0));
        let t = Topic([9; 32]);
        d.set_topic_active(t, true);
        d.peer_discovered(t0, t, pk(1), vec![]);
        drain(&mut d);
        d.set_topic_active(t, false);
        d.dial_closed(t0, &pk(1), false);
        d.handle_timeout(t0 + Duration::from_secs(700));
        assert!(drain(&mut d).is_empty(), "topic left: no redial");
        d.set_topic_active(t, true);
        d.ban(pk(2), true);
        d.peer_discovered(t0, t, pk(2), vec![]);
        assert!(drain(&mut d).is_empty(), "banned: never dialled");
    }

    #[test]
    fn explicit_peers_ignore_max_peers_and_retry_forever() {
        let t0 = Instant::now();
        let mut d = Dialer::new(
            DialerConfig {
                max_peers: 1,
                jitter: Duration::ZERO,
                ..Default::default()
            },
            pk(0),
        );
        d.server_opened(&pk(5)); // at max_peers
        d.join_peer(t0, pk(1));
        assert_eq!(
            drain(&mut d),
            vec![DialAction::Dial {
                force_relay: false,
                public_key: pk(1),
                relay_addresses: vec![]
            }]
        );
        let mut now = t0;
        for _ in 0..6 {
            d.dial_closed(now, &pk(1), false);
            // Within two periods of the slowest tier (0.66 x 600 s each).
            now += Duration::from_secs(800);
            d.handle_timeout(now);
            assert_eq!(
                drain(&mut d).len(),
                1,
                "explicit peers are redialled forever"
            );
        }
    }

    #[test]
    fn topic_peers_wait_while_connections_are_at_max_peers() {
        let t0 = Instant::now();
        let mut d = Dialer::new(
            DialerConfig {
                max_peers: 1,
                ..Default::default()
            },
            pk(0),
        );
        let t = Topic([9; 32]);
        d.set_topic_active(t, true);
        d.server_opened(&pk(5)); // one connection: at max_peers
        d.peer_discovered(t0, t, pk(1), vec![]);
        assert!(drain(&mut d).is_empty(), "no dial at max_peers");
        assert_eq!(d.queued(), 1, "the topic peer waits in the queue");
        assert_eq!(d.connecting(), 0);
        // Below the cap again, the waiting peer is dialled.
        d.server_closed(t0, &pk(5));
        assert_eq!(
            drain(&mut d),
            vec![DialAction::Dial {
                force_relay: false,
                public_key: pk(1),
                relay_addresses: vec![]
            }]
        );
    }

    #[test]
    fn flush_waits_for_queued_dials() {
        let t0 = Instant::now();
        let mut d = Dialer::new(DialerConfig::default(), pk(0));
        let t = Topic([9; 32]);
        d.set_topic_active(t, true);
        for i in 1..=4 {
            d.peer_discovered(t0, t, pk(i), vec![]);
        }
        drain(&mut d);
        let f = d.flush();
        assert!(drain(&mut d).is_empty());
        for i in 1..=4 {
            d.dial_opened(t0, &pk(i));
        }
        let acts = drain(&mut d);
        assert!(acts.contains(&DialAction::Flushed(f)), "{acts:?}");
    }
}
