//! corenet: share hypercores with the peers that want them, over the network that JavaScript
//! Hyperswarm / Hypercore apps already live on.
//!
//! This is the facade of the corenet stack, with the API of `@corestore/networker`:
//! [`Networker::configure`] a discovery key to announce it and/or look it up on the DHT; every
//! peer found gets exactly one encrypted connection (deduplicated by Noise key), over which
//! every core both sides have replicates; [`Networker::register_extension`] adds protocol
//! extensions on every connection. Unlike the JS networker, the configuration and the
//! identity are persisted: a restarted process announces and looks up exactly what it did
//! before, with the same public key.
//!
//! # Layout
//! - [`Networker`] / [`NetworkerBuilder`]: the API (a `Send + Sync + Clone` handle).
//! - [`persist`]: the redb store of identity and configuration.
//! - Under it: `corenet-swarm` (topics, dialing, one connection per peer), `corenet-mux`
//!   (protomux), `corenet-replication` (hypercore, corestore), `corenet-extensions`,
//!   `corenet-dht`, `corenet-udx`, `corenet-noise`, `corenet-codec`.
//!
//! The actors that run the stack live on their own thread; the API is plain async Rust and
//! works from any tokio runtime.
//!
//! # Example
//! Two peers on a local testnet replicate a core, from a plain `#[tokio::main]`:
//! ```
//! use corenet::{Configure, Corestore, Networker, Testnet};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let testnet = Testnet::new(5, 0).await?;
//!     // A writer shares a core...
//!     let store_a = Corestore::in_memory();
//!     let core = store_a.get("notes")?;
//!     core.append([&b"hello"[..], &b"world"[..]])?;
//!     let a = Networker::builder(store_a).bootstrap(testnet.bootstrap.clone()).build().await?;
//!     a.configure(core.discovery_key(), Configure::default()).await?;
//!     // ...a reader finds it by its key and reads it.
//!     let store_b = Corestore::in_memory();
//!     let copy = store_b.get_by_key(core.key())?;
//!     let b = Networker::builder(store_b).bootstrap(testnet.bootstrap.clone()).build().await?;
//!     b.configure(copy.discovery_key(), Configure::default()).await?;
//!     assert_eq!(copy.fetch(1).await?, &b"world"[..]);
//!     a.close().await?;
//!     b.close().await?;
//!     Ok(())
//! }
//! ```

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod events;
pub mod persist;

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use corenet_extensions::{Encoding, Extension, ExtensionOptions, Extensions};
use corenet_mux::MuxHandle;
use corenet_swarm::{JoinOptions, PeerDiscovery, Swarm};
use dashmap::DashMap;
use tokio::sync::Notify;

use events::EventBus;

pub use corenet_codec::{DiscoveryKey, PublicKey, Topic};
pub use corenet_dht::{NatStatus, NatType, PathKind, Testnet};
pub use corenet_extensions as extensions;
pub use corenet_noise::KeyPair;
pub use corenet_replication::{Corestore, Hypercore};
pub use corenet_swarm::{Firewall, TopicStatus, Transport};
pub use events::Events;

use persist::{Persist, PersistError};

/// Errors of the networker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The networker was closed.
    #[error("the networker is closed")]
    Closed,
    /// The swarm failed.
    #[error(transparent)]
    Swarm(#[from] corenet_swarm::Error),
    /// The DHT failed.
    #[error(transparent)]
    Dht(#[from] corenet_dht::Error),
    /// Replication failed.
    #[error(transparent)]
    Replication(#[from] corenet_replication::Error),
    /// An extension failed.
    #[error(transparent)]
    Extension(#[from] corenet_extensions::Error),
    /// The configuration store failed.
    #[error(transparent)]
    Persist(#[from] PersistError),
    /// [`NetworkerBuilder::build`] was awaited outside a tokio runtime (the networker's
    /// tasks run on the caller's runtime).
    #[error("the networker needs a tokio runtime: build it from within one")]
    NoRuntime,
}

/// What to do with a discovery key (corestore-networker `configure` options).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Configure {
    /// Announce it so that peers connect to us. Default: true.
    pub announce: bool,
    /// Look it up and connect to the peers found. Default: true.
    pub lookup: bool,
    /// Wait until the announce and lookup are done and the connections they led to are set up.
    /// Default: true.
    pub flush: bool,
}

impl Default for Configure {
    fn default() -> Self {
        Configure {
            announce: true,
            lookup: true,
            flush: true,
        }
    }
}

impl Configure {
    /// Stop announcing and looking up (leave).
    pub fn leave() -> Self {
        Configure {
            announce: false,
            lookup: false,
            flush: false,
        }
    }

    /// Announce only, and wait for it (a seeder that others find).
    pub fn announce_only() -> Self {
        Configure {
            announce: true,
            lookup: false,
            flush: true,
        }
    }

    /// Look up only, without waiting (a reader that connects to whoever has it).
    pub fn lookup_only() -> Self {
        Configure {
            announce: false,
            lookup: true,
            flush: false,
        }
    }
}

/// A connected peer (corestore-networker `peers` entries).
#[derive(Debug, Clone)]
pub struct Peer {
    /// The peer's public key (proven by Noise).
    pub remote_public_key: PublicKey,
    /// Its address.
    pub remote_address: SocketAddrV4,
    /// How the connection travels.
    pub transport: Transport,
    /// Which path its packets took when it opened (direct, LAN, punched, relayed).
    pub path: corenet_dht::PathKind,
    /// We dialled it.
    pub is_initiator: bool,
    /// The connection's channel multiplexer (replication and extensions run over it).
    pub connection: MuxHandle,
    /// The connection's id (a replacement connection to the same peer gets a new one).
    pub connection_id: u64,
    extension_peer: corenet_extensions::Peer,
}

impl Peer {
    /// This peer as the extensions see it: what [`Extension::send`] takes, and what comes with
    /// every message received from it.
    pub fn extension_peer(&self) -> &corenet_extensions::Peer {
        &self.extension_peer
    }
}

impl AsRef<corenet_extensions::Peer> for Peer {
    fn as_ref(&self) -> &corenet_extensions::Peer {
        &self.extension_peer
    }
}

/// What the networker reports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum NetworkerEvent {
    /// A peer connected: once per connection the swarm keeps, never for a duplicate it
    /// dropped. A connection that replaces a live one to the same key (the peer restarted
    /// and reconnected before its old connection was seen to close) comes right after a
    /// [`NetworkerEvent::PeerRemove`] of the old one, so the [`Peer`] in hand always names a
    /// live connection.
    PeerAdd(Peer),
    /// A peer's connection closed or was replaced (once per [`NetworkerEvent::PeerAdd`]).
    PeerRemove(Peer),
    /// A discovery key was configured and its announce/lookup started.
    Joined(DiscoveryKey),
    /// A discovery key's announce and lookup finished.
    Flushed(DiscoveryKey),
}

/// Builds a [`Networker`]. Every setter states its default.
#[derive(Default)]
pub struct NetworkerBuilder {
    store: Option<Corestore>,
    key_pair: Option<KeyPair>,
    bootstrap: Option<Vec<SocketAddrV4>>,
    firewall: Option<Firewall>,
    persist: Option<bool>,
    persist_dir: Option<PathBuf>,
    max_peers: Option<usize>,
    host: Option<std::net::Ipv4Addr>,
    dht: Option<corenet_dht::Dht>,
    relay_through: Option<PublicKey>,
}

impl std::fmt::Debug for NetworkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkerBuilder").finish_non_exhaustive()
    }
}

impl NetworkerBuilder {
    /// Our identity. Default: the persisted one (created on first run), or a random one for
    /// in-memory stores.
    pub fn key_pair(mut self, kp: KeyPair) -> Self {
        self.key_pair = Some(kp);
        self
    }
    /// Our identity from a 32-byte seed. Default: as [`NetworkerBuilder::key_pair`].
    pub fn seed(self, seed: [u8; 32]) -> Self {
        self.key_pair(KeyPair::from_seed(seed))
    }
    /// DHT bootstrap nodes. Default: the public bootstrap nodes.
    pub fn bootstrap(mut self, nodes: Vec<SocketAddrV4>) -> Self {
        self.bootstrap = Some(nodes);
        self
    }
    /// Decides about connecting peers (the corestore-networker `onauthenticate` hook, async).
    /// Default: accept all.
    pub fn firewall(mut self, f: Firewall) -> Self {
        self.firewall = Some(f);
        self
    }
    /// Persist identity and configuration. Default: on for stores on disk, off in memory.
    pub fn persist(mut self, on: bool) -> Self {
        self.persist = Some(on);
        self
    }
    /// Where to persist. Default: the corestore's directory.
    pub fn persist_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.persist_dir = Some(dir.into());
        self
    }
    /// Connections before dialling stops (hyperswarm `maxPeers`). Default: 64.
    pub fn max_peers(mut self, n: usize) -> Self {
        self.max_peers = Some(n);
        self
    }
    /// Address the DHT binds. Default: 0.0.0.0 (127.0.0.1 with local bootstrap nodes).
    pub fn host(mut self, host: std::net::Ipv4Addr) -> Self {
        self.host = Some(host);
        self
    }
    /// An existing DHT node. Default: a new one.
    pub fn dht(mut self, dht: corenet_dht::Dht) -> Self {
        self.dht = Some(dht);
        self
    }
    /// A blind relay for peers we cannot reach directly or by a punch (hyperswarm
    /// `relayThrough`; see [`corenet_swarm::SwarmBuilder::relay_through`]). Default: none.
    pub fn relay_through(mut self, relay: PublicKey) -> Self {
        self.relay_through = Some(relay);
        self
    }

    /// Starts the networker: restores the persisted configuration and identity, joins the
    /// swarm, and replicates the corestore with every peer.
    ///
    /// Fails with [`Error::NoRuntime`] when awaited outside a tokio runtime.
    pub async fn build(self) -> Result<Networker, Error> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime);
        }
        let store = self.store.unwrap_or_else(Corestore::in_memory);
        let dir = self
            .persist_dir
            .clone()
            .or_else(|| store.storage_dir().map(PathBuf::from));
        let persist = match (self.persist.unwrap_or(dir.is_some()), dir) {
            (true, Some(d)) => Some(Persist::open(&d)?),
            _ => None,
        };
        let key_pair = match (&self.key_pair, &persist) {
            (Some(kp), Some(p)) => {
                p.set_seed(&kp.seed())?;
                kp.clone()
            }
            (Some(kp), None) => kp.clone(),
            (None, Some(p)) => match p.seed()? {
                Some(s) => KeyPair::from_seed(s),
                None => {
                    let kp = KeyPair::generate();
                    p.set_seed(&kp.seed())?;
                    kp
                }
            },
            (None, None) => KeyPair::generate(),
        };
        let mut sb = Swarm::builder().key_pair(key_pair.clone());
        if let Some(b) = self.bootstrap {
            sb = sb.bootstrap(b);
        }
        if let Some(f) = self.firewall {
            sb = sb.firewall(f);
        }
        if let Some(r) = self.relay_through {
            sb = sb.relay_through(r);
        }
        if let Some(n) = self.max_peers {
            sb = sb.max_peers(n);
        }
        if let Some(h) = self.host {
            sb = sb.host(h);
        }
        if let Some(d) = self.dht {
            sb = sb.dht(d);
        }
        let swarm = sb.build().await?;
        let inner = Arc::new(Inner {
            swarm,
            store,
            extensions: Extensions::new(),
            peers: DashMap::new(),
            events: EventBus::default(),
            topics: DashMap::new(),
            persist,
            closed: AtomicBool::new(false),
            settling: AtomicUsize::new(0),
            settled: Notify::new(),
            next_conn: AtomicU64::new(1),
        });
        let net = Networker { inner };
        net.spawn_accept_loop();
        // Restore what the previous run was configured with.
        let restore = match &net.inner.persist {
            Some(p) => p.topics()?,
            None => Vec::new(),
        };
        for (dk, c) in restore {
            net.join_topic(dk, c).await?;
        }
        Ok(net)
    }
}

struct TopicState {
    options: Configure,
    discovery: PeerDiscovery,
}

struct Inner {
    swarm: Swarm,
    store: Corestore,
    extensions: Extensions,
    peers: DashMap<PublicKey, Peer>,
    events: EventBus,
    topics: DashMap<DiscoveryKey, TopicState>,
    persist: Option<Persist>,
    closed: AtomicBool,
    /// Connections accepted whose replication and extensions are not set up yet.
    settling: AtomicUsize,
    settled: Notify,
    next_conn: AtomicU64,
}

/// The networker: `Send + Sync + Clone`; clones share everything.
#[derive(Clone)]
pub struct Networker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Networker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Networker")
            .field("public_key", &self.public_key())
            .field("peers", &self.inner.peers.len())
            .finish_non_exhaustive()
    }
}

impl Networker {
    /// A builder over `store`.
    pub fn builder(store: Corestore) -> NetworkerBuilder {
        NetworkerBuilder {
            store: Some(store),
            ..Default::default()
        }
    }

    /// A networker over `store` with the defaults (public bootstrap nodes, persisted identity
    /// for stores on disk).
    pub async fn new(store: Corestore) -> Result<Networker, Error> {
        Self::builder(store).build().await
    }

    /// Our public key (the Noise static key of every connection).
    pub fn public_key(&self) -> PublicKey {
        self.inner.swarm.public_key()
    }

    /// The corestore.
    pub fn corestore(&self) -> &Corestore {
        &self.inner.store
    }

    /// The swarm underneath.
    pub fn swarm(&self) -> &Swarm {
        &self.inner.swarm
    }

    /// Where the configuration store is, and where a corrupt one was moved when it was opened.
    pub fn persistence(&self) -> Option<(PathBuf, Option<PathBuf>)> {
        self.inner.persist.as_ref().map(|p| {
            (
                p.path().to_path_buf(),
                p.recovered_from().map(PathBuf::from),
            )
        })
    }

    fn check(&self) -> Result<(), Error> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Announces and/or looks up a discovery key (both false leaves it). With `flush`, waits
    /// until the announce and lookup are done, every peer found has been dialled, and every
    /// connection opened so far replicates.
    pub async fn configure(
        &self,
        discovery_key: DiscoveryKey,
        options: Configure,
    ) -> Result<(), Error> {
        self.check()?;
        if let Some(p) = &self.inner.persist {
            p.set_topic(&discovery_key, &options)?;
        }
        if !options.announce && !options.lookup {
            return self.leave_topic(discovery_key).await;
        }
        self.join_topic(discovery_key, options).await?;
        if options.flush {
            self.flush_topic(discovery_key).await?;
        }
        Ok(())
    }

    async fn join_topic(&self, dk: DiscoveryKey, options: Configure) -> Result<(), Error> {
        let join = JoinOptions {
            server: options.announce,
            client: options.lookup,
        };
        let existing = self.inner.topics.get(&dk).map(|t| t.discovery.clone());
        match existing {
            Some(d) => {
                d.refresh(Some(join)).await.ok();
                if let Some(mut t) = self.inner.topics.get_mut(&dk) {
                    t.options = options;
                }
            }
            None => {
                let discovery = self.inner.swarm.join(Topic::from(dk), join).await?;
                self.inner
                    .topics
                    .insert(dk, TopicState { options, discovery });
            }
        }
        self.inner.events.send(NetworkerEvent::Joined(dk));
        Ok(())
    }

    async fn flush_topic(&self, dk: DiscoveryKey) -> Result<(), Error> {
        let d = self.inner.topics.get(&dk).map(|t| t.discovery.clone());
        if let Some(d) = d {
            d.flushed().await?;
        }
        self.inner.swarm.flush().await?;
        self.settled().await;
        self.inner.events.send(NetworkerEvent::Flushed(dk));
        Ok(())
    }

    /// Waits until every connection accepted so far has its replication and extensions set up.
    async fn settled(&self) {
        loop {
            let notified = self.inner.settled.notified();
            if self.inner.settling.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    async fn leave_topic(&self, dk: DiscoveryKey) -> Result<(), Error> {
        if self.inner.topics.remove(&dk).is_some() {
            self.inner.swarm.leave(Topic::from(dk)).await?;
        }
        Ok(())
    }

    /// Alias of `configure(dk, {announce, lookup, flush: true})` (basestore-networker `join`).
    pub async fn join(&self, discovery_key: DiscoveryKey) -> Result<(), Error> {
        self.configure(discovery_key, Configure::default()).await
    }

    /// Alias of `configure(dk, leave)` (basestore-networker `leave`).
    pub async fn leave(&self, discovery_key: DiscoveryKey) -> Result<(), Error> {
        self.configure(discovery_key, Configure::leave()).await
    }

    /// True if the discovery key is configured (announced or looked up).
    pub fn joined(&self, discovery_key: &DiscoveryKey) -> bool {
        self.inner.topics.contains_key(discovery_key)
    }

    /// True if the discovery key's latest announce/lookup finished.
    pub async fn flushed(&self, discovery_key: &DiscoveryKey) -> bool {
        matches!(self.inner.swarm.status(Topic::from(*discovery_key)).await, Ok(Some(s)) if s.flushed)
    }

    /// The options a discovery key is configured with.
    pub fn status(&self, discovery_key: &DiscoveryKey) -> Option<Configure> {
        self.inner.topics.get(discovery_key).map(|t| t.options)
    }

    /// Every configured discovery key with its options.
    pub fn statuses(&self) -> Vec<(DiscoveryKey, Configure)> {
        self.inner
            .topics
            .iter()
            .map(|t| (*t.key(), t.options))
            .collect()
    }

    /// Starts accepting connections without configuring anything.
    pub async fn listen(&self) -> Result<(), Error> {
        self.check()?;
        self.inner.swarm.listen().await?;
        Ok(())
    }

    /// The connected peers (read without waiting).
    pub fn peers(&self) -> Vec<Peer> {
        self.inner.peers.iter().map(|p| p.clone()).collect()
    }

    /// Peer-add / peer-remove and topic events from now on, as a [`Stream`](futures::Stream)
    /// that ends when the networker closes (after a [`NetworkerEvent::PeerRemove`] for every
    /// peer still connected). Any number of subscribers; none misses an event because it
    /// reads slowly, and none holds more than a bounded queue (see [`Events`]).
    pub fn events(&self) -> Events {
        self.inner.events.subscribe()
    }

    /// Registers a protocol extension on every current and future connection (a protomux
    /// channel named `name`, compatible with JS `Protomux.from(conn).createChannel({protocol:
    /// name})`).
    pub async fn register_extension<E: Encoding>(
        &self,
        name: &str,
        options: ExtensionOptions<E>,
    ) -> Result<Extension<E>, Error> {
        self.check()?;
        Ok(self.inner.extensions.register(name, options).await?)
    }

    /// Unannounces everything, closes every connection and extension. The corestore stays
    /// open.
    pub async fn close(&self) -> Result<(), Error> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.extensions.close().await;
        for p in self.inner.peers.iter() {
            p.connection.close();
        }
        self.inner.swarm.destroy().await;
        self.inner.topics.clear();
        // Every peer still in the table is reported gone now (its connection's own task,
        // later, finds nothing left to report), then the subscriptions end.
        let keys: Vec<PublicKey> = self.inner.peers.iter().map(|p| *p.key()).collect();
        for key in keys {
            if let Some((_, old)) = self.inner.peers.remove(&key) {
                self.inner.events.send(NetworkerEvent::PeerRemove(old));
            }
        }
        self.inner.events.close();
        Ok(())
    }

    /// Takes the swarm's connections: each becomes a mux over which the corestore replicates
    /// and the extensions run.
    fn spawn_accept_loop(&self) {
        let mut conns = self.inner.swarm.connections();
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            while let Some(conn) = conns.recv().await {
                let Some(inner) = weak.upgrade() else { break };
                inner.settling.fetch_add(1, Ordering::AcqRel);
                let net = Networker { inner };
                net.setup(conn).await;
                net.inner.settling.fetch_sub(1, Ordering::AcqRel);
                net.inner.settled.notify_waiters();
            }
        });
    }

    async fn setup(&self, conn: corenet_swarm::Connection) {
        let info = conn.info().clone();
        let (stream, guard) = conn.into_parts();
        let (mux, driver) = MuxHandle::new(
            stream,
            corenet_replication::corestore::replication_driver_config(),
        );
        if let Err(e) = self.inner.store.replicate(&mux) {
            tracing::debug!(peer = %info.remote_public_key, error = %e, "cannot replicate with a peer");
        }
        let ext_peer = corenet_extensions::Peer::new(info.remote_public_key)
            .with_remote_address(std::net::SocketAddr::V4(info.remote_address))
            .with_transport(corenet_extensions::Transport::Udx);
        if let Err(e) = self
            .inner
            .extensions
            .add_session(ext_peer.clone(), mux.clone())
            .await
        {
            tracing::debug!(peer = %info.remote_public_key, error = %e, "cannot add extensions");
        }
        tokio::spawn(driver);
        let id = self.inner.next_conn.fetch_add(1, Ordering::Relaxed);
        let peer = Peer {
            remote_public_key: info.remote_public_key,
            remote_address: info.remote_address,
            transport: info.transport,
            path: info.path,
            is_initiator: info.is_initiator,
            connection: mux.clone(),
            connection_id: id,
            extension_peer: ext_peer,
        };
        if self.inner.closed.load(Ordering::Acquire) {
            mux.destroy();
            return;
        }
        peer_connected(&self.inner.peers, &self.inner.events, peer);
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            tokio::select! {
                reason = guard.aborted() => {
                    tracing::debug!(peer = %info.remote_public_key, %reason, "connection dropped by the swarm");
                    mux.destroy();
                }
                _ = mux.closed() => {}
            }
            drop(guard);
            let Some(inner) = weak.upgrade() else { return };
            peer_disconnected(&inner.peers, &inner.events, &info.remote_public_key, id);
        });
    }
}

/// Records `peer` as the live connection to its key and reports it. A live entry it
/// replaces is reported removed first. The table and the events change under the entry's
/// lock, so whichever of this and the old connection's [`peer_disconnected`] runs first, the
/// events are the same and in order.
fn peer_connected(peers: &DashMap<PublicKey, Peer>, events: &EventBus, peer: Peer) {
    match peers.entry(peer.remote_public_key) {
        dashmap::Entry::Occupied(mut e) => {
            let old = e.insert(peer.clone());
            events.send(NetworkerEvent::PeerRemove(old));
            events.send(NetworkerEvent::PeerAdd(peer));
        }
        dashmap::Entry::Vacant(e) => {
            e.insert(peer.clone());
            events.send(NetworkerEvent::PeerAdd(peer));
        }
    }
}

/// Connection `id` to `key` closed: removed and reported if it is still the live one (a
/// replaced connection was reported when it was replaced).
fn peer_disconnected(
    peers: &DashMap<PublicKey, Peer>,
    events: &EventBus,
    key: &PublicKey,
    id: u64,
) {
    if let dashmap::Entry::Occupied(e) = peers.entry(*key) {
        if e.get().connection_id == id {
            let (_, old) = e.remove_entry();
            events.send(NetworkerEvent::PeerRemove(old));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corenet_mux::DriverConfig;
    use corenet_noise::{Config, SecretStream};

    /// A mux over one end of an in-memory secret stream (its driver never runs).
    async fn mux() -> MuxHandle {
        let (a, b) = tokio::io::duplex(4096);
        let client = tokio::spawn(async move {
            SecretStream::new(a, true, &KeyPair::generate(), Config::default()).await
        });
        let _server = SecretStream::new(b, false, &KeyPair::generate(), Config::default())
            .await
            .unwrap();
        let (mux, _driver) =
            MuxHandle::new(client.await.unwrap().unwrap(), DriverConfig::default());
        mux
    }

    async fn peer(key: PublicKey, id: u64) -> Peer {
        Peer {
            remote_public_key: key,
            remote_address: SocketAddrV4::new([127, 0, 0, 1].into(), 4000 + id as u16),
            transport: Transport::Udx,
            path: corenet_dht::PathKind::Direct,
            is_initiator: false,
            connection: mux().await,
            connection_id: id,
            extension_peer: corenet_extensions::Peer::new(key),
        }
    }

    /// The events so far, as (add?, connection id).
    fn drain(rx: &mut Events) -> Vec<(bool, u64)> {
        let mut out = Vec::new();
        while let Some(ev) = rx.try_recv() {
            match ev {
                NetworkerEvent::PeerAdd(p) => out.push((true, p.connection_id)),
                NetworkerEvent::PeerRemove(p) => out.push((false, p.connection_id)),
                _ => {}
            }
        }
        out
    }

    /// A connection replacing a live one to the same key (a restarted peer that reconnected
    /// before its old connection was seen to close) is reported as PeerRemove of the old, then
    /// PeerAdd of the new, whether the old connection's close or the new one's setup is
    /// handled first. (Before, when the setup came first, nothing was reported and the `Peer`
    /// from the first PeerAdd named a dead extension session.)
    #[tokio::test]
    async fn a_replacement_is_reported_whichever_side_runs_first() {
        let key = KeyPair::generate().public_key();
        let other = KeyPair::generate().public_key();
        for close_first in [true, false] {
            let peers = DashMap::new();
            let events = EventBus::default();
            let mut rx = events.subscribe();
            peer_connected(&peers, &events, peer(key, 1).await);
            peer_connected(&peers, &events, peer(other, 7).await);
            assert_eq!(drain(&mut rx), [(true, 1), (true, 7)]);
            if close_first {
                peer_disconnected(&peers, &events, &key, 1);
                peer_connected(&peers, &events, peer(key, 2).await);
            } else {
                peer_connected(&peers, &events, peer(key, 2).await);
                peer_disconnected(&peers, &events, &key, 1);
            }
            assert_eq!(
                drain(&mut rx),
                [(false, 1), (true, 2)],
                "close first: {close_first}"
            );
            assert_eq!(peers.len(), 2);
            assert_eq!(peers.get(&key).unwrap().connection_id, 2);
            // The live connection closes: one PeerRemove; a stale close changes nothing.
            peer_disconnected(&peers, &events, &key, 2);
            peer_disconnected(&peers, &events, &key, 1);
            assert_eq!(drain(&mut rx), [(false, 2)]);
            assert_eq!(peers.len(), 1);
        }
    }

    /// What a subscriber saw, checked against the once-per-peer contract as it goes: an add
    /// only for a key it sees no live connection for, a remove only of the connection it
    /// sees live.
    fn follow(view: &mut std::collections::HashMap<PublicKey, u64>, rx: &mut Events) {
        while let Some(ev) = rx.try_recv() {
            match ev {
                NetworkerEvent::PeerAdd(p) => {
                    let old = view.insert(p.remote_public_key, p.connection_id);
                    assert_eq!(old, None, "an add while {old:?} is live");
                }
                NetworkerEvent::PeerRemove(p) => {
                    let live = view.remove(&p.remote_public_key);
                    assert_eq!(
                        live,
                        Some(p.connection_id),
                        "a remove of a connection not live"
                    );
                }
                _ => {}
            }
        }
    }

    /// 20,000 connects, disconnects and replacements over 50 keys: a subscriber that reads
    /// after every step and one that stops reading after the first 30 adds both see the
    /// contract kept, end with the table's peers, and the slow one's queue never holds more
    /// than one event per key and one per connection it had read (80 here).
    #[tokio::test]
    async fn a_slow_subscriber_misses_nothing_and_its_queue_stays_bounded() {
        let template = peer(KeyPair::generate().public_key(), 0).await;
        let keys: Vec<PublicKey> = (0..50).map(|_| KeyPair::generate().public_key()).collect();
        let make = |key: PublicKey, id: u64| Peer {
            remote_public_key: key,
            connection_id: id,
            ..template.clone()
        };
        let peers = DashMap::new();
        let bus = EventBus::default();
        let mut eager = bus.subscribe();
        let mut slow = bus.subscribe();
        let (mut eager_view, mut slow_view) = Default::default();
        let mut next_id = 1u64;
        for &key in &keys[..30] {
            peer_connected(&peers, &bus, make(key, next_id));
            next_id += 1;
        }
        follow(&mut slow_view, &mut slow);
        assert_eq!(slow_view.len(), 30);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut most = 0;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = keys[(x % 50) as usize];
            let live = peers.get(&key).map(|p| p.connection_id);
            match (live, x >> 60) {
                (Some(id), 0..=9) => peer_disconnected(&peers, &bus, &key, id),
                (Some(id), 10..=11) => {
                    // A stale close of a connection already replaced changes nothing.
                    peer_connected(&peers, &bus, make(key, next_id));
                    peer_disconnected(&peers, &bus, &key, id);
                    next_id += 1;
                }
                _ => {
                    peer_connected(&peers, &bus, make(key, next_id));
                    next_id += 1;
                }
            }
            follow(&mut eager_view, &mut eager);
            most = most.max(slow.queued());
            assert!(
                slow.queued() <= 80,
                "the slow queue holds {}",
                slow.queued()
            );
        }
        follow(&mut slow_view, &mut slow);
        let table: std::collections::HashMap<PublicKey, u64> =
            peers.iter().map(|p| (*p.key(), p.connection_id)).collect();
        assert_eq!(eager_view, table);
        assert_eq!(slow_view, table);
        assert!(most > 30, "the slow queue was never exercised ({most})");
        // The bus closes: both streams end after what is queued.
        bus.close();
        assert!(eager.recv().await.is_none());
        assert!(slow.recv().await.is_none());
    }
}
