//! corenet-swarm and JS hyperswarm 4 on one local testnet: connections both ways with data
//! both ways, simultaneous dials that must settle on the same single connection (20 times),
//! firewall, ban, join_peer with reconnection after a restart, and leave.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corenet_codec::{PublicKey, Topic};
use corenet_dht::Testnet;
use corenet_swarm::{Connection, JoinOptions, Swarm, SwarmEvent};
use corenet_tests::{natted_dht, JsPeer};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(30);

fn seed(tag: u8, rep: usize) -> [u8; 32] {
    let mut s = [tag; 32];
    s[..8].copy_from_slice(&(rep as u64).to_le_bytes());
    s
}

/// Connections the Rust side accepted or dialled, by peer.
type Seen = Arc<Mutex<HashMap<PublicKey, Vec<[u8; 64]>>>>;

async fn rust_swarm(
    testnet: &Testnet,
    seed: [u8; 32],
    firewall: Option<corenet_swarm::Firewall>,
) -> (
    Swarm,
    Seen,
    tokio::sync::mpsc::Receiver<(PublicKey, Vec<u8>)>,
) {
    let mut b = Swarm::builder()
        .seed(seed)
        .bootstrap(testnet.bootstrap.clone());
    if let Some(f) = firewall {
        b = b.firewall(f);
    }
    let swarm = b.build().await.unwrap();
    let seen: Seen = Arc::default();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let mut conns = swarm.connections();
    let s2 = seen.clone();
    tokio::spawn(async move {
        while let Some(conn) = conns.recv().await {
            s2.lock()
                .unwrap()
                .entry(conn.remote_public_key())
                .or_default()
                .push(conn.handshake_hash());
            let tx = tx.clone();
            tokio::spawn(serve(conn, tx));
        }
    });
    (swarm, seen, rx)
}

/// Reads a connection: bytes starting with 0x02 are reported; we write nothing unless asked.
async fn serve(mut conn: Connection, tx: tokio::sync::mpsc::Sender<(PublicKey, Vec<u8>)>) {
    let pk = conn.remote_public_key();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if buf[0] == 1 {
                    // Echo requests from the other side go straight back.
                    let _ = conn.write_all(&buf[..n]).await;
                } else {
                    let _ = tx.send((pk, buf[..n].to_vec())).await;
                }
            }
        }
    }
}

async fn js_peer(
    testnet: &Testnet,
    seed: [u8; 32],
    refuse: Option<PublicKey>,
) -> (JsPeer, PublicKey) {
    let boot = testnet.bootstrap[0].to_string();
    let seed_hex = hex::encode(seed);
    let refuse_hex = refuse.map(|r| r.to_hex()).unwrap_or_default();
    let mut args = vec![boot.as_str(), seed_hex.as_str()];
    if refuse.is_some() {
        args.push(refuse_hex.as_str());
    }
    let mut js = JsPeer::spawn_interactive("swarm-peer.js", &args);
    let ready = js.expect("ready", WAIT).await;
    let pk = PublicKey::from_hex(ready["publicKey"].as_str().unwrap()).unwrap();
    (js, pk)
}

fn topic(name: &str) -> Topic {
    Topic::from_name(name)
}

async fn wait_for<F: Fn() -> bool>(what: &str, f: F) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn rust_server_js_client_and_back_with_data_both_ways() {
    let testnet = Testnet::new(5, 0).await.unwrap();
    let (rust, seen, mut data) = rust_swarm(&testnet, seed(1, 0), None).await;
    let (mut js, js_pk) = js_peer(&testnet, seed(2, 0), None).await;

    // Rust server, JS client.
    let t = topic("rust server js client");
    rust.join(t, JoinOptions::server())
        .await
        .unwrap()
        .flushed()
        .await
        .unwrap();
    js.request(
        json!({"cmd": "join", "topic": t.to_hex(), "server": false, "client": true}),
        "joined",
        WAIT,
    )
    .await;
    let ev = js.expect("connection", WAIT).await;
    assert_eq!(ev["remotePublicKey"], json!(rust.public_key().to_hex()));
    assert_eq!(ev["isInitiator"], json!(true));
    wait_for("the Rust side to see the connection", || {
        seen.lock().unwrap().contains_key(&js_pk)
    })
    .await;
    let hash = seen.lock().unwrap()[&js_pk][0];
    assert_eq!(ev["handshakeHash"], json!(hex::encode(hash)));

    // JS -> Rust data.
    js.command(json!({"cmd": "send", "publicKey": rust.public_key().to_hex(), "data": "02aabbcc"}))
        .await;
    let (from, bytes) = tokio::time::timeout(WAIT, data.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((from, bytes), (js_pk, vec![2, 0xaa, 0xbb, 0xcc]));

    // JS server, Rust client: a second swarm on the Rust side, data Rust -> JS -> Rust.
    let t2 = topic("js server rust client");
    js.request(
        json!({"cmd": "join", "topic": t2.to_hex(), "server": true, "client": false}),
        "joined",
        WAIT,
    )
    .await;
    let (rust2, seen2, _d2) = rust_swarm(&testnet, seed(3, 0), None).await;
    rust2
        .join(t2, JoinOptions::client())
        .await
        .unwrap()
        .flushed()
        .await
        .unwrap();
    wait_for("Rust client connected to JS", || {
        seen2.lock().unwrap().contains_key(&js_pk)
    })
    .await;
    let ev = js.expect("connection", WAIT).await;
    assert_eq!(ev["remotePublicKey"], json!(rust2.public_key().to_hex()));
    assert_eq!(ev["isInitiator"], json!(false));
    rust.destroy().await;
    rust2.destroy().await;
    testnet.destroy().await;
}

#[tokio::test]
async fn simultaneous_dials_keep_one_and_the_same_connection_20_times() {
    let testnet = Testnet::new(5, 0).await.unwrap();
    for rep in 0..20 {
        let (rust, seen, _data) = rust_swarm(&testnet, seed(10, rep), None).await;
        let mut events = rust.events();
        let (mut js, js_pk) = js_peer(&testnet, seed(11, rep), None).await;
        let t = topic(&format!("simultaneous {rep}"));
        // Both announce first (so each can find the other), then both dial at once.
        let d = rust.join(t, JoinOptions::server()).await.unwrap();
        d.flushed().await.unwrap();
        js.request(
            json!({"cmd": "join", "topic": t.to_hex(), "server": true, "client": false}),
            "joined",
            WAIT,
        )
        .await;
        js.command(json!({"cmd": "refresh", "topic": t.to_hex(), "server": true, "client": true}))
            .await;
        d.refresh(Some(JoinOptions::default())).await.unwrap();
        wait_for("the Rust side connected", || {
            seen.lock().unwrap().contains_key(&js_pk)
        })
        .await;
        // Let any duplicate settle, then compare both ends.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let rust_now = rust.connections_now();
        assert_eq!(
            rust_now.len(),
            1,
            "rep {rep}: exactly one connection on the Rust side"
        );
        // Ask JS for its connections, collecting the connection events it printed meanwhile.
        js.command(json!({"cmd": "connections"})).await;
        let mut js_hashes = Vec::new();
        let js_conns = loop {
            let ev = js.next_event(WAIT).await;
            match ev["event"].as_str().unwrap() {
                "connection" => js_hashes.push(ev["handshakeHash"].as_str().unwrap().to_owned()),
                "connections" => break ev,
                _ => {}
            }
        };
        assert_eq!(
            js_conns["keys"],
            json!([rust.public_key().to_hex()]),
            "rep {rep}: exactly one on the JS side"
        );
        // The surviving connection is the same on both sides: its handshake hash is one JS
        // reported, and nobody was disconnected after it.
        let hashes = seen.lock().unwrap()[&js_pk].clone();
        let last_rust = hex::encode(hashes.last().unwrap());
        let st = rust.stats();
        println!(
            "rep {rep}: rust saw {} connection(s) (dials {} opened {}, accepted {}), js saw {}",
            hashes.len(),
            st.client_attempted,
            st.client_opened,
            st.server_opened,
            js_hashes.len()
        );
        assert!(
            js_hashes.contains(&last_rust),
            "rep {rep}: JS never saw the connection Rust kept ({last_rust} not in {js_hashes:?})"
        );
        let mut rust_disconnects = 0;
        while let Ok(e) = events.try_recv() {
            if matches!(e, SwarmEvent::Disconnected { .. }) {
                rust_disconnects += 1;
            }
        }
        assert_eq!(
            rust_disconnects, 0,
            "rep {rep}: the kept connection never dropped on the Rust side"
        );
        rust.destroy().await;
        drop(js);
    }
    testnet.destroy().await;
}

#[tokio::test]
async fn firewall_refuses_the_js_key_and_ban_stops_a_peer() {
    let testnet = Testnet::new(5, 0).await.unwrap();
    let js_seed = seed(21, 0);
    let js_pk = corenet_noise::KeyPair::from_seed(js_seed).public_key();
    let firewall: corenet_swarm::Firewall =
        Arc::new(move |pk, _| Box::pin(async move { pk != js_pk }));
    let (rust, seen, _d) = rust_swarm(&testnet, seed(20, 0), Some(firewall)).await;
    let (mut js, _) = js_peer(&testnet, js_seed, None).await;
    rust.listen().await.unwrap();
    js.command(json!({"cmd": "dhtConnect", "publicKey": rust.public_key().to_hex()}))
        .await;
    let ev = js.expect("dhtConnect", WAIT).await;
    assert_eq!(
        ev["ok"],
        json!(false),
        "the firewall refused the JS client: {ev}"
    );
    assert!(!seen.lock().unwrap().contains_key(&js_pk));
    assert!(
        rust.stats().banned_peers >= 1,
        "a firewalled peer is banned"
    );

    // Ban: a second JS peer connects through a topic, gets banned, and cannot come back.
    let (mut js2, js2_pk) = js_peer(&testnet, seed(22, 0), None).await;
    let t = topic("ban");
    rust.join(t, JoinOptions::server())
        .await
        .unwrap()
        .flushed()
        .await
        .unwrap();
    js2.request(
        json!({"cmd": "join", "topic": t.to_hex(), "server": false, "client": true}),
        "joined",
        WAIT,
    )
    .await;
    wait_for("JS peer connected", || {
        seen.lock().unwrap().contains_key(&js2_pk)
    })
    .await;
    rust.ban(js2_pk);
    let ev = js2.expect("disconnected", WAIT).await;
    assert_eq!(ev["remotePublicKey"], json!(rust.public_key().to_hex()));
    js2.command(json!({"cmd": "dhtConnect", "publicKey": rust.public_key().to_hex()}))
        .await;
    let ev = js2.expect("dhtConnect", WAIT).await;
    assert_eq!(
        ev["ok"],
        json!(false),
        "a banned peer cannot reconnect: {ev}"
    );
    rust.destroy().await;
    testnet.destroy().await;
}

#[tokio::test]
async fn join_peer_reconnects_after_the_js_server_restarts_and_leave_stops_new_connections() {
    let testnet = Testnet::new(5, 0).await.unwrap();
    let (rust, seen, _d) = rust_swarm(&testnet, seed(30, 0), None).await;
    let js_seed = seed(31, 0);
    let (mut js, js_pk) = js_peer(&testnet, js_seed, None).await;
    // The JS side listens (joining a topic as server makes hyperswarm listen).
    js.request(json!({"cmd": "join", "topic": topic("listen only").to_hex(), "server": true, "client": false}), "joined", WAIT).await;
    rust.join_peer(js_pk);
    wait_for("join_peer connected", || {
        seen.lock()
            .unwrap()
            .get(&js_pk)
            .is_some_and(|v| v.len() == 1)
    })
    .await;
    // Restart the JS peer with the same key: the Rust side reconnects by itself.
    drop(js);
    let (mut js, _) = js_peer(&testnet, js_seed, None).await;
    js.request(json!({"cmd": "join", "topic": topic("listen only").to_hex(), "server": true, "client": false}), "joined", WAIT).await;
    wait_for("reconnected after the restart", || {
        seen.lock()
            .unwrap()
            .get(&js_pk)
            .is_some_and(|v| v.len() >= 2)
    })
    .await;

    // leave: after leaving a topic, a new peer announcing it is not dialled.
    let t = topic("leave");
    let d = rust.join(t, JoinOptions::client()).await.unwrap();
    d.flushed().await.unwrap();
    rust.leave(t).await.unwrap();
    let (mut js3, js3_pk) = js_peer(&testnet, seed(32, 0), None).await;
    js3.request(
        json!({"cmd": "join", "topic": t.to_hex(), "server": true, "client": false}),
        "joined",
        WAIT,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !seen.lock().unwrap().contains_key(&js3_pk),
        "no new connection for a topic we left"
    );
    assert!(rust.status(t).await.unwrap().is_none());
    rust.destroy().await;
    testnet.destroy().await;
}

#[tokio::test]
async fn killing_a_peer_mid_stream_disconnects_and_the_client_redials() {
    let testnet = Testnet::new(5, 0).await.unwrap();
    let (rust, seen, _d) = rust_swarm(&testnet, seed(40, 0), None).await;
    let mut events = rust.events();
    let js_seed = seed(41, 0);
    let (mut js, js_pk) = js_peer(&testnet, js_seed, None).await;
    let t = topic("kill mid-stream");
    js.request(
        json!({"cmd": "join", "topic": t.to_hex(), "server": true, "client": false}),
        "joined",
        WAIT,
    )
    .await;
    rust.join(t, JoinOptions::client())
        .await
        .unwrap()
        .flushed()
        .await
        .unwrap();
    wait_for("connected", || seen.lock().unwrap().contains_key(&js_pk)).await;
    // SIGKILL: no END, no DESTROY; the Rust side must notice on its own.
    drop(js);
    let started = std::time::Instant::now();
    let gone = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Ok(SwarmEvent::Disconnected { public_key }) = events.recv().await {
                if public_key == js_pk {
                    break;
                }
            }
        }
    })
    .await;
    assert!(gone.is_ok(), "the killed peer was noticed");
    println!("disconnect noticed after {:?}", started.elapsed());
    // The peer comes back with the same key: the topic client redials by the retry rules.
    let (mut js, _) = js_peer(&testnet, js_seed, None).await;
    js.request(
        json!({"cmd": "join", "topic": t.to_hex(), "server": true, "client": false}),
        "joined",
        WAIT,
    )
    .await;
    let back = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if seen
                .lock()
                .unwrap()
                .get(&js_pk)
                .is_some_and(|v| v.len() >= 2)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(back.is_ok(), "the client redialled the restarted peer");
    rust.destroy().await;
    testnet.destroy().await;
}

/// A firewalled Rust swarm and a default-option JS hyperswarm on loopback: both ways the
/// connection goes through the holepunch, and data flows over it.
#[tokio::test]
async fn holepunch_on_loopback_between_rust_and_default_js_swarms_both_ways() {
    let testnet = Testnet::behind_nats(5).await.unwrap();
    let dht = natted_dht(testnet.bootstrap.clone()).await;
    let rust = Swarm::builder()
        .seed(seed(40, 0))
        .dht(dht)
        .build()
        .await
        .unwrap();
    let mut conns = rust.connections();
    let (mut js, js_pk) = js_peer(&testnet, seed(41, 0), None).await;

    // Rust server, JS client.
    let t = topic("holepunch rust server");
    rust.join(t, JoinOptions::server())
        .await
        .unwrap()
        .flushed()
        .await
        .unwrap();
    js.request(
        json!({"cmd": "join", "topic": t.to_hex(), "server": false, "client": true}),
        "joined",
        WAIT,
    )
    .await;
    let mut conn = tokio::time::timeout(WAIT, conns.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(conn.remote_public_key(), js_pk);
    assert_eq!(
        conn.path(),
        corenet_dht::PathKind::Holepunch,
        "JS client -> Rust server"
    );
    js.command(json!({"cmd": "send", "publicKey": rust.public_key().to_hex(), "data": "02010203"}))
        .await;
    let mut buf = [0u8; 4];
    tokio::time::timeout(WAIT, conn.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(buf, [2, 1, 2, 3]);

    // JS server, Rust client (a second Rust swarm, so the first connection plays no part).
    let rust2 = Swarm::builder()
        .seed(seed(42, 0))
        .dht(natted_dht(testnet.bootstrap.clone()).await)
        .build()
        .await
        .unwrap();
    let mut conns = rust2.connections();
    let t2 = topic("holepunch js server");
    js.request(
        json!({"cmd": "join", "topic": t2.to_hex(), "server": true, "client": false}),
        "joined",
        WAIT,
    )
    .await;
    rust2
        .join(t2, JoinOptions::client())
        .await
        .unwrap()
        .flushed()
        .await
        .unwrap();
    let conn2 = tokio::time::timeout(WAIT, conns.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(conn2.is_initiator());
    assert_eq!(conn2.remote_public_key(), js_pk);
    assert_eq!(
        conn2.path(),
        corenet_dht::PathKind::Holepunch,
        "Rust client -> JS server"
    );
    let stats = rust2.holepunch_stats().await.unwrap();
    assert!(stats.succeeded >= 1, "{stats:?}");
    drop((conn, conn2));
    rust.destroy().await;
    rust2.destroy().await;
    testnet.destroy().await;
}
