//! Rust-to-Rust replication over in-memory secret streams.

use std::time::Duration;

use corenet_mux::{DriverConfig, MuxHandle};
use corenet_noise::{Config, KeyPair, SecretStream};
use corenet_replication::{Hypercore, MemoryStorage};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);

/// Two muxes over an in-memory pipe (secret streams, as over TCP).
async fn pair() -> (MuxHandle, MuxHandle) {
    let (a, b) = tokio::io::duplex(1 << 20);
    let client = tokio::spawn(async move {
        SecretStream::new(a, true, &KeyPair::generate(), Config::default()).await
    });
    let server = SecretStream::new(b, false, &KeyPair::generate(), Config::default())
        .await
        .unwrap();
    let client = client.await.unwrap().unwrap();
    (
        MuxHandle::spawn(client, DriverConfig::default()),
        MuxHandle::spawn(server, DriverConfig::default()),
    )
}

fn writer(blocks: usize, size: usize) -> Hypercore {
    let core = Hypercore::in_memory(KeyPair::from_seed([1; 32])).unwrap();
    let data: Vec<Vec<u8>> = (0..blocks).map(|i| vec![i as u8; size]).collect();
    core.append(data).unwrap();
    core
}

fn reader_of(w: &Hypercore) -> Hypercore {
    Hypercore::open_by_key(MemoryStorage::new(), w.key(), None).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_fetch() {
    let w = writer(100, 1000);
    let r = reader_of(&w);
    let (a, b) = pair().await;
    w.replicate(&a).unwrap();
    r.replicate(&b).unwrap();
    let block = timeout(WAIT, r.fetch(42)).await.unwrap().unwrap();
    assert_eq!(&block[..], &[42u8; 1000][..]);
    assert_eq!(r.len(), 100);
    assert!(r.has(42));
    assert!(!r.has(41));
    let block = timeout(WAIT, r.fetch(7)).await.unwrap().unwrap();
    assert_eq!(&block[..], &[7u8; 1000][..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_download() {
    let w = writer(2000, 4096);
    let r = reader_of(&w);
    let (a, b) = pair().await;
    w.replicate(&a).unwrap();
    r.replicate(&b).unwrap();
    assert!(timeout(WAIT, r.update()).await.unwrap().unwrap());
    let mut d = r.download(0..2000);
    timeout(WAIT, d.done()).await.unwrap().unwrap();
    assert_eq!(r.contiguous_len(), 2000);
    assert_eq!(r.tree_hash(), w.tree_hash());
    for i in [0u64, 999, 1999] {
        assert_eq!(r.get(i).unwrap().unwrap(), w.get(i).unwrap().unwrap());
    }
}
