//! Proofs fed to verification (`Hypercore::verify_and_apply`): what a replication peer sends
//! in `data` messages, checked against a core we replicate.
//!
//! A writer core (fixed key) holds 10 blocks; a signed upgrade proof was taken when it had 5.
//! Each run opens an empty read-only replica by key, optionally applies that honest 5-block
//! upgrade first, and then verifies one proof:
//! - mode byte even: the rest is a `data` message payload (decoded as the replicator does);
//! - mode byte odd: an honest proof for a fuzzer-chosen request, encoded, with up to eight
//!   fuzzer-chosen byte flips, then decoded.
//!
//! Invariants: no panic; an unmodified honest proof verifies; whatever verifies leaves the
//! replica consistent with the writer: its length is 0, 5 or 10 with the writer's tree hash
//! at that length, and every block it holds is the writer's block.
#![no_main]

use std::sync::OnceLock;

use corenet_codec::{decode_exact, to_vec};
use corenet_noise::KeyPair;
use corenet_replication::messages::{
    Data, Proof, ProofRequest, RequestBlock, RequestSeek, RequestUpgrade,
};
use corenet_replication::{CoreKind, Hypercore, Manifest, MemoryStorage};
use libfuzzer_sys::fuzz_target;

const BLOCKS: u64 = 10;
const EARLY: u64 = 5;

struct Fixture {
    writer: Hypercore,
    manifest: Manifest,
    /// The signed upgrade from 0 to `EARLY` blocks.
    early: Proof,
    early_hash: [u8; 32],
    blocks: Vec<Vec<u8>>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let kp = KeyPair::from_seed([5; 32]);
        let manifest = Manifest::default_signer(kp.public_key());
        let writer =
            Hypercore::create(MemoryStorage::new(), kp, CoreKind::V1).expect("writer core");
        let blocks: Vec<Vec<u8>> = (0..BLOCKS)
            .map(|i| vec![i as u8; 1 + (i as usize * 37) % 300])
            .collect();
        writer
            .append(
                blocks[..EARLY as usize]
                    .iter()
                    .map(|b| bytes::Bytes::from(b.clone())),
            )
            .expect("append");
        let req = ProofRequest {
            upgrade: Some(RequestUpgrade {
                start: 0,
                length: EARLY,
            }),
            manifest: true,
            ..ProofRequest::default()
        };
        let early = writer.create_proof(&req).expect("proof").expect("a proof");
        let early_hash = writer.tree_hash();
        writer
            .append(
                blocks[EARLY as usize..]
                    .iter()
                    .map(|b| bytes::Bytes::from(b.clone())),
            )
            .expect("append");
        Fixture {
            writer,
            manifest,
            early,
            early_hash,
            blocks,
        }
    })
}

fn request(b: &[u8]) -> ProofRequest {
    let g = |i: usize| b.get(i).copied().unwrap_or(0);
    let flags = g(0);
    let start = u64::from(g(4)) % (BLOCKS + 2);
    ProofRequest {
        fork: u64::from(flags >> 6 == 3),
        block: (flags & 1 != 0).then(|| RequestBlock {
            index: u64::from(g(1)) % (BLOCKS + 2),
            nodes: u64::from(g(2)) % 8,
        }),
        hash: (flags & 2 != 0).then(|| RequestBlock {
            index: u64::from(g(3)) % (2 * BLOCKS + 2),
            nodes: u64::from(g(2)) % 8,
        }),
        seek: (flags & 4 != 0).then(|| RequestSeek {
            bytes: u64::from(g(5)) * 8,
            padding: 0,
        }),
        upgrade: (flags & 8 != 0).then(|| RequestUpgrade {
            start,
            length: (u64::from(g(6)) % (BLOCKS + 2)).max(1),
        }),
        manifest: flags & 16 != 0,
    }
}

fn check_replica(f: &Fixture, replica: &Hypercore) {
    match replica.len() {
        0 => {}
        EARLY => assert_eq!(replica.tree_hash(), f.early_hash, "forged 5-block tree"),
        BLOCKS => assert_eq!(replica.tree_hash(), f.writer.tree_hash(), "forged tree"),
        n => panic!("replica has an unsigned length {n}"),
    }
    for i in 0..BLOCKS {
        if replica.has(i) {
            let got = replica.get(i).expect("stored block reads").expect("has(i)");
            assert_eq!(&got[..], &f.blocks[i as usize][..], "forged block {i}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let with_manifest = mode & 2 != 0;
    let replica = Hypercore::open_by_key(
        MemoryStorage::new(),
        f.writer.key(),
        with_manifest.then(|| f.manifest.clone()),
    )
    .expect("replica");
    if mode & 4 != 0 {
        replica
            .verify_and_apply(&f.early)
            .expect("the honest early upgrade applies");
    }
    if mode & 1 == 0 {
        if let Ok(d) = corenet_codec::decode_bytes::<Data>(&bytes::Bytes::copy_from_slice(rest)) {
            let _ = replica.verify_and_apply(&d.proof);
        }
        check_replica(f, &replica);
        return;
    }
    let (req_bytes, flips) = rest.split_at(rest.len().min(8));
    let req = request(req_bytes);
    let Ok(Some(proof)) = f.writer.create_proof(&req) else {
        return;
    };
    let mut bytes = to_vec(&Data {
        request: 1,
        proof: proof.clone(),
    });
    let mut flipped = false;
    for pair in flips.chunks_exact(3).take(8) {
        let pos = usize::from(u16::from_le_bytes([pair[0], pair[1]])) % bytes.len();
        if pair[2] != 0 {
            bytes[pos] ^= pair[2];
            flipped = true;
        }
    }
    let Ok(d) = decode_exact::<Data>(&bytes) else {
        return;
    };
    let result = replica.verify_and_apply(&d.proof);
    if !flipped || d.proof == proof {
        // An honest proof is accepted unless the replica cannot use it yet (a block or hash
        // beyond its length without an upgrade, an upgrade from a length it does not have).
        if let Err(e) = &result {
            let usable = req.upgrade.is_some_and(|u| u.start == replica.len())
                && req.block.is_none()
                && req.hash.is_none()
                && req.seek.is_none()
                && (with_manifest || req.manifest || mode & 4 != 0);
            assert!(!usable, "an honest upgrade proof was refused: {e}");
        }
    }
    check_replica(f, &replica);
});
