//! Node ids and XOR distance.

use std::cmp::Ordering;
use std::fmt;
use std::net::SocketAddrV4;

use corenet_codec::hash::blake2b_256;

/// A 32-byte Kademlia id. Persistent nodes use `BLAKE2b-256(ipv4 octets || u16le port)` of the
/// address others see them at.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    /// The id of a node reachable at `addr`.
    pub fn from_addr(addr: &SocketAddrV4) -> Self {
        let mut b = [0u8; 6];
        b[..4].copy_from_slice(&addr.ip().octets());
        b[4..].copy_from_slice(&addr.port().to_le_bytes());
        NodeId(blake2b_256(&b))
    }

    /// Number of leading bits `self` and `other` share (256 when equal).
    pub fn common_prefix_len(&self, other: &NodeId) -> usize {
        for (i, (a, b)) in self.0.iter().zip(other.0.iter()).enumerate() {
            let x = a ^ b;
            if x != 0 {
                return i * 8 + x.leading_zeros() as usize;
            }
        }
        256
    }

    /// Orders `a` and `b` by XOR distance to `self` (closer first).
    pub fn cmp_distance(&self, a: &NodeId, b: &NodeId) -> Ordering {
        for i in 0..32 {
            let (da, db) = (self.0[i] ^ a.0[i], self.0[i] ^ b.0[i]);
            if da != db {
                return da.cmp(&db);
            }
        }
        Ordering::Equal
    }

    /// The XOR distance as bytes.
    pub fn distance(&self, other: &NodeId) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (o, (a, b)) in out.iter_mut().zip(self.0.iter().zip(other.0.iter())) {
            *o = a ^ b;
        }
        out
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", hex::encode(&self.0[..8]))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn id_vector_from_js() {
        let id = NodeId::from_addr(&SocketAddrV4::new(Ipv4Addr::new(1, 2, 3, 4), 5678));
        assert_eq!(
            id.to_string(),
            "d8eea618fa9cafac5c03c572365cc74f8c44049dd3166d0165bd79b6644aa595"
        );
        let testnet = NodeId::from_addr(&SocketAddrV4::new(Ipv4Addr::LOCALHOST, 49738));
        assert!(testnet.to_string().starts_with("ea50f55683100864"));
    }

    #[test]
    fn prefix_and_distance() {
        let a = NodeId([0; 32]);
        let mut b = NodeId([0; 32]);
        b.0[1] = 0b0010_0000;
        assert_eq!(a.common_prefix_len(&b), 10);
        assert_eq!(a.common_prefix_len(&a), 256);
        let mut c = NodeId([0; 32]);
        c.0[0] = 1;
        assert_eq!(a.cmp_distance(&b, &c), Ordering::Less);
    }
}
