//! Secret-stream framing and decryption (`corenet_noise::SecretStream` after a handshake):
//! the bytes a connected peer sends, read through an in-memory transport that hands them over
//! in fuzzer-chosen chunks.
//!
//! The fuzzer describes the remote's byte stream: the header frame (possibly damaged), then
//! frames that are honest encrypted messages (any secretstream tag, rekey included),
//! keepalives, raw bytes, bare length prefixes; optionally one flipped byte anywhere.
//!
//! Invariants: no panic; what is received is exactly the honest messages, in order, up to the
//! first damaged byte; a fully honest stream delivers every message and then a clean end
//! (frames within the limit) or fails with the frame limit; an error is sticky; frames over
//! the configured maximum are refused before they are buffered.
#![no_main]

use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use arbitrary::Arbitrary;
use corenet_noise::secretstream::{Push, ABYTES, HEADER_LEN};
use corenet_noise::{
    stream_id, Config, Error, Handshake, HandshakeOptions, HandshakeResult, KeyPair, Pattern,
    SecretStream, HEADER_FRAME_LEN,
};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Our side (initiator) and the remote's, from one honest XX handshake.
fn handshake() -> &'static (HandshakeResult, HandshakeResult) {
    static R: OnceLock<(HandshakeResult, HandshakeResult)> = OnceLock::new();
    R.get_or_init(|| {
        let (a, b) = (KeyPair::from_seed([1; 32]), KeyPair::from_seed([2; 32]));
        let opts = |s| HandshakeOptions {
            rng_seed: Some([s; 32]),
            ..HandshakeOptions::default()
        };
        let mut i = Handshake::new(Pattern::XX, true, &a, opts(3)).expect("initiator");
        let mut r = Handshake::new(Pattern::XX, false, &b, opts(4)).expect("responder");
        let m1 = i.write_message(&[]).expect("m1");
        r.read_message(&m1).expect("m1");
        let m2 = r.write_message(&[]).expect("m2");
        i.read_message(&m2).expect("m2");
        let m3 = i.write_message(&[]).expect("m3");
        r.read_message(&m3).expect("m3");
        (
            i.finish().expect("initiator"),
            r.finish().expect("responder"),
        )
    })
}

/// A transport that yields `input` in chunks and swallows writes.
struct Wire {
    input: Vec<u8>,
    pos: usize,
    chunks: Vec<u8>,
    next_chunk: usize,
    /// At the end of the input: pending forever instead of EOF.
    hang: bool,
}

impl AsyncRead for Wire {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let left = self.input.len() - self.pos;
        if left == 0 {
            return if self.hang {
                Poll::Pending
            } else {
                Poll::Ready(Ok(()))
            };
        }
        let chunk = match self.chunks.get(self.next_chunk % self.chunks.len().max(1)) {
            Some(&c) => usize::from(c).max(1),
            None => left,
        };
        self.next_chunk += 1;
        let n = chunk.min(left).min(buf.remaining());
        let pos = self.pos;
        buf.put_slice(&self.input[pos..pos + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[derive(Arbitrary, Debug)]
enum Frame {
    /// An honest message with a secretstream tag (0 message, 1 push, 2 rekey, 3 final).
    Message(Vec<u8>, u8),
    Keepalive,
    /// Raw bytes (framing garbage).
    Raw(Vec<u8>),
    /// A bare `uint24` length prefix.
    Length(u32),
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Damage the header frame: (position, xor mask).
    bad_header: Option<(u8, u8)>,
    frames: Vec<Frame>,
    /// Flip one byte of the whole stream: (position, xor mask).
    flip: Option<(u16, u8)>,
    chunks: Vec<u8>,
    max_frame: u16,
    hang: bool,
}

fn frame(out: &mut Vec<u8>, body: &[u8]) {
    let len = body.len() as u32;
    out.extend_from_slice(&len.to_le_bytes()[..3]);
    out.extend_from_slice(body);
}

fuzz_target!(|input: Input| {
    let (ours, theirs) = handshake();
    let max_frame = HEADER_FRAME_LEN + usize::from(input.max_frame) % 4096;
    let mut bytes = Vec::new();
    // Where honest bytes stop (the first damaged or foreign byte), and the honest messages
    // with the offset at which each one's frame is complete.
    let mut honest_until = usize::MAX;
    let mut expected: Vec<(Vec<u8>, usize)> = Vec::new();
    let mut header = [0u8; HEADER_LEN];
    header[0] = 0x42;
    let mut push = Push::new(&theirs.tx, &header);
    let mut hframe = stream_id(&theirs.hash, theirs.is_initiator).to_vec();
    hframe.extend_from_slice(&header);
    if let Some((pos, mask)) = input.bad_header.filter(|b| b.1 != 0) {
        hframe[usize::from(pos) % HEADER_FRAME_LEN] ^= mask;
        honest_until = 0;
    }
    frame(&mut bytes, &hframe);
    let mut too_large = None;
    for f in input.frames.iter().take(64) {
        match f {
            Frame::Message(m, tag) => {
                let m = &m[..m.len().min(8192)];
                let body = push.push(m, tag % 4);
                assert_eq!(body.len(), m.len() + ABYTES);
                if body.len() > max_frame && too_large.is_none() {
                    too_large = Some(bytes.len());
                    honest_until = honest_until.min(bytes.len());
                }
                frame(&mut bytes, &body);
                if !m.is_empty() {
                    expected.push((m.to_vec(), bytes.len()));
                }
            }
            Frame::Keepalive => {
                let body = push.push(&[], 0);
                frame(&mut bytes, &body);
            }
            Frame::Raw(r) => {
                honest_until = honest_until.min(bytes.len());
                bytes.extend_from_slice(&r[..r.len().min(4096)]);
            }
            Frame::Length(n) => {
                honest_until = honest_until.min(bytes.len());
                bytes.extend_from_slice(&n.to_le_bytes()[..3]);
            }
        }
    }
    let mut flipped_at = None;
    if let Some((pos, mask)) = input.flip.filter(|f| f.1 != 0 && !bytes.is_empty()) {
        let pos = usize::from(pos) % bytes.len();
        bytes[pos] ^= mask;
        honest_until = honest_until.min(pos);
        flipped_at = Some(pos);
    }
    let total = bytes.len();
    let wire = Wire {
        input: bytes,
        pos: 0,
        chunks: input.chunks.clone(),
        next_chunk: 0,
        hang: input.hang,
    };
    let config = Config::default().with_max_frame_len(max_frame);
    let mut stream = SecretStream::from_handshake(wire, ours.clone(), config);
    let mut cx = Context::from_waker(Waker::noop());
    let mut got = Vec::new();
    let mut outcome = None;
    for _ in 0..100_000 {
        match stream.poll_recv(&mut cx) {
            Poll::Ready(Ok(Some(m))) => got.push(m),
            Poll::Ready(Ok(None)) => {
                outcome = Some(Ok(()));
                break;
            }
            Poll::Ready(Err(e)) => {
                outcome = Some(Err(e));
                break;
            }
            Poll::Pending => break,
        }
    }
    // Everything honest that arrived before the first bad byte is delivered, in order.
    let must = expected
        .iter()
        .filter(|(_, end)| *end <= honest_until)
        .count();
    assert!(got.len() <= expected.len(), "more messages than were sent");
    for (g, (e, _)) in got.iter().zip(&expected) {
        assert_eq!(&g[..], &e[..], "a message changed");
    }
    assert!(
        got.len() >= must,
        "lost honest messages: got {} of {must}",
        got.len()
    );
    if honest_until == usize::MAX {
        assert_eq!(got.len(), expected.len());
        match &outcome {
            Some(Ok(())) => assert!(!input.hang),
            None => assert!(input.hang),
            Some(Err(e)) => panic!("an honest stream of {total} bytes failed: {e}"),
        }
    }
    let prefix_intact = |at: usize| flipped_at.is_none_or(|f| f >= at + 3);
    if too_large.is_some_and(|at| at == honest_until && prefix_intact(at)) && !input.hang {
        // The first damage is an oversized frame (its length prefix intact): that is what
        // stops the stream, before its body is buffered.
        assert!(
            matches!(outcome, Some(Err(Error::FrameTooLarge { .. }))),
            "oversized frame gave {outcome:?}"
        );
    }
    if let Some(Err(_)) = outcome {
        // Errors are sticky.
        assert!(matches!(stream.poll_recv(&mut cx), Poll::Ready(Err(_))));
    }
});
