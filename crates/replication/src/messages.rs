//! The wire messages of the `hypercore/alpha` channel (hypercore `lib/messages.js`,
//! `wire.*`): the channel [`Handshake`], and by type: 0 [`Sync`], 1 [`Request`], 2 [`Cancel`],
//! 3 [`Data`], 4 [`NoData`], 5 [`Want`], 6 unwant ([`Want`]), 7 [`BitfieldMessage`], 8
//! [`Range`], 9 [`Extension`]; [`Message`] decodes any of them by type.
//!
//! A [`Request`] wraps a [`ProofRequest`] (what to prove) with the request id and priority; a
//! [`Data`] wraps a [`Proof`] with the id of the request it answers. The encodings are
//! byte-for-byte the JS ones (checked against hypercore 11.37.1's encoders in
//! `tests/wire_vectors.rs`): a flags `uint` says which optional parts follow.

use bytes::{BufMut, Bytes};
use corenet_codec::{encode, Decode, DecodeError, Decoder, Encode};

use crate::manifest::Manifest;
use crate::tree::{Node, NODE_MIN_LEN};

const FLAG_BLOCK: u64 = 1;
const FLAG_HASH: u64 = 2;
const FLAG_SEEK: u64 = 4;
const FLAG_UPGRADE: u64 = 8;
const FLAG_MANIFEST: u64 = 16;
const FLAG_PRIORITY: u64 = 32;

fn nodes_len(nodes: &[Node]) -> usize {
    nodes.encoded_len()
}

fn decode_nodes(dec: &mut Decoder<'_>) -> Result<Vec<Node>, DecodeError> {
    dec.array(NODE_MIN_LEN, Node::decode)
}

/// A block (or tree node) to prove: `index`, and how many nodes up its path the requester is
/// missing (`nodes`; the responder sends those, then stops at a node the requester has).
///
/// For a `block` request `index` is the block number; for a `hash` request it is a flat-tree
/// index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestBlock {
    /// Block number (`block`) or flat index (`hash`).
    pub index: u64,
    /// Number of missing nodes up the path.
    pub nodes: u64,
}

/// A byte offset to locate: the responder proves the block holding byte `bytes` (counting
/// `padding` bytes less per block).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestSeek {
    /// Byte offset into the core.
    pub bytes: u64,
    /// Per-block padding subtracted from block sizes (0 for plain cores).
    pub padding: u64,
}

/// A tree upgrade: prove the tree from `start` blocks (what the requester has) to
/// `start + length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestUpgrade {
    /// The requester's length.
    pub start: u64,
    /// How many blocks to grow by.
    pub length: u64,
}

macro_rules! pair_codec {
    ($ty:ident, $a:ident, $b:ident) => {
        impl Encode for $ty {
            fn encoded_len(&self) -> usize {
                encode::uint_len(self.$a) + encode::uint_len(self.$b)
            }
            fn encode<B: BufMut>(&self, out: &mut B) {
                encode::uint(out, self.$a);
                encode::uint(out, self.$b);
            }
        }
        impl<'a> Decode<'a> for $ty {
            fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
                Ok($ty {
                    $a: dec.uint()?,
                    $b: dec.uint()?,
                })
            }
        }
    };
}

pair_codec!(RequestBlock, index, nodes);
pair_codec!(RequestSeek, bytes, padding);
pair_codec!(RequestUpgrade, start, length);

/// What a request asks to be proven. Any combination of parts may be present, with the
/// rules JS enforces: a `block` wins over a `hash`, and a seek may not be combined with a
/// block or hash inside the upgraded range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProofRequest {
    /// The fork the requester is on; a responder on another fork has nothing to send.
    pub fork: u64,
    /// Prove a block and send its value.
    pub block: Option<RequestBlock>,
    /// Prove a tree node (no value).
    pub hash: Option<RequestBlock>,
    /// Prove the block at a byte offset.
    pub seek: Option<RequestSeek>,
    /// Prove a longer signed tree.
    pub upgrade: Option<RequestUpgrade>,
    /// Also send the manifest.
    pub manifest: bool,
}

/// `request` (message type 1): `flags, id, fork, [block], [hash], [seek], [upgrade],
/// [priority]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Request {
    /// Request id, echoed by the `data` or `noData` reply (0 is used for pushes).
    pub id: u64,
    /// Scheduling priority (0 is normal and is not encoded).
    pub priority: u64,
    /// What to prove.
    pub proof: ProofRequest,
}

impl Request {
    fn flags(&self) -> u64 {
        let p = &self.proof;
        let mut f = 0;
        if p.block.is_some() {
            f |= FLAG_BLOCK;
        }
        if p.hash.is_some() {
            f |= FLAG_HASH;
        }
        if p.seek.is_some() {
            f |= FLAG_SEEK;
        }
        if p.upgrade.is_some() {
            f |= FLAG_UPGRADE;
        }
        if p.manifest {
            f |= FLAG_MANIFEST;
        }
        if self.priority != 0 {
            f |= FLAG_PRIORITY;
        }
        f
    }
}

impl Encode for Request {
    fn encoded_len(&self) -> usize {
        let p = &self.proof;
        encode::uint_len(self.flags())
            + encode::uint_len(self.id)
            + encode::uint_len(p.fork)
            + p.block.map_or(0, |b| b.encoded_len())
            + p.hash.map_or(0, |b| b.encoded_len())
            + p.seek.map_or(0, |b| b.encoded_len())
            + p.upgrade.map_or(0, |b| b.encoded_len())
            + if self.priority != 0 {
                encode::uint_len(self.priority)
            } else {
                0
            }
    }

    fn encode<B: BufMut>(&self, out: &mut B) {
        let p = &self.proof;
        encode::uint(out, self.flags());
        encode::uint(out, self.id);
        encode::uint(out, p.fork);
        if let Some(b) = &p.block {
            b.encode(out);
        }
        if let Some(b) = &p.hash {
            b.encode(out);
        }
        if let Some(s) = &p.seek {
            s.encode(out);
        }
        if let Some(u) = &p.upgrade {
            u.encode(out);
        }
        if self.priority != 0 {
            encode::uint(out, self.priority);
        }
    }
}

impl<'a> Decode<'a> for Request {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        let flags = dec.uint()?;
        let id = dec.uint()?;
        let fork = dec.uint()?;
        let block = opt(flags & FLAG_BLOCK != 0, dec, RequestBlock::decode)?;
        let hash = opt(flags & FLAG_HASH != 0, dec, RequestBlock::decode)?;
        let seek = opt(flags & FLAG_SEEK != 0, dec, RequestSeek::decode)?;
        let upgrade = opt(flags & FLAG_UPGRADE != 0, dec, RequestUpgrade::decode)?;
        let manifest = flags & FLAG_MANIFEST != 0;
        let priority = if flags & FLAG_PRIORITY != 0 {
            dec.uint()?
        } else {
            0
        };
        Ok(Request {
            id,
            priority,
            proof: ProofRequest {
                fork,
                block,
                hash,
                seek,
                upgrade,
                manifest,
            },
        })
    }
}

fn opt<'a, T>(
    present: bool,
    dec: &mut Decoder<'a>,
    f: impl FnOnce(&mut Decoder<'a>) -> Result<T, DecodeError>,
) -> Result<Option<T>, DecodeError> {
    if present {
        f(dec).map(Some)
    } else {
        Ok(None)
    }
}

/// A proven block: `index, buffer value, nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataBlock {
    /// Block number.
    pub index: u64,
    /// The block's bytes.
    pub value: Bytes,
    /// Sibling nodes up the tree, from the leaf's sibling upwards.
    pub nodes: Vec<Node>,
}

/// A proven tree node: `index, nodes` (the first node is the proven one).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataHash {
    /// Flat index of the proven node.
    pub index: u64,
    /// The node, then its siblings up the tree.
    pub nodes: Vec<Node>,
}

/// A proven seek: `bytes, nodes` (the node holding the offset, then siblings upwards).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataSeek {
    /// The byte offset that was asked for.
    pub bytes: u64,
    /// The nodes.
    pub nodes: Vec<Node>,
}

/// A proven upgrade: `start, length, nodes, additionalNodes, optionalBuffer signature`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataUpgrade {
    /// Length the requester had.
    pub start: u64,
    /// Blocks the upgrade proves beyond `start`.
    pub length: u64,
    /// Nodes growing the tree to `start + length`.
    pub nodes: Vec<Node>,
    /// Nodes growing it further, to the responder's full length (which the signature covers).
    pub additional_nodes: Vec<Node>,
    /// The responder's signature of its tree (64 bytes for compat cores, a 68-byte or longer
    /// multisig for v1 cores). `Some` of an empty buffer encodes as absent.
    pub signature: Option<Bytes>,
}

impl Encode for DataBlock {
    fn encoded_len(&self) -> usize {
        encode::uint_len(self.index) + encode::buffer_len(self.value.len()) + nodes_len(&self.nodes)
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::uint(out, self.index);
        encode::buffer(out, &self.value);
        self.nodes.encode(out);
    }
}

impl<'a> Decode<'a> for DataBlock {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        Ok(DataBlock {
            index: dec.uint()?,
            value: dec.bytes()?,
            nodes: decode_nodes(dec)?,
        })
    }
}

impl Encode for DataHash {
    fn encoded_len(&self) -> usize {
        encode::uint_len(self.index) + nodes_len(&self.nodes)
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::uint(out, self.index);
        self.nodes.encode(out);
    }
}

impl<'a> Decode<'a> for DataHash {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        Ok(DataHash {
            index: dec.uint()?,
            nodes: decode_nodes(dec)?,
        })
    }
}

impl Encode for DataSeek {
    fn encoded_len(&self) -> usize {
        encode::uint_len(self.bytes) + nodes_len(&self.nodes)
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::uint(out, self.bytes);
        self.nodes.encode(out);
    }
}

impl<'a> Decode<'a> for DataSeek {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        Ok(DataSeek {
            bytes: dec.uint()?,
            nodes: decode_nodes(dec)?,
        })
    }
}

impl Encode for DataUpgrade {
    fn encoded_len(&self) -> usize {
        encode::uint_len(self.start)
            + encode::uint_len(self.length)
            + nodes_len(&self.nodes)
            + nodes_len(&self.additional_nodes)
            + encode::buffer_len(self.signature.as_ref().map_or(0, Bytes::len))
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::uint(out, self.start);
        encode::uint(out, self.length);
        self.nodes.encode(out);
        self.additional_nodes.encode(out);
        encode::buffer(out, self.signature.as_deref().unwrap_or_default());
    }
}

impl<'a> Decode<'a> for DataUpgrade {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        Ok(DataUpgrade {
            start: dec.uint()?,
            length: dec.uint()?,
            nodes: decode_nodes(dec)?,
            additional_nodes: decode_nodes(dec)?,
            signature: Some(dec.bytes()?).filter(|s| !s.is_empty()),
        })
    }
}

/// A proof: what a `data` message carries besides its request id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Proof {
    /// The responder's fork.
    pub fork: u64,
    /// A proven block.
    pub block: Option<DataBlock>,
    /// A proven tree node (only when there is no block).
    pub hash: Option<DataHash>,
    /// A proven seek.
    pub seek: Option<DataSeek>,
    /// A proven upgrade.
    pub upgrade: Option<DataUpgrade>,
    /// The manifest, when it was asked for.
    pub manifest: Option<Manifest>,
}

impl Proof {
    /// The length of the tree an upgrade proves, counting its additional nodes
    /// (`MerkleTree.upgradeLength`); `None` without an upgrade or when the numbers are out
    /// of range for any core.
    pub fn upgrade_length(&self) -> Option<u64> {
        let u = self.upgrade.as_ref()?;
        let len = match u.additional_nodes.last() {
            Some(last) if last.index < 2 * crate::MAX_LENGTH => {
                crate::flat::right_span(last.index) / 2 + 1
            }
            Some(_) => return None,
            None => u.start.checked_add(u.length)?,
        };
        (len <= crate::MAX_LENGTH).then_some(len)
    }

    fn flags(&self) -> u64 {
        let mut f = 0;
        if self.block.is_some() {
            f |= FLAG_BLOCK;
        }
        if self.hash.is_some() {
            f |= FLAG_HASH;
        }
        if self.seek.is_some() {
            f |= FLAG_SEEK;
        }
        if self.upgrade.is_some() {
            f |= FLAG_UPGRADE;
        }
        if self.manifest.is_some() {
            f |= FLAG_MANIFEST;
        }
        f
    }

    fn body_len(&self) -> usize {
        encode::uint_len(self.fork)
            + self.block.as_ref().map_or(0, Encode::encoded_len)
            + self.hash.as_ref().map_or(0, Encode::encoded_len)
            + self.seek.as_ref().map_or(0, Encode::encoded_len)
            + self.upgrade.as_ref().map_or(0, Encode::encoded_len)
            + self.manifest.as_ref().map_or(0, Encode::encoded_len)
    }

    fn encode_parts<B: BufMut>(&self, out: &mut B) {
        if let Some(b) = &self.block {
            b.encode(out);
        }
        if let Some(h) = &self.hash {
            h.encode(out);
        }
        if let Some(s) = &self.seek {
            s.encode(out);
        }
        if let Some(u) = &self.upgrade {
            u.encode(out);
        }
        if let Some(m) = &self.manifest {
            m.encode(out);
        }
    }

    fn decode_parts(flags: u64, fork: u64, dec: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Proof {
            fork,
            block: opt(flags & FLAG_BLOCK != 0, dec, DataBlock::decode)?,
            hash: opt(flags & FLAG_HASH != 0, dec, DataHash::decode)?,
            seek: opt(flags & FLAG_SEEK != 0, dec, DataSeek::decode)?,
            upgrade: opt(flags & FLAG_UPGRADE != 0, dec, DataUpgrade::decode)?,
            manifest: opt(flags & FLAG_MANIFEST != 0, dec, Manifest::decode)?,
        })
    }
}

/// `data` (message type 3): `flags, request, fork, [block], [hash], [seek], [upgrade],
/// [manifest]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Data {
    /// Id of the request this answers (0 for an unrequested push).
    pub request: u64,
    /// The proof.
    pub proof: Proof,
}

impl Encode for Data {
    fn encoded_len(&self) -> usize {
        encode::uint_len(self.proof.flags())
            + encode::uint_len(self.request)
            + self.proof.body_len()
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::uint(out, self.proof.flags());
        encode::uint(out, self.request);
        encode::uint(out, self.proof.fork);
        self.proof.encode_parts(out);
    }
}

impl<'a> Decode<'a> for Data {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        let flags = dec.uint()?;
        let request = dec.uint()?;
        let fork = dec.uint()?;
        Ok(Data {
            request,
            proof: Proof::decode_parts(flags, fork, dec)?,
        })
    }
}

// ----- the other messages of the `hypercore/alpha` channel ------------------------------

/// Message type of `sync` on a `hypercore/alpha` channel.
pub const MSG_SYNC: u64 = 0;
/// Message type of `request`.
pub const MSG_REQUEST: u64 = 1;
/// Message type of `cancel`.
pub const MSG_CANCEL: u64 = 2;
/// Message type of `data`.
pub const MSG_DATA: u64 = 3;
/// Message type of `noData`.
pub const MSG_NO_DATA: u64 = 4;
/// Message type of `want`.
pub const MSG_WANT: u64 = 5;
/// Message type of `unwant`.
pub const MSG_UNWANT: u64 = 6;
/// Message type of `bitfield`.
pub const MSG_BITFIELD: u64 = 7;
/// Message type of `range`.
pub const MSG_RANGE: u64 = 8;
/// Message type of `extension`.
pub const MSG_EXTENSION: u64 = 9;

/// `noData` reason: the responder does not have what was asked for.
pub const NOT_AVAILABLE: u64 = 1;
/// `noData` reason: the request was malformed.
pub const INVALID_REQUEST: u64 = 2;

/// The `hypercore/alpha` channel handshake (`wire.handshake`): `uint flags (seeks = 1),
/// fixed32 capability`. The capability proves that the opener knows the core key (see
/// [`crate::caps::replication_capability`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Handshake {
    /// The opener answers `seek` requests.
    pub seeks: bool,
    /// The replication capability.
    pub capability: [u8; 32],
}

impl Encode for Handshake {
    fn encoded_len(&self) -> usize {
        1 + 32
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::uint(out, u64::from(self.seeks));
        out.put_slice(&self.capability);
    }
}

impl<'a> Decode<'a> for Handshake {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        let flags = dec.uint()?;
        Ok(Handshake {
            seeks: flags & 1 != 0,
            capability: dec.fixed()?,
        })
    }
}

const SYNC_CAN_UPGRADE: u64 = 1;
const SYNC_UPLOADING: u64 = 2;
const SYNC_DOWNLOADING: u64 = 4;
const SYNC_HAS_MANIFEST: u64 = 8;
const SYNC_ALLOW_PUSH: u64 = 16;

/// `sync` (message type 0): a peer's head and intentions: `flags, fork, length,
/// remoteLength`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sync {
    /// The sender's fork.
    pub fork: u64,
    /// The sender's length.
    pub length: u64,
    /// The length the sender last heard from the receiver (0 on another fork).
    pub remote_length: u64,
    /// The sender can prove an upgrade from `remote_length` to `length`.
    pub can_upgrade: bool,
    /// The sender answers requests.
    pub uploading: bool,
    /// The sender wants data.
    pub downloading: bool,
    /// The sender knows a (non-compat) manifest.
    pub has_manifest: bool,
    /// The sender accepts unrequested `data` pushes.
    pub allow_push: bool,
}

impl Sync {
    fn flags(&self) -> u64 {
        let mut f = 0;
        for (on, bit) in [
            (self.can_upgrade, SYNC_CAN_UPGRADE),
            (self.uploading, SYNC_UPLOADING),
            (self.downloading, SYNC_DOWNLOADING),
            (self.has_manifest, SYNC_HAS_MANIFEST),
            (self.allow_push, SYNC_ALLOW_PUSH),
        ] {
            if on {
                f |= bit;
            }
        }
        f
    }
}

impl Encode for Sync {
    fn encoded_len(&self) -> usize {
        encode::uint_len(self.flags())
            + encode::uint_len(self.fork)
            + encode::uint_len(self.length)
            + encode::uint_len(self.remote_length)
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::uint(out, self.flags());
        encode::uint(out, self.fork);
        encode::uint(out, self.length);
        encode::uint(out, self.remote_length);
    }
}

impl<'a> Decode<'a> for Sync {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        let flags = dec.uint()?;
        Ok(Sync {
            fork: dec.uint()?,
            length: dec.uint()?,
            remote_length: dec.uint()?,
            can_upgrade: flags & SYNC_CAN_UPGRADE != 0,
            uploading: flags & SYNC_UPLOADING != 0,
            downloading: flags & SYNC_DOWNLOADING != 0,
            has_manifest: flags & SYNC_HAS_MANIFEST != 0,
            allow_push: flags & SYNC_ALLOW_PUSH != 0,
        })
    }
}

/// `cancel` (message type 2): forget request `request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cancel {
    /// The request id.
    pub request: u64,
}

impl Encode for Cancel {
    fn encoded_len(&self) -> usize {
        encode::uint_len(self.request)
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::uint(out, self.request);
    }
}

impl<'a> Decode<'a> for Cancel {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        Ok(Cancel {
            request: dec.uint()?,
        })
    }
}

/// `noData` (message type 4): request `request` cannot be answered: `request, flags,
/// [reason]`. The flags `uint` is optional on the wire (a message that ends after `request`
/// has no reason), as the JS decoder allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NoData {
    /// The request id.
    pub request: u64,
    /// Why: [`NOT_AVAILABLE`], [`INVALID_REQUEST`], or 0 for none.
    pub reason: u64,
}

impl Encode for NoData {
    fn encoded_len(&self) -> usize {
        encode::uint_len(self.request)
            + 1
            + if self.reason != 0 {
                encode::uint_len(self.reason)
            } else {
                0
            }
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::uint(out, self.request);
        encode::uint(out, u64::from(self.reason != 0));
        if self.reason != 0 {
            encode::uint(out, self.reason);
        }
    }
}

impl<'a> Decode<'a> for NoData {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        let request = dec.uint()?;
        let flags = if dec.is_empty() { 0 } else { dec.uint()? };
        let reason = if flags & 1 != 0 { dec.uint()? } else { 0 };
        Ok(NoData { request, reason })
    }
}

/// `want` (type 5) and `unwant` (type 6): the sender is (no longer) interested in blocks
/// `start..start + length`: `start, length, [flags (any = 1)]`, the flags only when set.
/// The receiver answers a `want` with `bitfield` or `range` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Want {
    /// First block.
    pub start: u64,
    /// Number of blocks.
    pub length: u64,
    /// Any one block of the range will do (answered with a single `range`).
    pub any: bool,
}

impl Encode for Want {
    fn encoded_len(&self) -> usize {
        encode::uint_len(self.start) + encode::uint_len(self.length) + usize::from(self.any)
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::uint(out, self.start);
        encode::uint(out, self.length);
        if self.any {
            encode::uint(out, 1);
        }
    }
}

impl<'a> Decode<'a> for Want {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        let start = dec.uint()?;
        let length = dec.uint()?;
        let flags = if dec.is_empty() { 0 } else { dec.uint()? };
        Ok(Want {
            start,
            length,
            any: flags & 1 != 0,
        })
    }
}

/// `range` (message type 8): the sender has (or dropped) blocks `start..start + length`:
/// `flags (drop = 1, length is 1 = 2), start, [length]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Range {
    /// The blocks were dropped (cleared), not added.
    pub drop: bool,
    /// First block.
    pub start: u64,
    /// Number of blocks.
    pub length: u64,
}

impl Encode for Range {
    fn encoded_len(&self) -> usize {
        1 + encode::uint_len(self.start)
            + if self.length != 1 {
                encode::uint_len(self.length)
            } else {
                0
            }
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        let flags = u64::from(self.drop) | if self.length == 1 { 2 } else { 0 };
        encode::uint(out, flags);
        encode::uint(out, self.start);
        if self.length != 1 {
            encode::uint(out, self.length);
        }
    }
}

impl<'a> Decode<'a> for Range {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        let flags = dec.uint()?;
        let start = dec.uint()?;
        let length = if flags & 2 != 0 { 1 } else { dec.uint()? };
        Ok(Range {
            drop: flags & 1 != 0,
            start,
            length,
        })
    }
}

/// `bitfield` (message type 7): which blocks the sender has from `start` (a multiple of
/// 32): `start, uint32array` (a `uint` count, then the words little endian, least
/// significant bit first).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BitfieldMessage {
    /// First block the words describe.
    pub start: u64,
    /// The bits, 32 blocks per word.
    pub bitfield: Vec<u32>,
}

impl Encode for BitfieldMessage {
    fn encoded_len(&self) -> usize {
        encode::uint_len(self.start)
            + encode::uint_len(self.bitfield.len() as u64)
            + 4 * self.bitfield.len()
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::uint(out, self.start);
        encode::uint(out, self.bitfield.len() as u64);
        for w in &self.bitfield {
            out.put_u32_le(*w);
        }
    }
}

impl<'a> Decode<'a> for BitfieldMessage {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        let start = dec.uint()?;
        let bitfield = dec.array(4, |d| d.u32())?;
        Ok(BitfieldMessage { start, bitfield })
    }
}

/// `extension` (message type 9): a hypercore extension message: `string name, raw
/// message` (the message runs to the end of the frame). An empty name repeats the name of
/// the previous extension message on the channel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Extension {
    /// Extension name.
    pub name: String,
    /// The message bytes.
    pub message: Bytes,
}

impl Encode for Extension {
    fn encoded_len(&self) -> usize {
        encode::buffer_len(self.name.len()) + self.message.len()
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::string(out, &self.name);
        out.put_slice(&self.message);
    }
}

impl<'a> Decode<'a> for Extension {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        let name = dec.string()?.to_string();
        let message = Bytes::copy_from_slice(dec.rest());
        Ok(Extension { name, message })
    }
}

/// Any message of a `hypercore/alpha` channel, by its type.
///
/// `Data` is much larger than the others; messages are decoded one at a time and matched at
/// once, so it is not boxed (that would cost an allocation per block received).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)]
pub enum Message {
    /// Type 0.
    Sync(Sync),
    /// Type 1.
    Request(Request),
    /// Type 2.
    Cancel(Cancel),
    /// Type 3.
    Data(Data),
    /// Type 4.
    NoData(NoData),
    /// Type 5.
    Want(Want),
    /// Type 6.
    Unwant(Want),
    /// Type 7.
    Bitfield(BitfieldMessage),
    /// Type 8.
    Range(Range),
    /// Type 9.
    Extension(Extension),
}

impl Message {
    /// The message type (its index on the channel).
    pub fn message_type(&self) -> u64 {
        match self {
            Message::Sync(_) => MSG_SYNC,
            Message::Request(_) => MSG_REQUEST,
            Message::Cancel(_) => MSG_CANCEL,
            Message::Data(_) => MSG_DATA,
            Message::NoData(_) => MSG_NO_DATA,
            Message::Want(_) => MSG_WANT,
            Message::Unwant(_) => MSG_UNWANT,
            Message::Bitfield(_) => MSG_BITFIELD,
            Message::Range(_) => MSG_RANGE,
            Message::Extension(_) => MSG_EXTENSION,
        }
    }

    /// Decodes the payload of a message of type `message_type`. `Bytes` fields share the
    /// payload's memory; trailing bytes are ignored (as JS does). `Ok(None)` for a type
    /// this protocol does not define (JS ignores those too).
    pub fn decode(message_type: u64, payload: &Bytes) -> Result<Option<Message>, DecodeError> {
        Ok(Some(match message_type {
            MSG_SYNC => Message::Sync(corenet_codec::decode_bytes(payload)?),
            MSG_REQUEST => Message::Request(corenet_codec::decode_bytes(payload)?),
            MSG_CANCEL => Message::Cancel(corenet_codec::decode_bytes(payload)?),
            MSG_DATA => Message::Data(corenet_codec::decode_bytes(payload)?),
            MSG_NO_DATA => Message::NoData(corenet_codec::decode_bytes(payload)?),
            MSG_WANT => Message::Want(corenet_codec::decode_bytes(payload)?),
            MSG_UNWANT => Message::Unwant(corenet_codec::decode_bytes(payload)?),
            MSG_BITFIELD => Message::Bitfield(corenet_codec::decode_bytes(payload)?),
            MSG_RANGE => Message::Range(corenet_codec::decode_bytes(payload)?),
            MSG_EXTENSION => {
                // The raw tail must be a slice of the frame, not a copy.
                let mut dec = Decoder::from_bytes(payload);
                let name = dec.string()?.to_string();
                let at = dec.position();
                Message::Extension(Extension {
                    name,
                    message: payload.slice(at..),
                })
            }
            _ => return Ok(None),
        }))
    }
}

/// The payload (without the type, which travels in the protomux frame header).
impl Encode for Message {
    fn encoded_len(&self) -> usize {
        match self {
            Message::Sync(m) => m.encoded_len(),
            Message::Request(m) => m.encoded_len(),
            Message::Cancel(m) => m.encoded_len(),
            Message::Data(m) => m.encoded_len(),
            Message::NoData(m) => m.encoded_len(),
            Message::Want(m) | Message::Unwant(m) => m.encoded_len(),
            Message::Bitfield(m) => m.encoded_len(),
            Message::Range(m) => m.encoded_len(),
            Message::Extension(m) => m.encoded_len(),
        }
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        match self {
            Message::Sync(m) => m.encode(out),
            Message::Request(m) => m.encode(out),
            Message::Cancel(m) => m.encode(out),
            Message::Data(m) => m.encode(out),
            Message::NoData(m) => m.encode(out),
            Message::Want(m) | Message::Unwant(m) => m.encode(out),
            Message::Bitfield(m) => m.encode(out),
            Message::Range(m) => m.encode(out),
            Message::Extension(m) => m.encode(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let r = Request {
            id: 7,
            priority: 0,
            proof: ProofRequest {
                fork: 0,
                block: Some(RequestBlock { index: 3, nodes: 2 }),
                upgrade: Some(RequestUpgrade {
                    start: 0,
                    length: 300,
                }),
                manifest: true,
                ..ProofRequest::default()
            },
        };
        let b = corenet_codec::to_vec(&r);
        assert_eq!(b, [1 | 8 | 16, 7, 0, 3, 2, 0, 0xfd, 0x2c, 0x01]);
        assert_eq!(corenet_codec::decode_exact::<Request>(&b).unwrap(), r);
    }

    #[test]
    fn empty_signature_is_absent() {
        let d = Data {
            request: 1,
            proof: Proof {
                upgrade: Some(DataUpgrade {
                    signature: Some(Bytes::new()),
                    ..DataUpgrade::default()
                }),
                ..Proof::default()
            },
        };
        let b = corenet_codec::to_vec(&d);
        let back = corenet_codec::decode_exact::<Data>(&b).unwrap();
        assert_eq!(back.proof.upgrade.unwrap().signature, None);
    }
}
