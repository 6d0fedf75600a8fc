//! hyperdht's message encodings (`lib/messages.js`), byte for byte.

use std::net::{Ipv6Addr, SocketAddrV4, SocketAddrV6};

use bytes::{BufMut, Bytes};
use corenet_codec::{encode, Decode, DecodeError, Decoder, Encode, PublicKey};

/// Most relay addresses a stored record keeps.
pub const MAX_RELAY_ADDRESSES: usize = 3;
/// Longest address list we decode: compact-encoding's array limit, as in JS. A list's
/// allocation is bounded by the input anyway (every length is checked against the bytes
/// left), and a stored record keeps only [`MAX_RELAY_ADDRESSES`] relays, so an announce
/// with many relays verifies and is stored with the first three, as JS does.
pub const MAX_ADDRESSES: usize = 0x10_0000;

fn addrs_len(v: &[SocketAddrV4]) -> usize {
    encode::array_len(v.len()) + 6 * v.len()
}

fn put_addrs(out: &mut impl BufMut, v: &[SocketAddrV4]) {
    encode::uint(out, v.len() as u64);
    for a in v {
        encode::ipv4_address(out, a);
    }
}

fn get_addrs(d: &mut Decoder<'_>) -> Result<Vec<SocketAddrV4>, DecodeError> {
    let n = d.array_len(6)?;
    if n > MAX_ADDRESSES {
        return Err(DecodeError::TooLarge {
            what: "address list",
            len: n as u64,
            max: MAX_ADDRESSES as u64,
        });
    }
    (0..n).map(|_| d.ipv4_address()).collect()
}

fn put_addr6(out: &mut impl BufMut, a: &SocketAddrV6) {
    out.put_slice(&a.ip().octets());
    out.put_u16_le(a.port());
}

fn get_addr6(d: &mut Decoder<'_>) -> Result<SocketAddrV6, DecodeError> {
    let ip: [u8; 16] = d.fixed()?;
    let port = d.u16()?;
    Ok(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0))
}

/// A peer record: who, and the nodes that relay handshakes to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRecord {
    /// The peer's public key.
    pub public_key: PublicKey,
    /// Addresses of DHT nodes that forward handshakes to it (and possibly its own).
    pub relay_addresses: Vec<SocketAddrV4>,
}

impl Encode for PeerRecord {
    fn encoded_len(&self) -> usize {
        32 + addrs_len(&self.relay_addresses)
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        out.put_slice(self.public_key.as_bytes());
        put_addrs(out, &self.relay_addresses);
    }
}

impl<'a> Decode<'a> for PeerRecord {
    fn decode(d: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        Ok(PeerRecord {
            public_key: PublicKey(d.fixed()?),
            relay_addresses: get_addrs(d)?,
        })
    }
}

/// The value of a LOOKUP reply: records (each already encoded) and the newest bump.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LookupReply {
    /// Peer records.
    pub peers: Vec<PeerRecord>,
    /// The highest bump announced for the target (always encoded, even when 0).
    pub bump: u64,
}

impl Encode for LookupReply {
    fn encoded_len(&self) -> usize {
        encode::array_len(self.peers.len())
            + self.peers.iter().map(Encode::encoded_len).sum::<usize>()
            + encode::uint_len(self.bump)
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::uint(out, self.peers.len() as u64);
        for p in &self.peers {
            p.encode(out);
        }
        encode::uint(out, self.bump);
    }
}

impl<'a> Decode<'a> for LookupReply {
    fn decode(d: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        let n = d.array_len(33)?;
        let mut peers = Vec::with_capacity(n);
        for _ in 0..n {
            peers.push(PeerRecord::decode(d)?);
        }
        let bump = if d.is_empty() { 0 } else { d.uint()? };
        Ok(LookupReply { peers, bump })
    }
}

/// The value of ANNOUNCE and UNANNOUNCE requests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Announce {
    /// The record to store.
    pub peer: Option<PeerRecord>,
    /// A refresh-chain hash.
    pub refresh: Option<[u8; 32]>,
    /// Ed25519 signature over the announce signable.
    pub signature: Option<[u8; 64]>,
    /// A client-chosen freshness number (not signed); 0 is absent.
    pub bump: u64,
}

impl Encode for Announce {
    fn encoded_len(&self) -> usize {
        1 + self.peer.as_ref().map_or(0, Encode::encoded_len)
            + self.refresh.map_or(0, |_| 32)
            + self.signature.map_or(0, |_| 64)
            + if self.bump != 0 {
                encode::uint_len(self.bump)
            } else {
                0
            }
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        let flags = u64::from(self.peer.is_some())
            | u64::from(self.refresh.is_some()) << 1
            | u64::from(self.signature.is_some()) << 2
            | u64::from(self.bump != 0) << 3;
        encode::uint(out, flags);
        if let Some(p) = &self.peer {
            p.encode(out);
        }
        if let Some(r) = &self.refresh {
            out.put_slice(r);
        }
        if let Some(s) = &self.signature {
            out.put_slice(s);
        }
        if self.bump != 0 {
            encode::uint(out, self.bump);
        }
    }
}

impl<'a> Decode<'a> for Announce {
    fn decode(d: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        let flags = d.uint()?;
        Ok(Announce {
            peer: if flags & 1 != 0 {
                Some(PeerRecord::decode(d)?)
            } else {
                None
            },
            refresh: if flags & 2 != 0 {
                Some(d.fixed()?)
            } else {
                None
            },
            signature: if flags & 4 != 0 {
                Some(d.fixed()?)
            } else {
                None
            },
            bump: if flags & 8 != 0 { d.uint()? } else { 0 },
        })
    }
}

/// `mutableSignable`: what a mutable record's signature covers (hashed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutableSignable<'a> {
    /// Sequence number.
    pub seq: u64,
    /// Value.
    pub value: &'a [u8],
}

impl Encode for MutableSignable<'_> {
    fn encoded_len(&self) -> usize {
        encode::uint_len(self.seq) + encode::buffer_len(self.value.len())
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::uint(out, self.seq);
        encode::buffer(out, self.value);
    }
}

/// The value of a MUTABLE_PUT request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutablePut {
    /// The signer.
    pub public_key: PublicKey,
    /// Sequence number.
    pub seq: u64,
    /// Value.
    pub value: Bytes,
    /// Signature.
    pub signature: [u8; 64],
}

impl Encode for MutablePut {
    fn encoded_len(&self) -> usize {
        32 + encode::uint_len(self.seq) + encode::buffer_len(self.value.len()) + 64
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        out.put_slice(self.public_key.as_bytes());
        encode::uint(out, self.seq);
        encode::buffer(out, &self.value);
        out.put_slice(&self.signature);
    }
}

impl<'a> Decode<'a> for MutablePut {
    fn decode(d: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        Ok(MutablePut {
            public_key: PublicKey(d.fixed()?),
            seq: d.uint()?,
            value: d.bytes()?,
            signature: d.fixed()?,
        })
    }
}

/// A stored mutable record, and the value of a MUTABLE_GET reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutableGet {
    /// Sequence number.
    pub seq: u64,
    /// Value.
    pub value: Bytes,
    /// Signature.
    pub signature: [u8; 64],
}

impl Encode for MutableGet {
    fn encoded_len(&self) -> usize {
        encode::uint_len(self.seq) + encode::buffer_len(self.value.len()) + 64
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::uint(out, self.seq);
        encode::buffer(out, &self.value);
        out.put_slice(&self.signature);
    }
}

impl<'a> Decode<'a> for MutableGet {
    fn decode(d: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        Ok(MutableGet {
            seq: d.uint()?,
            value: d.bytes()?,
            signature: d.fixed()?,
        })
    }
}

/// Handshake and holepunch routing modes.
pub mod mode {
    /// From the connecting client to a relay (or the server).
    pub const FROM_CLIENT: u64 = 0;
    /// From the server back to a relay.
    pub const FROM_SERVER: u64 = 1;
    /// From a relay to the server.
    pub const FROM_RELAY: u64 = 2;
    /// From a relay to a second relay that knows the server.
    pub const FROM_SECOND_RELAY: u64 = 3;
    /// The final answer to the client.
    pub const REPLY: u64 = 4;
}

/// The value of a PEER_HANDSHAKE request or response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeMessage {
    /// Routing mode ([`mode`]).
    pub mode: u64,
    /// The Noise message.
    pub noise: Bytes,
    /// The client (toward the server) or the server (toward the client), as a relay saw it.
    pub peer_address: Option<SocketAddrV4>,
    /// The relay that sent a FROM_SECOND_RELAY.
    pub relay_address: Option<SocketAddrV4>,
}

impl Encode for HandshakeMessage {
    fn encoded_len(&self) -> usize {
        1 + encode::uint_len(self.mode)
            + encode::buffer_len(self.noise.len())
            + self.peer_address.map_or(0, |_| 6)
            + self.relay_address.map_or(0, |_| 6)
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        let flags =
            u64::from(self.peer_address.is_some()) | u64::from(self.relay_address.is_some()) << 1;
        encode::uint(out, flags);
        encode::uint(out, self.mode);
        encode::buffer(out, &self.noise);
        if let Some(a) = &self.peer_address {
            encode::ipv4_address(out, a);
        }
        if let Some(a) = &self.relay_address {
            encode::ipv4_address(out, a);
        }
    }
}

impl<'a> Decode<'a> for HandshakeMessage {
    fn decode(d: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        let flags = d.uint()?;
        Ok(HandshakeMessage {
            mode: d.uint()?,
            noise: d.bytes()?,
            peer_address: if flags & 1 != 0 {
                Some(d.ipv4_address()?)
            } else {
                None
            },
            relay_address: if flags & 2 != 0 {
                Some(d.ipv4_address()?)
            } else {
                None
            },
        })
    }
}

/// The value of a PEER_HOLEPUNCH request or response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolepunchMessage {
    /// Routing mode.
    pub mode: u64,
    /// The server's holepunch slot.
    pub id: u64,
    /// The encrypted [`HolepunchPayload`].
    pub payload: Bytes,
    /// As in [`HandshakeMessage::peer_address`].
    pub peer_address: Option<SocketAddrV4>,
}

impl Encode for HolepunchMessage {
    fn encoded_len(&self) -> usize {
        1 + encode::uint_len(self.mode)
            + encode::uint_len(self.id)
            + encode::buffer_len(self.payload.len())
            + self.peer_address.map_or(0, |_| 6)
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::uint(out, u64::from(self.peer_address.is_some()));
        encode::uint(out, self.mode);
        encode::uint(out, self.id);
        encode::buffer(out, &self.payload);
        if let Some(a) = &self.peer_address {
            encode::ipv4_address(out, a);
        }
    }
}

impl<'a> Decode<'a> for HolepunchMessage {
    fn decode(d: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        let flags = d.uint()?;
        Ok(HolepunchMessage {
            mode: d.uint()?,
            id: d.uint()?,
            payload: d.bytes()?,
            peer_address: if flags & 1 != 0 {
                Some(d.ipv4_address()?)
            } else {
                None
            },
        })
    }
}

/// A relay the server is announced at, and the server's address as that relay sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayInfo {
    /// The relay.
    pub relay_address: SocketAddrV4,
    /// The server as the relay sees it.
    pub peer_address: SocketAddrV4,
}

/// Holepunch information in the server's Noise payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolepunchInfo {
    /// The server's holepunch slot.
    pub id: u64,
    /// Its relays.
    pub relays: Vec<RelayInfo>,
}

/// UDX stream information in a Noise payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdxInfo {
    /// Format version (1).
    pub version: u64,
    /// The sender can reuse its socket for the stream.
    pub reusable_socket: bool,
    /// The sender's UDX stream id.
    pub id: u64,
    /// Unused; 0.
    pub seq: u64,
}

/// A blind-relay request in a Noise payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayThrough {
    /// Format version (1).
    pub version: u64,
    /// The relay's public key.
    pub public_key: PublicKey,
    /// The pairing token.
    pub token: [u8; 32],
}

/// Firewall classes.
pub mod firewall {
    /// Unknown (or not reachable).
    pub const UNKNOWN: u64 = 0;
    /// Reachable at the advertised address.
    pub const OPEN: u64 = 1;
    /// Behind a NAT with a consistent mapping.
    pub const CONSISTENT: u64 = 2;
    /// Behind a NAT that randomizes ports.
    pub const RANDOM: u64 = 3;
}

/// Error codes in Noise and holepunch payloads.
pub mod error {
    /// No error.
    pub const NONE: u64 = 0;
    /// The handshake was aborted.
    pub const ABORTED: u64 = 1;
    /// Incompatible payload version.
    pub const VERSION_MISMATCH: u64 = 2;
    /// Busy; retry later.
    pub const TRY_LATER: u64 = 3;
    /// MUTABLE_PUT: same seq, different value.
    pub const SEQ_REUSED: u64 = 16;
    /// MUTABLE_PUT: seq lower than stored.
    pub const SEQ_TOO_LOW: u64 = 17;
}

/// The plaintext carried inside each Noise handshake message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoisePayload {
    /// Format version; only 1 is understood (other versions decode with every field empty).
    pub version: u64,
    /// [`error`] code.
    pub error: u64,
    /// [`firewall`] class.
    pub firewall: u64,
    /// Holepunch information (servers that are not OPEN).
    pub holepunch: Option<HolepunchInfo>,
    /// IPv4 addresses the sender can be reached at.
    pub addresses4: Vec<SocketAddrV4>,
    /// IPv6 addresses.
    pub addresses6: Vec<SocketAddrV6>,
    /// The sender's UDX stream.
    pub udx: Option<UdxInfo>,
    /// The sender speaks secret-stream (version 1).
    pub secret_stream: Option<u64>,
    /// Blind-relay request.
    pub relay_through: Option<RelayThrough>,
    /// Relays the server is announced at.
    pub relay_addresses: Option<Vec<SocketAddrV4>>,
}

impl Default for NoisePayload {
    fn default() -> Self {
        NoisePayload {
            version: 1,
            error: error::NONE,
            firewall: firewall::UNKNOWN,
            holepunch: None,
            addresses4: Vec::new(),
            addresses6: Vec::new(),
            udx: None,
            secret_stream: None,
            relay_through: None,
            relay_addresses: None,
        }
    }
}

impl Encode for NoisePayload {
    fn encoded_len(&self) -> usize {
        let mut n = 1
            + encode::uint_len(self.flags())
            + encode::uint_len(self.error)
            + encode::uint_len(self.firewall);
        if let Some(h) = &self.holepunch {
            n += encode::uint_len(h.id) + encode::array_len(h.relays.len()) + 12 * h.relays.len();
        }
        if !self.addresses4.is_empty() {
            n += addrs_len(&self.addresses4);
        }
        if !self.addresses6.is_empty() {
            n += encode::array_len(self.addresses6.len()) + 18 * self.addresses6.len();
        }
        if let Some(u) = &self.udx {
            n += 2 + encode::uint_len(u.id) + encode::uint_len(u.seq);
        }
        if self.secret_stream.is_some() {
            n += 1;
        }
        if self.relay_through.is_some() {
            n += 2 + 64;
        }
        if let Some(r) = &self.relay_addresses {
            n += addrs_len(r);
        }
        n
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::uint(out, 1);
        encode::uint(out, self.flags());
        encode::uint(out, self.error);
        encode::uint(out, self.firewall);
        if let Some(h) = &self.holepunch {
            encode::uint(out, h.id);
            encode::uint(out, h.relays.len() as u64);
            for r in &h.relays {
                encode::ipv4_address(out, &r.relay_address);
                encode::ipv4_address(out, &r.peer_address);
            }
        }
        if !self.addresses4.is_empty() {
            put_addrs(out, &self.addresses4);
        }
        if !self.addresses6.is_empty() {
            encode::uint(out, self.addresses6.len() as u64);
            for a in &self.addresses6 {
                put_addr6(out, a);
            }
        }
        if let Some(u) = &self.udx {
            encode::uint(out, 1);
            encode::uint(out, u64::from(u.reusable_socket));
            encode::uint(out, u.id);
            encode::uint(out, u.seq);
        }
        if self.secret_stream.is_some() {
            encode::uint(out, 1);
        }
        if let Some(r) = &self.relay_through {
            encode::uint(out, 1);
            encode::uint(out, 0);
            out.put_slice(r.public_key.as_bytes());
            out.put_slice(&r.token);
        }
        if let Some(r) = &self.relay_addresses {
            put_addrs(out, r);
        }
    }
}

impl NoisePayload {
    fn flags(&self) -> u64 {
        u64::from(self.holepunch.is_some())
            | u64::from(!self.addresses4.is_empty()) << 1
            | u64::from(!self.addresses6.is_empty()) << 2
            | u64::from(self.udx.is_some()) << 3
            | u64::from(self.secret_stream.is_some()) << 4
            | u64::from(self.relay_through.is_some()) << 5
            | u64::from(self.relay_addresses.is_some()) << 6
    }
}

impl<'a> Decode<'a> for NoisePayload {
    fn decode(d: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        let version = d.uint()?;
        if version != 1 {
            return Ok(NoisePayload {
                version,
                ..NoisePayload::default()
            });
        }
        let flags = d.uint()?;
        let error = d.uint()?;
        let firewall = d.uint()?;
        let holepunch = if flags & 1 != 0 {
            let id = d.uint()?;
            let n = d.array_len(12)?;
            if n > MAX_ADDRESSES {
                return Err(DecodeError::Invalid("too many holepunch relays"));
            }
            let mut relays = Vec::with_capacity(n);
            for _ in 0..n {
                relays.push(RelayInfo {
                    relay_address: d.ipv4_address()?,
                    peer_address: d.ipv4_address()?,
                });
            }
            Some(HolepunchInfo { id, relays })
        } else {
            None
        };
        let addresses4 = if flags & 2 != 0 {
            get_addrs(d)?
        } else {
            Vec::new()
        };
        let addresses6 = if flags & 4 != 0 {
            let n = d.array_len(18)?;
            if n > MAX_ADDRESSES {
                return Err(DecodeError::Invalid("too many IPv6 addresses"));
            }
            (0..n).map(|_| get_addr6(d)).collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        let udx = if flags & 8 != 0 {
            let version = d.uint()?;
            let features = d.uint()?;
            Some(UdxInfo {
                version,
                reusable_socket: features & 1 != 0,
                id: d.uint()?,
                seq: d.uint()?,
            })
        } else {
            None
        };
        let secret_stream = if flags & 16 != 0 {
            Some(d.uint()?)
        } else {
            None
        };
        let relay_through = if flags & 32 != 0 {
            let version = d.uint()?;
            let _flags = d.uint()?;
            Some(RelayThrough {
                version,
                public_key: PublicKey(d.fixed()?),
                token: d.fixed()?,
            })
        } else {
            None
        };
        let relay_addresses = if flags & 64 != 0 {
            Some(get_addrs(d)?)
        } else {
            None
        };
        Ok(NoisePayload {
            version,
            error,
            firewall,
            holepunch,
            addresses4,
            addresses6,
            udx,
            secret_stream,
            relay_through,
            relay_addresses,
        })
    }
}

/// The plaintext of an encrypted holepunch payload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HolepunchPayload {
    /// The sender is already connected.
    pub connected: bool,
    /// The sender is punching.
    pub punching: bool,
    /// [`error`] code.
    pub error: u64,
    /// [`firewall`] class.
    pub firewall: u64,
    /// Round number.
    pub round: u64,
    /// The sender's addresses.
    pub addresses: Option<Vec<SocketAddrV4>>,
    /// The receiver's address as the sender sees it.
    pub remote_address: Option<SocketAddrV4>,
    /// The sender's address token.
    pub token: Option<[u8; 32]>,
    /// The receiver's token, echoed.
    pub remote_token: Option<[u8; 32]>,
}

impl Encode for HolepunchPayload {
    fn encoded_len(&self) -> usize {
        encode::uint_len(self.flags())
            + encode::uint_len(self.error)
            + encode::uint_len(self.firewall)
            + encode::uint_len(self.round)
            + self.addresses.as_ref().map_or(0, |a| addrs_len(a))
            + self.remote_address.map_or(0, |_| 6)
            + self.token.map_or(0, |_| 32)
            + self.remote_token.map_or(0, |_| 32)
    }
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode::uint(out, self.flags());
        encode::uint(out, self.error);
        encode::uint(out, self.firewall);
        encode::uint(out, self.round);
        if let Some(a) = &self.addresses {
            put_addrs(out, a);
        }
        if let Some(a) = &self.remote_address {
            encode::ipv4_address(out, a);
        }
        if let Some(t) = &self.token {
            out.put_slice(t);
        }
        if let Some(t) = &self.remote_token {
            out.put_slice(t);
        }
    }
}

impl HolepunchPayload {
    fn flags(&self) -> u64 {
        u64::from(self.connected)
            | u64::from(self.punching) << 1
            | u64::from(self.addresses.is_some()) << 2
            | u64::from(self.remote_address.is_some()) << 3
            | u64::from(self.token.is_some()) << 4
            | u64::from(self.remote_token.is_some()) << 5
    }
}

impl<'a> Decode<'a> for HolepunchPayload {
    fn decode(d: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        let flags = d.uint()?;
        Ok(HolepunchPayload {
            connected: flags & 1 != 0,
            punching: flags & 2 != 0,
            error: d.uint()?,
            firewall: d.uint()?,
            round: d.uint()?,
            addresses: if flags & 4 != 0 {
                Some(get_addrs(d)?)
            } else {
                None
            },
            remote_address: if flags & 8 != 0 {
                Some(d.ipv4_address()?)
            } else {
                None
            },
            token: if flags & 16 != 0 {
                Some(d.fixed()?)
            } else {
                None
            },
            remote_token: if flags & 32 != 0 {
                Some(d.fixed()?)
            } else {
                None
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corenet_codec::{decode_exact, to_vec};
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn a(o: [u8; 4], p: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(o), p)
    }

    fn pk0() -> PublicKey {
        PublicKey::from_hex("3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29")
            .unwrap()
    }

    /// JS decodes a peer record with any number of relays (its array limit is 0x100000)
    /// and a persistent node stores the first three; we used to refuse more than 64.
    #[test]
    fn a_record_with_hundreds_of_relays_decodes() {
        let peer = PeerRecord {
            public_key: pk0(),
            relay_addresses: (0..500u16)
                .map(|i| a([10, 0, (i >> 8) as u8, i as u8], i))
                .collect(),
        };
        let bytes = to_vec(&peer);
        let back: PeerRecord = decode_exact(&bytes).unwrap();
        assert_eq!(back, peer);
        // A count larger than the input is still refused before anything is allocated.
        let mut lying = pk0().as_bytes().to_vec();
        lying.extend_from_slice(&[0xfe, 0x00, 0x00, 0x10, 0x00]); // 0x100000 addresses
        assert!(decode_exact::<PeerRecord>(&lying).is_err());
    }

    // docs/protocol/dht.md, Appendix A (computed with the JS encoders).
    #[test]
    fn js_vectors() {
        let peer = PeerRecord {
            public_key: pk0(),
            relay_addresses: vec![a([1, 2, 3, 4], 5678)],
        };
        let peer_hex = format!("{}01010203042e16", pk0());
        assert_eq!(hex::encode(to_vec(&peer)), peer_hex);
        let lr = LookupReply {
            peers: vec![peer.clone()],
            bump: 0,
        };
        assert_eq!(hex::encode(to_vec(&lr)), format!("01{peer_hex}00"));
        let hs = HandshakeMessage {
            mode: mode::FROM_RELAY,
            noise: Bytes::from_static(&[0xaa, 0xbb]),
            peer_address: Some(a([10, 0, 0, 1], 4000)),
            relay_address: None,
        };
        assert_eq!(hex::encode(to_vec(&hs)), "010202aabb0a000001a00f");
        let client = NoisePayload {
            addresses4: vec![a([192, 168, 1, 2], 49737)],
            udx: Some(UdxInfo {
                version: 1,
                reusable_socket: false,
                id: 0x1234_5678,
                seq: 0,
            }),
            secret_stream: Some(1),
            ..NoisePayload::default()
        };
        assert_eq!(
            hex::encode(to_vec(&client)),
            "011a000001c0a8010249c20100fe785634120001"
        );
        let server = NoisePayload {
            holepunch: Some(HolepunchInfo {
                id: 0,
                relays: vec![RelayInfo {
                    relay_address: a([5, 6, 7, 8], 49737),
                    peer_address: a([9, 9, 9, 9], 1234),
                }],
            }),
            udx: Some(UdxInfo {
                version: 1,
                reusable_socket: true,
                id: 7,
                seq: 0,
            }),
            secret_stream: Some(1),
            relay_addresses: Some(vec![a([5, 6, 7, 8], 49737)]),
            ..NoisePayload::default()
        };
        assert_eq!(
            hex::encode(to_vec(&server)),
            "0159000000010506070849c209090909d2040101070001010506070849c2"
        );
        let hp = HolepunchMessage {
            mode: mode::FROM_CLIENT,
            id: 3,
            payload: Bytes::from_static(&[1, 2, 3]),
            peer_address: Some(a([9, 9, 9, 9], 1234)),
        };
        assert_eq!(hex::encode(to_vec(&hp)), "0100030301020309090909d204");
        let hpp = HolepunchPayload {
            firewall: firewall::CONSISTENT,
            addresses: Some(vec![a([9, 9, 9, 9], 1234)]),
            remote_address: Some(a([5, 6, 7, 8], 80)),
            ..Default::default()
        };
        assert_eq!(
            hex::encode(to_vec(&hpp)),
            "0c0002000109090909d204050607085000"
        );
        let ms = MutableSignable {
            seq: 1,
            value: b"hello",
        };
        assert_eq!(hex::encode(to_vec(&ms)), "010568656c6c6f");
    }

    #[test]
    fn other_versions_decode_empty() {
        let p: NoisePayload = decode_exact(&[2]).unwrap();
        assert_eq!(p.version, 2);
        assert!(p.udx.is_none());
    }

    fn arb_addr() -> impl Strategy<Value = SocketAddrV4> {
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(o, p)| a(o, p))
    }

    fn arb_peer() -> impl Strategy<Value = PeerRecord> {
        (
            any::<[u8; 32]>(),
            proptest::collection::vec(arb_addr(), 0..4),
        )
            .prop_map(|(k, r)| PeerRecord {
                public_key: PublicKey(k),
                relay_addresses: r,
            })
    }

    fn arb_payload() -> impl Strategy<Value = NoisePayload> {
        (
            (0u64..5, 0u64..4),
            proptest::option::of((
                0u64..1000,
                proptest::collection::vec((arb_addr(), arb_addr()), 0..3),
            )),
            proptest::collection::vec(arb_addr(), 0..3),
            proptest::collection::vec((any::<[u8; 16]>(), any::<u16>()), 0..2),
            proptest::option::of((any::<bool>(), any::<u32>())),
            any::<bool>(),
            proptest::option::of((any::<[u8; 32]>(), any::<[u8; 32]>())),
            proptest::option::of(proptest::collection::vec(arb_addr(), 0..3)),
        )
            .prop_map(|((error, fw), hp, a4, a6, udx, ss, rt, ra)| NoisePayload {
                version: 1,
                error,
                firewall: fw,
                holepunch: hp.map(|(id, r)| HolepunchInfo {
                    id,
                    relays: r
                        .into_iter()
                        .map(|(x, y)| RelayInfo {
                            relay_address: x,
                            peer_address: y,
                        })
                        .collect(),
                }),
                addresses4: a4,
                addresses6: a6
                    .into_iter()
                    .map(|(ip, p)| SocketAddrV6::new(Ipv6Addr::from(ip), p, 0, 0))
                    .collect(),
                udx: udx.map(|(r, id)| UdxInfo {
                    version: 1,
                    reusable_socket: r,
                    id: u64::from(id),
                    seq: 0,
                }),
                secret_stream: ss.then_some(1),
                relay_through: rt.map(|(k, t)| RelayThrough {
                    version: 1,
                    public_key: PublicKey(k),
                    token: t,
                }),
                relay_addresses: ra,
            })
    }

    fn check<T>(v: &T)
    where
        T: Encode + for<'a> Decode<'a> + PartialEq + std::fmt::Debug,
    {
        let b = to_vec(v);
        assert_eq!(b.len(), v.encoded_len());
        assert_eq!(&decode_exact::<T>(&b).unwrap(), v);
        for cut in 0..b.len() {
            assert!(decode_exact::<T>(&b[..cut]).is_err(), "cut at {cut}");
        }
    }

    proptest! {
        #[test]
        fn payload_round_trip(p in arb_payload()) { check(&p); }

        #[test]
        fn announce_round_trip(peer in proptest::option::of(arb_peer()), r in proptest::option::of(any::<[u8; 32]>()),
                               sig in proptest::option::of(proptest::collection::vec(any::<u8>(), 64)), bump in 0u64..1_000_000_000_000) {
            check(&Announce { peer, refresh: r, signature: sig.map(|s| s.try_into().unwrap()), bump });
        }

        #[test]
        fn handshake_round_trip(mode in 0u64..5, noise in proptest::collection::vec(any::<u8>(), 0..200),
                                p in proptest::option::of(arb_addr()), r in proptest::option::of(arb_addr())) {
            check(&HandshakeMessage { mode, noise: Bytes::from(noise), peer_address: p, relay_address: r });
        }

        #[test]
        fn holepunch_round_trip(mode in 0u64..5, id in 0u64..100, payload in proptest::collection::vec(any::<u8>(), 0..100), p in proptest::option::of(arb_addr())) {
            check(&HolepunchMessage { mode, id, payload: Bytes::from(payload), peer_address: p });
        }

        #[test]
        fn holepunch_payload_round_trip(c in any::<bool>(), pu in any::<bool>(), e in 0u64..20, f in 0u64..4, r in 0u64..10,
                                        addrs in proptest::option::of(proptest::collection::vec(arb_addr(), 0..3)),
                                        ra in proptest::option::of(arb_addr()), t in proptest::option::of(any::<[u8; 32]>()), rt in proptest::option::of(any::<[u8; 32]>())) {
            check(&HolepunchPayload { connected: c, punching: pu, error: e, firewall: f, round: r, addresses: addrs, remote_address: ra, token: t, remote_token: rt });
        }

        #[test]
        fn mutable_round_trip(k in any::<[u8; 32]>(), seq in any::<u64>(), v in proptest::collection::vec(any::<u8>(), 0..100), s in proptest::collection::vec(any::<u8>(), 64)) {
            let sig: [u8; 64] = s.try_into().unwrap();
            check(&MutablePut { public_key: PublicKey(k), seq, value: Bytes::from(v.clone()), signature: sig });
            check(&MutableGet { seq, value: Bytes::from(v), signature: sig });
        }

        #[test]
        fn lookup_round_trip(peers in proptest::collection::vec(arb_peer(), 0..4), bump in any::<u64>()) {
            let lr = LookupReply { peers, bump };
            let b = to_vec(&lr);
            prop_assert_eq!(b.len(), lr.encoded_len());
            prop_assert_eq!(decode_exact::<LookupReply>(&b).unwrap(), lr);
        }

        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_exact::<NoisePayload>(&b);
            let _ = decode_exact::<Announce>(&b);
            let _ = decode_exact::<HandshakeMessage>(&b);
            let _ = decode_exact::<LookupReply>(&b);
            let _ = decode_exact::<HolepunchPayload>(&b);
        }
    }
}
