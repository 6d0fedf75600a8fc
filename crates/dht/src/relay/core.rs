//! The relay's pairing table, sans-IO: which `pair` requests wait for their other half,
//! which tokens are linked, and what goes when a session (one peer's channel) closes. No
//! sockets, no clock (time is an input); every table is bounded.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::messages::Pair;

/// Identifies a session: one peer's `blind-relay` channel.
pub type SessionId = u64;

/// Pairings one session may have waiting at once.
pub const MAX_PENDING_PER_SESSION: usize = 16;
/// Pairings waiting at once on the whole relay.
pub const MAX_PENDING: usize = 1024;
/// Links one session may hold.
pub const MAX_LINKS_PER_SESSION: usize = 64;
/// Links on the whole relay (two relayed streams each).
pub const MAX_LINKS: usize = 4096;
/// How long a half pairing waits for its other half (the peers give up after 15 s).
pub const PENDING_TIMEOUT: Duration = Duration::from_secs(30);

/// One side of a pairing: its session and the UDX stream id it announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Side {
    /// The session it came on.
    pub session: SessionId,
    /// Its UDX stream id (the relay's stream for it connects to this id).
    pub stream_id: u32,
}

/// What a `pair` led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairOutcome {
    /// Waiting for the other half.
    Waiting,
    /// Both halves are here: make the two streams and answer both.
    Matched {
        /// The token.
        token: [u8; 32],
        /// The initiator's side.
        initiator: Side,
        /// The other side.
        responder: Side,
    },
    /// Ignored: a duplicate half, or a limit was hit (the reason is logged).
    Refused(&'static str),
}

#[derive(Debug)]
struct Pending {
    sides: [Option<Side>; 2],
    since: Instant,
}

/// Counters, as blind-relay's `stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CoreStats {
    /// `pair` requests accepted.
    pub requested: u64,
    /// Pairings matched.
    pub matched: u64,
    /// Pairings cancelled (unpair, session closed, expired).
    pub cancelled: u64,
    /// Requests refused by a limit.
    pub refused: u64,
}

/// The pairing table.
#[derive(Debug, Default)]
pub struct RelayCore {
    pending: HashMap<[u8; 32], Pending>,
    /// Linked tokens and their two sessions.
    links: HashMap<[u8; 32], [SessionId; 2]>,
    stats: CoreStats,
}

fn index(is_initiator: bool) -> usize {
    usize::from(is_initiator)
}

impl RelayCore {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counters.
    pub fn stats(&self) -> CoreStats {
        self.stats
    }

    /// Pairings waiting.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Links alive.
    pub fn links(&self) -> usize {
        self.links.len()
    }

    fn pending_of(&self, session: SessionId) -> usize {
        self.pending
            .values()
            .filter(|p| p.sides.iter().flatten().any(|s| s.session == session))
            .count()
    }

    fn links_of(&self, session: SessionId) -> usize {
        self.links.values().filter(|s| s.contains(&session)).count()
    }

    /// A `pair` arrived on `session`.
    pub fn pair(&mut self, now: Instant, session: SessionId, msg: &Pair) -> PairOutcome {
        let side = Side {
            session,
            stream_id: msg.id,
        };
        if self.links.contains_key(&msg.token) {
            self.stats.refused += 1;
            return PairOutcome::Refused("token already linked");
        }
        let i = index(msg.is_initiator);
        if let Some(p) = self.pending.get(&msg.token) {
            if p.sides[i].is_some() {
                return PairOutcome::Refused("this side is already waiting");
            }
            let Some(other) = p.sides[1 - i] else {
                return PairOutcome::Refused("broken pairing");
            };
            // Both sessions count: the waiting one too, or a session could hold any number
            // of links by always being the first half.
            if self.links.len() >= MAX_LINKS
                || self.links_of(session) >= MAX_LINKS_PER_SESSION
                || self.links_of(other.session) >= MAX_LINKS_PER_SESSION
            {
                self.stats.refused += 1;
                return PairOutcome::Refused("link limit");
            }
            self.pending.remove(&msg.token);
            self.stats.requested += 1;
            self.stats.matched += 1;
            self.links.insert(msg.token, [other.session, session]);
            let (initiator, responder) = if msg.is_initiator {
                (side, other)
            } else {
                (other, side)
            };
            return PairOutcome::Matched {
                token: msg.token,
                initiator,
                responder,
            };
        }
        if self.pending.len() >= MAX_PENDING || self.pending_of(session) >= MAX_PENDING_PER_SESSION
        {
            self.stats.refused += 1;
            return PairOutcome::Refused("pending limit");
        }
        let mut sides = [None, None];
        sides[i] = Some(side);
        self.pending
            .insert(msg.token, Pending { sides, since: now });
        self.stats.requested += 1;
        PairOutcome::Waiting
    }

    /// An `unpair` arrived: a waiting pairing is cancelled (returns `false`), a link is to be
    /// torn down (returns `true`: destroy its streams, then call [`RelayCore::link_closed`]).
    pub fn unpair(&mut self, session: SessionId, token: &[u8; 32]) -> bool {
        if let Some(p) = self.pending.get(token) {
            if p.sides.iter().flatten().any(|s| s.session == session) {
                self.pending.remove(token);
                self.stats.cancelled += 1;
            }
            return false;
        }
        self.links
            .get(token)
            .is_some_and(|sessions| sessions.contains(&session))
    }

    /// A link's streams are gone.
    pub fn link_closed(&mut self, token: &[u8; 32]) {
        self.links.remove(token);
    }

    /// A session closed: its waiting pairings go, and the links it is part of are returned
    /// (destroy their streams, then [`RelayCore::link_closed`]).
    pub fn session_closed(&mut self, session: SessionId) -> Vec<[u8; 32]> {
        let before = self.pending.len();
        self.pending
            .retain(|_, p| !p.sides.iter().flatten().any(|s| s.session == session));
        self.stats.cancelled += (before - self.pending.len()) as u64;
        self.links
            .iter()
            .filter(|(_, s)| s.contains(&session))
            .map(|(t, _)| *t)
            .collect()
    }

    /// Drops pairings that waited longer than [`PENDING_TIMEOUT`].
    pub fn expire(&mut self, now: Instant) {
        let before = self.pending.len();
        self.pending
            .retain(|_, p| now.saturating_duration_since(p.since) < PENDING_TIMEOUT);
        self.stats.cancelled += (before - self.pending.len()) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(init: bool, token: u8, id: u32) -> Pair {
        Pair {
            is_initiator: init,
            token: [token; 32],
            id,
            seq: 0,
        }
    }

    #[test]
    fn two_halves_match_once() {
        let now = Instant::now();
        let mut c = RelayCore::new();
        assert_eq!(c.pair(now, 1, &pair(true, 7, 10)), PairOutcome::Waiting);
        assert!(matches!(
            c.pair(now, 1, &pair(true, 7, 11)),
            PairOutcome::Refused(_)
        ));
        let m = c.pair(now, 2, &pair(false, 7, 20));
        assert_eq!(
            m,
            PairOutcome::Matched {
                token: [7; 32],
                initiator: Side {
                    session: 1,
                    stream_id: 10
                },
                responder: Side {
                    session: 2,
                    stream_id: 20
                },
            }
        );
        assert_eq!((c.pending(), c.links()), (0, 1));
        assert!(matches!(
            c.pair(now, 3, &pair(false, 7, 30)),
            PairOutcome::Refused(_)
        ));
        assert!(c.unpair(2, &[7; 32]));
        assert!(!c.unpair(3, &[7; 32]), "a stranger cannot tear a link down");
        assert_eq!(c.session_closed(1), vec![[7; 32]]);
        c.link_closed(&[7; 32]);
        assert_eq!(c.links(), 0);
    }

    #[test]
    fn waiting_pairings_are_bounded_cancelled_and_expire() {
        let now = Instant::now();
        let mut c = RelayCore::new();
        for t in 0..MAX_PENDING_PER_SESSION as u8 {
            assert_eq!(c.pair(now, 1, &pair(true, t, 1)), PairOutcome::Waiting);
        }
        assert!(matches!(
            c.pair(now, 1, &pair(true, 200, 1)),
            PairOutcome::Refused(_)
        ));
        assert!(!c.unpair(1, &[0; 32]));
        assert_eq!(c.pending(), MAX_PENDING_PER_SESSION - 1);
        assert!(c.session_closed(1).is_empty());
        assert_eq!(c.pending(), 0);
        c.pair(now, 2, &pair(true, 1, 1));
        c.expire(now + PENDING_TIMEOUT);
        assert_eq!(c.pending(), 0);
        assert_eq!(c.stats().cancelled, MAX_PENDING_PER_SESSION as u64 + 1);
    }

    /// Pairing token number `n`.
    fn token(n: u32) -> [u8; 32] {
        let mut t = [0; 32];
        t[..4].copy_from_slice(&n.to_le_bytes());
        t
    }

    fn half(init: bool, n: u32) -> Pair {
        Pair {
            is_initiator: init,
            token: token(n),
            id: n,
            seq: 0,
        }
    }

    #[test]
    fn a_1025th_waiting_pairing_is_refused_across_sessions() {
        let now = Instant::now();
        let mut c = RelayCore::new();
        let sessions = (MAX_PENDING / MAX_PENDING_PER_SESSION) as u64;
        let mut n = 0;
        for session in 0..sessions {
            for _ in 0..MAX_PENDING_PER_SESSION {
                assert_eq!(c.pair(now, session, &half(true, n)), PairOutcome::Waiting);
                n += 1;
            }
        }
        assert_eq!(c.pending(), MAX_PENDING);
        // A fresh session, far under its own limit, meets the global one.
        assert_eq!(
            c.pair(now, sessions, &half(true, n)),
            PairOutcome::Refused("pending limit")
        );
        assert_eq!(c.stats().refused, 1);
        // Completing a waiting pairing is not a new wait, so it still works.
        assert!(matches!(
            c.pair(now, sessions, &half(false, 0)),
            PairOutcome::Matched { .. }
        ));
        assert_eq!(c.pair(now, sessions, &half(true, n)), PairOutcome::Waiting);
    }

    #[test]
    fn a_65th_link_of_a_session_is_refused_whichever_half_it_sends() {
        let now = Instant::now();
        let mut c = RelayCore::new();
        let busy = 1;
        let mut n = 0;
        // 64 links: the busy session sends the first half of half of them (waiting at most
        // 16 at a time), the second half of the others.
        for round in 0..MAX_LINKS_PER_SESSION / 16 {
            for k in 0..16 {
                let partner = 100 + n as u64;
                if round % 2 == 0 {
                    assert_eq!(c.pair(now, busy, &half(true, n)), PairOutcome::Waiting);
                    assert!(matches!(
                        c.pair(now, partner, &half(false, n)),
                        PairOutcome::Matched { .. }
                    ));
                } else {
                    assert_eq!(c.pair(now, partner, &half(true, n)), PairOutcome::Waiting);
                    assert!(
                        matches!(
                            c.pair(now, busy, &half(false, n)),
                            PairOutcome::Matched { .. }
                        ),
                        "{k}"
                    );
                }
                n += 1;
            }
        }
        assert_eq!(c.links(), MAX_LINKS_PER_SESSION);
        // The 65th: refused when the busy session completes it...
        assert_eq!(c.pair(now, 900, &half(true, n)), PairOutcome::Waiting);
        assert_eq!(
            c.pair(now, busy, &half(false, n)),
            PairOutcome::Refused("link limit")
        );
        // ... and when it waited first and another session completes it.
        assert_eq!(c.pair(now, busy, &half(true, n + 1)), PairOutcome::Waiting);
        assert_eq!(
            c.pair(now, 901, &half(false, n + 1)),
            PairOutcome::Refused("link limit")
        );
        assert_eq!(c.links(), MAX_LINKS_PER_SESSION);
        // A link torn down makes room.
        let gone = token(0);
        assert!(c.unpair(busy, &gone));
        c.link_closed(&gone);
        assert!(matches!(
            c.pair(now, busy, &half(false, n)),
            PairOutcome::Matched { .. }
        ));
    }

    #[test]
    fn a_4097th_link_is_refused() {
        let now = Instant::now();
        let mut c = RelayCore::new();
        let mut n = 0;
        let pairs_of_sessions = (MAX_LINKS / MAX_LINKS_PER_SESSION) as u64;
        for s in 0..pairs_of_sessions {
            for _ in 0..MAX_LINKS_PER_SESSION {
                assert_eq!(c.pair(now, 2 * s, &half(true, n)), PairOutcome::Waiting);
                assert!(matches!(
                    c.pair(now, 2 * s + 1, &half(false, n)),
                    PairOutcome::Matched { .. }
                ));
                n += 1;
            }
        }
        assert_eq!(c.links(), MAX_LINKS);
        let fresh = 2 * pairs_of_sessions;
        assert_eq!(c.pair(now, fresh, &half(true, n)), PairOutcome::Waiting);
        assert_eq!(
            c.pair(now, fresh + 1, &half(false, n)),
            PairOutcome::Refused("link limit")
        );
        assert_eq!(c.links(), MAX_LINKS);
    }
}
