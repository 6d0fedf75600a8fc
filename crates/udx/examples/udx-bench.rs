//! End-to-end throughput of one UDX stream between two processes on loopback, raw or under
//! the secret stream, with the CPU time each side used. The JS twin is
//! `tests/interop/bench/udx.js`; both speak the same tiny setup protocol so any pair works:
//! the receiver's stream has id 1 and connects to whoever sends first (as hyperdht's firewall
//! does), the sender's stream has id 2.
//!
//! ```text
//! udx-bench recv [--secret]                     prints {"event":"listening","port":P}
//! udx-bench send <port> <MiB> [--secret]        sends MiB mebibytes to 127.0.0.1:<port>
//! ```
//! Each side prints one JSON line when done: `{"role", "impl":"rust", "bytes", "seconds",
//! "mibps", "cpuSeconds", "cpuSecondsPerGiB"}` (CPU = user + system time of the process, from
//! `/proc/self/stat`, the same figure `getrusage(RUSAGE_SELF)` gives).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use corenet_noise::{Config, KeyPair, SecretStream};
use corenet_udx::{StreamConfig, UdxSocket};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const RECV_ID: u32 = 1;

/// Stream settings; `UDX_BENCH_WINDOW` (MiB) overrides the receive window and send buffer.
fn stream_config() -> StreamConfig {
    match std::env::var("UDX_BENCH_WINDOW")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    {
        Some(mib) => StreamConfig::default()
            .with_recv_window(mib << 20)
            .with_send_buffer((mib as usize) << 20),
        None => StreamConfig::default(),
    }
}
const SEND_ID: u32 = 2;

/// User + system CPU seconds of this process.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 (1-based) = indexes 11 and 12 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

fn report(role: &str, bytes: u64, seconds: f64, cpu: f64, secret: bool, info: String) {
    let mib = bytes as f64 / (1 << 20) as f64;
    println!(
        "{}",
        serde_json::json!({
            "event": "done",
            "role": role,
            "impl": "rust",
            "secret": secret,
            "bytes": bytes,
            "seconds": seconds,
            "mibps": mib / seconds,
            "cpuSeconds": cpu,
            "cpuSecondsPerGiB": cpu / (mib / 1024.0),
            "transport": info,
        })
    );
}

/// Reads to EOF, then ends our side too (the JS sender waits for it).
async fn receive(mut s: impl AsyncRead + AsyncWrite + Unpin) -> (u64, f64) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    let mut start = None;
    loop {
        let n = s.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        start.get_or_insert_with(Instant::now);
        got += n as u64;
    }
    let secs = start.map_or(0.0, |s| s.elapsed().as_secs_f64());
    let _ = s.shutdown().await;
    (got, secs)
}

async fn transmit(mut s: impl AsyncWrite + Unpin, total: u64) -> f64 {
    let chunk = vec![0x5au8; 64 * 1024];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let n = chunk.len().min((total - sent) as usize);
        s.write_all(&chunk[..n]).await.expect("write");
        sent += n as u64;
    }
    s.shutdown().await.expect("shutdown");
    start.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let secret = args.iter().any(|a| a == "--secret");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let lo: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let socket = UdxSocket::bind(lo).await.expect("bind");
        match args.first().map(String::as_str) {
            Some("recv") => {
                let stream = socket
                    .create_stream_with_id(RECV_ID, stream_config())
                    .expect("stream");
                stream.connect_on_first_packet(SEND_ID).expect("firewall");
                println!(
                    "{}",
                    serde_json::json!({"event": "listening", "port": socket.local_addr().port()})
                );
                let cpu0 = cpu_seconds();
                let (bytes, secs) = if secret {
                    let mut s =
                        SecretStream::new(stream, false, &KeyPair::generate(), Config::default())
                            .await
                            .expect("handshake");
                    let r = receive(&mut s).await;
                    let _ =
                        tokio::time::timeout(Duration::from_secs(2), s.get_ref().closed()).await;
                    r
                } else {
                    let mut stream = stream;
                    let r = receive(&mut stream).await;
                    let _ = tokio::time::timeout(Duration::from_secs(2), stream.closed()).await;
                    r
                };
                report(
                    "recv",
                    bytes,
                    secs,
                    cpu_seconds() - cpu0,
                    secret,
                    String::new(),
                );
            }
            Some("send") => {
                let port: u16 = args.get(1).and_then(|p| p.parse().ok()).expect("port");
                let mib: u64 = args.get(2).and_then(|p| p.parse().ok()).expect("MiB");
                let stream = socket
                    .create_stream_with_id(SEND_ID, stream_config())
                    .expect("stream");
                stream
                    .connect(RECV_ID, SocketAddr::from(([127, 0, 0, 1], port)))
                    .expect("connect");
                let cpu0 = cpu_seconds();
                let total = mib << 20;
                let info;

                let secs = if secret {
                    let s =
                        SecretStream::new(stream, true, &KeyPair::generate(), Config::default())
                            .await
                            .expect("handshake");
                    let (secs, s) = {
                        let mut s = s;
                        let secs = transmit(&mut s, total).await;
                        (secs, s)
                    };
                    // Wait for the peer's acknowledgement of everything before reporting.
                    s.get_ref().flushed().await.expect("flush");
                    info = format!("{:?} {:?}", s.get_ref().info(), s.get_ref().stats());
                    secs
                } else {
                    let mut stream = stream;
                    let secs = transmit(&mut stream, total).await;
                    stream.flushed().await.expect("flush");
                    info = format!("{:?} {:?}", stream.info(), stream.stats());
                    secs
                };
                report("send", total, secs, cpu_seconds() - cpu0, secret, info);
            }
            _ => {
                eprintln!(
                    "usage: udx-bench recv [--secret] | udx-bench send <port> <MiB> [--secret]"
                );
                std::process::exit(2);
            }
        }
    });
}
