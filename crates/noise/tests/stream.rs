//! Secret stream behaviour, Rust to Rust over in-memory duplexes: data both ways, half-close,
//! keepalive and timeout, starting from a handshake result, and every kind of bad input.

use std::time::Duration;

use corenet_noise::{
    Config, Error, Handshake, HandshakeError, HandshakeOptions, KeyPair, Pattern, SecretStream,
};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

async fn pair(
    ca: Config,
    cb: Config,
    buf: usize,
) -> (
    Result<SecretStream<DuplexStream>, Error>,
    Result<SecretStream<DuplexStream>, Error>,
) {
    let (a, b) = tokio::io::duplex(buf);
    let (ka, kb) = (KeyPair::generate(), KeyPair::generate());
    let ta = tokio::spawn(async move { SecretStream::new(a, true, &ka, ca).await });
    let sb = SecretStream::new(b, false, &kb, cb).await;
    (ta.await.unwrap(), sb)
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

#[tokio::test]
async fn one_mib_each_way_concurrently() {
    let (a, b) = pair(Config::default(), Config::default(), 8 * 1024).await;
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.handshake_hash(), b.handshake_hash());
    assert_eq!(a.remote_public_key(), b.public_key());
    assert_eq!(b.remote_public_key(), a.public_key());
    assert!(a.is_initiator() && !b.is_initiator());
    let data_a = pattern(1 << 20, 1);
    let data_b = pattern(1 << 20, 2);
    let run = |s: SecretStream<DuplexStream>, out: Vec<u8>| async move {
        let (mut r, mut w) = tokio::io::split(s);
        let writer = async move {
            for chunk in out.chunks(10_000) {
                w.write_all(chunk).await.unwrap();
            }
            w.shutdown().await.unwrap();
        };
        let reader = async move {
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            got
        };
        tokio::join!(writer, reader).1
    };
    let (got_b, got_a) = tokio::join!(run(a, data_a.clone()), run(b, data_b.clone()));
    assert_eq!(got_a, data_a);
    assert_eq!(got_b, data_b);
}

/// The read and write halves polled by different tasks: the read side also flushes
/// ciphertext (keepalives, the header frame), and a transport keeps one write waker, so a
/// writer waiting for room must still be woken when the reader's poll was the last one the
/// transport saw. Before the fix this stalled in `shutdown` about every other round on
/// UDX; a small duplex makes the writer wait often.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_halves_in_separate_tasks_never_stall() {
    for round in 0..20u8 {
        let (a, b) = pair(Config::default(), Config::default(), 2048).await;
        let (a, b) = (a.unwrap(), b.unwrap());
        // b echoes everything, then ends its side.
        let echo = tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(b);
            let _ = tokio::io::copy(&mut r, &mut w).await;
            w.shutdown().await.unwrap();
        });
        let data = pattern(256 * 1024, round);
        let (mut r, mut w) = tokio::io::split(a);
        let out = data.clone();
        let writer = tokio::spawn(async move {
            for chunk in out.chunks(7_000) {
                w.write_all(chunk).await.unwrap();
            }
            w.shutdown().await.unwrap();
        });
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            got
        });
        let got = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .unwrap_or_else(|_| panic!("round {round}: the echo stalled"))
            .unwrap();
        assert_eq!(got, data, "round {round}");
        writer.await.unwrap();
        echo.await.unwrap();
    }
}

#[tokio::test]
async fn message_boundaries_are_kept() {
    let (a, b) = pair(Config::default(), Config::default(), 1024).await;
    let (mut a, mut b) = (a.unwrap(), b.unwrap());
    let sizes = [1usize, 2, 100, 70_000, 3, 65_536];
    let send = async {
        for (i, n) in sizes.iter().enumerate() {
            a.send(&pattern(*n, i as u8)).await.unwrap();
        }
        a.shutdown().await.unwrap();
    };
    let recv = async {
        let mut got = Vec::new();
        while let Some(m) = b.recv().await.unwrap() {
            got.push(m.to_vec());
        }
        got
    };
    let ((), got) = tokio::join!(send, recv);
    let want: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, n)| pattern(*n, i as u8))
        .collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn half_close_keeps_the_other_direction_open() {
    let (a, b) = pair(Config::default(), Config::default(), 4096).await;
    let (mut a, mut b) = (a.unwrap(), b.unwrap());
    a.send(b"last words").await.unwrap();
    a.shutdown().await.unwrap();
    assert!(matches!(a.send(b"more").await, Err(Error::WriteClosed)));
    assert_eq!(b.recv().await.unwrap().as_deref(), Some(&b"last words"[..]));
    assert_eq!(b.recv().await.unwrap(), None);
    b.send(b"reply").await.unwrap();
    b.shutdown().await.unwrap();
    assert_eq!(a.recv().await.unwrap().as_deref(), Some(&b"reply"[..]));
    assert_eq!(a.recv().await.unwrap(), None);
}

#[tokio::test]
async fn expected_remote_key_is_enforced() {
    let wrong = KeyPair::generate().public_key();
    let (a, b) = pair(
        Config::default().with_remote_public_key(wrong),
        Config::default(),
        4096,
    )
    .await;
    match a {
        Err(Error::Handshake(HandshakeError::RemoteKeyMismatch { expected, .. })) => {
            assert_eq!(expected, wrong)
        }
        other => panic!("initiator accepted a wrong key: {other:?}"),
    }
    // The responder never gets the third message.
    assert!(matches!(b, Err(Error::UnexpectedEof(_))), "{b:?}");
}

#[tokio::test]
async fn ik_over_the_stream() {
    let (a, b) = tokio::io::duplex(4096);
    let (ka, kb) = (KeyPair::generate(), KeyPair::generate());
    let server_pk = kb.public_key();
    let ta = tokio::spawn(async move {
        let cfg = Config::default()
            .with_pattern(Pattern::IK)
            .with_remote_public_key(server_pk);
        let mut s = SecretStream::new(a, true, &ka, cfg).await.unwrap();
        s.send(b"ik").await.unwrap();
        s
    });
    let mut b = SecretStream::new(b, false, &kb, Config::default().with_pattern(Pattern::IK))
        .await
        .unwrap();
    assert_eq!(b.recv().await.unwrap().as_deref(), Some(&b"ik"[..]));
    let a = ta.await.unwrap();
    assert_eq!(a.handshake_hash(), b.handshake_hash());
}

#[tokio::test]
async fn starts_from_a_handshake_result() {
    let (ka, kb) = (KeyPair::generate(), KeyPair::generate());
    let mut init = Handshake::new(
        Pattern::IK,
        true,
        &ka,
        HandshakeOptions {
            remote_public_key: Some(kb.public_key()),
            prologue: b"p".to_vec(),
            ..Default::default()
        },
    )
    .unwrap();
    let mut resp = Handshake::new(
        Pattern::IK,
        false,
        &kb,
        HandshakeOptions {
            prologue: b"p".to_vec(),
            ..Default::default()
        },
    )
    .unwrap();
    let m1 = init.write_message(b"hello from client").unwrap();
    assert_eq!(resp.read_message(&m1).unwrap(), b"hello from client");
    let m2 = resp.write_message(b"hello from server").unwrap();
    assert_eq!(init.read_message(&m2).unwrap(), b"hello from server");
    let (ri, rr) = (init.finish().unwrap(), resp.finish().unwrap());
    let (a, b) = tokio::io::duplex(4096);
    let mut a = SecretStream::from_handshake(a, ri, Config::default());
    let mut b = SecretStream::from_handshake(b, rr, Config::default());
    // Both sides read first: the header frames must still go out.
    let (ra, rb) = tokio::join!(
        async {
            a.send(b"x").await.unwrap();
            a.recv().await.unwrap()
        },
        async {
            b.send(b"y").await.unwrap();
            b.recv().await.unwrap()
        }
    );
    assert_eq!(ra.as_deref(), Some(&b"y"[..]));
    assert_eq!(rb.as_deref(), Some(&b"x"[..]));
    assert_eq!(a.remote_public_key(), kb.public_key());
}

/// Lets a test tamper with bytes between two streams.
async fn relay_with(
    tamper: impl Fn(usize, &mut Vec<u8>) + Send + Sync + 'static,
) -> (SecretStream<DuplexStream>, SecretStream<DuplexStream>) {
    let (a, mut a_far) = tokio::io::duplex(1 << 16);
    let (b, mut b_far) = tokio::io::duplex(1 << 16);
    // b -> a untouched; a -> b through `tamper` with the running byte offset.
    tokio::spawn(async move {
        let (mut ar, mut aw) = tokio::io::split(&mut a_far);
        let (mut br, mut bw) = tokio::io::split(&mut b_far);
        let up = async {
            let mut off = 0;
            let mut buf = vec![0u8; 4096];
            loop {
                let n = ar.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    let _ = bw.shutdown().await;
                    break;
                }
                let mut chunk = buf[..n].to_vec();
                tamper(off, &mut chunk);
                off += n;
                if bw.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        };
        let down = async {
            let _ = tokio::io::copy(&mut br, &mut aw).await;
            let _ = aw.shutdown().await;
        };
        tokio::join!(up, down);
    });
    let (ka, kb) = (KeyPair::generate(), KeyPair::generate());
    let ta = tokio::spawn(async move {
        SecretStream::new(a, true, &ka, Config::default())
            .await
            .unwrap()
    });
    let b = SecretStream::new(b, false, &kb, Config::default())
        .await
        .unwrap();
    (ta.await.unwrap(), b)
}

// Initiator output: msg1 (3+32) + msg3 (3+64) + header (3+56) = 161 bytes, then messages.
const FIRST_MESSAGE_AT: usize = 3 + 32 + 3 + 64 + 3 + 56;

#[tokio::test]
async fn flipped_ciphertext_byte_fails_authentication() {
    let (mut a, mut b) = relay_with(|off, chunk| {
        let target = FIRST_MESSAGE_AT + 3 + 5;
        if off <= target && target < off + chunk.len() {
            chunk[target - off] ^= 0x01;
        }
    })
    .await;
    a.send(b"hello, tamper me").await.unwrap();
    assert!(matches!(b.recv().await, Err(Error::Decrypt)));
    // The stream is closed for good.
    assert!(matches!(b.recv().await, Err(Error::Decrypt)));
    assert!(matches!(b.send(b"x").await, Err(Error::Decrypt)));
}

#[tokio::test]
async fn wrong_stream_id_is_refused() {
    let (mut a, mut b) = relay_with(|off, chunk| {
        let target = FIRST_MESSAGE_AT - 56 + 4; // inside the initiator's stream id
        if off <= target && target < off + chunk.len() {
            chunk[target - off] ^= 0x80;
        }
    })
    .await;
    a.send(b"x").await.unwrap();
    assert!(matches!(
        b.recv().await,
        Err(Error::InvalidHeader("wrong stream id"))
    ));
}

/// A raw peer that completes a real handshake and then writes whatever the test wants.
async fn raw_peer_after_handshake(
    after: Vec<u8>,
    cfg: Config,
) -> Result<Option<bytes::Bytes>, Error> {
    let (a, mut far) = tokio::io::duplex(1 << 20);
    let kb = KeyPair::generate();
    let server = tokio::spawn(async move {
        let mut s = SecretStream::new(a, false, &kb, cfg).await?;
        s.recv().await
    });
    // Drive an XX initiator by hand.
    let ka = KeyPair::generate();
    let mut hs = Handshake::new(Pattern::XX, true, &ka, HandshakeOptions::default()).unwrap();
    let m1 = hs.write_message(&[]).unwrap();
    far.write_all(&frame(&m1)).await.unwrap();
    let mut len = [0u8; 3];
    far.read_exact(&mut len).await.unwrap();
    let mut m2 = vec![0u8; u32::from_le_bytes([len[0], len[1], len[2], 0]) as usize];
    far.read_exact(&mut m2).await.unwrap();
    hs.read_message(&m2).unwrap();
    let m3 = hs.write_message(&[]).unwrap();
    far.write_all(&frame(&m3)).await.unwrap();
    far.write_all(&after).await.unwrap();
    far.shutdown().await.unwrap();
    let r = server.await.unwrap();
    drop(far);
    r
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_le_bytes()[..3].to_vec();
    out.extend_from_slice(body);
    out
}

#[tokio::test]
async fn header_of_wrong_length_is_refused() {
    let r = raw_peer_after_handshake(frame(&[0u8; 55]), Config::default()).await;
    assert!(
        matches!(r, Err(Error::InvalidHeader("wrong length"))),
        "{r:?}"
    );
}

#[tokio::test]
async fn oversized_frame_is_refused_before_allocation() {
    let cfg = Config::default().with_max_frame_len(1024);
    // Announces 16 MiB - 1 and sends nothing more.
    let r = raw_peer_after_handshake(vec![0xFF, 0xFF, 0xFF], cfg).await;
    assert!(
        matches!(
            r,
            Err(Error::FrameTooLarge {
                len: 0xFF_FFFF,
                max: 1024
            })
        ),
        "{r:?}"
    );
}

#[tokio::test]
async fn truncated_frame_is_an_error() {
    let r = raw_peer_after_handshake(vec![10, 0, 0, 1, 2], Config::default()).await;
    assert!(
        matches!(
            r,
            Err(Error::InvalidHeader(_)) | Err(Error::UnexpectedEof(_))
        ),
        "{r:?}"
    );
}

#[tokio::test]
async fn handshake_message_of_wrong_size_is_refused() {
    let (a, mut far) = tokio::io::duplex(4096);
    let server = tokio::spawn(async move {
        SecretStream::new(a, false, &KeyPair::generate(), Config::default()).await
    });
    far.write_all(&frame(&[7u8; 33])).await.unwrap();
    let r = server.await.unwrap();
    assert!(
        matches!(
            r,
            Err(Error::Handshake(HandshakeError::WrongSize {
                index: 0,
                len: 33,
                expected: 32
            }))
        ),
        "{r:?}"
    );
}

#[tokio::test]
async fn invalid_point_in_handshake_is_refused() {
    let (a, mut far) = tokio::io::duplex(4096);
    let server = tokio::spawn(async move {
        SecretStream::new(a, false, &KeyPair::generate(), Config::default()).await
    });
    // msg1 = e: the identity point is small-order, so the responder's ee DH must fail.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    far.write_all(&frame(&identity)).await.unwrap();
    let r = server.await.unwrap();
    assert!(
        matches!(r, Err(Error::Handshake(HandshakeError::InvalidMessage(_)))),
        "{r:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_fires_and_keepalive_prevents_it() {
    // Without keepalive the reader times out.
    let (a, b) = pair(
        Config::default(),
        Config::default().with_timeout(Duration::from_secs(3)),
        4096,
    )
    .await;
    let (_a, mut b) = (a.unwrap(), b.unwrap());
    let r = tokio::time::timeout(Duration::from_secs(10), b.recv())
        .await
        .unwrap();
    assert!(matches!(r, Err(Error::TimedOut(_))), "{r:?}");

    // With a 1 s keepalive on the other side (kept running by a reading task), it does not.
    let (a, b) = pair(
        Config::default().with_keepalive(Duration::from_secs(1)),
        Config::default().with_timeout(Duration::from_secs(3)),
        4096,
    )
    .await;
    let (mut a, mut b) = (a.unwrap(), b.unwrap());
    let reader_a = tokio::spawn(async move { a.recv().await.map(|m| m.map(|m| m.to_vec())) });
    let r = tokio::time::timeout(Duration::from_secs(20), b.recv()).await;
    assert!(r.is_err(), "keepalives must keep the stream open: {r:?}");
    b.send(b"still here").await.unwrap();
    assert_eq!(
        reader_a.await.unwrap().unwrap().as_deref(),
        Some(&b"still here"[..])
    );
}

#[tokio::test]
async fn oversized_send_is_refused_and_stream_survives() {
    let cfg = Config::default().with_max_frame_len(1000);
    let (a, b) = pair(cfg.clone(), cfg, 4096).await;
    let (mut a, mut b) = (a.unwrap(), b.unwrap());
    assert!(matches!(
        a.send(&[0u8; 1000]).await,
        Err(Error::MessageTooLarge { .. })
    ));
    a.send(&[1u8; 983]).await.unwrap();
    assert_eq!(b.recv().await.unwrap().unwrap().len(), 983);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn random_messages_through_tiny_buffers(sizes in proptest::collection::vec(0usize..5000, 1..20), buf in 1usize..64) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (a, b) = pair(Config::default(), Config::default(), buf).await;
            let (mut a, mut b) = (a.unwrap(), b.unwrap());
            let msgs: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, n)| pattern(*n, i as u8)).collect();
            let expect: Vec<Vec<u8>> = msgs.iter().filter(|m| !m.is_empty()).cloned().collect();
            let send = async {
                for m in &msgs { a.send(m).await.unwrap(); }
                a.shutdown().await.unwrap();
            };
            let recv = async {
                let mut got = Vec::new();
                while let Some(m) = b.recv().await.unwrap() { got.push(m.to_vec()); }
                got
            };
            let ((), got) = tokio::join!(send, recv);
            assert_eq!(got, expect);
        });
    }

    #[test]
    fn garbage_after_handshake_never_panics(garbage in proptest::collection::vec(any::<u8>(), 0..300)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let r = rt.block_on(raw_peer_after_handshake(garbage, Config::default().with_max_frame_len(4096)));
        prop_assert!(r.is_err() || r.as_ref().unwrap().is_none());
    }

    #[test]
    fn garbage_handshake_never_panics(garbage in proptest::collection::vec(any::<u8>(), 0..300)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (a, mut far) = tokio::io::duplex(4096);
            let server = tokio::spawn(async move { SecretStream::new(a, false, &KeyPair::generate(), Config::default()).await });
            let _ = far.write_all(&garbage).await;
            let _ = far.shutdown().await;
            assert!(server.await.unwrap().is_err());
        });
    }
}

#[tokio::test]
async fn messages_from_a_peer_that_already_left_are_still_read() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let (ka, kb) = (KeyPair::generate(), KeyPair::generate());
    let client = tokio::spawn(async move {
        let mut s = SecretStream::new(a, true, &ka, Config::default())
            .await
            .unwrap();
        s.send(b"goodbye").await.unwrap();
        s.shutdown().await.unwrap();
        // Dropped here: the transport is gone before the server writes anything.
    });
    let (server, ()) = tokio::join!(SecretStream::new(b, false, &kb, Config::default()), async {
        client.await.unwrap()
    });
    let mut server = server.unwrap();
    assert_eq!(
        server.recv().await.unwrap().as_deref(),
        Some(&b"goodbye"[..])
    );
    assert_eq!(server.recv().await.unwrap(), None);
    // Writing fails with the transport's error, and keeps failing.
    assert!(matches!(server.send(b"x").await, Err(Error::Io(_))));
    assert!(matches!(server.send(b"x").await, Err(Error::Io(_))));
}

/// `traffic()` counts encrypted message bytes as JS `rawBytesRead` / `rawBytesWritten` do
/// (keepalives in, handshake and header frames out), and a handle taken before the stream
/// moves keeps counting.
#[tokio::test]
async fn traffic_counts_message_bytes_both_ways() {
    let (a, b) = pair(Config::default(), Config::default(), 64 * 1024).await;
    let (mut a, mut b) = (a.unwrap(), b.unwrap());
    let (ta, tb) = (a.traffic(), b.traffic());
    assert_eq!(
        (ta.read(), ta.written(), tb.read(), tb.written()),
        (0, 0, 0, 0)
    );
    let reader = tokio::spawn(async move {
        let got = b.recv().await.unwrap().unwrap();
        (b, got)
    });
    a.send_keepalive().await.unwrap();
    a.send(b"hello").await.unwrap();
    let (mut b, got) = reader.await.unwrap();
    assert_eq!(&got[..], b"hello");
    // Each message: 3-byte length, 1 tag byte, the payload, a 16-byte MAC.
    assert_eq!(ta.written(), (3 + 17) + (3 + 17 + 5));
    assert_eq!(tb.read(), 17 + (17 + 5));
    assert_eq!((ta.read(), tb.written()), (0, 0));
    b.send(b"hi").await.unwrap();
    assert_eq!(&a.recv().await.unwrap().unwrap()[..], b"hi");
    assert_eq!((ta.read(), tb.written()), (17 + 2, 3 + 17 + 2));
}

/// A first handshake message announced as 16 MiB - 1 is refused from its length prefix:
/// nothing waits for (or reserves) the body (this used to reserve 16 MiB and wait forever).
#[tokio::test]
async fn an_oversized_handshake_message_is_refused_from_its_length() {
    let (mut raw, b) = tokio::io::duplex(64 * 1024);
    raw.write_all(&[0xFF, 0xFF, 0xFF]).await.unwrap();
    let kb = KeyPair::generate();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        SecretStream::new(b, false, &kb, Config::default()),
    )
    .await
    .expect("refused at once, not after the body");
    assert!(
        matches!(
            r,
            Err(Error::Handshake(HandshakeError::WrongSize {
                index: 0,
                len: 0xFF_FFFF,
                ..
            }))
        ),
        "{r:?}"
    );
    drop(raw);
}

/// A remote that opens the transport and never completes the handshake is dropped after
/// the default handshake timeout (10 s); the timeout can be changed or turned off.
#[tokio::test(start_paused = true)]
async fn a_stalled_handshake_times_out() {
    let (_raw, b) = tokio::io::duplex(1024);
    let kb = KeyPair::generate();
    let started = tokio::time::Instant::now();
    let r = SecretStream::new(b, false, &kb, Config::default()).await;
    assert!(
        matches!(r, Err(Error::TimedOut(d)) if d == Duration::from_secs(10)),
        "{r:?}"
    );
    assert_eq!(started.elapsed(), Duration::from_secs(10));

    let (_raw, b) = tokio::io::duplex(1024);
    let cfg = Config::default().with_handshake_timeout(Some(Duration::from_secs(2)));
    let r = SecretStream::new(b, false, &kb, cfg).await;
    assert!(
        matches!(r, Err(Error::TimedOut(d)) if d == Duration::from_secs(2)),
        "{r:?}"
    );

    let (_raw, b) = tokio::io::duplex(1024);
    let cfg = Config::default().with_handshake_timeout(None);
    let waiting = tokio::time::timeout(
        Duration::from_secs(3600),
        SecretStream::new(b, false, &kb, cfg),
    )
    .await;
    assert!(waiting.is_err(), "without a limit the handshake waits");
}

#[tokio::test]
async fn writes_wait_once_the_write_buffer_holds_its_limit() {
    use corenet_noise::DEFAULT_WRITE_BUFFER;
    use std::task::Poll;
    // The far end never reads: the transport takes 4 KiB and then nothing.
    let (a, b) = pair(Config::default(), Config::default(), 4096).await;
    let (mut a, _b) = (a.unwrap(), b.unwrap());
    let msg = [1u8; 1024];
    // A 1,024 B message is a 3 B length, 1 B tag, the message and a 16 B MAC on the wire.
    let framed = 3 + 1 + msg.len() + 16;
    let mut sent = 0usize;
    let waited = std::future::poll_fn(|cx| {
        // Bounded: 4 MiB of messages at most.
        for _ in 0..4096 {
            match a.poll_send(cx, &msg) {
                Poll::Ready(Ok(())) => sent += 1,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Ready(Ok(true)),
            }
        }
        Poll::Ready(Ok(false))
    })
    .await
    .unwrap();
    assert!(waited, "a write waits for the transport");
    let encrypted = sent * framed;
    assert!(
        (DEFAULT_WRITE_BUFFER..DEFAULT_WRITE_BUFFER + framed + 4096).contains(&encrypted),
        "{encrypted} B encrypted before the first wait"
    );
}
