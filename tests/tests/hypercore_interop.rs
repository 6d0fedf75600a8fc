//! Proofs and signatures made by corenet, verified by the real JS hypercore 11.37.1
//! (`tests/interop/hypercore-verify.js`): a JS core that knows only the key applies our
//! `data` messages (upgrades with our signatures and manifests, blocks, seeks, a reorg to a
//! truncated fork) and rejects tampered ones. The other direction (JS proofs verified by us,
//! byte-identical proofs) is `crates/replication/tests/js_proofs.rs`.

use std::time::Duration;

use bytes::Bytes;
use corenet_noise::KeyPair;
use corenet_replication::{
    flat, CoreKind, Data, Hypercore, MemoryStorage, Proof, ProofRequest, RequestBlock, RequestSeek,
    RequestUpgrade,
};
use corenet_tests::{pattern, JsPeer};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

/// What the JS core must look like after a case.
#[derive(Debug, Clone)]
struct Expect {
    ok: bool,
    length: u64,
    fork: u64,
    tree_hash: Option<String>,
    block: Option<String>,
}

struct Cases {
    writer: Hypercore,
    /// A Rust reader fed the same valid proofs: it tells which extra nodes a reorg needs.
    mirror: Hypercore,
    wires: Vec<Value>,
    expects: Vec<Expect>,
    /// What JS has applied so far.
    state: (u64, u64, Option<String>),
}

impl Cases {
    fn new(kind: CoreKind, seed: u8) -> Self {
        let writer =
            Hypercore::create(MemoryStorage::new(), KeyPair::from_seed([seed; 32]), kind).unwrap();
        let mirror = Hypercore::open_by_key(MemoryStorage::new(), writer.key(), None).unwrap();
        Cases {
            writer,
            mirror,
            wires: Vec::new(),
            expects: Vec::new(),
            state: (0, 0, None),
        }
    }

    fn append(&self, from: u64, n: u64) {
        let blocks: Vec<Vec<u8>> = (from..from + n)
            .map(|i| pattern((i as usize * 7919) % 3000, i as u8, 0))
            .collect();
        for chunk in blocks.chunks(37) {
            self.writer.append(chunk.to_vec()).unwrap();
        }
    }

    fn proof(&self, req: ProofRequest) -> Proof {
        self.writer.create_proof(&req).unwrap().unwrap()
    }

    /// A proof JS must accept.
    fn valid(&mut self, proof: Proof) {
        self.mirror.verify_and_apply(&proof).unwrap();
        self.accept(proof, false, Vec::new());
    }

    /// A higher-fork upgrade JS must follow, with the `hash` proofs that narrow the reorg
    /// down (found by running the same reorg on the Rust mirror).
    fn reorg(&mut self, proof: Proof) {
        let mut batch = self.mirror.verify_reorg(&proof).unwrap();
        let mut updates = Vec::new();
        while let Some(want) = batch.want() {
            let p = self.proof(ProofRequest {
                fork: proof.fork,
                hash: Some(RequestBlock {
                    index: 2 * want.start,
                    nodes: want.nodes,
                }),
                ..ProofRequest::default()
            });
            self.mirror.update_reorg(&mut batch, &p).unwrap();
            updates.push(hex::encode(corenet_codec::to_vec(&Data {
                request: 2,
                proof: p,
            })));
        }
        assert!(!updates.is_empty(), "the reorg case should need narrowing");
        self.mirror.apply_reorg(batch).unwrap();
        self.accept(proof, true, updates);
    }

    fn accept(&mut self, proof: Proof, reorg: bool, updates: Vec<String>) {
        if proof.upgrade.is_some() {
            self.state = (
                self.writer.len(),
                self.writer.fork(),
                Some(hex::encode(self.writer.tree_hash())),
            );
        }
        let block = proof.block.as_ref().map(|b| hex::encode(&b.value));
        self.push(proof, reorg, updates, true, block);
    }

    /// A proof JS must reject, changing nothing.
    fn invalid(&mut self, proof: Proof) {
        assert!(self.mirror.verify_proof(&proof).is_err());
        self.push(proof, false, Vec::new(), false, None);
    }

    fn push(
        &mut self,
        proof: Proof,
        reorg: bool,
        updates: Vec<String>,
        ok: bool,
        block: Option<String>,
    ) {
        let wire = corenet_codec::to_vec(&Data { request: 1, proof });
        self.wires
            .push(json!({ "wire": hex::encode(wire), "reorg": reorg, "updates": updates }));
        self.expects.push(Expect {
            ok,
            length: self.state.0,
            fork: self.state.1,
            tree_hash: self.state.2.clone(),
            block,
        });
    }
}

fn missing(i: u64, len: u64) -> u64 {
    let root = flat::full_roots(2 * len)
        .find(|r| flat::left_span(*r) <= 2 * i && 2 * i <= flat::right_span(*r))
        .unwrap();
    u64::from(flat::depth(root))
}

fn tampered_value(mut p: Proof) -> Proof {
    let b = p.block.as_mut().unwrap();
    let mut v = b.value.to_vec();
    v.push(0);
    b.value = Bytes::from(v);
    p
}

fn build(kind: CoreKind, seed: u8) -> Cases {
    let mut c = Cases::new(kind, seed);
    let manifest = true;
    c.append(0, 5);
    // A forged signature, then the real first upgrade (with the manifest for v1 cores).
    let mut forged = c.proof(ProofRequest {
        upgrade: Some(RequestUpgrade {
            start: 0,
            length: 5,
        }),
        manifest,
        ..ProofRequest::default()
    });
    let sig = forged.upgrade.as_mut().unwrap().signature.as_mut().unwrap();
    let mut s = sig.to_vec();
    let n = s.len();
    s[n - 7] ^= 1;
    *sig = Bytes::from(s);
    c.invalid(forged);
    let first = c.proof(ProofRequest {
        upgrade: Some(RequestUpgrade {
            start: 0,
            length: 5,
        }),
        manifest,
        ..ProofRequest::default()
    });
    c.valid(first);

    // Grow to 100: a block inside the new range together with the upgrade.
    c.append(5, 95);
    let p = c.proof(ProofRequest {
        block: Some(RequestBlock {
            index: 42,
            nodes: 0,
        }),
        upgrade: Some(RequestUpgrade {
            start: 5,
            length: 95,
        }),
        ..ProofRequest::default()
    });
    c.invalid(tampered_value(p.clone()));
    c.valid(p);

    // Sparse blocks with all missing nodes; a tampered copy first each time.
    for i in [0u64, 1, 4, 63, 99, 77] {
        let p = c.proof(ProofRequest {
            block: Some(RequestBlock {
                index: i,
                nodes: missing(i, 100),
            }),
            ..ProofRequest::default()
        });
        c.invalid(tampered_value(p.clone()));
        let mut bad_node = p.clone();
        if let Some(n) = bad_node.block.as_mut().unwrap().nodes.first_mut() {
            n.hash[0] ^= 1;
            c.invalid(bad_node);
        }
        c.valid(p);
    }

    // Grow to 1000 with a seek into the new range and additional nodes left for later.
    c.append(100, 900);
    let bytes = c.writer.byte_len() * 3 / 4;
    let p = c.proof(ProofRequest {
        seek: Some(RequestSeek { bytes, padding: 0 }),
        upgrade: Some(RequestUpgrade {
            start: 100,
            length: 900,
        }),
        ..ProofRequest::default()
    });
    assert!(p.seek.is_some());
    c.valid(p);
    let p = c.proof(ProofRequest {
        block: Some(RequestBlock {
            index: 999,
            nodes: missing(999, 1000),
        }),
        ..ProofRequest::default()
    });
    c.valid(p);

    // The writer truncates (fork 1) and appends: JS follows the reorg.
    c.writer.truncate(1000).unwrap();
    c.append(1000, 10);
    let reorg = c.proof(ProofRequest {
        fork: 1,
        upgrade: Some(RequestUpgrade {
            start: 0,
            length: 1010,
        }),
        manifest,
        ..ProofRequest::default()
    });
    c.reorg(reorg);
    let p = c.proof(ProofRequest {
        fork: 1,
        block: Some(RequestBlock {
            index: 1005,
            nodes: missing(1005, 1010),
        }),
        ..ProofRequest::default()
    });
    c.valid(p);
    c
}

#[tokio::test(flavor = "current_thread")]
async fn js_hypercore_verifies_our_proofs_and_signatures() {
    corenet_tests::require_js();
    let all = [build(CoreKind::V1, 21), build(CoreKind::Compat, 22)];
    let input = json!({
        "cores": all.iter().map(|c| json!({
            "key": c.writer.key().to_hex(),
            "cases": c.wires,
        })).collect::<Vec<_>>()
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cases.json");
    std::fs::write(&path, serde_json::to_vec(&input).unwrap()).unwrap();

    let mut js = JsPeer::spawn("hypercore-verify.js", &[path.to_str().unwrap()]);
    for (ci, cases) in all.iter().enumerate() {
        for (j, want) in cases.expects.iter().enumerate() {
            let got = js.expect("result", WAIT).await;
            assert_eq!(
                (got["core"].as_u64(), got["case"].as_u64()),
                (Some(ci as u64), Some(j as u64))
            );
            let what = format!("core {ci} case {j}: {got}");
            assert_eq!(got["ok"].as_bool(), Some(want.ok), "{what}");
            assert_eq!(got["length"].as_u64(), Some(want.length), "{what}");
            assert_eq!(got["fork"].as_u64(), Some(want.fork), "{what}");
            assert_eq!(
                got["treeHash"].as_str().map(str::to_owned),
                want.tree_hash,
                "{what}"
            );
            assert_eq!(
                got["block"].as_str().map(str::to_owned),
                want.block,
                "{what}"
            );
        }
    }
    js.expect("done", WAIT).await;
    assert_eq!(js.wait(WAIT).await, Some(0));
}
