//! Hyperswarm in Rust: join topics, find peers on the DHT, keep exactly one encrypted
//! connection per peer, and redial with hyperswarm's retry rules. Wire-compatible with JS
//! hyperswarm 4: a Rust swarm and a JS swarm on the same topic connect to each other, and two
//! peers that dial each other at the same moment keep the same single connection.
//!
//! # Layout
//! - [`core`]: sans-IO state machines: the dial queue ([`core::dialer::Dialer`]: priorities,
//!   retry tiers, limits, explicit peers, bans, flush) and the connection set with the
//!   hyperswarm tie-break ([`core::connections`]).
//! - Actors (each startable alone, messages typed and documented in their modules):
//!   [`topics::TopicActor`] (topic bookkeeping: announce / lookup, refresh timers, flushed
//!   state), [`dialer::DialerActor`] (whom to dial and when), [`session::SessionActor`] (one per
//!   connection), [`swarm::SwarmActor`] (connection set, limits, firewall, events).
//! - [`Swarm`]: the `Send + Sync + Clone` handle applications use; no actix types leak.
//!
//! # Example
//! Two swarms on a local testnet find each other through a topic:
//! ```no_run
//! use corenet_dht::Testnet;
//! use corenet_swarm::{JoinOptions, Swarm};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), corenet_swarm::Error> {
//! let testnet = Testnet::new(5, 0).await?;
//! let a = Swarm::builder().bootstrap(testnet.bootstrap.clone()).build().await?;
//! let b = Swarm::builder().bootstrap(testnet.bootstrap.clone()).build().await?;
//! let topic = corenet_codec::Topic::from_name("hello");
//! a.join(topic, JoinOptions::server()).await?.flushed().await?;
//! b.join(topic, JoinOptions::client()).await?.flushed().await?;
//! let mut conns = b.connections();
//! let conn = conns.recv().await.expect("a connection");
//! assert_eq!(conn.remote_public_key(), a.public_key());
//! # Ok(()) }
//! ```

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod core;
pub mod dialer;
pub mod session;
pub mod swarm;
pub mod topics;

use std::future::Future;
use std::net::SocketAddrV4;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use corenet_codec::{PublicKey, Topic};
use corenet_dht::{Dht, DhtConfig};
use corenet_noise::KeyPair;
use dashmap::DashMap;
use tokio::sync::{broadcast, mpsc};

pub use session::{Connection, ConnectionInfo, SessionGuard, SessionStats, Transport};

use crate::core::dialer::DialerConfig;
use crate::dialer::{DialerActor, JoinPeer, SetReconnect};
use crate::swarm::{BanPeer, ClosePeer, DestroySwarm, SwarmActor, SwarmSettings};
use crate::topics::{
    GetStatus, GetTopics, Join, Leave, LeaveSession, Refresh, RefreshAll, TopicActor, WaitFlushed,
};

/// Errors of the swarm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The swarm (or its DHT) is gone.
    #[error("the swarm has been destroyed")]
    Destroyed,
    /// The DHT failed.
    #[error(transparent)]
    Dht(#[from] corenet_dht::Error),
    /// Announcing or looking up a topic failed.
    #[error("topic refresh failed")]
    RefreshFailed,
}

/// The future a [`Firewall`] returns.
pub type FirewallFuture = Pin<Box<dyn Future<Output = bool> + Send>>;

/// Decides whether to accept a connecting peer: `(its public key, its address as the relay saw
/// it)` to `true` (accept) or `false` (refuse, and ban). Unlike hyperswarm's, it may be async
/// (look the key up in a database, ask a user).
pub type Firewall = Arc<dyn Fn(PublicKey, SocketAddrV4) -> FirewallFuture + Send + Sync>;

/// How to join a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JoinOptions {
    /// Announce ourselves so that others connect to us.
    pub server: bool,
    /// Look others up and connect to them.
    pub client: bool,
}

impl Default for JoinOptions {
    fn default() -> Self {
        JoinOptions {
            server: true,
            client: true,
        }
    }
}

impl JoinOptions {
    /// Server only.
    pub fn server() -> Self {
        JoinOptions {
            server: true,
            client: false,
        }
    }
    /// Client only.
    pub fn client() -> Self {
        JoinOptions {
            server: false,
            client: true,
        }
    }
}

/// A topic's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicStatus {
    /// The topic.
    pub topic: Topic,
    /// Announced.
    pub server: bool,
    /// Looked up.
    pub client: bool,
    /// The latest refresh finished.
    pub flushed: bool,
    /// Refreshes finished so far.
    pub refreshes: u64,
}

/// What the swarm knows about a peer (hyperswarm `PeerInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its public key.
    pub public_key: PublicKey,
    /// Topics it was found under (client mode).
    pub topics: Vec<Topic>,
    /// Priority at or above normal.
    pub prioritized: bool,
    /// Added with [`Swarm::join_peer`].
    pub explicit: bool,
    /// Banned.
    pub banned: bool,
    /// Redialled when the connection drops.
    pub reconnecting: bool,
    /// Failed attempts since the last success.
    pub attempts: u32,
}

impl PeerInfo {
    pub(crate) fn from_state(p: &core::peer::PeerInfo) -> Self {
        PeerInfo {
            public_key: p.public_key,
            topics: p.topics.clone(),
            prioritized: p.prioritized(),
            explicit: p.explicit,
            banned: p.banned,
            reconnecting: p.reconnecting,
            attempts: p.attempts,
        }
    }
}

/// A live connection as [`Swarm::connections_now`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConnection {
    /// The peer.
    pub public_key: PublicKey,
    /// Its address.
    pub remote_address: SocketAddrV4,
    /// We dialled it.
    pub is_initiator: bool,
    /// How.
    pub transport: Transport,
    /// Which path its packets took when it opened (direct, LAN, punched, relayed).
    pub path: corenet_dht::PathKind,
}

/// What happens in the swarm.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SwarmEvent {
    /// A connection opened (it is in [`Swarm::connections`]).
    Connected {
        /// The peer.
        public_key: PublicKey,
        /// We dialled it.
        client: bool,
    },
    /// The connection to a peer closed.
    Disconnected {
        /// The peer.
        public_key: PublicKey,
    },
    /// A peer was banned (by the firewall or [`Swarm::ban`]).
    Banned {
        /// The peer.
        public_key: PublicKey,
    },
}

/// Counters (hyperswarm `stats`).
#[derive(Debug, Default)]
pub struct Stats {
    /// Dials started.
    pub client_attempted: AtomicU64,
    /// Dials that opened.
    pub client_opened: AtomicU64,
    /// Dialled connections that closed.
    pub client_closed: AtomicU64,
    /// Accepted connections.
    pub server_opened: AtomicU64,
    /// Accepted connections that closed.
    pub server_closed: AtomicU64,
    /// Peers banned.
    pub banned_peers: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// Dials started.
    pub client_attempted: u64,
    /// Dials that opened.
    pub client_opened: u64,
    /// Dialled connections that closed.
    pub client_closed: u64,
    /// Accepted connections.
    pub server_opened: u64,
    /// Accepted connections that closed.
    pub server_closed: u64,
    /// Peers banned.
    pub banned_peers: u64,
}

/// Builds a [`Swarm`]. Every setter states its default.
#[derive(Clone, Default)]
pub struct SwarmBuilder {
    key_pair: Option<KeyPair>,
    dht: Option<Dht>,
    bootstrap: Option<Vec<SocketAddrV4>>,
    max_peers: Option<usize>,
    max_parallel: Option<usize>,
    max_client_connections: Option<usize>,
    max_server_connections: Option<usize>,
    firewall: Option<Firewall>,
    host: Option<std::net::Ipv4Addr>,
    relay_through: Option<PublicKey>,
}

impl std::fmt::Debug for SwarmBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmBuilder").finish_non_exhaustive()
    }
}

impl SwarmBuilder {
    /// Our identity. Default: a random key pair.
    pub fn key_pair(mut self, kp: KeyPair) -> Self {
        self.key_pair = Some(kp);
        self
    }
    /// Our identity from a 32-byte seed. Default: random.
    pub fn seed(self, seed: [u8; 32]) -> Self {
        self.key_pair(KeyPair::from_seed(seed))
    }
    /// An existing DHT node to use. Default: a new one.
    pub fn dht(mut self, dht: Dht) -> Self {
        self.dht = Some(dht);
        self
    }
    /// Bootstrap nodes of a new DHT node. Default: the public bootstrap nodes.
    pub fn bootstrap(mut self, nodes: Vec<SocketAddrV4>) -> Self {
        self.bootstrap = Some(nodes);
        self
    }
    /// Address a new DHT node binds. Default: 0.0.0.0 (127.0.0.1 with local bootstrap nodes).
    pub fn host(mut self, host: std::net::Ipv4Addr) -> Self {
        self.host = Some(host);
        self
    }
    /// Connections before the swarm stops dialling. Default: 64. Explicit peers
    /// ([`Swarm::join_peer`]) are dialled regardless.
    pub fn max_peers(mut self, n: usize) -> Self {
        self.max_peers = Some(n);
        self
    }
    /// Dials in flight at once. Default: 3.
    pub fn max_parallel(mut self, n: usize) -> Self {
        self.max_parallel = Some(n);
        self
    }
    /// Dialled connections at most. Default: unlimited.
    pub fn max_client_connections(mut self, n: usize) -> Self {
        self.max_client_connections = Some(n);
        self
    }
    /// Accepted connections at most. Default: unlimited.
    pub fn max_server_connections(mut self, n: usize) -> Self {
        self.max_server_connections = Some(n);
        self
    }
    /// Decides about connecting peers (async). Default: accept all.
    pub fn firewall(mut self, f: Firewall) -> Self {
        self.firewall = Some(f);
        self
    }

    /// A blind relay for the peers we cannot reach directly or by a punch (hyperswarm
    /// `relayThrough`): dials use it once a punch failed with HOLEPUNCH_ABORTED,
    /// HOLEPUNCH_DOUBLE_RANDOMIZED_NATS, CANNOT_HOLEPUNCH or REMOTE_NOT_HOLEPUNCHABLE, and
    /// from the start while our NAT randomizes ports; as a server we offer it while our NAT
    /// randomizes ports. Default: none (no relaying).
    pub fn relay_through(mut self, relay: PublicKey) -> Self {
        self.relay_through = Some(relay);
        self
    }

    /// Starts the swarm (and its DHT node unless one was given).
    pub async fn build(self) -> Result<Swarm, Error> {
        let key_pair = self.key_pair.unwrap_or_else(KeyPair::generate);
        let dht = match self.dht {
            Some(d) => d,
            None => {
                let bootstrap = self
                    .bootstrap
                    .unwrap_or_else(|| corenet_dht::DEFAULT_BOOTSTRAP.to_vec());
                let local = bootstrap.iter().all(|b| b.ip().is_loopback()) && !bootstrap.is_empty();
                let host = self.host.unwrap_or(if local {
                    std::net::Ipv4Addr::LOCALHOST
                } else {
                    std::net::Ipv4Addr::UNSPECIFIED
                });
                let d = Dht::spawn(
                    DhtConfig::default()
                        .with_host(host)
                        .with_bootstrap(bootstrap),
                )
                .await?;
                d.bootstrapped().await?;
                d
            }
        };
        let dialer_config = DialerConfig {
            max_peers: self.max_peers.unwrap_or(core::dialer::MAX_PEERS),
            max_parallel: self.max_parallel.unwrap_or(core::dialer::MAX_PARALLEL),
            max_client_connections: self.max_client_connections.unwrap_or(usize::MAX),
            seed: rand::random(),
            ..DialerConfig::default()
        };
        let settings = SwarmSettings {
            max_server_connections: self.max_server_connections.unwrap_or(usize::MAX),
            firewall: self.firewall,
            relay_through: self.relay_through,
        };
        let (conn_tx, conn_rx) = mpsc::channel(64);
        let (events, _) = broadcast::channel(1024);
        let stats = Arc::new(Stats::default());
        let peers = Arc::new(DashMap::new());
        let connections = Arc::new(DashMap::new());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let kp = key_pair.clone();
        let d = dht.clone();
        let ev = events.clone();
        let st = stats.clone();
        let pe = peers.clone();
        let co = connections.clone();
        corenet_dht::actor::system().spawn(async move {
            let local = kp.public_key();
            let swarm = SwarmActor::create(|ctx| {
                let dialer =
                    DialerActor::new(dialer_config, local, ctx.address().recipient(), pe).start();
                SwarmActor::new(kp.clone(), d.clone(), settings, conn_tx, ev, st, co, dialer)
            });
            let _ = tx.send(swarm);
        });
        let swarm_addr = rx.await.map_err(|_| Error::Destroyed)?;
        // The dialer lives inside the swarm actor's state; ask for it once.
        let dialer = swarm_addr
            .send(GetDialer)
            .await
            .map_err(|_| Error::Destroyed)?;
        let (ttx, trx) = tokio::sync::oneshot::channel();
        let (d2, kp2, dl, sw) = (
            dht.clone(),
            key_pair.clone(),
            dialer.clone(),
            swarm_addr.clone(),
        );
        corenet_dht::actor::system().spawn(async move {
            let topics = TopicActor::new(
                d2,
                kp2,
                dl.clone().recipient(),
                dl.recipient(),
                sw.recipient(),
            )
            .start();
            let _ = ttx.send(topics);
        });
        let topics = trx.await.map_err(|_| Error::Destroyed)?;
        Ok(Swarm {
            inner: Arc::new(Inner {
                key_pair,
                dht,
                swarm: swarm_addr,
                dialer,
                topics,
                connections_rx: Mutex::new(Some(conn_rx)),
                events,
                stats,
                peers,
                connections,
            }),
        })
    }
}

/// Internal: fetch the dialer's address from the swarm actor.
#[derive(Debug, Message)]
#[rtype(result = "Addr<DialerActor>")]
struct GetDialer;

impl Handler<GetDialer> for SwarmActor {
    type Result = MessageResult<GetDialer>;
    fn handle(&mut self, _: GetDialer, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.dialer_addr())
    }
}

struct Inner {
    key_pair: KeyPair,
    dht: Dht,
    swarm: Addr<SwarmActor>,
    dialer: Addr<DialerActor>,
    topics: Addr<TopicActor>,
    connections_rx: Mutex<Option<mpsc::Receiver<Connection>>>,
    events: broadcast::Sender<SwarmEvent>,
    stats: Arc<Stats>,
    peers: Arc<DashMap<PublicKey, PeerInfo>>,
    connections: Arc<DashMap<PublicKey, PeerConnection>>,
}

/// A swarm: `Send + Sync + Clone`; every clone is the same swarm.
#[derive(Clone)]
pub struct Swarm {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Swarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Swarm")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

/// A joined topic session (hyperswarm `PeerDiscoverySession`).
#[derive(Debug, Clone)]
pub struct PeerDiscovery {
    topic: Topic,
    session: u64,
    topics: Addr<TopicActor>,
}

impl PeerDiscovery {
    /// The topic.
    pub fn topic(&self) -> Topic {
        self.topic
    }

    /// Waits until the topic is announced (server) and its first lookup processed (client).
    pub async fn flushed(&self) -> Result<(), Error> {
        let rx = self
            .topics
            .send(WaitFlushed {
                topic: Some(self.topic),
            })
            .await
            .map_err(|_| Error::Destroyed)?;
        match rx.await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::RefreshFailed),
            Err(_) => Err(Error::Destroyed),
        }
    }

    /// Changes this session's modes (or re-runs the topic) and waits for the refresh.
    pub async fn refresh(&self, options: Option<JoinOptions>) -> Result<(), Error> {
        let rx = self
            .topics
            .send(Refresh {
                topic: self.topic,
                session: self.session,
                options,
            })
            .await
            .map_err(|_| Error::Destroyed)?;
        match rx.await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::RefreshFailed),
            Err(_) => Err(Error::Destroyed),
        }
    }

    /// Ends this session; the topic is left (and unannounced) when it was the last one.
    pub async fn destroy(self) -> Result<(), Error> {
        let rx = self
            .topics
            .send(LeaveSession {
                topic: self.topic,
                session: self.session,
            })
            .await
            .map_err(|_| Error::Destroyed)?;
        rx.await.map_err(|_| Error::Destroyed)
    }
}

impl Swarm {
    /// A builder with the defaults.
    pub fn builder() -> SwarmBuilder {
        SwarmBuilder::default()
    }

    /// Our public key.
    pub fn public_key(&self) -> PublicKey {
        self.inner.key_pair.public_key()
    }

    /// Our key pair.
    pub fn key_pair(&self) -> &KeyPair {
        &self.inner.key_pair
    }

    /// The NAT as the swarm's DHT node sees it (no traffic; see
    /// [`corenet_dht::Dht::sample_nat`] for a per-socket classification).
    pub async fn nat(&self) -> Result<corenet_dht::NatStatus, Error> {
        Ok(self.inner.dht.nat().await?)
    }

    /// Holepunch and relay counters of the swarm's DHT node: punches tried per strategy,
    /// successes, failures, relay pairings and upgrades.
    pub async fn holepunch_stats(&self) -> Result<corenet_dht::PunchStats, Error> {
        Ok(self.inner.dht.info().await?.punches)
    }

    /// The DHT node.
    pub fn dht(&self) -> &Dht {
        &self.inner.dht
    }

    /// Joins a topic (server: announce; client: look up and connect). Returns once the
    /// join is registered; [`PeerDiscovery::flushed`] waits for the first announce / lookup.
    pub async fn join(&self, topic: Topic, options: JoinOptions) -> Result<PeerDiscovery, Error> {
        let session = self
            .inner
            .topics
            .send(Join { topic, options })
            .await
            .map_err(|_| Error::Destroyed)?;
        Ok(PeerDiscovery {
            topic,
            session,
            topics: self.inner.topics.clone(),
        })
    }

    /// Leaves a topic: unannounces it and stops looking it up. Existing connections are kept
    /// (as in hyperswarm); peers found only through it are not redialled. Use
    /// [`Swarm::leave_and_disconnect`] to also close connections that served only this topic.
    pub async fn leave(&self, topic: Topic) -> Result<(), Error> {
        let rx = self
            .inner
            .topics
            .send(Leave { topic })
            .await
            .map_err(|_| Error::Destroyed)?;
        rx.await.map_err(|_| Error::Destroyed)
    }

    /// Leaves a topic and closes the connections to peers found only under it (hyperswarm
    /// #50).
    pub async fn leave_and_disconnect(&self, topic: Topic) -> Result<(), Error> {
        self.leave(topic).await?;
        let topics = self
            .inner
            .topics
            .send(GetTopics)
            .await
            .map_err(|_| Error::Destroyed)?;
        let still: std::collections::HashSet<Topic> = topics.into_iter().map(|t| t.topic).collect();
        for p in self.inner.peers.iter() {
            let only_this = !p.topics.is_empty()
                && p.topics.iter().all(|t| *t == topic || !still.contains(t))
                && p.topics.contains(&topic);
            if only_this && !p.explicit {
                self.inner.swarm.do_send(ClosePeer {
                    public_key: p.public_key,
                    reason: "left the topic".into(),
                });
            }
        }
        Ok(())
    }

    /// The state of a joined topic.
    pub async fn status(&self, topic: Topic) -> Result<Option<TopicStatus>, Error> {
        self.inner
            .topics
            .send(GetStatus { topic })
            .await
            .map_err(|_| Error::Destroyed)
    }

    /// Every joined topic.
    pub async fn topics(&self) -> Result<Vec<TopicStatus>, Error> {
        self.inner
            .topics
            .send(GetTopics)
            .await
            .map_err(|_| Error::Destroyed)
    }

    /// Connects to this peer and keeps reconnecting (not counted against `max_peers`).
    pub fn join_peer(&self, public_key: PublicKey) {
        self.inner.dialer.do_send(JoinPeer {
            public_key,
            join: true,
        });
    }

    /// Stops reconnecting to an explicit peer.
    pub fn leave_peer(&self, public_key: PublicKey) {
        self.inner.dialer.do_send(JoinPeer {
            public_key,
            join: false,
        });
    }

    /// Bans a peer: its connection closes and it is never dialled or accepted again.
    pub fn ban(&self, public_key: PublicKey) {
        self.inner.swarm.do_send(BanPeer {
            public_key,
            banned: true,
        });
    }

    /// Lifts a ban.
    pub fn unban(&self, public_key: PublicKey) {
        self.inner.swarm.do_send(BanPeer {
            public_key,
            banned: false,
        });
    }

    /// Whether a peer is redialled when its connection drops (hyperswarm
    /// `peerInfo.reconnect`).
    pub fn set_reconnect(&self, public_key: PublicKey, reconnect: bool) {
        self.inner.dialer.do_send(SetReconnect {
            public_key,
            reconnect,
        });
    }

    /// Starts accepting connections (also done by joining a topic as server); returns our
    /// relay addresses.
    pub async fn listen(&self) -> Result<Vec<SocketAddrV4>, Error> {
        self.inner
            .swarm
            .send(topics::EnsureListening)
            .await
            .map_err(|_| Error::Destroyed)?
            .map_err(|_| Error::RefreshFailed)
    }

    /// Waits until every topic's pending announce and lookup is done and every peer found so
    /// far has been dialled.
    pub async fn flush(&self) -> Result<(), Error> {
        let rx = self
            .inner
            .topics
            .send(WaitFlushed { topic: None })
            .await
            .map_err(|_| Error::Destroyed)?;
        let _ = rx.await;
        let rx = self
            .inner
            .dialer
            .send(dialer::Flush)
            .await
            .map_err(|_| Error::Destroyed)?;
        rx.await.map_err(|_| Error::Destroyed)
    }

    /// Re-announces and re-looks up every topic (after a network change).
    pub fn refresh_all(&self) {
        self.inner.topics.do_send(RefreshAll);
    }

    /// The stream of new connections. It can be taken once; later calls return a closed
    /// receiver.
    pub fn connections(&self) -> mpsc::Receiver<Connection> {
        match self
            .inner
            .connections_rx
            .lock()
            .ok()
            .and_then(|mut r| r.take())
        {
            Some(r) => r,
            None => mpsc::channel(1).1,
        }
    }

    /// The live connections now (read without a message).
    pub fn connections_now(&self) -> Vec<PeerConnection> {
        self.inner.connections.iter().map(|c| c.clone()).collect()
    }

    /// The peers known now (read without a message).
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.inner.peers.iter().map(|p| p.clone()).collect()
    }

    /// Swarm events (connections, disconnections, bans).
    pub fn events(&self) -> broadcast::Receiver<SwarmEvent> {
        self.inner.events.subscribe()
    }

    /// Counters.
    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.inner.stats;
        StatsSnapshot {
            client_attempted: s.client_attempted.load(Ordering::Relaxed),
            client_opened: s.client_opened.load(Ordering::Relaxed),
            client_closed: s.client_closed.load(Ordering::Relaxed),
            server_opened: s.server_opened.load(Ordering::Relaxed),
            server_closed: s.server_closed.load(Ordering::Relaxed),
            banned_peers: s.banned_peers.load(Ordering::Relaxed),
        }
    }

    /// Leaves every topic (unannouncing), closes every connection and stops.
    pub async fn destroy(&self) {
        if let Ok(topics) = self.inner.topics.send(GetTopics).await {
            for t in topics {
                let _ = self.leave(t.topic).await;
            }
        }
        let _ = self.inner.swarm.send(DestroySwarm).await;
    }
}
