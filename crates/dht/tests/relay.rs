//! Blind relays on loopback: a server that does not punch offers (or a client names) a relay,
//! the two pair through a `RelayServer` and talk end to end through it; a relay that never
//! pairs fails the connect with RELAY_ABORTED in bounded time and leaves nothing behind.
//! The peers behave as if behind a NAT (quick reachability check and LAN shortcut off), so
//! that loopback cannot connect them directly.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use corenet_dht::hyper::{ConnectError, ConnectOptions, ListenOptions};
use corenet_dht::relay::RelayServer;
use corenet_dht::{Dht, DhtConfig, PathKind, Testnet};
use corenet_noise::KeyPair;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(40);

async fn natted(bootstrap: Vec<SocketAddrV4>) -> Dht {
    let d = Dht::spawn(
        DhtConfig::default()
            .with_host(std::net::Ipv4Addr::LOCALHOST)
            .with_bootstrap(bootstrap)
            .with_quick_firewall(false)
            .with_lan(false),
    )
    .await
    .unwrap();
    d.bootstrapped().await.unwrap();
    d
}

async fn open_node(bootstrap: Vec<SocketAddrV4>) -> Dht {
    let d = Dht::spawn(
        DhtConfig::default()
            .with_host(std::net::Ipv4Addr::LOCALHOST)
            .with_bootstrap(bootstrap),
    )
    .await
    .unwrap();
    d.bootstrapped().await.unwrap();
    d
}

/// A server that never punches (so only a relay connects it), echoing everything.
async fn relayed_server(dht: &Dht, kp: &KeyPair, relay: Option<corenet_codec::PublicKey>) {
    let options = ListenOptions {
        holepunch: false,
        relay_through: relay,
        ..Default::default()
    };
    let mut server = dht.listen_with(kp, None, options).await.unwrap();
    tokio::spawn(async move {
        while let Some(conn) = server.accept().await {
            tokio::spawn(async move {
                let _relay = conn.relay;
                let (mut r, mut w) = tokio::io::split(conn.stream);
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn peers_that_cannot_punch_talk_through_a_blind_relay_either_side_offers() {
    let testnet = Testnet::new(5, 0).await.unwrap();
    let relay_dht = open_node(testnet.bootstrap.clone()).await;
    let relay = RelayServer::start(relay_dht.clone(), KeyPair::from_seed([0x90; 32]))
        .await
        .unwrap();
    let server_dht = natted(testnet.bootstrap.clone()).await;
    let client_dht = natted(testnet.bootstrap.clone()).await;

    // The client names the relay; then the server offers it.
    for (i, (client_offers, server_offers)) in
        [(true, false), (false, true)].into_iter().enumerate()
    {
        let server_kp = KeyPair::from_seed([0x91 + i as u8; 32]);
        relayed_server(
            &server_dht,
            &server_kp,
            server_offers.then(|| relay.public_key()),
        )
        .await;
        let options = ConnectOptions {
            relay_through: client_offers.then(|| relay.public_key()),
            ..Default::default()
        };
        let started = Instant::now();
        let conn = tokio::time::timeout(
            WAIT,
            client_dht.connect_with(
                &KeyPair::from_seed([0x99; 32]),
                server_kp.public_key(),
                options,
            ),
        )
        .await
        .expect("connect in time")
        .expect("connected through the relay");
        println!("case {i}: {} in {:?}", conn.path, started.elapsed());
        assert_eq!(conn.path, PathKind::Relay);
        assert!(conn.relay.is_some());
        let hold = conn.relay.clone();
        let (mut r, mut w) = tokio::io::split(conn.stream);
        let data: Vec<u8> = (0..512 * 1024u32).map(|x| (x * 7) as u8).collect();
        let d2 = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&d2).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        tokio::time::timeout(WAIT, r.read_to_end(&mut got))
            .await
            .expect("echo in time")
            .unwrap();
        writer.await.unwrap();
        assert_eq!(got, data, "bytes through the relay, end to end");
        let stats = relay.stats();
        assert!(stats.pairings_matched > i as u64, "{stats:?}");
        drop(hold);
    }
    // Links go when their connections do.
    let deadline = Instant::now() + Duration::from_secs(20);
    while relay.stats().links_active > 0 {
        assert!(Instant::now() < deadline, "links left: {:?}", relay.stats());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    relay.close().await;
    testnet.destroy().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relay_that_never_pairs_fails_with_relay_aborted_and_leaves_nothing() {
    let testnet = Testnet::new(5, 0).await.unwrap();
    // A "relay" that accepts connections and never answers a pair.
    let fake = open_node(testnet.bootstrap.clone()).await;
    let fake_kp = KeyPair::from_seed([0xa0; 32]);
    let mut fake_server = fake.listen(&fake_kp, None).await.unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(c) = fake_server.accept().await {
            held.push(c);
        }
    });
    let server_dht = natted(testnet.bootstrap.clone()).await;
    let client_dht = natted(testnet.bootstrap.clone()).await;
    let server_kp = KeyPair::from_seed([0xa1; 32]);
    relayed_server(&server_dht, &server_kp, None).await;
    let options = ConnectOptions {
        relay_through: Some(fake_kp.public_key()),
        ..Default::default()
    };
    let started = Instant::now();
    let r = tokio::time::timeout(
        WAIT,
        client_dht.connect_with(
            &KeyPair::from_seed([0xa2; 32]),
            server_kp.public_key(),
            options,
        ),
    )
    .await
    .expect("the connect ends in bounded time");
    let took = started.elapsed();
    println!("{r:?} after {took:?}");
    assert!(
        matches!(
            r,
            Err(corenet_dht::Error::Connect(ConnectError::RelayAborted))
        ),
        "{:?}",
        r.map(|c| c.path)
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
    // Nothing is left on either side.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (c, s) = (
            client_dht.info().await.unwrap(),
            server_dht.info().await.unwrap(),
        );
        if c.pool_sockets == 0 && s.pool_sockets == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pool sockets left: {} {}",
            c.pool_sockets,
            s.pool_sockets
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    testnet.destroy().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_beyond_the_relay_cap_is_refused_and_the_first_stays() {
    let testnet = Testnet::new(3, 0).await.unwrap();
    let relay_dht = open_node(testnet.bootstrap.clone()).await;
    let relay_kp = KeyPair::from_seed([0xb0; 32]);
    let relay = RelayServer::start_with_max_sessions(relay_dht, relay_kp.clone(), 1)
        .await
        .unwrap();
    let client_dht = open_node(testnet.bootstrap.clone()).await;
    let mut held = Vec::new();
    for seed in [0xb1, 0xb2] {
        let c = tokio::time::timeout(
            WAIT,
            client_dht.connect(
                &KeyPair::from_seed([seed; 32]),
                relay_kp.public_key(),
                vec![],
            ),
        )
        .await
        .expect("the connect ends")
        .expect("the relay's DHT server accepts the connection");
        held.push(c);
        // One at a time, so the first is a session before the second arrives.
        let deadline = Instant::now() + WAIT;
        while relay.stats().sessions_accepted + relay.stats().sessions_refused < held.len() as u64 {
            assert!(Instant::now() < deadline, "{:?}", relay.stats());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let s = relay.stats();
    assert_eq!(
        (s.sessions_accepted, s.sessions_refused, s.sessions_active),
        (1, 1, 1),
        "{s:?}"
    );
    relay.close().await;
    testnet.destroy().await;
}
