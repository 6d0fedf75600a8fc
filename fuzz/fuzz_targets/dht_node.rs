//! The hyperdht node core (`corenet_dht::hyper::HyperDht` over the dht-rpc `Node`) fed
//! datagrams from anyone: the request handlers (routing, storage, PEER_HANDSHAKE and
//! PEER_HOLEPUNCH routers, the server), the response matching of its own queries, and the
//! client side of a connect.
//!
//! The node is persistent and reachable, runs a server, a lookup and a connect. The fuzzer
//! sends raw datagrams, or well-formed requests built from its choices (any command, target,
//! value, echoed token), or responses patched to answer one of the node's recent requests
//! (its tid, from the address it went to), or a valid Noise IK first message to the server
//! carrying a fuzzer-chosen payload; and advances virtual time.
//!
//! Invariants: no panic; everything the node sends is a well-formed dht-rpc datagram (or a
//! one-byte holepunch probe); draining transmits, events and socket ops terminates; due
//! timers are serviced; stored records stay within the store limits.
#![no_main]

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::Bytes;
use corenet_codec::to_bytes;
use corenet_dht::hyper::crypto::{server_target, Namespaces};
use corenet_dht::hyper::messages::{mode, HandshakeMessage};
use corenet_dht::hyper::store::StoreLimits;
use corenet_dht::hyper::{command, ConnectOptions, HyperConfig, HyperDht, ListenOptions};
use corenet_dht::rpc::message::{Request, Response};
use corenet_dht::rpc::{Config, Message, NodeId, SocketKind};
use corenet_noise::{Handshake, HandshakeOptions, KeyPair, Pattern};
use libfuzzer_sys::fuzz_target;

const MAX_RECORDS: usize = 64;
const MAX_STEP_OUTPUT: usize = 50_000;

fn me() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(44, 0, 0, 1), 49737)
}

fn peers(i: u8) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(55, 0, 0, 1 + i % 8), 40000 + u16::from(i % 4))
}

struct Keys {
    server: KeyPair,
    client: KeyPair,
    remote_server: KeyPair,
    ns: Namespaces,
}

fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| Keys {
        server: KeyPair::from_seed([11; 32]),
        client: KeyPair::from_seed([12; 32]),
        remote_server: KeyPair::from_seed([13; 32]),
        ns: Namespaces::new(),
    })
}

#[derive(Arbitrary, Debug)]
enum Op {
    Raw {
        from: u8,
        pool: bool,
        bytes: Vec<u8>,
    },
    Request {
        from: u8,
        tid: u16,
        internal: bool,
        command: u8,
        id: Option<[u8; 32]>,
        /// 0: the server's target, 1: the lookup topic, 2: the remote server, else random
        target: Option<(u8, [u8; 32])>,
        value: Option<Vec<u8>>,
        echo_token: bool,
    },
    /// A response to one of the node's recent requests.
    Reply {
        which: u8,
        id: Option<[u8; 32]>,
        token: Option<[u8; 32]>,
        closer: Vec<u8>,
        error: u8,
        value: Option<Vec<u8>>,
        raw_tail: Vec<u8>,
    },
    /// A valid Noise IK first message to our server with this (encoded) payload.
    Handshake {
        from: u8,
        mode: u8,
        payload: Vec<u8>,
        seed: u8,
    },
    Advance(u16),
    Timeout,
}

struct Harness {
    dht: HyperDht,
    now: Instant,
    /// Requests the node sent recently: (to, tid, socket).
    recent: VecDeque<(SocketAddrV4, u16, SocketKind)>,
    /// Tokens the node handed out, by the address they were for.
    tokens: VecDeque<(SocketAddrV4, [u8; 32])>,
}

impl Harness {
    fn drain(&mut self) {
        let mut n = 0;
        while let Some(op) = self.dht.poll_socket_op() {
            n += 1;
            assert!(n < MAX_STEP_OUTPUT, "poll_socket_op does not run dry");
            let _ = op;
        }
        let mut n = 0;
        while let Some(t) = self.dht.poll_transmit() {
            n += 1;
            assert!(n < MAX_STEP_OUTPUT, "poll_transmit does not run dry");
            if t.bytes.len() == 1 {
                continue; // holepunch probe
            }
            match Message::decode(&t.bytes) {
                Ok(Message::Request(r)) => {
                    self.recent.push_back((t.to, r.tid, t.socket));
                    if self.recent.len() > 64 {
                        self.recent.pop_front();
                    }
                }
                Ok(Message::Response(r)) => {
                    if let Some(tok) = r.token {
                        self.tokens.push_back((t.to, tok));
                        if self.tokens.len() > 16 {
                            self.tokens.pop_front();
                        }
                    }
                }
                Err(e) => panic!(
                    "the node sent a malformed datagram ({e}): {:02x?}",
                    &t.bytes[..]
                ),
            }
        }
        let mut n = 0;
        while self.dht.poll_event().is_some() {
            n += 1;
            assert!(n < MAX_STEP_OUTPUT, "poll_event does not run dry");
        }
        assert!(self.dht.store().record_count() <= MAX_RECORDS);
    }

    fn handle_due(&mut self) {
        let mut n = 0;
        while let Some(t) = self.dht.poll_timeout() {
            if t > self.now {
                break;
            }
            n += 1;
            assert!(n < 1000, "a due timer is never serviced");
            self.dht.handle_timeout(self.now);
            self.drain();
        }
    }

    fn datagram(&mut self, from: SocketAddrV4, socket: SocketKind, bytes: &[u8]) {
        self.dht.handle_datagram(self.now, socket, from, bytes);
    }
}

fn target(sel: u8, random: [u8; 32]) -> [u8; 32] {
    let k = keys();
    match sel % 4 {
        0 => server_target(&k.server.public_key()),
        1 => [0x77; 32],
        2 => server_target(&k.remote_server.public_key()),
        _ => random,
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let k = keys();
    let now = corenet_fuzz::epoch();
    let config = HyperConfig {
        rpc: Config::default()
            .with_public_address(me())
            .with_firewalled(false)
            .with_ephemeral(Some(false))
            .with_bootstrap(vec![peers(0), peers(1)])
            .with_seed([3; 32]),
        store: StoreLimits {
            max_records: MAX_RECORDS,
            max_forwards: 64,
            max_values: 64,
            ..StoreLimits::default()
        },
        local_addresses: vec![Ipv4Addr::new(192, 168, 1, 5)],
        bound_host: Some(Ipv4Addr::UNSPECIFIED),
    };
    let mut h = Harness {
        dht: HyperDht::new(config, now),
        now,
        recent: VecDeque::new(),
        tokens: VecDeque::new(),
    };
    h.dht.listen_with(now, &k.server, ListenOptions::default());
    h.dht.lookup(now, [0x77; 32]);
    h.dht.connect(
        now,
        &k.client,
        k.remote_server.public_key(),
        42,
        ConnectOptions::default(),
    );
    h.drain();
    for op in ops.iter().take(128) {
        match op {
            Op::Raw { from, pool, bytes } => {
                let socket = if *pool {
                    SocketKind::Pool(1)
                } else {
                    SocketKind::Server
                };
                h.datagram(peers(*from), socket, bytes);
            }
            Op::Request {
                from,
                tid,
                internal,
                command,
                id,
                target: t,
                value,
                echo_token,
            } => {
                let from = peers(*from);
                let token = if *echo_token {
                    h.tokens
                        .iter()
                        .rev()
                        .find(|(a, _)| a.ip() == from.ip())
                        .map(|(_, t)| *t)
                } else {
                    None
                };
                let req = Request {
                    tid: *tid,
                    to: me(),
                    id: id.map(NodeId),
                    token,
                    internal: *internal,
                    command: u64::from(*command % 12),
                    target: t.map(|(sel, r)| target(sel, r)),
                    value: value.as_ref().map(|v| Bytes::copy_from_slice(v)),
                };
                h.datagram(from, SocketKind::Server, &to_bytes(&req));
            }
            Op::Reply {
                which,
                id,
                token,
                closer,
                error,
                value,
                raw_tail,
            } => {
                if h.recent.is_empty() {
                    continue;
                }
                let (to, tid, socket) = h.recent[usize::from(*which) % h.recent.len()];
                let res = Response {
                    tid,
                    to: me(),
                    id: id.map(NodeId),
                    token: *token,
                    closer_nodes: closer.iter().take(20).map(|&c| peers(c)).collect(),
                    error: u64::from(*error % 4),
                    value: value.as_ref().map(|v| Bytes::copy_from_slice(v)),
                };
                let mut bytes = to_bytes(&res).to_vec();
                bytes.extend_from_slice(raw_tail);
                h.datagram(to, socket, &bytes);
            }
            Op::Handshake {
                from,
                mode: m,
                payload,
                seed,
            } => {
                let opts = HandshakeOptions {
                    prologue: k.ns.peer_handshake.to_vec(),
                    remote_public_key: Some(k.server.public_key()),
                    rng_seed: Some([*seed; 32]),
                };
                let Ok(mut hs) = Handshake::new(Pattern::IK, true, &k.client, opts) else {
                    continue;
                };
                let Ok(noise) = hs.write_message(&payload[..payload.len().min(1024)]) else {
                    continue;
                };
                let msg = HandshakeMessage {
                    mode: [mode::FROM_CLIENT, mode::FROM_RELAY, mode::FROM_SECOND_RELAY]
                        [usize::from(*m % 3)],
                    noise: Bytes::from(noise),
                    peer_address: Some(peers(*from)),
                    relay_address: (*m % 3 == 2).then(|| peers(from.wrapping_add(1))),
                };
                let req = Request {
                    tid: u16::from(*seed),
                    to: me(),
                    target: Some(server_target(&k.server.public_key())),
                    command: command::PEER_HANDSHAKE,
                    value: Some(to_bytes(&msg)),
                    ..Request::default()
                };
                h.datagram(peers(*from), SocketKind::Server, &to_bytes(&req));
            }
            Op::Advance(ms) => h.now += Duration::from_millis(u64::from(*ms) * 10),
            Op::Timeout => {
                if let Some(t) = h.dht.poll_timeout() {
                    h.now = h.now.max(t);
                }
            }
        }
        h.drain();
        h.handle_due();
    }
});
