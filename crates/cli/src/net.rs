//! `corenet share`, `corenet get` and `corenet chat`: the networker from the command line.

use std::io::{IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use corenet::extensions::ExtensionOptions;
use corenet::{
    Configure, Corestore, DiscoveryKey, KeyPair, Networker, NetworkerEvent, PublicKey, Topic,
};
use corenet_replication::files::{self, FileProgress};
use tokio::io::AsyncBufReadExt;

use crate::CliError;

/// Where the CLI keeps its cores: `<storage>/cores`.
fn cores_dir(storage: Option<&Path>) -> Result<PathBuf, CliError> {
    let dir = match storage {
        Some(d) => d.to_path_buf(),
        None => crate::identity::default_storage()?,
    };
    Ok(dir.join("cores"))
}

/// A networker for one CLI command. The CLI keeps its own identity file and says on the
/// command line what to join, so the networker's persistence is off.
async fn networker(
    store: Corestore,
    host: Ipv4Addr,
    bootstrap: Vec<SocketAddrV4>,
    key_pair: KeyPair,
) -> Result<Networker, CliError> {
    let mut b = Networker::builder(store)
        .key_pair(key_pair)
        .bootstrap(bootstrap.clone())
        .host(host)
        .persist(false);
    if crate::dht::behind_nat() {
        b = b.dht(crate::dht::node(host, bootstrap).await?);
    }
    b.build().await.map_err(CliError::runtime)
}

/// Prints `peer-add` / `peer-remove` lines; returns when the events end.
fn print_peer_event(ev: Option<NetworkerEvent>) -> bool {
    match ev {
        Some(NetworkerEvent::PeerAdd(p)) => {
            println!(
                "peer-add {} {} {}",
                p.remote_public_key, p.remote_address, p.path
            )
        }
        Some(NetworkerEvent::PeerRemove(p)) => println!("peer-remove {}", p.remote_public_key),
        Some(_) => {}
        None => return false,
    }
    true
}

/// `corenet share <path>`: puts the file into a core (64 KiB blocks; the same path keeps the
/// same key across runs), prints `key <hex>`, and serves it until SIGINT/SIGTERM.
pub(crate) async fn share(
    path: &Path,
    storage: Option<&Path>,
    host: Ipv4Addr,
    bootstrap: Vec<SocketAddrV4>,
    key_pair: KeyPair,
) -> Result<(), CliError> {
    let canonical = std::fs::canonicalize(path)
        .map_err(|e| CliError::Usage(format!("cannot open {}: {e}", path.display())))?;
    let store = Corestore::open(cores_dir(storage)?).map_err(CliError::runtime)?;
    let name = format!("file:{}", canonical.display());
    let shared = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || files::share_file(&store, &name, &canonical))
            .await
            .map_err(CliError::runtime)?
            .map_err(CliError::runtime)?
    };
    println!("key {}", shared.core.key());
    println!("discovery-key {}", shared.core.discovery_key());
    println!(
        "shared {} {} blocks {} bytes",
        path.display(),
        shared.blocks,
        shared.bytes
    );
    let net = networker(store, host, bootstrap, key_pair).await?;
    let mut events = net.events();
    net.configure(
        shared.core.discovery_key(),
        Configure {
            announce: true,
            lookup: true,
            flush: true,
        },
    )
    .await
    .map_err(CliError::runtime)?;
    let stop = crate::dht::shutdown_signal();
    println!("announced {}", shared.core.discovery_key());
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            ev = events.recv() => if !print_peer_event(ev) { break },
        }
    }
    net.close().await.map_err(CliError::runtime)
}

/// `corenet get <key> <out>`: finds peers of the core, downloads it with a progress bar on
/// stderr and writes `out`. Resumable: blocks kept from an interrupted run are not fetched
/// again.
pub(crate) async fn get(
    key: PublicKey,
    out: &Path,
    timeout: Option<Duration>,
    storage: Option<&Path>,
    host: Ipv4Addr,
    bootstrap: Vec<SocketAddrV4>,
    key_pair: KeyPair,
) -> Result<(), CliError> {
    let store = Corestore::open(cores_dir(storage)?).map_err(CliError::runtime)?;
    let core = store.get_by_key(key).map_err(CliError::runtime)?;
    if core.contiguous_len() > 0 {
        eprintln!("resuming: {} blocks already stored", core.contiguous_len());
    }
    let net = networker(store, host, bootstrap, key_pair).await?;
    net.configure(core.discovery_key(), Configure::lookup_only())
        .await
        .map_err(CliError::runtime)?;
    eprintln!("looking for peers of {}", core.discovery_key());
    // Which peers serve us, and how they are reached, on stderr.
    let mut events = net.events();
    let peers = tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let NetworkerEvent::PeerAdd(p) = ev {
                eprintln!(
                    "peer-add {} {} {}",
                    p.remote_public_key, p.remote_address, p.path
                );
            }
        }
    });
    let mut bar = ProgressBar::new();
    let download = files::download_to_file(&core, out, |p| bar.update(p));
    let done = match timeout {
        Some(t) => tokio::time::timeout(t, download)
            .await
            .map_err(|_| CliError::Runtime(format!("no complete download within {t:?}")))?,
        None => download.await,
    };
    bar.finish();
    let done = done.map_err(CliError::runtime)?;
    let secs = done.elapsed.as_secs_f64();
    eprintln!(
        "wrote {}: fetched {} bytes in {:.2} s ({:.1} MiB/s)",
        out.display(),
        done.fetched_bytes,
        secs,
        done.fetched_bytes as f64 / (1024.0 * 1024.0) / secs.max(1e-9)
    );
    println!(
        "done {} {} fetched {}",
        done.bytes, done.blocks, done.fetched_bytes
    );
    peers.abort();
    net.close().await.map_err(CliError::runtime)
}

/// A one-line progress bar on stderr (redrawn in place on a terminal; a line per second
/// otherwise).
struct ProgressBar {
    tty: bool,
    drawn: bool,
    last_line: Option<std::time::Instant>,
}

impl ProgressBar {
    fn new() -> Self {
        ProgressBar {
            tty: std::io::stderr().is_terminal(),
            drawn: false,
            last_line: None,
        }
    }

    fn update(&mut self, p: &FileProgress) {
        let frac = if p.total_bytes == 0 {
            1.0
        } else {
            p.bytes as f64 / p.total_bytes as f64
        };
        let width = 30;
        let filled = ((frac * width as f64) as usize).min(width);
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let eta = p
            .eta
            .map_or_else(|| "?".to_string(), |d| format!("{}s", d.as_secs()));
        let line = format!(
            "[{}{}] {:5.1}% {:.1}/{:.1} MiB {:.1} MiB/s eta {eta}",
            "#".repeat(filled),
            ".".repeat(width - filled),
            frac * 100.0,
            mib(p.bytes),
            mib(p.total_bytes),
            p.rate / (1024.0 * 1024.0),
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r{line}\x1b[K");
            let _ = err.flush();
            self.drawn = true;
        } else if self
            .last_line
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
            || frac >= 1.0
        {
            let _ = writeln!(err, "{line}");
            self.last_line = Some(std::time::Instant::now());
        }
    }

    fn finish(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}

/// `corenet chat <topic>`: joins the topic, sends each stdin line to every peer over the
/// `chat` extension (utf8), prints `<public-key> <text>` for each line received and
/// `peer-add` / `peer-remove` as peers come and go.
pub(crate) async fn chat(
    topic: Topic,
    host: Ipv4Addr,
    bootstrap: Vec<SocketAddrV4>,
    key_pair: KeyPair,
) -> Result<(), CliError> {
    let net = networker(Corestore::in_memory(), host, bootstrap, key_pair).await?;
    let chat = net
        .register_extension("chat", ExtensionOptions::utf8())
        .await
        .map_err(CliError::runtime)?;
    let mut inbox = chat.messages();
    let mut events = net.events();
    net.configure(DiscoveryKey(topic.0), Configure::default())
        .await
        .map_err(CliError::runtime)?;
    let stop = crate::dht::shutdown_signal();
    println!("joined {topic}");
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            line = lines.next_line(), if stdin_open => match line {
                Ok(Some(line)) => {
                    if let Err(e) = chat.broadcast(line.as_str()) {
                        eprintln!("not sent: {e}");
                    }
                }
                _ => stdin_open = false,
            },
            msg = inbox.recv() => match msg {
                Some((text, peer)) => {
                    // One line per message: a remote cannot start a new line of our output.
                    let text: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
                    println!("{} {text}", peer.public_key());
                }
                None => break,
            },
            ev = events.recv() => if !print_peer_event(ev) { break },
        }
    }
    net.close().await.map_err(CliError::runtime)
}
