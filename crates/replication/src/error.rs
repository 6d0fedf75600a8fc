//! Errors.

use corenet_codec::DecodeError;

/// Why a proof received from a remote was rejected. Every variant means the remote sent
/// something wrong (or for a tree we do not share); nothing of the proof was stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// A node is missing or out of order: the proof does not have the shape its request
    /// implies.
    #[error("expected tree node {expected}, got {}", got.map_or_else(|| "none".to_string(), |g| g.to_string()))]
    UnexpectedNode {
        /// The flat index the verifier needed next.
        expected: u64,
        /// What the proof had there.
        got: Option<u64>,
    },
    /// The hashes up the proof do not meet a node we trust.
    #[error("checksum mismatch at tree node {index}")]
    Checksum {
        /// The flat index where the proof's root disagreed with our stored node.
        index: u64,
    },
    /// The proof ends at a node we do not have, so it cannot be checked.
    #[error("tree node {index} is not stored locally, cannot verify")]
    Unverifiable {
        /// The flat index the proof needs us to have.
        index: u64,
    },
    /// The upgrade's signature does not verify for the resulting tree.
    #[error("invalid signature")]
    Signature,
    /// The manifest does not hash to the core key (and is not a compat manifest for it).
    #[error("manifest does not match the core key")]
    Manifest,
    /// The upgrade disagrees with the manifest's prologue.
    #[error("upgrade does not satisfy the prologue")]
    Prologue,
    /// An index, length or range is beyond what a hypercore can hold.
    #[error("out of bounds: {0}")]
    OutOfBounds(&'static str),
    /// Some other structural problem.
    #[error("malformed proof: {0}")]
    Malformed(&'static str),
    /// A verified upgrade is shorter than or equal to our tree yet has different roots: the
    /// signer signed two trees at one fork.
    #[error("conflicting tree at the same fork")]
    Conflict,
}

/// A storage failure (a local fault, never the remote's).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The operating system reported an error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Stored bytes failed their checksum or do not parse.
    #[error("corrupt storage: {0}")]
    Corrupt(String),
    /// A record is larger than the storage format allows.
    #[error("record too large: {0}")]
    TooLarge(&'static str),
}

impl StorageError {
    /// The same error again, for a second party (the error is not `Clone`): an I/O error
    /// keeps its kind and OS error code, so a full disk stays `StorageFull`.
    pub(crate) fn duplicate(&self) -> StorageError {
        match self {
            StorageError::Io(e) => StorageError::Io(match e.raw_os_error() {
                Some(code) => std::io::Error::from_raw_os_error(code),
                None => std::io::Error::new(e.kind(), e.to_string()),
            }),
            StorageError::Corrupt(s) => StorageError::Corrupt(s.clone()),
            StorageError::TooLarge(s) => StorageError::TooLarge(s),
        }
    }
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A remote's proof was rejected; nothing was stored.
    #[error("invalid proof: {0}")]
    InvalidProof(#[from] ProofError),
    /// A remote's request cannot be answered because it is malformed (JS replies `noData`
    /// with reason `INVALID_REQUEST`).
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// The proof is for another fork than ours: a lower one is outdated; a higher one needs
    /// [`crate::Hypercore::verify_reorg`].
    #[error("proof is for fork {remote}, we are at fork {local}")]
    ForkMismatch {
        /// Our fork.
        local: u64,
        /// The proof's fork.
        remote: u64,
    },
    /// The core changed between verification and apply (another proof or append won); the
    /// verified proof was dropped. Not the remote's fault.
    #[error("the core changed since the proof was verified")]
    Stale,
    /// The core has no secret key, or its manifest needs signers we do not hold.
    #[error("the core is not writable")]
    NotWritable,
    /// A caller-supplied argument is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// The stored core is not the one asked for, or storage holds no core where one was
    /// expected.
    #[error("storage mismatch: {0}")]
    StorageMismatch(&'static str),
    /// Bytes could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The connection's mux failed or is closed.
    #[error("mux: {0}")]
    Mux(#[from] corenet_mux::Error),
    /// The core or the connection went away while waiting.
    #[error("closed")]
    Closed,
}

impl Error {
    /// True when the error means the remote misbehaved (an invalid proof or request), as
    /// opposed to a benign race or a local fault. Replicators count these against the peer.
    pub fn is_remote_fault(&self) -> bool {
        matches!(
            self,
            Error::InvalidProof(_) | Error::InvalidRequest(_) | Error::Decode(_)
        )
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Storage(StorageError::Io(e))
    }
}
