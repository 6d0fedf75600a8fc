//! Peer processes and the line protocol they speak.
//!
//! # The contract (JS `tests/interop/natlab-peer.js` and the `corenet` CLI)
//! A peer prints events one per line, on stdout or stderr (both are read), a lower-case
//! keyword first, keys in lower-case hex:
//! - server: `listening <key>` once announced, then `connection <remote key>` per connection;
//!   it echoes bytes.
//! - client: `connected <key> [<ms>]`, optionally `path <kind> <ms>`, `echo <ms>`; on failure
//!   `error <CODE> [<ms>]` (or the CLI's `error: <message>`) and a non-zero exit. The lab also
//!   writes `natlab ping` to the client's stdin and counts that line coming back on stdout as
//!   the echo (a CLI that pipes stdin to the connection).
//! - relay: `relay <key>`. DHT: `bootstrap <ip:port>` per node, then `ready`.
//! - Records kept as they are: `nat ...`, `node ...`, `stats <json>`.
//!
//! # Templates
//! A command line per role, split on whitespace after expanding the placeholders; a word that
//! expands to nothing is dropped: `{bootstrap}` (the first DHT node, `H:P`),
//! `{bootstrap_args}` (`--bootstrap H:P` per node), `{key}` (the server's key, client only),
//! `{relay}` (the relay's key), `{relay_args}` (`--relay-through <key>` when the topology has
//! a relay), `{corenet}` (the CLI binary), and for the DHT `{hosts}` (`--host <ip>` per DHT
//! address), `{host}` (the first), `{port}`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use crate::Error;

/// The JS peer, relative to the repository root.
pub const JS_PEER: &str = "node tests/interop/natlab-peer.js";
/// The line the lab writes to a client's stdin and expects back as the echo.
pub const PING_LINE: &str = "natlab ping";
/// How many lines a peer may have printed that the lab has not read yet; past that its
/// output pipe fills and the peer blocks on writing, which bounds memory.
const LINE_BUFFER: usize = 4096;
/// How long a stopped peer gets between SIGTERM and SIGKILL (long enough to print `stats`).
const STOP_GRACE: Duration = Duration::from_secs(3);

/// The command templates of the three peer roles and of the DHT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commands {
    /// The server.
    pub listen: String,
    /// The client.
    pub connect: String,
    /// The blind relay.
    pub relay: String,
}

impl Commands {
    /// The JS peers, hyperdht with default options.
    pub fn js() -> Commands {
        Commands {
            listen: format!("{JS_PEER} {{bootstrap_args}} {{relay_args}} listen"),
            connect: format!("{JS_PEER} {{bootstrap_args}} {{relay_args}} connect {{key}}"),
            relay: format!("{JS_PEER} {{bootstrap_args}} relay"),
        }
    }

    /// The `corenet` CLI (`{corenet}` is its path), each process with a fresh identity.
    pub fn rust() -> Commands {
        Commands {
            listen: "{corenet} --seed {seed} {bootstrap_args} listen --echo {relay_args}".into(),
            connect: "{corenet} --seed {seed} {bootstrap_args} connect {key} {relay_args}".into(),
            relay: "{corenet} --seed {seed} {bootstrap_args} relay".into(),
        }
    }

    /// The preset called `name` (`js` or `rust`).
    pub fn preset(name: &str) -> Option<Commands> {
        match name {
            "js" => Some(Commands::js()),
            "rust" => Some(Commands::rust()),
            _ => None,
        }
    }
}

/// The JS DHT: five hyperdht nodes `{ephemeral: false, firewalled: false}`, the first one
/// bootstrapping the others. `--walk-delay 20`: they answer FIND_NODE (the bootstrap walk)
/// after 20 ms, as a walk over a large DHT takes several round trips; without it the walk
/// ends before dht-rpc's quick PING_NAT answer is read and JS peers on open hosts stay
/// firewalled. hyperdht's own commands are answered at once.
pub const JS_DHT: &str =
    "node tests/interop/natlab-peer.js testnet {hosts} --port {port} --walk-delay 20";
/// The Rust DHT (`corenet testnet`).
pub const RUST_DHT: &str = "{corenet} --host {host} testnet --nodes 5 --port {port}";

/// The values the placeholders expand to.
#[derive(Debug, Clone, Default)]
pub struct Vars<'a> {
    /// The DHT's bootstrap nodes.
    pub bootstrap: &'a [SocketAddrV4],
    /// The server's public key (client only).
    pub key: Option<&'a str>,
    /// The blind relay's public key, when the topology has one.
    pub relay: Option<&'a str>,
    /// The `corenet` binary.
    pub corenet: &'a str,
    /// Where the DHT nodes bind (DHT only).
    pub dht_hosts: &'a [Ipv4Addr],
    /// The DHT nodes' port (DHT only).
    pub dht_port: u16,
}

impl Vars<'_> {
    /// `template` with its placeholders expanded, split into words.
    pub fn expand(&self, template: &str) -> Vec<String> {
        let mut out = Vec::new();
        for word in template.split_whitespace() {
            match word {
                "{bootstrap_args}" => {
                    for b in self.bootstrap {
                        out.push("--bootstrap".into());
                        out.push(b.to_string());
                    }
                }
                "{relay_args}" => {
                    if let Some(r) = self.relay {
                        out.push("--relay-through".into());
                        out.push(r.into());
                    }
                }
                "{seed}" => {
                    // A fresh identity per peer process (the CLI would otherwise share one
                    // kept under the user's data directory).
                    out.push(fresh_seed());
                }
                "{hosts}" => {
                    for h in self.dht_hosts {
                        out.push("--host".into());
                        out.push(h.to_string());
                    }
                }
                _ => {
                    let first = |v: Option<String>| v.unwrap_or_default();
                    let w = word
                        .replace(
                            "{bootstrap}",
                            &first(self.bootstrap.first().map(|b| b.to_string())),
                        )
                        .replace("{key}", self.key.unwrap_or(""))
                        .replace("{relay}", self.relay.unwrap_or(""))
                        .replace("{corenet}", self.corenet)
                        .replace(
                            "{host}",
                            &first(self.dht_hosts.first().map(|h| h.to_string())),
                        )
                        .replace("{port}", &self.dht_port.to_string());
                    if !w.is_empty() {
                        out.push(w);
                    }
                }
            }
        }
        out
    }
}

/// 32 random bytes in hex, from the OS (no dependency: /dev/urandom).
fn fresh_seed() -> String {
    use std::io::Read;
    let mut b = [0u8; 32];
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if ok.is_err() {
        // Unique enough for a lab run: time and pid.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b[..16].copy_from_slice(&t.to_le_bytes());
        b[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One line a peer printed.
#[derive(Debug, Clone)]
pub struct Line {
    /// Since the peer was started.
    pub at: Duration,
    /// Whether it came on stderr.
    pub stderr: bool,
    /// The line, without its newline.
    pub text: String,
}

/// A line of the protocol, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `listening <key>`.
    Listening(String),
    /// `relay <key>`.
    Relay(String),
    /// `connection <remote key> ...`.
    Connection(String),
    /// `connected <key> [<ms>]`.
    Connected {
        /// The remote key.
        key: String,
        /// Connect call to open, if the peer measured it.
        ms: Option<f64>,
    },
    /// `path <kind> [<ms>]`.
    Path {
        /// How the connection was made (`open`, `lan`, `consistent`, `random`, `relay`, ...).
        kind: String,
        /// When, if given.
        ms: Option<f64>,
    },
    /// `echo <ms>`, or the ping line echoed on stdout (`ms` is then the lab's clock).
    Echo(Option<f64>),
    /// `error <CODE> [<ms>]` or `error: <message>`.
    Error {
        /// The JS error code, or `ERROR` for a message.
        code: String,
        /// When, if given.
        ms: Option<f64>,
    },
    /// `nat <stage> local=<F> remote=<F>`: a holepunch's firewall classification.
    Nat {
        /// `analyze` or `punch`.
        stage: String,
        /// This peer's class of its own socket.
        local: String,
        /// Its class of the remote.
        remote: String,
    },
    /// `node ...`: the DHT node's own view (firewalled, randomized, address).
    Node(String),
    /// `stats <json>`.
    Stats(String),
    /// `bootstrap <ip:port>`.
    Bootstrap(SocketAddrV4),
    /// `ready`.
    Ready,
    /// Anything else.
    Other,
}

fn is_key(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Event {
    /// Parses one line; `stdout` tells whether it came on stdout (only there is the ping line
    /// an echo).
    pub fn parse(line: &str, stdout: bool) -> Event {
        let line = line.trim();
        if stdout && line == PING_LINE {
            return Event::Echo(None);
        }
        if let Some(msg) = line.strip_prefix("error:") {
            // The CLI ends a connect error with its JS code in parentheses.
            let code = msg
                .trim()
                .rsplit_once('(')
                .and_then(|(_, c)| c.strip_suffix(')'))
                .filter(|c| {
                    !c.is_empty() && c.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_')
                })
                .unwrap_or("ERROR");
            return Event::Error {
                code: code.into(),
                ms: None,
            };
        }
        let mut w = line.split_whitespace();
        let (Some(kw), a, b) = (w.next(), w.next(), w.next()) else {
            return Event::Other;
        };
        let ms = |s: Option<&str>| s.and_then(|s| s.parse::<f64>().ok());
        match (kw, a) {
            ("listening", Some(k)) if is_key(k) => Event::Listening(k.to_lowercase()),
            ("relay", Some(k)) if is_key(k) => Event::Relay(k.to_lowercase()),
            ("connection", Some(k)) if is_key(k) => Event::Connection(k.to_lowercase()),
            ("connected", Some(k)) if is_key(k) => Event::Connected {
                key: k.to_lowercase(),
                ms: ms(b),
            },
            ("path", Some(kind)) => Event::Path {
                kind: kind.into(),
                ms: ms(b),
            },
            ("echo", Some(t)) => Event::Echo(ms(Some(t))),
            ("error", Some(code)) => Event::Error {
                code: code.into(),
                ms: ms(b),
            },
            ("nat", Some(stage)) => {
                let field = |name: &str| {
                    line.split_whitespace()
                        .find_map(|x| x.strip_prefix(name))
                        .unwrap_or("?")
                        .to_string()
                };
                Event::Nat {
                    stage: stage.into(),
                    local: field("local="),
                    remote: field("remote="),
                }
            }
            ("node", Some(_)) => Event::Node(line["node".len()..].trim().into()),
            ("stats", Some(_)) => Event::Stats(line["stats".len()..].trim().into()),
            ("bootstrap", Some(a)) => a.parse().map(Event::Bootstrap).unwrap_or(Event::Other),
            ("ready", None) => Event::Ready,
            _ => Event::Other,
        }
    }
}

/// A peer process inside a namespace. Its output is read by two threads into a bounded
/// channel; everything read is kept for [`Peer::transcript`]. Dropping it stops it.
#[derive(Debug)]
pub struct Peer {
    /// `server`, `client`, `relay`, `dht`: for transcripts.
    name: String,
    /// The process (`ip netns exec` execs the peer, so this is the peer itself).
    child: Child,
    /// Kept open: the JS peers exit when stdin ends.
    stdin: Option<ChildStdin>,
    /// Lines from both reader threads.
    lines: Receiver<Line>,
    /// Every line read so far.
    log: Vec<Line>,
    /// When it was started, for [`Line::at`].
    started: Instant,
    /// Whether both output streams have ended.
    closed: bool,
}

impl Peer {
    /// Starts `argv` in namespace `ns`, from the repository root.
    pub fn spawn(name: &str, ns: &str, argv: &[String]) -> Result<Peer, Error> {
        if argv.is_empty() {
            return Err(Error::Peer(format!("{name}: empty command")));
        }
        let started = Instant::now();
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .current_dir(crate::repo_root())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Peer(format!("{name}: cannot start `{}`: {e}", argv.join(" "))))?;
        let (tx, rx) = sync_channel(LINE_BUFFER);
        if let Some(out) = child.stdout.take() {
            read_lines(out, false, started, tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            read_lines(err, true, started, tx);
        }
        Ok(Peer {
            name: name.into(),
            stdin: child.stdin.take(),
            child,
            lines: rx,
            log: Vec::new(),
            started,
            closed: false,
        })
    }

    /// When the peer was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Writes one line to the peer's stdin (ignored if it has closed it).
    pub fn write_line(&mut self, line: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{line}").and_then(|_| stdin.flush());
        }
    }

    /// Closes the peer's stdin: a client that pipes stdin to its connection (the CLI) ends
    /// the connection and exits, as the JS client does by itself after the echo.
    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// The process id (the peer itself: `ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`STOP`, `CONT`, `KILL`, ...) to the peer if it is still running;
    /// returns whether it was.
    pub fn signal(&mut self, signal: &str) -> bool {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return false;
        }
        Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Whether the peer has exited, and how (without waiting).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Reads lines until `f` returns `Some`, the deadline passes, or the peer's output ends.
    pub fn wait_for<T>(
        &mut self,
        deadline: Instant,
        mut f: impl FnMut(&Event) -> Option<T>,
    ) -> Option<T> {
        loop {
            let now = Instant::now();
            if now >= deadline || self.closed {
                return None;
            }
            match self.lines.recv_timeout(deadline - now) {
                Ok(line) => {
                    let event = Event::parse(&line.text, !line.stderr);
                    self.log.push(line);
                    if let Some(t) = f(&event) {
                        return Some(t);
                    }
                }
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => {
                    self.closed = true;
                    return None;
                }
            }
        }
    }

    /// Waits until the peer exits or `deadline`, reading its output meanwhile.
    pub fn wait_exit(&mut self, deadline: Instant) -> Option<std::process::ExitStatus> {
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Collect what it printed last (the threads end at EOF).
                self.wait_for(Instant::now() + Duration::from_millis(500), |_| None::<()>);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            let step = (Instant::now() + Duration::from_millis(50)).min(deadline);
            self.wait_for(step, |_| None::<()>);
            if self.closed {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// The events read so far, parsed.
    pub fn events(&self) -> impl Iterator<Item = (&Line, Event)> + '_ {
        self.log
            .iter()
            .map(|l| (l, Event::parse(&l.text, !l.stderr)))
    }

    /// Everything read so far, one `name +ms [err] line` per line.
    pub fn transcript(&self) -> String {
        self.log
            .iter()
            .map(|l| {
                format!(
                    "  {} +{:.0}ms{} {}",
                    self.name,
                    l.at.as_secs_f64() * 1e3,
                    if l.stderr { " [stderr]" } else { "" },
                    l.text
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The lines read so far.
    pub fn lines(&self) -> &[Line] {
        &self.log
    }

    /// SIGTERM, up to 3 s to exit (reading its last lines), then SIGKILL.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            self.wait_exit(Instant::now());
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if self.wait_exit(Instant::now() + STOP_GRACE).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        drop(self.stdin.take());
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_lines(
    stream: impl Read + Send + 'static,
    stderr: bool,
    started: Instant,
    tx: SyncSender<Line>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(text) = line else { break };
            if tx
                .send(Line {
                    at: started.elapsed(),
                    stderr,
                    text,
                })
                .is_err()
            {
                break;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = "637ab35f48d9d0868b90e3c25ba15b4f10904344bdbbba3588891b5d43f5bf62";

    #[test]
    fn parses_the_js_and_the_cli_lines() {
        assert_eq!(
            Event::parse(&format!("listening {K}"), true),
            Event::Listening(K.into())
        );
        assert_eq!(
            Event::parse(&format!("connected {K} 24.6"), true),
            Event::Connected {
                key: K.into(),
                ms: Some(24.6)
            }
        );
        assert_eq!(
            Event::parse(&format!("connected {K}"), false),
            Event::Connected {
                key: K.into(),
                ms: None
            }
        );
        assert_eq!(
            Event::parse("path holepunch 31", false),
            Event::Path {
                kind: "holepunch".into(),
                ms: Some(31.0)
            }
        );
        assert_eq!(
            Event::parse("error HOLEPUNCH_ABORTED 412.5", true),
            Event::Error {
                code: "HOLEPUNCH_ABORTED".into(),
                ms: Some(412.5)
            }
        );
        assert_eq!(
            Event::parse("error: DHT bootstrap timed out", false),
            Event::Error {
                code: "ERROR".into(),
                ms: None
            }
        );
        assert_eq!(
            Event::parse("nat punch local=CONSISTENT remote=RANDOM", true),
            Event::Nat {
                stage: "punch".into(),
                local: "CONSISTENT".into(),
                remote: "RANDOM".into()
            }
        );
        assert_eq!(
            Event::parse("bootstrap 44.0.0.11:49737", true),
            Event::Bootstrap("44.0.0.11:49737".parse().unwrap())
        );
        assert_eq!(Event::parse("ready", true), Event::Ready);
        assert_eq!(Event::parse(PING_LINE, true), Event::Echo(None));
        assert_eq!(Event::parse(PING_LINE, false), Event::Other);
        assert_eq!(Event::parse("listening nothex", true), Event::Other);
    }

    #[test]
    fn templates_expand_and_drop_empty_words() {
        let boot: Vec<SocketAddrV4> = vec![
            "44.0.0.11:49737".parse().unwrap(),
            "44.0.0.12:49737".parse().unwrap(),
        ];
        let v = Vars {
            bootstrap: &boot,
            key: Some(K),
            corenet: "target/debug/corenet",
            ..Default::default()
        };
        assert_eq!(
            v.expand(&Commands::js().connect),
            [
                "node",
                "tests/interop/natlab-peer.js",
                "--bootstrap",
                "44.0.0.11:49737",
                "--bootstrap",
                "44.0.0.12:49737",
                "connect",
                K
            ]
        );
        assert_eq!(
            v.expand("{corenet} --bootstrap {bootstrap} connect {key}"),
            [
                "target/debug/corenet",
                "--bootstrap",
                "44.0.0.11:49737",
                "connect",
                K
            ]
        );
        let with_relay = Vars {
            relay: Some(K),
            ..v.clone()
        };
        assert!(with_relay
            .expand(&Commands::js().listen)
            .windows(2)
            .any(|w| w == ["--relay-through", K]));
        let hosts = [Ipv4Addr::new(44, 0, 0, 11), Ipv4Addr::new(44, 0, 0, 12)];
        let d = Vars {
            dht_hosts: &hosts,
            dht_port: 49737,
            ..v
        };
        assert_eq!(
            d.expand(RUST_DHT)[..4],
            ["target/debug/corenet", "--host", "44.0.0.11", "testnet"]
        );
        assert_eq!(
            d.expand(JS_DHT)[3..8],
            ["--host", "44.0.0.11", "--host", "44.0.0.12", "--port"]
        );
    }
}
