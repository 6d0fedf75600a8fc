//! dht-rpc cores on the deterministic simulator: bootstrap a network, then check that
//! FIND_NODE queries find the true closest nodes.

use std::time::{Duration, Instant};

use corenet_dht::rpc::{Config, Event, Node, NodeId, QuerySpec};
use corenet_dht::sim::{LinkModel, Network};
use rand::{RngCore, SeedableRng};

fn seed_for(i: usize, run: u64) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&(i as u64).to_le_bytes());
    s[8..16].copy_from_slice(&run.to_le_bytes());
    s
}

fn build(n: usize, run: u64, link: LinkModel) -> Network<Node> {
    let start = Instant::now();
    let mut net = Network::new(start, run, link);
    let boot = Network::<Node>::address_of(0);
    net.add(|i, addr| {
        Node::new(
            Config::default()
                .with_public_address(addr)
                .with_server_port(addr.port())
                .with_seed(seed_for(i, run)),
            start,
        )
    });
    // Nodes join 100 per virtual second, like a testnet: persistent once they learn their
    // address.
    for k in 1..n {
        let now = net.now();
        net.add(|i, addr| {
            Node::new(
                Config::default()
                    .with_bootstrap(vec![boot])
                    .with_ephemeral(Some(false))
                    .with_firewalled(false)
                    .with_server_port(addr.port())
                    .with_seed(seed_for(i, run)),
                now,
            )
        });
        if k % 10 == 0 {
            net.run_for(Duration::from_millis(100));
        }
    }
    net.run_for(Duration::from_secs(60));
    net
}

#[test]
fn thousand_nodes_bootstrap_and_find_the_closest() {
    let run = std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    println!("simulation seed {run} (replay with SIM_SEED={run})");
    let n = 1000;
    let mut net = build(n, run, LinkModel::default());
    let persistent = (0..n).filter(|i| net.node(*i).is_persistent()).count();
    assert_eq!(persistent, n, "every node became persistent");
    let ids: Vec<NodeId> = (0..n).map(|i| net.node(i).id()).collect();
    let mut rng = rand_chacha::ChaChaRng::seed_from_u64(run);
    let mut exact = 0;
    let trials = 50;
    let mut total_requests = 0;
    for t in 0..trials {
        let mut target = [0u8; 32];
        rng.fill_bytes(&mut target);
        let from = 1 + (t * 17) % (n - 1);
        let now = net.now();
        let q = net.node_mut(from).query(now, QuerySpec::find_node(target));
        net.flush(from);
        let mut done = None;
        let deadline = net.now() + Duration::from_secs(30);
        while done.is_none() && net.step(deadline) {
            while let Some(e) = net.node_mut(from).poll_event() {
                if let Event::QueryDone {
                    query,
                    closest,
                    requests,
                    ..
                } = e
                {
                    if query == q {
                        done = Some((closest, requests));
                    }
                }
            }
        }
        let (closest, requests) = done.expect("query finished");
        total_requests += requests;
        let mut want = ids.clone();
        let tid = NodeId(target);
        want.retain(|id| *id != ids[from]);
        want.sort_by(|a, b| tid.cmp_distance(a, b));
        want.truncate(20);
        let got: Vec<NodeId> = closest.iter().filter_map(|r| r.from_id).collect();
        if got == want {
            exact += 1;
        }
        assert!(got.len() == 20, "20 closest replies");
        // At least the closest 15 must be right in every query.
        let hits = got.iter().filter(|g| want.contains(g)).count();
        assert!(
            hits >= 18,
            "trial {t}: only {hits} of the true 20 closest found"
        );
    }
    println!(
        "exact closest sets: {exact}/{trials}, requests per query {}",
        total_requests / trials
    );
    assert!(
        exact * 10 >= trials * 8,
        "at least 80% exact, got {exact}/{trials}"
    );
}
