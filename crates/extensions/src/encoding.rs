//! Message encodings: how an extension's values become the payload of protomux message type
//! 0, byte for byte as the JS `compact-encoding` codec a JS app would pass to
//! `channel.addMessage({ encoding })`.
//!
//! | encoding | Rust value (send / receive) | JS codec | bytes on the wire |
//! | --- | --- | --- | --- |
//! | [`Binary`] | `[u8]` / [`Bytes`] | `c.raw` (protomux's default) | the bytes as they are |
//! | [`Utf8`] | `str` / `String` | `c.string` (= `c.utf8`) | `uint` length, UTF-8 bytes |
//! | [`Json<T>`] | `T: Serialize` / `T: Deserialize` | `c.json` | `uint` length, `JSON.stringify` text |
//! | [`Compact<T>`] | any [`corenet_codec::Encode`] / [`corenet_codec::Decode`] type | the matching compact-encoding struct | its compact encoding |
//!
//! Binary is `c.raw` rather than `c.buffer` because raw is what protomux uses when a message
//! has no encoding, carries an empty message faithfully (`c.buffer` decodes an empty buffer as
//! `null`), and is what hypercore's own extension messages carry. A JS app that wants
//! `c.buffer` can use [`Compact<Bytes>`](Compact) on this side.
//!
//! Decoding is stricter than JS where JS would silently accept garbage, and every failure is
//! an error for the extension's `on_error`, never a panic: [`Utf8`] and [`Json`] refuse
//! trailing bytes after the string and invalid UTF-8 (JS replaces it with U+FFFD), [`Json`]
//! refuses text that is not valid JSON for `T`. [`Compact`] allows trailing bytes, as JS
//! decoders do, so that peers can append optional fields.

use std::fmt;
use std::marker::PhantomData;

use bytes::{Bytes, BytesMut};
use corenet_codec::{encode, Decode, Decoder, Encode};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a payload did not decode in its extension's encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The compact-encoding frame around the value is malformed or truncated, or a string is
    /// not UTF-8.
    #[error(transparent)]
    Codec(#[from] corenet_codec::DecodeError),
    /// The text is not JSON for the expected type.
    #[error("invalid JSON: {0}")]
    Json(String),
}

/// Why a value could not be encoded (only JSON can fail: serde refuses some values, such as
/// maps with non-string keys).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode the message: {0}")]
pub struct EncodeError(pub String);

/// How an extension's messages are encoded. The built-in encodings are [`Binary`], [`Utf8`],
/// [`Json`] and [`Compact`]; implement this trait for anything else (it must match what the
/// remote app's codec writes).
pub trait Encoding: Send + Sync + 'static {
    /// What handlers and streams receive.
    type Message: Send + 'static;
    /// What `send` and `broadcast` take (`str` for [`Utf8`], `[u8]` for [`Binary`]).
    type Input: ?Sized;
    /// Short name for logs and errors.
    fn name(&self) -> &'static str;
    /// The payload for `message`.
    fn encode(&self, message: &Self::Input) -> Result<Bytes, EncodeError>;
    /// The message in `payload` (a slice of the received frame).
    fn decode(&self, payload: &Bytes) -> Result<Self::Message, DecodeError>;
}

/// Raw bytes, JS `c.raw`: the payload is the message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Binary;

impl Encoding for Binary {
    type Message = Bytes;
    type Input = [u8];

    fn name(&self) -> &'static str {
        "binary"
    }

    fn encode(&self, message: &[u8]) -> Result<Bytes, EncodeError> {
        Ok(Bytes::copy_from_slice(message))
    }

    /// Never fails; the message shares the received frame's memory.
    fn decode(&self, payload: &Bytes) -> Result<Bytes, DecodeError> {
        Ok(payload.clone())
    }
}

/// A UTF-8 string, JS `c.string` / `c.utf8`: `uint` byte length, then the bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Utf8;

impl Encoding for Utf8 {
    type Message = String;
    type Input = str;

    fn name(&self) -> &'static str {
        "utf8"
    }

    fn encode(&self, message: &str) -> Result<Bytes, EncodeError> {
        let mut out = BytesMut::with_capacity(encode::buffer_len(message.len()));
        encode::string(&mut out, message);
        Ok(out.freeze())
    }

    fn decode(&self, payload: &Bytes) -> Result<String, DecodeError> {
        let mut dec = Decoder::new(payload);
        let s = dec.string()?;
        dec.finish()?;
        Ok(s.to_owned())
    }
}

/// A JSON value, JS `c.json`: the `JSON.stringify` text as a `c.string`.
pub struct Json<T>(PhantomData<fn() -> T>);

impl<T> Json<T> {
    /// The JSON encoding for `T`.
    pub const fn new() -> Self {
        Json(PhantomData)
    }
}

impl<T> Default for Json<T> {
    fn default() -> Self {
        Json::new()
    }
}

impl<T> Clone for Json<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Json<T> {}

impl<T> fmt::Debug for Json<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Json<{}>", std::any::type_name::<T>())
    }
}

impl<T> Encoding for Json<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    type Message = T;
    type Input = T;

    fn name(&self) -> &'static str {
        "json"
    }

    fn encode(&self, message: &T) -> Result<Bytes, EncodeError> {
        let text = serde_json::to_vec(message).map_err(|e| EncodeError(e.to_string()))?;
        let mut out = BytesMut::with_capacity(encode::buffer_len(text.len()));
        encode::buffer(&mut out, &text);
        Ok(out.freeze())
    }

    fn decode(&self, payload: &Bytes) -> Result<T, DecodeError> {
        let mut dec = Decoder::new(payload);
        let text = dec.string()?;
        dec.finish()?;
        serde_json::from_str(text).map_err(|e| DecodeError::Json(e.to_string()))
    }
}

/// Any compact-encoding type of `corenet-codec` (the remote uses the matching JS struct
/// codec). Trailing bytes are allowed, as JS decoders allow them.
pub struct Compact<T>(PhantomData<fn() -> T>);

impl<T> Compact<T> {
    /// The compact encoding of `T`.
    pub const fn new() -> Self {
        Compact(PhantomData)
    }
}

impl<T> Default for Compact<T> {
    fn default() -> Self {
        Compact::new()
    }
}

impl<T> Clone for Compact<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Compact<T> {}

impl<T> fmt::Debug for Compact<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Compact<{}>", std::any::type_name::<T>())
    }
}

impl<T> Encoding for Compact<T>
where
    T: Encode + for<'a> Decode<'a> + Send + 'static,
{
    type Message = T;
    type Input = T;

    fn name(&self) -> &'static str {
        "compact"
    }

    fn encode(&self, message: &T) -> Result<Bytes, EncodeError> {
        let mut out = BytesMut::with_capacity(message.encoded_len());
        message.encode(&mut out);
        Ok(out.freeze())
    }

    fn decode(&self, payload: &Bytes) -> Result<T, DecodeError> {
        Ok(corenet_codec::decode_bytes(payload)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[test]
    fn utf8_is_c_string() {
        // c.encode(c.string, 'hi') in JS: <Buffer 02 68 69>
        assert_eq!(&Utf8.encode("hi").unwrap()[..], b"\x02hi");
        assert_eq!(&Utf8.encode("").unwrap()[..], b"\x00");
        // 300 bytes: the length takes the 0xfd form (0xfd, u16 LE).
        let long = "x".repeat(300);
        let enc = Utf8.encode(&long).unwrap();
        assert_eq!(&enc[..3], &[0xfd, 0x2c, 0x01]);
        assert_eq!(enc.len(), 303);
        assert_eq!(Utf8.decode(&enc).unwrap(), long);
        // Multi-byte characters are counted in bytes.
        let s = "h\u{e9}llo \u{2713} \u{1f980}";
        let enc = Utf8.encode(s).unwrap();
        assert_eq!(enc[0] as usize, s.len());
        assert_eq!(Utf8.decode(&enc).unwrap(), s);
    }

    #[test]
    fn utf8_rejects_bad_input() {
        let bad = |b: &'static [u8]| Utf8.decode(&Bytes::from_static(b)).unwrap_err();
        assert!(matches!(bad(b""), DecodeError::Codec(e) if e.is_incomplete()));
        assert!(matches!(bad(b"\x05hi"), DecodeError::Codec(e) if e.is_incomplete()));
        assert!(matches!(bad(b"\x02\xff\xfe"), DecodeError::Codec(_)));
        assert!(
            matches!(bad(b"\x01hi"), DecodeError::Codec(_)),
            "trailing bytes"
        );
    }

    #[test]
    fn json_is_c_json() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct M {
            n: u32,
            s: String,
        }
        let m = M {
            n: 7,
            s: "a\"b".into(),
        };
        let enc = Json::<M>::new().encode(&m).unwrap();
        // JSON.stringify({n: 7, s: 'a"b'}) is {"n":7,"s":"a\"b"}: 18 bytes.
        let text = br#"{"n":7,"s":"a\"b"}"#;
        assert_eq!(enc[0] as usize, text.len());
        assert_eq!(&enc[1..], text);
        assert_eq!(Json::<M>::new().decode(&enc).unwrap(), m);
        // Text JS wrote with other key order and spacing decodes too.
        let js = Utf8.encode(r#"{ "s": "x", "n": 1 }"#).unwrap();
        assert_eq!(
            Json::<M>::new().decode(&js).unwrap(),
            M {
                n: 1,
                s: "x".into()
            }
        );
        // Valid JSON of the wrong shape is an error, as is invalid JSON.
        let wrong = Utf8.encode("[1,2]").unwrap();
        assert!(matches!(
            Json::<M>::new().decode(&wrong),
            Err(DecodeError::Json(_))
        ));
        let broken = Utf8.encode("{\"n\":").unwrap();
        assert!(matches!(
            Json::<M>::new().decode(&broken),
            Err(DecodeError::Json(_))
        ));
        // serde_json::Value takes anything JSON.
        let v = Json::<serde_json::Value>::new().decode(&wrong).unwrap();
        assert_eq!(v, serde_json::json!([1, 2]));
    }

    #[test]
    fn json_encode_errors_are_reported() {
        let mut m = std::collections::HashMap::new();
        m.insert(vec![1u8], 1u8); // a map with non-string keys has no JSON form
        assert!(Json::<std::collections::HashMap<Vec<u8>, u8>>::new()
            .encode(&m)
            .is_err());
    }

    #[test]
    fn binary_is_c_raw() {
        assert_eq!(&Binary.encode(b"\x00\x01").unwrap()[..], b"\x00\x01");
        assert_eq!(Binary.encode(b"").unwrap().len(), 0);
        let p = Bytes::from_static(b"abc");
        assert_eq!(Binary.decode(&p).unwrap(), p);
    }

    #[test]
    fn compact_allows_trailing_bytes() {
        let enc = Compact::<Bytes>::new()
            .encode(&Bytes::from_static(b"ab"))
            .unwrap();
        assert_eq!(&enc[..], b"\x02ab");
        let mut longer = enc.to_vec();
        longer.push(9);
        assert_eq!(
            Compact::<Bytes>::new()
                .decode(&Bytes::from(longer))
                .unwrap(),
            Bytes::from_static(b"ab")
        );
        assert!(Compact::<Bytes>::new()
            .decode(&Bytes::from_static(b"\x03ab"))
            .is_err());
    }

    proptest! {
        #[test]
        fn utf8_round_trip(s in ".*") {
            let enc = Utf8.encode(&s).unwrap();
            prop_assert_eq!(enc.len(), encode::buffer_len(s.len()));
            prop_assert_eq!(Utf8.decode(&enc).unwrap(), s);
            for cut in 0..enc.len() {
                prop_assert!(Utf8.decode(&enc.slice(..cut)).is_err());
            }
        }

        #[test]
        fn json_round_trip(v in proptest::collection::vec((any::<u32>(), ".{0,8}"), 0..6)) {
            let enc = Json::<Vec<(u32, String)>>::new().encode(&v).unwrap();
            let text = serde_json::to_vec(&v).unwrap();
            prop_assert_eq!(enc.len(), encode::buffer_len(text.len()));
            prop_assert_eq!(Json::<Vec<(u32, String)>>::new().decode(&enc).unwrap(), v);
            for cut in 0..enc.len() {
                prop_assert!(Json::<Vec<(u32, String)>>::new().decode(&enc.slice(..cut)).is_err());
            }
        }

        #[test]
        fn binary_round_trip(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let enc = Binary.encode(&b).unwrap();
            prop_assert_eq!(&enc[..], &b[..]);
            prop_assert_eq!(&Binary.decode(&enc).unwrap()[..], &b[..]);
        }

        #[test]
        fn decoders_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let b = Bytes::from(b);
            let _ = Utf8.decode(&b);
            let _ = Json::<serde_json::Value>::new().decode(&b);
            let _ = Compact::<Bytes>::new().decode(&b);
        }
    }
}
