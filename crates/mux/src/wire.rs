//! The protomux wire format.
//!
//! Every protomux frame is one secret-stream message (the secret stream keeps message
//! boundaries, so there is no length prefix of its own):
//!
//! ```text
//! frame   = uint channel, uint type, payload
//! ```
//!
//! `channel` is the *sender's* local id of the channel (0 is the control channel). On a user
//! channel, `type` is the message type and `payload` the rest of the frame. On the control
//! channel:
//!
//! | type | message | body |
//! | --- | --- | --- |
//! | 0 | batch | `uint firstChannel, (uint len, bytes[len])*`; `len == 0` is followed by `uint channel` and switches the channel of the items after it; each item is `uint type, payload` of that channel |
//! | 1 | open | `uint localId, string protocol, buffer id` (length 0 = no id), then the handshake: the rest of the body |
//! | 2 | reject | `uint remoteId`: the id the rejected `open` carried |
//! | 3 | close | `uint localId` |
//!
//! Control messages inside a batch are items of channel 0 (`uint type, body`). Unknown
//! control types are ignored, as JS does. Every `uint` the JS decoder reads must stay within
//! `2^53 - 1`; larger values fail there, and fail here the same way.
//!
//! Decoding never panics: short input is [`DecodeError::Incomplete`], malformed input
//! [`DecodeError::Invalid`].

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};
use corenet_codec::{encode, Decode, DecodeError, Decoder, Encode};

/// Channel id of the control channel.
pub const CONTROL_CHANNEL: u64 = 0;
/// Control message type: a batch of frames.
pub const TYPE_BATCH: u64 = 0;
/// Control message type: open a channel.
pub const TYPE_OPEN: u64 = 1;
/// Control message type: reject a remote open.
pub const TYPE_REJECT: u64 = 2;
/// Control message type: close a channel.
pub const TYPE_CLOSE: u64 = 3;
/// A corked batch is sent once it has reached this many bytes (JS `MAX_BATCH`, 8 MiB),
/// before the next item is added.
pub const MAX_BATCH: usize = 8 * 1024 * 1024;
/// The largest integer JS decodes without losing precision (`Number.MAX_SAFE_INTEGER`);
/// compact-encoding fails on larger `uint`s.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Reads a `uint` that JS would accept (at most [`MAX_SAFE_INTEGER`]).
pub fn safe_uint(dec: &mut Decoder<'_>) -> Result<u64, DecodeError> {
    let n = dec.uint()?;
    if n > MAX_SAFE_INTEGER {
        return Err(DecodeError::Invalid("uint above 2^53 - 1"));
    }
    Ok(n)
}

/// The start of every frame: `uint channel, uint type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The sender's local id of the channel; 0 is the control channel.
    pub channel: u64,
    /// Message type (on the control channel: one of the `TYPE_*` constants).
    pub message_type: u64,
}

impl Encode for Header {
    fn encoded_len(&self) -> usize {
        encode::uint_len(self.channel) + encode::uint_len(self.message_type)
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::uint(out, self.channel);
        encode::uint(out, self.message_type);
    }
}

impl<'a> Decode<'a> for Header {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        let channel = safe_uint(dec)?;
        let message_type = safe_uint(dec)?;
        Ok(Header {
            channel,
            message_type,
        })
    }
}

/// The body of an `open` control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open<'a> {
    /// The opener's local id for the channel (never 0).
    pub local_id: u64,
    /// Protocol name. Decoding replaces invalid UTF-8 with U+FFFD, as JS does.
    pub protocol: Cow<'a, str>,
    /// Optional binary id; empty means none (JS sends `null` as length 0, and reads length 0
    /// back as `null`).
    pub id: &'a [u8],
    /// The handshake: everything after the id, encoded by the channel's handshake encoding.
    pub handshake: &'a [u8],
}

impl Encode for Open<'_> {
    fn encoded_len(&self) -> usize {
        encode::uint_len(self.local_id)
            + encode::buffer_len(self.protocol.len())
            + encode::buffer_len(self.id.len())
            + self.handshake.len()
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::uint(out, self.local_id);
        encode::string(out, &self.protocol);
        encode::buffer(out, self.id);
        out.put_slice(self.handshake);
    }
}

impl<'a> Decode<'a> for Open<'a> {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        let local_id = safe_uint(dec)?;
        let protocol = String::from_utf8_lossy(dec.buffer()?);
        let id = dec.buffer()?;
        let handshake = dec.rest();
        Ok(Open {
            local_id,
            protocol,
            id,
            handshake,
        })
    }
}

/// A control message: the body of a frame on channel 0, after its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control<'a> {
    /// A batch; iterate its items with [`BatchItems`].
    Batch(&'a [u8]),
    /// Open a channel.
    Open(Open<'a>),
    /// Reject the open that carried this id (the receiver's local id).
    Reject {
        /// The id from the rejected `open`.
        remote_id: u64,
    },
    /// Close the sender's channel with this local id.
    Close {
        /// The sender's local id.
        local_id: u64,
    },
    /// A control type this version does not know; ignored.
    Unknown {
        /// The type.
        message_type: u64,
    },
}

impl Control<'_> {
    /// The control message type.
    pub fn message_type(&self) -> u64 {
        match self {
            Control::Batch(_) => TYPE_BATCH,
            Control::Open(_) => TYPE_OPEN,
            Control::Reject { .. } => TYPE_REJECT,
            Control::Close { .. } => TYPE_CLOSE,
            Control::Unknown { message_type } => *message_type,
        }
    }

    /// Decodes the body of a control message of type `message_type`. Trailing bytes after a
    /// reject or close are ignored, as JS ignores them.
    pub fn decode_body<'a>(
        message_type: u64,
        dec: &mut Decoder<'a>,
    ) -> Result<Control<'a>, DecodeError> {
        Ok(match message_type {
            TYPE_BATCH => Control::Batch(dec.rest()),
            TYPE_OPEN => Control::Open(Open::decode(dec)?),
            TYPE_REJECT => Control::Reject {
                remote_id: safe_uint(dec)?,
            },
            TYPE_CLOSE => Control::Close {
                local_id: safe_uint(dec)?,
            },
            other => {
                dec.rest();
                Control::Unknown {
                    message_type: other,
                }
            }
        })
    }
}

/// `uint type, body`: a control message as it appears inside a batch.
impl Encode for Control<'_> {
    fn encoded_len(&self) -> usize {
        encode::uint_len(self.message_type())
            + match self {
                Control::Batch(b) => b.len(),
                Control::Open(o) => o.encoded_len(),
                Control::Reject { remote_id } => encode::uint_len(*remote_id),
                Control::Close { local_id } => encode::uint_len(*local_id),
                Control::Unknown { .. } => 0,
            }
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::uint(out, self.message_type());
        match self {
            Control::Batch(b) => out.put_slice(b),
            Control::Open(o) => o.encode(out),
            Control::Reject { remote_id } => encode::uint(out, *remote_id),
            Control::Close { local_id } => encode::uint(out, *local_id),
            Control::Unknown { .. } => {}
        }
    }
}

impl<'a> Decode<'a> for Control<'a> {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        let message_type = safe_uint(dec)?;
        Control::decode_body(message_type, dec)
    }
}

/// A whole control frame: `uint 0` followed by the [`Control`] message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlFrame<'a>(pub Control<'a>);

impl Encode for ControlFrame<'_> {
    fn encoded_len(&self) -> usize {
        1 + self.0.encoded_len()
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::uint(out, CONTROL_CHANNEL);
        self.0.encode(out);
    }
}

impl<'a> Decode<'a> for ControlFrame<'a> {
    fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        if safe_uint(dec)? != CONTROL_CHANNEL {
            return Err(DecodeError::Invalid("not a control frame"));
        }
        Ok(ControlFrame(Control::decode(dec)?))
    }
}

/// One frame carried in a batch: `uint type, payload` of `channel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchItem<'a> {
    /// The sender's local id of the channel (0: a control message).
    pub channel: u64,
    /// `uint type, payload`; never empty.
    pub data: &'a [u8],
}

/// Iterates the items of a batch body (`uint firstChannel, (uint len, bytes)*`).
///
/// Like JS, an item whose length runs past the end of the batch is cut at the end rather than
/// refused; every other malformation is an error, after which the iterator ends.
#[derive(Debug, Clone)]
pub struct BatchItems<'a> {
    /// The rest of the batch body.
    dec: Decoder<'a>,
    /// Channel of the next item; `None` before the first channel is read or after an error.
    channel: Option<u64>,
    /// Set after an error: iteration is over.
    failed: bool,
}

impl<'a> BatchItems<'a> {
    /// Starts iterating a batch body.
    pub fn new(body: &'a [u8]) -> Self {
        BatchItems {
            dec: Decoder::new(body),
            channel: None,
            failed: false,
        }
    }

    fn next_item(&mut self) -> Result<Option<BatchItem<'a>>, DecodeError> {
        let mut channel = match self.channel {
            Some(c) => c,
            None => safe_uint(&mut self.dec)?,
        };
        loop {
            if self.dec.is_empty() {
                self.channel = Some(channel);
                return Ok(None);
            }
            let len = safe_uint(&mut self.dec)?;
            if len == 0 {
                channel = safe_uint(&mut self.dec)?;
                continue;
            }
            let take = usize::try_from(len)
                .unwrap_or(usize::MAX)
                .min(self.dec.remaining());
            let data = self.dec.raw(take)?;
            self.channel = Some(channel);
            return Ok(Some(BatchItem { channel, data }));
        }
    }
}

impl<'a> Iterator for BatchItems<'a> {
    type Item = Result<BatchItem<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_item() {
            Ok(Some(item)) => Some(Ok(item)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// A batch body built from items, for encoding (see [`BatchWriter`] for the incremental
/// form the mux uses). Items must not be empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch<'a>(pub Vec<BatchItem<'a>>);

impl Encode for Batch<'_> {
    fn encoded_len(&self) -> usize {
        let mut len = 0;
        let mut last = None;
        for item in &self.0 {
            if last != Some(item.channel) {
                if last.is_some() {
                    len += 1;
                }
                len += encode::uint_len(item.channel);
                last = Some(item.channel);
            }
            len += encode::buffer_len(item.data.len());
        }
        if last.is_none() {
            len += 1; // an empty batch still names its first channel (0)
        }
        len
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        let mut last = None;
        for item in &self.0 {
            debug_assert!(!item.data.is_empty(), "a batch item cannot be empty");
            if last != Some(item.channel) {
                if last.is_some() {
                    out.put_u8(0);
                }
                encode::uint(out, item.channel);
                last = Some(item.channel);
            }
            encode::buffer(out, item.data);
        }
        if last.is_none() {
            out.put_u8(0);
        }
    }
}

/// Builds one batch frame (`0, 0, firstChannel, items...`) item by item, exactly as JS
/// protomux lays it out while corked.
#[derive(Debug, Default)]
pub struct BatchWriter {
    /// The frame so far; empty while no item was added.
    buf: BytesMut,
    /// Channel of the last item.
    last: Option<u64>,
}

impl BatchWriter {
    /// An empty batch.
    pub fn new() -> Self {
        BatchWriter::default()
    }

    /// True when no item was added.
    pub fn is_empty(&self) -> bool {
        self.last.is_none()
    }

    /// Length of the frame built so far (what JS tracks as the batch's `end`; 1 when empty).
    pub fn len(&self) -> usize {
        if self.is_empty() {
            1
        } else {
            self.buf.len()
        }
    }

    /// Bytes that adding an item of `item_len` bytes on `channel` would add.
    pub fn item_cost(&self, channel: u64, item_len: usize) -> usize {
        let switch = match self.last {
            None => 2 + encode::uint_len(channel) - 1,
            Some(c) if c == channel => 0,
            Some(_) => 1 + encode::uint_len(channel),
        };
        switch + encode::buffer_len(item_len)
    }

    /// Appends an item: `uint type` then the body that `body` writes (exactly `body_len`
    /// bytes).
    pub fn push(
        &mut self,
        channel: u64,
        message_type: u64,
        body_len: usize,
        body: impl FnOnce(&mut BytesMut),
    ) {
        let item_len = encode::uint_len(message_type) + body_len;
        self.buf.reserve(self.item_cost(channel, item_len));
        self.switch_to(channel);
        encode::uint(&mut self.buf, item_len as u64);
        let start = self.buf.len();
        encode::uint(&mut self.buf, message_type);
        body(&mut self.buf);
        debug_assert_eq!(self.buf.len() - start, item_len, "body_len disagrees");
    }

    /// Appends an item given whole (`uint type, payload`, not empty).
    pub fn push_raw(&mut self, channel: u64, item: &[u8]) {
        debug_assert!(!item.is_empty(), "a batch item cannot be empty");
        self.buf.reserve(self.item_cost(channel, item.len()));
        self.switch_to(channel);
        encode::uint(&mut self.buf, item.len() as u64);
        self.buf.put_slice(item);
    }

    fn switch_to(&mut self, channel: u64) {
        match self.last {
            None => {
                self.buf.put_u8(0);
                self.buf.put_u8(TYPE_BATCH as u8);
                encode::uint(&mut self.buf, channel);
            }
            Some(c) if c == channel => {}
            Some(_) => {
                self.buf.put_u8(0);
                encode::uint(&mut self.buf, channel);
            }
        }
        self.last = Some(channel);
    }

    /// Takes the finished frame, leaving the writer empty; `None` when there is no item.
    pub fn take(&mut self) -> Option<BytesMut> {
        self.last.take()?;
        Some(self.buf.split())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corenet_codec::{decode_exact, to_vec};
    use proptest::prelude::*;

    fn open_strategy() -> impl Strategy<Value = (u64, String, Vec<u8>, Vec<u8>)> {
        (
            0..=MAX_SAFE_INTEGER,
            ".{0,40}",
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::collection::vec(any::<u8>(), 0..40),
        )
    }

    fn items_strategy() -> impl Strategy<Value = Vec<(u64, Vec<u8>)>> {
        proptest::collection::vec(
            (
                prop_oneof![0..4u64, 0..=MAX_SAFE_INTEGER],
                proptest::collection::vec(any::<u8>(), 1..300),
            ),
            0..12,
        )
    }

    /// Every truncation of a message whose last field has a known length fails.
    fn assert_truncations_fail<'a, T: Decode<'a> + std::fmt::Debug>(bytes: &'a [u8]) {
        for cut in 0..bytes.len() {
            assert!(
                decode_exact::<T>(&bytes[..cut]).is_err(),
                "a truncation to {cut} bytes decoded"
            );
        }
    }

    proptest! {
        #[test]
        fn header_round_trips(channel in 0..=MAX_SAFE_INTEGER, ty in 0..=MAX_SAFE_INTEGER) {
            let h = Header { channel, message_type: ty };
            let bytes = to_vec(&h);
            prop_assert_eq!(bytes.len(), h.encoded_len());
            prop_assert_eq!(decode_exact::<Header>(&bytes)?, h);
            assert_truncations_fail::<Header>(&bytes);
        }

        #[test]
        fn open_round_trips((local_id, protocol, id, hs) in open_strategy()) {
            let open = Open { local_id, protocol: protocol.as_str().into(), id: &id, handshake: &hs };
            let frame = ControlFrame(Control::Open(open.clone()));
            let bytes = to_vec(&frame);
            prop_assert_eq!(bytes.len(), frame.encoded_len());
            prop_assert_eq!(&bytes[..2], &[0, 1]);
            prop_assert_eq!(decode_exact::<ControlFrame<'_>>(&bytes)?, frame);
            // The handshake is the rest of the message, so a cut inside it still decodes
            // (with a shorter handshake); a cut before it never does.
            let fixed = bytes.len() - hs.len();
            for cut in 0..fixed {
                prop_assert!(decode_exact::<ControlFrame<'_>>(&bytes[..cut]).is_err());
            }
            for cut in fixed..bytes.len() {
                let ControlFrame(Control::Open(o)) = decode_exact::<ControlFrame<'_>>(&bytes[..cut])? else {
                    panic!("not an open");
                };
                prop_assert_eq!(o.handshake, &hs[..cut - fixed]);
            }
        }

        #[test]
        fn reject_and_close_round_trip(n in 0..=MAX_SAFE_INTEGER, close in any::<bool>()) {
            let c = if close { Control::Close { local_id: n } } else { Control::Reject { remote_id: n } };
            let frame = ControlFrame(c);
            let bytes = to_vec(&frame);
            prop_assert_eq!(bytes.len(), frame.encoded_len());
            prop_assert_eq!(decode_exact::<ControlFrame<'_>>(&bytes)?, frame);
            assert_truncations_fail::<ControlFrame<'_>>(&bytes);
        }

        #[test]
        fn batch_round_trips(items in items_strategy()) {
            let batch = Batch(items.iter().map(|(c, d)| BatchItem { channel: *c, data: d }).collect());
            let bytes = to_vec(&batch);
            prop_assert_eq!(bytes.len(), batch.encoded_len());
            let back: Vec<_> = BatchItems::new(&bytes).collect::<Result<_, _>>()?;
            prop_assert_eq!(&back, &batch.0);
            // A batch cut inside its channel ids or lengths fails; cut inside an item's data
            // it yields that item shortened (JS clamps the last item to the frame).
            for cut in 0..bytes.len() {
                let r: Result<Vec<_>, _> = BatchItems::new(&bytes[..cut]).collect();
                if let Ok(got) = r {
                    prop_assert!(got.len() <= batch.0.len());
                    for (g, want) in got.iter().zip(&batch.0) {
                        prop_assert_eq!(g.channel, want.channel);
                        prop_assert!(want.data.starts_with(g.data));
                    }
                }
            }
        }

        #[test]
        fn batch_writer_matches_the_batch_encoding(items in items_strategy()) {
            // Items as the writer takes them: the first byte of the data is a small type.
            let items: Vec<(u64, Vec<u8>)> = items
                .into_iter()
                .map(|(c, mut d)| { d[0] &= 0x7f; (c, d) })
                .collect();
            let mut w = BatchWriter::new();
            let batch = Batch(items.iter().map(|(c, d)| BatchItem { channel: *c, data: d }).collect());
            for (i, (c, d)) in items.iter().enumerate() {
                let before = w.len();
                let cost = w.item_cost(*c, d.len());
                if i % 2 == 0 {
                    w.push(*c, u64::from(d[0]), d.len() - 1, |b| b.put_slice(&d[1..]));
                } else {
                    w.push_raw(*c, d);
                }
                prop_assert_eq!(w.len(), before + cost);
                prop_assert_eq!(w.len(), 2 + Batch(batch.0[..=i].to_vec()).encoded_len());
            }
            match w.take() {
                None => prop_assert!(items.is_empty()),
                Some(frame) => {
                    let mut expect = vec![0u8, 0];
                    batch.encode(&mut expect);
                    prop_assert_eq!(&frame[..], &expect[..]);
                    let ControlFrame(Control::Batch(body)) = decode_exact::<ControlFrame<'_>>(&frame)? else {
                        panic!("not a batch");
                    };
                    let back: Vec<_> = BatchItems::new(body).collect::<Result<_, _>>()?;
                    prop_assert_eq!(back, batch.0);
                }
            }
            prop_assert!(w.is_empty());
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_exact::<ControlFrame<'_>>(&bytes);
            let _ = decode_exact::<Header>(&bytes);
            for item in BatchItems::new(&bytes) {
                let _ = item;
            }
        }
    }

    #[test]
    fn unsafe_integers_are_refused_like_js() {
        // 0xff + uint64 2^53
        let mut bytes = vec![0xff];
        bytes.extend_from_slice(&(1u64 << 53).to_le_bytes());
        bytes.push(0);
        assert!(decode_exact::<Header>(&bytes).is_err());
        let mut ok = vec![0xff];
        ok.extend_from_slice(&MAX_SAFE_INTEGER.to_le_bytes());
        ok.push(0);
        assert_eq!(
            decode_exact::<Header>(&ok).unwrap(),
            Header {
                channel: MAX_SAFE_INTEGER,
                message_type: 0
            }
        );
    }

    #[test]
    fn invalid_utf8_protocol_names_decode_lossily() {
        let bytes = [0, 1, 1, 2, 0xff, 0xff, 0];
        let ControlFrame(Control::Open(o)) = decode_exact::<ControlFrame<'_>>(&bytes).unwrap()
        else {
            panic!("not an open")
        };
        assert_eq!(o.protocol, "\u{fffd}\u{fffd}");
    }

    #[test]
    fn known_bytes() {
        // What JS protomux writes for `open` of protocol "foo" with local id 1 and no id.
        let open = ControlFrame(Control::Open(Open {
            local_id: 1,
            protocol: "foo".into(),
            id: &[],
            handshake: &[],
        }));
        assert_eq!(to_vec(&open), hex::decode("00010103666f6f00").unwrap());
        assert_eq!(
            to_vec(&ControlFrame(Control::Close { local_id: 1 })),
            [0, 3, 1]
        );
        assert_eq!(
            to_vec(&ControlFrame(Control::Reject { remote_id: 2 })),
            [0, 2, 2]
        );
        // A batch of two messages on channel 1, then one on channel 2.
        let batch = Batch(vec![
            BatchItem {
                channel: 1,
                data: &[0, 0xaa],
            },
            BatchItem {
                channel: 1,
                data: &[1],
            },
            BatchItem {
                channel: 2,
                data: &[0, 0xbb],
            },
        ]);
        assert_eq!(
            to_vec(&ControlFrame(Control::Batch(&to_vec(&batch)))),
            [0, 0, 1, 2, 0, 0xaa, 1, 1, 0, 2, 2, 0, 0xbb]
        );
        // A nested batch and a clamped last item, both of which JS accepts.
        let items: Vec<_> = BatchItems::new(&[1, 10, 0]).collect();
        assert_eq!(
            items,
            vec![Ok(BatchItem {
                channel: 1,
                data: &[0]
            })]
        );
    }
}
