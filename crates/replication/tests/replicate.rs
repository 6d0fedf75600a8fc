//! Rust-to-Rust replication over in-memory secret streams.

use std::time::Duration;

use corenet_mux::{DriverConfig, MuxHandle};
use corenet_noise::{Config, KeyPair, SecretStream};
use corenet_replication::{Hypercore, MemoryStorage, ReplicatorConfig};
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
    let mut d = r.download(0..2000);
    timeout(WAIT, d.done()).await.unwrap().unwrap();
    assert_eq!(r.contiguous_len(), 2000);
    assert_eq!(r.tree_hash(), w.tree_hash());
    for i in [0u64, 999, 1999] {
        assert_eq!(r.get(i).unwrap().unwrap(), w.get(i).unwrap().unwrap());
    }
}

// One thread: nothing moves between `replicate` and `update`, so the update is the one that
// sees the writer's tree arrive.
#[tokio::test(flavor = "current_thread")]
async fn update_is_true_once_then_false() {
    let w = writer(10, 100);
    let r = reader_of(&w);
    let (a, b) = pair().await;
    w.replicate(&a).unwrap();
    r.replicate(&b).unwrap();
    assert!(timeout(WAIT, r.update()).await.unwrap().unwrap());
    assert_eq!(r.len(), 10);
    assert!(!timeout(WAIT, r.update()).await.unwrap().unwrap());
    // No peers: nothing newer.
    let lonely = reader_of(&w);
    assert!(!timeout(WAIT, lonely.update()).await.unwrap().unwrap());
    // A writer never looks for updates.
    assert!(!w.update().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_append_reaches_update() {
    let w = writer(3, 100);
    let r = reader_of(&w);
    let (a, b) = pair().await;
    w.replicate(&a).unwrap();
    r.replicate(&b).unwrap();
    assert_eq!(
        timeout(WAIT, r.wait_for_length(3)).await.unwrap().unwrap(),
        3
    );
    // Nothing newer: update says so once the writer has told its length.
    assert!(!timeout(WAIT, r.update()).await.unwrap().unwrap());
    // A follower with an open-ended download gets every new block.
    let live = r.download(0..);
    let mut progress = live.progress();
    for round in 0..5u64 {
        w.append([vec![round as u8; 10], vec![round as u8; 20]])
            .unwrap();
        let want = 3 + 2 * (round + 1);
        timeout(WAIT, r.wait_for_length(want))
            .await
            .unwrap()
            .unwrap();
        timeout(WAIT, progress.wait_for(|p| p.blocks == want))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.get(want - 1).unwrap().unwrap().len(), 20);
    }
    assert!(!live.is_complete());
    // update() reports growth it sees: after an append, calling it until the length shows
    // up terminates (it resolves false while the writer's sync is still on its way, and
    // true when it catches the upgrade in flight).
    w.append([&b"last"[..]]).unwrap();
    timeout(WAIT, async {
        while r.len() < 14 {
            let _ = r.update().await.unwrap();
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    timeout(WAIT, r.wait_for_length(14)).await.unwrap().unwrap();
    assert_eq!(
        timeout(WAIT, r.fetch(13)).await.unwrap().unwrap(),
        bytes::Bytes::from_static(b"last")
    );
    drop(live);
}

/// A full copy of `w` (every block and the signed head), made with proofs.
fn replica(w: &Hypercore) -> Hypercore {
    use corenet_replication::{ProofRequest, RequestBlock, RequestUpgrade};
    let r = Hypercore::open_by_key(MemoryStorage::new(), w.key(), w.manifest()).unwrap();
    let head = w
        .create_proof(&ProofRequest {
            upgrade: Some(RequestUpgrade {
                start: 0,
                length: w.len(),
            }),
            ..ProofRequest::default()
        })
        .unwrap()
        .unwrap();
    r.verify_and_apply(&head).unwrap();
    for i in 0..w.len() {
        let nodes = r.missing_nodes(2 * i).unwrap();
        let p = w
            .create_proof(&ProofRequest {
                block: Some(RequestBlock { index: i, nodes }),
                ..ProofRequest::default()
            })
            .unwrap()
            .unwrap();
        r.verify_and_apply(&p).unwrap();
    }
    assert_eq!(r.contiguous_len(), w.len());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_spread_over_peers() {
    let w = writer(600, 2048);
    let seeders = [w.clone(), replica(&w), replica(&w)];
    let r = reader_of(&w);
    // Few request slots per peer, so that one peer cannot take the whole range at once.
    r.set_replicator_config(ReplicatorConfig::default().with_max_inflight(16));
    let mut muxes = Vec::new();
    for s in &seeders {
        let (a, b) = pair().await;
        s.replicate(&a).unwrap();
        r.replicate(&b).unwrap();
        muxes.push((a, b));
    }
    timeout(WAIT, async {
        while r.peers().len() < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    timeout(WAIT, r.wait_for_length(600))
        .await
        .unwrap()
        .unwrap();
    let mut d = r.download(0..600);
    timeout(WAIT, d.done()).await.unwrap().unwrap();
    // Blocks are stored (and the download complete) a moment before their requests are
    // accounted for.
    timeout(WAIT, async {
        while r.peers().iter().map(|p| p.downloaded_blocks).sum::<u64>() < 600 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    let peers = r.peers();
    assert_eq!(peers.len(), 3);
    let total: u64 = peers.iter().map(|p| p.downloaded_blocks).sum();
    assert_eq!(total, 600, "{peers:?}");
    for p in &peers {
        assert!(p.downloaded_blocks > 0, "a peer got no requests: {peers:?}");
        assert_eq!(p.downloaded_bytes, p.downloaded_blocks * 2048);
    }
    // The seeders counted what they sent.
    let uploaded: u64 = seeders
        .iter()
        .flat_map(|s| s.peers())
        .map(|p| p.uploaded_blocks)
        .sum();
    assert_eq!(uploaded, 600);
    for i in (0..600).step_by(37) {
        assert_eq!(r.get(i).unwrap(), w.get(i).unwrap());
    }
}

/// Opens `core`'s channel on `mux` by hand, with the capability computed for `key`.
async fn open_by_hand(
    mux: &MuxHandle,
    dk: corenet_codec::DiscoveryKey,
    key: &[u8; 32],
) -> corenet_mux::Channel {
    use corenet_replication::messages::Handshake;
    use corenet_replication::replicator::{PROTOCOL, PROTOCOL_ALIAS};
    let info = mux.stream_info();
    let capability = corenet_replication::caps::replication_capability(
        info.is_initiator,
        key,
        &info.handshake_hash,
    );
    let opts = corenet_mux::ChannelOptions::new(PROTOCOL)
        .with_id(bytes::Bytes::copy_from_slice(dk.as_bytes()))
        .with_aliases([PROTOCOL_ALIAS])
        .with_handshake_encoded(&Handshake {
            seeks: true,
            capability,
        });
    mux.open(&opts).unwrap()
}

/// A malicious seeder speaking the protocol by hand: it announces `w`'s head and answers
/// every request with `w`'s real proof, but with a byte of the block flipped. Returns the
/// number of tampered answers it sent and why its channel closed.
async fn malicious_seeder(w: Hypercore, mux: MuxHandle) -> (u64, corenet_mux::CloseReason) {
    use corenet_replication::messages::{
        Data, Message, Range, Sync, MSG_DATA, MSG_RANGE, MSG_SYNC,
    };
    let mut ch = open_by_hand(&mux, w.discovery_key(), w.key().as_bytes()).await;
    ch.opened().await.unwrap();
    let sync = Sync {
        fork: 0,
        length: w.len(),
        remote_length: 0,
        can_upgrade: true,
        uploading: true,
        downloading: true,
        has_manifest: true,
        allow_push: false,
    };
    let range = Range {
        drop: false,
        start: 0,
        length: w.len(),
    };
    // The range first: a reader that wants a block then asks for it together with the
    // upgrade as soon as the sync arrives.
    ch.send_encoded(MSG_RANGE, &range).await.unwrap();
    ch.send_encoded(MSG_SYNC, &sync).await.unwrap();
    let mut tampered = 0;
    while let Some(m) = ch.recv().await {
        let Ok(Some(Message::Request(r))) = Message::decode(m.message_type, &m.payload) else {
            continue;
        };
        let Ok(Some(mut proof)) = w.create_proof(&r.proof) else {
            continue;
        };
        if let Some(b) = proof.block.as_mut() {
            let mut v = b.value.to_vec();
            v[0] ^= 1;
            b.value = v.into();
            tampered += 1;
        }
        let data = Data {
            request: r.id,
            proof,
        };
        if ch.send_encoded(MSG_DATA, &data).await.is_err() {
            break;
        }
    }
    (tampered, ch.closed().await)
}

// One thread, so that the fetch registers its want before the peer connects: the first
// request then carries the block together with the upgrade, and the tampered answer must
// leave the core untouched (no block, no tree).
#[tokio::test(flavor = "current_thread")]
async fn bad_proof_drops_the_peer_and_stores_nothing() {
    let w = writer(50, 512);
    let r = reader_of(&w);
    let fetch = tokio::spawn({
        let r = r.clone();
        async move { r.fetch(7).await }
    });
    tokio::task::yield_now().await;
    let (a, b) = pair().await;
    r.replicate(&b).unwrap();
    let evil = tokio::spawn(malicious_seeder(w.clone(), a.clone()));
    let (tampered, reason) = timeout(WAIT, evil).await.unwrap().unwrap();
    assert_eq!(tampered, 1);
    assert_eq!(reason, corenet_mux::CloseReason::Remote);
    // Nothing of the tampered proof was stored: not the block, not the upgrade it carried.
    assert_eq!(r.len(), 0);
    assert!(r.bitfield().is_empty());
    assert!(r.peers().is_empty());
    assert!(!fetch.is_finished());

    // An honest peer connects: the waiting fetch completes from it, with the real bytes.
    let (c, d) = pair().await;
    r.replicate(&d).unwrap();
    w.replicate(&c).unwrap();
    let block = timeout(WAIT, fetch).await.unwrap().unwrap().unwrap();
    assert_eq!(block, w.get(7).unwrap().unwrap());
    assert_eq!(r.tree_hash(), w.tree_hash());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_survives_a_malicious_peer() {
    let w = writer(400, 1024);
    let r = reader_of(&w);
    // Few request slots per peer, so that both peers are asked.
    r.set_replicator_config(ReplicatorConfig::default().with_max_inflight(16));
    // Honest first, so that both peers are asked for blocks.
    let (a, b) = pair().await;
    w.replicate(&a).unwrap();
    r.replicate(&b).unwrap();
    timeout(WAIT, r.wait_for_length(400))
        .await
        .unwrap()
        .unwrap();
    let (c, d) = pair().await;
    r.replicate(&d).unwrap();
    let evil = tokio::spawn(malicious_seeder(w.clone(), c.clone()));
    let mut dl = r.download(0..400);
    timeout(WAIT, dl.done()).await.unwrap().unwrap();
    let (tampered, reason) = timeout(WAIT, evil).await.unwrap().unwrap();
    assert!(tampered >= 1, "the malicious peer was never asked");
    assert_eq!(reason, corenet_mux::CloseReason::Remote);
    for i in 0..400 {
        assert_eq!(r.get(i).unwrap(), w.get(i).unwrap(), "block {i}");
    }
    assert_eq!(r.peers().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_key_alone_gets_nothing() {
    let w = writer(10, 100);
    let (a, b) = pair().await;
    w.replicate(&a).unwrap();
    // The eavesdropper knows the discovery key but not the key: its capability is wrong.
    let mut ch = open_by_hand(&b, w.discovery_key(), &[9; 32]).await;
    let mut received = 0;
    while let Some(_m) = timeout(WAIT, ch.recv()).await.unwrap() {
        received += 1;
    }
    assert_eq!(
        received, 0,
        "the writer sent something to a peer without the key"
    );
    assert_eq!(ch.close_reason(), Some(corenet_mux::CloseReason::Remote));
    assert!(w.peers().is_empty());

    // With the key the same connection works: a reader opened later gets the block.
    let r = reader_of(&w);
    r.replicate(&b).unwrap();
    let block = timeout(WAIT, r.fetch(3)).await.unwrap().unwrap();
    assert_eq!(&block[..], &[3u8; 100][..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_reader_takes_the_writers_newer_fork() {
    let w = writer(10, 100);
    w.truncate(5).unwrap();
    w.append([&b"new-5"[..], &b"new-6"[..], &b"new-7"[..]])
        .unwrap();
    assert_eq!((w.fork(), w.len()), (1, 8));
    let r = reader_of(&w);
    let (a, b) = pair().await;
    w.replicate(&a).unwrap();
    r.replicate(&b).unwrap();
    let block = timeout(WAIT, r.fetch(7)).await.unwrap().unwrap();
    assert_eq!(block, &b"new-7"[..]);
    assert_eq!((r.fork(), r.len()), (1, 8));
    assert_eq!(r.tree_hash(), w.tree_hash());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_follows_the_writer_through_a_truncation() {
    let w = writer(40, 100);
    let r = reader_of(&w);
    let (a, b) = pair().await;
    w.replicate(&a).unwrap();
    r.replicate(&b).unwrap();
    let live = r.download(0..);
    let mut progress = live.progress();
    timeout(WAIT, progress.wait_for(|p| p.blocks == 40))
        .await
        .unwrap()
        .unwrap();
    // The writer drops its last 15 blocks and writes others.
    w.truncate(25).unwrap();
    w.append((0..5).map(|i| format!("fork-1 block {i}").into_bytes()))
        .unwrap();
    assert_eq!((w.fork(), w.len()), (1, 30));
    // The reader finds the shared prefix (25 blocks), switches, and downloads the rest.
    let mut status = r.status();
    timeout(WAIT, status.wait_for(|s| s.fork == 1 && s.length == 30))
        .await
        .unwrap()
        .unwrap();
    timeout(WAIT, progress.wait_for(|p| p.blocks == 30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.tree_hash(), w.tree_hash());
    for i in 0..30 {
        assert_eq!(r.get(i).unwrap(), w.get(i).unwrap(), "block {i}");
    }
    assert!(r.get(30).unwrap().is_none());
    drop(live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_flooding_requests_is_dropped() {
    use corenet_replication::messages::{Request, MSG_REQUEST};
    use corenet_replication::{ProofRequest, RequestBlock};
    let w = writer(10, 100);
    w.set_replicator_config(ReplicatorConfig::default().with_max_remote_requests(50));
    let (a, b) = pair().await;
    w.replicate(&a).unwrap();
    let mut ch = open_by_hand(&b, w.discovery_key(), w.key().as_bytes()).await;
    timeout(WAIT, ch.opened()).await.unwrap().unwrap();
    // Far more requests than the writer queues, sent at once (they arrive together).
    let _cork = b.cork();
    for id in 1..=1000u64 {
        let req = Request {
            id,
            priority: 0,
            proof: ProofRequest {
                block: Some(RequestBlock {
                    index: id % 10,
                    nodes: 0,
                }),
                ..ProofRequest::default()
            },
        };
        ch.send_encoded_now(MSG_REQUEST, &req).unwrap();
    }
    drop(_cork);
    let reason = timeout(WAIT, async {
        while ch.recv().await.is_some() {}
        ch.close_reason()
    })
    .await
    .unwrap();
    assert_eq!(reason, Some(corenet_mux::CloseReason::Remote));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_invalid_requests_is_answered_then_dropped() {
    use corenet_replication::messages::MSG_REQUEST;
    use corenet_replication::messages::{Message, Request, RequestUpgrade, INVALID_REQUEST};
    use corenet_replication::replicator::MAX_INVALID_REQUESTS;
    use corenet_replication::{ProofRequest, RequestBlock};
    let w = writer(10, 100);
    let (a, b) = pair().await;
    w.replicate(&a).unwrap();
    let mut ch = open_by_hand(&b, w.discovery_key(), w.key().as_bytes()).await;
    timeout(WAIT, ch.opened()).await.unwrap().unwrap();
    // A block we have with an upgrade far beyond our 10 blocks: a remote fault each.
    let sent = u64::from(MAX_INVALID_REQUESTS) + 16;
    for id in 1..=sent {
        let req = Request {
            id,
            priority: 0,
            proof: ProofRequest {
                block: Some(RequestBlock { index: 5, nodes: 0 }),
                upgrade: Some(RequestUpgrade {
                    start: 0,
                    length: 1000,
                }),
                ..ProofRequest::default()
            },
        };
        ch.send_encoded_now(MSG_REQUEST, &req).unwrap();
    }
    let answered = timeout(WAIT, async {
        let mut answered = Vec::new();
        while let Some(m) = ch.recv().await {
            if let Ok(Some(Message::NoData(n))) = Message::decode(m.message_type, &m.payload) {
                assert_eq!(n.reason, INVALID_REQUEST);
                answered.push(n.request);
            }
        }
        answered
    })
    .await
    .unwrap();
    assert_eq!(
        answered,
        (1..u64::from(MAX_INVALID_REQUESTS)).collect::<Vec<_>>(),
        "the first {} are answered",
        MAX_INVALID_REQUESTS - 1
    );
    assert_eq!(ch.close_reason(), Some(corenet_mux::CloseReason::Remote));
}
