//! `corenet listen --tcp --echo` under attack, black-box over real sockets: idle
//! connections that exhaust the file-descriptor limit, connections that stall the Noise
//! handshake, and one that announces a 16 MiB handshake frame. After each, the listener
//! still serves a legitimate client.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Proc;
use corenet_noise::{Config, KeyPair, SecretStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A listener with at most `nofile` file descriptors.
fn listener(nofile: u32) -> (Proc, String) {
    let bin = env!("CARGO_BIN_EXE_corenet");
    let limit = format!("--nofile={nofile}");
    let args = [
        limit.as_str(),
        bin,
        "--seed",
        "5151515151515151515151515151515151515151515151515151515151515151",
        "listen",
        "--tcp",
        "127.0.0.1:0",
        "--echo",
    ];
    let p = Proc::spawn_program("prlimit", &args);
    let addr = p
        .line("address ")
        .trim_start_matches("address ")
        .to_string();
    (p, addr)
}

/// A legitimate client: handshake, one echo, within `within`.
fn echo_once(addr: &str, within: Duration) {
    assert!(
        echo(addr, within),
        "the listener closed a legitimate client"
    );
}

/// A legitimate client: handshake and one echo within `within`; false if the listener
/// closed the connection instead.
fn echo(addr: &str, within: Duration) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let run = async {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let kp = KeyPair::generate();
            let mut s = SecretStream::new(tcp, true, &kp, Config::default()).await?;
            s.write_all(b"still serving").await?;
            let mut got = [0u8; 13];
            s.read_exact(&mut got).await?;
            Ok::<_, std::io::Error>(got)
        };
        match tokio::time::timeout(within, run).await {
            Ok(Ok(got)) => got == *b"still serving",
            Ok(Err(_)) => false,
            Err(_) => panic!("no echo and no close within {within:?}"),
        }
    })
}

/// Reads until the server closes the connection (true) or the read timeout passes (false).
fn closed_by_server(tcp: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn running_out_of_file_descriptors_does_not_end_the_listener() {
    let (mut p, addr) = listener(64);
    // Twice the limit in idle connections: the kernel queues what the listener cannot take.
    let idle: Vec<TcpStream> = (0..128)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    assert!(idle.len() >= 64, "only {} connections", idle.len());
    std::thread::sleep(Duration::from_millis(500));
    assert!(p.try_status().is_none(), "the listener exited");
    drop(idle);
    // The listener frees the descriptors as the idle connections close, and serves again.
    echo_once(&addr, Duration::from_secs(20));
    assert!(p.try_status().is_none(), "the listener exited");
}

#[test]
fn a_stalled_handshake_is_dropped_and_its_descriptor_freed() {
    let (mut p, addr) = listener(1024);
    let mut silent = TcpStream::connect(&addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = Instant::now();
    // The server's handshake deadline (10 s by default) closes the connection.
    let closed = closed_by_server(&mut silent);
    let took = started.elapsed();
    assert!(closed, "the server never closed a silent connection");
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(20),
        "closed after {took:?}"
    );
    echo_once(&addr, Duration::from_secs(10));
    assert!(p.try_status().is_none(), "the listener exited");
}

#[test]
fn an_oversized_handshake_frame_is_refused_from_its_length() {
    let (mut p, addr) = listener(1024);
    let mut evil = TcpStream::connect(&addr).unwrap();
    evil.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A 16 MiB - 1 frame announced as the first handshake message, then nothing.
    evil.write_all(&[0xff, 0xff, 0xff]).unwrap();
    let started = Instant::now();
    let closed = closed_by_server(&mut evil);
    assert!(closed, "the connection was held");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused only after {:?}",
        started.elapsed()
    );
    echo_once(&addr, Duration::from_secs(10));
    assert!(p.try_status().is_none(), "the listener exited");
}

/// Noise handshakes the listener runs at once (`MAX_CONCURRENT_HANDSHAKES`,
/// `crates/cli/src/tcp.rs`).
const MAX_CONCURRENT_HANDSHAKES: usize = 64;

#[test]
fn a_connection_beyond_the_handshake_cap_is_closed_at_once_while_the_others_wait() {
    let (mut p, addr) = listener(1024);
    // Silent connections fill every handshake slot (each waits for its 10 s deadline).
    let mut silent: Vec<TcpStream> = (0..MAX_CONCURRENT_HANDSHAKES)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let mut extra = TcpStream::connect(&addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    let closed = closed_by_server(&mut extra);
    let took = started.elapsed();
    assert!(closed, "the connection beyond the cap was held");
    assert!(took < Duration::from_secs(1), "closed only after {took:?}");
    // The first ones are still open: a read finds no data and no end.
    for (i, s) in silent.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            other => panic!("silent connection {i} was not left waiting: {other:?}"),
        }
    }
    // Closing them frees their slots, once the listener has seen them close: a client is
    // refused (closed at once) until then, and served after (bounded wait).
    drop(silent);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !echo(&addr, Duration::from_secs(5)) {
        assert!(
            Instant::now() < deadline,
            "the freed slots were never reused"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(p.try_status().is_none(), "the listener exited");
}
