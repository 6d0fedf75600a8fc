//! corenet-mux against JS protomux 3.x (`tests/interop/protomux-peer.js`) over
//! `@hyperswarm/secret-stream` over TCP on 127.0.0.1, with JS as server and as client:
//! pairing both ways (hooks on either side), messages of several types, corked batches from
//! each side, rejects, closes, and close/re-open races (protomux PR #30).

use std::collections::HashMap;
use std::time::Duration;

use corenet_codec::hash::blake2b_256;
use corenet_mux::{
    Channel, ChannelOptions, CloseReason, DriverConfig, Error, MuxHandle, PairRequests,
};
use corenet_noise::{Config, KeyPair, SecretStream};
use corenet_tests::JsPeer;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(30);
const JS_SEED: [u8; 32] = [0x22; 32];

#[derive(Debug, Clone, Copy)]
enum Role {
    /// JS listens, Rust connects (Rust is the Noise initiator).
    JsServer,
    /// Rust listens, JS connects.
    JsClient,
}

const ROLES: [Role; 2] = [Role::JsServer, Role::JsClient];

struct Peer {
    js: JsPeer,
    mux: MuxHandle,
    driver: JoinHandle<Result<(), Error>>,
    /// Events read while looking for another one, by channel name.
    backlog: Vec<Value>,
}

async fn connect(role: Role) -> Peer {
    let seed = hex::encode(JS_SEED);
    let (mut js, stream) = match role {
        Role::JsServer => {
            let mut js =
                JsPeer::spawn_interactive("protomux-peer.js", &["server", "127.0.0.1", "0", &seed]);
            let port = js.expect("listening", WAIT).await["port"].as_u64().unwrap() as u16;
            let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let s = SecretStream::new(tcp, true, &KeyPair::generate(), Config::default())
                .await
                .unwrap();
            (js, s)
        }
        Role::JsClient => {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port().to_string();
            let js = JsPeer::spawn_interactive(
                "protomux-peer.js",
                &["client", "127.0.0.1", &port, &seed],
            );
            let (tcp, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
            let s = SecretStream::new(tcp, false, &KeyPair::generate(), Config::default())
                .await
                .unwrap();
            (js, s)
        }
    };
    assert_eq!(
        stream.remote_public_key(),
        KeyPair::from_seed(JS_SEED).public_key()
    );
    js.expect("ready", WAIT).await;
    let (mux, driver) = MuxHandle::new(stream, DriverConfig::default());
    Peer {
        js,
        mux,
        driver: tokio::spawn(driver),
        backlog: Vec::new(),
    }
}

impl Peer {
    async fn cmd(&mut self, c: Value) {
        self.js.command(c).await;
    }

    /// Sends commands, then waits until JS has processed them.
    async fn cmds(&mut self, cs: impl IntoIterator<Item = Value>) {
        for c in cs {
            self.js.command(c).await;
        }
        self.sync().await;
    }

    async fn sync(&mut self) {
        self.js.command(json!({"cmd": "ping", "token": 1})).await;
        self.wait_for(|e| e["event"] == "pong").await;
    }

    /// The next JS event matching `pred` (earlier non-matching events are kept).
    async fn wait_for(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(i);
        }
        loop {
            let e = self.js.next_event(WAIT).await;
            assert!(e["event"] != "error", "JS peer reported an error: {e}");
            if pred(&e) {
                return e;
            }
            self.backlog.push(e);
        }
    }

    async fn event(&mut self, event: &str, name: &str) -> Value {
        let (event, name) = (event.to_string(), name.to_string());
        self.wait_for(move |e| e["event"] == event.as_str() && e["name"] == name.as_str())
            .await
    }

    /// Waits for JS to report `n` messages on channel `name`; returns (type, data) in order.
    async fn messages(&mut self, name: &str, n: usize) -> Vec<(u64, Value)> {
        let mut out = Vec::new();
        while out.len() < n {
            let e = self.event("message", name).await;
            out.push((e["type"].as_u64().unwrap(), e["data"].clone()));
        }
        out
    }

    /// Opens a channel on the JS side (it must succeed).
    async fn js_open(&mut self, name: &str, protocol: &str, id: Option<&[u8]>, hs: &[u8]) {
        self.cmd(json!({
            "cmd": "open", "name": name, "protocol": protocol,
            "id": id.map(hex::encode), "handshake": hex::encode(hs),
        }))
        .await;
        let created = self.event("created", name).await;
        assert_eq!(created["ok"], true, "JS could not create {name}");
    }

    async fn finish(mut self) {
        self.mux.close();
        self.wait_for(|e| e["event"] == "stream-closed").await;
        timeout(WAIT, self.driver).await.unwrap().unwrap().unwrap();
        assert_eq!(self.js.wait(WAIT).await, Some(0));
    }
}

/// As the JS peer reports payloads: hex, or length and BLAKE2b-256 above 1 KiB.
fn reported(b: &[u8]) -> Value {
    if b.len() > 1024 {
        json!({ "len": b.len(), "blake2b": hex::encode(blake2b_256(b)) })
    } else {
        json!(hex::encode(b))
    }
}

async fn recv_n(ch: &mut Channel, n: usize) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let m = timeout(WAIT, ch.recv())
            .await
            .expect("no message from JS")
            .expect("channel closed early");
        out.push((m.message_type, m.payload.to_vec()));
    }
    out
}

async fn opened(ch: &Channel) -> Vec<u8> {
    timeout(WAIT, ch.opened())
        .await
        .expect("the JS side never opened")
        .expect("the channel closed before it opened")
        .to_vec()
}

async fn closed(ch: &Channel) -> CloseReason {
    timeout(WAIT, ch.closed())
        .await
        .expect("the channel never closed")
}

async fn request(reqs: &mut PairRequests) -> corenet_mux::PairRequest {
    timeout(WAIT, reqs.recv())
        .await
        .expect("no pair request")
        .expect("mux closed")
}

fn opts(protocol: &str) -> ChannelOptions {
    ChannelOptions::new(protocol)
}

#[tokio::test]
async fn channels_messages_batches_and_closes() {
    for role in ROLES {
        channels_messages_batches_and_closes_as(role).await;
    }
}

async fn channels_messages_batches_and_closes_as(role: Role) {
    let mut p = connect(role).await;
    let id = [9u8; 32];
    let big = vec![0x5au8; 200 * 1024];
    let mut second_reqs = p.mux.pair("test/second", None);
    p.cmds([
        json!({"cmd": "pair", "protocol": "test/chat", "mode": "accept", "name": "chat",
               "handshake": hex::encode(b"js-hs")}),
        json!({"cmd": "pair", "protocol": "test/third", "mode": "accept", "name": "third"}),
    ])
    .await;

    // Rust opens first and sends at once; JS's hook answers and gets everything.
    let mut chat = p
        .mux
        .open(
            &opts("test/chat")
                .with_id(id.to_vec())
                .with_handshake(&b"rust-hs"[..]),
        )
        .unwrap();
    let sent: Vec<(u64, Vec<u8>)> = vec![
        (0, b"hello js".to_vec()),
        (1, vec![]),
        (2, big.clone()),
        (3, b"last".to_vec()),
    ];
    for (t, d) in &sent {
        chat.send(*t, d).await.unwrap();
    }
    let pair = p.wait_for(|e| e["event"] == "pair").await;
    assert_eq!(pair["protocol"], "test/chat");
    assert_eq!(pair["id"], hex::encode(id));
    let open = p.event("open", "chat").await;
    assert_eq!(open["handshake"], hex::encode(b"rust-hs"));
    assert_eq!(opened(&chat).await, b"js-hs");
    let got = p.messages("chat", sent.len()).await;
    let want: Vec<(u64, Value)> = sent.iter().map(|(t, d)| (*t, reported(d))).collect();
    assert_eq!(got, want, "{role:?}: messages JS received");

    // JS sends every type, including a large message.
    p.cmds([
        json!({"cmd": "send", "name": "chat", "type": 3, "data": hex::encode(b"from js")}),
        json!({"cmd": "send", "name": "chat", "type": 0, "data": ""}),
        json!({"cmd": "send", "name": "chat", "type": 2, "data": {"fill": 0xa5, "len": 150_000}}),
    ])
    .await;
    assert_eq!(
        recv_n(&mut chat, 3).await,
        vec![
            (3, b"from js".to_vec()),
            (0, vec![]),
            (2, vec![0xa5; 150_000])
        ]
    );

    // A JS batch: messages on two channels and an open that our hook answers.
    p.cmds([
        json!({"cmd": "cork"}),
        json!({"cmd": "send", "name": "chat", "type": 1, "data": hex::encode(b"c1")}),
        json!({"cmd": "open", "name": "second", "protocol": "test/second",
               "handshake": hex::encode(b"2nd")}),
        json!({"cmd": "send", "name": "second", "type": 2, "data": hex::encode(b"c2")}),
        json!({"cmd": "send", "name": "chat", "type": 3, "data": hex::encode(b"c3")}),
        json!({"cmd": "uncork"}),
    ])
    .await;
    let req = request(&mut second_reqs).await;
    assert_eq!(req.key().protocol(), "test/second");
    let mut second = req.accept(&opts("test/second")).unwrap();
    assert_eq!(second.remote_handshake().unwrap(), "2nd");
    assert_eq!(
        recv_n(&mut chat, 2).await,
        vec![(1, b"c1".to_vec()), (3, b"c3".to_vec())]
    );
    assert_eq!(recv_n(&mut second, 1).await, vec![(2, b"c2".to_vec())]);
    p.event("open", "second").await;

    // A Rust batch: the same shape the other way.
    let third;
    {
        let _cork = p.mux.cork();
        chat.send_now(0, b"r1").unwrap();
        third = p.mux.open(&opts("test/third")).unwrap();
        third.send_now(1, b"r2").unwrap();
        chat.send_now(2, b"r3").unwrap();
        second.send_now(3, b"r4").unwrap();
    }
    assert_eq!(
        p.messages("chat", 2).await,
        vec![
            (0, json!(hex::encode(b"r1"))),
            (2, json!(hex::encode(b"r3")))
        ]
    );
    assert_eq!(
        p.messages("third", 1).await,
        vec![(1, json!(hex::encode(b"r2")))]
    );
    assert_eq!(
        p.messages("second", 1).await,
        vec![(3, json!(hex::encode(b"r4")))]
    );
    opened(&third).await;
    assert!(p.mux.is_opened("test/third", b""));

    // Many small messages queued at once: the driver packs them into batch frames, which
    // JS takes apart in order.
    for i in 0..300u32 {
        chat.send_now(u64::from(i % 4), &i.to_le_bytes()).unwrap();
    }
    let got = p.messages("chat", 300).await;
    let want: Vec<(u64, Value)> = (0..300u32)
        .map(|i| (u64::from(i % 4), json!(hex::encode(i.to_le_bytes()))))
        .collect();
    assert_eq!(got, want, "{role:?}: packed messages");

    // Closes from both sides.
    p.cmd(json!({"cmd": "close", "name": "chat"})).await;
    assert_eq!(closed(&chat).await, CloseReason::Remote);
    assert!(chat.recv().await.is_none());
    second.close();
    assert_eq!(p.event("close", "second").await["remote"], true);
    drop(third);
    assert_eq!(p.event("close", "third").await["remote"], true);
    assert!(p.mux.is_idle());
    p.finish().await;
}

#[tokio::test]
async fn rejects_both_ways() {
    for role in ROLES {
        let mut p = connect(role).await;
        // Rust opens what JS has no channel or hook for.
        let c = p.mux.open(&opts("test/nobody")).unwrap();
        assert_eq!(closed(&c).await, CloseReason::Rejected);
        assert!(matches!(c.opened().await, Err(Error::ChannelClosed)));

        // JS opens what we have no hook for.
        p.js_open("nope", "test/nope", None, b"").await;
        assert_eq!(p.event("close", "nope").await["remote"], true);

        // Our hook rejects explicitly.
        let mut reqs = p.mux.pair("test/maybe", None);
        p.js_open("maybe", "test/maybe", Some(b"m"), b"").await;
        request(&mut reqs).await.reject();
        assert_eq!(p.event("close", "maybe").await["remote"], true);

        // JS's hook declines (returns without opening): protomux rejects.
        p.cmds([json!({"cmd": "pair", "protocol": "test/declined", "mode": "reject"})])
            .await;
        let c = p.mux.open(&opts("test/declined")).unwrap();
        p.wait_for(|e| e["event"] == "pair").await;
        assert_eq!(closed(&c).await, CloseReason::Rejected);
        assert!(p.mux.is_idle());
        p.finish().await;
    }
}

#[tokio::test]
async fn close_and_reopen_in_both_orders() {
    for role in ROLES {
        let mut p = connect(role).await;
        let mut reqs = p.mux.pair("test/r", None);
        p.cmds([json!({"cmd": "pair", "protocol": "test/r", "mode": "accept", "name": "r"})])
            .await;

        // Rust opens; JS answers.
        let ch = p.mux.open(&opts("test/r")).unwrap();
        opened(&ch).await;
        p.event("open", "r").await;

        // JS closes and re-opens at once; our hook answers the new one.
        p.cmds([
            json!({"cmd": "close", "name": "r"}),
            json!({"cmd": "open", "name": "r2", "protocol": "test/r"}),
        ])
        .await;
        assert_eq!(closed(&ch).await, CloseReason::Remote);
        let mut ch = request(&mut reqs).await.accept(&opts("test/r")).unwrap();
        p.event("open", "r2").await;
        p.cmd(json!({"cmd": "send", "name": "r2", "type": 1, "data": "01"}))
            .await;
        assert_eq!(recv_n(&mut ch, 1).await, vec![(1, vec![1])]);

        // Rust closes and re-opens at once (the id is reused); JS's hook answers.
        ch.close();
        let mut ch = p.mux.open(&opts("test/r")).unwrap();
        assert_eq!(p.event("close", "r2").await["remote"], true);
        opened(&ch).await;
        ch.send(2, b"again").await.unwrap();
        assert_eq!(
            p.messages("r", 1).await,
            vec![(2, json!(hex::encode(b"again")))]
        );
        p.cmd(json!({"cmd": "send", "name": "r", "type": 0, "data": "02"}))
            .await;
        assert_eq!(recv_n(&mut ch, 1).await, vec![(0, vec![2])]);
        p.finish().await;
    }
}

/// protomux PR #30, our side closing: a channel opened and closed before JS answered, then
/// replaced. With a JS hook that answers at once, the replacement pairs.
#[tokio::test]
async fn a_replacement_opened_before_js_answered_pairs() {
    for role in ROLES {
        let mut p = connect(role).await;
        p.cmds([json!({"cmd": "pair", "protocol": "test/s", "mode": "accept", "name": "s"})])
            .await;
        let first = p.mux.open(&opts("test/s")).unwrap();
        first.close();
        let mut second = p.mux.open(&opts("test/s")).unwrap();
        opened(&second).await;
        second.send(1, b"second").await.unwrap();
        // JS opened a channel for each open; the first was closed by our close.
        let msgs = p.messages("s", 1).await;
        assert_eq!(msgs, vec![(1, json!(hex::encode(b"second")))]);
        p.cmd(json!({"cmd": "send", "name": "s", "type": 0, "data": "ff"}))
            .await;
        assert_eq!(recv_n(&mut second, 1).await, vec![(0, vec![0xff])]);
        assert!(!p.mux.is_idle());
        drop(first);
        p.finish().await;
    }
}

/// protomux PR #30 with a JS hook that answers later: JS 3.12 ignores our close of the channel
/// it has not answered, so its hook opens a channel for it anyway (a zombie). Our second
/// `close` answers that open and closes the zombie. The replacement then gets an answer either
/// way (which one depends on whether the zombie was still open when JS's hook ran for the
/// replacement): JS opens a channel for it, or rejects it and a new open pairs. Nothing hangs.
#[tokio::test]
async fn a_late_js_answer_to_a_closed_channel_is_cleaned_up() {
    for role in ROLES {
        let mut p = connect(role).await;
        p.cmds([
            json!({"cmd": "pair", "protocol": "test/z", "mode": "acceptLater",
                       "delay": 200, "name": "z"}),
        ])
        .await;
        let first = p.mux.open(&opts("test/z")).unwrap();
        first.close();
        let second = p.mux.open(&opts("test/z")).unwrap();
        // JS's zombie for the first open is closed by our answer.
        p.event("open", "z").await;
        assert_eq!(p.event("close", "z").await["remote"], true);
        let mut paired = match timeout(WAIT, second.opened()).await.unwrap() {
            Ok(_) => second,
            Err(_) => {
                assert_eq!(second.close_reason(), Some(CloseReason::Rejected));
                assert!(p.mux.is_idle(), "every id is released");
                let third = p.mux.open(&opts("test/z")).unwrap();
                opened(&third).await;
                third
            }
        };
        p.event("open", "z").await;
        p.cmds([
            json!({"cmd": "state", "name": "z", "protocol": "test/z"}),
            json!({"cmd": "send", "name": "z", "type": 1, "data": "2a"}),
        ])
        .await;
        let state = p.wait_for(|e| e["event"] == "state").await;
        assert_eq!(
            (&state["opened"], &state["muxOpened"]),
            (&json!(true), &json!(true))
        );
        assert_eq!(recv_n(&mut paired, 1).await, vec![(1, vec![0x2a])]);
        p.finish().await;
    }
}

/// protomux PR #30, JS closing: JS opens, closes and re-opens before we answer. JS-to-JS this
/// leaves the replacement hanging (the stale entry swallows the answer); we answer the close
/// of the pending open with a reject, so the replacement pairs.
#[tokio::test]
async fn a_js_replacement_opened_before_we_answered_pairs() {
    for role in ROLES {
        let mut p = connect(role).await;
        let mut reqs = p.mux.pair("test/w", None);
        p.cmds([
            json!({"cmd": "open", "name": "w1", "protocol": "test/w"}),
            json!({"cmd": "close", "name": "w1"}),
            json!({"cmd": "open", "name": "w2", "protocol": "test/w"}),
        ])
        .await;
        assert_eq!(p.event("close", "w1").await["remote"], false);
        // Give the three frames time to arrive so that the first request is withdrawn.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut ch = loop {
            let ch = request(&mut reqs).await.accept(&opts("test/w")).unwrap();
            if timeout(WAIT, ch.opened()).await.unwrap().is_ok() {
                break ch;
            }
        };
        p.event("open", "w2").await;
        p.cmd(json!({"cmd": "send", "name": "w2", "type": 3, "data": "77"}))
            .await;
        assert_eq!(recv_n(&mut ch, 1).await, vec![(3, vec![0x77])]);
        // No zombie on either side: one channel each.
        let mut names = HashMap::new();
        for e in p.backlog.iter().filter(|e| e["event"] == "open") {
            *names
                .entry(e["name"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
        assert!(!names.contains_key("w1"), "w1 must never open: {names:?}");
        p.finish().await;
    }
}

#[tokio::test]
async fn the_js_side_ending_closes_the_mux() {
    for role in ROLES {
        let mut p = connect(role).await;
        p.cmds([json!({"cmd": "pair", "protocol": "test/e", "mode": "accept", "name": "e"})])
            .await;
        let ch = p.mux.open(&opts("test/e")).unwrap();
        opened(&ch).await;
        p.cmd(json!({"cmd": "end"})).await;
        assert_eq!(closed(&ch).await, CloseReason::MuxClosed);
        timeout(WAIT, p.driver).await.unwrap().unwrap().unwrap();
        assert!(p.mux.is_closed());
        assert_eq!(p.js.wait(WAIT).await, Some(0));
    }
}
