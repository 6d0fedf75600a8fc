//! Hypercore throughput.
//!
//! - `append/{memory,disk,disk-nosync} {4,64}KiB`: batched appends of 4 MiB per call (1024 x
//!   4 KiB or 64 x 64 KiB blocks, one signature per batch) into a fresh core per sample, in
//!   memory and on disk ([`SyncPolicy::Always`]: one `fdatasync` per batch; `Never`: none).
//!   The JS counterpart is `tests/interop/bench/hypercore-append.js`.
//! - `verify/...`: a reader that has the signed tree verifies block proofs (leaf hash, the
//!   sibling path up to a stored node) for 4 KiB blocks: `verify_proof` alone, and
//!   `verify_and_apply` into memory; and a block with an upgrade (one Ed25519 verification).

mod harness {
    #![allow(missing_docs)]

    use std::hint::black_box;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use corenet_noise::KeyPair;
    use corenet_replication::{
        flat, CoreKind, DiskStorage, Hypercore, MemoryStorage, Proof, ProofRequest, RequestBlock,
        RequestUpgrade, SyncPolicy,
    };
    use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};

    const BATCH_BYTES: usize = 4 << 20;

    fn batch(block: usize) -> Vec<Bytes> {
        (0..BATCH_BYTES / block)
            .map(|i| Bytes::from(vec![(i % 251) as u8; block]))
            .collect()
    }

    #[derive(Clone, Copy)]
    enum Store {
        Memory,
        Disk(SyncPolicy),
    }

    fn append(c: &mut Criterion) {
        let mut g = c.benchmark_group("append");
        g.throughput(Throughput::Bytes(BATCH_BYTES as u64));
        g.sample_size(10);
        g.measurement_time(Duration::from_secs(4));
        for (name, store) in [
            ("memory", Store::Memory),
            ("disk", Store::Disk(SyncPolicy::Always)),
            ("disk-nosync", Store::Disk(SyncPolicy::Never)),
        ] {
            for block in [4096usize, 65536] {
                let blocks = batch(block);
                let id = BenchmarkId::new(name, format!("{}KiB", block / 1024));
                g.bench_function(id, |b| {
                    b.iter_custom(|iters| {
                        let dir = tempfile::tempdir().unwrap();
                        let kp = KeyPair::from_seed([1; 32]);
                        let core = match store {
                            Store::Memory => {
                                Hypercore::create(MemoryStorage::new(), kp, CoreKind::V1)
                            }
                            Store::Disk(sync) => Hypercore::create(
                                DiskStorage::open_with(dir.path(), sync).unwrap(),
                                kp,
                                CoreKind::V1,
                            ),
                        }
                        .unwrap();
                        let start = Instant::now();
                        for _ in 0..iters {
                            black_box(core.append(blocks.iter().cloned()).unwrap());
                        }
                        start.elapsed()
                    })
                });
            }
        }
        g.finish();
    }

    fn missing(i: u64, len: u64) -> u64 {
        let root = flat::full_roots(2 * len)
            .find(|r| flat::left_span(*r) <= 2 * i && 2 * i <= flat::right_span(*r))
            .unwrap();
        u64::from(flat::depth(root))
    }

    fn verify(c: &mut Criterion) {
        const BLOCKS: u64 = 4096;
        let writer = Hypercore::in_memory(KeyPair::from_seed([2; 32])).unwrap();
        for chunk in 0..BLOCKS / 1024 {
            writer
                .append((0..1024).map(|i| Bytes::from(vec![(chunk * 1024 + i) as u8; 4096])))
                .unwrap();
        }
        let head = writer
            .create_proof(&ProofRequest {
                upgrade: Some(RequestUpgrade {
                    start: 0,
                    length: BLOCKS,
                }),
                manifest: true,
                ..ProofRequest::default()
            })
            .unwrap()
            .unwrap();
        let fresh_reader = || {
            let r = Hypercore::open_by_key(MemoryStorage::new(), writer.key(), None).unwrap();
            r.verify_and_apply(&head).unwrap();
            r
        };
        let proofs: Vec<Proof> = (0..BLOCKS)
            .map(|i| {
                writer
                    .create_proof(&ProofRequest {
                        block: Some(RequestBlock {
                            index: i,
                            nodes: missing(i, BLOCKS),
                        }),
                        ..ProofRequest::default()
                    })
                    .unwrap()
                    .unwrap()
            })
            .collect();

        let mut g = c.benchmark_group("verify");
        g.sample_size(20);
        g.throughput(Throughput::Elements(1));
        let reader = fresh_reader();
        let mut i = 0usize;
        g.bench_function("block 4KiB verify_proof", |b| {
            b.iter(|| {
                i = (i + 1) % proofs.len();
                black_box(reader.verify_proof(&proofs[i]).unwrap());
            })
        });
        g.bench_function("block 4KiB verify_and_apply", |b| {
            b.iter_custom(|iters| {
                // A fresh reader per pass over the blocks (not timed): each block once.
                let mut total = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let reader = fresh_reader();
                    let n = left.min(proofs.len());
                    let start = Instant::now();
                    for p in &proofs[..n] {
                        black_box(reader.verify_and_apply(p).unwrap());
                    }
                    total += start.elapsed();
                    left -= n;
                }
                total
            })
        });
        let with_upgrade = writer
            .create_proof(&ProofRequest {
                block: Some(RequestBlock {
                    index: 100,
                    nodes: 0,
                }),
                upgrade: Some(RequestUpgrade {
                    start: 0,
                    length: BLOCKS,
                }),
                manifest: true,
                ..ProofRequest::default()
            })
            .unwrap()
            .unwrap();
        let empty = Hypercore::open_by_key(MemoryStorage::new(), writer.key(), None).unwrap();
        g.bench_function("block 4KiB + signed upgrade verify_proof", |b| {
            b.iter(|| black_box(empty.verify_proof(&with_upgrade).unwrap()))
        });
        g.finish();
    }

    criterion_group!(benches, append, verify);
}

criterion::criterion_main!(harness::benches);
