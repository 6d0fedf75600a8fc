//! Encrypted connections through the DHT (Noise IK via PEER_HANDSHAKE, then a secret stream
//! over UDX): Rust to Rust, Rust to JS hyperdht and JS to Rust, a firewall that refuses, and
//! an unknown key that fails in bounded time.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use corenet_dht::{Dht, DhtConfig, Testnet};
use corenet_noise::KeyPair;
use corenet_tests::{pattern, JsPeer};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(30);

async fn echo_server(mut server: corenet_dht::Server) {
    while let Some(conn) = server.accept().await {
        tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(conn.stream);
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        });
    }
}

async fn exchange(conn: corenet_dht::Connection, data: &[u8]) -> Vec<u8> {
    let (mut r, mut w) = tokio::io::split(conn.stream);
    let d = data.to_vec();
    let writer = tokio::spawn(async move {
        w.write_all(&d).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, r.read_to_end(&mut got))
        .await
        .expect("echo in time")
        .unwrap();
    writer.await.unwrap();
    got
}

/// A Rust peer on the DHT's defaults (firewalled until proven otherwise, adaptive), as an
/// app runs it.
async fn node(bootstrap: Vec<SocketAddrV4>) -> Dht {
    spawn(DhtConfig::default().with_bootstrap(bootstrap)).await
}

/// A Rust peer that behaves as if behind a NAT on loopback: its quick reachability check is
/// off (it stays firewalled, as JS peers on a loopback testnet do) and the LAN shortcut is
/// off (same-host peers would otherwise take it): connections to it and from it go through
/// the holepunch. Only the Rust side is made harder; the JS side runs its defaults.
async fn natted_node(bootstrap: Vec<SocketAddrV4>) -> Dht {
    spawn(
        DhtConfig::default()
            .with_bootstrap(bootstrap)
            .with_quick_firewall(false)
            .with_lan(false),
    )
    .await
}

async fn spawn(config: DhtConfig) -> Dht {
    let d = Dht::spawn(config.with_host(std::net::Ipv4Addr::LOCALHOST))
        .await
        .unwrap();
    d.bootstrapped().await.unwrap();
    d
}

#[tokio::test]
async fn rust_to_rust_through_the_dht() {
    let testnet = Testnet::new(6, 0).await.unwrap();
    let server_node = node(testnet.bootstrap.clone()).await;
    let client_node = node(testnet.bootstrap.clone()).await;
    let server_kp = KeyPair::from_seed([0x41; 32]);
    let refused = KeyPair::from_seed([0x43; 32]);
    let refused_pk = refused.public_key();
    let firewall: corenet_dht::Firewall =
        std::sync::Arc::new(move |pk, _addr| Box::pin(async move { pk != refused_pk }));
    let server = tokio::time::timeout(WAIT, server_node.listen(&server_kp, Some(firewall)))
        .await
        .unwrap()
        .unwrap();
    assert!(!server.relay_addresses().is_empty());
    tokio::spawn(echo_server(server));

    let client_kp = KeyPair::from_seed([0x42; 32]);
    let started = Instant::now();
    let conn = tokio::time::timeout(
        WAIT,
        client_node.connect(&client_kp, server_kp.public_key(), vec![]),
    )
    .await
    .unwrap()
    .unwrap();
    println!("connect took {:?}", started.elapsed());
    assert_eq!(conn.stream.remote_public_key(), server_kp.public_key());
    let data = pattern(1 << 20, 3, 0);
    assert_eq!(exchange(conn, &data).await, data);

    // The firewall refuses this client: no answer, so the connect fails.
    let r = tokio::time::timeout(
        WAIT,
        client_node.connect(&refused, server_kp.public_key(), vec![]),
    )
    .await
    .unwrap();
    assert!(r.is_err(), "a refused client must not connect");

    // An unknown key fails in bounded time.
    let started = Instant::now();
    let r = tokio::time::timeout(
        WAIT,
        client_node.connect(
            &client_kp,
            KeyPair::from_seed([0x44; 32]).public_key(),
            vec![],
        ),
    )
    .await
    .unwrap();
    assert!(
        matches!(
            r,
            Err(corenet_dht::Error::Connect(
                corenet_dht::hyper::ConnectError::PeerNotFound
            ))
        ),
        "{r:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(25));
    testnet.destroy().await;
}

#[tokio::test]
async fn rust_client_to_js_server_and_js_client_to_rust_server() {
    let mut js = JsPeer::spawn_interactive("dht-peer.js", &["testnet", "5"]);
    let ready = js.expect("ready", WAIT).await;
    let bootstrap: Vec<SocketAddrV4> = ready["bootstrap"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().parse().unwrap())
        .collect();
    let rust = node(bootstrap.clone()).await;

    // Rust client -> JS server.
    let js_server = KeyPair::from_seed([0x51; 32]);
    js.request(
        json!({"cmd": "listen", "seed": hex::encode([0x51; 32])}),
        "listening",
        WAIT,
    )
    .await;
    let client_kp = KeyPair::from_seed([0x52; 32]);
    let conn = tokio::time::timeout(
        WAIT,
        rust.connect(&client_kp, js_server.public_key(), vec![]),
    )
    .await
    .unwrap()
    .unwrap();
    let ev = js.expect("connection", WAIT).await;
    assert_eq!(
        ev["remotePublicKey"],
        json!(client_kp.public_key().to_hex())
    );
    let data = pattern(256 * 1024, 9, 0);
    assert_eq!(exchange(conn, &data).await, data, "JS echoed our bytes");

    // JS client -> Rust server.
    let rust_server = KeyPair::from_seed([0x53; 32]);
    let server = rust.listen(&rust_server, None).await.unwrap();
    tokio::spawn(echo_server(server));
    let msg = hex::encode(pattern(64 * 1024, 5, 0));
    js.command(json!({"cmd": "connect", "publicKey": rust_server.public_key().to_hex(), "seed": hex::encode([0x54; 32]), "data": msg})).await;
    let ev = js.expect("connected", WAIT).await;
    assert_eq!(
        ev["remotePublicKey"],
        json!(rust_server.public_key().to_hex())
    );
    let ev = js.expect("echo", WAIT).await;
    assert_eq!(
        ev["data"],
        json!(msg),
        "our server echoed the JS client's bytes"
    );
    rust.destroy().await;
}

#[tokio::test]
async fn js_server_refuses_a_rust_client_by_firewall() {
    let mut js = JsPeer::spawn_interactive("dht-peer.js", &["testnet", "4"]);
    let ready = js.expect("ready", WAIT).await;
    let bootstrap: Vec<SocketAddrV4> = ready["bootstrap"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().parse().unwrap())
        .collect();
    let rust = node(bootstrap).await;
    let js_server = KeyPair::from_seed([0x61; 32]);
    let client_kp = KeyPair::from_seed([0x62; 32]);
    js.request(json!({"cmd": "listen", "seed": hex::encode([0x61; 32]), "refuse": client_kp.public_key().to_hex()}), "listening", WAIT).await;
    let r = tokio::time::timeout(
        WAIT,
        rust.connect(&client_kp, js_server.public_key(), vec![]),
    )
    .await
    .unwrap();
    assert!(
        r.is_err(),
        "the JS firewall refused us: {:?}",
        r.map(|c| c.remote_address)
    );
    rust.destroy().await;
}

/// A default-option JS peer and a firewalled Rust peer on loopback connect both ways through
/// the holepunch (probe round, punch round, probes), not a direct path.
#[tokio::test]
async fn holepunch_on_loopback_with_a_default_js_peer_both_ways() {
    // A testnet whose nodes answer no reachability check: both peers stay firewalled, as
    // behind NATs (the JS peer on hyperdht's defaults, the Rust one without the LAN
    // shortcut, which same-host peers would take).
    let testnet = Testnet::behind_nats(5).await.unwrap();
    let bootstrap = testnet.bootstrap.clone();
    let boot = bootstrap[0].to_string();
    let mut js = JsPeer::spawn_interactive("dht-peer.js", &["node", &boot]);
    js.expect("ready", WAIT).await;
    let rust = natted_node(bootstrap.clone()).await;
    let nat = rust.nat().await.unwrap();
    assert!(nat.firewalled, "the Rust peer stays firewalled: {nat:?}");

    // Rust client -> JS server.
    js.request(
        json!({"cmd": "listen", "seed": hex::encode([0x71; 32])}),
        "listening",
        WAIT,
    )
    .await;
    let js_server = KeyPair::from_seed([0x71; 32]);
    let client_kp = KeyPair::from_seed([0x72; 32]);
    let started = Instant::now();
    let conn = tokio::time::timeout(
        WAIT,
        rust.connect(&client_kp, js_server.public_key(), vec![]),
    )
    .await
    .expect("connect in time")
    .expect("connected");
    println!("rust -> js: {} in {:?}", conn.path, started.elapsed());
    assert_eq!(conn.path, corenet_dht::PathKind::Holepunch);
    let data = pattern(256 * 1024, 11, 0);
    assert_eq!(exchange(conn, &data).await, data, "JS echoed our bytes");
    let stats = rust.info().await.unwrap().punches;
    // A consistent pair often connects on the server's fast-mode answer to our first probe,
    // before a strategy runs (JS counts those in no strategy either).
    assert!(stats.succeeded >= 1 && stats.probes >= 1, "{stats:?}");

    // JS client -> Rust server.
    let rust_server = KeyPair::from_seed([0x73; 32]);
    let mut server = rust.listen(&rust_server, None).await.unwrap();
    let msg = hex::encode(pattern(64 * 1024, 13, 0));
    js.command(json!({"cmd": "connect", "publicKey": rust_server.public_key().to_hex(), "seed": hex::encode([0x74; 32]), "data": msg})).await;
    let conn = tokio::time::timeout(WAIT, server.accept())
        .await
        .expect("a connection in time")
        .expect("a connection");
    println!("js -> rust: {}", conn.path);
    assert_eq!(conn.path, corenet_dht::PathKind::Holepunch);
    tokio::spawn(async move {
        let (mut r, mut w) = tokio::io::split(conn.stream);
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    });
    js.expect("connected", WAIT).await;
    let ev = js.expect("echo", WAIT).await;
    assert_eq!(ev["data"], json!(msg));
    // Every pool socket is given back once the punches are over.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = rust.info().await.unwrap();
        if info.pool_sockets == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pool sockets left: {}",
            info.pool_sockets
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rust.destroy().await;
    testnet.destroy().await;
}
