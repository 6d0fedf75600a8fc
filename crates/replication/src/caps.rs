//! The hypercore namespaces and the byte strings that get signed or hashed (hypercore
//! `lib/caps.js`; CONSTRUCTIONS.md 5.4 and 5.6).

use std::sync::OnceLock;

use corenet_codec::hash::{self, Hash};

/// The six `namespace('hypercore', 6)` entries, computed once.
fn hypercore_namespaces() -> &'static [Hash; 6] {
    static NS: OnceLock<[Hash; 6]> = OnceLock::new();
    NS.get_or_init(|| hash::namespace("hypercore", [0, 1, 2, 3, 4, 5]))
}

/// `TREE`: the prefix of every tree signable.
pub fn tree_namespace() -> &'static Hash {
    &hypercore_namespaces()[0]
}

/// `REPLICATE_INITIATOR`: the replication capability of the Noise initiator.
pub fn replicate_initiator() -> &'static Hash {
    &hypercore_namespaces()[1]
}

/// `REPLICATE_RESPONDER`: the replication capability of the Noise responder.
pub fn replicate_responder() -> &'static Hash {
    &hypercore_namespaces()[2]
}

/// `MANIFEST`: the prefix hashed with a manifest encoding into a v1 core key.
pub fn manifest_namespace() -> &'static Hash {
    &hypercore_namespaces()[3]
}

/// `DEFAULT_NAMESPACE`: the signer namespace of default manifests.
pub fn default_namespace() -> &'static Hash {
    &hypercore_namespaces()[4]
}

/// `DEFAULT_ENCRYPTION`: the block-encryption namespace (not used by this crate yet).
pub fn default_encryption() -> &'static Hash {
    &hypercore_namespaces()[5]
}

/// Length of a v1 tree signable.
pub const SIGNABLE_LEN: usize = 112;
/// Length of a compat tree signable.
pub const SIGNABLE_COMPAT_LEN: usize = 80;
/// Length of a "legacy" compat tree signable (no `TREE` prefix).
pub const SIGNABLE_LEGACY_LEN: usize = 48;

/// The v1 tree signable: `TREE || ctx || tree_hash || u64le(length) || u64le(fork)`, where
/// `ctx` is the manifest hash (the core key) for manifest version 1 and later, and the
/// signer's namespace for version 0.
pub fn tree_signable(ctx: &Hash, tree_hash: &Hash, length: u64, fork: u64) -> [u8; SIGNABLE_LEN] {
    let mut out = [0u8; SIGNABLE_LEN];
    out[..32].copy_from_slice(tree_namespace());
    out[32..64].copy_from_slice(ctx);
    out[64..96].copy_from_slice(tree_hash);
    out[96..104].copy_from_slice(&length.to_le_bytes());
    out[104..].copy_from_slice(&fork.to_le_bytes());
    out
}

/// The compat tree signable: `TREE || tree_hash || u64le(length) || u64le(fork)`.
pub fn tree_signable_compat(tree_hash: &Hash, length: u64, fork: u64) -> [u8; SIGNABLE_COMPAT_LEN] {
    let mut out = [0u8; SIGNABLE_COMPAT_LEN];
    out[..32].copy_from_slice(tree_namespace());
    out[32..64].copy_from_slice(tree_hash);
    out[64..72].copy_from_slice(&length.to_le_bytes());
    out[72..].copy_from_slice(&fork.to_le_bytes());
    out
}

/// The legacy compat signable (`tree_hash || u64le(length) || u64le(fork)`), which JS
/// hypercore only uses with its `legacy` option.
pub fn tree_signable_legacy(tree_hash: &Hash, length: u64, fork: u64) -> [u8; SIGNABLE_LEGACY_LEN] {
    let mut out = [0u8; SIGNABLE_LEGACY_LEN];
    out[..32].copy_from_slice(tree_hash);
    out[32..40].copy_from_slice(&length.to_le_bytes());
    out[40..].copy_from_slice(&fork.to_le_bytes());
    out
}

/// The replication capability a peer proves on a `hypercore/alpha` channel:
/// `BLAKE2b-256(key = handshake_hash, msg = REPLICATE_{INITIATOR|RESPONDER} || core_key)`,
/// with the namespace of the side that computes it (`is_initiator` is the local role; the
/// remote's value uses the other one).
pub fn replication_capability(is_initiator: bool, core_key: &Hash, handshake_hash: &[u8]) -> Hash {
    let ns = if is_initiator {
        replicate_initiator()
    } else {
        replicate_responder()
    };
    hash::blake2b_256_keyed_batch(handshake_hash, &[ns, core_key])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_match_constructions() {
        assert_eq!(
            hex::encode(tree_namespace()),
            "9fac70b50ca14efc4e91c833b204e75b8b5aad8b5881bfc0adb5ef38a3275b9c"
        );
        assert_eq!(
            hex::encode(manifest_namespace()),
            "e64b7108eacce47cfc61ac850568f55f8b15b82ec5ed78c4ec597b036e2a1498"
        );
        assert_eq!(
            hex::encode(default_namespace()),
            "4144eea531e483d54e0c14f4ca68e0644f355343ff6fcb0f005200e12cd747cb"
        );
        assert_eq!(
            hex::encode(default_encryption()),
            "9aedb6f1dea8487cc1e1698f97eb2f063f6db4c649695622e7b675e2ceafa6e9"
        );
        assert_eq!(
            hex::encode(replicate_initiator()),
            "51812a2a359b50369536775df89e18e47740f3db72ac0ae70b29594c194dc316"
        );
        assert_eq!(
            hex::encode(replicate_responder()),
            "0438492d02970cc13528ac0262bca0074e0926260256865accc0bf15bd79127d"
        );
    }

    #[test]
    fn signable_layouts() {
        let s = tree_signable(&[1; 32], &[2; 32], 3, 4);
        assert_eq!(&s[32..64], &[1; 32]);
        assert_eq!(&s[64..96], &[2; 32]);
        assert_eq!(s[96], 3);
        assert_eq!(s[104], 4);
        let c = tree_signable_compat(&[2; 32], 3, 4);
        assert_eq!(&c[..32], tree_namespace());
        assert_eq!(&c[32..], &tree_signable_legacy(&[2; 32], 3, 4)[..]);
    }
}
