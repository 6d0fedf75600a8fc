//! What the hostile-peer tests share: a testnet and a seeder as black boxes, a raw
//! dht-rpc speaker, seeded randomness.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use corenet_dht::hyper::dht::command as commands;
use corenet_dht::rpc::id::NodeId;
use corenet_dht::rpc::message::{Message, Request, Response};
use corenet_dht::{Dht, DhtConfig};
use corenet_noise::KeyPair;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{net_args, rss_kib, testnet, udp_ports, Proc};

pub(crate) const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// The seeder's identity (so that the test knows its public key).
pub(crate) const SHARER_SEED: &str =
    "6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b";
/// How much a process's resident memory may grow during one attack. An attacked process
/// keeps no per-datagram state, so what it may keep is the attack's footprint in the
/// bounded tables (routing table, token and rate-limit state, UDX's unknown-stream
/// handling) plus allocator slack: measured at up to 6 MiB (a testnet after 20,000 garbage
/// datagrams); the bound leaves room for the allocator's arenas on a loaded machine.
pub(crate) const MAX_GROWTH_KIB: u64 = 24 * 1024;

/// A testnet, a seeder of a 1 MiB file on it, and what a legitimate peer needs.
pub(crate) struct Lab {
    pub(crate) testnet: Proc,
    pub(crate) boot: String,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) sharer: Proc,
    pub(crate) sharer_key: String,
    pub(crate) core_key: String,
    pub(crate) discovery_key: String,
    pub(crate) content: Vec<u8>,
    pub(crate) gets: usize,
}

impl Lab {
    pub(crate) fn new() -> Lab {
        let (testnet, boot) = testnet();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data.bin");
        let content: Vec<u8> = (0..(1024 * 1024 + 777u32))
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        std::fs::write(&file, &content).unwrap();
        let (sharer, core_key, discovery_key) = spawn_sharer(dir.path(), &boot);
        let sharer_key = hex::encode(KeyPair::from_seed(hex32(SHARER_SEED)).public_key().0);
        Lab {
            testnet,
            boot,
            dir,
            sharer,
            sharer_key,
            core_key,
            discovery_key,
            content,
            gets: 0,
        }
    }

    /// Kills the seeder (SIGKILL).
    pub(crate) fn kill_sharer(&mut self) {
        self.sharer.kill();
    }

    /// Starts the seeder again on its store: it serves the same core.
    pub(crate) fn restart_sharer(&mut self) {
        let (sharer, core_key, _) = spawn_sharer(self.dir.path(), &self.boot);
        assert_eq!(
            core_key, self.core_key,
            "the restarted seeder serves another core"
        );
        self.sharer = sharer;
    }

    pub(crate) fn boot_addr(&self) -> SocketAddrV4 {
        self.boot.parse().unwrap()
    }

    /// Every UDP socket of the testnet and of the seeder.
    pub(crate) fn targets(&self) -> Vec<SocketAddrV4> {
        let mut ports = udp_ports(self.testnet.pid());
        ports.extend(udp_ports(self.sharer.pid()));
        assert!(ports.len() >= 4, "found the processes' sockets: {ports:?}");
        ports
            .into_iter()
            .map(|p| SocketAddrV4::new(LOCALHOST, p))
            .collect()
    }

    pub(crate) fn rss(&self) -> (u64, u64) {
        (rss_kib(self.testnet.pid()), rss_kib(self.sharer.pid()))
    }

    /// A legitimate peer downloads the shared file, intact, from a fresh store.
    pub(crate) fn legit_get(&mut self) -> Duration {
        self.gets += 1;
        let storage = self.dir.path().join(format!("getter{}", self.gets));
        let out = self.dir.path().join(format!("copy{}.bin", self.gets));
        let started = Instant::now();
        let mut args = net_args(&storage, &self.boot);
        args.extend([
            "get",
            self.core_key.as_str(),
            out.to_str().unwrap(),
            "--timeout",
            "60",
        ]);
        let mut getter = Proc::spawn(&args);
        getter.line("done ");
        assert!(getter.wait().success());
        assert!(
            std::fs::read(&out).unwrap() == self.content,
            "the copy differs"
        );
        started.elapsed()
    }

    /// Both processes still run, serve a legitimate peer, and grew by less than the bound.
    pub(crate) fn check_after(&mut self, attack: &str, rss_before: (u64, u64)) {
        assert!(self.testnet.try_status().is_none(), "the testnet died");
        assert!(self.sharer.try_status().is_none(), "the seeder died");
        let took = self.legit_get();
        let rss_after = self.rss();
        let grew = (
            rss_after.0.saturating_sub(rss_before.0),
            rss_after.1.saturating_sub(rss_before.1),
        );
        println!(
            "{attack}: legitimate get in {:.0} ms; resident KiB testnet {} -> {}, seeder {} -> {}",
            took.as_secs_f64() * 1000.0,
            rss_before.0,
            rss_after.0,
            rss_before.1,
            rss_after.1
        );
        assert!(
            grew.0 < MAX_GROWTH_KIB && grew.1 < MAX_GROWTH_KIB,
            "{attack}: memory grew by {grew:?} KiB"
        );
    }

    /// The public keys a `corenet lookup` of the shared core's discovery key finds.
    pub(crate) fn lookup(&self) -> BTreeSet<String> {
        let storage = self.dir.path().join("looker");
        let mut args = net_args(&storage, &self.boot);
        args.extend(["lookup", self.discovery_key.as_str()]);
        let out = Command::new(env!("CARGO_BIN_EXE_corenet"))
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "lookup failed");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("peer ").map(str::to_string))
            .collect()
    }
}

/// `corenet share` of `dir/data.bin` with its store in `dir/sharer`, announced: the process,
/// the core's key and its discovery key.
fn spawn_sharer(dir: &std::path::Path, boot: &str) -> (Proc, String, String) {
    let file = dir.join("data.bin");
    let storage = dir.join("sharer");
    let mut args = net_args(&storage, boot);
    args.extend(["--seed", SHARER_SEED, "share", file.to_str().unwrap()]);
    let sharer = Proc::spawn(&args);
    let core_key = sharer.line("key ")["key ".len()..].to_string();
    let discovery_key = sharer.line("discovery-key ")["discovery-key ".len()..].to_string();
    sharer.line("announced ");
    (sharer, core_key, discovery_key)
}

pub(crate) fn hex32(s: &str) -> [u8; 32] {
    hex::decode(s).unwrap().try_into().unwrap()
}

pub(crate) fn rng(test: &str) -> StdRng {
    let seed = std::env::var("CORENET_HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen::<u64>());
    println!("{test}: seed {seed} (CORENET_HOSTILE_SEED={seed} replays the attack)");
    StdRng::seed_from_u64(seed)
}

/// A raw dht-rpc speaker on its own socket.
pub(crate) struct Raw {
    pub(crate) sock: UdpSocket,
    pub(crate) addr: SocketAddrV4,
    pub(crate) tid: u16,
}

impl Raw {
    pub(crate) fn new() -> Raw {
        let sock = UdpSocket::bind((LOCALHOST, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = match sock.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            std::net::SocketAddr::V6(_) => unreachable!(),
        };
        Raw { sock, addr, tid: 0 }
    }

    pub(crate) fn send(&self, to: SocketAddrV4, datagram: &[u8]) {
        // A full socket buffer drops the datagram, as the network would.
        let _ = self.sock.send_to(datagram, to);
    }

    /// Sends `req` (with a fresh tid) and waits up to a second for its response.
    pub(crate) fn ask(&mut self, to: SocketAddrV4, req: Request) -> Option<Response> {
        self.ask_within(to, req, Duration::from_secs(1))
    }

    /// [`Raw::ask`], waiting at most `wait` (loopback answers come in milliseconds).
    pub(crate) fn ask_within(
        &mut self,
        to: SocketAddrV4,
        mut req: Request,
        wait: Duration,
    ) -> Option<Response> {
        self.tid = self.tid.wrapping_add(1);
        req.tid = self.tid;
        req.to = to;
        self.send(to, &req.to_bytes());
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            let Ok((n, _)) = self.sock.recv_from(&mut buf) else {
                continue;
            };
            if let Ok(Message::Response(r)) = Message::decode(&buf[..n]) {
                if r.tid == self.tid {
                    return Some(r);
                }
            }
        }
        None
    }

    /// A write token from `node` (a user command's reply carries one; dht-rpc's FIND_NODE
    /// reply does not).
    pub(crate) fn token(
        &mut self,
        node: SocketAddrV4,
        target: [u8; 32],
    ) -> Option<([u8; 32], NodeId)> {
        let r = self.ask(
            node,
            Request {
                command: commands::MUTABLE_GET,
                target: Some(target),
                value: Some(Bytes::from_static(&[0])),
                ..Request::default()
            },
        )?;
        Some((r.token?, r.id?))
    }
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub(crate) async fn client(boot: SocketAddrV4) -> Dht {
    let dht = Dht::spawn(
        DhtConfig::default()
            .with_host(LOCALHOST)
            .with_bootstrap(vec![boot]),
    )
    .await
    .unwrap();
    dht.bootstrapped().await.unwrap();
    dht
}
