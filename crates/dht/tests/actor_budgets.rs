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
