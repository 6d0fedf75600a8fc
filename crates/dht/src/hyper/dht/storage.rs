//! Storage commands a persistent node answers: FIND_PEER, LOOKUP, ANNOUNCE, UNANNOUNCE,
//! mutable and immutable values.

use super::*;

impl HyperDht {
    // ----- storage commands (persistent nodes) -----

    pub(super) fn on_request(&mut self, now: Instant, req: IncomingRequest) {
        match req.command {
            command::PEER_HANDSHAKE => return self.on_peer_handshake(now, req),
            command::PEER_HOLEPUNCH => return self.on_peer_holepunch(now, req),
            _ => {}
        }
        if !self.node.is_persistent() {
            self.node
                .reply(&req, ReplyOptions::error(rpc_errors::UNKNOWN_COMMAND));
            return;
        }
        match req.command {
            command::FIND_PEER => {
                let Some(target) = req.target else { return };
                let value = match self
                    .server_targets
                    .get(&target)
                    .and_then(|s| self.servers.get(s))
                {
                    Some(s) => Some(s.record.clone()),
                    None => self.store.forward(now, &target).map(|f| f.record.clone()),
                };
                self.node.reply(&req, ReplyOptions::value(value));
            }
            command::LOOKUP => {
                let Some(target) = req.target else { return };
                let records = self.store.lookup(now, &target, &mut self.rng);
                let value = if records.is_empty() {
                    None
                } else {
                    let bump = self.store.bump(now, &target);
                    let mut out = Vec::new();
                    corenet_codec::encode::uint(&mut out, records.len() as u64);
                    for r in &records {
                        out.extend_from_slice(r);
                    }
                    corenet_codec::encode::uint(&mut out, bump);
                    Some(Bytes::from(out))
                };
                self.node.reply(&req, ReplyOptions::value(value));
            }
            command::ANNOUNCE => self.on_announce(now, &req),
            command::UNANNOUNCE => self.on_unannounce(&req),
            command::MUTABLE_GET => {
                let (Some(target), Some(v)) = (req.target, req.value.as_ref()) else {
                    return;
                };
                let Ok(seq) = corenet_codec::Decoder::new(v).uint() else {
                    return;
                };
                let value = self
                    .store
                    .mutable(now, &target)
                    .filter(|m| m.seq >= seq)
                    .map(to_bytes);
                self.node.reply(&req, ReplyOptions::value(value));
            }
            command::MUTABLE_PUT => {
                let (Some(target), Some(v), true) =
                    (req.target, req.value.as_ref(), req.token.is_some())
                else {
                    return;
                };
                let Ok((put, _)) = decode_prefix::<MutablePut>(v) else {
                    return;
                };
                if server_target(&put.public_key) != target
                    || put.value.len() > self.store.max_value_len()
                {
                    return;
                }
                let signable = mutable_signable(&self.ns.mutable_put, put.seq, &put.value);
                if !corenet_noise::verify(&put.public_key, &signable, &put.signature) {
                    return;
                }
                let stored = MutableGet {
                    seq: put.seq,
                    value: put.value,
                    signature: put.signature,
                };
                match self.store.put_mutable(now, target, stored) {
                    PutResult::Stored => self.node.reply(&req, ReplyOptions::value(None)),
                    PutResult::SeqReused => self
                        .node
                        .reply(&req, ReplyOptions::error(payload_error::SEQ_REUSED)),
                    PutResult::SeqTooLow => self
                        .node
                        .reply(&req, ReplyOptions::error(payload_error::SEQ_TOO_LOW)),
                    PutResult::Full => {}
                }
            }
            command::IMMUTABLE_GET => {
                let Some(target) = req.target else { return };
                let value = self.store.immutable(now, &target).cloned();
                self.node.reply(&req, ReplyOptions::value(value));
            }
            command::IMMUTABLE_PUT => {
                let (Some(target), Some(v), true) =
                    (req.target, req.value.clone(), req.token.is_some())
                else {
                    return;
                };
                if blake2b_256(&v) != target || v.len() > self.store.max_value_len() {
                    return;
                }
                if self.store.put_immutable(now, target, v) {
                    self.node.reply(&req, ReplyOptions::value(None));
                }
            }
            _ => self
                .node
                .reply(&req, ReplyOptions::error(rpc_errors::UNKNOWN_COMMAND)),
        }
    }

    pub(super) fn on_announce(&mut self, now: Instant, req: &IncomingRequest) {
        let (Some(target), Some(v), Some(token)) = (req.target, req.value.as_ref(), req.token)
        else {
            return;
        };
        let Ok((ann, _)) = decode_prefix::<Announce>(v) else {
            return;
        };
        let Some(mut peer) = ann.peer.clone() else {
            if let Some(refresh) = ann.refresh {
                if self
                    .store
                    .apply_refresh(now, refresh, req.from, &mut self.rng)
                    .is_some()
                {
                    self.node.reply(req, ReplyOptions::ack());
                }
            }
            return;
        };
        if !self.signed_by_peer(&self.ns.announce, &target, &token, &peer, &ann) {
            tracing::debug!(from = %req.from, "announce with a bad signature");
            return;
        }
        peer.relay_addresses.truncate(MAX_RELAY_ADDRESSES);
        let record = to_bytes(&peer);
        let announce_self = server_target(&peer.public_key) == target;
        if announce_self {
            self.store
                .set_forward(now, target, req.from, record.clone());
            self.store.remove_record(&target, &peer.public_key);
        } else {
            if ann.bump > self.store.bump(now, &target) {
                self.store.set_bump(now, target, ann.bump);
            }
            // A record refused at the total cap is still acknowledged, as JS (which never
            // refuses: it evicts its older generation) always does.
            self.store
                .add_record(now, target, peer.public_key, record.clone(), &mut self.rng);
        }
        if let Some(r) = ann.refresh {
            self.store
                .set_refresh(now, r, target, peer.public_key, record, announce_self);
        }
        self.node.reply(req, ReplyOptions::ack());
    }

    /// True if `ann` carries a signature by `peer` over the announce (or unannounce, by
    /// `namespace`) signable for this node, `target` and our `token`.
    pub(super) fn signed_by_peer(
        &self,
        namespace: &[u8; 32],
        target: &[u8; 32],
        token: &[u8; 32],
        peer: &PeerRecord,
        ann: &Announce,
    ) -> bool {
        let Some(sig) = &ann.signature else {
            return false;
        };
        let signable = crate::hyper::crypto::announce_signable(
            namespace,
            target,
            &self.node.id().0,
            token,
            peer,
            ann.refresh.as_ref(),
        );
        corenet_noise::verify(&peer.public_key, &signable, sig)
    }

    pub(super) fn on_unannounce(&mut self, req: &IncomingRequest) {
        let (Some(target), Some(v), Some(token)) = (req.target, req.value.as_ref(), req.token)
        else {
            return;
        };
        let Ok((ann, _)) = decode_prefix::<Announce>(v) else {
            return;
        };
        let Some(peer) = &ann.peer else { return };
        if !self.signed_by_peer(&self.ns.unannounce, &target, &token, peer, &ann) {
            tracing::debug!(from = %req.from, "unannounce with a bad signature");
            return;
        }
        if server_target(&peer.public_key) == target {
            self.store.remove_forward(&target);
        }
        self.store.remove_record(&target, &peer.public_key);
        self.node.reply(req, ReplyOptions::ack());
    }
}
