//! `corenet`: the command line of the corenet stack.
//!
//! The plain-text output is a stable interface: one event per line, a lower-case keyword
//! first, keys in lower-case hex (keys are read in hex or z32, as JS apps print them).
//! Diagnostics go to stderr. Exit codes: 0 success, 1 runtime
//! failure (with a one-line `error: ...` on stderr), 2 usage error.

mod dht;
mod e2e;
mod identity;
mod net;
mod swarm;
mod tcp;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use corenet_codec::PublicKey;

/// The corenet command line.
#[derive(Debug, Parser)]
#[command(name = "corenet", version, about = "Hypercore peer-to-peer networking, in Rust", long_about = None)]
struct Cli {
    /// DHT bootstrap node, repeatable (default: the public bootstrap nodes).
    #[arg(long, value_name = "HOST:PORT", global = true)]
    bootstrap: Vec<String>,
    /// 32-byte identity seed in hex (default: an identity kept under --storage).
    #[arg(long, value_name = "HEX32", global = true)]
    seed: Option<String>,
    /// Data directory (default: the platform data dir, e.g. ~/.local/share/corenet).
    #[arg(long, value_name = "DIR", global = true)]
    storage: Option<PathBuf>,
    /// Address to bind (default 0.0.0.0).
    #[arg(long, value_name = "IP", global = true, default_value = "0.0.0.0")]
    host: IpAddr,
    /// Behave as if behind a NAT: stay firewalled (skip the quick reachability check) and
    /// use no LAN shortcut, so that peers on one machine connect through the holepunch
    /// (for trying NAT traversal locally). With `testnet`: its nodes answer no
    /// reachability check, so every peer on it stays firewalled.
    #[arg(long, global = true)]
    behind_nat: bool,
    /// More log output on stderr (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print this identity's public key (`public-key <hex>`), creating the identity if needed.
    Keygen,
    /// Accept encrypted connections (Noise XX secret streams over TCP with --tcp).
    Listen {
        /// Listen for TCP connections at this address (port 0 picks one).
        #[arg(long, value_name = "ADDR")]
        tcp: Option<String>,
        /// Echo every connection's bytes back instead of piping the first to stdin/stdout.
        #[arg(long)]
        echo: bool,
        /// Offer this blind relay to clients that cannot reach us directly or by a punch
        /// (hyperdht `relayThrough`).
        #[arg(long, value_name = "PUBLIC-KEY")]
        relay_through: Option<PublicKey>,
    },
    /// Connect and pipe stdin/stdout over an encrypted stream.
    Connect {
        /// The remote's public key (hex or z32); with --tcp, the key the server must prove.
        #[arg(value_name = "PUBLIC-KEY")]
        public_key: Option<PublicKey>,
        /// Connect over TCP to this address.
        #[arg(long, value_name = "ADDR")]
        tcp: Option<String>,
        /// With --tcp: refuse the stream unless the server proves this key.
        #[arg(long, value_name = "PUBLIC-KEY")]
        remote_key: Option<PublicKey>,
        /// Relay through this blind relay when no direct path or punch works (hyperdht
        /// `relayThrough`).
        #[arg(long, value_name = "PUBLIC-KEY")]
        relay_through: Option<PublicKey>,
    },
    /// Run DHT nodes on this machine (on --host, 127.0.0.1 when it is 0.0.0.0); prints
    /// `bootstrap <ip:port>` then `ready`.
    Testnet {
        /// Number of nodes.
        #[arg(long, default_value_t = 10)]
        nodes: usize,
        /// Port of the first (bootstrap) node (default: any free port).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Classify this machine's NAT through the DHT the way a connect does; prints
    /// `nat <unknown|open|consistent|random> [<host:port>]`.
    Nat,
    /// Serve as a blind relay on the DHT (for JS and Rust peers); prints `relay <public-key>`,
    /// runs until SIGINT/SIGTERM.
    Relay,
    /// Announce this identity under a topic; prints `announced <topic> <public-key>`, keeps
    /// the record fresh and unannounces on SIGINT/SIGTERM.
    Announce {
        /// 64 hex characters, or any text (hashed into a topic).
        topic: String,
    },
    /// Print `peer <public-key>` for each record under a topic, then exit.
    Lookup {
        /// 64 hex characters, or any text (hashed into a topic).
        topic: String,
    },
    /// Join a topic; prints `joined <topic>`, then `connection <public-key> <client|server>`
    /// and `disconnected <public-key>` as they happen. Both modes unless one is given.
    Swarm {
        /// 64 hex characters, or any text (hashed into a topic).
        topic: String,
        /// Announce (others connect to us).
        #[arg(long)]
        server: bool,
        /// Look up and connect to others.
        #[arg(long)]
        client: bool,
    },
    /// Share a file as a hypercore (64 KiB blocks) and serve it until SIGINT/SIGTERM; prints
    /// `key <hex>` (what `get` takes) and `discovery-key <hex>`, then
    /// `peer-add <public-key> <address> <direct|lan|holepunch|relay>` / `peer-remove` lines. Sharing the same
    /// path again (same --storage) serves the same key.
    Share {
        /// The file.
        path: PathBuf,
    },
    /// Download a shared file: finds peers of the core, shows progress on stderr, writes OUT
    /// (complete or not at all) and prints `done <bytes> <blocks> fetched <bytes>`. An
    /// interrupted download resumes where it stopped.
    Get {
        /// The core's key, as printed by `share` (hex), or as JS apps print keys (z32,
        /// also as a `pear://` link).
        key: PublicKey,
        /// Where to write the file.
        out: PathBuf,
        /// Give up after this many seconds (default: wait for peers forever).
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
    },
    /// Chat on a topic over the `chat` extension: each stdin line goes to every peer; prints
    /// `joined <topic>`, `peer-add <public-key> <address>`, `<public-key> <text>`,
    /// `peer-remove <public-key>`.
    Chat {
        /// 64 hex characters, or any text (hashed into a topic).
        topic: String,
    },
    /// Two peers on an embedded testnet share and replicate a core, and chat; prints what
    /// happened and the throughput.
    Demo {
        /// Size of the shared core in MiB.
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// The end-to-end benchmarks of BENCHMARKS.md on an embedded testnet: join to connection,
    /// replication throughput, extension round trip and message rate.
    Bench {
        /// Print one JSON object (an array of two with --js).
        #[arg(long)]
        json: bool,
        /// Size of the replicated core in MiB.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Also run the JS counterpart from this directory (tests/interop, installed), in the
        /// same run.
        #[arg(long, value_name = "DIR")]
        js: Option<PathBuf>,
        /// Replicating connections for the memory figure.
        #[arg(long, default_value_t = 50)]
        connections: usize,
    },
    /// (Used by `bench`.) COUNT networkers in this process replicate the core KEY and stay
    /// connected; prints `ready` once every copy is complete.
    #[command(hide = true)]
    BenchClients {
        /// The core's key.
        key: PublicKey,
        /// How many networkers.
        count: usize,
    },
}

/// A failure that ends the command with exit code 1 or 2.
#[derive(Debug, thiserror::Error)]
enum CliError {
    /// Bad arguments (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// Anything else (exit code 1).
    #[error("{0}")]
    Runtime(String),
}

impl CliError {
    fn runtime(e: impl std::fmt::Display) -> Self {
        CliError::Runtime(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // The command runs as a task on the runtime's workers, like the tasks it talks to:
    // awaited from `block_on`'s thread (not a worker), every wake-up between it and them
    // would cross threads (a small message's round trip took twice as long).
    let result = rt.block_on(async {
        tokio::spawn(run(cli))
            .await
            .unwrap_or_else(|e| Err(CliError::runtime(e)))
    });
    // The command is over and awaited every blocking task it started. What can still be on
    // the blocking pool is a read of stdin (`chat`, `connect`), which returns only when a
    // line or EOF comes: dropping the runtime would wait for it, so `chat` told to stop
    // (SIGINT/SIGTERM) with its stdin open would never exit. Don't wait.
    rt.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
        Err(CliError::Runtime(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run(cli: Cli) -> Result<(), CliError> {
    dht::BEHIND_NAT.store(cli.behind_nat, std::sync::atomic::Ordering::Relaxed);
    match cli.command {
        Command::Testnet { nodes, port } => {
            let host = match cli.host {
                IpAddr::V4(h) if h.is_unspecified() => std::net::Ipv4Addr::LOCALHOST,
                IpAddr::V4(h) => h,
                IpAddr::V6(_) => {
                    return Err(CliError::Usage("--host must be an IPv4 address".into()))
                }
            };
            return dht::testnet(nodes, host, port.unwrap_or(0)).await;
        }
        Command::Demo { size } => return e2e::demo(size.max(1)).await,
        Command::Bench {
            json,
            size,
            js,
            connections,
        } => return e2e::bench(json, size.max(1), js, connections.max(1)).await,
        Command::BenchClients { key, count } => {
            return e2e::bench_clients(key, count, dht::parse_bootstrap(&cli.bootstrap)?).await
        }
        _ => {}
    }
    let key_pair = identity::load(cli.seed.as_deref(), cli.storage.as_deref())?;
    let bootstrap = dht::parse_bootstrap(&cli.bootstrap)?;
    let host = match cli.host {
        IpAddr::V4(h) => h,
        IpAddr::V6(_) => return Err(CliError::Usage("--host must be an IPv4 address".into())),
    };
    match cli.command {
        Command::Announce { topic } => {
            dht::announce(dht::topic(&topic), host, bootstrap, key_pair).await
        }
        Command::Lookup { topic } => dht::lookup(dht::topic(&topic), host, bootstrap).await,
        Command::Swarm {
            topic,
            server,
            client,
        } => {
            let (server, client) = if server || client {
                (server, client)
            } else {
                (true, true)
            };
            swarm::run(
                dht::topic(&topic),
                host,
                bootstrap,
                key_pair,
                server,
                client,
            )
            .await
        }
        Command::Testnet { .. }
        | Command::Demo { .. }
        | Command::Bench { .. }
        | Command::BenchClients { .. } => {
            unreachable!("handled above")
        }
        Command::Share { path } => {
            net::share(&path, cli.storage.as_deref(), host, bootstrap, key_pair).await
        }
        Command::Get { key, out, timeout } => {
            net::get(
                key,
                &out,
                timeout.map(std::time::Duration::from_secs),
                cli.storage.as_deref(),
                host,
                bootstrap,
                key_pair,
            )
            .await
        }
        Command::Chat { topic } => net::chat(dht::topic(&topic), host, bootstrap, key_pair).await,
        Command::Keygen => {
            println!("public-key {}", key_pair.public_key());
            Ok(())
        }
        Command::Nat => dht::nat(host, bootstrap).await,
        Command::Relay => dht::relay(host, bootstrap, key_pair).await,
        Command::Listen {
            tcp: Some(addr),
            echo,
            ..
        } => tcp::listen(&addr, echo, key_pair).await,
        Command::Connect {
            public_key,
            tcp: Some(addr),
            remote_key,
            ..
        } => {
            let expect = match (public_key, remote_key) {
                (Some(a), Some(b)) if a != b => {
                    return Err(CliError::Usage(
                        "the positional key and --remote-key differ".into(),
                    ))
                }
                (a, b) => a.or(b),
            };
            tcp::connect(&addr, expect, key_pair).await
        }
        Command::Listen {
            tcp: None,
            echo,
            relay_through,
        } => dht::listen(host, bootstrap, key_pair, echo, relay_through).await,
        Command::Connect {
            public_key,
            tcp: None,
            remote_key,
            relay_through,
        } => {
            let Some(pk) = public_key.or(remote_key) else {
                return Err(CliError::Usage(
                    "connect needs the server's public key (or --tcp ADDR)".into(),
                ));
            };
            dht::connect(host, bootstrap, key_pair, pk, relay_through).await
        }
    }
}
