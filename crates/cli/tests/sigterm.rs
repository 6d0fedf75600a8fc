//! A `corenet chat` told to stop (SIGTERM) exits promptly and with 0 even though its stdin
//! stays open: the runtime must not wait for the blocked read of stdin (found by the soak,
//! where no chat peer ever left).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{net_args, testnet, WAIT};

#[test]
fn chat_exits_on_sigterm_with_stdin_open() {
    let (_testnet, boot) = testnet();
    let dir = tempfile::tempdir().unwrap();
    let mut args = net_args(dir.path(), &boot);
    args.extend(["chat", "corenet sigterm test room"]);
    let mut chat = Command::new(env!("CARGO_BIN_EXE_corenet"))
        .args(&args)
        .stdin(Stdio::piped()) // held open until the end of the test
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = chat.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // From `joined` on, the command handles SIGTERM.
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).expect("no `joined` line");
        if line.starts_with("joined ") {
            break;
        }
    }
    let status = Command::new("kill")
        .args(["-TERM", &chat.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let sent = Instant::now();
    let status = loop {
        if let Some(s) = chat.try_wait().unwrap() {
            break s;
        }
        if sent.elapsed() > Duration::from_secs(10) {
            let _ = chat.kill();
            let _ = chat.wait();
            panic!("chat did not exit within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20)); // nothing to await but the exit
    };
    assert!(status.success(), "chat exited {status} after SIGTERM");
    drop(chat.stdin.take());
}
