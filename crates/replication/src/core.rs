//! The [`Hypercore`] type: a signed append-only log over a [`Storage`].

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;
use corenet_codec::hash::Hash;
use corenet_codec::{DiscoveryKey, PublicKey};
use corenet_noise::KeyPair;
use tokio::sync::{broadcast, watch};
use zeroize::Zeroizing;

use crate::bitfield::Bitfield;
use crate::error::{Error, ProofError};
use crate::flat;
use crate::manifest::Manifest;
use crate::messages::{Proof, ProofRequest};
use crate::replicator::protocol::LocalView;
use crate::replicator::{Replicator, ReplicatorConfig};
use crate::storage::{Auth, Head, MemoryStorage, Storage, WriteBatch};
use crate::tree::{self, Node, Tree, TreeBatch, Untrusted, UpgradePart};
use crate::verifier::Verifier;
use crate::MAX_LENGTH;

/// How many events [`Hypercore::events`] buffers per subscriber before it lags.
pub const EVENT_CAPACITY: usize = 1024;

/// Largest block [`Hypercore::append`] accepts. Blocks travel in one protomux message, whose
/// secret-stream frame is limited to 16 MiB; JS enforces no smaller limit.
pub const MAX_BLOCK_LEN: usize = 16 * 1024 * 1024 - 4096;

/// Which key a new writable core gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CoreKind {
    /// Manifest version 1 with the key pair as its single signer; the key is the manifest
    /// hash (what corestore creates).
    #[default]
    V1,
    /// A compat core: the key is the public key and signatures are plain Ed25519 over the
    /// 80-byte signable (`new Hypercore(storage, { keyPair, compat: true })`).
    Compat,
}

/// A snapshot of a core's head and download state, published on every change through
/// [`Hypercore::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    /// Number of blocks in the tree.
    pub length: u64,
    /// Total bytes in the tree.
    pub byte_length: u64,
    /// Fork id.
    pub fork: u64,
    /// Number of blocks held from 0 without a gap.
    pub contiguous_length: u64,
    /// Counts every change of stored blocks (appends, verified blocks, truncations): a
    /// cheap "something arrived" signal for waiters.
    pub generation: u64,
    /// Whether the core knows its manifest.
    pub has_manifest: bool,
}

/// What changed in a core, as [`Hypercore::events`] reports it (the replicator's `onhave`,
/// `onupgrade`, `ontruncate` hooks).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Blocks `start..start + length` are now stored.
    Have {
        /// First block.
        start: u64,
        /// Number of blocks.
        length: u64,
    },
    /// The tree grew (a local append or a verified upgrade).
    Upgraded {
        /// New length.
        length: u64,
        /// Fork id.
        fork: u64,
    },
    /// The tree was truncated or reorganised: blocks from `ancestors` on were dropped, and
    /// the tree is now `length` blocks at `fork`.
    Truncated {
        /// First dropped block (blocks below are kept).
        ancestors: u64,
        /// New length.
        length: u64,
        /// New fork id.
        fork: u64,
    },
    /// The core learnt its manifest.
    ManifestSet,
}

/// The result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Length after the append.
    pub length: u64,
    /// Byte length after the append.
    pub byte_length: u64,
}

/// A proof that passed verification, ready for [`Hypercore::apply`].
#[derive(Debug, Clone)]
pub struct VerifiedProof {
    /// The tree after the proof.
    batch: TreeBatch,
    /// The proven block.
    block: Option<(u64, Bytes)>,
    /// A manifest to store (the core did not know it yet).
    manifest: Option<Manifest>,
}

impl VerifiedProof {
    /// The proven block's index, if the proof carried one.
    pub fn block_index(&self) -> Option<u64> {
        self.block.as_ref().map(|b| b.0)
    }

    /// The length the tree will have after apply when the proof upgrades it.
    pub fn upgrade_length(&self) -> Option<u64> {
        self.batch.upgraded.then_some(self.batch.length)
    }
}

/// What [`Hypercore::apply`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The block stored, if any (already-present blocks count too).
    pub block: Option<u64>,
    /// The new length, when the proof upgraded the tree.
    pub upgraded: Option<u64>,
    /// True when the proof gave us the manifest.
    pub manifest: bool,
}

/// The nodes a reorg still needs: ask a peer for a `hash` proof of block `2 * i` (flat
/// index) with `nodes` missing nodes, for some `i` in `start..end` (`ReorgBatch.want`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReorgWant {
    /// First candidate block.
    pub start: u64,
    /// End of the candidate blocks.
    pub end: u64,
    /// Nodes to ask for.
    pub nodes: u64,
}

/// A verified switch to a higher fork (a remote truncated and re-signed its core),
/// narrowed down with [`Hypercore::update_reorg`] and applied with [`Hypercore::apply_reorg`].
#[derive(Debug, Clone)]
pub struct ReorgBatch {
    /// The new tree; `ancestors` is the shared prefix found so far.
    batch: TreeBatch,
    /// The highest node known to differ.
    diff: Option<Node>,
    /// What is still wanted to narrow the shared prefix; `None` when done.
    want: Option<ReorgWant>,
    /// Manifest to store with it.
    manifest: Option<Manifest>,
}

impl ReorgBatch {
    /// What to ask for next, `None` once the shared prefix is known.
    pub fn want(&self) -> Option<ReorgWant> {
        self.want
    }

    /// True once [`ReorgBatch::want`] is `None`.
    pub fn is_finished(&self) -> bool {
        self.want.is_none()
    }

    /// Blocks shared with the local tree (kept on apply).
    pub fn ancestors(&self) -> u64 {
        self.batch.ancestors
    }

    /// The fork the reorg moves to.
    pub fn fork(&self) -> u64 {
        self.batch.fork
    }

    /// The length of the new tree.
    pub fn length(&self) -> u64 {
        self.batch.length
    }
}

/// What one verified proof changes, staged in a write batch until it is committed.
#[derive(Debug)]
struct Staged {
    /// The block the proof carried.
    block: Option<u64>,
    /// The block, if it was not stored yet.
    new_block: Option<u64>,
    /// The new tree, for an upgrade.
    upgrade: Option<TreeBatch>,
    /// The manifest to adopt.
    manifest: Option<Manifest>,
}

/// A run of proofs without upgrades sharing one commit.
#[derive(Debug, Default)]
struct Run {
    batch: WriteBatch,
    overlay: HashMap<u64, Node>,
    blocks: HashSet<u64>,
    /// `(result slot, staged proof)`.
    staged: Vec<(usize, Staged)>,
}

struct State {
    storage: Box<dyn Storage>,
    key: Hash,
    verifier: Option<Verifier>,
    key_pair: Option<KeyPair>,
    tree: Tree,
    bitfield: Bitfield,
    contiguous_length: u64,
    generation: u64,
    /// Events not yet handed to the replicator (it runs after the lock is released).
    hook_events: Vec<Event>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("key", &hex::encode(self.key))
            .field("length", &self.tree.length)
            .field("fork", &self.tree.fork)
            .field("writable", &self.key_pair.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Shared {
    key: Hash,
    discovery_key: DiscoveryKey,
    state: Mutex<State>,
    status: watch::Sender<Status>,
    events: broadcast::Sender<Event>,
    /// The core's replication state (peers, wanted blocks, downloads).
    replicator: Replicator,
}

/// A hypercore: a signed, append-only log of blocks, verifiable block by block.
///
/// `Hypercore` is a cheap, cloneable handle (`Send + Sync`); clones share one core. All
/// methods are synchronous: they hash, sign and touch storage under an internal lock, and
/// with [`crate::DiskStorage`] a write waits for `fdatasync`. Async callers that mind a
/// blocked thread run writes through `spawn_blocking`.
///
/// The replication API:
/// - [`Hypercore::create_proof`] answers a remote's [`ProofRequest`];
/// - [`Hypercore::verify_and_apply`] (or [`Hypercore::verify_proof`] then
///   [`Hypercore::apply`]) checks a remote's [`Proof`] and stores it atomically: a proof
///   that fails any check stores nothing;
/// - [`Hypercore::verify_reorg`] / [`Hypercore::apply_reorg`] follow a remote to a higher
///   fork;
/// - [`Hypercore::status`] and [`Hypercore::events`] say when blocks arrive and the tree
///   grows.
#[derive(Debug, Clone)]
pub struct Hypercore {
    shared: Arc<Shared>,
}

impl Hypercore {
    /// Creates a writable core signed by `key_pair` in `storage`, or opens the one already
    /// there if it has the same key.
    pub fn create(storage: impl Storage, key_pair: KeyPair, kind: CoreKind) -> Result<Self, Error> {
        let manifest = Manifest::default_signer(key_pair.public_key());
        let key = match kind {
            CoreKind::V1 => manifest.hash(),
            CoreKind::Compat => key_pair.public_key().to_bytes(),
        };
        Self::create_inner(Box::new(storage), key, Some(manifest), Some(key_pair))
    }

    /// Creates a core with an explicit manifest (its key is the manifest hash). With a key
    /// pair of one of its signers and a quorum of 1 the core is writable.
    pub fn create_with_manifest(
        storage: impl Storage,
        manifest: Manifest,
        key_pair: Option<KeyPair>,
    ) -> Result<Self, Error> {
        let key = manifest.hash();
        Self::create_inner(Box::new(storage), key, Some(manifest), key_pair)
    }

    /// Opens a core by key, to replicate it: read-only unless the storage already holds the
    /// core with its key pair. The manifest, if not given, is learnt from the first proof
    /// that carries it (or, for compat cores, assumed).
    pub fn open_by_key(
        storage: impl Storage,
        key: PublicKey,
        manifest: Option<Manifest>,
    ) -> Result<Self, Error> {
        if let Some(m) = &manifest {
            if !m.is_valid_for(key.as_bytes()) && !m.is_compat(key.as_bytes()) {
                return Err(Error::InvalidArgument("manifest does not match the key"));
            }
        }
        Self::create_inner(Box::new(storage), key.to_bytes(), manifest, None)
    }

    /// Opens the core stored in `storage`; fails if it holds none.
    pub fn open(storage: impl Storage) -> Result<Self, Error> {
        let storage: Box<dyn Storage> = Box::new(storage);
        if storage.auth().is_none() {
            return Err(Error::StorageMismatch("no hypercore is stored here"));
        }
        Self::load(storage)
    }

    /// A writable v1 core in memory.
    pub fn in_memory(key_pair: KeyPair) -> Result<Self, Error> {
        Self::create(MemoryStorage::new(), key_pair, CoreKind::V1)
    }

    fn create_inner(
        mut storage: Box<dyn Storage>,
        key: Hash,
        manifest: Option<Manifest>,
        key_pair: Option<KeyPair>,
    ) -> Result<Self, Error> {
        match storage.auth() {
            Some(auth) => {
                if auth.key != key {
                    return Err(Error::StorageMismatch("another hypercore is stored here"));
                }
                let mut update = None;
                if auth.manifest.is_none() && manifest.is_some() {
                    update = Some(Auth {
                        manifest: manifest.clone(),
                        ..auth.clone()
                    });
                }
                if auth.seed.is_none() {
                    if let Some(kp) = &key_pair {
                        let mut a = update.clone().unwrap_or_else(|| auth.clone());
                        a.seed = Some(kp.seed());
                        update = Some(a);
                    }
                }
                if let Some(a) = update {
                    storage.commit(WriteBatch {
                        auth: Some(a),
                        ..WriteBatch::default()
                    })?;
                }
            }
            None => {
                if let (Some(kp), Some(m)) = (&key_pair, &manifest) {
                    if !m.signers.iter().any(|s| s.public_key == kp.public_key()) {
                        return Err(Error::InvalidArgument(
                            "key pair is not a signer of the manifest",
                        ));
                    }
                }
                storage.commit(WriteBatch {
                    auth: Some(Auth {
                        key,
                        manifest,
                        seed: key_pair.as_ref().map(KeyPair::seed),
                    }),
                    ..WriteBatch::default()
                })?;
            }
        }
        Self::load(storage)
    }

    fn load(storage: Box<dyn Storage>) -> Result<Self, Error> {
        let auth = storage
            .auth()
            .ok_or(Error::StorageMismatch("no hypercore is stored here"))?;
        let key = auth.key;
        let key_pair = auth
            .seed
            .as_ref()
            .map(|s: &Zeroizing<[u8; 32]>| KeyPair::from_seed(**s));
        let verifier = auth.manifest.clone().map(|m| Verifier::new(key, m));
        let head = storage.head().unwrap_or_default();
        if head.length > MAX_LENGTH {
            return Err(Error::StorageMismatch("stored length is out of range"));
        }
        let mut roots = Vec::new();
        for index in flat::full_roots(2 * head.length) {
            let node = storage.node(index)?.ok_or(Error::StorageMismatch(
                "a root of the stored tree is missing",
            ))?;
            roots.push(node);
        }
        let tree = Tree {
            fork: head.fork,
            length: head.length,
            byte_length: tree::total_size(&roots),
            signature: head.signature.clone(),
            roots,
        };
        if head.length > 0 && tree.hash() != head.tree_hash {
            return Err(Error::StorageMismatch(
                "stored roots do not hash to the stored head",
            ));
        }
        let mut bitfield = storage.bitfield();
        bitfield.set_range(head.length..u64::MAX, false);
        let contiguous_length = bitfield.find_first(false, 0);
        let discovery_key = DiscoveryKey::from_key(&key);
        let state = State {
            storage,
            key,
            verifier,
            key_pair,
            tree,
            bitfield,
            contiguous_length,
            generation: 0,
            hook_events: Vec::new(),
        };
        let (status, _) = watch::channel(Self::status_of(&state));
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        tracing::debug!(key = %hex::encode(key), length = head.length, "hypercore opened");
        Ok(Hypercore {
            shared: Arc::new(Shared {
                key,
                discovery_key,
                state: Mutex::new(state),
                status,
                events,
                replicator: Replicator::new(ReplicatorConfig::default()),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated: every
        // mutation is computed first and assigned after its storage commit succeeded.
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn status_of(st: &State) -> Status {
        Status {
            length: st.tree.length,
            byte_length: st.tree.byte_length,
            fork: st.tree.fork,
            contiguous_length: st.contiguous_length,
            generation: st.generation,
            has_manifest: st.verifier.is_some(),
        }
    }

    fn publish(&self, st: &mut State, events: impl IntoIterator<Item = Event>) {
        st.generation += 1;
        let status = Self::status_of(st);
        self.shared.status.send_replace(status);
        for e in events {
            st.hook_events.push(e.clone());
            // No subscriber is not an error.
            let _ = self.shared.events.send(e);
        }
    }

    /// Hands the changes of the last operation to the replicator, outside the core's lock
    /// (the replicator locks its own state, then reads the core).
    fn run_hooks(&self) {
        let events = std::mem::take(&mut self.lock().hook_events);
        if !events.is_empty() {
            self.shared.replicator.on_core_events(self, &events);
        }
    }

    /// The core key: the manifest hash (v1) or the signer's public key (compat).
    pub fn key(&self) -> PublicKey {
        PublicKey(self.shared.key)
    }

    /// The discovery key: what peers announce and look up.
    pub fn discovery_key(&self) -> DiscoveryKey {
        self.shared.discovery_key
    }

    /// The manifest, once known.
    pub fn manifest(&self) -> Option<Manifest> {
        self.lock().verifier.as_ref().map(|v| v.manifest().clone())
    }

    /// True for a compat core (key = public key, plain signatures).
    pub fn is_compat(&self) -> bool {
        self.lock()
            .verifier
            .as_ref()
            .is_some_and(Verifier::is_compat)
    }

    /// True when this core can append (it holds a signer's key pair and needs no other
    /// signer).
    pub fn is_writable(&self) -> bool {
        let st = self.lock();
        match (&st.key_pair, &st.verifier) {
            (Some(kp), Some(v)) => v.can_sign_alone(kp),
            _ => false,
        }
    }

    /// Number of blocks.
    pub fn len(&self) -> u64 {
        self.lock().tree.length
    }

    /// True when the core has no blocks.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total bytes of all blocks.
    pub fn byte_len(&self) -> u64 {
        self.lock().tree.byte_length
    }

    /// The fork id.
    pub fn fork(&self) -> u64 {
        self.lock().tree.fork
    }

    /// The tree hash at the current length.
    pub fn tree_hash(&self) -> Hash {
        self.lock().tree.hash()
    }

    /// The current roots, in flat-index order.
    pub fn roots(&self) -> Vec<Node> {
        self.lock().tree.roots.clone()
    }

    /// The signature of the current tree (64 bytes for compat cores, the 68-byte multisig
    /// for single-signer v1 cores); `None` for an empty core.
    pub fn signature(&self) -> Option<Bytes> {
        self.lock().tree.signature.clone()
    }

    /// The bytes the signature of the current tree covers: the 112-byte v1 signable
    /// (`TREE || key || tree hash || length || fork`), or the 80-byte compat one for compat
    /// cores. (JS `core.signable()` always returns the 112-byte form, which for a compat
    /// core is `caps::tree_signable(key, ..)` and not what is signed.)
    pub fn signable(&self) -> Vec<u8> {
        let st = self.lock();
        let hash = st.tree.hash();
        if st.verifier.as_ref().is_some_and(Verifier::is_compat) {
            crate::caps::tree_signable_compat(&hash, st.tree.length, st.tree.fork).to_vec()
        } else {
            crate::caps::tree_signable(&st.key, &hash, st.tree.length, st.tree.fork).to_vec()
        }
    }

    /// Number of blocks held from 0 without a gap.
    pub fn contiguous_len(&self) -> u64 {
        self.lock().contiguous_length
    }

    /// True when block `index` is stored locally.
    pub fn has(&self, index: u64) -> bool {
        self.lock().bitfield.get(index)
    }

    /// True when every block in `range` is stored.
    pub fn has_all(&self, range: Range<u64>) -> bool {
        self.lock().bitfield.has_all(range)
    }

    /// The missing runs of blocks in `range` (clipped to the length): what
    /// `download(range)` still has to fetch.
    pub fn missing(&self, range: Range<u64>) -> Vec<Range<u64>> {
        let st = self.lock();
        let end = range.end.min(st.tree.length);
        st.bitfield.missing(range.start..end).collect()
    }

    /// A copy of the local bitfield.
    pub fn bitfield(&self) -> Bitfield {
        self.lock().bitfield.clone()
    }

    /// Block `index`, if stored locally.
    pub fn get(&self, index: u64) -> Result<Option<Bytes>, Error> {
        let st = self.lock();
        if !st.bitfield.get(index) {
            return Ok(None);
        }
        Ok(st.storage.block(index)?)
    }

    /// How many nodes above flat index `index` (`2 * block` for a block) are neither stored
    /// nor implied by the current roots (`MerkleTree.missingNodes`): the `nodes` value of a
    /// block or hash request, so that the responder sends exactly the nodes we lack.
    pub fn missing_nodes(&self, index: u64) -> Result<u64, Error> {
        missing_nodes_of(&self.lock(), index)
    }

    /// A tree node, if stored locally.
    pub fn tree_node(&self, index: u64) -> Result<Option<Node>, Error> {
        Ok(self.lock().storage.node(index)?)
    }

    /// The head and download state; the receiver sees every later change
    /// (`changed().await`). Waiting for block `i`: loop on `changed()` until
    /// [`Hypercore::has`]`(i)`.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.shared.status.subscribe()
    }

    /// A stream of changes. The channel keeps [`EVENT_CAPACITY`] events per subscriber; a
    /// subscriber that falls further behind gets `RecvError::Lagged` and should resync
    /// from [`Hypercore::status`] and [`Hypercore::bitfield`].
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// Waits until block `index` is stored and returns it. This does not ask anyone for the
    /// block: a replicator does that. Returns `None` if the core is dropped meanwhile.
    pub async fn wait_for_block(&self, index: u64) -> Result<Option<Bytes>, Error> {
        let mut rx = self.status();
        loop {
            if let Some(b) = self.get(index)? {
                return Ok(Some(b));
            }
            if rx.changed().await.is_err() {
                return Ok(None);
            }
        }
    }

    /// Appends blocks under one signature and commits them in one storage batch. Batches
    /// of 1 MiB or more hash their blocks on up to four threads.
    ///
    /// ```
    /// use corenet_replication::Hypercore;
    /// use corenet_noise::KeyPair;
    /// let core = Hypercore::in_memory(KeyPair::generate())?;
    /// core.append([&b"hello"[..], &b"world"[..]])?;
    /// assert_eq!(core.len(), 2);
    /// assert_eq!(core.get(1)?.as_deref(), Some(&b"world"[..]));
    /// # Ok::<(), corenet_replication::Error>(())
    /// ```
    pub fn append<I>(&self, blocks: I) -> Result<Appended, Error>
    where
        I: IntoIterator,
        I::Item: Into<Bytes>,
    {
        let blocks: Vec<Bytes> = blocks.into_iter().map(Into::into).collect();
        let r = self.append_inner(blocks);
        self.run_hooks();
        r
    }

    fn append_inner(&self, blocks: Vec<Bytes>) -> Result<Appended, Error> {
        let mut st = self.lock();
        if blocks.is_empty() {
            return Ok(Appended {
                length: st.tree.length,
                byte_length: st.tree.byte_length,
            });
        }
        if blocks.iter().any(|b| b.len() > MAX_BLOCK_LEN) {
            return Err(Error::InvalidArgument("block larger than MAX_BLOCK_LEN"));
        }
        let (kp, verifier) = match (&st.key_pair, &st.verifier) {
            (Some(kp), Some(v)) if v.can_sign_alone(kp) => (kp.clone(), v.clone()),
            _ => return Err(Error::NotWritable),
        };
        let mut batch = TreeBatch::new(&st.tree);
        for leaf in tree::hash_leaves(&blocks, 2 * st.tree.length) {
            batch
                .append_leaf(leaf)
                .map_err(|_| Error::InvalidArgument("core is full"))?;
        }
        if let Some(p) = verifier.prologue() {
            if batch.length < p.length {
                return Err(Error::InvalidArgument(
                    "append is not consistent with the prologue",
                ));
            }
        }
        let signature = verifier.sign(&batch, &kp)?;
        batch.signature = Some(signature.clone());
        let start = st.tree.length;
        let count = blocks.len() as u64;
        let head = Head {
            fork: batch.fork,
            length: batch.length,
            tree_hash: batch.hash(),
            signature: Some(signature),
        };
        let wb = WriteBatch {
            head: Some(head),
            nodes: std::mem::take(&mut batch.nodes),
            blocks: blocks
                .into_iter()
                .enumerate()
                .map(|(i, b)| (start + i as u64, b))
                .collect(),
            ..WriteBatch::default()
        };
        st.storage.commit(wb)?;
        Self::set_tree(&mut st, &batch);
        st.bitfield.set_range(start..start + count, true);
        Self::update_contiguous(&mut st);
        let out = Appended {
            length: st.tree.length,
            byte_length: st.tree.byte_length,
        };
        let fork = st.tree.fork;
        self.publish(
            &mut st,
            [
                Event::Upgraded {
                    length: out.length,
                    fork,
                },
                Event::Have {
                    start,
                    length: count,
                },
            ],
        );
        Ok(out)
    }

    fn set_tree(st: &mut State, batch: &TreeBatch) {
        st.tree = Tree {
            fork: batch.fork,
            length: batch.length,
            byte_length: batch.byte_length,
            roots: batch.roots.clone(),
            signature: batch.signature.clone(),
        };
    }

    fn update_contiguous(st: &mut State) {
        st.contiguous_length = st.bitfield.find_first(false, 0).min(st.tree.length);
    }

    /// Truncates a writable core to `length` blocks, bumping the fork id, and signs the
    /// shorter tree.
    pub fn truncate(&self, length: u64) -> Result<(), Error> {
        let r = self.truncate_inner(length);
        self.run_hooks();
        r
    }

    fn truncate_inner(&self, length: u64) -> Result<(), Error> {
        let mut st = self.lock();
        if length > st.tree.length {
            return Err(Error::InvalidArgument("not a truncation"));
        }
        let (kp, verifier) = match (&st.key_pair, &st.verifier) {
            (Some(kp), Some(v)) if v.can_sign_alone(kp) => (kp.clone(), v.clone()),
            _ => return Err(Error::NotWritable),
        };
        if verifier.prologue().is_some_and(|p| length < p.length) {
            return Err(Error::InvalidArgument("truncation breaks the prologue"));
        }
        let mut batch = TreeBatch::new(&st.tree);
        let mut roots = Vec::new();
        for index in flat::full_roots(2 * length) {
            let node = st.storage.node(index)?.ok_or(Error::StorageMismatch(
                "a root for the new length is missing",
            ))?;
            roots.push(node);
        }
        batch.byte_length = tree::total_size(&roots);
        batch.roots = roots;
        batch.length = length;
        batch.ancestors = length;
        batch.fork = st.tree.fork + 1;
        batch.upgraded = true;
        batch.signature = if length == 0 {
            None
        } else {
            Some(verifier.sign(&batch, &kp)?)
        };
        self.commit_truncation(&mut st, batch, None)
    }

    /// Commits a truncating batch (local truncate or reorg).
    fn commit_truncation(
        &self,
        st: &mut State,
        batch: TreeBatch,
        manifest: Option<Manifest>,
    ) -> Result<(), Error> {
        let old_length = st.tree.length;
        let mut wb = WriteBatch {
            head: Some(Head {
                fork: batch.fork,
                length: batch.length,
                tree_hash: batch.hash(),
                signature: batch.signature.clone(),
            }),
            nodes: batch.nodes.clone(),
            ..WriteBatch::default()
        };
        if batch.ancestors < batch.tree_length {
            wb.delete_blocks.push(batch.ancestors..batch.tree_length);
        }
        if let Some((range, singles)) = batch.invalidated_nodes() {
            wb.delete_nodes.push(range);
            wb.delete_nodes
                .extend(singles.into_iter().map(|i| i..i + 1));
        }
        let set_manifest = manifest.is_some() && st.verifier.is_none();
        if set_manifest {
            wb.auth = Some(Auth {
                key: st.key,
                manifest: manifest.clone(),
                seed: st.key_pair.as_ref().map(KeyPair::seed),
            });
        }
        st.storage.commit(wb)?;
        if set_manifest {
            if let Some(m) = manifest {
                st.verifier = Some(Verifier::new(st.key, m));
            }
        }
        Self::set_tree(st, &batch);
        st.bitfield.set_range(batch.ancestors..u64::MAX, false);
        Self::update_contiguous(st);
        tracing::debug!(
            ancestors = batch.ancestors,
            old_length,
            length = batch.length,
            fork = batch.fork,
            "hypercore truncated"
        );
        let mut events = vec![Event::Truncated {
            ancestors: batch.ancestors,
            length: batch.length,
            fork: batch.fork,
        }];
        if set_manifest {
            events.push(Event::ManifestSet);
        }
        self.publish(st, events);
        Ok(())
    }

    /// Builds the proof that answers `req` (what JS's replicator sends in a `data` message).
    ///
    /// Returns `Ok(None)` when there is nothing to send (another fork, or the block is not
    /// stored: JS replies `noData` with reason `NOT_AVAILABLE`), except that a request for
    /// the manifest is then answered with a proof carrying only the manifest, as JS does.
    /// A malformed request is an [`Error::InvalidRequest`] (`noData` with reason
    /// `INVALID_REQUEST`).
    pub fn create_proof(&self, req: &ProofRequest) -> Result<Option<Proof>, Error> {
        let st = self.lock();
        let manifest_only = |st: &State| -> Option<Proof> {
            let m = st.verifier.as_ref()?.manifest().clone();
            req.manifest.then(|| Proof {
                fork: st.tree.fork,
                manifest: Some(m),
                ..Proof::default()
            })
        };
        if req.fork != st.tree.fork {
            return Ok(manifest_only(&st));
        }
        if let Some(b) = req.block {
            if !st.bitfield.get(b.index) {
                return Ok(manifest_only(&st));
            }
        }
        let prologue = st.verifier.as_ref().and_then(Verifier::prologue);
        let mut proof = crate::proof::generate(&st.tree, st.storage.as_ref(), prologue, req)?;
        if let Some(block) = proof.block.as_mut() {
            match st.storage.block(block.index)? {
                Some(v) => block.value = v,
                None => return Ok(manifest_only(&st)),
            }
        }
        if req.manifest {
            if let Some(v) = st.verifier.as_ref().filter(|v| !v.is_compat()) {
                proof.manifest = Some(v.manifest().clone());
            }
        }
        Ok(Some(proof))
    }

    /// Checks a remote's proof against the core without changing anything. The result can
    /// be applied with [`Hypercore::apply`] (which fails with [`Error::Stale`] if the core
    /// changed in between).
    pub fn verify_proof(&self, proof: &Proof) -> Result<VerifiedProof, Error> {
        let st = self.lock();
        Self::verify_locked(&st, proof, &HashMap::new())
    }

    /// Verifies a remote's proof and, if it holds, stores the block, nodes, upgrade and
    /// manifest it carries in one atomic storage batch. On any error nothing is stored.
    pub fn verify_and_apply(&self, proof: &Proof) -> Result<Applied, Error> {
        let r = {
            let mut st = self.lock();
            Self::verify_locked(&st, proof, &HashMap::new())
                .and_then(|verified| self.apply_locked(&mut st, verified))
        };
        self.run_hooks();
        r
    }

    /// Verifies and applies many proofs with as few storage commits as possible: runs of
    /// proofs without an upgrade share one atomic batch (one `fdatasync` on disk), as JS
    /// batches its queued verifications. A proof may rely on nodes stored by an earlier one
    /// in the same call. Each proof gets its own result; a failing proof stores nothing and
    /// does not affect the others (unless the shared commit itself fails, which fails the
    /// whole run).
    pub fn verify_and_apply_many(&self, proofs: &[Proof]) -> Vec<Result<Applied, Error>> {
        let r = self.verify_and_apply_many_inner(proofs);
        self.run_hooks();
        r
    }

    fn verify_and_apply_many_inner(&self, proofs: &[Proof]) -> Vec<Result<Applied, Error>> {
        let mut st = self.lock();
        let mut results: Vec<Result<Applied, Error>> = Vec::with_capacity(proofs.len());
        let mut run = Run::default();
        for proof in proofs {
            if proof.upgrade.is_some() {
                self.commit_run(&mut st, &mut run, &mut results);
                let r = Self::verify_locked(&st, proof, &HashMap::new())
                    .and_then(|v| self.apply_locked(&mut st, v));
                results.push(r);
                continue;
            }
            match Self::verify_locked(&st, proof, &run.overlay) {
                Ok(v) => {
                    let nodes = v.batch.nodes.clone();
                    match Self::stage(&st, v, &mut run.batch, &run.blocks) {
                        Ok(staged) => {
                            for n in nodes {
                                run.overlay.insert(n.index, n);
                            }
                            if let Some(i) = staged.new_block {
                                run.blocks.insert(i);
                            }
                            run.staged.push((results.len(), staged));
                            results.push(Err(Error::Stale)); // replaced on commit
                        }
                        Err(e) => results.push(Err(e)),
                    }
                }
                Err(e) => results.push(Err(e)),
            }
        }
        self.commit_run(&mut st, &mut run, &mut results);
        results
    }

    /// Commits the staged run of [`Hypercore::verify_and_apply_many`].
    fn commit_run(&self, st: &mut State, run: &mut Run, results: &mut [Result<Applied, Error>]) {
        let run = std::mem::take(run);
        if run.staged.is_empty() {
            return;
        }
        match st.storage.commit(run.batch) {
            Ok(()) => {
                let mut events = Vec::new();
                for (slot, staged) in run.staged {
                    results[slot] = Ok(Self::finish(st, staged, &mut events));
                }
                if !events.is_empty() {
                    self.publish(st, events);
                }
            }
            Err(e) => {
                // Every proof of the batch failed with it (a full disk stays `StorageFull`).
                for (slot, _) in run.staged {
                    results[slot] = Err(Error::Storage(e.duplicate()));
                }
            }
        }
    }

    /// Stores a verified proof.
    pub fn apply(&self, verified: VerifiedProof) -> Result<Applied, Error> {
        let r = {
            let mut st = self.lock();
            self.apply_locked(&mut st, verified)
        };
        self.run_hooks();
        r
    }

    /// The verifier to check an upgrade with, and the manifest to store if the core did
    /// not know it (`_verifyBatchUpgrade`).
    fn upgrade_verifier(
        st: &State,
        proof_manifest: Option<&Manifest>,
    ) -> Result<(Verifier, Option<Manifest>), ProofError> {
        if let Some(v) = &st.verifier {
            return Ok((v.clone(), None));
        }
        let m = proof_manifest
            .cloned()
            .unwrap_or_else(|| Manifest::default_signer(PublicKey(st.key)));
        if !m.is_valid_for(&st.key) && !m.is_compat(&st.key) {
            return Err(ProofError::Manifest);
        }
        Ok((Verifier::new(st.key, m.clone()), Some(m)))
    }

    /// Verifies `proof` against the committed state plus `overlay` (nodes verified earlier
    /// in the same batch, not committed yet).
    fn verify_locked(
        st: &State,
        proof: &Proof,
        overlay: &HashMap<u64, Node>,
    ) -> Result<VerifiedProof, Error> {
        if proof.fork != st.tree.fork {
            return Err(Error::ForkMismatch {
                local: st.tree.fork,
                remote: proof.fork,
            });
        }
        let mut batch = TreeBatch::new(&st.tree);
        let untrusted = untrusted_of(proof)?;
        let mut unverified = tree::verify_tree(
            untrusted,
            proof.seek.as_ref().map(|s| s.nodes.as_slice()),
            &mut batch.nodes,
        )?;

        let mut manifest = None;
        let mut verifier = None;
        if let Some(u) = &proof.upgrade {
            let (v, m) = Self::upgrade_verifier(st, proof.manifest.as_ref())?;
            let part = UpgradePart {
                start: u.start,
                length: u.length,
                nodes: &u.nodes,
                additional_nodes: &u.additional_nodes,
                signature: u.signature.clone(),
            };
            if tree::verify_upgrade(proof.fork, &part, unverified, &mut batch, v.prologue())? {
                unverified = None;
            }
            manifest = m;
            verifier = Some(v);
        } else if let Some(m) = &proof.manifest {
            // A manifest on its own is stored when it hashes to the key.
            if st.verifier.is_none() {
                if !m.is_valid_for(&st.key) {
                    return Err(ProofError::Manifest.into());
                }
                manifest = Some(m.clone());
            }
        }

        if let Some(root) = unverified {
            let stored = match overlay.get(&root.index) {
                Some(n) => Some(*n),
                None => st.storage.node(root.index)?,
            }
            .ok_or(ProofError::Unverifiable { index: root.index })?;
            if stored.hash != root.hash {
                return Err(ProofError::Checksum { index: root.index }.into());
            }
        }

        if batch.upgraded && batch.length <= st.tree.length {
            // An upgrade that does not grow the tree must land on our own roots.
            let same = batch.length == st.tree.length
                && batch.roots.len() == st.tree.roots.len()
                && batch.roots.iter().zip(&st.tree.roots).all(|(a, b)| a == b);
            if !same {
                return Err(ProofError::Conflict.into());
            }
            batch.upgraded = false;
            batch.fork = st.tree.fork;
            batch.signature = st.tree.signature.clone();
            manifest = None;
        }

        if batch.upgraded {
            let v = verifier.ok_or(ProofError::Malformed("upgraded without an upgrade"))?;
            if !v.verify(&batch, batch.signature.as_deref()) {
                return Err(ProofError::Signature.into());
            }
        } else {
            // Only the upgrade may change the head.
            batch.fork = st.tree.fork;
            batch.signature = st.tree.signature.clone();
        }

        let block = proof.block.as_ref().map(|b| (b.index, b.value.clone()));
        Ok(VerifiedProof {
            batch,
            block,
            manifest,
        })
    }

    fn apply_locked(&self, st: &mut State, v: VerifiedProof) -> Result<Applied, Error> {
        let mut wb = WriteBatch::default();
        let staged = Self::stage(st, v, &mut wb, &HashSet::new())?;
        st.storage.commit(wb)?;
        let mut events = Vec::new();
        let applied = Self::finish(st, staged, &mut events);
        if !events.is_empty() {
            self.publish(st, events);
        }
        Ok(applied)
    }

    /// Adds what a verified proof stores to `wb` (`pending`: blocks already staged).
    fn stage(
        st: &State,
        v: VerifiedProof,
        wb: &mut WriteBatch,
        pending: &HashSet<u64>,
    ) -> Result<Staged, Error> {
        if !v.batch.commitable(&st.tree) {
            return Err(Error::Stale);
        }
        let VerifiedProof {
            mut batch,
            block,
            manifest,
        } = v;
        let manifest = manifest.filter(|_| st.verifier.is_none());
        let new_block = block
            .as_ref()
            .filter(|(i, _)| !st.bitfield.get(*i) && !pending.contains(i))
            .map(|(i, _)| *i);
        wb.nodes.append(&mut batch.nodes);
        if let (Some(i), Some((_, value))) = (new_block, &block) {
            wb.blocks.push((i, value.clone()));
        }
        if batch.upgraded {
            wb.head = Some(Head {
                fork: batch.fork,
                length: batch.length,
                tree_hash: batch.hash(),
                signature: batch.signature.clone(),
            });
        }
        if manifest.is_some() {
            wb.auth = Some(Auth {
                key: st.key,
                manifest: manifest.clone(),
                seed: st.key_pair.as_ref().map(KeyPair::seed),
            });
        }
        Ok(Staged {
            block: block.map(|b| b.0),
            new_block,
            upgrade: batch.upgraded.then_some(batch),
            manifest,
        })
    }

    /// Updates the in-memory state after the commit of a staged proof.
    fn finish(st: &mut State, staged: Staged, events: &mut Vec<Event>) -> Applied {
        let set_manifest = staged.manifest.is_some();
        if let Some(m) = staged.manifest {
            if st.verifier.is_none() {
                st.verifier = Some(Verifier::new(st.key, m));
                events.push(Event::ManifestSet);
            }
        }
        let upgraded = staged.upgrade.as_ref().map(|b| b.length);
        if let Some(batch) = &staged.upgrade {
            Self::set_tree(st, batch);
            events.push(Event::Upgraded {
                length: batch.length,
                fork: batch.fork,
            });
        }
        if let Some(i) = staged.new_block {
            st.bitfield.set(i, true);
            if i == st.contiguous_length {
                Self::update_contiguous(st);
            }
            events.push(Event::Have {
                start: i,
                length: 1,
            });
        }
        Applied {
            block: staged.block,
            upgraded,
            manifest: set_manifest,
        }
    }

    /// Verifies a proof from a higher fork: the remote truncated its core and signed a new
    /// tree. The proof must carry an upgrade from 0 (JS requests `upgrade: {start: 0,
    /// length}` with the remote's fork). The returned batch says which blocks are shared;
    /// it may ask for more nodes to narrow that down ([`ReorgBatch::want`]), which
    /// [`Hypercore::update_reorg`] takes; [`Hypercore::apply_reorg`] switches over.
    pub fn verify_reorg(&self, proof: &Proof) -> Result<ReorgBatch, Error> {
        let st = self.lock();
        if proof.fork <= st.tree.fork {
            return Err(Error::ForkMismatch {
                local: st.tree.fork,
                remote: proof.fork,
            });
        }
        let u = proof
            .upgrade
            .as_ref()
            .ok_or(ProofError::Malformed("a reorg proof needs an upgrade"))?;
        let mut batch = TreeBatch::new(&st.tree);
        batch.roots.clear();
        batch.length = 0;
        batch.byte_length = 0;
        batch.ancestors = 0;
        batch.upgraded = true;
        let untrusted = untrusted_of(proof)?;
        let unverified = tree::verify_tree(
            untrusted,
            proof.seek.as_ref().map(|s| s.nodes.as_slice()),
            &mut batch.nodes,
        )?;
        let (verifier, manifest) = Self::upgrade_verifier(&st, proof.manifest.as_ref())?;
        let part = UpgradePart {
            start: u.start,
            length: u.length,
            nodes: &u.nodes,
            additional_nodes: &u.additional_nodes,
            signature: u.signature.clone(),
        };
        let used = tree::verify_upgrade(
            proof.fork,
            &part,
            unverified,
            &mut batch,
            verifier.prologue(),
        )?;
        if !used && unverified.is_some() {
            return Err(ProofError::Malformed("fork proof not verifiable").into());
        }
        if !verifier.verify(&batch, batch.signature.as_deref()) {
            return Err(ProofError::Signature.into());
        }
        let mut reorg = ReorgBatch {
            batch,
            diff: None,
            want: Some(ReorgWant {
                start: 0,
                end: 0,
                nodes: 0,
            }),
            manifest,
        };
        let roots = reorg.batch.roots.clone();
        for root in roots {
            if st
                .storage
                .node(root.index)?
                .is_some_and(|n| n.hash == root.hash)
            {
                continue;
            }
            Self::update_diff_root(&mut reorg, root);
            break;
        }
        if reorg.diff.is_some() {
            let nodes = reorg.batch.nodes.clone();
            Self::narrow_reorg(&st, &mut reorg, &nodes)?;
        } else {
            reorg.want = None;
            reorg.batch.ancestors = reorg.batch.length;
        }
        Ok(reorg)
    }

    /// Narrows a reorg with a `hash` proof answering [`ReorgBatch::want`] (from a peer on
    /// the reorg's fork). Fails, changing nothing, when the proof does not hash to the node
    /// the reorg is narrowing. Check [`ReorgBatch::want`] afterwards: it is `None` once the
    /// shared prefix is known.
    pub fn update_reorg(&self, reorg: &mut ReorgBatch, proof: &Proof) -> Result<(), Error> {
        if reorg.want.is_none() {
            return Ok(());
        }
        let st = self.lock();
        let mut nodes = Vec::new();
        let root = tree::verify_tree(
            untrusted_of(proof)?,
            proof.seek.as_ref().map(|s| s.nodes.as_slice()),
            &mut nodes,
        )?;
        let Some(diff) = reorg.diff else {
            return Ok(());
        };
        if root.is_none_or(|r| r.hash != diff.hash) {
            return Err(ProofError::Checksum { index: diff.index }.into());
        }
        reorg.batch.nodes.extend_from_slice(&nodes);
        Self::narrow_reorg(&st, reorg, &nodes)?;
        Ok(())
    }

    /// `ReorgBatch._updateDiffRoot`.
    fn update_diff_root(reorg: &mut ReorgBatch, diff: Node) -> bool {
        let Some(want) = reorg.want else {
            return true;
        };
        let (l, r) = flat::spans(diff.index);
        let start = l / 2;
        let end = reorg.batch.tree_length.min(r / 2 + 1);
        reorg.batch.ancestors = start;
        reorg.diff = Some(diff);
        if diff.index & 1 == 0 || want.start >= reorg.batch.tree_length || end <= start {
            reorg.want = None;
            return true;
        }
        let mut n = r - l + 2;
        let mut log = 1;
        while n > 2 {
            n /= 2;
            log += 1;
        }
        reorg.want = Some(ReorgWant {
            start,
            end,
            nodes: log - 1,
        });
        false
    }

    /// `ReorgBatch._update`: walks down from the differing node while the new nodes say
    /// which child differs.
    fn narrow_reorg(st: &State, reorg: &mut ReorgBatch, nodes: &[Node]) -> Result<bool, Error> {
        let Some(start_diff) = reorg.diff else {
            return Ok(false);
        };
        let find = |i: u64| nodes.iter().find(|n| n.index == i).copied();
        let mut diff = None;
        let mut ite = flat::Iter::new(start_diff.index);
        while ite.index & 1 != 0 {
            let Some(left) = find(ite.left_child()) else {
                break;
            };
            let existing = st.storage.node(left.index)?;
            if existing.is_none_or(|e| e.hash != left.hash) {
                diff = Some(left);
            } else {
                diff = find(ite.sibling());
            }
        }
        if start_diff.index & 1 == 0 {
            return Ok(true);
        }
        match diff {
            None => Ok(false),
            Some(d) => Ok(Self::update_diff_root(reorg, d)),
        }
    }

    /// Switches to the reorg's fork: drops the blocks and nodes after the shared prefix and
    /// stores the new tree head. Fails with [`Error::Stale`] if the core changed since
    /// [`Hypercore::verify_reorg`].
    pub fn apply_reorg(&self, reorg: ReorgBatch) -> Result<(), Error> {
        let r = {
            let mut st = self.lock();
            if reorg.batch.commitable(&st.tree) {
                self.commit_truncation(&mut st, reorg.batch, reorg.manifest)
            } else {
                Err(Error::Stale)
            }
        };
        self.run_hooks();
        r
    }
}

impl Hypercore {
    /// The core's replicator.
    pub(crate) fn replicator(&self) -> &Replicator {
        &self.shared.replicator
    }

    /// Runs `f` with the core locked, on a read-only view for the replicator.
    pub(crate) fn with_view<R>(&self, f: impl FnOnce(&dyn LocalView) -> R) -> R {
        let st = self.lock();
        f(&*st)
    }
}

impl LocalView for State {
    fn length(&self) -> u64 {
        self.tree.length
    }

    fn byte_length(&self) -> u64 {
        self.tree.byte_length
    }

    fn fork(&self) -> u64 {
        self.tree.fork
    }

    fn contiguous_length(&self) -> u64 {
        self.contiguous_length
    }

    fn has(&self, i: u64) -> bool {
        self.bitfield.get(i)
    }

    fn next_missing(&self, from: u64) -> u64 {
        self.bitfield.find_first(false, from)
    }

    fn next_present(&self, from: u64, to: u64) -> Option<u64> {
        let n = self.bitfield.find_first(true, from);
        (n < to).then_some(n)
    }

    fn count(&self, from: u64, to: u64) -> u64 {
        self.bitfield.count(from..to)
    }

    fn words(&self, start: u64, count: usize) -> Vec<u32> {
        self.bitfield.words_u32(start, count)
    }

    fn has_manifest(&self) -> bool {
        self.verifier.as_ref().is_some_and(|v| !v.is_compat())
    }

    fn needs_manifest(&self) -> bool {
        self.verifier.is_none()
    }

    fn upgradeable(&self, length: u64) -> bool {
        if length > MAX_LENGTH {
            return false;
        }
        flat::full_roots(2 * length).all(|i| matches!(self.storage.node(i), Ok(Some(_))))
    }

    fn missing_nodes(&self, index: u64) -> u64 {
        missing_nodes_of(self, index).unwrap_or(0)
    }
}

/// `MerkleTree.missingNodes`: nodes above flat index `index` neither stored nor implied by
/// the current roots.
fn missing_nodes_of(st: &State, index: u64) -> Result<u64, Error> {
    let head = 2 * st.tree.length;
    if index >= 2 * MAX_LENGTH {
        return Ok(0);
    }
    let mut ite = flat::Iter::new(index);
    if ite.peek_right_span() >= head {
        return Ok(0);
    }
    let mut count = 0;
    while !ite.contains(head) && st.storage.node(ite.index)?.is_none() {
        count += 1;
        ite.parent();
    }
    Ok(count)
}

/// A handle that does not keep the core open.
#[derive(Debug, Clone)]
pub(crate) struct WeakHypercore(Weak<Shared>);

impl WeakHypercore {
    pub(crate) fn upgrade(&self) -> Option<Hypercore> {
        self.0.upgrade().map(|shared| Hypercore { shared })
    }
}

impl Hypercore {
    pub(crate) fn downgrade(&self) -> WeakHypercore {
        WeakHypercore(Arc::downgrade(&self.shared))
    }
}

/// The block or hash part of a proof.
fn untrusted_of(proof: &Proof) -> Result<Option<Untrusted<'_>>, ProofError> {
    if let Some(b) = &proof.block {
        if b.index >= MAX_LENGTH {
            return Err(ProofError::OutOfBounds("block index"));
        }
        return Ok(Some(Untrusted {
            index: 2 * b.index,
            value: Some(&b.value),
            nodes: &b.nodes,
        }));
    }
    Ok(proof.hash.as_ref().map(|h| Untrusted {
        index: h.index,
        value: None,
        nodes: &h.nodes,
    }))
}
