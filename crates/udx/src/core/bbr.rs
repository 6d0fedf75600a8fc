//! Congestion control: BBR v1 (as in Linux `tcp_bbr.c` and libudx `udx_bbr.c`), counted in
//! packets, with microsecond time.
//!
//! It is sender-side only, so it need not match the peer. Differences from libudx, each a
//! deliberate choice:
//! - PROBE_RTT holds the window at `max(4, BDP/2)` instead of 4 packets (as BBRv2 does), which
//!   costs far less throughput every 10 s on fast paths and still drains the queue.
//! - The window target includes a send-quantum budget (Linux's `tso_segs_goal` idea): we send
//!   in GSO batches, and a window smaller than a few batches would stall a loopback path whose
//!   BDP is a handful of packets.
//! - On leaving recovery the window is restored to `max(cwnd, prior_cwnd)` only; libudx first
//!   sets it to `ssthresh` (0xFFFF before DRAIN), an unbounded burst (spec section 7.3).

use std::time::{Duration, Instant};

use crate::config::INITIAL_CWND;

/// 2/ln(2): the STARTUP gain.
const HIGH_GAIN: f64 = 2.885_39;
/// The DRAIN pacing gain.
const DRAIN_GAIN: f64 = 1.0 / HIGH_GAIN;
/// The PROBE_BW window gain.
const CWND_GAIN: f64 = 2.0;
/// PROBE_BW pacing gains, one phase per min RTT.
const PACING_GAINS: [f64; 8] = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
/// The bandwidth filter's length in round trips.
const BW_WINDOW_ROUNDS: u64 = 10;
/// How long a min RTT sample stays valid before PROBE_RTT.
const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
/// Time spent at the reduced window in PROBE_RTT.
const PROBE_RTT_TIME: Duration = Duration::from_millis(200);
/// The smallest window.
pub(crate) const MIN_CWND: u32 = 4;
/// Bandwidth must grow by this factor per round to count as still growing.
const FULL_BW_THRESH: f64 = 1.25;
/// Rounds without growth before the pipe counts as full.
const FULL_BW_ROUNDS: u8 = 3;
/// Pacing a little below the estimate keeps queues short.
const PACING_MARGIN: f64 = 0.99;
/// Ack-aggregation window, in rounds.
const EXTRA_ACKED_ROUNDS: u8 = 5;
/// The aggregation budget is capped at this much time at the estimated bandwidth.
const EXTRA_ACKED_MAX_TIME: Duration = Duration::from_millis(100);
/// Largest send quantum (packets in one GSO batch).
const MAX_QUANTUM: u32 = 64;

/// One delivery-rate sample, built by the stream for each ack that delivered packets.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RateSample {
    /// Packets delivered over the interval.
    pub(crate) delivered: u64,
    /// The sampling interval.
    pub(crate) interval: Duration,
    /// Total delivered when the sampled packet was sent.
    pub(crate) prior_delivered: u64,
    /// The sampled packet was sent while application-limited.
    pub(crate) is_app_limited: bool,
    /// RTT of the newest packet acknowledged (if it was never retransmitted).
    pub(crate) rtt: Option<Duration>,
    /// Packets newly acknowledged (cumulatively or selectively) by this ack.
    pub(crate) acked: u32,
    /// Packets newly declared lost while processing this ack.
    pub(crate) losses: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Startup,
    Drain,
    ProbeBw,
    ProbeRtt,
}

/// BBR state.
#[derive(Debug, Clone)]
pub(crate) struct Bbr {
    mode: Mode,
    /// Congestion window in packets.
    cwnd: u32,
    /// Pacing rate in bytes per second.
    pacing_rate: f64,
    /// Max-bandwidth filter: (round, packets/s) per slot, `BW_WINDOW_ROUNDS` slots.
    bw_slots: [(u64, f64); BW_WINDOW_ROUNDS as usize],
    min_rtt: Option<Duration>,
    min_rtt_stamp: Option<Instant>,
    round_count: u64,
    next_round_delivered: u64,
    round_start: bool,
    full_bw: f64,
    full_bw_count: u8,
    full_bw_reached: bool,
    cycle_idx: usize,
    cycle_stamp: Option<Instant>,
    pacing_gain: f64,
    cwnd_gain: f64,
    probe_rtt_done: Option<Instant>,
    probe_rtt_round_done: bool,
    prior_cwnd: u32,
    packet_conservation: bool,
    ack_epoch_start: Option<Instant>,
    ack_epoch_acked: u64,
    extra_acked: [u32; 2],
    extra_acked_idx: usize,
    extra_acked_rounds: u8,
}

impl Bbr {
    /// `mss` is the payload size used for the initial pacing rate.
    pub(crate) fn new(mss: usize) -> Self {
        // libudx: cwnd packets per millisecond at the startup gain.
        let pacing_rate = f64::from(INITIAL_CWND) * mss as f64 * 1000.0 * HIGH_GAIN * PACING_MARGIN;
        Bbr {
            mode: Mode::Startup,
            cwnd: INITIAL_CWND,
            pacing_rate,
            bw_slots: [(0, 0.0); BW_WINDOW_ROUNDS as usize],
            min_rtt: None,
            min_rtt_stamp: None,
            round_count: 0,
            next_round_delivered: 0,
            round_start: false,
            full_bw: 0.0,
            full_bw_count: 0,
            full_bw_reached: false,
            cycle_idx: 0,
            cycle_stamp: None,
            pacing_gain: HIGH_GAIN,
            cwnd_gain: HIGH_GAIN,
            probe_rtt_done: None,
            probe_rtt_round_done: false,
            prior_cwnd: 0,
            packet_conservation: false,
            ack_epoch_start: None,
            ack_epoch_acked: 0,
            extra_acked: [0; 2],
            extra_acked_idx: 0,
            extra_acked_rounds: 0,
        }
    }

    pub(crate) fn cwnd(&self) -> u32 {
        self.cwnd
    }

    pub(crate) fn pacing_rate(&self) -> f64 {
        self.pacing_rate
    }

    #[cfg(test)]
    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// Estimated bottleneck bandwidth in packets per second.
    pub(crate) fn max_bw(&self) -> f64 {
        let lo = self.round_count.saturating_sub(BW_WINDOW_ROUNDS - 1);
        self.bw_slots
            .iter()
            .filter(|(r, _)| *r >= lo && *r <= self.round_count)
            .map(|(_, b)| *b)
            .fold(0.0, f64::max)
    }

    fn bdp(&self, gain: f64) -> u32 {
        let Some(min_rtt) = self.min_rtt else {
            return INITIAL_CWND;
        };
        let bw = self.max_bw();
        if bw <= 0.0 {
            return INITIAL_CWND;
        }
        (bw * min_rtt.as_secs_f64() * gain)
            .ceil()
            .min(f64::from(u32::MAX / 2)) as u32
    }

    fn quantum(&self, mss: usize) -> u32 {
        // About a millisecond at the pacing rate, within [2, 64] packets.
        let per_ms = self.pacing_rate / 1000.0 / mss.max(1) as f64;
        (per_ms as u32).clamp(2, MAX_QUANTUM)
    }

    fn probe_rtt_cwnd(&self) -> u32 {
        (self.bdp(1.0) / 2).max(MIN_CWND)
    }

    fn save_cwnd(&mut self) {
        self.prior_cwnd = if self.mode != Mode::ProbeRtt && !self.packet_conservation {
            self.cwnd
        } else {
            self.prior_cwnd.max(self.cwnd)
        };
    }

    /// Loss detected while open: packet conservation for one round.
    pub(crate) fn on_enter_recovery(&mut self, inflight: u32) {
        self.save_cwnd();
        self.cwnd = inflight.max(MIN_CWND);
        self.packet_conservation = true;
    }

    /// Recovery (or loss) is over: restore the window we had.
    pub(crate) fn on_exit_recovery(&mut self) {
        self.cwnd = self.cwnd.max(self.prior_cwnd);
        self.packet_conservation = false;
    }

    /// A retransmission timeout: shrink to the minimum, forget the full-pipe estimate
    /// (libudx `bbr_on_rto`), and start a round.
    pub(crate) fn on_rto(&mut self) {
        self.save_cwnd();
        self.cwnd = MIN_CWND;
        self.full_bw = 0.0;
        self.full_bw_count = 0;
        self.round_start = true;
    }

    /// Sender restarts after being idle with nothing in flight.
    pub(crate) fn on_idle_restart(&mut self, now: Instant, mss: usize) {
        self.ack_epoch_start = Some(now);
        self.ack_epoch_acked = 0;
        if self.mode == Mode::ProbeBw {
            // Pace at the estimate, not above it, after idle.
            let rate = self.max_bw() * PACING_MARGIN;
            if rate > 0.0 {
                self.pacing_rate = self.pacing_rate.min(rate * mss as f64);
            }
        }
    }

    /// The main per-ack step.
    pub(crate) fn on_ack(
        &mut self,
        now: Instant,
        rs: &RateSample,
        delivered_total: u64,
        inflight: u32,
        mss: usize,
    ) {
        self.update_bw(rs, delivered_total);
        self.update_ack_aggregation(now, rs);
        self.update_cycle_phase(now, rs, inflight);
        self.check_full_bw_reached(rs);
        self.check_drain(now, inflight);
        self.update_min_rtt(now, rs, inflight, delivered_total);
        self.update_gains();
        self.set_pacing_rate(mss);
        self.set_cwnd(rs, inflight, delivered_total, mss);
    }

    fn update_bw(&mut self, rs: &RateSample, delivered_total: u64) {
        self.round_start = false;
        if rs.delivered == 0 || rs.interval.is_zero() {
            return;
        }
        if rs.prior_delivered >= self.next_round_delivered {
            self.next_round_delivered = delivered_total;
            self.round_count += 1;
            self.round_start = true;
            self.packet_conservation = false;
        }
        let bw = rs.delivered as f64 / rs.interval.as_secs_f64();
        if !rs.is_app_limited || bw >= self.max_bw() {
            let slot = &mut self.bw_slots[(self.round_count % BW_WINDOW_ROUNDS) as usize];
            if slot.0 != self.round_count {
                *slot = (self.round_count, bw);
            } else if bw > slot.1 {
                slot.1 = bw;
            }
        }
    }

    fn update_ack_aggregation(&mut self, now: Instant, rs: &RateSample) {
        if rs.acked == 0 || rs.interval.is_zero() {
            return;
        }
        if self.round_start {
            self.extra_acked_rounds = self.extra_acked_rounds.saturating_add(1);
            if self.extra_acked_rounds >= EXTRA_ACKED_ROUNDS {
                self.extra_acked_rounds = 0;
                self.extra_acked_idx ^= 1;
                self.extra_acked[self.extra_acked_idx] = 0;
            }
        }
        let start = *self.ack_epoch_start.get_or_insert(now);
        let epoch = now.saturating_duration_since(start).as_secs_f64();
        let mut expected = (self.max_bw() * epoch) as u64;
        if self.ack_epoch_acked <= expected {
            self.ack_epoch_acked = 0;
            self.ack_epoch_start = Some(now);
            expected = 0;
        }
        self.ack_epoch_acked = (self.ack_epoch_acked + u64::from(rs.acked)).min(0xF_FFFF);
        let extra =
            (self.ack_epoch_acked.saturating_sub(expected)).min(u64::from(self.cwnd)) as u32;
        let slot = &mut self.extra_acked[self.extra_acked_idx];
        *slot = (*slot).max(extra);
    }

    fn extra_acked(&self) -> u32 {
        if !self.full_bw_reached {
            return 0;
        }
        let cap = (self.max_bw() * EXTRA_ACKED_MAX_TIME.as_secs_f64()) as u32;
        self.extra_acked[0].max(self.extra_acked[1]).min(cap)
    }

    fn update_cycle_phase(&mut self, now: Instant, rs: &RateSample, inflight: u32) {
        if self.mode != Mode::ProbeBw {
            return;
        }
        let min_rtt = self.min_rtt.unwrap_or(Duration::from_millis(1));
        let full_length = self
            .cycle_stamp
            .is_none_or(|s| now.saturating_duration_since(s) > min_rtt);
        let gain = PACING_GAINS[self.cycle_idx];
        let next = if gain == 1.0 {
            full_length
        } else if gain > 1.0 {
            full_length && (rs.losses > 0 || inflight >= self.bdp(gain))
        } else {
            full_length || inflight <= self.bdp(1.0)
        };
        if next {
            self.cycle_idx = (self.cycle_idx + 1) % PACING_GAINS.len();
            self.cycle_stamp = Some(now);
        }
    }

    fn check_full_bw_reached(&mut self, rs: &RateSample) {
        if self.full_bw_reached || !self.round_start || rs.is_app_limited {
            return;
        }
        let bw = self.max_bw();
        if bw >= self.full_bw * FULL_BW_THRESH {
            self.full_bw = bw;
            self.full_bw_count = 0;
            return;
        }
        self.full_bw_count += 1;
        self.full_bw_reached = self.full_bw_count >= FULL_BW_ROUNDS;
    }

    fn check_drain(&mut self, now: Instant, inflight: u32) {
        if self.mode == Mode::Startup && self.full_bw_reached {
            self.mode = Mode::Drain;
        }
        if self.mode == Mode::Drain && inflight <= self.bdp(1.0) {
            self.enter_probe_bw(now);
        }
    }

    fn enter_probe_bw(&mut self, now: Instant) {
        self.mode = Mode::ProbeBw;
        // libudx starts at index 3 and advances at once; not randomised.
        self.cycle_idx = 4;
        self.cycle_stamp = Some(now);
    }

    fn update_min_rtt(&mut self, now: Instant, rs: &RateSample, inflight: u32, delivered: u64) {
        let expired = self
            .min_rtt_stamp
            .is_some_and(|s| now.saturating_duration_since(s) > MIN_RTT_WINDOW);
        if let Some(rtt) = rs.rtt {
            if self.min_rtt.is_none_or(|m| rtt < m) || expired {
                self.min_rtt = Some(rtt);
                self.min_rtt_stamp = Some(now);
            }
        }
        if expired && self.mode != Mode::ProbeRtt {
            self.mode = Mode::ProbeRtt;
            self.save_cwnd();
            self.probe_rtt_done = None;
        }
        if self.mode == Mode::ProbeRtt {
            match self.probe_rtt_done {
                None if inflight <= self.probe_rtt_cwnd() => {
                    self.probe_rtt_done = Some(now + PROBE_RTT_TIME);
                    self.probe_rtt_round_done = false;
                    self.next_round_delivered = delivered;
                }
                None => {}
                Some(done) => {
                    if self.round_start {
                        self.probe_rtt_round_done = true;
                    }
                    if self.probe_rtt_round_done && now >= done {
                        self.min_rtt_stamp = Some(now);
                        self.cwnd = self.cwnd.max(self.prior_cwnd);
                        if self.full_bw_reached {
                            self.enter_probe_bw(now);
                        } else {
                            self.mode = Mode::Startup;
                        }
                    }
                }
            }
        }
    }

    fn update_gains(&mut self) {
        let (p, c) = match self.mode {
            Mode::Startup => (HIGH_GAIN, HIGH_GAIN),
            Mode::Drain => (DRAIN_GAIN, HIGH_GAIN),
            Mode::ProbeBw => (PACING_GAINS[self.cycle_idx], CWND_GAIN),
            Mode::ProbeRtt => (1.0, 1.0),
        };
        self.pacing_gain = p;
        self.cwnd_gain = c;
    }

    fn set_pacing_rate(&mut self, mss: usize) {
        let bw = self.max_bw();
        if bw <= 0.0 {
            return;
        }
        let rate = bw * mss as f64 * self.pacing_gain * PACING_MARGIN;
        if self.full_bw_reached || rate > self.pacing_rate {
            self.pacing_rate = rate;
        }
    }

    fn set_cwnd(&mut self, rs: &RateSample, inflight: u32, delivered: u64, mss: usize) {
        if rs.acked > 0 {
            if rs.losses > 0 {
                self.cwnd = self.cwnd.saturating_sub(rs.losses).max(1);
            }
            if self.packet_conservation {
                self.cwnd = self.cwnd.max(inflight + rs.acked);
            } else {
                let target = self.bdp(self.cwnd_gain) + self.extra_acked() + 3 * self.quantum(mss);
                if self.full_bw_reached {
                    self.cwnd = (self.cwnd + rs.acked).min(target);
                } else if self.cwnd < target || delivered < u64::from(INITIAL_CWND) {
                    self.cwnd += rs.acked;
                }
            }
            self.cwnd = self.cwnd.max(MIN_CWND);
        }
        if self.mode == Mode::ProbeRtt {
            self.cwnd = self.cwnd.min(self.probe_rtt_cwnd());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds BBR a steady path: `bw` packets/s, `rtt`, acks of `per_ack` packets.
    fn drive(b: &mut Bbr, start: Instant, secs: f64, bw: f64, rtt: Duration) -> Instant {
        let per_ack = 10u32;
        let step = Duration::from_secs_f64(f64::from(per_ack) / bw);
        let mut now = start;
        let mut delivered = 0u64;
        let end = start + Duration::from_secs_f64(secs);
        while now < end {
            now += step;
            let inflight = (bw * rtt.as_secs_f64()) as u32;
            let rs = RateSample {
                delivered: (bw * rtt.as_secs_f64()) as u64,
                interval: rtt,
                prior_delivered: delivered.saturating_sub((bw * rtt.as_secs_f64()) as u64),
                is_app_limited: false,
                rtt: Some(rtt),
                acked: per_ack,
                losses: 0,
            };
            delivered += u64::from(per_ack);
            b.on_ack(now, &rs, delivered, inflight.min(b.cwnd()), 1152);
        }
        now
    }

    #[test]
    fn converges_to_probe_bw_at_the_path_rate() {
        let start = Instant::now();
        let mut b = Bbr::new(1152);
        assert_eq!(b.mode(), Mode::Startup);
        let rtt = Duration::from_millis(20);
        drive(&mut b, start, 3.0, 10_000.0, rtt);
        assert_eq!(b.mode(), Mode::ProbeBw);
        let bw = b.max_bw();
        assert!((9_000.0..=11_000.0).contains(&bw), "bw {bw}");
        // BDP = 200 packets; cwnd = 2 BDP plus budgets.
        assert!(b.cwnd() >= 400 && b.cwnd() < 700, "cwnd {}", b.cwnd());
        let rate = b.pacing_rate() / 1152.0;
        assert!((7_000.0..=13_000.0).contains(&rate), "rate {rate}");
    }

    #[test]
    fn rto_shrinks_and_recovery_restores() {
        let start = Instant::now();
        let mut b = Bbr::new(1152);
        drive(&mut b, start, 2.0, 10_000.0, Duration::from_millis(20));
        let before = b.cwnd();
        b.on_rto();
        assert_eq!(b.cwnd(), MIN_CWND);
        b.on_exit_recovery();
        assert_eq!(b.cwnd(), before);
        b.on_enter_recovery(7);
        assert_eq!(b.cwnd(), 7);
        b.on_exit_recovery();
        assert_eq!(b.cwnd(), before);
    }

    #[test]
    fn probe_rtt_after_ten_seconds() {
        let start = Instant::now();
        let mut b = Bbr::new(1152);
        let rtt = Duration::from_millis(20);
        let mut t = drive(&mut b, start, 1.0, 10_000.0, rtt);
        let before = b.cwnd();
        // RTT samples above the minimum: the min-RTT filter expires after 10 s.
        let mut entered = None;
        for _ in 0..150 {
            t = drive(&mut b, t, 0.1, 10_000.0, rtt + Duration::from_millis(5));
            if b.mode() == Mode::ProbeRtt && entered.is_none() {
                entered = Some(t - start);
                assert!(b.cwnd() <= before / 2 + MIN_CWND, "cwnd {}", b.cwnd());
            }
        }
        let entered = entered.expect("PROBE_RTT never entered");
        assert!(
            entered >= Duration::from_secs(10) && entered < Duration::from_secs(12),
            "{entered:?}"
        );
        assert_eq!(b.mode(), Mode::ProbeBw);
    }
}
