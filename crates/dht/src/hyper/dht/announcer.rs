//! Servers and their announcer: the record at `BLAKE2b(public key)`, relays, refreshes and
//! relay pings.

use super::*;

impl HyperDht {
    // ----- servers and the announcer -----

    /// Starts a server for `key_pair`: its record is announced at `BLAKE2b(public key)` on the
    /// closest nodes, which then forward handshakes to it. Incoming handshakes arrive as
    /// [`HyperEvent::IncomingHandshake`].
    pub fn listen(&mut self, now: Instant, key_pair: &KeyPair) -> ServerId {
        self.listen_with(now, key_pair, ListenOptions::default())
    }

    /// [`HyperDht::listen`] with options (relay offer, LAN sharing, holepunching).
    pub fn listen_with(
        &mut self,
        now: Instant,
        key_pair: &KeyPair,
        opts: ListenOptions,
    ) -> ServerId {
        self.now = self.now.max(now);
        let id = ServerId(self.next_id());
        let target = server_target(&key_pair.public_key());
        let record = to_bytes(&PeerRecord {
            public_key: key_pair.public_key(),
            relay_addresses: Vec::new(),
        });
        self.servers.insert(
            id,
            Server {
                key_pair: key_pair.clone(),
                opts,
                target,
                record,
                relays: Vec::new(),
                relay_addresses: Vec::new(),
                generations: VecDeque::new(),
                closest_nodes: Vec::new(),
                announce_generation: 0,
                pending_announces: 0,
                new_relays: Vec::new(),
                announced_once: false,
                ping_iterations: 0,
                ping_outstanding: 0,
                ping_ok: 0,
                refreshing: false,
                closed: false,
            },
        );
        self.server_targets.insert(target, id);
        self.announcer_update(now, id);
        id
    }

    /// The relay addresses of a server (its own address when reachable, then its relays).
    pub fn server_relay_addresses(&self, server: ServerId) -> Vec<SocketAddrV4> {
        self.servers
            .get(&server)
            .map(|s| s.relay_addresses.clone())
            .unwrap_or_default()
    }

    /// Stops a server and unannounces it from its relays.
    pub fn close_server(&mut self, now: Instant, server: ServerId) {
        let Some(mut s) = self.servers.remove(&server) else {
            return;
        };
        s.closed = true;
        self.server_targets.remove(&s.target);
        let mut all: Vec<SocketAddrV4> = s.generations.iter().flatten().copied().collect();
        all.sort();
        all.dedup();
        for relay in all {
            self.unannounce_relay(now, relay, &s.key_pair, s.target);
        }
        self.process(now);
    }

    /// Re-announces a server now (for example after a network change).
    pub fn refresh_server(&mut self, now: Instant, server: ServerId) {
        self.announcer_update(now, server);
    }

    pub(super) fn unannounce_relay(
        &mut self,
        now: Instant,
        relay: SocketAddrV4,
        key_pair: &KeyPair,
        target: [u8; 32],
    ) {
        let spec = RequestSpec {
            command: command::FIND_PEER,
            target: Some(target),
            ..Default::default()
        };
        self.send(
            now,
            relay,
            spec,
            Purpose::UnannounceToken {
                key_pair: Box::new(key_pair.clone()),
                target,
            },
        );
    }

    pub(super) fn announcer_update(&mut self, now: Instant, server: ServerId) {
        let Some(s) = self.servers.get_mut(&server) else {
            return;
        };
        if s.refreshing {
            return;
        }
        s.refreshing = true;
        let nodes = s.closest_nodes.clone();
        let target = s.target;
        self.start_op(
            now,
            OpKind::Announcer { server },
            QuerySpec::new(target, command::FIND_PEER).with_nodes(nodes),
            true,
        );
    }

    pub(super) fn announcer_commit(&mut self, now: Instant, server: ServerId, closest: Vec<Reply>) {
        let remote = self.node.remote_address();
        let Some(s) = self.servers.get_mut(&server) else {
            return;
        };
        s.closest_nodes = closest.iter().map(|r| r.from).collect();
        s.announce_generation += 1;
        let generation = s.announce_generation;
        s.new_relays.clear();
        let peer = PeerRecord {
            public_key: s.key_pair.public_key(),
            relay_addresses: Vec::new(),
        };
        let mut sends = Vec::new();
        for r in closest.iter().take(ANNOUNCE_RELAYS) {
            let (Some(token), Some(id)) = (r.token, r.from_id) else {
                continue;
            };
            let signature = sign_announce(
                &s.key_pair,
                &self.ns.announce,
                &s.target,
                &id.0,
                &token,
                &peer,
                None,
            );
            let ann = Announce {
                peer: Some(peer.clone()),
                refresh: None,
                signature: Some(signature),
                bump: 0,
            };
            sends.push((
                r.from,
                r.to,
                RequestSpec {
                    command: command::ANNOUNCE,
                    target: Some(s.target),
                    token: Some(token),
                    value: Some(to_bytes(&ann)),
                    ..Default::default()
                },
            ));
        }
        s.pending_announces = sends.len();
        s.relay_addresses = remote.into_iter().collect();
        if sends.is_empty() {
            self.announcer_finish(now, server);
            return;
        }
        for (to, seen_as, spec) in sends {
            self.send(
                now,
                to,
                spec,
                Purpose::ServerAnnounce {
                    server,
                    reply_to: to,
                    seen_as,
                    generation,
                },
            );
        }
    }

    pub(super) fn announcer_on_commit(
        &mut self,
        now: Instant,
        server: ServerId,
        generation: u64,
        ok: Option<(SocketAddrV4, SocketAddrV4)>,
    ) {
        let Some(s) = self.servers.get_mut(&server) else {
            return;
        };
        if s.announce_generation != generation {
            return;
        }
        if let Some((relay, seen_as)) = ok {
            s.new_relays.push(RelayInfo {
                relay_address: relay,
                peer_address: seen_as,
            });
            if s.relay_addresses.len() < ANNOUNCE_RELAYS {
                s.relay_addresses.push(relay);
            }
        }
        s.pending_announces -= 1;
        if s.pending_announces == 0 {
            self.announcer_finish(now, server);
        }
    }

    pub(super) fn announcer_finish(&mut self, now: Instant, server: ServerId) {
        let Some(s) = self.servers.get_mut(&server) else {
            return;
        };
        s.relays = std::mem::take(&mut s.new_relays);
        let current: Vec<SocketAddrV4> = s.relays.iter().map(|r| r.relay_address).collect();
        s.generations.push_back(current.clone());
        let mut retired = Vec::new();
        while s.generations.len() > 3 {
            if let Some(old) = s.generations.pop_front() {
                retired.extend(old);
            }
        }
        if s.generations.len() >= 2 {
            let prev = &s.generations[s.generations.len() - 2];
            retired.extend(prev.iter().filter(|a| !current.contains(a)).copied());
        }
        retired.sort();
        retired.dedup();
        retired.retain(|a| !current.contains(a));
        s.refreshing = false;
        s.ping_iterations = 0;
        let first = !s.announced_once;
        s.announced_once = true;
        let relay_addresses = s.relay_addresses.clone();
        let key_pair = s.key_pair.clone();
        let target = s.target;
        for r in retired {
            self.unannounce_relay(now, r, &key_pair, target);
        }
        if first {
            self.events.push_back(HyperEvent::ServerAnnounced {
                server,
                relay_addresses,
            });
        }
        self.timers.push(Reverse((
            now + ANNOUNCER_PING_INTERVAL,
            TimerKind::AnnouncerPing(server),
        )));
    }

    pub(super) fn announcer_ping(&mut self, now: Instant, server: ServerId) {
        let Some(s) = self.servers.get_mut(&server) else {
            return;
        };
        if s.refreshing {
            return;
        }
        s.ping_iterations += 1;
        if s.ping_iterations > ANNOUNCER_ITERATIONS {
            self.announcer_update(now, server);
            return;
        }
        let relays: Vec<SocketAddrV4> = s.relays.iter().map(|r| r.relay_address).collect();
        if relays.is_empty() {
            // Not announced anywhere yet (an empty network): try again.
            if self.node.table().is_empty() {
                self.timers.push(Reverse((
                    now + ANNOUNCER_PING_INTERVAL,
                    TimerKind::AnnouncerPing(server),
                )));
                return;
            }
            self.announcer_update(now, server);
            return;
        }
        s.ping_outstanding = relays.len();
        s.ping_ok = 0;
        let generation = s.announce_generation;
        for r in relays {
            let spec = RequestSpec {
                internal: true,
                command: crate::rpc::message::internal::PING,
                ..Default::default()
            };
            self.send(now, r, spec, Purpose::RelayPing { server, generation });
        }
    }

    pub(super) fn announcer_on_ping(
        &mut self,
        now: Instant,
        server: ServerId,
        generation: u64,
        ok: bool,
    ) {
        let Some(s) = self.servers.get_mut(&server) else {
            return;
        };
        if s.announce_generation != generation || s.ping_outstanding == 0 {
            return;
        }
        s.ping_outstanding -= 1;
        if ok {
            s.ping_ok += 1;
        }
        if s.ping_outstanding > 0 {
            return;
        }
        let needed = s.relays.len().min(ANNOUNCE_RELAYS);
        if s.ping_ok < needed {
            self.announcer_update(now, server);
        } else {
            self.timers.push(Reverse((
                now + ANNOUNCER_PING_INTERVAL,
                TimerKind::AnnouncerPing(server),
            )));
        }
    }
}
