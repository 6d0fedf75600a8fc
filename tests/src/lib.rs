//! Helpers for corenet's cross-crate and JS interop tests.
//!
//! The JS side lives in `tests/interop` (its own `package.json` and lockfile, installed with
//! `npm ci`). Tests start real JS peers as child processes that print one JSON object per
//! line on stdout; [`JsPeer`] reads those events with a bounded wait and kills the process on
//! drop. A missing `node_modules` is a hard failure with instructions, never a skipped test.

pub mod tmpfs;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The `tests/interop` directory.
pub fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// The golden vectors directory, `tests/vectors`.
pub fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vectors")
}

/// Panics with instructions unless the JS harness is installed.
pub fn require_js() {
    let nm = interop_dir().join("node_modules");
    assert!(
        nm.join("@hyperswarm/secret-stream").exists(),
        "the JS interop harness is not installed: run `npm ci --prefix tests/interop` (the \
         README's test command does this)"
    );
}

/// Deterministic test payload: byte `i` is `(i * 31 + salt) & 255`, as the JS scripts make it.
pub fn pattern(len: usize, salt: u8, offset: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((offset + i) as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

/// A JS peer process started from `tests/interop`.
#[derive(Debug)]
pub struct JsPeer {
    /// The node process (killed on drop).
    child: Child,
    /// Its stdout, one JSON event per line.
    lines: Lines<BufReader<ChildStdout>>,
    /// Its stdin, for scripts that take commands ([`JsPeer::spawn_interactive`]).
    stdin: Option<ChildStdin>,
    /// The process's `TMPDIR`: whatever the script leaves there (it is killed, not asked to
    /// clean up) goes when the peer is dropped. Declared after `child`, so removed after the
    /// kill.
    _tmp: Option<tempfile::TempDir>,
}

impl JsPeer {
    /// Starts `node <script> <args...>` in `tests/interop`.
    pub fn spawn(script: &str, args: &[&str]) -> Self {
        Self::start(script, args, false)
    }

    /// Starts `node <script> <args...>` with a pipe to its stdin, for scripts that read
    /// commands (one JSON object per line, see [`JsPeer::command`]).
    pub fn spawn_interactive(script: &str, args: &[&str]) -> Self {
        Self::start(script, args, true)
    }

    fn start(script: &str, args: &[&str], interactive: bool) -> Self {
        require_js();
        let tmp = tempfile::Builder::new()
            .prefix("corenet-js-")
            .tempdir()
            .ok();
        let mut cmd = Command::new("node");
        if let Some(t) = &tmp {
            cmd.env("TMPDIR", t.path());
        }
        let mut child = cmd
            .arg(script)
            .args(args)
            .current_dir(interop_dir())
            .stdin(if interactive {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start node (is Node.js installed?)");
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        JsPeer {
            child,
            lines: BufReader::new(stdout).lines(),
            stdin,
            _tmp: tmp,
        }
    }

    /// Sends one command line (a JSON value) to an interactive peer.
    pub async fn command(&mut self, command: serde_json::Value) {
        let stdin = self
            .stdin
            .as_mut()
            .expect("the JS peer was not started with spawn_interactive");
        let mut line = command.to_string();
        line.push('\n');
        stdin
            .write_all(line.as_bytes())
            .await
            .expect("writing a command to the JS peer");
        stdin.flush().await.expect("flushing the JS peer's stdin");
    }

    /// The next event, waiting at most `wait`; panics on timeout or exit.
    pub async fn next_event(&mut self, wait: Duration) -> serde_json::Value {
        let line = tokio::time::timeout(wait, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("JS peer printed nothing for {wait:?}"))
            .expect("reading the JS peer's stdout")
            .expect("the JS peer exited");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad event line {line:?}: {e}"))
    }

    /// Skips events until one named `name` (field `event`) arrives; panics on an `error`
    /// event unless that is what was asked for.
    pub async fn expect(&mut self, name: &str, wait: Duration) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let ev = self.next_event(left).await;
            let kind = ev["event"].as_str().unwrap_or_default();
            if kind == name {
                return ev;
            }
            assert!(
                kind != "error",
                "JS peer reported an error while waiting for {name}: {ev}"
            );
        }
    }

    /// Sends a JSON command to an interactive peer and waits for the event named `reply`.
    pub async fn request(
        &mut self,
        cmd: serde_json::Value,
        reply: &str,
        wait: Duration,
    ) -> serde_json::Value {
        self.command(cmd).await;
        self.expect(reply, wait).await
    }

    /// Waits for the process to exit (bounded) and returns its exit code.
    pub async fn wait(&mut self, wait: Duration) -> Option<i32> {
        tokio::time::timeout(wait, self.child.wait())
            .await
            .expect("JS peer did not exit in time")
            .expect("waiting for the JS peer")
            .code()
    }
}

/// A Rust DHT node on 127.0.0.1 that behaves as if behind a NAT: its quick reachability check
/// is off (it stays firewalled) and the LAN shortcut is off (same-host peers would take it).
/// On a [`corenet_dht::Testnet::behind_nats`], where no peer passes a reachability check,
/// its connections to and from default-option JS peers go through the holepunch.
pub async fn natted_dht(bootstrap: Vec<std::net::SocketAddrV4>) -> corenet_dht::Dht {
    let d = corenet_dht::Dht::spawn(
        corenet_dht::DhtConfig::default()
            .with_host(std::net::Ipv4Addr::LOCALHOST)
            .with_bootstrap(bootstrap)
            .with_quick_firewall(false)
            .with_lan(false),
    )
    .await
    .expect("a DHT node");
    d.bootstrapped().await.expect("bootstrapped");
    d
}
