//! The hypercore and corestore golden vectors of `tests/vectors/js-vectors.json`
//! (`coreCorestoreKeyPair`, `coreHypercoreCompat`, `coreCorestoreNamed`), produced by the real
//! hypercore 11.37.1 and corestore 7.12.5.

use corenet_codec::{decode_exact, to_vec};
use corenet_noise::KeyPair;
use corenet_replication::corestore::{
    child_namespace, corestore_namespace, derive_seed, DEFAULT_NAMESPACE,
};
use corenet_replication::manifest::MultiSignature;
use corenet_replication::{
    caps, CoreKind, Corestore, CorestoreConfig, Hypercore, Manifest, MemoryStorage,
};
use serde_json::Value;

fn vectors() -> Value {
    serde_json::from_str(include_str!("../../../tests/vectors/js-vectors.json")).unwrap()
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("no string {k}"))
}

fn h32(s: &str) -> [u8; 32] {
    hex::decode(s).unwrap().try_into().unwrap()
}

/// Checks a core built from `blocks` against a vector.
fn check_core(core: &Hypercore, v: &Value) {
    assert_eq!(core.key().to_hex(), s(v, "key"));
    assert_eq!(core.discovery_key().to_hex(), s(v, "discoveryKey"));
    assert_eq!(core.len(), v["length"].as_u64().unwrap());
    assert_eq!(core.byte_len(), v["byteLength"].as_u64().unwrap());
    assert_eq!(core.fork(), v["fork"].as_u64().unwrap());
    let manifest = core.manifest().unwrap();
    assert_eq!(hex::encode(to_vec(&manifest)), s(v, "manifestEncoded"));
    assert_eq!(
        decode_exact::<Manifest>(&hex::decode(s(v, "manifestEncoded")).unwrap()).unwrap(),
        manifest
    );
    for (i, want) in v["leafHashes"].as_array().unwrap().iter().enumerate() {
        let node = core.tree_node(2 * i as u64).unwrap().unwrap();
        assert_eq!(hex::encode(node.hash), want.as_str().unwrap());
    }
    let roots = core.roots();
    for (r, want) in roots.iter().zip(v["roots"].as_array().unwrap()) {
        assert_eq!(r.index, want["index"].as_u64().unwrap());
        assert_eq!(r.size, want["size"].as_u64().unwrap());
        assert_eq!(hex::encode(r.hash), want["hash"].as_str().unwrap());
    }
    assert_eq!(roots.len(), v["roots"].as_array().unwrap().len());
    assert_eq!(hex::encode(core.tree_hash()), s(v, "treeHash"));
    // JS `core.signable()`: the 112-byte form under the key.
    let js_signable = caps::tree_signable(
        core.key().as_bytes(),
        &core.tree_hash(),
        core.len(),
        core.fork(),
    );
    assert_eq!(hex::encode(js_signable), s(v, "signableFromCore"));
    // What the signature covers.
    assert_eq!(
        hex::encode(core.signable()),
        s(v, "signableUsedForSignature")
    );
    let stored = core.signature().unwrap();
    assert_eq!(hex::encode(&stored), s(v, "storedSignature"));
    assert_eq!(
        stored.len() as u64,
        v["storedSignatureBytes"].as_u64().unwrap()
    );
}

#[test]
fn core_corestore_key_pair() {
    let vs = vectors();
    let v = &vs["coreCorestoreKeyPair"];
    let seed = h32(s(&vs["hypercoreCrypto"], "seed"));
    let store = Corestore::in_memory();
    let core = store.get_with_key_pair(KeyPair::from_seed(seed)).unwrap();
    core.append([&b"a"[..], &b"b"[..], &b"c"[..]]).unwrap();
    check_core(&core, v);
    // The stored 68-byte multisig wrapper decodes to one proof by signer 0.
    let ms: MultiSignature = decode_exact(&core.signature().unwrap()).unwrap();
    let d = &v["storedSignatureDecoded"];
    assert_eq!(ms.proofs.len(), 1);
    assert_eq!(ms.proofs[0].signer, 0);
    assert_eq!(ms.proofs[0].patch, 0);
    assert_eq!(
        hex::encode(ms.proofs[0].signature),
        s(&d["proofs"][0], "signature")
    );
    assert_eq!(
        hex::encode(ms.proofs[0].signature),
        s(v, "ed25519SignatureOverSignable")
    );
    assert!(ms.patch.is_empty());
    // The key is the manifest hash.
    assert_eq!(core.manifest().unwrap().hash(), *core.key().as_bytes());
}

#[test]
fn core_hypercore_compat() {
    let vs = vectors();
    let v = &vs["coreHypercoreCompat"];
    let seed = h32(s(&vs["hypercoreCrypto"], "seed"));
    let kp = KeyPair::from_seed(seed);
    let core = Hypercore::create(MemoryStorage::new(), kp.clone(), CoreKind::Compat).unwrap();
    // Three separate appends, as the JS vector did.
    for b in [&b"a"[..], b"b", b"c"] {
        core.append([b]).unwrap();
    }
    check_core(&core, v);
    assert!(core.is_compat());
    assert_eq!(core.key(), kp.public_key());
    assert_eq!(
        hex::encode(core.signature().unwrap()),
        s(v, "ed25519SignatureOverSignable")
    );
}

#[test]
fn core_corestore_named() {
    let vs = vectors();
    let v = &vs["coreCorestoreNamed"];
    let primary = h32(s(v, "primaryKey"));
    assert_eq!(hex::encode(corestore_namespace()), s(v, "corestoreNS"));
    assert_eq!(hex::encode(DEFAULT_NAMESPACE), s(v, "namespace"));
    let seed = derive_seed(&primary, &DEFAULT_NAMESPACE, s(v, "name").as_bytes());
    assert_eq!(hex::encode(*seed), s(v, "derivedSeed"));
    let store = Corestore::in_memory_with(CorestoreConfig::default().with_primary_key(primary));
    assert_eq!(
        store.create_key_pair(s(v, "name")).public_key().to_hex(),
        s(v, "derivedPublicKey")
    );
    let core = store.get(s(v, "name")).unwrap();
    core.append([&b"a"[..], &b"b"[..], &b"c"[..]]).unwrap();
    assert_eq!(core.key().to_hex(), s(v, "key"));
    assert_eq!(core.discovery_key().to_hex(), s(v, "discoveryKey"));
    assert_eq!(hex::encode(core.tree_hash()), s(v, "treeHash"));
    assert_eq!(
        hex::encode(core.signature().unwrap()),
        s(v, "storedSignature")
    );
    // Namespaces derive other cores (and are stable).
    let ns = store.namespace("app");
    assert_eq!(
        ns.namespace_key(),
        child_namespace(&DEFAULT_NAMESPACE, b"app")
    );
    assert_ne!(ns.get(s(v, "name")).unwrap().key(), core.key());
    assert_eq!(
        ns.get(s(v, "name")).unwrap().key(),
        store.namespace("app").get(s(v, "name")).unwrap().key()
    );
}

#[test]
fn constructions_5_6_values() {
    // CONSTRUCTIONS.md 5.6: computed locally there, now checked by the JS-made vectors above;
    // the seed-0 values stay as regression anchors.
    let pk = KeyPair::from_seed([0; 32]).public_key();
    let m = Manifest::default_signer(pk);
    assert_eq!(
        hex::encode(m.hash()),
        "59f3f0785d5bfd68401e22a5d5705057a8988b7ab959fb4d6c07b0aa143e22f2"
    );
    assert_eq!(
        corenet_codec::DiscoveryKey::from_key(&m.hash()).to_hex(),
        "4fe8ecb3a8ff49aa0391bb8a84368833aef2bb615fee989d3aaaadc0e6075de8"
    );
}
