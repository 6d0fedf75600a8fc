//! `corenet demo` and `corenet bench`: two networkers on an embedded testnet, end to end
//! (DHT, UDX, Noise, protomux, hypercore replication, extensions).

use std::time::{Duration, Instant};

use corenet::extensions::{Binary, Extension, ExtensionOptions, RateLimit};
use corenet::{Configure, Corestore, Hypercore, Networker, NetworkerEvent, Peer, Testnet};
use corenet_replication::{CorestoreConfig, SyncPolicy};

use crate::CliError;

/// A directory under the system's temporary directory, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, CliError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("corenet-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(rt("temporary directory"))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Block size of the demo and benchmark cores (the `share` block size).
const BLOCK: usize = 64 * 1024;
/// Blocks appended per call (one signature each).
const BATCH: usize = 64;
/// Upper bound on every wait.
const WAIT: Duration = Duration::from_secs(60);

fn rt<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> CliError {
    move |e| CliError::Runtime(format!("{what}: {e}"))
}

async fn within<T>(
    what: &'static str,
    f: impl std::future::Future<Output = T>,
) -> Result<T, CliError> {
    tokio::time::timeout(WAIT, f)
        .await
        .map_err(|_| CliError::Runtime(format!("{what}: no result within {WAIT:?}")))
}

/// A local testnet and networkers on it.
struct Net {
    testnet: Testnet,
}

impl Net {
    async fn start(nodes: usize) -> Result<Net, CliError> {
        Ok(Net {
            testnet: Testnet::new(nodes, 0).await.map_err(rt("testnet"))?,
        })
    }

    async fn peer(&self, store: Corestore) -> Result<Networker, CliError> {
        Networker::builder(store)
            .bootstrap(self.testnet.bootstrap.clone())
            .build()
            .await
            .map_err(rt("networker"))
    }
}

/// Appends `bytes` of pseudo-random content (xorshift, seeded) to `core`.
fn fill(core: &Hypercore, bytes: usize, seed: u64) -> Result<(), CliError> {
    let mut x = seed | 1;
    let mut block = vec![0u8; BLOCK];
    let mut left = bytes;
    while left > 0 {
        let mut batch = Vec::with_capacity(BATCH);
        while batch.len() < BATCH && left > 0 {
            let n = left.min(BLOCK);
            for chunk in block[..n].chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
            }
            batch.push(bytes::Bytes::copy_from_slice(&block[..n]));
            left -= n;
        }
        core.append(batch).map_err(rt("append"))?;
    }
    Ok(())
}

/// Waits for the next `PeerAdd`.
async fn peer_added(events: &mut corenet::Events) -> Result<Peer, CliError> {
    within("peer-add", async {
        loop {
            match events.recv().await {
                Some(NetworkerEvent::PeerAdd(p)) => return Ok(p),
                Some(_) => {}
                None => return Err(CliError::Runtime("the networker closed".into())),
            }
        }
    })
    .await?
}

/// Downloads every block of `copy` (whose length it learns first) and checks that it equals
/// `core` block by block.
async fn download_and_verify(core: &Hypercore, copy: &Hypercore) -> Result<Duration, CliError> {
    let start = Instant::now();
    within("download", copy.wait_for_length(core.len()))
        .await?
        .map_err(rt("download"))?;
    let mut d = copy.download(0..core.len());
    within("download", d.done())
        .await?
        .map_err(rt("download"))?;
    let elapsed = start.elapsed();
    if copy.tree_hash() != core.tree_hash() {
        return Err(CliError::Runtime(
            "the copy's tree differs from the writer's".into(),
        ));
    }
    for i in 0..core.len() {
        if core.get(i).map_err(rt("read"))? != copy.get(i).map_err(rt("read"))? {
            return Err(CliError::Runtime(format!("block {i} differs")));
        }
    }
    Ok(elapsed)
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64().max(1e-9)
}

/// `corenet demo`.
pub(crate) async fn demo(size_mib: usize) -> Result<(), CliError> {
    let total = Instant::now();
    let net = Net::start(5).await?;
    println!(
        "testnet: 5 DHT nodes on 127.0.0.1, bootstrap {}",
        net.testnet.bootstrap[0]
    );

    let alice = net.peer(Corestore::in_memory()).await?;
    let bob = net.peer(Corestore::in_memory()).await?;
    println!("alice {}", alice.public_key());
    println!("bob   {}", bob.public_key());
    let chat_a = alice
        .register_extension("chat", ExtensionOptions::utf8())
        .await
        .map_err(rt("extension"))?;
    let chat_b = bob
        .register_extension("chat", ExtensionOptions::utf8())
        .await
        .map_err(rt("extension"))?;
    let mut inbox_a = chat_a.messages();
    let mut inbox_b = chat_b.messages();

    let start = Instant::now();
    let core = alice.corestore().get("demo").map_err(rt("core"))?;
    let bytes = size_mib * 1024 * 1024;
    {
        let core = core.clone();
        tokio::task::spawn_blocking(move || fill(&core, bytes, 0x5eed))
            .await
            .map_err(rt("append"))??;
    }
    println!(
        "alice wrote {size_mib} MiB into core {} ({} blocks, hashed and signed in {:.2} s)",
        core.key(),
        core.len(),
        start.elapsed().as_secs_f64()
    );

    let mut events_b = bob.events();
    let start = Instant::now();
    alice
        .configure(core.discovery_key(), Configure::default())
        .await
        .map_err(rt("announce"))?;
    println!(
        "alice announced discovery key {} ({:.0} ms)",
        core.discovery_key(),
        start.elapsed().as_secs_f64() * 1e3
    );
    let copy = bob.corestore().get_by_key(core.key()).map_err(rt("core"))?;
    let start = Instant::now();
    bob.configure(copy.discovery_key(), Configure::lookup_only())
        .await
        .map_err(rt("lookup"))?;
    let alice_seen = peer_added(&mut events_b).await?;
    println!(
        "bob found alice and connected over UDX from {} ({:.0} ms: lookup, UDX connect, Noise handshake)",
        alice_seen.remote_address,
        start.elapsed().as_secs_f64() * 1e3
    );

    let elapsed = download_and_verify(&core, &copy).await?;
    println!(
        "bob replicated {size_mib} MiB in {:.2} s: {:.0} MiB/s, every block verified against alice's signed tree",
        elapsed.as_secs_f64(),
        mib_s(copy.byte_len(), elapsed)
    );

    within(
        "chat",
        chat_b.send_when_open("hi alice, got your core", alice_seen.extension_peer()),
    )
    .await?
    .map_err(rt("chat"))?;
    let (line, from) = within("chat", inbox_a.recv())
        .await?
        .ok_or_else(|| CliError::Runtime("chat closed".into()))?;
    println!("alice got a chat line from {}: {line:?}", from.public_key());
    chat_a
        .send(&format!("you're welcome ({} blocks)", copy.len()), &from)
        .map_err(rt("chat"))?;
    let (line, _) = within("chat", inbox_b.recv())
        .await?
        .ok_or_else(|| CliError::Runtime("chat closed".into()))?;
    println!("bob got a chat line from alice: {line:?}");

    bob.close().await.map_err(rt("close"))?;
    alice.close().await.map_err(rt("close"))?;
    net.testnet.destroy().await;
    println!("done in {:.2} s", total.elapsed().as_secs_f64());
    Ok(())
}

/// Results of `corenet bench`.
#[derive(Debug, Default)]
struct Figures {
    connect_ms: Vec<f64>,
    replicate_mib_s: f64,
    replicate_mib: usize,
    ext_rtt_us: Vec<f64>,
    ext_msgs_per_s: f64,
    connections: usize,
    memory_kib: f64,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `corenet bench`: the end-to-end figures of BENCHMARKS.md.
pub(crate) async fn bench(
    json: bool,
    size_mib: usize,
    js: Option<std::path::PathBuf>,
    connections: usize,
) -> Result<(), CliError> {
    let net = Net::start(10).await?;
    let mut f = Figures {
        replicate_mib: size_mib,
        ..Figures::default()
    };

    // Join to connection: a fresh pair per round, the announcer flushed first.
    for round in 0..5u64 {
        let a = net.peer(Corestore::in_memory()).await?;
        let b = net.peer(Corestore::in_memory()).await?;
        let dk = Corestore::in_memory()
            .get(&format!("bench-{round}"))
            .map_err(rt("core"))?
            .discovery_key();
        a.configure(dk, Configure::announce_only())
            .await
            .map_err(rt("announce"))?;
        let mut events = b.events();
        let start = Instant::now();
        b.configure(dk, Configure::lookup_only())
            .await
            .map_err(rt("lookup"))?;
        peer_added(&mut events).await?;
        f.connect_ms.push(start.elapsed().as_secs_f64() * 1e3);
        a.close().await.map_err(rt("close"))?;
        b.close().await.map_err(rt("close"))?;
    }

    // Replication throughput, between stores on disk (not synced per commit, as JS's RocksDB
    // is not).
    let dir = TempDir::new()?;
    let on_disk = |name: &str| {
        Corestore::open_with(
            dir.0.join(name),
            CorestoreConfig::default().with_sync(SyncPolicy::Never),
        )
        .map_err(rt("corestore"))
    };
    let a = net.peer(on_disk("a")?).await?;
    let b = net.peer(on_disk("b")?).await?;
    let core = a.corestore().get("bench").map_err(rt("core"))?;
    {
        let core = core.clone();
        tokio::task::spawn_blocking(move || fill(&core, size_mib * 1024 * 1024, 7))
            .await
            .map_err(rt("append"))??;
    }
    let opts = || ExtensionOptions::<Binary>::binary().with_rate_limit(RateLimit::unlimited());
    let ext_a = a
        .register_extension("bench", opts())
        .await
        .map_err(rt("extension"))?;
    let ext_b = b
        .register_extension("bench", opts())
        .await
        .map_err(rt("extension"))?;
    let mut events = b.events();
    a.configure(core.discovery_key(), Configure::default())
        .await
        .map_err(rt("announce"))?;
    let copy = b.corestore().get_by_key(core.key()).map_err(rt("core"))?;
    b.configure(copy.discovery_key(), Configure::lookup_only())
        .await
        .map_err(rt("lookup"))?;
    let a_seen = peer_added(&mut events).await?;
    let elapsed = download_and_verify(&core, &copy).await?;
    f.replicate_mib_s = mib_s(copy.byte_len(), elapsed);

    // Extension messages over the same connection: round trips, then one-way throughput.
    let echo = {
        let mut inbox = ext_a.messages();
        let ext_a = ext_a.clone();
        tokio::spawn(async move {
            while let Some((m, from)) = inbox.recv().await {
                if m.first() == Some(&1) && ext_a.send_when_open(&m, &from).await.is_err() {
                    break;
                }
            }
        })
    };
    f.ext_rtt_us = ext_rtt(&ext_b, &a_seen, 1000).await?;
    f.ext_msgs_per_s = ext_throughput(&ext_b, &a_seen, &ext_a, 100_000).await?;
    echo.abort();
    a.close().await.map_err(rt("close"))?;
    b.close().await.map_err(rt("close"))?;
    drop((a, b, ext_a, ext_b, copy, core));
    f.memory_kib = memory_per_connection(&net, connections).await?;
    f.connections = connections;
    net.testnet.destroy().await;

    let ours = format!(
        "{{\"impl\":\"corenet\",\"connect_ms_median\":{:.2},\"replicate_mib\":{},\"replicate_mib_s\":{:.1},\"ext_rtt_us_median\":{:.1},\"ext_msgs_per_s\":{:.0},\"connections\":{},\"replicating_kib_per_connection\":{:.1}}}",
        median(&mut f.connect_ms),
        f.replicate_mib,
        f.replicate_mib_s,
        median(&mut f.ext_rtt_us),
        f.ext_msgs_per_s,
        f.connections,
        f.memory_kib
    );
    let theirs = match js {
        Some(dir) => Some(run_js(&dir, size_mib, connections)?),
        None => None,
    };
    if json {
        match theirs {
            Some(t) => println!("[{ours},{}]", t.trim()),
            None => println!("{ours}"),
        }
    } else {
        println!("corenet: {ours}");
        if let Some(t) = theirs {
            println!("js:      {}", t.trim());
        }
    }
    Ok(())
}

/// Median round trip of `n` sequential 64-byte messages echoed by the other side.
async fn ext_rtt(ext: &Extension<Binary>, to: &Peer, n: usize) -> Result<Vec<f64>, CliError> {
    let mut inbox = ext.messages();
    let mut msg = vec![0u8; 64];
    msg[0] = 1;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        within("extension", ext.send_when_open(&msg, to.extension_peer()))
            .await?
            .map_err(rt("extension"))?;
        within("extension", inbox.recv())
            .await?
            .ok_or_else(|| CliError::Runtime("extension closed".into()))?;
        out.push(start.elapsed().as_secs_f64() * 1e6);
    }
    Ok(out)
}

/// One-way messages per second: `n` 64-byte messages (not echoed), timed until the last
/// one arrived.
async fn ext_throughput(
    ext: &Extension<Binary>,
    to: &Peer,
    receiver: &Extension<Binary>,
    n: usize,
) -> Result<f64, CliError> {
    let mut inbox = receiver.messages();
    let counter = tokio::spawn(async move {
        let mut got = 0usize;
        while got < n {
            match inbox.recv().await {
                Some((m, _)) if m.first() == Some(&2) => got += 1,
                Some(_) => {}
                None => break,
            }
        }
        got
    });
    let mut msg = vec![0u8; 64];
    msg[0] = 2;
    let start = Instant::now();
    for _ in 0..n {
        within("extension", ext.send_when_open(&msg, to.extension_peer()))
            .await?
            .map_err(rt("extension"))?;
    }
    let got = within("extension", counter)
        .await?
        .map_err(rt("extension"))?;
    if got < n {
        return Err(CliError::Runtime(format!(
            "only {got} of {n} extension messages arrived"
        )));
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Runs the JS counterpart (`<dir>/bench/e2e.js`) and returns its JSON line.
fn run_js(dir: &std::path::Path, size_mib: usize, connections: usize) -> Result<String, CliError> {
    let out = std::process::Command::new("node")
        .arg("bench/e2e.js")
        .arg(size_mib.to_string())
        .arg(connections.to_string())
        .current_dir(dir)
        .output()
        .map_err(|e| CliError::Runtime(format!("cannot run node: {e}")))?;
    if !out.status.success() {
        return Err(CliError::Runtime(format!(
            "the JS benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .map(str::to_string)
        .ok_or_else(|| CliError::Runtime("the JS benchmark printed no JSON".into()))
}

/// This process's resident set, in KiB (Linux; 0 elsewhere).
fn rss_kib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0.0)
}

/// Server memory per replicating connection: a networker serving a 1 MiB core to
/// `n` networkers in a child process (`corenet bench-clients`), each holding a complete copy
/// and staying connected; the growth of this process's resident set divided by `n`, 3 s
/// after the last copy completed (idle connections release what the transfer grew after 1 s).
async fn memory_per_connection(net: &Net, n: usize) -> Result<f64, CliError> {
    let server = net.peer(Corestore::in_memory()).await?;
    let core = server.corestore().get("memory").map_err(rt("core"))?;
    fill(&core, 1024 * 1024, 3)?;
    server
        .configure(core.discovery_key(), Configure::announce_only())
        .await
        .map_err(rt("announce"))?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib();
    let exe = std::env::current_exe().map_err(rt("bench-clients"))?;
    let mut child = tokio::process::Command::new(exe)
        .arg("--bootstrap")
        .arg(net.testnet.bootstrap[0].to_string())
        .arg("bench-clients")
        .arg(core.key().to_string())
        .arg(n.to_string())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(rt("bench-clients"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| CliError::Runtime("bench-clients: no stdout".into()))?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Ok(Some(l)) = lines.next_line().await {
            if l == "ready" {
                return Ok(());
            }
        }
        Err(CliError::Runtime("bench-clients ended early".into()))
    })
    .await
    .map_err(|_| CliError::Runtime("bench-clients: not ready within 120 s".into()))??;
    within("connections", async {
        while server.peers().len() < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib();
    let _ = child.kill().await;
    server.close().await.map_err(rt("close"))?;
    Ok((after - before) / n as f64)
}

/// `corenet bench-clients`: `count` networkers replicate `key` completely and stay.
pub(crate) async fn bench_clients(
    key: corenet::PublicKey,
    count: usize,
    bootstrap: Vec<std::net::SocketAddrV4>,
) -> Result<(), CliError> {
    let mut nets = Vec::with_capacity(count);
    for _ in 0..count {
        let store = Corestore::in_memory();
        let copy = store.get_by_key(key).map_err(rt("core"))?;
        let net = Networker::builder(store)
            .bootstrap(bootstrap.clone())
            .host(std::net::Ipv4Addr::LOCALHOST)
            .build()
            .await
            .map_err(rt("networker"))?;
        net.configure(copy.discovery_key(), Configure::lookup_only())
            .await
            .map_err(rt("lookup"))?;
        nets.push((net, copy));
    }
    for (_, copy) in &nets {
        within("download", copy.wait_for_length(1))
            .await?
            .map_err(rt("download"))?;
        let len = copy.len();
        within("download", copy.download(0..len).done())
            .await?
            .map_err(rt("download"))?;
    }
    let stop = crate::dht::shutdown_signal();
    println!("ready");
    stop.await;
    Ok(())
}
