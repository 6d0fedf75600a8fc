//! Replication throughput in one process: a reader downloads a whole core (16 MiB in 64 KiB
//! or 4 KiB blocks) from a writer over secret streams on an in-memory pipe, both stores in
//! memory (`replicate/memory {4,64}KiB`). This isolates the replicator, mux and secret
//! stream from TCP and disks; the two-process figures over TCP (and against JS) come from
//! the `replicate-bench` example and `scripts/bench-replication` (BENCHMARKS.md).

mod harness {
    #![allow(missing_docs)]

    use std::time::{Duration, Instant};

    use corenet_noise::{Config, KeyPair, SecretStream};
    use corenet_replication::Corestore;
    use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};

    const TOTAL: usize = 16 << 20;

    async fn once(writer: &Corestore, key: corenet_codec::PublicKey, blocks: u64) -> Duration {
        let (a, b) = tokio::io::duplex(1 << 20);
        let init = tokio::spawn(async move {
            SecretStream::new(a, true, &KeyPair::generate(), Config::default()).await
        });
        let resp = SecretStream::new(b, false, &KeyPair::generate(), Config::default())
            .await
            .unwrap();
        let init = init.await.unwrap().unwrap();
        let reader = Corestore::in_memory();
        let core = reader.get_by_key(key).unwrap();
        let ma = writer.replicate_stream(init).unwrap();
        let mb = reader.replicate_stream(resp).unwrap();
        let t = Instant::now();
        core.download(0..blocks).done().await.unwrap();
        let elapsed = t.elapsed();
        ma.close();
        mb.close();
        elapsed
    }

    fn replicate(c: &mut Criterion) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut g = c.benchmark_group("replicate");
        g.throughput(Throughput::Bytes(TOTAL as u64));
        g.sample_size(10);
        g.measurement_time(Duration::from_secs(5));
        for block in [4096usize, 65536] {
            let writer = Corestore::in_memory();
            let core = writer.get("bench").unwrap();
            let blocks = (TOTAL / block) as u64;
            for chunk in (0..blocks).collect::<Vec<_>>().chunks(256) {
                core.append(chunk.iter().map(|i| vec![*i as u8; block]))
                    .unwrap();
            }
            let key = core.key();
            let id = BenchmarkId::new("memory", format!("{}KiB", block / 1024));
            g.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            total += once(&writer, key, blocks).await;
                        }
                        total
                    })
                })
            });
        }
        g.finish();
    }

    criterion_group!(benches, replicate);
}

criterion::criterion_main!(harness::benches);
