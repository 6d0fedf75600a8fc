//! RTT estimation and the retransmission timeout (RFC 6298 as libudx applies it, in
//! microseconds instead of milliseconds).

use std::time::{Duration, Instant};

use crate::config::MAX_RTO;

/// How long the RACK min-RTT filter remembers a sample (`UDX_RTT_MIN_WINDOW_MS`).
const MIN_RTT_WINDOW: Duration = Duration::from_secs(300);
/// Samples above this and above `srtt + 5·rttvar` are clamped (suspend/resume protection).
const OUTLIER_FLOOR: Duration = Duration::from_secs(5);

/// Smoothed RTT, variance, RTO and a windowed minimum.
#[derive(Debug, Clone)]
pub(crate) struct RttEstimator {
    /// Smoothed RTT; `None` before the first sample.
    srtt: Option<Duration>,
    /// RTT variance.
    rttvar: Duration,
    /// Lower bound of the RTO.
    min_rto: Duration,
    /// The current RTO.
    rto: Duration,
    /// Minimum RTT seen in the window, with when it was taken.
    min_rtt: Option<(Duration, Instant)>,
}

impl RttEstimator {
    pub(crate) fn new(min_rto: Duration) -> Self {
        RttEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
            min_rto,
            rto: min_rto,
            min_rtt: None,
        }
    }

    /// Clamps outliers the way libudx's `clamp_rtt` does.
    pub(crate) fn clamp(&self, sample: Duration) -> Duration {
        match self.srtt {
            None => sample.min(MAX_RTO),
            Some(srtt) => {
                let threshold = srtt + 5 * self.rttvar;
                if sample > threshold && sample > OUTLIER_FLOOR {
                    threshold.min(MAX_RTO)
                } else {
                    sample
                }
            }
        }
    }

    /// Feeds a (clamped) sample from a packet that was never retransmitted.
    pub(crate) fn update(&mut self, now: Instant, sample: Duration) {
        match self.min_rtt {
            Some((m, at)) if sample > m && now.saturating_duration_since(at) < MIN_RTT_WINDOW => {}
            _ => self.min_rtt = Some((sample, now)),
        }
        match self.srtt {
            None => {
                self.srtt = Some(sample);
                self.rttvar = sample / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(sample);
                self.rttvar = (3 * self.rttvar + delta) / 4;
                self.srtt = Some((7 * srtt + sample) / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(sample);
        self.rto = (srtt + 4 * self.rttvar).clamp(self.min_rto, MAX_RTO);
    }

    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    pub(crate) fn rto(&self) -> Duration {
        self.rto
    }

    pub(crate) fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt.map(|(m, _)| m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6298_with_floor() {
        let now = Instant::now();
        let mut r = RttEstimator::new(Duration::from_millis(1000));
        assert_eq!(r.rto(), Duration::from_millis(1000));
        r.update(now, Duration::from_millis(100));
        assert_eq!(r.srtt(), Some(Duration::from_millis(100)));
        assert_eq!(r.rto(), Duration::from_millis(1000)); // 100 + 4*50 < floor
        r.update(now, Duration::from_millis(2000));
        // rttvar = (3*50 + 1900)/4 = 512.5, srtt = (700 + 2000)/8 = 337.5
        assert_eq!(r.srtt(), Some(Duration::from_micros(337_500)));
        assert_eq!(r.rto(), Duration::from_micros(337_500 + 4 * 512_500));
        assert_eq!(r.min_rtt(), Some(Duration::from_millis(100)));
        // A 60 s sample after a suspend is clamped to srtt + 5 rttvar.
        let c = r.clamp(Duration::from_secs(60));
        assert_eq!(c, Duration::from_micros(337_500 + 5 * 512_500));
    }
}
