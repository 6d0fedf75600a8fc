//! The proof-carrying wire messages of the `hypercore/alpha` channel: `request` (type 1) and
//! `data` (type 3), with their parts (hypercore `lib/messages.js` `wire.request`,
//! `wire.data`).
//!
//! A [`Request`] wraps a [`ProofRequest`] (what to prove) with the request id and priority; a
//! [`Data`] wraps a [`Proof`] with the id of the request it answers. The encodings are
//! byte-for-byte the JS ones: a flags `uint` says which optional parts follow.

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
