//! Tree signatures: who signs what, and checking it (hypercore `lib/verifier.js`,
//! `lib/multisig.js`).

use bytes::Bytes;
use corenet_codec::hash::Hash;
use corenet_noise::KeyPair;

use crate::caps;
use crate::error::Error;
use crate::manifest::{Manifest, MultiSignature, MultiSignatureV0, Prologue};
use crate::tree::{upgrade_indexes, verify_upgrade, Node, TreeBatch, UpgradePart};

/// Checks and makes the signatures of one core, from its key and manifest.
#[derive(Debug, Clone)]
pub(crate) struct Verifier {
    /// The core key: the manifest hash (v1) or the signer's public key (compat).
    key: Hash,
    /// The manifest.
    manifest: Manifest,
    /// True for a compat core (`key == signers[0].public_key`): plain 64-byte signatures
    /// over the 80-byte signable.
    compat: bool,
}

impl Verifier {
    pub(crate) fn new(key: Hash, manifest: Manifest) -> Self {
        let compat = manifest.is_compat(&key);
        Verifier {
            key,
            manifest,
            compat,
        }
    }

    pub(crate) fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub(crate) fn is_compat(&self) -> bool {
        self.compat
    }

    fn version(&self) -> u64 {
        if self.compat {
            0
        } else {
            self.manifest.version
        }
    }

    fn quorum(&self) -> u64 {
        if self.compat {
            1
        } else {
            self.manifest.quorum
        }
    }

    fn allow_patch(&self) -> bool {
        !self.compat && self.manifest.allow_patch
    }

    pub(crate) fn prologue(&self) -> Option<&Prologue> {
        if self.compat {
            None
        } else {
            self.manifest.prologue.as_ref()
        }
    }

    /// The bytes signer `signer` signs for `batch`.
    fn signable(&self, signer: usize, batch: &TreeBatch) -> Option<Vec<u8>> {
        let s = self.manifest.signers.get(signer)?;
        let hash = batch.hash();
        Some(if self.compat {
            caps::tree_signable_compat(&hash, batch.length, batch.fork).to_vec()
        } else {
            // Version 0 signs under the signer's namespace, later versions under the
            // manifest hash (the key).
            let ctx = if self.version() == 0 {
                &s.namespace
            } else {
                &self.key
            };
            caps::tree_signable(ctx, &hash, batch.length, batch.fork).to_vec()
        })
    }

    fn verify_one(&self, signer: usize, batch: &TreeBatch, signature: &[u8; 64]) -> bool {
        let Some(msg) = self.signable(signer, batch) else {
            return false;
        };
        corenet_noise::verify(&self.manifest.signers[signer].public_key, &msg, signature)
    }

    /// Whether `signature` signs the tree `batch` describes.
    pub(crate) fn verify(&self, batch: &TreeBatch, signature: Option<&[u8]>) -> bool {
        if self.version() == 0 {
            let Some(sig) = signature else { return false };
            if self.compat || (!self.allow_patch() && self.manifest.signers.len() == 1) {
                return <&[u8; 64]>::try_from(sig).is_ok_and(|s| self.verify_one(0, batch, s));
            }
            return self.verify_multi(batch, sig);
        }
        if let Some(p) = self.prologue() {
            if batch.length <= p.length {
                return batch.length == p.length && batch.hash() == p.hash;
            }
        }
        match signature {
            Some(sig) => self.verify_multi(batch, sig),
            None => false,
        }
    }

    fn verify_multi(&self, batch: &TreeBatch, signature: &[u8]) -> bool {
        let quorum = self.quorum();
        if quorum == 0 {
            return false;
        }
        let (proofs, patch) = if self.version() >= 1 {
            match corenet_codec::decode_prefix::<MultiSignature>(signature) {
                Ok((m, _)) => (
                    m.proofs
                        .into_iter()
                        .map(|p| (p.signer, p.signature, p.patch))
                        .collect::<Vec<_>>(),
                    m.patch,
                ),
                Err(_) => return false,
            }
        } else {
            match corenet_codec::decode_prefix::<MultiSignatureV0>(signature) {
                Ok((m, _)) => (
                    m.proofs
                        .into_iter()
                        .map(|p| (p.signer, p.signature, p.patch.map_or(0, |p| p.length)))
                        .collect(),
                    m.patch,
                ),
                Err(_) => return false,
            }
        };
        if (proofs.len() as u64) < quorum {
            return false;
        }
        let mut tried = vec![false; self.manifest.signers.len()];
        for &(signer, sig, patch_len) in proofs.iter().take(quorum as usize) {
            let patched;
            let mut tree = batch;
            if patch_len > 0 && self.allow_patch() {
                match self.patched(batch, &patch, patch_len) {
                    Some(b) => {
                        patched = b;
                        tree = &patched;
                    }
                    None => return false,
                }
            }
            let Ok(idx) = usize::try_from(signer) else {
                return false;
            };
            if idx >= tried.len() || tried[idx] {
                return false;
            }
            tried[idx] = true;
            if !self.verify_one(idx, tree, &sig) {
                return false;
            }
        }
        true
    }

    /// `batch` grown by `patch_len` blocks from the signature's patch nodes
    /// (`generateUpgrade` + `verifyUpgrade`), or `None` when the patch does not fit.
    fn patched(&self, batch: &TreeBatch, patch: &[Node], patch_len: u64) -> Option<TreeBatch> {
        let from = batch.length.checked_mul(2)?;
        let to = from.checked_add(patch_len.checked_mul(2)?)?;
        if to / 2 > crate::MAX_LENGTH {
            return None;
        }
        let nodes = upgrade_indexes(from, to)
            .into_iter()
            .map(|i| patch.iter().find(|n| n.index == i).copied())
            .collect::<Option<Vec<_>>>()?;
        let mut tree = batch.clone();
        let upgrade = UpgradePart {
            start: batch.length,
            length: patch_len,
            nodes: &nodes,
            additional_nodes: &[],
            signature: None,
        };
        verify_upgrade(tree.fork, &upgrade, None, &mut tree, None).ok()?;
        Some(tree)
    }

    /// Signs `batch` with `key_pair`, in the form the core stores and sends: a plain
    /// 64-byte signature for compat cores (and version-0 or multi-signer manifests), the
    /// 68-byte multisig wrapper for single-signer v1 cores (`Verifier.sign`).
    pub(crate) fn sign(&self, batch: &TreeBatch, key_pair: &KeyPair) -> Result<Bytes, Error> {
        let pk = key_pair.public_key();
        let Some(idx) = self
            .manifest
            .signers
            .iter()
            .position(|s| s.public_key == pk)
        else {
            return Err(Error::NotWritable);
        };
        let msg = self.signable(idx, batch).ok_or(Error::NotWritable)?;
        let sig = key_pair.sign(&msg);
        if self.manifest.signers.len() != 1 || self.version() == 0 {
            return Ok(Bytes::copy_from_slice(&sig));
        }
        Ok(corenet_codec::to_bytes(&MultiSignature::single(sig)))
    }

    /// True when `key_pair` alone can produce valid signatures for this core.
    pub(crate) fn can_sign_alone(&self, key_pair: &KeyPair) -> bool {
        let pk = key_pair.public_key();
        self.manifest.signers.iter().any(|s| s.public_key == pk)
            && (self.compat || self.quorum() == 1)
    }
}
