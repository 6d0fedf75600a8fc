//! The Merkle tree: nodes, roots, batches (hypercore `lib/merkle-tree.js`).
//!
//! Hashes come from [`corenet_codec::hash`] (`leaf_hash`, `parent_hash`, `tree_hash`).
//! A tree batch is a copy-on-write view of the tree that appends blocks or verifies a
//! remote proof; nothing reaches storage until the core commits it.

use bytes::{BufMut, Bytes};
use corenet_codec::hash::{self, Hash, NodeRef};
use corenet_codec::{encode, Decode, DecodeError, Decoder, Encode};

use crate::error::ProofError;
use crate::flat::{self, Iter};
use crate::MAX_LENGTH;

/// Smallest encoding of a [`Node`]: one-byte index, one-byte size, the hash.
pub(crate) const NODE_MIN_LEN: usize = 34;

/// A Merkle tree node: its flat index, the bytes under it, and its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Node {
    /// Flat-tree index (block `i` is leaf `2 * i`).
    pub index: u64,
    /// Total byte length of the blocks under the node.
    pub size: u64,
    /// The node's BLAKE2b-256 hash.
    pub hash: Hash,
}

impl Node {
    /// The leaf of a block at flat index `index`.
    pub fn leaf(index: u64, data: &[u8]) -> Node {
        Node {
            index,
            size: data.len() as u64,
            hash: hash::leaf_hash(data),
        }
    }

    /// The parent at `index` of two nodes (in either order); `None` if the sizes overflow.
    pub fn parent(index: u64, a: &Node, b: &Node) -> Option<Node> {
        let (l, r) = if a.index > b.index { (b, a) } else { (a, b) };
        let size = l.size.checked_add(r.size)?;
        Some(Node {
            index,
            size,
            hash: hash::parent_hash(size, &l.hash, &r.hash),
        })
    }

    fn as_ref(&self) -> NodeRef<'_> {
        NodeRef {
            index: self.index,
            size: self.size,
            hash: &self.hash,
        }
    }
}

/// `messages.js` `node`: `uint index, uint size, fixed32 hash`.
impl Encode for Node {
    fn encoded_len(&self) -> usize {
        encode::uint_len(self.index) + encode::uint_len(self.size) + 32
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::uint(out, self.index);
        encode::uint(out, self.size);
        out.put_slice(&self.hash);
    }
}

impl<'a> Decode<'a> for Node {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        Ok(Node {
            index: dec.uint()?,
            size: dec.uint()?,
            hash: dec.fixed()?,
        })
    }
}

/// The tree hash of a root set (`crypto.tree(roots)`).
pub fn roots_hash(roots: &[Node]) -> Hash {
    hash::tree_hash(roots.iter().map(Node::as_ref))
}

/// Sum of the sizes of `nodes` (the byte length of a root set).
pub(crate) fn total_size(nodes: &[Node]) -> u64 {
    nodes.iter().map(|n| n.size).sum()
}

/// The trusted, committed tree of a core.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Tree {
    /// Fork id: bumped by every truncation.
    pub(crate) fork: u64,
    /// Number of blocks.
    pub(crate) length: u64,
    /// Total bytes.
    pub(crate) byte_length: u64,
    /// The roots, `flat::full_roots(2 * length)` in order.
    pub(crate) roots: Vec<Node>,
    /// Signature over the tree at `length` (absent for an empty tree).
    pub(crate) signature: Option<Bytes>,
}

impl Tree {
    /// The tree hash.
    pub(crate) fn hash(&self) -> Hash {
        roots_hash(&self.roots)
    }
}

/// A batch of changes to a tree: appended blocks, or the nodes of a verified proof.
#[derive(Debug, Clone)]
pub(crate) struct TreeBatch {
    /// Fork of the tree the batch describes.
    pub(crate) fork: u64,
    /// Roots after the batch.
    pub(crate) roots: Vec<Node>,
    /// Length after the batch.
    pub(crate) length: u64,
    /// Byte length after the batch.
    pub(crate) byte_length: u64,
    /// Signature over the new tree, once signed or received.
    pub(crate) signature: Option<Bytes>,
    /// Blocks shared with the tree the batch started from (below this, nothing changes).
    pub(crate) ancestors: u64,
    /// Length of the tree the batch started from.
    pub(crate) tree_length: u64,
    /// Fork of the tree the batch started from.
    pub(crate) tree_fork: u64,
    /// New nodes to store.
    pub(crate) nodes: Vec<Node>,
    /// True when the batch changes the tree head (length, roots, fork).
    pub(crate) upgraded: bool,
}

impl TreeBatch {
    /// A batch on top of `tree`.
    pub(crate) fn new(tree: &Tree) -> Self {
        TreeBatch {
            fork: tree.fork,
            roots: tree.roots.clone(),
            length: tree.length,
            byte_length: tree.byte_length,
            signature: tree.signature.clone(),
            ancestors: tree.length,
            tree_length: tree.length,
            tree_fork: tree.fork,
            nodes: Vec::new(),
            upgraded: false,
        }
    }

    /// The tree hash after the batch.
    pub(crate) fn hash(&self) -> Hash {
        roots_hash(&self.roots)
    }

    /// Appends one block.
    #[cfg(test)]
    pub(crate) fn append(&mut self, data: &[u8]) -> Result<(), ProofError> {
        let head = self.length * 2;
        self.append_leaf(Node::leaf(head, data))
    }

    /// Appends a leaf hashed beforehand (its index must be the next leaf).
    pub(crate) fn append_leaf(&mut self, leaf: Node) -> Result<(), ProofError> {
        let head = self.length * 2;
        debug_assert_eq!(leaf.index, head, "leaves are appended in order");
        let mut ite = Iter::new(head);
        self.append_root(leaf, &mut ite)
    }

    /// Adds `node` (at the iterator's position) as the newest root and merges roots that
    /// became siblings (`MerkleTreeBatch.appendRoot`).
    pub(crate) fn append_root(&mut self, node: Node, ite: &mut Iter) -> Result<(), ProofError> {
        self.upgraded = true;
        self.length = self
            .length
            .checked_add(ite.factor / 2)
            .filter(|l| *l <= MAX_LENGTH)
            .ok_or(ProofError::OutOfBounds("tree length"))?;
        self.byte_length = self
            .byte_length
            .checked_add(node.size)
            .ok_or(ProofError::OutOfBounds("byte length"))?;
        self.roots.push(node);
        self.nodes.push(node);

        while self.roots.len() > 1 {
            let a = self.roots[self.roots.len() - 1];
            let b = self.roots[self.roots.len() - 2];
            if ite.sibling() != b.index {
                ite.sibling(); // back, so the iterator stays on the last root
                break;
            }
            let parent =
                Node::parent(ite.parent(), &a, &b).ok_or(ProofError::OutOfBounds("node size"))?;
            self.nodes.push(parent);
            self.roots.pop();
            self.roots.pop();
            self.roots.push(parent);
        }
        Ok(())
    }

    /// True when the tree is still the one the batch started from, so committing it is
    /// sound (`commitable()`).
    pub(crate) fn commitable(&self, tree: &Tree) -> bool {
        self.tree_fork == tree.fork
            && if self.upgraded {
                self.tree_length == tree.length
            } else {
                self.tree_length <= tree.length
            }
    }

    /// Flat-index ranges of stored nodes that a commit of this batch invalidates: a
    /// truncation or reorg removes every node over the dropped blocks
    /// (`_commitUpgrade`). Returns `(range, single nodes)`.
    pub(crate) fn invalidated_nodes(&self) -> Option<(std::ops::Range<u64>, Vec<u64>)> {
        if !self.upgraded || self.ancestors >= self.tree_length {
            return None;
        }
        let range = self.ancestors * 2..self.tree_length * 2;
        let mut singles = Vec::new();
        if self.ancestors > 0 {
            let head = self.ancestors * 2;
            let mut ite = Iter::new(head - 2);
            loop {
                if ite.contains(head) && ite.index < head {
                    singles.push(ite.index);
                }
                if ite.offset == 0 {
                    break;
                }
                ite.parent();
            }
        }
        Some((range, singles))
    }
}

/// Batches at least this large hash their leaves on several threads.
const PARALLEL_HASH_MIN_BYTES: usize = 1 << 20;
/// At most this many hashing threads per batch.
const MAX_HASH_THREADS: usize = 4;

/// The leaf nodes of `blocks`, the first at flat index `first`. Large batches are hashed on
/// up to [`MAX_HASH_THREADS`] scoped threads (one contiguous share of the bytes each); the
/// tree above the leaves is built sequentially by the caller.
pub(crate) fn hash_leaves<B: AsRef<[u8]> + Sync>(blocks: &[B], first: u64) -> Vec<Node> {
    let total: usize = blocks.iter().map(|b| b.as_ref().len()).sum();
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_HASH_THREADS)
        .min(blocks.len());
    let leaf = |(i, b): (usize, &B)| Node::leaf(first + 2 * i as u64, b.as_ref());
    if threads < 2 || total < PARALLEL_HASH_MIN_BYTES {
        return blocks.iter().enumerate().map(leaf).collect();
    }
    // Split into `threads` runs of about equal byte size.
    let share = total.div_ceil(threads);
    let mut bounds = vec![0];
    let mut acc = 0;
    for (i, b) in blocks.iter().enumerate() {
        acc += b.as_ref().len();
        if acc >= share * bounds.len() && bounds.len() < threads {
            bounds.push(i + 1);
        }
    }
    bounds.push(blocks.len());
    bounds.dedup();
    std::thread::scope(|scope| {
        let handles: Vec<_> = bounds
            .windows(2)
            .map(|w| {
                let (lo, hi) = (w[0], w[1]);
                scope.spawn(move || {
                    blocks[lo..hi]
                        .iter()
                        .enumerate()
                        .map(|(k, b)| leaf((lo + k, b)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

/// The nodes of a proof, in the order a verifier takes them; `extra` is a root computed
/// from another part of the proof that may stand in for one of them (`NodeQueue`).
struct NodeQueue<'a> {
    nodes: &'a [Node],
    next: usize,
    extra: Option<Node>,
}

impl<'a> NodeQueue<'a> {
    fn new(nodes: &'a [Node], extra: Option<Node>) -> Self {
        NodeQueue {
            nodes,
            next: 0,
            extra,
        }
    }

    fn len(&self) -> usize {
        self.nodes.len() - self.next + usize::from(self.extra.is_some())
    }

    fn shift(&mut self, index: u64) -> Result<Node, ProofError> {
        if let Some(extra) = self.extra {
            if extra.index == index {
                self.extra = None;
                return Ok(extra);
            }
        }
        let Some(node) = self.nodes.get(self.next) else {
            return Err(ProofError::UnexpectedNode {
                expected: index,
                got: None,
            });
        };
        if node.index != index {
            return Err(ProofError::UnexpectedNode {
                expected: index,
                got: Some(node.index),
            });
        }
        self.next += 1;
        Ok(*node)
    }
}

/// Largest iterator factor a valid tree can reach: twice the most leaves a node can hold.
const MAX_FACTOR: u64 = 2 * MAX_LENGTH;

fn check_factor(ite: &Iter) -> Result<(), ProofError> {
    if ite.factor > MAX_FACTOR {
        return Err(ProofError::OutOfBounds("proof climbs above any valid tree"));
    }
    Ok(())
}

/// The untrusted block or hash part of a proof, as [`verify_tree`] takes it.
pub(crate) struct Untrusted<'a> {
    /// Flat index of the proven node (`2 * block` for a block).
    pub(crate) index: u64,
    /// The block value (`None` for a hash proof, whose first node is the proven node).
    pub(crate) value: Option<&'a [u8]>,
    /// Sibling nodes up the tree.
    pub(crate) nodes: &'a [Node],
}

/// Hashes a block/hash proof and an optional seek proof up to one root, pushing every node
/// it used or computed onto `nodes` (`verifyTree`). Returns that root, or `None` when the
/// proof has no block, hash or seek part.
pub(crate) fn verify_tree(
    untrusted: Option<Untrusted<'_>>,
    seek: Option<&[Node]>,
    nodes: &mut Vec<Node>,
) -> Result<Option<Node>, ProofError> {
    let seek = seek.filter(|s| !s.is_empty());
    if untrusted.is_none() && seek.is_none() {
        return Ok(None);
    }

    let mut root = None;
    if let Some(seek) = seek {
        if seek[0].index >= 2 * MAX_LENGTH {
            return Err(ProofError::OutOfBounds("seek node index"));
        }
        let mut ite = Iter::new(seek[0].index);
        let mut q = NodeQueue::new(seek, None);
        let mut r = q.shift(ite.index)?;
        nodes.push(r);
        while q.len() > 0 {
            check_factor(&ite)?;
            let node = q.shift(ite.sibling())?;
            r = Node::parent(ite.parent(), &r, &node).ok_or(ProofError::OutOfBounds("size"))?;
            nodes.push(node);
            nodes.push(r);
        }
        root = Some(r);
    }

    let Some(u) = untrusted else {
        return Ok(root);
    };
    if u.index >= 2 * MAX_LENGTH {
        return Err(ProofError::OutOfBounds("block index"));
    }
    let mut ite = Iter::new(u.index);
    let mut q = NodeQueue::new(u.nodes, root);
    let mut r = match u.value {
        Some(v) => Node::leaf(ite.index, v),
        None => q.shift(ite.index)?,
    };
    nodes.push(r);
    while q.len() > 0 {
        check_factor(&ite)?;
        let node = q.shift(ite.sibling())?;
        r = Node::parent(ite.parent(), &r, &node).ok_or(ProofError::OutOfBounds("size"))?;
        nodes.push(node);
        nodes.push(r);
    }
    Ok(Some(r))
}

/// The upgrade part of a proof, as [`verify_upgrade`] takes it.
pub(crate) struct UpgradePart<'a> {
    pub(crate) start: u64,
    pub(crate) length: u64,
    pub(crate) nodes: &'a [Node],
    pub(crate) additional_nodes: &'a [Node],
    pub(crate) signature: Option<Bytes>,
}

/// Grows `batch` to the upgrade's length from the upgrade nodes (and `block_root`, the root
/// of the block part, where it fits), then by the additional nodes (`verifyUpgrade`).
/// Returns true when `block_root` was used, i.e. the block is covered by the upgrade's
/// signature. The signature itself is checked by the caller, over the resulting batch.
pub(crate) fn verify_upgrade(
    fork: u64,
    upgrade: &UpgradePart<'_>,
    block_root: Option<Node>,
    batch: &mut TreeBatch,
    prologue: Option<&crate::manifest::Prologue>,
) -> Result<bool, ProofError> {
    let end = upgrade
        .start
        .checked_add(upgrade.length)
        .filter(|e| *e <= MAX_LENGTH)
        .ok_or(ProofError::OutOfBounds("upgrade length"))?;

    if let Some(p) = prologue {
        if upgrade.start < p.length && (upgrade.start != 0 || upgrade.length < p.length) {
            return Err(ProofError::Prologue);
        }
    }

    let mut q = NodeQueue::new(upgrade.nodes, block_root);
    let mut grow = !batch.roots.is_empty();
    let mut i = 0;
    let to = 2 * end;

    for root in flat::full_roots(to) {
        let mut ite = Iter::new(root);
        if i < batch.roots.len() && batch.roots[i].index == root {
            i += 1;
            continue;
        }
        if grow {
            grow = false;
            if i < batch.roots.len() {
                let last = batch.roots[batch.roots.len() - 1].index;
                ite.seek(last);
                while ite.index != root {
                    check_factor(&ite)?;
                    let node = q.shift(ite.sibling())?;
                    batch.append_root(node, &mut ite)?;
                }
                continue;
            }
        }
        let node = q.shift(ite.index)?;
        batch.append_root(node, &mut ite)?;
    }

    if let Some(p) = prologue {
        if batch.length == p.length && batch.hash() != p.hash {
            return Err(ProofError::Prologue);
        }
    }

    let extra = upgrade.additional_nodes;
    let last = batch
        .roots
        .last()
        .ok_or(ProofError::Malformed("upgrade to an empty tree"))?
        .index;
    let mut ite = Iter::new(last);
    let mut i = 0;
    while i < extra.len() {
        check_factor(&ite)?;
        if extra[i].index != ite.sibling() {
            break;
        }
        batch.append_root(extra[i], &mut ite)?;
        i += 1;
    }
    while i < extra.len() {
        let node = extra[i];
        i += 1;
        while node.index != ite.index {
            if ite.factor == 2 {
                return Err(ProofError::UnexpectedNode {
                    expected: ite.index,
                    got: Some(node.index),
                });
            }
            ite.left_child();
        }
        batch.append_root(node, &mut ite)?;
        check_factor(&ite)?;
        ite.sibling();
    }

    batch.signature = upgrade.signature.clone();
    batch.fork = fork;
    Ok(q.extra.is_none())
}

/// The flat indexes of the nodes that upgrade a tree of `from / 2` blocks to `to / 2`
/// blocks when no block is proven alongside (`additionalUpgradeProof`, and
/// `generateUpgrade` for multisig patches).
pub(crate) fn upgrade_indexes(from: u64, to: u64) -> Vec<u64> {
    let mut out = Vec::new();
    // JS starts the list at `from == 0` and otherwise at the first root it meets.
    let mut started = from == 0;
    for root in flat::full_roots(to) {
        let ite = Iter::new(root);
        // Roots entirely below `from` are already known.
        if ite.index + ite.factor / 2 < from {
            continue;
        }
        if !started && ite.contains(from - 2) {
            started = true;
            let target = from - 2;
            let mut ite = Iter::new(target);
            while ite.index != root {
                ite.sibling();
                if ite.index > target {
                    out.push(ite.index);
                }
                ite.parent();
            }
            continue;
        }
        started = true;
        out.push(root);
    }
    out
}

/// How many nodes above flat index `index` a peer that holds only the roots of a tree of
/// `length` blocks is missing (`MerkleTree.maxMissingNodes`): the `nodes` to put in a
/// request when nothing is known locally. 0 when `index` is a root or outside the tree.
pub fn max_missing_nodes(index: u64, length: u64) -> u64 {
    let head = 2 * length.min(crate::MAX_LENGTH);
    if index >= 2 * crate::MAX_LENGTH {
        return 0;
    }
    let mut ite = Iter::new(index);
    if ite.peek_right_span() >= head || flat::full_roots(head).any(|r| r == index) {
        return 0;
    }
    ite.parent();
    let mut count = 0;
    while !ite.contains(head) {
        count += 1;
        ite.parent();
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_of(blocks: &[&[u8]]) -> TreeBatch {
        let mut b = TreeBatch::new(&Tree::default());
        for blk in blocks {
            b.append(blk).unwrap();
        }
        b
    }

    #[test]
    fn vectors_from_js_core() {
        // js-vectors.json coreCorestoreKeyPair: blocks a, b, c.
        let b = tree_of(&[b"a", b"b", b"c"]);
        assert_eq!(b.length, 3);
        assert_eq!(b.byte_length, 3);
        let roots: Vec<_> = b.roots.iter().map(|r| (r.index, r.size)).collect();
        assert_eq!(roots, [(1, 2), (4, 1)]);
        assert_eq!(
            hex::encode(b.roots[0].hash),
            "9cac92aaed9e7d11eb629465684582ce39cb496303998de123533b09e16f2f06"
        );
        assert_eq!(
            hex::encode(b.hash()),
            "7ea73eb86179fb7328e73663f90f4c91256574af1112efe97fdf9309e03b67a7"
        );
        // leaf 0, leaf 2, parent 1, leaf 4
        let idx: Vec<_> = b.nodes.iter().map(|n| n.index).collect();
        assert_eq!(idx, [0, 2, 1, 4]);
    }

    #[test]
    fn parallel_leaves_match_sequential() {
        let blocks: Vec<Vec<u8>> = (0..300u32)
            .map(|i| vec![i as u8; 4000 + i as usize * 7])
            .collect();
        let par = hash_leaves(&blocks, 10);
        let seq: Vec<Node> = blocks
            .iter()
            .enumerate()
            .map(|(i, b)| Node::leaf(10 + 2 * i as u64, b))
            .collect();
        assert_eq!(par, seq);
        assert!(hash_leaves::<Vec<u8>>(&[], 0).is_empty());
    }

    #[test]
    fn roots_follow_full_roots() {
        let mut b = TreeBatch::new(&Tree::default());
        for i in 0..200u64 {
            b.append(&i.to_le_bytes()).unwrap();
            let want: Vec<_> = flat::full_roots(2 * b.length).collect();
            let got: Vec<_> = b.roots.iter().map(|r| r.index).collect();
            assert_eq!(got, want);
            assert_eq!(b.byte_length, 8 * (i + 1));
        }
    }

    #[test]
    fn max_missing_nodes_matches_root_depth() {
        // Leaf 4 of a 3-block tree is a root; leaf 0 sits one level under root 1.
        assert_eq!(max_missing_nodes(4, 3), 0);
        assert_eq!(max_missing_nodes(0, 3), 1);
        assert_eq!(max_missing_nodes(2 * 5, 16), 4);
        assert_eq!(max_missing_nodes(2 * 16, 16), 0);
        assert_eq!(max_missing_nodes(1, 16), 3);
    }

    #[test]
    fn invalidated_nodes_on_truncate() {
        let mut b = TreeBatch::new(&Tree {
            length: 8,
            ..Tree::default()
        });
        b.ancestors = 5;
        b.upgraded = true;
        let (range, singles) = b.invalidated_nodes().unwrap();
        assert_eq!(range, 10..16);
        // Ancestors of leaf 10 with an index below 10: 9 (blocks 4-5) and 7 (blocks 0-7).
        assert_eq!(singles, [9, 7]);
    }
}
