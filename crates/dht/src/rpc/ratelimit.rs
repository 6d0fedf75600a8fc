//! Budgets for incoming requests: a token bucket per source host and one for the node.
//!
//! dht-rpc answers every well-formed request at line rate; so did we. A node that answers
//! anyone can be made to spend its CPU (signature checks, Noise handshakes) and its uplink
//! (replies, some far larger than the request) at the attacker's rate. Here a request is
//! handled only if its source host (the IPv4 address: one host may run many ports) and the
//! node as a whole both have a token; otherwise it is dropped unanswered, as a lost
//! datagram would be, and counted ([`super::Stats::rate_limited`]). The defaults are far
//! above what any honest peer sends (a JS node bootstrapping sends a few dozen requests),
//! so only floods meet them.
//!
//! Time is an input (`now`), so the budgets replay in the simulator. The table of sources is
//! bounded: at [`MAX_TRACKED_SOURCES`], hosts not yet tracked share one overflow bucket, and
//! idle buckets (refilled to their burst) are forgotten at each maintenance tick.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Instant;

/// Requests per second one source host may send, sustained.
pub const DEFAULT_PER_SOURCE_RATE: u32 = 2_000;
/// Requests one source host may send at once.
pub const DEFAULT_PER_SOURCE_BURST: u32 = 10_000;
/// Requests per second the node handles from everyone, sustained.
pub const DEFAULT_GLOBAL_RATE: u32 = 20_000;
/// Requests the node handles at once from everyone.
pub const DEFAULT_GLOBAL_BURST: u32 = 40_000;
/// Source hosts with a bucket of their own.
pub const MAX_TRACKED_SOURCES: usize = 4_096;

/// The request budgets of a node ([`super::Config::with_rate_limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Sustained requests per second per source host.
    pub per_source_rate: u32,
    /// Burst per source host.
    pub per_source_burst: u32,
    /// Sustained requests per second for the node.
    pub global_rate: u32,
    /// Burst for the node.
    pub global_burst: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            per_source_rate: DEFAULT_PER_SOURCE_RATE,
            per_source_burst: DEFAULT_PER_SOURCE_BURST,
            global_rate: DEFAULT_GLOBAL_RATE,
            global_burst: DEFAULT_GLOBAL_BURST,
        }
    }
}

impl RateLimits {
    /// No limits (as dht-rpc): every request is handled.
    pub fn unlimited() -> Self {
        RateLimits {
            per_source_rate: u32::MAX,
            per_source_burst: u32::MAX,
            global_rate: u32::MAX,
            global_burst: u32::MAX,
        }
    }
}

/// One token bucket, in thousandths of a token.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    millis: u64,
    at: Instant,
}

impl Bucket {
    fn full(burst: u32, now: Instant) -> Self {
        Bucket {
            millis: u64::from(burst) * 1000,
            at: now,
        }
    }

    fn refill(&mut self, rate: u32, burst: u32, now: Instant) {
        let ms = now.saturating_duration_since(self.at).as_millis();
        let ms = u64::try_from(ms).unwrap_or(u64::MAX);
        self.millis = self
            .millis
            .saturating_add(ms.saturating_mul(u64::from(rate)))
            .min(u64::from(burst) * 1000);
        self.at = now;
    }

    fn take(&mut self) -> bool {
        if self.millis >= 1000 {
            self.millis -= 1000;
            true
        } else {
            false
        }
    }
}

/// The buckets of one node.
#[derive(Debug)]
pub(crate) struct Limiter {
    limits: RateLimits,
    global: Bucket,
    sources: HashMap<Ipv4Addr, Bucket>,
    overflow: Bucket,
}

impl Limiter {
    pub(crate) fn new(limits: RateLimits, now: Instant) -> Self {
        Limiter {
            limits,
            global: Bucket::full(limits.global_burst, now),
            sources: HashMap::new(),
            overflow: Bucket::full(limits.per_source_burst, now),
        }
    }

    /// Whether a request from `host` may be handled now (and, if so, its tokens are taken).
    pub(crate) fn allow(&mut self, host: Ipv4Addr, now: Instant) -> bool {
        let l = self.limits;
        let full = self.sources.len() >= MAX_TRACKED_SOURCES;
        let source = match self.sources.get_mut(&host) {
            Some(b) => b,
            None if full => &mut self.overflow,
            None => self
                .sources
                .entry(host)
                .or_insert_with(|| Bucket::full(l.per_source_burst, now)),
        };
        source.refill(l.per_source_rate, l.per_source_burst, now);
        if source.millis < 1000 {
            return false;
        }
        self.global.refill(l.global_rate, l.global_burst, now);
        if !self.global.take() {
            return false;
        }
        source.take()
    }

    /// Forgets the sources whose buckets have refilled (they sent nothing for a while).
    pub(crate) fn prune(&mut self, now: Instant) {
        let l = self.limits;
        self.sources.retain(|_, b| {
            b.refill(l.per_source_rate, l.per_source_burst, now);
            b.millis < u64::from(l.per_source_burst) * 1000
        });
    }

    /// Source hosts tracked now.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> RateLimits {
        RateLimits {
            per_source_rate: 100,
            per_source_burst: 200,
            global_rate: 1_000,
            global_burst: 1_500,
        }
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut l = Limiter::new(limits(), t0);
        let a = Ipv4Addr::new(10, 0, 0, 1);
        let allowed = (0..1_000).filter(|_| l.allow(a, t0)).count();
        assert_eq!(allowed, 200);
        // Half a second later: 50 more.
        let t1 = t0 + Duration::from_millis(500);
        let allowed = (0..1_000).filter(|_| l.allow(a, t1)).count();
        assert_eq!(allowed, 50);
        // Another host is not affected.
        assert!(l.allow(Ipv4Addr::new(10, 0, 0, 2), t1));
    }

    #[test]
    fn the_node_gets_its_global_burst_from_everyone() {
        let t0 = Instant::now();
        let mut l = Limiter::new(limits(), t0);
        let allowed = (0..100u8)
            .flat_map(|h| (0..100).map(move |_| Ipv4Addr::new(10, 1, 0, h)))
            .filter(|&h| l.allow(h, t0))
            .count();
        assert_eq!(allowed, 1_500);
        let t1 = t0 + Duration::from_millis(100);
        let allowed = (0..200u8)
            .filter(|&h| l.allow(Ipv4Addr::new(10, 2, 0, h), t1))
            .count();
        assert_eq!(allowed, 100, "the global rate refills 100 in 100 ms");
    }

    #[test]
    fn the_source_table_stays_bounded_and_idle_sources_are_forgotten() {
        let t0 = Instant::now();
        let mut l = Limiter::new(limits(), t0);
        for i in 0..(MAX_TRACKED_SOURCES as u32 + 1_000) {
            l.allow(Ipv4Addr::from(0x0a00_0000 + i), t0);
        }
        assert_eq!(l.tracked(), MAX_TRACKED_SOURCES);
        // Untracked hosts share the overflow bucket: its burst, then nothing.
        let extra = (0..1_000u32)
            .filter(|i| l.allow(Ipv4Addr::from(0x0b00_0000 + i), t0))
            .count();
        assert!(extra <= 200, "the overflow bucket let {extra} through");
        l.prune(t0 + Duration::from_secs(10));
        assert_eq!(l.tracked(), 0);
    }
}
