//! Helpers for the tests that run the `corenet` binary.

#![allow(dead_code)] // each test binary uses a part

pub(crate) mod hostile;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// A running `corenet` with its stdout lines on a channel; killed on drop.
pub(crate) struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// stderr lines (also copied to the test's stderr).
    err_lines: mpsc::Receiver<String>,
}

impl Proc {
    pub(crate) fn spawn(args: &[&str]) -> Proc {
        Self::spawn_program(env!("CARGO_BIN_EXE_corenet"), args)
    }

    /// Runs `program` (a wrapper such as `prlimit` that execs `corenet`).
    pub(crate) fn spawn_program(program: &str, args: &[&str]) -> Proc {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run corenet");
        let stderr = child.stderr.take().expect("stderr");
        let (etx, err_lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("{line}");
                let _ = etx.send(line);
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Proc {
            child,
            stdin,
            lines,
            err_lines,
        }
    }

    /// The first stderr line starting with `prefix` (earlier ones are skipped).
    pub(crate) fn err_line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.err_lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => {}
                Err(e) => panic!("no stderr line starting with {prefix:?}: {e}"),
            }
        }
    }

    /// The first line starting with `prefix` (earlier lines are skipped).
    pub(crate) fn line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => {}
                Err(e) => panic!("no line starting with {prefix:?}: {e}"),
            }
        }
    }

    pub(crate) fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write stdin");
        stdin.flush().expect("flush stdin");
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited.
    pub(crate) fn try_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("wait")
    }

    /// Waits (bounded) for the exit status.
    pub(crate) fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(Instant::now() < deadline, "corenet did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn testnet() -> (Proc, String) {
    testnet_with(&[])
}

/// A testnet whose nodes answer no reachability check: every peer stays firewalled, as
/// behind NATs.
pub(crate) fn testnet_behind_nats() -> (Proc, String) {
    testnet_with(&["--behind-nat"])
}

fn testnet_with(extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["testnet", "--nodes", "3", "--port", "0"];
    args.extend_from_slice(extra);
    let t = Proc::spawn(&args);
    let boot = t.line("bootstrap ")["bootstrap ".len()..].to_string();
    t.line("ready");
    (t, boot)
}

pub(crate) fn net_args<'a>(storage: &'a Path, boot: &'a str) -> Vec<&'a str> {
    vec![
        "--storage",
        storage.to_str().expect("utf-8 path"),
        "--bootstrap",
        boot,
        "--host",
        "127.0.0.1",
    ]
}

/// Resident memory of process `pid` in KiB (`VmRSS`).
pub(crate) fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Open file descriptors of process `pid`.
pub(crate) fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The local IPv4 UDP ports that process `pid` has bound (from its socket descriptors and
/// `/proc/<pid>/net/udp`).
pub(crate) fn udp_ports(pid: u32) -> Vec<u16> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("proc fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/udp")).expect("proc net udp");
    let mut ports: Vec<u16> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let inode = cols.get(9)?;
            if !inodes.contains(*inode) {
                return None;
            }
            let port = cols.get(1)?.split(':').nth(1)?;
            u16::from_str_radix(port, 16).ok()
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}
