//! In-memory storage.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{Auth, Head, Storage, WriteBatch};
use crate::bitfield::Bitfield;
use crate::error::StorageError;
use crate::tree::Node;

/// Storage that lives in memory and is dropped with the core: for tests, caches and
/// short-lived cores.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    /// The auth record.
    auth: Option<Auth>,
    /// The head.
    head: Option<Head>,
    /// Tree nodes by flat index.
    nodes: BTreeMap<u64, Node>,
    /// Blocks by index.
    blocks: BTreeMap<u64, Bytes>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Removes every key of `map` in `range`.
pub(super) fn remove_range<V>(map: &mut BTreeMap<u64, V>, range: std::ops::Range<u64>) {
    if range.is_empty() {
        return;
    }
    let keys: Vec<u64> = map.range(range).map(|(k, _)| *k).collect();
    for k in keys {
        map.remove(&k);
    }
}

impl Storage for MemoryStorage {
    fn auth(&self) -> Option<Auth> {
        self.auth.clone()
    }

    fn head(&self) -> Option<Head> {
        self.head.clone()
    }

    fn node(&self, index: u64) -> Result<Option<Node>, StorageError> {
        Ok(self.nodes.get(&index).copied())
    }

    fn block(&self, index: u64) -> Result<Option<Bytes>, StorageError> {
        Ok(self.blocks.get(&index).cloned())
    }

    fn bitfield(&self) -> Bitfield {
        let mut b = Bitfield::new();
        for &i in self.blocks.keys() {
            b.set(i, true);
        }
        b
    }

    fn commit(&mut self, batch: WriteBatch) -> Result<(), StorageError> {
        for r in batch.delete_nodes {
            remove_range(&mut self.nodes, r);
        }
        for r in batch.delete_blocks {
            remove_range(&mut self.blocks, r);
        }
        for n in batch.nodes {
            self.nodes.insert(n.index, n);
        }
        for (i, b) in batch.blocks {
            self.blocks.insert(i, b);
        }
        if let Some(a) = batch.auth {
            self.auth = Some(a);
        }
        if let Some(h) = batch.head {
            self.head = Some(h);
        }
        Ok(())
    }
}
