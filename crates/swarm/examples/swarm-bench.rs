//! Swarm benchmarks (BENCHMARKS.md).
//!
//! - `swarm-bench latency [rounds]`: a 10-node testnet, a server swarm on a topic, then per
//!   round a fresh client swarm joins; prints the median time from `join` to the connection on
//!   the client and on the server side.
//! - `swarm-bench memory [connections]`: a server swarm in this process, the clients in a
//!   child process (`swarm-bench clients <bootstrap> <topic> <n>`); prints the server
//!   process's resident memory per connection.
//!
//! Each prints one JSON line. JS: `node tests/interop/bench/swarm.js latency|memory`.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use corenet_codec::Topic;
use corenet_dht::Testnet;
use corenet_swarm::{JoinOptions, Swarm};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    s.split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0)
        * 4
}

type R<T> = Result<T, Box<dyn std::error::Error>>;

async fn latency(rounds: usize) -> R<()> {
    let testnet = Testnet::new(10, 0).await?;
    let topic = Topic::from_name("swarm bench latency");
    let server = Swarm::builder()
        .bootstrap(testnet.bootstrap.clone())
        .build()
        .await?;
    let mut server_conns = server.connections();
    server
        .join(topic, JoinOptions::server())
        .await?
        .flushed()
        .await?;
    let (mut client_ms, mut server_ms) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let client = Swarm::builder()
            .bootstrap(testnet.bootstrap.clone())
            .build()
            .await?;
        let mut conns = client.connections();
        let t = Instant::now();
        client.join(topic, JoinOptions::client()).await?;
        let at =
            |r: Option<corenet_swarm::Connection>| r.map(|c| (c, t.elapsed().as_secs_f64() * 1e3));
        let (a, b) = tokio::join!(async { at(conns.recv().await) }, async {
            at(server_conns.recv().await)
        });
        let ((a, ta), (b, tb)) = (
            a.ok_or("no client connection")?,
            b.ok_or("no server connection")?,
        );
        client_ms.push(ta);
        server_ms.push(tb);
        drop((a, b));
        client.destroy().await;
    }
    println!(
        "{{\"implementation\":\"rust\",\"bench\":\"latency\",\"nodes\":10,\"rounds\":{rounds},\"joinToConnectionClientMs\":{:.2},\"joinToConnectionServerMs\":{:.2}}}",
        median(client_ms),
        median(server_ms)
    );
    server.destroy().await;
    testnet.destroy().await;
    Ok(())
}

async fn memory(n: usize) -> R<()> {
    let testnet = Testnet::new(10, 0).await?;
    let topic = Topic::from_name("swarm bench memory");
    let server = Swarm::builder()
        .bootstrap(testnet.bootstrap.clone())
        .max_peers(n * 2)
        .build()
        .await?;
    let mut conns = server.connections();
    server
        .join(topic, JoinOptions::server())
        .await?
        .flushed()
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib();
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .args([
            "clients",
            &testnet.bootstrap[0].to_string(),
            &topic.to_hex(),
            &n.to_string(),
        ])
        .stdin(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while held.len() < n && Instant::now() < deadline {
        if let Ok(Some(c)) = tokio::time::timeout(Duration::from_secs(5), conns.recv()).await {
            held.push(c);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib();
    println!(
        "{{\"implementation\":\"rust\",\"bench\":\"memory\",\"connections\":{},\"kibPerConnection\":{:.1}}}",
        held.len(),
        (after.saturating_sub(before)) as f64 / held.len().max(1) as f64
    );
    let _ = child.kill().await;
    server.destroy().await;
    testnet.destroy().await;
    Ok(())
}

async fn clients(bootstrap: SocketAddrV4, topic: Topic, n: usize) -> R<()> {
    let mut swarms = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..n {
        let s = Swarm::builder().bootstrap(vec![bootstrap]).build().await?;
        let mut rx = s.connections();
        s.join(topic, JoinOptions::client()).await?;
        swarms.push(s);
        tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                std::mem::forget(c); // hold it open until the process ends
            }
        });
    }
    conns.push(());
    // Stay until the parent kills us.
    tokio::time::sleep(Duration::from_secs(600)).await;
    Ok(())
}

fn main() -> R<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match args.first().map(String::as_str) {
            Some("memory") => memory(args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100)).await,
            Some("clients") => {
                let boot: SocketAddrV4 = args.get(1).ok_or("bootstrap")?.parse()?;
                let topic = Topic::from_hex(args.get(2).ok_or("topic")?)?;
                clients(
                    boot,
                    topic,
                    args.get(3).and_then(|a| a.parse().ok()).unwrap_or(100),
                )
                .await
            }
            _ => latency(args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20)).await,
        }
    })
}
