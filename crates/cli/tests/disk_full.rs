//! `corenet get` on a full disk (a small tmpfs holding its store and OUT): it fails soon,
//! with an error that says the disk is full, leaves no OUT (and no `.part` holding the
//! space), keeps a consistent store, and completes once space returns.
//!
//! Mounting needs root (CI runs the tests as root); elsewhere the test says it skipped.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{net_args, testnet, Proc};
use corenet_tests::tmpfs::Tmpfs;

const MIB: usize = 1024 * 1024;

/// Runs `get` expecting it to fail for lack of space: soon, with exit status 1 and an
/// `error:` line that says so; no OUT, no `.part`.
fn assert_fails_for_space(args: &[&str], out: &Path) {
    let started = Instant::now();
    let mut get = Proc::spawn(args);
    let line = get.err_line("error: ");
    let status = get.wait();
    assert_eq!(status.code(), Some(1), "{line}");
    assert!(line.contains("No space left on device"), "{line}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a full disk took {:?} to report",
        started.elapsed()
    );
    assert!(!out.exists(), "a partial OUT");
    let mut part = out.as_os_str().to_owned();
    part.push(".part");
    assert!(
        !Path::new(&part).exists(),
        "the .part file is left, holding the space"
    );
}

#[test]
fn get_on_a_full_disk_fails_clearly_and_completes_once_space_returns() {
    let Some(fs) = Tmpfs::mount("8m") else { return };
    let (_testnet, boot) = testnet();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.bin");
    let content: Vec<u8> = (0..(3 * MIB + 777) as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8)
        .collect();
    std::fs::write(&file, &content).unwrap();
    let sharer_store = dir.path().join("sharer");
    let mut args = net_args(&sharer_store, &boot);
    args.extend(["share", file.to_str().unwrap()]);
    let sharer = Proc::spawn(&args);
    let key = sharer.line("key ")["key ".len()..].to_string();
    sharer.line("announced ");

    let store = fs.path().join("store");
    let out = fs.path().join("copy.bin");
    let mut args = net_args(&store, &boot);
    args.extend(["get", &key, out.to_str().unwrap(), "--timeout", "60"]);

    // About 1 MiB free: the store fills up while downloading.
    let filler = fs.path().join("filler");
    std::fs::write(&filler, vec![0u8; 7 * MIB]).unwrap();
    assert_fails_for_space(&args, &out);

    // Room for the store, not for OUT as well: writing OUT fails.
    std::fs::remove_file(&filler).unwrap();
    std::fs::write(&filler, vec![0u8; 3 * MIB]).unwrap();
    assert_fails_for_space(&args, &out);

    // Space returns: the download completes, from what the store kept.
    std::fs::remove_file(&filler).unwrap();
    let mut get = Proc::spawn(&args);
    let done = get.line("done ");
    assert!(get.wait().success());
    let blocks = content.len().div_ceil(64 * 1024);
    assert_eq!(
        done,
        format!("done {} {blocks} fetched 0", content.len()),
        "the store kept every block of the run that failed writing OUT"
    );
    assert_eq!(std::fs::read(&out).unwrap(), content);
}
