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

proptest! {
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
