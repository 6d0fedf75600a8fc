//! corenet's DHT and JS hyperdht in one network on 127.0.0.1: announces, lookups, mutable
//! and immutable values cross in both directions, with either side as bootstrap.

use std::net::SocketAddrV4;
use std::time::Duration;

use bytes::Bytes;
use corenet_dht::{Dht, DhtConfig, Testnet};
use corenet_noise::KeyPair;
use corenet_tests::JsPeer;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(40);

fn topic(name: &str) -> [u8; 32] {
    corenet_codec::hash::blake2b_256(name.as_bytes())
}

async fn rust_lookup(dht: &Dht, t: [u8; 32]) -> Vec<String> {
    let (mut rx, done) = dht.lookup(t).await.unwrap();
    let mut keys = Vec::new();
    let collect = async {
        while let Some(item) = rx.recv().await {
            for p in item.peers {
                keys.push(p.public_key.to_hex());
            }
        }
    };
    tokio::time::timeout(WAIT, collect)
        .await
        .expect("lookup finished");
    let _ = done.await;
    keys
}

async fn rust_node(bootstrap: Vec<SocketAddrV4>) -> Dht {
    let dht = Dht::spawn(
        DhtConfig::default()
            .with_host(std::net::Ipv4Addr::LOCALHOST)
            .with_bootstrap(bootstrap)
            .with_ephemeral(Some(false))
            .with_firewalled(false),
    )
    .await
    .unwrap();
    tokio::time::timeout(WAIT, dht.bootstrapped())
        .await
        .unwrap()
        .unwrap();
    dht
}

#[tokio::test]
async fn rust_nodes_in_a_js_testnet() {
    let mut js = JsPeer::spawn_interactive("dht-peer.js", &["testnet", "4"]);
    let ready = js.expect("ready", WAIT).await;
    let bootstrap: Vec<SocketAddrV4> = ready["bootstrap"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().parse().unwrap())
        .collect();
    let a = rust_node(bootstrap.clone()).await;
    let b = rust_node(bootstrap.clone()).await;
    let info = a.info().await.unwrap();
    assert!(
        info.persistent,
        "a Rust node in a JS testnet becomes persistent: {info:?}"
    );

    // Rust announces, JS finds it.
    let kp = KeyPair::from_seed([0x21; 32]);
    let t1 = topic("rust announces, js looks up");
    let r = tokio::time::timeout(WAIT, a.announce(t1, &kp, vec![]))
        .await
        .unwrap()
        .unwrap();
    assert!(r.commits > 0);
    let found = js
        .request(
            json!({"cmd": "lookup", "topic": hex::encode(t1)}),
            "lookup",
            WAIT,
        )
        .await;
    assert!(
        found["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == &json!(kp.public_key().to_hex())),
        "JS lookup: {found}"
    );

    // JS announces, Rust finds it.
    let t2 = topic("js announces, rust looks up");
    js.request(
        json!({"cmd": "announce", "topic": hex::encode(t2), "seed": hex::encode([0x22; 32])}),
        "announced",
        WAIT,
    )
    .await;
    let keys = rust_lookup(&b, t2).await;
    assert!(
        keys.contains(&KeyPair::from_seed([0x22; 32]).public_key().to_hex()),
        "Rust lookup: {keys:?}"
    );

    // Mutable values, both ways.
    let mkp = KeyPair::from_seed([0x23; 32]);
    a.mutable_put(&mkp, Bytes::from_static(b"from rust"), 3)
        .await
        .unwrap();
    let got = js
        .request(
            json!({"cmd": "mutableGet", "publicKey": mkp.public_key().to_hex()}),
            "mutableGet",
            WAIT,
        )
        .await;
    assert_eq!(got["value"], json!(hex::encode(b"from rust")));
    assert_eq!(got["seq"], json!(3));
    js.request(json!({"cmd": "mutablePut", "seed": hex::encode([0x24; 32]), "value": hex::encode(b"from js"), "seq": 5}), "mutablePut", WAIT).await;
    let m = b
        .mutable_get(KeyPair::from_seed([0x24; 32]).public_key(), 0)
        .await
        .unwrap()
        .expect("a value");
    assert_eq!((&m.value[..], m.seq), (&b"from js"[..], 5));

    // Immutable values, both ways.
    let (hash, _) = a
        .immutable_put(Bytes::from_static(b"immutable from rust"))
        .await
        .unwrap();
    let got = js
        .request(
            json!({"cmd": "immutableGet", "hash": hex::encode(hash)}),
            "immutableGet",
            WAIT,
        )
        .await;
    assert_eq!(got["value"], json!(hex::encode(b"immutable from rust")));
    let put = js
        .request(
            json!({"cmd": "immutablePut", "value": hex::encode(b"immutable from js")}),
            "immutablePut",
            WAIT,
        )
        .await;
    let h: [u8; 32] = hex::decode(put["hash"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    assert_eq!(
        b.immutable_get(h).await.unwrap().as_deref(),
        Some(&b"immutable from js"[..])
    );
    a.destroy().await;
    b.destroy().await;
}

#[tokio::test]
async fn js_nodes_in_a_rust_testnet() {
    let testnet = Testnet::new(5, 0).await.unwrap();
    let boot = testnet.bootstrap[0].to_string();
    // Both JS nodes on hyperdht's defaults, as JS apps run them.
    let mut js1 = JsPeer::spawn_interactive("dht-peer.js", &["node", &boot]);
    js1.expect("ready", WAIT).await;
    let mut js2 = JsPeer::spawn_interactive("dht-peer.js", &["node", &boot]);
    js2.expect("ready", WAIT).await;

    let t = topic("js announce in a rust testnet");
    js1.request(
        json!({"cmd": "announce", "topic": hex::encode(t), "seed": hex::encode([0x31; 32])}),
        "announced",
        WAIT,
    )
    .await;
    let found = js2
        .request(
            json!({"cmd": "lookup", "topic": hex::encode(t)}),
            "lookup",
            WAIT,
        )
        .await;
    let pk = KeyPair::from_seed([0x31; 32]).public_key().to_hex();
    assert!(
        found["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == &json!(pk)),
        "JS to JS through Rust storage: {found}"
    );
    let keys = rust_lookup(&testnet.nodes[2], t).await;
    assert!(keys.contains(&pk), "Rust lookup of a JS announce: {keys:?}");

    let kp = KeyPair::from_seed([0x32; 32]);
    let t2 = topic("rust announce, js in a rust testnet");
    testnet.nodes[3].announce(t2, &kp, vec![]).await.unwrap();
    let found = js2
        .request(
            json!({"cmd": "lookup", "topic": hex::encode(t2)}),
            "lookup",
            WAIT,
        )
        .await;
    assert!(
        found["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == &json!(kp.public_key().to_hex())),
        "{found}"
    );
    testnet.destroy().await;
}
