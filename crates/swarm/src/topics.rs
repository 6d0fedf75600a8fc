//! The `TopicActor`: topic bookkeeping (hyperswarm's `PeerDiscovery`). Each joined topic is
//! announced on the DHT (server mode, with our relay addresses) and/or looked up (client mode,
//! each record found goes to the dialer), refreshed every 10 minutes plus up to 2 minutes of
//! jitter, and unannounced when left.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use corenet_codec::{PublicKey, Topic};
use corenet_dht::Dht;
use corenet_noise::KeyPair;
use rand::Rng;
use tokio::sync::oneshot;

use crate::dialer::{PeerFound, TopicActive};
use crate::{JoinOptions, TopicStatus};

/// Interval of topic refreshes.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(10 * 60);
/// Up to this much is added to each refresh interval.
pub const REFRESH_JITTER: Duration = Duration::from_secs(2 * 60);

/// `Join`: add a session (server and/or client) to a topic; returns the session id.
#[derive(Debug, Message)]
#[rtype(result = "u64")]
pub struct Join {
    /// The topic.
    pub topic: Topic,
    /// Modes.
    pub options: JoinOptions,
}

/// `Refresh`: change a session's modes (or re-run the topic) and re-announce / re-lookup.
#[derive(Debug, Message)]
#[rtype(result = "oneshot::Receiver<bool>")]
pub struct Refresh {
    /// The topic.
    pub topic: Topic,
    /// The session.
    pub session: u64,
    /// New modes; `None` keeps them.
    pub options: Option<JoinOptions>,
}

/// `LeaveSession`: drop one session; the topic is left when none remain.
#[derive(Debug, Message)]
#[rtype(result = "oneshot::Receiver<()>")]
pub struct LeaveSession {
    /// The topic.
    pub topic: Topic,
    /// The session.
    pub session: u64,
}

/// `Leave`: leave a topic entirely (unannounce; existing connections stay).
#[derive(Debug, Message)]
#[rtype(result = "oneshot::Receiver<()>")]
pub struct Leave {
    /// The topic.
    pub topic: Topic,
}

/// `GetStatus`: a topic's state.
#[derive(Debug, Message)]
#[rtype(result = "Option<TopicStatus>")]
pub struct GetStatus {
    /// The topic.
    pub topic: Topic,
}

/// `GetTopics`: every joined topic's state.
#[derive(Debug, Message)]
#[rtype(result = "Vec<TopicStatus>")]
pub struct GetTopics;

/// `WaitFlushed`: resolves (true on success) when the topic's current refresh is done; for
/// `None`, when every topic's is.
#[derive(Debug, Message)]
#[rtype(result = "oneshot::Receiver<bool>")]
pub struct WaitFlushed {
    /// The topic, or all.
    pub topic: Option<Topic>,
}

/// Asks the swarm to listen and returns our relay addresses (needed before announcing).
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<std::net::SocketAddrV4>, String>")]
pub struct EnsureListening;

/// `RefreshAll`: re-run every topic (after a network change).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RefreshAll;

/// Internal: a refresh finished.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct RefreshDone {
    topic: Topic,
    generation: u64,
    ok: bool,
    announced: bool,
}

/// A joined topic.
#[derive(Debug)]
struct Discovery {
    sessions: HashMap<u64, JoinOptions>,
    is_server: bool,
    is_client: bool,
    generation: u64,
    refreshing: bool,
    /// Last refresh succeeded.
    last_ok: bool,
    refreshes: u64,
    /// We announced and have not unannounced since.
    needs_unannounce: bool,
    waiters: Vec<oneshot::Sender<bool>>,
    timer: Option<SpawnHandle>,
}

impl Discovery {
    fn modes(&self) -> (bool, bool) {
        let server = self.sessions.values().any(|o| o.server);
        let client = self.sessions.values().any(|o| o.client);
        (server, client)
    }
}

/// The topic actor.
pub struct TopicActor {
    dht: Dht,
    key_pair: KeyPair,
    local: PublicKey,
    dialer: Recipient<PeerFound>,
    active: Recipient<TopicActive>,
    swarm: Recipient<EnsureListening>,
    topics: HashMap<Topic, Discovery>,
    next_session: u64,
}

impl std::fmt::Debug for TopicActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicActor")
            .field("topics", &self.topics.len())
            .finish_non_exhaustive()
    }
}

impl TopicActor {
    /// A topic actor announcing `key_pair` on `dht`; found peers go to `dialer`.
    pub fn new(
        dht: Dht,
        key_pair: KeyPair,
        dialer: Recipient<PeerFound>,
        active: Recipient<TopicActive>,
        swarm: Recipient<EnsureListening>,
    ) -> Self {
        let local = key_pair.public_key();
        TopicActor {
            dht,
            key_pair,
            local,
            dialer,
            active,
            swarm,
            topics: HashMap::new(),
            next_session: 1,
        }
    }

    fn status(topic: Topic, d: &Discovery) -> TopicStatus {
        TopicStatus {
            topic,
            server: d.is_server,
            client: d.is_client,
            flushed: !d.refreshing && d.refreshes > 0,
            refreshes: d.refreshes,
        }
    }

    /// Starts a refresh of `topic` with its current modes.
    fn refresh(&mut self, topic: Topic, ctx: &mut Context<Self>) {
        let Some(d) = self.topics.get_mut(&topic) else {
            return;
        };
        let (server, client) = d.modes();
        if client != d.is_client {
            let _ = self.active.try_send(TopicActive {
                topic,
                active: client,
            });
        }
        d.is_server = server;
        d.is_client = client;
        d.generation += 1;
        d.refreshing = true;
        if let Some(h) = d.timer.take() {
            ctx.cancel_future(h);
        }
        let generation = d.generation;
        let unannounce_first = !server && d.needs_unannounce;
        let dht = self.dht.clone();
        let kp = self.key_pair.clone();
        let dialer = self.dialer.clone();
        let swarm = self.swarm.clone();
        let local = self.local;
        let fut = async move {
            let relays = if server {
                match swarm.send(EnsureListening).await {
                    Ok(Ok(r)) => Some(r),
                    _ => return (false, false),
                }
            } else {
                None
            };
            if unannounce_first {
                let _ = dht.unannounce(topic.to_bytes(), &kp).await;
            }
            let started = match relays {
                Some(r) => dht.announce_and_lookup(topic.to_bytes(), &kp, r).await,
                None => dht.lookup(topic.to_bytes()).await,
            };
            let Ok((mut items, done)) = started else {
                return (false, false);
            };
            while let Some(item) = items.recv().await {
                if !client {
                    continue;
                }
                for p in item.peers {
                    if p.public_key == local {
                        continue;
                    }
                    // The dialer's mailbox is bounded: wait rather than lose a peer.
                    let _ = dialer
                        .send(PeerFound {
                            topic,
                            public_key: p.public_key,
                            relay_addresses: p.relay_addresses,
                        })
                        .await;
                }
            }
            let ok = matches!(done.await, Ok(Ok(_)));
            (ok, server && ok)
        };
        ctx.spawn(fut.into_actor(self).map(move |(ok, announced), _act, ctx| {
            ctx.notify(RefreshDone {
                topic,
                generation,
                ok,
                announced,
            });
        }));
    }

    fn schedule(&mut self, topic: Topic, ctx: &mut Context<Self>) {
        let jitter = REFRESH_JITTER.mul_f64(rand::thread_rng().gen::<f64>());
        let delay = REFRESH_INTERVAL + jitter;
        let expected = std::time::Instant::now() + delay;
        let h = ctx.run_later(delay, move |act, ctx| {
            // An overdue timer (the machine slept) refreshes eagerly anyway.
            let _ = expected;
            act.refresh(topic, ctx);
        });
        if let Some(d) = self.topics.get_mut(&topic) {
            d.timer = Some(h);
        }
    }

    fn leave_topic(&mut self, topic: Topic, ctx: &mut Context<Self>) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let Some(mut d) = self.topics.remove(&topic) else {
            let _ = tx.send(());
            return rx;
        };
        if let Some(h) = d.timer.take() {
            ctx.cancel_future(h);
        }
        for w in d.waiters.drain(..) {
            let _ = w.send(false);
        }
        if d.is_client {
            let _ = self.active.try_send(TopicActive {
                topic,
                active: false,
            });
        }
        if d.needs_unannounce || d.is_server {
            let dht = self.dht.clone();
            let kp = self.key_pair.clone();
            ctx.spawn(
                async move {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(10),
                        dht.unannounce(topic.to_bytes(), &kp),
                    )
                    .await;
                    let _ = tx.send(());
                }
                .into_actor(self),
            );
        } else {
            let _ = tx.send(());
        }
        rx
    }
}

impl Actor for TopicActor {
    type Context = Context<Self>;
}

impl Handler<Join> for TopicActor {
    type Result = u64;
    fn handle(&mut self, m: Join, ctx: &mut Self::Context) -> u64 {
        let session = self.next_session;
        self.next_session += 1;
        let d = self.topics.entry(m.topic).or_insert_with(|| Discovery {
            sessions: HashMap::new(),
            is_server: false,
            is_client: false,
            generation: 0,
            refreshing: false,
            last_ok: false,
            refreshes: 0,
            needs_unannounce: false,
            waiters: Vec::new(),
            timer: None,
        });
        d.sessions.insert(session, m.options);
        self.refresh(m.topic, ctx);
        session
    }
}

impl Handler<Refresh> for TopicActor {
    type Result = MessageResult<Refresh>;
    fn handle(&mut self, m: Refresh, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        match self.topics.get_mut(&m.topic) {
            Some(d) => {
                if let Some(o) = m.options {
                    if let Some(s) = d.sessions.get_mut(&m.session) {
                        *s = o;
                    }
                }
                d.waiters.push(tx);
                self.refresh(m.topic, ctx);
            }
            None => {
                let _ = tx.send(false);
            }
        }
        MessageResult(rx)
    }
}

impl Handler<LeaveSession> for TopicActor {
    type Result = MessageResult<LeaveSession>;
    fn handle(&mut self, m: LeaveSession, ctx: &mut Self::Context) -> Self::Result {
        let last = match self.topics.get_mut(&m.topic) {
            Some(d) => {
                d.sessions.remove(&m.session);
                d.sessions.is_empty()
            }
            None => {
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(());
                return MessageResult(rx);
            }
        };
        if last {
            return MessageResult(self.leave_topic(m.topic, ctx));
        }
        // Other sessions remain: re-run with their modes (unannounces if none is a server).
        self.refresh(m.topic, ctx);
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(());
        MessageResult(rx)
    }
}

impl Handler<Leave> for TopicActor {
    type Result = MessageResult<Leave>;
    fn handle(&mut self, m: Leave, ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.leave_topic(m.topic, ctx))
    }
}

impl Handler<GetStatus> for TopicActor {
    type Result = MessageResult<GetStatus>;
    fn handle(&mut self, m: GetStatus, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.topics.get(&m.topic).map(|d| Self::status(m.topic, d)))
    }
}

impl Handler<GetTopics> for TopicActor {
    type Result = MessageResult<GetTopics>;
    fn handle(&mut self, _: GetTopics, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.topics
                .iter()
                .map(|(t, d)| Self::status(*t, d))
                .collect(),
        )
    }
}

impl Handler<WaitFlushed> for TopicActor {
    type Result = MessageResult<WaitFlushed>;
    fn handle(&mut self, m: WaitFlushed, _: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        match m.topic {
            Some(t) => match self.topics.get_mut(&t) {
                Some(d) if d.refreshing => d.waiters.push(tx),
                Some(d) => {
                    let _ = tx.send(d.last_ok);
                }
                None => {
                    let _ = tx.send(false);
                }
            },
            None => {
                // Wait for every topic currently refreshing.
                let pending: Vec<oneshot::Receiver<bool>> = self
                    .topics
                    .values_mut()
                    .filter(|d| d.refreshing)
                    .map(|d| {
                        let (t, r) = oneshot::channel();
                        d.waiters.push(t);
                        r
                    })
                    .collect();
                actix::spawn(async move {
                    let mut ok = true;
                    for p in pending {
                        ok &= p.await.unwrap_or(false);
                    }
                    let _ = tx.send(ok);
                });
            }
        }
        MessageResult(rx)
    }
}

impl Handler<RefreshAll> for TopicActor {
    type Result = ();
    fn handle(&mut self, _: RefreshAll, ctx: &mut Self::Context) {
        let topics: Vec<Topic> = self.topics.keys().copied().collect();
        for t in topics {
            self.refresh(t, ctx);
        }
    }
}

impl Handler<RefreshDone> for TopicActor {
    type Result = ();
    fn handle(&mut self, m: RefreshDone, ctx: &mut Self::Context) {
        let Some(d) = self.topics.get_mut(&m.topic) else {
            return;
        };
        if d.generation != m.generation {
            return; // a newer refresh is running
        }
        d.refreshing = false;
        d.last_ok = m.ok;
        d.refreshes += 1;
        if m.announced {
            d.needs_unannounce = true;
        } else if !d.is_server && m.ok {
            d.needs_unannounce = false;
        }
        for w in d.waiters.drain(..) {
            let _ = w.send(m.ok);
        }
        self.schedule(m.topic, ctx);
    }
}
