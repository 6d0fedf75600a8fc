//! [`RelayServer`]: a blind relay on a DHT node, for JS and Rust peers alike.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use corenet_codec::PublicKey;
use corenet_mux::{ChannelOptions, ChannelSender, DriverConfig, MuxHandle};
use corenet_noise::KeyPair;
use corenet_udx::UdxStream;
use tokio::sync::oneshot;

use super::core::{PairOutcome, RelayCore, SessionId, Side};
use super::messages::{Pair, Unpair};
use super::{MSG_PAIR, MSG_UNPAIR, PROTOCOL};
use crate::actor::{Connection, Dht, Error};

/// Sessions (peers connected to the relay) served at once; more are closed on arrival.
pub const MAX_SESSIONS: usize = 1024;
/// How often waiting pairings are expired.
const EXPIRE_EVERY: Duration = Duration::from_secs(5);

/// Counters of a relay (blind-relay's `stats`, plus what was carried).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayStats {
    /// Sessions accepted.
    pub sessions_accepted: u64,
    /// Sessions open now.
    pub sessions_active: usize,
    /// Sessions refused at [`MAX_SESSIONS`].
    pub sessions_refused: u64,
    /// `pair` requests accepted.
    pub pairings_requested: u64,
    /// Pairings matched (two streams made and spliced).
    pub pairings_matched: u64,
    /// Pairings cancelled (unpair, session closed, expired).
    pub pairings_cancelled: u64,
    /// Pairings waiting for their other half now.
    pub pairings_pending: usize,
    /// Links (spliced stream pairs) open now.
    pub links_active: usize,
}

struct Link {
    streams: [UdxStream; 2],
}

#[derive(Default)]
struct Shared {
    core: RelayCore,
    senders: HashMap<SessionId, ChannelSender>,
    links: HashMap<[u8; 32], Link>,
    next_session: SessionId,
    /// Sessions served at once ([`MAX_SESSIONS`] unless started with another cap).
    max_sessions: usize,
    accepted: u64,
    refused: u64,
}

type SharedRef = Arc<Mutex<Shared>>;

fn lock(s: &SharedRef) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A blind relay: a DHT server whose clients pair their UDX streams through it (see the
/// [module docs](super)). It never sees the peers' plaintext: it forwards UDX packets
/// between the two streams it made, rewriting only the stream id.
///
/// ```no_run
/// # async fn demo() -> Result<(), corenet_dht::Error> {
/// use corenet_dht::{relay::RelayServer, Dht, DhtConfig};
/// let dht = Dht::spawn(DhtConfig::default()).await?;
/// let relay = RelayServer::start(dht, corenet_noise::KeyPair::generate()).await?;
/// println!("relay {}", relay.public_key());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RelayServer {
    public_key: PublicKey,
    shared: SharedRef,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("sessions", &self.senders.len())
            .field("links", &self.links.len())
            .finish_non_exhaustive()
    }
}

impl RelayServer {
    /// Listens on `dht` as `key_pair` and relays for whoever pairs through it. Peers name
    /// it by its public key (hyperdht's `relayThrough`).
    pub async fn start(dht: Dht, key_pair: KeyPair) -> Result<RelayServer, Error> {
        Self::start_with_max_sessions(dht, key_pair, MAX_SESSIONS).await
    }

    /// [`RelayServer::start`] serving at most `max_sessions` peers at once (default
    /// [`MAX_SESSIONS`]); a peer beyond is disconnected on arrival and counted in
    /// [`RelayStats::sessions_refused`].
    pub async fn start_with_max_sessions(
        dht: Dht,
        key_pair: KeyPair,
        max_sessions: usize,
    ) -> Result<RelayServer, Error> {
        let mut server = dht.listen(&key_pair, None).await?;
        let shared: SharedRef = Arc::new(Mutex::new(Shared {
            max_sessions,
            ..Shared::default()
        }));
        let (stop, mut stopped) = oneshot::channel::<()>();
        let s = shared.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(EXPIRE_EVERY);
            loop {
                tokio::select! {
                    c = server.accept() => match c {
                        Some(conn) => accept(&dht, &s, conn),
                        None => break,
                    },
                    _ = tick.tick() => lock(&s).core.expire(Instant::now()),
                    _ = &mut stopped => break,
                }
            }
            server.close().await;
            let mut sh = lock(&s);
            for (_, l) in sh.links.drain() {
                for st in &l.streams {
                    st.destroy();
                }
            }
            sh.senders.clear();
        });
        Ok(RelayServer {
            public_key: key_pair.public_key(),
            shared,
            stop: Some(stop),
            task,
        })
    }

    /// The key peers relay through.
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// Counters.
    pub fn stats(&self) -> RelayStats {
        let sh = lock(&self.shared);
        let c = sh.core.stats();
        RelayStats {
            sessions_accepted: sh.accepted,
            sessions_active: sh.senders.len(),
            sessions_refused: sh.refused,
            pairings_requested: c.requested,
            pairings_matched: c.matched,
            pairings_cancelled: c.cancelled,
            pairings_pending: sh.core.pending(),
            links_active: sh.links.len(),
        }
    }

    /// Stops relaying: the server is closed and every link torn down.
    pub async fn close(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// A peer connected: one session on its `blind-relay` channel.
fn accept(dht: &Dht, shared: &SharedRef, conn: Connection) {
    let remote = conn.stream.remote_public_key();
    let session = {
        let mut sh = lock(shared);
        if sh.senders.len() >= sh.max_sessions {
            sh.refused += 1;
            tracing::debug!(%remote, "relay: too many sessions");
            conn.stream.get_ref().destroy();
            return;
        }
        sh.accepted += 1;
        sh.next_session += 1;
        sh.next_session
    };
    let mux = MuxHandle::spawn(conn.stream, DriverConfig::default());
    let opts = ChannelOptions::new(PROTOCOL).with_id(Bytes::copy_from_slice(remote.as_bytes()));
    let mut channel = match mux.open(&opts) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "relay: cannot open the channel");
            mux.close();
            return;
        }
    };
    lock(shared).senders.insert(session, channel.sender());
    let dht = dht.clone();
    let shared = shared.clone();
    tokio::spawn(async move {
        while let Some(m) = channel.recv().await {
            match m.message_type {
                MSG_PAIR => {
                    let Ok(p) = m.decode::<Pair>() else {
                        tracing::debug!(%remote, "relay: bad pair message");
                        break;
                    };
                    let outcome = lock(&shared).core.pair(Instant::now(), session, &p);
                    match outcome {
                        PairOutcome::Matched {
                            token,
                            initiator,
                            responder,
                        } => link(&dht, &shared, token, initiator, responder).await,
                        PairOutcome::Refused(why) => {
                            tracing::debug!(%remote, why, "relay: pair refused")
                        }
                        PairOutcome::Waiting => {}
                    }
                }
                MSG_UNPAIR => {
                    let Ok(u) = m.decode::<Unpair>() else { break };
                    let teardown = lock(&shared).core.unpair(session, &u.token);
                    if teardown {
                        unlink(&shared, &u.token);
                    }
                }
                _ => {}
            }
        }
        // The session ended: its pairings and links go.
        let tokens = {
            let mut sh = lock(&shared);
            sh.senders.remove(&session);
            sh.core.session_closed(session)
        };
        for t in tokens {
            unlink(&shared, &t);
        }
        mux.close();
    });
}

/// Both halves are here: a stream per side, spliced, and each side told its stream's id.
async fn link(dht: &Dht, shared: &SharedRef, token: [u8; 32], initiator: Side, responder: Side) {
    let a = dht.create_raw_stream(initiator.stream_id).await;
    let b = dht.create_raw_stream(responder.stream_id).await;
    let (a, b) = match (a, b) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => {
            tracing::debug!("relay: cannot make the link's streams");
            for s in [a, b].into_iter().flatten() {
                s.destroy();
            }
            lock(shared).core.link_closed(&token);
            return;
        }
    };
    if a.relay_to(&b).is_err() || b.relay_to(&a).is_err() {
        a.destroy();
        b.destroy();
        lock(shared).core.link_closed(&token);
        return;
    }
    let answers = [
        (initiator.session, true, a.id()),
        (responder.session, false, b.id()),
    ];
    let senders: Vec<(Option<ChannelSender>, bool, u32)> = {
        let mut sh = lock(shared);
        sh.links.insert(token, Link { streams: [a, b] });
        answers
            .iter()
            .map(|(s, init, id)| (sh.senders.get(s).cloned(), *init, *id))
            .collect()
    };
    for (sender, is_initiator, id) in senders {
        let answer = Pair {
            is_initiator,
            token,
            id,
            seq: 0,
        };
        if let Some(s) = sender {
            let _ = s.send_encoded(MSG_PAIR, &answer).await;
        }
    }
    // The link goes when either stream closes (a DESTROY from one side closes both).
    let shared = shared.clone();
    let watch = {
        let sh = lock(&shared);
        sh.links
            .get(&token)
            .map(|l| (l.streams[0].control(), l.streams[1].control()))
    };
    if let Some((ca, cb)) = watch {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if !ca.is_alive() || !cb.is_alive() {
                    break;
                }
                if !lock(&shared).links.contains_key(&token) {
                    return;
                }
            }
            unlink(&shared, &token);
        });
    }
}

fn unlink(shared: &SharedRef, token: &[u8; 32]) {
    let mut sh = lock(shared);
    if let Some(l) = sh.links.remove(token) {
        for s in &l.streams {
            s.destroy();
        }
    }
    sh.core.link_closed(token);
}
