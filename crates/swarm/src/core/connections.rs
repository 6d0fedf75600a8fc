//! One connection per remote public key, with hyperswarm's tie-break, so that two peers that
//! dial each other at the same time keep the same single connection.

use std::collections::HashMap;

use corenet_codec::PublicKey;

/// Identifies a connection (or a dial in flight) inside the swarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// What the set knows about a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Its id.
    pub id: ConnId,
    /// We dialled it.
    pub is_initiator: bool,
    /// It has both sent and received bytes (an established, possibly stale connection).
    pub established: bool,
    /// Still being dialled.
    pub pending: bool,
}

/// The decision for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// No other connection to that peer.
    Accept,
    /// Keep the existing one; close the new one ("Duplicate connection").
    KeepExisting(ConnId),
    /// Close the existing one and keep the new one.
    ReplaceExisting(ConnId),
}

/// The tie-break: keep the new connection when the existing one is established (the peer
/// probably lost it and reconnected); otherwise keep the connection whose initiator is the
/// peer with the larger public key.
pub fn keep_new(
    existing_established: bool,
    local: &PublicKey,
    remote: &PublicKey,
    new_is_initiator: bool,
) -> bool {
    let expected_initiator = local.as_bytes() > remote.as_bytes();
    existing_established || expected_initiator == new_is_initiator
}

/// Connections by remote key.
#[derive(Debug, Default)]
pub struct ConnectionSet {
    by_key: HashMap<PublicKey, Entry>,
}

impl ConnectionSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of connections and dials.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The entry for a peer.
    pub fn get(&self, pk: &PublicKey) -> Option<&Entry> {
        self.by_key.get(pk)
    }

    /// The entry for a peer, mutably.
    pub fn get_mut(&mut self, pk: &PublicKey) -> Option<&mut Entry> {
        self.by_key.get_mut(pk)
    }

    /// True if there is a connection or dial to `pk`.
    pub fn contains(&self, pk: &PublicKey) -> bool {
        self.by_key.contains_key(pk)
    }

    /// Decides about a new connection (or dial) to `remote` and records the winner.
    pub fn admit(&mut self, local: &PublicKey, remote: PublicKey, new: Entry) -> Admit {
        match self.by_key.get(&remote).copied() {
            None => {
                self.by_key.insert(remote, new);
                Admit::Accept
            }
            Some(existing) => {
                if keep_new(existing.established, local, &remote, new.is_initiator) {
                    self.by_key.insert(remote, new);
                    Admit::ReplaceExisting(existing.id)
                } else {
                    Admit::KeepExisting(existing.id)
                }
            }
        }
    }

    /// Removes a connection if it is the one recorded for `pk`; true if it was.
    pub fn remove(&mut self, pk: &PublicKey, id: ConnId) -> bool {
        if self.by_key.get(pk).is_some_and(|e| e.id == id) {
            self.by_key.remove(pk);
            true
        } else {
            false
        }
    }

    /// Every entry.
    pub fn iter(&self) -> impl Iterator<Item = (&PublicKey, &Entry)> {
        self.by_key.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64, is_initiator: bool) -> Entry {
        Entry {
            id: ConnId(id),
            is_initiator,
            established: false,
            pending: false,
        }
    }

    #[test]
    fn simultaneous_dials_agree_on_one_connection() {
        let (a, b) = (PublicKey([9; 32]), PublicKey([1; 32])); // a > b
                                                               // Each side has its own dial (initiator) and then receives the other's (responder).
        let mut at_a = ConnectionSet::new();
        let mut at_b = ConnectionSet::new();
        assert_eq!(at_a.admit(&a, b, entry(1, true)), Admit::Accept);
        assert_eq!(at_b.admit(&b, a, entry(2, true)), Admit::Accept);
        // a is the expected initiator: a keeps its dial, b replaces its own dial with a's.
        assert_eq!(
            at_a.admit(&a, b, entry(3, false)),
            Admit::KeepExisting(ConnId(1))
        );
        assert_eq!(
            at_b.admit(&b, a, entry(4, false)),
            Admit::ReplaceExisting(ConnId(2))
        );
        // The surviving connection is a's dial on both sides (1 at a, 4 at b).
        assert_eq!(at_a.get(&b).map(|e| e.id), Some(ConnId(1)));
        assert_eq!(at_b.get(&a).map(|e| e.id), Some(ConnId(4)));
    }

    #[test]
    fn established_connections_are_replaced() {
        let (a, b) = (PublicKey([9; 32]), PublicKey([1; 32]));
        let mut s = ConnectionSet::new();
        let mut e = entry(1, true);
        e.established = true;
        s.admit(&a, b, e);
        assert_eq!(
            s.admit(&a, b, entry(2, false)),
            Admit::ReplaceExisting(ConnId(1))
        );
        assert!(!s.remove(&b, ConnId(1)), "the replaced one is gone already");
        assert!(s.remove(&b, ConnId(2)));
    }
}
