//! The client side of a connect (hyperdht `lib/connect.js`): finding the server, the Noise
//! IK handshake through the nodes that hold its record, then choosing the path:
//!
//! 1. the server answered the handshake itself, or one side is OPEN: connect directly;
//! 2. both behind one public address: PING the server's best-matching LAN address and
//!    connect there on the pong (racing the punch below; the first path wins);
//! 3. otherwise punch: a *probe round* (PEER_HOLEPUNCH through the server's relay, telling
//!    each side the other's NAT class and addresses, while a fresh socket samples our own
//!    NAT), then a *punch round* (address tokens echoed, both sides start their strategy;
//!    see [`holepunch`](crate::hyper::holepunch)); random punches respect the node-wide
//!    limit (wait, TRY_LATER) and need a relay to fall back on while they wait.
//!
//! When either side offered a blind relay, the driver pairs through it meanwhile
//! ([`HyperEvent::Handshaked`]'s `relay`); a path found later upgrades the relayed stream.

use super::*;
use crate::hyper::crypto::holepunch_secret;
use crate::hyper::holepunch::{local_addresses, match_address, PunchEvent};
use crate::hyper::messages::{HolepunchMessage, HolepunchPayload, RelayThrough};
use crate::hyper::payload::SecurePayload;
use rand::{Rng, RngCore};

/// How long a connect whose Noise handshake finished may keep looking for a path (the
/// longest punch, 35 s of random probes, plus waits for the random-punch limit).
pub const PUNCH_TIMEOUT: Duration = Duration::from_secs(90);
/// How long an OPEN client waits for the server to connect to it (JS: 10 s).
pub const PASSIVE_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause when the server does not know its NAT yet (JS: 1 s).
pub const UNKNOWN_REMOTE_WAIT: Duration = Duration::from_secs(1);
/// Times a random punch waits for the node-wide limit before giving up (JS waits forever).
pub const MAX_TRY_LATER: u32 = 4;
/// Retransmissions of a PEER_HOLEPUNCH request (JS uses dht-rpc's default, 3). Each try
/// crosses four links (client, relay, server, relay, client), so at 10% loss a try fails
/// one time in three and four tries fail a punch in 70; six tries, one in 600. The server
/// answers a repeated message without new state.
pub const HOLEPUNCH_RETRIES: u8 = 5;

/// Which PEER_HOLEPUNCH round a reply belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HpStage {
    /// The probe round.
    Probe,
    /// The punch round.
    Punch { delayed: bool, random: bool },
    /// The notice that a random punch must wait (its answer verifies the server's address).
    Delayed,
    /// A message whose reply nobody waits for (an abort).
    Fire,
}

/// Where a connect is after its Noise handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Not punching (an OPEN client waits for the server, or the LAN ping is the only hope).
    Waiting,
    /// Probe round request out.
    ProbeSent { retry: bool },
    /// The server does not know its NAT yet: a second before analysing.
    ProbeSleep { retry: bool },
    /// Waiting for our NAT analysis (with a reopen when `reopen`).
    ProbeAnalyze { retry: bool, reopen: bool },
    /// A random punch waits for the node-wide limit.
    TryLater { delayed: bool },
    /// Punch round request out.
    PunchSent,
    /// Both sides punch; waiting for a probe.
    Punching,
    /// Finished (a path was taken, or the punch failed while a relay carries on).
    Done,
}

/// A connect after its Noise handshake.
#[derive(Debug)]
pub(super) struct Established {
    /// The node the handshake went through.
    relay_address: SocketAddrV4,
    /// The server as that node saw it (its own address when it answered itself).
    server_address: SocketAddrV4,
    /// Us as that node saw us.
    client_address: SocketAddrV4,
    /// The handshake went through a relay (not to the server itself).
    relayed: bool,
    payload: NoisePayload,
    secure: SecurePayload,
    /// Set when either side offered a blind relay (a random punch may then wait).
    relay_token: Option<[u8; 32]>,
    puncher: Option<u64>,
    server_relay: Option<RelayInfo>,
    round: u64,
    phase: Phase,
    wake_at: Option<Instant>,
    /// The server's token from the probe round.
    probe_token: Option<[u8; 32]>,
    /// The token we sent in the punch round, and to which address.
    punch_token: Option<[u8; 32]>,
    punch_peer: SocketAddrV4,
    try_laters: u32,
    /// The LAN PING is out.
    lan_pending: bool,
}

fn diff(a: &SocketAddrV4, b: &SocketAddrV4) -> bool {
    a != b
}

impl HyperDht {
    /// Connects to the server with `remote_public_key`, offering our UDX stream `udx_id`:
    /// finds its record, sends the Noise IK handshake through the nodes that hold it (and
    /// directly to `opts.relay_addresses`), then finds a path (see the module docs). Reports
    /// [`HyperEvent::Handshaked`], then [`HyperEvent::ConnectPath`] or
    /// [`HyperEvent::ConnectFailed`].
    pub fn connect(
        &mut self,
        now: Instant,
        key_pair: &KeyPair,
        remote_public_key: PublicKey,
        udx_id: u32,
        mut opts: ConnectOptions,
    ) -> ConnectId {
        let id = ConnectId(self.next_id());
        let target = server_target(&remote_public_key);
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let options = HandshakeOptions {
            prologue: self.ns.peer_handshake.to_vec(),
            remote_public_key: Some(remote_public_key),
            rng_seed: Some(seed),
        };
        let remote = self.node.remote_address();
        let fw = if remote.is_some() {
            firewall::OPEN
        } else {
            firewall::UNKNOWN
        };
        let mut addresses4: Vec<SocketAddrV4> = remote.into_iter().collect();
        if opts.lan {
            addresses4.extend(self.lan_addresses());
        }
        let randomized = self.node.nat_address().is_some_and(|a| a.port() == 0);
        if opts.relay_only_when_randomized && !randomized {
            opts.relay_through = None;
        }
        let relay_token = opts.relay_through.map(|_| {
            let mut t = [0u8; 32];
            self.rng.fill_bytes(&mut t);
            t
        });
        let payload = NoisePayload {
            firewall: fw,
            addresses4,
            udx: Some(UdxInfo {
                version: 1,
                reusable_socket: false,
                id: u64::from(udx_id),
                seq: 0,
            }),
            secret_stream: Some(1),
            relay_through: opts
                .relay_through
                .zip(relay_token)
                .map(|(pk, token)| RelayThrough {
                    version: 1,
                    public_key: pk,
                    token,
                }),
            ..NoisePayload::default()
        };
        let hs = Handshake::new(Pattern::IK, true, key_pair, options).and_then(|mut hs| {
            let m = hs.write_message(&corenet_codec::to_vec(&payload))?;
            Ok((hs, m))
        });
        let (hs, msg1) = match hs {
            Ok(x) => x,
            Err(e) => {
                self.events.push_back(HyperEvent::ConnectFailed {
                    connect: id,
                    error: ConnectError::Handshake(e.to_string()),
                });
                return id;
            }
        };
        let deadline = now + CONNECT_TIMEOUT;
        let relay_addresses = opts.relay_addresses.clone();
        self.connects.insert(
            id,
            Connect {
                handshake: Some(Box::new(hs)),
                msg1: Bytes::from(msg1),
                target,
                tried: HashSet::new(),
                attempts: 0,
                find_op: None,
                found: false,
                deadline,
                opts,
                relay_token,
                firewall: fw,
                est: None,
            },
        );
        self.timers
            .push(Reverse((deadline, TimerKind::ConnectDeadline(id))));
        for addr in relay_addresses.into_iter().take(ANNOUNCE_RELAYS) {
            self.connect_through(now, id, addr, false);
        }
        // A persistent node may hold the server's forward itself.
        if let Some(f) = self.store.forward(now, &target).map(|f| f.relay) {
            self.connect_through(now, id, f, false);
        }
        let op = self.start_op(
            now,
            OpKind::FindPeer { connect: Some(id) },
            QuerySpec::new(target, command::FIND_PEER),
            true,
        );
        if let Some(c) = self.connects.get_mut(&id) {
            c.find_op = Some(op);
        }
        id
    }

    /// Our local addresses for the LAN shortcut (JS `Holepuncher.localAddresses` of the
    /// server socket).
    pub(super) fn lan_addresses(&self) -> Vec<SocketAddrV4> {
        let port = self.node.server_port();
        if port == 0 {
            return Vec::new();
        }
        local_addresses(
            self.bound_host.unwrap_or(Ipv4Addr::UNSPECIFIED),
            &self.local_addresses,
            port,
        )
    }

    pub(super) fn connect_through(
        &mut self,
        now: Instant,
        c: ConnectId,
        to: SocketAddrV4,
        found: bool,
    ) {
        let Some(conn) = self.connects.get_mut(&c) else {
            return;
        };
        if found {
            conn.found = true;
        }
        if !conn.tried.insert(to) || conn.handshake.is_none() {
            return;
        }
        conn.attempts += 1;
        let msg = HandshakeMessage {
            mode: mode::FROM_CLIENT,
            noise: conn.msg1.clone(),
            peer_address: None,
            relay_address: None,
        };
        let spec = RequestSpec {
            command: command::PEER_HANDSHAKE,
            target: Some(conn.target),
            value: Some(to_bytes(&msg)),
            ..Default::default()
        };
        self.send(now, to, spec, Purpose::Handshake { connect: c, to });
    }

    pub(super) fn on_connect_find_done(&mut self, _now: Instant, c: ConnectId) {
        if let Some(conn) = self.connects.get_mut(&c) {
            conn.find_op = None;
        }
        self.check_connect_exhausted(c);
    }

    pub(super) fn check_connect_exhausted(&mut self, c: ConnectId) {
        let Some(conn) = self.connects.get(&c) else {
            return;
        };
        if conn.find_op.is_some() || conn.handshake.is_none() {
            return;
        }
        let outstanding = self
            .requests
            .values()
            .any(|p| matches!(p, Purpose::Handshake { connect, .. } if *connect == c));
        if outstanding {
            return;
        }
        let err = if conn.attempts == 0 && !conn.found {
            ConnectError::PeerNotFound
        } else {
            ConnectError::ConnectionFailed
        };
        self.fail_connect(c, err);
    }

    /// Ends a connect: its query, requests and puncher go; the driver learns `error`.
    pub(super) fn fail_connect(&mut self, c: ConnectId, error: ConnectError) {
        if self.finish_connect(c) {
            tracing::debug!(connect = c.0, error = %error, "connect failed");
            self.events
                .push_back(HyperEvent::ConnectFailed { connect: c, error });
        }
    }

    /// Forgets a connect; true if it existed.
    fn finish_connect(&mut self, c: ConnectId) -> bool {
        let Some(conn) = self.connects.remove(&c) else {
            return false;
        };
        if let Some(op) = conn.find_op {
            self.cancel(op);
        }
        let mut cancel = Vec::new();
        self.requests.retain(|id, p| {
            let mine = matches!(p,
                Purpose::Handshake { connect, .. }
                | Purpose::Holepunch { connect, .. }
                | Purpose::LanPing { connect, .. } if *connect == c);
            if mine {
                cancel.push(*id);
            }
            !mine
        });
        for id in cancel {
            self.node.cancel_request(id);
        }
        if let Some(pid) = conn.est.and_then(|e| e.puncher) {
            self.punch_owners.remove(&pid);
            if let Some(p) = self.punchers.get_mut(&pid) {
                p.destroy(self.now, &mut self.pool, &mut self.random_punches);
            }
            self.forget_puncher(pid);
        }
        true
    }

    pub(super) fn on_handshake_reply(
        &mut self,
        now: Instant,
        c: ConnectId,
        to: SocketAddrV4,
        result: Result<Reply, RequestError>,
    ) {
        let reply = match result {
            Ok(r) if r.from == to => r,
            _ => return self.check_connect_exhausted(c),
        };
        let Some(v) = reply.value.as_ref() else {
            return self.check_connect_exhausted(c);
        };
        let Ok((msg, _)) = decode_prefix::<HandshakeMessage>(v) else {
            return self.check_connect_exhausted(c);
        };
        if msg.mode != mode::REPLY || msg.noise.is_empty() {
            return self.check_connect_exhausted(c);
        }
        let Some(conn) = self.connects.get_mut(&c) else {
            return;
        };
        let Some(mut hs) = conn.handshake.take() else {
            return;
        };
        let payload = match hs.read_message(&msg.noise) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(%to, error = %e, "bad handshake reply");
                conn.handshake = Some(hs);
                return self.check_connect_exhausted(c);
            }
        };
        let payload = match decode_prefix::<NoisePayload>(&payload) {
            Ok((p, _)) => p,
            Err(_) => return self.fail_connect(c, ConnectError::ServerIncompatible(0)),
        };
        if payload.version != 1 {
            return self.fail_connect(c, ConnectError::ServerIncompatible(payload.version));
        }
        if payload.error != payload_error::NONE {
            return self.fail_connect(c, ConnectError::ServerError(payload.error));
        }
        let Some(udx) = payload.udx else {
            return self.fail_connect(c, ConnectError::ServerError(payload_error::ABORTED));
        };
        let result = match hs.finish() {
            Ok(r) => r,
            Err(e) => return self.fail_connect(c, ConnectError::Handshake(e.to_string())),
        };
        // The handshake is done: stop the search, keep only what the path needs.
        let mut local_secret = [0u8; 32];
        self.rng.fill_bytes(&mut local_secret);
        let Some(conn) = self.connects.get_mut(&c) else {
            return;
        };
        let find = conn.find_op.take();
        conn.deadline = now + PUNCH_TIMEOUT;
        // hyperdht `relayConnection`: the server's offer wins; else ours.
        let relay = match (
            &payload.relay_through,
            conn.opts.relay_through,
            conn.relay_token,
        ) {
            (Some(r), _, _) => Some(RelayPairing {
                relay: r.public_key,
                token: r.token,
                is_initiator: false,
            }),
            (None, Some(pk), Some(token)) => Some(RelayPairing {
                relay: pk,
                token,
                is_initiator: true,
            }),
            _ => None,
        };
        let relayed = msg.peer_address.is_some();
        conn.est = Some(Box::new(Established {
            relay_address: to,
            server_address: msg.peer_address.unwrap_or(to),
            client_address: reply.to,
            relayed,
            payload: payload.clone(),
            secure: SecurePayload::new(holepunch_secret(&result.hash, &self.ns), local_secret),
            relay_token: relay.map(|r| r.token),
            puncher: None,
            server_relay: None,
            round: 0,
            phase: Phase::Waiting,
            wake_at: None,
            probe_token: None,
            punch_token: None,
            punch_peer: to,
            try_laters: 0,
            lan_pending: false,
        }));
        let deadline = conn.deadline;
        if let Some(op) = find {
            self.cancel(op);
        }
        self.timers
            .push(Reverse((deadline, TimerKind::ConnectDeadline(c))));
        let stale: Vec<RequestId> = self
            .requests
            .iter()
            .filter(|(_, p)| matches!(p, Purpose::Handshake { connect, .. } if *connect == c))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.requests.remove(&id);
            self.node.cancel_request(id);
        }
        self.events.push_back(HyperEvent::Handshaked {
            connect: c,
            result,
            remote_udx_id: udx.id as u32,
            payload: Box::new(payload),
            relay,
        });
        if !relayed {
            // The server itself answered: it is reachable where we sent the handshake.
            self.take_path(c, reply.socket, to, PathKind::Direct);
        } else {
            self.start_holepunch(now, c);
        }
        self.process(now);
    }

    /// The driver connected the stream itself: the server's first packet arrived (an OPEN
    /// client, or the server reached us first). Stops the punch; no event follows.
    pub fn connect_path_taken(&mut self, now: Instant, c: ConnectId) {
        if self.connects.get(&c).is_some_and(|conn| conn.est.is_some()) {
            self.finish_connect(c);
        }
        self.process(now);
    }

    /// Reports the path and ends the connect (JS `onsocket`).
    fn take_path(
        &mut self,
        c: ConnectId,
        socket: SocketKind,
        address: SocketAddrV4,
        kind: PathKind,
    ) {
        if self.connects.get(&c).is_none_or(|conn| conn.est.is_none()) {
            return;
        }
        match kind {
            PathKind::Direct => self.punch_stats.open += 1,
            PathKind::Lan => self.punch_stats.lan += 1,
            PathKind::Holepunch => self.punch_stats.succeeded += 1,
            PathKind::Relay => {}
        }
        tracing::debug!(connect = c.0, %address, ?socket, path = %kind, "connect path");
        self.finish_connect(c);
        self.events.push_back(HyperEvent::ConnectPath {
            connect: c,
            socket,
            address,
            kind,
        });
    }

    fn est_mut(&mut self, c: ConnectId) -> Option<&mut Established> {
        self.connects
            .get_mut(&c)
            .and_then(|conn| conn.est.as_deref_mut())
    }

    fn wake_at(&mut self, c: ConnectId, at: Instant) {
        if let Some(e) = self.est_mut(c) {
            e.wake_at = Some(at);
        }
        self.timers.push(Reverse((at, TimerKind::ConnectWake(c))));
    }

    /// JS `holepunch(c)`: picks between the direct, passive, LAN and punched paths.
    fn start_holepunch(&mut self, now: Instant, c: ConnectId) {
        let our_firewall = self
            .connects
            .get(&c)
            .map_or(firewall::UNKNOWN, |x| x.firewall);
        let lan = self.connects.get(&c).is_some_and(|x| x.opts.lan);
        let Some(e) = self.est_mut(c) else { return };
        let holepunchable = e
            .payload
            .holepunch
            .as_ref()
            .is_some_and(|h| !h.relays.is_empty());
        if e.payload.firewall == firewall::OPEN || (e.relayed && !holepunchable) {
            let addr = e
                .payload
                .addresses4
                .iter()
                .find(|a| !is_bogon(a.ip()))
                .copied()
                .unwrap_or(e.server_address);
            let socket = self.node.request_socket();
            return self.take_path(c, socket, addr, PathKind::Direct);
        }
        if our_firewall == firewall::OPEN {
            // The server connects to us; the driver reports it (`connect_path_taken`).
            e.phase = Phase::Waiting;
            return self.wake_at(c, now + PASSIVE_CONNECT_TIMEOUT);
        }
        let (relayed, client, server) = (e.relayed, e.client_address, e.server_address);
        if lan && relayed && client.ip() == server.ip() {
            let theirs: Vec<SocketAddrV4> = e
                .payload
                .addresses4
                .iter()
                .filter(|a| !is_reserved(a.ip()))
                .copied()
                .collect();
            if let Some(first) = theirs.first().copied() {
                let ours = self.lan_addresses();
                let addr = match_address(&ours, &theirs).unwrap_or(first);
                if let Some(e) = self.est_mut(c) {
                    e.lan_pending = true;
                }
                let spec = RequestSpec {
                    internal: true,
                    command: crate::rpc::message::internal::PING,
                    ..Default::default()
                };
                self.send(now, addr, spec, Purpose::LanPing { connect: c, addr });
                if !holepunchable {
                    return;
                }
            }
        }
        if !holepunchable {
            return self.fail_connect(c, ConnectError::CannotHolepunch);
        }
        let Some(e) = self.est_mut(c) else { return };
        let remote_fw = e.payload.firewall;
        let relays = e
            .payload
            .holepunch
            .as_ref()
            .map(|h| h.relays.clone())
            .unwrap_or_default();
        let relay_address = e.relay_address;
        let pick = relays
            .iter()
            .find(|r| r.relay_address == relay_address)
            .or(relays.first())
            .copied();
        e.server_relay = pick;
        let Some(pid) = self.new_puncher(now, PunchOwner::Client(c), true, remote_fw) else {
            tracing::debug!("no pool socket for a holepunch");
            return self.fail_connect(c, ConnectError::HolepunchAborted);
        };
        if let Some(e) = self.est_mut(c) {
            e.puncher = Some(pid);
        }
        self.probe_round(now, c, true);
    }

    pub(super) fn on_lan_ping(
        &mut self,
        _now: Instant,
        c: ConnectId,
        addr: SocketAddrV4,
        ok: bool,
    ) {
        let Some(e) = self.est_mut(c) else { return };
        e.lan_pending = false;
        if ok {
            // The LAN path answered first: the punch (if any) stops.
            return self.take_path(c, SocketKind::Server, addr, PathKind::Lan);
        }
        let holepunchable = e
            .payload
            .holepunch
            .as_ref()
            .is_some_and(|h| !h.relays.is_empty());
        if !holepunchable {
            self.fail_connect(c, ConnectError::HolepunchAborted);
        }
    }

    /// Sends a sealed holepunch payload to the server through `via` (the server's address as
    /// `via` sees it is `peer`), from the puncher's socket.
    fn send_holepunch(
        &mut self,
        now: Instant,
        c: ConnectId,
        peer: SocketAddrV4,
        via: SocketAddrV4,
        payload: &HolepunchPayload,
        stage: HpStage,
    ) {
        let mut nonce = [0u8; 24];
        self.rng.fill_bytes(&mut nonce);
        let Some(conn) = self.connects.get(&c) else {
            return;
        };
        let target = conn.target;
        let Some(e) = conn.est.as_deref() else { return };
        let Some(id) = e.payload.holepunch.as_ref().map(|h| h.id) else {
            return;
        };
        let Some(socket) = e
            .puncher
            .and_then(|p| self.punchers.get(&p))
            .map(Puncher::socket)
        else {
            return;
        };
        let msg = HolepunchMessage {
            mode: mode::FROM_CLIENT,
            id,
            payload: e.secure.seal(payload, nonce),
            peer_address: Some(peer),
        };
        let spec = RequestSpec {
            command: command::PEER_HOLEPUNCH,
            target: Some(target),
            value: Some(to_bytes(&msg)),
            socket: Some(SocketKind::Pool(socket)),
            retries: Some(HOLEPUNCH_RETRIES),
            ..Default::default()
        };
        self.send(now, via, spec, Purpose::Holepunch { connect: c, stage });
    }

    /// Round 0 (JS `probeRound`).
    fn probe_round(&mut self, now: Instant, c: ConnectId, retry: bool) {
        let fast_open = self.connects.get(&c).is_some_and(|x| x.opts.fast_open);
        let Some(e) = self.est_mut(c) else { return };
        let server = e.server_address;
        let Some(sr) = e.server_relay else { return };
        let round = e.round;
        e.round += 1;
        e.phase = Phase::ProbeSent { retry };
        let pid = e.puncher;
        let (fw, addresses) = match pid.and_then(|p| self.punchers.get_mut(&p)) {
            Some(p) => {
                if fast_open {
                    p.open_session(server);
                }
                (p.nat().firewall(), p.nat().addresses().map(<[_]>::to_vec))
            }
            None => return,
        };
        if let Some(pid) = pid {
            self.service_puncher(now, pid);
        }
        let payload = HolepunchPayload {
            error: payload_error::NONE,
            firewall: fw,
            round,
            connected: false,
            punching: false,
            addresses,
            remote_address: fast_open.then_some(server),
            token: None,
            remote_token: None,
        };
        self.send_holepunch(
            now,
            c,
            sr.peer_address,
            sr.relay_address,
            &payload,
            HpStage::Probe,
        );
    }

    /// Opens a holepunch reply: the payload, who answered (`from`), how they saw us (`to`),
    /// and the server's address as the relay saw it.
    fn open_holepunch_reply(
        &self,
        c: ConnectId,
        result: Result<Reply, RequestError>,
        via: Option<SocketAddrV4>,
    ) -> Result<(HolepunchPayload, Reply, SocketAddrV4), ConnectError> {
        let reply = result.map_err(|_| ConnectError::HolepunchRequestTimeout)?;
        let msg = reply
            .value
            .as_ref()
            .and_then(|v| decode_prefix::<HolepunchMessage>(v).ok())
            .map(|(m, _)| m)
            .filter(|m| m.mode == mode::REPLY && via.is_none_or(|v| v == reply.from))
            .ok_or(ConnectError::HolepunchInvalid)?;
        let e = self
            .connects
            .get(&c)
            .and_then(|x| x.est.as_deref())
            .ok_or(ConnectError::Cancelled)?;
        let payload = e
            .secure
            .open(&msg.payload)
            .map_err(|_| ConnectError::HolepunchInvalid)?;
        let peer = msg.peer_address.unwrap_or(reply.from);
        Ok((payload, reply, peer))
    }

    pub(super) fn on_holepunch_reply(
        &mut self,
        now: Instant,
        c: ConnectId,
        stage: HpStage,
        result: Result<Reply, RequestError>,
    ) {
        if stage == HpStage::Fire {
            return;
        }
        let Some(e) = self.connects.get(&c).and_then(|x| x.est.as_deref()) else {
            return;
        };
        let via = match stage {
            HpStage::Probe => e.server_relay.map(|r| r.relay_address),
            _ => None,
        };
        if let HpStage::Punch { random: true, .. } = stage {
            self.random_punches.active = self.random_punches.active.saturating_sub(1);
        }
        if stage == HpStage::Delayed {
            // JS awaits this answer only for what it says: the server echoes our token, and
            // its address counts as verified for the punch to come. A lost answer is no error.
            let Ok((remote, _, _)) = self.open_holepunch_reply(c, result, None) else {
                return;
            };
            let Some(e) = self.est_mut(c) else { return };
            let echoed = remote.remote_token.is_some() && remote.remote_token == e.punch_token;
            let verified = echoed.then(|| *e.punch_peer.ip());
            if remote.error == payload_error::NONE {
                if let Some(p) = e.puncher.and_then(|p| self.punchers.get_mut(&p)) {
                    p.update_remote(
                        remote.punching,
                        remote.firewall,
                        remote.addresses.as_deref(),
                        verified,
                    );
                }
            }
            return;
        }
        let (remote, reply, peer) = match self.open_holepunch_reply(c, result, via) {
            Ok(x) => x,
            Err(err) => return self.punch_failed(now, c, err),
        };
        let Some(e) = self.est_mut(c) else { return };
        let has_relay = e.relay_token.is_some();
        match stage {
            HpStage::Probe => {
                if remote.error != payload_error::NONE {
                    return self.punch_failed(now, c, ConnectError::RemoteAborted(remote.error));
                }
                let Phase::ProbeSent { retry } = e.phase else {
                    return;
                };
                e.probe_token = remote.token;
                e.punch_peer = peer;
                let pid = e.puncher;
                let Some(p) = pid.and_then(|p| self.punchers.get_mut(&p)) else {
                    return;
                };
                p.update_remote(
                    remote.punching,
                    remote.firewall,
                    remote.addresses.as_deref(),
                    None,
                );
                p.nat_mut().add(reply.to, reply.from);
                let unknown = p.remote_firewall() == firewall::UNKNOWN;
                if unknown {
                    if let Some(e) = self.est_mut(c) {
                        e.phase = Phase::ProbeSleep { retry };
                    }
                    self.wake_at(c, now + UNKNOWN_REMOTE_WAIT);
                } else {
                    if let Some(e) = self.est_mut(c) {
                        e.phase = Phase::ProbeAnalyze {
                            retry,
                            reopen: false,
                        };
                    }
                    self.client_punch_step(now, c);
                }
            }
            HpStage::Punch { delayed, .. } => {
                if e.phase != Phase::PunchSent {
                    return;
                }
                if remote.error == payload_error::TRY_LATER && has_relay {
                    // The server echoed our token even while asking us to wait: its
                    // address is verified for the delayed punch, which sends no token of
                    // its own. (JS drops this echo, and its delayed random punch then finds
                    // no verified address: REMOTE_NOT_HOLEPUNCHABLE, the relay stays.)
                    let echoed =
                        remote.remote_token.is_some() && remote.remote_token == e.punch_token;
                    let verified = echoed.then(|| *e.punch_peer.ip());
                    e.phase = Phase::TryLater { delayed: true };
                    if let Some(p) = e.puncher.and_then(|p| self.punchers.get_mut(&p)) {
                        p.update_remote(
                            remote.punching,
                            remote.firewall,
                            remote.addresses.as_deref(),
                            verified,
                        );
                    }
                    return self.try_later(now, c);
                }
                if remote.error != payload_error::NONE {
                    return self.punch_failed(now, c, ConnectError::RemoteAborted(remote.error));
                }
                let echoed = remote.remote_token.is_some() && remote.remote_token == e.punch_token;
                let verified = echoed.then(|| *e.punch_peer.ip());
                let _ = delayed;
                let pid = e.puncher;
                let Some(pid) = pid else { return };
                let started = {
                    let Some(p) = self.punchers.get_mut(&pid) else {
                        return;
                    };
                    p.update_remote(
                        remote.punching,
                        remote.firewall,
                        remote.addresses.as_deref(),
                        verified,
                    );
                    if !p.remote_holepunching() {
                        None
                    } else {
                        Some(p.punch(now, &mut self.rng, &mut self.pool, &mut self.random_punches))
                    }
                };
                match started {
                    None => self.punch_failed(now, c, ConnectError::RemoteNotHolepunching),
                    Some(false) => self.punch_failed(now, c, ConnectError::RemoteNotHolepunchable),
                    Some(true) => {
                        self.count_strategy(pid);
                        if let Some(e) = self.est_mut(c) {
                            e.phase = Phase::Punching;
                        }
                        self.service_puncher(now, pid);
                    }
                }
            }
            HpStage::Fire | HpStage::Delayed => {}
        }
    }

    pub(super) fn count_strategy(&mut self, pid: u64) {
        use crate::hyper::holepunch::Strategy;
        match self.punchers.get(&pid).and_then(Puncher::strategy) {
            Some(Strategy::Consistent) => self.punch_stats.consistent += 1,
            Some(_) => self.punch_stats.random += 1,
            None => {}
        }
    }

    /// A client sleep ended.
    pub(super) fn on_connect_wake(&mut self, now: Instant, c: ConnectId) {
        let Some(e) = self.est_mut(c) else { return };
        if e.wake_at.is_none_or(|w| w > now) {
            return;
        }
        e.wake_at = None;
        match e.phase {
            Phase::Waiting if !e.lan_pending => {
                self.fail_connect(c, ConnectError::HolepunchAborted);
            }
            Phase::ProbeSleep { retry } => {
                e.phase = Phase::ProbeAnalyze {
                    retry,
                    reopen: false,
                };
                self.client_punch_step(now, c);
            }
            Phase::TryLater { delayed } => self.punch_round(now, c, delayed),
            _ => {}
        }
    }

    /// Re-runs whatever waits on the puncher's NAT analysis (JS `await analyze(..)`).
    pub(super) fn client_punch_step(&mut self, now: Instant, c: ConnectId) {
        let Some(e) = self.est_mut(c) else { return };
        let Phase::ProbeAnalyze { retry, reopen } = e.phase else {
            return;
        };
        let Some(pid) = e.puncher else { return };
        let Some(p) = self.punchers.get_mut(&pid) else {
            return;
        };
        let Some(stable) = p.analyze(reopen, &mut self.pool) else {
            // Still sampling (perhaps on a fresh socket).
            return self.service_puncher(now, pid);
        };
        self.service_puncher(now, pid);
        if !reopen && !stable {
            if let Some(e) = self.est_mut(c) {
                e.phase = Phase::ProbeAnalyze {
                    retry,
                    reopen: true,
                };
            }
            return self.client_punch_step(now, c);
        }
        if reopen && stable {
            return self.probe_round(now, c, false);
        }
        let Some(p) = self.punchers.get(&pid) else {
            return;
        };
        let (remote_fw, local_fw) = (p.remote_firewall(), p.nat().firewall());
        let Some(e) = self.est_mut(c) else { return };
        if (remote_fw == firewall::UNKNOWN || e.probe_token.is_none()) && retry {
            return self.probe_round(now, c, false);
        }
        if remote_fw == firewall::UNKNOWN || local_fw == firewall::UNKNOWN {
            return self.abort_punch(now, c, ConnectError::HolepunchProbeTimeout);
        }
        if remote_fw >= firewall::RANDOM && local_fw >= firewall::RANDOM {
            return self.abort_punch(now, c, ConnectError::DoubleRandomizedNats);
        }
        // The probe round is done. When the server answered through the relay we used
        // for the handshake, its reply names the socket it punches from: aim there.
        let sr = e.server_relay;
        if let Some(sr) = sr {
            if sr.relay_address == e.relay_address && diff(&e.server_address, &e.punch_peer) {
                e.server_address = e.punch_peer;
                let addr = e.server_address;
                if let Some(p) = self.punchers.get_mut(&pid) {
                    p.open_session(addr);
                }
                self.service_puncher(now, pid);
            }
        }
        if let Some(p) = self.punchers.get_mut(&pid) {
            p.nat_mut().freeze();
        }
        self.punch_round(now, c, false);
    }

    /// Round 1 (JS `roundPunch`): waits for the random-punch limit if needed, then asks the
    /// server to punch with us.
    fn punch_round(&mut self, now: Instant, c: ConnectId, delayed: bool) {
        let Some(e) = self.est_mut(c) else { return };
        let Some(pid) = e.puncher else { return };
        let Some(p) = self.punchers.get(&pid) else {
            return;
        };
        let (local_fw, remote_fw) = (p.nat().firewall(), p.remote_firewall());
        let addresses = p.nat().addresses().map(<[_]>::to_vec);
        let is_random = remote_fw >= firewall::RANDOM || local_fw >= firewall::RANDOM;
        let Some(e) = self.connects.get_mut(&c).and_then(|x| x.est.as_deref_mut()) else {
            return;
        };
        let server = e.server_address;
        let relay_address = e.relay_address;
        let Some(sr) = e.server_relay else { return };
        let remote_token = e.probe_token;
        if is_random && self.random_punches.busy(now) {
            if e.relay_token.is_none() {
                return self.abort_punch(now, c, ConnectError::HolepunchAborted);
            }
            self.punch_stats.try_later += 1;
            if !delayed {
                // Tell the server we will be late (JS sends this and then sleeps).
                let token = e.secure.token(server.ip());
                e.punch_token = Some(token);
                e.punch_peer = server;
                let round = e.round;
                e.round += 1;
                let payload = HolepunchPayload {
                    error: payload_error::NONE,
                    firewall: local_fw,
                    round,
                    connected: false,
                    punching: false,
                    addresses: addresses.clone(),
                    remote_address: None,
                    token: Some(token),
                    remote_token,
                };
                self.send_holepunch(now, c, server, relay_address, &payload, HpStage::Delayed);
            }
            if let Some(e) = self.est_mut(c) {
                e.phase = Phase::TryLater { delayed: true };
            }
            return self.try_later(now, c);
        }
        if is_random {
            // Committed: the server sees our punch as the node's one random punch.
            self.random_punches.active += 1;
        }
        let token = (!delayed).then(|| e.secure.token(server.ip()));
        let round = e.round;
        e.round += 1;
        e.punch_token = token;
        let (peer, via) = if delayed {
            (sr.peer_address, sr.relay_address)
        } else {
            (server, relay_address)
        };
        e.punch_peer = peer;
        e.phase = Phase::PunchSent;
        let payload = HolepunchPayload {
            error: payload_error::NONE,
            firewall: local_fw,
            round,
            connected: false,
            punching: true,
            addresses,
            remote_address: None,
            token,
            remote_token,
        };
        self.send_holepunch(
            now,
            c,
            peer,
            via,
            &payload,
            HpStage::Punch {
                delayed,
                random: is_random,
            },
        );
    }

    /// JS `tryLater`: 10-20 s, only with a relay to carry the connection meanwhile.
    fn try_later(&mut self, now: Instant, c: ConnectId) {
        let wait = Duration::from_millis(10_000 + self.rng.gen_range(0..=10_000));
        let Some(e) = self.est_mut(c) else { return };
        e.try_laters += 1;
        if e.relay_token.is_none() || e.try_laters > MAX_TRY_LATER {
            return self.abort_punch(now, c, ConnectError::HolepunchAborted);
        }
        self.wake_at(c, now + wait);
    }

    /// JS `abort`: tells the server (best effort) and fails.
    fn abort_punch(&mut self, now: Instant, c: ConnectId, err: ConnectError) {
        if let Some(e) = self.est_mut(c) {
            if let Some(sr) = e.server_relay {
                let round = e.round;
                e.round += 1;
                let payload = HolepunchPayload {
                    error: payload_error::ABORTED,
                    firewall: firewall::UNKNOWN,
                    round,
                    ..HolepunchPayload::default()
                };
                self.send_holepunch(
                    now,
                    c,
                    sr.peer_address,
                    sr.relay_address,
                    &payload,
                    HpStage::Fire,
                );
            }
        }
        self.punch_failed(now, c, err);
    }

    /// The punch failed with `err`. A pending LAN ping may still win.
    fn punch_failed(&mut self, _now: Instant, c: ConnectId, err: ConnectError) {
        self.punch_stats.failed += 1;
        let lan = self.est_mut(c).is_some_and(|e| {
            e.phase = Phase::Done;
            e.lan_pending
        });
        if lan {
            // Keep the connect for the LAN answer; the puncher goes.
            if let Some(pid) = self.est_mut(c).and_then(|e| e.puncher.take()) {
                self.punch_owners.remove(&pid);
                if let Some(p) = self.punchers.get_mut(&pid) {
                    p.destroy(self.now, &mut self.pool, &mut self.random_punches);
                }
                self.forget_puncher(pid);
            }
            return;
        }
        self.fail_connect(c, err);
    }

    pub(super) fn on_client_punch_event(&mut self, now: Instant, c: ConnectId, e: PunchEvent) {
        match e {
            PunchEvent::Connected { socket, address } => {
                self.take_path(c, SocketKind::Pool(socket), address, PathKind::Holepunch)
            }
            PunchEvent::Aborted => self.punch_failed(now, c, ConnectError::HolepunchAborted),
        }
    }

    /// Stops a connect; no event follows.
    pub fn cancel_connect(&mut self, c: ConnectId) {
        self.finish_connect(c);
    }
}

/// Reserved IPv4 ranges (the JS `bogon` module's `isReserved`): never a LAN address.
pub fn is_reserved(ip: &Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == 0
        || (o[0] == 192 && o[1] == 0 && (o[2] == 0 || o[2] == 2))
        || (o[0] == 198 && (18..=19).contains(&o[1]))
        || (o[0] == 198 && o[1] == 51 && o[2] == 100)
        || (o[0] == 203 && o[1] == 0 && o[2] == 113)
        || o[0] >= 224
}

/// Private IPv4 ranges (the JS `bogon` module's `isPrivate`): 10/8, 100.64/10, 127/8,
/// 169.254/16, 172.16/12, 192.168/16.
pub fn is_private(ip: &Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == 10
        || (o[0] == 100 && (64..=127).contains(&o[1]))
        || o[0] == 127
        || (o[0] == 169 && o[1] == 254)
        || (o[0] == 172 && (16..=31).contains(&o[1]))
        || (o[0] == 192 && o[1] == 168)
}
