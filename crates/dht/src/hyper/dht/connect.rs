//! The client side of a connect: finding the server, the Noise IK handshake through its
//! relays, choosing the path.

use super::*;

impl HyperDht {
    // ----- clients -----

    /// Connects to the server with `remote_public_key`, offering our UDX stream `udx_id`:
    /// finds its record, sends the Noise IK handshake through the nodes that hold it (and
    /// directly to `relay_addresses`), and reports [`HyperEvent::Connected`] or
    /// [`HyperEvent::ConnectFailed`] within [`CONNECT_TIMEOUT`].
    pub fn connect(
        &mut self,
        now: Instant,
        key_pair: &KeyPair,
        remote_public_key: PublicKey,
        udx_id: u32,
        relay_addresses: Vec<SocketAddrV4>,
    ) -> ConnectId {
        let id = ConnectId(self.next_id());
        let target = server_target(&remote_public_key);
        let options = HandshakeOptions {
            prologue: self.ns.peer_handshake.to_vec(),
            remote_public_key: Some(remote_public_key),
            rng_seed: None,
        };
        let remote = self.node.remote_address();
        let payload = NoisePayload {
            firewall: if remote.is_some() {
                firewall::OPEN
            } else {
                firewall::UNKNOWN
            },
            addresses4: self.our_addresses(remote),
            udx: Some(UdxInfo {
                version: 1,
                reusable_socket: false,
                id: u64::from(udx_id),
                seq: 0,
            }),
            secret_stream: Some(1),
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

    pub(super) fn fail_connect(&mut self, c: ConnectId, error: ConnectError) {
        let Some(conn) = self.connects.remove(&c) else {
            return;
        };
        if let Some(op) = conn.find_op {
            self.cancel(op);
        }
        self.requests
            .retain(|_, p| !matches!(p, Purpose::Handshake { connect, .. } if *connect == c));
        self.events
            .push_back(HyperEvent::ConnectFailed { connect: c, error });
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
        let relayed = msg.peer_address.is_some();
        let server_address = msg.peer_address.unwrap_or(to);
        let (socket, address) = if !relayed {
            (reply.socket, to)
        } else if payload.firewall == firewall::OPEN
            || payload
                .holepunch
                .as_ref()
                .is_none_or(|h| h.relays.is_empty())
        {
            let addr = payload
                .addresses4
                .iter()
                .find(|a| !is_bogon(a.ip()))
                .copied()
                .unwrap_or(server_address);
            (self.node.request_socket(), addr)
        } else {
            return self.fail_connect(c, ConnectError::CannotHolepunch);
        };
        let Some(conn) = self.connects.remove(&c) else {
            return;
        };
        if let Some(op) = conn.find_op {
            self.cancel(op);
        }
        self.requests
            .retain(|_, p| !matches!(p, Purpose::Handshake { connect, .. } if *connect == c));
        self.events.push_back(HyperEvent::Connected {
            connect: c,
            result,
            remote_udx_id: udx.id as u32,
            socket,
            address,
            payload,
        });
        self.process(now);
    }

    /// Stops a connect; no event follows.
    pub fn cancel_connect(&mut self, c: ConnectId) {
        if let Some(conn) = self.connects.remove(&c) {
            if let Some(op) = conn.find_op {
                self.cancel(op);
            }
        }
    }

    /// The id a node persistent at `addr` has.
    pub fn node_id_of(addr: &SocketAddrV4) -> NodeId {
        NodeId::from_addr(addr)
    }
}
