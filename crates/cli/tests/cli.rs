//! The `corenet` binary end to end on a local testnet it runs itself: `share` / `get` of a
//! file over the swarm (and a second `get` that fetches nothing, since the store kept every
//! block), `chat` lines between two processes, and `demo`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

/// A running `corenet` with its stdout lines on a channel; killed on drop.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_corenet"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run corenet");
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
        }
    }

    /// The first line starting with `prefix` (earlier lines are skipped).
    fn line(&self, prefix: &str) -> String {
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

    fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write stdin");
        stdin.flush().expect("flush stdin");
    }

    /// Waits (bounded) for the exit status.
    fn wait(&mut self) -> std::process::ExitStatus {
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

fn testnet() -> (Proc, String) {
    let t = Proc::spawn(&["testnet", "--nodes", "3", "--port", "0"]);
    let boot = t.line("bootstrap ")["bootstrap ".len()..].to_string();
    t.line("ready");
    (t, boot)
}

fn net_args<'a>(storage: &'a Path, boot: &'a str) -> Vec<&'a str> {
    vec![
        "--storage",
        storage.to_str().expect("utf-8 path"),
        "--bootstrap",
        boot,
        "--host",
        "127.0.0.1",
    ]
}

#[test]
fn share_and_get_a_file_over_the_swarm() {
    let (_testnet, boot) = testnet();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.bin");
    // Three and a half 64 KiB blocks... times 12, with a short last block.
    let content: Vec<u8> = (0..(3 * 1024 * 1024 + 12_345u32))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &content).unwrap();

    let (s1, s2) = (dir.path().join("sharer"), dir.path().join("getter"));
    let mut args = net_args(&s1, &boot);
    args.extend(["share", file.to_str().unwrap()]);
    let sharer = Proc::spawn(&args);
    let key = sharer.line("key ")["key ".len()..].to_string();
    assert_eq!(key.len(), 64);
    sharer.line("announced ");

    let out = dir.path().join("copy.bin");
    let mut args = net_args(&s2, &boot);
    args.extend(["get", &key, out.to_str().unwrap(), "--timeout", "60"]);
    let mut getter = Proc::spawn(&args);
    let done = getter.line("done ");
    assert!(getter.wait().success());
    let blocks = content.len().div_ceil(64 * 1024);
    assert_eq!(
        done,
        format!("done {} {blocks} fetched {}", content.len(), content.len())
    );
    assert_eq!(std::fs::read(&out).unwrap(), content);
    sharer.line("peer-add ");

    // The getter's store kept every block: a second get fetches nothing.
    let out2 = dir.path().join("copy2.bin");
    let mut args = net_args(&s2, &boot);
    args.extend(["get", &key, out2.to_str().unwrap(), "--timeout", "60"]);
    let mut again = Proc::spawn(&args);
    let done = again.line("done ");
    assert!(again.wait().success());
    assert_eq!(done, format!("done {} {blocks} fetched 0", content.len()));
    assert_eq!(std::fs::read(&out2).unwrap(), content);

    // Sharing the same path again serves the same key.
    drop(sharer);
    let mut args = net_args(&s1, &boot);
    args.extend(["share", file.to_str().unwrap()]);
    let sharer = Proc::spawn(&args);
    assert_eq!(sharer.line("key ")["key ".len()..], key);
}

#[test]
fn chat_between_two_processes() {
    let (_testnet, boot) = testnet();
    let dir = tempfile::tempdir().unwrap();
    let (s1, s2) = (dir.path().join("a"), dir.path().join("b"));
    let mut args = net_args(&s1, &boot);
    args.extend(["chat", "corenet cli test room"]);
    let mut a = Proc::spawn(&args);
    a.line("joined ");
    let mut args = net_args(&s2, &boot);
    args.extend(["chat", "corenet cli test room"]);
    let mut b = Proc::spawn(&args);
    b.line("joined ");
    let a_key = b.line("peer-add ").split(' ').nth(1).unwrap().to_string();
    let b_key = a.line("peer-add ").split(' ').nth(1).unwrap().to_string();

    a.say("hello from a");
    assert_eq!(b.line(&a_key), format!("{a_key} hello from a"));
    b.say("and back\u{7}from b");
    let got = a.line(&b_key);
    assert!(
        got.ends_with(" and back from b"),
        "control characters are blanked: {got}"
    );
}

#[test]
fn demo_runs() {
    let mut demo = Proc::spawn(&["demo", "--size", "4"]);
    demo.line("bob replicated 4 MiB");
    demo.line("bob got a chat line from alice");
    demo.line("done in ");
    assert!(demo.wait().success());
}
