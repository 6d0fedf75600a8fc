//! hyperdht's namespaces and signables.

use corenet_codec::hash::{blake2b_256, blake2b_256_batch, blake2b_256_keyed, namespace};
use corenet_codec::{to_vec, PublicKey};
use corenet_noise::KeyPair;

use super::messages::{MutableSignable, PeerRecord};

/// `hyperswarm/dht` namespace entries, indexed by command number.
#[derive(Debug, Clone, Copy)]
pub struct Namespaces {
    /// NS.ANNOUNCE (command 4).
    pub announce: [u8; 32],
    /// NS.UNANNOUNCE (command 5).
    pub unannounce: [u8; 32],
    /// NS.MUTABLE_PUT (command 6).
    pub mutable_put: [u8; 32],
    /// NS.PEER_HANDSHAKE (command 0): the Noise prologue.
    pub peer_handshake: [u8; 32],
    /// NS.PEER_HOLEPUNCH (command 1).
    pub peer_holepunch: [u8; 32],
    /// NS.PLUGIN (command 10).
    pub plugin: [u8; 32],
}

impl Namespaces {
    /// Computes the namespaces.
    pub fn new() -> Self {
        let [announce, unannounce, mutable_put, peer_handshake, peer_holepunch, plugin] =
            namespace("hyperswarm/dht", [4, 5, 6, 0, 1, 10]);
        Namespaces {
            announce,
            unannounce,
            mutable_put,
            peer_handshake,
            peer_holepunch,
            plugin,
        }
    }
}

impl Default for Namespaces {
    fn default() -> Self {
        Self::new()
    }
}

/// The DHT target of a server (or a mutable record): `BLAKE2b-256(public key)`.
pub fn server_target(public_key: &PublicKey) -> [u8; 32] {
    blake2b_256(public_key.as_bytes())
}

/// The announce (or unannounce) signable:
/// `ns || BLAKE2b-256(target || node id || token || encode(peer) || refresh)`.
pub fn announce_signable(
    ns: &[u8; 32],
    target: &[u8; 32],
    node_id: &[u8; 32],
    token: &[u8; 32],
    peer: &PeerRecord,
    refresh: Option<&[u8; 32]>,
) -> [u8; 64] {
    let peer = to_vec(peer);
    let h = blake2b_256_batch(&[
        target,
        node_id,
        token,
        &peer,
        refresh.map_or(&[][..], |r| &r[..]),
    ]);
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(ns);
    out[32..].copy_from_slice(&h);
    out
}

/// Signs an announce for one storing node.
pub fn sign_announce(
    key_pair: &KeyPair,
    ns: &[u8; 32],
    target: &[u8; 32],
    node_id: &[u8; 32],
    token: &[u8; 32],
    peer: &PeerRecord,
    refresh: Option<&[u8; 32]>,
) -> [u8; 64] {
    key_pair.sign(&announce_signable(
        ns, target, node_id, token, peer, refresh,
    ))
}

/// The mutable signable: `NS.MUTABLE_PUT || BLAKE2b-256(uint seq || buffer value)`.
pub fn mutable_signable(ns: &[u8; 32], seq: u64, value: &[u8]) -> [u8; 64] {
    let h = blake2b_256(&to_vec(&MutableSignable { seq, value }));
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(ns);
    out[32..].copy_from_slice(&h);
    out
}

/// `holepunchSecret = BLAKE2b-256(key = handshake hash, NS.PEER_HOLEPUNCH)`.
pub fn holepunch_secret(handshake_hash: &[u8; 64], ns: &Namespaces) -> [u8; 32] {
    blake2b_256_keyed(handshake_hash, &ns.peer_holepunch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};

    #[test]
    fn js_signature_vectors() {
        // docs/protocol/dht.md Appendix A.
        let kp = KeyPair::from_seed([0; 32]);
        assert_eq!(
            hex::encode(server_target(&kp.public_key())),
            "689dae2f77b048dcc08e14d73104ea14222b5be14cc31f34a16a1221f944c1e3"
        );
        let ns = Namespaces::new();
        let peer = PeerRecord {
            public_key: kp.public_key(),
            relay_addresses: vec![SocketAddrV4::new(Ipv4Addr::new(1, 2, 3, 4), 5678)],
        };
        let s = announce_signable(
            &ns.announce,
            &[0x11; 32],
            &[0x33; 32],
            &[0x22; 32],
            &peer,
            None,
        );
        assert_eq!(
            hex::encode(&s[32..]),
            "25dd06df19f7cbd5efbf956b1510b0219ce17ecada2fec699715e95bca34fd1f"
        );
        assert_eq!(
            hex::encode(sign_announce(&kp, &ns.announce, &[0x11; 32], &[0x33; 32], &[0x22; 32], &peer, None)),
            "96618de1cae1d5c7d01b002b87b7cf908e8f7f4672f1395d7a434d3b55a7f4846d79a61d3cf24461d979b1336b8311ed5b32e39a24ef580d22f1a280658f650b"
        );
        let empty = PeerRecord {
            public_key: kp.public_key(),
            relay_addresses: vec![],
        };
        assert_eq!(
            hex::encode(sign_announce(&kp, &ns.unannounce, &[0x11; 32], &[0x33; 32], &[0x22; 32], &empty, None)),
            "2d55c91dc0ae1e3e857780c5565d9518d873c588739394228651274bab3e5ffea69d97c492403cfac8a954fcfa38ae33f2040c19f0eb05235193f94c891f2c04"
        );
        assert_eq!(
            hex::encode(kp.sign(&mutable_signable(&ns.mutable_put, 1, b"hello"))),
            "4bdd9dd758fd8ebb7981d76730886681e81138eec9275e813b4fba2e08596d4bdc50930a95d37bc5d35cae29fcbd6d6a94d6cbd0b7c753fea8bf2482a0f26b08"
        );
    }
}
