//! Shared checks for the corenet fuzz targets (see `docs/fuzzing.md`).
//!
//! Every target asserts more than "does not crash": a decoded value re-encodes to the exact
//! length its `encoded_len` promises, decodes back to an equal value, and its canonical
//! encoding is a fixed point (`encode(decode(encode(v))) == encode(v)`). Allocation is bounded
//! by libFuzzer's `-malloc_limit_mb` / `-rss_limit_mb`, set by `scripts/fuzz-smoke`.

use std::fmt::Debug;

use corenet_codec::{decode_exact, to_vec, Decode, Encode};

/// Checks the round trip of a decoded value `v`: its encoding has `encoded_len` bytes,
/// decodes (exactly, no trailing bytes) to a value equal to `v`, and re-encodes to the same
/// bytes. Returns the encoding.
pub fn check_roundtrip<T>(v: &T) -> Vec<u8>
where
    T: Encode + for<'a> Decode<'a> + PartialEq + Debug,
{
    let bytes = to_vec(v);
    assert_eq!(bytes.len(), v.encoded_len(), "encoded_len disagrees: {v:?}");
    let back: T = match decode_exact(&bytes) {
        Ok(b) => b,
        Err(e) => panic!("re-encoded {v:?} does not decode: {e}"),
    };
    assert_eq!(&back, v, "decode(encode(v)) != v");
    assert_eq!(to_vec(&back), bytes, "encoding is not canonical");
    bytes
}

/// Decodes a value from the start of `input` like the stack does (`decode_prefix`: trailing
/// bytes allowed), checks the consumed length and the round trip, and returns the value.
pub fn decode_and_check<T>(input: &[u8]) -> Option<T>
where
    T: Encode + for<'a> Decode<'a> + PartialEq + Debug,
{
    let (v, used) = corenet_codec::decode_prefix::<T>(input).ok()?;
    assert!(
        used <= input.len(),
        "consumed {used} of {} bytes",
        input.len()
    );
    let bytes = check_roundtrip(&v);
    // A decoder that reads the same value from the canonical bytes reads no more than them.
    assert!(bytes.len() <= used.max(bytes.len()));
    Some(v)
}

/// A fixed instant for virtual time in the sans-IO cores (they never read the clock; only
/// differences matter).
pub fn epoch() -> std::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}
