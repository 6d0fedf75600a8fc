//! Crash consistency of [`DiskStorage`] under `kill -9`: a writer process appends (and now
//! and then truncates) a core on disk and prints `crash-kill-ack <n>` once its `n`th
//! operation returned, which with [`SyncPolicy::Always`] means it was `fdatasync`ed. The
//! test kills it with SIGKILL at seeded random moments (while it starts, replays the log,
//! appends, or syncs), hundreds of times, each time reopening the core and checking that
//! it opens, equals the state after the last acknowledged operation or the one after it
//! (which may have reached the disk before its ack; a SIGKILL during `fdatasync` takes
//! effect when the call returns), block for block, and verifies for a fresh reader that
//! knows only the key. The next writer continues from there on the same log.
//!
//! The writer is this test binary itself, run again with `CRASH_KILL_DIR` set
//! (`--exact <this test>`). The seed is printed; `CRASH_KILL_SEED=<n>` replays one.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use corenet_noise::KeyPair;
use corenet_replication::{CoreKind, DiskStorage, Error, Hypercore, Storage, SyncPolicy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod common;
use common::{assert_verifiable, snapshot, Snapshot};

/// Writer processes killed per run.
const KILLS: usize = 300;
/// At most this many acknowledged operations before a kill (then a random pause).
const MAX_ACKS_BEFORE_KILL: u32 = 6;
/// The random pause before a kill, at most (µs).
const MAX_PAUSE_US: u64 = 3_000;
/// A full assert_verifiable every this many kills (and after the last), snapshots always.
const VERIFY_EVERY: usize = 10;
/// Upper bound on every wait for the writer.
const WAIT: Duration = Duration::from_secs(30);
/// Set in the writer process: the core's directory.
const DIR_ENV: &str = "CRASH_KILL_DIR";
/// Set in the writer process: how many operations the core on disk has done already.
const FROM_ENV: &str = "CRASH_KILL_FROM";
/// What the writer prints before the count of operations it finished.
const ACK: &str = "crash-kill-ack ";
const TEST_NAME: &str = "a_writer_killed_at_random_points_reopens_to_what_it_acknowledged";

fn key_pair() -> KeyPair {
    KeyPair::from_seed([7; 32])
}

/// Operation `k` of the writer's script: every 16th truncates to three quarters of the
/// length (a new fork), the others append 1 to 4 blocks of 1 to 4,000 bytes (records that
/// straddle pages) under one signature.
fn apply_op(core: &Hypercore, k: u64) -> Result<(), Error> {
    if k % 16 == 15 {
        return core.truncate(core.len() * 3 / 4);
    }
    let blocks = (0..k % 4 + 1).map(|j| {
        let len = (k * 733 + j * 101) % 4_000 + 1;
        Bytes::from(
            (0..len)
                .map(|b| (b ^ k.wrapping_mul(31) ^ (j << 3)) as u8)
                .collect::<Vec<u8>>(),
        )
    });
    core.append(blocks).map(|_| ())
}

fn open_storage(dir: &Path) -> DiskStorage {
    DiskStorage::open_with(dir, SyncPolicy::Always).expect("the log reopens after a kill")
}

/// The writer: continues the script from operation `from`, forever (until killed).
fn writer(dir: &Path, from: u64) {
    let storage = open_storage(dir);
    let core = if storage.auth().is_none() {
        Hypercore::create(storage, key_pair(), CoreKind::V1).unwrap()
    } else {
        Hypercore::open(storage).unwrap()
    };
    for k in from.. {
        apply_op(&core, k).unwrap();
        println!("{ACK}{}", k + 1);
    }
}

/// The same script in memory, run forward as far as asked.
struct Model {
    core: Hypercore,
    /// Operations done on `core`.
    done: u64,
    /// The state before the last operation.
    prev: Snapshot,
}

impl Model {
    fn new() -> Model {
        let core = Hypercore::in_memory(key_pair()).unwrap();
        let prev = snapshot(&core);
        Model {
            core,
            done: 0,
            prev,
        }
    }

    /// Snapshots after `n` and after `n + 1` operations; `n` never goes back by more than
    /// one operation from the previous call.
    fn states(&mut self, n: u64) -> (Snapshot, Snapshot) {
        assert!(n + 1 >= self.done, "the model only runs forward");
        while self.done < n + 1 {
            self.prev = snapshot(&self.core);
            apply_op(&self.core, self.done).unwrap();
            self.done += 1;
        }
        (self.prev.clone(), snapshot(&self.core))
    }
}

/// Runs one writer from operation `from` and kills it after `acks` acknowledgements and a
/// pause of `pause`; returns the last operation count it acknowledged (`from` if none).
fn run_and_kill(dir: &Path, from: u64, acks: u32, pause: Duration) -> u64 {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(DIR_ENV, dir)
        .env(FROM_ENV, from.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the writer");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest may have started the line ("test <name> ... ").
            if let Some((_, n)) = line.split_once(ACK) {
                let _ = tx.send(n.parse::<u64>().unwrap());
            }
        }
    });
    let mut last = from;
    let deadline = Instant::now() + WAIT;
    for _ in 0..acks {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(n) => last = n,
            Err(e) => {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "the writer stopped acknowledging ({e}): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    std::thread::sleep(pause);
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "the writer ended by itself: {status}"
    );
    reader.join().unwrap();
    // Acknowledgements printed before the kill count too.
    last.max(lines.try_iter().last().unwrap_or(last))
}

#[test]
fn a_writer_killed_at_random_points_reopens_to_what_it_acknowledged() {
    if let Some(dir) = std::env::var_os(DIR_ENV) {
        let from = std::env::var(FROM_ENV).unwrap().parse().unwrap();
        writer(Path::new(&dir), from);
        return;
    }
    let seed = std::env::var("CRASH_KILL_SEED")
        .ok()
        .map(|s| s.parse().expect("CRASH_KILL_SEED is a number"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("seed {seed} (replay with CRASH_KILL_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("core");
    let mut model = Model::new();
    let started = Instant::now();
    // Operations in the core on disk; `None` before the core was created.
    let mut on_disk: Option<u64> = None;
    let (mut mid_op, mut after_ack) = (0, 0);
    for kill in 0..KILLS {
        let from = on_disk.unwrap_or(0);
        let acks = rng.gen_range(0..=MAX_ACKS_BEFORE_KILL);
        let pause = Duration::from_micros(rng.gen_range(0..=MAX_PAUSE_US));
        let acked = run_and_kill(&dir, from, acks, pause);
        let ctx = format!("seed {seed}, kill {kill}, acknowledged {acked}");

        let storage = open_storage(&dir);
        if storage.auth().is_none() {
            // Killed before the core was created: nothing was acknowledged.
            assert_eq!(on_disk, None, "{ctx}: the core is gone");
            assert_eq!(acked, 0, "{ctx}");
            continue;
        }
        let core = Hypercore::open(storage).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        let got = snapshot(&core);
        let (at, next) = model.states(acked);
        let ops = if got == at {
            after_ack += 1;
            acked
        } else if got == next {
            // The next operation reached the log before the writer printed its ack.
            mid_op += 1;
            acked + 1
        } else {
            panic!(
                "{ctx}: reopened at length {} fork {}, acknowledged length {} fork {}",
                got.len, got.fork, at.len, at.fork
            );
        };
        if kill % VERIFY_EVERY == 0 || kill == KILLS - 1 {
            assert_verifiable(&core);
        }
        on_disk = Some(ops);
    }
    let ops = on_disk.expect("the core was created");
    println!(
        "{KILLS} kills in {:.1} s: {ops} operations ({} forks), {after_ack} reopened at the \
         last ack, {mid_op} one operation further",
        started.elapsed().as_secs_f64(),
        ops / 16
    );
    // The writers got somewhere.
    assert!(ops >= KILLS as u64, "only {ops} operations");
}
