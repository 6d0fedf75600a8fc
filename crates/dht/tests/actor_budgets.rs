//! The actor's buffers toward the application (docs/dos-budgets.md §3), on a loopback
//! testnet: a lookup's result stream and a server's listen backlog. Every wait is bounded.

use std::time::Duration;

use corenet_dht::{DhtConfig, Testnet};
use corenet_noise::KeyPair;

const WAIT: Duration = Duration::from_secs(30);

/// Looks `topic` up from a node with `buffer` results buffered, reading nothing until the
/// lookup is done; returns the results left in the stream.
async fn unread_lookup(testnet: &Testnet, buffer: Option<usize>, topic: [u8; 32]) -> usize {
    let config = match buffer {
        Some(n) => DhtConfig::default().with_results_buffer(n),
        None => DhtConfig::default(),
    };
    let node = testnet.create_node(config).await.unwrap();
    let (mut results, done) = node.lookup(topic).await.unwrap();
    tokio::time::timeout(WAIT, done)
        .await
        .expect("the lookup ends")
        .unwrap()
        .unwrap();
    let mut n = 0;
    while results.try_recv().is_ok() {
        n += 1;
    }
    node.destroy().await;
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lookup_whose_reader_falls_behind_keeps_only_its_results_buffer() {
    let testnet = Testnet::new(8, 0).await.unwrap();
    let topic = [0x31; 32];
    let kp = KeyPair::from_seed([0x32; 32]);
    let r = tokio::time::timeout(WAIT, testnet.nodes[1].announce(topic, &kp, vec![]))
        .await
        .expect("the announce ends")
        .unwrap();
    assert!(r.commits >= 3, "{r:?}");
    // Unbounded by the buffer, every node holding the record answers...
    let all = unread_lookup(&testnet, None, topic).await;
    assert!(all >= 3, "{all} results");
    // ... and a buffer of 2 keeps the first 2: the newer ones are dropped, not queued.
    assert_eq!(unread_lookup(&testnet, Some(2), topic).await, 2);
    testnet.destroy().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_65th_connection_the_server_has_not_accepted_is_dropped() {
    let testnet = Testnet::new(3, 0).await.unwrap();
    let server_dht = testnet.create_node(DhtConfig::default()).await.unwrap();
    let server_kp = KeyPair::from_seed([0x41; 32]);
    let mut server = server_dht.listen(&server_kp, None).await.unwrap();
    let relays = server.relay_addresses().to_vec();
    let client = testnet.create_node(DhtConfig::default()).await.unwrap();
    const BACKLOG: usize = 64;
    let mut held = Vec::new();
    for i in 0..=BACKLOG as u32 {
        let mut seed = [0x42; 32];
        seed[..4].copy_from_slice(&i.to_le_bytes());
        let c = tokio::time::timeout(
            WAIT,
            client.connect(
                &KeyPair::from_seed(seed),
                server_kp.public_key(),
                relays.clone(),
            ),
        )
        .await
        .expect("the connect ends")
        .expect("the handshake succeeds: the backlog is the application's queue");
        held.push(c);
    }
    // The server makes each connection once its secret-stream header is out, a moment
    // after the client's connect returns: give the last ones time to queue (or not).
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Only 64 waited for `accept`; the 65th was destroyed.
    let mut accepted = 0;
    while let Ok(Some(_c)) = tokio::time::timeout(Duration::from_secs(3), server.accept()).await {
        accepted += 1;
        assert!(accepted <= BACKLOG + 1);
    }
    assert_eq!(accepted, BACKLOG);
    drop(held);
    server.close().await;
    client.destroy().await;
    server_dht.destroy().await;
    testnet.destroy().await;
}

/// A first Noise IK message to `server` from a fresh key, with the payload a real firewalled
/// client sends, as a PEER_HANDSHAKE datagram straight to the server's socket.
fn half_open_handshake(
    server: &KeyPair,
    from: std::net::SocketAddrV4,
    to: std::net::SocketAddrV4,
    i: u32,
) -> Vec<u8> {
    use corenet_dht::hyper::crypto::{server_target, Namespaces};
    use corenet_dht::hyper::dht::command;
    use corenet_dht::hyper::messages::{firewall, mode, HandshakeMessage, NoisePayload, UdxInfo};
    use corenet_dht::rpc::message::Request;
    use corenet_noise::{Handshake, HandshakeOptions, Pattern};
    let mut seed = [0x43; 32];
    seed[..4].copy_from_slice(&i.to_le_bytes());
    let mut hs = Handshake::new(
        Pattern::IK,
        true,
        &KeyPair::from_seed(seed),
        HandshakeOptions {
            prologue: Namespaces::new().peer_handshake.to_vec(),
            remote_public_key: Some(server.public_key()),
            rng_seed: Some(seed),
        },
    )
    .unwrap();
    // A firewalled client: the server cannot connect to it and waits for a punch (or a
    // packet) that never comes.
    let _ = from;
    let payload = corenet_codec::to_vec(&NoisePayload {
        firewall: firewall::CONSISTENT,
        udx: Some(UdxInfo {
            version: 1,
            reusable_socket: false,
            id: u64::from(i) + 1,
            seq: 0,
        }),
        secret_stream: Some(1),
        ..NoisePayload::default()
    });
    let noise = hs.write_message(&payload).unwrap();
    let msg = HandshakeMessage {
        mode: mode::FROM_CLIENT,
        noise: noise.into(),
        peer_address: None,
        relay_address: None,
    };
    Request {
        tid: i as u16,
        to,
        command: command::PEER_HANDSHAKE,
        target: Some(server_target(&server.public_key())),
        value: Some(corenet_codec::to_bytes(&msg)),
        ..Request::default()
    }
    .to_bytes()
    .to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn half_open_connections_stop_at_the_cap_and_a_real_client_still_connects() {
    use corenet_dht::MAX_HALF_OPEN;
    // Nodes behind NATs and no LAN shortcut: the server cannot reach a firewalled client
    // and waits for its punch.
    let testnet = Testnet::behind_nats(3).await.unwrap();
    let server_dht = testnet
        .create_node(DhtConfig::default().with_lan(false))
        .await
        .unwrap();
    let server_kp = KeyPair::from_seed([0x44; 32]);
    let mut server = server_dht.listen(&server_kp, None).await.unwrap();
    let relays = server.relay_addresses().to_vec();
    // Through the DHT nodes that hold the server's record (a handshake straight to the server
    // is answered by connecting to its source, which is then reachable): relayed, the server
    // must wait for the firewalled client's punch.
    let to = testnet.bootstrap[0];
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let from = match sock.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        std::net::SocketAddr::V6(_) => unreachable!(),
    };
    // Valid handshakes whose clients never send a packet.
    let flood = MAX_HALF_OPEN as u32 + 100;
    for i in 0..flood {
        sock.send_to(&half_open_handshake(&server_kp, from, to, i), to)
            .unwrap();
        if i % 32 == 31 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // Wait (bounded) until the server has handled them all: more than the cap arrived, so
    // it holds exactly the cap.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut held = 0;
    while tokio::time::Instant::now() < deadline {
        held = server_dht.info().await.unwrap().half_open;
        if held == MAX_HALF_OPEN {
            break;
        }
        assert!(held <= MAX_HALF_OPEN, "{held} half-open connections");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(held, MAX_HALF_OPEN);
    // A real client connects meanwhile.
    let client = testnet.create_node(DhtConfig::default()).await.unwrap();
    let c = tokio::time::timeout(
        WAIT,
        client.connect(&KeyPair::generate(), server_kp.public_key(), relays),
    )
    .await
    .expect("the connect ends")
    .expect("a real client connects past a half-open flood");
    let accepted = tokio::time::timeout(WAIT, server.accept())
        .await
        .expect("accepted in time")
        .expect("a connection");
    assert_eq!(accepted.stream.remote_public_key(), c.stream.public_key());
    assert!(server_dht.info().await.unwrap().half_open <= MAX_HALF_OPEN);
    drop((c, accepted));
    server.close().await;
    client.destroy().await;
    server_dht.destroy().await;
    testnet.destroy().await;
}
