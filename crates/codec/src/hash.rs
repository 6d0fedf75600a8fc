//! BLAKE2b-256 as libsodium's `crypto_generichash` computes it, and the hypercore-crypto
//! constructions built on it (namespaces, discovery keys, Merkle tree hashes).

use blake2::digest::consts::U32;
use blake2::digest::{Mac, Update, VariableOutput};
use blake2::{Blake2b, Blake2bMac, Blake2bVar, Digest};

/// A 32-byte digest.
pub type Hash = [u8; 32];

/// Length of a BLAKE2b-256 digest.
pub const HASH_LEN: usize = 32;

/// Longest key BLAKE2b accepts.
pub const MAX_KEY_LEN: usize = 64;

type Blake2b256 = Blake2b<U32>;

/// Plain BLAKE2b-256 (`crypto_generichash(out32, msg)`).
pub fn blake2b_256(msg: &[u8]) -> Hash {
    blake2b_256_batch(&[msg])
}

/// BLAKE2b-256 over the concatenation of `parts` (`crypto_generichash_batch`), without
/// concatenating them in memory.
pub fn blake2b_256_batch(parts: &[&[u8]]) -> Hash {
    let mut h = Blake2b256::new();
    for p in parts {
        Digest::update(&mut h, p);
    }
    h.finalize().into()
}

/// Keyed BLAKE2b-256 (`crypto_generichash(out32, msg, key)`).
///
/// # Panics
/// If `key` is longer than [`MAX_KEY_LEN`] bytes; keys are always local constants or
/// handshake hashes, never remote input. An empty key is plain BLAKE2b-256, as in libsodium.
pub fn blake2b_256_keyed(key: &[u8], msg: &[u8]) -> Hash {
    blake2b_256_keyed_batch(key, &[msg])
}

/// Keyed BLAKE2b-256 over the concatenation of `parts`.
///
/// # Panics
/// As [`blake2b_256_keyed`].
pub fn blake2b_256_keyed_batch(key: &[u8], parts: &[&[u8]]) -> Hash {
    assert!(key.len() <= MAX_KEY_LEN, "BLAKE2b key longer than 64 bytes");
    if key.is_empty() {
        return blake2b_256_batch(parts);
    }
    #[allow(clippy::expect_used)] // the length was checked above
    let mut mac = <Blake2bMac<U32> as Mac>::new_from_slice(key).expect("key length checked");
    for p in parts {
        Mac::update(&mut mac, p);
    }
    mac.finalize().into_bytes().into()
}

/// BLAKE2b with a 64-byte output over the concatenation of `parts` (`crypto_generichash` with
/// `out64`), as Noise uses it.
pub fn blake2b_512_batch(parts: &[&[u8]]) -> [u8; 64] {
    let mut out = [0u8; 64];
    #[allow(clippy::expect_used)] // 64 is a valid BLAKE2b output size
    let mut h = Blake2bVar::new(64).expect("64-byte output is valid");
    for p in parts {
        h.update(p);
    }
    #[allow(clippy::expect_used)] // sizes match
    h.finalize_variable(&mut out).expect("sizes match");
    out
}

/// hypercore-crypto `namespace(name, count)`: `ns = BLAKE2b-256(name)`, and entry `i` is
/// `BLAKE2b-256(ns || byte(id))` for each of `ids`.
///
/// ```
/// use corenet_codec::hash::namespace;
/// let [tree] = namespace("hypercore", [0]);
/// assert_eq!(hex::encode(tree), "9fac70b50ca14efc4e91c833b204e75b8b5aad8b5881bfc0adb5ef38a3275b9c");
/// ```
pub fn namespace<const N: usize>(name: &str, ids: [u8; N]) -> [Hash; N] {
    let ns = blake2b_256(name.as_bytes());
    ids.map(|id| blake2b_256_batch(&[&ns, &[id]]))
}

/// The ASCII bytes hashed (keyed with the core key) into a discovery key.
pub const DISCOVERY_KEY_MESSAGE: &[u8] = b"hypercore";

/// hypercore-crypto `discoveryKey(key)`: keyed BLAKE2b-256 with `key` as the key over
/// `"hypercore"`.
pub fn discovery_key(key: &[u8; 32]) -> Hash {
    blake2b_256_keyed(key, DISCOVERY_KEY_MESSAGE)
}

/// Type byte of a leaf hash.
pub const LEAF_TYPE: u8 = 0;
/// Type byte of a parent hash.
pub const PARENT_TYPE: u8 = 1;
/// Type byte of a tree (root set) hash.
pub const ROOT_TYPE: u8 = 2;

/// Hash of a leaf holding `data`: `BLAKE2b-256(0x00 || u64le(len) || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    blake2b_256_batch(&[&[LEAF_TYPE], &(data.len() as u64).to_le_bytes(), data])
}

/// Hash of a parent node: `BLAKE2b-256(0x01 || u64le(size) || left || right)`, where `size`
/// is the byte size under the parent and `left` is the child with the smaller index.
pub fn parent_hash(size: u64, left: &Hash, right: &Hash) -> Hash {
    blake2b_256_batch(&[&[PARENT_TYPE], &size.to_le_bytes(), left, right])
}

/// A tree node as the tree hash sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeRef<'a> {
    /// Flat-tree index.
    pub index: u64,
    /// Bytes under the node.
    pub size: u64,
    /// The node's hash.
    pub hash: &'a Hash,
}

/// hypercore-crypto `tree(roots)`: `BLAKE2b-256(0x02 || (hash || u64le(index) || u64le(size))*)`.
pub fn tree_hash<'a>(roots: impl IntoIterator<Item = NodeRef<'a>>) -> Hash {
    let mut h = Blake2b256::new();
    Digest::update(&mut h, [ROOT_TYPE]);
    for r in roots {
        Digest::update(&mut h, r.hash);
        Digest::update(&mut h, r.index.to_le_bytes());
        Digest::update(&mut h, r.size.to_le_bytes());
    }
    h.finalize().into()
}
