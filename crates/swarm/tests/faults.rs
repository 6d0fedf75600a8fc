//! Misbehaving peers against a swarm: garbage after the handshake, a peer that reconnects in
//! a tight loop, a banned peer that keeps trying. Each is bounded and none blocks others.
//! Also: two Rust swarms dialling each other keep one connection.

use std::time::Duration;

use corenet_codec::Topic;
use corenet_dht::{Dht, DhtConfig, Testnet};
use corenet_noise::KeyPair;
use corenet_swarm::{JoinOptions, Swarm, SwarmEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(30);

async fn raw_node(testnet: &Testnet) -> Dht {
    testnet
        .create_node(
            DhtConfig::default()
                .with_ephemeral(Some(false))
                .with_firewalled(false),
        )
        .await
        .unwrap()
}

/// A server swarm that echoes every connection.
async fn echo_swarm(testnet: &Testnet) -> Swarm {
    let swarm = Swarm::builder()
        .bootstrap(testnet.bootstrap.clone())
        .build()
        .await
        .unwrap();
    serve_echo(swarm).await
}

/// Echoes every connection of `swarm` and listens.
async fn serve_echo(swarm: Swarm) -> Swarm {
    let mut conns = swarm.connections();
    tokio::spawn(async move {
        while let Some(mut c) = conns.recv().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = c.read(&mut buf).await {
                    if n == 0 || c.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    swarm.listen().await.unwrap();
    swarm
}

async fn echo_ok(dht: &Dht, server: &Swarm) -> bool {
    let Ok(mut c) = dht
        .connect(&KeyPair::generate(), server.public_key(), vec![])
        .await
    else {
        return false;
    };
    if c.stream.send(b"ping").await.is_err() {
        return false;
    }
    matches!(tokio::time::timeout(WAIT, c.stream.recv()).await, Ok(Ok(Some(m))) if &m[..] == b"ping")
}

#[tokio::test]
async fn garbage_after_the_handshake_closes_only_that_connection() {
    let testnet = Testnet::new(5, 0).await.unwrap();
    let server = echo_swarm(&testnet).await;
    let mut events = server.events();
    let client = raw_node(&testnet).await;
    let bad = KeyPair::generate();
    let mut conn = client
        .connect(&bad, server.public_key(), vec![])
        .await
        .unwrap();
    conn.stream.send(b"hello").await.unwrap();
    assert_eq!(
        conn.stream.recv().await.unwrap().as_deref(),
        Some(&b"hello"[..])
    );
    // Write garbage frames straight into the UDX stream, under the secret stream.
    conn.stream
        .get_mut()
        .write_all(&[9, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
        .await
        .unwrap();
    let disconnected = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(SwarmEvent::Disconnected { public_key }) = events.recv().await {
                if public_key == bad.public_key() {
                    break;
                }
            }
        }
    })
    .await;
    assert!(
        disconnected.is_ok(),
        "the server dropped the peer that sent garbage"
    );
    assert!(
        echo_ok(&client, &server).await,
        "other peers are still served"
    );
    server.destroy().await;
    testnet.destroy().await;
}

#[tokio::test]
async fn a_peer_reconnecting_in_a_tight_loop_is_limited() {
    let testnet = Testnet::new(5, 0).await.unwrap();
    let server = echo_swarm(&testnet).await;
    let client = raw_node(&testnet).await;
    let looping = KeyPair::generate();
    let mut ok = 0u32;
    for _ in 0..corenet_swarm::swarm::MAX_RECONNECTS + 4 {
        match tokio::time::timeout(
            Duration::from_secs(8),
            client.connect(&looping, server.public_key(), vec![]),
        )
        .await
        {
            Ok(Ok(c)) => {
                ok += 1;
                drop(c);
            }
            _ => break,
        }
    }
    assert!(
        ok <= corenet_swarm::swarm::MAX_RECONNECTS,
        "{ok} reconnects were accepted"
    );
    assert!(
        echo_ok(&client, &server).await,
        "other peers are still served"
    );
    server.destroy().await;
    testnet.destroy().await;
}

#[tokio::test]
async fn a_connection_beyond_max_server_connections_is_closed_and_the_first_stays() {
    let testnet = Testnet::new(5, 0).await.unwrap();
    let server = serve_echo(
        Swarm::builder()
            .bootstrap(testnet.bootstrap.clone())
            .max_server_connections(1)
            .build()
            .await
            .unwrap(),
    )
    .await;
    let client = raw_node(&testnet).await;
    let (first_kp, second_kp) = (KeyPair::generate(), KeyPair::generate());
    let mut first = client
        .connect(&first_kp, server.public_key(), vec![])
        .await
        .unwrap();
    first.stream.send(b"one").await.unwrap();
    assert_eq!(
        tokio::time::timeout(WAIT, first.stream.recv())
            .await
            .unwrap()
            .unwrap()
            .as_deref(),
        Some(&b"one"[..])
    );
    // The second key completes the DHT handshake; the swarm then destroys its stream.
    let mut second = client
        .connect(&second_kp, server.public_key(), vec![])
        .await
        .unwrap();
    let _ = second.stream.send(b"two").await;
    let answer = tokio::time::timeout(WAIT, second.stream.recv()).await;
    assert!(
        matches!(answer, Ok(Ok(None)) | Ok(Err(_))),
        "the second connection is closed, not served: {answer:?}"
    );
    first.stream.send(b"still").await.unwrap();
    assert_eq!(
        tokio::time::timeout(WAIT, first.stream.recv())
            .await
            .unwrap()
            .unwrap()
            .as_deref(),
        Some(&b"still"[..]),
        "the first connection stays"
    );
    let now: Vec<_> = server
        .connections_now()
        .iter()
        .map(|p| p.public_key)
        .collect();
    assert_eq!(now, vec![first_kp.public_key()]);
    server.destroy().await;
    testnet.destroy().await;
}

#[tokio::test]
async fn a_banned_peer_that_keeps_trying_is_refused_and_not_dialled() {
    let testnet = Testnet::new(5, 0).await.unwrap();
    let server = echo_swarm(&testnet).await;
    let topic = Topic::from_name("banned peer");
    server
        .join(topic, JoinOptions::default())
        .await
        .unwrap()
        .flushed()
        .await
        .unwrap();
    let intruder = Swarm::builder()
        .bootstrap(testnet.bootstrap.clone())
        .build()
        .await
        .unwrap();
    server.ban(intruder.public_key());
    tokio::time::sleep(Duration::from_millis(100)).await;
    intruder
        .join(topic, JoinOptions::default())
        .await
        .unwrap()
        .flushed()
        .await
        .unwrap();
    intruder.flush().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        server.connections_now().is_empty(),
        "a banned peer never gets a connection"
    );
    let client = raw_node(&testnet).await;
    assert!(echo_ok(&client, &server).await, "others are still served");
    assert!(server.stats().banned_peers >= 1);
    intruder.destroy().await;
    server.destroy().await;
    testnet.destroy().await;
}

#[tokio::test]
async fn two_rust_swarms_dialling_each_other_keep_one_connection() {
    let testnet = Testnet::new(5, 0).await.unwrap();
    for rep in 0..5 {
        let a = Swarm::builder()
            .bootstrap(testnet.bootstrap.clone())
            .build()
            .await
            .unwrap();
        let b = Swarm::builder()
            .bootstrap(testnet.bootstrap.clone())
            .build()
            .await
            .unwrap();
        let (mut ca, mut cb) = (a.connections(), b.connections());
        let topic = Topic::from_name(&format!("rust-rust dedup {rep}"));
        let da = a.join(topic, JoinOptions::server()).await.unwrap();
        let db = b.join(topic, JoinOptions::server()).await.unwrap();
        da.flushed().await.unwrap();
        db.flushed().await.unwrap();
        let (ra, rb) = tokio::join!(
            da.refresh(Some(JoinOptions::default())),
            db.refresh(Some(JoinOptions::default()))
        );
        ra.unwrap();
        rb.unwrap();
        let x = tokio::time::timeout(WAIT, ca.recv())
            .await
            .unwrap()
            .unwrap();
        let y = tokio::time::timeout(WAIT, cb.recv())
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(a.connections_now().len(), 1, "rep {rep}");
        assert_eq!(b.connections_now().len(), 1, "rep {rep}");
        // Each side hands the application every connection it admits; the latest one on
        // each side must be the same connection (same handshake hash).
        let (mut hx, mut hy) = (x.handshake_hash(), y.handshake_hash());
        let mut keep = vec![x, y];
        while let Ok(Some(n)) = tokio::time::timeout(Duration::from_millis(100), ca.recv()).await {
            hx = n.handshake_hash();
            keep.push(n);
        }
        while let Ok(Some(n)) = tokio::time::timeout(Duration::from_millis(100), cb.recv()).await {
            hy = n.handshake_hash();
            keep.push(n);
        }
        assert_eq!(hx, hy, "rep {rep}: both sides kept the same connection");
        drop(keep);
        a.destroy().await;
        b.destroy().await;
    }
    testnet.destroy().await;
}

/// A peer that restarts and reconnects before its old connection is seen to die gets the new
/// connection, even when it is not the tie-break's expected initiator: the old connection is
/// "established" (traffic went both ways), as hyperswarm decides from the secret stream's raw
/// byte counts. This must hold when the application took the stream out of the connection
/// (`into_parts`, as a mux does) and moved its messages itself. (Before, only the
/// connection's own reads and writes counted, so such a connection never looked
/// established: the restarted peer was refused as a duplicate of its dead connection until
/// that timed out.)
#[tokio::test]
async fn a_restarted_peer_replaces_its_established_connection_after_into_parts() {
    let testnet = Testnet::new(5, 0).await.unwrap();
    // The server's key is the larger: by the tie-break alone it keeps the first connection.
    let (mut server_kp, mut peer_kp) = (KeyPair::generate(), KeyPair::generate());
    if server_kp.public_key().as_bytes() < peer_kp.public_key().as_bytes() {
        std::mem::swap(&mut server_kp, &mut peer_kp);
    }
    let server = Swarm::builder()
        .key_pair(server_kp)
        .bootstrap(testnet.bootstrap.clone())
        .build()
        .await
        .unwrap();
    // Echo over the split stream's message interface; report each end.
    let (ended_tx, mut ended) = tokio::sync::mpsc::channel(8);
    let mut conns = server.connections();
    tokio::spawn(async move {
        while let Some(c) = conns.recv().await {
            let (mut stream, guard) = c.into_parts();
            let ended_tx = ended_tx.clone();
            tokio::spawn(async move {
                let reason = tokio::select! {
                    r = guard.aborted() => r,
                    _ = async {
                        while let Ok(Some(m)) = stream.recv().await {
                            if stream.send(&m).await.is_err() {
                                break;
                            }
                        }
                    } => "ended".to_owned(),
                };
                let _ = ended_tx.send((stream.handshake_hash(), reason)).await;
            });
        }
    });
    server.listen().await.unwrap();

    let node = raw_node(&testnet).await;
    let mut old = node
        .connect(&peer_kp, server.public_key(), vec![])
        .await
        .unwrap();
    old.stream.send(b"before").await.unwrap();
    let echo = tokio::time::timeout(WAIT, old.stream.recv()).await.unwrap();
    assert_eq!(echo.unwrap().as_deref(), Some(&b"before"[..]));

    // The same key again, from another node, while the first connection is still up.
    let node2 = raw_node(&testnet).await;
    let mut new = node2
        .connect(&peer_kp, server.public_key(), vec![])
        .await
        .unwrap();
    new.stream.send(b"after").await.unwrap();
    let echo = tokio::time::timeout(WAIT, new.stream.recv())
        .await
        .expect("the new connection is served")
        .expect("the new connection is kept");
    assert_eq!(echo.as_deref(), Some(&b"after"[..]));
    let (hash, reason) = tokio::time::timeout(WAIT, ended.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hash, old.stream.handshake_hash(), "the old one was dropped");
    assert!(reason.contains("uplicate"), "{reason}");
    let peers = server.connections_now();
    assert_eq!(peers.len(), 1);
    server.destroy().await;
    testnet.destroy().await;
}
