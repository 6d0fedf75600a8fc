//! `listen --tcp` and `connect --tcp`: Noise XX secret streams over TCP.

use std::sync::Arc;
use std::time::Duration;

use corenet_codec::PublicKey;
use corenet_noise::{Config, KeyPair, SecretStream};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::CliError;

/// Noise handshakes `listen --tcp --echo` runs at once.
const MAX_CONCURRENT_HANDSHAKES: usize = 64;
/// First wait after a failed `accept` (doubling up to [`ACCEPT_BACKOFF_MAX`]).
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Accepts connections at `addr`; pipes the first to stdin/stdout, or echoes every one.
pub(crate) async fn listen(addr: &str, echo: bool, key_pair: KeyPair) -> Result<(), CliError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::Runtime(format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr().map_err(CliError::runtime)?;
    println!("listening {}", key_pair.public_key());
    println!("address {local}");
    let handshakes = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => {
                backoff = ACCEPT_BACKOFF_MIN;
                accepted
            }
            Err(e) => {
                // Out of file descriptors (EMFILE/ENFILE), buffers, or a connection that
                // went away before we took it: none of these ends the listener. Wait a
                // little (connections close meanwhile) and accept again.
                tracing::warn!(error = %e, ?backoff, "accept failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let kp = key_pair.clone();
        if echo {
            // Handshakes in progress are capped: beyond the cap a new connection is closed
            // at once, so a flood of silent connections cannot hold every descriptor.
            let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                tracing::info!(%peer, "too many handshakes in progress; connection closed");
                continue;
            };
            tokio::spawn(async move {
                let handshake = SecretStream::new(tcp, false, &kp, Config::default()).await;
                drop(permit);
                match handshake {
                    Ok(stream) => {
                        eprintln!("connection {} {peer}", stream.remote_public_key());
                        let (mut r, mut w) = tokio::io::split(stream);
                        let copied = tokio::io::copy(&mut r, &mut w).await;
                        let _ = w.shutdown().await;
                        if let Err(e) = copied {
                            tracing::info!(%peer, error = %e, "echo connection ended with an error");
                        }
                    }
                    Err(e) => tracing::info!(%peer, error = %e, "handshake failed"),
                }
            });
        } else {
            match SecretStream::new(tcp, false, &key_pair, Config::default()).await {
                Ok(stream) => {
                    eprintln!("connected {}", stream.remote_public_key());
                    return pipe(stream).await;
                }
                Err(e) => eprintln!("handshake with {peer} failed: {e}"),
            }
        }
    }
}

/// Connects to `addr` and pipes stdin/stdout.
pub(crate) async fn connect(
    addr: &str,
    expect: Option<PublicKey>,
    key_pair: KeyPair,
) -> Result<(), CliError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| CliError::Runtime(format!("cannot connect to {addr}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let mut config = Config::default();
    if let Some(k) = expect {
        config = config.with_remote_public_key(k);
    }
    let stream = SecretStream::new(tcp, true, &key_pair, config)
        .await
        .map_err(CliError::runtime)?;
    eprintln!("connected {}", stream.remote_public_key());
    pipe(stream).await
}

/// stdin to the stream (then half-close), the stream to stdout; returns when both have ended.
pub(crate) async fn pipe<S>(stream: S) -> Result<(), CliError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut r, mut w) = tokio::io::split(stream);
    let up = async {
        let mut stdin = tokio::io::stdin();
        tokio::io::copy(&mut stdin, &mut w).await?;
        w.shutdown().await
    };
    let down = async {
        let mut stdout = BufWriter::new(tokio::io::stdout());
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            use tokio::io::AsyncReadExt;
            let n = r.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            stdout.write_all(&buf[..n]).await?;
            stdout.flush().await?;
        }
        stdout.flush().await
    };
    let (a, b) = tokio::join!(up, down);
    a.and(b).map_err(CliError::runtime)
}
