//! The async mux, Rust to Rust over an in-memory duplex carrying real secret streams.

use std::time::Duration;

use bytes::Bytes;
use corenet_mux::{
    Channel, ChannelOptions, ChannelSender, CloseReason, DriverConfig, Error, MuxDriver, MuxHandle,
    PairRequest, PairRequests, ProtocolError,
};
use corenet_noise::{Config, KeyPair, SecretStream};
use tokio::io::DuplexStream;
use tokio::task::JoinHandle;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

type Driven = (MuxHandle, JoinHandle<Result<(), Error>>);

async fn streams() -> (SecretStream<DuplexStream>, SecretStream<DuplexStream>) {
    streams_with(Config::default()).await
}

async fn streams_with(config: Config) -> (SecretStream<DuplexStream>, SecretStream<DuplexStream>) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (ka, kb) = (KeyPair::generate(), KeyPair::generate());
    let ca = config.clone();
    let ta = tokio::spawn(async move { SecretStream::new(a, true, &ka, ca).await });
    let b = SecretStream::new(b, false, &kb, config).await.unwrap();
    (ta.await.unwrap().unwrap(), b)
}

fn spawn(driver: MuxDriver<DuplexStream>) -> JoinHandle<Result<(), Error>> {
    tokio::spawn(driver)
}

async fn pair_with(config: DriverConfig) -> (Driven, Driven) {
    // A small stream buffer, so that backpressure shows with little data.
    let (sa, sb) = streams_with(Config::default().with_write_buffer(16 * 1024)).await;
    let (ha, da) = MuxHandle::new(sa, config.clone());
    let (hb, db) = MuxHandle::new(sb, config);
    ((ha, spawn(da)), (hb, spawn(db)))
}

async fn pair() -> (Driven, Driven) {
    pair_with(DriverConfig::default()).await
}

async fn recv(ch: &mut Channel) -> Option<corenet_mux::Message> {
    timeout(WAIT, ch.recv()).await.expect("recv timed out")
}

async fn next_request(reqs: &mut PairRequests) -> PairRequest {
    timeout(WAIT, reqs.recv())
        .await
        .expect("no pair request")
        .expect("the mux closed")
}

fn opts(p: &str) -> ChannelOptions {
    ChannelOptions::new(p)
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<MuxHandle>();
    check::<Channel>();
    check::<ChannelSender>();
    check::<PairRequests>();
    check::<PairRequest>();
    check::<MuxDriver<DuplexStream>>();
}

#[tokio::test]
async fn channels_open_exchange_and_close() {
    let ((a, da), (b, db)) = pair().await;
    assert_eq!(
        a.stream_info().handshake_hash,
        b.stream_info().handshake_hash
    );
    assert!(a.stream_info().is_initiator && !b.stream_info().is_initiator);
    let mut ca = a
        .open(&opts("chat").with_id(&b"room"[..]).with_handshake(&b"A"[..]))
        .unwrap();
    let mut cb = b
        .open(&opts("chat").with_id(&b"room"[..]).with_handshake(&b"B"[..]))
        .unwrap();
    assert_eq!(timeout(WAIT, ca.opened()).await.unwrap().unwrap(), "B");
    assert_eq!(timeout(WAIT, cb.opened()).await.unwrap().unwrap(), "A");
    assert!(ca.is_opened() && a.is_opened("chat", b"room"));

    for t in 0..5u64 {
        ca.send(t, format!("a{t}").as_bytes()).await.unwrap();
        cb.send_encoded(t, &format!("b{t}")).await.unwrap();
    }
    for t in 0..5u64 {
        let m = recv(&mut cb).await.unwrap();
        assert_eq!(
            (m.message_type, &m.payload[..]),
            (t, format!("a{t}").as_bytes())
        );
        let m = recv(&mut ca).await.unwrap();
        assert_eq!(m.message_type, t);
        assert_eq!(m.decode::<String>().unwrap(), format!("b{t}"));
    }

    ca.close();
    assert_eq!(
        timeout(WAIT, cb.closed()).await.unwrap(),
        CloseReason::Remote
    );
    assert!(recv(&mut cb).await.is_none());
    assert_eq!(ca.close_reason(), Some(CloseReason::Local));
    assert!(matches!(ca.send(0, b"x").await, Err(Error::ChannelClosed)));
    assert!(!a.is_opened("chat", b"room"));

    a.close();
    timeout(WAIT, da).await.unwrap().unwrap().unwrap();
    timeout(WAIT, db).await.unwrap().unwrap().unwrap();
    assert!(matches!(b.open(&opts("late")), Err(Error::MuxClosed)));
    b.closed().await.unwrap();
}

#[tokio::test]
async fn a_pairing_hook_answers_remote_first_opens_and_keeps_early_messages() {
    let ((a, _da), (b, _db)) = pair().await;
    let mut reqs = b.pair("core", None);
    let ca = a
        .open(
            &opts("core")
                .with_id(&[7u8; 32][..])
                .with_handshake(&b"hs-a"[..]),
        )
        .unwrap();
    ca.send_now(0, b"first").unwrap();
    ca.send_now(1, b"second").unwrap();

    let req = next_request(&mut reqs).await;
    assert_eq!(req.key().protocol(), "core");
    assert_eq!(req.key().id()[..], [7u8; 32]);
    let mut cb = req
        .accept(&req_options_with_handshake(&b"hs-b"[..]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cb.remote_handshake().unwrap(), "hs-a");
    assert_eq!(&recv(&mut cb).await.unwrap().payload[..], b"first");
    assert_eq!(&recv(&mut cb).await.unwrap().payload[..], b"second");
    assert_eq!(timeout(WAIT, ca.opened()).await.unwrap().unwrap(), "hs-b");
}

fn req_options_with_handshake(hs: &'static [u8]) -> ChannelOptions {
    ChannelOptions::new("core")
        .with_id(&[7u8; 32][..])
        .with_handshake(hs)
}

#[tokio::test]
async fn rejected_opens_close_the_opener() {
    let ((a, _da), (b, _db)) = pair().await;
    let mut reqs = b.pair("maybe", None);
    // No hook: rejected at once.
    let c1 = a.open(&opts("nobody")).unwrap();
    assert!(matches!(
        timeout(WAIT, c1.opened()).await.unwrap(),
        Err(Error::ChannelClosed)
    ));
    assert_eq!(c1.close_reason(), Some(CloseReason::Rejected));
    // Hook, explicit reject.
    let c2 = a.open(&opts("maybe")).unwrap();
    next_request(&mut reqs).await.reject();
    assert_eq!(
        timeout(WAIT, c2.closed()).await.unwrap(),
        CloseReason::Rejected
    );
    // Hook, request dropped unanswered.
    let c3 = a.open(&opts("maybe").with_id(&b"3"[..])).unwrap();
    drop(next_request(&mut reqs).await);
    assert_eq!(
        timeout(WAIT, c3.closed()).await.unwrap(),
        CloseReason::Rejected
    );
    // Hook dropped: rejected again.
    drop(reqs);
    let c4 = a.open(&opts("maybe").with_id(&b"4"[..])).unwrap();
    assert_eq!(
        timeout(WAIT, c4.closed()).await.unwrap(),
        CloseReason::Rejected
    );
    assert!(a.is_idle());
}

#[tokio::test]
async fn a_corked_batch_arrives_in_order() {
    for packing in [true, false] {
        corked_batch(DriverConfig::default().with_packing(packing)).await;
    }
}

async fn corked_batch(config: DriverConfig) {
    let ((a, _da), (b, _db)) = pair_with(config).await;
    let c1 = a.open(&opts("one")).unwrap();
    let mut r1 = b.open(&opts("one")).unwrap();
    let mut reqs = b.pair("two", None);
    timeout(WAIT, c1.opened()).await.unwrap().unwrap();
    let c2;
    {
        let _cork = a.cork();
        for i in 0..100u8 {
            c1.send_now(u64::from(i % 3), &[i]).unwrap();
        }
        c2 = a.open(&opts("two")).unwrap();
        c2.send_now(5, b"in the batch").unwrap();
    }
    let mut r2 = next_request(&mut reqs).await.accept(&opts("two")).unwrap();
    for i in 0..100u8 {
        let m = recv(&mut r1).await.unwrap();
        assert_eq!(
            (m.message_type, &m.payload[..]),
            (u64::from(i % 3), &[i][..])
        );
    }
    let m = recv(&mut r2).await.unwrap();
    assert_eq!((m.message_type, &m.payload[..]), (5, &b"in the batch"[..]));
}

#[tokio::test]
async fn a_slow_reader_pushes_back_on_the_sender_without_losing_messages() {
    let config = DriverConfig::default()
        .with_send_buffer(16 * 1024)
        .with_channel_buffer_messages(4);
    let ((a, _da), (b, _db)) = pair_with(config).await;
    let ca = a.open(&opts("bulk")).unwrap();
    let mut cb = b.open(&opts("bulk")).unwrap();
    timeout(WAIT, ca.opened()).await.unwrap().unwrap();
    const N: u32 = 600;
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let sender = ca.sender();
    let counter = sent.clone();
    let writer = tokio::spawn(async move {
        let payload = vec![0xabu8; 1024];
        for i in 0..N {
            let mut p = payload.clone();
            p[..4].copy_from_slice(&i.to_le_bytes());
            sender.send(0, &p).await.unwrap();
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let early = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        early < N / 2,
        "the writer got {early} of {N} messages out with nobody reading"
    );
    for i in 0..N {
        let m = recv(&mut cb).await.unwrap();
        assert_eq!(m.payload[..4], i.to_le_bytes());
    }
    timeout(WAIT, writer).await.unwrap().unwrap();
    drop(ca);
}

#[tokio::test]
async fn close_and_reopen_in_both_orders() {
    let ((a, _da), (b, _db)) = pair().await;
    let mut reqs_b = b.pair("r", None);
    let mut reqs_a = a.pair("r", None);
    for round in 0..6u8 {
        let (mut ca, mut cb) = if round % 2 == 0 {
            let ca = a.open(&opts("r")).unwrap();
            let cb = next_request(&mut reqs_b).await.accept(&opts("r")).unwrap();
            (ca, cb)
        } else {
            let cb = b.open(&opts("r")).unwrap();
            let ca = next_request(&mut reqs_a).await.accept(&opts("r")).unwrap();
            (ca, cb)
        };
        timeout(WAIT, ca.opened()).await.unwrap().unwrap();
        timeout(WAIT, cb.opened()).await.unwrap().unwrap();
        ca.send(0, &[round]).await.unwrap();
        cb.send(0, &[round]).await.unwrap();
        assert_eq!(recv(&mut cb).await.unwrap().payload[..], [round]);
        assert_eq!(recv(&mut ca).await.unwrap().payload[..], [round]);
        // Close from alternating sides; both see it.
        if round % 3 == 0 {
            ca.close();
        } else {
            cb.close();
        }
        timeout(WAIT, ca.closed()).await.unwrap();
        timeout(WAIT, cb.closed()).await.unwrap();
    }
    // Open, close before the remote answers, re-open at once (protomux PR #30).
    let first = a.open(&opts("r")).unwrap();
    first.close();
    let second = a.open(&opts("r")).unwrap();
    // b sees both opens; the first one is withdrawn, so the request that comes out is the
    // second.
    let cb = next_request(&mut reqs_b).await.accept(&opts("r")).unwrap();
    timeout(WAIT, second.opened()).await.unwrap().unwrap();
    timeout(WAIT, cb.opened()).await.unwrap().unwrap();
    second.send(3, b"replacement").await.unwrap();
    let mut cb = cb;
    assert_eq!(&recv(&mut cb).await.unwrap().payload[..], b"replacement");
}

#[tokio::test]
async fn dropping_a_channel_closes_it_and_dropping_every_handle_closes_the_mux() {
    let ((a, da), (b, db)) = pair().await;
    let ca = a.open(&opts("d")).unwrap();
    let cb = b.open(&opts("d")).unwrap();
    timeout(WAIT, cb.opened()).await.unwrap().unwrap();
    drop(ca);
    assert_eq!(
        timeout(WAIT, cb.closed()).await.unwrap(),
        CloseReason::Remote
    );
    let keep = b.open(&opts("keep")).unwrap();
    drop(a);
    timeout(WAIT, da).await.unwrap().unwrap().unwrap();
    // The remote's channels close with the mux, and its driver ends.
    assert_eq!(
        timeout(WAIT, keep.closed()).await.unwrap(),
        CloseReason::MuxClosed
    );
    timeout(WAIT, db).await.unwrap().unwrap().unwrap();
    assert!(b.is_closed());
}

#[tokio::test]
async fn a_protocol_violation_fails_the_mux_with_a_typed_error() {
    let (sa, mut sb) = streams().await;
    let (a, da) = MuxHandle::new(sa, DriverConfig::default());
    let da = spawn(da);
    let ca = a.open(&opts("x")).unwrap();
    // The remote rejects a channel we never opened.
    sb.send(&[0, 2, 9]).await.unwrap();
    let r = timeout(WAIT, da).await.unwrap().unwrap();
    assert!(
        matches!(
            r,
            Err(Error::Protocol(ProtocolError::InvalidReject {
                local_id: 9
            }))
        ),
        "{r:?}"
    );
    assert_eq!(
        timeout(WAIT, ca.closed()).await.unwrap(),
        CloseReason::MuxClosed
    );
    assert!(matches!(
        a.closed().await,
        Err(Error::Protocol(ProtocolError::InvalidReject { .. }))
    ));
    assert!(matches!(ca.send(0, b"").await, Err(Error::Protocol(_))));
    // Our side of the stream is gone: after our open, the remote reads the end or an error.
    let open = timeout(WAIT, sb.recv()).await.unwrap().unwrap().unwrap();
    assert_eq!(&open[..], &[0, 1, 1, 1, b'x', 0]);
    let end = timeout(WAIT, sb.recv()).await.unwrap();
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
}

#[tokio::test]
async fn destroy_stops_at_once() {
    let ((a, da), (b, db)) = pair().await;
    let cb = b.open(&opts("z")).unwrap();
    a.destroy();
    timeout(WAIT, da).await.unwrap().unwrap().unwrap();
    assert_eq!(
        timeout(WAIT, cb.closed()).await.unwrap(),
        CloseReason::MuxClosed
    );
    let _ = timeout(WAIT, db).await.unwrap().unwrap();
}

#[tokio::test]
async fn large_messages_cross_in_both_directions() {
    let ((a, _da), (b, _db)) = pair().await;
    let mut ca = a.open(&opts("big")).unwrap();
    let mut cb = b.open(&opts("big")).unwrap();
    let big = Bytes::from(vec![0x5au8; 200 * 1024]);
    let (x, y) = tokio::join!(
        async {
            for _ in 0..2 {
                ca.send(0, &big).await.unwrap();
            }
            let mut n = 0;
            while n < 2 {
                assert_eq!(recv(&mut ca).await.unwrap().payload, big);
                n += 1;
            }
            n
        },
        async {
            for _ in 0..2 {
                cb.send(0, &big).await.unwrap();
            }
            let mut n = 0;
            while n < 2 {
                assert_eq!(recv(&mut cb).await.unwrap().payload, big);
                n += 1;
            }
            n
        }
    );
    assert_eq!((x, y), (2, 2));
}

#[test]
fn the_core_frame_limit_is_the_secret_stream_message_limit() {
    assert_eq!(
        corenet_mux::core::DEFAULT_MAX_FRAME_LEN,
        corenet_noise::MAX_FRAME_LEN - corenet_noise::secretstream::ABYTES
    );
}

/// Several tasks on several threads send and receive on their own channels at once; every
/// message arrives, in order per channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_channels_on_threads_keep_per_channel_order() {
    // Both sides open their channels before the drivers run, so that no open arrives before
    // the other side's channel exists (it would be rejected, as in JS).
    let (sa, sb) = streams().await;
    let (a, da) = MuxHandle::new(sa, DriverConfig::default());
    let (b, db) = MuxHandle::new(sb, DriverConfig::default());
    const CHANNELS: u8 = 4;
    const N: u32 = 1500;
    let mut tasks = Vec::new();
    for c in 0..CHANNELS {
        let name = format!("ch{c}");
        let ca = a.open(&opts(&name)).unwrap();
        let mut cb = b.open(&opts(&name)).unwrap();
        tasks.push(tokio::spawn(async move {
            timeout(WAIT, ca.opened()).await.unwrap().unwrap();
            for i in 0..N {
                let mut msg = vec![c; 1 + (i % 200) as usize];
                msg[..1].copy_from_slice(&[c]);
                msg.extend_from_slice(&i.to_le_bytes());
                if i % 7 == 0 {
                    ca.send_now(u64::from(i % 3), &msg).unwrap();
                } else {
                    ca.send(u64::from(i % 3), &msg).await.unwrap();
                }
            }
            ca
        }));
        tasks.push(tokio::spawn(async move {
            for i in 0..N {
                let m = timeout(WAIT, cb.recv()).await.unwrap().unwrap();
                assert_eq!(m.message_type, u64::from(i % 3));
                assert_eq!(m.payload[0], c);
                assert_eq!(m.payload[m.payload.len() - 4..], i.to_le_bytes());
            }
            cb
        }));
    }
    let (_da, _db) = (spawn(da), spawn(db));
    for t in tasks {
        timeout(WAIT, t).await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn buffers_of_a_burst_of_large_frames_are_released_when_idle() {
    let ((a, _da), (b, _db)) = pair().await;
    let ca = a.open(&opts("bulk")).unwrap();
    let mut cb = b.open(&opts("bulk")).unwrap();
    timeout(WAIT, ca.opened()).await.unwrap().unwrap();
    timeout(WAIT, cb.opened()).await.unwrap().unwrap();
    let block = vec![9u8; 64 * 1024];
    let sender = {
        let ca = ca.sender();
        let block = block.clone();
        tokio::spawn(async move {
            for t in 0..32u64 {
                ca.send(t % 4, &block).await.unwrap();
            }
        })
    };
    for _ in 0..32 {
        let m = recv(&mut cb).await.unwrap();
        assert_eq!(m.payload.len(), block.len());
    }
    sender.await.unwrap();
    // Everything went out: the driver is idle and keeps no 64 KiB buffers around.
    let mut idle = false;
    for _ in 0..100 {
        if a.spare_capacity() == 0 {
            idle = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(idle, "{} bytes of spare buffers kept", a.spare_capacity());
}
