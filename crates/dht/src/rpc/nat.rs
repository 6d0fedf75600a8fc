//! "What is my public address": a vote over the `to` fields other nodes report.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Samples kept.
const WINDOW: usize = 16;

/// Votes on our public address from the addresses other nodes saw us at.
///
/// With fewer than 4 samples all must agree; 4-7 allow one outlier, 8-11 two, 12 or more
/// three (as nat-sampler does). A consistent host with varying ports yields the host with port
/// 0 (a randomizing NAT).
#[derive(Debug, Clone, Default)]
pub struct NatSampler {
    /// The most recent samples, newest last.
    samples: VecDeque<SocketAddrV4>,
}

impl NatSampler {
    /// An empty sampler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a sample.
    pub fn add(&mut self, addr: SocketAddrV4) {
        if self.samples.len() == WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(addr);
    }

    /// Number of samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True without samples.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    fn threshold(&self) -> usize {
        let n = self.samples.len();
        n - match n {
            0..=3 => 0,
            4..=7 => 1,
            8..=11 => 2,
            _ => 3,
        }
    }

    /// The voted host, if consistent.
    pub fn host(&self) -> Option<Ipv4Addr> {
        self.address().map(|a| *a.ip())
    }

    /// The voted address: `Some(host:port)` when consistent, `Some(host:0)` when only the host
    /// is, `None` otherwise.
    pub fn address(&self) -> Option<SocketAddrV4> {
        if self.samples.is_empty() {
            return None;
        }
        let t = self.threshold();
        let best = |key: &dyn Fn(&SocketAddrV4) -> SocketAddrV4| -> Option<(SocketAddrV4, usize)> {
            let mut counts: Vec<(SocketAddrV4, usize)> = Vec::new();
            for s in &self.samples {
                let k = key(s);
                match counts.iter_mut().find(|(a, _)| *a == k) {
                    Some((_, c)) => *c += 1,
                    None => counts.push((k, 1)),
                }
            }
            counts.into_iter().max_by_key(|(_, c)| *c)
        };
        if let Some((a, c)) = best(&|s| *s) {
            if c >= t {
                return Some(a);
            }
        }
        if let Some((a, c)) = best(&|s| SocketAddrV4::new(*s.ip(), 0)) {
            if c >= t {
                return Some(a);
            }
        }
        None
    }

    /// Forgets every sample.
    pub fn clear(&mut self) {
        self.samples.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(h: u8, p: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, h), p)
    }

    #[test]
    fn votes() {
        let mut s = NatSampler::new();
        assert_eq!(s.address(), None);
        s.add(a(1, 100));
        assert_eq!(s.address(), Some(a(1, 100)));
        s.add(a(1, 101));
        assert_eq!(
            s.address(),
            Some(a(1, 0)),
            "same host, different ports: randomized"
        );
        s.add(a(2, 100));
        assert_eq!(s.address(), None);
        let mut s = NatSampler::new();
        for _ in 0..3 {
            s.add(a(1, 100));
        }
        s.add(a(9, 9));
        assert_eq!(
            s.address(),
            Some(a(1, 100)),
            "one outlier allowed at 4 samples"
        );
    }
}
