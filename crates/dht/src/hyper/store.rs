//! What a persistent node stores for others: announce records, server forwards, bumps,
//! refresh-chain entries, and mutable and immutable values. Every map is bounded and every
//! entry expires; time is an input.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use bytes::Bytes;
use corenet_codec::PublicKey;

use super::messages::MutableGet;

/// How long announce records, forwards, bumps and refreshes live.
pub const RECORD_TTL: Duration = Duration::from_secs(20 * 60);
/// How long mutable and immutable values live.
pub const VALUE_TTL: Duration = Duration::from_secs(48 * 60 * 60);
/// Records kept per target (and returned per LOOKUP).
pub const RECORDS_PER_TARGET: usize = 20;

/// The largest value a put request can carry: a dht-rpc request is one UDP datagram.
pub const MAX_VALUE_LEN: usize = 65_507;

/// Store limits.
#[derive(Debug, Clone)]
pub struct StoreLimits {
    /// Announce records in all.
    pub max_records: usize,
    /// Server forwards (and refresh entries, and bumps).
    pub max_forwards: usize,
    /// Mutable plus immutable values.
    pub max_values: usize,
    /// Largest stored value (JS has no limit but the datagram's).
    pub max_value_len: usize,
    /// Bytes of mutable and immutable values held in all: a put beyond it is refused.
    pub max_value_bytes: usize,
    /// Record lifetime.
    pub record_ttl: Duration,
    /// Value lifetime.
    pub value_ttl: Duration,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_records: 65_536,
            max_forwards: 65_536,
            max_values: 32_768,
            max_value_len: MAX_VALUE_LEN,
            max_value_bytes: 64 * 1024 * 1024,
            record_ttl: RECORD_TTL,
            value_ttl: VALUE_TTL,
        }
    }
}

/// A stored announce record.
#[derive(Debug, Clone)]
struct Record {
    public_key: PublicKey,
    /// The encoded peer record, as returned in LOOKUP replies.
    record: Bytes,
    expires: Instant,
}

/// A server's self-announce at a node: where to forward handshakes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The server's address as this node saw it.
    pub relay: SocketAddrV4,
    /// The encoded peer record (returned by FIND_PEER).
    pub record: Bytes,
    expires: Instant,
}

/// A refresh-chain entry.
#[derive(Debug, Clone)]
struct Refresh {
    target: [u8; 32],
    record: Bytes,
    public_key: PublicKey,
    announce_self: bool,
    expires: Instant,
}

/// Result of a mutable put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutResult {
    /// Stored.
    Stored,
    /// Same seq, different value.
    SeqReused,
    /// Lower seq than stored.
    SeqTooLow,
    /// The store is full.
    Full,
}

/// The store.
#[derive(Debug, Default)]
pub struct Store {
    limits: StoreLimits,
    records: HashMap<[u8; 32], Vec<Record>>,
    record_count: usize,
    forwards: HashMap<[u8; 32], Forward>,
    bumps: HashMap<[u8; 32], (u64, Instant)>,
    refreshes: HashMap<[u8; 32], Refresh>,
    mutables: HashMap<[u8; 32], (MutableGet, Instant)>,
    immutables: HashMap<[u8; 32], (Bytes, Instant)>,
    /// Bytes of values held (mutable and immutable).
    value_bytes: usize,
    last_gc: Option<Instant>,
}

impl Store {
    /// An empty store.
    pub fn new(limits: StoreLimits) -> Self {
        Store {
            limits,
            ..Default::default()
        }
    }

    /// Number of announce records held.
    pub fn record_count(&self) -> usize {
        self.record_count
    }

    /// Drops expired entries (run at most once a second).
    pub fn gc(&mut self, now: Instant) {
        if self
            .last_gc
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.last_gc = Some(now);
        let mut removed = 0;
        self.records.retain(|_, v| {
            let before = v.len();
            v.retain(|r| r.expires > now);
            removed += before - v.len();
            !v.is_empty()
        });
        self.record_count -= removed;
        self.forwards.retain(|_, f| f.expires > now);
        self.bumps.retain(|_, b| b.1 > now);
        self.refreshes.retain(|_, r| r.expires > now);
        let mut freed = 0;
        self.mutables.retain(|_, m| {
            let keep = m.1 > now;
            if !keep {
                freed += m.0.value.len();
            }
            keep
        });
        self.immutables.retain(|_, m| {
            let keep = m.1 > now;
            if !keep {
                freed += m.0.len();
            }
            keep
        });
        self.value_bytes -= freed;
    }

    /// Bytes of values held (mutable and immutable).
    pub fn value_bytes(&self) -> usize {
        self.value_bytes
    }

    /// True when replacing `old` bytes with `new` keeps the values within their budget.
    fn value_fits(&self, old: usize, new: usize) -> bool {
        self.value_bytes - old + new <= self.limits.max_value_bytes
    }

    /// Adds or refreshes a topic record.
    pub fn add_record(
        &mut self,
        now: Instant,
        target: [u8; 32],
        public_key: PublicKey,
        record: Bytes,
    ) {
        let expires = now + self.limits.record_ttl;
        let list = self.records.entry(target).or_default();
        if let Some(r) = list.iter_mut().find(|r| r.public_key == public_key) {
            r.record = record;
            r.expires = expires;
            return;
        }
        if list.len() >= RECORDS_PER_TARGET {
            // Replace the record closest to expiry.
            if let Some(oldest) = list.iter_mut().min_by_key(|r| r.expires) {
                *oldest = Record {
                    public_key,
                    record,
                    expires,
                };
            }
            return;
        }
        if self.record_count >= self.limits.max_records {
            return;
        }
        list.push(Record {
            public_key,
            record,
            expires,
        });
        self.record_count += 1;
    }

    /// Removes a topic record.
    pub fn remove_record(&mut self, target: &[u8; 32], public_key: &PublicKey) {
        if let Some(list) = self.records.get_mut(target) {
            let before = list.len();
            list.retain(|r| r.public_key != *public_key);
            self.record_count -= before - list.len();
            if list.is_empty() {
                self.records.remove(target);
            }
        }
    }

    /// Up to [`RECORDS_PER_TARGET`] live records for a target, with the forward record of a
    /// server announced there (as JS adds it).
    pub fn lookup(&self, now: Instant, target: &[u8; 32]) -> Vec<Bytes> {
        let mut out: Vec<Bytes> = self
            .records
            .get(target)
            .map(|v| {
                v.iter()
                    .filter(|r| r.expires > now)
                    .map(|r| r.record.clone())
                    .collect()
            })
            .unwrap_or_default();
        out.truncate(RECORDS_PER_TARGET);
        if out.len() < RECORDS_PER_TARGET {
            if let Some(f) = self.forward(now, target) {
                out.push(f.record.clone());
            }
        }
        out
    }

    /// Sets the forward of a self-announced server.
    pub fn set_forward(
        &mut self,
        now: Instant,
        target: [u8; 32],
        relay: SocketAddrV4,
        record: Bytes,
    ) {
        if self.forwards.len() >= self.limits.max_forwards && !self.forwards.contains_key(&target) {
            return;
        }
        let expires = now + self.limits.record_ttl;
        self.forwards.insert(
            target,
            Forward {
                relay,
                record,
                expires,
            },
        );
    }

    /// The live forward for a target.
    pub fn forward(&self, now: Instant, target: &[u8; 32]) -> Option<&Forward> {
        self.forwards.get(target).filter(|f| f.expires > now)
    }

    /// Removes a forward.
    pub fn remove_forward(&mut self, target: &[u8; 32]) {
        self.forwards.remove(target);
    }

    /// The highest live bump of a target.
    pub fn bump(&self, now: Instant, target: &[u8; 32]) -> u64 {
        self.bumps
            .get(target)
            .filter(|b| b.1 > now)
            .map_or(0, |b| b.0)
    }

    /// Raises a target's bump.
    pub fn set_bump(&mut self, now: Instant, target: [u8; 32], bump: u64) {
        if self.bumps.len() >= self.limits.max_forwards && !self.bumps.contains_key(&target) {
            return;
        }
        self.bumps
            .insert(target, (bump, now + self.limits.record_ttl));
    }

    /// Stores a refresh-chain entry under `key` (the refresh hash).
    pub fn set_refresh(
        &mut self,
        now: Instant,
        key: [u8; 32],
        target: [u8; 32],
        public_key: PublicKey,
        record: Bytes,
        announce_self: bool,
    ) {
        if self.refreshes.len() >= self.limits.max_forwards {
            return;
        }
        let expires = now + self.limits.record_ttl;
        self.refreshes.insert(
            key,
            Refresh {
                target,
                record,
                public_key,
                announce_self,
                expires,
            },
        );
    }

    /// Applies a refresh preimage: re-stores the record and moves the entry to the preimage.
    /// Returns the target if an entry matched.
    pub fn apply_refresh(
        &mut self,
        now: Instant,
        preimage: [u8; 32],
        from: SocketAddrV4,
    ) -> Option<[u8; 32]> {
        let key = corenet_codec::hash::blake2b_256(&preimage);
        let r = self.refreshes.remove(&key)?;
        if r.expires <= now {
            return None;
        }
        if r.announce_self {
            self.set_forward(now, r.target, from, r.record.clone());
        } else {
            self.add_record(now, r.target, r.public_key, r.record.clone());
        }
        let target = r.target;
        self.set_refresh(
            now,
            preimage,
            r.target,
            r.public_key,
            r.record,
            r.announce_self,
        );
        Some(target)
    }

    /// The stored mutable value.
    pub fn mutable(&self, now: Instant, target: &[u8; 32]) -> Option<&MutableGet> {
        self.mutables
            .get(target)
            .filter(|m| m.1 > now)
            .map(|m| &m.0)
    }

    /// Stores a mutable value under the seq rules.
    pub fn put_mutable(&mut self, now: Instant, target: [u8; 32], value: MutableGet) -> PutResult {
        if let Some((existing, exp)) = self.mutables.get(&target) {
            if *exp > now {
                if value.seq == existing.seq && value.value != existing.value {
                    return PutResult::SeqReused;
                }
                if value.seq < existing.seq {
                    return PutResult::SeqTooLow;
                }
            }
        } else if self.mutables.len() + self.immutables.len() >= self.limits.max_values {
            return PutResult::Full;
        }
        let old = self.mutables.get(&target).map_or(0, |m| m.0.value.len());
        if !self.value_fits(old, value.value.len()) {
            return PutResult::Full;
        }
        self.value_bytes = self.value_bytes - old + value.value.len();
        self.mutables
            .insert(target, (value, now + self.limits.value_ttl));
        PutResult::Stored
    }

    /// The stored immutable value.
    pub fn immutable(&self, now: Instant, target: &[u8; 32]) -> Option<&Bytes> {
        self.immutables
            .get(target)
            .filter(|m| m.1 > now)
            .map(|m| &m.0)
    }

    /// Stores an immutable value (the caller checked `target == BLAKE2b(value)`).
    pub fn put_immutable(&mut self, now: Instant, target: [u8; 32], value: Bytes) -> bool {
        if !self.immutables.contains_key(&target)
            && self.mutables.len() + self.immutables.len() >= self.limits.max_values
        {
            return false;
        }
        let old = self.immutables.get(&target).map_or(0, |m| m.0.len());
        if !self.value_fits(old, value.len()) {
            return false;
        }
        self.value_bytes = self.value_bytes - old + value.len();
        self.immutables
            .insert(target, (value, now + self.limits.value_ttl));
        true
    }

    /// Largest value accepted.
    pub fn max_value_len(&self) -> usize {
        self.limits.max_value_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_up_to_a_datagram_are_kept_within_a_byte_budget() {
        let now = Instant::now();
        let mut store = Store::new(StoreLimits {
            max_value_bytes: 10_000,
            ..Default::default()
        });
        assert_eq!(store.max_value_len(), MAX_VALUE_LEN);
        // JS stores values over 1,000 bytes; so do we.
        assert!(store.put_immutable(now, [1; 32], Bytes::from(vec![1; 4000])));
        assert!(store.put_immutable(now, [2; 32], Bytes::from(vec![2; 4000])));
        assert_eq!(store.value_bytes(), 8000);
        // Over the budget: refused, nothing changes.
        assert!(!store.put_immutable(now, [3; 32], Bytes::from(vec![3; 4000])));
        assert!(store.immutable(now, &[3; 32]).is_none());
        // Replacing a value counts only the difference.
        let m = |seq, len| MutableGet {
            seq,
            value: Bytes::from(vec![9; len]),
            signature: [0; 64],
        };
        assert_eq!(
            store.put_mutable(now, [4; 32], m(1, 1500)),
            PutResult::Stored
        );
        assert_eq!(
            store.put_mutable(now, [4; 32], m(2, 2000)),
            PutResult::Stored
        );
        assert_eq!(store.put_mutable(now, [4; 32], m(3, 2001)), PutResult::Full);
        assert_eq!(store.value_bytes(), 10_000);
        // Expired values give their bytes back.
        store.gc(now + VALUE_TTL + Duration::from_secs(1));
        assert_eq!(store.value_bytes(), 0);
        assert!(store.put_immutable(now + VALUE_TTL, [3; 32], Bytes::from(vec![3; 4000])));
    }

    #[test]
    fn records_expire_and_are_capped() {
        let now = Instant::now();
        let mut s = Store::new(StoreLimits::default());
        for i in 0..25u8 {
            s.add_record(now, [1; 32], PublicKey([i; 32]), Bytes::from(vec![i]));
        }
        assert_eq!(s.lookup(now, &[1; 32]).len(), RECORDS_PER_TARGET);
        assert_eq!(s.record_count(), RECORDS_PER_TARGET);
        s.remove_record(&[1; 32], &PublicKey([24; 32]));
        assert_eq!(s.record_count(), RECORDS_PER_TARGET - 1);
        let later = now + RECORD_TTL + Duration::from_secs(1);
        assert!(s.lookup(later, &[1; 32]).is_empty());
        s.gc(later);
        assert_eq!(s.record_count(), 0);
    }

    #[test]
    fn mutable_seq_rules() {
        let now = Instant::now();
        let mut s = Store::new(StoreLimits::default());
        let v = |seq, val: &'static [u8]| MutableGet {
            seq,
            value: Bytes::from_static(val),
            signature: [0; 64],
        };
        assert_eq!(s.put_mutable(now, [2; 32], v(2, b"a")), PutResult::Stored);
        assert_eq!(
            s.put_mutable(now, [2; 32], v(2, b"b")),
            PutResult::SeqReused
        );
        assert_eq!(
            s.put_mutable(now, [2; 32], v(1, b"a")),
            PutResult::SeqTooLow
        );
        assert_eq!(s.put_mutable(now, [2; 32], v(2, b"a")), PutResult::Stored);
        assert_eq!(s.put_mutable(now, [2; 32], v(3, b"c")), PutResult::Stored);
        assert_eq!(s.mutable(now, &[2; 32]).map(|m| m.seq), Some(3));
    }
}
