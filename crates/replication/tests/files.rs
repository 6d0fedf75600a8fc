//! `share_file` / `download_to_file`: sharing is idempotent and follows an append-only file;
//! downloading reports progress, writes the file atomically, and resumes from storage.

use std::sync::{Arc, Mutex};

use std::time::Duration;

use corenet_noise::{Config, KeyPair, SecretStream};
use corenet_replication::files::{download_to_file, share_file, FileProgress, FILE_BLOCK_SIZE};
use corenet_replication::{Corestore, Error};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(30);

fn content(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(salt) ^ (i >> 16) as u8)
        .collect()
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

#[test]
fn share_is_idempotent_and_follows_appends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.bin");
    let mut data = content(3 * FILE_BLOCK_SIZE, 1);
    std::fs::write(&path, &data).unwrap();
    let store = Corestore::open(dir.path().join("store")).unwrap();

    let first = share_file(&store, "log", &path).unwrap();
    assert_eq!(
        (first.blocks, first.bytes, first.appended_blocks),
        (3, data.len() as u64, 3)
    );
    let again = share_file(&store, "log", &path).unwrap();
    assert_eq!(again.appended_blocks, 0);
    assert_eq!(again.core.key(), first.core.key());

    // The file grows (by a block and a half): the rest is appended.
    data.extend(content(FILE_BLOCK_SIZE + FILE_BLOCK_SIZE / 2, 2));
    std::fs::write(&path, &data).unwrap();
    let grown = share_file(&store, "log", &path).unwrap();
    assert_eq!((grown.blocks, grown.appended_blocks), (5, 2));
    assert_eq!(grown.bytes, data.len() as u64);
    let mut joined = Vec::new();
    for i in 0..grown.blocks {
        joined.extend_from_slice(&grown.core.get(i).unwrap().unwrap());
    }
    assert_eq!(joined, data);

    // Growing past a short last block, or changing old bytes, is refused.
    data.extend_from_slice(b"more");
    std::fs::write(&path, &data).unwrap();
    assert!(matches!(
        share_file(&store, "log", &path),
        Err(Error::InvalidArgument(_))
    ));
    data[10] ^= 1;
    std::fs::write(&path, &data[..3 * FILE_BLOCK_SIZE]).unwrap();
    assert!(matches!(
        share_file(&store, "log", &path),
        Err(Error::InvalidArgument(_))
    ));
    // An empty file is an empty core.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let e = share_file(&store, "empty", &empty).unwrap();
    assert_eq!((e.blocks, e.bytes), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_reports_progress_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.bin");
    let data = content(40 * FILE_BLOCK_SIZE + 1234, 3);
    std::fs::write(&input, &data).unwrap();
    let sharer = Corestore::in_memory();
    let shared = share_file(&sharer, "input", &input).unwrap();
    let key = shared.core.key();
    let out = dir.path().join("out.bin");
    let store_dir = dir.path().join("getter");

    // A peer that holds only the first 20 blocks.
    let partial = Corestore::in_memory();
    {
        let (_a, _b) = connect(&sharer, &partial).await;
        let copy = partial.get_by_key(key).unwrap();
        timeout(WAIT, copy.download(0..20).done())
            .await
            .unwrap()
            .unwrap();
    }

    // First run, against that peer only: it stalls after 20 blocks and is interrupted.
    {
        let getter = Corestore::open(&store_dir).unwrap();
        let core = getter.get_by_key(key).unwrap();
        let (_a, _b) = connect(&partial, &getter).await;
        let task = tokio::spawn({
            let core = core.clone();
            let out = out.clone();
            async move { download_to_file(&core, &out, |_| {}).await }
        });
        let mut status = core.status();
        timeout(WAIT, status.wait_for(|s| s.contiguous_length == 20))
            .await
            .unwrap()
            .unwrap();
        task.abort();
        let _ = task.await;
        assert_eq!(core.bitfield().count(0..41), 20);
        assert!(!out.exists(), "no partial output file");
    }

    // Second run, same storage (reopened): only the missing blocks are fetched.
    let getter = Corestore::open(&store_dir).unwrap();
    let core = getter.get_by_key(key).unwrap();
    let had = core.bitfield().count(0..41);
    let (_a, _b) = connect(&sharer, &getter).await;
    let reports = Arc::new(Mutex::new(Vec::<FileProgress>::new()));
    let got = timeout(
        WAIT,
        download_to_file(&core, &out, {
            let reports = reports.clone();
            move |p: &FileProgress| reports.lock().unwrap().push(*p)
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(got.blocks, 41);
    assert_eq!(got.bytes, data.len() as u64);
    assert_eq!(got.fetched_blocks, 41 - had);
    assert!(got.fetched_bytes < got.bytes);
    assert_eq!(std::fs::read(&out).unwrap(), data);
    let reports = reports.lock().unwrap().clone();
    let last = reports.last().unwrap();
    assert_eq!((last.blocks, last.total_blocks), (41, 41));
    assert_eq!(
        (last.bytes, last.total_bytes),
        (data.len() as u64, data.len() as u64)
    );
    assert_eq!(last.fetched_bytes, got.fetched_bytes);
    assert!(reports
        .windows(2)
        .all(|w| w[0].bytes <= w[1].bytes && w[0].blocks <= w[1].blocks));
    assert!(reports[0].bytes >= had * FILE_BLOCK_SIZE as u64 - FILE_BLOCK_SIZE as u64);

    // A third run has nothing to fetch.
    let again = download_to_file(&core, &out, |_| {}).await.unwrap();
    assert_eq!(again.fetched_blocks, 0);
}
