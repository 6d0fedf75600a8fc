//! The Kademlia routing table: k-buckets by common prefix length with our id.
//!
//! A node with id `n` lives in row `common_prefix_len(own, n)`; each row holds at most `k`
//! nodes. Unlike the JS table, [`Table::closest`] returns the exact `k` closest nodes by XOR
//! distance (the JS order visits lower rows before higher ones, which is not quite XOR order;
//! the difference is local behaviour, not wire format).

use std::net::SocketAddrV4;

use super::id::NodeId;

/// What the table remembers about a node. Times are in ticks (5 s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The node's id.
    pub id: NodeId,
    /// Its address.
    pub addr: SocketAddrV4,
    /// Tick it was added.
    pub added: u32,
    /// Tick we last pinged it (or heard from it).
    pub pinged: u32,
    /// Tick we last heard from it.
    pub seen: u32,
    /// DOWN_HINTs received about it since it was last seen.
    pub down_hints: u8,
    /// Tick of its last NAT sample of our address (0: never).
    pub sampled: u32,
}

/// Result of [`Table::add`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddResult {
    /// The node was inserted.
    Added,
    /// The node was already present; its address was updated.
    Updated,
    /// The row is full; the caller may ping `oldest` and replace it if it is gone.
    Full {
        /// The row's least recently pinged node.
        oldest: NodeId,
    },
    /// The id is our own.
    Own,
}

/// The routing table.
#[derive(Debug, Clone)]
pub struct Table {
    /// Our id.
    id: NodeId,
    /// Bucket size.
    k: usize,
    /// Row `i` holds nodes sharing exactly `i` leading bits with `id`; trailing empty rows are
    /// not allocated.
    rows: Vec<Vec<Entry>>,
    /// Total entries.
    len: usize,
}

impl Table {
    /// An empty table for `id` with bucket size `k`.
    pub fn new(id: NodeId, k: usize) -> Self {
        Table {
            id,
            k,
            rows: Vec::new(),
            len: 0,
        }
    }

    /// Our id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn row_of(&self, id: &NodeId) -> usize {
        self.id.common_prefix_len(id).min(255)
    }

    /// The entry for `id`.
    pub fn get(&self, id: &NodeId) -> Option<&Entry> {
        self.rows.get(self.row_of(id))?.iter().find(|e| e.id == *id)
    }

    /// The entry for `id`, mutably.
    pub fn get_mut(&mut self, id: &NodeId) -> Option<&mut Entry> {
        let r = self.row_of(id);
        self.rows.get_mut(r)?.iter_mut().find(|e| e.id == *id)
    }

    /// Inserts or refreshes a node.
    pub fn add(&mut self, entry: Entry) -> AddResult {
        if entry.id == self.id {
            return AddResult::Own;
        }
        let r = self.row_of(&entry.id);
        if self.rows.len() <= r {
            self.rows.resize_with(r + 1, Vec::new);
        }
        let row = &mut self.rows[r];
        if let Some(e) = row.iter_mut().find(|e| e.id == entry.id) {
            e.addr = entry.addr;
            return AddResult::Updated;
        }
        if row.len() >= self.k {
            let oldest = row
                .iter()
                .min_by_key(|e| (e.pinged, e.added))
                .map(|e| e.id)
                .unwrap_or(entry.id);
            return AddResult::Full { oldest };
        }
        row.push(entry);
        self.len += 1;
        AddResult::Added
    }

    /// Removes a node; returns it if it was present.
    pub fn remove(&mut self, id: &NodeId) -> Option<Entry> {
        let r = self.row_of(id);
        let row = self.rows.get_mut(r)?;
        let i = row.iter().position(|e| e.id == *id)?;
        let e = row.swap_remove(i);
        self.len -= 1;
        while self.rows.last().is_some_and(Vec::is_empty) {
            self.rows.pop();
        }
        Some(e)
    }

    /// The row a node would go to, for full-row handling.
    pub fn row(&self, id: &NodeId) -> &[Entry] {
        self.rows.get(self.row_of(id)).map_or(&[], Vec::as_slice)
    }

    /// Every entry.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.rows.iter().flatten()
    }

    /// Every entry, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Entry> {
        self.rows.iter_mut().flatten()
    }

    /// The `n` nodes closest to `target` by XOR distance, closest first.
    pub fn closest(&self, target: &NodeId, n: usize) -> Vec<&Entry> {
        let mut out: Vec<&Entry> = Vec::with_capacity(n.min(self.len));
        if n == 0 || self.len == 0 {
            return out;
        }
        let d = self.id.common_prefix_len(target).min(255);
        // Row d agrees with the target beyond bit d (closest), then every row above d (they
        // share exactly d bits with the target), then rows below d in decreasing order.
        fn push_sorted<'a>(
            target: &NodeId,
            n: usize,
            rows: impl Iterator<Item = &'a Vec<Entry>>,
            out: &mut Vec<&'a Entry>,
        ) {
            let mut group: Vec<&Entry> = rows.flatten().collect();
            group.sort_by(|a, b| target.cmp_distance(&a.id, &b.id));
            for e in group {
                if out.len() == n {
                    return;
                }
                out.push(e);
            }
        }
        push_sorted(target, n, self.rows.get(d).into_iter(), &mut out);
        if out.len() < n && self.rows.len() > d + 1 {
            push_sorted(target, n, self.rows[d + 1..].iter(), &mut out);
        }
        let mut r = d.min(self.rows.len());
        while out.len() < n && r > 0 {
            r -= 1;
            push_sorted(target, n, std::iter::once(&self.rows[r]), &mut out);
        }
        out
    }

    /// A node chosen by `pick` in `0..len`.
    pub fn nth(&self, i: usize) -> Option<&Entry> {
        self.iter().nth(i)
    }

    /// A table with a new id holding the nodes that fit (used when a node becomes persistent
    /// and its id changes).
    pub fn rebuild(&self, id: NodeId) -> Table {
        let mut t = Table::new(id, self.k);
        for e in self.iter() {
            let _ = t.add(e.clone());
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};
    use std::net::Ipv4Addr;

    fn entry(id: NodeId) -> Entry {
        Entry {
            id,
            addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1),
            added: 0,
            pinged: 0,
            seen: 0,
            down_hints: 0,
            sampled: 0,
        }
    }

    #[test]
    fn closest_is_exact_xor_order() {
        let mut rng = rand_chacha::ChaChaRng::seed_from_u64(7);
        let mut rand_id = || {
            let mut b = [0u8; 32];
            rng.fill_bytes(&mut b);
            NodeId(b)
        };
        let own = rand_id();
        let mut t = Table::new(own, 20);
        let mut all = Vec::new();
        for _ in 0..2000 {
            let id = rand_id();
            if t.add(entry(id)) == AddResult::Added {
                all.push(id);
            }
        }
        assert!(t.len() > 100);
        for _ in 0..50 {
            let target = rand_id();
            let got: Vec<NodeId> = t.closest(&target, 20).iter().map(|e| e.id).collect();
            let mut want = all.clone();
            want.sort_by(|a, b| target.cmp_distance(a, b));
            want.truncate(20);
            assert_eq!(got, want);
        }
        // Rows stay bounded by k.
        for r in &t.rows {
            assert!(r.len() <= 20);
        }
    }

    #[test]
    fn full_row_reports_oldest() {
        let own = NodeId([0; 32]);
        let mut t = Table::new(own, 2);
        let mk = |b: u8| {
            let mut id = [0u8; 32];
            id[0] = 0x80;
            id[31] = b;
            NodeId(id)
        };
        let mut e1 = entry(mk(1));
        e1.pinged = 5;
        assert_eq!(t.add(e1), AddResult::Added);
        assert_eq!(t.add(entry(mk(2))), AddResult::Added);
        assert_eq!(t.add(entry(mk(3))), AddResult::Full { oldest: mk(2) });
        assert_eq!(t.add(entry(mk(1))), AddResult::Updated);
        assert_eq!(t.add(entry(own)), AddResult::Own);
        assert!(t.remove(&mk(2)).is_some());
        assert_eq!(t.add(entry(mk(3))), AddResult::Added);
    }
}
