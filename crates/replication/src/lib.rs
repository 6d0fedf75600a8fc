//! Hypercore 11 and corestore 7: storage, verification and replication.
//!
//! This crate mirrors the JS modules `hypercore` 11.37.1 (`lib/merkle-tree.js`,
//! `lib/verifier.js`, `lib/caps.js`, `lib/messages.js`, `lib/bitfield.js`, `lib/core.js`,
//! `lib/replicator.js`), `flat-tree` and `corestore` 7.12.5: a hypercore is a signed
//! append-only log whose blocks are leaves of a flat-tree Merkle tree, so any block can be
//! verified against the signed tree head with a short proof. Everything that goes on the wire
//! or into a key is byte-for-byte what JS produces: keys, discovery keys, manifest encodings,
//! tree hashes, signables, signatures, and the ten messages of the `hypercore/alpha`
//! replication channel. A corenet peer and a JS peer replicate cores with each other over
//! one protomux connection.
//!
//! # Layout
//! - [`flat`]: flat-tree index math.
//! - [`tree`]: [`Node`], tree hashes; batches of appends and proof verification.
//! - [`manifest`]: [`Manifest`] and multisig encodings; [`caps`]: namespaces, signables and
//!   the replication capability.
//! - [`bitfield`]: the sparse [`Bitfield`] of stored blocks.
//! - [`messages`]: the wire messages: `request` / `data` with their proof parts
//!   ([`ProofRequest`], [`Proof`]), and the other eight ([`messages::Message`]).
//! - [`storage`]: the [`Storage`] trait, [`MemoryStorage`], the crash-safe [`DiskStorage`]
//!   (format and fsync policy documented there).
//! - [`Hypercore`]: the core: append, get, proofs, verify-and-apply, truncation, reorgs,
//!   change notifications; and replication: [`Hypercore::replicate`], [`Hypercore::fetch`],
//!   [`Hypercore::download`], [`Hypercore::update`].
//! - [`replicator`]: the replicator behind those methods: a sans-IO protocol state machine
//!   and the tasks that run it over protomux channels (architecture and the differences
//!   from JS documented there).
//! - [`corestore`]: [`Corestore`], named cores derived from a primary key, and all-to-all
//!   replication of a store over a connection ([`Corestore::replicate`]).
//! - [`files`]: a file as a core of 64 KiB blocks: [`files::share_file`] and the resumable
//!   [`files::download_to_file`] with progress.
//!
//! # Durability
//!
//! [`DiskStorage`] keeps each core in one append-only log of checksummed records, one per
//! commit; a core killed mid-write reopens at its last complete commit. By default every
//! commit is `fdatasync`ed before it returns ([`SyncPolicy::Always`]);
//! [`SyncPolicy::Never`] leaves flushing to the OS (safe against process crashes, not power
//! loss). [`Hypercore::verify_and_apply_many`] commits a run of downloaded blocks at once;
//! the replicator verifies what arrived together as one such run.
//!
//! # Replication
//!
//! Over any secret stream (TCP, a UDX stream from the swarm, an in-memory pipe), put a mux on
//! it and replicate a store (or single cores). Blocks are fetched on demand or by range,
//! from every peer that has them, each one verified before it is stored:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use corenet_noise::{Config, KeyPair, SecretStream};
//! use corenet_replication::Corestore;
//!
//! // Two peers connected by an in-memory pipe.
//! let (a, b) = tokio::io::duplex(64 * 1024);
//! let initiator = tokio::spawn(async move {
//!     SecretStream::new(a, true, &KeyPair::generate(), Config::default()).await
//! });
//! let responder = SecretStream::new(b, false, &KeyPair::generate(), Config::default()).await?;
//! let initiator = initiator.await??;
//!
//! // Alice writes a named core; Bob knows its key.
//! let alice = Corestore::in_memory();
//! let log = alice.get("log")?;
//! log.append([&b"hello"[..], &b"world"[..]])?;
//! let bob = Corestore::in_memory();
//! let copy = bob.get_by_key(log.key())?;
//!
//! let _alice_mux = alice.replicate_stream(initiator)?;
//! let _bob_mux = bob.replicate_stream(responder)?;
//!
//! // Sparse: just block 1, verified against Alice's signed tree.
//! assert_eq!(copy.fetch(1).await?, &b"world"[..]);
//! assert!(!copy.has(0));
//! // Live: Alice's appends reach Bob.
//! log.append([&b"again"[..]])?;
//! copy.wait_for_length(3).await?;
//! let mut all = copy.download(0..3);
//! all.done().await?;
//! assert_eq!(copy.get(2)?.as_deref(), Some(&b"again"[..]));
//! # Ok(()) }
//! ```
//!
//! # Proofs, for a replicator
//!
//! A peer asks with a [`Request`] (message type 1) whose [`ProofRequest`] says what to
//! prove; [`Hypercore::create_proof`] builds the [`Proof`] that goes back in a [`Data`]
//! message (type 3). The receiver hands the [`Proof`] to [`Hypercore::verify_and_apply`]:
//! the block, nodes, upgrade and manifest are checked against the tree we trust (stored
//! nodes, or the signature of an upgrade), then committed in one atomic storage batch; if
//! any check fails, nothing is stored. [`Hypercore::status`] and [`Hypercore::events`]
//! tell waiters that blocks arrived or the tree grew.
//!
//! ```
//! use corenet_noise::KeyPair;
//! use corenet_replication::{Hypercore, MemoryStorage, ProofRequest, RequestBlock, RequestUpgrade};
//!
//! // A writer appends three blocks under one signature.
//! let writer = Hypercore::in_memory(KeyPair::generate())?;
//! writer.append([&b"a"[..], &b"b"[..], &b"c"[..]])?;
//!
//! // A reader knows only the key (and learns the manifest from the first proof).
//! let reader = Hypercore::open_by_key(MemoryStorage::new(), writer.key(), None)?;
//! assert_eq!(reader.discovery_key(), writer.discovery_key());
//!
//! // It asks for block 1 together with an upgrade to the writer's length.
//! let req = ProofRequest {
//!     block: Some(RequestBlock { index: 1, nodes: 0 }),
//!     upgrade: Some(RequestUpgrade { start: 0, length: 3 }),
//!     manifest: true,
//!     ..ProofRequest::default()
//! };
//! let proof = writer.create_proof(&req)?.expect("the writer has block 1");
//! reader.verify_and_apply(&proof)?;
//! assert_eq!(reader.len(), 3);
//! assert_eq!(reader.tree_hash(), writer.tree_hash());
//! assert_eq!(reader.get(1)?.as_deref(), Some(&b"b"[..]));
//! assert!(!reader.has(0));
//!
//! // A tampered block is rejected and nothing is stored.
//! let mut bad = writer.create_proof(&ProofRequest {
//!     block: Some(RequestBlock { index: 0, nodes: 1 }),
//!     ..ProofRequest::default()
//! })?.expect("block 0");
//! bad.block.as_mut().unwrap().value = bytes::Bytes::from_static(b"evil");
//! assert!(reader.verify_and_apply(&bad).unwrap_err().is_remote_fault());
//! assert!(!reader.has(0));
//! # Ok::<(), corenet_replication::Error>(())
//! ```

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod bitfield;
pub mod caps;
mod core;
pub mod corestore;
mod error;
pub mod files;
pub mod flat;
pub mod manifest;
pub mod messages;
mod proof;
pub mod replicator;
pub mod storage;
pub mod tree;
mod verifier;

pub use crate::core::{
    Appended, Applied, CoreKind, Event, Hypercore, ReorgBatch, ReorgWant, Status, VerifiedProof,
    EVENT_CAPACITY, MAX_BLOCK_LEN,
};
pub use bitfield::Bitfield;
pub use corestore::{Corestore, CorestoreConfig};
pub use error::{Error, ProofError, StorageError};
pub use manifest::{Manifest, MultiSignature, Prologue, Signer};
pub use messages::{
    Data, DataBlock, DataHash, DataSeek, DataUpgrade, Proof, ProofRequest, Request, RequestBlock,
    RequestSeek, RequestUpgrade,
};
pub use replicator::{Download, DownloadProgress, PeerInfo, ReplicatorConfig};
pub use storage::{DiskStorage, MemoryStorage, Storage, SyncPolicy};
pub use tree::Node;

/// Largest length (in blocks) a core may have: 2^52, so that every flat-tree index stays a
/// safe integer in JS (below 2^53) and tree math never overflows.
pub const MAX_LENGTH: u64 = 1 << 52;
