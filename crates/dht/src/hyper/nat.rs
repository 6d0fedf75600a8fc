//! Per-connection NAT classification (hyperdht `lib/nat.js`).
//!
//! A holepunch starts on a fresh socket. [`NatAnalyzer`] decides what kind of NAT that socket
//! is behind from the addresses other nodes see it at: the socket PINGs a few DHT nodes and
//! each answer's `to` field (our address as that node saw it) is one sample, counted once
//! per responder. The rules, as in JS:
//!
//! - fewer than 3 samples: no decision ([`firewall::UNKNOWN`]);
//! - the same full address seen 3 or more times: [`firewall::CONSISTENT`] (the NAT keeps one
//!   mapping for every destination);
//! - no address seen twice: [`firewall::RANDOM`] (a new port per destination);
//! - an address seen twice: RANDOM if there is one host and more than 3 samples; CONSISTENT
//!   if two hosts were each seen twice (a multi-homed network); RANDOM if more than 4
//!   samples; otherwise still undecided.
//!
//! A node that is not firewalled at the dht-rpc level is [`firewall::OPEN`] at once. The
//! addresses advertised to the other side are those hit twice or more (at least two) when
//! CONSISTENT, the host with port 0 when RANDOM, none otherwise.
//!
//! Sans-IO: the owner sends the PINGs ([`NatAnalyzer::start`] says to whom) and feeds the
//! outcomes back ([`NatAnalyzer::on_pong`], [`NatAnalyzer::on_ping_failed`]).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use super::messages::firewall;

/// A NAT class, typed (the wire uses [`firewall`] numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NatType {
    /// Not known (yet): too few samples, or no DHT node answered.
    Unknown,
    /// Reachable: no NAT, or a forwarded port (dht-rpc's reachability check passed).
    Open,
    /// Behind a NAT that keeps one public port per socket whatever the destination
    /// (endpoint-independent mapping, "cone"): punchable from anything but a random NAT
    /// with no relay.
    Consistent,
    /// Behind a NAT that picks a new public port per destination (symmetric): punchable only
    /// from a consistent NAT (the birthday strategy), otherwise through a relay.
    Random,
}

impl NatType {
    /// From a [`firewall`] number.
    pub fn from_firewall(fw: u64) -> Self {
        match fw {
            firewall::OPEN => NatType::Open,
            firewall::CONSISTENT => NatType::Consistent,
            firewall::RANDOM => NatType::Random,
            _ => NatType::Unknown,
        }
    }

    /// The [`firewall`] number.
    pub fn firewall(self) -> u64 {
        match self {
            NatType::Unknown => firewall::UNKNOWN,
            NatType::Open => firewall::OPEN,
            NatType::Consistent => firewall::CONSISTENT,
            NatType::Random => firewall::RANDOM,
        }
    }

    /// The word the CLI prints (`nat <unknown|open|consistent|random>`).
    pub fn as_str(self) -> &'static str {
        match self {
            NatType::Unknown => "unknown",
            NatType::Open => "open",
            NatType::Consistent => "consistent",
            NatType::Random => "random",
        }
    }
}

impl std::fmt::Display for NatType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// PINGs a sampling pass aims for (JS `_minSamples`).
pub const MIN_SAMPLES: usize = 4;
/// Newest table nodes skipped when the table has [`SKIP_WHEN`] nodes or more: they are the
/// least proven.
pub const SKIP_NEWEST: usize = 5;
/// Table size from which the newest nodes are skipped.
pub const SKIP_WHEN: usize = 8;
/// Distinct responders remembered at most (each sample comes from a distinct node).
const MAX_VISITED: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Visit {
    Pinged,
    Sampled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    addr: SocketAddrV4,
    hits: u32,
}

/// Adds a hit to `addr`, keeping `samples` sorted by hits (most first, ties in arrival
/// order), as JS `addSample` does.
fn add_sample(samples: &mut Vec<Sample>, addr: SocketAddrV4) {
    if let Some(mut i) = samples.iter().position(|s| s.addr == addr) {
        samples[i].hits += 1;
        while i > 0 && samples[i - 1].hits < samples[i].hits {
            samples.swap(i - 1, i);
            i -= 1;
        }
        return;
    }
    samples.push(Sample { addr, hits: 1 });
}

/// Classifies the NAT in front of one socket; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct NatAnalyzer {
    samples_host: Vec<Sample>,
    samples_full: Vec<Sample>,
    visited: HashMap<SocketAddrV4, Visit>,
    sampled: usize,
    min_samples: usize,
    firewall: u64,
    addresses: Option<Vec<SocketAddrV4>>,
    frozen: bool,
    /// The node's dht-rpc `firewalled` flag when last told (an unfirewalled node is OPEN).
    dht_firewalled: bool,
    /// The analysis has reached its conclusion (JS: `analyzing` resolved).
    resolved: bool,
    /// PINGs out.
    pending: usize,
    /// The second sampling pass has started.
    retried: bool,
    /// Sampling has started.
    sampling: bool,
}

impl NatAnalyzer {
    /// An analyzer for a fresh socket of a node whose dht-rpc layer is `dht_firewalled`.
    pub fn new(dht_firewalled: bool) -> Self {
        NatAnalyzer {
            samples_host: Vec::new(),
            samples_full: Vec::new(),
            visited: HashMap::new(),
            sampled: 0,
            min_samples: MIN_SAMPLES,
            firewall: if dht_firewalled {
                firewall::UNKNOWN
            } else {
                firewall::OPEN
            },
            addresses: None,
            frozen: false,
            dht_firewalled,
            resolved: false,
            pending: 0,
            retried: false,
            sampling: false,
        }
    }

    /// The firewall class so far ([`firewall`] constants).
    pub fn firewall(&self) -> u64 {
        self.firewall
    }

    /// The addresses to advertise (see the module docs).
    pub fn addresses(&self) -> Option<&[SocketAddrV4]> {
        self.addresses.as_deref()
    }

    /// Samples taken.
    pub fn sampled(&self) -> usize {
        self.sampled
    }

    /// PINGs still out.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// The analysis reached its conclusion: CONSISTENT or OPEN, enough samples, or every
    /// node asked (JS `await nat.analyzing`).
    pub fn is_resolved(&self) -> bool {
        self.resolved
    }

    /// Starts sampling (JS `autoSample`): of `candidates` (DHT nodes, newest first) picks the
    /// ones to PING from this socket and returns them. Call once; the second pass, if one is
    /// needed, comes out of [`NatAnalyzer::on_pong`] / [`NatAnalyzer::on_ping_failed`].
    pub fn start(&mut self, candidates: &[SocketAddrV4]) -> Vec<SocketAddrV4> {
        if self.sampling {
            return Vec::new();
        }
        self.sampling = true;
        self.pass(candidates)
    }

    fn pass(&mut self, candidates: &[SocketAddrV4]) -> Vec<SocketAddrV4> {
        let mut skip = if candidates.len() >= SKIP_WHEN {
            SKIP_NEWEST
        } else {
            0
        };
        let mut out = Vec::new();
        for addr in candidates {
            if self.sampled + self.pending + out.len() >= self.min_samples {
                break;
            }
            if skip > 0 {
                skip -= 1;
                continue;
            }
            if self.visited.contains_key(addr) || self.visited.len() >= MAX_VISITED {
                continue;
            }
            self.visited.insert(*addr, Visit::Pinged);
            out.push(*addr);
        }
        self.pending += out.len();
        if self.pending == 0 {
            self.on_pass_idle(candidates, &mut out);
        }
        out
    }

    /// Every PING of a pass is done: retry once with other nodes, or conclude.
    fn on_pass_idle(&mut self, candidates: &[SocketAddrV4], out: &mut Vec<SocketAddrV4>) {
        if self.sampled >= self.min_samples {
            return;
        }
        if !self.retried {
            self.retried = true;
            out.extend(self.pass(candidates));
            return;
        }
        self.resolved = true;
    }

    /// A PING answered: `to` is our address as `from` saw it. Returns more nodes to PING
    /// (the retry pass), if any.
    pub fn on_pong(
        &mut self,
        to: SocketAddrV4,
        from: SocketAddrV4,
        candidates: &[SocketAddrV4],
    ) -> Vec<SocketAddrV4> {
        self.add(to, from);
        self.ping_done(candidates)
    }

    /// A PING timed out. Returns more nodes to PING, if any.
    pub fn on_ping_failed(&mut self, candidates: &[SocketAddrV4]) -> Vec<SocketAddrV4> {
        self.ping_done(candidates)
    }

    fn ping_done(&mut self, candidates: &[SocketAddrV4]) -> Vec<SocketAddrV4> {
        self.pending = self.pending.saturating_sub(1);
        let mut out = Vec::new();
        if self.pending == 0 && !self.resolved {
            self.on_pass_idle(candidates, &mut out);
        }
        out
    }

    /// Adds a sample: `addr` is how `from` saw this socket. Each responder counts once.
    pub fn add(&mut self, addr: SocketAddrV4, from: SocketAddrV4) {
        if self.visited.get(&from) == Some(&Visit::Sampled) {
            return;
        }
        if self.visited.len() >= MAX_VISITED && !self.visited.contains_key(&from) {
            return;
        }
        self.visited.insert(from, Visit::Sampled);
        add_sample(&mut self.samples_host, SocketAddrV4::new(*addr.ip(), 0));
        add_sample(&mut self.samples_full, addr);
        self.sampled += 1;
        if (self.sampled >= 3 || !self.dht_firewalled) && !self.frozen {
            self.update();
        }
        if self.firewall == firewall::CONSISTENT
            || self.firewall == firewall::OPEN
            || self.sampled >= self.min_samples
        {
            self.resolved = true;
        }
    }

    /// Tells the analyzer the node's dht-rpc `firewalled` flag changed.
    pub fn set_dht_firewalled(&mut self, firewalled: bool) {
        self.dht_firewalled = firewalled;
    }

    /// Stops updating the classification (it has been told to the other side).
    pub fn freeze(&mut self) {
        self.frozen = true;
    }

    /// Resumes updating and applies what was sampled meanwhile.
    pub fn unfreeze(&mut self) {
        self.frozen = false;
        self.update_firewall();
        self.update_addresses();
    }

    /// Ends the analysis (the socket is being dropped).
    pub fn destroy(&mut self) {
        self.sampling = true;
        self.min_samples = 0;
        self.resolved = true;
    }

    fn update(&mut self) {
        if self.dht_firewalled && self.firewall == firewall::OPEN {
            self.firewall = firewall::UNKNOWN;
        }
        self.update_firewall();
        self.update_addresses();
    }

    fn update_firewall(&mut self) {
        if !self.dht_firewalled {
            self.firewall = firewall::OPEN;
            return;
        }
        if self.sampled < 3 {
            return;
        }
        let max = self.samples_full.first().map_or(0, |s| s.hits);
        if max >= 3 {
            self.firewall = firewall::CONSISTENT;
            return;
        }
        if max == 1 {
            self.firewall = firewall::RANDOM;
            return;
        }
        // max == 2
        if self.samples_host.len() == 1 && self.sampled > 3 {
            self.firewall = firewall::RANDOM;
            return;
        }
        if self.samples_host.len() > 1 && self.samples_full.get(1).is_some_and(|s| s.hits > 1) {
            self.firewall = firewall::CONSISTENT;
            return;
        }
        if self.sampled > 4 {
            self.firewall = firewall::RANDOM;
        }
    }

    fn update_addresses(&mut self) {
        match self.firewall {
            firewall::UNKNOWN => self.addresses = None,
            firewall::RANDOM => {
                self.addresses = self.samples_host.first().map(|s| vec![s.addr]);
            }
            firewall::CONSISTENT => {
                let mut v = Vec::new();
                for s in &self.samples_full {
                    if s.hits >= 2 || v.len() < 2 {
                        v.push(s.addr);
                    }
                }
                self.addresses = Some(v);
            }
            _ => {}
        }
    }

    /// The public host, if one was seen.
    pub fn host(&self) -> Option<Ipv4Addr> {
        self.samples_host.first().map(|s| *s.addr.ip())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(h: u8, p: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(44, 0, 0, h), p)
    }
    fn node(i: u8) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(44, 0, 9, i), 49737)
    }

    #[test]
    fn consistent_after_three_equal_samples() {
        let mut n = NatAnalyzer::new(true);
        let cands: Vec<_> = (1..=4).map(node).collect();
        assert_eq!(n.start(&cands).len(), 4);
        assert!(n.on_pong(a(1, 500), node(1), &cands).is_empty());
        assert!(n.on_pong(a(1, 500), node(2), &cands).is_empty());
        assert_eq!(n.firewall(), firewall::UNKNOWN);
        assert!(!n.is_resolved());
        n.on_pong(a(1, 500), node(3), &cands);
        assert_eq!(n.firewall(), firewall::CONSISTENT);
        assert!(n.is_resolved());
        assert_eq!(n.addresses(), Some(&[a(1, 500)][..]));
    }

    #[test]
    fn random_when_every_port_differs() {
        let mut n = NatAnalyzer::new(true);
        let cands: Vec<_> = (1..=4).map(node).collect();
        n.start(&cands);
        for i in 1..=3u8 {
            n.on_pong(a(1, 500 + u16::from(i)), node(i), &cands);
        }
        assert_eq!(n.firewall(), firewall::RANDOM);
        assert_eq!(n.addresses(), Some(&[a(1, 0)][..]));
        assert!(!n.is_resolved(), "random waits for the fourth sample");
        n.on_pong(a(1, 600), node(4), &cands);
        assert!(n.is_resolved());
    }

    #[test]
    fn one_host_two_hits_and_four_samples_is_random() {
        let mut n = NatAnalyzer::new(true);
        for (i, p) in [(1, 5), (2, 5), (3, 6), (4, 7)] {
            n.add(a(1, p), node(i));
        }
        assert_eq!(n.firewall(), firewall::RANDOM);
    }

    #[test]
    fn two_hosts_each_hit_twice_is_consistent() {
        let mut n = NatAnalyzer::new(true);
        for (i, h) in [(1, 1), (2, 1), (3, 2), (4, 2)] {
            n.add(a(h, 9), node(i));
        }
        assert_eq!(n.firewall(), firewall::CONSISTENT);
        assert_eq!(n.addresses().map(<[_]>::len), Some(2));
    }

    #[test]
    fn responders_count_once_and_unfirewalled_is_open() {
        let mut n = NatAnalyzer::new(true);
        for _ in 0..5 {
            n.add(a(1, 9), node(1));
        }
        assert_eq!(n.sampled(), 1);
        let mut open = NatAnalyzer::new(false);
        assert_eq!(open.firewall(), firewall::OPEN);
        open.add(a(1, 9), node(1));
        assert_eq!(open.firewall(), firewall::OPEN);
        assert!(open.is_resolved());
    }

    #[test]
    fn a_failed_pass_retries_with_other_nodes_then_concludes() {
        let mut n = NatAnalyzer::new(true);
        let cands: Vec<_> = (1..=6).map(node).collect();
        let first = n.start(&cands);
        assert_eq!(first, cands[..4].to_vec());
        n.on_ping_failed(&cands);
        n.on_ping_failed(&cands);
        n.on_pong(a(1, 9), node(3), &cands);
        let retry = n.on_ping_failed(&cands);
        assert_eq!(
            retry,
            cands[4..].to_vec(),
            "the retry pass asks the unvisited nodes"
        );
        assert!(!n.is_resolved());
        n.on_ping_failed(&cands);
        let none = n.on_ping_failed(&cands);
        assert!(none.is_empty());
        assert!(n.is_resolved());
        assert_eq!(n.firewall(), firewall::UNKNOWN);
    }

    #[test]
    fn skips_the_newest_nodes_of_a_big_table() {
        let mut n = NatAnalyzer::new(true);
        let cands: Vec<_> = (1..=10).map(node).collect();
        assert_eq!(n.start(&cands), cands[5..9].to_vec());
    }

    #[test]
    fn no_nodes_concludes_at_once() {
        let mut n = NatAnalyzer::new(true);
        assert!(n.start(&[]).is_empty());
        assert!(n.is_resolved());
    }

    #[test]
    fn frozen_keeps_the_classification() {
        let mut n = NatAnalyzer::new(true);
        for i in 1..=3 {
            n.add(a(1, 100 + u16::from(i)), node(i));
        }
        assert_eq!(n.firewall(), firewall::RANDOM);
        n.freeze();
        for i in 4..=6 {
            n.add(a(1, 9), node(i));
        }
        assert_eq!(n.firewall(), firewall::RANDOM);
        n.unfreeze();
        assert_eq!(n.firewall(), firewall::CONSISTENT);
    }
}
