//! The soak (issue 13, item 5): the `corenet` binary for minutes on end in a network
//! namespace with UDP packet loss, long-lived peers, churning peers and continuous
//! replication and extension traffic. It checks that nothing leaks and nothing is lost.
//!
//! Needs root (it creates a network namespace and loads an nftables rule into it); without
//! root it prints why and passes. Ignored by default, as the NAT lab and the UDX netns tests:
//!
//! ```sh
//! cargo test -p corenet-cli --test soak -- --ignored --nocapture     # 2 minutes (CI)
//! scripts/soak 1800                                                   # 30 minutes, --release
//! ```
//!
//! Environment: `CORENET_SOAK_SECS` (churn phase, default 120), `CORENET_SOAK_SEED` (the
//! schedule's seed, printed; default from the clock), `CORENET_SOAK_LOSS` (percent of UDP
//! datagrams dropped, default 3), `CORENET_SOAK_MIB` (size of the shared file, default 4),
//! `CORENET_SOAK_LOGS` (a directory: each process's whole stderr goes to `<name>.log` there;
//! set `RUST_LOG` too for more than warnings).
//! The seed replays the schedule's decisions (who joins, leaves or crashes, and when), not
//! the network's timing.
//!
//! - **The network**: a namespace `corenet-soak-<pid>` with only `lo` up (127.0.0.1, no route
//!   out) and an nftables rule dropping `CORENET_SOAK_LOSS`% of UDP datagrams at random on
//!   the way in (every datagram, DHT and UDX alike, crosses it once). Removed when the test
//!   ends.
//! - **Long-lived**: a `testnet` (3 DHT nodes), a `share` seeder of the file, and two `chat`
//!   peers on one topic (`anchor` and `buddy`) that each send a numbered line every
//!   [`LINE_EVERY`].
//! - **Churn** (seeded): [`CHAT_SLOTS`] chat peers that join, send numbered lines, drain,
//!   then leave (SIGTERM, must exit 0 within [`EXIT_LIMIT`]) or crash (SIGKILL, right after a
//!   few unaccounted lines), and come back after a pause with the same identity (a restart)
//!   or a new one (a new peer); [`GET_SLOTS`] `get` downloads, each with fresh storage, that
//!   run to the end or are killed -9 at a random moment while they transfer (after their
//!   `peer-add`, within the time a whole download took so far) and restarted on the same
//!   storage (a resume), up to [`MAX_KILLS`] times.
//! - **Zero data lost**: every `get` ends with `done` and writes exactly the file. For chat,
//!   a line sent by X is *expected* at Y when, as the test wrote it to X's stdin, X had
//!   printed `peer-add Y` and Y had printed `peer-add X` (each after the other's current
//!   process started) and neither had printed `peer-remove` since: both ends then hold the
//!   extension channel's slot, and messages over one connection are reliable and ordered.
//!   An expected line must arrive exactly once, in order; before a peer leaves or crashes the
//!   test stops its sending and waits (bounded) until every line expected from or at it has
//!   arrived. If the connection between two running peers closes (a `peer-remove` the test
//!   did not cause) the lines still in flight on it are counted as "in flight at a break",
//!   not lost, and the break itself is counted and printed (it is a finding if it happens).
//! - **Flat**: every [`sample_every`] the test reads each long-lived process's VmRSS and
//!   thread count (`/proc/<pid>/status`), open fds (`/proc/<pid>/fd`) and UDP sockets (its
//!   socket fds found in `/proc/<pid>/net/udp{,6}`). After a warm-up the churn phase is cut
//!   in thirds; the last third's maximum must stay within a margin of the first third's
//!   maximum (see [`Limits`]). After the churn stops and the departed peers' connections
//!   are gone, each process's fds and UDP sockets must be back at their count from before
//!   the churn started.
//!
//! The run ends with a table of the samples (the figures in BENCHMARKS.md).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// How often each chat peer sends a numbered line.
const LINE_EVERY: Duration = Duration::from_millis(250);
/// Churning chat peers at once.
const CHAT_SLOTS: usize = 3;
/// Churning downloads at once.
const GET_SLOTS: usize = 2;
/// Times one download is killed before it is left to finish.
const MAX_KILLS: u32 = 2;
/// A process told to stop (SIGTERM) must exit within this.
const EXIT_LIMIT: Duration = Duration::from_secs(30);
/// Draining: the lines expected from and at a peer that is about to go must arrive within
/// this (at a few lines a second, they normally take milliseconds).
const DRAIN_LIMIT: Duration = Duration::from_secs(20);
/// A chat peer must print `joined` within this.
const JOIN_LIMIT: Duration = Duration::from_secs(60);
/// A download must finish within this (the CLI's own `--timeout` is a little shorter).
const GET_LIMIT: Duration = Duration::from_secs(150);
/// After the churn: departed peers' connections must be gone within this (crashed peers'
/// connections end by timeout).
const SETTLE_LIMIT: Duration = Duration::from_secs(120);
/// Each stderr line containing one of these is counted and (the first few) printed.
const NOTABLE: [&str; 3] = [" WARN ", " ERROR ", "panicked"];

/// How far the last third of the churn phase may rise above the first third (maxima), per
/// long-lived process. Chosen from measured runs (BENCHMARKS.md, "Soak"): in a flat process
/// RSS wanders by a few MiB as allocator arenas grow and shrink with the number of
/// connections at the moment; fds and UDP sockets follow the live connections (a UDX socket
/// per process, a few more for holepunch probes) and threads the blocking pool (file writes,
/// which retires idle threads after 10 s). A leak of one task, connection or buffer per churn
/// cycle exceeds these within a few minutes: a 30-minute run has hundreds of cycles.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// RSS: this fraction of the first third's maximum, plus [`Limits::rss_slack_kib`].
    rss_ratio: f64,
    rss_slack_kib: u64,
    fds: u64,
    threads: u64,
    udp: u64,
}

const LIMITS: Limits = Limits {
    rss_ratio: 1.2,
    rss_slack_kib: 4 * 1024,
    fds: 8,
    threads: 6,
    udp: 2,
};

// ------------------------------------------------------------------------------ setup

/// A UDP-lossy namespace with only loopback; deleted (with anything still in it) on drop.
#[derive(Debug)]
struct Netns {
    name: String,
}

impl Netns {
    fn create(loss: u8) -> Result<Netns, String> {
        let ns = Netns {
            name: format!("corenet-soak-{}", std::process::id()),
        };
        run("ip", &["netns", "add", &ns.name])?;
        run("ip", &["-n", &ns.name, "link", "set", "lo", "up"])?;
        // As tests/natlab/src/nft.rs: the kernel may lack netem; nft's numgen does loss. On
        // the way in (prerouting): a datagram dropped on output would fail the sender's
        // sendmsg with EPERM, which real loss never does.
        let rules = format!(
            "table inet soak {{\n  chain lossy {{\n    type filter hook prerouting priority -300; \
             policy accept;\n    meta l4proto udp numgen random mod 100 < {loss} drop\n  }}\n}}\n"
        );
        run_with_input("ip", &["netns", "exec", &ns.name, "nft", "-f", "-"], &rules)?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(pids) = run("ip", &["netns", "pids", &self.name]) {
            for pid in pids.split_whitespace() {
                let _ = run("kill", &["-KILL", pid]);
            }
        }
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    run_with_input(program, args, "")
}

fn run_with_input(program: &str, args: &[&str], input: &str) -> Result<String, String> {
    let shown = || format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("`{}`: {e}", shown()))?;
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(input.as_bytes())
        .map_err(|e| format!("`{}`: {e}", shown()))?;
    drop(stdin);
    let out = child
        .wait_with_output()
        .map_err(|e| format!("`{}`: {e}", shown()))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed ({}): {}",
            shown(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// `nft` present, else installed with apt-get (as the NAT lab does on a fresh machine).
fn ensure_nft() -> Result<(), String> {
    let has = || run("nft", &["--version"]).is_ok();
    if has() {
        return Ok(());
    }
    eprintln!("soak: installing nftables");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let install = ["install", "-y", "-q", "nftables"];
    if !(apt(&install) || (apt(&["update", "-q"]) && apt(&install))) || !has() {
        return Err("nft is missing and apt-get install nftables failed".into());
    }
    Ok(())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} does not parse")),
        Err(_) => default,
    }
}

/// splitmix64: the schedule's randomness, from the printed seed.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    fn secs(&mut self, lo: f64, hi: f64) -> Duration {
        Duration::from_secs_f64(lo + (hi - lo) * self.unit())
    }
    fn seed_hex(&mut self) -> String {
        (0..4).map(|_| format!("{:016x}", self.next())).collect()
    }
}

// ------------------------------------------------------------------------------ processes

/// What a process's reader threads report.
#[derive(Debug)]
enum Output {
    Line(String),
    /// A stderr line with one of [`NOTABLE`] in it.
    Notable(String),
    /// A stderr line starting with one of [`STDERR_EVENTS`].
    Stderr(String),
}

/// stderr lines the test acts on: a download's connection to a peer, and its resume.
const STDERR_EVENTS: [&str; 2] = ["peer-add ", "resuming: "];

#[derive(Debug)]
struct Event {
    proc: usize,
    output: Output,
}

/// A `corenet` run inside the namespace. Its stdout lines go to the test's one event
/// channel; stdin is written by a thread from a bounded queue (a process that stops reading
/// cannot block the test); the last stderr lines are kept for failure reports. Killed on
/// drop.
#[derive(Debug)]
struct Proc {
    id: usize,
    name: String,
    child: Child,
    stdin: Option<mpsc::SyncSender<String>>,
    tail: Arc<Mutex<VecDeque<String>>>,
    status: Option<ExitStatus>,
    /// Set by the stdout reader after it queued the last line.
    stdout_closed: Arc<AtomicBool>,
    /// The exit and the end of stdout were seen in one round: every line is handled by the
    /// next (see [`Proc::finished`]).
    ended_seen: bool,
}

/// stderr lines kept per process.
const TAIL: usize = 30;
/// Lines queued for a process's stdin before the test calls it stuck.
const STDIN_QUEUE: usize = 256;

impl Proc {
    fn spawn(ns: &str, id: usize, name: &str, args: &[&str], events: &mpsc::Sender<Event>) -> Proc {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_corenet")])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ip netns exec corenet");
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL)));
        let stdout = child.stdout.take().expect("stdout");
        let tx = events.clone();
        let stdout_closed = Arc::new(AtomicBool::new(false));
        let closed = stdout_closed.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let output = Output::Line(line);
                if tx.send(Event { proc: id, output }).is_err() {
                    break;
                }
            }
            closed.store(true, Ordering::Release);
        });
        let stderr = child.stderr.take().expect("stderr");
        let (tx, t) = (events.clone(), tail.clone());
        let mut log = std::env::var_os("CORENET_SOAK_LOGS").map(|d| {
            let path = PathBuf::from(d).join(format!("{name}.log"));
            std::fs::File::create(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(f) = log.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                if NOTABLE.iter().any(|n| line.contains(n)) {
                    let output = Output::Notable(line.clone());
                    let _ = tx.send(Event { proc: id, output });
                } else if STDERR_EVENTS.iter().any(|p| line.starts_with(p)) {
                    let output = Output::Stderr(line.clone());
                    let _ = tx.send(Event { proc: id, output });
                }
                let mut t = t.lock().unwrap();
                if t.len() == TAIL {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
        let mut pipe = child.stdin.take().expect("stdin");
        let (stx, srx) = mpsc::sync_channel::<String>(STDIN_QUEUE);
        std::thread::spawn(move || {
            for line in srx {
                if writeln!(pipe, "{line}")
                    .and_then(|()| pipe.flush())
                    .is_err()
                {
                    break;
                }
            }
        });
        Proc {
            id,
            name: name.to_string(),
            child,
            stdin: Some(stx),
            tail,
            status: None,
            stdout_closed,
            ended_seen: false,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Queues a line for stdin; false if the queue is full (the process is not reading).
    fn say(&self, line: String) -> bool {
        !matches!(
            self.stdin.as_ref().map(|s| s.try_send(line)),
            Some(Err(mpsc::TrySendError::Full(_)))
        )
    }

    fn terminate(&self) {
        let _ = run("kill", &["-TERM", &self.pid().to_string()]);
    }

    /// SIGKILL, and reaps it.
    fn crash(&mut self) {
        let _ = self.child.kill();
        self.status = self.child.wait().ok();
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// The exit status once the process has exited and its every stdout line has been
    /// handled: the exit can be seen before the reader thread has queued the last lines, so
    /// this answers one round (one [`Soak::pump`]) after both ends were seen.
    fn finished(&mut self) -> Option<ExitStatus> {
        let status = self.exited()?;
        if !self.stdout_closed.load(Ordering::Acquire) {
            return None;
        }
        if !self.ended_seen {
            self.ended_seen = true;
            return None;
        }
        Some(status)
    }

    fn tail(&self) -> String {
        let t = self.tail.lock().unwrap();
        t.iter().map(|l| format!("    {l}\n")).collect()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ------------------------------------------------------------------------------ sampling

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    rss_kib: u64,
    fds: u64,
    threads: u64,
    udp: u64,
}

/// One process's figures from /proc, or None once it is gone.
fn sample(pid: u32) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |key: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    let (rss_kib, threads) = (field("VmRSS:")?, field("Threads:")?);
    let mut sockets = HashSet::new();
    let mut fds = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()? {
        let Ok(entry) = entry else { continue };
        fds += 1;
        if let Ok(target) = std::fs::read_link(entry.path()) {
            if let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
            {
                sockets.insert(inode.to_string());
            }
        }
    }
    // /proc/<pid>/net is the process's namespace's view; column 10 is the inode.
    let mut udp = 0;
    for table in ["udp", "udp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        udp += text
            .lines()
            .skip(1)
            .filter(|l| {
                l.split_whitespace()
                    .nth(9)
                    .is_some_and(|i| sockets.contains(i))
            })
            .count() as u64;
    }
    Some(Sample {
        rss_kib,
        fds,
        threads,
        udp,
    })
}

fn sample_every(secs: u64) -> Duration {
    Duration::from_secs((secs / 60).clamp(2, 30))
}

// ------------------------------------------------------------------------------ chat model

/// One run of a chat process (a restart is a new incarnation with the same key).
#[derive(Debug)]
struct Chat {
    /// Unique per incarnation; in every line it sends (`soak <name> <n>`).
    name: String,
    pk: String,
    proc: Option<Proc>,
    spawned: Instant,
    /// New lines to and from it are expected (false from the start of its drain).
    live: bool,
    /// Not yet told to stop.
    running: bool,
    sending: bool,
    /// It printed `joined` (its SIGTERM handler is in place from then on).
    joined: bool,
    next_n: u64,
    next_send: Instant,
    /// Peers it printed `peer-add` for (and no `peer-remove` since): key, when seen.
    peers: HashMap<String, Instant>,
    /// When it and the anchor both had each other (first time), for the join figure.
    met_anchor: Option<Duration>,
}

impl Chat {
    fn new(name: String, pk: String, proc: Proc, now: Instant) -> Chat {
        Chat {
            name,
            pk,
            proc: Some(proc),
            spawned: now,
            live: true,
            running: true,
            sending: true,
            joined: false,
            next_n: 0,
            next_send: now,
            peers: HashMap::new(),
            met_anchor: None,
        }
    }
}

/// What happened to chat lines.
#[derive(Debug, Default)]
struct Delivery {
    sent: u64,
    expected: u64,
    received_expected: u64,
    /// Arrived without being required: sent before both ends had each other, to or from a
    /// peer while it drained, or the unaccounted lines just before a crash.
    received_other: u64,
    in_flight_at_break: u64,
    lost: u64,
    duplicates: u64,
    out_of_order: u64,
    foreign: u64,
    /// Connections between two running peers that closed without the test causing it.
    breaks: Vec<String>,
    /// Of those, the ones replaced at once by a new connection between the same two (the
    /// networker prints `peer-remove` and then `peer-add` for the same key): two peers that
    /// dialled each other at the same time keep one connection.
    replaced: u64,
}

/// A `peer-add` for the same key within this of a `peer-remove` is a replacement.
const REPLACED_WITHIN: Duration = Duration::from_secs(2);

/// The chat peers and the bookkeeping of who must get which line.
#[derive(Debug, Default)]
struct Chats {
    all: Vec<Chat>,
    by_name: HashMap<String, usize>,
    /// The current incarnation for a key.
    by_pk: HashMap<String, usize>,
    /// (sender, receiver) -> line numbers expected and not yet arrived.
    pending: HashMap<(usize, usize), BTreeSet<u64>>,
    /// (sender, receiver) -> line numbers arrived, and the last one.
    arrived: HashMap<(usize, usize), (HashSet<u64>, u64)>,
    d: Delivery,
    /// Unplanned `peer-remove`s not yet classified: (who printed it, key, when, text).
    suspect: Vec<(usize, String, Instant, String)>,
    errors: Vec<String>,
}

impl Chats {
    fn add(&mut self, chat: Chat) -> usize {
        let i = self.all.len();
        self.by_name.insert(chat.name.clone(), i);
        self.by_pk.insert(chat.pk.clone(), i);
        self.all.push(chat);
        i
    }

    /// Whether `a` has `b` (its current incarnation) as a peer.
    fn has(&self, a: usize, b: usize) -> bool {
        let (a, b) = (&self.all[a], &self.all[b]);
        a.peers.get(&b.pk).is_some_and(|&at| at >= b.spawned)
    }

    fn connected(&self, a: usize, b: usize) -> bool {
        self.has(a, b) && self.has(b, a)
    }

    /// Writes line `n` to `x`'s stdin and records where it is expected.
    fn send(&mut self, x: usize, accounted: bool) {
        let n = self.all[x].next_n;
        self.all[x].next_n += 1;
        let line = format!("soak {} {n}", self.all[x].name);
        let Some(proc) = self.all[x].proc.as_ref() else {
            return;
        };
        if !proc.say(line) {
            self.errors
                .push(format!("{} does not read its stdin", self.all[x].name));
            return;
        }
        self.d.sent += 1;
        if !accounted || !self.all[x].live {
            return;
        }
        for y in 0..self.all.len() {
            if y != x && self.all[y].live && self.connected(x, y) {
                self.pending.entry((x, y)).or_default().insert(n);
                self.d.expected += 1;
            }
        }
    }

    /// A stdout line from chat `y`.
    fn on_line(&mut self, y: usize, line: &str, now: Instant) {
        if line.starts_with("joined ") {
            self.all[y].joined = true;
        } else if let Some(rest) = line.strip_prefix("peer-add ") {
            let pk = rest.split(' ').next().unwrap_or_default().to_string();
            self.all[y].peers.insert(pk.clone(), now);
            if let Some(i) = self.suspect.iter().position(|s| s.0 == y && s.1 == pk) {
                self.suspect.remove(i);
                self.d.replaced += 1;
            }
            // The join figure: a churner and the anchor (0) have each other.
            if let Some(&x) = self.by_pk.get(&pk) {
                for (c, other) in [(x, y), (y, x)] {
                    if other == 0 && self.all[c].met_anchor.is_none() && self.connected(c, 0) {
                        self.all[c].met_anchor = Some(now - self.all[c].spawned);
                    }
                }
            }
        } else if let Some(pk) = line.strip_prefix("peer-remove ") {
            let Some(&x) = self.by_pk.get(pk) else {
                self.all[y].peers.remove(pk);
                return;
            };
            let was = self.connected(x, y);
            self.all[y].peers.remove(pk);
            if was {
                let mut cut = 0;
                for pair in [(x, y), (y, x)] {
                    if let Some(p) = self.pending.remove(&pair) {
                        cut += p.len() as u64;
                    }
                }
                self.d.in_flight_at_break += cut;
                if self.all[x].running && self.all[y].running {
                    let what = format!(
                        "{} dropped {} ({cut} lines in flight)",
                        self.all[y].name, self.all[x].name
                    );
                    self.suspect.push((y, pk.to_string(), now, what));
                }
            }
        } else if let Some((pk, text)) = line.split_once(' ') {
            let mut words = text.split(' ');
            let (Some("soak"), Some(name), Some(n), None) =
                (words.next(), words.next(), words.next(), words.next())
            else {
                return; // joined, or another process's output format
            };
            let (Some(&x), Ok(n)) = (self.by_name.get(name), n.parse::<u64>()) else {
                self.d.foreign += 1;
                self.errors
                    .push(format!("{}: unknown line {line:?}", self.all[y].name));
                return;
            };
            if self.all[x].pk != pk {
                self.d.foreign += 1;
                self.errors.push(format!(
                    "{}: line from the wrong key: {line:?}",
                    self.all[y].name
                ));
                return;
            }
            let (seen, last) = self.arrived.entry((x, y)).or_default();
            if !seen.insert(n) {
                self.d.duplicates += 1;
                self.errors
                    .push(format!("{} got {name} {n} twice", self.all[y].name));
            } else if n < *last {
                self.d.out_of_order += 1;
                self.errors
                    .push(format!("{} got {name} {n} after {last}", self.all[y].name));
            }
            *last = (*last).max(n);
            if self.pending.get_mut(&(x, y)).is_some_and(|p| p.remove(&n)) {
                self.d.received_expected += 1;
            } else {
                self.d.received_other += 1;
            }
        }
    }

    /// Unplanned `peer-remove`s that no `peer-add` followed in time are breaks; `all`: every
    /// one still open (the end of the run).
    fn classify(&mut self, now: Instant, all: bool) {
        let (old, young): (Vec<_>, Vec<_>) = std::mem::take(&mut self.suspect)
            .into_iter()
            .partition(|s| all || now - s.2 > REPLACED_WITHIN);
        self.suspect = young;
        self.d.breaks.extend(old.into_iter().map(|s| s.3));
    }

    /// Lines still expected from or at `x`.
    fn pending_around(&self, x: usize) -> usize {
        self.pending
            .iter()
            .filter(|((a, b), _)| *a == x || *b == x)
            .map(|(_, p)| p.len())
            .sum()
    }

    /// Gives up on what is still expected from or at `x`: lost.
    fn lose_around(&mut self, x: usize) {
        let pairs: Vec<_> = self
            .pending
            .keys()
            .filter(|(a, b)| *a == x || *b == x)
            .copied()
            .collect();
        for (a, b) in pairs {
            let p = self.pending.remove(&(a, b)).unwrap_or_default();
            if !p.is_empty() {
                self.d.lost += p.len() as u64;
                self.errors.push(format!(
                    "lost: {} lines from {} to {}: {:?}",
                    p.len(),
                    self.all[a].name,
                    self.all[b].name,
                    p.iter().take(10).collect::<Vec<_>>()
                ));
            }
        }
    }
}

// ------------------------------------------------------------------------------ churn

#[derive(Debug)]
enum ChatSlot {
    Down {
        until: Instant,
    },
    Up {
        chat: usize,
        until: Instant,
    },
    Draining {
        chat: usize,
        deadline: Instant,
        crash: bool,
    },
    Leaving {
        chat: usize,
        since: Instant,
    },
}

#[derive(Debug)]
struct Download {
    dir: PathBuf,
    kills: u32,
    started: Instant,
    /// This run is to be killed once it transfers.
    kill: bool,
    /// When this run printed `peer-add` (on stderr).
    connected_at: Option<Instant>,
}

#[derive(Debug)]
enum GetSlot {
    Idle {
        until: Instant,
    },
    Running {
        job: Download,
        proc: Proc,
        kill_at: Option<Instant>,
        done: Option<String>,
    },
    Paused {
        job: Download,
        until: Instant,
    },
}

#[derive(Debug, Default)]
struct Counts {
    chat_starts: u64,
    chat_restarts: u64,
    chat_new_peers: u64,
    chat_leaves: u64,
    chat_crashes: u64,
    leave_max: Duration,
    gets_done: u64,
    gets_killed: u64,
    gets_resumed_done: u64,
    /// Resumed downloads that fetched less than the whole file (the store kept blocks).
    gets_resumed_partial: u64,
    get_max: Duration,
    bytes_fetched: u64,
    notable: u64,
    panics: u64,
}

/// Which process an event comes from.
#[derive(Debug, Clone, Copy)]
enum Role {
    Testnet,
    Seeder,
    Chat(usize),
    Get(usize),
}

/// The long-lived processes sampled, in table order.
const SAMPLED: [&str; 4] = ["testnet", "seeder", "anchor", "buddy"];

struct Soak {
    ns: String,
    boot: String,
    key: String,
    topic: String,
    dir: PathBuf,
    content: Vec<u8>,
    events_tx: mpsc::Sender<Event>,
    events: mpsc::Receiver<Event>,
    next_id: usize,
    roles: HashMap<usize, Role>,
    rng: Rng,
    testnet: Proc,
    /// None until it starts and after it stops.
    seeder: Option<Proc>,
    /// Keys the seeder printed `peer-add` for and no `peer-remove` since.
    seeder_peers: HashSet<String>,
    chats: Chats,
    chat_slots: Vec<ChatSlot>,
    /// Each chat slot's current identity seed.
    slot_seeds: Vec<String>,
    get_slots: Vec<GetSlot>,
    downloads: u64,
    /// How long a whole download's transfer takes (from its `peer-add`), a running average:
    /// where kills fall.
    transfer: Duration,
    counts: Counts,
    errors: Vec<String>,
}

impl std::fmt::Debug for Soak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Soak")
            .field("ns", &self.ns)
            .finish_non_exhaustive()
    }
}

fn net_args<'a>(storage: &'a str, boot: &'a str) -> Vec<&'a str> {
    vec![
        "--storage",
        storage,
        "--bootstrap",
        boot,
        "--host",
        "127.0.0.1",
    ]
}

fn public_key(seed: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_corenet"))
        .args(["--seed", seed, "keygen"])
        .output()
        .expect("corenet keygen");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    text.trim()
        .strip_prefix("public-key ")
        .expect("public-key line")
        .to_string()
}

impl Soak {
    fn spawn(&mut self, name: &str, role: Role, args: &[&str]) -> Proc {
        let id = self.next_id;
        self.next_id += 1;
        self.roles.insert(id, role);
        Proc::spawn(&self.ns, id, name, args, &self.events_tx)
    }

    fn spawn_chat(&mut self, name: String, seed: &str, now: Instant) -> usize {
        let pk = public_key(seed);
        let storage = self.dir.join(format!("chat-{name}"));
        let storage = storage.to_str().expect("utf-8").to_string();
        let boot = self.boot.clone();
        let mut args = net_args(&storage, &boot);
        let topic = self.topic.clone();
        args.extend(["--seed", seed, "chat", &topic]);
        let i = self.chats.all.len();
        let proc = self.spawn(&name, Role::Chat(i), &args);
        self.chats.add(Chat::new(name, pk, proc, now))
    }

    /// Waits (bounded) for a stdout line from `proc` starting with `prefix`, handling every
    /// other event meanwhile.
    fn await_line(&mut self, proc: usize, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ev = self
                .events
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("no line {prefix:?} from process {proc}: {e}"));
            let line = match &ev.output {
                Output::Line(l) if ev.proc == proc && l.starts_with(prefix) => Some(l.clone()),
                _ => None,
            };
            self.handle(ev, Instant::now());
            if let Some(line) = line {
                return line;
            }
        }
    }

    /// Handles every event that is ready, waiting at most `wait` for the first.
    fn pump(&mut self, wait: Duration) {
        let mut wait = wait;
        while let Ok(ev) = self.events.recv_timeout(wait) {
            self.handle(ev, Instant::now());
            wait = Duration::ZERO;
        }
    }

    fn handle(&mut self, ev: Event, now: Instant) {
        let role = self.roles.get(&ev.proc).copied();
        let line = match ev.output {
            Output::Notable(l) => {
                self.counts.notable += 1;
                if l.contains("panicked") {
                    self.counts.panics += 1;
                }
                if self.counts.notable <= 30 {
                    println!("stderr of process {} ({role:?}): {l}", ev.proc);
                }
                return;
            }
            Output::Line(l) => (l, false),
            Output::Stderr(l) => (l, true),
        };
        let (line, stderr) = line;
        match role {
            Some(Role::Chat(i)) => self.chats.on_line(i, &line, now),
            Some(Role::Seeder) => {
                if let Some(rest) = line.strip_prefix("peer-add ") {
                    self.seeder_peers
                        .insert(rest.split(' ').next().unwrap_or_default().into());
                } else if let Some(pk) = line.strip_prefix("peer-remove ") {
                    self.seeder_peers.remove(pk);
                }
            }
            Some(Role::Get(slot)) if stderr => {
                let GetSlot::Running { job, kill_at, .. } = &mut self.get_slots[slot] else {
                    return;
                };
                if line.starts_with("peer-add ") && job.connected_at.is_none() {
                    job.connected_at = Some(now);
                    if job.kill {
                        // Somewhere in the transfer (as long as the last whole ones took).
                        *kill_at = Some(now + self.rng.secs(0.0, self.transfer.as_secs_f64()));
                    }
                }
            }
            Some(_) if stderr => {}
            Some(Role::Get(slot)) => {
                if line.starts_with("done ") {
                    if let GetSlot::Running { done, .. } = &mut self.get_slots[slot] {
                        *done = Some(line);
                    }
                }
            }
            Some(Role::Testnet) | None => {}
        }
    }

    fn pids(&self) -> [u32; 4] {
        let chat = |i: usize| self.chats.all[i].proc.as_ref().map_or(0, Proc::pid);
        let seeder = self.seeder.as_ref().map_or(0, Proc::pid);
        [self.testnet.pid(), seeder, chat(0), chat(1)]
    }

    fn take_samples(&self) -> [Sample; 4] {
        self.pids()
            .map(|pid| sample(pid).unwrap_or_else(|| panic!("long-lived process {pid} is gone")))
    }

    // -------------------------------------------------------------- chat churn

    fn tick_chat_slot(&mut self, s: usize, now: Instant, churning: bool) {
        match self.chat_slots[s] {
            ChatSlot::Down { until } => {
                if churning && now >= until {
                    // A restart keeps the identity; sometimes a new peer takes the slot.
                    if self.counts.chat_starts >= CHAT_SLOTS as u64 && self.rng.chance(0.3) {
                        self.slot_seeds[s] = self.rng.seed_hex();
                        self.counts.chat_new_peers += 1;
                    } else if self.counts.chat_starts >= CHAT_SLOTS as u64 {
                        self.counts.chat_restarts += 1;
                    }
                    self.counts.chat_starts += 1;
                    let name = format!("c{s}.{}", self.counts.chat_starts);
                    let seed = self.slot_seeds[s].clone();
                    let chat = self.spawn_chat(name, &seed, now);
                    let until = now + self.rng.secs(5.0, 25.0);
                    self.chat_slots[s] = ChatSlot::Up { chat, until };
                }
            }
            ChatSlot::Up { chat, until } => {
                let c = &self.chats.all[chat];
                if !c.joined && now - c.spawned > JOIN_LIMIT {
                    let proc = c.proc.as_ref().expect("running");
                    self.errors.push(format!(
                        "{} did not print `joined` within {JOIN_LIMIT:?}\n{}",
                        c.name,
                        proc.tail()
                    ));
                } else if !c.joined {
                    return; // it stops once it has joined (and handles SIGTERM)
                }
                if now >= until || !churning {
                    let c = &mut self.chats.all[chat];
                    c.sending = false;
                    c.live = false;
                    let crash = churning && self.rng.chance(0.5);
                    self.chat_slots[s] = ChatSlot::Draining {
                        chat,
                        deadline: now + DRAIN_LIMIT,
                        crash,
                    };
                }
            }
            ChatSlot::Draining {
                chat,
                deadline,
                crash,
            } => {
                let drained = self.chats.pending_around(chat) == 0;
                if !drained && now < deadline {
                    return;
                }
                if !drained {
                    self.chats.lose_around(chat);
                }
                self.chats.all[chat].running = false;
                if crash {
                    // A few lines nobody waits for, then the crash: in flight or not.
                    for _ in 0..3 {
                        self.chats.send(chat, false);
                    }
                    self.counts.chat_crashes += 1;
                    let mut proc = self.chats.all[chat].proc.take().expect("running");
                    proc.crash();
                    self.chat_slots[s] = ChatSlot::Down {
                        until: now + self.rng.secs(1.0, 6.0),
                    };
                } else {
                    self.chats.all[chat]
                        .proc
                        .as_ref()
                        .expect("running")
                        .terminate();
                    self.chat_slots[s] = ChatSlot::Leaving { chat, since: now };
                }
            }
            ChatSlot::Leaving { chat, since } => {
                let proc = self.chats.all[chat].proc.as_mut().expect("running");
                match proc.exited() {
                    Some(status) => {
                        if !status.success() {
                            self.errors.push(format!(
                                "{} exited {status} after SIGTERM\n{}",
                                proc.name,
                                proc.tail()
                            ));
                        }
                        self.counts.chat_leaves += 1;
                        self.counts.leave_max = self.counts.leave_max.max(now - since);
                        self.chats.all[chat].proc = None;
                        self.chat_slots[s] = ChatSlot::Down {
                            until: now + self.rng.secs(1.0, 6.0),
                        };
                    }
                    None if now - since > EXIT_LIMIT => {
                        self.errors.push(format!(
                            "{} did not exit within {EXIT_LIMIT:?} of SIGTERM\n{}",
                            proc.name,
                            proc.tail()
                        ));
                        proc.crash();
                        self.chats.all[chat].proc = None;
                        self.chat_slots[s] = ChatSlot::Down { until: now };
                    }
                    None => {}
                }
            }
        }
    }

    // -------------------------------------------------------------- download churn

    fn start_get(&mut self, slot: usize, job: Download, now: Instant) {
        let storage = job.dir.join("storage");
        let out = job.dir.join("out.bin");
        let (storage, out) = (storage.to_str().unwrap(), out.to_str().unwrap());
        let boot = self.boot.clone();
        let mut args = net_args(storage, &boot);
        let key = self.key.clone();
        let limit = (GET_LIMIT.as_secs() - 10).to_string();
        args.extend(["get", &key, out, "--timeout", &limit]);
        let name = format!("get{}.{}", self.downloads, job.kills);
        let proc = self.spawn(&name, Role::Get(slot), &args);
        let kill = job.kills < MAX_KILLS && self.rng.chance(0.5);
        let job = Download {
            kill,
            connected_at: None,
            ..job
        };
        // Without a peer-add (a lookup that takes long), a kill still comes, later.
        let kill_at = kill.then(|| now + self.rng.secs(3.0, 10.0));
        self.get_slots[slot] = GetSlot::Running {
            job,
            proc,
            kill_at,
            done: None,
        };
    }

    fn tick_get_slot(&mut self, slot: usize, now: Instant, churning: bool) {
        let state = std::mem::replace(&mut self.get_slots[slot], GetSlot::Idle { until: now });
        match state {
            GetSlot::Idle { until } => {
                if churning && now >= until {
                    self.downloads += 1;
                    let dir = self.dir.join(format!("get{}", self.downloads));
                    std::fs::create_dir_all(&dir).unwrap();
                    let job = Download {
                        dir,
                        kills: 0,
                        started: now,
                        kill: false,
                        connected_at: None,
                    };
                    self.start_get(slot, job, now);
                } else {
                    self.get_slots[slot] = GetSlot::Idle { until };
                }
            }
            GetSlot::Paused { job, until } => {
                if now >= until {
                    self.start_get(slot, job, now);
                } else {
                    self.get_slots[slot] = GetSlot::Paused { job, until };
                }
            }
            GetSlot::Running {
                job,
                mut proc,
                kill_at,
                done,
            } => {
                if let Some(status) = proc.finished() {
                    self.finish_get(job, &proc, status, done.as_deref(), now);
                    self.get_slots[slot] = GetSlot::Idle {
                        until: now + self.rng.secs(0.2, 3.0),
                    };
                } else if kill_at.is_some_and(|t| now >= t)
                    && done.is_none()
                    && proc.exited().is_none()
                {
                    proc.crash();
                    self.counts.gets_killed += 1;
                    let job = Download {
                        kills: job.kills + 1,
                        ..job
                    };
                    let until = now + self.rng.secs(0.2, 2.0);
                    self.get_slots[slot] = GetSlot::Paused { job, until };
                } else if now - job.started > GET_LIMIT {
                    self.errors.push(format!(
                        "{} did not finish within {GET_LIMIT:?}\n{}",
                        proc.name,
                        proc.tail()
                    ));
                    proc.crash();
                    let _ = std::fs::remove_dir_all(&job.dir);
                } else {
                    self.get_slots[slot] = GetSlot::Running {
                        job,
                        proc,
                        kill_at,
                        done,
                    };
                }
            }
        }
    }

    fn finish_get(
        &mut self,
        job: Download,
        proc: &Proc,
        status: ExitStatus,
        done: Option<&str>,
        now: Instant,
    ) {
        let fail = |why: String| format!("{}: {why}\n{}", proc.name, proc.tail());
        let len = self.content.len();
        let blocks = len.div_ceil(64 * 1024);
        let prefix = format!("done {len} {blocks} fetched ");
        match done
            .and_then(|d| d.strip_prefix(&prefix))
            .map(str::parse::<usize>)
        {
            Some(Ok(fetched)) if status.success() && fetched <= len => {
                let out = std::fs::read(job.dir.join("out.bin")).unwrap_or_default();
                if out != self.content {
                    self.errors.push(fail(format!(
                        "wrote {} bytes that are not the file",
                        out.len()
                    )));
                } else if job.kills == 0 && fetched != len {
                    self.errors
                        .push(fail(format!("a fresh download fetched {fetched} of {len}")));
                } else {
                    self.counts.gets_done += 1;
                    self.counts.bytes_fetched += fetched as u64;
                    self.counts.get_max = self.counts.get_max.max(now - job.started);
                    if let (0, Some(c)) = (job.kills, job.connected_at) {
                        self.transfer = (self.transfer * 3 + (now - c)) / 4;
                    }
                    if job.kills > 0 {
                        self.counts.gets_resumed_done += 1;
                        if fetched < len {
                            self.counts.gets_resumed_partial += 1;
                        }
                    }
                }
            }
            _ => self
                .errors
                .push(fail(format!("exited {status} with {done:?}"))),
        }
        let _ = std::fs::remove_dir_all(&job.dir);
    }

    /// One round of the main loop: events, sends, churn.
    fn step(&mut self, churning: bool) {
        self.pump(Duration::from_millis(20));
        let now = Instant::now();
        self.chats.classify(now, false);
        for x in 0..self.chats.all.len() {
            let c = &self.chats.all[x];
            if c.sending && c.proc.is_some() && now >= c.next_send {
                self.chats.all[x].next_send = now + LINE_EVERY;
                self.chats.send(x, true);
            }
        }
        for s in 0..self.chat_slots.len() {
            self.tick_chat_slot(s, now, churning);
        }
        for s in 0..self.get_slots.len() {
            self.tick_get_slot(s, now, churning);
        }
    }

    fn quiet(&self) -> bool {
        self.chat_slots
            .iter()
            .all(|s| matches!(s, ChatSlot::Down { .. }))
            && self
                .get_slots
                .iter()
                .all(|s| matches!(s, GetSlot::Idle { .. }))
    }
}

// ------------------------------------------------------------------------------ report

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn row(t: Duration, s: &[Sample; 4], live_chats: usize, live_gets: usize) -> String {
    let mut r = format!("| {:>6.0} |", t.as_secs_f64());
    for x in s {
        let _ = write!(
            r,
            " {} / {} / {} / {} |",
            mib(x.rss_kib),
            x.fds,
            x.threads,
            x.udp
        );
    }
    let _ = write!(r, " {live_chats} / {live_gets} |");
    r
}

fn header() -> String {
    let mut h = String::from("| t (s) |");
    for n in SAMPLED {
        let _ = write!(h, " {n} RSS MiB / fds / threads / UDP |");
    }
    h.push_str(" churners up: chat / get |\n|");
    h.push_str(&" --- |".repeat(SAMPLED.len() + 2));
    h
}

/// Max of one figure over some samples.
fn max_of(samples: &[[Sample; 4]], p: usize, f: fn(&Sample) -> u64) -> u64 {
    samples.iter().map(|s| f(&s[p])).max().unwrap_or(0)
}

// ------------------------------------------------------------------------------ the test

#[test]
#[ignore = "a soak: needs root and minutes; run with --ignored (see the module docs)"]
fn soak() {
    if !is_root() {
        println!("soak: SKIPPED: needs root (network namespace and nftables); run it as root");
        return;
    }
    ensure_nft().unwrap_or_else(|e| panic!("soak: {e}"));
    let secs: u64 = env_or("CORENET_SOAK_SECS", 120);
    let loss: u8 = env_or("CORENET_SOAK_LOSS", 3);
    let size_mib: usize = env_or("CORENET_SOAK_MIB", 4);
    let seed: u64 = env_or(
        "CORENET_SOAK_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    let every = sample_every(secs);
    let warmup = Duration::from_secs((secs / 10).max(20)).min(Duration::from_secs(secs / 2));
    println!(
        "soak: {secs} s of churn, {loss}% UDP loss, {size_mib} MiB file, sample every {every:?}, \
         warm-up {warmup:?}, seed {seed} (CORENET_SOAK_SEED={seed} replays the schedule)"
    );

    let netns = Netns::create(loss).unwrap_or_else(|e| panic!("soak: cannot set up: {e}"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let file = dir.join("shared.bin");
    let content: Vec<u8> = (0..(size_mib * 1024 * 1024 + 4321) as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &content).unwrap();

    let (events_tx, events) = mpsc::channel();
    let ns = netns.name.clone();
    let testnet = Proc::spawn(
        &ns,
        0,
        "testnet",
        &["testnet", "--nodes", "3", "--port", "0"],
        &events_tx,
    );
    let mut soak = Soak {
        ns: ns.clone(),
        boot: String::new(),
        key: String::new(),
        topic: "corenet soak room".into(),
        dir: dir.clone(),
        content,
        events_tx: events_tx.clone(),
        events,
        next_id: 1,
        roles: HashMap::from([(0, Role::Testnet)]),
        rng: Rng(seed),
        testnet,
        seeder: None,
        seeder_peers: HashSet::new(),
        chats: Chats::default(),
        chat_slots: Vec::new(),
        slot_seeds: Vec::new(),
        get_slots: Vec::new(),
        downloads: 0,
        transfer: Duration::from_secs(1),
        counts: Counts::default(),
        errors: Vec::new(),
    };
    let boot = soak.await_line(0, "bootstrap ");
    soak.boot = boot["bootstrap ".len()..].to_string();
    soak.await_line(0, "ready");

    let storage = dir.join("seeder");
    let storage = storage.to_str().unwrap().to_string();
    let boot = soak.boot.clone();
    let mut args = net_args(&storage, &boot);
    args.extend(["share", file.to_str().unwrap()]);
    let seeder = soak.spawn("seeder", Role::Seeder, &args);
    let seeder_id = seeder.id;
    soak.seeder = Some(seeder);
    let seeder = seeder_id;
    soak.key = soak.await_line(seeder, "key ")["key ".len()..].to_string();
    soak.await_line(seeder, "announced ");

    let now = Instant::now();
    let anchor_seed = soak.rng.seed_hex();
    let buddy_seed = soak.rng.seed_hex();
    soak.spawn_chat("anchor".into(), &anchor_seed, now);
    soak.spawn_chat("buddy".into(), &buddy_seed, now);
    let connected_by = Instant::now() + Duration::from_secs(60);
    while !soak.chats.connected(0, 1) {
        assert!(
            Instant::now() < connected_by,
            "anchor and buddy did not connect"
        );
        soak.step(false);
    }
    // A few seconds of anchor-buddy traffic before the baseline.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        soak.step(false);
    }
    let base = soak.take_samples();
    println!("soak: ready; baseline taken; churn starts\n\n{}", header());
    println!("{}", row(Duration::ZERO, &base, 0, 0));

    for _ in 0..CHAT_SLOTS {
        let seed = soak.rng.seed_hex();
        soak.slot_seeds.push(seed);
        soak.chat_slots.push(ChatSlot::Down {
            until: Instant::now() + soak.rng.secs(0.0, 3.0),
        });
    }
    for _ in 0..GET_SLOTS {
        soak.get_slots.push(GetSlot::Idle {
            until: Instant::now() + soak.rng.secs(0.0, 3.0),
        });
    }

    // ---- churn
    let start = Instant::now();
    let churn_end = start + Duration::from_secs(secs);
    // (time, figures, chat churners up, downloads running)
    let mut samples: Vec<(Duration, [Sample; 4], usize, usize)> = Vec::new();
    let mut next_sample = start + every;
    while Instant::now() < churn_end {
        soak.step(true);
        if Instant::now() >= next_sample {
            next_sample += every;
            let s = soak.take_samples();
            let chats_up = soak
                .chat_slots
                .iter()
                .filter(|c| matches!(c, ChatSlot::Up { .. }))
                .count();
            let gets_up = soak
                .get_slots
                .iter()
                .filter(|g| matches!(g, GetSlot::Running { .. }))
                .count();
            println!("{}", row(start.elapsed(), &s, chats_up, gets_up));
            samples.push((start.elapsed(), s, chats_up, gets_up));
        }
    }

    // ---- wind down: churners drain and leave, downloads finish; then the anchor and buddy
    // stop sending and drain.
    let wind_down = Instant::now() + GET_LIMIT + DRAIN_LIMIT + EXIT_LIMIT;
    while !soak.quiet() {
        assert!(Instant::now() < wind_down, "the churners did not wind down");
        soak.step(false);
    }
    for x in [0, 1] {
        soak.chats.all[x].sending = false;
    }
    let drained_by = Instant::now() + DRAIN_LIMIT;
    while (soak.chats.pending_around(0) + soak.chats.pending_around(1)) > 0
        && Instant::now() < drained_by
    {
        soak.step(false);
    }
    soak.chats.lose_around(0);
    soak.chats.lose_around(1);

    // ---- settle: the departed peers' connections close (crashed ones by timeout).
    let settle_start = Instant::now();
    let buddy_pk = soak.chats.all[1].pk.clone();
    let anchor_pk = soak.chats.all[0].pk.clone();
    let settled = |s: &Soak| {
        s.seeder_peers.is_empty()
            && s.chats.all[0].peers.keys().all(|k| *k == buddy_pk)
            && s.chats.all[1].peers.keys().all(|k| *k == anchor_pk)
    };
    while !settled(&soak) && settle_start.elapsed() < SETTLE_LIMIT {
        soak.pump(Duration::from_millis(200));
    }
    let settle_time = settle_start.elapsed();
    if !settled(&soak) {
        soak.errors.push(format!(
            "connections still open {SETTLE_LIMIT:?} after the churn: seeder {:?}, anchor {:?}",
            soak.seeder_peers,
            soak.chats.all[0].peers.keys().collect::<Vec<_>>()
        ));
    }
    // Sockets and fds close right after the connection ends; give the runtime a moment.
    soak.pump(Duration::from_secs(3));
    let end = soak.take_samples();
    println!(
        "{}  (after the churn and {settle_time:.0?} of settling)",
        row(start.elapsed(), &end, 0, 0)
    );

    // ---- stop the long-lived processes (SIGTERM, exit 0).
    let mut stopping: Vec<Proc> = Vec::new();
    for i in [0, 1] {
        stopping.push(soak.chats.all[i].proc.take().expect("chat"));
    }
    stopping.push(soak.seeder.take().expect("seeder"));
    for p in &stopping {
        p.terminate();
    }
    let exit_by = Instant::now() + EXIT_LIMIT;
    for p in &mut stopping {
        while p.exited().is_none() && Instant::now() < exit_by {
            std::thread::sleep(Duration::from_millis(50)); // nothing to await but the exit
        }
        match p.exited() {
            Some(s) if s.success() => {}
            other => soak
                .errors
                .push(format!("{} after SIGTERM: {other:?}\n{}", p.name, p.tail())),
        }
    }

    // ---- report
    soak.chats.classify(Instant::now(), true);
    let d = &soak.chats.d;
    let c = &soak.counts;
    let chat_joins: Vec<Duration> = soak.chats.all[2..]
        .iter()
        .filter_map(|c| c.met_anchor)
        .collect();
    let join_max = chat_joins.iter().max().copied().unwrap_or_default();
    let mut sorted = chat_joins.clone();
    sorted.sort();
    let join_median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    println!("\nsoak summary (seed {seed}, {secs} s of churn, {loss}% UDP loss)\n");
    println!(
        "churn: {} chat starts ({} restarts with the same key, {} new keys), {} leaves \
         (SIGTERM, slowest exit {:.1?}), {} crashes (SIGKILL); chat peer to anchor: median \
         {join_median:.1?}, max {join_max:.1?} ({} of {} met it)",
        c.chat_starts,
        c.chat_restarts,
        c.chat_new_peers,
        c.chat_leaves,
        c.leave_max,
        c.chat_crashes,
        chat_joins.len(),
        soak.chats.all.len() - 2
    );
    println!(
        "downloads: {} complete and identical ({} after a kill -9 and resume, {} of those \
         fetching only the rest), {} kills, {:.1} MiB fetched, slowest {:.1?}",
        c.gets_done,
        c.gets_resumed_done,
        c.gets_resumed_partial,
        c.gets_killed,
        c.bytes_fetched as f64 / (1024.0 * 1024.0),
        c.get_max
    );
    println!(
        "chat lines: {} sent, {} required deliveries, {} arrived, {} lost, {} duplicates, {} \
         out of order; {} more arrived without being required; connections between running \
         peers closed without cause: {} replaced at once by a new one, {} dropped ({} required \
         lines were in flight on those)",
        d.sent,
        d.expected,
        d.received_expected,
        d.lost,
        d.duplicates,
        d.out_of_order,
        d.received_other,
        d.replaced,
        d.breaks.len(),
        d.in_flight_at_break,
    );
    for b in d.breaks.iter().take(20) {
        println!("  dropped: {b}");
    }
    println!(
        "stderr: {} warn/error lines, {} panics",
        c.notable, c.panics
    );

    // The series, about a dozen rows of it.
    println!("\n{}", header());
    println!(
        "{}",
        row(Duration::ZERO, &base, 0, 0).replace("|      0 |", "| before |")
    );
    let stride = samples.len().div_ceil(12).max(1);
    for (i, (t, s, chats_up, gets_up)) in samples.iter().enumerate() {
        if (i + 1) % stride == 0 {
            println!("{}", row(*t, s, *chats_up, *gets_up));
        }
    }
    println!("{}", row(start.elapsed(), &end, 0, 0));
    println!("(first row: before the churn; last: after it, once the connections were gone)");

    // Flatness: after the warm-up, the churn in thirds.
    let steady: Vec<[Sample; 4]> = samples
        .iter()
        .filter(|(t, ..)| *t >= warmup)
        .map(|(_, s, ..)| *s)
        .collect();
    assert!(steady.len() >= 6, "too few samples ({})", steady.len());
    let third = steady.len() / 3;
    let (first, last) = (&steady[..third], &steady[steady.len() - third..]);
    println!(
        "\n| process | figure | before churn | first third max | last third max | after \
         churn | limit (last third) |\n| --- | --- | --- | --- | --- | --- | --- |"
    );
    type Figure = (&'static str, fn(&Sample) -> u64);
    let figures: [Figure; 4] = [
        ("RSS MiB", |s| s.rss_kib),
        ("fds", |s| s.fds),
        ("threads", |s| s.threads),
        ("UDP sockets", |s| s.udp),
    ];
    for (p, name) in SAMPLED.iter().enumerate() {
        for (fi, (fname, f)) in figures.iter().enumerate() {
            let (a, b) = (max_of(first, p, *f), max_of(last, p, *f));
            let limit = match fi {
                0 => (a as f64 * LIMITS.rss_ratio) as u64 + LIMITS.rss_slack_kib,
                1 => a + LIMITS.fds,
                2 => a + LIMITS.threads,
                _ => a + LIMITS.udp,
            };
            let show = |v: u64| if fi == 0 { mib(v) } else { v.to_string() };
            println!(
                "| {name} | {fname} | {} | {} | {} | {} | {} |",
                show(f(&base[p])),
                show(a),
                show(b),
                show(f(&end[p])),
                show(limit)
            );
            if b > limit {
                soak.errors.push(format!(
                    "{name}: {fname} grew from {} (first third max) to {} (last third max), \
                     over the limit {}",
                    show(a),
                    show(b),
                    show(limit)
                ));
            }
        }
        // After the churn: as many fds and UDP sockets as before it.
        if end[p].udp > base[p].udp || end[p].fds > base[p].fds + 2 {
            soak.errors.push(format!(
                "{name}: {} fds and {} UDP sockets after the churn, {} and {} before",
                end[p].fds, end[p].udp, base[p].fds, base[p].udp
            ));
        }
    }

    let mut errors = soak.errors.clone();
    errors.extend(soak.chats.errors.iter().cloned());
    if c.panics > 0 {
        errors.push(format!("{} panics on stderr", c.panics));
    }
    if c.gets_done == 0 || soak.chats.d.received_expected == 0 {
        errors.push("no download or no chat line completed: the soak did not soak".into());
    }
    drop(soak);
    drop(netns);
    assert!(
        errors.is_empty(),
        "soak failed (seed {seed}):\n{}",
        errors.join("\n")
    );
}
