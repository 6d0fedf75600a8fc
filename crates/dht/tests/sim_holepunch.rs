//! Holepunching on the deterministic simulator: a public DHT, a server and a client behind
//! simulated NATs (consistent or random mapping, stateful filtering, no hairpinning, low-TTL
//! datagrams dying past their own NAT), driven over virtual time. Every topology runs over
//! several seeds; replay one with SIM_SEED=<seed>.
//!
//! Each connect must end with the path the JS stack takes for that topology, and the path
//! must really be open: a datagram from the client's socket to the reported address reaches
//! the server, and the server's answer to where it came from reaches the same client socket.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use corenet_dht::hyper::{
    ConnectError, ConnectOptions, HyperConfig, HyperDht, HyperEvent, ListenOptions, PathKind,
};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use corenet_dht::hyper::command;
use corenet_dht::hyper::messages::{mode, HolepunchMessage};
use corenet_dht::rpc::{Config, Message, Request, SocketKind};
use corenet_dht::sim::{LinkModel, NatKind, Network};
use corenet_noise::KeyPair;

fn seeds() -> Vec<u64> {
    match std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(s) => vec![s],
        None => (1..=4).collect(),
    }
}

fn seed_for(i: usize, run: u64) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&(i as u64).to_le_bytes());
    s[8..16].copy_from_slice(&run.to_le_bytes());
    s[16] = 0x5a;
    s
}

/// Where a peer sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Site {
    /// A public address (firewalled until its reachability check passes, as JS).
    Open,
    /// Behind its own NAT.
    Nat(NatKind),
    /// Behind the NAT of the other peer (same LAN).
    SameLan,
}

struct Lab {
    net: Network<HyperDht>,
    server: usize,
    client: usize,
}

const DHT_NODES: usize = 8;

fn peer(i: usize, run: u64, boot: SocketAddrV4, lan: Ipv4Addr, now: Instant) -> HyperDht {
    let rpc = Config::default()
        .with_bootstrap(vec![boot])
        .with_server_port(49737)
        .with_seed(seed_for(i, run));
    HyperDht::new(
        HyperConfig {
            rpc,
            local_addresses: vec![lan],
            bound_host: Some(Ipv4Addr::UNSPECIFIED),
            ..Default::default()
        },
        now,
    )
}

fn lab(run: u64, server: Site, client: Site, link: LinkModel) -> Lab {
    let start = Instant::now();
    let mut net = Network::new(start, run, link);
    // The DHT: public, non-bogon addresses (they exist only in this simulation).
    let boot = SocketAddrV4::new(Ipv4Addr::new(44, 0, 0, 1), 49737);
    for k in 0..DHT_NODES {
        let now = net.now();
        let ip = Ipv4Addr::new(44, 0, 0, 1 + k as u8);
        net.add_host(ip, None, |i, addr| {
            let rpc = if k == 0 {
                Config::default().with_public_address(addr)
            } else {
                Config::default()
                    .with_bootstrap(vec![boot])
                    .with_ephemeral(Some(false))
                    .with_firewalled(false)
            };
            HyperDht::new(
                HyperConfig {
                    rpc: rpc.with_server_port(49737).with_seed(seed_for(i, run)),
                    ..Default::default()
                },
                now,
            )
        });
        net.run_for(Duration::from_millis(200));
    }
    net.run_for(Duration::from_secs(10));
    let place = |net: &mut Network<HyperDht>,
                 site: Site,
                 pub_ip: Ipv4Addr,
                 shared: Option<usize>,
                 lan: Ipv4Addr| {
        let now = net.now();
        match site {
            Site::Open => net.add_host(pub_ip, None, |i, _| peer(i, run, boot, pub_ip, now)),
            Site::Nat(kind) => {
                let n = net.add_nat(pub_ip, kind);
                net.add_host(lan, Some(n), |i, _| peer(i, run, boot, lan, now))
            }
            Site::SameLan => {
                let n = shared.expect("a shared NAT");
                net.add_host(lan, Some(n), |i, _| peer(i, run, boot, lan, now))
            }
        }
    };
    let server_nat = match (server, client) {
        (_, Site::SameLan) => Some(0),
        _ => None,
    };
    let server_site = if client == Site::SameLan {
        Site::Nat(NatKind::Consistent)
    } else {
        server
    };
    let s = place(
        &mut net,
        server_site,
        Ipv4Addr::new(44, 1, 0, 1),
        None,
        Ipv4Addr::new(192, 168, 1, 2),
    );
    let c = place(
        &mut net,
        client,
        Ipv4Addr::new(44, 2, 0, 1),
        server_nat,
        Ipv4Addr::new(192, 168, if client == Site::SameLan { 1 } else { 2 }, 3),
    );
    // Bootstrap, and give OPEN peers time for their reachability check.
    net.run_for(Duration::from_secs(20));
    Lab {
        net,
        server: s,
        client: c,
    }
}

#[derive(Debug)]
enum Outcome {
    Path(SocketKind, SocketAddrV4, PathKind, Duration),
    Failed(ConnectError, Duration),
}

/// Listens on the server, connects from the client, and plays the driver for both (accepting
/// every handshake) until the client has a path or fails.
fn connect(lab: &mut Lab, run: u64, opts: ConnectOptions, listen: ListenOptions) -> Outcome {
    let net = &mut lab.net;
    let (s, c) = (lab.server, lab.client);
    let kp = KeyPair::from_seed(seed_for(1000, run));
    let now = net.now();
    net.node_mut(s).listen_with(now, &kp, listen);
    net.flush(s);
    let deadline = net.now() + Duration::from_secs(30);
    'announced: loop {
        while let Some(e) = net.node_mut(s).poll_event() {
            if matches!(e, HyperEvent::ServerAnnounced { .. }) {
                break 'announced;
            }
        }
        assert!(net.step(deadline), "the server never announced");
    }
    let start = net.now();
    let client_kp = KeyPair::from_seed(seed_for(2000, run));
    let id = net
        .node_mut(c)
        .connect(start, &client_kp, kp.public_key(), 7, opts);
    net.flush(c);
    let deadline = start + Duration::from_secs(120);
    loop {
        while let Some(e) = net.node_mut(s).poll_event() {
            if let HyperEvent::IncomingHandshake { handshake, .. } = e {
                let now = net.now();
                net.node_mut(s).accept(now, handshake, 99);
                net.flush(s);
            }
        }
        while let Some(e) = net.node_mut(c).poll_event() {
            match e {
                HyperEvent::ConnectPath {
                    connect,
                    socket,
                    address,
                    kind,
                } if connect == id => {
                    return Outcome::Path(socket, address, kind, net.now() - start);
                }
                HyperEvent::ConnectFailed { connect, error } if connect == id => {
                    return Outcome::Failed(error, net.now() - start);
                }
                _ => {}
            }
        }
        assert!(net.step(deadline), "the connect never finished (run {run})");
    }
}

/// The path really carries datagrams both ways.
fn assert_path_open(lab: &mut Lab, socket: SocketKind, address: SocketAddrV4, run: u64) {
    let (s, c) = (lab.server, lab.client);
    let there = lab.net.route(c, socket, address, None);
    let Some((node, server_socket, seen_as)) = there else {
        panic!("run {run}: the client's datagram to {address} from {socket:?} is dropped");
    };
    assert_eq!(node, s, "run {run}: it reaches another node");
    let back = lab.net.route(s, server_socket, seen_as, None);
    assert!(
        matches!(back, Some((n, k, _)) if n == c && k == socket),
        "run {run}: the server's answer does not come back to the client's socket: {back:?}"
    );
}

fn expect_path(server: Site, client: Site, kind: PathKind, within: Duration) {
    for run in seeds() {
        println!("run {run} (replay with SIM_SEED={run})");
        let mut lab = lab(run, server, client, LinkModel::default());
        let out = connect(
            &mut lab,
            run,
            ConnectOptions::default(),
            ListenOptions::default(),
        );
        match out {
            Outcome::Path(socket, address, k, took) => {
                println!("  {server:?}/{client:?}: {k} to {address} via {socket:?} in {took:?}");
                assert_eq!(k, kind, "run {run}");
                assert!(took <= within, "run {run}: took {took:?}");
                assert_path_open(&mut lab, socket, address, run);
            }
            Outcome::Failed(e, took) => {
                panic!("run {run}: {server:?}/{client:?} failed with {e} after {took:?}")
            }
        }
        // Nothing is left behind: punchers and their sockets go once the path is chosen.
        let mut left = Duration::ZERO;
        while left < Duration::from_secs(60) {
            lab.net.run_for(Duration::from_secs(5));
            left += Duration::from_secs(5);
        }
        for i in [lab.server, lab.client] {
            let n = lab.net.node(i);
            assert_eq!(n.punchers(), 0, "run {run}: node {i} keeps a puncher");
            assert_eq!(
                n.pool_sockets(),
                0,
                "run {run}: node {i} keeps pool sockets"
            );
            assert_eq!(
                n.connects_in_progress(),
                0,
                "run {run}: node {i} keeps a connect"
            );
        }
    }
}

#[test]
fn open_server_nat_client_connects_directly() {
    expect_path(
        Site::Open,
        Site::Nat(NatKind::Consistent),
        PathKind::Direct,
        Duration::from_secs(2),
    );
}

#[test]
fn cone_to_cone_punches() {
    expect_path(
        Site::Nat(NatKind::Consistent),
        Site::Nat(NatKind::Consistent),
        PathKind::Holepunch,
        Duration::from_secs(8),
    );
}

#[test]
fn cone_server_random_client_punches_with_the_birthday_strategy() {
    expect_path(
        Site::Nat(NatKind::Consistent),
        Site::Nat(NatKind::Random),
        PathKind::Holepunch,
        Duration::from_secs(45),
    );
}

#[test]
fn random_server_cone_client_punches() {
    expect_path(
        Site::Nat(NatKind::Random),
        Site::Nat(NatKind::Consistent),
        PathKind::Holepunch,
        Duration::from_secs(45),
    );
}

#[test]
fn same_lan_takes_the_lan_path() {
    expect_path(
        Site::Nat(NatKind::Consistent),
        Site::SameLan,
        PathKind::Lan,
        Duration::from_secs(5),
    );
}

#[test]
fn random_to_random_fails_with_the_typed_error() {
    for run in seeds() {
        let mut lab = lab(
            run,
            Site::Nat(NatKind::Random),
            Site::Nat(NatKind::Random),
            LinkModel::default(),
        );
        match connect(
            &mut lab,
            run,
            ConnectOptions::default(),
            ListenOptions::default(),
        ) {
            Outcome::Failed(e, took) => {
                println!("run {run}: {e} ({}) after {took:?}", e.code());
                assert_eq!(e, ConnectError::DoubleRandomizedNats, "run {run}");
                assert!(e.forces_relaying());
                assert!(took < Duration::from_secs(10), "run {run}: {took:?}");
            }
            other => panic!("run {run}: random/random gave {other:?}"),
        }
    }
}

/// The PEER_HOLEPUNCH message in a datagram, if it is one.
fn holepunch_of(bytes: &[u8]) -> Option<(Request, HolepunchMessage)> {
    let Ok(Message::Request(req)) = Message::decode(bytes) else {
        return None;
    };
    if req.internal || req.command != command::PEER_HOLEPUNCH {
        return None;
    }
    let msg = corenet_codec::decode_exact::<HolepunchMessage>(req.value.as_ref()?).ok()?;
    Some((req, msg))
}

/// Waits (virtual time, bounded) until every puncher, pool socket, connect and server slot
/// of `nodes` is gone.
fn assert_nothing_left(lab: &mut Lab, nodes: &[usize], within: Duration, run: u64) {
    let deadline = lab.net.now() + within;
    loop {
        let left: Vec<_> = nodes
            .iter()
            .map(|&i| {
                let n = lab.net.node(i);
                (
                    n.punchers(),
                    n.pool_sockets(),
                    n.connects_in_progress(),
                    n.server_punch_slots(),
                )
            })
            .collect();
        if left.iter().all(|l| *l == (0, 0, 0, 0)) {
            return;
        }
        assert!(
            lab.net.now() < deadline,
            "run {run}: state left behind (punchers, sockets, connects, slots): {left:?}"
        );
        lab.net.run_for(Duration::from_secs(1));
    }
}

#[test]
fn a_tampered_holepunch_payload_fails_cleanly() {
    for run in seeds() {
        let mut lab = lab(
            run,
            Site::Nat(NatKind::Consistent),
            Site::Nat(NatKind::Consistent),
            LinkModel::default(),
        );
        let server = lab.server;
        let tampered = Arc::new(AtomicUsize::new(0));
        let t = tampered.clone();
        lab.net.set_tap(move |_, to, bytes| {
            if to == server {
                if let Some((mut req, mut msg)) = holepunch_of(bytes) {
                    if msg.mode == mode::FROM_RELAY {
                        let mut p = msg.payload.to_vec();
                        if let Some(last) = p.last_mut() {
                            *last ^= 0x40;
                        }
                        msg.payload = Bytes::from(p);
                        req.value = Some(corenet_codec::to_bytes(&msg));
                        *bytes = req.to_bytes();
                        t.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            true
        });
        let out = connect(
            &mut lab,
            run,
            ConnectOptions::default(),
            ListenOptions::default(),
        );
        match out {
            Outcome::Failed(e, took) => {
                println!("run {run}: {e} ({}) after {took:?}", e.code());
                assert_eq!(e, ConnectError::HolepunchRequestTimeout, "run {run}");
                assert!(took < Duration::from_secs(15), "run {run}: {took:?}");
            }
            other => panic!("run {run}: a payload that does not open gave {other:?}"),
        }
        assert!(tampered.load(Ordering::Relaxed) > 0);
        let (s, c) = (lab.server, lab.client);
        assert_nothing_left(&mut lab, &[s, c], Duration::from_secs(40), run);
    }
}

#[test]
fn a_server_that_vanishes_after_the_probe_round_fails_the_connect_in_bounded_time() {
    for run in seeds() {
        let mut lab = lab(
            run,
            Site::Nat(NatKind::Consistent),
            Site::Nat(NatKind::Random),
            LinkModel::default(),
        );
        let client = lab.client;
        let replied = Arc::new(AtomicBool::new(false));
        let r = replied.clone();
        lab.net.set_tap(move |_, to, bytes| {
            if to == client {
                if let Ok(Message::Response(res)) = Message::decode(bytes) {
                    let is_hp = res
                        .value
                        .as_ref()
                        .and_then(|v| corenet_codec::decode_exact::<HolepunchMessage>(v).ok())
                        .is_some_and(|m| m.mode == mode::REPLY);
                    if is_hp {
                        r.store(true, Ordering::Relaxed);
                    }
                }
            }
            true
        });
        // Listen, then connect; kill the server as soon as its first holepunch answer is
        // on its way.
        let kp = KeyPair::from_seed(seed_for(1000, run));
        let now = lab.net.now();
        let (s, c) = (lab.server, lab.client);
        lab.net
            .node_mut(s)
            .listen_with(now, &kp, ListenOptions::default());
        lab.net.flush(s);
        lab.net.run_for(Duration::from_secs(5));
        while lab.net.node_mut(s).poll_event().is_some() {}
        let start = lab.net.now();
        let id = lab.net.node_mut(c).connect(
            start,
            &KeyPair::from_seed(seed_for(2000, run)),
            kp.public_key(),
            7,
            ConnectOptions::default(),
        );
        lab.net.flush(c);
        let deadline = start + Duration::from_secs(120);
        let mut killed = false;
        let error = loop {
            while let Some(e) = lab.net.node_mut(s).poll_event() {
                if let HyperEvent::IncomingHandshake { handshake, .. } = e {
                    let now = lab.net.now();
                    lab.net.node_mut(s).accept(now, handshake, 99);
                    lab.net.flush(s);
                }
            }
            if !killed && replied.load(Ordering::Relaxed) {
                lab.net.kill(s);
                killed = true;
            }
            let mut done = None;
            while let Some(e) = lab.net.node_mut(c).poll_event() {
                match e {
                    HyperEvent::ConnectFailed { connect, error } if connect == id => {
                        done = Some(error)
                    }
                    HyperEvent::ConnectPath { connect, .. } if connect == id => {
                        panic!("run {run}: connected to a dead server")
                    }
                    _ => {}
                }
            }
            if let Some(e) = done {
                break e;
            }
            assert!(lab.net.step(deadline), "run {run}: the connect never ended");
        };
        let took = lab.net.now() - start;
        println!("run {run}: {error} ({}) after {took:?}", error.code());
        assert!(killed, "run {run}: the server never answered a holepunch");
        assert!(took < Duration::from_secs(60), "run {run}: {took:?}");
        assert_nothing_left(&mut lab, &[c], Duration::from_secs(10), run);
    }
}

#[test]
fn a_holepunch_flood_is_bounded_and_the_server_still_connects() {
    for run in seeds() {
        let mut lab = lab(
            run,
            Site::Nat(NatKind::Consistent),
            Site::Nat(NatKind::Consistent),
            LinkModel::default(),
        );
        let (s, relay) = (lab.server, 1);
        let kp = KeyPair::from_seed(seed_for(1000, run));
        let now = lab.net.now();
        lab.net
            .node_mut(s)
            .listen_with(now, &kp, ListenOptions::default());
        lab.net.flush(s);
        lab.net.run_for(Duration::from_secs(5));
        while lab.net.node_mut(s).poll_event().is_some() {}
        let target = corenet_codec::hash::blake2b_256(kp.public_key().as_bytes());
        let attacker = SocketAddrV4::new(Ipv4Addr::new(44, 9, 9, 9), 4000);
        let before = lab.net.datagrams;
        // 20,000 forged holepunch messages at the server (random slot ids, payloads that do
        // not open) and 2,000 at a DHT node to be forwarded.
        for i in 0..22_000u32 {
            let msg = HolepunchMessage {
                mode: if i < 20_000 {
                    mode::FROM_RELAY
                } else {
                    mode::FROM_CLIENT
                },
                id: u64::from(i % 700),
                payload: Bytes::from(vec![i as u8; 60 + (i % 90) as usize]),
                peer_address: Some(SocketAddrV4::new(
                    Ipv4Addr::new(44, 8, 0, 1),
                    1 + (i % 60000) as u16,
                )),
            };
            let req = Request {
                tid: i as u16,
                to: lab.net.server_addr(s),
                command: command::PEER_HOLEPUNCH,
                target: Some(target),
                value: Some(corenet_codec::to_bytes(&msg)),
                ..Default::default()
            };
            let to = if i < 20_000 { s } else { relay };
            let from = SocketAddrV4::new(
                *attacker.ip(),
                attacker.port().wrapping_add((i % 128) as u16),
            );
            lab.net
                .inject(to, SocketKind::Server, from, &req.to_bytes());
        }
        let sent = lab.net.datagrams - before;
        let n = lab.net.node(s);
        println!(
            "run {run}: flood answered with {sent} datagrams; server slots {}, punchers {}, pool {}",
            n.server_punch_slots(),
            n.punchers(),
            n.pool_sockets()
        );
        // The server answers forged slots with nothing, and a relay forwards one for one.
        assert_eq!(n.server_punch_slots(), 0);
        assert_eq!((n.punchers(), n.pool_sockets()), (0, 0));
        assert!(
            sent <= 2_000 + 50,
            "run {run}: the flood was amplified: {sent} datagrams out"
        );
        // A real client still connects.
        let start_kp = KeyPair::from_seed(seed_for(2000, run));
        let now = lab.net.now();
        let c = lab.client;
        let id = lab.net.node_mut(c).connect(
            now,
            &start_kp,
            kp.public_key(),
            7,
            ConnectOptions::default(),
        );
        lab.net.flush(c);
        let ok = drive_connect(&mut lab.net, s, c, id, Duration::from_secs(60));
        assert_eq!(ok, Ok(PathKind::Holepunch), "run {run}");
    }
}

#[test]
fn replayed_holepunch_requests_change_nothing() {
    for run in seeds() {
        let mut lab = lab(
            run,
            Site::Nat(NatKind::Consistent),
            Site::Nat(NatKind::Consistent),
            LinkModel::default(),
        );
        let server = lab.server;
        let captured: Arc<Mutex<Vec<Bytes>>> = Arc::default();
        let cap = captured.clone();
        lab.net.set_tap(move |_, to, bytes| {
            if to == server && holepunch_of(bytes).is_some() {
                cap.lock().unwrap().push(bytes.clone());
            }
            true
        });
        let out = connect(
            &mut lab,
            run,
            ConnectOptions::default(),
            ListenOptions::default(),
        );
        assert!(
            matches!(out, Outcome::Path(_, _, PathKind::Holepunch, _)),
            "run {run}: {out:?}"
        );
        lab.net.clear_tap();
        let replays = captured.lock().unwrap().clone();
        assert!(!replays.is_empty());
        let from = SocketAddrV4::new(Ipv4Addr::new(44, 0, 0, 2), 49737);
        for _ in 0..50 {
            for b in &replays {
                lab.net.inject(server, SocketKind::Server, from, b);
            }
        }
        let n = lab.net.node(server);
        assert!(
            n.punchers() <= 1 && n.pool_sockets() <= 1,
            "run {run}: replays grew state"
        );
        let (s, c) = (lab.server, lab.client);
        assert_nothing_left(&mut lab, &[s, c], Duration::from_secs(60), run);
    }
}

#[test]
fn cone_to_cone_punches_through_ten_percent_loss() {
    for run in seeds() {
        let link = LinkModel {
            loss: 0.10,
            ..LinkModel::default()
        };
        let mut lab = lab(
            run,
            Site::Nat(NatKind::Consistent),
            Site::Nat(NatKind::Consistent),
            link,
        );
        match connect(
            &mut lab,
            run,
            ConnectOptions::default(),
            ListenOptions::default(),
        ) {
            Outcome::Path(socket, address, kind, took) => {
                println!("run {run}: {kind} in {took:?} at 10% loss");
                assert_eq!(kind, PathKind::Holepunch);
                assert_path_open(&mut lab, socket, address, run);
            }
            Outcome::Failed(e, took) => panic!("run {run}: {e} after {took:?} at 10% loss"),
        }
    }
}

#[test]
fn a_run_replays_from_its_seed() {
    let once = || {
        let mut lab = lab(
            7,
            Site::Nat(NatKind::Consistent),
            Site::Nat(NatKind::Random),
            LinkModel::default(),
        );
        let out = connect(
            &mut lab,
            7,
            ConnectOptions::default(),
            ListenOptions::default(),
        );
        (format!("{out:?}"), lab.net.datagrams)
    };
    assert_eq!(once(), once());
}

#[test]
fn a_nat_sample_classifies_each_kind() {
    for (site, expect) in [
        (
            Site::Nat(NatKind::Consistent),
            corenet_dht::NatType::Consistent,
        ),
        (Site::Nat(NatKind::Random), corenet_dht::NatType::Random),
    ] {
        let mut lab = lab(3, site, Site::Open, LinkModel::default());
        let s = lab.server;
        let now = lab.net.now();
        let id = lab.net.node_mut(s).sample_nat(now);
        lab.net.flush(s);
        let deadline = now + Duration::from_secs(10);
        let got = loop {
            let mut got = None;
            while let Some(e) = lab.net.node_mut(s).poll_event() {
                if let HyperEvent::NatSampled { sample, nat, .. } = e {
                    if sample == id {
                        got = Some(nat);
                    }
                }
            }
            if let Some(g) = got {
                break g;
            }
            assert!(lab.net.step(deadline), "no NAT sample");
        };
        assert_eq!(got, expect, "{site:?}");
        assert_eq!(lab.net.node(s).pool_sockets(), 0);
    }
}

/// Drives node `c`'s connect `id` (and server `s`'s handshakes) until it ends.
fn drive_connect(
    net: &mut Network<HyperDht>,
    s: usize,
    c: usize,
    id: corenet_dht::hyper::ConnectId,
    limit: Duration,
) -> Result<PathKind, ConnectError> {
    let deadline = net.now() + limit;
    let mut accepted = Vec::new();
    loop {
        while let Some(e) = net.node_mut(s).poll_event() {
            if let HyperEvent::IncomingHandshake { handshake, .. } = e {
                let now = net.now();
                net.node_mut(s).accept(now, handshake, 99);
                net.flush(s);
                accepted.push(handshake);
            }
        }
        while let Some(e) = net.node_mut(c).poll_event() {
            match e {
                HyperEvent::ConnectPath { connect, kind, .. } if connect == id => {
                    // The server's driver would see the client's first packet on the punched
                    // socket and tell the core, which stops the server's punch.
                    let now = net.now();
                    for h in accepted {
                        net.node_mut(s).server_stream_connected(now, h);
                    }
                    net.flush(s);
                    return Ok(kind);
                }
                HyperEvent::ConnectFailed { connect, error } if connect == id => return Err(error),
                _ => {}
            }
        }
        assert!(net.step(deadline), "the connect never ended");
    }
}

/// The node-wide limit on random punches: while one random punch runs (and for 20 s after),
/// another to the same server gets TRY_LATER; without a relay to fall back on the server
/// aborts it with that code (REMOTE_ABORTED with error 3, as a JS client reports it), with
/// one (a relay was offered) it waits 10-20 s and then punches.
#[test]
fn a_second_random_punch_waits_or_aborts() {
    for run in seeds() {
        let mut lab = lab(
            run,
            Site::Nat(NatKind::Consistent),
            Site::Nat(NatKind::Random),
            LinkModel::default(),
        );
        let (s, c1) = (lab.server, lab.client);
        let boot = SocketAddrV4::new(Ipv4Addr::new(44, 0, 0, 1), 49737);
        let mut more = Vec::new();
        for k in 0..2u8 {
            let now = lab.net.now();
            let n = lab.net.add_nat(Ipv4Addr::new(44, 3, k, 1), NatKind::Random);
            let lan = Ipv4Addr::new(192, 168, 10 + k, 2);
            more.push(
                lab.net
                    .add_host(lan, Some(n), |i, _| peer(i, run, boot, lan, now)),
            );
        }
        lab.net.run_for(Duration::from_secs(20));
        let kp = KeyPair::from_seed(seed_for(1000, run));
        let now = lab.net.now();
        lab.net
            .node_mut(s)
            .listen_with(now, &kp, ListenOptions::default());
        lab.net.flush(s);
        lab.net.run_for(Duration::from_secs(5));
        while lab.net.node_mut(s).poll_event().is_some() {}
        // The first random punch: the server's one slot for random punches is taken.
        let now = lab.net.now();
        let first = lab.net.node_mut(c1).connect(
            now,
            &KeyPair::from_seed(seed_for(2000, run)),
            kp.public_key(),
            7,
            ConnectOptions::default(),
        );
        lab.net.flush(c1);
        let r = drive_connect(&mut lab.net, s, c1, first, Duration::from_secs(60));
        assert_eq!(r, Ok(PathKind::Holepunch), "run {run}");
        // Within 20 s of it: without a relay, the server aborts the second one.
        let (c2, c3) = (more[0], more[1]);
        let now = lab.net.now();
        let second = lab.net.node_mut(c2).connect(
            now,
            &KeyPair::from_seed(seed_for(2001, run)),
            kp.public_key(),
            7,
            ConnectOptions::default(),
        );
        lab.net.flush(c2);
        let r = drive_connect(&mut lab.net, s, c2, second, Duration::from_secs(60));
        assert_eq!(
            r,
            Err(ConnectError::RemoteAborted(3)),
            "run {run}: TRY_LATER"
        );
        assert!(lab.net.node(s).punch_stats().try_later >= 1);
        // With a relay offered, the third one waits for its turn and punches.
        let now = lab.net.now();
        let start = now;
        let options = ConnectOptions {
            relay_through: Some(KeyPair::from_seed([0xee; 32]).public_key()),
            ..Default::default()
        };
        let third = lab.net.node_mut(c3).connect(
            now,
            &KeyPair::from_seed(seed_for(2002, run)),
            kp.public_key(),
            7,
            options,
        );
        lab.net.flush(c3);
        let r = drive_connect(&mut lab.net, s, c3, third, Duration::from_secs(120));
        let took = lab.net.now() - start;
        println!("run {run}: third punch {r:?} after {took:?}");
        assert_eq!(r, Ok(PathKind::Holepunch), "run {run}");
        assert!(
            took >= Duration::from_secs(9),
            "run {run}: it did not wait: {took:?}"
        );
    }
}
