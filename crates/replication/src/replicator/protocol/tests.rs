//! The protocol state machine driven by hand, against a fake local core: what it sends, to
//! whom, and when.

use super::*;
use crate::messages::Cancel;

/// A local core: its length, fork and which blocks it holds.
#[derive(Debug, Default)]
struct Fake {
    length: u64,
    fork: u64,
    blocks: Bitfield,
    manifest: bool,
}

impl Fake {
    fn empty() -> Self {
        Fake::default()
    }

    fn full(length: u64) -> Self {
        let mut blocks = Bitfield::new();
        blocks.set_range(0..length, true);
        Fake {
            length,
            fork: 0,
            blocks,
            manifest: true,
        }
    }
}

impl LocalView for Fake {
    fn length(&self) -> u64 {
        self.length
    }
    fn byte_length(&self) -> u64 {
        0
    }
    fn fork(&self) -> u64 {
        self.fork
    }
    fn contiguous_length(&self) -> u64 {
        self.blocks.find_first(false, 0).min(self.length)
    }
    fn has(&self, i: u64) -> bool {
        self.blocks.get(i)
    }
    fn next_missing(&self, from: u64) -> u64 {
        self.blocks.find_first(false, from)
    }
    fn next_present(&self, from: u64, to: u64) -> Option<u64> {
        let n = self.blocks.find_first(true, from);
        (n < to).then_some(n)
    }
    fn count(&self, from: u64, to: u64) -> u64 {
        self.blocks.count(from..to)
    }
    fn words(&self, start: u64, count: usize) -> Vec<u32> {
        self.blocks.words_u32(start, count)
    }
    fn has_manifest(&self) -> bool {
        self.manifest
    }
    fn needs_manifest(&self) -> bool {
        !self.manifest
    }
    fn upgradeable(&self, length: u64) -> bool {
        length <= self.length
    }
    fn missing_nodes(&self, _index: u64) -> u64 {
        3
    }
}

fn proto(max_inflight: usize) -> Protocol {
    Protocol::new(ProtocolConfig {
        max_inflight,
        max_inflight_bytes: u64::MAX,
    })
}

fn drain(p: &mut Protocol) -> Vec<Transmit> {
    std::iter::from_fn(|| p.poll_transmit()).collect()
}

fn events(p: &mut Protocol) -> Vec<ProtoEvent> {
    std::iter::from_fn(|| p.poll_event()).collect()
}

fn sync(length: u64, remote_length: u64, can_upgrade: bool) -> Sync {
    Sync {
        fork: 0,
        length,
        remote_length,
        can_upgrade,
        uploading: true,
        downloading: true,
        has_manifest: true,
        allow_push: false,
    }
}

fn requests(out: &[Transmit]) -> Vec<(PeerId, Request)> {
    out.iter()
        .filter_map(|t| match &t.message {
            Message::Request(r) => Some((t.peer, *r)),
            _ => None,
        })
        .collect()
}

fn blocks_of(reqs: &[(PeerId, Request)]) -> Vec<u64> {
    reqs.iter()
        .filter_map(|(_, r)| r.proof.block.map(|b| b.index))
        .collect()
}

/// A peer that synced a full core of `length` blocks.
fn seeder(p: &mut Protocol, local: &Fake, length: u64) -> PeerId {
    let id = p.add_peer(local);
    p.on_range(
        local,
        id,
        &Range {
            drop: false,
            start: 0,
            length,
        },
    );
    p.on_sync(local, id, &sync(length, local.length, true));
    id
}

#[test]
fn a_new_peer_gets_sync_and_our_range() {
    let local = Fake::full(10);
    let mut p = proto(16);
    let id = p.add_peer(&local);
    let out = drain(&mut p);
    assert_eq!(
        out,
        [
            Transmit {
                peer: id,
                message: Message::Sync(Sync {
                    fork: 0,
                    length: 10,
                    remote_length: 0,
                    can_upgrade: true,
                    uploading: true,
                    downloading: true,
                    has_manifest: true,
                    allow_push: false,
                }),
            },
            Transmit {
                peer: id,
                message: Message::Range(Range {
                    drop: false,
                    start: 0,
                    length: 10,
                }),
            },
        ]
    );
    // An empty core announces no range.
    let mut q = proto(16);
    q.add_peer(&Fake::empty());
    assert!(matches!(
        &drain(&mut q)[..],
        [Transmit {
            message: Message::Sync(_),
            ..
        }]
    ));
}

#[test]
fn a_shorter_peer_gets_another_sync_after_its_own() {
    let local = Fake::full(10);
    let mut p = proto(16);
    let id = p.add_peer(&local);
    drain(&mut p);
    p.on_sync(&local, id, &sync(4, 10, false));
    let out = drain(&mut p);
    // We tell it our length again, now acknowledging its 4 and offering the upgrade.
    assert_eq!(
        out,
        [Transmit {
            peer: id,
            message: Message::Sync(Sync {
                remote_length: 4,
                can_upgrade: true,
                ..sync(10, 4, true)
            }),
        }]
    );
}

#[test]
fn an_empty_core_follows_a_longer_peer_and_asks_for_the_manifest() {
    let local = Fake::empty();
    let mut p = proto(16);
    let id = p.add_peer(&local);
    drain(&mut p);
    p.on_sync(&local, id, &sync(100, 0, true));
    let reqs = requests(&drain(&mut p));
    assert_eq!(reqs.len(), 1);
    let r = reqs[0].1;
    assert_eq!(r.id, 1);
    assert_eq!(
        r.proof.upgrade,
        Some(RequestUpgrade {
            start: 0,
            length: 100
        })
    );
    assert!(r.proof.manifest);
    assert!(r.proof.block.is_none());
    // Only one upgrade at a time.
    p.on_sync(&local, id, &sync(101, 0, true));
    assert!(requests(&drain(&mut p)).is_empty());
}

#[test]
fn a_range_is_requested_up_to_the_inflight_limit_and_spread_over_peers() {
    let mut local = Fake {
        length: 100,
        manifest: true,
        ..Fake::default()
    };
    let mut p = proto(8);
    let a = seeder(&mut p, &local, 100);
    let b = seeder(&mut p, &local, 100);
    drain(&mut p);
    let range = p.add_range(&local, 0, Some(100));
    let reqs = requests(&drain(&mut p));
    assert_eq!(reqs.len(), 16, "8 per peer");
    let mut blocks = blocks_of(&reqs);
    blocks.sort_unstable();
    assert_eq!(
        blocks,
        (0..16).collect::<Vec<_>>(),
        "distinct, from the start"
    );
    assert_eq!(reqs.iter().filter(|(peer, _)| *peer == a).count(), 8);
    assert_eq!(reqs.iter().filter(|(peer, _)| *peer == b).count(), 8);
    for (_, r) in &reqs {
        assert_eq!(r.proof.block.unwrap().nodes, 3, "missing nodes filled in");
        assert!(r.proof.upgrade.is_none());
    }

    // One answer frees a slot: the peer that answered gets the next block.
    let (peer, first) = reqs[0];
    p.end_data(&local, peer, first.id, DataOutcome::Applied { bytes: 10 });
    let next = requests(&drain(&mut p));
    assert_eq!(blocks_of(&next), [16]);
    assert_eq!(next[0].0, peer);
    assert_eq!(
        p.range_progress(&local, range),
        Some(RangeProgress {
            done: 0,
            total: 100,
            complete: false
        }),
        "progress follows the core, not the answers"
    );

    // A peer that leaves gives its blocks back: as the other one's answers free slots, it
    // asks for them first (they are the lowest blocks missing).
    let other = if peer == a { b } else { a };
    let theirs: Vec<u64> = reqs
        .iter()
        .filter(|(p2, _)| *p2 == other)
        .filter_map(|(_, r)| r.proof.block.map(|b| b.index))
        .collect();
    p.remove_peer(&local, other);
    assert!(requests(&drain(&mut p)).is_empty(), "no free slot yet");
    let mut again = Vec::new();
    let mine: Vec<Request> = next
        .iter()
        .chain(reqs.iter().filter(|(p2, _)| *p2 == peer))
        .map(|(_, r)| *r)
        .filter(|r| r.id != first.id)
        .collect();
    for r in mine {
        local.blocks.set(r.proof.block.unwrap().index, true);
        p.end_data(&local, peer, r.id, DataOutcome::Applied { bytes: 10 });
        again.extend(blocks_of(&requests(&drain(&mut p))));
    }
    for b in theirs {
        assert!(
            again.contains(&b),
            "block {b} of the departed peer not asked again: {again:?}"
        );
    }
}

#[test]
fn a_rejected_proof_closes_the_peer_once_and_the_block_goes_elsewhere() {
    let local = Fake {
        length: 10,
        manifest: true,
        ..Fake::default()
    };
    let mut p = proto(1);
    let evil = seeder(&mut p, &local, 10);
    drain(&mut p);
    p.add_want(&local, 5);
    let reqs = requests(&drain(&mut p));
    assert_eq!(blocks_of(&reqs), [5]);
    assert_eq!(reqs[0].1.priority, PRIORITY_HIGH);
    p.end_data(&local, evil, reqs[0].1.id, DataOutcome::Rejected);
    assert_eq!(events(&mut p), [ProtoEvent::ClosePeer(evil)]);
    assert!(!p.is_active(evil));
    assert!(
        requests(&drain(&mut p)).is_empty(),
        "no more requests to it"
    );
    let good = seeder(&mut p, &local, 10);
    let reqs = requests(&drain(&mut p));
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].0, good);
    assert_eq!(blocks_of(&reqs), [5]);
    assert!(events(&mut p).is_empty());
}

#[test]
fn a_dropped_want_cancels_its_request() {
    let local = Fake {
        length: 10,
        manifest: true,
        ..Fake::default()
    };
    let mut p = proto(4);
    let peer = seeder(&mut p, &local, 10);
    drain(&mut p);
    p.add_want(&local, 3);
    p.add_want(&local, 3);
    let id = requests(&drain(&mut p))[0].1.id;
    p.remove_want(3);
    assert!(drain(&mut p).is_empty(), "one waiter is left");
    p.remove_want(3);
    assert_eq!(
        drain(&mut p),
        [Transmit {
            peer,
            message: Message::Cancel(Cancel { request: id }),
        }]
    );
    // Its late answer is ignored.
    let late = Data {
        request: id,
        proof: crate::messages::Proof::default(),
    };
    assert_eq!(p.begin_data(&local, peer, &late), DataStep::Ignore);
}

#[test]
fn data_that_does_not_match_its_request_is_dropped() {
    let local = Fake {
        length: 10,
        manifest: true,
        ..Fake::default()
    };
    let mut p = proto(1);
    let peer = seeder(&mut p, &local, 10);
    drain(&mut p);
    p.add_want(&local, 2);
    let id = requests(&drain(&mut p))[0].1.id;
    let wrong = Data {
        request: id,
        proof: crate::messages::Proof {
            block: Some(crate::messages::DataBlock {
                index: 3,
                ..Default::default()
            }),
            ..Default::default()
        },
    };
    // Another peer's id, and a wrong block: both ignored; the second frees the slot.
    let other = p.add_peer(&local);
    assert_eq!(p.begin_data(&local, other, &wrong), DataStep::Ignore);
    assert_eq!(p.begin_data(&local, peer, &wrong), DataStep::Ignore);
    let reqs = requests(&drain(&mut p));
    assert_eq!(blocks_of(&reqs), [2], "asked again");
}

#[test]
fn wants_are_answered_with_range_or_bitfields() {
    // Contiguous: one range.
    let full = Fake::full(100);
    let mut p = proto(4);
    let id = p.add_peer(&full);
    drain(&mut p);
    p.on_want(
        &full,
        id,
        &Want {
            start: 0,
            length: WANT_BATCH,
            any: false,
        },
    );
    assert_eq!(
        drain(&mut p),
        [Transmit {
            peer: id,
            message: Message::Range(Range {
                drop: false,
                start: 0,
                length: 100
            }),
        }]
    );
    // Sparse: the bitfield words of the range.
    let mut sparse = Fake::full(0);
    sparse.length = 100;
    for i in [1u64, 33, 64, 99] {
        sparse.blocks.set(i, true);
    }
    let mut p = proto(4);
    let id = p.add_peer(&sparse);
    drain(&mut p);
    p.on_want(
        &sparse,
        id,
        &Want {
            start: 0,
            length: WANT_BATCH,
            any: false,
        },
    );
    let out = drain(&mut p);
    assert_eq!(out.len(), 1);
    let Message::Bitfield(b) = &out[0].message else {
        panic!("{out:?}")
    };
    assert_eq!(b.start, 0);
    assert_eq!(b.bitfield, [1 << 1, 1 << 1, 1, 1 << 3]);
    // "Any": the first block held in the range.
    p.on_want(
        &sparse,
        id,
        &Want {
            start: 30,
            length: 50,
            any: true,
        },
    );
    assert_eq!(
        drain(&mut p)[0].message,
        Message::Range(Range {
            drop: false,
            start: 33,
            length: 1
        })
    );
    // Too large a want is ignored (JS MAX_RANGE).
    p.on_want(
        &sparse,
        id,
        &Want {
            start: 0,
            length: 4 * WANT_BATCH,
            any: false,
        },
    );
    assert!(drain(&mut p).is_empty());
}

#[test]
fn a_sparse_peer_is_asked_what_it_has() {
    let local = Fake {
        length: 100,
        manifest: true,
        ..Fake::default()
    };
    let mut p = proto(4);
    let peer = p.add_peer(&local);
    p.on_sync(&local, peer, &sync(100, 100, true));
    drain(&mut p);
    p.add_want(&local, 50);
    // It did not say it has block 50: we send a want for the batch, once.
    let out = drain(&mut p);
    assert_eq!(
        out,
        [Transmit {
            peer,
            message: Message::Want(Want {
                start: 0,
                length: WANT_BATCH,
                any: false
            }),
        }]
    );
    p.add_want(&local, 51);
    assert!(drain(&mut p).is_empty());
    // Its bitfield answer makes the block requestable.
    let mut words = vec![0u32; 4];
    words[1] = 1 << (50 - 32);
    p.on_bitfield(
        &local,
        peer,
        &BitfieldMessage {
            start: 0,
            bitfield: words,
        },
    );
    assert_eq!(blocks_of(&requests(&drain(&mut p))), [50]);
}

#[test]
fn remote_bits_far_beyond_our_length_are_not_kept() {
    let local = Fake::full(10);
    let mut p = proto(4);
    let peer = p.add_peer(&local);
    p.on_range(
        &local,
        peer,
        &Range {
            drop: false,
            start: 5,
            length: u64::MAX / 2,
        },
    );
    let stats = p.peer_stats(peer).unwrap();
    assert_eq!(stats.remote_contiguous, 0);
    let bits = &p.peers[&peer].remote_bitfield;
    assert!(bits.get(5) && bits.get(10 + REMOTE_BITFIELD_AHEAD - 1));
    assert!(!bits.get(10 + REMOTE_BITFIELD_AHEAD));
    // A range from 0 is just a number, whatever its size.
    p.on_range(
        &local,
        peer,
        &Range {
            drop: false,
            start: 0,
            length: u64::MAX,
        },
    );
    assert_eq!(p.peer_stats(peer).unwrap().remote_contiguous, u64::MAX);
}

#[test]
fn no_data_backs_off_then_pauses_the_peer() {
    let local = Fake {
        length: 1000,
        manifest: true,
        ..Fake::default()
    };
    let mut p = proto(1);
    let peer = seeder(&mut p, &local, 1000);
    drain(&mut p);
    let _range = p.add_range(&local, 0, Some(1000));
    for n in 0..MAX_BACKOFFS {
        let reqs = requests(&drain(&mut p));
        assert_eq!(reqs.len(), 1, "round {n}");
        p.on_no_data(
            &local,
            peer,
            &NoData {
                request: reqs[0].1.id,
                reason: NOT_AVAILABLE,
            },
        );
    }
    assert!(!p.is_active(peer));
    assert!(requests(&drain(&mut p)).is_empty());
}

#[test]
fn update_waiters_resolve_false_then_true() {
    let mut local = Fake {
        length: 10,
        manifest: true,
        ..Fake::full(10)
    };
    let mut p = proto(4);
    // No peers: nothing newer.
    let w0 = p.add_update_waiter(&local);
    assert_eq!(
        events(&mut p),
        [ProtoEvent::UpdateDone {
            waiter: w0,
            upgraded: false
        }]
    );
    // A peer that is opening: wait for it.
    p.peer_opening();
    let w1 = p.add_update_waiter(&local);
    assert!(events(&mut p).is_empty());
    let peer = p.add_peer(&local);
    assert!(events(&mut p).is_empty(), "not synced yet");
    p.on_sync(&local, peer, &sync(10, 10, false));
    assert_eq!(
        events(&mut p),
        [ProtoEvent::UpdateDone {
            waiter: w1,
            upgraded: false
        }]
    );
    // It announces more: we ask for it at once (we follow longer peers), and an update
    // called meanwhile resolves true once we grew.
    p.on_sync(&local, peer, &sync(12, 10, true));
    let reqs = requests(&drain(&mut p));
    assert_eq!(reqs.len(), 1);
    assert!(reqs[0].1.proof.upgrade.is_some());
    let w2 = p.add_update_waiter(&local);
    assert!(events(&mut p).is_empty(), "the upgrade is in flight");
    local.length = 12;
    local.blocks.set_range(10..12, true);
    p.end_data(
        &local,
        peer,
        reqs[0].1.id,
        DataOutcome::Applied { bytes: 0 },
    );
    assert_eq!(
        events(&mut p),
        [ProtoEvent::UpdateDone {
            waiter: w2,
            upgraded: true
        }]
    );
}

#[test]
fn a_block_beyond_our_length_comes_with_the_upgrade() {
    let local = Fake {
        length: 10,
        manifest: true,
        ..Fake::default()
    };
    let mut p = proto(4);
    p.add_want(&local, 15);
    let peer = p.add_peer(&local);
    p.on_range(
        &local,
        peer,
        &Range {
            drop: false,
            start: 0,
            length: 20,
        },
    );
    drain(&mut p);
    p.on_sync(&local, peer, &sync(20, 10, true));
    let reqs = requests(&drain(&mut p));
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let r = reqs[0].1.proof;
    assert_eq!(r.block.map(|b| b.index), Some(15));
    assert_eq!(
        r.upgrade,
        Some(RequestUpgrade {
            start: 10,
            length: 10
        })
    );
}

#[test]
fn haves_reach_peers_that_may_care() {
    let mut local = Fake::full(10);
    let mut p = proto(4);
    let peer = p.add_peer(&local);
    p.on_sync(&local, peer, &sync(0, 10, false));
    drain(&mut p);
    // We append: the peer hears our new length and the full range.
    local.length = 12;
    local.blocks.set_range(10..12, true);
    p.on_have(&local, 10, 2);
    p.on_length_changed(&local, None);
    let out = drain(&mut p);
    assert!(out.contains(&Transmit {
        peer,
        message: Message::Range(Range {
            drop: false,
            start: 0,
            length: 12
        })
    }));
    assert!(out
        .iter()
        .any(|t| matches!(t.message, Message::Sync(Sync { length: 12, .. }))));
    // A peer that has everything hears nothing about blocks.
    let mut q = proto(4);
    let full_peer = q.add_peer(&local);
    q.on_range(
        &local,
        full_peer,
        &Range {
            drop: false,
            start: 0,
            length: 12,
        },
    );
    drain(&mut q);
    q.on_have(&local, 11, 1);
    assert!(drain(&mut q).is_empty());
}

#[test]
fn the_request_limit_follows_the_block_size() {
    let c = ProtocolConfig {
        max_inflight: 1024,
        max_inflight_bytes: 8 << 20,
    };
    assert_eq!(c.limit(0), 1024);
    assert_eq!(c.limit(4096), 1024);
    assert_eq!(c.limit(65536), 128);
    assert_eq!(c.limit(4 << 20), MIN_INFLIGHT);
    let tight = ProtocolConfig {
        max_inflight: 4,
        max_inflight_bytes: 8 << 20,
    };
    assert_eq!(tight.limit(65536), 4, "the count cap wins");
}

/// A core of `LENGTH` blocks that holds only `HELD`, far from its head, and a peer: whether
/// a new block there is announced to the peer tells whether the peer is taken to want it.
mod remote_wants {
    use super::*;

    const LENGTH: u64 = 10_000_000;
    const HELD: u64 = 5_000_000;

    fn setup() -> (Fake, Protocol, PeerId) {
        let mut local = Fake::empty();
        local.length = LENGTH;
        local.blocks.set(HELD, true);
        let mut p = proto(4);
        let id = p.add_peer(&local);
        drain(&mut p);
        (local, p, id)
    }

    fn announced(local: &Fake, p: &mut Protocol, id: PeerId) -> bool {
        p.on_have(local, HELD, 1);
        drain(p).contains(&Transmit {
            peer: id,
            message: Message::Range(Range {
                drop: false,
                start: HELD,
                length: 1,
            }),
        })
    }

    /// Distinct valid wants, all past our length (so none covers `HELD`).
    fn want(i: u64, any: bool) -> Want {
        Want {
            start: 2 * LENGTH + 10 * i,
            length: 1,
            any,
        }
    }

    #[test]
    fn the_want_after_max_remote_wants_makes_the_peer_want_everything() {
        let (local, mut p, id) = setup();
        for i in 0..MAX_REMOTE_WANTS as u64 {
            p.on_want(&local, id, &want(i, false));
        }
        assert!(
            !announced(&local, &mut p, id),
            "{MAX_REMOTE_WANTS} wants are tracked one by one"
        );
        p.on_want(&local, id, &want(MAX_REMOTE_WANTS as u64, false));
        assert!(announced(&local, &mut p, id), "one more: wants everything");
    }

    #[test]
    fn the_any_want_after_max_remote_any_wants_makes_the_peer_want_everything() {
        let (local, mut p, id) = setup();
        for i in 0..MAX_REMOTE_ANY_WANTS as u64 {
            p.on_want(&local, id, &want(i, true));
        }
        assert!(!announced(&local, &mut p, id));
        p.on_want(&local, id, &want(MAX_REMOTE_ANY_WANTS as u64, true));
        assert!(announced(&local, &mut p, id));
    }

    #[test]
    fn a_want_longer_than_max_want_range_is_ignored() {
        let (local, mut p, id) = setup();
        let covering = |length| Want {
            start: HELD - HELD % 32,
            length,
            any: false,
        };
        p.on_want(&local, id, &covering(2 * MAX_WANT_RANGE));
        assert!(drain(&mut p).is_empty(), "no bitfield for it");
        assert!(!announced(&local, &mut p, id), "and it is not remembered");
        p.on_want(&local, id, &covering(MAX_WANT_RANGE));
        assert!(!drain(&mut p).is_empty(), "at the limit it is answered");
        assert!(announced(&local, &mut p, id), "and remembered");
    }
}
