//! How often each peer may open a connection to us: [`MAX_RECONNECTS`] per
//! [`RECONNECT_WINDOW`], counted in a table of at most [`MAX_TRACKED_PEERS`] keys.
//!
//! The table is hard-bounded: when it is full, expired windows are removed first and, if
//! none has expired, the peer whose window began first is forgotten (it starts again from
//! zero). Many keys arriving at once can therefore evict a looping peer's count, but never
//! grow the table. Each check is O(1) below the cap and O(n) at it, a small cost next to the
//! Noise DH the server did to learn the key.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use corenet_codec::PublicKey;

/// Connections one peer may open to us per [`RECONNECT_WINDOW`]; more are refused before the
/// handshake is answered (a peer reconnecting in a tight loop costs us one check each).
pub const MAX_RECONNECTS: u32 = 8;
/// The window of [`MAX_RECONNECTS`].
pub const RECONNECT_WINDOW: Duration = Duration::from_secs(10);
/// Peers whose reconnect counts are remembered at most (when full, expired windows go first,
/// then the oldest window).
pub const MAX_TRACKED_PEERS: usize = 4096;

/// Incoming connection attempts per peer in its current window.
#[derive(Debug, Default)]
pub struct Reconnects {
    /// Per peer: when its window began and how many attempts it made in it.
    windows: HashMap<PublicKey, (Instant, u32)>,
}

impl Reconnects {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts an attempt by `pk` at `now`; `false` if it is over [`MAX_RECONNECTS`] in its
    /// window.
    pub fn check(&mut self, now: Instant, pk: PublicKey) -> bool {
        if !self.windows.contains_key(&pk) && self.windows.len() >= MAX_TRACKED_PEERS {
            self.windows
                .retain(|_, (t, _)| now.saturating_duration_since(*t) < RECONNECT_WINDOW);
            if self.windows.len() >= MAX_TRACKED_PEERS {
                let oldest = self
                    .windows
                    .iter()
                    .min_by_key(|(_, (t, _))| *t)
                    .map(|(k, _)| *k);
                if let Some(k) = oldest {
                    self.windows.remove(&k);
                }
            }
        }
        let entry = self.windows.entry(pk).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= RECONNECT_WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1 <= MAX_RECONNECTS
    }

    /// Peers tracked now.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// Whether no peer is tracked.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> PublicKey {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_le_bytes());
        PublicKey(k)
    }

    #[test]
    fn a_peer_is_refused_after_max_reconnects_until_its_window_ends() {
        let t0 = Instant::now();
        let mut r = Reconnects::new();
        for _ in 0..MAX_RECONNECTS {
            assert!(r.check(t0, key(1)));
        }
        assert!(!r.check(t0, key(1)), "one over the limit");
        assert!(!r.check(t0 + RECONNECT_WINDOW / 2, key(1)));
        assert!(r.check(t0 + RECONNECT_WINDOW, key(1)), "a new window");
    }

    #[test]
    fn more_keys_than_the_cap_within_one_window_keep_the_table_bounded() {
        let t0 = Instant::now();
        let mut r = Reconnects::new();
        // A looping peer, counted to its limit at the start of the window.
        for _ in 0..MAX_RECONNECTS {
            assert!(r.check(t0, key(0)));
        }
        // 5,000 distinct keys within the same window (1 ms apart, so 5 s in all).
        for i in 1..=5_000u32 {
            assert!(r.check(t0 + Duration::from_millis(u64::from(i)), key(i)));
            assert!(r.len() <= MAX_TRACKED_PEERS, "{} tracked", r.len());
        }
        assert_eq!(r.len(), MAX_TRACKED_PEERS);
        // The oldest windows were forgotten, the newest are still counted.
        let late = t0 + Duration::from_millis(5_001);
        for _ in 1..MAX_RECONNECTS {
            assert!(r.check(late, key(5_000)));
        }
        assert!(!r.check(late, key(5_000)), "a recent key keeps its count");
        assert!(r.check(late, key(0)), "the oldest key was evicted");
    }
}
