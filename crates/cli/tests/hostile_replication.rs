//! A hostile seeder against a running `corenet get`, black-box over real sockets: the
//! attacker holds a verified copy of a JS-compatible core (it downloaded it from the honest
//! seeder, as anyone with the key can), announces itself under the core's discovery key, and
//! answers every request with that copy's real proofs, damaged: a flipped block byte, a
//! flipped tree-node hash, a broken signature, or another core's proof.
//!
//! With only the attacker online, `get` must store nothing and end without writing its
//! output; with the honest seeder back and the attacker still there, it must download every
//! byte intact, and everything it counts as fetched must come after the attack (nothing the
//! attacker sent was stored).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::hostile::{client, hex32, runtime, Lab};
use common::{net_args, Proc};
use corenet_codec::{DiscoveryKey, PublicKey};
use corenet_dht::Dht;
use corenet_mux::{ChannelOptions, CloseReason, DriverConfig, MuxHandle};
use corenet_noise::KeyPair;
use corenet_replication::messages::{
    Data, Handshake, Message, Range, Sync, MSG_DATA, MSG_RANGE, MSG_SYNC,
};
use corenet_replication::replicator::{PROTOCOL, PROTOCOL_ALIAS};
use corenet_replication::{Hypercore, MemoryStorage};

/// What the attacker saw.
#[derive(Default)]
struct Tally {
    /// Damaged answers sent.
    tampered: AtomicU64,
    /// Channels the victim closed on us.
    closed_by_victim: AtomicU64,
}

/// Downloads the whole core from the honest seeder over a real connection.
async fn replica(dht: &Dht, seeder: PublicKey, key: PublicKey, blocks: u64) -> Hypercore {
    let c = dht
        .connect(&KeyPair::generate(), seeder, Vec::new())
        .await
        .expect("connect to the seeder");
    let mux = MuxHandle::spawn(c.stream, DriverConfig::default());
    let core = Hypercore::open_by_key(MemoryStorage::new(), key, None).unwrap();
    core.replicate(&mux).unwrap();
    tokio::time::timeout(Duration::from_secs(30), core.wait_for_length(blocks))
        .await
        .expect("the seeder's length")
        .unwrap();
    let mut dl = core.download(0..blocks);
    tokio::time::timeout(Duration::from_secs(30), dl.done())
        .await
        .expect("download from the seeder")
        .unwrap();
    core
}

/// Serves damaged proofs of `copy` on one connection.
async fn serve_damaged(copy: Hypercore, other: Hypercore, mux: MuxHandle, tally: Arc<Tally>) {
    let info = mux.stream_info();
    let capability = corenet_replication::caps::replication_capability(
        info.is_initiator,
        copy.key().as_bytes(),
        &info.handshake_hash,
    );
    let dk: DiscoveryKey = copy.discovery_key();
    let opts = ChannelOptions::new(PROTOCOL)
        .with_id(bytes::Bytes::copy_from_slice(dk.as_bytes()))
        .with_aliases([PROTOCOL_ALIAS])
        .with_handshake_encoded(&Handshake {
            seeks: true,
            capability,
        });
    let Ok(mut ch) = mux.open(&opts) else { return };
    if ch.opened().await.is_err() {
        return;
    }
    let len = copy.len();
    let sync = Sync {
        fork: 0,
        length: len,
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
        length: len,
    };
    if ch.send_encoded(MSG_RANGE, &range).await.is_err()
        || ch.send_encoded(MSG_SYNC, &sync).await.is_err()
    {
        return;
    }
    let mut n = 0u64;
    while let Some(m) = ch.recv().await {
        let Ok(Some(Message::Request(r))) = Message::decode(m.message_type, &m.payload) else {
            continue;
        };
        n += 1;
        // Four kinds of damage in turn; the fourth is another core's (valid) proof.
        let source = if n % 4 == 0 { &other } else { &copy };
        let Ok(Some(mut proof)) = source.create_proof(&r.proof) else {
            continue;
        };
        match n % 4 {
            1 => {
                if let Some(b) = proof.block.as_mut() {
                    let mut v = b.value.to_vec();
                    let mid = v.len() / 2;
                    v[mid] ^= 0x10;
                    b.value = v.into();
                }
            }
            2 => {
                if let Some(node) = proof.block.as_mut().and_then(|b| b.nodes.first_mut()) {
                    node.hash[0] ^= 1;
                } else if let Some(b) = proof.block.as_mut() {
                    b.value = bytes::Bytes::from_static(b"not the block");
                }
            }
            3 => match proof.upgrade.as_mut() {
                Some(u) => u.signature = Some(bytes::Bytes::from(vec![7u8; 64])),
                None => {
                    if let Some(b) = proof.block.as_mut() {
                        b.index = b.index.wrapping_add(1);
                    }
                }
            },
            _ => {}
        }
        tally.tampered.fetch_add(1, Ordering::Relaxed);
        let data = Data {
            request: r.id,
            proof,
        };
        if ch.send_encoded(MSG_DATA, &data).await.is_err() {
            break;
        }
    }
    if ch.closed().await == CloseReason::Remote {
        tally.closed_by_victim.fetch_add(1, Ordering::Relaxed);
    }
}

fn get(lab: &Lab, storage: &std::path::Path, out: &std::path::Path, timeout: &str) -> Proc {
    let mut args = net_args(storage, &lab.boot);
    args.extend([
        "get",
        lab.core_key.as_str(),
        out.to_str().unwrap(),
        "--timeout",
        timeout,
    ]);
    Proc::spawn(&args)
}

#[test]
fn a_seeder_of_damaged_proofs_gets_nothing_stored() {
    let mut lab = Lab::new();
    let rt = runtime();
    let boot = lab.boot_addr();
    let key = PublicKey(hex32(&lab.core_key));
    let seeder = KeyPair::from_seed(hex32(common::hostile::SHARER_SEED)).public_key();
    let blocks = lab.content.len().div_ceil(64 * 1024) as u64;
    let tally = Arc::new(Tally::default());

    // The attacker: a verified copy, and a server announced under the discovery key.
    let (dht, _server, _acceptor) = rt.block_on(async {
        let dht = client(boot).await;
        let copy = replica(&dht, seeder, key, blocks).await;
        let other = Hypercore::in_memory(KeyPair::generate()).unwrap();
        other
            .append((0..blocks).map(|i| vec![i as u8; 64 * 1024]))
            .unwrap();
        let kp = KeyPair::generate();
        let mut server = dht.listen(&kp, None).await.unwrap();
        let relays = server.relay_addresses().to_vec();
        dht.announce(copy.discovery_key().into(), &kp, relays)
            .await
            .unwrap();
        let tally = tally.clone();
        let acceptor = tokio::spawn(async move {
            while let Some(c) = server.accept().await {
                let mux = MuxHandle::spawn(c.stream, DriverConfig::default());
                tokio::spawn(serve_damaged(
                    copy.clone(),
                    other.clone(),
                    mux,
                    tally.clone(),
                ));
            }
        });
        (dht, (), acceptor)
    });

    // Only the attacker online: nothing stored, no output written.
    lab.kill_sharer();
    let storage = lab.dir.path().join("victim");
    let out = lab.dir.path().join("victim.bin");
    let mut victim = get(&lab, &storage, &out, "20");
    let status = victim.wait();
    assert!(!status.success(), "get succeeded from damaged proofs");
    assert!(!out.exists(), "get wrote its output from damaged proofs");
    let tampered = tally.tampered.load(Ordering::Relaxed);
    let closed = tally.closed_by_victim.load(Ordering::Relaxed);
    println!("damaged proofs: {tampered} sent, {closed} channels closed by the victim");
    assert!(tampered >= 1, "the victim never asked the attacker");
    assert!(closed >= 1, "the victim kept a channel to the attacker");

    // The honest seeder back, the attacker still online: every byte, all fetched now.
    lab.restart_sharer();
    let mut victim = get(&lab, &storage, &out, "60");
    let done = victim.line("done ");
    assert!(victim.wait().success());
    let len = lab.content.len();
    assert_eq!(done, format!("done {len} {blocks} fetched {len}"));
    assert!(
        std::fs::read(&out).unwrap() == lab.content,
        "the copy differs"
    );
    rt.block_on(dht.destroy());
}
