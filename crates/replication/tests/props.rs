//! Property tests for every wire type of the crate: round trip, `encoded_len` equals the
//! bytes written, and every truncation is an error.

use bytes::Bytes;
use corenet_codec::{decode_exact, to_vec, Decode, Encode, PublicKey};
use corenet_replication::manifest::{
    MultiSignature, MultiSignatureV0, PatchV0, SignatureProof, SignatureProofV0,
};
use corenet_replication::{
    Data, DataBlock, DataHash, DataSeek, DataUpgrade, Manifest, Node, Prologue, Proof,
    ProofRequest, Request, RequestBlock, RequestSeek, RequestUpgrade, Signer,
};
use proptest::prelude::*;

fn check<T>(value: &T) -> Result<(), TestCaseError>
where
    T: Encode + for<'a> Decode<'a> + PartialEq + std::fmt::Debug,
{
    let bytes = to_vec(value);
    prop_assert_eq!(bytes.len(), value.encoded_len());
    prop_assert_eq!(&decode_exact::<T>(&bytes).unwrap(), value);
    for cut in 0..bytes.len() {
        prop_assert!(
            decode_exact::<T>(&bytes[..cut]).is_err(),
            "truncation at {} decoded",
            cut
        );
    }
    Ok(())
}

fn uint() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..300, 0u64..70_000, any::<u64>()]
}

fn node() -> impl Strategy<Value = Node> {
    (uint(), uint(), any::<[u8; 32]>()).prop_map(|(index, size, hash)| Node { index, size, hash })
}

fn nodes() -> impl Strategy<Value = Vec<Node>> {
    proptest::collection::vec(node(), 0..5)
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn signer() -> impl Strategy<Value = Signer> {
    (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(namespace, pk)| Signer {
        namespace,
        public_key: PublicKey(pk),
    })
}

/// Manifests in the form the JS encoder round-trips: version 1-3 with any optional parts;
/// version 0 in its three canonical shapes.
fn manifest() -> impl Strategy<Value = Manifest> {
    let v1 = (
        1u64..=3,
        any::<bool>(),
        uint(),
        proptest::collection::vec(signer(), 0..4),
        proptest::option::of(
            (any::<[u8; 32]>(), uint()).prop_map(|(hash, length)| Prologue { hash, length }),
        ),
        proptest::option::of(proptest::collection::vec(any::<[u8; 32]>(), 0..3)),
        proptest::option::of(bytes(40)),
    )
        .prop_map(
            |(version, allow_patch, quorum, signers, prologue, linked, user_data)| Manifest {
                version,
                allow_patch,
                quorum,
                signers,
                prologue,
                linked,
                user_data,
            },
        );
    let v0_prologue = any::<[u8; 32]>().prop_map(|hash| Manifest {
        version: 0,
        allow_patch: false,
        quorum: 0,
        signers: vec![],
        prologue: Some(Prologue { hash, length: 0 }),
        linked: None,
        user_data: None,
    });
    let v0_single = signer().prop_map(|s| Manifest {
        version: 0,
        allow_patch: false,
        quorum: 1,
        signers: vec![s],
        prologue: None,
        linked: None,
        user_data: None,
    });
    let v0_multi = (
        any::<bool>(),
        uint(),
        proptest::collection::vec(signer(), 0..4),
    )
        .prop_filter("canonical type 2", |(p, q, s)| {
            *p || *q != 1 || s.len() != 1
        })
        .prop_map(|(allow_patch, quorum, signers)| Manifest {
            version: 0,
            allow_patch,
            quorum,
            signers,
            prologue: None,
            linked: None,
            user_data: None,
        });
    prop_oneof![v1, v0_prologue, v0_single, v0_multi]
}

fn pair<T: std::fmt::Debug>(f: fn(u64, u64) -> T) -> impl Strategy<Value = T> {
    (uint(), uint()).prop_map(move |(a, b)| f(a, b))
}

fn proof_request() -> impl Strategy<Value = ProofRequest> {
    (
        uint(),
        proptest::option::of(pair(|index, nodes| RequestBlock { index, nodes })),
        proptest::option::of(pair(|index, nodes| RequestBlock { index, nodes })),
        proptest::option::of(pair(|bytes, padding| RequestSeek { bytes, padding })),
        proptest::option::of(pair(|start, length| RequestUpgrade { start, length })),
        any::<bool>(),
    )
        .prop_map(
            |(fork, block, hash, seek, upgrade, manifest)| ProofRequest {
                fork,
                block,
                hash,
                seek,
                upgrade,
                manifest,
            },
        )
}

fn proof() -> impl Strategy<Value = Proof> {
    (
        uint(),
        proptest::option::of(
            (uint(), bytes(64), nodes()).prop_map(|(index, value, nodes)| DataBlock {
                index,
                value,
                nodes,
            }),
        ),
        proptest::option::of(
            (uint(), nodes()).prop_map(|(index, nodes)| DataHash { index, nodes }),
        ),
        proptest::option::of(
            (uint(), nodes()).prop_map(|(bytes, nodes)| DataSeek { bytes, nodes }),
        ),
        proptest::option::of(
            (
                uint(),
                uint(),
                nodes(),
                nodes(),
                proptest::option::of(bytes(80).prop_filter("non-empty", |b| !b.is_empty())),
            )
                .prop_map(|(start, length, nodes, additional_nodes, signature)| {
                    DataUpgrade {
                        start,
                        length,
                        nodes,
                        additional_nodes,
                        signature,
                    }
                }),
        ),
        proptest::option::of(manifest()),
    )
        .prop_map(|(fork, block, hash, seek, upgrade, manifest)| Proof {
            fork,
            block,
            hash,
            seek,
            upgrade,
            manifest,
        })
}

/// A reader that holds the signed tree of a 16-block core and blocks 0-3.
fn reader() -> &'static (
    corenet_replication::Hypercore,
    corenet_replication::Hypercore,
) {
    use corenet_replication::Hypercore;
    static R: std::sync::OnceLock<(Hypercore, Hypercore)> = std::sync::OnceLock::new();
    R.get_or_init(|| {
        let w = Hypercore::in_memory(corenet_noise::KeyPair::from_seed([3; 32])).unwrap();
        w.append((0..16u8).map(|i| vec![i; i as usize * 10]))
            .unwrap();
        let r = Hypercore::open_by_key(
            corenet_replication::MemoryStorage::new(),
            w.key(),
            w.manifest(),
        )
        .unwrap();
        let p = w
            .create_proof(&ProofRequest {
                block: Some(RequestBlock { index: 0, nodes: 0 }),
                upgrade: Some(RequestUpgrade {
                    start: 0,
                    length: 16,
                }),
                ..ProofRequest::default()
            })
            .unwrap()
            .unwrap();
        r.verify_and_apply(&p).unwrap();
        (w, r)
    })
}

proptest! {
    /// Random proofs (indexes and sizes up to u64::MAX) never panic the verifier and never
    /// change the reader; random requests never panic the prover.
    #[test]
    fn random_proofs_and_requests_are_handled(mut p in proof(), req in proof_request()) {
        let (w, r) = reader();
        p.fork = 0;
        let before = (r.len(), r.tree_hash(), r.bitfield());
        if r.verify_and_apply(&p).is_ok() {
            // Only a proof that is really part of the tree can pass.
            let b = p.block.as_ref();
            prop_assert!(b.is_none_or(|b| w.get(b.index).unwrap().as_ref() == Some(&b.value)));
        } else {
            prop_assert_eq!((r.len(), r.tree_hash(), r.bitfield()), before);
        }
        let _ = p.upgrade_length();
        let _ = w.create_proof(&req);
        let _ = r.create_proof(&req);
        let _ = r.missing_nodes(req.block.map_or(0, |b| b.index));
        let _ = corenet_replication::tree::max_missing_nodes(req.hash.map_or(0, |h| h.index), req.fork);
    }

    /// Valid proofs with one number replaced by an arbitrary one (indexes, sizes, lengths
    /// up to u64::MAX): never a panic, and the reader changes only if the proof still holds.
    #[test]
    fn mutated_proofs_are_handled(block in 0u64..16, with_upgrade in any::<bool>(), which in 0usize..8, k in 0usize..6, v in uint()) {
        let (w, _) = reader();
        let r = corenet_replication::Hypercore::open_by_key(
            corenet_replication::MemoryStorage::new(), w.key(), w.manifest()).unwrap();
        if !with_upgrade {
            let head = w.create_proof(&ProofRequest {
                upgrade: Some(RequestUpgrade { start: 0, length: 16 }),
                ..ProofRequest::default()
            }).unwrap().unwrap();
            r.verify_and_apply(&head).unwrap();
        }
        let mut p = w.create_proof(&ProofRequest {
            block: Some(RequestBlock { index: block, nodes: if with_upgrade { 0 } else { corenet_replication::tree::max_missing_nodes(2 * block, 16) } }),
            upgrade: with_upgrade.then_some(RequestUpgrade { start: 0, length: 16 }),
            ..ProofRequest::default()
        }).unwrap().unwrap();
        let b = p.block.as_mut().unwrap();
        match which {
            0 => b.index = v,
            1 => if let Some(n) = b.nodes.get_mut(k) { n.index = v },
            2 => if let Some(n) = b.nodes.get_mut(k) { n.size = v },
            3 => if let Some(u) = p.upgrade.as_mut() { u.start = v },
            4 => if let Some(u) = p.upgrade.as_mut() { u.length = v },
            5 => if let Some(n) = p.upgrade.as_mut().and_then(|u| u.nodes.get_mut(k)) { n.index = v },
            6 => if let Some(n) = p.upgrade.as_mut().and_then(|u| u.nodes.get_mut(k)) { n.size = v },
            _ => if let Some(u) = p.upgrade.as_mut() { u.additional_nodes.push(Node { index: v, size: v, hash: [1; 32] }) },
        }
        let before = (r.len(), r.bitfield());
        match r.verify_and_apply(&p) {
            Ok(_) => {
                let b = p.block.as_ref().unwrap();
                prop_assert_eq!(w.get(b.index).unwrap(), Some(b.value.clone()));
                prop_assert_eq!(r.tree_hash(), w.tree_hash());
            }
            Err(_) => prop_assert_eq!((r.len(), r.bitfield()), before),
        }
    }

    #[test]
    fn node_round_trip(n in node()) {
        check(&n)?;
    }

    #[test]
    fn manifest_round_trip(m in manifest()) {
        check(&m)?;
    }

    #[test]
    fn request_round_trip(id in uint(), priority in uint(), proof in proof_request()) {
        check(&Request { id, priority, proof })?;
    }

    #[test]
    fn data_round_trip(request in uint(), proof in proof()) {
        check(&Data { request, proof })?;
    }

    #[test]
    fn multisig_round_trip(
        proofs in proptest::collection::vec((uint(), any::<[u8; 32]>(), uint()), 0..4),
        patch in nodes(),
    ) {
        let proofs = proofs
            .into_iter()
            .map(|(signer, half, patch)| {
                let mut signature = [0u8; 64];
                signature[..32].copy_from_slice(&half);
                SignatureProof { signer, signature, patch }
            })
            .collect();
        check(&MultiSignature { proofs, patch })?;
    }

    #[test]
    fn multisig_v0_round_trip(
        proofs in proptest::collection::vec(
            (uint(), any::<[u8; 32]>(), proptest::option::of((uint(), uint(), proptest::collection::vec(uint(), 0..4)))),
            0..4,
        ),
        patch in nodes(),
    ) {
        let proofs = proofs
            .into_iter()
            .map(|(signer, half, p)| {
                let mut signature = [0u8; 64];
                signature[32..].copy_from_slice(&half);
                SignatureProofV0 {
                    signer,
                    signature,
                    patch: p.map(|(start, length, nodes)| PatchV0 { start, length, nodes }),
                }
            })
            .collect();
        check(&MultiSignatureV0 { proofs, patch })?;
    }

    /// Whatever the bytes, decoders return, never panic.
    #[test]
    fn decoders_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_exact::<Data>(&b);
        let _ = decode_exact::<Request>(&b);
        let _ = decode_exact::<Manifest>(&b);
        let _ = decode_exact::<MultiSignature>(&b);
        let _ = decode_exact::<MultiSignatureV0>(&b);
    }
}

/// Like [`check`] for messages whose trailing flags `uint` is optional on the wire (JS
/// decoders accept its absence): the only truncation that decodes is the one that cuts
/// exactly the flags (and what follows them) away, at `short` bytes, and it decodes to the
/// value with the flags cleared.
fn check_optional_tail<T>(value: &T, short: Option<usize>, cleared: &T) -> Result<(), TestCaseError>
where
    T: Encode + for<'a> Decode<'a> + PartialEq + std::fmt::Debug,
{
    let bytes = to_vec(value);
    prop_assert_eq!(bytes.len(), value.encoded_len());
    prop_assert_eq!(&decode_exact::<T>(&bytes).unwrap(), value);
    for cut in 0..bytes.len() {
        match decode_exact::<T>(&bytes[..cut]) {
            Ok(v) => {
                prop_assert_eq!(Some(cut), short, "truncation at {} decoded", cut);
                prop_assert_eq!(&v, cleared);
            }
            Err(_) => prop_assert_ne!(Some(cut), short),
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn sync_round_trip(fork in uint(), length in uint(), remote_length in uint(), flags in 0u8..32) {
        check(&corenet_replication::messages::Sync {
            fork,
            length,
            remote_length,
            can_upgrade: flags & 1 != 0,
            uploading: flags & 2 != 0,
            downloading: flags & 4 != 0,
            has_manifest: flags & 8 != 0,
            allow_push: flags & 16 != 0,
        })?;
    }

    #[test]
    fn handshake_round_trip(seeks in any::<bool>(), capability in any::<[u8; 32]>()) {
        check(&corenet_replication::messages::Handshake { seeks, capability })?;
    }

    #[test]
    fn cancel_round_trip(request in uint()) {
        check(&corenet_replication::messages::Cancel { request })?;
    }

    #[test]
    fn no_data_round_trip(request in uint(), reason in uint()) {
        use corenet_replication::messages::NoData;
        // The flags byte is always written; without it the message still decodes.
        let short = corenet_codec::encode::uint_len(request);
        check_optional_tail(&NoData { request, reason }, Some(short), &NoData { request, reason: 0 })?;
    }

    #[test]
    fn want_round_trip(start in uint(), length in uint(), any_ in any::<bool>()) {
        use corenet_replication::messages::Want;
        let cleared = Want { start, length, any: false };
        let short = any_.then(|| cleared.encoded_len());
        check_optional_tail(&Want { start, length, any: any_ }, short, &cleared)?;
    }

    #[test]
    fn range_round_trip(drop in any::<bool>(), start in uint(), length in uint()) {
        check(&corenet_replication::messages::Range { drop, start, length })?;
    }

    #[test]
    fn bitfield_round_trip(start in uint(), words in proptest::collection::vec(any::<u32>(), 0..20)) {
        check(&corenet_replication::messages::BitfieldMessage { start, bitfield: words })?;
    }

    #[test]
    fn extension_round_trip(name in "[a-z/-]{0,20}", message in bytes(100)) {
        use corenet_replication::messages::{Extension, Message};
        // The message is the rest of the frame, so only the name can be cut short.
        let e = Extension { name, message };
        let b = Bytes::from(to_vec(&e));
        prop_assert_eq!(b.len(), e.encoded_len());
        prop_assert_eq!(Message::decode(9, &b).unwrap().unwrap(), Message::Extension(e.clone()));
        let name_end = b.len() - e.message.len();
        for cut in 0..name_end {
            prop_assert!(Message::decode(9, &b.slice(..cut)).is_err());
        }
    }

    /// Arbitrary payloads of every type decode or fail, never panic.
    #[test]
    fn any_payload_decodes_or_fails(ty in 0u64..12, payload in bytes(200)) {
        let _ = corenet_replication::messages::Message::decode(ty, &payload);
    }
}
