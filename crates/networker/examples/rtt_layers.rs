//! Round-trip latency per layer of one connection, in one process on loopback: the median
//! (and 90th percentile) of `N` sequential 64-byte ping-pongs over
//!
//! - `udx`: a raw UDX stream,
//! - `secret`: a secret stream over it,
//! - `mux`: a protomux channel over that (each side's driver spawned on the app runtime),
//!
//! each with the UDX sockets' driver tasks either on the app's runtime (`local`) or on a
//! separate single-threaded runtime on its own thread (`remote`, as when the sockets are
//! bound inside the DHT's actor thread), and the app on a multi-thread runtime (default, as
//! the CLI) or a current-thread one (`--current-thread`).
//!
//! ```text
//! cargo run --release -p corenet --example rtt_layers [-- --current-thread|--in-task] [N] [udx|secret|mux|local|remote|<layer>-<sockets>]
//! ```
//! Prints one JSON line per (layer, placement): `{"layer","sockets","median_us","p90_us"}`.

use std::net::SocketAddr;
use std::time::Instant;

use corenet_mux::{ChannelOptions, DriverConfig, MuxHandle};
use corenet_noise::{Config, KeyPair, SecretStream};
use corenet_udx::{StreamConfig, UdxSocket, UdxStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Binds a socket whose driver runs on `rt` (or on the current runtime).
async fn bind(rt: Option<&tokio::runtime::Handle>) -> Result<UdxSocket, BoxError> {
    let addr: SocketAddr = "127.0.0.1:0".parse()?;
    Ok(match rt {
        Some(h) => h.spawn(UdxSocket::bind(addr)).await??,
        None => UdxSocket::bind(addr).await?,
    })
}

/// Two connected UDX streams on two sockets.
async fn pair(
    rt: Option<&tokio::runtime::Handle>,
) -> Result<(UdxSocket, UdxSocket, UdxStream, UdxStream), BoxError> {
    let (sa, sb) = (bind(rt).await?, bind(rt).await?);
    let a = sa.create_stream(StreamConfig::default())?;
    let b = sb.create_stream(StreamConfig::default())?;
    a.connect(b.id(), sb.local_addr())?;
    b.connect(a.id(), sa.local_addr())?;
    Ok((sa, sb, a, b))
}

fn summary(layer: &str, sockets: &str, mut v: Vec<f64>) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
    println!(
        "{{\"layer\":\"{layer}\",\"sockets\":\"{sockets}\",\"median_us\":{:.1},\"p90_us\":{:.1}}}",
        at(0.5),
        at(0.9)
    );
}

async fn udx(rt: Option<&tokio::runtime::Handle>, n: usize) -> Result<Vec<f64>, BoxError> {
    let (_sa, _sb, mut a, mut b) = pair(rt).await?;
    let echo = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        while b.read_exact(&mut buf).await.is_ok() {
            if b.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let mut buf = [1u8; 64];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        a.write_all(&buf).await?;
        a.read_exact(&mut buf).await?;
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    echo.abort();
    Ok(out)
}

async fn secret_pair(
    rt: Option<&tokio::runtime::Handle>,
) -> Result<
    (
        UdxSocket,
        UdxSocket,
        SecretStream<UdxStream>,
        SecretStream<UdxStream>,
    ),
    BoxError,
> {
    let (sa, sb, a, b) = pair(rt).await?;
    let server = tokio::spawn(async move {
        SecretStream::new(b, false, &KeyPair::generate(), Config::default()).await
    });
    let a = SecretStream::new(a, true, &KeyPair::generate(), Config::default()).await?;
    let b = server.await??;
    Ok((sa, sb, a, b))
}

async fn secret(rt: Option<&tokio::runtime::Handle>, n: usize) -> Result<Vec<f64>, BoxError> {
    let (_sa, _sb, mut a, mut b) = secret_pair(rt).await?;
    let echo = tokio::spawn(async move {
        while let Ok(Some(m)) = b.recv().await {
            if b.send(&m).await.is_err() {
                break;
            }
        }
    });
    let msg = [1u8; 64];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        a.send(&msg).await?;
        a.recv().await?.ok_or("closed")?;
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    echo.abort();
    Ok(out)
}

async fn mux(rt: Option<&tokio::runtime::Handle>, n: usize) -> Result<Vec<f64>, BoxError> {
    let (_sa, _sb, a, b) = secret_pair(rt).await?;
    let alice = MuxHandle::spawn(a, DriverConfig::default());
    let bob = MuxHandle::spawn(b, DriverConfig::default());
    let mut requests = bob.pair("rtt", None);
    let mut ca = alice.open(&ChannelOptions::new("rtt"))?;
    let req = requests.recv().await.ok_or("no open")?;
    let mut cb = req.accept(&ChannelOptions::new("rtt"))?;
    ca.opened().await?;
    let echo = tokio::spawn(async move {
        let tx = cb.sender();
        while let Some(m) = cb.recv().await {
            if tx.send(0, &m.payload).await.is_err() {
                break;
            }
        }
    });
    let msg = [1u8; 64];
    let tx = ca.sender();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        tx.send(0, &msg).await?;
        ca.recv().await.ok_or("closed")?;
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    echo.abort();
    Ok(out)
}

async fn run(
    n: usize,
    only: Option<String>,
    remote: tokio::runtime::Handle,
) -> Result<(), BoxError> {
    let want = |layer: &str, sockets: &str| {
        only.as_deref()
            .is_none_or(|o| o == layer || o == sockets || o == format!("{layer}-{sockets}"))
    };
    for (name, rt) in [("local", None), ("remote", Some(&remote))] {
        if want("udx", name) {
            summary("udx", name, udx(rt, n).await?);
        }
        if want("secret", name) {
            summary("secret", name, secret(rt, n).await?);
        }
        if want("mux", name) {
            summary("mux", name, mux(rt, n).await?);
        }
    }
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let current = args.iter().any(|a| a == "--current-thread");
    let n = args
        .iter()
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(2000);
    let only = args
        .iter()
        .find(|a| !a.starts_with("--") && a.parse::<usize>().is_err())
        .cloned();
    // The "actor thread": a current-thread runtime of its own.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string());
        let rt = match rt {
            Ok(rt) => rt,
            Err(e) => return drop(tx.send(Err(e))),
        };
        let _ = tx.send(Ok(rt.handle().clone()));
        rt.block_on(std::future::pending::<()>());
    });
    let remote = rx.recv()??;
    let rt = if current {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
    };
    if args.iter().any(|a| a == "--in-task") {
        // The pings from a spawned task (on a worker) rather than from `block_on`'s thread.
        rt.block_on(async move { tokio::spawn(run(n, only, remote)).await? })
    } else {
        rt.block_on(run(n, only, remote))
    }
}
