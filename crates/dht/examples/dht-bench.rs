//! DHT latency on a local testnet: announce, lookup and connect, median of several runs.
//!
//! `cargo run --release -p corenet-dht --example dht-bench -- [nodes] [rounds]` prints one
//! JSON line. The JS counterpart is `node tests/interop/bench/dht.js [nodes] [rounds]`.

use std::time::{Duration, Instant};

use corenet_dht::{DhtConfig, Testnet};
use corenet_noise::KeyPair;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let nodes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let testnet = Testnet::new(nodes, 0).await?;
        // Persistent and reachable on purpose, as in the JS counterpart
        // (tests/interop/bench/dht.js): latency between two reachable nodes, connect over a
        // direct path.
        let cfg = || DhtConfig::default().with_ephemeral(Some(false)).with_firewalled(false);
        let a = testnet.create_node(cfg()).await?;
        let b = testnet.create_node(cfg()).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (mut announce, mut lookup, mut connect) = (Vec::new(), Vec::new(), Vec::new());
        let server_kp = KeyPair::generate();
        let mut server = a.listen(&server_kp, None).await?;
        tokio::spawn(async move { while server.accept().await.is_some() {} });
        for i in 0..rounds {
            let topic = corenet_codec::hash::blake2b_256(format!("bench {i}").as_bytes());
            let kp = KeyPair::generate();
            let t = Instant::now();
            a.announce(topic, &kp, vec![]).await?;
            announce.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let (mut rx, done) = b.lookup(topic).await?;
            while rx.recv().await.is_some() {}
            let _ = done.await;
            lookup.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let conn = b.connect(&KeyPair::generate(), server_kp.public_key(), vec![]).await?;
            connect.push(t.elapsed().as_secs_f64() * 1e3);
            drop(conn);
        }
        println!(
            "{{\"implementation\":\"rust\",\"nodes\":{nodes},\"rounds\":{rounds},\"announceMs\":{:.2},\"lookupMs\":{:.2},\"connectMs\":{:.2}}}",
            median(announce),
            median(lookup),
            median(connect)
        );
        testnet.destroy().await;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
