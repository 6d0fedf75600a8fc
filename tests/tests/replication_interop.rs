//! corenet replication against JS corestore 7.12.5 / hypercore 11.37.1
//! (`tests/interop/replicate-peer.js`, `store.replicate(noiseStream)`) over a secret stream
//! over TCP on 127.0.0.1, data flowing both ways: whole cores (64 MiB in 64 KiB blocks,
//! 8 MiB in 4 KiB blocks) with their SHA-256 checked, random sparse gets, live appends, named
//! cores opened by key on the other side, and tampered blocks from a malicious peer rejected
//! on either side. JS is the TCP server in some tests and the client in others, so both Noise
//! roles (and both capability namespaces) are exercised.

use std::time::{Duration, Instant};

use corenet_mux::{ChannelOptions, DriverConfig, MuxHandle};
use corenet_noise::{Config, KeyPair, SecretStream};
use corenet_replication::messages::{
    Data, Handshake, Message, Range, Sync, MSG_DATA, MSG_RANGE, MSG_SYNC,
};
use corenet_replication::replicator::{PROTOCOL, PROTOCOL_ALIAS};
use corenet_replication::{Corestore, Hypercore};
use corenet_tests::{pattern, JsPeer};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(60);
const JS_SEED: [u8; 32] = [0x33; 32];

#[derive(Debug, Clone, Copy)]
enum Role {
    /// JS listens, Rust connects (Rust is the Noise initiator).
    JsServer,
    /// Rust listens, JS connects.
    JsClient,
}

/// Block `i` of a core made with `(size, salt)` (the rule of replicate-peer.js).
fn block(i: u64, size: usize, salt: u8) -> Vec<u8> {
    pattern(size, salt, i as usize * size)
}

fn sha256_blocks(blocks: impl IntoIterator<Item = Vec<u8>>) -> String {
    let mut h = Sha256::new();
    for b in blocks {
        h.update(&b);
    }
    hex::encode(h.finalize())
}

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn key_of(v: &Value) -> corenet_codec::PublicKey {
    corenet_codec::PublicKey::from_hex(v["key"].as_str().unwrap()).unwrap()
}

/// Starts the JS peer; in the client role Rust listens first.
async fn start(role: Role) -> (JsPeer, Option<u16>, Option<TcpListener>) {
    let seed = hex::encode(JS_SEED);
    match role {
        Role::JsServer => {
            let mut js = JsPeer::spawn_interactive(
                "replicate-peer.js",
                &["server", "127.0.0.1", "0", &seed],
            );
            let port = js.expect("listening", WAIT).await["port"].as_u64().unwrap() as u16;
            (js, Some(port), None)
        }
        Role::JsClient => {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port().to_string();
            let js = JsPeer::spawn_interactive(
                "replicate-peer.js",
                &["client", "127.0.0.1", &port, &seed],
            );
            (js, None, Some(listener))
        }
    }
}

/// Connects to the JS peer: the secret stream over TCP.
async fn connect(
    js: &mut JsPeer,
    port: Option<u16>,
    listener: Option<TcpListener>,
) -> SecretStream<TcpStream> {
    let stream = match (port, listener) {
        (Some(port), _) => {
            let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            SecretStream::new(tcp, true, &KeyPair::generate(), Config::default())
                .await
                .unwrap()
        }
        (None, Some(listener)) => {
            let (tcp, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
            tcp.set_nodelay(true).unwrap();
            SecretStream::new(tcp, false, &KeyPair::generate(), Config::default())
                .await
                .unwrap()
        }
        _ => unreachable!(),
    };
    assert_eq!(
        stream.remote_public_key(),
        KeyPair::from_seed(JS_SEED).public_key()
    );
    js.expect("ready", WAIT).await;
    stream
}

/// A JS session: the peer and the Rust store replicating with it.
async fn session(
    role: Role,
    store: &Corestore,
    setup: &[Value],
) -> (JsPeer, MuxHandle, Vec<Value>) {
    let (mut js, port, listener) = start(role).await;
    let mut replies = Vec::new();
    for cmd in setup {
        let reply = match cmd["cmd"].as_str().unwrap() {
            "create" => "created",
            "open" => "opened",
            other => panic!("unexpected setup command {other}"),
        };
        replies.push(js.request(cmd.clone(), reply, WAIT).await);
    }
    let stream = connect(&mut js, port, listener).await;
    let mux = store.replicate_stream(stream).unwrap();
    (js, mux, replies)
}

/// Rust downloads a JS core of `blocks` x `size` bytes.
async fn js_to_rust(role: Role, blocks: u64, size: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let store = Corestore::open(dir.path()).unwrap();
    let create = json!({"cmd": "create", "name": "big", "blocks": blocks, "size": size, "salt": 1});
    let (_js, mux, replies) = session(role, &store, &[create]).await;
    let created = &replies[0];
    let core = store.get_by_key(key_of(created)).unwrap();
    assert_eq!(core.discovery_key().to_hex(), created["discoveryKey"]);
    let t = Instant::now();
    let mut d = core.download(0..blocks);
    timeout(WAIT, d.done()).await.unwrap().unwrap();
    let secs = t.elapsed().as_secs_f64();
    let got = sha256_blocks((0..blocks).map(|i| core.get(i).unwrap().unwrap().to_vec()));
    assert_eq!(got, created["sha256"].as_str().unwrap());
    assert_eq!(got, sha256_blocks((0..blocks).map(|i| block(i, size, 1))));
    assert_eq!(core.len(), blocks);
    drop(d);
    mux.close();
    (blocks * size as u64) as f64 / secs / (1 << 20) as f64
}

/// JS downloads a Rust core of `blocks` x `size` bytes.
async fn rust_to_js(role: Role, blocks: u64, size: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let store = Corestore::open(dir.path()).unwrap();
    let core = store.get("big").unwrap();
    for chunk in (0..blocks).collect::<Vec<_>>().chunks(256) {
        core.append(chunk.iter().map(|i| block(*i, size, 2)))
            .unwrap();
    }
    let open = json!({"cmd": "open", "key": core.key().to_hex()});
    let (mut js, mux, _) = session(role, &store, &[open]).await;
    let cmd = json!({"cmd": "download", "key": core.key().to_hex(), "start": 0, "end": blocks});
    let done = js.request(cmd, "downloaded", WAIT).await;
    assert_eq!(
        done["sha256"].as_str().unwrap(),
        sha256_blocks((0..blocks).map(|i| block(i, size, 2)))
    );
    assert_eq!(done["bytes"].as_u64().unwrap(), blocks * size as u64);
    let uploaded: u64 = core.peers().iter().map(|p| p.uploaded_blocks).sum();
    assert!(uploaded >= blocks, "uploaded {uploaded}");
    mux.close();
    let secs = done["ms"].as_f64().unwrap() / 1000.0;
    (blocks * size as u64) as f64 / secs / (1 << 20) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_to_rust_64_mib_in_64_kib_blocks() {
    let rate = js_to_rust(Role::JsServer, 1024, 64 * 1024).await;
    eprintln!("JS -> Rust, 64 KiB blocks: {rate:.0} MiB/s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_to_rust_8_mib_in_4_kib_blocks() {
    let rate = js_to_rust(Role::JsClient, 2048, 4096).await;
    eprintln!("JS -> Rust, 4 KiB blocks: {rate:.0} MiB/s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_to_js_64_mib_in_64_kib_blocks() {
    let rate = rust_to_js(Role::JsClient, 1024, 64 * 1024).await;
    eprintln!("Rust -> JS, 64 KiB blocks: {rate:.0} MiB/s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_to_js_8_mib_in_4_kib_blocks() {
    let rate = rust_to_js(Role::JsServer, 2048, 4096).await;
    eprintln!("Rust -> JS, 4 KiB blocks: {rate:.0} MiB/s");
}

/// Random sparse gets, both ways, over one connection (JS server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_gets_both_ways() {
    let store = Corestore::in_memory();
    let mine = store.get("mine").unwrap();
    mine.append((0..300).map(|i| block(i, 1000, 3))).unwrap();
    let create = json!({"cmd": "create", "name": "theirs", "blocks": 300, "size": 1000, "salt": 4});
    let open = json!({"cmd": "open", "key": mine.key().to_hex()});
    let (mut js, _mux, replies) = session(Role::JsServer, &store, &[create, open]).await;
    let theirs = store.get_by_key(key_of(&replies[0])).unwrap();

    // Deterministic "random" indexes.
    let indexes: Vec<u64> = (0..25u64).map(|k| (k * 7919 + 13) % 300).collect();
    for &i in &indexes {
        let b = timeout(WAIT, theirs.fetch(i)).await.unwrap().unwrap();
        assert_eq!(b.to_vec(), block(i, 1000, 4), "block {i}");
    }
    // Only what was asked for (and nothing else) was downloaded.
    let distinct: std::collections::BTreeSet<_> = indexes.iter().collect();
    assert_eq!(theirs.bitfield().count(0..300), distinct.len() as u64);

    let cmd = json!({"cmd": "get", "key": mine.key().to_hex(), "indexes": indexes});
    let got = js.request(cmd, "blocks", WAIT).await;
    let hashes: Vec<&str> = got["sha256"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for (h, &i) in hashes.iter().zip(&indexes) {
        assert_eq!(*h, sha256(&block(i, 1000, 3)), "block {i}");
    }
    let cmd = json!({"cmd": "has", "key": mine.key().to_hex(), "index": 299});
    let has_last = js.request(cmd, "has", WAIT).await["value"]
        .as_bool()
        .unwrap();
    assert_eq!(has_last, indexes.contains(&299));
}

/// Appends on either side reach the other (JS client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_appends_both_ways() {
    let store = Corestore::in_memory();
    let mine = store.get("live").unwrap();
    mine.append((0..5).map(|i| block(i, 100, 5))).unwrap();
    let create = json!({"cmd": "create", "name": "live", "blocks": 5, "size": 100, "salt": 6});
    let open = json!({"cmd": "open", "key": mine.key().to_hex()});
    let (mut js, _mux, replies) = session(Role::JsClient, &store, &[create, open]).await;
    let theirs_key = replies[0]["key"].as_str().unwrap().to_string();
    let theirs = store.get_by_key(key_of(&replies[0])).unwrap();
    let follow = theirs.download(0..);
    timeout(WAIT, theirs.wait_for_length(5))
        .await
        .unwrap()
        .unwrap();

    for round in 0..3u64 {
        // JS appends; Rust (following with an open-ended download) gets the blocks.
        let cmd = json!({"cmd": "append", "key": theirs_key, "blocks": 2, "size": 100, "salt": 6});
        let len = js.request(cmd, "appended", WAIT).await["length"]
            .as_u64()
            .unwrap();
        assert_eq!(len, 7 + 2 * round);
        timeout(WAIT, theirs.wait_for_length(len))
            .await
            .unwrap()
            .unwrap();
        let mut p = follow.progress();
        timeout(WAIT, p.wait_for(|p| p.blocks == len))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            theirs.get(len - 1).unwrap().unwrap().to_vec(),
            block(len - 1, 100, 6)
        );

        // Rust appends; JS (eager upgrades) sees the new length and gets the block.
        mine.append([block(5 + round, 100, 5)]).unwrap();
        let cmd = json!({"cmd": "waitLength", "key": mine.key().to_hex(), "length": 6 + round});
        js.request(cmd, "length", WAIT).await;
        let cmd = json!({"cmd": "get", "key": mine.key().to_hex(), "indexes": [5 + round]});
        let got = js.request(cmd, "blocks", WAIT).await;
        assert_eq!(got["sha256"][0], sha256(&block(5 + round, 100, 5)));
    }
    // JS update() after the fact: nothing newer.
    let cmd = json!({"cmd": "update", "key": mine.key().to_hex()});
    let u = js.request(cmd, "updated", WAIT).await;
    assert_eq!(u["length"].as_u64().unwrap(), 8);
    drop(follow);
}

/// A JS peer that flips a byte of every block it uploads: Rust rejects the proof, stores
/// nothing of it, and closes the channel (Rust server, JS client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_blocks_from_js_are_rejected() {
    let store = Corestore::in_memory();
    let create = json!({"cmd": "create", "name": "evil", "blocks": 20, "size": 500, "salt": 7});
    let (mut js, port, listener) = start(Role::JsClient).await;
    let created = js.request(create, "created", WAIT).await;
    let key = created["key"].as_str().unwrap().to_string();
    js.request(json!({"cmd": "tamper", "key": key}), "tampering", WAIT)
        .await;
    let core = store.get_by_key(key_of(&created)).unwrap();
    // Want block 3 before connecting, so that the first request carries the upgrade too.
    let fetch = tokio::spawn({
        let core = core.clone();
        async move { core.fetch(3).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stream = connect(&mut js, port, listener).await;
    let _mux = store.replicate_stream(stream).unwrap();

    // The channel closes: JS sees its peer go away.
    let deadline = Instant::now() + WAIT;
    loop {
        let info = js
            .request(json!({"cmd": "info", "key": key}), "info", WAIT)
            .await;
        if info["peers"].as_u64() == Some(0) && core.peers().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the tampering peer was not dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(core.bitfield().is_empty(), "a tampered block was stored");
    // JS announces its length before its blocks, so the (valid) tree may have come on its
    // own, before the first block request; a tampered proof never changes the tree.
    assert!(core.is_empty() || core.len() == 20, "length {}", core.len());
    assert!(!fetch.is_finished());
    fetch.abort();
}

/// A Rust peer that flips a byte of every block it sends: JS hypercore reports a
/// verification error and does not store the block (JS server, Rust client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_blocks_from_rust_are_rejected_by_js() {
    let writer = Hypercore::in_memory(KeyPair::generate()).unwrap();
    writer.append((0..20).map(|i| block(i, 500, 8))).unwrap();
    let key = writer.key().to_hex();
    let (mut js, port, listener) = start(Role::JsServer).await;
    js.request(json!({"cmd": "open", "key": key}), "opened", WAIT)
        .await;
    let stream = connect(&mut js, port, listener).await;
    let (mux, driver) = MuxHandle::new(stream, DriverConfig::default());
    let info = *mux.stream_info();
    let capability = corenet_replication::caps::replication_capability(
        info.is_initiator,
        writer.key().as_bytes(),
        &info.handshake_hash,
    );
    let opts = ChannelOptions::new(PROTOCOL)
        .with_id(bytes::Bytes::copy_from_slice(
            writer.discovery_key().as_bytes(),
        ))
        .with_aliases([PROTOCOL_ALIAS])
        .with_handshake_encoded(&Handshake {
            seeks: true,
            capability,
        });
    let mut ch = mux.open(&opts).unwrap();
    tokio::spawn(driver);
    timeout(WAIT, ch.opened()).await.unwrap().unwrap();
    let range = Range {
        drop: false,
        start: 0,
        length: 20,
    };
    ch.send_encoded(MSG_RANGE, &range).await.unwrap();
    let sync = Sync {
        fork: 0,
        length: 20,
        remote_length: 0,
        can_upgrade: true,
        uploading: true,
        downloading: true,
        has_manifest: true,
        allow_push: false,
    };
    ch.send_encoded(MSG_SYNC, &sync).await.unwrap();
    // Answer requests with tampered blocks, in the background.
    let evil = tokio::spawn({
        let writer = writer.clone();
        async move {
            let mut tampered = 0u32;
            while let Some(m) = ch.recv().await {
                let Ok(Some(Message::Request(r))) = Message::decode(m.message_type, &m.payload)
                else {
                    continue;
                };
                let Ok(Some(mut proof)) = writer.create_proof(&r.proof) else {
                    continue;
                };
                if let Some(b) = proof.block.as_mut() {
                    let mut v = b.value.to_vec();
                    v[0] ^= 1;
                    b.value = v.into();
                    tampered += 1;
                }
                let data = Data {
                    request: r.id,
                    proof,
                };
                if ch.send_encoded(MSG_DATA, &data).await.is_err() {
                    break;
                }
            }
            tampered
        }
    });
    let cmd = json!({"cmd": "get", "key": key, "indexes": [3], "timeout": 2000});
    js.command(cmd).await;
    let err = js.expect("verification-error", WAIT).await;
    assert_eq!(err["key"], key.as_str());
    js.expect("get-failed", WAIT).await;
    let has = js
        .request(json!({"cmd": "has", "key": key, "index": 3}), "has", WAIT)
        .await;
    assert_eq!(has["value"], false);
    mux.close();
    assert!(timeout(WAIT, evil).await.unwrap().unwrap() >= 1);
}

/// A writer truncates and writes on: the other side finds the shared prefix, switches to the
/// new fork and gets the new blocks, both ways (JS server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncations_are_followed_both_ways() {
    let store = Corestore::in_memory();
    let mine = store.get("forking").unwrap();
    mine.append((0..40).map(|i| block(i, 100, 9))).unwrap();
    let create = json!({"cmd": "create", "name": "forking", "blocks": 40, "size": 100, "salt": 10});
    let open = json!({"cmd": "open", "key": mine.key().to_hex()});
    let (mut js, _mux, replies) = session(Role::JsServer, &store, &[create, open]).await;
    let theirs_key = replies[0]["key"].as_str().unwrap().to_string();
    let theirs = store.get_by_key(key_of(&replies[0])).unwrap();
    let live = theirs.download(0..);
    let mut progress = live.progress();
    timeout(WAIT, progress.wait_for(|p| p.blocks == 40))
        .await
        .unwrap()
        .unwrap();
    let cmd = json!({"cmd": "download", "key": mine.key().to_hex(), "start": 0, "end": 40});
    js.request(cmd, "downloaded", WAIT).await;

    // JS truncates to 25 and appends 5 (with another salt): Rust follows.
    let cmd = json!({"cmd": "truncate", "key": theirs_key, "length": 25});
    let t = js.request(cmd, "truncated", WAIT).await;
    assert_eq!(t["fork"], 1);
    let cmd = json!({"cmd": "append", "key": theirs_key, "blocks": 5, "size": 100, "salt": 11});
    js.request(cmd, "appended", WAIT).await;
    let mut status = theirs.status();
    timeout(WAIT, status.wait_for(|s| s.fork == 1 && s.length == 30))
        .await
        .unwrap()
        .unwrap();
    timeout(WAIT, progress.wait_for(|p| p.blocks == 30))
        .await
        .unwrap()
        .unwrap();
    for i in 0..30 {
        let salt = if i < 25 { 10 } else { 11 };
        assert_eq!(
            theirs.get(i).unwrap().unwrap().to_vec(),
            block(i, 100, salt),
            "block {i}"
        );
    }

    // Rust truncates to 10 and appends 3: JS follows.
    mine.truncate(10).unwrap();
    mine.append((10..13).map(|i| block(i, 100, 12))).unwrap();
    let cmd = json!({"cmd": "waitFork", "key": mine.key().to_hex(), "fork": 1, "length": 13});
    let f = js.request(cmd, "fork", WAIT).await;
    assert_eq!(
        (f["fork"].as_u64(), f["length"].as_u64()),
        (Some(1), Some(13))
    );
    let cmd = json!({"cmd": "get", "key": mine.key().to_hex(), "indexes": [9, 12]});
    let got = js.request(cmd, "blocks", WAIT).await;
    assert_eq!(got["sha256"][0], sha256(&block(9, 100, 9)));
    assert_eq!(got["sha256"][1], sha256(&block(12, 100, 12)));
    drop(live);
}
