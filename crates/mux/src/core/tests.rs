//! Core tests: two [`Mux`]es wired back to back, with delivery under the test's control.

use std::collections::{HashMap, HashSet, VecDeque};

use bytes::{Bytes, BytesMut};
use corenet_codec::to_vec;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::wire::{Control, ControlFrame, Open};

/// One side: a mux, the frames on their way to it, and the events it produced.
struct Side {
    mux: Mux,
    inbox: VecDeque<Bytes>,
    events: Vec<Event>,
}

impl Side {
    fn new(config: Config) -> Self {
        Side {
            mux: Mux::new(config),
            inbox: VecDeque::new(),
            events: Vec::new(),
        }
    }

    fn drain_events(&mut self) {
        while let Some(e) = self.mux.poll_event() {
            self.events.push(e);
        }
    }

    fn take_events(&mut self) -> Vec<Event> {
        self.drain_events();
        std::mem::take(&mut self.events)
    }
}

/// Two muxes connected by FIFO queues.
struct Pair {
    a: Side,
    b: Side,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum To {
    A,
    B,
}

impl Pair {
    fn new() -> Self {
        Pair::with_config(Config::default())
    }

    fn with_config(config: Config) -> Self {
        Pair {
            a: Side::new(config.clone()),
            b: Side::new(config),
        }
    }

    /// Moves what each side transmitted into the other's inbox.
    fn flush(&mut self) {
        while let Some(f) = self.a.mux.poll_transmit() {
            self.b.inbox.push_back(f);
        }
        while let Some(f) = self.b.mux.poll_transmit() {
            self.a.inbox.push_back(f);
        }
    }

    /// Delivers one frame to a side; false when none was waiting.
    fn deliver_one(&mut self, to: To) -> bool {
        self.flush();
        let side = match to {
            To::A => &mut self.a,
            To::B => &mut self.b,
        };
        let Some(frame) = side.inbox.pop_front() else {
            return false;
        };
        side.mux.handle_frame(frame).expect("valid frame");
        side.drain_events();
        side.mux.check_invariants();
        true
    }

    /// Delivers everything in flight, both ways, until quiet.
    fn run(&mut self) {
        loop {
            let a = self.deliver_one(To::A);
            let b = self.deliver_one(To::B);
            if !a && !b {
                break;
            }
        }
        self.a.drain_events();
        self.b.drain_events();
    }
}

fn opts(protocol: &str) -> ChannelOptions {
    ChannelOptions::new(protocol)
}

fn opened(events: &[Event]) -> Vec<(ChannelId, Bytes)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Opened { channel, handshake } => Some((*channel, handshake.clone())),
            _ => None,
        })
        .collect()
}

fn messages(events: &[Event]) -> Vec<(ChannelId, u64, Bytes)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message {
                channel,
                message_type,
                payload,
            } => Some((*channel, *message_type, payload.clone())),
            _ => None,
        })
        .collect()
}

fn closed(events: &[Event]) -> Vec<(ChannelId, CloseReason)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Closed { channel, reason } => Some((*channel, *reason)),
            _ => None,
        })
        .collect()
}

fn pair_requests(events: &[Event]) -> Vec<(PairingId, ChannelKey)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::PairRequest { pairing, key, .. } => Some((*pairing, key.clone())),
            _ => None,
        })
        .collect()
}

fn assert_paired(p: &Pair, a: ChannelId, b: ChannelId) {
    assert_eq!(p.a.mux.channel_state(a), Some(ChannelState::Open));
    assert_eq!(p.b.mux.channel_state(b), Some(ChannelState::Open));
    assert_eq!(p.a.mux.remote_id(a), Some(b.local_id()));
    assert_eq!(p.b.mux.remote_id(b), Some(a.local_id()));
}

/// Both sides open before either open arrives (each is local-first for its own channel).
#[test]
fn simultaneous_opens_pair() {
    let mut p = Pair::new();
    let a =
        p.a.mux
            .open_channel(
                &opts("chat")
                    .with_id(&b"room"[..])
                    .with_handshake(&b"hi-a"[..]),
            )
            .unwrap();
    let b =
        p.b.mux
            .open_channel(
                &opts("chat")
                    .with_id(&b"room"[..])
                    .with_handshake(&b"hi-b"[..]),
            )
            .unwrap();
    assert_eq!(p.a.mux.channel_state(a), Some(ChannelState::Opening));
    assert!(p.a.mux.is_opened("chat", b"room"));
    assert!(!p.a.mux.is_opened("chat", b""));
    p.run();
    assert_eq!(
        opened(&p.a.take_events()),
        vec![(a, Bytes::from_static(b"hi-b"))]
    );
    assert_eq!(
        opened(&p.b.take_events()),
        vec![(b, Bytes::from_static(b"hi-a"))]
    );
    assert_paired(&p, a, b);
}

/// Remote-first on b (a hook answers a's open), local-first on a (its channel waits for b's
/// open).
#[test]
fn remote_first_pairing_through_a_hook_keeps_early_messages() {
    let mut p = Pair::new();
    let hook = p.b.mux.pair("chat", None);
    let a =
        p.a.mux
            .open_channel(
                &opts("chat")
                    .with_id(&b"room"[..])
                    .with_handshake(&b"hs"[..]),
            )
            .unwrap();
    // Messages sent before the remote answered are held for it.
    p.a.mux.send(a, 0, b"early").unwrap();
    p.a.mux.send(a, 3, b"").unwrap();
    p.run();
    let ev = p.b.take_events();
    let reqs = pair_requests(&ev);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].1, ChannelKey::new("chat", &b"room"[..]));
    assert!(matches!(ev[0], Event::PairRequest { hook: h, .. } if h == hook));
    assert_eq!(p.b.mux.pending_opens(), 1);
    assert_eq!(p.b.mux.held_bytes(), 2 * HELD_MESSAGE_OVERHEAD + 5);
    assert!(p.a.take_events().is_empty());

    let b =
        p.b.mux
            .accept_pairing(reqs[0].0, &opts("chat").with_id(&b"room"[..]))
            .unwrap();
    let ev = p.b.take_events();
    assert_eq!(opened(&ev), vec![(b, Bytes::from_static(b"hs"))]);
    assert_eq!(
        messages(&ev),
        vec![(b, 0, Bytes::from_static(b"early")), (b, 3, Bytes::new())]
    );
    assert_eq!(p.b.mux.held_bytes(), 0);
    assert_eq!(p.b.mux.pending_opens(), 0);
    p.run();
    assert_eq!(opened(&p.a.take_events()), vec![(a, Bytes::new())]);
    assert_paired(&p, a, b);
}

#[test]
fn a_wildcard_hook_yields_to_a_specific_one() {
    let mut p = Pair::new();
    let any = p.b.mux.pair("core", None);
    let one = p.b.mux.pair("core", Some(b"k1"));
    p.a.mux
        .open_channel(&opts("core").with_id(&b"k1"[..]))
        .unwrap();
    p.a.mux
        .open_channel(&opts("core").with_id(&b"k2"[..]))
        .unwrap();
    p.run();
    let hooks: Vec<_> =
        p.b.take_events()
            .into_iter()
            .filter_map(|e| match e {
                Event::PairRequest { hook, key, .. } => Some((hook, key)),
                _ => None,
            })
            .collect();
    assert_eq!(
        hooks,
        vec![
            (one, ChannelKey::new("core", &b"k1"[..])),
            (any, ChannelKey::new("core", &b"k2"[..]))
        ]
    );
    // After unpair, unmatched opens are rejected again.
    p.b.mux.unpair("core", None);
    p.b.mux.unpair_hook(one);
    let c =
        p.a.mux
            .open_channel(&opts("core").with_id(&b"k3"[..]))
            .unwrap();
    p.run();
    assert_eq!(closed(&p.a.take_events()), vec![(c, CloseReason::Rejected)]);
}

#[test]
fn unmatched_open_without_a_hook_is_rejected_at_once() {
    let mut p = Pair::new();
    let a = p.a.mux.open_channel(&opts("nobody")).unwrap();
    p.a.mux.send(a, 0, b"lost").unwrap();
    p.run();
    assert_eq!(closed(&p.a.take_events()), vec![(a, CloseReason::Rejected)]);
    assert!(p.b.take_events().is_empty());
    assert!(p.a.mux.is_idle() && p.b.mux.is_idle());
    assert_eq!(p.a.mux.channel_state(a), None);
    assert!(matches!(
        p.a.mux.send(a, 0, b"x"),
        Err(Error::ChannelClosed)
    ));
    // The id is free again and reused.
    let again = p.a.mux.open_channel(&opts("nobody")).unwrap();
    assert_eq!(again.local_id(), a.local_id());
    assert_ne!(again, a);
}

#[test]
fn reject_pairing_closes_the_remote_channel() {
    let mut p = Pair::new();
    p.b.mux.pair("x", None);
    let a = p.a.mux.open_channel(&opts("x")).unwrap();
    p.a.mux.send(a, 1, b"held").unwrap();
    p.run();
    let (pairing, _) = pair_requests(&p.b.take_events())[0].clone();
    assert!(p.b.mux.held_bytes() > 0);
    p.b.mux.reject_pairing(pairing).unwrap();
    assert_eq!(p.b.mux.held_bytes(), 0);
    assert!(matches!(
        p.b.mux.reject_pairing(pairing),
        Err(Error::PairingGone)
    ));
    assert!(matches!(
        p.b.mux.accept_pairing(pairing, &opts("x")),
        Err(Error::PairingGone)
    ));
    p.run();
    assert_eq!(closed(&p.a.take_events()), vec![(a, CloseReason::Rejected)]);
    assert!(p.a.mux.is_idle() && p.b.mux.is_idle());
}

#[test]
fn accept_checks_the_key() {
    let mut p = Pair::new();
    p.b.mux.pair("x", None);
    p.a.mux.open_channel(&opts("x").with_id(&b"1"[..])).unwrap();
    p.run();
    let (pairing, _) = pair_requests(&p.b.take_events())[0].clone();
    assert!(matches!(
        p.b.mux
            .accept_pairing(pairing, &opts("x").with_id(&b"2"[..])),
        Err(Error::PairingMismatch)
    ));
    assert!(p.b.mux.is_pending(pairing));
    // An alias counts.
    p.b.mux
        .accept_pairing(
            pairing,
            &opts("x/v2").with_id(&b"1"[..]).with_aliases(["x"]),
        )
        .unwrap();
}

#[test]
fn messages_flow_both_ways_with_types() {
    let mut p = Pair::new();
    let a = p.a.mux.open_channel(&opts("m")).unwrap();
    let b = p.b.mux.open_channel(&opts("m")).unwrap();
    p.run();
    p.a.take_events();
    p.b.take_events();
    for t in [0u64, 1, 2, 300, 70_000] {
        p.a.mux.send(a, t, format!("a{t}").as_bytes()).unwrap();
        p.b.mux.send(b, t, format!("b{t}").as_bytes()).unwrap();
    }
    p.a.mux.send_encoded(a, 9, "str").unwrap();
    p.run();
    let got_b = messages(&p.b.take_events());
    let got_a = messages(&p.a.take_events());
    assert_eq!(got_b.len(), 6);
    assert_eq!(got_a.len(), 5);
    for (i, t) in [0u64, 1, 2, 300, 70_000].into_iter().enumerate() {
        assert_eq!(got_b[i], (b, t, Bytes::from(format!("a{t}"))));
        assert_eq!(got_a[i], (a, t, Bytes::from(format!("b{t}"))));
    }
    assert_eq!(got_b[5], (b, 9, Bytes::from_static(b"\x03str")));
}

#[test]
fn a_frame_is_laid_out_like_js() {
    let mut m = Mux::default();
    let ch = m
        .open_channel(&opts("foo").with_handshake(&[7u8][..]))
        .unwrap();
    assert_eq!(
        &m.poll_transmit().unwrap()[..],
        &[0, 1, 1, 3, b'f', b'o', b'o', 0, 7]
    );
    m.send(ch, 2, b"xy").unwrap();
    assert_eq!(&m.poll_transmit().unwrap()[..], &[1, 2, b'x', b'y']);
    m.close(ch);
    assert_eq!(&m.poll_transmit().unwrap()[..], &[0, 3, 1]);
    assert!(m.poll_transmit().is_none());
}

#[test]
fn cork_collects_one_batch() {
    let mut p = Pair::new();
    let a1 = p.a.mux.open_channel(&opts("one")).unwrap();
    let b1 = p.b.mux.open_channel(&opts("one")).unwrap();
    p.run();
    p.b.take_events();
    p.b.mux.pair("two", None);

    p.a.mux.cork();
    p.a.mux.cork(); // nested: only the outer uncork sends
    p.a.mux.send(a1, 0, b"x").unwrap();
    p.a.mux.send(a1, 1, b"yy").unwrap();
    let a2 = p.a.mux.open_channel(&opts("two")).unwrap();
    p.a.mux.send(a2, 0, b"z").unwrap();
    p.a.mux.send(a1, 0, b"w").unwrap();
    p.a.mux.uncork();
    assert!(!p.a.mux.has_transmit());
    assert!(p.a.mux.batched_bytes() > 0);
    p.a.mux.uncork();
    let frame = p.a.mux.poll_transmit().unwrap();
    assert!(p.a.mux.poll_transmit().is_none());
    assert_eq!(
        &frame[..],
        &[
            0, 0, // batch
            1, // channel 1
            2, 0, b'x', //
            3, 1, b'y', b'y', //
            0, 0, // switch to channel 0
            7, 1, 2, 3, b't', b'w', b'o', 0, // open "two" as local id 2
            0, 2, // switch to channel 2
            2, 0, b'z', //
            0, 1, // back to channel 1
            2, 0, b'w',
        ][..]
    );
    p.b.inbox.push_back(frame);
    p.deliver_one(To::B);
    let ev = p.b.take_events();
    assert_eq!(
        messages(&ev),
        vec![
            (b1, 0, Bytes::from_static(b"x")),
            (b1, 1, Bytes::from_static(b"yy")),
            (b1, 0, Bytes::from_static(b"w")),
        ]
    );
    assert_eq!(pair_requests(&ev).len(), 1);
    // The message for the pending channel is held until it is claimed.
    let b2 = p.b.mux.open_channel(&opts("two")).unwrap();
    assert_eq!(
        messages(&p.b.take_events()),
        vec![(b2, 0, Bytes::from_static(b"z"))]
    );
    // An uncork without cork does nothing; an empty batch sends nothing.
    p.a.mux.uncork();
    p.a.mux.cork();
    p.a.mux.uncork();
    assert!(!p.a.mux.has_transmit());
}

#[test]
fn a_large_batch_is_split_at_the_batch_limit() {
    let mut m = Mux::new(Config::default().with_max_batch(100));
    let ch = m.open_channel(&opts("big")).unwrap();
    m.poll_transmit();
    m.cork();
    for _ in 0..10 {
        m.send(ch, 0, &[1u8; 30]).unwrap();
    }
    m.uncork();
    let frames: Vec<_> = std::iter::from_fn(|| m.poll_transmit()).collect();
    // JS sends the batch once it has reached the limit, before adding the next item:
    // 2 + 1 header, then 32 per item: 35, 67, 99, 131 -> 4 items per frame.
    assert_eq!(
        frames.iter().map(|f| f.len()).collect::<Vec<_>>(),
        [131, 131, 67]
    );
    let mut other = Mux::default();
    other.pair("big", None);
    let remote_open = {
        let mut o = Mux::default();
        o.open_channel(&opts("big")).unwrap();
        o.poll_transmit().unwrap()
    };
    other.handle_frame(remote_open).unwrap();
    other.open_channel(&opts("big")).unwrap();
    for f in frames {
        other.handle_frame(f).unwrap();
    }
    let n = std::iter::from_fn(|| other.poll_event())
        .filter(|e| matches!(e, Event::Message { payload, .. } if payload[..] == [1u8; 30]))
        .count();
    assert_eq!(n, 10);
}

#[test]
fn oversized_messages_are_refused_and_huge_ones_skip_the_batch() {
    let mut m = Mux::new(Config::default().with_max_frame_len(100));
    let ch = m.open_channel(&opts("p")).unwrap();
    m.poll_transmit();
    assert!(matches!(
        m.send(ch, 0, &[0u8; 99]),
        Err(Error::MessageTooLarge { len: 101, max: 100 })
    ));
    m.send(ch, 0, &[0u8; 98]).unwrap(); // 1 + 1 + 98 = 100
    assert_eq!(m.poll_transmit().unwrap().len(), 100);
    m.cork();
    m.send(ch, 0, b"small").unwrap();
    m.send(ch, 0, &[0u8; 98]).unwrap(); // too big for a batch: sent alone after the batch
    m.uncork();
    let frames: Vec<_> = std::iter::from_fn(|| m.poll_transmit()).collect();
    assert_eq!(frames.len(), 2);
    assert_eq!(
        &frames[0][..],
        &[0, 0, 1, 6, 0, b's', b'm', b'a', b'l', b'l']
    );
    assert_eq!(frames[1].len(), 100);
}

#[test]
fn close_from_either_side_releases_ids() {
    let mut p = Pair::new();
    let a = p.a.mux.open_channel(&opts("c")).unwrap();
    let b = p.b.mux.open_channel(&opts("c")).unwrap();
    p.run();
    p.a.take_events();
    p.b.take_events();
    assert!(p.a.mux.close(a));
    assert!(!p.a.mux.close(a));
    assert_eq!(closed(&p.a.take_events()), vec![(a, CloseReason::Local)]);
    // A message the remote sent before it saw our close is ignored.
    p.b.mux.send(b, 0, b"late").unwrap();
    p.run();
    assert_eq!(closed(&p.b.take_events()), vec![(b, CloseReason::Remote)]);
    assert!(messages(&p.a.take_events()).is_empty());
    assert!(p.a.mux.is_idle() && p.b.mux.is_idle());
    assert!(!p.a.mux.is_opened("c", b""));

    // Re-open from the other side first this time.
    let b2 = p.b.mux.open_channel(&opts("c")).unwrap();
    let a2 = p.a.mux.open_channel(&opts("c")).unwrap();
    assert_eq!((a2.local_id(), b2.local_id()), (1, 1));
    p.run();
    assert_paired(&p, a2, b2);
    p.b.mux.close(b2);
    p.run();
    assert_eq!(closed(&p.a.take_events()), vec![(a2, CloseReason::Remote)]);
}

#[test]
fn simultaneous_close_and_reopen_pairs_again() {
    let mut p = Pair::new();
    let a = p.a.mux.open_channel(&opts("r")).unwrap();
    let b = p.b.mux.open_channel(&opts("r")).unwrap();
    p.run();
    // Both close and re-open before seeing the other's close.
    p.a.mux.close(a);
    p.b.mux.close(b);
    let a2 = p.a.mux.open_channel(&opts("r")).unwrap();
    let b2 = p.b.mux.open_channel(&opts("r")).unwrap();
    p.run();
    assert_paired(&p, a2, b2);
    p.a.take_events();
    p.b.take_events();
    p.a.mux.send(a2, 0, b"after").unwrap();
    p.run();
    assert_eq!(
        messages(&p.b.take_events()),
        vec![(b2, 0, Bytes::from_static(b"after"))]
    );
}

/// protomux PR #30: a channel opened and closed before the remote's open arrives, then
/// replaced; the replacement must pair, in every delivery order.
#[test]
fn reopen_after_an_unanswered_close_pairs_the_replacement() {
    // Order 1: the remote answers by claiming our first (closed) open from its hook, after
    // our close arrived.
    let mut p = Pair::new();
    p.b.mux.pair("r", None);
    let a1 = p.a.mux.open_channel(&opts("r")).unwrap();
    p.a.mux.close(a1);
    let a2 = p.a.mux.open_channel(&opts("r")).unwrap();
    assert_eq!(a2.local_id(), 2, "the closed channel's id stays reserved");
    p.run();
    let ev = p.b.take_events();
    // b saw open(1), close(1) (cancelling the first request), open(2).
    let reqs = pair_requests(&ev);
    assert_eq!(reqs.len(), 2);
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::PairingCancelled { pairing } if *pairing == reqs[0].0)));
    let b = p.b.mux.accept_pairing(reqs[1].0, &opts("r")).unwrap();
    p.run();
    assert_paired(&p, a2, b);
    assert!(p.a.mux.channels().eq([a2]));
    // The reserved id was released by the remote's reject.
    let extra = p.a.mux.open_channel(&opts("other")).unwrap();
    assert_eq!(extra.local_id(), 1);

    // Order 2: the remote opened its channel before ours arrived (it pairs with the closed
    // one there and is closed by our close); the replacement pairs with the remote's
    // re-open.
    let mut p = Pair::new();
    let a1 = p.a.mux.open_channel(&opts("r")).unwrap();
    let b1 = p.b.mux.open_channel(&opts("r")).unwrap();
    p.a.mux.close(a1);
    let a2 = p.a.mux.open_channel(&opts("r")).unwrap();
    p.b.mux.pair("r", None);
    p.run();
    let ev = p.b.take_events();
    assert_eq!(opened(&ev).len(), 1);
    assert_eq!(closed(&ev), vec![(b1, CloseReason::Remote)]);
    // b re-opens: that claims a2's pending open.
    let reqs = pair_requests(&ev);
    assert_eq!(reqs.len(), 1);
    let b2 = p.b.mux.open_channel(&opts("r")).unwrap();
    p.run();
    assert_paired(&p, a2, b2);
    assert!(p.a.mux.channels().eq([a2]));
}

#[test]
fn closing_a_channel_that_waits_releases_it_on_both_sides() {
    let mut p = Pair::new();
    p.b.mux.pair("w", None);
    let a = p.a.mux.open_channel(&opts("w")).unwrap();
    p.a.mux.send(a, 0, b"held").unwrap();
    p.a.mux.close(a);
    p.run();
    let ev = p.b.take_events();
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert_eq!(p.b.mux.held_bytes(), 0);
    assert_eq!(p.b.mux.pending_opens(), 0);
    assert!(p.a.mux.is_idle() && p.b.mux.is_idle());
}

#[test]
fn non_unique_channels_pair_in_order() {
    let mut p = Pair::new();
    let o = opts("n").with_unique(false);
    let a1 = p.a.mux.open_channel(&o).unwrap();
    let a2 = p.a.mux.open_channel(&o).unwrap();
    assert!(matches!(
        p.a.mux.open_channel(&opts("n")),
        Err(Error::AlreadyOpen { .. })
    ));
    let b1 = p.b.mux.open_channel(&o).unwrap();
    let b2 = p.b.mux.open_channel(&o).unwrap();
    p.run();
    assert_paired(&p, a1, b1);
    assert_paired(&p, a2, b2);
}

#[test]
fn aliases_pair_a_remote_open_under_another_name() {
    let mut p = Pair::new();
    // The remote's open (old name) arrives before we know the alias: it waits under its own
    // name and moves over when our channel registers the alias.
    p.b.mux.pair("old", None);
    let a =
        p.a.mux
            .open_channel(&opts("old").with_id(&b"k"[..]).with_aliases(["new"]))
            .unwrap();
    p.run();
    assert_eq!(pair_requests(&p.b.take_events()).len(), 1);
    let b =
        p.b.mux
            .open_channel(&opts("new").with_id(&b"k"[..]).with_aliases(["old"]))
            .unwrap();
    assert_eq!(p.b.mux.channel_state(b), Some(ChannelState::Open));
    assert!(p.b.mux.is_opened("old", b"k"));
    assert!(p.b.mux.is_opened("new", b"k"));
    p.b.mux.check_invariants();
    // Our open says "new", which the remote knows as an alias of its channel.
    p.run();
    assert_paired(&p, a, b);
    // Closing clears the aliases with the key.
    p.a.mux.close(a);
    p.run();
    assert!(!p.b.mux.is_opened("old", b"k"));
    assert!(p.a.mux.is_idle() && p.b.mux.is_idle());
}

#[test]
fn holding_too_much_pauses_and_then_fails() {
    let config = Config::default()
        .with_pause_threshold(2 * HELD_MESSAGE_OVERHEAD + 10)
        .with_max_pending_buffer(5 * HELD_MESSAGE_OVERHEAD);
    let mut p = Pair::with_config(config);
    p.b.mux.pair("h", None);
    let a = p.a.mux.open_channel(&opts("h")).unwrap();
    for _ in 0..3 {
        p.a.mux.send(a, 0, b"0123456789").unwrap();
    }
    p.run();
    assert!(p.b.mux.is_paused());
    let (pairing, _) = pair_requests(&p.b.take_events())[0].clone();
    p.b.mux.accept_pairing(pairing, &opts("h")).unwrap();
    assert!(!p.b.mux.is_paused());
    assert_eq!(messages(&p.b.take_events()).len(), 3);

    // A frame past the hard limit is a protocol error.
    let mut p =
        Pair::with_config(Config::default().with_max_pending_buffer(3 * HELD_MESSAGE_OVERHEAD));
    p.b.mux.pair("h", None);
    let a = p.a.mux.open_channel(&opts("h")).unwrap();
    p.a.mux.cork();
    for _ in 0..4 {
        p.a.mux.send(a, 0, b"x").unwrap();
    }
    p.a.mux.uncork();
    p.flush();
    let open = p.b.inbox.pop_front().unwrap();
    p.b.mux.handle_frame(open).unwrap();
    let batch = p.b.inbox.pop_front().unwrap();
    assert!(matches!(
        p.b.mux.handle_frame(batch),
        Err(Error::Protocol(ProtocolError::PendingOverflow { .. }))
    ));
    assert!(p.b.mux.is_closed());
}

#[test]
fn pending_opens_are_bounded() {
    let mut p = Pair::with_config(Config::default().with_max_pending_opens(2));
    p.b.mux.pair("q", None);
    let o = opts("q").with_unique(false);
    let chans: Vec<_> = (0..3).map(|_| p.a.mux.open_channel(&o).unwrap()).collect();
    p.run();
    assert_eq!(pair_requests(&p.b.take_events()).len(), 2);
    assert_eq!(
        closed(&p.a.take_events()),
        vec![(chans[2], CloseReason::Rejected)]
    );
}

#[test]
fn remote_channel_ids_are_bounded() {
    let mut m = Mux::new(Config::default().with_max_channels(2));
    let open = |id: u64| {
        to_vec(&ControlFrame(Control::Open(Open {
            local_id: id,
            protocol: "p".into(),
            id: &[],
            handshake: &[],
        })))
    };
    // Rejected opens free their slot, but a remote that keeps growing ids hits the limit.
    m.handle_frame(open(1).into()).unwrap();
    m.handle_frame(open(2).into()).unwrap();
    assert!(matches!(
        m.handle_frame(open(3).into()),
        Err(Error::Protocol(ProtocolError::TooManyChannels {
            remote_id: 3,
            max: 2
        }))
    ));
    let mut m = Mux::new(Config::default().with_max_channels(1));
    m.open_channel(&opts("a")).unwrap();
    assert!(matches!(
        m.open_channel(&opts("b")),
        Err(Error::TooManyChannels { max: 1 })
    ));
}

#[test]
fn invalid_frames_close_the_mux_like_js_destroys_the_stream() {
    type Case<'a> = (&'a str, &'a [u8], fn(&ProtocolError) -> bool);
    let cases: &[Case<'_>] = &[
        ("open with id 0", &[0, 1, 0, 1, b'p', 0], |e| {
            matches!(e, ProtocolError::InvalidOpen { remote_id: 0 })
        }),
        ("open skipping ids", &[0, 1, 2, 1, b'p', 0], |e| {
            matches!(e, ProtocolError::InvalidOpen { remote_id: 2 })
        }),
        ("reject of nothing", &[0, 2, 5], |e| {
            matches!(e, ProtocolError::InvalidReject { local_id: 5 })
        }),
        ("reject of 0", &[0, 2, 0], |e| {
            matches!(e, ProtocolError::InvalidReject { local_id: 0 })
        }),
        ("truncated open", &[0, 1, 1], |e| {
            matches!(e, ProtocolError::Decode(_))
        }),
        ("truncated type", &[5], |e| {
            matches!(e, ProtocolError::Decode(_))
        }),
        (
            "unsafe integer",
            &[0xff, 0, 0, 0, 0, 0, 0, 0x20, 0, 0],
            |e| matches!(e, ProtocolError::Decode(_)),
        ),
        ("batch with a bad open", &[0, 0, 0, 2, 1, 1], |e| {
            matches!(e, ProtocolError::Decode(_))
        }),
        ("batch cut in a switch", &[0, 0, 1, 2, 0, 0, 0], |e| {
            matches!(e, ProtocolError::Decode(_))
        }),
    ];
    for (name, bytes, check) in cases {
        let mut m = Mux::default();
        let ch = m.open_channel(&opts("live")).unwrap();
        m.poll_transmit();
        match m.handle_frame(Bytes::copy_from_slice(bytes)) {
            Err(Error::Protocol(e)) => assert!(check(&e), "{name}: wrong error {e:?}"),
            other => panic!("{name}: expected a protocol error, got {other:?}"),
        }
        assert!(m.is_closed(), "{name}");
        let ev: Vec<_> = std::iter::from_fn(|| m.poll_event()).collect();
        assert_eq!(closed(&ev), vec![(ch, CloseReason::MuxClosed)], "{name}");
        assert!(matches!(m.send(ch, 0, b""), Err(Error::MuxClosed)));
        assert!(matches!(m.open_channel(&opts("x")), Err(Error::MuxClosed)));
        // Input after the close is ignored.
        m.handle_frame(Bytes::from_static(&[0, 2, 9])).unwrap();
    }
}

#[test]
fn tolerated_input_is_ignored_like_js() {
    let mut m = Mux::default();
    for bytes in [
        &[][..],                   // empty frame
        &[0, 3, 7],                // close of an unknown channel
        &[0, 3, 0],                // close of the control channel
        &[0, 9, 1, 2, 3],          // unknown control type
        &[4, 0, b'x'],             // message for an unknown channel
        &[0, 0, 1, 10, 0],         // batch whose item runs past the end
        &[0, 0, 0, 4, 0, 1, 1, 0], // nested batch
        &[0, 3, 1, 0xff, 0xff],    // trailing bytes after a close
    ] {
        m.handle_frame(Bytes::copy_from_slice(bytes)).unwrap();
    }
    assert!(!m.is_closed());
    assert!(std::iter::from_fn(|| m.poll_event()).next().is_none());
}

#[test]
fn deep_batch_nesting_is_refused() {
    // 0 0 <id 0> <len> (0 <id 0> <len> (...)) : each level is a batch item on channel 0.
    let mut inner: Vec<u8> = vec![3, 1]; // innermost: close 1
    for _ in 0..=MAX_BATCH_DEPTH {
        let mut level = vec![0u8, 0]; // type batch, first channel 0
        corenet_codec::encode::uint(&mut level, inner.len() as u64);
        level.extend_from_slice(&inner);
        inner = level;
    }
    let mut frame = vec![0u8];
    frame.extend_from_slice(&inner);
    let mut m = Mux::default();
    assert!(matches!(
        m.handle_frame(frame.into()),
        Err(Error::Protocol(ProtocolError::BatchTooDeep { .. }))
    ));
}

#[test]
fn the_stream_ending_closes_every_channel() {
    let mut p = Pair::new();
    let a = p.a.mux.open_channel(&opts("e")).unwrap();
    let b = p.b.mux.open_channel(&opts("e")).unwrap();
    let lone = p.a.mux.open_channel(&opts("lonely")).unwrap();
    p.run();
    p.a.take_events();
    p.a.mux.handle_close();
    p.a.mux.handle_close();
    let ev = p.a.take_events();
    assert_eq!(closed(&ev).len(), 1, "{ev:?}"); // `lonely` was rejected earlier
    assert_eq!(closed(&ev), vec![(a, CloseReason::MuxClosed)]);
    assert!(p.a.mux.channel_state(lone).is_none());
    assert!(p.a.mux.poll_transmit().is_none());
    let _ = b;
}

#[test]
fn send_queue_is_bounded() {
    let mut m = Mux::new(Config::default().with_max_send_queue(10));
    let ch = m.open_channel(&opts("s")).unwrap();
    m.send(ch, 0, &[0; 8]).unwrap();
    assert!(matches!(
        m.send(ch, 0, b"x"),
        Err(Error::SendQueueFull { .. })
    ));
    while m.poll_transmit().is_some() {}
    m.send(ch, 0, b"x").unwrap();
}

#[test]
fn garbage_never_panics() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..20_000 {
        let mut m = Mux::default();
        m.pair("p", None);
        let ch = m.open_channel(&opts("p")).unwrap();
        let len = rng.gen_range(0..24);
        // Bias towards small values so that control messages are common.
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                if rng.gen_bool(0.7) {
                    rng.gen_range(0..4)
                } else {
                    rng.gen()
                }
            })
            .collect();
        let _ = m.handle_frame(bytes.into());
        m.check_invariants();
        let _ = m.send(ch, 0, b"x");
        while m.poll_event().is_some() {}
        while m.poll_transmit().is_some() {}
    }
}

/// A random schedule of opens, closes, sends, pair answers and deliveries between two muxes
/// whose users want the same channels in the end: after everything settles, every wanted
/// channel is paired on both sides with its counterpart (no hang, no mismatch), and the
/// state is consistent at every step.
#[test]
fn random_schedules_always_settle_paired() {
    let seeds: u64 = std::env::var("MUX_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    for seed in 0..seeds {
        if let Err(e) = std::panic::catch_unwind(|| simulate(seed)) {
            eprintln!("simulation failed with seed {seed} (replay: simulate({seed}))");
            std::panic::resume_unwind(e);
        }
    }
}

const KEYS: [&str; 3] = ["k0", "k1", "k2"];

struct SimSide {
    side: Side,
    want: HashSet<usize>,
    live: HashMap<usize, ChannelId>,
}

impl SimSide {
    fn new() -> Self {
        let mut side = Side::new(Config::default());
        for k in KEYS {
            side.mux.pair(k, None);
        }
        SimSide {
            side,
            want: HashSet::new(),
            live: HashMap::new(),
        }
    }

    fn key_index(&self, channel: ChannelId) -> Option<usize> {
        self.live
            .iter()
            .find(|(_, c)| **c == channel)
            .map(|(k, _)| *k)
    }

    /// Reacts to events like a user that wants `want`.
    fn react(&mut self) {
        for e in self.side.take_events() {
            match e {
                Event::Closed { channel, .. } => {
                    if let Some(k) = self.key_index(channel) {
                        self.live.remove(&k);
                    }
                }
                Event::PairRequest { pairing, key, .. } => {
                    let k = KEYS.iter().position(|n| *n == key.protocol()).unwrap();
                    if self.want.contains(&k) && !self.live.contains_key(&k) {
                        let ch = self
                            .side
                            .mux
                            .accept_pairing(pairing, &opts(KEYS[k]))
                            .unwrap();
                        self.live.insert(k, ch);
                    } else if self.side.mux.is_pending(pairing) {
                        self.side.mux.reject_pairing(pairing).unwrap();
                    }
                }
                _ => {}
            }
        }
        self.side.mux.check_invariants();
    }

    fn toggle(&mut self, k: usize) {
        if let Some(ch) = self.live.remove(&k) {
            assert!(self.side.mux.close(ch));
            self.want.remove(&k);
        } else {
            self.want.insert(k);
            let ch = self.side.mux.open_channel(&opts(KEYS[k])).unwrap();
            self.live.insert(k, ch);
        }
    }

    /// Makes the live set follow `want`.
    fn settle(&mut self) {
        for (k, name) in KEYS.iter().enumerate() {
            match (self.want.contains(&k), self.live.get(&k).copied()) {
                (true, None) => {
                    let ch = self.side.mux.open_channel(&opts(name)).unwrap();
                    self.live.insert(k, ch);
                }
                (false, Some(ch)) => {
                    self.side.mux.close(ch);
                    self.live.remove(&k);
                }
                _ => {}
            }
        }
    }
}

fn simulate(seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut a = SimSide::new();
    let mut b = SimSide::new();
    let steps = rng.gen_range(1..60);
    for _ in 0..steps {
        let r = rng.gen_range(0..100);
        let (me, other) = if rng.gen_bool(0.5) {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        match r {
            0..=29 => me.toggle(rng.gen_range(0..KEYS.len())),
            30..=39 => {
                if let Some(&ch) = me.live.values().next() {
                    me.side.mux.send(ch, 0, b"m").unwrap();
                }
            }
            _ => {
                // Deliver one frame from `other` to `me`.
                while let Some(f) = other.side.mux.poll_transmit() {
                    me.side.inbox.push_back(f);
                }
                if let Some(f) = me.side.inbox.pop_front() {
                    me.side.mux.handle_frame(f).unwrap();
                }
            }
        }
        a.react();
        b.react();
    }
    // Both users end up wanting the same channels.
    let want: HashSet<usize> = (0..KEYS.len()).filter(|_| rng.gen_bool(0.6)).collect();
    a.want = want.clone();
    b.want = want.clone();
    for _round in 0..20 {
        a.settle();
        b.settle();
        let mut moved = true;
        while moved {
            moved = false;
            while let Some(f) = a.side.mux.poll_transmit() {
                b.side.inbox.push_back(f);
            }
            while let Some(f) = b.side.mux.poll_transmit() {
                a.side.inbox.push_back(f);
            }
            if let Some(f) = a.side.inbox.pop_front() {
                a.side.mux.handle_frame(f).unwrap();
                moved = true;
            }
            if let Some(f) = b.side.inbox.pop_front() {
                b.side.mux.handle_frame(f).unwrap();
                moved = true;
            }
            a.react();
            b.react();
        }
        let done = want.iter().all(|k| match (a.live.get(k), b.live.get(k)) {
            (Some(&x), Some(&y)) => {
                a.side.mux.remote_id(x) == Some(y.local_id())
                    && b.side.mux.remote_id(y) == Some(x.local_id())
            }
            _ => false,
        }) && a.live.len() == want.len()
            && b.live.len() == want.len();
        if done {
            // Nothing in flight, nothing pending, no stray channel.
            assert!(!a.side.mux.has_transmit() && !b.side.mux.has_transmit());
            assert_eq!(a.side.mux.pending_opens() + b.side.mux.pending_opens(), 0);
            assert_eq!(a.side.mux.channels().count(), want.len());
            assert_eq!(b.side.mux.channels().count(), want.len());
            return;
        }
    }
    panic!(
        "seed {seed}: did not settle: want {want:?}, a live {:?} (states {:?}), b live {:?} (states {:?})",
        a.live,
        a.live.values().map(|c| a.side.mux.channel_state(*c)).collect::<Vec<_>>(),
        b.live,
        b.live.values().map(|c| b.side.mux.channel_state(*c)).collect::<Vec<_>>(),
    );
}

#[test]
fn packing_small_frames_keeps_every_message_in_order() {
    // The same traffic delivered frame by frame and packed must produce the same events.
    fn traffic(m: &mut Mux, chans: &[ChannelId]) {
        for i in 0..300u32 {
            let ch = chans[(i % 3) as usize];
            let len = [0usize, 5, 40, 900, 3000][(i % 5) as usize];
            m.send(ch, u64::from(i % 4), &vec![i as u8; len]).unwrap();
            if i == 150 {
                m.cork();
                m.send(ch, 1, b"corked").unwrap();
                m.send(chans[0], 2, b"corked too").unwrap();
                m.uncork();
            }
        }
        m.close(chans[2]);
    }
    let mut results = Vec::new();
    for packed in [false, true] {
        let mut p = Pair::new();
        let names = ["x", "y", "z"];
        let chans: Vec<_> = names
            .iter()
            .map(|n| p.a.mux.open_channel(&opts(n)).unwrap())
            .collect();
        for n in names {
            p.b.mux.open_channel(&opts(n)).unwrap();
        }
        p.run();
        p.b.take_events();
        traffic(&mut p.a.mux, &chans);
        let mut frames = Vec::new();
        loop {
            let f = if packed {
                p.a.mux.poll_transmit_packed(8 * 1024)
            } else {
                p.a.mux.poll_transmit()
            };
            let Some(f) = f else { break };
            assert!(f.len() <= 8 * 1024 || !packed || f.len() > PACK_ITEM_MAX);
            frames.push(f);
        }
        assert_eq!(p.a.mux.queued_bytes(), 0);
        let n = frames.len();
        for f in frames {
            p.b.mux.handle_frame(f).unwrap();
        }
        p.b.mux.check_invariants();
        results.push((n, p.b.take_events()));
    }
    let (unpacked_frames, unpacked) = &results[0];
    let (packed_frames, packed) = &results[1];
    assert_eq!(packed, unpacked);
    assert_eq!(messages(packed).len(), 302);
    assert_eq!(closed(packed).len(), 1);
    // Every fifth message is too large to pack: 60 of them split the rest into 61 runs.
    assert!(
        *packed_frames <= 130 && packed_frames * 2 < *unpacked_frames,
        "{packed_frames} packed frames for {unpacked_frames}"
    );
}

#[test]
fn packing_leaves_lone_large_and_batch_frames_alone() {
    let mut m = Mux::default();
    let ch = m.open_channel(&opts("p")).unwrap();
    let open = m.poll_transmit_packed(DEFAULT_PACK_LIMIT).unwrap();
    assert_eq!(&open[..2], &[0, 1], "a lone frame is sent as it is");
    m.send(ch, 0, b"a").unwrap();
    m.send(ch, 0, &[1; PACK_ITEM_MAX]).unwrap();
    m.send(ch, 0, b"b").unwrap();
    m.cork();
    m.send(ch, 0, b"c").unwrap();
    m.uncork();
    m.send(ch, 0, b"d").unwrap();
    m.send(ch, 1, b"e").unwrap();
    let frames: Vec<_> =
        std::iter::from_fn(|| m.poll_transmit_packed(DEFAULT_PACK_LIMIT)).collect();
    assert_eq!(frames.len(), 5);
    assert_eq!(&frames[0][..], &[1, 0, b'a']);
    assert_eq!(frames[1].len(), 2 + PACK_ITEM_MAX);
    assert_eq!(&frames[2][..], &[1, 0, b'b']);
    assert_eq!(&frames[3][..], &[0, 0, 1, 2, 0, b'c']); // the corked batch, not nested
    assert_eq!(&frames[4][..], &[0, 0, 1, 2, 0, b'd', 2, 1, b'e']);
}

#[test]
fn large_frames_reuse_recycled_buffers() {
    let mut m = Mux::default();
    let ch = m.open_channel(&opts("big")).unwrap();
    m.poll_transmit();
    let payload = vec![3u8; 64 * 1024];
    m.send(ch, 0, &payload).unwrap();
    let first = m.poll_transmit().unwrap();
    assert_eq!(first.len(), 2 + payload.len());
    let ptr = first.as_ptr();
    // Sent: its buffer comes back and the next large frame is written into it.
    m.recycle(first.try_into_mut().expect("a large frame owns its buffer"));
    m.send(ch, 1, &payload).unwrap();
    let second = m.poll_transmit().unwrap();
    assert_eq!(second.as_ptr(), ptr);
    assert_eq!(&second[..2], &[1, 1]);
    assert_eq!(&second[2..], &payload[..]);
    // Small and huge buffers are not kept.
    m.recycle(BytesMut::with_capacity(100));
    m.recycle(BytesMut::with_capacity(MAX_SPARE_CAPACITY + 1));
    assert!(m.spare.is_empty());
    for _ in 0..SPARE_BUFFERS + 4 {
        m.recycle(BytesMut::with_capacity(LARGE_FRAME));
    }
    assert_eq!(m.spare.len(), SPARE_BUFFERS);
}
