//! The UDX instance over 127.0.0.1: several sockets sharing one stream table, streams that
//! connect through their firewall on whichever socket the peer reaches, streams moved
//! between sockets, relays, TTL sends and socket lifetime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use corenet_udx::{Error, FirewallDecision, SocketId, StreamConfig, Udx, UdxSocket, UdxStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(30);

fn lo() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn pattern(offset: usize, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        let x = offset + i;
        *b = (x.wrapping_mul(31) ^ (x >> 11)) as u8;
    }
}

/// Writes `len` pattern bytes starting at stream offset `from`.
async fn write_range(s: &mut UdxStream, from: usize, len: usize) {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut off = from;
    while off < from + len {
        let n = chunk.len().min(from + len - off);
        pattern(off, &mut chunk[..n]);
        s.write_all(&chunk[..n]).await.unwrap();
        off += n;
    }
}

/// Reads exactly `len` bytes and checks them against the pattern at offset `from`.
async fn read_range(s: &mut UdxStream, from: usize, len: usize) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut expect = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < len {
        let want = buf.len().min(len - got);
        let n = s.read(&mut buf[..want]).await.unwrap();
        assert!(n > 0, "early end at {}", from + got);
        pattern(from + got, &mut expect[..n]);
        assert!(buf[..n] == expect[..n], "corrupt bytes at {}", from + got);
        got += n;
    }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    timeout(WAIT, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test]
async fn an_unconnected_stream_connects_through_its_firewall_on_the_second_socket() {
    let udx = Udx::new();
    let x1 = udx.bind(lo()).await.unwrap();
    let x2 = udx.bind(lo()).await.unwrap();
    assert_eq!(udx.socket_count(), 2);
    assert_ne!(x1.id(), x2.id());
    assert!(x1.udx().same(&udx) && x2.udx().same(&udx));
    let p = UdxSocket::bind(lo()).await.unwrap();
    let mut ps = p.create_stream(StreamConfig::default()).unwrap();
    let mut s = udx.create_stream(StreamConfig::default()).unwrap();
    assert_eq!(s.socket_id(), None);
    assert_eq!(s.connect(1, p.local_addr()), Err(Error::NoSocket));
    // Only the second socket is the punched path.
    let (only, remote_id) = (x2.id(), ps.id());
    s.set_firewall(Arc::new(move |sock: SocketId, _from| {
        if sock == only {
            FirewallDecision::Connect { remote_id }
        } else {
            FirewallDecision::Drop
        }
    }))
    .unwrap();
    // A packet through the first socket is refused ...
    let probe = p.create_stream(StreamConfig::default()).unwrap();
    probe.connect(s.id(), x1.local_addr()).unwrap();
    probe.try_send_message(b"wrong path").unwrap();
    eventually("the first socket's firewall drop", || {
        x1.stats().firewall_dropped == 1
    })
    .await;
    assert_eq!(s.socket_id(), None);
    // ... the peer's first packet on the second connects the stream there.
    ps.connect(s.id(), x2.local_addr()).unwrap();
    ps.write_all(b"hello").await.unwrap();
    let (rid, addr) = timeout(WAIT, s.connected()).await.unwrap().unwrap();
    assert_eq!((rid, addr), (ps.id(), p.local_addr()));
    assert_eq!(s.socket_id(), Some(x2.id()));
    let mut buf = [0u8; 5];
    timeout(WAIT, s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"hello");
    let before = x2.stats().datagrams_tx;
    s.write_all(b"world").await.unwrap();
    timeout(WAIT, ps.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"world");
    assert!(x2.stats().datagrams_tx > before);
    assert_eq!(x1.stats().datagrams_tx, 0);
    // Both sockets' owners still get their own datagrams.
    p.send_to(&[0x03, 1], x1.local_addr()).await.unwrap();
    p.send_to(&[0x03, 2], x2.local_addr()).await.unwrap();
    assert_eq!(
        timeout(WAIT, x1.recv_datagram()).await.unwrap().unwrap().0,
        [0x03, 1]
    );
    assert_eq!(
        timeout(WAIT, x2.recv_datagram()).await.unwrap().unwrap().0,
        [0x03, 2]
    );
    // Ids are per instance: a socket of the instance cannot take an id in use.
    assert_eq!(
        x1.create_stream_with_id(s.id(), StreamConfig::default())
            .unwrap_err(),
        Error::IdInUse(s.id())
    );
}

#[tokio::test]
async fn change_remote_via_moves_a_stream_to_another_socket_keeping_every_byte() {
    const HALF: usize = 2 << 20;
    let udx = Udx::new();
    let x1 = udx.bind(lo()).await.unwrap();
    let x2 = udx.bind(lo()).await.unwrap();
    let p = UdxSocket::bind(lo()).await.unwrap();
    let mut ps = p.create_stream(StreamConfig::default()).unwrap();
    let mut s = udx.create_stream(StreamConfig::default()).unwrap();
    s.connect_via(&x1, ps.id(), p.local_addr()).unwrap();
    ps.connect(s.id(), x1.local_addr()).unwrap();
    assert_eq!(s.socket_id(), Some(x1.id()));
    let (moved_tx, moved_rx) = tokio::sync::oneshot::channel::<()>();
    let (peer_tx, peer_rx) = tokio::sync::oneshot::channel::<()>();
    let (s_id, x2_addr, ps_id) = (s.id(), x2.local_addr(), ps.id());
    let writer = async {
        write_range(&mut s, 0, HALF).await;
        // Much of it is still in flight: the move resolves once it is acknowledged.
        s.change_remote_via(&x2, ps_id, p.local_addr())
            .await
            .unwrap();
        assert_eq!(s.socket_id(), Some(x2.id()));
        moved_tx.send(()).unwrap();
        peer_rx.await.unwrap();
        // The old socket goes; the stream on the new one must not notice.
        x1.close();
        eventually("the old socket to close", || !x1.is_open()).await;
        let old_tx = x1.stats().datagrams_tx;
        let new_tx = x2.stats().datagrams_tx;
        write_range(&mut s, HALF, HALF).await;
        s.shutdown().await.unwrap();
        timeout(WAIT, s.flushed()).await.unwrap().unwrap();
        assert_eq!(x1.stats().datagrams_tx, old_tx);
        assert!(x2.stats().datagrams_tx > new_tx);
        s
    };
    let reader = async {
        read_range(&mut ps, 0, HALF).await;
        moved_rx.await.unwrap();
        ps.change_remote(s_id, x2_addr).await.unwrap();
        peer_tx.send(()).unwrap();
        read_range(&mut ps, HALF, HALF).await;
        let mut rest = Vec::new();
        ps.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    };
    let (s, ()) = timeout(WAIT, async { tokio::join!(writer, reader) })
        .await
        .expect("transfer across the move timed out");
    assert_eq!(s.remote(), Some((ps_id, p.local_addr())));
    assert_eq!(udx.socket_count(), 1);
}

#[tokio::test]
async fn a_connected_stream_asks_its_firewall_about_packets_on_other_sockets() {
    let udx = Udx::new();
    let x1 = udx.bind(lo()).await.unwrap();
    let x2 = udx.bind(lo()).await.unwrap();
    let p = UdxSocket::bind(lo()).await.unwrap();
    let ps = p.create_stream(StreamConfig::default()).unwrap();
    let s = udx.create_stream(StreamConfig::default()).unwrap();
    s.connect_via(&x1, ps.id(), p.local_addr()).unwrap();
    ps.connect(s.id(), x1.local_addr()).unwrap();
    let decision = Arc::new(std::sync::Mutex::new(FirewallDecision::Drop));
    let d = decision.clone();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    s.set_firewall(Arc::new(move |sock, from| {
        log.lock().unwrap().push((sock, from));
        *d.lock().unwrap()
    }))
    .unwrap();
    // On its own socket the firewall is not asked.
    ps.send_message(b"home").await.unwrap();
    assert_eq!(
        timeout(WAIT, s.recv_message()).await.unwrap().unwrap(),
        b"home"
    );
    assert!(seen.lock().unwrap().is_empty());
    // The peer now sends to the second socket: Drop.
    ps.change_remote(s.id(), x2.local_addr()).await.unwrap();
    ps.send_message(b"dropped").await.unwrap();
    eventually("the drop", || x2.stats().firewall_dropped == 1).await;
    assert_eq!(seen.lock().unwrap()[0], (x2.id(), p.local_addr()));
    // Accept: processed, the stream stays on its socket.
    *decision.lock().unwrap() = FirewallDecision::Accept;
    ps.send_message(b"accepted").await.unwrap();
    assert_eq!(
        timeout(WAIT, s.recv_message()).await.unwrap().unwrap(),
        b"accepted"
    );
    assert_eq!(s.socket_id(), Some(x1.id()));
    // Connect: the stream moves to the arrival socket and the packet's source.
    *decision.lock().unwrap() = FirewallDecision::Connect { remote_id: ps.id() };
    ps.send_message(b"moved").await.unwrap();
    assert_eq!(
        timeout(WAIT, s.recv_message()).await.unwrap().unwrap(),
        b"moved"
    );
    assert_eq!(s.socket_id(), Some(x2.id()));
    let before = x2.stats().datagrams_tx;
    s.send_message(b"back").await.unwrap();
    assert_eq!(
        timeout(WAIT, ps.recv_message()).await.unwrap().unwrap(),
        b"back"
    );
    assert!(x2.stats().datagrams_tx > before);

    // Without a firewall a connected stream takes packets from any socket (libudx).
    let open = udx.create_stream(StreamConfig::default()).unwrap();
    let po = p.create_stream(StreamConfig::default()).unwrap();
    open.connect_via(&x1, po.id(), p.local_addr()).unwrap();
    po.connect(open.id(), x2.local_addr()).unwrap();
    po.send_message(b"any socket").await.unwrap();
    assert_eq!(
        timeout(WAIT, open.recv_message()).await.unwrap().unwrap(),
        b"any socket"
    );
    assert_eq!(open.socket_id(), Some(x1.id()));
}

#[tokio::test]
async fn relayed_streams_carry_a_transfer_and_a_destroy_through_a_third_instance() {
    const TOTAL: usize = 2 << 20;
    let a = UdxSocket::bind(lo()).await.unwrap();
    let b = UdxSocket::bind(lo()).await.unwrap();
    let relay = Udx::new();
    let r1 = relay.bind(lo()).await.unwrap();
    let r2 = relay.bind(lo()).await.unwrap();
    let mut sa = a.create_stream(StreamConfig::default()).unwrap();
    let mut sb = b.create_stream(StreamConfig::default()).unwrap();
    let ra = relay.create_stream(StreamConfig::default()).unwrap();
    let rb = relay.create_stream(StreamConfig::default()).unwrap();
    // As a blind relay: each relay stream connects to whoever sends to it first.
    ra.connect_on_first_packet(sa.id()).unwrap();
    rb.connect_on_first_packet(sb.id()).unwrap();
    ra.relay_to(&rb).unwrap();
    rb.relay_to(&ra).unwrap();
    assert_eq!(ra.relay_to(&rb), Err(Error::AlreadyRelayed));
    // The ends address the relay streams; ids travel end to end.
    sa.connect(ra.id(), r1.local_addr()).unwrap();
    sb.connect(rb.id(), r2.local_addr()).unwrap();
    sb.send_message(b"first from b").await.unwrap();
    timeout(WAIT, rb.connected()).await.unwrap().unwrap();
    sa.send_message(b"first from a").await.unwrap();
    timeout(WAIT, ra.connected()).await.unwrap().unwrap();
    assert_eq!(ra.socket_id(), Some(r1.id()));
    assert_eq!(rb.socket_id(), Some(r2.id()));
    assert_eq!(
        timeout(WAIT, sb.recv_message()).await.unwrap().unwrap(),
        b"first from a"
    );
    // B's first message reached the relay before A's side was connected: it was held and
    // forwarded when A's first packet connected it.
    assert_eq!(
        timeout(WAIT, sa.recv_message()).await.unwrap().unwrap(),
        b"first from b"
    );
    sb.send_message(b"reply from b").await.unwrap();
    assert_eq!(
        timeout(WAIT, sa.recv_message()).await.unwrap().unwrap(),
        b"reply from b"
    );
    let run = async {
        tokio::join!(
            write_range(&mut sa, 0, TOTAL),
            read_range(&mut sb, 0, TOTAL)
        );
        tokio::join!(
            write_range(&mut sb, 0, TOTAL),
            read_range(&mut sa, 0, TOTAL)
        );
    };
    timeout(WAIT, run)
        .await
        .expect("relayed transfer timed out");
    // The relay forwarded, it did not process.
    let (ia, ib) = (ra.stats().unwrap(), rb.stats().unwrap());
    assert!(ia.packets_relayed > 0 && ib.packets_relayed > 0);
    assert_eq!(ia.bytes_delivered + ib.bytes_delivered, 0);
    assert!(r1.stats().relayed > 0 && r2.stats().relayed > 0);
    // A DESTROY crosses the relay: B is reset, the relay streams close.
    sa.destroy();
    assert_eq!(
        timeout(WAIT, sb.closed()).await.unwrap(),
        Err(Error::ConnectionReset)
    );
    assert_eq!(
        timeout(WAIT, ra.closed()).await.unwrap(),
        Err(Error::ConnectionReset)
    );
    // The stream relaying to the closed one is destroyed with it, silently (libudx).
    assert_eq!(
        timeout(WAIT, rb.closed()).await.unwrap(),
        Err(Error::Destroyed)
    );
    drop((ra, rb));
    eventually("the relay streams to go", || relay.stream_count() == 0).await;
    // Streams of another instance cannot be relay targets.
    let other = a.create_stream(StreamConfig::default()).unwrap();
    let mine = relay.create_stream(StreamConfig::default()).unwrap();
    assert_eq!(mine.relay_to(&other), Err(Error::OtherInstance));
}

#[tokio::test]
async fn an_empty_message_is_delivered() {
    let a = UdxSocket::bind(lo()).await.unwrap();
    let b = UdxSocket::bind(lo()).await.unwrap();
    let sa = a.create_stream(StreamConfig::default()).unwrap();
    let sb = b.create_stream(StreamConfig::default()).unwrap();
    sa.connect(sb.id(), b.local_addr()).unwrap();
    sb.connect(sa.id(), a.local_addr()).unwrap();
    sa.send_message(&[]).await.unwrap();
    sa.try_send_message(&[]).unwrap();
    for _ in 0..2 {
        assert_eq!(
            timeout(WAIT, sb.recv_message()).await.unwrap(),
            Some(Vec::new())
        );
    }
}

#[tokio::test]
async fn a_pool_socket_closes_when_unused_and_a_stream_keeps_its_socket_open() {
    let udx = Udx::new();
    let keep = udx.bind(lo()).await.unwrap();
    let pool = udx.bind(lo()).await.unwrap();
    assert_eq!(udx.socket_count(), 2);
    // A pool socket with no streams closes with its last handle.
    let clone = pool.clone();
    drop(pool);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(udx.socket_count(), 2, "a clone still holds it");
    drop(clone);
    eventually("the pool socket to close", || udx.socket_count() == 1).await;

    // A socket carrying a stream stays open until the stream finishes.
    let cfg = StreamConfig::default()
        .with_min_rto(Duration::from_millis(20))
        .with_time_wait(Duration::ZERO);
    let p = UdxSocket::bind(lo()).await.unwrap();
    let mut ps = p.create_stream(cfg.clone()).unwrap();
    let q = udx.bind(lo()).await.unwrap();
    let q_id = q.id();
    let mut s = udx.create_stream(cfg).unwrap();
    s.connect_via(&q, ps.id(), p.local_addr()).unwrap();
    ps.connect(s.id(), q.local_addr()).unwrap();
    drop(q);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(udx.socket_count(), 2);
    assert_eq!(udx.stream_count(), 1);
    s.write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    timeout(WAIT, ps.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"still here");
    assert_eq!(s.socket_id(), Some(q_id));
    s.shutdown().await.unwrap();
    ps.shutdown().await.unwrap();
    let mut rest = Vec::new();
    timeout(WAIT, s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    timeout(WAIT, s.closed()).await.unwrap().unwrap();
    drop(s);
    eventually("the stream's socket to close", || udx.socket_count() == 1).await;
    assert_eq!(udx.stream_count(), 0);
    // The instance's driver ends with its last socket; a new bind starts another.
    drop(keep);
    eventually("the last socket to close", || udx.socket_count() == 0).await;
    let again = udx.bind(lo()).await.unwrap();
    p.send_to(&[0x13], again.local_addr()).await.unwrap();
    assert_eq!(
        timeout(WAIT, again.recv_datagram())
            .await
            .unwrap()
            .unwrap()
            .0,
        [0x13]
    );
}

#[tokio::test]
async fn one_driver_serves_hundreds_of_sockets_and_polls_a_new_one_at_once() {
    let udx = Udx::new();
    let peer = UdxSocket::bind(lo()).await.unwrap();
    let mut sockets = Vec::new();
    for i in 0..300u16 {
        let s = udx.bind(lo()).await.unwrap();
        // Sent before the driver ran again: the new socket must be polled at once.
        peer.send_to(&i.to_le_bytes(), s.local_addr())
            .await
            .unwrap();
        sockets.push(s);
    }
    assert_eq!(udx.socket_count(), 300);
    for (i, s) in sockets.iter().enumerate() {
        let (d, from) = timeout(WAIT, s.recv_datagram()).await.unwrap().unwrap();
        assert_eq!(d, (i as u16).to_le_bytes());
        assert_eq!(from, peer.local_addr());
    }
    // Closing one socket leaves the others alone.
    sockets[0].close();
    eventually("one socket to close", || udx.socket_count() == 299).await;
    peer.send_to(b"x", sockets[299].local_addr()).await.unwrap();
    assert_eq!(
        timeout(WAIT, sockets[299].recv_datagram())
            .await
            .unwrap()
            .unwrap()
            .0,
        b"x"
    );
    assert_eq!(
        timeout(WAIT, sockets[0].recv_datagram()).await.unwrap(),
        None
    );
}

/// TTL 5 rides on one datagram only: read back with `IP_RECVTTL`.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_ttl_send_carries_its_ttl_and_the_next_send_the_default() {
    use nix::sys::socket::{
        recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrIn,
    };
    use std::io::IoSliceMut;
    use std::os::fd::AsRawFd;

    let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    setsockopt(&rx, sockopt::Ipv4RecvTtl, &true).unwrap();
    let default_ttl = setsockopt_default_ttl();
    let recv_ttl = || -> (Vec<u8>, i32) {
        let mut buf = [0u8; 64];
        let mut cmsg = nix::cmsg_space!(libc::c_int);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg =
            recvmsg::<SockaddrIn>(rx.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())
                .unwrap();
        let len = msg.bytes;
        let ttl = msg
            .cmsgs()
            .unwrap()
            .find_map(|c| match c {
                ControlMessageOwned::Ipv4Ttl(t) => Some(t),
                _ => None,
            })
            .expect("no TTL control message");
        (buf[..len].to_vec(), ttl)
    };
    let tx = UdxSocket::bind(lo()).await.unwrap();
    let to = rx.local_addr().unwrap();
    tx.send_to_ttl(&[0x00], to, 5).await.unwrap();
    tx.send_to(&[0x01], to).await.unwrap();
    tx.try_send_to_ttl(&[0x02], to, 7).unwrap();
    tx.try_send_to(&[0x03], to).unwrap();
    tx.send_to_ttl(&[0x04], to, 0).await.unwrap();
    let got: Vec<(Vec<u8>, i32)> = (0..5).map(|_| recv_ttl()).collect();
    assert_eq!(
        got,
        vec![
            (vec![0x00], 5),
            (vec![0x01], default_ttl),
            (vec![0x02], 7),
            (vec![0x03], default_ttl),
            (vec![0x04], default_ttl),
        ]
    );
}

/// The TTL a fresh socket sends with (`net.ipv4.ip_default_ttl`, usually 64).
#[cfg(target_os = "linux")]
fn setsockopt_default_ttl() -> i32 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.ttl().unwrap() as i32
}

#[tokio::test]
async fn the_socket_cap_is_enforced_and_handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Udx>();
    send_sync::<UdxSocket>();
    send_sync::<UdxStream>();
    let udx = Udx::new();
    let mut held = Vec::new();
    for _ in 0..corenet_udx::MAX_SOCKETS {
        held.push(udx.bind(lo()).await.unwrap());
    }
    assert_eq!(
        udx.bind(lo()).await.unwrap_err(),
        Error::TooManySockets {
            max: corenet_udx::MAX_SOCKETS
        }
    );
    // A socket dropped without streams makes room once the driver closed it.
    held.pop();
    eventually("a socket to close", || {
        udx.socket_count() < corenet_udx::MAX_SOCKETS
    })
    .await;
    held.push(udx.bind(lo()).await.unwrap());
}

/// Bytes sent through a relay before the other side's relay stream is connected are held
/// and forwarded once it is, not dropped (libudx drops them, and the sender's first
/// retransmission, about a second later, carries them): the first bytes arrive in far less
/// than a retransmission timeout.
#[tokio::test]
async fn a_relay_holds_early_packets_until_the_other_side_connects() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = UdxSocket::bind(lo()).await.unwrap();
    let b = UdxSocket::bind(lo()).await.unwrap();
    let relay = Udx::new();
    let r = relay.bind(lo()).await.unwrap();
    let mut sa = a.create_stream(StreamConfig::default()).unwrap();
    let mut sb = b.create_stream(StreamConfig::default()).unwrap();
    let ra = relay.create_stream(StreamConfig::default()).unwrap();
    let rb = relay.create_stream(StreamConfig::default()).unwrap();
    ra.connect_on_first_packet(sa.id()).unwrap();
    rb.connect_on_first_packet(sb.id()).unwrap();
    ra.relay_to(&rb).unwrap();
    rb.relay_to(&ra).unwrap();
    sa.connect(ra.id(), r.local_addr()).unwrap();
    sb.connect(rb.id(), r.local_addr()).unwrap();
    // A writes first: B's relay stream does not know B yet.
    sa.write_all(b"early bytes").await.unwrap();
    timeout(WAIT, ra.connected()).await.unwrap().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(rb.remote().is_none());
    // B's first packet connects its relay stream; the held bytes follow at once.
    let started = std::time::Instant::now();
    sb.send_message(b"hello").await.unwrap();
    let mut buf = [0u8; 11];
    timeout(WAIT, sb.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(&buf, b"early bytes");
    assert!(
        took < std::time::Duration::from_millis(300),
        "the early bytes waited for a retransmission: {took:?}"
    );
}

#[tokio::test]
async fn a_relay_holds_at_most_max_held_relay_packets_for_an_unconnected_target() {
    use corenet_udx::MAX_HELD_RELAY_PACKETS;
    let a = UdxSocket::bind(lo()).await.unwrap();
    let b = UdxSocket::bind(lo()).await.unwrap();
    let relay = Udx::new();
    let r1 = relay.bind(lo()).await.unwrap();
    let r2 = relay.bind(lo()).await.unwrap();
    // No MTU probes: only the messages below cross the relay.
    let cfg = StreamConfig::default().with_mtu_probing(false);
    let sa = a.create_stream(cfg.clone()).unwrap();
    let sb = b.create_stream(cfg.clone()).unwrap();
    let ra = relay.create_stream(cfg.clone()).unwrap();
    let rb = relay.create_stream(cfg).unwrap();
    ra.connect_on_first_packet(sa.id()).unwrap();
    rb.connect_on_first_packet(sb.id()).unwrap();
    ra.relay_to(&rb).unwrap();
    rb.relay_to(&ra).unwrap();
    sa.connect(ra.id(), r1.local_addr()).unwrap();
    sb.connect(rb.id(), r2.local_addr()).unwrap();
    // B sends while A's side of the relay is not connected: the relay holds some.
    let sent = MAX_HELD_RELAY_PACKETS + 8;
    for i in 0..sent {
        sb.send_message(format!("held {i}").as_bytes())
            .await
            .unwrap();
    }
    eventually("the relay to see every message", || {
        rb.stats().is_some_and(|s| s.packets_relayed >= sent as u64)
    })
    .await;
    // A's first packet connects its side; the held packets go out, then a marker.
    sa.send_message(b"hello").await.unwrap();
    timeout(WAIT, ra.connected()).await.unwrap().unwrap();
    sb.send_message(b"marker").await.unwrap();
    let mut got = Vec::new();
    for _ in 0..=sent {
        let m = timeout(WAIT, sa.recv_message()).await.unwrap().unwrap();
        if m == b"marker" {
            break;
        }
        got.push(String::from_utf8(m).unwrap());
    }
    let first: Vec<String> = (0..MAX_HELD_RELAY_PACKETS)
        .map(|i| format!("held {i}"))
        .collect();
    assert_eq!(got, first, "the first {MAX_HELD_RELAY_PACKETS} were held");
}

#[tokio::test]
async fn a_control_and_the_application_both_see_the_stream_close() {
    let a = UdxSocket::bind(lo()).await.unwrap();
    let b = UdxSocket::bind(lo()).await.unwrap();
    let sa = Arc::new(a.create_stream(StreamConfig::default()).unwrap());
    let sb = b.create_stream(StreamConfig::default()).unwrap();
    sa.connect(sb.id(), b.local_addr()).unwrap();
    sb.connect(sa.id(), a.local_addr()).unwrap();
    let control = sa.control();
    let app = {
        let sa = sa.clone();
        tokio::spawn(async move { sa.closed().await })
    };
    let watcher = tokio::spawn(async move { control.closed().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    sb.destroy();
    // Each waits on its own: neither takes the other's wakeup.
    let app = timeout(WAIT, app)
        .await
        .expect("the application sees it")
        .unwrap();
    let watched = timeout(WAIT, watcher)
        .await
        .expect("the control sees it")
        .unwrap();
    assert!(app.is_err(), "{app:?}");
    assert_eq!(app, watched);
}
