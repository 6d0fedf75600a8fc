//! What a persistent node stores for others: announce records, server forwards, bumps,
//! refresh-chain entries, and mutable and immutable values. Every map is bounded and every
//! entry expires; time is an input.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use bytes::Bytes;
use corenet_codec::PublicKey;
use rand::Rng;

use super::messages::MutableGet;

/// How long announce records, forwards, bumps and refreshes live.
pub const RECORD_TTL: Duration = Duration::from_secs(20 * 60);
/// How long mutable and immutable values live.
pub const VALUE_TTL: Duration = Duration::from_secs(48 * 60 * 60);
/// Records returned per LOOKUP reply, drawn at random from those held for the target (JS:
/// `this.records.get(k, 20)`, `hyperdht/lib/persistent.js:30`, a random pick in
/// `record-cache/index.js:113-133`). A server's forward record fills a free place.
pub const LOOKUP_RECORDS: usize = 20;

/// Records kept per target. JS keeps any number per target, up to its total cap; we keep
/// this many so a LOOKUP's sample stays cheap, far more than a reply carries, so that a few
/// Sybil keys re-announcing cannot push the honest records of a topic out: a new key at a
/// full target replaces a random record (an expired one first).
pub const MAX_RECORDS_PER_TARGET: usize = 1024;

/// The largest value a put request can carry: a dht-rpc request is one UDP datagram.
pub const MAX_VALUE_LEN: usize = 65_507;

/// Store limits.
#[derive(Debug, Clone)]
pub struct StoreLimits {
    /// Announce records in all: a new record beyond it is refused.
    pub max_records: usize,
    /// Announce records per target (default [`MAX_RECORDS_PER_TARGET`]).
    pub max_records_per_target: usize,
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
            max_records_per_target: MAX_RECORDS_PER_TARGET,
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

    /// Adds or refreshes a topic record. A new key at a full target replaces an expired
    /// record, or else a random one drawn from `rng`; a new key beyond the total cap is
    /// refused (false).
    pub fn add_record(
        &mut self,
        now: Instant,
        target: [u8; 32],
        public_key: PublicKey,
        record: Bytes,
        rng: &mut impl Rng,
    ) -> bool {
        let expires = now + self.limits.record_ttl;
        let new = Record {
            public_key,
            record,
            expires,
        };
        if let Some(list) = self.records.get_mut(&target) {
            if let Some(r) = list.iter_mut().find(|r| r.public_key == public_key) {
                *r = new;
                return true;
            }
            if list.len() >= self.limits.max_records_per_target.max(1) {
                // Not the one closest to expiry: a Sybil that re-announces often would
                // always find an honest record there.
                let i = list
                    .iter()
                    .position(|r| r.expires <= now)
                    .unwrap_or_else(|| rng.gen_range(0..list.len()));
                list[i] = new;
                return true;
            }
        }
        if self.record_count >= self.limits.max_records {
            return false;
        }
        self.records.entry(target).or_default().push(new);
        self.record_count += 1;
        true
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

    /// Number of live and expired (not yet collected) records held for a target.
    pub fn records_for(&self, target: &[u8; 32]) -> usize {
        self.records.get(target).map_or(0, Vec::len)
    }

    /// Up to [`LOOKUP_RECORDS`] live records for a target, a random sample drawn from `rng`
    /// when it holds more, with the forward record of a server announced there when there
    /// is room (as JS adds it).
    pub fn lookup(&self, now: Instant, target: &[u8; 32], rng: &mut impl Rng) -> Vec<Bytes> {
        let mut live: Vec<&Record> = self
            .records
            .get(target)
            .map(|v| v.iter().filter(|r| r.expires > now).collect())
            .unwrap_or_default();
        // A partial Fisher-Yates shuffle: the first LOOKUP_RECORDS places get a uniform
        // sample without replacement.
        let n = live.len().min(LOOKUP_RECORDS);
        for i in 0..n {
            let j = rng.gen_range(i..live.len());
            live.swap(i, j);
        }
        let mut out: Vec<Bytes> = live[..n].iter().map(|r| r.record.clone()).collect();
        if out.len() < LOOKUP_RECORDS {
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
        if self.refreshes.len() >= self.limits.max_forwards && !self.refreshes.contains_key(&key) {
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
        rng: &mut impl Rng,
    ) -> Option<[u8; 32]> {
        let key = corenet_codec::hash::blake2b_256(&preimage);
        let r = self.refreshes.remove(&key)?;
        if r.expires <= now {
            return None;
        }
        if r.announce_self {
            self.set_forward(now, r.target, from, r.record.clone());
        } else {
            self.add_record(now, r.target, r.public_key, r.record.clone(), rng);
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

    fn rng() -> rand_chacha::ChaChaRng {
        rand::SeedableRng::seed_from_u64(7)
    }

    fn key(i: u32) -> PublicKey {
        let mut k = [0; 32];
        k[..4].copy_from_slice(&i.to_le_bytes());
        PublicKey(k)
    }

    #[test]
    fn records_expire_and_are_capped() {
        let now = Instant::now();
        let mut rng = rng();
        let mut s = Store::new(StoreLimits::default());
        for i in 0..25u8 {
            s.add_record(
                now,
                [1; 32],
                PublicKey([i; 32]),
                Bytes::from(vec![i]),
                &mut rng,
            );
        }
        assert_eq!(s.lookup(now, &[1; 32], &mut rng).len(), LOOKUP_RECORDS);
        assert_eq!(s.record_count(), 25);
        s.remove_record(&[1; 32], &PublicKey([24; 32]));
        assert_eq!(s.record_count(), 24);
        let later = now + RECORD_TTL + Duration::from_secs(1);
        assert!(s.lookup(later, &[1; 32], &mut rng).is_empty());
        s.gc(later);
        assert_eq!(s.record_count(), 0);
    }

    #[test]
    fn a_1025th_key_at_a_target_replaces_a_random_record() {
        let now = Instant::now();
        let mut rng = rng();
        let mut s = Store::new(StoreLimits::default());
        let t = [1; 32];
        let n = MAX_RECORDS_PER_TARGET as u32;
        for i in 0..n {
            assert!(s.add_record(
                now,
                t,
                key(i),
                Bytes::from(i.to_le_bytes().to_vec()),
                &mut rng
            ));
        }
        assert_eq!(s.records_for(&t), MAX_RECORDS_PER_TARGET);
        // 100 more keys, each a second later than the one before: the target stays at its
        // cap, and the evictions hit old and new records alike (not the oldest first).
        for i in n..n + 100 {
            let at = now + Duration::from_secs(u64::from(i - n + 1));
            assert!(s.add_record(
                at,
                t,
                key(i),
                Bytes::from(i.to_le_bytes().to_vec()),
                &mut rng
            ));
        }
        assert_eq!(s.records_for(&t), MAX_RECORDS_PER_TARGET);
        assert_eq!(s.record_count(), MAX_RECORDS_PER_TARGET);
        let held: Vec<u32> = s.records[&t]
            .iter()
            .map(|r| u32::from_le_bytes(r.public_key.0[..4].try_into().unwrap()))
            .collect();
        let first_kept = held.iter().filter(|&&i| i < 20).count();
        let newcomers_kept = held.iter().filter(|&&i| i >= n).count();
        assert!(
            first_kept >= 15,
            "the oldest records were evicted first: {first_kept} of 20 left"
        );
        assert!(
            (80..100).contains(&newcomers_kept),
            "{newcomers_kept} of 100 newcomers kept"
        );
        // An expired record goes first.
        let mut s = Store::new(StoreLimits {
            max_records_per_target: 3,
            ..Default::default()
        });
        s.add_record(now, t, key(0), Bytes::from_static(b"old"), &mut rng);
        let later = now + RECORD_TTL / 2;
        s.add_record(later, t, key(1), Bytes::from_static(b"b"), &mut rng);
        s.add_record(later, t, key(2), Bytes::from_static(b"c"), &mut rng);
        let expired = now + RECORD_TTL;
        s.add_record(expired, t, key(3), Bytes::from_static(b"d"), &mut rng);
        let mut got = s.lookup(expired, &t, &mut rng);
        got.sort();
        assert_eq!(got, vec![&b"b"[..], &b"c"[..], &b"d"[..]]);
    }

    #[test]
    fn an_honest_record_survives_100_sybil_announces_and_is_sampled() {
        let now = Instant::now();
        let mut rng = rng();
        let mut s = Store::new(StoreLimits::default());
        let t = [5; 32];
        s.add_record(now, t, key(0), Bytes::from_static(b"honest"), &mut rng);
        for i in 1..=100 {
            // Each Sybil announces, and re-announces, after the honest record.
            for round in 0..3 {
                let at = now + Duration::from_secs(u64::from(i) + round * 200);
                s.add_record(at, t, key(i), Bytes::from(format!("sybil {i}")), &mut rng);
            }
        }
        let at = now + Duration::from_secs(700);
        assert_eq!(s.records_for(&t), 101);
        let mut seen_honest = 0;
        let mut distinct = std::collections::HashSet::new();
        for _ in 0..100 {
            let reply = s.lookup(at, &t, &mut rng);
            assert_eq!(reply.len(), LOOKUP_RECORDS);
            let unique: std::collections::HashSet<_> = reply.iter().collect();
            assert_eq!(unique.len(), reply.len(), "a sample repeats a record");
            seen_honest += usize::from(reply.iter().any(|r| r == &b"honest"[..]));
            distinct.extend(reply);
        }
        // About 20 of 101 per reply: some replies carry it, not all.
        assert!(
            (5..60).contains(&seen_honest),
            "honest in {seen_honest} of 100 lookups"
        );
        assert_eq!(distinct.len(), 101, "the samples reach every record");
    }

    #[test]
    fn a_forward_fills_a_free_place_in_a_lookup_reply() {
        let now = Instant::now();
        let mut rng = rng();
        let mut s = Store::new(StoreLimits::default());
        let t = [6; 32];
        let relay = SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 1);
        s.set_forward(now, t, relay, Bytes::from_static(b"server"));
        for i in 0..19 {
            s.add_record(now, t, key(i), Bytes::from(vec![1]), &mut rng);
        }
        let reply = s.lookup(now, &t, &mut rng);
        assert_eq!(reply.len(), LOOKUP_RECORDS);
        assert!(reply.contains(&Bytes::from_static(b"server")));
        s.add_record(now, t, key(19), Bytes::from(vec![1]), &mut rng);
        let reply = s.lookup(now, &t, &mut rng);
        assert_eq!(reply.len(), LOOKUP_RECORDS);
        assert!(!reply.contains(&Bytes::from_static(b"server")));
    }

    #[test]
    fn a_record_beyond_the_total_cap_is_refused() {
        let now = Instant::now();
        let mut rng = rng();
        let mut s = Store::new(StoreLimits {
            max_records: 3,
            ..Default::default()
        });
        for i in 0..3u8 {
            assert!(s.add_record(now, [i; 32], key(0), Bytes::from(vec![i]), &mut rng));
        }
        assert!(!s.add_record(now, [3; 32], key(0), Bytes::from(vec![3]), &mut rng));
        assert_eq!(s.record_count(), 3);
        assert!(s.lookup(now, &[3; 32], &mut rng).is_empty());
        // A new key under a held target is refused too; a refresh of a held key is not.
        assert!(!s.add_record(now, [0; 32], key(1), Bytes::from(vec![9]), &mut rng));
        assert!(s.add_record(now, [0; 32], key(0), Bytes::from(vec![7]), &mut rng));
        assert_eq!(
            s.lookup(now, &[0; 32], &mut rng),
            vec![Bytes::from(vec![7])]
        );
        // Room again once one expires.
        let later = now + RECORD_TTL + Duration::from_secs(1);
        s.add_record(later, [0; 32], key(0), Bytes::from(vec![7]), &mut rng);
        s.gc(later);
        assert_eq!(s.record_count(), 1);
        assert!(s.add_record(later, [3; 32], key(0), Bytes::from(vec![3]), &mut rng));
    }

    #[test]
    fn forwards_bumps_and_refreshes_are_capped_and_expire() {
        let now = Instant::now();
        let relay = SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 1);
        let mut s = Store::new(StoreLimits {
            max_forwards: 2,
            ..Default::default()
        });
        for i in 0..3u8 {
            s.set_forward(now, [i; 32], relay, Bytes::from(vec![i]));
            s.set_bump(now, [i; 32], u64::from(i) + 1);
            s.set_refresh(now, [i; 32], [i; 32], key(0), Bytes::from(vec![i]), true);
        }
        assert!(s.forward(now, &[1; 32]).is_some());
        assert!(
            s.forward(now, &[2; 32]).is_none(),
            "a third forward was kept"
        );
        assert_eq!(s.bump(now, &[1; 32]), 2);
        assert_eq!(s.bump(now, &[2; 32]), 0, "a third bump was kept");
        assert_eq!(s.refreshes.len(), 2, "a third refresh was kept");
        // Held keys are updated at the cap.
        s.set_forward(now, [1; 32], relay, Bytes::from_static(b"new"));
        assert_eq!(
            s.forward(now, &[1; 32]).map(|f| f.record.clone()),
            Some(Bytes::from_static(b"new"))
        );
        s.set_bump(now, [1; 32], 9);
        assert_eq!(s.bump(now, &[1; 32]), 9);
        s.set_refresh(now, [1; 32], [1; 32], key(1), Bytes::new(), false);
        assert_eq!(s.refreshes[&[1; 32]].public_key, key(1));
        // All three expire at RECORD_TTL and make room.
        let gone = now + RECORD_TTL;
        assert!(s.forward(gone, &[1; 32]).is_none());
        assert_eq!(s.bump(gone, &[1; 32]), 0);
        s.gc(gone);
        assert!(s.forwards.is_empty() && s.bumps.is_empty() && s.refreshes.is_empty());
        s.set_forward(gone, [2; 32], relay, Bytes::new());
        assert!(s.forward(gone, &[2; 32]).is_some());
    }

    #[test]
    fn a_value_beyond_the_count_cap_is_refused_and_replacements_still_work() {
        let now = Instant::now();
        let mut s = Store::new(StoreLimits {
            max_values: 2,
            ..Default::default()
        });
        let m = |seq| MutableGet {
            seq,
            value: Bytes::from_static(b"v"),
            signature: [0; 64],
        };
        assert_eq!(s.put_mutable(now, [1; 32], m(1)), PutResult::Stored);
        assert!(s.put_immutable(now, [2; 32], Bytes::from_static(b"i")));
        // Mutables and immutables share the cap.
        assert_eq!(s.put_mutable(now, [3; 32], m(1)), PutResult::Full);
        assert!(!s.put_immutable(now, [4; 32], Bytes::from_static(b"j")));
        assert!(s.mutable(now, &[3; 32]).is_none() && s.immutable(now, &[4; 32]).is_none());
        // Keys already held are replaced at the cap.
        assert_eq!(s.put_mutable(now, [1; 32], m(2)), PutResult::Stored);
        assert!(s.put_immutable(now, [2; 32], Bytes::from_static(b"i")));
        assert_eq!(s.mutable(now, &[1; 32]).map(|v| v.seq), Some(2));
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
