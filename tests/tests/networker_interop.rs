//! The corenet facade (`corenet::Networker`) and a JS app built the usual way (Hyperswarm +
//! Corestore + a protomux `chat` channel of `c.string` messages, `tests/interop/
//! networker-peer.js`) on one local testnet:
//!
//! - both sides announce AND look up the same discovery key, and both dial (the firewall, an
//!   async hook, holds the JS dial until ours has started): one connection survives, the Rust
//!   side reports exactly one `PeerAdd` and has one entry in `peers()` (the JS key, a
//!   127.0.0.1 address), the JS side has one live connection;
//! - chat lines both ways over that connection (Rust `Extension::send` to the peer of the
//!   `PeerAdd` event, sent before the JS channel is known to be open, and `broadcast`; JS
//!   lines, to all and to one key, arrive on `messages()` with the JS key as sender);
//! - replication both ways over the same connection: a JS-written core read by corenet and a
//!   corenet-written core read by JS, including a multi-packet block and live appends made
//!   after the connection was up;
//! - the JS app shuts down (`swarm.destroy()`): exactly one `PeerRemove`; it restarts with
//!   the same seed and storage: exactly one new `PeerAdd` on a new connection, chat both ways
//!   again, JS reads what corenet appended while it was away and corenet reads what JS
//!   appends after the restart;
//! - the JS app is killed (SIGKILL, nothing sent) and restarted at once, before the dead
//!   connection could be noticed: the new connection replaces the old one, reported as one
//!   `PeerRemove` then one `PeerAdd`, and the new peer chats; a last shutdown gives one
//!   `PeerRemove`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corenet::extensions::{Extension, ExtensionOptions, Messages, Utf8};
use corenet::{
    Configure, Corestore, DiscoveryKey, Firewall, KeyPair, Networker, NetworkerEvent, Peer,
    PublicKey, Testnet,
};
use corenet_tests::{natted_dht, JsPeer};
use serde_json::{json, Value};
use tokio::time::timeout;

/// The bound of every single wait.
const WAIT: Duration = Duration::from_secs(20);
/// How long "nothing more happens" is watched for.
const QUIET: Duration = Duration::from_millis(600);
/// The seeds make the Rust key the larger one (0x353c… > 0x2012…): in a simultaneous dial,
/// the Rust-initiated connection is the one both tie-breaks keep (checked below).
const JS_SEED: [u8; 32] = [0x52; 32];
const RUST_SEED: [u8; 32] = [0x4a; 32];

/// The JS app: every event it prints is logged (for counts) and kept until a wait consumes
/// it, so waiting for one event never loses another.
struct App {
    js: JsPeer,
    backlog: VecDeque<Value>,
    log: Vec<Value>,
    next_id: u64,
}

impl App {
    async fn start(testnet: &Testnet, storage: &std::path::Path) -> (App, PublicKey) {
        let boot = testnet.bootstrap[0].to_string();
        let seed = hex::encode(JS_SEED);
        let dir = storage.to_str().expect("utf-8 temp dir");
        let js = JsPeer::spawn_interactive("networker-peer.js", &[&boot, &seed, dir]);
        let mut app = App {
            js,
            backlog: VecDeque::new(),
            log: Vec::new(),
            next_id: 0,
        };
        let ready = app.wait("ready", |_| true).await;
        let pk = PublicKey::from_hex(ready["publicKey"].as_str().unwrap()).unwrap();
        (app, pk)
    }

    /// Waits for an event named `name` that `pred` accepts; panics on a JS `error` event.
    async fn wait(&mut self, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let matches = |ev: &Value| ev["event"] == json!(name) && pred(ev);
        if let Some(i) = self.backlog.iter().position(matches) {
            return self.backlog.remove(i).unwrap();
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(!left.is_zero(), "timed out waiting for JS event {name}");
            let ev = self.js.next_event(left).await;
            assert!(ev["event"] != json!("error"), "JS app error: {ev}");
            self.log.push(ev.clone());
            if matches(&ev) {
                return ev;
            }
            self.backlog.push_back(ev);
        }
    }

    /// Sends a command; returns the id its reply will carry.
    async fn command(&mut self, mut cmd: Value) -> u64 {
        self.next_id += 1;
        cmd["id"] = json!(self.next_id);
        self.js.command(cmd).await;
        self.next_id
    }

    /// The reply named `reply` to command `id`.
    async fn reply(&mut self, reply: &str, id: u64) -> Value {
        self.wait(reply, |ev| ev["id"] == json!(id)).await
    }

    /// Sends a command and waits for its reply (named `reply`, same id).
    async fn request(&mut self, cmd: Value, reply: &str) -> Value {
        let id = self.command(cmd).await;
        self.reply(reply, id).await
    }

    /// Logs the events the app prints within `d`.
    async fn drain(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let Ok(ev) = tokio::time::timeout_at(deadline, self.js.next_event(WAIT)).await else {
                return;
            };
            assert!(ev["event"] != json!("error"), "JS app error: {ev}");
            self.log.push(ev.clone());
            self.backlog.push_back(ev);
        }
    }

    /// How many `event` events about `key` (field `field`) the app printed so far.
    fn count(&self, event: &str, field: &str, key: &PublicKey) -> usize {
        self.log
            .iter()
            .filter(|e| e["event"] == json!(event) && e[field] == json!(key.to_hex()))
            .count()
    }

    /// The chat line `text` from `from`.
    async fn chat_from(&mut self, from: &PublicKey, text: &str) {
        let ev = self.wait("chat", |e| e["text"] == json!(text)).await;
        assert_eq!(ev["from"], json!(from.to_hex()), "sender of {text:?}");
    }

    /// Block `index` of core `key`, read by the JS app (downloading it if need be).
    async fn get(&mut self, key: &PublicKey, index: u64) -> String {
        let ev = self
            .request(
                json!({"cmd": "get", "key": key.to_hex(), "index": index, "timeout": 15000}),
                "block",
            )
            .await;
        ev["text"].as_str().unwrap().to_owned()
    }

    async fn wait_length(&mut self, key: &PublicKey, length: u64) {
        let ev = self
            .request(
                json!({"cmd": "waitLength", "key": key.to_hex(), "length": length}),
                "length",
            )
            .await;
        assert!(ev["length"].as_u64().unwrap() >= length);
    }
}

/// The next peer event (topic events are skipped).
async fn next_peer_event(events: &mut corenet::Events) -> NetworkerEvent {
    loop {
        let ev = timeout(WAIT, events.recv())
            .await
            .expect("a peer event in time")
            .expect("networker events open");
        if matches!(
            ev,
            NetworkerEvent::PeerAdd(_) | NetworkerEvent::PeerRemove(_)
        ) {
            return ev;
        }
    }
}

async fn expect_peer_add(events: &mut corenet::Events) -> Peer {
    match next_peer_event(events).await {
        NetworkerEvent::PeerAdd(p) => p,
        other => panic!("expected PeerAdd, got {other:?}"),
    }
}

async fn expect_peer_remove(events: &mut corenet::Events) -> Peer {
    match next_peer_event(events).await {
        NetworkerEvent::PeerRemove(p) => p,
        other => panic!("expected PeerRemove, got {other:?}"),
    }
}

/// No peer event for `QUIET`.
async fn no_peer_event(events: &mut corenet::Events) {
    let deadline = tokio::time::Instant::now() + QUIET;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => return,
            Ok(Some(NetworkerEvent::PeerAdd(p))) => {
                panic!("unexpected PeerAdd {}", p.remote_public_key)
            }
            Ok(Some(NetworkerEvent::PeerRemove(p))) => {
                panic!("unexpected PeerRemove {}", p.remote_public_key)
            }
            Ok(None) => panic!("networker events ended"),
            Ok(Some(_)) => {}
        }
    }
}

/// The next chat line on the Rust side: its text and sender.
async fn rust_chat(inbox: &mut Messages<Utf8>) -> (String, PublicKey) {
    let (text, from) = timeout(WAIT, inbox.recv())
        .await
        .expect("a chat line in time")
        .expect("chat extension open");
    (text, *from.public_key())
}

async fn fetch_text(core: &corenet::Hypercore, index: u64) -> String {
    let b = timeout(WAIT, core.fetch(index))
        .await
        .unwrap_or_else(|_| panic!("block {index} in time"))
        .expect("fetch");
    String::from_utf8(b.to_vec()).expect("utf-8 block")
}

/// The Rust side checks its one peer is the JS app, on 127.0.0.1, on connection `id`.
fn assert_one_peer(net: &Networker, js_pk: &PublicKey, id: u64) {
    let peers = net.peers();
    assert_eq!(peers.len(), 1, "exactly one peer: {peers:?}");
    assert_eq!(peers[0].remote_public_key, *js_pk);
    assert_eq!(peers[0].remote_address.ip().octets(), [127, 0, 0, 1]);
    assert_eq!(
        peers[0].connection_id, id,
        "the PeerAdd connection is the live one"
    );
}

/// The JS side has one live connection, to us, with chat open.
async fn assert_js_one_connection(app: &mut App, rust_pk: &PublicKey) {
    let ev = app
        .request(json!({"cmd": "connections"}), "connections")
        .await;
    let peers = ev["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1, "one JS connection: {ev}");
    assert_eq!(peers[0]["publicKey"], json!(rust_pk.to_hex()));
    assert_eq!(peers[0]["chatOpen"], json!(true));
    let opened = app.count("connection", "remotePublicKey", rust_pk);
    let closed = app.count("disconnect", "remotePublicKey", rust_pk);
    assert_eq!(
        opened - closed,
        1,
        "JS saw {opened} connection(s), {closed} closed"
    );
}

/// A block of several UDX packets (and secret-stream frames).
fn big_line() -> String {
    (0..6000).map(|i| format!("{i:05} ")).collect::<String>()
}

#[tokio::test]
async fn js_app_and_networker_chat_and_replicate_across_a_restart() {
    corenet_tests::require_js();
    let started = Instant::now();
    let testnet = Testnet::new(5, 0).await.unwrap();
    let storage = tempfile::tempdir().unwrap();

    // The Rust side: a core with three blocks, a chat extension.
    let store = Corestore::in_memory();
    let rust_core = store.get("rust-notes").unwrap();
    rust_core
        .append(["r0".to_owned(), "r1".to_owned(), big_line()].map(bytes::Bytes::from))
        .unwrap();
    let rust_key = rust_core.key();
    let topic = rust_core.discovery_key();
    let js_pk = KeyPair::from_seed(JS_SEED).public_key();
    let rust_pk = KeyPair::from_seed(RUST_SEED).public_key();
    assert!(rust_pk.as_bytes() > js_pk.as_bytes());

    // Both sides dial, for sure: the firewall (an async authentication hook) holds the JS
    // app's dial until our own dial to it has started, then accepts it.
    let hold: Arc<Mutex<Option<corenet_swarm::Swarm>>> = Arc::default();
    let js_dials = Arc::new(AtomicUsize::new(0));
    let firewall: Firewall = {
        let (hold, js_dials) = (hold.clone(), js_dials.clone());
        Arc::new(move |pk, _| {
            let (hold, js_dials) = (hold.clone(), js_dials.clone());
            Box::pin(async move {
                if pk == js_pk {
                    js_dials.fetch_add(1, Ordering::Relaxed);
                }
                let deadline = Instant::now() + Duration::from_secs(3);
                loop {
                    let swarm = hold.lock().unwrap().clone();
                    match swarm {
                        Some(s) if s.stats().client_attempted == 0 && Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(5)).await
                        }
                        _ => return true,
                    }
                }
            })
        })
    };
    let net = Networker::builder(store)
        .seed(RUST_SEED)
        .bootstrap(testnet.bootstrap.clone())
        .firewall(firewall)
        .build()
        .await
        .unwrap();
    assert_eq!(net.public_key(), rust_pk);
    *hold.lock().unwrap() = Some(net.swarm().clone());
    let chat: Extension<Utf8> = net
        .register_extension("chat", ExtensionOptions::utf8())
        .await
        .unwrap();
    let mut inbox = chat.messages();
    let mut events = net.events();

    // The JS app: the same seed makes the same key on both stacks.
    let (mut app, pk) = App::start(&testnet, storage.path()).await;
    assert_eq!(pk, js_pk);
    let created = app
        .request(
            json!({"cmd": "create", "name": "js-notes", "data": ["j0", "j1"]}),
            "created",
        )
        .await;
    let js_key = PublicKey::from_hex(created["key"].as_str().unwrap()).unwrap();
    assert_eq!(
        created["discoveryKey"],
        json!(DiscoveryKey::from_key(js_key.as_bytes()).to_hex())
    );
    assert_eq!(created["length"], json!(2));
    let js_copy = net.corestore().get_by_key(js_key).unwrap();

    // Both announce, then both look up: the JS app first, and we once its dial is held by
    // our firewall, so each finds and dials the other.
    let announce_only = Configure::announce_only();
    net.configure(topic, announce_only).await.unwrap();
    app.request(
        json!({"cmd": "join", "topic": topic.to_hex(), "server": true, "client": false}),
        "joined",
    )
    .await;
    let both = json!({"cmd": "join", "topic": topic.to_hex(), "server": true, "client": true});
    let join = app.command(both.clone()).await;
    let deadline = Instant::now() + WAIT;
    while js_dials.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the JS app never dialled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    net.configure(topic, Configure::default()).await.unwrap();
    app.reply("joined", join).await;
    assert_eq!(net.status(&topic), Some(Configure::default()));

    // Exactly one PeerAdd; a chat line sent from it, before JS's side is known to be open,
    // arrives.
    let peer = expect_peer_add(&mut events).await;
    assert_eq!(peer.remote_public_key, js_pk);
    assert_eq!(peer.remote_address.ip().octets(), [127, 0, 0, 1]);
    assert!(peer.is_initiator, "the larger key's dial is kept");
    chat.send("hello from rust", peer.extension_peer()).unwrap();
    app.chat_from(&rust_pk, "hello from rust").await;
    let ev = app
        .request(json!({"cmd": "chat", "text": "hello from js"}), "sent")
        .await;
    assert_eq!(ev["count"], json!(1));
    assert_eq!(
        rust_chat(&mut inbox).await,
        ("hello from js".to_owned(), js_pk)
    );
    // The JS app reports the connection we dialled (the one both tie-breaks keep). Its own
    // dial may have opened first (JS on its defaults punches to us, or reaches us directly,
    // while our dial to it punches) and been replaced by ours: that one is reported too.
    let ev = app
        .wait("connection", |e| {
            e["remotePublicKey"] == json!(rust_pk.to_hex()) && e["isInitiator"] == json!(false)
        })
        .await;
    assert_eq!(ev["remoteHost"], json!("127.0.0.1"));

    // Replication both ways over the same connection.
    assert_eq!(fetch_text(&js_copy, 0).await, "j0");
    assert_eq!(fetch_text(&js_copy, 1).await, "j1");
    let opened = app
        .request(json!({"cmd": "open", "key": rust_key.to_hex()}), "opened")
        .await;
    assert_eq!(opened["discoveryKey"], json!(topic.to_hex()));
    assert_eq!(opened["writable"], json!(false));
    app.wait_length(&rust_key, 3).await;
    assert_eq!(app.get(&rust_key, 0).await, "r0");
    assert_eq!(app.get(&rust_key, 2).await, big_line());
    // Live appends, both ways.
    rust_core.append([&b"r3 live"[..]]).unwrap();
    app.wait_length(&rust_key, 4).await;
    assert_eq!(app.get(&rust_key, 3).await, "r3 live");
    let ev = app
        .request(
            json!({"cmd": "append", "key": js_key.to_hex(), "data": ["j2 live"]}),
            "appended",
        )
        .await;
    assert_eq!(ev["length"], json!(3));
    timeout(WAIT, js_copy.wait_for_length(3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fetch_text(&js_copy, 2).await, "j2 live");

    // Broadcast reaches the one peer; a line addressed to JS by key comes back.
    assert_eq!(chat.broadcast("to everyone").unwrap(), 1);
    app.chat_from(&rust_pk, "to everyone").await;
    let ev = app
        .request(
            json!({"cmd": "chat", "text": "just to you", "to": rust_pk.to_hex()}),
            "sent",
        )
        .await;
    assert_eq!(ev["count"], json!(1));
    assert_eq!(
        rust_chat(&mut inbox).await,
        ("just to you".to_owned(), js_pk)
    );

    // Two dials, one connection: nothing else happens on either side.
    no_peer_event(&mut events).await;
    app.drain(Duration::from_millis(100)).await;
    assert_one_peer(&net, &js_pk, peer.connection_id);
    assert_js_one_connection(&mut app, &rust_pk).await;
    assert!(inbox.try_recv().is_none(), "no duplicate chat line");
    // Both really dialled: ours opened, theirs reached the firewall (and was dropped as the
    // duplicate on both sides).
    *hold.lock().unwrap() = None;
    let st = net.swarm().stats();
    println!(
        "dials: rust attempted {} opened {}, accepted {}; js dialled {} time(s), saw {} connection(s)",
        st.client_attempted,
        st.client_opened,
        st.server_opened,
        js_dials.load(Ordering::Relaxed),
        app.count("connection", "remotePublicKey", &rust_pk)
    );
    assert_eq!(st.client_opened, 1, "our dial opened");
    assert_eq!(st.server_opened, 0, "theirs never replaced it");
    assert!(
        js_dials.load(Ordering::Relaxed) >= 1,
        "the JS app dialled too"
    );

    // The JS app shuts down: exactly one PeerRemove.
    app.request(json!({"cmd": "exit"}), "bye").await;
    assert_eq!(app.js.wait(WAIT).await, Some(0));
    let gone = expect_peer_remove(&mut events).await;
    assert_eq!(gone.remote_public_key, js_pk);
    assert_eq!(gone.connection_id, peer.connection_id);
    assert!(net.peers().is_empty());
    no_peer_event(&mut events).await;
    // Written while the JS app is away.
    rust_core.append([&b"r4 while away"[..]]).unwrap();

    // It comes back with the same seed and storage: one new PeerAdd, a new connection.
    let (mut app, again) = App::start(&testnet, storage.path()).await;
    assert_eq!(again, js_pk);
    let opened = app
        .request(json!({"cmd": "open", "key": js_key.to_hex()}), "opened")
        .await;
    assert_eq!(
        opened["writable"],
        json!(true),
        "the JS core survived the restart"
    );
    assert_eq!(opened["length"], json!(3));
    app.request(both.clone(), "joined").await;
    let peer2 = expect_peer_add(&mut events).await;
    assert_eq!(peer2.remote_public_key, js_pk);
    assert_ne!(peer2.connection_id, peer.connection_id);

    // Chat both ways on the new connection.
    chat.send("welcome back", peer2.extension_peer()).unwrap();
    app.chat_from(&rust_pk, "welcome back").await;
    let ev = app
        .request(json!({"cmd": "chat", "text": "i am back"}), "sent")
        .await;
    assert_eq!(ev["count"], json!(1));
    assert_eq!(rust_chat(&mut inbox).await, ("i am back".to_owned(), js_pk));

    // Replication again: JS catches up on what it missed, corenet reads new JS blocks.
    app.wait_length(&rust_key, 5).await;
    assert_eq!(app.get(&rust_key, 4).await, "r4 while away");
    let ev = app
        .request(
            json!({"cmd": "append", "key": js_key.to_hex(), "data": ["j3 after restart"]}),
            "appended",
        )
        .await;
    assert_eq!(ev["length"], json!(4));
    timeout(WAIT, js_copy.wait_for_length(4))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fetch_text(&js_copy, 3).await, "j3 after restart");

    no_peer_event(&mut events).await;
    app.drain(Duration::from_millis(100)).await;
    assert_one_peer(&net, &js_pk, peer2.connection_id);
    assert_js_one_connection(&mut app, &rust_pk).await;
    assert!(inbox.try_recv().is_none(), "no duplicate chat line");

    // Killed (nothing sent on the wire) and restarted at once, before the Rust side could
    // notice: the new connection replaces the old one. The Rust side reports the old peer
    // removed and the new one added, exactly once each, and the new peer is the one that
    // works.
    drop(app);
    let (mut app, again) = App::start(&testnet, storage.path()).await;
    assert_eq!(again, js_pk);
    app.request(json!({"cmd": "open", "key": js_key.to_hex()}), "opened")
        .await;
    let quick = Instant::now();
    app.request(both, "joined").await;
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(next_peer_event(&mut events).await);
    }
    println!("the replacement was reported after {:?}", quick.elapsed());
    let (removed, added) = match &got[..] {
        [NetworkerEvent::PeerRemove(r), NetworkerEvent::PeerAdd(a)] => (r.clone(), a.clone()),
        other => panic!("expected PeerRemove then PeerAdd, got {other:?}"),
    };
    assert_eq!(removed.connection_id, peer2.connection_id);
    assert_eq!(added.remote_public_key, js_pk);
    assert_ne!(added.connection_id, peer2.connection_id);
    chat.send("third time", added.extension_peer()).unwrap();
    app.chat_from(&rust_pk, "third time").await;
    app.request(json!({"cmd": "chat", "text": "still here"}), "sent")
        .await;
    assert_eq!(
        rust_chat(&mut inbox).await,
        ("still here".to_owned(), js_pk)
    );
    no_peer_event(&mut events).await;
    assert_one_peer(&net, &js_pk, added.connection_id);

    app.request(json!({"cmd": "exit"}), "bye").await;
    let gone = expect_peer_remove(&mut events).await;
    assert_eq!(gone.connection_id, added.connection_id);
    assert!(net.peers().is_empty());
    no_peer_event(&mut events).await;

    net.close().await.unwrap();
    testnet.destroy().await;
    println!("total {:?}", started.elapsed());
}

/// A networker behind a (simulated) NAT on loopback replicates with a default-option JS app
/// both ways, the connection going through the holepunch: the JS app dials a networker that
/// only announces, and a networker that only looks up dials the JS app.
#[tokio::test]
async fn holepunched_replication_with_a_default_js_app_both_ways() {
    corenet_tests::require_js();
    let testnet = Testnet::behind_nats(5).await.unwrap();
    let storage = tempfile::tempdir().unwrap();
    let (mut app, js_pk) = App::start(&testnet, storage.path()).await;

    // JS dials us: we announce a core, the JS app looks it up and reads it.
    let store = Corestore::in_memory();
    let core = store.get("punched").unwrap();
    core.append(["p0".to_owned(), big_line()].map(bytes::Bytes::from))
        .unwrap();
    let net = Networker::builder(store)
        .seed([0x61; 32])
        .dht(natted_dht(testnet.bootstrap.clone()).await)
        .build()
        .await
        .unwrap();
    let mut events = net.events();
    net.configure(core.discovery_key(), Configure::announce_only())
        .await
        .unwrap();
    app.request(json!({"cmd": "open", "key": core.key().to_hex()}), "opened")
        .await;
    app.request(
        json!({"cmd": "join", "topic": core.discovery_key().to_hex(), "server": false, "client": true}),
        "joined",
    )
    .await;
    let peer = expect_peer_add(&mut events).await;
    assert_eq!(peer.remote_public_key, js_pk);
    assert!(!peer.is_initiator, "the JS app dialled");
    assert_eq!(peer.path, corenet::PathKind::Holepunch, "JS -> Rust");
    assert_eq!(app.get(&core.key(), 1).await, big_line());

    // We dial JS: the JS app announces its core, a look-up-only networker fetches it.
    let created = app
        .request(
            json!({"cmd": "create", "name": "js-punched", "data": ["q0", "q1"]}),
            "created",
        )
        .await;
    let js_key = PublicKey::from_hex(created["key"].as_str().unwrap()).unwrap();
    let dk = DiscoveryKey::from_key(js_key.as_bytes());
    app.request(
        json!({"cmd": "join", "topic": dk.to_hex(), "server": true, "client": false}),
        "joined",
    )
    .await;
    let store2 = Corestore::in_memory();
    let copy = store2.get_by_key(js_key).unwrap();
    let net2 = Networker::builder(store2)
        .seed([0x62; 32])
        .dht(natted_dht(testnet.bootstrap.clone()).await)
        .build()
        .await
        .unwrap();
    let mut events2 = net2.events();
    net2.configure(dk, Configure::lookup_only()).await.unwrap();
    let peer = expect_peer_add(&mut events2).await;
    assert_eq!(peer.remote_public_key, js_pk);
    assert!(peer.is_initiator, "we dialled");
    assert_eq!(peer.path, corenet::PathKind::Holepunch, "Rust -> JS");
    assert_eq!(fetch_text(&copy, 1).await, "q1");

    net.close().await.unwrap();
    net2.close().await.unwrap();
    app.js.command(json!({"cmd": "exit"})).await;
}
