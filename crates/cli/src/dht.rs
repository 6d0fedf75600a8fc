//! DHT commands: `testnet`, `announce`, `lookup`.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::time::Duration;

use corenet_codec::{PublicKey, Topic};
use corenet_dht::hyper::nat::NatType;
use corenet_dht::hyper::{ConnectOptions, ListenOptions};
use corenet_dht::relay::RelayServer;
use corenet_dht::{Dht, DhtConfig, Testnet};
use corenet_noise::KeyPair;

use crate::CliError;

/// How often `announce` refreshes its record (records live 20 minutes on the nodes).
const REANNOUNCE_EVERY: Duration = Duration::from_secs(5 * 60);

/// A topic from the command line: 64 hex characters as is, anything else hashed (and said).
pub(crate) fn topic(arg: &str) -> Topic {
    match Topic::from_hex(arg) {
        Ok(t) => t,
        Err(_) => {
            let t = Topic::from_name(arg);
            eprintln!("topic {arg:?} is not 64 hex characters: using BLAKE2b-256 of it, {t}");
            t
        }
    }
}

/// `--bootstrap` values, resolved; the public bootstrap nodes when none are given.
pub(crate) fn parse_bootstrap(args: &[String]) -> Result<Vec<SocketAddrV4>, CliError> {
    if args.is_empty() {
        return Ok(corenet_dht::DEFAULT_BOOTSTRAP.to_vec());
    }
    let mut out = Vec::new();
    for a in args {
        let addrs = a
            .to_socket_addrs()
            .map_err(|e| CliError::Usage(format!("bad --bootstrap {a}: {e}")))?;
        let v4 = addrs.filter_map(|s| match s {
            SocketAddr::V4(v) => Some(v),
            SocketAddr::V6(_) => None,
        });
        let before = out.len();
        out.extend(v4.take(1));
        if out.len() == before {
            return Err(CliError::Usage(format!(
                "--bootstrap {a} has no IPv4 address"
            )));
        }
    }
    Ok(out)
}

/// `--behind-nat`: this process's DHT node stays firewalled (no quick reachability check)
/// and uses no LAN shortcut, so that peers on one machine connect through the holepunch.
pub(crate) static BEHIND_NAT: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Whether `--behind-nat` was given.
pub(crate) fn behind_nat() -> bool {
    BEHIND_NAT.load(std::sync::atomic::Ordering::Relaxed)
}

/// A DHT node for one command, bootstrapped.
pub(crate) async fn node(host: Ipv4Addr, bootstrap: Vec<SocketAddrV4>) -> Result<Dht, CliError> {
    let shown: Vec<String> = bootstrap.iter().map(|b| b.to_string()).collect();
    let mut config = DhtConfig::default()
        .with_host(host)
        .with_bootstrap(bootstrap);
    if behind_nat() {
        config = config.with_quick_firewall(false).with_lan(false);
    }
    let dht = Dht::spawn(config).await.map_err(CliError::runtime)?;
    tokio::time::timeout(Duration::from_secs(30), dht.bootstrapped())
        .await
        .map_err(|_| CliError::Runtime("DHT bootstrap timed out".into()))?
        .map_err(CliError::runtime)?;
    let info = dht.info().await.map_err(CliError::runtime)?;
    if info.boot_replies == 0 {
        // Without this a lookup would end empty and a connect say "peer not found", as if
        // the DHT had answered.
        return Err(CliError::Runtime(format!(
            "no DHT node answered (bootstrap {}): check --bootstrap and the network",
            if shown.is_empty() {
                "none".to_string()
            } else {
                shown.join(", ")
            }
        )));
    }
    Ok(dht)
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed by this call, not when the
/// future is first polled: call it before printing the line that tells a script the command
/// is ready (`joined`, `announced`, `ready`...), so that a signal sent right after that line
/// is handled instead of killing the process (the CLI soak saw it happen).
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let handlers = {
        use tokio::signal::unix::{signal, SignalKind};
        signal(SignalKind::terminate())
            .and_then(|t| Ok((t, signal(SignalKind::interrupt())?)))
            .ok()
    };
    async move {
        #[cfg(unix)]
        if let Some((mut term, mut int)) = handlers {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `corenet testnet`.
pub(crate) async fn testnet(nodes: usize, host: Ipv4Addr, port: u16) -> Result<(), CliError> {
    if nodes == 0 {
        return Err(CliError::Usage("--nodes must be at least 1".into()));
    }
    let t = if behind_nat() {
        if !host.is_loopback() || port != 0 {
            return Err(CliError::Usage(
                "testnet --behind-nat runs on 127.0.0.1 on any port".into(),
            ));
        }
        Testnet::behind_nats(nodes).await
    } else {
        Testnet::with_host(nodes, host, port).await
    }
    .map_err(CliError::runtime)?;
    let stop = shutdown_signal();
    for b in &t.bootstrap {
        println!("bootstrap {b}");
    }
    println!("ready");
    stop.await;
    t.destroy().await;
    Ok(())
}

/// `corenet announce`.
pub(crate) async fn announce(
    topic: Topic,
    host: Ipv4Addr,
    bootstrap: Vec<SocketAddrV4>,
    key_pair: KeyPair,
) -> Result<(), CliError> {
    let dht = node(host, bootstrap).await?;
    dht.announce(topic.to_bytes(), &key_pair, Vec::new())
        .await
        .map_err(CliError::runtime)?;
    let stop = shutdown_signal();
    println!("announced {topic} {}", key_pair.public_key());
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(REANNOUNCE_EVERY) => {
                if let Err(e) = dht.announce(topic.to_bytes(), &key_pair, Vec::new()).await {
                    eprintln!("re-announce failed (will retry): {e}");
                }
            }
        }
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        dht.unannounce(topic.to_bytes(), &key_pair),
    )
    .await;
    dht.destroy().await;
    Ok(())
}

/// `corenet lookup`.
pub(crate) async fn lookup(
    topic: Topic,
    host: Ipv4Addr,
    bootstrap: Vec<SocketAddrV4>,
) -> Result<(), CliError> {
    let dht = node(host, bootstrap).await?;
    let (mut rx, done) = dht
        .lookup(topic.to_bytes())
        .await
        .map_err(CliError::runtime)?;
    let mut seen = HashSet::new();
    while let Some(item) = rx.recv().await {
        for p in item.peers {
            if seen.insert(p.public_key) {
                println!("peer {}", p.public_key);
            }
        }
    }
    let _ = done.await;
    dht.destroy().await;
    Ok(())
}

/// `corenet listen` over the DHT: announced for find-peer; pipes the first connection, or
/// echoes every connection with `echo`. Each connection prints
/// `connection <public-key> <address> <path>` on stderr.
pub(crate) async fn listen(
    host: Ipv4Addr,
    bootstrap: Vec<SocketAddrV4>,
    key_pair: KeyPair,
    echo: bool,
    relay_through: Option<PublicKey>,
) -> Result<(), CliError> {
    let dht = node(host, bootstrap).await?;
    let options = ListenOptions {
        relay_through,
        ..Default::default()
    };
    let mut server = dht
        .listen_with(&key_pair, None, options)
        .await
        .map_err(CliError::runtime)?;
    println!("listening {}", key_pair.public_key());
    loop {
        let conn = tokio::select! {
            c = server.accept() => c,
            _ = shutdown_signal() => None,
        };
        let Some(conn) = conn else { break };
        let remote = conn.stream.remote_public_key();
        eprintln!("connection {remote} {} {}", conn.remote_address, conn.path);
        if echo {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                // The relay link (if any) lives as long as the connection.
                let _relay = conn.relay;
                let (mut r, mut w) = tokio::io::split(conn.stream);
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        } else {
            eprintln!("connected {remote}");
            let _relay = conn.relay;
            let r = crate::tcp::pipe(conn.stream).await;
            server.close().await;
            dht.destroy().await;
            return r;
        }
    }
    server.close().await;
    dht.destroy().await;
    Ok(())
}

/// `corenet connect <public-key>` over the DHT: prints `connected <public-key>` and
/// `path <direct|lan|holepunch|relay> <ms>` (time from the connect call to the open
/// stream) on stderr, then pipes stdin/stdout.
pub(crate) async fn connect(
    host: Ipv4Addr,
    bootstrap: Vec<SocketAddrV4>,
    key_pair: KeyPair,
    remote: PublicKey,
    relay_through: Option<PublicKey>,
) -> Result<(), CliError> {
    let dht = node(host, bootstrap).await?;
    let options = ConnectOptions {
        relay_through,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let conn = dht
        .connect_with(&key_pair, remote, options)
        .await
        .map_err(|e| match e {
            corenet_dht::Error::Connect(c) => CliError::Runtime(format!("{c} ({})", c.code())),
            other => CliError::runtime(other),
        })?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    eprintln!("connected {}", conn.stream.remote_public_key());
    eprintln!("path {} {ms:.1}", conn.path);
    // A relayed connection moves to a punched path when one opens later: the node then
    // drops the relay link. Say so, once.
    let watch = conn.relay.clone().map(|link| {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let relayed = link
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .is_some();
                if !relayed {
                    let ms = started.elapsed().as_secs_f64() * 1000.0;
                    eprintln!("path holepunch {ms:.1} (upgraded from relay)");
                    return;
                }
            }
        })
    });
    let _relay = conn.relay;
    let r = crate::tcp::pipe(conn.stream).await;
    if let Some(w) = watch {
        w.abort();
    }
    dht.destroy().await;
    r
}

/// `corenet nat`: samples this machine's NAT on a fresh socket through the DHT.
pub(crate) async fn nat(host: Ipv4Addr, bootstrap: Vec<SocketAddrV4>) -> Result<(), CliError> {
    let dht = node(host, bootstrap).await?;
    let sample = dht.sample_nat().await.map_err(CliError::runtime)?;
    let status = dht.nat().await.map_err(CliError::runtime)?;
    // The dht-rpc check knows OPEN (reachable) better than a per-socket sample can.
    let nat = if status.nat == NatType::Open {
        NatType::Open
    } else {
        sample.nat
    };
    let addr = match nat {
        NatType::Open => status.public_address,
        _ => sample.addresses.first().copied(),
    };
    match addr {
        Some(a) => println!("nat {nat} {a}"),
        None => println!("nat {nat}"),
    }
    dht.destroy().await;
    Ok(())
}

/// `corenet relay`: a blind relay on the DHT until SIGINT/SIGTERM.
pub(crate) async fn relay(
    host: Ipv4Addr,
    bootstrap: Vec<SocketAddrV4>,
    key_pair: KeyPair,
) -> Result<(), CliError> {
    let dht = node(host, bootstrap).await?;
    let relay = RelayServer::start(dht.clone(), key_pair)
        .await
        .map_err(CliError::runtime)?;
    let stop = shutdown_signal();
    println!("relay {}", relay.public_key());
    stop.await;
    let s = relay.stats();
    eprintln!(
        "relayed: {} sessions, {} pairings matched, {} cancelled",
        s.sessions_accepted, s.pairings_matched, s.pairings_cancelled
    );
    relay.close().await;
    dht.destroy().await;
    Ok(())
}
