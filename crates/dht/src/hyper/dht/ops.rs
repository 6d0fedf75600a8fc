//! Client operations: lookup, find-peer, announce, unannounce, mutable and immutable
//! put/get, each a query followed by commits.

use super::*;

impl HyperDht {
    // ----- client operations -----

    pub(super) fn start_op(
        &mut self,
        now: Instant,
        kind: OpKind,
        spec: QuerySpec,
        silent: bool,
    ) -> OpId {
        let id = OpId(self.next_id());
        let target = spec.target;
        let q = self.node.query(now, spec);
        self.query_ops.insert(q, id);
        self.ops.insert(
            id,
            Op {
                kind,
                target,
                query: Some(q),
                commits_outstanding: 0,
                commits_ok: 0,
                result: OpResult::default(),
                silent,
            },
        );
        self.process(now);
        id
    }

    /// Looks up the records announced under `topic`; each node's records arrive as
    /// [`HyperEvent::LookupReply`], then [`HyperEvent::OpDone`].
    pub fn lookup(&mut self, now: Instant, topic: [u8; 32]) -> OpId {
        self.start_op(
            now,
            OpKind::Lookup,
            QuerySpec::new(topic, command::LOOKUP),
            false,
        )
    }

    /// Finds the nodes holding a server's record ([`HyperEvent::PeerFound`]).
    pub fn find_peer(&mut self, now: Instant, public_key: &PublicKey) -> OpId {
        let target = server_target(public_key);
        self.start_op(
            now,
            OpKind::FindPeer { connect: None },
            QuerySpec::new(target, command::FIND_PEER),
            false,
        )
    }

    /// Announces `key_pair`'s public key under `topic` with the given relay addresses (the
    /// nodes that forward handshakes to it): a lookup, then a signed ANNOUNCE to each of the
    /// closest nodes.
    pub fn announce(
        &mut self,
        now: Instant,
        topic: [u8; 32],
        key_pair: &KeyPair,
        relay_addresses: Vec<SocketAddrV4>,
        bump: u64,
    ) -> OpId {
        let mut relay_addresses = relay_addresses;
        relay_addresses.truncate(MAX_RELAY_ADDRESSES);
        let peer = PeerRecord {
            public_key: key_pair.public_key(),
            relay_addresses,
        };
        self.start_op(
            now,
            OpKind::Announce {
                key_pair: key_pair.clone(),
                peer,
                bump,
            },
            QuerySpec::new(topic, command::LOOKUP),
            false,
        )
    }

    /// Removes `key_pair`'s records under `topic` from the closest nodes.
    pub fn unannounce(&mut self, now: Instant, topic: [u8; 32], key_pair: &KeyPair) -> OpId {
        self.start_op(
            now,
            OpKind::Unannounce {
                key_pair: key_pair.clone(),
            },
            QuerySpec::new(topic, command::LOOKUP),
            false,
        )
    }

    /// Stores a signed mutable value at `BLAKE2b(public key)`.
    pub fn mutable_put(
        &mut self,
        now: Instant,
        key_pair: &KeyPair,
        value: Bytes,
        seq: u64,
    ) -> OpId {
        let signature = key_pair.sign(&mutable_signable(&self.ns.mutable_put, seq, &value));
        let public_key = key_pair.public_key();
        let target = server_target(&public_key);
        let put = MutablePut {
            public_key,
            seq,
            value,
            signature,
        };
        let mut v = Vec::new();
        corenet_codec::encode::uint(&mut v, 0);
        self.start_op(
            now,
            OpKind::MutablePut { put },
            QuerySpec::new(target, command::MUTABLE_GET).with_value(Bytes::from(v)),
            false,
        )
    }

    /// Reads the mutable value of `public_key` with at least `seq`; valid values arrive as
    /// [`HyperEvent::MutableValue`].
    pub fn mutable_get(&mut self, now: Instant, public_key: &PublicKey, seq: u64) -> OpId {
        let target = server_target(public_key);
        let mut v = Vec::new();
        corenet_codec::encode::uint(&mut v, seq);
        self.start_op(
            now,
            OpKind::MutableGet {
                public_key: *public_key,
                seq,
                best: None,
            },
            QuerySpec::new(target, command::MUTABLE_GET).with_value(Bytes::from(v)),
            false,
        )
    }

    /// Stores a content-addressed value; its target is `BLAKE2b(value)`.
    pub fn immutable_put(&mut self, now: Instant, value: Bytes) -> ([u8; 32], OpId) {
        let target = blake2b_256(&value);
        let op = self.start_op(
            now,
            OpKind::ImmutablePut { value },
            QuerySpec::new(target, command::IMMUTABLE_GET),
            false,
        );
        (target, op)
    }

    /// Reads a content-addressed value ([`HyperEvent::ImmutableValue`]).
    pub fn immutable_get(&mut self, now: Instant, target: [u8; 32]) -> OpId {
        self.start_op(
            now,
            OpKind::ImmutableGet,
            QuerySpec::new(target, command::IMMUTABLE_GET),
            false,
        )
    }

    /// Stops an operation; no more events for it.
    pub fn cancel(&mut self, op: OpId) {
        if let Some(o) = self.ops.remove(&op) {
            if let Some(q) = o.query {
                self.node.cancel_query(q);
                self.query_ops.remove(&q);
            }
        }
    }

    pub(super) fn on_query_reply(&mut self, now: Instant, q: QueryId, reply: Reply, hops: u8) {
        let Some(&op_id) = self.query_ops.get(&q) else {
            return;
        };
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        let target = op.target;
        match &mut op.kind {
            OpKind::Lookup | OpKind::Announce { .. } | OpKind::Unannounce { .. } => {
                // An announce starts with a lookup: its records are reported too (hyperswarm
                // uses them when a topic is joined as both server and client).
                if matches!(op.kind, OpKind::Unannounce { .. }) {
                    return;
                }
                let Some(v) = reply.value.as_ref() else {
                    return;
                };
                let Ok((lr, _)) = decode_prefix::<LookupReply>(v) else {
                    return;
                };
                self.events.push_back(HyperEvent::LookupReply {
                    op: op_id,
                    from: reply.from,
                    peers: lr.peers,
                    bump: lr.bump,
                    hops,
                });
            }
            OpKind::FindPeer { connect } => {
                let connect = *connect;
                let Some(v) = reply.value.as_ref() else {
                    return;
                };
                let Ok((record, _)) = decode_prefix::<PeerRecord>(v) else {
                    return;
                };
                if server_target(&record.public_key) != target {
                    return;
                }
                match connect {
                    Some(c) => self.connect_through(now, c, reply.from, true),
                    None => self.events.push_back(HyperEvent::PeerFound {
                        op: op_id,
                        from: reply.from,
                        record,
                    }),
                }
            }
            OpKind::MutableGet {
                public_key,
                seq,
                best,
            } => {
                let Some(v) = reply.value.as_ref() else {
                    return;
                };
                let Ok((m, _)) = decode_prefix::<MutableGet>(v) else {
                    return;
                };
                if m.seq < *seq {
                    return;
                }
                let signable = mutable_signable(&self.ns.mutable_put, m.seq, &m.value);
                if !corenet_noise::verify(public_key, &signable, &m.signature) {
                    return;
                }
                if best.as_ref().is_none_or(|b| m.seq > b.seq) {
                    *best = Some(m.clone());
                }
                self.events.push_back(HyperEvent::MutableValue {
                    op: op_id,
                    from: reply.from,
                    value: m,
                });
            }
            OpKind::ImmutableGet => {
                let Some(v) = reply.value.clone() else { return };
                if blake2b_256(&v) != target {
                    return;
                }
                self.events.push_back(HyperEvent::ImmutableValue {
                    op: op_id,
                    from: reply.from,
                    value: v,
                });
                // The first valid value is the answer.
                self.finish_op(op_id, Ok(()));
            }
            OpKind::MutablePut { .. } | OpKind::ImmutablePut { .. } | OpKind::Announcer { .. } => {}
        }
    }

    pub(super) fn on_query_done(
        &mut self,
        now: Instant,
        q: QueryId,
        closest: Vec<Reply>,
        requests: usize,
    ) {
        let Some(op_id) = self.query_ops.remove(&q) else {
            return;
        };
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        op.query = None;
        op.result.closest_nodes = closest.iter().map(|r| r.from).collect();
        op.result.requests = requests;
        let target = op.target;
        let commit: Vec<(SocketAddrV4, RequestSpec)> = match &op.kind {
            OpKind::Lookup | OpKind::MutableGet { .. } | OpKind::ImmutableGet => {
                return self.finish_op(op_id, Ok(()));
            }
            OpKind::FindPeer { connect } => {
                if let Some(c) = *connect {
                    self.on_connect_find_done(now, c);
                }
                return self.finish_op(op_id, Ok(()));
            }
            OpKind::Announcer { server } => {
                let server = *server;
                self.ops.remove(&op_id);
                return self.announcer_commit(now, server, closest);
            }
            OpKind::Announce {
                key_pair,
                peer,
                bump,
            } => closest
                .iter()
                .filter_map(|r| {
                    let (token, id) = (r.token?, r.from_id?);
                    let signature = sign_announce(
                        key_pair,
                        &self.ns.announce,
                        &target,
                        &id.0,
                        &token,
                        peer,
                        None,
                    );
                    let ann = Announce {
                        peer: Some(peer.clone()),
                        refresh: None,
                        signature: Some(signature),
                        bump: *bump,
                    };
                    Some((
                        r.from,
                        RequestSpec {
                            command: command::ANNOUNCE,
                            target: Some(target),
                            token: Some(token),
                            value: Some(to_bytes(&ann)),
                            ..Default::default()
                        },
                    ))
                })
                .collect(),
            OpKind::Unannounce { key_pair } => {
                let peer = PeerRecord {
                    public_key: key_pair.public_key(),
                    relay_addresses: Vec::new(),
                };
                closest
                    .iter()
                    .filter_map(|r| {
                        let (token, id) = (r.token?, r.from_id?);
                        let signature = sign_announce(
                            key_pair,
                            &self.ns.unannounce,
                            &target,
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
                        Some((
                            r.from,
                            RequestSpec {
                                command: command::UNANNOUNCE,
                                target: Some(target),
                                token: Some(token),
                                value: Some(to_bytes(&ann)),
                                ..Default::default()
                            },
                        ))
                    })
                    .collect()
            }
            OpKind::MutablePut { put } => {
                let value = to_bytes(put);
                closest
                    .iter()
                    .filter_map(|r| {
                        Some((
                            r.from,
                            RequestSpec {
                                command: command::MUTABLE_PUT,
                                target: Some(target),
                                token: Some(r.token?),
                                value: Some(value.clone()),
                                ..Default::default()
                            },
                        ))
                    })
                    .collect()
            }
            OpKind::ImmutablePut { value } => closest
                .iter()
                .filter_map(|r| {
                    Some((
                        r.from,
                        RequestSpec {
                            command: command::IMMUTABLE_PUT,
                            target: Some(target),
                            token: Some(r.token?),
                            value: Some(value.clone()),
                            ..Default::default()
                        },
                    ))
                })
                .collect(),
        };
        if commit.is_empty() {
            return self.finish_op(op_id, Err(OpError::TooFewNodes));
        }
        if let Some(op) = self.ops.get_mut(&op_id) {
            op.commits_outstanding = commit.len();
        }
        for (to, spec) in commit {
            self.send(now, to, spec, Purpose::Commit(op_id));
        }
    }

    pub(super) fn finish_op(&mut self, op_id: OpId, result: Result<(), OpError>) {
        let Some(op) = self.ops.remove(&op_id) else {
            return;
        };
        if let Some(q) = op.query {
            self.node.cancel_query(q);
            self.query_ops.remove(&q);
        }
        if op.silent {
            return;
        }
        let mut res = op.result;
        res.commits = op.commits_ok;
        self.events.push_back(HyperEvent::OpDone {
            op: op_id,
            result: result.map(|()| res),
        });
    }
}
