//! Extension messages end to end: two buses, each with one session over secret streams over a
//! tokio in-memory duplex, one `utf8` extension, 10,000 messages of a 32-byte string per
//! iteration from one side to the other (the rate limit is off: this measures the path, not
//! the policy).
//!
//! - `extensions/utf8 32B send -> stream`: [`Extension::send`] (no waiting, like JS
//!   `ext.send`) in groups of 64 with a yield between groups; received from a
//!   [`Extension::messages`] stream.
//! - `extensions/utf8 32B send -> on_message`: the same, received by an `on_message` handler.
//! - `extensions/utf8 32B send_when_open -> stream`: [`Extension::send_when_open`] one by
//!   one (each waits for room in the connection's send buffer).
//! - `extensions/json 32B send -> stream`: a `{ "n": u64, "s": String }` value of about 32
//!   bytes of JSON, each way through serde.
//!
//! Everything but the bus runs on the bench's current-thread runtime (both mux drivers, the
//! senders, the stream readers); the buses' slot tasks (decode, dispatch) run on the bus
//! thread. The JS counterpart is `tests/interop/bench/extensions.js`.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use corenet_extensions::{Extension, ExtensionOptions, Extensions, Peer, RateLimit, Utf8};
use corenet_mux::{DriverConfig, MuxHandle};
use corenet_noise::{Config, KeyPair, SecretStream};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

const N: usize = 10_000;
const GROUP: usize = 64;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Connects two buses; returns the receiver side's peer as the sender sees it.
async fn connect(a: &Extensions, b: &Extensions) -> Peer {
    let (x, y) = tokio::io::duplex(256 * 1024);
    let tx = tokio::spawn(async move {
        SecretStream::new(x, true, &KeyPair::generate(), Config::default())
            .await
            .unwrap()
    });
    let sy = SecretStream::new(y, false, &KeyPair::generate(), Config::default())
        .await
        .unwrap();
    let sx = tx.await.unwrap();
    let (ma, da) = MuxHandle::new(sx, DriverConfig::default());
    let (mb, db) = MuxHandle::new(sy, DriverConfig::default());
    let to_b = Peer::new(ma.stream_info().remote_public_key);
    a.add_session(to_b.clone(), ma).await.unwrap();
    b.add_session(Peer::new(mb.stream_info().remote_public_key), mb)
        .await
        .unwrap();
    tokio::spawn(da);
    tokio::spawn(db);
    to_b
}

fn options() -> ExtensionOptions<Utf8> {
    ExtensionOptions::utf8().with_rate_limit(RateLimit::unlimited())
}

async fn send_grouped<E>(ext: &Extension<E>, msg: &E::Input, to: &Peer)
where
    E: corenet_extensions::Encoding,
{
    for i in 0..N {
        ext.send(msg, to).unwrap();
        if i % GROUP == GROUP - 1 {
            tokio::task::yield_now().await;
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Small {
    n: u64,
    s: String,
}

fn bench(c: &mut Criterion) {
    let rt = rt();
    let msg = "0123456789abcdef0123456789abcdef";
    assert_eq!(msg.len(), 32);

    // Stream receiver.
    let (sa, sb) = (Extensions::new(), Extensions::new());
    let (ext_a, ext_b, to_b) = rt.block_on(async {
        let a = sa.register("bench", options()).await.unwrap();
        let b = sb.register("bench", options()).await.unwrap();
        let to_b = connect(&sa, &sb).await;
        a.opened(&to_b).await.unwrap();
        (a, b, to_b)
    });
    let mut inbox = ext_b.messages();

    // Handler receiver.
    let (ha, hb) = (Extensions::new(), Extensions::new());
    let count = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Notify::new());
    let (hext_a, _hext_b, h_to_b) = rt.block_on(async {
        let a = ha.register("bench", options()).await.unwrap();
        let (count, done) = (count.clone(), done.clone());
        let b = hb
            .register(
                "bench",
                options().on_message(move |m: String, _: &Peer| {
                    black_box(m);
                    if count.fetch_add(1, Ordering::AcqRel) + 1 == N {
                        done.notify_one();
                    }
                }),
            )
            .await
            .unwrap();
        let to_b = connect(&ha, &hb).await;
        a.opened(&to_b).await.unwrap();
        (a, b, to_b)
    });

    // JSON.
    let (ja, jb) = (Extensions::new(), Extensions::new());
    let json = || ExtensionOptions::json::<Small>().with_rate_limit(RateLimit::unlimited());
    let (jext_a, jext_b, j_to_b) = rt.block_on(async {
        let a = ja.register("bench", json()).await.unwrap();
        let b = jb.register("bench", json()).await.unwrap();
        let to_b = connect(&ja, &jb).await;
        a.opened(&to_b).await.unwrap();
        (a, b, to_b)
    });
    let mut jinbox = jext_b.messages();
    let small = Small {
        n: 1234,
        s: "0123456789abcdef".into(),
    };
    assert_eq!(serde_json::to_vec(&small).unwrap().len(), 33);

    let mut g = c.benchmark_group("extensions");
    g.sample_size(20);
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("utf8 32B send -> stream", |bench| {
        bench.iter(|| {
            rt.block_on(async {
                let recv = async {
                    for _ in 0..N {
                        black_box(inbox.recv().await.unwrap());
                    }
                };
                tokio::join!(send_grouped(&ext_a, msg, &to_b), recv);
            })
        })
    });
    g.bench_function("utf8 32B send -> on_message", |bench| {
        bench.iter(|| {
            rt.block_on(async {
                count.store(0, Ordering::Release);
                let finished = done.notified();
                send_grouped(&hext_a, msg, &h_to_b).await;
                finished.await;
            })
        })
    });
    g.bench_function("utf8 32B send_when_open -> stream", |bench| {
        bench.iter(|| {
            rt.block_on(async {
                let send = async {
                    for _ in 0..N {
                        ext_a.send_when_open(msg, &to_b).await.unwrap();
                    }
                };
                let recv = async {
                    for _ in 0..N {
                        black_box(inbox.recv().await.unwrap());
                    }
                };
                tokio::join!(send, recv);
            })
        })
    });
    g.bench_function("json 32B send -> stream", |bench| {
        bench.iter(|| {
            rt.block_on(async {
                let recv = async {
                    for _ in 0..N {
                        black_box(jinbox.recv().await.unwrap());
                    }
                };
                tokio::join!(send_grouped(&jext_a, &small, &j_to_b), recv);
            })
        })
    });
    g.finish();
}

#[allow(missing_docs)] // generated by criterion
mod harness {
    use super::*;
    criterion_group!(benches, bench);
}
criterion_main!(harness::benches);
