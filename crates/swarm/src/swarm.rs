//! The `SwarmActor`: the connection set (one connection per peer, hyperswarm's tie-break),
//! limits, the firewall, bans, listening on the DHT, performing the dials the dialer asks
//! for, and the events the application sees.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddrV4;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::prelude::*;
use corenet_codec::PublicKey;
use corenet_dht::{Dht, Firewall as DhtFirewall};
use corenet_noise::KeyPair;
use dashmap::DashMap;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::core::connections::{Admit, ConnId, ConnectionSet, Entry};
use crate::core::reconnects::Reconnects;
use crate::dialer::{Ban, ConnectionChanged, DialerActor, StartDial};
use crate::session::{
    CloseSession, Connection, ConnectionInfo, SessionActor, SessionClosed, Shared, Transport,
};
use crate::topics::EnsureListening;
use crate::{Firewall, PeerConnection, Stats, SwarmEvent};

/// The reason duplicates are closed with (the same text as hyperswarm).
pub const ERR_DUPLICATE: &str = "Duplicate connection";
pub use crate::core::reconnects::{MAX_RECONNECTS, MAX_TRACKED_PEERS, RECONNECT_WINDOW};

/// Settings the swarm actor needs.
#[derive(Clone)]
pub(crate) struct SwarmSettings {
    pub(crate) max_server_connections: usize,
    pub(crate) firewall: Option<Firewall>,
    /// The blind relay (hyperswarm `relayThrough`): dials use it when forced (after a
    /// punch failure only a relay gets around) or when our NAT randomizes ports; the
    /// server offers it while our NAT randomizes ports.
    pub(crate) relay_through: Option<PublicKey>,
}

/// Internal: a dial finished.
#[derive(Message)]
#[rtype(result = "()")]
struct DialDone {
    id: ConnId,
    public_key: PublicKey,
    result: Result<corenet_dht::Connection, corenet_dht::Error>,
}

/// Internal: a server connection arrived.
#[derive(Message)]
#[rtype(result = "()")]
struct Incoming(corenet_dht::Connection);

/// `CheckFirewall`: the DHT server asks whether to accept a client.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct CheckFirewall {
    /// The client.
    pub public_key: PublicKey,
    /// Its address as the relay saw it.
    pub address: SocketAddrV4,
}

/// `BanPeer`: ban (or unban) a peer; its connection is closed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct BanPeer {
    /// The peer.
    pub public_key: PublicKey,
    /// Ban or unban.
    pub banned: bool,
}

/// `CloseConnections`: close the connections to a peer.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ClosePeer {
    /// The peer.
    pub public_key: PublicKey,
    /// Why.
    pub reason: String,
}

/// `DestroySwarm`: close everything.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct DestroySwarm;

/// One live connection, as the swarm tracks it.
struct Live {
    session: Addr<SessionActor>,
    shared: Arc<Shared>,
}

/// The swarm actor.
pub struct SwarmActor {
    key_pair: KeyPair,
    dht: Dht,
    settings: SwarmSettings,
    dialer: Addr<DialerActor>,
    set: ConnectionSet,
    live: HashMap<ConnId, Live>,
    /// Dials in flight.
    dialing: HashMap<ConnId, PublicKey>,
    next_id: u64,
    server_connections: usize,
    banned: HashSet<PublicKey>,
    listening: Option<Vec<SocketAddrV4>>,
    listen_waiters: Vec<oneshot::Sender<Result<Vec<SocketAddrV4>, String>>>,
    listen_started: bool,
    server: Option<corenet_dht::hyper::ServerId>,
    connections_tx: mpsc::Sender<Connection>,
    events: broadcast::Sender<SwarmEvent>,
    stats: Arc<Stats>,
    peers: Arc<DashMap<PublicKey, PeerConnection>>,
    destroyed: bool,
    /// Incoming connection attempts per peer in the current window (hard-bounded table).
    reconnects: Reconnects,
}

impl std::fmt::Debug for SwarmActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmActor")
            .field("connections", &self.set.len())
            .finish_non_exhaustive()
    }
}

impl SwarmActor {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        key_pair: KeyPair,
        dht: Dht,
        settings: SwarmSettings,
        connections_tx: mpsc::Sender<Connection>,
        events: broadcast::Sender<SwarmEvent>,
        stats: Arc<Stats>,
        peers: Arc<DashMap<PublicKey, PeerConnection>>,
        dialer: Addr<DialerActor>,
    ) -> Self {
        SwarmActor {
            key_pair,
            dht,
            settings,
            dialer,
            set: ConnectionSet::new(),
            live: HashMap::new(),
            dialing: HashMap::new(),
            next_id: 1,
            server_connections: 0,
            banned: HashSet::new(),
            listening: None,
            listen_waiters: Vec::new(),
            listen_started: false,
            server: None,
            connections_tx,
            events,
            stats,
            peers,
            destroyed: false,
            reconnects: Reconnects::new(),
        }
    }

    /// The dialer this swarm reports to.
    pub(crate) fn dialer_addr(&self) -> Addr<DialerActor> {
        self.dialer.clone()
    }

    fn id(&mut self) -> ConnId {
        let id = ConnId(self.next_id);
        self.next_id += 1;
        id
    }

    fn tell_dialer(&self, m: ConnectionChanged) {
        // A lost update would leave the dialer's counts wrong: deliver it even when its
        // mailbox is momentarily full (one message per connection event, no flood).
        self.dialer.do_send(m);
    }

    fn emit(&self, e: SwarmEvent) {
        let _ = self.events.send(e);
    }

    fn close_live(&mut self, id: ConnId, reason: &str) {
        if let Some(l) = self.live.get(&id) {
            l.shared.abort(reason);
            l.session.do_send(CloseSession {
                reason: reason.to_owned(),
            });
        }
    }

    /// Starts listening on the DHT once; the firewall consults us.
    fn start_listening(&mut self, ctx: &mut Context<Self>) {
        if self.listen_started {
            return;
        }
        self.listen_started = true;
        let me = ctx.address();
        let firewall: DhtFirewall = Arc::new(move |public_key, address| {
            let me = me.clone();
            Box::pin(async move {
                me.send(CheckFirewall {
                    public_key,
                    address,
                })
                .await
                .unwrap_or(false)
            })
        });
        let dht = self.dht.clone();
        let kp = self.key_pair.clone();
        let relay_through = self.settings.relay_through;
        ctx.spawn(
            async move {
                let options = corenet_dht::ListenOptions {
                    relay_through,
                    relay_only_when_randomized: true,
                    ..Default::default()
                };
                dht.listen_with(&kp, Some(firewall), options).await
            }
            .into_actor(self)
            .map(|r, act, ctx| match r {
                Ok(server) => {
                    let relays = server.relay_addresses().to_vec();
                    act.server = Some(server.id());
                    act.listening = Some(relays.clone());
                    for w in act.listen_waiters.drain(..) {
                        let _ = w.send(Ok(relays.clone()));
                    }
                    // Hand accepted connections to ourselves as a stream.
                    let stream = futures::stream::unfold(server, |mut s| async move {
                        s.accept().await.map(|c| (Incoming(c), s))
                    });
                    ctx.add_stream(stream);
                }
                Err(e) => {
                    act.listen_started = false;
                    for w in act.listen_waiters.drain(..) {
                        let _ = w.send(Err(e.to_string()));
                    }
                }
            }),
        );
    }

    /// A new connection (dialled or accepted) passed the tie-break: start its session and
    /// hand it to the application.
    fn admit(&mut self, id: ConnId, conn: corenet_dht::Connection, ctx: &mut Context<Self>) {
        let pk = conn.stream.remote_public_key();
        let is_initiator = conn.is_initiator;
        let info = ConnectionInfo {
            id,
            remote_public_key: pk,
            remote_address: conn.remote_address,
            is_initiator,
            transport: Transport::Udx,
            path: conn.path,
        };
        let shared = Arc::new(Shared {
            traffic: Some(conn.stream.traffic()),
            relay: conn.relay,
            ..Shared::default()
        });
        let session =
            SessionActor::new(info.clone(), shared.clone(), ctx.address().recipient()).start();
        self.live.insert(
            id,
            Live {
                session,
                shared: shared.clone(),
            },
        );
        self.peers.insert(
            pk,
            PeerConnection {
                public_key: pk,
                remote_address: conn.remote_address,
                is_initiator,
                transport: Transport::Udx,
                path: conn.path,
            },
        );
        let c = Connection::new(conn.stream, info, shared);
        if self.connections_tx.try_send(c).is_err() {
            // Nobody takes connections (or too many wait): close it; the peer may retry.
            tracing::debug!(peer = %pk, "connection dropped: the application is not taking connections");
        }
        self.emit(SwarmEvent::Connected {
            public_key: pk,
            client: is_initiator,
        });
    }
}

impl Actor for SwarmActor {
    type Context = Context<Self>;
}

impl StreamHandler<Incoming> for SwarmActor {
    fn handle(&mut self, Incoming(conn): Incoming, ctx: &mut Self::Context) {
        if self.destroyed {
            conn.stream.get_ref().destroy();
            return;
        }
        let pk = conn.stream.remote_public_key();
        if self.banned.contains(&pk) || pk == self.key_pair.public_key() {
            conn.stream.get_ref().destroy();
            return;
        }
        if self.server_connections >= self.settings.max_server_connections
            && !self.set.contains(&pk)
        {
            tracing::debug!(peer = %pk, "refusing a connection: max server connections");
            conn.stream.get_ref().destroy();
            return;
        }
        let id = self.id();
        let existing_established = self
            .set
            .get(&pk)
            .and_then(|e| self.live.get(&e.id))
            .is_some_and(|l| l.shared.established());
        if let Some(e) = self.set.get_mut(&pk) {
            e.established = existing_established;
        }
        let entry = Entry {
            id,
            is_initiator: false,
            established: false,
            pending: false,
        };
        match self.set.admit(&self.key_pair.public_key(), pk, entry) {
            Admit::KeepExisting(_) => {
                tracing::debug!(peer = %pk, "duplicate connection: keeping the existing one");
                conn.stream.get_ref().destroy();
                return;
            }
            Admit::ReplaceExisting(old) => {
                tracing::debug!(peer = %pk, "duplicate connection: replacing the existing one");
                if self.dialing.remove(&old).is_some() {
                    // Our dial in flight lost the tie-break.
                    self.tell_dialer(ConnectionChanged::DialClosed {
                        public_key: pk,
                        opened: false,
                    });
                } else {
                    self.close_live(old, ERR_DUPLICATE);
                }
            }
            Admit::Accept => {}
        }
        self.stats.server_opened.fetch_add(1, Ordering::Relaxed);
        self.server_connections += 1;
        self.tell_dialer(ConnectionChanged::ServerOpened(pk));
        self.admit(id, conn, ctx);
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

impl Handler<StartDial> for SwarmActor {
    type Result = ();
    fn handle(&mut self, m: StartDial, ctx: &mut Self::Context) {
        let pk = m.public_key;
        if self.destroyed || self.banned.contains(&pk) || self.set.contains(&pk) {
            self.tell_dialer(ConnectionChanged::DialClosed {
                public_key: pk,
                opened: false,
            });
            return;
        }
        let id = self.id();
        self.set.admit(
            &self.key_pair.public_key(),
            pk,
            Entry {
                id,
                is_initiator: true,
                established: false,
                pending: true,
            },
        );
        self.dialing.insert(id, pk);
        self.stats.client_attempted.fetch_add(1, Ordering::Relaxed);
        let dht = self.dht.clone();
        let kp = self.key_pair.clone();
        let options = corenet_dht::ConnectOptions {
            relay_addresses: m.relay_addresses,
            relay_through: self.settings.relay_through,
            relay_only_when_randomized: !m.force_relay,
            ..Default::default()
        };
        ctx.spawn(
            async move { dht.connect_with(&kp, pk, options).await }
                .into_actor(self)
                .map(move |result, _act, ctx| {
                    ctx.notify(DialDone {
                        id,
                        public_key: pk,
                        result,
                    })
                }),
        );
    }
}

impl Handler<DialDone> for SwarmActor {
    type Result = ();
    fn handle(&mut self, m: DialDone, ctx: &mut Self::Context) {
        let still_ours = self.dialing.remove(&m.id).is_some();
        match m.result {
            Ok(conn) if still_ours && !self.destroyed => {
                if let Some(e) = self.set.get_mut(&m.public_key) {
                    e.pending = false;
                }
                self.stats.client_opened.fetch_add(1, Ordering::Relaxed);
                self.tell_dialer(ConnectionChanged::DialOpened(m.public_key));
                self.admit(m.id, conn, ctx);
            }
            Ok(conn) => {
                // A connection from the peer won while we were dialling.
                conn.stream.get_ref().destroy();
            }
            Err(e) => {
                tracing::debug!(peer = %m.public_key, error = %e, "dial failed");
                let forces = matches!(&e, corenet_dht::Error::Connect(c) if c.forces_relaying());
                if still_ours && forces && self.settings.relay_through.is_some() {
                    self.tell_dialer(ConnectionChanged::ForceRelaying(m.public_key));
                }
                if still_ours {
                    self.set.remove(&m.public_key, m.id);
                    self.tell_dialer(ConnectionChanged::DialClosed {
                        public_key: m.public_key,
                        opened: false,
                    });
                }
            }
        }
    }
}

impl Handler<SessionClosed> for SwarmActor {
    type Result = ();
    fn handle(&mut self, m: SessionClosed, _: &mut Self::Context) {
        self.live.remove(&m.id);
        let was_current = self.set.remove(&m.remote_public_key, m.id);
        if was_current {
            self.peers.remove(&m.remote_public_key);
            self.emit(SwarmEvent::Disconnected {
                public_key: m.remote_public_key,
            });
        }
        if m.is_initiator {
            self.stats.client_closed.fetch_add(1, Ordering::Relaxed);
            self.tell_dialer(ConnectionChanged::DialClosed {
                public_key: m.remote_public_key,
                opened: true,
            });
        } else {
            self.stats.server_closed.fetch_add(1, Ordering::Relaxed);
            self.server_connections = self.server_connections.saturating_sub(1);
            self.tell_dialer(ConnectionChanged::ServerClosed(m.remote_public_key));
        }
    }
}

impl Handler<EnsureListening> for SwarmActor {
    type Result = ResponseFuture<Result<Vec<SocketAddrV4>, String>>;
    fn handle(&mut self, _: EnsureListening, ctx: &mut Self::Context) -> Self::Result {
        if let Some(r) = &self.listening {
            let r = r.clone();
            return Box::pin(async move { Ok(r) });
        }
        let (tx, rx) = oneshot::channel();
        self.listen_waiters.push(tx);
        self.start_listening(ctx);
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err("swarm destroyed".into())) })
    }
}

impl Handler<CheckFirewall> for SwarmActor {
    type Result = ResponseFuture<bool>;
    fn handle(&mut self, m: CheckFirewall, _: &mut Self::Context) -> Self::Result {
        if m.public_key == self.key_pair.public_key()
            || self.banned.contains(&m.public_key)
            || self.destroyed
        {
            return Box::pin(async { false });
        }
        // A peer that reconnects in a tight loop is refused for the rest of the window.
        if !self
            .reconnects
            .check(std::time::Instant::now(), m.public_key)
        {
            tracing::debug!(peer = %m.public_key, "refusing a peer that reconnects too often");
            return Box::pin(async { false });
        }
        let Some(f) = self.settings.firewall.clone() else {
            return Box::pin(async { true });
        };
        let me = Some(self.dialer.clone());
        let stats = self.stats.clone();
        let events = self.events.clone();
        Box::pin(async move {
            let allow = f(m.public_key, m.address).await;
            if !allow {
                // A refused peer is banned, as in hyperswarm.
                stats.banned_peers.fetch_add(1, Ordering::Relaxed);
                let _ = events.send(SwarmEvent::Banned {
                    public_key: m.public_key,
                });
                if let Some(d) = me {
                    let _ = d
                        .send(Ban {
                            public_key: m.public_key,
                            banned: true,
                        })
                        .await;
                }
            }
            allow
        })
    }
}

impl Handler<BanPeer> for SwarmActor {
    type Result = ();
    fn handle(&mut self, m: BanPeer, _: &mut Self::Context) {
        if m.banned {
            if self.banned.insert(m.public_key) {
                self.stats.banned_peers.fetch_add(1, Ordering::Relaxed);
                self.emit(SwarmEvent::Banned {
                    public_key: m.public_key,
                });
            }
            if let Some(e) = self.set.get(&m.public_key).copied() {
                self.close_live(e.id, "Peer is banned");
            }
        } else {
            self.banned.remove(&m.public_key);
        }
        self.dialer.do_send(Ban {
            public_key: m.public_key,
            banned: m.banned,
        });
    }
}

impl Handler<ClosePeer> for SwarmActor {
    type Result = ();
    fn handle(&mut self, m: ClosePeer, _: &mut Self::Context) {
        if let Some(e) = self.set.get(&m.public_key).copied() {
            self.close_live(e.id, &m.reason);
        }
    }
}

impl Handler<DestroySwarm> for SwarmActor {
    type Result = ();
    fn handle(&mut self, _: DestroySwarm, ctx: &mut Self::Context) {
        self.destroyed = true;
        let ids: Vec<ConnId> = self.live.keys().copied().collect();
        for id in ids {
            self.close_live(id, "Swarm has been destroyed");
        }
        for w in self.listen_waiters.drain(..) {
            let _ = w.send(Err("swarm destroyed".into()));
        }
        if let Some(id) = self.server.take() {
            // Unannounce the server; the DHT actor outlives us.
            self.dht
                .addr()
                .do_send(corenet_dht::actor::CloseServer { server: id });
        }
        ctx.stop();
    }
}
