//! What the hyperdht simulations share: per-node seeds and building a network.

#![allow(dead_code)] // each test binary uses a part

use std::time::{Duration, Instant};

use corenet_dht::hyper::{HyperConfig, HyperDht};
use corenet_dht::rpc::Config;
use corenet_dht::sim::{LinkModel, Network};

/// Node `i`'s seed in run `run` (ids and keys are reproducible from the run's seed).
pub(crate) fn seed_for(i: usize, run: u64) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&(i as u64).to_le_bytes());
    s[8..16].copy_from_slice(&run.to_le_bytes());
    s
}

/// `n` hyperdht nodes: node 0 a bootstrap node with a known address, the others persistent
/// nodes bootstrapping from it, `settle_every` at a time with 100 ms of virtual time between
/// batches; then 30 s for the routing tables to fill.
pub(crate) fn build(n: usize, run: u64, settle_every: usize) -> Network<HyperDht> {
    let start = Instant::now();
    let mut net = Network::new(start, run, LinkModel::default());
    let boot = Network::<HyperDht>::address_of(0);
    net.add(|i, addr| {
        let rpc = Config::default()
            .with_public_address(addr)
            .with_server_port(addr.port())
            .with_seed(seed_for(i, run));
        HyperDht::new(
            HyperConfig {
                rpc,
                ..Default::default()
            },
            start,
        )
    });
    for k in 1..n {
        let now = net.now();
        net.add(|i, addr| {
            let rpc = Config::default()
                .with_bootstrap(vec![boot])
                .with_ephemeral(Some(false))
                .with_firewalled(false)
                .with_server_port(addr.port())
                .with_seed(seed_for(i, run));
            HyperDht::new(
                HyperConfig {
                    rpc,
                    ..Default::default()
                },
                now,
            )
        });
        if k % settle_every == 0 {
            net.run_for(Duration::from_millis(100));
        }
    }
    net.run_for(Duration::from_secs(30));
    net
}
