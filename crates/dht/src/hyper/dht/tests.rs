//! The server side's DoS budgets (docs/dos-budgets.md §3), each driven to its bound on one
//! sans-IO core with hand-made PEER_HANDSHAKE and PEER_HOLEPUNCH requests.

use super::*;
use crate::hyper::messages::{
    mode, HandshakeMessage, HolepunchInfo, HolepunchMessage, HolepunchPayload, RelayInfo,
};
use crate::hyper::nat::MIN_SAMPLES;
use crate::hyper::payload::SecurePayload;
use crate::rpc::message::{Message, Request};

const NODE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 49737);
const RELAY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 49737);

/// A node listening as a server: reachable (OPEN) or firewalled (it must punch).
fn server(now: Instant, open: bool) -> (HyperDht, ServerId, KeyPair) {
    let rpc = if open {
        rpc::Config::default()
            .with_public_address(NODE)
            .with_firewalled(false)
            .with_ephemeral(Some(false))
    } else {
        rpc::Config::default()
    };
    let mut dht = HyperDht::new(
        HyperConfig {
            rpc: rpc.with_seed([5; 32]),
            ..Default::default()
        },
        now,
    );
    let kp = KeyPair::from_seed([0x55; 32]);
    let id = dht.listen(now, &kp);
    while dht.poll_event().is_some() {}
    while dht.poll_transmit().is_some() {}
    assert_eq!(dht.node().remote_address().is_some(), open);
    (dht, id, kp)
}

/// A connecting client's first Noise message.
struct Client {
    hs: Handshake,
    msg1: Bytes,
    addr: SocketAddrV4,
}

fn client(i: u32, server: &PublicKey, fw: u64) -> Client {
    let mut seed = [0x77; 32];
    seed[..4].copy_from_slice(&i.to_le_bytes());
    let kp = KeyPair::from_seed(seed);
    let options = HandshakeOptions {
        prologue: Namespaces::new().peer_handshake.to_vec(),
        remote_public_key: Some(*server),
        rng_seed: Some(seed),
    };
    let payload = NoisePayload {
        firewall: fw,
        udx: Some(UdxInfo {
            version: 1,
            reusable_socket: false,
            id: u64::from(i),
            seq: 0,
        }),
        secret_stream: Some(1),
        ..NoisePayload::default()
    };
    let mut hs = Handshake::new(Pattern::IK, true, &kp, options).unwrap();
    let msg1 = Bytes::from(hs.write_message(&to_bytes(&payload)).unwrap());
    let [_, b, c, d] = (i + 1).to_be_bytes();
    let addr = SocketAddrV4::new(Ipv4Addr::new(10, 100 | b, c, d), 40_000);
    Client { hs, msg1, addr }
}

/// A PEER_HANDSHAKE straight from the client, or (`via_relay`) forwarded by [`RELAY`].
fn handshake(
    dht: &mut HyperDht,
    now: Instant,
    tid: u16,
    kp: &KeyPair,
    c: &Client,
    via_relay: bool,
) {
    let msg = HandshakeMessage {
        mode: if via_relay {
            mode::FROM_RELAY
        } else {
            mode::FROM_CLIENT
        },
        noise: c.msg1.clone(),
        peer_address: via_relay.then_some(c.addr),
        relay_address: None,
    };
    let req = Request {
        tid,
        to: NODE,
        command: command::PEER_HANDSHAKE,
        target: Some(server_target(&kp.public_key())),
        value: Some(to_bytes(&msg)),
        ..Default::default()
    };
    let from = if via_relay { RELAY } else { c.addr };
    dht.handle_datagram(now, SocketKind::Server, from, &req.to_bytes());
}

fn incoming(dht: &mut HyperDht) -> Vec<HandshakeId> {
    let mut out = Vec::new();
    while let Some(e) = dht.poll_event() {
        if let HyperEvent::IncomingHandshake { handshake, .. } = e {
            out.push(handshake);
        }
    }
    out
}

/// The server's Noise replies in the transmits, by destination.
fn replies(dht: &mut HyperDht) -> Vec<(SocketAddrV4, Bytes)> {
    replies_and_rest(dht).0
}

/// [`replies`], and the other transmits.
fn replies_and_rest(dht: &mut HyperDht) -> (Vec<(SocketAddrV4, Bytes)>, Vec<Transmit>) {
    let mut out = Vec::new();
    let mut rest = Vec::new();
    while let Some(t) = dht.poll_transmit() {
        let value = match Message::decode(&t.bytes) {
            Ok(Message::Response(r)) => r.value,
            Ok(Message::Request(r)) if !r.internal && r.command == command::PEER_HANDSHAKE => {
                r.value
            }
            _ => {
                rest.push(t);
                continue;
            }
        };
        if let Some(Ok((m, _))) = value.map(|v| decode_prefix::<HandshakeMessage>(&v)) {
            out.push((t.to, m.noise));
        }
    }
    (out, rest)
}

#[test]
fn a_257th_handshake_waiting_for_the_firewall_is_dropped_before_its_noise_is_read() {
    let now = Instant::now();
    let (mut dht, _, kp) = server(now, true);
    let clients: Vec<Client> = (0..=MAX_PENDING_HANDSHAKES as u32)
        .map(|i| client(i, &kp.public_key(), firewall::OPEN))
        .collect();
    for (i, c) in clients.iter().enumerate() {
        handshake(&mut dht, now, i as u16, &kp, c, false);
    }
    let waiting = incoming(&mut dht);
    assert_eq!(waiting.len(), MAX_PENDING_HANDSHAKES);
    assert_eq!(dht.pending_handshakes.len(), MAX_PENDING_HANDSHAKES);
    assert_eq!(
        dht.slots.len(),
        MAX_PENDING_HANDSHAKES,
        "the 257th left a slot"
    );
    // An unreadable one is not even read: no Rejected slot.
    let mut garbage = client(9999, &kp.public_key(), firewall::OPEN);
    garbage.msg1 = Bytes::from(vec![0x42; garbage.msg1.len()]);
    handshake(&mut dht, now, 9999, &kp, &garbage, false);
    assert_eq!(dht.slots.len(), MAX_PENDING_HANDSHAKES);
    assert!(replies(&mut dht).is_empty());
    // A decision frees a place: the 257th, sent again, gets through.
    dht.reject(now, waiting[0]);
    let last = &clients[MAX_PENDING_HANDSHAKES];
    handshake(&mut dht, now, 5000, &kp, last, false);
    assert_eq!(incoming(&mut dht).len(), 1);
}

#[test]
fn a_9th_copy_of_a_waiting_handshake_gets_no_answer() {
    let now = Instant::now();
    let (mut dht, _, kp) = server(now, true);
    let c = client(1, &kp.public_key(), firewall::OPEN);
    for tid in 0..10 {
        handshake(&mut dht, now, tid, &kp, &c, false);
    }
    let waiting = incoming(&mut dht);
    assert_eq!(waiting.len(), 1, "copies are one handshake");
    assert!(replies(&mut dht).is_empty());
    dht.accept(now, waiting[0], 7);
    let answered = replies(&mut dht);
    assert_eq!(answered.len(), MAX_HANDSHAKE_WAITERS);
    assert!(answered
        .iter()
        .all(|(to, noise)| *to == c.addr && *noise == answered[0].1));
    // Once decided, a copy is answered from the slot (no waiting, no new state).
    handshake(&mut dht, now, 11, &kp, &c, false);
    assert_eq!(replies(&mut dht).len(), 1);
}

/// The server's payload in its reply to `c`.
fn server_payload(c: Client, noise: &[u8]) -> (NoisePayload, HandshakeResult) {
    let mut hs = c.hs;
    let payload = hs.read_message(noise).expect("the server's reply opens");
    let result = hs.finish().unwrap();
    (decode_prefix::<NoisePayload>(&payload).unwrap().0, result)
}

#[test]
fn a_513th_accepted_handshake_is_offered_no_holepunch() {
    let now = Instant::now();
    let (mut dht, _, kp) = server(now, false);
    for i in 0..=MAX_SERVER_PUNCHES as u32 {
        let c = client(i, &kp.public_key(), firewall::UNKNOWN);
        handshake(&mut dht, now, i as u16, &kp, &c, false);
        let [h] = incoming(&mut dht)[..] else {
            panic!("one handshake")
        };
        dht.accept(now, h, i);
        let r = replies(&mut dht);
        assert_eq!(r.len(), 1);
        let (payload, _) = server_payload(c, &r[0].1);
        assert_eq!(payload.error, payload_error::NONE);
        if (i as usize) < MAX_SERVER_PUNCHES {
            assert!(
                payload.holepunch.is_some(),
                "handshake {i} was offered no holepunch"
            );
        } else {
            assert_eq!(payload.holepunch, None, "the 513th was offered a holepunch");
        }
    }
    // Every accepted handshake has a slot, bounded in time.
    assert_eq!(dht.server_punch_slots(), MAX_SERVER_PUNCHES + 1);
    dht.handle_timeout(now + HANDSHAKE_CLEAR_WAIT);
    assert_eq!(dht.server_punch_slots(), 0);
}

/// A firewalled server with `n` table nodes, and one accepted handshake from a firewalled
/// client through a relay: the slot id, the client's holepunch keys, and what the server
/// sent besides its reply (the puncher's NAT-sampling PINGs to the table nodes).
fn accepted_through_a_relay(
    now: Instant,
    n: u8,
) -> (HyperDht, KeyPair, u64, SecurePayload, Vec<Transmit>) {
    let (mut dht, _, kp) = server(now, false);
    for i in 0..n {
        dht.node_mut()
            .add_node(SocketAddrV4::new(Ipv4Addr::new(10, 50, 0, 1 + i), 49737));
    }
    let c = client(1, &kp.public_key(), firewall::UNKNOWN);
    handshake(&mut dht, now, 1, &kp, &c, true);
    let [h] = incoming(&mut dht)[..] else {
        panic!("one handshake")
    };
    dht.accept(now, h, 1);
    let (r, rest) = replies_and_rest(&mut dht);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, RELAY);
    let (payload, result) = server_payload(c, &r[0].1);
    let hp = payload
        .holepunch
        .expect("a firewalled server offers a holepunch");
    let secret = crate::hyper::crypto::holepunch_secret(&result.hash, &Namespaces::new());
    let secure = SecurePayload::new(secret, [9; 32]);
    (dht, kp, hp.id, secure, rest)
}

#[test]
fn an_accepted_handshake_whose_client_never_punches_is_aborted_at_10_s() {
    let start = Instant::now();
    let (mut dht, _, _, _, _) = accepted_through_a_relay(start, 0);
    assert_eq!(dht.server_punch_slots(), 1);
    let mut aborted_at = None;
    let mut now = start;
    for _ in 0..10_000 {
        while dht.poll_transmit().is_some() {}
        while let Some(e) = dht.poll_event() {
            if matches!(e, HyperEvent::ServerPathAborted { .. }) {
                assert!(aborted_at.is_none(), "aborted twice");
                aborted_at = Some(now);
            }
        }
        if dht.server_punch_slots() == 0 {
            break;
        }
        let Some(t) = dht.poll_timeout() else { break };
        assert!(
            t <= start + Duration::from_secs(60),
            "the slot outlived every bound"
        );
        now = t.max(now);
        dht.handle_timeout(now);
    }
    assert_eq!(aborted_at, Some(start + PREPUNCH_TIMEOUT));
    assert_eq!(dht.server_punch_slots(), 0);
    assert_eq!(now, start + PREPUNCH_TIMEOUT + HANDSHAKE_CLEAR_WAIT);
}

#[test]
fn a_9th_holepunch_request_waiting_for_the_nat_analysis_is_dropped() {
    let now = Instant::now();
    let (mut dht, kp, hp_id, secure, nat_pings) = accepted_through_a_relay(now, 5);
    assert_eq!(
        nat_pings.len(),
        MIN_SAMPLES,
        "the puncher samples its NAT with the table nodes"
    );
    let client_addr = SocketAddrV4::new(Ipv4Addr::new(10, 100, 0, 2), 40_000);
    for round in 0..=MAX_WAITING_PUNCH_REQUESTS as u64 {
        let payload = HolepunchPayload {
            firewall: firewall::CONSISTENT,
            round,
            addresses: Some(vec![client_addr]),
            ..Default::default()
        };
        let msg = HolepunchMessage {
            mode: mode::FROM_RELAY,
            id: hp_id,
            payload: secure.seal(&payload, [round as u8; 24]),
            peer_address: Some(client_addr),
        };
        let req = Request {
            tid: 100 + round as u16,
            to: NODE,
            command: command::PEER_HOLEPUNCH,
            target: Some(server_target(&kp.public_key())),
            value: Some(to_bytes(&msg)),
            ..Default::default()
        };
        dht.handle_datagram(now, SocketKind::Server, RELAY, &req.to_bytes());
    }
    // Nothing is answered before the analysis concludes: 8 wait, the 9th is gone.
    assert!(dht.poll_transmit().is_none());
    assert_eq!(
        dht.server_punches[&hp_id].waiting.len(),
        MAX_WAITING_PUNCH_REQUESTS
    );
    // The table nodes answer the NAT PINGs with one public address (a CONSISTENT NAT):
    // the analysis concludes, and the 8 that waited are answered.
    for t in nat_pings {
        let Ok(Message::Request(r)) = Message::decode(&t.bytes) else {
            panic!("a PING")
        };
        let res = crate::rpc::message::Response {
            tid: r.tid,
            to: SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 7), 40_000),
            id: Some(crate::rpc::NodeId::from_addr(&t.to)),
            ..Default::default()
        };
        dht.handle_datagram(now, t.socket, t.to, &res.to_bytes());
    }
    let mut answered = Vec::new();
    while let Some(t) = dht.poll_transmit() {
        if let Ok(Message::Request(r)) = Message::decode(&t.bytes) {
            if r.command == command::PEER_HOLEPUNCH {
                assert_eq!(t.to, RELAY);
                answered.push(r.tid);
            }
        }
    }
    assert_eq!(
        answered,
        (100..100 + MAX_WAITING_PUNCH_REQUESTS as u16).collect::<Vec<_>>()
    );
}

const CLIENT_NODE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 9), 49737);
const SERVER_ADDR: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 3), 49737);

/// A connecting node with no network around it: OPEN (reachable) or firewalled, and a
/// request timeout per transmission.
fn client_node(now: Instant, open: bool, request_timeout: Duration) -> HyperDht {
    let rpc = if open {
        rpc::Config::default()
            .with_public_address(CLIENT_NODE)
            .with_firewalled(false)
            .with_ephemeral(Some(false))
    } else {
        rpc::Config::default()
    };
    let mut dht = HyperDht::new(
        HyperConfig {
            rpc: rpc.with_seed([6; 32]).with_request_timeout(request_timeout),
            ..Default::default()
        },
        now,
    );
    while dht.poll_event().is_some() {}
    while dht.poll_transmit().is_some() {}
    assert_eq!(dht.node().remote_address().is_some(), open);
    dht
}

/// Runs `dht` on its own timers until `limit`, handing every transmit to `answer` (which
/// returns datagrams to deliver: socket, from, bytes), and returns when the connect
/// failed, with the time and the error, plus every event.
fn run_connect(
    dht: &mut HyperDht,
    start: Instant,
    limit: Duration,
    mut answer: impl FnMut(Instant, &Transmit) -> Vec<(SocketKind, SocketAddrV4, Bytes)>,
) -> (Option<(Instant, ConnectError)>, Vec<HyperEvent>) {
    let mut now = start;
    let mut events = Vec::new();
    for _ in 0..100_000 {
        let mut inputs = Vec::new();
        while let Some(t) = dht.poll_transmit() {
            inputs.extend(answer(now, &t));
        }
        for (socket, from, bytes) in inputs {
            dht.handle_datagram(now, socket, from, &bytes);
        }
        while let Some(e) = dht.poll_event() {
            if let HyperEvent::ConnectFailed { error, .. } = &e {
                let error = error.clone();
                events.push(e);
                return (Some((now, error)), events);
            }
            events.push(e);
        }
        if dht.poll_transmit().is_some() {
            continue;
        }
        match dht.poll_timeout() {
            Some(t) if t <= start + limit => {
                now = t.max(now);
                dht.handle_timeout(now);
            }
            _ => break,
        }
    }
    (None, events)
}

#[test]
fn a_connect_still_waiting_for_its_handshake_fails_at_20_s() {
    let start = Instant::now();
    // Each handshake send waits 10 s (4 sends: 40 s), so only the connect's own deadline
    // can end it sooner.
    let mut dht = client_node(start, false, Duration::from_secs(10));
    let server = KeyPair::from_seed([0x66; 32]);
    let opts = ConnectOptions {
        relay_addresses: vec![RELAY],
        ..Default::default()
    };
    dht.connect(
        start,
        &KeyPair::from_seed([0x67; 32]),
        server.public_key(),
        1,
        opts,
    );
    let mut handshakes = 0;
    let (failed, _) = run_connect(&mut dht, start, Duration::from_secs(60), |_, t| {
        if let Ok(Message::Request(r)) = Message::decode(&t.bytes) {
            handshakes += usize::from(!r.internal && r.command == command::PEER_HANDSHAKE);
        }
        Vec::new()
    });
    assert_eq!(
        failed,
        Some((start + CONNECT_TIMEOUT, ConnectError::Timeout))
    );
    // Sent at 0, 10 and 20 s; the fourth send (30 s) never goes.
    assert_eq!(handshakes, 3);
    assert_eq!(dht.connects_in_progress(), 0);
}

/// Plays the server behind [`RELAY`]: answers the client's PEER_HANDSHAKE with a relayed
/// reply whose payload says `firewall` and offers a holepunch; returns the holepunch keys
/// through `keys` once the handshake is done.
fn relayed_server_reply(
    server: &KeyPair,
    t: &Transmit,
    firewall_class: u64,
    keys: &mut Option<SecurePayload>,
) -> Vec<(SocketKind, SocketAddrV4, Bytes)> {
    let Ok(Message::Request(r)) = Message::decode(&t.bytes) else {
        return Vec::new();
    };
    if r.internal || r.command != command::PEER_HANDSHAKE || t.to != RELAY {
        return Vec::new();
    }
    let (msg, _) = decode_prefix::<HandshakeMessage>(r.value.as_ref().unwrap()).unwrap();
    let options = HandshakeOptions {
        prologue: Namespaces::new().peer_handshake.to_vec(),
        remote_public_key: None,
        rng_seed: Some([0x68; 32]),
    };
    let mut hs = Handshake::new(Pattern::IK, false, server, options).unwrap();
    hs.read_message(&msg.noise).unwrap();
    let payload = NoisePayload {
        firewall: firewall_class,
        holepunch: Some(HolepunchInfo {
            id: 0,
            relays: vec![RelayInfo {
                relay_address: RELAY,
                peer_address: SERVER_ADDR,
            }],
        }),
        addresses4: vec![SERVER_ADDR],
        udx: Some(UdxInfo {
            version: 1,
            reusable_socket: false,
            id: 5,
            seq: 0,
        }),
        secret_stream: Some(1),
        ..NoisePayload::default()
    };
    let noise = Bytes::from(hs.write_message(&to_bytes(&payload)).unwrap());
    let result = hs.finish().unwrap();
    let secret = crate::hyper::crypto::holepunch_secret(&result.hash, &Namespaces::new());
    *keys = Some(SecurePayload::new(secret, [0x69; 32]));
    let reply = HandshakeMessage {
        mode: mode::REPLY,
        noise,
        peer_address: Some(SERVER_ADDR),
        relay_address: None,
    };
    let res = crate::rpc::message::Response {
        tid: r.tid,
        to: r.to,
        value: Some(to_bytes(&reply)),
        ..Default::default()
    };
    vec![(t.socket, RELAY, res.to_bytes())]
}

#[test]
fn an_open_client_whose_server_never_connects_back_fails_at_10_s() {
    let start = Instant::now();
    let mut dht = client_node(start, true, Duration::from_secs(1));
    let server = KeyPair::from_seed([0x66; 32]);
    let opts = ConnectOptions {
        relay_addresses: vec![RELAY],
        lan: false,
        ..Default::default()
    };
    dht.connect(
        start,
        &KeyPair::from_seed([0x67; 32]),
        server.public_key(),
        1,
        opts,
    );
    let mut keys = None;
    let (failed, events) = run_connect(&mut dht, start, Duration::from_secs(60), |_, t| {
        relayed_server_reply(&server, t, firewall::CONSISTENT, &mut keys)
    });
    let handshaked = events
        .iter()
        .any(|e| matches!(e, HyperEvent::Handshaked { .. }));
    assert!(handshaked, "{events:?}");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, HyperEvent::ConnectPath { .. })),
        "{events:?}"
    );
    assert_eq!(
        failed,
        Some((
            start + PASSIVE_CONNECT_TIMEOUT,
            ConnectError::HolepunchAborted
        ))
    );
}

/// A firewalled client with 5 table nodes that answer its NAT PINGs from one public
/// address (a CONSISTENT NAT), connecting through [`RELAY`] to a server played by hand:
/// the handshake is answered as [`relayed_server_reply`] does, a probe round (a
/// PEER_HOLEPUNCH whose payload is not punching) with the server's CONSISTENT addresses,
/// and a punch round as `punch` says (`None`: never answered). Returns how the connect
/// ended, when the handshake finished, and the punch rounds' times.
fn relayed_punch(
    request_timeout: Duration,
    relay_through: bool,
    mut punch: impl FnMut(&HolepunchPayload) -> Option<HolepunchPayload>,
) -> (Option<(Instant, ConnectError)>, Instant, Vec<Instant>) {
    let start = Instant::now();
    let mut dht = client_node(start, false, request_timeout);
    for i in 0..5 {
        dht.node_mut()
            .add_node(SocketAddrV4::new(Ipv4Addr::new(10, 60, 0, 1 + i), 49737));
    }
    let server = KeyPair::from_seed([0x66; 32]);
    let opts = ConnectOptions {
        relay_addresses: vec![RELAY],
        lan: false,
        fast_open: false,
        relay_through: relay_through.then(|| KeyPair::from_seed([0x6a; 32]).public_key()),
        ..Default::default()
    };
    dht.connect(
        start,
        &KeyPair::from_seed([0x67; 32]),
        server.public_key(),
        1,
        opts,
    );
    let mut keys = None;
    let mut handshaked = None;
    let mut rounds = Vec::new();
    let (failed, events) = run_connect(&mut dht, start, Duration::from_secs(300), |now, t| {
        let Ok(Message::Request(r)) = Message::decode(&t.bytes) else {
            return Vec::new();
        };
        if r.internal && r.command == crate::rpc::message::internal::PING {
            if !matches!(t.socket, SocketKind::Pool(_)) {
                return Vec::new();
            }
            let res = crate::rpc::message::Response {
                tid: r.tid,
                to: SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 9), 4000),
                id: Some(crate::rpc::NodeId::from_addr(&t.to)),
                ..Default::default()
            };
            return vec![(t.socket, t.to, res.to_bytes())];
        }
        if r.internal || t.to != RELAY {
            return Vec::new();
        }
        if r.command == command::PEER_HANDSHAKE {
            handshaked.get_or_insert(now);
            return relayed_server_reply(&server, t, firewall::CONSISTENT, &mut keys);
        }
        if r.command != command::PEER_HOLEPUNCH {
            return Vec::new();
        }
        let secure = keys.as_ref().expect("a holepunch after the handshake");
        let (msg, _) = decode_prefix::<HolepunchMessage>(r.value.as_ref().unwrap()).unwrap();
        let theirs = secure
            .open(&msg.payload)
            .expect("the client's payload opens");
        let ours = if theirs.punching {
            rounds.push(now);
            match punch(&theirs) {
                Some(p) => p,
                None => return Vec::new(),
            }
        } else {
            HolepunchPayload {
                firewall: firewall::CONSISTENT,
                round: theirs.round,
                addresses: Some(vec![SERVER_ADDR]),
                remote_address: None,
                token: Some(secure.token(CLIENT_NODE.ip())),
                remote_token: theirs.token,
                ..Default::default()
            }
        };
        let reply = HolepunchMessage {
            mode: mode::REPLY,
            id: msg.id,
            payload: secure.seal(&ours, [rounds.len() as u8; 24]),
            peer_address: Some(SERVER_ADDR),
        };
        let res = crate::rpc::message::Response {
            tid: r.tid,
            to: r.to,
            value: Some(to_bytes(&reply)),
            ..Default::default()
        };
        vec![(t.socket, RELAY, res.to_bytes())]
    });
    assert!(
        events
            .iter()
            .any(|e| matches!(e, HyperEvent::Handshaked { .. })),
        "{events:?}"
    );
    (failed, handshaked.unwrap(), rounds)
}

#[test]
fn a_5th_try_later_fails_the_connect() {
    let (failed, _, rounds) = relayed_punch(Duration::from_secs(1), true, |theirs| {
        Some(HolepunchPayload {
            error: payload_error::TRY_LATER,
            firewall: firewall::RANDOM,
            round: theirs.round,
            punching: false,
            remote_token: theirs.token,
            ..Default::default()
        })
    });
    // One punch round, then one after each of 4 waits of 10-20 s; the 5th TRY_LATER ends it.
    assert_eq!(rounds.len(), MAX_TRY_LATER as usize + 1, "{rounds:?}");
    for w in rounds.windows(2) {
        let wait = w[1] - w[0];
        assert!(
            (Duration::from_secs(10)..=Duration::from_secs(20)).contains(&wait),
            "{wait:?}"
        );
    }
    let (at, error) = failed.expect("the connect failed");
    assert_eq!(error, ConnectError::HolepunchAborted);
    assert_eq!(at, *rounds.last().unwrap());
}

#[test]
fn a_punch_round_never_answered_fails_the_connect_90_s_after_the_handshake() {
    // Each PEER_HOLEPUNCH send waits 20 s (6 sends: 120 s): only the connect's path
    // deadline ends it sooner.
    let (failed, handshaked, rounds) = relayed_punch(Duration::from_secs(20), false, |_| None);
    // One punch-round request, retransmitted every 20 s.
    assert!(!rounds.is_empty());
    for w in rounds.windows(2) {
        assert_eq!(w[1] - w[0], Duration::from_secs(20));
    }
    let (at, error) = failed.expect("the connect failed");
    assert_eq!(error, ConnectError::Timeout);
    assert_eq!(at, handshaked + PUNCH_TIMEOUT);
}
