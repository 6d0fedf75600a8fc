//! The PEER_HANDSHAKE and PEER_HOLEPUNCH routers every node runs, persistent or not, in
//! every mode (hyperdht `lib/router.js`): a node that drops them breaks other peers'
//! connections.
//!
//! A client's message (FROM_CLIENT) goes to the address it names or to the server's
//! announce address this node stores, as FROM_RELAY with the client's address as this node
//! sees it; the server's answer (FROM_SERVER) comes back here and is answered to the client
//! as REPLY with the server's address as this node sees it. Nothing is amplified: one
//! datagram in, one out.

use super::*;
use crate::hyper::messages::HolepunchMessage;

impl HyperDht {
    // ----- the handshake router -----

    pub(super) fn on_peer_handshake(&mut self, now: Instant, req: IncomingRequest) {
        let Some(target) = req.target else { return };
        let Some(v) = req.value.as_ref() else { return };
        let Ok((msg, _)) = decode_prefix::<HandshakeMessage>(v) else {
            return;
        };
        if let Some(&server) = self.server_targets.get(&target) {
            return self.server_handshake(now, server, req, msg);
        }
        match msg.mode {
            mode::FROM_CLIENT => {
                if msg.noise.is_empty() {
                    return;
                }
                let relay = msg
                    .relay_address
                    .or_else(|| self.store.forward(now, &target).map(|f| f.relay));
                let Some(relay) = relay else {
                    // No route: help the client with closer nodes.
                    self.node.reply(
                        &req,
                        ReplyOptions {
                            closer_nodes: true,
                            ..ReplyOptions::ack()
                        },
                    );
                    return;
                };
                let fwd = HandshakeMessage {
                    mode: mode::FROM_RELAY,
                    noise: msg.noise,
                    peer_address: Some(req.from),
                    relay_address: None,
                };
                self.node.relay(&req, relay, Some(to_bytes(&fwd)), None);
            }
            mode::FROM_RELAY => {
                let Some(f) = self.store.forward(now, &target) else {
                    return;
                };
                let relay = f.relay;
                let fwd = HandshakeMessage {
                    mode: mode::FROM_SECOND_RELAY,
                    noise: msg.noise,
                    peer_address: msg.peer_address,
                    relay_address: Some(req.from),
                };
                self.node.relay(&req, relay, Some(to_bytes(&fwd)), None);
            }
            mode::FROM_SERVER => {
                let Some(peer) = msg.peer_address else { return };
                if msg.noise.is_empty() {
                    return;
                }
                let reply = HandshakeMessage {
                    mode: mode::REPLY,
                    noise: msg.noise,
                    peer_address: Some(req.from),
                    relay_address: None,
                };
                self.reply_to_peer(&req, to_bytes(&reply), peer);
            }
            _ => {}
        }
    }

    /// PEER_HOLEPUNCH (JS `onpeerholepunch`).
    pub(super) fn on_peer_holepunch(&mut self, now: Instant, req: IncomingRequest) {
        let Some(v) = req.value.as_ref() else { return };
        let Ok((msg, _)) = decode_prefix::<HolepunchMessage>(v) else {
            return;
        };
        let server = req
            .target
            .and_then(|t| self.server_targets.get(&t).copied());
        let relay = req
            .target
            .filter(|_| server.is_none())
            .and_then(|t| self.store.forward(now, &t).map(|f| f.relay));
        match msg.mode {
            mode::FROM_CLIENT => {
                let Some(to) = msg.peer_address.or(relay) else {
                    return;
                };
                let fwd = HolepunchMessage {
                    mode: mode::FROM_RELAY,
                    id: msg.id,
                    payload: msg.payload,
                    peer_address: Some(req.from),
                };
                self.punch_stats.routed += 1;
                self.node.relay(&req, to, Some(to_bytes(&fwd)), None);
            }
            mode::FROM_RELAY => {
                let (Some(server), Some(_)) = (server, msg.peer_address) else {
                    return;
                };
                self.on_server_holepunch(now, server, req, msg);
            }
            mode::FROM_SERVER => {
                let Some(peer) = msg.peer_address else { return };
                let reply = HolepunchMessage {
                    mode: mode::REPLY,
                    id: msg.id,
                    payload: msg.payload,
                    peer_address: Some(req.from),
                };
                self.punch_stats.routed += 1;
                self.reply_to_peer(&req, to_bytes(&reply), peer);
            }
            _ => {}
        }
    }

    /// Answers a server's message to the peer it names (the client, as the relay saw it):
    /// the REPLY of both routers.
    fn reply_to_peer(&mut self, req: &IncomingRequest, value: Bytes, peer: SocketAddrV4) {
        self.node.reply(
            req,
            ReplyOptions {
                value: Some(value),
                to: Some(peer),
                ..ReplyOptions::ack()
            },
        );
    }
}
