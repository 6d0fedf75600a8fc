//! Faults injected into a run: a relay that stops (or dies) once a peer reaches it, a relay
//! that never hears from the server, a server that dies once the client punches.
//!
//! # The trigger
//! A fault fires on a packet, not on a timer, so it means the same for every implementation:
//! a table in the namespace that holds the watched site's internet-facing interface marks
//! UDP packets from the given sources for tracing (`meta nftrace set 1`, at prerouting
//! priority -350, before conntrack and NAT) and drops them, and `nft monitor trace` in that
//! namespace prints a line per traced packet. The first line ([`Trigger::First`]; for
//! [`Trigger::Ports`] the first from the n-th source port, packets passing) makes the watcher
//! signal the target peer (`kill -STOP` or `-KILL` by its pid) and delete the table. The watched
//! packets are dropped until the signal is delivered (a few ms): a Rust relay pairs both
//! peers within 2 ms of their first packets, faster than a signal can follow the trace line,
//! so without the drop the fault would come after the pairing. For the peers the target is
//! gone from the first watched packet on. The watcher is armed just before the client
//! starts, so nothing the server or relay did before counts.
//!
//! - [`Fault::RelayStop`]: the relay is paused (SIGSTOP) at the first packet a peer sends
//!   straight to the relay host (the peers reach its handshake through the DHT nodes, so the
//!   relay has answered and the client has named it to the server; the first direct packet
//!   is a pairing stream's). It will never pair: hyperdht gives a relay 15 s to pair, then
//!   fails the connect with `RELAY_ABORTED`.
//! - [`Fault::RelayKill`]: the same moment, SIGKILL (afterwards the relay host answers with
//!   ICMP port unreachable, as a host whose process crashed does).
//! - [`Fault::RelayUnpaired`]: the relay process is fine but never hears from the server
//!   (its packets to the relay host are dropped for the whole run): the relay takes the
//!   client's pair request and holds it, acknowledged and unanswered. This is the relay that
//!   never pairs with the client's connection to it alive: hyperdht's 15 s pairing timeout
//!   (`RELAY_ABORTED`) is what ends it, not a dead stream.
//! - [`Fault::ServerKill`]: the server is killed when packets from a second source port of
//!   the client's public address reach the server's site (they pass; [`Trigger::Ports`]): a
//!   random client's birthday sockets, so the server has answered the handshake and the punch
//!   round and vanishes. (JS sends one probe from one socket in round 1; killing at that
//!   first packet makes a JS client fail in ~4 s, when round 2 goes unanswered.)
//!
//! A fault run is as expected when the client fails by itself with one of the fault's codes
//! within its bound, exits by itself, and leaves no process in its namespace.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cmd;
use crate::nft::WAN;
use crate::Error;

/// A fault to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Pause the relay at the first peer packet to it.
    RelayStop,
    /// Kill the relay at the first peer packet to it.
    RelayKill,
    /// Keep the server from ever reaching the relay.
    RelayUnpaired,
    /// Kill the server once the client's punch (its second source port) reaches the site.
    ServerKill,
}

/// Whose process a fault signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The blind relay.
    Relay,
    /// The server.
    Server,
}

/// Every fault, for `--list` and usage.
pub const ALL: [Fault; 4] = [
    Fault::RelayStop,
    Fault::RelayKill,
    Fault::RelayUnpaired,
    Fault::ServerKill,
];

impl Fault {
    /// The fault called `name` (`relay-stop`, `relay-kill`, `server-kill`).
    pub fn parse(name: &str) -> Option<Fault> {
        ALL.into_iter().find(|f| f.name() == name)
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Fault::RelayStop => "relay-stop",
            Fault::RelayKill => "relay-kill",
            Fault::RelayUnpaired => "relay-unpaired",
            Fault::ServerKill => "server-kill",
        }
    }

    /// Whose process it signals.
    pub fn target(self) -> Target {
        match self {
            Fault::RelayStop | Fault::RelayKill | Fault::RelayUnpaired => Target::Relay,
            Fault::ServerKill => Target::Server,
        }
    }

    /// The signal it sends.
    pub fn signal(self) -> &'static str {
        match self {
            Fault::RelayStop => "STOP",
            Fault::RelayKill | Fault::ServerKill | Fault::RelayUnpaired => "KILL",
        }
    }

    /// When it fires.
    pub fn trigger(self) -> Trigger {
        match self {
            Fault::RelayStop | Fault::RelayKill => Trigger::First,
            Fault::RelayUnpaired => Trigger::DropAll,
            // The random client's second source port: its birthday sockets, i.e. the server
            // answered the punch round (round 1's probe comes from one socket).
            Fault::ServerKill => Trigger::Ports(2),
        }
    }

    /// The topology it runs in by default: the relay faults need a relay, and one that the
    /// connection has to go through (random-random); the server fault a punch that takes a
    /// while (a random client: the birthday punch).
    pub fn default_topology(self) -> &'static str {
        match self {
            Fault::RelayStop | Fault::RelayKill | Fault::RelayUnpaired => "random-random-relay",
            Fault::ServerKill => "cone-random",
        }
    }

    /// The error codes the client may fail with (empty: any typed code, i.e. upper-case and
    /// not one the lab made up: `TIMEOUT`, `EXITED`, `ERROR`).
    pub fn codes(self) -> &'static [&'static str] {
        match self {
            Fault::RelayUnpaired => &["RELAY_ABORTED"],
            Fault::RelayStop | Fault::RelayKill | Fault::ServerKill => &[],
        }
    }

    /// The client's result must come no earlier than `.0` and no later than `.1` after its
    /// start (lab clock, which includes the process start and bootstrap). RELAY_ABORTED is
    /// hyperdht's 15 s pairing timeout; a punch with nobody on the other side ends when the
    /// probes run out (JS: 1750 probes 20 ms apart, ~35 s).
    pub fn bound(self) -> (Duration, Duration) {
        match self {
            Fault::RelayUnpaired => (Duration::from_secs(13), Duration::from_secs(20)),
            Fault::RelayStop | Fault::RelayKill => (Duration::ZERO, Duration::from_secs(20)),
            Fault::ServerKill => (Duration::ZERO, Duration::from_secs(50)),
        }
    }

    /// What a run is expected to do, as text.
    pub fn expect_text(self) -> String {
        let (lo, hi) = self.bound();
        let codes = if self.codes().is_empty() {
            "a typed error".to_string()
        } else {
            self.codes().join("|")
        };
        format!(
            "fail {codes} in {}-{} s, client exits, nothing left",
            lo.as_secs(),
            hi.as_secs()
        )
    }

    /// Whether `code` is acceptable for this fault.
    pub fn accepts(self, code: &str) -> bool {
        if self.codes().is_empty() {
            is_typed(code)
        } else {
            self.codes().contains(&code)
        }
    }
}

/// Whether `code` is a peer's typed error code (not one the lab assigns).
pub fn is_typed(code: &str) -> bool {
    !code.is_empty()
        && !matches!(code, "TIMEOUT" | "EXITED" | "ERROR" | "CLOSED" | "FATAL")
        && code.chars().all(|c| c.is_ascii_uppercase() || c == '_')
}

/// The nft table that marks watched packets for tracing.
const TABLE: &str = "natlab_watch";

/// When a watch fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// At the first watched packet; watched packets are dropped until then (the target is
    /// gone from that packet on).
    First,
    /// At the first packet from the n-th distinct source port; packets pass.
    Ports(usize),
    /// Never: watched packets are dropped for the whole run.
    DropAll,
}

/// An armed trigger: `nft monitor trace` in the watched namespace and the thread that reads
/// it and signals the target.
#[derive(Debug)]
pub struct Watch {
    /// `None` for a drop-only watch.
    monitor: Option<Child>,
    thread: Option<JoinHandle<Option<Instant>>>,
    ns: String,
    /// When a drop-only watch was armed (it "fires" at once).
    armed: Instant,
}

/// `udp sport N` in an `nft monitor trace` packet line.
fn source_port(line: &str) -> Option<u16> {
    let mut w = line.split_whitespace();
    while let Some(x) = w.next() {
        if x == "sport" {
            return w.next()?.parse().ok();
        }
    }
    None
}

impl Watch {
    /// Watches UDP packets from `sources` arriving on `ns`'s [`WAN`]; when `trigger` fires,
    /// sends `signal` to `pid`, records when, and stops watching (packets pass again).
    pub fn arm(
        ns: &str,
        sources: &[Ipv4Addr],
        trigger: Trigger,
        pid: u32,
        signal: &'static str,
    ) -> Result<Watch, Error> {
        let set = sources
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let action = match trigger {
            Trigger::First => "meta nftrace set 1 drop",
            Trigger::Ports(_) => "meta nftrace set 1",
            Trigger::DropAll => "drop",
        };
        cmd::nft(
            ns,
            &format!(
                "table ip {TABLE} {{\n  chain pre {{\n    type filter hook prerouting priority -350; policy accept;\n    iifname \"{WAN}\" meta l4proto udp ip saddr {{ {set} }} {action}\n  }}\n}}\n"
            ),
        )?;
        let ports_needed = match trigger {
            Trigger::DropAll => {
                return Ok(Watch {
                    monitor: None,
                    thread: None,
                    ns: ns.to_string(),
                    armed: Instant::now(),
                })
            }
            Trigger::First => 1,
            Trigger::Ports(n) => n.max(1),
        };
        let mut monitor = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "monitor", "trace"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::Setup(format!("nft monitor trace in {ns}: {e}")))?;
        let out = monitor.stdout.take().expect("piped");
        let ns_owned = ns.to_string();
        let thread = std::thread::spawn(move || {
            let mut fired = None;
            let mut ports: Vec<u16> = Vec::new();
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if fired.is_some() || !line.starts_with("trace id") || !line.contains("packet:") {
                    continue;
                }
                let port = source_port(&line).unwrap_or(0);
                if !ports.contains(&port) {
                    ports.push(port);
                }
                if ports.len() < ports_needed {
                    continue;
                }
                fired = Some(Instant::now());
                let _ = Command::new("kill")
                    .args([&format!("-{signal}"), &pid.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                // Stop tracing (and dropping); the reader drains until the monitor stops.
                let _ = cmd::exec_in(&ns_owned, "nft", &["delete", "table", "ip", TABLE]);
            }
            fired
        });
        // `nft monitor` subscribes before it prints anything; give it a moment so the first
        // packet is not missed.
        std::thread::sleep(Duration::from_millis(50));
        Ok(Watch {
            monitor: Some(monitor),
            thread: Some(thread),
            ns: ns.to_string(),
            armed: Instant::now(),
        })
    }

    /// Stops watching; returns when the fault fired, if it did (a drop-only watch: when it
    /// was armed).
    pub fn finish(mut self) -> Option<Instant> {
        self.stop()
    }

    fn stop(&mut self) -> Option<Instant> {
        let _ = cmd::exec_in(&self.ns, "nft", &["delete", "table", "ip", TABLE]);
        let Some(mut monitor) = self.monitor.take() else {
            return Some(self.armed);
        };
        let _ = monitor.kill();
        let _ = monitor.wait();
        self.thread.take().and_then(|t| t.join().ok().flatten())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if self.monitor.is_some() {
            self.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_lines_give_their_source_port() {
        let l = "trace id eb8fee91 ip natlab_watch pre packet: iif \"wan0\" ip saddr 44.0.2.1 ip daddr 44.0.1.1 udp sport 60427 udp dport 5000 udp length 10";
        assert_eq!(source_port(l), Some(60427));
        assert_eq!(
            source_port("trace id 1 ip natlab_watch pre policy accept"),
            None
        );
    }

    #[test]
    fn names_round_trip_and_codes_are_typed() {
        for f in ALL {
            assert_eq!(Fault::parse(f.name()), Some(f));
        }
        assert!(Fault::RelayUnpaired.accepts("RELAY_ABORTED"));
        assert!(!Fault::RelayUnpaired.accepts("HOLEPUNCH_ABORTED"));
        assert!(Fault::ServerKill.accepts("HOLEPUNCH_ABORTED"));
        assert!(!Fault::ServerKill.accepts("TIMEOUT"));
        assert!(!Fault::ServerKill.accepts("EXITED"));
        assert!(!is_typed("relay aborted"));
    }
}
