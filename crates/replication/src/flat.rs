//! Flat-tree index math, as the npm `flat-tree` package computes it.
//!
//! A flat tree lays a binary tree out in one array: leaves (blocks) sit at even indexes, block
//! `i` at `2 * i`, and a parent sits between its children at an odd index. The depth of an
//! index is its number of trailing one bits; the node at `(depth, offset)` is
//! `(offset << (depth + 1)) | ((1 << depth) - 1)`.
//!
//! ```text
//!  depth 2                3
//!  depth 1        1               5
//!  depth 0    0       2       4       6
//! ```
//!
//! Every function takes and returns `u64` flat indexes. Callers keep indexes below
//! [`MAX_INDEX`] (2^62), which leaves room for the parent of any node without overflow; the
//! hypercore code checks lengths against it before doing any tree math on remote input.

/// Largest flat index the tree math is defined for. Hypercore lengths are capped well below
/// this ([`crate::MAX_LENGTH`]), so that an ancestor of any valid node still fits a `u64`.
pub const MAX_INDEX: u64 = 1 << 62;

/// The depth of `index`: 0 for leaves, one more per level up.
pub const fn depth(index: u64) -> u32 {
    (!index).trailing_zeros()
}

/// The offset of `index` within its depth (leaves: the block number).
pub const fn offset(index: u64) -> u64 {
    index >> (depth(index) + 1)
}

/// The flat index of the node at `depth` and `offset`.
pub const fn index(depth: u32, offset: u64) -> u64 {
    (offset << (depth + 1)) | ((1u64 << depth) - 1)
}

/// The parent of `index`.
pub const fn parent(index: u64) -> u64 {
    let d = depth(index);
    self::index(d + 1, offset(index) >> 1)
}

/// The sibling of `index` (the other child of its parent).
pub const fn sibling(index: u64) -> u64 {
    let d = depth(index);
    self::index(d, offset(index) ^ 1)
}

/// The left child of `index`, `None` for a leaf.
pub const fn left_child(index: u64) -> Option<u64> {
    if index & 1 == 0 {
        return None;
    }
    let d = depth(index);
    Some(self::index(d - 1, offset(index) * 2))
}

/// The right child of `index`, `None` for a leaf.
pub const fn right_child(index: u64) -> Option<u64> {
    if index & 1 == 0 {
        return None;
    }
    let d = depth(index);
    Some(self::index(d - 1, offset(index) * 2 + 1))
}

/// Both children of `index`, `None` for a leaf.
pub const fn children(index: u64) -> Option<(u64, u64)> {
    match (left_child(index), right_child(index)) {
        (Some(l), Some(r)) => Some((l, r)),
        _ => None,
    }
}

/// The leftmost leaf under `index` (the index itself for a leaf).
pub const fn left_span(index: u64) -> u64 {
    if index & 1 == 0 {
        return index;
    }
    offset(index) << (depth(index) + 1)
}

/// The rightmost leaf under `index` (the index itself for a leaf).
pub const fn right_span(index: u64) -> u64 {
    if index & 1 == 0 {
        return index;
    }
    ((offset(index) + 1) << (depth(index) + 1)) - 2
}

/// `(left_span, right_span)` of `index`.
pub const fn spans(index: u64) -> (u64, u64) {
    (left_span(index), right_span(index))
}

/// How many nodes the subtree at `index` holds (itself included).
pub const fn count(index: u64) -> u64 {
    (2u64 << depth(index)) - 1
}

/// How many leaves the subtree at `index` holds.
pub const fn count_leaves(index: u64) -> u64 {
    1u64 << depth(index)
}

/// The next leaf after the subtree at `index` (flat-tree `nextLeaf`).
pub const fn next_leaf(index: u64) -> u64 {
    right_span(index) + 2
}

/// The roots of the full subtrees that make up the first `index / 2` leaves, in ascending
/// order: for a hypercore of `length` blocks, `full_roots(2 * length)` are its Merkle roots.
///
/// `index` must be even (a leaf position); odd input is rounded down.
///
/// ```
/// use corenet_replication::flat::full_roots;
/// assert_eq!(full_roots(6).collect::<Vec<_>>(), [1, 4]);
/// assert_eq!(full_roots(16).collect::<Vec<_>>(), [7]);
/// assert_eq!(full_roots(0).count(), 0);
/// ```
pub fn full_roots(index: u64) -> FullRoots {
    FullRoots {
        remaining: index / 2,
        offset: 0,
    }
}

/// Iterator returned by [`full_roots`].
#[derive(Debug, Clone)]
pub struct FullRoots {
    /// Leaves not yet covered by a root.
    remaining: u64,
    /// Flat index of the first leaf not yet covered.
    offset: u64,
}

impl Iterator for FullRoots {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.remaining == 0 {
            return None;
        }
        // The largest power of two not above `remaining` leaves.
        let factor = 1u64 << (63 - self.remaining.leading_zeros());
        let root = self.offset + factor - 1;
        self.offset += 2 * factor;
        self.remaining -= factor;
        Some(root)
    }
}

/// A cursor over flat-tree indexes (flat-tree's `iterator`), as the proof code walks trees.
///
/// `factor` is twice the number of leaves under the current node (2 for a leaf).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Iter {
    /// Current flat index.
    pub index: u64,
    /// Offset of the current node within its depth.
    pub offset: u64,
    /// `2 << depth` of the current node.
    pub factor: u64,
}

impl Iter {
    /// A cursor at `index`.
    pub const fn new(index: u64) -> Self {
        let mut it = Iter {
            index: 0,
            offset: 0,
            factor: 2,
        };
        it.seek(index);
        it
    }

    /// Moves to `index`.
    pub const fn seek(&mut self, index: u64) {
        self.index = index;
        self.offset = offset(index);
        self.factor = 2u64 << depth(index);
    }

    /// True when the current node is a left child.
    pub const fn is_left(&self) -> bool {
        self.offset & 1 == 0
    }

    /// True when the current node is a right child.
    pub const fn is_right(&self) -> bool {
        !self.is_left()
    }

    /// True when `index` lies in the subtree of the current node.
    pub const fn contains(&self, index: u64) -> bool {
        let half = self.factor / 2;
        if index > self.index {
            index < self.index + half
        } else if index < self.index {
            // `index > self.index - half`, written without underflow
            index + half > self.index
        } else {
            true
        }
    }

    /// Nodes in the current subtree.
    pub const fn count(&self) -> u64 {
        if self.index & 1 == 0 {
            1
        } else {
            self.factor - 1
        }
    }

    /// Leaves in the current subtree.
    pub const fn count_leaves(&self) -> u64 {
        self.count().div_ceil(2)
    }

    /// Moves to the previous node at the same depth (stays put at offset 0).
    pub fn prev_node(&mut self) -> u64 {
        if self.offset == 0 {
            return self.index;
        }
        self.offset -= 1;
        self.index -= self.factor;
        self.index
    }

    /// Moves to the next node at the same depth.
    pub fn next_node(&mut self) -> u64 {
        self.offset += 1;
        self.index += self.factor;
        self.index
    }

    /// Moves to the sibling.
    pub fn sibling(&mut self) -> u64 {
        if self.is_left() {
            self.next_node()
        } else {
            self.prev_node()
        }
    }

    /// Moves to the parent.
    pub fn parent(&mut self) -> u64 {
        if self.offset & 1 == 1 {
            self.index -= self.factor / 2;
            self.offset = (self.offset - 1) / 2;
        } else {
            self.index += self.factor / 2;
            self.offset /= 2;
        }
        self.factor *= 2;
        self.index
    }

    /// Moves to the leftmost leaf of the current subtree.
    pub fn left_span(&mut self) -> u64 {
        self.index = self.index + 1 - self.factor / 2;
        self.offset = self.index / 2;
        self.factor = 2;
        self.index
    }

    /// Moves to the rightmost leaf of the current subtree.
    pub fn right_span(&mut self) -> u64 {
        self.index = self.index + self.factor / 2 - 1;
        self.offset = self.index / 2;
        self.factor = 2;
        self.index
    }

    /// The leftmost leaf of the current subtree, without moving.
    pub const fn peek_left_span(&self) -> u64 {
        self.index + 1 - self.factor / 2
    }

    /// The rightmost leaf of the current subtree, without moving.
    pub const fn peek_right_span(&self) -> u64 {
        self.index + self.factor / 2 - 1
    }

    /// Moves to the left child (stays put on a leaf).
    pub fn left_child(&mut self) -> u64 {
        if self.factor == 2 {
            return self.index;
        }
        self.factor /= 2;
        self.index -= self.factor / 2;
        self.offset *= 2;
        self.index
    }

    /// Moves to the right child (stays put on a leaf).
    pub fn right_child(&mut self) -> u64 {
        if self.factor == 2 {
            return self.index;
        }
        self.factor /= 2;
        self.index += self.factor / 2;
        self.offset = 2 * self.offset + 1;
        self.index
    }

    /// Moves to the first leaf after the current subtree.
    pub fn next_tree(&mut self) -> u64 {
        self.index = self.index + self.factor / 2 + 1;
        self.offset = self.index / 2;
        self.factor = 2;
        self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basics() {
        assert_eq!(depth(0), 0);
        assert_eq!(depth(1), 1);
        assert_eq!(depth(3), 2);
        assert_eq!(depth(7), 3);
        assert_eq!(index(0, 0), 0);
        assert_eq!(index(1, 1), 5);
        assert_eq!(index(2, 1), 11);
        assert_eq!(offset(5), 1);
        assert_eq!(offset(11), 1);
        assert_eq!(parent(0), 1);
        assert_eq!(parent(2), 1);
        assert_eq!(parent(1), 3);
        assert_eq!(parent(5), 3);
        assert_eq!(sibling(0), 2);
        assert_eq!(sibling(5), 1);
        assert_eq!(children(3), Some((1, 5)));
        assert_eq!(children(4), None);
        assert_eq!(spans(3), (0, 6));
        assert_eq!(spans(4), (4, 4));
        assert_eq!(count(3), 7);
        assert_eq!(count_leaves(3), 4);
        assert_eq!(next_leaf(3), 8);
        assert_eq!(full_roots(2 * 5).collect::<Vec<_>>(), [3, 8]);
        assert_eq!(full_roots(2 * 7).collect::<Vec<_>>(), [3, 9, 12]);
    }

    #[test]
    fn iterator_walks() {
        let mut it = Iter::new(0);
        assert_eq!(it.parent(), 1);
        assert_eq!(it.parent(), 3);
        assert_eq!(it.sibling(), 11);
        assert_eq!(it.left_child(), 9);
        assert_eq!(it.right_child(), 10);
        assert_eq!(it.left_child(), 10);
        let mut it = Iter::new(11);
        assert!(it.contains(8) && it.contains(14) && !it.contains(7) && !it.contains(15));
        assert_eq!(it.peek_left_span(), 8);
        assert_eq!(it.peek_right_span(), 14);
        assert_eq!(it.next_tree(), 16);
    }

    #[test]
    fn iterator_agrees_with_functions() {
        for i in 0..4096u64 {
            let mut it = Iter::new(i);
            assert_eq!(it.index, i);
            assert_eq!(it.peek_left_span(), left_span(i));
            assert_eq!(it.peek_right_span(), right_span(i));
            assert_eq!(it.count(), count(i));
            let mut s = it;
            assert_eq!(s.sibling(), sibling(i), "sibling of {i}");
            assert_eq!(it.parent(), parent(i));
            assert_eq!(Iter::new(parent(i)), it);
        }
    }
}
