//! The UDX stream core (`corenet_udx::core::Stream`) against a hostile peer: an arbitrary
//! sequence of datagrams, application calls and virtual-time steps.
//!
//! The fuzzer plays the remote end. Its packets carry the stream's id and sequence and ack
//! numbers *relative* to what the stream has sent and received so far (so that acks, SACKs
//! and in-window data are reachable), or are raw datagrams with the stream's id patched in.
//! Time only moves forward, by fuzzer-chosen steps or to the stream's own deadline.
//!
//! Invariants: no panic; every transmit parses as UDX packets addressed to the peer's id and
//! fits the buffer; draining transmits and events terminates; a timer that is due is
//! serviced (the deadline moves past `now` within a bounded number of `handle_timeout`
//! calls); buffered bytes stay within the configured send buffer and receive window (plus
//! the stream's documented `WINDOW_SLACK`, and bounded slack for the ring's growth); a
//! finished stream has no deadline.
#![no_main]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use corenet_udx::core::{Stream, WINDOW_SLACK};
use corenet_udx::wire::{flags, Header, Packet, HEADER_LEN, MAX_DATAGRAM};
use corenet_udx::StreamConfig;
use libfuzzer_sys::fuzz_target;

const LOCAL_ID: u32 = 7;
const REMOTE_ID: u32 = 9;
const WINDOW: u32 = 64 * 1024;
const SEND_BUFFER: usize = 64 * 1024;
const SEGMENTS: usize = 4;
/// Generous bounds: a stream that needs more than this to drain is looping.
const MAX_TRANSMITS_PER_STEP: usize = 20_000;
const MAX_DUE_TIMEOUTS: usize = 1_000;

#[derive(Arbitrary, Debug)]
enum Op {
    /// A packet from the peer, numbered relative to the stream's state.
    Packet {
        flags: u8,
        data_offset: u8,
        rwnd: u32,
        /// Added to the next sequence number the stream expects from us.
        seq_delta: i8,
        /// Added to the stream's next sequence number (0: ack everything sent).
        ack_delta: i8,
        /// SACK blocks relative to the stream's next sequence number.
        sacks: Vec<(i8, i8)>,
        payload_len: u16,
        wrong_id: bool,
    },
    /// Raw bytes; when long enough, bytes 4..8 are set to the stream's id.
    Raw(Vec<u8>),
    /// Advance virtual time.
    Advance(u16),
    /// Jump to the stream's deadline and handle it.
    Timeout,
    Write(u16),
    Read(u16),
    End,
    Destroy,
    SendMessage(u8),
    DiscardReads,
    ChangeRemote,
    /// A forwarded packet accounted for by a relay stream.
    Relayed(Vec<u8>),
    SetRelayed,
}

struct Harness {
    stream: Stream,
    now: Instant,
    /// Highest sequence number + 1 seen in the stream's output (its `snd_nxt` as far as we
    /// can tell).
    their_next: u32,
    /// The next sequence number we (the peer) send.
    our_next: u32,
    remote_id: u32,
    buf: Vec<u8>,
}

impl Harness {
    fn drain(&mut self) {
        let mut n = 0;
        while let Some(t) = self.stream.poll_transmit(self.now, &mut self.buf, SEGMENTS) {
            n += 1;
            assert!(n < MAX_TRANSMITS_PER_STEP, "poll_transmit does not run dry");
            assert!(t.size <= self.buf.len() && t.size > 0);
            assert!(t.segment_size > 0 && t.segment_size <= MAX_DATAGRAM);
            assert!(t.segments() <= SEGMENTS);
            for seg in self.buf[..t.size].chunks(t.segment_size) {
                let p = Packet::decode(seg).expect("the stream sent a malformed packet");
                // After `change_remote`, packets in flight are retransmitted to the old id.
                assert!(
                    p.header.id == REMOTE_ID || p.header.id == self.remote_id,
                    "packet for id {}",
                    p.header.id
                );
                let next = if p.header.has(flags::DATA | flags::END | flags::DESTROY) {
                    p.header.seq.wrapping_add(1)
                } else {
                    p.header.seq
                };
                if next.wrapping_sub(self.their_next) as i32 > 0 {
                    self.their_next = next;
                }
            }
        }
        let mut e = 0;
        while self.stream.poll_event().is_some() {
            e += 1;
            assert!(e <= 16, "poll_event does not run dry");
        }
        while self.stream.recv_message().is_some() {}
        let storage = self.stream.buffer_storage();
        assert!(
            storage <= 4 * (SEND_BUFFER + WINDOW as usize) + (1 << 20),
            "stream buffers {storage} bytes"
        );
        // The stream takes up to WINDOW_SLACK beyond its window (one packet past a small
        // window, retransmissions), never more.
        assert!(self.stream.readable_bytes() <= WINDOW as usize + WINDOW_SLACK);
        if self.stream.is_finished() {
            assert_eq!(self.stream.poll_timeout(), None);
        }
    }

    fn handle_due(&mut self) {
        let mut n = 0;
        while let Some(t) = self.stream.poll_timeout() {
            if t > self.now {
                break;
            }
            n += 1;
            assert!(n < MAX_DUE_TIMEOUTS, "a due timer is never serviced");
            self.stream.handle_timeout(self.now);
            self.drain();
        }
    }

    fn packet(&self, op: &Op) -> Vec<u8> {
        let Op::Packet {
            flags,
            data_offset,
            rwnd,
            seq_delta,
            ack_delta,
            sacks,
            payload_len,
            wrong_id,
        } = op
        else {
            unreachable!()
        };
        let sack_bytes: Vec<u8> = sacks
            .iter()
            .take(64)
            .flat_map(|&(s, e)| {
                let s = self.their_next.wrapping_add(s as u32);
                let e = self.their_next.wrapping_add(e as u32);
                s.to_le_bytes().into_iter().chain(e.to_le_bytes())
            })
            .collect();
        let h = Header {
            flags: *flags,
            data_offset: *data_offset,
            id: if *wrong_id { LOCAL_ID + 1 } else { LOCAL_ID },
            rwnd: *rwnd,
            seq: self.our_next.wrapping_add(*seq_delta as u32),
            ack: self.their_next.wrapping_add(*ack_delta as u32),
        };
        let len = usize::from(*payload_len) % 1600;
        let mut out = vec![0u8; HEADER_LEN];
        h.encode(&mut out).expect("header fits");
        out.extend_from_slice(&sack_bytes);
        out.extend((0..len).map(|i| (i as u8) ^ (h.seq as u8)));
        out
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let now = corenet_fuzz::epoch();
    let config = StreamConfig::default()
        .with_recv_window(WINDOW)
        .with_send_buffer(SEND_BUFFER)
        .with_keepalive(Some(Duration::from_secs(5)))
        .with_idle_timeout(Some(Duration::from_secs(30)))
        .with_zero_window_timeout(Some(Duration::from_secs(20)))
        .with_message_queue(8);
    let mut h = Harness {
        stream: Stream::new(LOCAL_ID, config, now),
        now,
        their_next: 0,
        our_next: 0,
        remote_id: REMOTE_ID,
        buf: vec![0u8; SEGMENTS * MAX_DATAGRAM],
    };
    let peer = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 4000));
    h.stream
        .connect(now, REMOTE_ID, peer)
        .expect("a new stream connects");
    h.drain();
    let data = [0x5au8; 4096];
    let mut read_buf = [0u8; 4096];
    for op in ops.iter().take(256) {
        match op {
            Op::Packet {
                flags: f,
                seq_delta,
                ..
            } => {
                let bytes = h.packet(op);
                if f & (flags::DATA | flags::END) != 0 && *seq_delta == 0 {
                    h.our_next = h.our_next.wrapping_add(1);
                }
                h.stream.handle_packet(h.now, &bytes);
            }
            Op::Raw(bytes) => {
                let mut bytes = bytes.clone();
                if bytes.len() >= 8 {
                    bytes[4..8].copy_from_slice(&LOCAL_ID.to_le_bytes());
                }
                h.stream.handle_packet(h.now, &bytes);
            }
            Op::Advance(ms) => h.now += Duration::from_millis(u64::from(*ms)),
            Op::Timeout => {
                if let Some(t) = h.stream.poll_timeout() {
                    // Deadlines are never in the past by more than the last step.
                    h.now = h.now.max(t);
                }
            }
            Op::Write(n) => {
                let n = usize::from(*n) % data.len();
                let _ = h.stream.write(h.now, &data[..n]);
            }
            Op::Read(n) => {
                let n = usize::from(*n) % read_buf.len();
                if let Ok(Some(got)) = h.stream.read(&mut read_buf[..n]) {
                    assert!(got <= n);
                }
            }
            Op::End => {
                let _ = h.stream.end(h.now);
            }
            Op::Destroy => h.stream.destroy(h.now),
            Op::SendMessage(n) => {
                let n = usize::from(*n).min(h.stream.max_message_len());
                let _ = h.stream.send_message(&data[..n]);
            }
            Op::DiscardReads => h.stream.discard_reads(),
            Op::ChangeRemote => {
                let other = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 3), 4001));
                if h.stream.change_remote(h.now, REMOTE_ID + 1, other).is_ok() {
                    h.remote_id = REMOTE_ID + 1;
                }
            }
            Op::Relayed(bytes) => h.stream.handle_relayed(h.now, bytes),
            Op::SetRelayed => h.stream.set_relayed(),
        }
        h.drain();
        h.handle_due();
    }
    // Let it run out: every timer fires in turn, and the stream ends up closed or idle.
    for _ in 0..64 {
        match h.stream.poll_timeout() {
            Some(t) => {
                assert!(t + Duration::from_secs(3600) > h.now);
                h.now = h.now.max(t);
                h.stream.handle_timeout(h.now);
                h.drain();
            }
            None => break,
        }
    }
});
