//! A deterministic virtual network for core tests: two streams, a seeded link model (loss,
//! duplication, latency with jitter, hence reordering, and an MTU limit), virtual time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Stream, Transmit};
use crate::config::StreamConfig;

pub(crate) const A_ADDR: &str = "10.0.0.1:1000";
pub(crate) const B_ADDR: &str = "10.0.0.2:2000";
pub(crate) const A_ID: u32 = 0xA1;
pub(crate) const B_ID: u32 = 0xB2;

/// One direction of the link.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub(crate) loss: f64,
    pub(crate) duplicate: f64,
    pub(crate) latency: Duration,
    pub(crate) jitter: Duration,
    /// Datagrams larger than this (IP level, IPv4) are dropped.
    pub(crate) mtu: usize,
    /// Drop everything (a dead peer).
    pub(crate) down: bool,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            loss: 0.0,
            duplicate: 0.0,
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
            mtu: 1500,
            down: false,
        }
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Reverse<Instant>,
    order: Reverse<u64>,
    to_b: bool,
    bytes: Vec<u8>,
}

/// Two streams over a virtual link.
#[derive(Debug)]
pub(crate) struct Pair {
    pub(crate) now: Instant,
    pub(crate) a: Stream,
    pub(crate) b: Stream,
    pub(crate) a_to_b: Link,
    pub(crate) b_to_a: Link,
    rng: ChaCha8Rng,
    queue: BinaryHeap<InFlight>,
    order: u64,
    buf: Vec<u8>,
    /// Every datagram sent by A (for inspection), if recording.
    pub(crate) log_a: Option<Vec<Vec<u8>>>,
    /// Every datagram sent by B, if recording.
    pub(crate) log_b: Option<Vec<Vec<u8>>>,
    /// Destinations of A's datagrams, if recording.
    pub(crate) dest_a: Vec<SocketAddr>,
    pub(crate) max_segments: usize,
    /// Print every datagram (`UDX_SIM_TRACE=1`).
    trace: bool,
    start: Instant,
}

pub(crate) fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

impl Pair {
    /// Two connected streams.
    pub(crate) fn new(seed: u64, config: StreamConfig) -> Self {
        let mut p = Pair::unconnected(seed, config.clone(), config);
        let now = p.now;
        p.a.connect(now, B_ID, addr(B_ADDR)).unwrap();
        p.b.connect(now, A_ID, addr(A_ADDR)).unwrap();
        p
    }

    pub(crate) fn unconnected(seed: u64, ca: StreamConfig, cb: StreamConfig) -> Self {
        let now = Instant::now();
        Pair {
            now,
            a: Stream::new(A_ID, ca, now),
            b: Stream::new(B_ID, cb, now),
            a_to_b: Link::default(),
            b_to_a: Link::default(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            queue: BinaryHeap::new(),
            order: 0,
            buf: vec![0; 64 * 2048],
            log_a: None,
            log_b: None,
            dest_a: Vec::new(),
            max_segments: 16,
            trace: std::env::var("UDX_SIM_TRACE").is_ok(),
            start: now,
        }
    }

    pub(crate) fn both_links(&mut self, link: Link) {
        self.a_to_b = link.clone();
        self.b_to_a = link;
    }

    /// Drains both streams' transmits onto the link.
    pub(crate) fn flush(&mut self) {
        for to_b in [true, false] {
            loop {
                let stream = if to_b { &mut self.a } else { &mut self.b };
                let Some(t) = stream.poll_transmit(self.now, &mut self.buf, self.max_segments)
                else {
                    break;
                };
                self.put(to_b, t);
            }
        }
    }

    fn put(&mut self, to_b: bool, t: Transmit) {
        let mut off = 0;
        while off < t.size {
            let end = (off + t.segment_size).min(t.size);
            let dgram = self.buf[off..end].to_vec();
            off = end;
            if to_b {
                if let Some(log) = &mut self.log_a {
                    log.push(dgram.clone());
                }
                self.dest_a.push(t.destination);
            } else if let Some(log) = &mut self.log_b {
                log.push(dgram.clone());
            }
            let link = if to_b { &self.a_to_b } else { &self.b_to_a };
            let drop = link.down || dgram.len() + 28 > link.mtu || self.rng.gen_bool(link.loss);
            if self.trace {
                let h = crate::wire::Header::decode(&dgram).unwrap();
                eprintln!(
                    "{:?} {} flags {:#x} seq {} ack {} len {} {}",
                    self.now - self.start,
                    if to_b { "A>B" } else { "B>A" },
                    h.flags,
                    h.seq,
                    h.ack,
                    dgram.len(),
                    if drop { "DROP" } else { "" }
                );
            }
            if drop {
                continue;
            }
            let copies = if self.rng.gen_bool(link.duplicate) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let jitter = if link.jitter.is_zero() {
                    Duration::ZERO
                } else {
                    link.jitter.mul_f64(self.rng.gen::<f64>())
                };
                self.order += 1;
                self.queue.push(InFlight {
                    at: Reverse(self.now + link.latency + jitter),
                    order: Reverse(self.order),
                    to_b,
                    bytes: dgram.clone(),
                });
            }
        }
    }

    /// Advances to the next event (a delivery or a timer) and handles it. Returns false when
    /// nothing is scheduled.
    pub(crate) fn step(&mut self) -> bool {
        self.flush();
        let mut next = self.queue.peek().map(|f| f.at.0);
        for t in [self.a.poll_timeout(), self.b.poll_timeout()]
            .into_iter()
            .flatten()
        {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        let Some(next) = next else {
            return false;
        };
        self.now = self.now.max(next);
        while self.queue.peek().is_some_and(|f| f.at.0 <= self.now) {
            let Some(f) = self.queue.pop() else { break };
            if f.to_b {
                self.b.handle_packet(self.now, &f.bytes);
            } else {
                self.a.handle_packet(self.now, &f.bytes);
            }
        }
        if self.a.poll_timeout().is_some_and(|t| t <= self.now) {
            self.a.handle_timeout(self.now);
        }
        if self.b.poll_timeout().is_some_and(|t| t <= self.now) {
            self.b.handle_timeout(self.now);
        }
        self.flush();
        true
    }

    /// Runs until `done` or until virtual `limit` passes; returns whether `done` held.
    pub(crate) fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&mut Pair) -> bool,
    ) -> bool {
        let end = self.now + limit;
        loop {
            if done(self) {
                return true;
            }
            if self.now > end || !self.step() {
                return done(self);
            }
        }
    }

    /// Advances virtual time by `d`, processing everything on the way.
    pub(crate) fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.flush();
            let mut next = self.queue.peek().map(|f| f.at.0);
            for t in [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
            {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
            match next {
                Some(n) if n <= end => {
                    self.step();
                }
                _ => {
                    self.now = end;
                    self.flush();
                    return;
                }
            }
        }
    }
}

/// Deterministic test payload.
pub(crate) fn pattern(offset: u64, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        let x = offset + i as u64;
        *b = (x.wrapping_mul(31) ^ (x >> 11)) as u8;
    }
}

/// Moves `total` bytes A -> B (and optionally B -> A), verifying them, with END both ways at
/// the end. Returns virtual time taken.
pub(crate) fn transfer(p: &mut Pair, total: u64, both: bool, limit: Duration) -> Duration {
    let start = p.now;
    let mut sent = [0u64; 2];
    let mut recv = [0u64; 2];
    let mut eof = [false; 2];
    // Per direction: generated bytes not yet accepted by the stream.
    let mut pending: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut rbuf = vec![0u8; 64 * 1024];
    let mut expect = vec![0u8; 64 * 1024];
    let ok = p.run_until(limit, |p| {
        let now = p.now;
        for dir in 0..2 {
            let w = if dir == 0 { &mut p.a } else { &mut p.b };
            if dir == 1 && !both {
                if !w.is_write_ended() {
                    w.end(now).unwrap();
                }
                continue;
            }
            loop {
                if pending[dir].is_empty() {
                    let queued = sent[dir];
                    let n = ((total - queued) as usize).min(64 * 1024);
                    if n == 0 {
                        break;
                    }
                    pending[dir].resize(n, 0);
                    pattern(queued, &mut pending[dir]);
                }
                let k = w.write(now, &pending[dir]).unwrap();
                if k == 0 {
                    break;
                }
                pending[dir].drain(..k);
                sent[dir] += k as u64;
            }
            if sent[dir] == total && pending[dir].is_empty() && !w.is_write_ended() {
                w.end(now).unwrap();
            }
        }
        for dir in 0..2 {
            let r = if dir == 0 { &mut p.b } else { &mut p.a };
            loop {
                match r.read(&mut rbuf) {
                    Ok(Some(0)) => {
                        eof[dir] = true;
                        break;
                    }
                    Ok(Some(n)) => {
                        pattern(recv[dir], &mut expect[..n]);
                        assert!(
                            expect[..n] == rbuf[..n],
                            "corrupt bytes at offset {}",
                            recv[dir]
                        );
                        recv[dir] += n as u64;
                    }
                    Ok(None) => break,
                    Err(e) => panic!("read failed: {e} (dir {dir}, got {} bytes)", recv[dir]),
                }
            }
        }
        eof[0] && eof[1] && p.a.is_closed() && p.b.is_closed()
    });
    assert!(
        ok,
        "transfer incomplete: sent {sent:?} recv {recv:?} eof {eof:?} a {:?} b {:?}",
        p.a.stats(),
        p.b.stats()
    );
    assert_eq!(recv[0], total);
    if both {
        assert_eq!(recv[1], total);
    }
    if p.a.close_result() != Some(&Ok(())) {
        let d = format!("{:?}", p.a);
        let i = d.find("snd_una").unwrap_or(0);
        eprintln!("A: {}", &d[i..(i + 3000).min(d.len())]);
        let d = format!("{:?}", p.b);
        let i = d.find("rcv_nxt").unwrap_or(0);
        eprintln!("B: {}", &d[i..(i + 1500).min(d.len())]);
    }
    assert_eq!(p.a.close_result(), Some(&Ok(())), "a: {:?}", p.a.stats());
    assert_eq!(p.b.close_result(), Some(&Ok(())), "b: {:?}", p.b.stats());
    p.now - start
}
