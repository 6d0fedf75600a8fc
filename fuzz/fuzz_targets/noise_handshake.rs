//! Noise handshake messages (`corenet_noise::Handshake::read_message`, the Ed25519 DH of
//! `noise-curve-ed` over snow): what a secret stream or a hyperdht PEER_HANDSHAKE reads from
//! an unauthenticated peer.
//!
//! The first byte picks the mode:
//! - 0: an XX responder reads the rest as message 1 (a cleartext ephemeral key and payload);
//! - 1: an XX initiator sends message 1 and reads the rest as message 2;
//! - 2: an IK responder reads the rest as message 1 (hyperdht servers);
//! - 3: an IK initiator sends message 1 and reads the rest as message 2 (hyperdht clients);
//! - other: two honest parties run XX or IK with fuzzer-chosen payloads, and the fuzzer may
//!   flip one byte of one message on the way.
//!
//! Invariants: no panic; after an accepted message it is our turn (the answer may still fail,
//! as an error, when the remote's ephemeral key is not a valid point); an honest run completes with equal hashes, crossed keys, the expected remote
//! keys and every payload delivered intact; a run with a flipped byte never completes.
#![no_main]

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use corenet_noise::{Handshake, HandshakeOptions, KeyPair, Pattern};
use libfuzzer_sys::fuzz_target;

fn keys() -> &'static (KeyPair, KeyPair) {
    static KEYS: OnceLock<(KeyPair, KeyPair)> = OnceLock::new();
    KEYS.get_or_init(|| (KeyPair::from_seed([1; 32]), KeyPair::from_seed([2; 32])))
}

fn options(seed: u8, remote: Option<&KeyPair>) -> HandshakeOptions {
    HandshakeOptions {
        prologue: b"corenet fuzz".to_vec(),
        remote_public_key: remote.map(KeyPair::public_key),
        rng_seed: Some([seed; 32]),
    }
}

/// One side reads `msg` at the point `pattern` / `initiator` would receive it.
fn read_as(pattern: Pattern, initiator: bool, msg: &[u8]) {
    let (a, b) = keys();
    let mut hs = if initiator {
        let remote = (pattern == Pattern::IK).then_some(b);
        let mut hs = Handshake::new(pattern, true, a, options(3, remote)).expect("initiator");
        hs.write_message(b"hello").expect("first message");
        hs
    } else {
        Handshake::new(pattern, false, b, options(4, None)).expect("responder")
    };
    let Ok(payload) = hs.read_message(msg) else {
        return;
    };
    assert!(payload.len() <= msg.len());
    if hs.is_finished() {
        let r = hs.finish().expect("a finished handshake yields keys");
        assert_ne!(r.tx, r.rx);
    } else {
        assert!(hs.is_my_turn());
        // The answer may still fail: an XX first message is cleartext, and an ephemeral key
        // that is not a valid point only fails the DH when we answer. It fails as an error.
        let _ = hs.write_message(b"reply");
    }
}

#[derive(Arbitrary, Debug)]
struct Run {
    ik: bool,
    payloads: [Vec<u8>; 3],
    /// (message index, byte position, xor mask)
    tamper: Option<(u8, u16, u8)>,
}

fn honest_run(run: Run) {
    let (a, b) = keys();
    let pattern = if run.ik { Pattern::IK } else { Pattern::XX };
    let remote = run.ik.then_some(b);
    let mut sides = [
        Handshake::new(pattern, true, a, options(5, remote)).expect("initiator"),
        Handshake::new(pattern, false, b, options(6, None)).expect("responder"),
    ];
    let tamper = run.tamper.filter(|t| t.2 != 0);
    let mut index = 0usize;
    let mut writer = 0usize;
    let mut tampered_so_far = false;
    while !sides[0].is_finished() || !sides[1].is_finished() {
        assert!(index < 3, "handshake did not finish after 3 messages");
        let payload = &run.payloads[index][..run.payloads[index].len().min(512)];
        let mut msg = match sides[writer].write_message(payload) {
            Ok(m) => m,
            Err(e) => {
                // A flipped ephemeral key in the cleartext first XX message can be an invalid
                // point: the responder accepts the message and fails its DH when it answers.
                assert!(tampered_so_far, "an honest write failed: {e}");
                return;
            }
        };
        assert_eq!(
            msg.len(),
            Handshake::message_len(pattern, index, payload.len())
        );
        let mut tampered = false;
        if let Some((i, pos, mask)) = tamper {
            if usize::from(i % 3) == index {
                let pos = usize::from(pos) % msg.len();
                msg[pos] ^= mask;
                tampered = true;
                tampered_so_far = true;
            }
        }
        match sides[1 - writer].read_message(&msg) {
            Ok(got) => {
                // A flipped byte of a cleartext part (the first XX message) is caught later
                // by the handshake hash; an authenticated part fails right here.
                if !tampered {
                    assert_eq!(got, payload, "payload changed in transit");
                }
            }
            Err(_) => {
                assert!(tampered_so_far, "an honest message was refused");
                return;
            }
        }
        index += 1;
        writer = 1 - writer;
    }
    assert!(!tampered_so_far, "a run with a flipped byte completed");
    let [i, r] = sides;
    let (i, r) = (
        i.finish().expect("initiator"),
        r.finish().expect("responder"),
    );
    assert_eq!(i.hash, r.hash);
    assert_eq!(*i.tx, *r.rx);
    assert_eq!(*i.rx, *r.tx);
    assert_eq!(i.remote_public_key, b.public_key());
    assert_eq!(r.remote_public_key, a.public_key());
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode {
        0 => read_as(Pattern::XX, false, rest),
        1 => read_as(Pattern::XX, true, rest),
        2 => read_as(Pattern::IK, false, rest),
        3 => read_as(Pattern::IK, true, rest),
        _ => {
            if let Ok(run) = Run::arbitrary_take_rest(Unstructured::new(rest)) {
                honest_run(run);
            }
        }
    }
});
