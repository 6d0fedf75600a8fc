//! Rust-to-Rust UDX over 127.0.0.1: streams, demultiplexing, messages, END/DESTROY, firewall,
//! change_remote, and a secret stream on top.

use std::net::SocketAddr;
use std::time::Duration;

use corenet_udx::{Error, SocketConfig, StreamConfig, UdxSocket, UdxStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(30);

fn pattern(offset: usize, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        let x = offset + i;
        *b = (x.wrapping_mul(31) ^ (x >> 11)) as u8;
    }
}

async fn sockets() -> (UdxSocket, UdxSocket) {
    let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
    (
        UdxSocket::bind(lo).await.unwrap(),
        UdxSocket::bind(lo).await.unwrap(),
    )
}

fn pair(a: &UdxSocket, b: &UdxSocket) -> (UdxStream, UdxStream) {
    let sa = a.create_stream(StreamConfig::default()).unwrap();
    let sb = b.create_stream(StreamConfig::default()).unwrap();
    sa.connect(sb.id(), b.local_addr()).unwrap();
    sb.connect(sa.id(), a.local_addr()).unwrap();
    (sa, sb)
}

async fn send_all(mut s: impl AsyncWriteExt + Unpin, total: usize) {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut off = 0;
    while off < total {
        let n = chunk.len().min(total - off);
        pattern(off, &mut chunk[..n]);
        s.write_all(&chunk[..n]).await.unwrap();
        off += n;
    }
    s.shutdown().await.unwrap();
}

async fn recv_all(mut s: impl AsyncReadExt + Unpin) -> usize {
    let mut buf = vec![0u8; 64 * 1024];
    let mut expect = vec![0u8; 64 * 1024];
    let mut got = 0;
    loop {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            return got;
        }
        pattern(got, &mut expect[..n]);
        assert!(buf[..n] == expect[..n], "corrupt bytes at {got}");
        got += n;
    }
}

#[tokio::test]
async fn sixteen_mib_both_ways_then_graceful_close() {
    let (a, b) = sockets().await;
    let (sa, sb) = pair(&a, &b);
    const TOTAL: usize = 16 << 20;
    let (ra, wa) = tokio::io::split(sa);
    let (rb, wb) = tokio::io::split(sb);
    let run = async {
        tokio::join!(
            send_all(wa, TOTAL),
            send_all(wb, TOTAL),
            recv_all(ra),
            recv_all(rb)
        )
    };
    let (_, _, ga, gb) = timeout(WAIT, run).await.expect("transfer timed out");
    assert_eq!((ga, gb), (TOTAL, TOTAL));
}

#[tokio::test]
async fn flushed_and_closed_report_a_graceful_end() {
    let (a, b) = sockets().await;
    let (mut sa, mut sb) = pair(&a, &b);
    sa.write_all(b"hello").await.unwrap();
    timeout(WAIT, sa.flushed()).await.unwrap().unwrap();
    sa.shutdown().await.unwrap();
    let mut got = Vec::new();
    timeout(WAIT, sb.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b"hello");
    sb.shutdown().await.unwrap();
    timeout(WAIT, sa.closed()).await.unwrap().unwrap();
    timeout(WAIT, sb.closed()).await.unwrap().unwrap();
    let mut rest = Vec::new();
    assert_eq!(sa.read_to_end(&mut rest).await.unwrap(), 0);
}

#[tokio::test]
async fn destroy_resets_the_peer() {
    let (a, b) = sockets().await;
    let (sa, mut sb) = pair(&a, &b);
    sa.destroy();
    let mut buf = [0u8; 8];
    let err = timeout(WAIT, sb.read(&mut buf)).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    assert_eq!(sb.closed().await, Err(Error::ConnectionReset));
    assert_eq!(sa.closed().await, Err(Error::Destroyed));
}

#[tokio::test]
async fn non_udx_datagrams_go_to_the_owner_and_raw_sends_share_the_port() {
    let (a, b) = sockets().await;
    let (_sa, _sb) = pair(&a, &b);
    // dht-rpc request, holepunch probe, and a UDX packet for an unknown id.
    let mut unknown = vec![0xff, 0x01, 0x01, 0x00];
    unknown.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    unknown.extend_from_slice(&[0u8; 12]);
    for d in [vec![0x03, 1, 2, 3], vec![0x00], unknown.clone()] {
        a.send_to(&d, b.local_addr()).await.unwrap();
        let (got, from) = timeout(WAIT, b.recv_datagram()).await.unwrap().unwrap();
        assert_eq!(got, d);
        assert_eq!(from, a.local_addr());
    }
    assert_eq!(b.stats().unknown_stream, 1);
    assert_eq!(b.stats().to_owner, 3);
}

#[tokio::test]
async fn try_send_works_right_after_bind() {
    // A DHT sends its first bootstrap message from a socket it just bound, without awaiting:
    // that must not fail with WouldBlock (it used to, costing a one-second retry per node).
    let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let b = UdxSocket::bind(lo).await.unwrap();
    let a = UdxSocket::bind(lo).await.unwrap();
    a.try_send_to(&[0x03, 9], b.local_addr()).unwrap();
    let (got, from) = timeout(WAIT, b.recv_datagram()).await.unwrap().unwrap();
    assert_eq!(got, vec![0x03, 9]);
    assert_eq!(from, a.local_addr());
}

#[tokio::test]
async fn owner_queue_is_bounded() {
    let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let a = UdxSocket::bind(lo).await.unwrap();
    let b = UdxSocket::bind_with(lo, SocketConfig::default().with_datagram_queue(4))
        .await
        .unwrap();
    for i in 0..20u8 {
        a.send_to(&[0x13, i], b.local_addr()).await.unwrap();
    }
    timeout(WAIT, async {
        while b.stats().datagrams_rx < 20 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(b.stats().owner_dropped, 16);
    let (first, _) = b.recv_datagram().await.unwrap();
    assert_eq!(first, [0x13, 0]);
}

#[tokio::test]
async fn messages_both_ways() {
    let (a, b) = sockets().await;
    let (sa, sb) = pair(&a, &b);
    assert_eq!(sa.max_message_len(), 1152);
    sa.send_message(b"ping").await.unwrap();
    assert_eq!(
        timeout(WAIT, sb.recv_message()).await.unwrap().unwrap(),
        b"ping"
    );
    sb.try_send_message(&[7u8; 1152]).unwrap();
    assert_eq!(
        timeout(WAIT, sa.recv_message()).await.unwrap().unwrap(),
        vec![7u8; 1152]
    );
    assert!(matches!(
        sa.try_send_message(&[0u8; 1153]),
        Err(Error::MessageTooLarge { .. })
    ));
}

#[tokio::test]
async fn firewall_connects_on_first_packet() {
    let (a, b) = sockets().await;
    let sa = a.create_stream(StreamConfig::default()).unwrap();
    let mut sb = b.create_stream(StreamConfig::default()).unwrap();
    // B knows A's id (from a handshake) but not its address; A connects and writes first.
    sb.connect_on_first_packet(sa.id()).unwrap();
    sa.connect(sb.id(), b.local_addr()).unwrap();
    let mut sa = sa;
    sa.write_all(b"first").await.unwrap();
    let (rid, addr) = timeout(WAIT, sb.connected()).await.unwrap().unwrap();
    assert_eq!((rid, addr), (sa.id(), a.local_addr()));
    let mut buf = [0u8; 5];
    timeout(WAIT, sb.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"first");
    sb.write_all(b"reply").await.unwrap();
    timeout(WAIT, sa.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"reply");
    // Without a firewall, packets before connect are dropped and counted.
    let c = b.create_stream(StreamConfig::default()).unwrap();
    let sx = a.create_stream(StreamConfig::default()).unwrap();
    sx.connect(c.id(), b.local_addr()).unwrap();
    sx.try_send_message(b"x").unwrap();
    timeout(WAIT, async {
        while b.stats().firewall_dropped == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn change_remote_resolves_after_ack() {
    let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let a = UdxSocket::bind(lo).await.unwrap();
    let b = UdxSocket::bind(any).await.unwrap();
    let b_port = b.local_addr().port();
    let sa = a.create_stream(StreamConfig::default()).unwrap();
    let mut sb = b.create_stream(StreamConfig::default()).unwrap();
    sa.connect(sb.id(), SocketAddr::from(([127, 0, 0, 1], b_port)))
        .unwrap();
    sb.connect(sa.id(), a.local_addr()).unwrap();
    let mut sa = sa;
    sa.write_all(&[1u8; 100_000]).await.unwrap();
    // B is also reachable at 127.0.0.2: move there.
    timeout(
        WAIT,
        sa.change_remote(sb.id(), SocketAddr::from(([127, 0, 0, 2], b_port))),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(sa.remote().unwrap().1.ip().to_string(), "127.0.0.2");
    sa.write_all(&[2u8; 100_000]).await.unwrap();
    let mut buf = vec![0u8; 200_000];
    timeout(WAIT, sb.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf[..100_000].iter().all(|&x| x == 1) && buf[100_000..].iter().all(|&x| x == 2));
}

#[tokio::test]
async fn dropped_handle_ends_gracefully_and_socket_forgets_the_stream() {
    let (a, b) = sockets().await;
    let (mut sa, mut sb) = pair(&a, &b);
    sa.write_all(b"last words").await.unwrap();
    drop(sa);
    let mut got = Vec::new();
    timeout(WAIT, sb.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b"last words");
    sb.shutdown().await.unwrap();
    timeout(WAIT, sb.closed()).await.unwrap().unwrap();
}

#[tokio::test]
async fn secret_stream_runs_over_udx() {
    use corenet_noise::{Config, KeyPair, SecretStream};
    let (a, b) = sockets().await;
    let (sa, sb) = pair(&a, &b);
    let (ka, kb) = (KeyPair::generate(), KeyPair::generate());
    let expect = kb.public_key();
    let client = tokio::spawn(async move {
        let cfg = Config::default().with_remote_public_key(expect);
        let s = SecretStream::new(sa, true, &ka, cfg).await.unwrap();
        send_all(s, 4 << 20).await;
    });
    let server = SecretStream::new(sb, false, &kb, Config::default())
        .await
        .unwrap();
    let got = timeout(WAIT, recv_all(server)).await.unwrap();
    assert_eq!(got, 4 << 20);
    timeout(WAIT, client).await.unwrap().unwrap();
}

#[tokio::test]
async fn stream_ids_are_unique_and_choosable() {
    let (a, _b) = sockets().await;
    let s1 = a
        .create_stream_with_id(42, StreamConfig::default())
        .unwrap();
    assert_eq!(s1.id(), 42);
    assert_eq!(
        a.create_stream_with_id(42, StreamConfig::default())
            .unwrap_err(),
        Error::IdInUse(42)
    );
    let ids: std::collections::HashSet<u32> = (0..100)
        .map(|_| a.create_stream(StreamConfig::default()).unwrap().id())
        .collect();
    assert!(ids.len() >= 99);
}

#[tokio::test]
async fn an_idle_stream_releases_the_buffers_a_transfer_grew() {
    let (a, b) = sockets().await;
    let (mut sa, mut sb) = pair(&a, &b);
    let total = 4 * 1024 * 1024;
    // Without ending the stream (an ended stream releases everything anyway).
    let write = async {
        let chunk = vec![5u8; 64 * 1024];
        for _ in 0..total / chunk.len() {
            sa.write_all(&chunk).await.unwrap();
        }
    };
    let read = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while got < total {
            got += timeout(WAIT, sb.read(&mut buf)).await.unwrap().unwrap();
        }
    };
    tokio::join!(write, read);
    assert!(sa.buffer_storage() > 64 * 1024, "{}", sa.buffer_storage());
    let mut released = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if sa.buffer_storage() == 0 && sb.buffer_storage() == 0 {
            released = true;
            break;
        }
    }
    assert!(
        released,
        "still held: {} / {}",
        sa.buffer_storage(),
        sb.buffer_storage()
    );
}

#[tokio::test]
async fn a_write_to_an_idle_stream_is_sent_by_the_writer() {
    let (a, b) = sockets().await;
    let (mut sa, mut sb) = pair(&a, &b);
    let mut buf = [0u8; 64];
    // Connecting queued the streams for the driver; one exchange settles them.
    sa.write_all(&buf).await.unwrap();
    timeout(WAIT, sb.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    sb.write_all(&buf).await.unwrap();
    timeout(WAIT, sa.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    for round in 0..20u8 {
        let before = a.stats().datagrams_tx;
        // On this current-thread runtime the socket's driver cannot run between the write
        // and the check: the packet left from the writer's task.
        sa.write_all(&[round; 64]).await.unwrap();
        assert_eq!(a.stats().datagrams_tx, before + 1, "round {round}");
        timeout(WAIT, sb.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(buf, [round; 64]);
        // The echo acknowledges the ping, so the stream is idle again.
        sb.write_all(&buf).await.unwrap();
        timeout(WAIT, sa.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
    }
    // A bulk write starts inline and goes on through the driver: every byte, in order.
    let total = 4 << 20;
    let ((), got) = timeout(WAIT, async {
        tokio::join!(send_all(&mut sa, total), recv_all(&mut sb))
    })
    .await
    .unwrap();
    assert_eq!(got, total);
}

#[test]
fn a_socket_whose_runtime_shut_down_is_closed() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (a, b) = rt.block_on(sockets());
    let (mut sa, _sb) = pair(&a, &b);
    drop(rt);
    // The driver task was dropped with its runtime: waiters see the socket closed.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(timeout(WAIT, a.recv_datagram()).await.unwrap(), None);
        let mut buf = [0u8; 8];
        assert!(timeout(WAIT, sa.read(&mut buf)).await.unwrap().is_err());
        assert!(matches!(
            a.create_stream(StreamConfig::default()),
            Err(Error::SocketClosed)
        ));
    });
}
