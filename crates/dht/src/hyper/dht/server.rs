//! The server side of a connect (hyperdht `lib/server.js`): incoming handshakes, the
//! firewall decision, the reply, and the server's half of the holepunch.
//!
//! After the firewall accepts a client the server answers the handshake and decides how the
//! connection will open: straight to the client when it is OPEN (or came directly), by
//! waiting for the client when we are OPEN, through the LAN shortcut when both share a
//! public address, or by punching. For a punch the server makes a puncher at once (its NAT
//! sampling runs while the client reads the reply) and sends the reply from the puncher's
//! socket, so the address the relay reports to the client is the one the punch will use.
//! Each accepted handshake gets a small *holepunch slot* (its id travels in the Noise
//! payload) that answers the client's PEER_HOLEPUNCH rounds; a slot lives for a bounded
//! time ([`PREPUNCH_TIMEOUT`] until a punch starts, then the puncher's own bound, then
//! [`HANDSHAKE_CLEAR_WAIT`]).

use super::*;
use crate::hyper::crypto::holepunch_secret;
use crate::hyper::holepunch::{match_address, PunchEvent};
use crate::hyper::messages::{HolepunchInfo, HolepunchMessage, HolepunchPayload, RelayThrough};
use crate::hyper::payload::SecurePayload;
use rand::RngCore;

/// How long an accepted handshake waits for a path to open before it is aborted (JS
/// `HANDSHAKE_INITIAL_TIMEOUT`).
pub const PREPUNCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Holepunch slots a server node offers at once: beyond, the handshake reply carries no
/// holepunch information (clients are told we cannot punch). The handshake still gets a
/// slot without a puncher, to time its path out ([`PREPUNCH_TIMEOUT`], then
/// [`HANDSHAKE_CLEAR_WAIT`]), so the slot count is bounded by time, not by this number.
pub const MAX_SERVER_PUNCHES: usize = 512;
/// PEER_HOLEPUNCH requests one slot keeps waiting for its NAT analysis; more are dropped.
pub const MAX_WAITING_PUNCH_REQUESTS: usize = 8;

/// A PEER_HOLEPUNCH request waiting for the NAT analysis.
#[derive(Debug)]
pub(super) struct PunchRequest {
    req: IncomingRequest,
    msg: HolepunchMessage,
    remote: HolepunchPayload,
    token: [u8; 32],
    from_relay: bool,
    reopen: bool,
}

/// One accepted handshake's holepunch state (JS `_holepunches[id]`).
#[derive(Debug)]
pub(super) struct ServerPunch {
    server: ServerId,
    handshake: HandshakeId,
    /// Set when holepunch messages may be answered.
    secure: Option<SecurePayload>,
    puncher: Option<u64>,
    round: u64,
    relay_token: Option<[u8; 32]>,
    /// Until a punch starts (JS `prepunching`).
    deadline: Option<Instant>,
    /// At the deadline only the puncher is destroyed (its abort then follows).
    deadline_destroys_puncher: bool,
    /// When the slot is forgotten.
    clear_at: Option<Instant>,
    aborted: bool,
    /// The stream found its path (or the connection is done with the slot).
    settled: bool,
    pub(super) waiting: Vec<PunchRequest>,
}

fn is_consistent(fw: u64) -> bool {
    fw == firewall::OPEN || fw == firewall::CONSISTENT
}

impl HyperDht {
    /// Sends a server's Noise reply the way the request's mode asks, from `socket` (the
    /// puncher's, when it is to be the punch's address) or the socket it arrived on.
    pub(super) fn send_server_reply(
        &mut self,
        req: &IncomingRequest,
        msg: &HandshakeMessage,
        noise: Bytes,
        socket: Option<SocketKind>,
    ) {
        match msg.mode {
            mode::FROM_CLIENT => {
                let reply = HandshakeMessage {
                    mode: mode::REPLY,
                    noise,
                    peer_address: None,
                    relay_address: None,
                };
                self.node.reply(
                    req,
                    ReplyOptions {
                        value: Some(to_bytes(&reply)),
                        socket,
                        ..ReplyOptions::ack()
                    },
                );
            }
            mode::FROM_RELAY => {
                let fwd = HandshakeMessage {
                    mode: mode::FROM_SERVER,
                    noise,
                    peer_address: msg.peer_address,
                    relay_address: None,
                };
                self.node.relay(req, req.from, Some(to_bytes(&fwd)), socket);
            }
            mode::FROM_SECOND_RELAY => {
                if let Some(relay) = msg.relay_address {
                    let fwd = HandshakeMessage {
                        mode: mode::FROM_SERVER,
                        noise,
                        peer_address: msg.peer_address,
                        relay_address: None,
                    };
                    self.node.relay(req, relay, Some(to_bytes(&fwd)), socket);
                }
            }
            _ => {}
        }
    }

    pub(super) fn server_handshake(
        &mut self,
        now: Instant,
        server: ServerId,
        req: IncomingRequest,
        msg: HandshakeMessage,
    ) {
        if !matches!(
            msg.mode,
            mode::FROM_CLIENT | mode::FROM_RELAY | mode::FROM_SECOND_RELAY
        ) || msg.noise.is_empty()
        {
            return;
        }
        let key = blake2b_256(&msg.noise);
        if let Some(slot) = self.slots.get_mut(&key) {
            match &mut slot.state {
                SlotState::Done(noise, socket) => {
                    let (noise, socket) = (noise.clone(), *socket);
                    self.send_server_reply(&req, &msg, noise, socket);
                }
                SlotState::Pending { waiters, .. } => {
                    if waiters.len() < MAX_HANDSHAKE_WAITERS {
                        waiters.push(Waiter { req, msg });
                    }
                }
                SlotState::Rejected => {}
            }
            return;
        }
        if self.pending_handshakes.len() >= MAX_PENDING_HANDSHAKES {
            tracing::debug!("dropping a handshake: too many waiting for a firewall decision");
            return;
        }
        if !self.servers.contains_key(&server) {
            return;
        }
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut self.rng, &mut seed);
        let options = HandshakeOptions {
            prologue: self.ns.peer_handshake.to_vec(),
            remote_public_key: None,
            rng_seed: Some(seed),
        };
        let Some(s) = self.servers.get(&server) else {
            return;
        };
        let Ok(mut hs) = Handshake::new(Pattern::IK, false, &s.key_pair, options) else {
            return;
        };
        let Ok(payload) = hs.read_message(&msg.noise) else {
            tracing::debug!(from = %req.from, "unreadable handshake");
            self.slots.insert(
                key,
                Slot {
                    state: SlotState::Rejected,
                    expires: now + HANDSHAKE_CLEAR_WAIT,
                },
            );
            self.timers
                .push(Reverse((now + HANDSHAKE_CLEAR_WAIT, TimerKind::SlotExpire)));
            return;
        };
        let Ok((payload, _)) = decode_prefix::<NoisePayload>(&payload) else {
            return;
        };
        let Some(remote_public_key) = hs.remote_public_key() else {
            return;
        };
        let client_address = msg.peer_address.unwrap_or(req.from);
        let direct = msg.peer_address.is_none();
        let req_socket = req.socket;
        let id = HandshakeId(self.next_id());
        self.pending_handshakes.insert(id, key);
        self.slots.insert(
            key,
            Slot {
                state: SlotState::Pending {
                    handshake: Box::new(hs),
                    id,
                    server,
                    payload: Box::new(payload.clone()),
                    client_address,
                    direct,
                    waiters: vec![Waiter { req, msg }],
                },
                expires: now + HANDSHAKE_CLEAR_WAIT,
            },
        );
        let socket = if direct {
            req_socket
        } else {
            self.node.request_socket()
        };
        self.events.push_back(HyperEvent::IncomingHandshake {
            server,
            handshake: id,
            remote_public_key,
            client_address,
            payload,
            socket,
        });
    }

    /// Accepts an incoming handshake: answers it with our UDX stream id `udx_id`. A
    /// [`HyperEvent::ServerConnection`] follows unless the client's payload is unusable (then
    /// the client gets an error payload).
    pub fn accept(&mut self, now: Instant, handshake: HandshakeId, udx_id: u32) {
        self.now = self.now.max(now);
        let Some(key) = self.pending_handshakes.remove(&handshake) else {
            return;
        };
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        let state = std::mem::replace(&mut slot.state, SlotState::Rejected);
        slot.expires = now + HANDSHAKE_CLEAR_WAIT;
        self.timers
            .push(Reverse((now + HANDSHAKE_CLEAR_WAIT, TimerKind::SlotExpire)));
        let SlotState::Pending {
            mut handshake,
            id,
            server,
            payload,
            client_address,
            direct,
            waiters,
            ..
        } = state
        else {
            return;
        };
        let Some(s) = self.servers.get(&server) else {
            return;
        };
        let opts = s.opts.clone();
        let relays = s.relays.clone();
        let relay_addresses = s.relay_addresses.clone();
        let error = if payload.version != 1 {
            payload_error::VERSION_MISMATCH
        } else if payload.udx.is_none() {
            payload_error::ABORTED
        } else {
            payload_error::NONE
        };
        let remote = self.node.remote_address();
        let mut addresses4: Vec<SocketAddrV4> = remote.into_iter().collect();
        if opts.share_local_address {
            addresses4.extend(self.lan_addresses());
        }
        // hyperswarm relays a server's connections when its NAT randomizes ports.
        let randomized = self.node.nat_address().is_some_and(|a| a.port() == 0);
        let relay_through = opts
            .relay_through
            .filter(|_| !opts.relay_only_when_randomized || randomized);
        let relay_token = relay_through.map(|_| {
            let mut t = [0u8; 32];
            self.rng.fill_bytes(&mut t);
            t
        });
        let hp_id = (0..)
            .find(|i| !self.server_punches.contains_key(i))
            .unwrap_or(0);
        let can_punch = remote.is_none() && self.server_punches.len() < MAX_SERVER_PUNCHES;
        let ours = NoisePayload {
            version: 1,
            error,
            firewall: if remote.is_some() {
                firewall::OPEN
            } else {
                firewall::UNKNOWN
            },
            holepunch: can_punch.then(|| HolepunchInfo {
                id: hp_id,
                relays: relays.clone(),
            }),
            addresses4,
            addresses6: Vec::new(),
            udx: Some(UdxInfo {
                version: 1,
                reusable_socket: false,
                id: if error == 0 { u64::from(udx_id) } else { 0 },
                seq: 0,
            }),
            secret_stream: Some(1),
            relay_through: relay_through
                .zip(relay_token)
                .map(|(pk, token)| RelayThrough {
                    version: 1,
                    public_key: pk,
                    token,
                }),
            relay_addresses: (!relay_addresses.is_empty()).then_some(relay_addresses),
        };
        let Ok(msg2) = handshake.write_message(&corenet_codec::to_vec(&ours)) else {
            return;
        };
        let msg2 = Bytes::from(msg2);
        let Ok(result) = handshake.finish() else {
            return;
        };
        if error != payload_error::NONE {
            if let Some(slot) = self.slots.get_mut(&key) {
                slot.state = SlotState::Done(msg2.clone(), None);
            }
            for w in &waiters {
                self.send_server_reply(&w.req, &w.msg, msg2.clone(), None);
            }
            return self.process(now);
        }
        let remote_udx_id = payload.udx.map_or(0, |u| u.id as u32);
        let server_seen_as = waiters.first().map(|w| w.req.to);
        let req_socket = waiters.first().map_or(SocketKind::Server, |w| w.req.socket);
        let mut sp = ServerPunch {
            server,
            handshake: id,
            secure: None,
            puncher: None,
            round: 0,
            relay_token: None,
            deadline: None,
            deadline_destroys_puncher: false,
            clear_at: None,
            aborted: false,
            settled: false,
            waiting: Vec::new(),
        };
        let mut connect = None;
        let mut relay = None;
        let mut reply_socket = None;
        let mut wants_puncher = false;
        if payload.firewall == firewall::OPEN || direct {
            let socket = if direct {
                req_socket
            } else {
                self.node.request_socket()
            };
            connect = Some((socket, client_address));
            self.punch_stats.open += 1;
            sp.settled = true;
            sp.clear_at = Some(now + HANDSHAKE_CLEAR_WAIT);
        } else {
            relay = match (relay_through, relay_token, &payload.relay_through) {
                (Some(pk), Some(token), _) => Some(RelayPairing {
                    relay: pk,
                    token,
                    is_initiator: true,
                }),
                (_, _, Some(r)) => Some(RelayPairing {
                    relay: r.public_key,
                    token: r.token,
                    is_initiator: false,
                }),
                _ => None,
            };
            sp.relay_token = relay.map(|r| r.token);
            sp.deadline = Some(now + PREPUNCH_TIMEOUT);
            let same_host = server_seen_as.is_some_and(|a| a.ip() == client_address.ip());
            let lan_match = same_host && opts.share_local_address && {
                let theirs: Vec<SocketAddrV4> = payload
                    .addresses4
                    .iter()
                    .filter(|a| connect::is_private(a.ip()))
                    .copied()
                    .collect();
                match_address(&self.lan_addresses(), &theirs).is_some()
            };
            if lan_match && can_punch {
                // The client will try our LAN address; punch too, but answer from the
                // usual socket so the LAN shortcut reaches the DHT socket.
                wants_puncher = true;
            } else if remote.is_some() || !opts.holepunch || !can_punch {
                // The client connects to us (or cannot): wait for its first packet.
            } else {
                wants_puncher = true;
                sp.deadline_destroys_puncher = true;
            }
        }
        if wants_puncher {
            let mut secret = [0u8; 32];
            self.rng.fill_bytes(&mut secret);
            sp.secure = Some(SecurePayload::new(
                holepunch_secret(&result.hash, &self.ns),
                secret,
            ));
        }
        let deadline = sp.deadline;
        let clear_at = sp.clear_at;
        self.server_punches.insert(hp_id, sp);
        if wants_puncher {
            let fw = payload.firewall;
            match self.new_puncher(now, PunchOwner::Server(hp_id), false, fw) {
                Some(pid) => {
                    if let Some(sp) = self.server_punches.get_mut(&hp_id) {
                        sp.puncher = Some(pid);
                        if sp.deadline_destroys_puncher {
                            reply_socket = self
                                .punchers
                                .get(&pid)
                                .map(|p| SocketKind::Pool(p.socket()));
                        }
                    }
                }
                None => tracing::debug!("no pool socket for a holepunch; waiting for the client"),
            }
        }
        for at in [deadline, clear_at].into_iter().flatten() {
            self.timers
                .push(Reverse((at, TimerKind::ServerPunch(hp_id))));
        }
        if let Some(slot) = self.slots.get_mut(&key) {
            slot.state = SlotState::Done(msg2.clone(), reply_socket);
        }
        for w in &waiters {
            self.send_server_reply(&w.req, &w.msg, msg2.clone(), reply_socket);
        }
        self.events.push_back(HyperEvent::ServerConnection {
            server,
            handshake: id,
            result,
            remote_udx_id,
            connect,
            relay,
        });
        self.process(now);
    }

    /// Refuses an incoming handshake: nothing is sent, and copies of it are ignored for a
    /// while.
    pub fn reject(&mut self, now: Instant, handshake: HandshakeId) {
        let Some(key) = self.pending_handshakes.remove(&handshake) else {
            return;
        };
        if let Some(slot) = self.slots.get_mut(&key) {
            slot.state = SlotState::Rejected;
            slot.expires = now + HANDSHAKE_CLEAR_WAIT;
        }
        self.timers
            .push(Reverse((now + HANDSHAKE_CLEAR_WAIT, TimerKind::SlotExpire)));
    }

    fn server_punch_of(&self, handshake: HandshakeId) -> Option<u64> {
        self.server_punches
            .iter()
            .find(|(_, sp)| sp.handshake == handshake)
            .map(|(id, _)| *id)
    }

    /// The driver connected an accepted handshake's stream (the client's first packet came,
    /// on some socket): the punch for it stops. No event follows.
    pub fn server_stream_connected(&mut self, now: Instant, handshake: HandshakeId) {
        self.now = self.now.max(now);
        let Some(id) = self.server_punch_of(handshake) else {
            return;
        };
        self.settle_server_punch(now, id);
        self.process(now);
    }

    /// The accepted handshake's stream is gone (closed, or never connected): its slot goes.
    pub fn server_stream_closed(&mut self, now: Instant, handshake: HandshakeId) {
        if let Some(id) = self.server_punch_of(handshake) {
            self.settle_server_punch(now, id);
        }
        self.process(now);
    }

    fn settle_server_punch(&mut self, now: Instant, id: u64) {
        if let Some(sp) = self.server_punches.get_mut(&id) {
            sp.settled = true;
        }
        self.wind_down_server_punch(now, id);
    }

    /// A slot is done with: its waits and its puncher go, and it is forgotten after
    /// [`HANDSHAKE_CLEAR_WAIT`] (copies of its messages still find it meanwhile).
    fn wind_down_server_punch(&mut self, now: Instant, id: u64) {
        let Some(sp) = self.server_punches.get_mut(&id) else {
            return;
        };
        sp.deadline = None;
        sp.waiting.clear();
        let pid = sp.puncher.take();
        if sp.clear_at.is_none() {
            sp.clear_at = Some(now + HANDSHAKE_CLEAR_WAIT);
            self.timers.push(Reverse((
                now + HANDSHAKE_CLEAR_WAIT,
                TimerKind::ServerPunch(id),
            )));
        }
        if let Some(pid) = pid {
            self.punch_owners.remove(&pid);
            self.destroy_puncher(now, pid);
        }
    }

    /// JS `onabort`: no path opened. The stream goes unless a relay carries it.
    fn abort_server_punch(&mut self, now: Instant, id: u64) {
        let Some(sp) = self.server_punches.get_mut(&id) else {
            return;
        };
        if sp.aborted || sp.settled {
            return;
        }
        sp.aborted = true;
        let (server, handshake, relayed) = (sp.server, sp.handshake, sp.relay_token.is_some());
        self.wind_down_server_punch(now, id);
        self.punch_stats.failed += 1;
        self.events.push_back(HyperEvent::ServerPathAborted {
            server,
            handshake,
            relayed,
        });
    }

    pub(super) fn on_server_punch_timer(&mut self, now: Instant, id: u64) {
        let Some(sp) = self.server_punches.get_mut(&id) else {
            return;
        };
        if sp.clear_at.is_some_and(|t| t <= now) {
            let sp = self.server_punches.remove(&id);
            if let Some(pid) = sp.and_then(|sp| sp.puncher) {
                self.punch_owners.remove(&pid);
                self.destroy_puncher(now, pid);
            }
            return;
        }
        if sp.deadline.is_some_and(|t| t <= now) {
            sp.deadline = None;
            match (sp.deadline_destroys_puncher, sp.puncher) {
                // The puncher's abort event does the rest.
                (true, Some(pid)) => self.destroy_puncher(now, pid),
                _ => self.abort_server_punch(now, id),
            }
        }
    }

    pub(super) fn on_server_punch_event(&mut self, now: Instant, id: u64, e: PunchEvent) {
        match e {
            PunchEvent::Aborted => {
                if let Some(sp) = self.server_punches.get_mut(&id) {
                    sp.puncher = None;
                }
                self.abort_server_punch(now, id);
            }
            // The responder never connects on a probe: the client's first UDX packet does.
            PunchEvent::Connected { .. } => {}
        }
    }

    /// A PEER_HOLEPUNCH from the client reached us through a relay (JS `_onpeerholepunch`).
    pub(super) fn on_server_holepunch(
        &mut self,
        now: Instant,
        server: ServerId,
        req: IncomingRequest,
        msg: HolepunchMessage,
    ) {
        let Some(peer) = msg.peer_address else { return };
        let id = msg.id;
        let Some(sp) = self.server_punches.get_mut(&id) else {
            return;
        };
        if sp.server != server || sp.settled {
            return;
        }
        let Some(secure) = sp.secure.as_ref() else {
            // Not opened for punching (JS `_abort` without a payload: no answer).
            return;
        };
        let Ok(remote) = secure.open(&msg.payload) else {
            tracing::debug!(from = %req.from, "holepunch payload that does not open");
            return;
        };
        let token = secure.token(peer.ip());
        let Some(pid) = sp.puncher.filter(|p| self.punchers.contains_key(p)) else {
            return self.reply_punch_abort(&req, &msg, id, payload_error::ABORTED);
        };
        if remote.error != payload_error::NONE {
            if remote.round >= sp.round {
                sp.round = remote.round;
            }
            self.reply_punch_abort(&req, &msg, id, payload_error::ABORTED);
            return self.abort_server_punch(now, id);
        }
        let from_relay = self
            .servers
            .get(&server)
            .is_some_and(|s| s.generations.iter().any(|g| g.contains(&req.from)));
        let echoed = from_relay && remote.remote_token == Some(token);
        let newer = remote.round >= sp.round;
        if newer {
            sp.round = remote.round;
        }
        if sp.waiting.len() >= MAX_WAITING_PUNCH_REQUESTS {
            return;
        }
        let Some(p) = self.punchers.get_mut(&pid) else {
            return;
        };
        if req.socket == SocketKind::Pool(p.socket()) {
            p.nat_mut().add(req.to, req.from);
        }
        if newer {
            p.update_remote(
                remote.punching,
                remote.firewall,
                remote.addresses.as_deref(),
                echoed.then(|| *peer.ip()),
            );
        }
        if let Some(sp) = self.server_punches.get_mut(&id) {
            sp.waiting.push(PunchRequest {
                req,
                msg,
                remote,
                token,
                from_relay,
                reopen: false,
            });
        }
        self.server_punch_step(now, id);
    }

    /// Answers the waiting PEER_HOLEPUNCH requests whose NAT analysis has concluded.
    pub(super) fn server_punch_step(&mut self, now: Instant, id: u64) {
        loop {
            let Some(sp) = self.server_punches.get_mut(&id) else {
                return;
            };
            let Some(pid) = sp.puncher else {
                sp.waiting.clear();
                return;
            };
            let Some(mut w) = (!sp.waiting.is_empty()).then(|| sp.waiting.remove(0)) else {
                return;
            };
            let Some(p) = self.punchers.get_mut(&pid) else {
                return;
            };
            let Some(stable) = p.analyze(w.reopen, &mut self.pool) else {
                // Still sampling: put it back and wait.
                if let Some(sp) = self.server_punches.get_mut(&id) {
                    sp.waiting.insert(0, w);
                }
                return self.service_puncher(now, pid);
            };
            if !w.reopen && !p.remote_holepunching() && !stable {
                w.reopen = true;
                if let Some(sp) = self.server_punches.get_mut(&id) {
                    sp.waiting.insert(0, w);
                }
                continue;
            }
            if w.reopen && !stable {
                self.reply_punch_abort(&w.req, &w.msg, id, payload_error::ABORTED);
                return self.abort_server_punch(now, id);
            }
            self.service_puncher(now, pid);
            self.answer_punch(now, id, pid, w);
        }
    }

    fn answer_punch(&mut self, now: Instant, id: u64, pid: u64, w: PunchRequest) {
        let Some(p) = self.punchers.get_mut(&pid) else {
            return;
        };
        // Fast mode: we are consistent and the client opened a session to us: ping back
        // at once.
        if is_consistent(p.nat().firewall())
            && w.remote
                .remote_address
                .is_some_and(|ra| p.nat().addresses().is_some_and(|a| a.contains(&ra)))
        {
            if let Some(peer) = w.msg.peer_address {
                p.ping(peer);
            }
        }
        let mut error = payload_error::NONE;
        if p.remote_holepunching() {
            let random =
                p.remote_firewall() >= firewall::RANDOM || p.nat().firewall() >= firewall::RANDOM;
            let relay_token = self.server_punches.get(&id).and_then(|sp| sp.relay_token);
            if let Some(sp) = self.server_punches.get_mut(&id) {
                sp.deadline = None;
            }
            if random && self.random_punches.busy(now) {
                self.punch_stats.try_later += 1;
                if relay_token.is_none() {
                    self.reply_punch_abort(&w.req, &w.msg, id, payload_error::TRY_LATER);
                    return self.abort_server_punch(now, id);
                }
                error = payload_error::TRY_LATER;
            } else {
                let Some(p) = self.punchers.get_mut(&pid) else {
                    return;
                };
                let started = p.punch(now, &mut self.rng, &mut self.pool, &mut self.random_punches);
                self.count_strategy(pid);
                self.service_puncher(now, pid);
                if !started {
                    self.reply_punch_abort(&w.req, &w.msg, id, payload_error::ABORTED);
                    return self.abort_server_punch(now, id);
                }
            }
        }
        let Some(p) = self.punchers.get_mut(&pid) else {
            return;
        };
        if p.nat().firewall() != firewall::UNKNOWN {
            p.nat_mut().freeze();
        }
        let round = self.server_punches.get(&id).map_or(0, |sp| sp.round);
        let payload = HolepunchPayload {
            error,
            firewall: p.nat().firewall(),
            round,
            connected: p.is_connected(),
            punching: p.is_punching(),
            addresses: p.nat().addresses().map(<[_]>::to_vec),
            remote_address: None,
            token: w.from_relay.then_some(w.token),
            remote_token: w.remote.token,
        };
        let socket = SocketKind::Pool(p.socket());
        self.service_puncher(now, pid);
        self.reply_punch(&w.req, &w.msg, id, &payload, socket);
    }

    /// Relays a sealed answer back through the relay that brought the request.
    fn reply_punch(
        &mut self,
        req: &IncomingRequest,
        msg: &HolepunchMessage,
        id: u64,
        payload: &HolepunchPayload,
        socket: SocketKind,
    ) {
        let mut nonce = [0u8; 24];
        self.rng.fill_bytes(&mut nonce);
        let Some(sealed) = self
            .server_punches
            .get(&id)
            .and_then(|sp| sp.secure.as_ref())
            .map(|s| s.seal(payload, nonce))
        else {
            return;
        };
        let fwd = HolepunchMessage {
            mode: mode::FROM_SERVER,
            id: 0,
            payload: sealed,
            peer_address: msg.peer_address,
        };
        self.node
            .relay(req, req.from, Some(to_bytes(&fwd)), Some(socket));
    }

    /// JS `_abort(h, error)`: a sealed error from the DHT socket.
    fn reply_punch_abort(
        &mut self,
        req: &IncomingRequest,
        msg: &HolepunchMessage,
        id: u64,
        error: u64,
    ) {
        let round = self.server_punches.get(&id).map_or(0, |sp| sp.round);
        let payload = HolepunchPayload {
            error,
            firewall: firewall::UNKNOWN,
            round,
            ..HolepunchPayload::default()
        };
        let socket = self.node.request_socket();
        self.reply_punch(req, msg, id, &payload, socket);
    }
}
