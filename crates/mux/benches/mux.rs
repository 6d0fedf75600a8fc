//! protomux throughput.
//!
//! - `mux-core/*`: the sans-IO core alone, one mux sending to another in memory (encode,
//!   frame, decode, route; no crypto): 1,024 messages of 32 bytes per iteration, each its own
//!   frame (`32B uncorked`) or all in corked batches (`32B corked`), and 16 messages of 64 KiB
//!   (`64KiB`).
//! - `mux-e2e/*`: two [`MuxHandle`]s over secret streams over a tokio in-memory duplex, on one
//!   thread (both drivers, both users, the crypto): 10,000 messages of 32 bytes sent with
//!   `send().await` (`32B`: the driver packs what is queued together into batch frames;
//!   `32B unpacked`: packing off, one secret-stream message per frame as JS writes them) or
//!   `send_now` in corked groups of 64 (`32B corked x64`), and 256 messages of 64 KiB
//!   (`64KiB`, 16 MiB per iteration).
//!
//! The JS counterpart is `tests/interop/bench/protomux.js`.

use std::hint::black_box;

use corenet_mux::{Channel, ChannelOptions, DriverConfig, Event, Mux, MuxHandle};
use corenet_noise::{Config, KeyPair, SecretStream};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const SMALL: usize = 32;
const BIG: usize = 64 * 1024;

/// Two cores with one paired channel each.
fn core_pair() -> (Mux, Mux, corenet_mux::ChannelId) {
    let mut a = Mux::default();
    let mut b = Mux::default();
    let o = ChannelOptions::new("bench");
    let ca = a.open_channel(&o).unwrap();
    b.open_channel(&o).unwrap();
    while let Some(f) = a.poll_transmit() {
        b.handle_frame(f).unwrap();
    }
    while let Some(f) = b.poll_transmit() {
        a.handle_frame(f).unwrap();
    }
    while a.poll_event().is_some() || b.poll_event().is_some() {}
    (a, b, ca)
}

fn deliver(a: &mut Mux, b: &mut Mux) -> usize {
    while let Some(f) = a.poll_transmit() {
        b.handle_frame(f).unwrap();
    }
    let mut n = 0;
    while let Some(e) = b.poll_event() {
        if let Event::Message { payload, .. } = e {
            n += 1;
            black_box(payload);
        }
    }
    n
}

fn core(c: &mut Criterion) {
    let mut g = c.benchmark_group("mux-core");
    let (mut a, mut b, ch) = core_pair();
    let small = [7u8; SMALL];
    g.throughput(Throughput::Elements(1024));
    g.bench_function("32B uncorked", |bench| {
        bench.iter(|| {
            for _ in 0..1024 {
                a.send(ch, 1, &small).unwrap();
            }
            assert_eq!(deliver(&mut a, &mut b), 1024);
        })
    });
    g.bench_function("32B corked", |bench| {
        bench.iter(|| {
            a.cork();
            for _ in 0..1024 {
                a.send(ch, 1, &small).unwrap();
            }
            a.uncork();
            assert_eq!(deliver(&mut a, &mut b), 1024);
        })
    });
    let big = vec![9u8; BIG];
    g.throughput(Throughput::Bytes((BIG * 16) as u64));
    g.bench_function("64KiB", |bench| {
        bench.iter(|| {
            for _ in 0..16 {
                a.send(ch, 1, &big).unwrap();
            }
            assert_eq!(deliver(&mut a, &mut b), 16);
        })
    });
    g.finish();
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Two muxes over secret streams over a duplex, with one paired channel.
async fn e2e_pair(config: DriverConfig) -> (MuxHandle, MuxHandle, Channel, Channel) {
    let (a, b) = tokio::io::duplex(256 * 1024);
    let (ka, kb) = (KeyPair::generate(), KeyPair::generate());
    let ta = tokio::spawn(async move {
        SecretStream::new(a, true, &ka, Config::default())
            .await
            .unwrap()
    });
    let sb = SecretStream::new(b, false, &kb, Config::default())
        .await
        .unwrap();
    let sa = ta.await.unwrap();
    let ma = MuxHandle::spawn(sa, config.clone());
    let mb = MuxHandle::spawn(sb, config);
    let o = ChannelOptions::new("bench");
    let ca = ma.open(&o).unwrap();
    let cb = mb.open(&o).unwrap();
    ca.opened().await.unwrap();
    cb.opened().await.unwrap();
    (ma, mb, ca, cb)
}

fn e2e(c: &mut Criterion) {
    let rt = rt();
    let (ma, _mb, ca, mut cb) = rt.block_on(e2e_pair(DriverConfig::default()));
    let (_ua, _ub, ua, mut ub) = rt.block_on(e2e_pair(DriverConfig::default().with_packing(false)));
    let mut g = c.benchmark_group("mux-e2e");
    g.sample_size(20);
    const N: usize = 10_000;
    let small = [7u8; SMALL];
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("32B", |bench| {
        bench.iter(|| {
            rt.block_on(async {
                let send = async {
                    for _ in 0..N {
                        ca.send(1, &small).await.unwrap();
                    }
                };
                let recv = async {
                    for _ in 0..N {
                        black_box(cb.recv().await.unwrap());
                    }
                };
                tokio::join!(send, recv);
            })
        })
    });
    g.bench_function("32B unpacked", |bench| {
        bench.iter(|| {
            rt.block_on(async {
                let send = async {
                    for _ in 0..N {
                        ua.send(1, &small).await.unwrap();
                    }
                };
                let recv = async {
                    for _ in 0..N {
                        black_box(ub.recv().await.unwrap());
                    }
                };
                tokio::join!(send, recv);
            })
        })
    });
    g.bench_function("32B corked x64", |bench| {
        bench.iter(|| {
            rt.block_on(async {
                let send = async {
                    for _ in 0..N / 64 {
                        {
                            let _cork = ma.cork();
                            for _ in 0..64 {
                                ca.send_now(1, &small).unwrap();
                            }
                        }
                        // Let the driver and the receiver run between groups.
                        tokio::task::yield_now().await;
                    }
                };
                let recv = async {
                    for _ in 0..(N / 64) * 64 {
                        black_box(cb.recv().await.unwrap());
                    }
                };
                tokio::join!(send, recv);
            })
        })
    });
    const PER_ITER: usize = 256;
    let big = vec![9u8; BIG];
    g.throughput(Throughput::Bytes((BIG * PER_ITER) as u64));
    g.bench_function("64KiB", |bench| {
        bench.iter(|| {
            rt.block_on(async {
                let send = async {
                    for _ in 0..PER_ITER {
                        ca.send(1, &big).await.unwrap();
                    }
                };
                let recv = async {
                    for _ in 0..PER_ITER {
                        black_box(cb.recv().await.unwrap());
                    }
                };
                tokio::join!(send, recv);
            })
        })
    });
    g.finish();
}

#[allow(missing_docs)] // generated by criterion
mod harness {
    use super::*;
    criterion_group!(benches, core, e2e);
}
criterion_main!(harness::benches);
