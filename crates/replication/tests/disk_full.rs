//! A full disk under [`DiskStorage`]: on a small tmpfs, appends run until the disk is full;
//! the failing append is a typed error (`StorageError::Io`, `StorageFull`), not a panic, and
//! leaves the core as it was (in memory and on disk). Once space returns, the same core
//! appends again, and every reopen is a consistent, verifiable core holding everything
//! that was acknowledged.
//!
//! A download into a full disk ends with that error instead of waiting forever, and a new
//! download asks the same peers again once space returns.
//!
//! Mounting needs root (CI runs the tests as root); elsewhere the test says it skipped.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use std::time::Duration;

use bytes::Bytes;
use corenet_noise::{Config, KeyPair, SecretStream};
use corenet_replication::files::{download_to_file, share_file};
use corenet_replication::{
    CoreKind, Corestore, DiskStorage, Error, Hypercore, MemoryStorage, ProofRequest, RequestBlock,
    RequestUpgrade, StorageError, SyncPolicy,
};
use tokio::time::timeout;

/// Upper bound on every wait.
const WAIT: Duration = Duration::from_secs(20);

mod common;
use common::{assert_verifiable, snapshot};

#[path = "../../../tests/src/tmpfs.rs"]
#[allow(unreachable_pub)]
mod tmpfs;
use tmpfs::Tmpfs;

fn block(i: u64) -> Bytes {
    Bytes::from(vec![(i % 251) as u8; 48 * 1024 + i as usize % 1000])
}

fn open(dir: &Path) -> Hypercore {
    Hypercore::open(DiskStorage::open_with(dir, SyncPolicy::Always).unwrap()).unwrap()
}

/// Appends single blocks until one fails; returns that error.
fn append_until_full(core: &Hypercore) -> Error {
    for _ in 0..1_000 {
        if let Err(e) = core.append([block(core.len())]) {
            return e;
        }
    }
    panic!("a 4 MiB disk took 1,000 blocks of 48 KiB");
}

fn assert_disk_full(e: &Error) {
    match e {
        Error::Storage(StorageError::Io(io)) => {
            assert_eq!(io.kind(), ErrorKind::StorageFull, "{e}");
            assert!(e.to_string().contains("No space left"), "{e}");
        }
        other => panic!("expected an i/o error for the full disk, got {other:?}"),
    }
}

/// The core holds blocks `0..len` of the script and verifies.
fn assert_consistent(core: &Hypercore, len: u64) {
    assert_eq!(core.len(), len);
    for i in 0..len {
        assert_eq!(core.get(i).unwrap(), Some(block(i)), "block {i}");
    }
    assert_verifiable(core);
}

#[test]
fn a_full_disk_is_an_error_and_appends_resume_once_space_returns() {
    let Some(fs) = Tmpfs::mount("4m") else { return };
    // Space to give back later.
    let filler: PathBuf = fs.path().join("filler");
    std::fs::write(&filler, vec![0u8; 1024 * 1024]).unwrap();
    let dir = fs.path().join("core");
    let core = Hypercore::create(
        DiskStorage::open_with(&dir, SyncPolicy::Always).unwrap(),
        KeyPair::from_seed([9; 32]),
        CoreKind::V1,
    )
    .unwrap();

    // Append until the disk is full: the failed append changes nothing.
    let e = append_until_full(&core);
    assert_disk_full(&e);
    let acked = core.len();
    assert!(acked > 10, "only {acked} blocks fit");
    let before = snapshot(&core);
    // A batch too large for what is left fails the same way.
    let e = core.append((acked..acked + 8).map(block)).unwrap_err();
    assert_disk_full(&e);
    assert_eq!(snapshot(&core), before);
    drop(core);

    // Reopened on the full disk: everything acknowledged, consistent.
    let core = open(&dir);
    assert_eq!(snapshot(&core), before);
    assert_consistent(&core, acked);
    let e = core.append([block(acked)]).unwrap_err();
    assert_disk_full(&e);

    // Space returns: the same core appends again, without a reopen.
    std::fs::remove_file(&filler).unwrap();
    core.append([block(acked)]).unwrap();
    core.append((acked + 1..acked + 4).map(block)).unwrap();
    assert_consistent(&core, acked + 4);
    drop(core);
    let core = open(&dir);
    assert_consistent(&core, acked + 4);

    // And it fills up again, just as cleanly.
    let e = append_until_full(&core);
    assert_disk_full(&e);
    let acked = core.len();
    drop(core);
    assert_consistent(&open(&dir), acked);
}

/// A downloaded copy (a reader's core, written by verified proofs) on a full disk: the
/// proof that does not fit is an error and nothing of it is stored; the copy reopens
/// consistent and takes the rest once space returns.
#[test]
fn a_reader_on_a_full_disk_keeps_what_it_stored_and_resumes() {
    let Some(fs) = Tmpfs::mount("4m") else { return };
    let filler = fs.path().join("filler");
    std::fs::write(&filler, vec![0u8; 2 * 1024 * 1024]).unwrap();
    let writer = Hypercore::create(
        MemoryStorage::new(),
        KeyPair::from_seed([10; 32]),
        CoreKind::V1,
    )
    .unwrap();
    let total = 60;
    writer.append((0..total).map(block)).unwrap();
    // Block `i` with the nodes `copy` lacks.
    let proof = |copy: &Hypercore, i: u64| {
        writer
            .create_proof(&ProofRequest {
                fork: 0,
                block: Some(RequestBlock {
                    index: i,
                    nodes: copy.missing_nodes(2 * i).unwrap(),
                }),
                ..ProofRequest::default()
            })
            .unwrap()
            .unwrap()
    };

    let dir = fs.path().join("copy");
    let reopen =
        || Hypercore::open(DiskStorage::open_with(&dir, SyncPolicy::Always).unwrap()).unwrap();
    let copy = Hypercore::open_by_key(
        DiskStorage::open_with(&dir, SyncPolicy::Always).unwrap(),
        writer.key(),
        None,
    )
    .unwrap();
    // The signed tree first.
    let head = writer
        .create_proof(&ProofRequest {
            fork: 0,
            upgrade: Some(RequestUpgrade {
                start: 0,
                length: total,
            }),
            manifest: true,
            ..ProofRequest::default()
        })
        .unwrap()
        .unwrap();
    copy.verify_and_apply(&head).unwrap();
    let mut stored = 0;
    let e = loop {
        assert!(stored < total, "the whole core fit next to the filler");
        match copy.verify_and_apply(&proof(&copy, stored)) {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
    };
    assert_disk_full(&e);
    assert!(stored > 10, "only {stored} blocks fit");
    assert!(copy.get(stored).unwrap().is_none());
    drop(copy);

    // Reopened: the signed tree and every stored block, nothing of the failed proof.
    let copy = reopen();
    assert_eq!(copy.len(), total);
    assert_eq!(copy.tree_hash(), writer.tree_hash());
    assert_eq!(copy.bitfield().count(0..total), stored);
    for i in 0..stored {
        assert_eq!(copy.get(i).unwrap(), Some(block(i)), "block {i}");
    }

    // Space returns: the rest arrives, and the complete copy reopens consistent.
    std::fs::remove_file(&filler).unwrap();
    for i in stored..total {
        copy.verify_and_apply(&proof(&copy, i)).unwrap();
    }
    drop(copy);
    assert_eq!(snapshot(&reopen()), snapshot(&writer));
    assert_verifiable(&reopen());
}

async fn connect(a: &Corestore, b: &Corestore) -> (corenet_mux::MuxHandle, corenet_mux::MuxHandle) {
    let (x, y) = tokio::io::duplex(1 << 20);
    let client = tokio::spawn(async move {
        SecretStream::new(x, true, &KeyPair::generate(), Config::default()).await
    });
    let server = SecretStream::new(y, false, &KeyPair::generate(), Config::default())
        .await
        .unwrap();
    let client = client.await.unwrap().unwrap();
    (
        a.replicate_stream(client).unwrap(),
        b.replicate_stream(server).unwrap(),
    )
}

/// A download into a store on a full disk ends with the storage error (it used to wait
/// forever, its peers paused), leaves no output file, and the store reopens with what was
/// kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_into_a_full_disk_fails_with_the_error_and_keeps_what_it_stored() {
    let Some(fs) = Tmpfs::mount("8m") else { return };
    let src = tempfile::tempdir().unwrap();
    let input = src.path().join("input.bin");
    let content: Vec<u8> = (0..3 * 1024 * 1024 + 5u32)
        .map(|i| (i >> 7) as u8)
        .collect();
    std::fs::write(&input, &content).unwrap();
    let sharer = Corestore::in_memory();
    let key = share_file(&sharer, "input", &input).unwrap().core.key();

    let filler = fs.path().join("filler");
    std::fs::write(&filler, vec![0u8; 7 * 1024 * 1024]).unwrap();
    let out = fs.path().join("out.bin");
    let getter = Corestore::open(fs.path().join("store")).unwrap();
    let core = getter.get_by_key(key).unwrap();
    let _conn = connect(&sharer, &getter).await;
    let e = timeout(WAIT, download_to_file(&core, &out, |_| {}))
        .await
        .expect("a full disk ends the download")
        .unwrap_err();
    assert_disk_full(&e);
    assert!(!out.exists());
    // Whole batches of proofs are stored or not; none were lost.
    let kept = core.bitfield().count(0..core.len());
    assert!(kept < core.len(), "{kept} blocks kept");
    drop(core);
    drop(getter);

    // Reopened (as a new run would): what was kept is there.
    let getter = Corestore::open(fs.path().join("store")).unwrap();
    let reopened = getter.get_by_key(key).unwrap();
    assert!(reopened.bitfield().count(0..reopened.len()) >= kept);
    for i in 0..reopened.len() {
        if let Some(b) = reopened.get(i).unwrap() {
            let at = i as usize * 64 * 1024;
            assert_eq!(&b[..], &content[at..content.len().min(at + b.len())]);
        }
    }
}

/// Once space returns, a new download over the connection whose answers failed to store
/// asks that peer again and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_full_disk_a_new_download_asks_the_same_peer_again() {
    let Some(fs) = Tmpfs::mount("8m") else { return };
    let src = tempfile::tempdir().unwrap();
    let input = src.path().join("input.bin");
    let content: Vec<u8> = (0..3 * 1024 * 1024 + 5u32)
        .map(|i| (i >> 5) as u8)
        .collect();
    std::fs::write(&input, &content).unwrap();
    let sharer = Corestore::in_memory();
    let key = share_file(&sharer, "input", &input).unwrap().core.key();

    let filler = fs.path().join("filler");
    std::fs::write(&filler, vec![0u8; 7 * 1024 * 1024]).unwrap();
    let out = fs.path().join("out.bin");
    let getter = Corestore::open(fs.path().join("store")).unwrap();
    let core = getter.get_by_key(key).unwrap();
    let _conn = connect(&sharer, &getter).await;
    let e = timeout(WAIT, download_to_file(&core, &out, |_| {}))
        .await
        .unwrap()
        .unwrap_err();
    assert_disk_full(&e);

    std::fs::remove_file(&filler).unwrap();
    let got = timeout(WAIT, download_to_file(&core, &out, |_| {}))
        .await
        .expect("the peer is asked again")
        .unwrap();
    assert_eq!(got.blocks, core.len());
    assert_eq!(std::fs::read(&out).unwrap(), content);
}
