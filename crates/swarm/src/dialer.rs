//! The `DialerActor`: connection dialing policy over the sans-IO [`Dialer`] — the candidate
//! queue with its priorities, retry timers, the parallel limit, explicit peers and bans. It
//! decides whom to dial and when; the swarm performs the dial ([`StartDial`]) and reports
//! back.

use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use corenet_codec::{PublicKey, Topic};
use dashmap::DashMap;
use tokio::sync::oneshot;

use crate::core::dialer::{DialAction, Dialer, DialerConfig};
use crate::PeerInfo;

/// Asks the swarm to dial a peer.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StartDial {
    /// Who.
    pub public_key: PublicKey,
    /// Nodes that forward handshakes to it.
    pub relay_addresses: Vec<SocketAddrV4>,
    /// Dial through the swarm's relay whatever our NAT.
    pub force_relay: bool,
}

/// A lookup found a peer under a topic.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct PeerFound {
    /// The topic.
    pub topic: Topic,
    /// The peer.
    pub public_key: PublicKey,
    /// Its relays.
    pub relay_addresses: Vec<SocketAddrV4>,
}

/// `JoinPeer` / `LeavePeer`: explicit peers.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct JoinPeer {
    /// The peer.
    pub public_key: PublicKey,
    /// Join (true) or leave (false).
    pub join: bool,
}

/// `Ban`: never dial again (or unban).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Ban {
    /// The peer.
    pub public_key: PublicKey,
    /// Ban (true) or unban.
    pub banned: bool,
}

/// `SetReconnect`: whether a peer is redialled when its connection drops.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetReconnect {
    /// The peer.
    pub public_key: PublicKey,
    /// Redial.
    pub reconnect: bool,
}

/// `TopicActive`: a topic was joined in client mode (or left).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct TopicActive {
    /// The topic.
    pub topic: Topic,
    /// Joined as client.
    pub active: bool,
}

/// What happened to a dial or a connection, reported by the swarm.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum ConnectionChanged {
    /// A dial opened.
    DialOpened(PublicKey),
    /// A dialled connection closed, or the dial failed (`opened` false).
    DialClosed {
        /// Who.
        public_key: PublicKey,
        /// Whether it had opened.
        opened: bool,
    },
    /// A connection from the peer was accepted.
    ServerOpened(PublicKey),
    /// An accepted connection closed.
    ServerClosed(PublicKey),
    /// A dial failed in a way only a relay gets around: dial it through the relay next.
    ForceRelaying(PublicKey),
}

/// `Flush`: resolves once every peer queued so far has been dialled.
#[derive(Debug, Message)]
#[rtype(result = "oneshot::Receiver<()>")]
pub struct Flush;

/// `Suspend` / `Resume` dialing.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetSuspended(pub bool);

/// The dialer actor. Its peer table is mirrored in a `DashMap` that the swarm handle reads
/// without a message.
pub struct DialerActor {
    core: Dialer,
    swarm: Recipient<StartDial>,
    peers: Arc<DashMap<PublicKey, PeerInfo>>,
    timer: Option<(Instant, SpawnHandle)>,
    flushes: Vec<(u64, oneshot::Sender<()>)>,
}

impl std::fmt::Debug for DialerActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DialerActor")
            .field("connecting", &self.core.connecting())
            .finish_non_exhaustive()
    }
}

impl DialerActor {
    /// A dialer for the swarm with key `local`; dials go to `swarm`, the peer table is
    /// mirrored into `peers`.
    pub fn new(
        config: DialerConfig,
        local: PublicKey,
        swarm: Recipient<StartDial>,
        peers: Arc<DashMap<PublicKey, PeerInfo>>,
    ) -> Self {
        DialerActor {
            core: Dialer::new(config, local),
            swarm,
            peers,
            timer: None,
            flushes: Vec::new(),
        }
    }

    fn drive(&mut self, ctx: &mut Context<Self>) {
        while let Some(a) = self.core.poll_action() {
            match a {
                DialAction::Dial {
                    public_key,
                    relay_addresses,
                    force_relay,
                } => {
                    if self
                        .swarm
                        .try_send(StartDial {
                            public_key,
                            relay_addresses,
                            force_relay,
                        })
                        .is_err()
                    {
                        // The swarm is gone or swamped: count it as a failed dial.
                        self.core.dial_closed(Instant::now(), &public_key, false);
                    }
                }
                DialAction::Flushed(id) => {
                    if let Some(i) = self.flushes.iter().position(|(f, _)| *f == id) {
                        let (_, tx) = self.flushes.swap_remove(i);
                        let _ = tx.send(());
                    }
                }
            }
        }
        self.mirror();
        self.arm(ctx);
    }

    fn mirror(&self) {
        self.peers.retain(|pk, _| self.core.peer(pk).is_some());
        for p in self.core.peers() {
            self.peers.insert(p.public_key, PeerInfo::from_state(p));
        }
    }

    fn arm(&mut self, ctx: &mut Context<Self>) {
        let Some(at) = self.core.poll_timeout() else {
            return;
        };
        if let Some((t, h)) = self.timer {
            if t == at {
                return;
            }
            ctx.cancel_future(h);
        }
        let h = ctx.run_later(at.saturating_duration_since(Instant::now()), |act, ctx| {
            act.timer = None;
            act.core.handle_timeout(Instant::now());
            act.drive(ctx);
        });
        self.timer = Some((at, h));
    }
}

impl Actor for DialerActor {
    type Context = Context<Self>;
}

impl Handler<PeerFound> for DialerActor {
    type Result = ();
    fn handle(&mut self, m: PeerFound, ctx: &mut Self::Context) {
        self.core
            .peer_discovered(Instant::now(), m.topic, m.public_key, m.relay_addresses);
        self.drive(ctx);
    }
}

impl Handler<JoinPeer> for DialerActor {
    type Result = ();
    fn handle(&mut self, m: JoinPeer, ctx: &mut Self::Context) {
        if m.join {
            self.core.join_peer(Instant::now(), m.public_key);
        } else {
            self.core.leave_peer(&m.public_key);
        }
        self.drive(ctx);
    }
}

impl Handler<Ban> for DialerActor {
    type Result = ();
    fn handle(&mut self, m: Ban, ctx: &mut Self::Context) {
        self.core.ban(m.public_key, m.banned);
        self.drive(ctx);
    }
}

impl Handler<SetReconnect> for DialerActor {
    type Result = ();
    fn handle(&mut self, m: SetReconnect, ctx: &mut Self::Context) {
        self.core.set_reconnect(&m.public_key, m.reconnect);
        self.drive(ctx);
    }
}

impl Handler<TopicActive> for DialerActor {
    type Result = ();
    fn handle(&mut self, m: TopicActive, ctx: &mut Self::Context) {
        self.core.set_topic_active(m.topic, m.active);
        self.drive(ctx);
    }
}

impl Handler<ConnectionChanged> for DialerActor {
    type Result = ();
    fn handle(&mut self, m: ConnectionChanged, ctx: &mut Self::Context) {
        let now = Instant::now();
        match m {
            ConnectionChanged::DialOpened(pk) => self.core.dial_opened(now, &pk),
            ConnectionChanged::DialClosed { public_key, opened } => {
                self.core.dial_closed(now, &public_key, opened)
            }
            ConnectionChanged::ServerOpened(pk) => self.core.server_opened(&pk),
            ConnectionChanged::ServerClosed(pk) => self.core.server_closed(now, &pk),
            ConnectionChanged::ForceRelaying(pk) => self.core.force_relaying(&pk),
        }
        self.drive(ctx);
    }
}

impl Handler<Flush> for DialerActor {
    type Result = MessageResult<Flush>;
    fn handle(&mut self, _: Flush, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let id = self.core.flush();
        self.flushes.push((id, tx));
        self.drive(ctx);
        MessageResult(rx)
    }
}

impl Handler<SetSuspended> for DialerActor {
    type Result = ();
    fn handle(&mut self, m: SetSuspended, ctx: &mut Self::Context) {
        if m.0 {
            self.core.suspend();
        } else {
            self.core.resume(Instant::now());
        }
        self.drive(ctx);
    }
}
