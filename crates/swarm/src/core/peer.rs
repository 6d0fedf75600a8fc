//! What the swarm knows about a remote peer (hyperswarm `PeerInfo`).

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use corenet_codec::{PublicKey, Topic};

/// A connection that lived at least this long earns a fast retry when it drops.
pub const MIN_CONNECTION_TIME: Duration = Duration::from_secs(15);

/// Dial priority (hyperswarm's five levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Stale or failed many times.
    VeryLow = 0,
    /// Failed three times.
    Low = 1,
    /// Fresh.
    Normal = 2,
    /// Failed twice.
    High = 3,
    /// Failed once (retry soon).
    VeryHigh = 4,
}

/// A remote peer.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Its public key.
    pub public_key: PublicKey,
    /// Nodes that forward handshakes to it.
    pub relay_addresses: Vec<SocketAddrV4>,
    /// Redial when the connection drops.
    pub reconnecting: bool,
    /// We were connected at least once.
    pub proven: bool,
    /// When the current connection opened.
    pub connected_at: Option<Instant>,
    /// When the last connection closed.
    pub disconnected_at: Option<Instant>,
    /// Never dial, refuse its connections.
    pub banned: bool,
    /// A dial was tried.
    pub tried: bool,
    /// Added with `join_peer`: dialled forever, outside `max_peers`.
    pub explicit: bool,
    /// Waiting in a retry timer.
    pub waiting: bool,
    /// In the dial queue.
    pub queued: bool,
    /// The current connection is one we dialled.
    pub client: bool,
    /// Topics it was found under (client mode only).
    pub topics: Vec<Topic>,
    /// Failed attempts since the last success (or fast retry).
    pub attempts: u32,
    /// Current priority.
    pub priority: Priority,
    /// The next dial goes through the swarm's blind relay (set after a punch failed with
    /// an error that only a relay can get around, as hyperswarm's `forceRelaying`).
    pub force_relaying: bool,
    /// The flush generation it was queued in.
    pub(crate) flush_tick: u64,
}

impl PeerInfo {
    /// A fresh peer.
    pub fn new(public_key: PublicKey, relay_addresses: Vec<SocketAddrV4>) -> Self {
        PeerInfo {
            public_key,
            relay_addresses,
            reconnecting: true,
            proven: false,
            connected_at: None,
            disconnected_at: None,
            banned: false,
            tried: false,
            explicit: false,
            waiting: false,
            queued: false,
            client: false,
            topics: Vec::new(),
            attempts: 0,
            priority: Priority::Normal,
            force_relaying: false,
            flush_tick: 0,
        }
    }

    /// Priority at or above normal.
    pub fn prioritized(&self) -> bool {
        self.priority >= Priority::Normal
    }

    fn compute_priority(&self) -> Priority {
        let stale = self.tried && !self.proven;
        if stale || self.attempts > 3 {
            Priority::VeryLow
        } else {
            match self.attempts {
                3 => Priority::Low,
                2 => Priority::High,
                1 => Priority::VeryHigh,
                _ => Priority::Normal,
            }
        }
    }

    pub(crate) fn on_connected(&mut self, now: Instant) {
        self.proven = true;
        self.connected_at = Some(now);
    }

    pub(crate) fn on_disconnected(&mut self, now: Instant) {
        self.disconnected_at = Some(now);
        if let Some(at) = self.connected_at.take() {
            if now.saturating_duration_since(at) >= MIN_CONNECTION_TIME {
                self.attempts = 0; // fast retry after a long-lived connection
            }
        }
        self.attempts += 1;
    }

    pub(crate) fn reset(&mut self) {
        self.client = false;
        self.proven = false;
        self.tried = false;
        self.attempts = 0;
    }

    /// Recomputes the priority; false if the peer must not be queued.
    pub(crate) fn update_priority(&mut self) -> bool {
        if self.explicit && self.attempts > 3 {
            self.attempts = 3;
        }
        if self.banned || self.queued || self.attempts > 3 {
            return false;
        }
        self.priority = self.compute_priority();
        true
    }

    pub(crate) fn add_topic(&mut self, topic: Topic) -> bool {
        if self.topics.contains(&topic) {
            return false;
        }
        self.topics.push(topic);
        true
    }

    /// True when the swarm may forget it.
    pub(crate) fn should_gc(&self) -> bool {
        !(self.banned || self.queued || self.explicit || self.waiting)
    }
}
