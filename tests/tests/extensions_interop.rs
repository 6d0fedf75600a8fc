//! corenet-extensions against a JS protomux app (`tests/interop/extension-peer.js`) over
//! `@hyperswarm/secret-stream` over TCP on 127.0.0.1, with JS as server and as client. The JS
//! side does what any protomux app does: `createChannel({ protocol: name })` and one message
//! with `c.string`, `c.json` or `c.raw`. Messages go both ways in each encoding, including a
//! message sent before either channel is open; bad input from JS reaches `on_error` without
//! closing anything; a destroyed extension closes the JS channel; an extension registered
//! after the connection started opens through the JS app's pairing hook.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use corenet_codec::PublicKey;
use corenet_extensions::{
    DecodeError, Error, ExtensionOptions, Extensions, Messages, Peer, Transport,
};
use corenet_mux::{DriverConfig, MuxHandle};
use corenet_noise::{Config, KeyPair, SecretStream};
use corenet_tests::JsPeer;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(30);
const JS_SEED: [u8; 32] = [0x33; 32];

#[derive(Debug, Clone, Copy)]
enum Role {
    /// JS listens, Rust connects.
    JsServer,
    /// Rust listens, JS connects.
    JsClient,
}

/// A JS peer and the Rust side's view of it.
struct Js {
    js: JsPeer,
    /// Events read while waiting for another.
    backlog: Vec<Value>,
}

impl Js {
    async fn cmd(&mut self, c: Value) {
        self.js.command(c).await;
    }

    /// Sends commands and waits until JS has handled them.
    async fn cmds(&mut self, cs: impl IntoIterator<Item = Value>) {
        for c in cs {
            self.js.command(c).await;
        }
        self.js.command(json!({"cmd": "ping", "token": 1})).await;
        self.wait_for(|e| e["event"] == "pong").await;
    }

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

    async fn event(&mut self, event: &str, protocol: &str) -> Value {
        let (event, protocol) = (event.to_string(), protocol.to_string());
        self.wait_for(move |e| e["event"] == event.as_str() && e["protocol"] == protocol.as_str())
            .await
    }

    async fn message(&mut self, protocol: &str) -> Value {
        self.event("message", protocol).await["data"].clone()
    }
}

/// Starts the JS peer and the secret stream to it; returns the stream and the JS address.
async fn connect(role: Role) -> (Js, SecretStream<TcpStream>, SocketAddr) {
    let seed = hex::encode(JS_SEED);
    let (mut js, stream, addr) = match role {
        Role::JsServer => {
            let mut js = JsPeer::spawn_interactive(
                "extension-peer.js",
                &["server", "127.0.0.1", "0", &seed],
            );
            let port = js.expect("listening", WAIT).await["port"].as_u64().unwrap() as u16;
            let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let addr = tcp.peer_addr().unwrap();
            let s = SecretStream::new(tcp, true, &KeyPair::generate(), Config::default())
                .await
                .unwrap();
            (js, s, addr)
        }
        Role::JsClient => {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port().to_string();
            let js = JsPeer::spawn_interactive(
                "extension-peer.js",
                &["client", "127.0.0.1", &port, &seed],
            );
            let (tcp, addr) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
            let s = SecretStream::new(tcp, false, &KeyPair::generate(), Config::default())
                .await
                .unwrap();
            (js, s, addr)
        }
    };
    js.expect("ready", WAIT).await;
    (
        Js {
            js,
            backlog: Vec::new(),
        },
        stream,
        addr,
    )
}

fn js_key() -> PublicKey {
    KeyPair::from_seed(JS_SEED).public_key()
}

async fn recv<E: corenet_extensions::Encoding>(m: &mut Messages<E>) -> (E::Message, Peer) {
    timeout(WAIT, m.recv())
        .await
        .expect("no message in time")
        .expect("the stream ended")
}

async fn next_error(rx: &mut mpsc::Receiver<(Error, Peer)>) -> (Error, Peer) {
    timeout(WAIT, rx.recv())
        .await
        .expect("no error in time")
        .expect("the channel ended")
}

fn error_sink() -> (
    impl Fn(Error, &Peer) + Send + Sync + 'static,
    mpsc::Receiver<(Error, Peer)>,
) {
    let (tx, rx) = mpsc::channel(64);
    (
        move |e: Error, p: &Peer| {
            let _ = tx.try_send((e, p.clone()));
        },
        rx,
    )
}

async fn both_ways(role: Role) {
    let (mut js, stream, addr) = connect(role).await;
    assert_eq!(stream.remote_public_key(), js_key());

    let bus = Extensions::new();
    let (on_error, mut errors) = error_sink();
    let chat = bus
        .register("chat", ExtensionOptions::utf8().on_error(on_error))
        .await
        .unwrap();
    let (on_error, mut data_errors) = error_sink();
    let data = bus
        .register("data", ExtensionOptions::json::<Value>().on_error(on_error))
        .await
        .unwrap();
    let blob = bus
        .register("blob", ExtensionOptions::binary())
        .await
        .unwrap();
    let mut chat_in = chat.messages();
    let mut data_in = data.messages();
    let mut blob_in = blob.messages();

    // The session goes on the bus before the mux driver runs.
    let (mux, driver) = MuxHandle::new(stream, DriverConfig::default());
    let peer = Peer::new(mux.stream_info().remote_public_key)
        .with_transport(Transport::Tcp)
        .with_remote_address(addr);
    bus.add_session(peer.clone(), mux.clone()).await.unwrap();
    let driver = tokio::spawn(driver);

    // Sent before any channel is open: it waits for JS to open its side.
    chat.send("hello from rust", &peer).unwrap();

    // The JS app creates its channels now (our opens may have reached it first and been
    // rejected, in which case our pairing hooks accept its opens).
    js.cmds([
        json!({"cmd": "open", "protocol": "chat", "encoding": "string"}),
        json!({"cmd": "open", "protocol": "data", "encoding": "json"}),
        json!({"cmd": "open", "protocol": "blob", "encoding": "raw"}),
    ])
    .await;
    assert_eq!(js.message("chat").await, "hello from rust");
    for p in ["chat", "data", "blob"] {
        js.event("open", p).await;
    }
    timeout(WAIT, data.opened(&peer)).await.unwrap().unwrap();
    timeout(WAIT, blob.opened(&peer)).await.unwrap().unwrap();

    // utf8 both ways, with multi-byte characters.
    let text = "h\u{e9}llo from js \u{2713} \u{1f980}";
    js.cmd(json!({"cmd": "send", "protocol": "chat", "data": text}))
        .await;
    let (got, from) = recv(&mut chat_in).await;
    assert_eq!(got, text);
    assert_eq!(from.public_key(), &js_key());
    assert_eq!(from.session(), peer.session());
    assert_eq!(from.remote_address(), Some(addr));
    chat.send("\u{1f980} back", &peer).unwrap();
    assert_eq!(js.message("chat").await, "\u{1f980} back");

    // json both ways.
    let v = json!({"n": 1, "list": [1, 2, 3], "s": "x", "nested": {"ok": true, "none": null}});
    data.send(&v, &peer).unwrap();
    assert_eq!(js.message("data").await, v);
    let w = json!({"reply": true, "f": 1.5, "arr": ["a", {"b": []}]});
    js.cmd(json!({"cmd": "send", "protocol": "data", "data": w}))
        .await;
    assert_eq!(recv(&mut data_in).await.0, w);

    // raw bytes both ways.
    let all: Vec<u8> = (0..=255).collect();
    blob.send(&all, &peer).unwrap();
    assert_eq!(js.message("blob").await, hex::encode(&all));
    js.cmd(json!({"cmd": "send", "protocol": "blob", "data": "00ff10"}))
        .await;
    assert_eq!(
        recv(&mut blob_in).await.0,
        Bytes::from_static(b"\x00\xff\x10")
    );

    // Bad input from JS goes to on_error with the peer, and closes nothing.
    js.cmd(json!({"cmd": "sendRaw", "protocol": "chat", "hex": "02fffe"}))
        .await; // a c.string of invalid UTF-8
    let (e, from) = next_error(&mut errors).await;
    assert!(
        matches!(
            e,
            Error::Decode {
                encoding: "utf8",
                source: DecodeError::Codec(_)
            }
        ),
        "{e:?}"
    );
    assert_eq!(from.public_key(), &js_key());
    js.cmd(json!({"cmd": "sendRaw", "protocol": "data", "hex": "027b7d"}))
        .await; // "{}" is fine...
    assert_eq!(recv(&mut data_in).await.0, json!({}));
    js.cmd(json!({"cmd": "sendRaw", "protocol": "data", "hex": "027b22"}))
        .await; // ...'{"' is not JSON
    let (e, _) = next_error(&mut data_errors).await;
    assert!(
        matches!(
            e,
            Error::Decode {
                encoding: "json",
                source: DecodeError::Json(_)
            }
        ),
        "{e:?}"
    );
    js.cmd(json!({"cmd": "send", "protocol": "chat", "data": "after the garbage"}))
        .await;
    assert_eq!(recv(&mut chat_in).await.0, "after the garbage");
    assert!(chat.is_open(&peer) && data.is_open(&peer));

    // An extension registered after the connection started: our open reaches the JS app's
    // pairing hook, which creates its channel; the message sent at once is not lost.
    js.cmds([json!({"cmd": "pair", "protocol": "late", "encoding": "string"})])
        .await;
    let late = bus
        .register("late", ExtensionOptions::utf8())
        .await
        .unwrap();
    let mut late_in = late.messages();
    late.send("late hello", &peer).unwrap();
    assert_eq!(js.message("late").await, "late hello");
    js.cmd(json!({"cmd": "send", "protocol": "late", "data": "late reply"}))
        .await;
    assert_eq!(recv(&mut late_in).await.0, "late reply");

    // Destroying an extension closes the JS app's channel.
    chat.destroy().await;
    let closed = js.event("close", "chat").await;
    assert_eq!(closed["remote"], true);
    assert!(timeout(WAIT, chat_in.recv()).await.unwrap().is_none());
    // The others are untouched.
    data.send(&json!("still here"), &peer).unwrap();
    assert_eq!(js.message("data").await, "still here");

    mux.close();
    drop(mux);
    timeout(WAIT, driver).await.unwrap().unwrap().unwrap();
    js.wait_for(|e| e["event"] == "stream-closed").await;
    bus.close().await;
}

#[tokio::test]
async fn extensions_with_js_as_server() {
    both_ways(Role::JsServer).await;
}

#[tokio::test]
async fn extensions_with_js_as_client() {
    both_ways(Role::JsClient).await;
}
