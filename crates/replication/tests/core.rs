//! Hypercore behaviour, Rust to Rust: appends, sparse replication through proofs, atomic
//! rejection, notifications, truncation and reorgs, persistence.

use std::time::Duration;

use bytes::Bytes;
use corenet_noise::KeyPair;
use corenet_replication::{
    CoreKind, DiskStorage, Error, Event, Hypercore, MemoryStorage, Proof, ProofError, ProofRequest,
    RequestBlock, RequestSeek, RequestUpgrade, SyncPolicy,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn blocks(n: u64, salt: u8) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let len = (i * 13 % 97) as usize;
            (0..len)
                .map(|j| {
                    (j as u8)
                        .wrapping_mul(7)
                        .wrapping_add(salt)
                        .wrapping_add(i as u8)
                })
                .collect()
        })
        .collect()
}

fn writer(n: u64, kind: CoreKind) -> Hypercore {
    let core = Hypercore::create(MemoryStorage::new(), KeyPair::from_seed([5; 32]), kind).unwrap();
    core.append(blocks(n, 0)).unwrap();
    core
}

fn upgrade(core: &Hypercore, start: u64) -> Proof {
    core.create_proof(&ProofRequest {
        fork: core.fork(),
        upgrade: Some(RequestUpgrade {
            start,
            length: core.len() - start,
        }),
        manifest: true,
        ..ProofRequest::default()
    })
    .unwrap()
    .unwrap()
}

/// The number of nodes a requester that holds only the roots of `len` blocks misses for
/// block `i` (`MerkleTree.maxMissingNodes`).
fn missing_nodes(i: u64, len: u64) -> u64 {
    use corenet_replication::flat;
    let idx = 2 * i;
    let root = flat::full_roots(2 * len)
        .find(|r| flat::left_span(*r) <= idx && idx <= flat::right_span(*r))
        .unwrap();
    u64::from(flat::depth(root))
}

#[test]
fn random_sparse_replication_in_both_kinds() {
    for kind in [CoreKind::V1, CoreKind::Compat] {
        for len in [1u64, 2, 3, 7, 16, 33, 100] {
            let w = writer(len, kind);
            let r = Hypercore::open_by_key(MemoryStorage::new(), w.key(), None).unwrap();
            r.verify_and_apply(&upgrade(&w, 0)).unwrap();
            assert_eq!(
                (r.len(), r.byte_len(), r.tree_hash()),
                (w.len(), w.byte_len(), w.tree_hash())
            );
            assert_eq!(r.manifest(), w.manifest());
            let mut rng = ChaCha8Rng::seed_from_u64(len);
            let mut order: Vec<u64> = (0..len).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, rng.gen_range(0..=i));
            }
            for i in 0..len {
                assert_eq!(
                    corenet_replication::tree::max_missing_nodes(2 * i, len),
                    missing_nodes(i, len)
                );
            }
            for i in order {
                // Ask for exactly the nodes we miss, as the replicator does.
                let nodes = r.missing_nodes(2 * i).unwrap();
                assert!(nodes <= missing_nodes(i, len));
                let p = w
                    .create_proof(&ProofRequest {
                        block: Some(RequestBlock { index: i, nodes }),
                        ..ProofRequest::default()
                    })
                    .unwrap()
                    .unwrap();
                let applied = r.verify_and_apply(&p).unwrap();
                assert_eq!(applied.block, Some(i));
                assert_eq!(r.get(i).unwrap(), w.get(i).unwrap());
                // Asking again with `nodes: 0` now works: the reader stored the path.
                let p0 = w
                    .create_proof(&ProofRequest {
                        block: Some(RequestBlock { index: i, nodes: 0 }),
                        ..ProofRequest::default()
                    })
                    .unwrap()
                    .unwrap();
                r.verify_and_apply(&p0).unwrap();
            }
            assert_eq!(r.contiguous_len(), len);
            assert!(r.missing(0..len).is_empty());
        }
    }
}

#[test]
fn upgrades_in_steps_with_blocks_and_seeks() {
    let w = Hypercore::in_memory(KeyPair::from_seed([6; 32])).unwrap();
    let r = Hypercore::open_by_key(MemoryStorage::new(), w.key(), w.manifest()).unwrap();
    let mut appended = 0u64;
    for step in 1..20u64 {
        w.append(blocks(step, step as u8)).unwrap();
        let start = r.len();
        let len = w.len();
        // A block in the new range, proven with the upgrade.
        let i = start + (step * 7) % (len - start);
        let p = w
            .create_proof(&ProofRequest {
                block: Some(RequestBlock { index: i, nodes: 0 }),
                upgrade: Some(RequestUpgrade {
                    start,
                    length: len - start,
                }),
                ..ProofRequest::default()
            })
            .unwrap()
            .unwrap();
        let a = r.verify_and_apply(&p).unwrap();
        assert_eq!(a.upgraded, Some(len));
        assert_eq!(r.get(i).unwrap(), w.get(i).unwrap());
        appended += step;
        assert_eq!(r.len(), appended);
        assert_eq!(r.tree_hash(), w.tree_hash());
        assert_eq!(r.signature(), w.signature());
    }
    // Seek proofs verify and store the path to the block holding the byte.
    let bytes = w.byte_len() / 3;
    let p = w
        .create_proof(&ProofRequest {
            seek: Some(RequestSeek { bytes, padding: 0 }),
            upgrade: Some(RequestUpgrade {
                start: 0,
                length: w.len(),
            }),
            ..ProofRequest::default()
        })
        .unwrap()
        .unwrap();
    assert!(p.seek.is_some());
    r.verify_and_apply(&p).unwrap();
}

#[test]
fn bad_proofs_store_nothing() {
    let w = writer(40, CoreKind::V1);
    let r = Hypercore::open_by_key(MemoryStorage::new(), w.key(), None).unwrap();
    let full = upgrade(&w, 0);

    // An upgrade without the manifest cannot be checked by a v1 reader.
    let mut no_manifest = full.clone();
    no_manifest.manifest = None;
    let err = r.verify_and_apply(&no_manifest).unwrap_err();
    assert!(
        matches!(err, Error::InvalidProof(ProofError::Signature)),
        "{err}"
    );
    // A manifest for another key.
    let mut wrong = full.clone();
    wrong.manifest = Some(corenet_replication::Manifest::default_signer(
        KeyPair::from_seed([9; 32]).public_key(),
    ));
    assert!(matches!(
        r.verify_and_apply(&wrong).unwrap_err(),
        Error::InvalidProof(ProofError::Manifest)
    ));
    // A signature by someone else.
    let other = Hypercore::in_memory(KeyPair::from_seed([9; 32])).unwrap();
    other.append(blocks(40, 0)).unwrap();
    let mut forged = full.clone();
    forged.upgrade.as_mut().unwrap().signature = other.signature();
    assert!(matches!(
        r.verify_and_apply(&forged).unwrap_err(),
        Error::InvalidProof(ProofError::Signature)
    ));
    assert_eq!(r.len(), 0);
    assert!(r.manifest().is_none());

    r.verify_and_apply(&full).unwrap();
    let p = w
        .create_proof(&ProofRequest {
            block: Some(RequestBlock {
                index: 9,
                nodes: missing_nodes(9, 40),
            }),
            ..ProofRequest::default()
        })
        .unwrap()
        .unwrap();
    // Wrong index for the same value and nodes.
    let mut moved = p.clone();
    moved.block.as_mut().unwrap().index = 8;
    assert!(r.verify_and_apply(&moved).unwrap_err().is_remote_fault());
    // Too few nodes.
    let mut short = p.clone();
    short.block.as_mut().unwrap().nodes.pop();
    assert!(r.verify_and_apply(&short).unwrap_err().is_remote_fault());
    // A node swapped for a wrong one.
    let mut swapped = p.clone();
    swapped.block.as_mut().unwrap().nodes[0].hash = [0; 32];
    assert!(r.verify_and_apply(&swapped).unwrap_err().is_remote_fault());
    assert!(!r.has(9) && r.tree_node(18).unwrap().is_none());
    // Wrong fork.
    let mut forked = p.clone();
    forked.fork = 1;
    assert!(matches!(
        r.verify_and_apply(&forked).unwrap_err(),
        Error::ForkMismatch {
            local: 0,
            remote: 1
        }
    ));
    assert!(r.bitfield().is_empty());
    r.verify_and_apply(&p).unwrap();
    assert!(r.has(9));
}

#[test]
fn verified_proofs_go_stale_when_the_core_moves() {
    let w = writer(10, CoreKind::V1);
    let r = Hypercore::open_by_key(MemoryStorage::new(), w.key(), w.manifest()).unwrap();
    let first = r.verify_proof(&upgrade(&w, 0)).unwrap();
    let second = r.verify_proof(&upgrade(&w, 0)).unwrap();
    r.apply(first).unwrap();
    assert!(matches!(r.apply(second), Err(Error::Stale)));
    assert_eq!(r.len(), 10);
}

#[test]
fn requests_that_cannot_be_answered() {
    let w = writer(10, CoreKind::V1);
    let bad = |req: ProofRequest| w.create_proof(&req);
    // Another fork: nothing, unless the manifest was asked for.
    assert!(bad(ProofRequest {
        fork: 3,
        ..ProofRequest::default()
    })
    .unwrap()
    .is_none());
    let m = bad(ProofRequest {
        fork: 3,
        manifest: true,
        ..ProofRequest::default()
    })
    .unwrap()
    .unwrap();
    assert!(m.manifest.is_some() && m.block.is_none() && m.upgrade.is_none());
    // A block we do not have.
    assert!(bad(ProofRequest {
        block: Some(RequestBlock {
            index: 10,
            nodes: 0
        }),
        ..ProofRequest::default()
    })
    .unwrap()
    .is_none());
    // Malformed.
    for req in [
        ProofRequest {
            upgrade: Some(RequestUpgrade {
                start: 5,
                length: 6,
            }),
            ..ProofRequest::default()
        },
        ProofRequest {
            upgrade: Some(RequestUpgrade {
                start: 5,
                length: 0,
            }),
            ..ProofRequest::default()
        },
        ProofRequest {
            upgrade: Some(RequestUpgrade {
                start: u64::MAX,
                length: 2,
            }),
            ..ProofRequest::default()
        },
        ProofRequest {
            block: Some(RequestBlock {
                index: 1,
                nodes: u64::MAX,
            }),
            ..ProofRequest::default()
        },
        ProofRequest {
            hash: Some(RequestBlock {
                index: u64::MAX,
                nodes: 0,
            }),
            ..ProofRequest::default()
        },
        ProofRequest {
            seek: Some(RequestSeek {
                bytes: u64::MAX,
                padding: 0,
            }),
            block: Some(RequestBlock { index: 0, nodes: 3 }),
            ..ProofRequest::default()
        },
    ] {
        assert!(matches!(bad(req), Err(Error::InvalidRequest(_))), "{req:?}");
    }
}

/// Found by the `hypercore_proof` fuzz target: a hash inside the upgraded range together
/// with a seek into a later root sent proof generation up the tree from a node outside the
/// proof root until the flat-tree span overflowed (a panic with overflow checks on). A remote
/// `request` must get `INVALID_REQUEST`, not crash the uploader.
#[test]
fn a_hash_outside_the_seek_root_is_refused() {
    let w = writer(10, CoreKind::V1);
    // Blocks 0..8 (root 7) hold 364 bytes; byte 367 is in block 8, under root 17.
    let req = ProofRequest {
        hash: Some(RequestBlock {
            index: 11,
            nodes: 3,
        }),
        seek: Some(RequestSeek {
            bytes: 367,
            padding: 0,
        }),
        upgrade: Some(RequestUpgrade {
            start: 7,
            length: 3,
        }),
        ..ProofRequest::default()
    };
    assert!(
        matches!(w.create_proof(&req), Err(Error::InvalidRequest(_))),
        "{:?}",
        w.create_proof(&req)
    );
}

#[test]
fn events_and_status_report_changes() {
    let w = Hypercore::in_memory(KeyPair::generate()).unwrap();
    let mut events = w.events();
    let status = w.status();
    w.append([&b"a"[..], b"b"]).unwrap();
    assert_eq!(
        events.try_recv().unwrap(),
        Event::Upgraded { length: 2, fork: 0 }
    );
    assert_eq!(
        events.try_recv().unwrap(),
        Event::Have {
            start: 0,
            length: 2
        }
    );
    assert_eq!(status.borrow().length, 2);
    assert_eq!(status.borrow().contiguous_length, 2);
    w.truncate(1).unwrap();
    assert_eq!(
        events.try_recv().unwrap(),
        Event::Truncated {
            ancestors: 1,
            length: 1,
            fork: 1
        }
    );
    assert_eq!(*status.borrow(), w.status().borrow().clone());
    assert_eq!((w.len(), w.fork(), w.contiguous_len()), (1, 1, 1));
}

#[tokio::test]
async fn wait_for_block_wakes_up_on_arrival() {
    let w = writer(8, CoreKind::V1);
    let r = Hypercore::open_by_key(MemoryStorage::new(), w.key(), w.manifest()).unwrap();
    r.verify_and_apply(&upgrade(&w, 0)).unwrap();
    let waiter = tokio::spawn({
        let r = r.clone();
        async move { r.wait_for_block(5).await }
    });
    tokio::task::yield_now().await;
    let p = w
        .create_proof(&ProofRequest {
            block: Some(RequestBlock {
                index: 5,
                nodes: missing_nodes(5, 8),
            }),
            ..ProofRequest::default()
        })
        .unwrap()
        .unwrap();
    r.verify_and_apply(&p).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, w.get(5).unwrap());
}

#[test]
fn truncate_and_follow_the_reorg() {
    for (len, keep, extra) in [
        (10u64, 6u64, 3u64),
        (16, 0, 5),
        (33, 17, 1),
        (8, 8, 2),
        (100, 51, 60),
    ] {
        let w = writer(len, CoreKind::V1);
        let r = Hypercore::open_by_key(MemoryStorage::new(), w.key(), None).unwrap();
        r.verify_and_apply(&upgrade(&w, 0)).unwrap();
        for i in 0..len {
            let p = w
                .create_proof(&ProofRequest {
                    block: Some(RequestBlock {
                        index: i,
                        nodes: missing_nodes(i, len),
                    }),
                    ..ProofRequest::default()
                })
                .unwrap()
                .unwrap();
            r.verify_and_apply(&p).unwrap();
        }
        // The writer truncates and appends different blocks: fork 1.
        w.truncate(keep).unwrap();
        assert_eq!((w.len(), w.fork()), (keep, 1));
        w.append(blocks(extra, 99)).unwrap();

        // The reader cannot apply fork-1 proofs directly...
        let fork_proof = upgrade(&w, 0);
        assert!(matches!(
            r.verify_and_apply(&fork_proof),
            Err(Error::ForkMismatch { .. })
        ));
        // ...but follows the reorg, narrowing down the shared prefix with hash proofs.
        let mut reorg = r.verify_reorg(&fork_proof).unwrap();
        let mut rounds = 0;
        while let Some(want) = reorg.want() {
            rounds += 1;
            assert!(rounds < 64);
            let p = w
                .create_proof(&ProofRequest {
                    fork: 1,
                    hash: Some(RequestBlock {
                        index: 2 * want.start,
                        nodes: want.nodes,
                    }),
                    ..ProofRequest::default()
                })
                .unwrap()
                .unwrap();
            r.update_reorg(&mut reorg, &p).unwrap();
        }
        let ancestors = reorg.ancestors();
        // Kept blocks are the same on both forks (blocks after `keep` may coincide too).
        let old = blocks(len, 0);
        for i in 0..ancestors {
            assert_eq!(
                w.get(i).unwrap().unwrap(),
                Bytes::from(old[i as usize].clone()),
                "len {len} keep {keep}: block {i}"
            );
        }
        r.apply_reorg(reorg).unwrap();
        assert_eq!(
            (r.len(), r.fork(), r.tree_hash()),
            (w.len(), 1, w.tree_hash())
        );
        for i in 0..ancestors {
            assert!(r.has(i), "kept block {i}");
        }
        for i in ancestors..len {
            assert!(!r.has(i), "dropped block {i}");
        }
        // Everything missing downloads from the new fork and verifies.
        for i in ancestors..w.len() {
            let p = w
                .create_proof(&ProofRequest {
                    fork: 1,
                    block: Some(RequestBlock {
                        index: i,
                        nodes: missing_nodes(i, w.len()),
                    }),
                    ..ProofRequest::default()
                })
                .unwrap()
                .unwrap();
            r.verify_and_apply(&p)
                .unwrap_or_else(|e| panic!("len {len} keep {keep} block {i}: {e}"));
        }
        for i in 0..w.len() {
            assert_eq!(r.get(i).unwrap(), w.get(i).unwrap(), "block {i}");
        }
    }
}

#[test]
fn disk_cores_reopen_with_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (key, hash, sig);
    {
        let core = Hypercore::create(
            DiskStorage::open_with(dir.path(), SyncPolicy::Never).unwrap(),
            KeyPair::from_seed([8; 32]),
            CoreKind::Compat,
        )
        .unwrap();
        core.append(blocks(50, 1)).unwrap();
        core.truncate(20).unwrap();
        core.append(blocks(5, 2)).unwrap();
        key = core.key();
        hash = core.tree_hash();
        sig = core.signature();
    }
    let core = Hypercore::open(DiskStorage::open(dir.path()).unwrap()).unwrap();
    assert_eq!(
        (core.key(), core.tree_hash(), core.signature()),
        (key, hash, sig)
    );
    assert_eq!((core.len(), core.fork()), (25, 1));
    assert!(core.is_writable() && core.is_compat());
    let want: Vec<Bytes> = blocks(20, 1)
        .into_iter()
        .chain(blocks(5, 2))
        .map(Bytes::from)
        .collect();
    for (i, b) in want.iter().enumerate() {
        assert_eq!(core.get(i as u64).unwrap().as_ref(), Some(b));
    }
    core.append([&b"more"[..]]).unwrap();
    // Opening the same storage under another key is refused.
    drop(core);
    let err = Hypercore::create(
        DiskStorage::open(dir.path()).unwrap(),
        KeyPair::from_seed([1; 32]),
        CoreKind::V1,
    );
    assert!(matches!(err, Err(Error::StorageMismatch(_))));
}

/// A storage that counts its commits.
#[derive(Debug)]
struct Counting(
    MemoryStorage,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
);

impl corenet_replication::Storage for Counting {
    fn auth(&self) -> Option<corenet_replication::storage::Auth> {
        self.0.auth()
    }
    fn head(&self) -> Option<corenet_replication::storage::Head> {
        self.0.head()
    }
    fn node(
        &self,
        index: u64,
    ) -> Result<Option<corenet_replication::Node>, corenet_replication::StorageError> {
        self.0.node(index)
    }
    fn block(&self, index: u64) -> Result<Option<Bytes>, corenet_replication::StorageError> {
        self.0.block(index)
    }
    fn bitfield(&self) -> corenet_replication::Bitfield {
        self.0.bitfield()
    }
    fn commit(
        &mut self,
        batch: corenet_replication::storage::WriteBatch,
    ) -> Result<(), corenet_replication::StorageError> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.commit(batch)
    }
}

#[test]
fn many_proofs_share_one_commit() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let w = writer(64, CoreKind::V1);
    let commits = std::sync::Arc::new(AtomicUsize::new(0));
    let r = Hypercore::open_by_key(
        Counting(MemoryStorage::new(), commits.clone()),
        w.key(),
        None,
    )
    .unwrap();
    let base = commits.load(Ordering::SeqCst);
    // An upgrade, then blocks 0..64 where only block 0 brings its whole path: the others
    // ask for one node (their sibling) and rely on what earlier proofs in the run stored.
    let mut proofs = vec![upgrade(&w, 0)];
    for i in 0..64u64 {
        let nodes = if i == 0 {
            missing_nodes(0, 64)
        } else if i % 2 == 1 {
            0
        } else {
            u64::from((i ^ (i - 1)).count_ones()) - 1
        };
        proofs.push(
            w.create_proof(&ProofRequest {
                block: Some(RequestBlock { index: i, nodes }),
                ..ProofRequest::default()
            })
            .unwrap()
            .unwrap(),
        );
    }
    let mut bad = proofs[10].clone();
    bad.block.as_mut().unwrap().value = Bytes::from_static(b"bad");
    proofs.insert(11, bad);
    let results = r.verify_and_apply_many(&proofs);
    assert_eq!(results.len(), 66);
    for (i, res) in results.iter().enumerate() {
        if i == 11 {
            assert!(res.as_ref().unwrap_err().is_remote_fault());
        } else {
            res.as_ref().unwrap_or_else(|e| panic!("proof {i}: {e}"));
        }
    }
    // One commit for the upgrade, one for the 64 blocks.
    assert_eq!(commits.load(Ordering::SeqCst) - base, 2);
    assert_eq!(r.contiguous_len(), 64);
    for i in 0..64 {
        assert_eq!(r.get(i).unwrap(), w.get(i).unwrap());
    }
}
