//! The server side of a connect: incoming handshakes, the firewall decision, the reply.

use super::*;

impl HyperDht {
    /// Sends a server's Noise reply the way the request's mode asks.
    pub(super) fn send_server_reply(
        &mut self,
        req: &IncomingRequest,
        msg: &HandshakeMessage,
        noise: Bytes,
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
                self.node.relay(req, req.from, Some(to_bytes(&fwd)), None);
            }
            mode::FROM_SECOND_RELAY => {
                if let Some(relay) = msg.relay_address {
                    let fwd = HandshakeMessage {
                        mode: mode::FROM_SERVER,
                        noise,
                        peer_address: msg.peer_address,
                        relay_address: None,
                    };
                    self.node.relay(req, relay, Some(to_bytes(&fwd)), None);
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
                SlotState::Done(noise) => {
                    let noise = noise.clone();
                    self.send_server_reply(&req, &msg, noise);
                }
                SlotState::Pending { waiters, .. } => {
                    if waiters.len() < 8 {
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
        let Some(s) = self.servers.get(&server) else {
            return;
        };
        let options = HandshakeOptions {
            prologue: self.ns.peer_handshake.to_vec(),
            ..Default::default()
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
        let error = if payload.version != 1 {
            payload_error::VERSION_MISMATCH
        } else if payload.udx.is_none() {
            payload_error::ABORTED
        } else {
            payload_error::NONE
        };
        let remote = self.node.remote_address();
        let relay_addresses = self
            .servers
            .get(&server)
            .map(|s| s.relay_addresses.clone())
            .unwrap_or_default();
        let relays = self
            .servers
            .get(&server)
            .map(|s| s.relays.clone())
            .unwrap_or_default();
        let ours = NoisePayload {
            version: 1,
            error,
            firewall: if remote.is_some() {
                firewall::OPEN
            } else {
                firewall::UNKNOWN
            },
            holepunch: None,
            addresses4: self.our_addresses(remote),
            addresses6: Vec::new(),
            udx: Some(UdxInfo {
                version: 1,
                reusable_socket: false,
                id: if error == 0 { u64::from(udx_id) } else { 0 },
                seq: 0,
            }),
            secret_stream: Some(1),
            relay_through: None,
            relay_addresses: (!relay_addresses.is_empty()).then_some(relay_addresses),
        };
        let _ = relays;
        let Ok(msg2) = handshake.write_message(&corenet_codec::to_vec(&ours)) else {
            return;
        };
        let msg2 = Bytes::from(msg2);
        let Ok(result) = handshake.finish() else {
            return;
        };
        if let Some(slot) = self.slots.get_mut(&key) {
            slot.state = SlotState::Done(msg2.clone());
        }
        for w in &waiters {
            self.send_server_reply(&w.req, &w.msg, msg2.clone());
        }
        if error != payload_error::NONE {
            return;
        }
        let remote_udx_id = payload.udx.map_or(0, |u| u.id as u32);
        let connect = (payload.firewall == firewall::OPEN || direct).then_some(client_address);
        self.events.push_back(HyperEvent::ServerConnection {
            server,
            handshake: id,
            result,
            remote_udx_id,
            connect,
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

    pub(super) fn our_addresses(&self, remote: Option<SocketAddrV4>) -> Vec<SocketAddrV4> {
        let mut v: Vec<SocketAddrV4> = remote.into_iter().collect();
        let port = self.node_server_port();
        if port != 0 {
            for ip in &self.local_addresses {
                v.push(SocketAddrV4::new(*ip, port));
            }
        }
        v
    }

    pub(super) fn node_server_port(&self) -> u16 {
        self.node
            .remote_address()
            .map(|a| a.port())
            .or_else(|| self.node.nat_address().map(|a| a.port()))
            .unwrap_or(0)
    }
}
