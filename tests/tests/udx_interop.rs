//! UDX streams between corenet and `udx-native` from npm over 127.0.0.1: bulk data both ways
//! with checksums, END and DESTROY semantics each way, and MESSAGEs.

use std::net::SocketAddr;
use std::time::Duration;

use corenet_tests::{pattern, JsPeer};
use corenet_udx::{Error, StreamConfig, UdxSocket, UdxStream};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(90);
const MIB: usize = 1 << 20;
const RUST_SALT: u8 = 42;
const JS_SALT: u8 = 7;
const JS_ID: u32 = 0x0101_0101;
const RUST_ID: u32 = 0x0202_0202;

async fn socket() -> UdxSocket {
    UdxSocket::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn js_addr(port: u64) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port as u16))
}

/// Writes `len` pattern bytes in 64 KiB chunks; returns their SHA-256.
async fn send_pattern(w: &mut (impl AsyncWriteExt + Unpin), len: usize) -> String {
    let mut h = Sha256::new();
    let mut off = 0;
    while off < len {
        let n = (64 * 1024).min(len - off);
        let chunk = pattern(n, RUST_SALT, off);
        h.update(&chunk);
        w.write_all(&chunk).await.unwrap();
        off += n;
    }
    hex::encode(h.finalize())
}

/// Reads to EOF, checking the JS pattern; returns (bytes, SHA-256).
async fn recv_pattern(r: &mut (impl AsyncReadExt + Unpin)) -> (usize, String) {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0;
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            return (got, hex::encode(h.finalize()));
        }
        assert!(
            buf[..n] == pattern(n, JS_SALT, got)[..],
            "bytes from JS differ near offset {got}"
        );
        h.update(&buf[..n]);
        got += n;
    }
}

fn sha_of_js_pattern(len: usize) -> String {
    hex::encode(Sha256::digest(pattern(len, JS_SALT, 0)))
}

/// JS listens; the Rust stream connects to it.
async fn connect_to_js(js: &mut JsPeer) -> (UdxSocket, UdxStream) {
    let port = js.expect("listening", WAIT).await["port"].as_u64().unwrap();
    let sock = socket().await;
    let s = sock
        .create_stream_with_id(RUST_ID, StreamConfig::default())
        .unwrap();
    s.connect(JS_ID, js_addr(port)).unwrap();
    (sock, s)
}

fn js_listen(send: usize, extra: &[&str]) -> JsPeer {
    let (l, r, n) = (JS_ID.to_string(), RUST_ID.to_string(), send.to_string());
    let mut args = vec!["listen", &l, &r, &n];
    args.extend_from_slice(extra);
    JsPeer::spawn("udx-peer.js", &args)
}

/// Rust listens (connects to the first packet's source, as hyperdht does); JS connects.
async fn js_connect(send: usize, extra: &[&str]) -> (JsPeer, UdxSocket, UdxStream) {
    let sock = socket().await;
    let s = sock
        .create_stream_with_id(RUST_ID, StreamConfig::default())
        .unwrap();
    s.connect_on_first_packet(JS_ID).unwrap();
    let (l, r) = (JS_ID.to_string(), RUST_ID.to_string());
    let (p, n) = (sock.local_addr().port().to_string(), send.to_string());
    let mut args = vec!["connect", &l, &r, &p, &n];
    args.extend_from_slice(extra);
    (JsPeer::spawn("udx-peer.js", &args), sock, s)
}

#[tokio::test]
async fn rust_sends_64mib_to_js_then_both_end() {
    let mut js = js_listen(0, &[]);
    let (_sock, mut s) = connect_to_js(&mut js).await;
    let sent = timeout(WAIT, async {
        let h = send_pattern(&mut s, 64 * MIB).await;
        s.shutdown().await.unwrap();
        h
    })
    .await
    .expect("sending to JS timed out");
    let data = js.expect("data", WAIT).await;
    assert_eq!(data["bytes"].as_u64().unwrap(), 64 * MIB as u64);
    assert_eq!(data["sha256"].as_str().unwrap(), sent);
    assert!(data["patternOk"].as_bool().unwrap());
    // JS ends too (it had nothing to send): we read EOF, both close without error.
    let (n, _) = timeout(WAIT, recv_pattern(&mut s)).await.unwrap();
    assert_eq!(n, 0);
    let close = js.expect("close", WAIT).await;
    eprintln!(
        "JS receiver: {close}; Rust sender: {:?} {:?}",
        s.info(),
        s.stats()
    );
    assert_eq!(timeout(WAIT, s.closed()).await.unwrap(), Ok(()));
    // Our padded MTU probes were acknowledged by libudx: full-size packets from then on.
    assert_eq!(s.mtu(), 1500);
}

#[tokio::test]
async fn js_sends_64mib_to_rust_then_rust_answers_after_eof() {
    let (mut js, _sock, mut s) = js_connect(64 * MIB, &[]).await;
    let (n, sha) = timeout(WAIT, recv_pattern(&mut s))
        .await
        .expect("receiving from JS timed out");
    assert_eq!(n, 64 * MIB);
    assert_eq!(sha, sha_of_js_pattern(64 * MIB));
    let finish = js.expect("finish", WAIT).await;
    eprintln!("JS sender: {finish}; Rust receiver: {:?}", s.stats());
    // Our per-batch ACKs kept the JS sender out of retransmission timeouts.
    assert_eq!(finish["rtoCount"].as_u64().unwrap(), 0, "{finish}");
    // Half-close: JS ended its side, we still write, then end.
    let sent = send_pattern(&mut s, MIB).await;
    s.shutdown().await.unwrap();
    let data = js.expect("data", WAIT).await;
    assert_eq!(data["bytes"].as_u64().unwrap(), MIB as u64);
    assert_eq!(data["sha256"].as_str().unwrap(), sent);
    js.expect("close", WAIT).await;
    assert_eq!(timeout(WAIT, s.closed()).await.unwrap(), Ok(()));
}

#[tokio::test]
async fn both_directions_at_once() {
    let (mut js, _sock, s) = js_connect(16 * MIB, &["--salt=7"]).await;
    let (mut r, mut w) = tokio::io::split(s);
    let (sent, (n, sha)) = timeout(WAIT, async {
        tokio::join!(
            async {
                let h = send_pattern(&mut w, 16 * MIB).await;
                w.shutdown().await.unwrap();
                h
            },
            recv_pattern(&mut r)
        )
    })
    .await
    .expect("bidirectional transfer timed out");
    assert_eq!((n, sha), (16 * MIB, sha_of_js_pattern(16 * MIB)));
    let data = js.expect("data", WAIT).await;
    assert_eq!(data["sha256"].as_str().unwrap(), sent);
    js.expect("close", WAIT).await;
    let s = r.unsplit(w);
    assert_eq!(timeout(WAIT, s.closed()).await.unwrap(), Ok(()));
}

#[tokio::test]
async fn js_destroy_resets_the_rust_stream() {
    let mut js = js_listen(0, &["--destroy-after=1048576", "--no-end"]);
    let (_sock, mut s) = connect_to_js(&mut js).await;
    let write = timeout(WAIT, async {
        let mut off = 0;
        loop {
            let chunk = pattern(64 * 1024, RUST_SALT, off);
            if let Err(e) = s.write_all(&chunk).await {
                return e;
            }
            off += chunk.len();
        }
    })
    .await
    .expect("the write never failed");
    assert_eq!(write.kind(), std::io::ErrorKind::ConnectionReset);
    js.expect("destroying", WAIT).await;
    assert_eq!(
        timeout(WAIT, s.closed()).await.unwrap(),
        Err(Error::ConnectionReset)
    );
    let mut buf = [0u8; 4];
    assert_eq!(
        s.read(&mut buf).await.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionReset
    );
}

#[tokio::test]
async fn rust_destroy_resets_the_js_stream() {
    let (mut js, _sock, mut s) = js_connect(64 * MIB, &["--no-end"]).await;
    let mut buf = vec![0u8; MIB];
    timeout(WAIT, s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf == pattern(MIB, JS_SALT, 0));
    s.destroy();
    let err = js.expect("error", WAIT).await;
    assert_eq!(err["code"].as_str().unwrap(), "ECONNRESET");
    js.expect("close", WAIT).await;
    assert_eq!(s.closed().await, Err(Error::Destroyed));
}

#[tokio::test]
async fn rust_end_is_seen_by_js_and_js_end_by_rust() {
    // JS sends nothing and does not end until we do; our END must reach it as 'end'.
    let mut js = js_listen(0, &[]);
    let (_sock, mut s) = connect_to_js(&mut js).await;
    s.write_all(b"x").await.unwrap(); // first packet connects the JS stream
    s.shutdown().await.unwrap();
    let data = js.expect("data", WAIT).await;
    assert_eq!(data["bytes"].as_u64().unwrap(), 1);
    // JS ends in turn (empty): EOF here, and a clean close on both sides, even though JS
    // follows its END with a DESTROY (streamx auto-destroy) and keeps no TIME_WAIT.
    let mut rest = Vec::new();
    timeout(WAIT, s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty());
    let close = js.expect("close", WAIT).await;
    assert_eq!(close["event"], "close");
    assert_eq!(timeout(WAIT, s.closed()).await.unwrap(), Ok(()));
}

#[tokio::test]
async fn messages_both_ways() {
    let mut js = js_listen(0, &["--echo-messages", "--no-end", "--message=c0ffee"]);
    let (_sock, s) = connect_to_js(&mut js).await;
    // Our first MESSAGE connects the JS stream (its firewall), which then sends its own
    // MESSAGE and echoes ours.
    s.try_send_message(b"hello udx").unwrap();
    let m = js.expect("message", WAIT).await;
    assert_eq!(m["hex"].as_str().unwrap(), hex::encode(b"hello udx"));
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(timeout(WAIT, s.recv_message()).await.unwrap().unwrap());
    }
    got.sort();
    assert_eq!(got, vec![b"hello udx".to_vec(), vec![0xc0, 0xff, 0xee]]);
    let max = s.max_message_len();
    s.send_message(&vec![9u8; max]).await.unwrap();
    let m = js.expect("message", WAIT).await;
    assert_eq!(m["hex"].as_str().unwrap().len(), 2 * max);
    s.destroy();
}
