//! Helpers shared by the storage crash tests: what a reopened core looks like, and a check
//! that a fresh reader knowing only the key accepts every block.

#![allow(dead_code)] // each test binary uses a part

use bytes::Bytes;
use corenet_replication::{
    flat, Hypercore, MemoryStorage, ProofRequest, RequestBlock, RequestUpgrade,
};

/// What a reopened core must look like.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Snapshot {
    pub(crate) len: u64,
    pub(crate) fork: u64,
    pub(crate) tree_hash: [u8; 32],
    pub(crate) signature: Option<Bytes>,
    pub(crate) blocks: Vec<Option<Bytes>>,
}

pub(crate) fn snapshot(core: &Hypercore) -> Snapshot {
    Snapshot {
        len: core.len(),
        fork: core.fork(),
        tree_hash: core.tree_hash(),
        signature: core.signature(),
        blocks: (0..core.len()).map(|i| core.get(i).unwrap()).collect(),
    }
}

/// Every block of `core` verifies for a fresh reader that knows only the key.
pub(crate) fn assert_verifiable(core: &Hypercore) {
    if core.is_empty() {
        return;
    }
    let len = core.len();
    let reader = Hypercore::open_by_key(MemoryStorage::new(), core.key(), None).unwrap();
    let head = core
        .create_proof(&ProofRequest {
            fork: core.fork(),
            upgrade: Some(RequestUpgrade {
                start: 0,
                length: len,
            }),
            manifest: true,
            ..ProofRequest::default()
        })
        .unwrap()
        .unwrap();
    if core.fork() > 0 {
        // A fresh reader is at fork 0: a higher fork comes in as a reorg.
        let reorg = reader.verify_reorg(&head).unwrap();
        assert!(reorg.is_finished());
        reader.apply_reorg(reorg).unwrap();
    } else {
        reader.verify_and_apply(&head).unwrap();
    }
    for i in 0..len {
        let root = flat::full_roots(2 * len)
            .find(|r| flat::left_span(*r) <= 2 * i && 2 * i <= flat::right_span(*r))
            .unwrap();
        let p = core
            .create_proof(&ProofRequest {
                fork: core.fork(),
                block: Some(RequestBlock {
                    index: i,
                    nodes: u64::from(flat::depth(root)),
                }),
                ..ProofRequest::default()
            })
            .unwrap()
            .unwrap();
        reader.verify_and_apply(&p).unwrap();
    }
    assert_eq!(reader.len(), len);
    assert_eq!(reader.tree_hash(), core.tree_hash());
    for i in 0..len {
        assert_eq!(reader.get(i).unwrap(), core.get(i).unwrap());
    }
}
