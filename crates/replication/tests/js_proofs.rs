//! Cores, signatures and proofs produced by the real JS hypercore 11.37.1 and corestore
//! (`tests/vectors/hypercore-vectors.json`, made by
//! `tests/interop/scripts/gen-hypercore-vectors.js`): we rebuild the same cores, produce
//! byte-identical proofs for the same requests (and refuse the requests JS refuses), and
//! verify and apply every JS proof, while tampered copies are rejected with nothing stored.

use bytes::Bytes;
use corenet_codec::{decode_exact, to_vec, PublicKey};
use corenet_noise::KeyPair;
use corenet_replication::{
    flat, CoreKind, Corestore, CorestoreConfig, Data, Error, Hypercore, MemoryStorage, Node,
    ProofError, ProofRequest, Request, RequestBlock, RequestSeek, RequestUpgrade,
};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/vectors/hypercore-vectors.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("hypercore-vectors.json")).unwrap()
}

fn h32(s: &str) -> [u8; 32] {
    hex::decode(s).unwrap().try_into().unwrap()
}

fn block(i: u64, len: u64) -> Vec<u8> {
    let size = if i % 17 == 5 {
        0
    } else if i % 50 == 7 {
        2000 + i
    } else {
        (i * 37 + len) % 251 + 1
    };
    (0..size)
        .map(|j| (((j & 255) * 31 + (i & 255)) & 255) as u8)
        .collect()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap()
}

fn build(core: &Value, primary: [u8; 32]) -> Hypercore {
    let len = u(&core["length"]);
    let h = if core["compat"].as_bool().unwrap() {
        let kp = KeyPair::from_seed(h32(core["seed"].as_str().unwrap()));
        Hypercore::create(MemoryStorage::new(), kp, CoreKind::Compat).unwrap()
    } else {
        let store = Corestore::in_memory_with(CorestoreConfig::default().with_primary_key(primary));
        store.get(core["name"].as_str().unwrap()).unwrap()
    };
    // Same batches as the JS script; one signature per batch.
    let chunks = [1u64, 2, 5, 13];
    let (mut i, mut k) = (0u64, 0usize);
    while i < len {
        let n = chunks[k % 4].min(len - i);
        k += 1;
        h.append((i..i + n).map(|j| block(j, len))).unwrap();
        i += n;
    }
    h
}

fn request_of(r: &Value) -> ProofRequest {
    let pair = |v: &Value, a: &str, b: &str| (u(&v[a]), u(&v[b]));
    ProofRequest {
        fork: 0,
        block: r.get("block").map(|b| {
            let (index, nodes) = pair(b, "index", "nodes");
            RequestBlock { index, nodes }
        }),
        hash: r.get("hash").map(|b| {
            let (index, nodes) = pair(b, "index", "nodes");
            RequestBlock { index, nodes }
        }),
        seek: r.get("seek").map(|s| {
            let (bytes, padding) = pair(s, "bytes", "padding");
            RequestSeek { bytes, padding }
        }),
        upgrade: r.get("upgrade").map(|s| {
            let (start, length) = pair(s, "start", "length");
            RequestUpgrade { start, length }
        }),
        manifest: r.get("manifest").and_then(Value::as_bool).unwrap_or(false),
    }
}

fn nodes_of(v: &Value) -> Vec<Node> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| Node {
            index: u(&n["index"]),
            size: u(&n["size"]),
            hash: h32(n["hash"].as_str().unwrap()),
        })
        .collect()
}

#[test]
fn flat_tree_matches_npm() {
    let v = vectors();
    for e in v["flat"].as_array().unwrap() {
        let i = u(&e["index"]);
        assert_eq!(u64::from(flat::depth(i)), u(&e["depth"]), "depth {i}");
        assert_eq!(flat::offset(i), u(&e["offset"]), "offset {i}");
        assert_eq!(flat::parent(i), u(&e["parent"]), "parent {i}");
        assert_eq!(flat::sibling(i), u(&e["sibling"]), "sibling {i}");
        assert_eq!(flat::left_span(i), u(&e["leftSpan"]), "leftSpan {i}");
        assert_eq!(flat::right_span(i), u(&e["rightSpan"]), "rightSpan {i}");
        assert_eq!(flat::count(i), u(&e["count"]), "count {i}");
        assert_eq!(
            flat::count_leaves(i),
            u(&e["countLeaves"]),
            "countLeaves {i}"
        );
        let children = flat::children(i).map(|(a, b)| vec![a, b]);
        let want = e["children"]
            .as_array()
            .map(|a| a.iter().map(u).collect::<Vec<_>>());
        assert_eq!(children, want, "children {i}");
        if let Some(roots) = e["fullRoots"].as_array() {
            let want: Vec<u64> = roots.iter().map(u).collect();
            assert_eq!(
                flat::full_roots(i).collect::<Vec<_>>(),
                want,
                "fullRoots {i}"
            );
        }
    }
}

#[test]
fn cores_match_js() {
    let v = vectors();
    let primary = h32(v["primaryKey"].as_str().unwrap());
    for core in v["cores"].as_array().unwrap() {
        let len = u(&core["length"]);
        let what = format!("compat={} length={len}", core["compat"]);
        let h = build(core, primary);
        assert_eq!(
            h.key().to_hex(),
            core["key"].as_str().unwrap(),
            "{what} key"
        );
        assert_eq!(
            h.discovery_key().to_hex(),
            core["discoveryKey"].as_str().unwrap(),
            "{what} dk"
        );
        assert_eq!(
            hex::encode(to_vec(&h.manifest().unwrap())),
            core["manifest"].as_str().unwrap(),
            "{what} manifest"
        );
        assert_eq!(h.len(), len);
        assert_eq!(h.byte_len(), u(&core["byteLength"]), "{what} byteLength");
        assert_eq!(
            hex::encode(h.tree_hash()),
            core["treeHash"].as_str().unwrap(),
            "{what} tree hash"
        );
        assert_eq!(h.roots(), nodes_of(&core["roots"]), "{what} roots");
        // JS `core.signable()` is the 112-byte form under the key, for compat cores too.
        let js_signable = corenet_replication::caps::tree_signable(
            h.key().as_bytes(),
            &h.tree_hash(),
            len,
            h.fork(),
        );
        assert_eq!(
            hex::encode(js_signable),
            core["signable"].as_str().unwrap(),
            "{what} signable"
        );
        if h.is_compat() {
            assert_eq!(h.signable().len(), 80);
            let sig: [u8; 64] = h.signature().unwrap()[..].try_into().unwrap();
            assert!(corenet_noise::verify(&h.key(), &h.signable(), &sig));
        } else {
            assert_eq!(h.signable(), js_signable.to_vec());
        }
        assert_eq!(
            hex::encode(h.signature().unwrap()),
            core["signature"].as_str().unwrap(),
            "{what} signature"
        );
        let leaves = core["leafHashes"].as_array().unwrap();
        assert_eq!(
            hex::encode(h.tree_node(0).unwrap().unwrap().hash),
            leaves[0].as_str().unwrap()
        );
        assert_eq!(
            hex::encode(h.tree_node(2 * (len - 1)).unwrap().unwrap().hash),
            leaves[1].as_str().unwrap()
        );
    }
}

#[test]
fn proofs_are_byte_identical_to_js() {
    let v = vectors();
    let primary = h32(v["primaryKey"].as_str().unwrap());
    let mut compared = 0;
    for core in v["cores"].as_array().unwrap() {
        let h = build(core, primary);
        for p in core["proofs"].as_array().unwrap() {
            let id = u(&p["id"]);
            let req = request_of(&p["request"]);
            let what = format!(
                "compat={} length={} request {}",
                core["compat"],
                h.len(),
                p["request"]
            );
            // The request encoding.
            let wire_req = Request {
                id,
                priority: 0,
                proof: req,
            };
            assert_eq!(
                hex::encode(to_vec(&wire_req)),
                p["requestWire"].as_str().unwrap(),
                "{what}"
            );
            assert_eq!(
                decode_exact::<Request>(&hex::decode(p["requestWire"].as_str().unwrap()).unwrap())
                    .unwrap(),
                wire_req
            );
            match (h.create_proof(&req), p.get("error")) {
                (Ok(Some(proof)), None) => {
                    let ours = to_vec(&Data { request: id, proof });
                    assert_eq!(hex::encode(&ours), p["wire"].as_str().unwrap(), "{what}");
                    compared += 1;
                }
                (Err(Error::InvalidRequest(_)), Some(_)) => {}
                (got, want) => panic!("{what}: we got {got:?}, JS {want:?}"),
            }
        }
    }
    assert!(compared > 300, "only {compared} proofs compared");
}

#[test]
fn js_proofs_decode_to_their_json() {
    let v = vectors();
    for core in v["cores"].as_array().unwrap() {
        for p in core["proofs"].as_array().unwrap() {
            let Some(json) = p.get("proof") else { continue };
            let data: Data =
                decode_exact(&hex::decode(p["wire"].as_str().unwrap()).unwrap()).unwrap();
            assert_eq!(data.request, u(&p["id"]));
            let proof = data.proof;
            assert_eq!(proof.fork, u(&json["fork"]));
            match (&proof.block, json["block"].is_null()) {
                (Some(b), false) => {
                    assert_eq!(b.index, u(&json["block"]["index"]));
                    assert_eq!(
                        hex::encode(&b.value),
                        json["block"]["value"].as_str().unwrap_or("")
                    );
                    assert_eq!(b.nodes, nodes_of(&json["block"]["nodes"]));
                }
                (None, true) => {}
                _ => panic!("block presence differs"),
            }
            match (&proof.upgrade, json["upgrade"].is_null()) {
                (Some(up), false) => {
                    let j = &json["upgrade"];
                    assert_eq!((up.start, up.length), (u(&j["start"]), u(&j["length"])));
                    assert_eq!(up.nodes, nodes_of(&j["nodes"]));
                    assert_eq!(up.additional_nodes, nodes_of(&j["additionalNodes"]));
                    assert_eq!(
                        up.signature.as_ref().map(hex::encode),
                        j["signature"].as_str().map(str::to_owned)
                    );
                }
                (None, true) => {}
                _ => panic!("upgrade presence differs"),
            }
            assert_eq!(proof.hash.is_some(), !json["hash"].is_null());
            assert_eq!(proof.seek.is_some(), !json["seek"].is_null());
            assert_eq!(
                proof.manifest.as_ref().map(|m| hex::encode(to_vec(m))),
                json["manifest"].as_str().map(str::to_owned)
            );
        }
    }
}

/// A reader of `writer`'s core at `length` blocks (upgraded with our own proof).
fn reader_at(writer: &Hypercore, length: u64) -> Hypercore {
    let r = Hypercore::open_by_key(MemoryStorage::new(), writer.key(), writer.manifest()).unwrap();
    if length > 0 {
        let p = writer
            .create_proof(&ProofRequest {
                upgrade: Some(RequestUpgrade { start: 0, length }),
                ..ProofRequest::default()
            })
            .unwrap()
            .unwrap();
        // `create_proof` proves the writer's full length; cut the reader at `length` with
        // the additional nodes dropped is not possible, so only full-length readers are
        // made this way.
        assert_eq!(p.upgrade_length(), Some(writer.len()));
        r.verify_and_apply(&p).unwrap();
    }
    r
}

#[test]
fn js_proofs_verify_and_tampered_ones_do_not() {
    let v = vectors();
    let primary = h32(v["primaryKey"].as_str().unwrap());
    let (mut applied, mut unverifiable) = (0, 0);
    for core in v["cores"].as_array().unwrap() {
        let writer = build(core, primary);
        let len = writer.len();
        // One reader with the whole tree (but no blocks) takes every proof without an
        // upgrade; what earlier proofs stored only makes later ones easier to verify.
        let full_reader = reader_at(&writer, len);
        for p in core["proofs"].as_array().unwrap() {
            let Some(wire) = p["wire"].as_str() else {
                continue;
            };
            let what = format!(
                "compat={} length={len} request {}",
                core["compat"], p["request"]
            );
            let data: Data = decode_exact(&hex::decode(wire).unwrap()).unwrap();
            let proof = data.proof;
            // Upgrades from 0 go to an empty reader that knows only the key; everything else
            // to a reader that already has the whole tree (but no blocks).
            let start = proof.upgrade.as_ref().map(|u| u.start);
            let reader = match start {
                Some(0) => {
                    Hypercore::open_by_key(MemoryStorage::new(), writer.key(), None).unwrap()
                }
                Some(_) => continue, // needs a reader at exactly `start`; covered below
                None => full_reader.clone(),
            };
            if proof.upgrade.is_some() && proof.manifest.is_none() && !writer.is_compat() {
                // A v1 reader cannot check a signature without the manifest.
                let err = reader.verify_and_apply(&proof).unwrap_err();
                assert!(err.is_remote_fault(), "{what}: {err}");
                continue;
            }

            // Tampered copies first: nothing may be stored.
            for tampered in tamper(&proof) {
                let before = (reader.len(), reader.bitfield(), reader.manifest());
                assert!(
                    reader.verify_and_apply(&tampered).is_err(),
                    "{what}: tampered proof accepted"
                );
                assert_eq!(
                    (reader.len(), reader.bitfield(), reader.manifest()),
                    before,
                    "{what}"
                );
            }

            let applied_now = match reader.verify_and_apply(&proof) {
                Ok(a) => a,
                // The request claimed fewer missing nodes than this reader lacks: the proof
                // stops below anything it trusts, as it would in JS.
                Err(Error::InvalidProof(ProofError::Unverifiable { .. }))
                    if proof.upgrade.is_none() =>
                {
                    let r = &p["request"];
                    let (idx, nodes) = match (r.get("block"), r.get("hash")) {
                        (Some(b), _) => (2 * u(&b["index"]), u(&b["nodes"])),
                        (None, Some(h)) => (u(&h["index"]), u(&h["nodes"])),
                        _ => panic!("{what}: unverifiable without block or hash"),
                    };
                    assert!(nodes < levels_to_root(idx, len), "{what}: should verify");
                    unverifiable += 1;
                    continue;
                }
                Err(e) => panic!("{what}: {e}"),
            };
            applied += 1;
            if let Some(b) = &proof.block {
                assert_eq!(applied_now.block, Some(b.index));
                assert_eq!(
                    reader.get(b.index).unwrap().unwrap(),
                    Bytes::from(block(b.index, len)),
                    "{what}"
                );
            }
            if proof.upgrade.is_some() {
                assert_eq!(reader.len(), len, "{what}");
                assert_eq!(reader.tree_hash(), writer.tree_hash(), "{what}");
                assert_eq!(reader.signature(), writer.signature(), "{what}");
                assert_eq!(reader.manifest(), writer.manifest(), "{what}");
            }
        }
    }
    assert!(applied > 200, "only {applied} proofs applied");
    assert!(unverifiable > 0);
}

/// How many levels separate flat index `idx` from the root of a tree of `len` blocks above
/// it: a reader holding only the roots needs that many nodes.
fn levels_to_root(idx: u64, len: u64) -> u64 {
    let root = flat::full_roots(2 * len)
        .find(|r| flat::left_span(*r) <= idx && idx <= flat::right_span(*r))
        .unwrap();
    u64::from(flat::depth(root) - flat::depth(idx))
}

/// Copies of `proof` with one byte of a block, node hash, node size or signature changed.
fn tamper(proof: &corenet_replication::Proof) -> Vec<corenet_replication::Proof> {
    let mut out = Vec::new();
    if let Some(b) = &proof.block {
        let mut t = proof.clone();
        let mut v = b.value.to_vec();
        if v.is_empty() {
            v.push(1);
        } else {
            v[0] ^= 1;
        }
        t.block.as_mut().unwrap().value = v.into();
        out.push(t);
        if !b.nodes.is_empty() {
            let mut t = proof.clone();
            t.block.as_mut().unwrap().nodes[0].hash[3] ^= 0x40;
            out.push(t);
            let mut t = proof.clone();
            t.block.as_mut().unwrap().nodes[0].size += 1;
            out.push(t);
        }
    }
    if let Some(h) = &proof.hash {
        if !h.nodes.is_empty() {
            let mut t = proof.clone();
            let last = h.nodes.len() - 1;
            t.hash.as_mut().unwrap().nodes[last].hash[0] ^= 1;
            out.push(t);
        }
    }
    if let Some(u) = &proof.upgrade {
        if let Some(sig) = &u.signature {
            let mut t = proof.clone();
            let mut s = sig.to_vec();
            let n = s.len();
            s[n - 10] ^= 1;
            t.upgrade.as_mut().unwrap().signature = Some(s.into());
            out.push(t);
        }
        if !u.nodes.is_empty() {
            let mut t = proof.clone();
            t.upgrade.as_mut().unwrap().nodes[0].hash[31] ^= 0x80;
            out.push(t);
        }
        if !u.additional_nodes.is_empty() {
            let mut t = proof.clone();
            t.upgrade.as_mut().unwrap().additional_nodes.pop();
            out.push(t);
        }
    }
    out
}

#[test]
fn js_upgrades_from_the_middle_apply_to_a_shorter_reader() {
    // Readers at the start of each mid-way upgrade, built from a writer cut at that length.
    let v = vectors();
    let primary = h32(v["primaryKey"].as_str().unwrap());
    let mut applied = 0;
    for core in v["cores"].as_array().unwrap() {
        let writer = build(core, primary);
        let len = writer.len();
        // Upgrade proofs from shorter copies of the core, by length.
        let mut shorter = std::collections::HashMap::new();
        for p in core["proofs"].as_array().unwrap() {
            let Some(wire) = p["wire"].as_str() else {
                continue;
            };
            let data: Data = decode_exact(&hex::decode(wire).unwrap()).unwrap();
            let proof = data.proof;
            let Some(start) = proof.upgrade.as_ref().map(|u| u.start).filter(|s| *s > 0) else {
                continue;
            };
            let what = format!(
                "compat={} length={len} request {}",
                core["compat"], p["request"]
            );
            // A shorter copy of the same core (same key pair, same blocks, signed at `start`).
            let up = shorter
                .entry(start)
                .or_insert_with(|| {
                    shorter_copy(core, primary, start)
                        .create_proof(&ProofRequest {
                            upgrade: Some(RequestUpgrade {
                                start: 0,
                                length: start,
                            }),
                            ..ProofRequest::default()
                        })
                        .unwrap()
                        .unwrap()
                })
                .clone();
            let reader =
                Hypercore::open_by_key(MemoryStorage::new(), writer.key(), writer.manifest())
                    .unwrap();
            reader.verify_and_apply(&up).unwrap();
            assert_eq!(reader.len(), start);
            reader
                .verify_and_apply(&proof)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(reader.len(), len, "{what}");
            assert_eq!(reader.tree_hash(), writer.tree_hash(), "{what}");
            if let Some(b) = &proof.block {
                assert_eq!(
                    reader.get(b.index).unwrap().unwrap(),
                    Bytes::from(block(b.index, len))
                );
            }
            applied += 1;
        }
    }
    assert!(applied > 30, "only {applied}");
}

/// The core of `core` with only its first `length` blocks (blocks depend on the full length
/// `L` through their sizes, so they are the same bytes).
fn shorter_copy(core: &Value, primary: [u8; 32], length: u64) -> Hypercore {
    let full = u(&core["length"]);
    let h = if core["compat"].as_bool().unwrap() {
        let kp = KeyPair::from_seed(h32(core["seed"].as_str().unwrap()));
        Hypercore::create(MemoryStorage::new(), kp, CoreKind::Compat).unwrap()
    } else {
        let store = Corestore::in_memory_with(CorestoreConfig::default().with_primary_key(primary));
        store.get(core["name"].as_str().unwrap()).unwrap()
    };
    h.append((0..length).map(|j| block(j, full))).unwrap();
    let key = PublicKey::from_hex(core["key"].as_str().unwrap()).unwrap();
    assert_eq!(h.key(), key);
    h
}
