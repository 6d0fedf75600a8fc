//! Replication throughput between two processes over a secret stream over TCP on
//! 127.0.0.1 (BENCHMARKS.md, "replication"). The modes match
//! `tests/interop/bench/replication.js`, so Rust and JS serve and fetch for each other:
//!
//! ```text
//! replicate-bench serve <port> <blocks> <size>   # prints {"event":"listening","port","key"}
//! replicate-bench fetch <port> <key> <blocks>    # prints {"event":"fetched",...,"mibps"}
//! replicate-bench                                # Rust -> Rust, 64 KiB and 4 KiB blocks
//! ```
//!
//! Block `i` is `size` bytes of `(i * 31 + 7) & 255`. Both stores are on disk in temporary
//! directories with the default durability (one `fdatasync` per committed batch); set
//! `CORENET_BENCH_SYNC=never` to leave flushing to the OS, `CORENET_BENCH_STORAGE=memory` to
//! keep the cores in memory, `CORENET_BENCH_INFLIGHT=<n>` to change the requests in flight per
//! peer. `TOTAL_MIB` (default 64) sets the core size of the no-argument run.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Instant;

use corenet_codec::PublicKey;
use corenet_noise::{Config, KeyPair, SecretStream};
use corenet_replication::{Corestore, CorestoreConfig, ReplicatorConfig, SyncPolicy};
use tokio::net::{TcpListener, TcpStream};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn block(i: u64, size: usize) -> Vec<u8> {
    vec![(i.wrapping_mul(31).wrapping_add(7) & 255) as u8; size]
}

fn store(dir: &std::path::Path) -> Res<Corestore> {
    let sync = match std::env::var("CORENET_BENCH_SYNC").as_deref() {
        Ok("never") => SyncPolicy::Never,
        _ => SyncPolicy::Always,
    };
    let mut config = CorestoreConfig::default().with_sync(sync);
    if let Some(n) = std::env::var("CORENET_BENCH_INFLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config = config.with_replicator(ReplicatorConfig::default().with_max_inflight(n));
    }
    if std::env::var("CORENET_BENCH_STORAGE").as_deref() == Ok("memory") {
        return Ok(Corestore::in_memory_with(config));
    }
    Ok(Corestore::open_with(dir, config)?)
}

async fn serve(port: u16, blocks: u64, size: usize) -> Res<()> {
    let dir = tempfile::tempdir()?;
    let store = store(dir.path())?;
    let core = store.get("bench")?;
    let mut i = 0;
    while i < blocks {
        let end = (i + 256).min(blocks);
        core.append((i..end).map(|j| block(j, size)))?;
        i = end;
    }
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "{}",
        serde_json::json!({
            "event": "listening",
            "port": listener.local_addr()?.port(),
            "key": core.key().to_hex(),
        })
    );
    // Serve until stdin closes.
    let stop = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin()
            .read_line(&mut sink)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
    });
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let (tcp, _) = accepted?;
                tcp.set_nodelay(true)?;
                let store = store.clone();
                tokio::spawn(async move {
                    match SecretStream::new(tcp, false, &KeyPair::generate(), Config::default()).await {
                        Ok(s) => {
                            if let Ok(mux) = store.replicate_stream(s) {
                                let _ = mux.closed().await;
                            }
                        }
                        Err(e) => eprintln!("handshake failed: {e}"),
                    }
                });
            }
        }
    }
    drop(core);
    Ok(())
}

async fn fetch(port: u16, key: &str, blocks: u64) -> Res<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let store = store(dir.path())?;
    let core = store.get_by_key(PublicKey::from_hex(key)?)?;
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let stream = SecretStream::new(tcp, true, &KeyPair::generate(), Config::default()).await?;
    let mux = store.replicate_stream(stream)?;
    let t = Instant::now();
    let mut d = core.download(0..blocks);
    d.done().await?;
    let secs = t.elapsed().as_secs_f64();
    let mut bytes = 0u64;
    for i in 0..blocks {
        let b = core.get(i)?.ok_or("missing block")?;
        if b[..] != block(i, b.len())[..] {
            return Err(format!("block {i} differs").into());
        }
        bytes += b.len() as u64;
    }
    mux.close();
    Ok(serde_json::json!({
        "event": "fetched",
        "blocks": blocks,
        "bytes": bytes,
        "secs": secs,
        "mibps": bytes as f64 / secs / f64::from(1 << 20),
    }))
}

/// Rust -> Rust: this binary serves in a child process and fetches in this one.
async fn rust_to_rust(size: usize, total_mib: u64) -> Res<f64> {
    let blocks = (total_mib << 20) / size as u64;
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(["serve", "0", &blocks.to_string(), &size.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(out).read_line(&mut line)?;
    let listening: serde_json::Value = serde_json::from_str(&line)?;
    let port = listening["port"].as_u64().ok_or("no port")? as u16;
    let key = listening["key"].as_str().ok_or("no key")?.to_string();
    let fetched = fetch(port, &key, blocks).await?;
    drop(child.stdin.take());
    child.wait()?;
    Ok(fetched["mibps"].as_f64().unwrap_or(0.0))
}

fn main() -> Res<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    rt.block_on(async move {
        match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["serve", port, blocks, size] => serve(port.parse()?, blocks.parse()?, size.parse()?).await,
            ["fetch", port, key, blocks] => {
                let out = fetch(port.parse()?, key, blocks.parse()?).await?;
                println!("{out}");
                Ok(())
            }
            [] => {
                let total: u64 = std::env::var("TOTAL_MIB")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(64);
                let a = rust_to_rust(65536, total).await?;
                let b = rust_to_rust(4096, total).await?;
                println!(
                    "{}",
                    serde_json::json!({
                        "totalMiB": total,
                        "rustToRust64KiB": a.round(),
                        "rustToRust4KiB": b.round(),
                    })
                );
                Ok(())
            }
            _ => Err("usage: replicate-bench [serve <port> <blocks> <size> | fetch <port> <key> <blocks>]".into()),
        }
    })
}
