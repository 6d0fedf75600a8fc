//! Proof generation (hypercore `lib/merkle-tree.js` `generateProof` and helpers).
//!
//! Given a request, the responder works out statically which tree nodes the requester needs
//! and reads them from storage. The node lists come out in exactly the order JS produces
//! them, so the `data` messages are byte-identical.

use crate::error::{Error, StorageError};
use crate::flat::{self, Iter};
use crate::manifest::Prologue;
use crate::messages::{DataBlock, DataHash, DataSeek, DataUpgrade, Proof, ProofRequest};
use crate::storage::Storage;
use crate::tree::{upgrade_indexes, Node, Tree};
use crate::MAX_LENGTH;

/// Guard against walking more levels than any tree has.
const MAX_DEPTH_STEPS: u32 = 64;

/// The node lists being collected (`p.node`, `p.seek`, `p.upgrade`, `p.additionalUpgrade`).
#[derive(Default)]
struct Pending {
    node: Option<Vec<u64>>,
    seek: Option<Vec<u64>>,
    upgrade: Option<Vec<u64>>,
    additional: Option<Vec<u64>>,
}

/// The block or hash being proven (`normalizeIndexed`).
struct Indexed {
    /// True for a block (the value is sent, so the leaf itself is not).
    value: bool,
    /// Flat index.
    index: u64,
    /// Missing nodes the requester declared.
    nodes: u64,
    /// Last block the node covers.
    last_index: u64,
}

fn invalid(msg: &'static str) -> Error {
    Error::InvalidRequest(msg)
}

struct Ctx<'a> {
    tree: &'a Tree,
    storage: &'a dyn Storage,
}

impl Ctx<'_> {
    fn node(&self, index: u64) -> Result<Node, Error> {
        self.storage.node(index)?.ok_or(Error::InvalidRequest(
            "a tree node the proof needs is not stored",
        ))
    }

    fn node_opt(&self, index: u64) -> Result<Option<Node>, StorageError> {
        self.storage.node(index)
    }

    /// Byte offset of the node at `index`, as JS `getByteOffsetSession` computes it.
    ///
    /// JS quirk, kept for byte-identical proofs: for every root left of the one holding
    /// `index`, JS pushes the root's size (a number) where it otherwise pushes nodes, then
    /// sums `.size` of each entry, so the offset is `NaN` whenever `index` is not under the
    /// first root. That is `None` here; [`Ctx::seek_untrusted`] then behaves as JS does
    /// with `NaN` (it returns the subtree root, so the proof carries no seek part).
    fn byte_offset(&self, index: u64) -> Result<Option<u64>, Error> {
        if index == 2 * self.tree.length {
            return Ok(Some(self.tree.byte_length));
        }
        let index = if index & 1 == 1 {
            flat::left_span(index)
        } else {
            index
        };
        let mut head = 0u64;
        let mut offset = 0u64;
        let mut skipped_root = false;
        for root in &self.tree.roots {
            head += 2 * (root.index - head + 1);
            if index >= head {
                skipped_root = true;
                continue;
            }
            let mut ite = Iter::new(root.index);
            let mut steps = 0;
            while ite.index != index {
                steps += 1;
                if steps > 2 * MAX_DEPTH_STEPS {
                    return Err(invalid("bad byte offset index"));
                }
                if index < ite.index {
                    ite.left_child();
                } else {
                    let l = ite.left_child();
                    offset += self.node(l)?.size;
                    ite.sibling();
                }
            }
            return Ok((!skipped_root).then_some(offset));
        }
        Err(invalid("byte offset beyond the tree"))
    }

    /// `seekTrustedTree`: the node under `root` holding byte `bytes` (relative to `root`).
    fn seek_trusted(&self, root: u64, mut bytes: u64, padding: u64) -> Result<u64, Error> {
        if bytes == 0 {
            return Ok(root);
        }
        let mut ite = Iter::new(root);
        let mut steps = 0;
        while ite.index & 1 == 1 {
            steps += 1;
            if steps > MAX_DEPTH_STEPS {
                return Err(invalid("bad seek"));
            }
            let l = ite.left_child();
            match self.node_opt(l)? {
                Some(node) => {
                    let size = unpadded(&node, padding, ite.count_leaves());
                    if size == bytes {
                        return Ok(ite.index);
                    }
                    if size > bytes {
                        continue;
                    }
                    bytes -= size;
                    ite.sibling();
                }
                None => {
                    ite.parent();
                    return Ok(ite.index);
                }
            }
        }
        Ok(ite.index)
    }

    /// `seekUntrustedTree`: like [`Ctx::seek_trusted`] but checks that `bytes` (absolute)
    /// falls inside `root`.
    fn seek_untrusted(&self, root: u64, bytes: u64, padding: u64) -> Result<u64, Error> {
        let pad = padding.saturating_mul(flat::left_span(root) / 2);
        let Some(offset) = self.byte_offset(root)? else {
            // JS compares against NaN: no check fails and the seek stops at `root`.
            return Ok(root);
        };
        let offset = offset.checked_sub(pad).ok_or(invalid("invalid seek"))?;
        if offset > bytes {
            return Err(invalid("invalid seek"));
        }
        if offset == bytes {
            return Ok(root);
        }
        let bytes = bytes - offset;
        let node = self.node(root)?;
        if unpadded(&node, padding, flat::count_leaves(root)) <= bytes {
            return Err(invalid("invalid seek"));
        }
        self.seek_trusted(root, bytes, padding)
    }

    /// `seekFromHead`: the node holding byte `bytes` among the roots of `head`.
    fn seek_from_head(&self, head: u64, mut bytes: u64, padding: u64) -> Result<u64, Error> {
        for root in flat::full_roots(head) {
            let node = self.node(root)?;
            let size = unpadded(&node, padding, flat::count_leaves(root));
            if bytes == size {
                return Ok(root);
            }
            if bytes > size {
                bytes -= size;
                continue;
            }
            return self.seek_trusted(root, bytes, padding);
        }
        Ok(head)
    }
}

fn unpadded(node: &Node, padding: u64, leaves: u64) -> u64 {
    if padding == 0 {
        node.size
    } else {
        node.size.wrapping_sub(padding.wrapping_mul(leaves))
    }
}

/// `seekProof`: the seek root, then siblings up to `root`.
fn seek_proof(seek_root: u64, root: u64, p: &mut Pending) -> Result<(), Error> {
    // Walking up from a node outside `root` never meets it (and would overflow the
    // iterator's span before the step guard stops it).
    if !Iter::new(root).contains(seek_root) {
        return Err(invalid("seek root is not under the proof root"));
    }
    let mut ite = Iter::new(seek_root);
    let mut out = vec![ite.index];
    let mut steps = 0;
    while ite.index != root {
        steps += 1;
        if steps > MAX_DEPTH_STEPS {
            return Err(invalid("seek root is not under the proof root"));
        }
        ite.sibling();
        out.push(ite.index);
        ite.parent();
    }
    p.seek = Some(out);
    Ok(())
}

/// `blockAndSeekProof`.
fn block_and_seek_proof(
    node: Option<&Indexed>,
    seek: bool,
    seek_root: u64,
    root: u64,
    p: &mut Pending,
) -> Result<(), Error> {
    let Some(node) = node else {
        return seek_proof(seek_root, root, p);
    };
    // A hash inside the upgraded range next to a seek into a later root (the fuzzer found
    // `hash 11, seek into block 8, upgrade 7..10` on a 10-block core) lands here with a node
    // outside `root`: refuse it instead of climbing until the span overflows.
    if !Iter::new(root).contains(node.index) {
        return Err(invalid("block is not under the proof root"));
    }
    let mut ite = Iter::new(node.index);
    let mut out = Vec::new();
    if !node.value {
        out.push(ite.index);
    }
    let mut steps = 0;
    while ite.index != root {
        steps += 1;
        if steps > MAX_DEPTH_STEPS {
            return Err(invalid("block is not under the proof root"));
        }
        ite.sibling();
        if seek && ite.contains(seek_root) && ite.index != seek_root {
            seek_proof(seek_root, ite.index, p)?;
        } else {
            out.push(ite.index);
        }
        ite.parent();
    }
    p.node = Some(out);
    Ok(())
}

/// `upgradeProof`.
fn upgrade_proof(
    node: Option<&Indexed>,
    seek: bool,
    from: u64,
    to: u64,
    sub_tree: u64,
    p: &mut Pending,
) -> Result<(), Error> {
    if from == 0 {
        p.upgrade = Some(Vec::new());
    }
    for root in flat::full_roots(to) {
        let ite = Iter::new(root);
        if ite.index + ite.factor / 2 < from {
            continue;
        }
        if p.upgrade.is_none() && ite.contains(from - 2) {
            p.upgrade = Some(Vec::new());
            let target = from - 2;
            let mut ite = Iter::new(target);
            while ite.index != root {
                ite.sibling();
                if ite.index > target {
                    if p.node.is_none() && p.seek.is_none() && ite.contains(sub_tree) {
                        block_and_seek_proof(node, seek, sub_tree, ite.index, p)?;
                    } else if let Some(u) = p.upgrade.as_mut() {
                        u.push(ite.index);
                    }
                }
                ite.parent();
            }
            continue;
        }
        if p.upgrade.is_none() {
            p.upgrade = Some(Vec::new());
        }
        if p.node.is_none() && p.seek.is_none() && ite.contains(sub_tree) {
            block_and_seek_proof(node, seek, sub_tree, ite.index, p)?;
            continue;
        }
        if let Some(u) = p.upgrade.as_mut() {
            u.push(ite.index);
        }
    }
    Ok(())
}

/// `nodesToRoot`: the ancestor `nodes` levels above `index`, which must stay inside the
/// tree of `head`.
fn nodes_to_root(index: u64, nodes: u64, head: u64) -> Result<u64, Error> {
    let mut ite = Iter::new(index);
    for _ in 0..nodes {
        ite.parent();
        if ite.contains(head) {
            return Err(invalid("nodes is out of bounds"));
        }
    }
    Ok(ite.index)
}

/// Builds the proof for `req` against `tree` (`generateProof` + `settle`). Block values are
/// not filled in: the caller adds them.
pub(crate) fn generate(
    tree: &Tree,
    storage: &dyn Storage,
    prologue: Option<&Prologue>,
    req: &ProofRequest,
) -> Result<Proof, Error> {
    let ctx = Ctx { tree, storage };
    let mut upgrade = req.upgrade;
    if let (Some(p), Some(u)) = (prologue, upgrade.as_mut()) {
        if u.start < p.length {
            u.start = 0;
            u.length = p.length;
        }
    }

    let head = 2 * tree.length;
    let mut proof = Proof {
        fork: tree.fork,
        ..Proof::default()
    };
    if head == 0 {
        return Ok(proof);
    }

    let (from, to) = match upgrade {
        Some(u) => {
            let end = u
                .start
                .checked_add(u.length)
                .filter(|e| *e <= MAX_LENGTH)
                .ok_or(invalid("invalid upgrade"))?;
            (2 * u.start, 2 * end)
        }
        None => (0, head),
    };
    let node = match (req.block, req.hash) {
        (Some(b), _) => {
            if b.index >= tree.length {
                return Err(invalid("block is beyond the tree"));
            }
            Some(Indexed {
                value: true,
                index: b.index * 2,
                nodes: b.nodes,
                last_index: b.index,
            })
        }
        (None, Some(h)) => {
            if h.index >= head || flat::right_span(h.index) >= head {
                return Err(invalid("hash is beyond the tree"));
            }
            Some(Indexed {
                value: false,
                index: h.index,
                nodes: h.nodes,
                last_index: flat::right_span(h.index) / 2,
            })
        }
        (None, None) => None,
    };

    if from >= to || to > head {
        return Err(invalid("invalid upgrade"));
    }
    if req.seek.is_some() && upgrade.is_some() && node.as_ref().is_some_and(|n| n.index >= from) {
        return Err(invalid(
            "cannot both do a seek and block/hash request when upgrading",
        ));
    }

    let seek = req.seek.is_some();
    let mut sub_tree = head;
    let mut p = Pending::default();

    match (&node, upgrade) {
        (Some(n), u) if u.is_none_or(|u| n.last_index < u.start) => {
            sub_tree = nodes_to_root(n.index, n.nodes, to)?;
            let seek_root = match req.seek {
                Some(s) => ctx.seek_untrusted(sub_tree, s.bytes, s.padding)?,
                None => head,
            };
            block_and_seek_proof(Some(n), seek, seek_root, sub_tree, &mut p)?;
        }
        (_, Some(_)) if node.is_some() || seek => {
            sub_tree = match (req.seek, &node) {
                (Some(s), _) => ctx.seek_from_head(to, s.bytes, s.padding)?,
                (None, Some(n)) => n.index,
                (None, None) => head,
            };
        }
        _ => {}
    }

    if upgrade.is_some() {
        upgrade_proof(node.as_ref(), seek, from, to, sub_tree, &mut p)?;
        if head > to {
            p.additional = Some(upgrade_indexes(to, head));
        }
    }

    let fetch = |ids: Option<Vec<u64>>| -> Result<Option<Vec<Node>>, Error> {
        ids.map(|v| v.into_iter().map(|i| ctx.node(i)).collect())
            .transpose()
    };
    let p_node = fetch(p.node)?;
    let p_seek = fetch(p.seek)?;
    let p_upgrade = fetch(p.upgrade)?;
    let p_additional = fetch(p.additional)?;

    if let Some(b) = req.block {
        let nodes = p_node.ok_or(invalid("invalid block request"))?;
        proof.block = Some(DataBlock {
            index: b.index,
            value: bytes::Bytes::new(),
            nodes,
        });
    } else if let Some(h) = req.hash {
        let nodes = p_node.ok_or(invalid("invalid hash request"))?;
        proof.hash = Some(DataHash {
            index: h.index,
            nodes,
        });
    }
    if let (Some(s), Some(nodes)) = (req.seek, p_seek) {
        proof.seek = Some(DataSeek {
            bytes: s.bytes,
            nodes,
        });
    }
    if let Some(u) = upgrade {
        proof.upgrade = Some(DataUpgrade {
            start: u.start,
            length: u.length,
            nodes: p_upgrade.unwrap_or_default(),
            additional_nodes: p_additional.unwrap_or_default(),
            signature: tree.signature.clone(),
        });
    }
    Ok(proof)
}

#[cfg(test)]
mod tests {
    //! The walks are bounded by the tree's depth: every index a request names is checked
    //! against the tree (and [`flat::MAX_INDEX`]) before a walk starts, so the step guard
    //! ([`MAX_DEPTH_STEPS`], above any depth a flat index below 2^62 has) is never reached
    //! from a request. These are the extreme requests a remote can send against a short tree.
    use super::*;
    use crate::messages::{RequestBlock, RequestSeek, RequestUpgrade};
    use crate::Hypercore;
    use corenet_noise::KeyPair;

    #[test]
    fn requests_at_the_index_limits_are_refused_before_any_walk() {
        let core = Hypercore::in_memory(KeyPair::from_seed([7; 32])).unwrap();
        core.append((0..10u8).map(|i| vec![i; 100]).collect::<Vec<_>>())
            .unwrap();
        let block = |index, nodes| Some(RequestBlock { index, nodes });
        let far = flat::MAX_INDEX - 1;
        let hostile = [
            ProofRequest {
                hash: block(far, 0),
                ..ProofRequest::default()
            },
            ProofRequest {
                hash: block(u64::MAX, u64::MAX),
                ..ProofRequest::default()
            },
            ProofRequest {
                block: block(5, u64::MAX),
                ..ProofRequest::default()
            },
            ProofRequest {
                block: block(5, 0),
                seek: Some(RequestSeek {
                    bytes: u64::MAX,
                    padding: 0,
                }),
                ..ProofRequest::default()
            },
            ProofRequest {
                block: block(5, 0),
                seek: Some(RequestSeek {
                    bytes: 0,
                    padding: u64::MAX,
                }),
                ..ProofRequest::default()
            },
            ProofRequest {
                block: block(5, 0),
                upgrade: Some(RequestUpgrade {
                    start: u64::MAX - 1,
                    length: 2,
                }),
                ..ProofRequest::default()
            },
            ProofRequest {
                block: block(5, 0),
                upgrade: Some(RequestUpgrade {
                    start: 0,
                    length: crate::MAX_LENGTH,
                }),
                ..ProofRequest::default()
            },
        ];
        for req in hostile {
            match core.create_proof(&req) {
                Err(e) => assert!(e.is_remote_fault(), "{req:?}: {e}"),
                Ok(p) => panic!("{req:?} was answered: {p:?}"),
            }
        }
    }
}
