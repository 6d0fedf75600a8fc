//! How a connection's UDX stream finds its path, on the actor side.
//!
//! The core decides most paths ([`HyperEvent::ConnectPath`](crate::hyper::HyperEvent), the
//! server's `connect` hint), but two are only visible in the UDX driver: the other side's
//! first packet reaching our unconnected stream (a server connecting to an OPEN client, a
//! client's packet through the server's punched socket), and a relayed stream's first direct
//! packet after a later punch. Each stream gets a firewall ([`path_firewall`]) that decides
//! in the driver, under its lock, and leaves a [`Note`] for the actor:
//!
//! - the relay's own packets (from the relay's address on the relay connection's socket) are
//!   processed where they are;
//! - before a path is taken, a packet from the other side connects the stream where it
//!   arrived (once the remote stream id is known; before that it is remembered);
//! - on a relayed stream the first packet from elsewhere moves the stream there (the
//!   relay-to-direct upgrade);
//! - otherwise packets are processed and the stream stays.
//!
//! Blind-relay pairing ([`pair_through`]) runs as a task: connect to the relay over the DHT,
//! open its `blind-relay` channel, send `pair`, wait (bounded) for the answer.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use corenet_codec::PublicKey;
use corenet_mux::{Channel, ChannelOptions, DriverConfig, MuxHandle};
use corenet_noise::KeyPair;
use corenet_udx::{FirewallDecision, SocketId, UdxStream};
use tokio::sync::mpsc;

use crate::hyper::{ConnectError, ConnectId, HandshakeId, RelayPairing};
use crate::relay::messages::Pair;
use crate::relay::{MSG_PAIR, PROTOCOL};

use super::{Dht, Error};

/// How long a relay has to pair us (JS: 15 s, then RELAY_ABORTED).
pub const RELAY_PAIR_TIMEOUT: Duration = Duration::from_secs(15);
/// Keepalive of the connection to a relay (JS `relayKeepAlive`).
pub const RELAY_KEEPALIVE: Duration = Duration::from_secs(5);

/// Which connection a stream belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum StreamKey {
    Client(ConnectId),
    Server(HandshakeId),
}

/// What a stream's firewall tells the actor.
#[derive(Debug, Clone, Copy)]
pub(super) enum Note {
    /// The stream connected itself to the other side's first packet.
    Connected(StreamKey, SocketId, SocketAddr),
    /// A relayed stream moved to the direct path.
    Upgraded(StreamKey, SocketAddr),
}

/// The firewall's view of its stream, shared with the actor.
#[derive(Debug, Default)]
pub(super) struct PathState {
    /// The other side's stream id, once known.
    pub(super) remote_id: Option<u32>,
    /// The relay's socket and address while relayed.
    pub(super) relay: Option<(SocketId, SocketAddr)>,
    /// A path was taken (by the core, the firewall or the relay).
    pub(super) taken: bool,
    /// The stream runs through a relay.
    pub(super) relayed: bool,
    /// The relayed stream moved to a direct path.
    pub(super) upgraded: bool,
    /// The other side's first packet, from before its stream id was known.
    pub(super) seen: Option<(SocketId, SocketAddr)>,
}

/// Shared path state.
pub(super) type SharedPath = Arc<Mutex<PathState>>;

pub(super) fn lock(p: &SharedPath) -> std::sync::MutexGuard<'_, PathState> {
    p.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The firewall of a connection's stream (see the module docs).
pub(super) fn path_firewall(
    state: SharedPath,
    key: StreamKey,
    notes: mpsc::Sender<Note>,
) -> corenet_udx::Firewall {
    Arc::new(move |socket, from| {
        if from.port() == 0 {
            return FirewallDecision::Drop;
        }
        let mut st = lock(&state);
        if st.relay == Some((socket, from)) {
            return FirewallDecision::Accept;
        }
        if !st.taken {
            return match st.remote_id {
                Some(remote_id) => {
                    st.taken = true;
                    let _ = notes.try_send(Note::Connected(key, socket, from));
                    FirewallDecision::Connect { remote_id }
                }
                None => {
                    st.seen.get_or_insert((socket, from));
                    FirewallDecision::Accept
                }
            };
        }
        if st.relayed && !st.upgraded {
            if let Some(remote_id) = st.remote_id {
                st.upgraded = true;
                let _ = notes.try_send(Note::Upgraded(key, from));
                return FirewallDecision::Connect { remote_id };
            }
        }
        FirewallDecision::Accept
    })
}

/// A live pairing through a blind relay: the DHT connection to the relay, its mux and the
/// `blind-relay` channel. The relayed stream lives as long as this does.
#[derive(Debug)]
pub struct RelayHold {
    mux: MuxHandle,
    _channel: Channel,
    relay: PublicKey,
}

impl RelayHold {
    /// The relay's public key.
    pub fn relay(&self) -> PublicKey {
        self.relay
    }
}

impl Drop for RelayHold {
    fn drop(&mut self) {
        self.mux.close();
    }
}

/// Where the relay told us to send: its stream id, on the relay connection's socket, to the
/// relay's address.
#[derive(Debug)]
pub(super) struct Paired {
    pub(super) remote_id: u32,
    pub(super) socket: SocketId,
    pub(super) address: SocketAddr,
    pub(super) hold: RelayHold,
}

/// Pairs our stream `stream_id` through the relay named in `pairing` (hyperdht
/// `relayConnection`): connects to the relay as `key_pair`, opens `blind-relay` with our
/// public key as the channel id, sends `pair`, and waits for the relay's answer.
pub(super) async fn pair_through(
    dht: Dht,
    key_pair: KeyPair,
    pairing: RelayPairing,
    stream_id: u32,
) -> Result<Paired, Error> {
    let work = async {
        let conn = dht.connect(&key_pair, pairing.relay, Vec::new()).await?;
        let (socket, address) = {
            let raw: &UdxStream = conn.stream.get_ref();
            match (raw.socket_id(), raw.remote()) {
                (Some(s), Some((_, a))) => (s, a),
                _ => return Err(Error::Connect(ConnectError::RelayAborted)),
            }
        };
        let mux = MuxHandle::spawn(conn.stream, DriverConfig::default());
        let opts = ChannelOptions::new(PROTOCOL)
            .with_id(Bytes::copy_from_slice(key_pair.public_key().as_bytes()));
        let mut channel = mux
            .open(&opts)
            .map_err(|_| Error::Connect(ConnectError::RelayAborted))?;
        let pair = Pair {
            is_initiator: pairing.is_initiator,
            token: pairing.token,
            id: stream_id,
            seq: 0,
        };
        channel
            .send_encoded(MSG_PAIR, &pair)
            .await
            .map_err(|_| Error::Connect(ConnectError::RelayAborted))?;
        while let Some(m) = channel.recv().await {
            if m.message_type != MSG_PAIR {
                continue;
            }
            let Ok(answer) = m.decode::<Pair>() else {
                continue;
            };
            if answer.token == pairing.token && answer.is_initiator == pairing.is_initiator {
                // The channel stays open for the life of the link (closing it unpairs).
                return Ok(Paired {
                    remote_id: answer.id,
                    socket,
                    address,
                    hold: RelayHold {
                        mux,
                        _channel: channel,
                        relay: pairing.relay,
                    },
                });
            }
        }
        Err(Error::Connect(ConnectError::RelayAborted))
    };
    match tokio::time::timeout(RELAY_PAIR_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => Err(Error::Connect(ConnectError::RelayAborted)),
    }
}
