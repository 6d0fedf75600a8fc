//! Writes seeds for the `hypercore_log` target: real `hypercore.log` files made by
//! `DiskStorage` (the log format is corenet's own, so there are no JS bytes for it).
//!
//!   cargo run --manifest-path fuzz/Cargo.toml --example log_seeds
//!
//! Each seed is the mode byte 0 (the file as is) or 1 (CRCs repaired), then the whole file.

use std::path::Path;

use corenet_noise::KeyPair;
use corenet_replication::messages::{ProofRequest, RequestUpgrade};
use corenet_replication::{CoreKind, DiskStorage, Hypercore, MemoryStorage, SyncPolicy};

fn write_seed(out: &Path, name: &str, mode: u8, log: &Path) {
    let mut bytes = vec![mode];
    bytes.extend(std::fs::read(log).expect("read the log"));
    std::fs::write(out.join(name), bytes).expect("write the seed");
}

fn main() {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/hypercore_log");
    std::fs::create_dir_all(&out).expect("seed directory");
    let tmp = std::env::temp_dir().join(format!("corenet-log-seeds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);

    // A writable core: appends in three commits, then a truncation.
    let dir = tmp.join("writer");
    let storage = DiskStorage::open_with(&dir, SyncPolicy::Never).expect("open");
    let core =
        Hypercore::create(storage, KeyPair::from_seed([5; 32]), CoreKind::V1).expect("create");
    core.append([&b"hello"[..], &b"world"[..]]).expect("append");
    core.append([&[7u8; 300][..]]).expect("append");
    core.append((0..6).map(|i| vec![i; 40])).expect("append");
    let log = dir.join("hypercore.log");
    write_seed(&out, "writer", 0, &log);
    core.truncate(4).expect("truncate");
    write_seed(&out, "writer-truncated", 0, &log);
    write_seed(&out, "writer-truncated-crc", 1, &log);
    drop(core);

    // A compat core.
    let dir = tmp.join("compat");
    let storage = DiskStorage::open_with(&dir, SyncPolicy::Never).expect("open");
    let core =
        Hypercore::create(storage, KeyPair::from_seed([6; 32]), CoreKind::Compat).expect("create");
    core.append([&b"compat"[..]]).expect("append");
    write_seed(&out, "compat", 0, &dir.join("hypercore.log"));
    drop(core);

    // A sparse replica: the key, the manifest and one verified block.
    let writer = Hypercore::create(
        MemoryStorage::new(),
        KeyPair::from_seed([5; 32]),
        CoreKind::V1,
    )
    .expect("writer");
    writer.append((0..8).map(|i| vec![i; 10])).expect("append");
    let dir = tmp.join("replica");
    let storage = DiskStorage::open_with(&dir, SyncPolicy::Never).expect("open");
    let replica = Hypercore::open_by_key(storage, writer.key(), None).expect("replica");
    let proof = writer
        .create_proof(&ProofRequest {
            block: Some(corenet_replication::RequestBlock { index: 5, nodes: 0 }),
            upgrade: Some(RequestUpgrade {
                start: 0,
                length: 8,
            }),
            manifest: true,
            ..ProofRequest::default()
        })
        .expect("proof")
        .expect("a proof");
    replica.verify_and_apply(&proof).expect("apply");
    write_seed(&out, "replica", 0, &dir.join("hypercore.log"));
    drop(replica);

    let _ = std::fs::remove_dir_all(&tmp);
    eprintln!("seeds written to {}", out.display());
}
