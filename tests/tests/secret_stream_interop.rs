//! Secret streams between corenet and `@hyperswarm/secret-stream` from npm, over TCP on
//! 127.0.0.1, in both roles.

use std::time::Duration;

use corenet_noise::{Config, Error, HandshakeError, KeyPair, SecretStream};
use corenet_tests::{pattern, JsPeer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(30);
const MIB: usize = 1 << 20;
const JS_SEED: [u8; 32] = [0x11; 32];
const RUST_SALT: u8 = 42;
const JS_SALT: u8 = 7;

/// Sends 1 MiB, reads everything back, checks the JS pattern.
async fn exchange(stream: SecretStream<TcpStream>) -> Vec<u8> {
    let (mut r, mut w) = tokio::io::split(stream);
    let writer = async move {
        let data = pattern(MIB, RUST_SALT, 0);
        for chunk in data.chunks(64 * 1024) {
            w.write_all(chunk).await.unwrap();
        }
        w.shutdown().await.unwrap();
    };
    let reader = async move {
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        got
    };
    tokio::time::timeout(WAIT, async { tokio::join!(writer, reader).1 })
        .await
        .expect("exchange timed out")
}

async fn check_js_side(js: &mut JsPeer, rust: &SecretStream<TcpStream>, js_initiator: bool) {
    let hs = js.expect("handshake", WAIT).await;
    assert_eq!(
        hs["remotePublicKey"].as_str().unwrap(),
        rust.public_key().to_hex()
    );
    assert_eq!(
        hs["publicKey"].as_str().unwrap(),
        rust.remote_public_key().to_hex()
    );
    assert_eq!(
        hs["handshakeHash"].as_str().unwrap(),
        hex::encode(rust.handshake_hash())
    );
    assert_eq!(hs["isInitiator"].as_bool().unwrap(), js_initiator);
    assert_eq!(
        rust.remote_public_key(),
        KeyPair::from_seed(JS_SEED).public_key()
    );
}

async fn check_done(js: &mut JsPeer, got: &[u8]) {
    assert_eq!(got.len(), MIB);
    assert!(
        got == pattern(MIB, JS_SALT, 0).as_slice(),
        "bytes from JS differ"
    );
    let done = js.expect("done", WAIT).await;
    assert_eq!(done["received"].as_u64().unwrap(), MIB as u64);
    assert_eq!(done["remoteSalt"].as_u64().unwrap(), u64::from(RUST_SALT));
    assert!(
        done["patternOk"].as_bool().unwrap(),
        "JS saw corrupted bytes: {done}"
    );
}

fn js_server() -> JsPeer {
    JsPeer::spawn(
        "secret-stream-peer.js",
        &[
            "server",
            "127.0.0.1",
            "0",
            &hex::encode(JS_SEED),
            &MIB.to_string(),
            &JS_SALT.to_string(),
        ],
    )
}

#[tokio::test]
async fn rust_initiator_to_js_responder() {
    let mut js = js_server();
    let port = js.expect("listening", WAIT).await["port"].as_u64().unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port as u16))
        .await
        .unwrap();
    let cfg = Config::default().with_remote_public_key(KeyPair::from_seed(JS_SEED).public_key());
    let stream = SecretStream::new(tcp, true, &KeyPair::generate(), cfg)
        .await
        .unwrap();
    check_js_side(&mut js, &stream, false).await;
    let got = exchange(stream).await;
    check_done(&mut js, &got).await;
}

#[tokio::test]
async fn js_initiator_to_rust_responder() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut js = JsPeer::spawn(
        "secret-stream-peer.js",
        &[
            "client",
            "127.0.0.1",
            &port.to_string(),
            &hex::encode(JS_SEED),
            &MIB.to_string(),
            &JS_SALT.to_string(),
        ],
    );
    let (tcp, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let stream = SecretStream::new(tcp, false, &KeyPair::generate(), Config::default())
        .await
        .unwrap();
    check_js_side(&mut js, &stream, true).await;
    let got = exchange(stream).await;
    check_done(&mut js, &got).await;
}

#[tokio::test]
async fn rust_initiator_refuses_an_unexpected_js_key() {
    let mut js = js_server();
    let port = js.expect("listening", WAIT).await["port"].as_u64().unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port as u16))
        .await
        .unwrap();
    let wrong = KeyPair::generate().public_key();
    let cfg = Config::default().with_remote_public_key(wrong);
    let r = SecretStream::new(tcp, true, &KeyPair::generate(), cfg).await;
    match r {
        Err(Error::Handshake(HandshakeError::RemoteKeyMismatch { expected, got })) => {
            assert_eq!(expected, wrong);
            assert_eq!(got, KeyPair::from_seed(JS_SEED).public_key());
        }
        other => panic!("expected a key mismatch, got {other:?}"),
    }
    // The JS side never completes its handshake: it sees the connection fail.
    let ev = js.next_event(WAIT).await;
    assert_ne!(
        ev["event"], "handshake",
        "JS completed a handshake the Rust side refused: {ev}"
    );
}

/// A TCP proxy that flips one bit at byte `flip_at` of the direction selected by
/// `client_to_server`.
async fn flipping_proxy(upstream: u16, client_to_server: bool, flip_at: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = TcpStream::connect(("127.0.0.1", upstream)).await.unwrap();
        let (cr, cw) = client.into_split();
        let (sr, sw) = server.into_split();
        let pump = |mut r: tokio::net::tcp::OwnedReadHalf,
                    mut w: tokio::net::tcp::OwnedWriteHalf,
                    flip: bool| async move {
            let mut off = 0usize;
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if flip && off <= flip_at && flip_at < off + n {
                    buf[flip_at - off] ^= 0x04;
                }
                off += n;
                if w.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = w.shutdown().await;
        };
        tokio::join!(
            pump(cr, sw, client_to_server),
            pump(sr, cw, !client_to_server)
        );
    });
    port
}

/// A byte inside the responder's first data message: its output is msg2 (3+96), the header
/// frame (3+56), then the message (3-byte length, tag byte, ciphertext).
const RESPONDER_DATA_AT: usize = 3 + 96 + 3 + 56 + 3 + 10;

#[tokio::test]
async fn tampered_js_ciphertext_fails_authentication_in_rust() {
    let mut js = js_server();
    let port = js.expect("listening", WAIT).await["port"].as_u64().unwrap() as u16;
    // Flip a byte of the JS responder's first data message.
    let proxy = flipping_proxy(port, false, RESPONDER_DATA_AT).await;
    let tcp = TcpStream::connect(("127.0.0.1", proxy)).await.unwrap();
    let mut s = SecretStream::new(tcp, true, &KeyPair::generate(), Config::default())
        .await
        .unwrap();
    let r = tokio::time::timeout(WAIT, s.recv()).await.unwrap();
    assert!(
        matches!(r, Err(Error::Decrypt)),
        "expected an authentication failure, got {r:?}"
    );
    assert!(
        matches!(s.recv().await, Err(Error::Decrypt)),
        "the stream must stay closed"
    );
}

#[tokio::test]
async fn tampered_rust_ciphertext_fails_authentication_in_js() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // JS initiator -> proxy -> Rust responder; flip a byte of Rust's first data message.
    let proxy = flipping_proxy(port, false, RESPONDER_DATA_AT).await;
    let mut js = JsPeer::spawn(
        "secret-stream-peer.js",
        &[
            "client",
            "127.0.0.1",
            &proxy.to_string(),
            &hex::encode(JS_SEED),
            "0",
            &JS_SALT.to_string(),
        ],
    );
    let (tcp, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut s = SecretStream::new(tcp, false, &KeyPair::generate(), Config::default())
        .await
        .unwrap();
    js.expect("handshake", WAIT).await;
    s.send(b"this message gets one bit flipped").await.unwrap();
    let ev = js.expect("error", WAIT).await;
    // sodium-secretstream's authentication failure.
    assert_eq!(
        ev["message"].as_str().unwrap(),
        "pull failed",
        "unexpected JS error: {ev}"
    );
    // The JS stream closes (it may report the failure once more on the way).
    loop {
        let ev = js.next_event(WAIT).await;
        match ev["event"].as_str().unwrap() {
            "close" => break,
            "error" => assert_eq!(ev["message"].as_str().unwrap(), "pull failed"),
            other => panic!("unexpected JS event {other}: {ev}"),
        }
    }
}
