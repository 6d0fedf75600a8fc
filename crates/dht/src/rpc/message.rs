//! dht-rpc datagrams: requests (`0x03`) and responses (`0x13`).
//!
//! ```text
//! request:  0x03 | u8 flags | u16le tid | ipv4 to | [fixed32 id] | [fixed32 token]
//!           | uint command | [fixed32 target] | [buffer value]
//!   flags: 0x01 id, 0x02 token, 0x04 internal, 0x08 target, 0x10 value
//! response: 0x13 | u8 flags | u16le tid | ipv4 to | [fixed32 id] | [fixed32 token]
//!           | [array(ipv4) closerNodes] | [uint error] | [buffer value]
//!   flags: 0x01 id, 0x02 token, 0x04 closerNodes, 0x08 error, 0x10 value
//! ```
//! Decoders ignore trailing bytes, as the JS ones do.

use std::net::SocketAddrV4;

use bytes::{BufMut, Bytes};
use corenet_codec::{encode, to_bytes, DecodeError, Decoder, Encode};

use super::id::NodeId;

/// First byte of a request: `(0 << 4) | VERSION`.
pub const REQUEST_ID: u8 = 0x03;
/// First byte of a response: `(1 << 4) | VERSION`.
pub const RESPONSE_ID: u8 = 0x13;

/// Longest `closerNodes` list we accept (JS sends at most 20).
pub const MAX_CLOSER_NODES: usize = 64;

const F_ID: u8 = 0x01;
const F_TOKEN: u8 = 0x02;
const F_INTERNAL: u8 = 0x04;
const F_TARGET: u8 = 0x08;
const F_VALUE: u8 = 0x10;
const F_CLOSER: u8 = 0x04;
const F_ERROR: u8 = 0x08;

/// dht-rpc internal commands (flag `internal` set).
pub mod internal {
    /// Liveness check; empty reply.
    pub const PING: u64 = 0;
    /// Reply to the sender's host at the port in the value (reachability test).
    pub const PING_NAT: u64 = 1;
    /// Closer nodes to the target.
    pub const FIND_NODE: u64 = 2;
    /// "This node did not answer me": the receiver may check it.
    pub const DOWN_HINT: u64 = 3;
    /// Reply after the delay (u32le ms) in the value.
    pub const DELAYED_PING: u64 = 4;
}

/// dht-rpc error codes carried in responses.
pub mod errors {
    /// The command is not known (or the node does not serve it).
    pub const UNKNOWN_COMMAND: u64 = 1;
    /// The request's token was not issued by this node (recently) for this host.
    pub const INVALID_TOKEN: u64 = 2;
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Transaction id, echoed by the response.
    pub tid: u16,
    /// The address the sender sent this to (a sample of our public address).
    pub to: SocketAddrV4,
    /// The sender's id, if it claims to be persistent.
    pub id: Option<NodeId>,
    /// A token we issued earlier, echoed back.
    pub token: Option<[u8; 32]>,
    /// An internal (dht-rpc) command rather than a user (hyperdht) one.
    pub internal: bool,
    /// The command number.
    pub command: u64,
    /// The target key.
    pub target: Option<[u8; 32]>,
    /// The value.
    pub value: Option<Bytes>,
}

/// A decoded response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The request's transaction id.
    pub tid: u16,
    /// The requester's address as the responder saw it.
    pub to: SocketAddrV4,
    /// The responder's id, if persistent.
    pub id: Option<NodeId>,
    /// A token to use in a later write to this node.
    pub token: Option<[u8; 32]>,
    /// Nodes closer to the request's target.
    pub closer_nodes: Vec<SocketAddrV4>,
    /// Error code; 0 means success.
    pub error: u64,
    /// The value.
    pub value: Option<Bytes>,
}

impl Default for Response {
    fn default() -> Self {
        Response {
            tid: 0,
            to: SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0),
            id: None,
            token: None,
            closer_nodes: Vec::new(),
            error: 0,
            value: None,
        }
    }
}

impl Default for Request {
    fn default() -> Self {
        Request {
            tid: 0,
            to: SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0),
            id: None,
            token: None,
            internal: false,
            command: 0,
            target: None,
            value: None,
        }
    }
}

/// A datagram of the dht-rpc protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

/// Reads the field a flag bit announces, if it is set.
fn if_flag<T>(
    flags: u64,
    bit: u8,
    read: impl FnOnce() -> Result<T, DecodeError>,
) -> Result<Option<T>, DecodeError> {
    if flags & u64::from(bit) != 0 {
        read().map(Some)
    } else {
        Ok(None)
    }
}

/// What both datagrams start with after their type byte: flags, transaction id, the
/// receiver's address as the sender sees it, and the optional node id and token.
struct Header {
    flags: u64,
    tid: u16,
    to: SocketAddrV4,
    id: Option<NodeId>,
    token: Option<[u8; 32]>,
}

impl Header {
    /// Encoded size, flags byte included, type byte excluded.
    fn encoded_len(id: &Option<NodeId>, token: &Option<[u8; 32]>) -> usize {
        1 + 2 + 6 + id.map_or(0, |_| 32) + token.map_or(0, |_| 32)
    }

    /// Writes the type byte and the header; `flags` holds the type's own bits, the id and
    /// token bits are added here.
    #[allow(clippy::too_many_arguments)]
    fn encode(
        out: &mut impl BufMut,
        type_id: u8,
        mut flags: u8,
        tid: u16,
        to: &SocketAddrV4,
        id: &Option<NodeId>,
        token: &Option<[u8; 32]>,
    ) {
        if id.is_some() {
            flags |= F_ID;
        }
        if token.is_some() {
            flags |= F_TOKEN;
        }
        out.put_u8(type_id);
        out.put_u8(flags);
        out.put_u16_le(tid);
        encode::ipv4_address(out, to);
        if let Some(id) = id {
            out.put_slice(&id.0);
        }
        if let Some(t) = token {
            out.put_slice(t);
        }
    }

    fn decode(d: &mut Decoder<'_>) -> Result<Header, DecodeError> {
        let flags = d.uint()?;
        let tid = d.u16()?;
        let to = d.ipv4_address()?;
        let id = if_flag(flags, F_ID, || d.fixed().map(NodeId))?;
        let token = if_flag(flags, F_TOKEN, || d.fixed())?;
        Ok(Header {
            flags,
            tid,
            to,
            id,
            token,
        })
    }
}

impl Encode for Request {
    fn encoded_len(&self) -> usize {
        1 + Header::encoded_len(&self.id, &self.token)
            + encode::uint_len(self.command)
            + self.target.map_or(0, |_| 32)
            + self
                .value
                .as_ref()
                .map_or(0, |v| encode::buffer_len(v.len()))
    }

    fn encode<B: BufMut>(&self, out: &mut B) {
        let mut flags = 0u8;
        if self.internal {
            flags |= F_INTERNAL;
        }
        if self.target.is_some() {
            flags |= F_TARGET;
        }
        if self.value.is_some() {
            flags |= F_VALUE;
        }
        Header::encode(
            out,
            REQUEST_ID,
            flags,
            self.tid,
            &self.to,
            &self.id,
            &self.token,
        );
        encode::uint(out, self.command);
        if let Some(t) = &self.target {
            out.put_slice(t);
        }
        if let Some(v) = &self.value {
            encode::buffer(out, v);
        }
    }
}

impl Request {
    /// The datagram as bytes.
    pub fn to_bytes(&self) -> Bytes {
        to_bytes(self)
    }

    fn decode_body(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let h = Header::decode(d)?;
        let command = d.uint()?;
        let target = if_flag(h.flags, F_TARGET, || d.fixed())?;
        let value = if_flag(h.flags, F_VALUE, || d.bytes())?;
        Ok(Request {
            tid: h.tid,
            to: h.to,
            id: h.id,
            token: h.token,
            internal: h.flags & u64::from(F_INTERNAL) != 0,
            command,
            target,
            value,
        })
    }
}

impl Encode for Response {
    fn encoded_len(&self) -> usize {
        1 + Header::encoded_len(&self.id, &self.token)
            + if self.closer_nodes.is_empty() {
                0
            } else {
                encode::array_len(self.closer_nodes.len()) + 6 * self.closer_nodes.len()
            }
            + if self.error > 0 {
                encode::uint_len(self.error)
            } else {
                0
            }
            + self
                .value
                .as_ref()
                .map_or(0, |v| encode::buffer_len(v.len()))
    }

    /// An empty `closer_nodes` list and error 0 are omitted, as JS does.
    fn encode<B: BufMut>(&self, out: &mut B) {
        let mut flags = 0u8;
        if !self.closer_nodes.is_empty() {
            flags |= F_CLOSER;
        }
        if self.error > 0 {
            flags |= F_ERROR;
        }
        if self.value.is_some() {
            flags |= F_VALUE;
        }
        Header::encode(
            out,
            RESPONSE_ID,
            flags,
            self.tid,
            &self.to,
            &self.id,
            &self.token,
        );
        if !self.closer_nodes.is_empty() {
            encode::uint(out, self.closer_nodes.len() as u64);
            for n in &self.closer_nodes {
                encode::ipv4_address(out, n);
            }
        }
        if self.error > 0 {
            encode::uint(out, self.error);
        }
        if let Some(v) = &self.value {
            encode::buffer(out, v);
        }
    }
}

impl Response {
    /// The datagram as bytes.
    pub fn to_bytes(&self) -> Bytes {
        to_bytes(self)
    }

    fn decode_body(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let h = Header::decode(d)?;
        let closer_nodes = if_flag(h.flags, F_CLOSER, || {
            let n = d.array_len(6)?;
            if n > MAX_CLOSER_NODES {
                return Err(DecodeError::TooLarge {
                    what: "closerNodes",
                    len: n as u64,
                    max: MAX_CLOSER_NODES as u64,
                });
            }
            (0..n).map(|_| d.ipv4_address()).collect()
        })?
        .unwrap_or_default();
        let error = if_flag(h.flags, F_ERROR, || d.uint())?.unwrap_or(0);
        let value = if_flag(h.flags, F_VALUE, || d.bytes())?;
        Ok(Response {
            tid: h.tid,
            to: h.to,
            id: h.id,
            token: h.token,
            closer_nodes,
            error,
            value,
        })
    }
}

impl Message {
    /// Decodes a datagram. Bytes other than `0x03`/`0x13` at the start are
    /// [`DecodeError::Invalid`]: the socket hands only dht-rpc datagrams here.
    pub fn decode(datagram: &[u8]) -> Result<Message, DecodeError> {
        let mut d = Decoder::new(datagram);
        match d.u8()? {
            REQUEST_ID => Request::decode_body(&mut d).map(Message::Request),
            RESPONSE_ID => Response::decode_body(&mut d).map(Message::Response),
            _ => Err(DecodeError::Invalid("not a dht-rpc datagram")),
        }
    }

    /// Decodes from [`Bytes`], sharing the storage of values.
    pub fn decode_bytes(datagram: &Bytes) -> Result<Message, DecodeError> {
        let mut d = Decoder::from_bytes(datagram);
        match d.u8()? {
            REQUEST_ID => Request::decode_body(&mut d).map(Message::Request),
            RESPONSE_ID => Response::decode_body(&mut d).map(Message::Response),
            _ => Err(DecodeError::Invalid("not a dht-rpc datagram")),
        }
    }

    /// The encoded datagram.
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn addr(a: [u8; 4], p: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(a), p)
    }

    #[test]
    fn captured_js_datagrams_decode() {
        // docs/protocol/dht.md 1.10: a PING request and a FIND_NODE reply from a JS node.
        let ping = hex::decode("03043412").unwrap();
        let mut ping = ping;
        ping.extend_from_slice(&[0x7f, 0, 0, 1, 0x4a, 0xc2, 0x00]);
        match Message::decode(&ping).unwrap() {
            Message::Request(r) => {
                assert_eq!(r.tid, 0x1234);
                assert!(r.internal);
                assert_eq!(r.command, internal::PING);
                assert_eq!(r.to, addr([127, 0, 0, 1], 49738));
                assert_eq!(Message::Request(r).to_bytes().as_ref(), &ping[..]);
            }
            m => panic!("{m:?}"),
        }
        let id = NodeId::from_addr(&addr([127, 0, 0, 1], 49738));
        let mut reply = vec![0x13, 0x05, 0x35, 0x12, 0x7f, 0, 0, 1, 0xc5, 0x92];
        reply.extend_from_slice(&id.0);
        reply.extend_from_slice(&[0x01, 0x7f, 0, 0, 1, 0x4b, 0xc2]);
        match Message::decode(&reply).unwrap() {
            Message::Response(r) => {
                assert_eq!(r.tid, 0x1235);
                assert_eq!(r.id, Some(id));
                assert_eq!(r.closer_nodes, vec![addr([127, 0, 0, 1], 49739)]);
                assert_eq!(r.error, 0);
                assert_eq!(Message::Response(r).to_bytes().as_ref(), &reply[..]);
            }
            m => panic!("{m:?}"),
        }
    }

    #[test]
    fn a_response_with_65_closer_nodes_is_refused() {
        let response = |n: usize| Response {
            tid: 7,
            to: addr([10, 0, 0, 1], 49737),
            closer_nodes: (0..n).map(|i| addr([10, 1, 0, i as u8], 49737)).collect(),
            ..Default::default()
        };
        let at_cap = response(MAX_CLOSER_NODES).to_bytes();
        assert!(matches!(
            Message::decode(&at_cap),
            Ok(Message::Response(r)) if r.closer_nodes.len() == MAX_CLOSER_NODES
        ));
        let over = response(MAX_CLOSER_NODES + 1).to_bytes();
        assert_eq!(
            Message::decode(&over),
            Err(DecodeError::TooLarge {
                what: "closerNodes",
                len: MAX_CLOSER_NODES as u64 + 1,
                max: MAX_CLOSER_NODES as u64,
            })
        );
    }

    fn arb_addr() -> impl Strategy<Value = SocketAddrV4> {
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(a, p)| addr(a, p))
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        (
            any::<u16>(),
            arb_addr(),
            proptest::option::of(any::<[u8; 32]>()),
            proptest::option::of(any::<[u8; 32]>()),
            any::<bool>(),
            0u64..100_000,
            proptest::option::of(any::<[u8; 32]>()),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
        )
            .prop_map(
                |(tid, to, id, token, internal, command, target, value)| Request {
                    tid,
                    to,
                    id: id.map(NodeId),
                    token,
                    internal,
                    command,
                    target,
                    value: value.map(Bytes::from),
                },
            )
    }

    fn arb_response() -> impl Strategy<Value = Response> {
        (
            any::<u16>(),
            arb_addr(),
            proptest::option::of(any::<[u8; 32]>()),
            proptest::option::of(any::<[u8; 32]>()),
            proptest::collection::vec(arb_addr(), 0..21),
            prop_oneof![Just(0u64), 1u64..1000],
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
        )
            .prop_map(
                |(tid, to, id, token, closer_nodes, error, value)| Response {
                    tid,
                    to,
                    id: id.map(NodeId),
                    token,
                    closer_nodes,
                    error,
                    value: value.map(Bytes::from),
                },
            )
    }

    proptest! {
        #[test]
        fn request_round_trip(r in arb_request()) {
            let b = r.to_bytes();
            prop_assert_eq!(b.len(), r.encoded_len());
            prop_assert_eq!(Message::decode(&b).unwrap(), Message::Request(r.clone()));
            prop_assert_eq!(Message::decode_bytes(&b).unwrap(), Message::Request(r));
            for cut in 0..b.len() {
                prop_assert!(Message::decode(&b[..cut]).is_err());
            }
        }

        #[test]
        fn response_round_trip(r in arb_response()) {
            let b = r.to_bytes();
            prop_assert_eq!(b.len(), r.encoded_len());
            prop_assert_eq!(Message::decode(&b).unwrap(), Message::Response(r));
            for cut in 0..b.len() {
                prop_assert!(Message::decode(&b[..cut]).is_err());
            }
        }

        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Message::decode(&b);
        }
    }
}
