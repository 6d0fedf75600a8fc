//! What a server node keeps of finished connections, on a loopback testnet: sequential
//! clients each download some data and go (closing cleanly, their node destroyed, their
//! process exiting without a word, or through a blind relay); once UDX's TIME_WAIT, the
//! dead-peer timeouts and the handshake clear wait have passed, the server's UDX instance
//! holds no stream for them, the actor no connection and the hyperdht core no per-handshake
//! state. (The soak found relayed connections kept for good, with their relay links.) Every
//! wait is bounded.

use std::time::{Duration, Instant};

use corenet_dht::{Connection, Dht, DhtConfig, DhtInfo, Testnet};
use corenet_noise::KeyPair;

const WAIT: Duration = Duration::from_secs(30);
/// Sent by the server on each connection, in 16 KiB messages.
const DOWNLOAD: usize = 256 * 1024;
const MESSAGE: usize = 16 * 1024;
/// UDX TIME_WAIT (2 s), the handshake clear wait (10 s) and some slack.
const SETTLE: Duration = Duration::from_secs(25);

/// The server side of one download: send [`DOWNLOAD`] bytes, then wait (bounded) for the
/// client to go, then drop the connection.
async fn serve(mut conn: Connection) {
    let msg = vec![0x5a; MESSAGE];
    for _ in 0..DOWNLOAD / MESSAGE {
        if conn.stream.send(&msg).await.is_err() {
            return;
        }
    }
    let _ = tokio::time::timeout(WAIT, async {
        while let Ok(Some(_)) = conn.stream.recv().await {}
    })
    .await;
}

/// Where clients connect: the server's key and relay addresses.
struct Target {
    public_key: corenet_codec::PublicKey,
    relays: Vec<std::net::SocketAddrV4>,
}

/// The client side: connect, read [`DOWNLOAD`] bytes. Returns the open connection.
async fn download(client: &Dht, target: &Target, seed: u32) -> Connection {
    let mut s = [0x77; 32];
    s[..4].copy_from_slice(&seed.to_le_bytes());
    let mut conn = tokio::time::timeout(
        WAIT,
        client.connect(
            &KeyPair::from_seed(s),
            target.public_key,
            target.relays.clone(),
        ),
    )
    .await
    .expect("the connect ends")
    .expect("the connect succeeds");
    let mut got = 0;
    while got < DOWNLOAD {
        let m = tokio::time::timeout(WAIT, conn.stream.recv())
            .await
            .expect("the download goes on")
            .expect("no stream error")
            .expect("the server does not close early");
        got += m.len();
    }
    assert_eq!(got, DOWNLOAD);
    conn
}

/// Waits (bounded by [`SETTLE`]) until `dht` holds nothing for its finished connections;
/// returns what it holds then.
async fn settled(dht: &Dht, streams_before: usize) -> DhtInfo {
    let until = Instant::now() + SETTLE;
    loop {
        let info = dht.info().await.unwrap();
        let clean =
            info.streams <= streams_before && info.handshakes == 0 && info.pending_connections == 0;
        if clean || Instant::now() > until {
            return info;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits as [`settled`] does, then asserts that `dht` holds no UDX stream, handshake state
/// or pending connection beyond what it had before.
async fn assert_nothing_left(dht: &Dht, streams_before: usize) {
    let info = settled(dht, streams_before).await;
    assert_eq!(info.streams, streams_before, "UDX streams left: {info:?}");
    assert_eq!(
        info.handshakes, 0,
        "hyperdht handshake state left: {info:?}"
    );
    assert_eq!(info.pending_connections, 0, "{info:?}");
}

/// Ends our side and reads until the server's end closes too (both bounded).
async fn close_cleanly(conn: &mut Connection) {
    tokio::time::timeout(WAIT, conn.stream.shutdown())
        .await
        .expect("the shutdown ends")
        .unwrap();
    let _ = tokio::time::timeout(WAIT, async {
        while let Ok(Some(_)) = conn.stream.recv().await {}
    })
    .await;
}

/// Starts the accept loop of `server` (each connection in its own task).
fn serve_all(mut server: corenet_dht::Server) {
    tokio::spawn(async move {
        while let Some(conn) = server.accept().await {
            tokio::spawn(serve(conn));
        }
    });
}

/// A server node whose accept loop serves every connection in its own task.
async fn server(testnet: &Testnet) -> (Dht, Target, usize) {
    let dht = testnet.create_node(DhtConfig::default()).await.unwrap();
    let kp = KeyPair::from_seed([0x76; 32]);
    let server = dht.listen(&kp, None).await.unwrap();
    let target = Target {
        public_key: server.public_key(),
        relays: server.relay_addresses().to_vec(),
    };
    let streams = dht.info().await.unwrap().streams;
    serve_all(server);
    (dht, target, streams)
}

#[tokio::test(flavor = "multi_thread")]
async fn sequential_downloads_closed_by_the_client_leave_nothing_on_the_server() {
    const N: u32 = 50;
    let testnet = Testnet::new(3, 0).await.unwrap();
    let (dht, target, streams_before) = server(&testnet).await;
    let client = testnet.create_node(DhtConfig::default()).await.unwrap();
    for i in 0..N {
        let mut conn = download(&client, &target, i).await;
        close_cleanly(&mut conn).await;
    }
    assert_nothing_left(&dht, streams_before).await;
    client.destroy().await;
    dht.destroy().await;
    testnet.destroy().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn downloads_whose_client_node_is_destroyed_leave_nothing_on_the_server() {
    const N: u32 = 10;
    let testnet = Testnet::new(3, 0).await.unwrap();
    let (dht, target, streams_before) = server(&testnet).await;
    for i in 0..N {
        let client = testnet.create_node(DhtConfig::default()).await.unwrap();
        let conn = download(&client, &target, 1000 + i).await;
        // No close: the node goes with the connection still open.
        client.destroy().await;
        drop(conn);
    }
    assert_nothing_left(&dht, streams_before).await;
    dht.destroy().await;
    testnet.destroy().await;
}

/// Set in a child process of [`downloads_whose_client_process_exits_leave_nothing_on_the_server`]:
/// `<bootstrap address> <server public key, hex> <seed>`.
const CHILD_ENV: &str = "CORENET_CLEANUP_CHILD";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// The child: downloads once and exits the process at once, as `corenet get` does (no close,
/// no DESTROY: the server only sees its packets stop).
#[tokio::test(flavor = "multi_thread")]
async fn child_download_then_exit() {
    let Ok(args) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut args = args.split(' ');
    let bootstrap: std::net::SocketAddrV4 = args.next().unwrap().parse().unwrap();
    let target = Target {
        public_key: unhex(args.next().unwrap()).into(),
        relays: Vec::new(),
    };
    let seed: u32 = args.next().unwrap().parse().unwrap();
    let client = Dht::spawn(
        DhtConfig::default()
            .with_host(*bootstrap.ip())
            .with_bootstrap(vec![bootstrap]),
    )
    .await
    .unwrap();
    client.bootstrapped().await.unwrap();
    let _conn = download(&client, &target, seed).await;
    std::process::exit(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn downloads_whose_client_process_exits_leave_nothing_on_the_server() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    const N: u32 = 5;
    let testnet = Testnet::new(3, 0).await.unwrap();
    let (dht, target, streams_before) = server(&testnet).await;
    let exe = std::env::current_exe().unwrap();
    for i in 0..N {
        let arg = format!(
            "{} {} {}",
            testnet.bootstrap[0],
            hex(target.public_key.as_bytes()),
            2000 + i
        );
        let mut child = std::process::Command::new(&exe)
            .args(["--exact", "child_download_then_exit", "--nocapture"])
            .env(CHILD_ENV, arg)
            .spawn()
            .unwrap();
        let until = Instant::now() + WAIT;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > until {
                let _ = child.kill();
                panic!("the child download did not end");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(status.success(), "the child download failed: {status}");
    }
    // A dead peer is noticed by its keepalives going unacknowledged (about 13 RTOs).
    assert_nothing_left(&dht, streams_before).await;
    dht.destroy().await;
    testnet.destroy().await;
}

/// A node that loopback cannot reach directly (no quick reachability check, no LAN
/// shortcut), so that its connections go through a blind relay.
async fn natted(testnet: &Testnet) -> Dht {
    let d = Dht::spawn(
        DhtConfig::default()
            .with_host(std::net::Ipv4Addr::LOCALHOST)
            .with_bootstrap(testnet.bootstrap.clone())
            .with_quick_firewall(false)
            .with_lan(false),
    )
    .await
    .unwrap();
    d.bootstrapped().await.unwrap();
    d
}

#[tokio::test(flavor = "multi_thread")]
async fn relayed_downloads_closed_by_the_client_leave_nothing_on_the_server() {
    const N: u32 = 10;
    let testnet = Testnet::new(5, 0).await.unwrap();
    let relay_dht = testnet.create_node(DhtConfig::default()).await.unwrap();
    let relay =
        corenet_dht::relay::RelayServer::start(relay_dht.clone(), KeyPair::from_seed([0x90; 32]))
            .await
            .unwrap();
    let dht = natted(&testnet).await;
    let streams_before = dht.info().await.unwrap().streams;
    let options = corenet_dht::hyper::ListenOptions {
        holepunch: false,
        relay_through: Some(relay.public_key()),
        ..Default::default()
    };
    let kp = KeyPair::from_seed([0x74; 32]);
    let server = dht.listen_with(&kp, None, options).await.unwrap();
    let target = Target {
        public_key: server.public_key(),
        relays: server.relay_addresses().to_vec(),
    };
    serve_all(server);
    let client = natted(&testnet).await;
    for i in 0..N {
        let mut conn = download(&client, &target, 3000 + i).await;
        assert_eq!(conn.path, corenet_dht::PathKind::Relay);
        close_cleanly(&mut conn).await;
    }
    assert_nothing_left(&dht, streams_before).await;
    client.destroy().await;
    dht.destroy().await;
    relay.close().await;
    testnet.destroy().await;
}
