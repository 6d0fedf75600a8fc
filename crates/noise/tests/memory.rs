//! Memory: what an idle secret stream keeps (alone in this binary, so that the heap counter
//! sees only this test).

use corenet_noise::{Config, KeyPair, SecretStream};
use tokio::io::DuplexStream;

async fn pair(buf: usize) -> (SecretStream<DuplexStream>, SecretStream<DuplexStream>) {
    let (a, b) = tokio::io::duplex(buf);
    let (ka, kb) = (KeyPair::generate(), KeyPair::generate());
    let ta = tokio::spawn(async move { SecretStream::new(a, true, &ka, Config::default()).await });
    let sb = SecretStream::new(b, false, &kb, Config::default())
        .await
        .unwrap();
    (ta.await.unwrap().unwrap(), sb)
}

/// Counts this test binary's heap use (to see buffers released).
#[global_allocator]
static ALLOC: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

fn live_bytes() -> isize {
    let s = ALLOC.stats();
    s.bytes_allocated as isize - s.bytes_deallocated as isize + s.bytes_reallocated
}

#[tokio::test]
async fn an_idle_stream_can_release_its_write_buffer() {
    let (mut a, mut b) = pair(1 << 20).await;
    let big = vec![7u8; 64 * 1024];
    let reader = tokio::spawn(async move {
        let got = b.recv().await.unwrap().unwrap();
        (b, got)
    });
    a.send(&big).await.unwrap();
    let (mut b, got) = reader.await.unwrap();
    assert_eq!(&got[..], &big[..]);
    drop(got);
    let before = live_bytes();
    a.release_write_buffer();
    let after = live_bytes();
    assert!(before >= after + 64 * 1024, "{before} -> {after}");
    // It still works.
    a.send(b"small").await.unwrap();
    assert_eq!(&b.recv().await.unwrap().unwrap()[..], b"small");
}
