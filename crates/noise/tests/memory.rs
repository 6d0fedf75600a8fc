//! Memory: what an idle secret stream keeps, and what a frame announced but not sent costs
//! (alone in this binary, and one at a time, so that the heap counter sees only one test).

use std::future::poll_fn;
use std::task::Poll;

use corenet_noise::{Config, KeyPair, SecretStream, DEFAULT_MAX_FRAME_LEN};
use tokio::io::{AsyncWriteExt, DuplexStream};

/// Tests run on parallel threads; the heap counter is global, so they take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    let _serial = SERIAL.lock().await;
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

#[tokio::test]
async fn an_announced_16_mib_frame_grows_the_read_buffer_only_by_what_arrives() {
    let _serial = SERIAL.lock().await;
    let (mut a, mut b) = pair(1 << 20).await;
    // The stream headers are through.
    a.send(b"hi").await.unwrap();
    assert_eq!(&b.recv().await.unwrap().unwrap()[..], b"hi");
    // Under the default limit, announce the largest frame (16 MiB - 1) and send one byte.
    assert_eq!(DEFAULT_MAX_FRAME_LEN, 0xFF_FFFF);
    a.get_mut()
        .write_all(&[0xFF, 0xFF, 0xFF, 0x01])
        .await
        .unwrap();
    let before = live_bytes();
    let waiting = poll_fn(|cx| Poll::Ready(b.poll_recv(cx).is_pending())).await;
    let grown = live_bytes() - before;
    assert!(waiting, "the frame is incomplete: the reader waits");
    assert!(grown < 128 * 1024, "grew by {grown} B for 4 B of input");
}
