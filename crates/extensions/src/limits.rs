//! The sans-IO pieces of an extension channel: the inbound rate limiter (two token buckets)
//! and the bounded queue of messages waiting for a channel to open. Neither reads the clock:
//! time is an input (`now`), so their behaviour is fixed by the inputs and tested as a script.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Inbound limits per peer and extension: a token bucket for messages and one for bytes.
/// A peer that empties either bucket has flooded (see [`crate::ExtensionOptions`] for what
/// happens then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained messages per second, and the bucket size; `None`: no message limit.
    messages: Option<(u64, u64)>,
    /// Sustained bytes per second, and the bucket size; `None`: no byte limit.
    bytes: Option<(u64, u64)>,
}

impl Default for RateLimit {
    /// [`RateLimit::DEFAULT_MESSAGES_PER_SECOND`] messages per second with bursts of
    /// [`RateLimit::DEFAULT_MESSAGE_BURST`], and [`RateLimit::DEFAULT_BYTES_PER_SECOND`]
    /// bytes per second with bursts of [`RateLimit::DEFAULT_BYTE_BURST`].
    fn default() -> Self {
        RateLimit::new(
            RateLimit::DEFAULT_MESSAGES_PER_SECOND,
            RateLimit::DEFAULT_MESSAGE_BURST,
            RateLimit::DEFAULT_BYTES_PER_SECOND,
            RateLimit::DEFAULT_BYTE_BURST,
        )
    }
}

impl RateLimit {
    /// Default sustained message rate: 1,000 per second. Extension messages are an
    /// application's control messages (chat lines, requests, gossip), not bulk data, which
    /// goes through hypercore replication.
    pub const DEFAULT_MESSAGES_PER_SECOND: u64 = 1_000;
    /// Default message burst: 2,000 messages.
    pub const DEFAULT_MESSAGE_BURST: u64 = 2_000;
    /// Default sustained byte rate: 8 MiB per second.
    pub const DEFAULT_BYTES_PER_SECOND: u64 = 8 * 1024 * 1024;
    /// Default byte burst: 16 MiB.
    pub const DEFAULT_BYTE_BURST: u64 = 16 * 1024 * 1024;

    /// `messages_per_second` sustained with bursts of `message_burst` messages, and
    /// `bytes_per_second` sustained with bursts of `byte_burst` bytes. Zero rates or bursts
    /// are raised to 1.
    pub const fn new(
        messages_per_second: u64,
        message_burst: u64,
        bytes_per_second: u64,
        byte_burst: u64,
    ) -> Self {
        RateLimit {
            messages: Some((max1(messages_per_second), max1(message_burst))),
            bytes: Some((max1(bytes_per_second), max1(byte_burst))),
        }
    }

    /// No limit at all (for trusted peers and benchmarks).
    pub const fn unlimited() -> Self {
        RateLimit {
            messages: None,
            bytes: None,
        }
    }

    /// Sustained messages per second and the burst, if messages are limited.
    pub const fn messages(&self) -> Option<(u64, u64)> {
        self.messages
    }

    /// Sustained bytes per second and the burst, if bytes are limited.
    pub const fn bytes(&self) -> Option<(u64, u64)> {
        self.bytes
    }
}

const fn max1(n: u64) -> u64 {
    if n == 0 {
        1
    } else {
        n
    }
}

/// A token bucket with exact integer arithmetic: the level is kept in billionths of a token,
/// so a rate of `r` tokens per second adds exactly `r` billionths per nanosecond.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    /// Tokens added per second.
    rate: u64,
    /// Bucket size in tokens.
    capacity: u64,
    /// Current level in billionths of a token.
    level: u128,
    /// When `level` was last brought up to date.
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(rate: u64, capacity: u64, now: Instant) -> Self {
        TokenBucket {
            rate,
            capacity,
            level: u128::from(capacity) * NANOS_PER_SEC,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        self.last = self.last.max(now);
        let full = u128::from(self.capacity) * NANOS_PER_SEC;
        self.level = self
            .level
            .saturating_add(elapsed.saturating_mul(u128::from(self.rate)))
            .min(full);
    }

    /// Takes `n` tokens (at most the capacity: one item never overflows a full bucket);
    /// false, taking nothing, when there are not enough.
    pub(crate) fn try_take(&mut self, now: Instant, n: u64) -> bool {
        self.refill(now);
        let cost = u128::from(n.min(self.capacity)) * NANOS_PER_SEC;
        if cost > self.level {
            return false;
        }
        self.level -= cost;
        true
    }

    /// Fills the bucket.
    pub(crate) fn fill(&mut self, now: Instant) {
        self.last = self.last.max(now);
        self.level = u128::from(self.capacity) * NANOS_PER_SEC;
    }

    /// Whole tokens available at `now`.
    #[cfg(test)]
    pub(crate) fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        u64::try_from(self.level / NANOS_PER_SEC).unwrap_or(u64::MAX)
    }
}

/// Which bucket ran dry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// Too many messages.
    Messages,
    /// Too many bytes.
    Bytes,
}

/// The two buckets of a [`RateLimit`].
#[derive(Debug, Clone)]
pub(crate) struct RateLimiter {
    /// Messages.
    messages: Option<TokenBucket>,
    /// Bytes.
    bytes: Option<TokenBucket>,
}

impl RateLimiter {
    /// Full buckets.
    pub(crate) fn new(limit: RateLimit, now: Instant) -> Self {
        RateLimiter {
            messages: limit
                .messages
                .map(|(rate, burst)| TokenBucket::new(rate, burst, now)),
            bytes: limit
                .bytes
                .map(|(rate, burst)| TokenBucket::new(rate, burst, now)),
        }
    }

    /// Charges one message of `len` bytes. On failure neither bucket is charged.
    pub(crate) fn check(&mut self, now: Instant, len: usize) -> Result<(), Exceeded> {
        let len = u64::try_from(len).unwrap_or(u64::MAX);
        if let Some(b) = &mut self.messages {
            if !b.try_take(now, 1) {
                return Err(Exceeded::Messages);
            }
        }
        if let Some(b) = &mut self.bytes {
            if !b.try_take(now, len) {
                // Give the message token back: the message was not accepted.
                if let Some(m) = &mut self.messages {
                    m.level = m
                        .level
                        .saturating_add(NANOS_PER_SEC)
                        .min(u128::from(m.capacity) * NANOS_PER_SEC);
                }
                return Err(Exceeded::Bytes);
            }
        }
        Ok(())
    }

    /// Fills both buckets (after we, not the peer, held messages back).
    pub(crate) fn fill(&mut self, now: Instant) {
        if let Some(b) = &mut self.messages {
            b.fill(now);
        }
        if let Some(b) = &mut self.bytes {
            b.fill(now);
        }
    }
}

/// Limits of a [`PendingQueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PendingLimits {
    /// Messages held at most.
    pub(crate) messages: usize,
    /// Payload bytes held at most.
    pub(crate) bytes: usize,
    /// How long a message waits at most.
    pub(crate) timeout: Duration,
}

/// The queue is full (the item is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueFull {
    /// Messages held.
    pub(crate) messages: usize,
    /// Bytes held.
    pub(crate) bytes: usize,
}

/// One waiting item.
#[derive(Debug)]
struct Waiting<T> {
    /// When it gives up.
    deadline: Instant,
    /// Payload bytes it counts for.
    len: usize,
    /// The item.
    item: T,
}

/// Messages waiting for a channel to open: bounded in count and bytes, each with a deadline.
/// FIFO; since every item waits the same time, deadlines only grow along the queue.
#[derive(Debug)]
pub(crate) struct PendingQueue<T> {
    /// The items, oldest first.
    items: VecDeque<Waiting<T>>,
    /// Sum of their lengths.
    bytes: usize,
    /// Limits.
    limits: PendingLimits,
}

impl<T> PendingQueue<T> {
    /// An empty queue.
    pub(crate) fn new(limits: PendingLimits) -> Self {
        PendingQueue {
            items: VecDeque::new(),
            bytes: 0,
            limits,
        }
    }

    /// Queues an item of `len` bytes that gives up at `now` plus the timeout.
    pub(crate) fn push(&mut self, now: Instant, len: usize, item: T) -> Result<(), QueueFull> {
        if self.items.len() >= self.limits.messages
            || self.bytes.saturating_add(len) > self.limits.bytes
        {
            return Err(QueueFull {
                messages: self.items.len(),
                bytes: self.bytes,
            });
        }
        // A clock read on another thread may lag the last one a little: keep deadlines
        // ordered so that expiry can stop at the first live item.
        let mut deadline = now + self.limits.timeout;
        if let Some(last) = self.items.back() {
            deadline = deadline.max(last.deadline);
        }
        self.bytes += len;
        self.items.push_back(Waiting {
            deadline,
            len,
            item,
        });
        Ok(())
    }

    /// When the oldest item gives up.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.items.front().map(|w| w.deadline)
    }

    /// Removes and returns the items whose deadline is at or before `now`.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<T> {
        let mut out = Vec::new();
        while self.items.front().is_some_and(|w| w.deadline <= now) {
            if let Some(w) = self.items.pop_front() {
                self.bytes -= w.len;
                out.push(w.item);
            }
        }
        out
    }

    /// Removes every item, oldest first.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.bytes = 0;
        self.items.drain(..).map(|w| w.item)
    }

    /// Items held.
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Payload bytes held.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn bucket_refills_at_its_rate_up_to_its_capacity() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, 10, t0);
        for _ in 0..10 {
            assert!(b.try_take(t0, 1));
        }
        assert!(!b.try_take(t0, 1), "empty");
        // 100 per second: one token every 10 ms.
        assert!(!b.try_take(t0 + 9 * MS, 1));
        assert!(b.try_take(t0 + 10 * MS, 1));
        assert!(!b.try_take(t0 + 10 * MS, 1));
        // A long pause refills only to the capacity.
        assert_eq!(b.available(t0 + Duration::from_secs(60)), 10);
        // Time going backwards (clock reads from two threads) adds nothing.
        assert_eq!(b.available(t0), 10);
    }

    #[test]
    fn bucket_charges_big_items_at_most_its_capacity() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 100, t0);
        assert!(
            b.try_take(t0, 5000),
            "a full bucket takes one oversized item"
        );
        assert!(!b.try_take(t0, 1));
        b.fill(t0);
        assert_eq!(b.available(t0), 100);
    }

    #[test]
    fn bucket_is_exact_for_rates_that_do_not_divide_a_second() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3, 3, t0);
        assert!(b.try_take(t0, 3));
        // 3 per second: the third token is complete at exactly one second.
        assert_eq!(b.available(t0 + Duration::from_nanos(999_999_999)), 2);
        assert_eq!(b.available(t0 + Duration::from_secs(1)), 3);
    }

    #[test]
    fn limiter_reports_which_bucket_ran_dry_and_charges_nothing_then() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(RateLimit::new(10, 3, 1000, 100), t0);
        assert_eq!(l.check(t0, 60), Ok(()));
        assert_eq!(l.check(t0, 60), Err(Exceeded::Bytes));
        // The refused message cost no message token: two remain.
        assert_eq!(l.check(t0, 10), Ok(()));
        assert_eq!(l.check(t0, 10), Ok(()));
        assert_eq!(l.check(t0, 0), Err(Exceeded::Messages));
        l.fill(t0);
        assert_eq!(l.check(t0, 100), Ok(()));
        let mut free = RateLimiter::new(RateLimit::unlimited(), t0);
        for _ in 0..100_000 {
            assert_eq!(free.check(t0, 1 << 20), Ok(()));
        }
    }

    #[test]
    fn flooding_at_twice_the_rate_is_caught_after_the_burst() {
        let t0 = Instant::now();
        let limit = RateLimit::default();
        let mut l = RateLimiter::new(limit, t0);
        // 2,000 messages per second against a sustained 1,000 with a burst of 2,000: the
        // bucket loses 1,000 per second and runs dry after about two seconds.
        let mut sent = 0u64;
        let failed_at = loop {
            let now = t0 + Duration::from_micros(500 * sent);
            if l.check(now, 32).is_err() {
                break sent;
            }
            sent += 1;
            assert!(sent < 10_000, "never caught");
        };
        assert!((3_990..=4_010).contains(&failed_at), "{failed_at}");
        // Sending at the sustained rate is never caught.
        let mut l = RateLimiter::new(limit, t0);
        for i in 0..20_000u64 {
            assert_eq!(l.check(t0 + Duration::from_millis(i), 32), Ok(()));
        }
    }

    fn limits() -> PendingLimits {
        PendingLimits {
            messages: 3,
            bytes: 100,
            timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn pending_queue_is_bounded_by_count_and_bytes() {
        let t0 = Instant::now();
        let mut q = PendingQueue::new(limits());
        q.push(t0, 60, 'a').unwrap();
        let full = q.push(t0, 41, 'b').unwrap_err();
        assert_eq!((full.messages, full.bytes), (1, 60));
        q.push(t0, 40, 'b').unwrap();
        q.push(t0, 0, 'c').unwrap();
        let full = q.push(t0, 0, 'd').unwrap_err();
        assert_eq!((full.messages, full.bytes), (3, 100));
        assert_eq!((q.len(), q.bytes()), (3, 100));
        assert_eq!(q.drain().collect::<String>(), "abc");
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
        q.push(t0, 100, 'e').unwrap();
    }

    #[test]
    fn pending_queue_expires_in_order() {
        let t0 = Instant::now();
        let mut q = PendingQueue::new(limits());
        q.push(t0, 1, 1).unwrap();
        q.push(t0 + MS, 1, 2).unwrap();
        // A clock read that lags the previous one does not put an item before it.
        q.push(t0, 1, 3).unwrap();
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_secs(10)));
        assert!(q.expire(t0 + Duration::from_secs(9)).is_empty());
        assert_eq!(q.expire(t0 + Duration::from_secs(10)), vec![1]);
        assert_eq!(q.next_deadline(), Some(t0 + MS + Duration::from_secs(10)));
        assert_eq!(q.expire(t0 + Duration::from_secs(11)), vec![2, 3]);
        assert_eq!(q.next_deadline(), None);
        assert_eq!(q.bytes(), 0);
    }
}
