//! Large deterministic simulations of hyperdht: 10,000 nodes in CI, 100,000 in a documented
//! longer run (`cargo test --release -p corenet-dht --test sim_scale -- --ignored --nocapture`).
//! Each announces topics, kills 20% of the nodes, and looks the topics up, reporting the
//! success rate, median hops, requests per lookup and memory per node.

mod common;

use std::time::{Duration, Instant};

use corenet_dht::hyper::{HyperDht, HyperEvent};
use corenet_dht::sim::Network;
use corenet_noise::KeyPair;

use common::{build, seed_for};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

struct Report {
    nodes: usize,
    found_before: usize,
    found_after: usize,
    topics: usize,
    median_hops: u8,
    median_requests: usize,
    bytes_per_node: u64,
    virtual_secs: u64,
}

fn lookup_all(
    net: &mut Network<HyperDht>,
    topics: &[([u8; 32], corenet_codec::PublicKey)],
    salt: usize,
) -> (usize, Vec<u8>, Vec<usize>) {
    let n = net.len();
    // All lookups run at once, from different nodes.
    let mut pending = Vec::new();
    for (t, (topic, pk)) in topics.iter().enumerate() {
        let mut who = 1 + (t * 31 + salt) % (n - 1);
        while !net.is_alive(who) {
            who = 1 + (who % (n - 1));
        }
        let now = net.now();
        let op = net.node_mut(who).lookup(now, *topic);
        net.flush(who);
        pending.push((who, op, *pk, None::<u8>, false));
    }
    let mut requests = Vec::new();
    let deadline = net.now() + Duration::from_secs(120);
    loop {
        for (who, op, pk, first, done) in pending.iter_mut() {
            while let Some(e) = net.node_mut(*who).poll_event() {
                match e {
                    HyperEvent::LookupReply {
                        op: o,
                        peers,
                        hops: h,
                        ..
                    } if o == *op
                        && first.is_none()
                        && peers.iter().any(|p| p.public_key == *pk) =>
                    {
                        *first = Some(h);
                    }
                    HyperEvent::OpDone { op: o, result } if o == *op => {
                        if let Ok(r) = result {
                            requests.push(r.requests);
                        }
                        *done = true;
                    }
                    _ => {}
                }
            }
        }
        if pending.iter().all(|p| p.4) || !net.step(deadline) {
            break;
        }
    }
    let hops: Vec<u8> = pending.iter().filter_map(|p| p.3).collect();
    (hops.len(), hops, requests)
}

fn simulate(n: usize, topics: usize, run: u64) -> Report {
    println!("simulation seed {run}, {n} nodes (replay with SIM_SEED={run})");
    let rss0 = rss_bytes();
    // The network's virtual clock starts at the real time `build` reads, microseconds later.
    let start = Instant::now();
    let mut net = build(n, run, 50);
    let bytes_per_node = rss_bytes().saturating_sub(rss0) / n as u64;
    let persistent = (0..n)
        .filter(|i| net.node(*i).node().is_persistent())
        .count();
    assert!(
        persistent * 100 >= n * 99,
        "only {persistent} of {n} nodes became persistent"
    );

    // All announces run at once.
    let mut announced = Vec::new();
    let mut ops = Vec::new();
    for t in 0..topics {
        let topic =
            corenet_codec::hash::blake2b_256(format!("scale topic {t} run {run}").as_bytes());
        let who = 1 + (t * 7919) % (n - 1);
        let kp = KeyPair::from_seed(seed_for(50_000_000 + t, run));
        let now = net.now();
        let relay = net.server_addr(who);
        let op = net.node_mut(who).announce(now, topic, &kp, vec![relay], 0);
        net.flush(who);
        ops.push((who, op, None::<bool>));
        announced.push((topic, kp.public_key()));
    }
    let deadline = net.now() + Duration::from_secs(120);
    loop {
        for (who, op, ok) in ops.iter_mut() {
            while let Some(e) = net.node_mut(*who).poll_event() {
                if let HyperEvent::OpDone { op: o, result } = e {
                    if o == *op {
                        *ok = Some(result.is_ok());
                    }
                }
            }
        }
        if ops.iter().all(|o| o.2.is_some()) || !net.step(deadline) {
            break;
        }
    }
    for (t, o) in ops.iter().enumerate() {
        assert_eq!(o.2, Some(true), "announce {t}");
    }
    let (found_before, mut hops, mut requests) = lookup_all(&mut net, &announced, 17);
    // Kill 20% of the nodes, then look everything up again.
    let kill = n / 5;
    for k in 0..kill {
        net.kill(1 + (k * 104_729 + 13) % (n - 1));
    }
    let (found_after, h2, r2) = lookup_all(&mut net, &announced, 5);
    hops.extend(h2);
    requests.extend(r2);
    hops.sort();
    requests.sort();
    Report {
        nodes: n,
        found_before,
        found_after,
        topics,
        median_hops: hops.get(hops.len() / 2).copied().unwrap_or(0),
        median_requests: requests.get(requests.len() / 2).copied().unwrap_or(0),
        bytes_per_node,
        virtual_secs: (net.now() - start).as_secs(),
    }
}

fn check(r: &Report) {
    println!(
        "{} nodes: lookups found {}/{} without churn, {}/{} with 20% killed; median hops {}, median requests per lookup {}, ~{} KiB per node, {} s virtual",
        r.nodes, r.found_before, r.topics, r.found_after, r.topics, r.median_hops, r.median_requests, r.bytes_per_node / 1024, r.virtual_secs
    );
    assert_eq!(r.found_before, r.topics, "100% without churn");
    assert!(
        r.found_after * 100 >= r.topics * 99,
        "at least 99% with 20% killed"
    );
}

fn run_seed() -> u64 {
    std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7)
}

#[test]
fn ten_thousand_nodes() {
    check(&simulate(10_000, 100, run_seed()));
}

#[test]
#[ignore = "long run: cargo test --release -p corenet-dht --test sim_scale -- --ignored --nocapture"]
fn hundred_thousand_nodes() {
    check(&simulate(100_000, 200, run_seed()));
}
