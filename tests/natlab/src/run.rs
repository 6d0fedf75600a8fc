//! One run: build the sites, start the relay (if any), the server, the client, and record
//! what happened. Every wait is bounded; the sites are deleted before returning.

use std::time::{Duration, Instant};

use crate::fault::{Fault, Target, Watch};
use crate::lab::Lab;
use crate::peer::{Commands, Event, Peer, Vars, JS_DHT, PING_LINE};
use crate::topology::{Expect, Topology};

/// How long a server or relay may take to print `listening` / `relay` (bootstrap + announce).
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound on one connect, from starting the client process to its result. The JS
/// client gives up after 60 s itself; the slowest expected punch (random probes) is ~35 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(75);
/// How long after `connected` the echo may take (UDX retransmits after 1, 2, 4 s under loss).
pub const ECHO_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a finished client may take to exit by itself before it is stopped.
const EXIT_TIMEOUT: Duration = Duration::from_secs(3);

/// What the runs share: the peer commands and the lab conditions.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The server, client and relay command templates.
    pub commands: Commands,
    /// The DHT command template (see [`Lab::start_dht`]).
    pub dht_command: String,
    /// Expands `{corenet}` (default `target/debug/corenet`).
    pub corenet: String,
    /// Bound on one connect.
    pub connect_timeout: Duration,
    /// Percent UDP loss on each peer site's internet-facing interface.
    pub loss: u8,
    /// A fault to inject in every run (see [`crate::fault`]); the run is then judged by the
    /// fault's expectation instead of the topology's.
    pub fault: Option<Fault>,
}

impl RunConfig {
    /// JS DHT, no loss, [`DEFAULT_CONNECT_TIMEOUT`], and the given peers.
    pub fn new(commands: Commands) -> RunConfig {
        RunConfig {
            commands,
            dht_command: JS_DHT.into(),
            corenet: "target/debug/corenet".into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            loss: 0,
            fault: None,
        }
    }

    /// Placeholder values that do not depend on the run.
    pub fn vars_base(&self) -> Vars<'_> {
        Vars {
            corenet: &self.corenet,
            ..Default::default()
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The client printed `connected` and the echo came back.
    Connected,
    /// The client printed `connected` but no echo came back in time.
    NoEcho,
    /// The client printed `error` or exited without connecting.
    Failed,
    /// The client printed nothing decisive within the connect timeout.
    Timeout,
    /// The lab or a server/relay could not be set up; the run says nothing about the peers.
    Setup,
}

impl Outcome {
    /// Lower-case name for lines and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Connected => "connected",
            Outcome::NoEcho => "no-echo",
            Outcome::Failed => "failed",
            Outcome::Timeout => "timeout",
            Outcome::Setup => "setup-error",
        }
    }
}

/// The record of one run.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The topology's name.
    pub topology: String,
    /// Which combination ran it (`rust-js`, ...; see [`crate::combo`]), when the caller
    /// set one; empty otherwise.
    pub label: String,
    /// 1-based run number.
    pub run: usize,
    /// How it ended.
    pub outcome: Outcome,
    /// The client's error code (`Failed`), or the setup error's first line (`Setup`).
    pub code: Option<String>,
    /// Connect call to open (or to the error), as the client measured it; the lab's clock
    /// from client start when it printed no time (see `peer_timed`).
    pub ms: Option<f64>,
    /// Whether `ms` came from the peer (false: lab clock, includes process start and
    /// bootstrap).
    pub peer_timed: bool,
    /// Connect call to the first echoed byte, when known.
    pub echo_ms: Option<f64>,
    /// The client's `path` kind.
    pub path: Option<String>,
    /// The client's `nat` lines (`<stage> local=<F> remote=<F>`).
    pub client_nat: Vec<String>,
    /// The server's `nat` lines.
    pub server_nat: Vec<String>,
    /// The client's and server's `node` lines (their dht-rpc self view).
    pub client_node: Option<String>,
    /// See `client_node`.
    pub server_node: Option<String>,
    /// The client's `stats` JSON.
    pub client_stats: Option<String>,
    /// The server's `stats` JSON.
    pub server_stats: Option<String>,
    /// `connection` lines the server printed.
    pub server_connections: usize,
    /// Lab clock from starting the client process to its result.
    pub wall_ms: f64,
    /// Whether the client exited by itself (after its echo, or after its error) rather than
    /// being stopped by the lab.
    pub client_exited: bool,
    /// Processes still in the client's namespace after the client exited (pids).
    pub leftover: Vec<String>,
    /// The injected fault, and when it fired (lab clock from the client's start).
    pub fault: Option<Fault>,
    /// See `fault`; `None` when it never fired.
    pub fault_ms: Option<f64>,
    /// Whether this run met the topology's expectation.
    pub expected: bool,
    /// Every peer line of the run (for failures and the JSON record).
    pub transcript: String,
}

impl RunResult {
    fn new(topo: &Topology, run: usize) -> RunResult {
        RunResult {
            topology: topo.name.into(),
            label: String::new(),
            run,
            outcome: Outcome::Setup,
            code: None,
            ms: None,
            peer_timed: false,
            echo_ms: None,
            path: None,
            client_nat: Vec::new(),
            server_nat: Vec::new(),
            client_node: None,
            server_node: None,
            client_stats: None,
            server_stats: None,
            server_connections: 0,
            wall_ms: 0.0,
            client_exited: false,
            leftover: Vec::new(),
            fault: None,
            fault_ms: None,
            expected: false,
            transcript: String::new(),
        }
    }

    /// One line for the console.
    pub fn line(&self) -> String {
        let mut s = String::new();
        if !self.label.is_empty() {
            s += &format!("{:<20} ", self.label);
        }
        s += &format!(
            "{:<20} #{:<3} {:<11}",
            self.topology,
            self.run,
            self.outcome.as_str()
        );
        if let Some(ms) = self.ms {
            s += &format!(
                " {:>9.1} ms{}",
                ms,
                if self.peer_timed { "" } else { " (wall)" }
            );
        }
        if let Some(code) = &self.code {
            s += &format!(" {code}");
        }
        if let Some(p) = &self.path {
            s += &format!(" path={p}");
        }
        if let Some(e) = self.echo_ms {
            s += &format!(" echo={e:.1}ms");
        }
        let nat = |v: &[String]| {
            v.last()
                .map(|l| l.split_once(' ').map_or(l.as_str(), |x| x.1).to_string())
        };
        if let Some(n) = nat(&self.client_nat) {
            s += &format!(" client[{n}]");
        }
        if let Some(n) = nat(&self.server_nat) {
            s += &format!(" server[{n}]");
        }
        if let Some(f) = self.fault {
            match self.fault_ms {
                Some(ms) => s += &format!(" {}@{ms:.0}ms wall={:.0}ms", f.name(), self.wall_ms),
                None => s += &format!(" {}:never-fired", f.name()),
            }
            if self.client_exited && self.leftover.is_empty() {
                s += " client-exited-clean";
            }
        }
        if self.outcome != Outcome::Setup && !self.client_exited {
            s += " client-stopped";
        }
        if !self.leftover.is_empty() {
            s += &format!(" leftover-pids={}", self.leftover.join(","));
        }
        if !self.expected {
            s += "  UNEXPECTED";
        }
        s
    }
}

/// Whether a fault run `r` meets the fault's expectation (see [`crate::fault`]).
pub fn meets_fault(fault: Fault, r: &RunResult) -> bool {
    let (lo, hi) = fault.bound();
    let ms = Duration::from_secs_f64(r.wall_ms.max(0.0) / 1e3);
    r.fault_ms.is_some()
        && r.outcome == Outcome::Failed
        && r.code.as_deref().is_some_and(|c| fault.accepts(c))
        && ms >= lo
        && ms <= hi
        && r.client_exited
        && r.leftover.is_empty()
}

/// Whether `r` meets `expect` or does better: a topology expected to fail (random-random)
/// that connects anyway. The test group asserts this (the JS result or better).
pub fn meets_or_better(expect: Expect, r: &RunResult) -> bool {
    meets(expect, r) || r.outcome == Outcome::Connected
}

/// Whether `r` meets `expect`.
pub fn meets(expect: Expect, r: &RunResult) -> bool {
    match expect {
        Expect::Connect => r.outcome == Outcome::Connected,
        Expect::Fail(codes) => {
            r.outcome == Outcome::Failed && r.code.as_deref().is_some_and(|c| codes.contains(&c))
        }
    }
}

/// Runs `topo` once in `lab` (whose DHT must be started).
pub fn run_once(lab: &mut Lab, topo: &Topology, cfg: &RunConfig, run: usize) -> RunResult {
    let mut r = RunResult::new(topo, run);
    let sites = match lab.build(topo, cfg.loss) {
        Ok(s) => s,
        Err(e) => {
            r.code = Some(e.to_string());
            return r;
        }
    };
    let bootstrap = lab.bootstrap().to_vec();
    let base = Vars {
        bootstrap: &bootstrap,
        ..cfg.vars_base()
    };
    let mut transcript = Vec::new();

    // The relay, if any.
    let mut relay_peer = None;
    let mut relay_key = None;
    if let Some(host) = &sites.relay {
        match start_and_wait(&cfg.commands.relay, "relay", &host.ns, &base, |e| match e {
            Event::Relay(k) => Some(k.clone()),
            _ => None,
        }) {
            Ok((p, k)) => {
                relay_peer = Some(p);
                relay_key = Some(k);
            }
            Err(t) => {
                r.code = Some("relay did not start".into());
                r.transcript = t;
                lab.teardown(sites);
                return r;
            }
        }
    }
    let base = Vars {
        relay: relay_key.as_deref(),
        ..base
    };

    // The server.
    let (mut server, key) = match start_and_wait(
        &cfg.commands.listen,
        "server",
        &sites.server.ns,
        &base,
        |e| match e {
            Event::Listening(k) => Some(k.clone()),
            _ => None,
        },
    ) {
        Ok(x) => x,
        Err(t) => {
            r.code = Some("server did not print `listening`".into());
            r.transcript = t;
            drop(relay_peer);
            lab.teardown(sites);
            return r;
        }
    };

    // The client.
    let vars = Vars {
        key: Some(&key),
        ..base
    };
    let argv = vars.expand(&cfg.commands.connect);
    r.fault = cfg.fault;
    let mut watch = None;
    if let Some(f) = cfg.fault {
        let armed = match (f.target(), &sites.relay, &relay_peer) {
            (Target::Relay, Some(host), Some(p)) => Watch::arm(
                &host.wan_ns,
                &if f == Fault::RelayUnpaired {
                    vec![sites.server.public]
                } else {
                    vec![sites.server.public, sites.client.public]
                },
                f.trigger(),
                p.pid(),
                f.signal(),
            ),
            (Target::Server, _, _) => Watch::arm(
                &sites.server.wan_ns,
                &[sites.client.public],
                f.trigger(),
                server.pid(),
                f.signal(),
            ),
            _ => Err(crate::Error::Setup(format!(
                "fault {} needs a topology with a relay",
                f.name()
            ))),
        };
        match armed {
            Ok(w) => watch = Some(w),
            Err(e) => {
                r.code = Some(e.to_string());
                server.stop();
                drop(relay_peer);
                lab.teardown(sites);
                return r;
            }
        }
    }
    match Peer::spawn("client", &sites.client.ns, &argv) {
        Err(e) => r.code = Some(e.to_string()),
        Ok(mut client) => {
            client.write_line(PING_LINE);
            drive_client(&mut client, cfg, &mut r);
            r.client_exited = client.exited().is_some();
            if r.client_exited {
                r.leftover = crate::cmd::run("ip", &["netns", "pids", &sites.client.ns])
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
            }
            if let Some(w) = watch.take() {
                r.fault_ms = w
                    .finish()
                    .map(|t| t.saturating_duration_since(client.started()).as_secs_f64() * 1e3);
            }
            client.stop();
            collect(&client, &mut r, true);
            transcript.push(client.transcript());
        }
    }
    drop(watch);
    if cfg.fault == Some(Fault::RelayStop) {
        if let Some(p) = relay_peer.as_mut() {
            p.signal("CONT");
        }
    }
    server.stop();
    collect(&server, &mut r, false);
    transcript.insert(0, server.transcript());
    if let Some(mut p) = relay_peer {
        p.stop();
        transcript.insert(0, p.transcript());
    }
    lab.teardown(sites);
    r.transcript = transcript.join("\n");
    r.expected = match cfg.fault {
        Some(f) => meets_fault(f, &r),
        None => meets(topo.expect, &r),
    };
    r
}

/// Starts a server or relay and waits for its ready line; on failure returns its transcript.
fn start_and_wait<T>(
    template: &str,
    name: &str,
    ns: &str,
    vars: &Vars<'_>,
    ready: impl FnMut(&Event) -> Option<T>,
) -> Result<(Peer, T), String> {
    let argv = vars.expand(template);
    let mut peer = Peer::spawn(name, ns, &argv).map_err(|e| e.to_string())?;
    match peer.wait_for(Instant::now() + LISTEN_TIMEOUT, ready) {
        Some(t) => Ok((peer, t)),
        None => {
            peer.stop();
            Err(format!(
                "{name} `{}`:\n{}",
                argv.join(" "),
                peer.transcript()
            ))
        }
    }
}

/// Waits for the client's result, then for its echo and exit.
fn drive_client(client: &mut Peer, cfg: &RunConfig, r: &mut RunResult) {
    let deadline = client.started() + cfg.connect_timeout;
    let wall = |p: &Peer| p.started().elapsed().as_secs_f64() * 1e3;
    let result = client.wait_for(deadline, |e| match e {
        Event::Connected { ms, .. } => Some(Ok(*ms)),
        Event::Error { code, ms } => Some(Err((code.clone(), *ms))),
        _ => None,
    });
    r.wall_ms = wall(client);
    match result {
        Some(Ok(ms)) => {
            r.outcome = Outcome::NoEcho;
            r.ms = ms;
            let echo = client.wait_for(Instant::now() + ECHO_TIMEOUT, |e| match e {
                Event::Echo(ms) => Some(*ms),
                _ => None,
            });
            if let Some(ms) = echo {
                r.outcome = Outcome::Connected;
                r.echo_ms = ms;
            }
            // Done with the connection: a CLI client that pipes stdin exits on its end.
            client.close_stdin();
        }
        Some(Err((code, ms))) => {
            r.outcome = Outcome::Failed;
            r.code = Some(code);
            r.ms = ms;
        }
        None => {
            if client.wait_exit(Instant::now()).is_some() {
                r.outcome = Outcome::Failed;
                r.code = Some("EXITED".into());
            } else {
                r.outcome = Outcome::Timeout;
                r.code = Some("TIMEOUT".into());
            }
        }
    }
    r.peer_timed = r.ms.is_some();
    if r.ms.is_none() && r.outcome != Outcome::Timeout {
        r.ms = Some(r.wall_ms);
    }
    client.wait_exit(Instant::now() + EXIT_TIMEOUT);
}

/// Copies a peer's records (path, nat, node, stats, connections) into `r`.
fn collect(peer: &Peer, r: &mut RunResult, is_client: bool) {
    // For a client that echoes through stdin/stdout (the CLI), the lab's clock between its
    // `connected` line and the ping line coming back, added to its connect time.
    let mut connected_at = None;
    let mut ping_back_at = None;
    for (line, e) in peer.events() {
        match e {
            Event::Connected { .. } if is_client => connected_at = connected_at.or(Some(line.at)),
            Event::Echo(None) if is_client => ping_back_at = ping_back_at.or(Some(line.at)),
            _ => {}
        }
        match e {
            Event::Path { kind, ms } if is_client => {
                r.path = Some(kind);
                if r.ms.is_none() || !r.peer_timed {
                    if let Some(ms) = ms {
                        r.ms = Some(ms);
                        r.peer_timed = true;
                    }
                }
            }
            Event::Echo(Some(ms)) if is_client => r.echo_ms = Some(ms),
            Event::Nat {
                stage,
                local,
                remote,
            } => {
                let line = format!("{stage} local={local} remote={remote}");
                let v = if is_client {
                    &mut r.client_nat
                } else {
                    &mut r.server_nat
                };
                if !v.contains(&line) {
                    v.push(line);
                }
            }
            Event::Node(n) => {
                *(if is_client {
                    &mut r.client_node
                } else {
                    &mut r.server_node
                }) = Some(n)
            }
            Event::Stats(s) => {
                *(if is_client {
                    &mut r.client_stats
                } else {
                    &mut r.server_stats
                }) = Some(s)
            }
            Event::Connection(_) if !is_client => r.server_connections += 1,
            _ => {}
        }
    }
    if let (None, Some(ms), Some(c), Some(e)) = (r.echo_ms, r.ms, connected_at, ping_back_at) {
        if r.outcome == Outcome::Connected && r.peer_timed {
            r.echo_ms = Some(ms + e.saturating_sub(c).as_secs_f64() * 1e3);
        }
    }
}
