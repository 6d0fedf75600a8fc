//! The PEER_HANDSHAKE router every node runs, persistent or not.

use super::*;

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
                self.node.reply(
                    &req,
                    ReplyOptions {
                        value: Some(to_bytes(&reply)),
                        to: Some(peer),
                        ..ReplyOptions::ack()
                    },
                );
            }
            _ => {}
        }
    }
}
