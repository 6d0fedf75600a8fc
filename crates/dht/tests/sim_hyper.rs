//! hyperdht cores on the deterministic simulator: announces and lookups at scale, with and
//! without churn, and a server reached through its relays. Replay a run with SIM_SEED=<seed>.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use corenet_codec::PublicKey;
use corenet_dht::hyper::{HyperDht, HyperEvent, OpId};
use corenet_dht::sim::Network;
use corenet_noise::KeyPair;

use common::{build, seed_for};

fn run_seed() -> u64 {
    let run = std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    println!("simulation seed {run} (replay with SIM_SEED={run})");
    run
}

/// Drains node `i`'s events, keeping those `keep` wants.
fn drain(net: &mut Network<HyperDht>, i: usize, out: &mut Vec<HyperEvent>) {
    while let Some(e) = net.node_mut(i).poll_event() {
        out.push(e);
    }
}

/// Runs until `done` says so or `limit` of virtual time passes.
fn run_until(
    net: &mut Network<HyperDht>,
    watch: &[usize],
    limit: Duration,
    mut done: impl FnMut(&[Vec<HyperEvent>]) -> bool,
) -> Vec<Vec<HyperEvent>> {
    let deadline = net.now() + limit;
    let mut events: Vec<Vec<HyperEvent>> = vec![Vec::new(); watch.len()];
    loop {
        for (k, &i) in watch.iter().enumerate() {
            drain(net, i, &mut events[k]);
        }
        if done(&events) || !net.step(deadline) {
            return events;
        }
    }
}

struct Outcome {
    found: usize,
    total: usize,
    hops: Vec<u8>,
    requests: Vec<usize>,
}

fn announce_and_lookup(
    net: &mut Network<HyperDht>,
    topics: usize,
    kill_fraction: f64,
    run: u64,
) -> Outcome {
    let n = net.len();
    let mut announced: HashMap<[u8; 32], PublicKey> = HashMap::new();
    // Announce topics from spread-out nodes, one after the other.
    for t in 0..topics {
        let topic = corenet_codec::hash::blake2b_256(format!("topic {t} run {run}").as_bytes());
        let who = 1 + (t * 7919) % (n - 1);
        let kp = KeyPair::from_seed(seed_for(10_000_000 + t, run));
        let now = net.now();
        let relay = net.server_addr(who);
        let op = net.node_mut(who).announce(now, topic, &kp, vec![relay], 0);
        net.flush(who);
        let ev = run_until(net, &[who], Duration::from_secs(60), |ev| {
            ev[0]
                .iter()
                .any(|e| matches!(e, HyperEvent::OpDone { op: o, .. } if *o == op))
        });
        let ok = ev[0].iter().any(|e| matches!(e, HyperEvent::OpDone { op: o, result: Ok(r) } if *o == op && r.commits > 0));
        assert!(
            ok,
            "announce {t} failed: {:?}",
            ev[0]
                .iter()
                .filter(|e| matches!(e, HyperEvent::OpDone { .. }))
                .collect::<Vec<_>>()
        );
        announced.insert(topic, kp.public_key());
    }
    // Churn: kill a fraction of the nodes (never the bootstrap node).
    if kill_fraction > 0.0 {
        let kill = ((n as f64) * kill_fraction) as usize;
        for k in 0..kill {
            let i = 1 + (k * 104_729 + run as usize) % (n - 1);
            net.kill(i);
        }
        net.run_for(Duration::from_secs(5));
    }
    let mut out = Outcome {
        found: 0,
        total: 0,
        hops: Vec::new(),
        requests: Vec::new(),
    };
    for (t, (topic, pk)) in announced.iter().enumerate() {
        let mut who = 1 + (t * 31 + 17) % (n - 1);
        while !net.is_alive(who) {
            who = 1 + (who % (n - 1));
        }
        let now = net.now();
        let op: OpId = net.node_mut(who).lookup(now, *topic);
        net.flush(who);
        let ev = run_until(net, &[who], Duration::from_secs(60), |ev| {
            ev[0]
                .iter()
                .any(|e| matches!(e, HyperEvent::OpDone { op: o, .. } if *o == op))
        });
        out.total += 1;
        let mut first_hops = None;
        for e in &ev[0] {
            match e {
                HyperEvent::LookupReply {
                    op: o, peers, hops, ..
                } if *o == op
                    && first_hops.is_none()
                    && peers.iter().any(|p| p.public_key == *pk) =>
                {
                    first_hops = Some(*hops);
                }
                HyperEvent::OpDone {
                    op: o,
                    result: Ok(r),
                } if *o == op => out.requests.push(r.requests),
                _ => {}
            }
        }
        if let Some(h) = first_hops {
            out.found += 1;
            out.hops.push(h);
        }
    }
    out
}

fn median<T: Copy + Ord>(v: &mut [T]) -> T {
    v.sort();
    v[v.len() / 2]
}

fn report(name: &str, n: usize, mut o: Outcome) {
    let mh = median(&mut o.hops);
    let mr = median(&mut o.requests);
    println!(
        "{name}: {n} nodes, lookups found {}/{}, median hops {mh}, median requests per lookup {mr}",
        o.found, o.total
    );
}

#[test]
fn announce_lookup_1000_nodes_no_churn() {
    let run = run_seed();
    let mut net = build(1000, run, 20);
    let o = announce_and_lookup(&mut net, 40, 0.0, run);
    let (found, total) = (o.found, o.total);
    report("no churn", 1000, o);
    assert_eq!(found, total, "every lookup finds its announce");
}

#[test]
fn announce_lookup_1000_nodes_20_percent_killed() {
    let run = run_seed();
    let mut net = build(1000, run, 20);
    let o = announce_and_lookup(&mut net, 100, 0.2, run);
    let (found, total) = (o.found, o.total);
    report("20% killed", 1000, o);
    assert!(
        found * 100 >= total * 99,
        "at least 99% found: {found}/{total}"
    );
}

#[test]
fn client_connects_to_a_server_through_its_relays() {
    let run = run_seed();
    let mut net = build(300, run, 20);
    let (srv, cli) = (100, 250);
    let server_kp = KeyPair::from_seed([0x55; 32]);
    let now = net.now();
    let server = net.node_mut(srv).listen(now, &server_kp);
    net.flush(srv);
    let ev = run_until(&mut net, &[srv], Duration::from_secs(30), |ev| {
        ev[0]
            .iter()
            .any(|e| matches!(e, HyperEvent::ServerAnnounced { .. }))
    });
    let relays = ev[0].iter().find_map(|e| match e {
        HyperEvent::ServerAnnounced {
            server: s,
            relay_addresses,
        } if *s == server => Some(relay_addresses.clone()),
        _ => None,
    });
    let relays = relays.expect("server announced");
    assert!(relays.len() >= 2, "announced at its relays: {relays:?}");

    let client_kp = KeyPair::from_seed([0x66; 32]);
    let now = net.now();
    let c = net.node_mut(cli).connect(
        now,
        &client_kp,
        server_kp.public_key(),
        1234,
        Default::default(),
    );
    net.flush(cli);
    // The server accepts every handshake (its firewall says yes).
    let deadline = net.now() + Duration::from_secs(30);
    let mut server_conn = None;
    let mut client_conn = None;
    let mut handshaked = None;
    while (server_conn.is_none() || client_conn.is_none()) && net.step(deadline) {
        while let Some(e) = net.node_mut(srv).poll_event() {
            match e {
                HyperEvent::IncomingHandshake {
                    handshake,
                    remote_public_key,
                    ..
                } => {
                    assert_eq!(remote_public_key, client_kp.public_key());
                    let now = net.now();
                    net.node_mut(srv).accept(now, handshake, 999);
                    net.flush(srv);
                }
                HyperEvent::ServerConnection {
                    result,
                    remote_udx_id,
                    connect,
                    ..
                } => server_conn = Some((result, remote_udx_id, connect)),
                _ => {}
            }
        }
        while let Some(e) = net.node_mut(cli).poll_event() {
            match e {
                HyperEvent::Handshaked {
                    connect,
                    result,
                    remote_udx_id,
                    ..
                } if connect == c => handshaked = Some((result, remote_udx_id)),
                HyperEvent::ConnectPath {
                    connect, address, ..
                } if connect == c => {
                    let (result, udx) = handshaked.take().expect("handshake before the path");
                    client_conn = Some((result, udx, address));
                }
                HyperEvent::ConnectFailed { connect, error } if connect == c => {
                    panic!("connect failed: {error}")
                }
                _ => {}
            }
        }
    }
    let (sr, s_udx, s_connect) = server_conn.expect("server saw the connection");
    let (cr, c_udx, c_addr) = client_conn.expect("client connected");
    assert_eq!(s_udx, 1234);
    assert_eq!(c_udx, 999);
    assert_eq!(sr.hash, cr.hash);
    assert_eq!(cr.remote_public_key, server_kp.public_key());
    assert_eq!(
        c_addr,
        net.server_addr(srv),
        "the client connects to the OPEN server directly"
    );
    // The server is OPEN and the client is OPEN too: the server connects actively.
    assert_eq!(s_connect.map(|(_, a)| a), Some(net.server_addr(cli)));
}

#[test]
fn connecting_to_an_unknown_key_fails_in_bounded_time() {
    let run = run_seed();
    let mut net = build(100, run, 20);
    let now = net.now();
    let c = net.node_mut(50).connect(
        now,
        &KeyPair::from_seed([1; 32]),
        KeyPair::from_seed([2; 32]).public_key(),
        1,
        Default::default(),
    );
    net.flush(50);
    let start = net.now();
    let ev = run_until(&mut net, &[50], Duration::from_secs(60), |ev| {
        ev[0]
            .iter()
            .any(|e| matches!(e, HyperEvent::ConnectFailed { .. }))
    });
    let failed = ev[0].iter().find_map(|e| match e {
        HyperEvent::ConnectFailed { connect, error } if *connect == c => Some(error.clone()),
        _ => None,
    });
    assert_eq!(failed, Some(corenet_dht::hyper::ConnectError::PeerNotFound));
    assert!(net.now() - start < Duration::from_secs(25));
}
