//! Decoding errors.

/// Why a value could not be decoded.
///
/// Decoders distinguish bytes that are merely *short* ([`DecodeError::Incomplete`], more may
/// arrive) from bytes that can never decode ([`DecodeError::Invalid`], the sender is wrong).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended early: at least `needed` more bytes are required.
    #[error("incomplete input: {needed} more byte(s) needed")]
    Incomplete {
        /// How many more bytes the decoder needed at the point it stopped.
        needed: usize,
    },
    /// The input is malformed; the string says which rule it broke.
    #[error("invalid input: {0}")]
    Invalid(&'static str),
    /// A length or count is larger than the decoder's configured limit.
    #[error("{what} of {len} exceeds the limit of {max}")]
    TooLarge {
        /// What the length describes ("buffer", "array", ...).
        what: &'static str,
        /// The length found in the input.
        len: u64,
        /// The largest length accepted.
        max: u64,
    },
}

impl DecodeError {
    /// True when more input could make decoding succeed.
    pub fn is_incomplete(&self) -> bool {
        matches!(self, DecodeError::Incomplete { .. })
    }
}
