//! Where a core keeps its blocks, tree nodes and head: the [`Storage`] trait, with
//! [`MemoryStorage`] and the crash-safe [`DiskStorage`].
//!
//! A core changes its storage only through [`Storage::commit`] of a [`WriteBatch`], which
//! must be atomic: after a crash, either all of a batch is there or none of it. The core
//! builds each batch so that any committed prefix of batches is a consistent, verifiable
//! core.

use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use corenet_codec::hash::Hash;
use zeroize::Zeroizing;

use crate::bitfield::Bitfield;
use crate::error::StorageError;
use crate::manifest::Manifest;
use crate::tree::Node;

mod disk;
mod memory;

pub use disk::{DiskStorage, SyncPolicy, LOG_FILE};
pub use memory::MemoryStorage;

/// Who the core is: its key, manifest, and the signing seed of a writable core.
#[derive(Clone, PartialEq, Eq)]
pub struct Auth {
    /// The core key.
    pub key: Hash,
    /// The manifest, once known (a core opened by key learns it from its first proof).
    pub manifest: Option<Manifest>,
    /// The Ed25519 seed of the local signer (writable cores only).
    pub seed: Option<Zeroizing<[u8; 32]>>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("key", &hex::encode(self.key))
            .field("manifest", &self.manifest)
            .field("writable", &self.seed.is_some())
            .finish()
    }
}

/// The committed tree head: what the signature covers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Head {
    /// Fork id.
    pub fork: u64,
    /// Number of blocks.
    pub length: u64,
    /// Tree hash at `length` (checked against the stored roots when the core opens).
    pub tree_hash: Hash,
    /// Signature of the tree (absent for an empty tree).
    pub signature: Option<Bytes>,
}

/// One atomic change to a core's storage. Deletions apply first, then puts, then the auth
/// and head.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    /// New auth record.
    pub auth: Option<Auth>,
    /// New head.
    pub head: Option<Head>,
    /// Flat-index ranges of tree nodes to delete.
    pub delete_nodes: Vec<Range<u64>>,
    /// Block ranges to delete.
    pub delete_blocks: Vec<Range<u64>>,
    /// Tree nodes to store.
    pub nodes: Vec<Node>,
    /// Blocks to store, by index.
    pub blocks: Vec<(u64, Bytes)>,
}

impl WriteBatch {
    /// True when the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.auth.is_none()
            && self.head.is_none()
            && self.delete_nodes.is_empty()
            && self.delete_blocks.is_empty()
            && self.nodes.is_empty()
            && self.blocks.is_empty()
    }
}

/// A core's persistent state.
///
/// Reads take `&self`; [`Storage::commit`] takes `&mut self` and must be atomic and, for
/// persistent stores, durable according to the store's documented policy. A core owns its
/// storage exclusively.
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// The stored auth record, `None` for an empty store.
    fn auth(&self) -> Option<Auth>;
    /// The stored head, `None` before the first commit that sets one.
    fn head(&self) -> Option<Head>;
    /// A tree node.
    fn node(&self, index: u64) -> Result<Option<Node>, StorageError>;
    /// A block's bytes.
    fn block(&self, index: u64) -> Result<Option<Bytes>, StorageError>;
    /// Which blocks are stored (read once, when the core opens).
    fn bitfield(&self) -> Bitfield;
    /// Applies `batch` atomically.
    fn commit(&mut self, batch: WriteBatch) -> Result<(), StorageError>;
}

impl<S: Storage + ?Sized> Storage for Box<S> {
    fn auth(&self) -> Option<Auth> {
        (**self).auth()
    }
    fn head(&self) -> Option<Head> {
        (**self).head()
    }
    fn node(&self, index: u64) -> Result<Option<Node>, StorageError> {
        (**self).node(index)
    }
    fn block(&self, index: u64) -> Result<Option<Bytes>, StorageError> {
        (**self).block(index)
    }
    fn bitfield(&self) -> Bitfield {
        (**self).bitfield()
    }
    fn commit(&mut self, batch: WriteBatch) -> Result<(), StorageError> {
        (**self).commit(batch)
    }
}
