//! Crash safety of [`DiskStorage`]: a writer killed at any point of an append reopens to a
//! consistent, verifiable prefix. We record the log before and after one last append, then
//! reopen copies of the log cut (a torn write) or corrupted (a garbled page) at every byte
//! offset of that append, and check that each reopens to exactly the state before the append
//! (or after it, for the uncut log), with every block verifiable by a reader.

use std::path::Path;

use corenet_noise::KeyPair;
use corenet_replication::storage::LOG_FILE;
use corenet_replication::{CoreKind, DiskStorage, Hypercore, SyncPolicy};

mod common;
use common::{assert_verifiable, snapshot};

fn block(i: u64) -> Vec<u8> {
    (0..(i * 11 % 40 + 1)).map(|j| (j * 3 + i) as u8).collect()
}

fn reopen(dir: &Path) -> Hypercore {
    Hypercore::open(DiskStorage::open_with(dir, SyncPolicy::Never).unwrap()).unwrap()
}

fn run(kind: CoreKind, truncate_first: bool) {
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("core");
    let (before, log_before, after, log_after);
    {
        let core = Hypercore::create(
            DiskStorage::open_with(&src, SyncPolicy::Never).unwrap(),
            KeyPair::from_seed([4; 32]),
            kind,
        )
        .unwrap();
        for chunk in 0..4u64 {
            core.append((chunk * 5..chunk * 5 + 5).map(block)).unwrap();
        }
        if truncate_first {
            core.truncate(12).unwrap();
        }
        before = snapshot(&core);
        log_before = std::fs::read(src.join(LOG_FILE)).unwrap();
        // The last append: three blocks under one signature.
        core.append((100..103).map(block)).unwrap();
        after = snapshot(&core);
        log_after = std::fs::read(src.join(LOG_FILE)).unwrap();
    }
    assert!(log_after.starts_with(&log_before));
    assert_ne!(before, after);

    let dir = base.path().join("copy");
    let mut checked = 0;
    for cut in log_before.len()..=log_after.len() {
        // A torn write: the log ends at `cut`.
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(LOG_FILE), &log_after[..cut]).unwrap();
        let core = reopen(&dir);
        let want = if cut == log_after.len() {
            &after
        } else {
            &before
        };
        assert_eq!(&snapshot(&core), want, "cut at {cut}");
        // The tail was cut off: the log is usable again.
        core.append([&b"after recovery"[..]]).unwrap();
        drop(core);
        let again = reopen(&dir);
        assert_eq!(again.len(), want.len + 1, "cut at {cut}");
        drop(again);

        // A garbled byte inside the last append.
        if cut < log_after.len() {
            let mut garbled = log_after.clone();
            garbled[cut] ^= 0x5a;
            std::fs::write(dir.join(LOG_FILE), &garbled).unwrap();
            let core = reopen(&dir);
            assert_eq!(snapshot(&core), before, "garbled byte at {cut}");
        }
        checked += 1;
    }
    assert!(checked > 100);

    // Every prefix state is verifiable end to end.
    std::fs::write(dir.join(LOG_FILE), &log_before).unwrap();
    assert_verifiable(&reopen(&dir));
    std::fs::write(dir.join(LOG_FILE), &log_after).unwrap();
    assert_verifiable(&reopen(&dir));
}

#[test]
fn torn_or_garbled_last_append_reopens_to_the_previous_state_v1() {
    run(CoreKind::V1, false);
}

#[test]
fn torn_or_garbled_last_append_after_a_truncation_compat() {
    run(CoreKind::Compat, true);
}

#[test]
fn a_log_that_is_not_ours_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(LOG_FILE), b"definitely not a hypercore log").unwrap();
    assert!(DiskStorage::open(dir.path()).is_err());
}

/// A log whose last append is torn and whose append before it has a garbled block (a bad
/// sector; its meta checksum still holds): the first open cuts the torn record, and the
/// record before it, now last, is checked like any last record. What the first open keeps
/// is what every later open keeps (found by the `hypercore_log` fuzz target: the first open
/// kept the garbled append, the reopen of the cut file dropped it).
#[test]
fn an_open_keeps_what_the_next_open_keeps() {
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("core");
    let (one, two);
    {
        let core = Hypercore::create(
            DiskStorage::open_with(&src, SyncPolicy::Never).unwrap(),
            KeyPair::from_seed([5; 32]),
            CoreKind::V1,
        )
        .unwrap();
        core.append([block(1)]).unwrap();
        one = std::fs::metadata(src.join(LOG_FILE)).unwrap().len() as usize;
        core.append([block(2)]).unwrap();
        two = std::fs::metadata(src.join(LOG_FILE)).unwrap().len() as usize;
    }
    let mut log = std::fs::read(src.join(LOG_FILE)).unwrap();
    log[one - 1] ^= 0x40; // the last byte of the first append's block
    log.truncate(two - 1); // the second append torn
    std::fs::write(src.join(LOG_FILE), &log).unwrap();
    let first = snapshot(&reopen(&src));
    let kept = std::fs::read(src.join(LOG_FILE)).unwrap();
    let second = snapshot(&reopen(&src));
    assert_eq!(first, second);
    assert_eq!(std::fs::read(src.join(LOG_FILE)).unwrap(), kept);
    assert_eq!(first.len, 0, "the garbled append was kept");
}
