//! Golden vectors from `../shared/spec/` (produced by the real JS packages) and from the
//! hypercore-crypto test suite.

use corenet_codec::hash::{
    blake2b_256, blake2b_256_keyed, discovery_key, leaf_hash, namespace, parent_hash, tree_hash,
    NodeRef,
};
use corenet_codec::DiscoveryKey;

fn h32(s: &str) -> [u8; 32] {
    hex::decode(s).unwrap().try_into().unwrap()
}

fn vectors() -> serde_json::Value {
    serde_json::from_str(include_str!("../../../tests/vectors/js-vectors.json")).unwrap()
}

fn hex_at<'a>(v: &'a serde_json::Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str()
        .unwrap_or_else(|| panic!("no string at {path:?}"))
}

#[test]
fn namespaces_match_constructions_5_4() {
    let hc = namespace("hypercore", [0, 1, 2, 3, 4, 5]);
    let expected = [
        "9fac70b50ca14efc4e91c833b204e75b8b5aad8b5881bfc0adb5ef38a3275b9c",
        "51812a2a359b50369536775df89e18e47740f3db72ac0ae70b29594c194dc316",
        "0438492d02970cc13528ac0262bca0074e0926260256865accc0bf15bd79127d",
        "e64b7108eacce47cfc61ac850568f55f8b15b82ec5ed78c4ec597b036e2a1498",
        "4144eea531e483d54e0c14f4ca68e0644f355343ff6fcb0f005200e12cd747cb",
        "9aedb6f1dea8487cc1e1698f97eb2f063f6db4c649695622e7b675e2ceafa6e9",
    ];
    for (got, want) in hc.iter().zip(expected) {
        assert_eq!(hex::encode(got), want);
    }
    let ss = namespace("hyperswarm/secret-stream", [0, 1, 2]);
    assert_eq!(
        hex::encode(ss[0]),
        "a931a0155b5c09e6d28628236af83c4b8a6af9af60986edeede9dc5d63192bf7"
    );
    assert_eq!(
        hex::encode(ss[1]),
        "742c9d833d430af4c48a8705e91631eecf295442bbca18996e597097723b1061"
    );
    assert_eq!(
        hex::encode(ss[2]),
        "aab97d097471f56651b0460ffc8aaa7d3342f7377597d60b925a1dac689adcbf"
    );
    // The hyperswarm/dht ids are the command numbers.
    let dht = namespace("hyperswarm/dht", [4, 5, 6, 0, 1, 10]);
    let expected = [
        "36386adddf9f6fd60db83a6f42fc159d1146aa8644037664230aaa1f0179d497",
        "ded293cd93fb395e756ecf5fff426529e72c36eacc22e5ed944d9099a2561e32",
        "668e823edd5ce7f5338d68bf1161f4a3c28ce437ee2ab49efd30d99366039b1e",
        "14d6d4b49214ab1033ed204976caa258bae9e1e8543b9ad1fd996a910b0c4e3a",
        "f1191cd5e67b10b54a507033280ed1ff0e12278268d5679c8f93d417210d168b",
        "6b8a2a8623f28c6c02a1e22abe515ce31cafd9af61d4b69970639aa7eb96a8d5",
    ];
    for (got, want) in dht.iter().zip(expected) {
        assert_eq!(hex::encode(got), want);
    }
}

#[test]
fn namespaces_match_js_vectors() {
    let v = vectors();
    let list = v["hypercoreCrypto"]["namespaceHypercore6"]
        .as_array()
        .unwrap();
    let ns = namespace("hypercore", [0, 1, 2, 3, 4, 5]);
    assert_eq!(list.len(), ns.len());
    for (got, want) in ns.iter().zip(list) {
        assert_eq!(hex::encode(got), want.as_str().unwrap());
    }
    assert_eq!(
        hex::encode(namespace("corestore", [0])[0]),
        hex_at(&v, &["coreCorestoreNamed", "corestoreNS"])
    );
}

#[test]
fn discovery_keys() {
    let v = vectors();
    let pk = h32(hex_at(&v, &["hypercoreCrypto", "keyPair", "publicKey"]));
    assert_eq!(
        hex::encode(discovery_key(&pk)),
        hex_at(&v, &["hypercoreCrypto", "discoveryKeyOfPublicKey"])
    );
    for core in [
        "coreCorestoreKeyPair",
        "coreHypercoreCompat",
        "coreCorestoreNamed",
    ] {
        let key = h32(hex_at(&v, &[core, "key"]));
        assert_eq!(
            DiscoveryKey::from_key(&key).to_string(),
            hex_at(&v, &[core, "discoveryKey"]),
            "{core}"
        );
    }
    // CONSTRUCTIONS.md 5.2.
    assert_eq!(
        hex::encode(discovery_key(&h32(
            "778f8d955175c92e4ced5e4f5563f69bfec0c86cc6f670352c457943666fe639"
        ))),
        "25a78aa81615847eba00995df29dd41d7ee30f3b01f892209f79b75a57d989e1"
    );
}

#[test]
fn plain_hash() {
    let v = vectors();
    assert_eq!(
        hex::encode(blake2b_256(b"hello")),
        hex_at(&v, &["hypercoreCrypto", "hashHello"])
    );
}

#[test]
fn leaf_parent_tree_from_js_vectors() {
    let v = vectors();
    let hc = &v["hypercoreCrypto"];
    let leaf = leaf_hash(b"hello");
    assert_eq!(hex::encode(leaf), hex_at(hc, &["leafHello", "hash"]));
    let parent = parent_hash(10, &leaf, &leaf);
    assert_eq!(
        hex::encode(parent),
        hex_at(hc, &["parentOfTwoHelloLeaves", "hash"])
    );
    let t = tree_hash([NodeRef {
        index: 1,
        size: 10,
        hash: &parent,
    }]);
    assert_eq!(
        hex::encode(t),
        hex_at(hc, &["treeHashOfRootsParent", "hash"])
    );
    let t = tree_hash([NodeRef {
        index: 0,
        size: 5,
        hash: &leaf,
    }]);
    assert_eq!(
        hex::encode(t),
        hex_at(hc, &["treeHashOfSingleLeafRoot", "hash"])
    );

    // The three-block cores: leaves a, b, c; roots [parent(1, size 2), leaf c (4, size 1)].
    for core in ["coreCorestoreKeyPair", "coreHypercoreCompat"] {
        let c = &v[core];
        let leaves: Vec<[u8; 32]> = [b"a", b"b", b"c"].iter().map(|d| leaf_hash(*d)).collect();
        for (i, l) in leaves.iter().enumerate() {
            assert_eq!(hex::encode(l), c["leafHashes"][i].as_str().unwrap());
        }
        let p = parent_hash(2, &leaves[0], &leaves[1]);
        assert_eq!(hex::encode(p), c["roots"][0]["hash"].as_str().unwrap());
        let t = tree_hash([
            NodeRef {
                index: 1,
                size: 2,
                hash: &p,
            },
            NodeRef {
                index: 4,
                size: 1,
                hash: &leaves[2],
            },
        ]);
        assert_eq!(hex::encode(t), hex_at(c, &["treeHash"]));
    }
    assert_eq!(
        hex_at(&v, &["coreCorestoreNamed", "treeHash"]),
        hex_at(&v, &["coreCorestoreKeyPair", "treeHash"])
    );
}

#[test]
fn hypercore_crypto_test_suite_vectors() {
    // CONSTRUCTIONS.md 5.3 (hypercore-crypto test.js).
    let leaf = leaf_hash(b"hello world");
    assert_eq!(
        hex::encode(leaf),
        "9f1b578fd57a4df015493d2886aec9600eef913c3bb009768c7f0fb875996308"
    );
    assert_eq!(
        hex::encode(parent_hash(22, &leaf, &leaf)),
        "3ad0c9b58b771d1b7707e1430f37c23a23dd46e0c7c3ab9c16f79d25f7c36804"
    );
    let zero = [0u8; 32];
    assert_eq!(
        hex::encode(tree_hash([
            NodeRef {
                index: 3,
                size: 11,
                hash: &zero
            },
            NodeRef {
                index: 9,
                size: 2,
                hash: &zero
            },
        ])),
        "0e576a56b478cddb6ffebab8c494532b6de009466b2e9f7af9143fc54b9eaa36"
    );
}

#[test]
fn replicate_capability_and_corestore_seed() {
    let v = vectors();
    let cap = &v["hypercoreCrypto"]["replicateCapability"];
    let [_, initiator_ns, responder_ns] = namespace("hypercore", [0, 1, 2]);
    let key = h32(cap["key"].as_str().unwrap());
    let hh = h32(cap["handshakeHash"].as_str().unwrap());
    let ini = corenet_codec::hash::blake2b_256_keyed_batch(&hh, &[&initiator_ns, &key]);
    let res = corenet_codec::hash::blake2b_256_keyed_batch(&hh, &[&responder_ns, &key]);
    assert_eq!(hex::encode(ini), cap["initiator"].as_str().unwrap());
    assert_eq!(hex::encode(res), cap["responder"].as_str().unwrap());

    // Corestore named seed: keyed BLAKE2b-256(primaryKey, NS || namespace || name).
    let named = &v["coreCorestoreNamed"];
    let primary = h32(named["primaryKey"].as_str().unwrap());
    let ns = h32(named["namespace"].as_str().unwrap());
    let store_ns = namespace("corestore", [0])[0];
    let seed = corenet_codec::hash::blake2b_256_keyed_batch(
        &primary,
        &[&store_ns, &ns, named["name"].as_str().unwrap().as_bytes()],
    );
    assert_eq!(hex::encode(seed), named["derivedSeed"].as_str().unwrap());
}

#[test]
fn manifest_hash_is_the_v1_key() {
    let v = vectors();
    let c = &v["coreCorestoreKeyPair"];
    let manifest = hex::decode(c["manifestEncoded"].as_str().unwrap()).unwrap();
    let [manifest_ns] = namespace("hypercore", [3]);
    let key = corenet_codec::hash::blake2b_256_batch(&[&manifest_ns, &manifest]);
    assert_eq!(hex::encode(key), c["key"].as_str().unwrap());
}

#[test]
fn keyed_hash_with_long_key() {
    // A 64-byte key (the Noise handshake hash) is accepted; an empty key is plain BLAKE2b.
    let _ = blake2b_256_keyed(&[7u8; 64], b"x");
    assert_eq!(blake2b_256_keyed(&[], b"hello"), blake2b_256(b"hello"));
}

/// z-base-32 keys as JS apps print and read them (`hypercore-id-encoding` 1.3.0, z32 1.1.0):
/// `tests/vectors/z32-vectors.json`, written by `node tests/interop/z32-vectors.js`.
#[test]
fn z32_keys_match_hypercore_id_encoding() {
    use corenet_codec::PublicKey;
    let v: serde_json::Value =
        serde_json::from_str(include_str!("../../../tests/vectors/z32-vectors.json")).unwrap();
    let mut n = 0;
    for case in v["encode"].as_array().unwrap() {
        let key = PublicKey(h32(case["key"].as_str().unwrap()));
        let z32 = case["z32"].as_str().unwrap();
        assert_eq!(key.to_z32(), z32);
        assert_eq!(PublicKey::from_z32(z32).unwrap(), key);
        assert_eq!(z32.parse::<PublicKey>().unwrap(), key);
        n += 1;
    }
    for case in v["accept"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let key = PublicKey(h32(case["key"].as_str().unwrap()));
        assert_eq!(text.parse::<PublicKey>().unwrap(), key, "{text}");
        n += 1;
    }
    for text in v["reject"].as_array().unwrap() {
        let text = text.as_str().unwrap();
        assert!(text.parse::<PublicKey>().is_err(), "{text:?} parsed");
        n += 1;
    }
    assert!(n >= 20, "only {n} vectors");
}
