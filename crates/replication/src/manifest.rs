//! Manifests: who may sign a core, and how (hypercore `lib/messages.js` `manifest`,
//! `lib/verifier.js`).
//!
//! A v1 core's key is the hash of its manifest ([`Manifest::hash`]); a compat core's key is
//! its signer's public key, and its manifest is the default single-signer one. The encoding
//! here is byte-for-byte the JS one, versions 0 to 3, so a manifest received in a `data`
//! message hashes to the key it claims.

use bytes::{BufMut, Bytes};
use corenet_codec::hash::{blake2b_256_batch, Hash};
use corenet_codec::{encode, Decode, DecodeError, Decoder, Encode, PublicKey};

use crate::caps;

/// Flag bit of a v1+ manifest: multisig patches are allowed.
const MANIFEST_PATCH: u64 = 0b0001;
/// Flag bit: a prologue follows.
const MANIFEST_PROLOGUE: u64 = 0b0010;
/// Flag bit: linked core keys follow.
const MANIFEST_LINKED: u64 = 0b0100;
/// Flag bit: user data follows.
const MANIFEST_USER_DATA: u64 = 0b1000;

/// The only hash id JS knows: `0` is BLAKE2b.
const HASH_BLAKE2B: u64 = 0;
/// The only signature id JS knows: `0` is Ed25519.
const SIGNATURE_ED25519: u64 = 0;

/// Highest manifest version the JS decoder accepts.
pub const MAX_MANIFEST_VERSION: u64 = 3;

/// Encoded size of one signer: id, namespace, public key.
const SIGNER_LEN: usize = 1 + 32 + 32;

/// One signer of a manifest (always Ed25519 over BLAKE2b tree hashes, the only scheme JS
/// supports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signer {
    /// The signer's namespace: the signable context of version-0 manifests.
    pub namespace: Hash,
    /// The signer's Ed25519 public key.
    pub public_key: PublicKey,
}

/// A prologue: the core's first `length` blocks are fixed by their tree hash instead of a
/// signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prologue {
    /// Tree hash at `length`.
    pub hash: Hash,
    /// Number of blocks the prologue covers.
    pub length: u64,
}

/// A hypercore manifest.
///
/// `hash` (always BLAKE2b) and the signature scheme (always Ed25519) are not fields: JS
/// rejects any other value, and so does [`Manifest`]'s decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Manifest version (0 to [`MAX_MANIFEST_VERSION`]); corestore creates version 1.
    pub version: u64,
    /// Whether multisig signatures may carry patches.
    pub allow_patch: bool,
    /// How many signers must sign.
    pub quorum: u64,
    /// The signers.
    pub signers: Vec<Signer>,
    /// Blocks fixed by hash rather than signature.
    pub prologue: Option<Prologue>,
    /// Keys of linked cores (version 2 and later).
    pub linked: Option<Vec<Hash>>,
    /// Opaque user data (version 2 and later).
    pub user_data: Option<Bytes>,
}

impl Manifest {
    /// The default manifest of a single-signer core (`Verifier.defaultSignerManifest`):
    /// version 1, quorum 1, the default namespace, no patches. Compat cores and corestore's
    /// named cores use it.
    pub fn default_signer(public_key: PublicKey) -> Self {
        Manifest {
            version: 1,
            allow_patch: false,
            quorum: 1,
            signers: vec![Signer {
                namespace: *caps::default_namespace(),
                public_key,
            }],
            prologue: None,
            linked: None,
            user_data: None,
        }
    }

    /// The core key of a v1 core: `BLAKE2b-256(MANIFEST || encoding)`.
    pub fn hash(&self) -> Hash {
        let enc = corenet_codec::to_vec(self);
        blake2b_256_batch(&[caps::manifest_namespace(), &enc])
    }

    /// True when a core with this manifest and `key` is a compat core: one signer whose
    /// public key is the key itself (`Verifier.isCompat`).
    pub fn is_compat(&self, key: &Hash) -> bool {
        self.signers.len() == 1 && self.signers[0].public_key.as_bytes() == key
    }

    /// True when `key` is this manifest's hash (`Verifier.isValidManifest`).
    pub fn is_valid_for(&self, key: &Hash) -> bool {
        &self.hash() == key
    }

    /// The quorum JS uses when a manifest gives none: a majority of the signers.
    pub fn default_quorum(signers: usize) -> u64 {
        if signers == 0 {
            0
        } else {
            (signers as u64 >> 1) + 1
        }
    }

    /// The v0 encoding type: 0 prologue only, 1 a single plain signer, 2 multisig.
    fn v0_type(&self) -> u64 {
        if self.prologue.is_some() && self.signers.is_empty() {
            0
        } else if self.quorum == 1 && self.signers.len() == 1 && !self.allow_patch {
            1
        } else {
            2
        }
    }

    fn flags(&self) -> u64 {
        let mut flags = 0;
        if self.allow_patch {
            flags |= MANIFEST_PATCH;
        }
        if self.prologue.is_some() {
            flags |= MANIFEST_PROLOGUE;
        }
        if self.linked.is_some() {
            flags |= MANIFEST_LINKED;
        }
        if self.user_data.is_some() {
            flags |= MANIFEST_USER_DATA;
        }
        flags
    }
}

impl Encode for Signer {
    fn encoded_len(&self) -> usize {
        SIGNER_LEN
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::uint(out, SIGNATURE_ED25519);
        out.put_slice(&self.namespace);
        out.put_slice(self.public_key.as_bytes());
    }
}

impl<'a> Decode<'a> for Signer {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        if dec.uint()? != SIGNATURE_ED25519 {
            return Err(DecodeError::Invalid("unknown signature scheme"));
        }
        Ok(Signer {
            namespace: dec.fixed()?,
            public_key: PublicKey(dec.fixed()?),
        })
    }
}

impl Encode for Prologue {
    fn encoded_len(&self) -> usize {
        32 + encode::uint_len(self.length)
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        out.put_slice(&self.hash);
        encode::uint(out, self.length);
    }
}

impl<'a> Decode<'a> for Prologue {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        Ok(Prologue {
            hash: dec.fixed()?,
            length: dec.uint()?,
        })
    }
}

fn decode_hash_id(dec: &mut Decoder<'_>) -> Result<(), DecodeError> {
    if dec.uint()? != HASH_BLAKE2B {
        return Err(DecodeError::Invalid("unknown manifest hash"));
    }
    Ok(())
}

fn decode_signers(dec: &mut Decoder<'_>) -> Result<Vec<Signer>, DecodeError> {
    dec.array(SIGNER_LEN, Signer::decode)
}

/// The compact encoding of hypercore `messages.js` `manifest`.
impl Encode for Manifest {
    fn encoded_len(&self) -> usize {
        let mut n = encode::uint_len(self.version) + 1; // version, hash id
        if self.version == 0 {
            n += 1; // type
            return n + match self.v0_type() {
                0 => 32,
                1 => SIGNER_LEN,
                _ => {
                    encode::uint_len(u64::from(self.allow_patch))
                        + encode::uint_len(self.quorum)
                        + self.signers.encoded_len()
                }
            };
        }
        n += encode::uint_len(self.flags());
        n += encode::uint_len(self.quorum) + self.signers.encoded_len();
        if let Some(p) = &self.prologue {
            n += p.encoded_len();
        }
        if let Some(l) = &self.linked {
            n += encode::array_len(l.len()) + 32 * l.len();
        }
        if let Some(u) = &self.user_data {
            n += encode::buffer_len(u.len());
        }
        n
    }

    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::uint(out, self.version);
        if self.version == 0 {
            encode::uint(out, HASH_BLAKE2B);
            let ty = self.v0_type();
            encode::uint(out, ty);
            match (ty, &self.prologue) {
                (0, Some(p)) => out.put_slice(&p.hash),
                (1, _) => self.signers[0].encode(out),
                _ => {
                    encode::uint(out, u64::from(self.allow_patch));
                    encode::uint(out, self.quorum);
                    self.signers.encode(out);
                }
            }
            return;
        }
        encode::uint(out, self.flags());
        encode::uint(out, HASH_BLAKE2B);
        encode::uint(out, self.quorum);
        self.signers.encode(out);
        if let Some(p) = &self.prologue {
            p.encode(out);
        }
        if let Some(l) = &self.linked {
            encode::uint(out, l.len() as u64);
            for k in l {
                out.put_slice(k);
            }
        }
        if let Some(u) = &self.user_data {
            encode::buffer(out, u);
        }
    }
}

impl<'a> Decode<'a> for Manifest {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        let version = dec.uint()?;
        if version == 0 {
            decode_hash_id(dec)?;
            let ty = dec.uint()?;
            let mut m = Manifest {
                version: 0,
                allow_patch: false,
                quorum: 0,
                signers: Vec::new(),
                prologue: None,
                linked: None,
                user_data: None,
            };
            match ty {
                0 => {
                    m.prologue = Some(Prologue {
                        hash: dec.fixed()?,
                        length: 0,
                    })
                }
                1 => {
                    m.quorum = 1;
                    m.signers = vec![Signer::decode(dec)?];
                }
                2 => {
                    m.allow_patch = dec.uint()? & 1 != 0;
                    m.quorum = dec.uint()?;
                    m.signers = decode_signers(dec)?;
                }
                _ => return Err(DecodeError::Invalid("unknown v0 manifest type")),
            }
            return Ok(m);
        }
        if version > MAX_MANIFEST_VERSION {
            return Err(DecodeError::Invalid("unknown manifest version"));
        }
        let flags = dec.uint()?;
        decode_hash_id(dec)?;
        let quorum = dec.uint()?;
        let signers = decode_signers(dec)?;
        let prologue = if flags & MANIFEST_PROLOGUE != 0 {
            Some(Prologue::decode(dec)?)
        } else {
            None
        };
        let linked = if flags & MANIFEST_LINKED != 0 {
            Some(dec.array(32, |d| d.fixed::<32>())?)
        } else {
            None
        };
        let user_data = if flags & MANIFEST_USER_DATA != 0 {
            Some(dec.bytes()?)
        } else {
            None
        };
        Ok(Manifest {
            version,
            allow_patch: flags & MANIFEST_PATCH != 0,
            quorum,
            signers,
            prologue,
            linked,
            user_data,
        })
    }
}

/// One signer's entry in a v1 multisig signature (`messages.js` `multisigInput`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureProof {
    /// Index of the signer in the manifest.
    pub signer: u64,
    /// Ed25519 signature of the signable.
    pub signature: [u8; 64],
    /// How many blocks the signer's patch adds (0 for none).
    pub patch: u64,
}

impl Encode for SignatureProof {
    fn encoded_len(&self) -> usize {
        encode::uint_len(self.signer) + 64 + encode::uint_len(self.patch)
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::uint(out, self.signer);
        out.put_slice(&self.signature);
        encode::uint(out, self.patch);
    }
}

impl<'a> Decode<'a> for SignatureProof {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        Ok(SignatureProof {
            signer: dec.uint()?,
            signature: dec.fixed()?,
            patch: dec.uint()?,
        })
    }
}

/// A v1 multisig signature (`messages.js` `multiSignature`): the signers' proofs and the
/// tree nodes their patches share. A single-signer v1 core stores and sends the 68-byte
/// `[1, signer 0, signature, patch 0, no nodes]` form.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MultiSignature {
    /// One entry per signature, in quorum order.
    pub proofs: Vec<SignatureProof>,
    /// Tree nodes referenced by patches.
    pub patch: Vec<crate::Node>,
}

impl MultiSignature {
    /// The stored form of a single signer's signature (`assemble([{signer: 0, signature,
    /// patch: 0}])`).
    pub fn single(signature: [u8; 64]) -> Self {
        MultiSignature {
            proofs: vec![SignatureProof {
                signer: 0,
                signature,
                patch: 0,
            }],
            patch: Vec::new(),
        }
    }
}

impl Encode for MultiSignature {
    fn encoded_len(&self) -> usize {
        self.proofs.encoded_len() + self.patch.encoded_len()
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.proofs.encode(out);
        self.patch.encode(out);
    }
}

impl<'a> Decode<'a> for MultiSignature {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        Ok(MultiSignature {
            proofs: dec.array(66, SignatureProof::decode)?,
            patch: dec.array(crate::tree::NODE_MIN_LEN, crate::Node::decode)?,
        })
    }
}

/// A v0 multisig patch reference (`messages.js` `patchEncodingv0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchV0 {
    /// First block of the patch.
    pub start: u64,
    /// Blocks the patch adds.
    pub length: u64,
    /// Indexes into the signature's shared node list.
    pub nodes: Vec<u64>,
}

/// One entry of a v0 multisig signature (`multisigInputv0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureProofV0 {
    /// Index of the signer in the manifest.
    pub signer: u64,
    /// Ed25519 signature of the signable.
    pub signature: [u8; 64],
    /// The patch, if any.
    pub patch: Option<PatchV0>,
}

/// A v0 multisig signature (`messages.js` `multiSignaturev0`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MultiSignatureV0 {
    /// One entry per signature.
    pub proofs: Vec<SignatureProofV0>,
    /// Tree nodes referenced by patches.
    pub patch: Vec<crate::Node>,
}

impl Encode for SignatureProofV0 {
    fn encoded_len(&self) -> usize {
        1 + encode::uint_len(self.signer)
            + 64
            + self.patch.as_ref().map_or(0, |p| {
                encode::uint_len(p.start)
                    + encode::uint_len(p.length)
                    + encode::array_len(p.nodes.len())
                    + p.nodes.iter().map(|n| encode::uint_len(*n)).sum::<usize>()
            })
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::uint(out, u64::from(self.patch.is_some()));
        encode::uint(out, self.signer);
        out.put_slice(&self.signature);
        if let Some(p) = &self.patch {
            encode::uint(out, p.start);
            encode::uint(out, p.length);
            encode::uint(out, p.nodes.len() as u64);
            for n in &p.nodes {
                encode::uint(out, *n);
            }
        }
    }
}

impl<'a> Decode<'a> for SignatureProofV0 {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        let flags = dec.uint()?;
        let signer = dec.uint()?;
        let signature = dec.fixed()?;
        let patch = if flags & 1 != 0 {
            Some(PatchV0 {
                start: dec.uint()?,
                length: dec.uint()?,
                nodes: dec.array(1, Decoder::uint)?,
            })
        } else {
            None
        };
        Ok(SignatureProofV0 {
            signer,
            signature,
            patch,
        })
    }
}

impl Encode for MultiSignatureV0 {
    fn encoded_len(&self) -> usize {
        self.proofs.encoded_len() + self.patch.encoded_len()
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.proofs.encode(out);
        self.patch.encode(out);
    }
}

impl<'a> Decode<'a> for MultiSignatureV0 {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        Ok(MultiSignatureV0 {
            // The smallest proof: flags, signer and the signature (1 + 1 + 64 bytes).
            proofs: dec.array(66, SignatureProofV0::decode)?,
            patch: dec.array(crate::tree::NODE_MIN_LEN, crate::Node::decode)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_manifest_encoding() {
        let pk =
            PublicKey::from_hex("8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c")
                .unwrap();
        let m = Manifest::default_signer(pk);
        let enc = corenet_codec::to_vec(&m);
        assert_eq!(
            hex::encode(&enc),
            "0100000101004144eea531e483d54e0c14f4ca68e0644f355343ff6fcb0f005200e12cd747cb\
             8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
        );
        assert_eq!(enc.len(), 70);
        assert_eq!(corenet_codec::decode_exact::<Manifest>(&enc).unwrap(), m);
        assert_eq!(
            hex::encode(m.hash()),
            "d8c3a0597903b28d751c6e0b7107775e388ec5a3cf669bdd1e7ec41b8b8f6e72"
        );
        assert!(m.is_compat(pk.as_bytes()));
        assert!(!m.is_compat(&m.hash()));
    }

    #[test]
    fn unknown_ids_are_rejected() {
        let pk = PublicKey([7; 32]);
        let mut enc = corenet_codec::to_vec(&Manifest::default_signer(pk));
        enc[2] = 1; // hash id
        assert!(corenet_codec::decode_exact::<Manifest>(&enc).is_err());
        let mut enc = corenet_codec::to_vec(&Manifest::default_signer(pk));
        enc[5] = 1; // signature id
        assert!(corenet_codec::decode_exact::<Manifest>(&enc).is_err());
        assert!(corenet_codec::decode_exact::<Manifest>(&[4, 0, 0, 0, 0]).is_err());
    }
}
