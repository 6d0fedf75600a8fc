//! The topologies: where the server and the client sit, and what a run is expected to do.
//!
//! Names read `server-client`, e.g. `cone-random` is a server behind a cone NAT and a client
//! behind a random one.

/// A NAT's mapping behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// nft `masquerade`: endpoint-independent, port-preserving mapping (hyperdht CONSISTENT).
    Cone,
    /// nft `masquerade fully-random`: a random port per destination (hyperdht RANDOM).
    Random,
}

/// Where one peer sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// Directly on the internet, no NAT, no firewall.
    Open,
    /// On a home LAN behind one router.
    Nat(Nat),
    /// On a home LAN behind a home router whose WAN is on a carrier-grade NAT (100.64.0.0/10).
    Cgnat {
        /// The ISP's router (between 100.64.0.0/10 and the internet).
        isp: Nat,
        /// The home router (between the home LAN and 100.64.0.0/10).
        home: Nat,
    },
}

/// How the two peers are placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Each peer at its own site.
    Apart {
        /// The server's site.
        server: Site,
        /// The client's site.
        client: Site,
    },
    /// Both peers on one home LAN behind one router (the LAN shortcut).
    SameLan(Nat),
}

/// What every run of a topology should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The client connects and the echo comes back.
    Connect,
    /// The client fails with one of these error codes.
    Fail(&'static [&'static str]),
}

/// One topology.
#[derive(Debug, Clone, Copy)]
pub struct Topology {
    /// `server-client`, used by `--only`.
    pub name: &'static str,
    /// Where the peers sit.
    pub layout: Layout,
    /// Whether a blind relay runs on an open internet host and both peers use it
    /// (`--relay-through`).
    pub relay: bool,
    /// What a run should do.
    pub expect: Expect,
}

const DOUBLE_RANDOM: &[&str] = &["HOLEPUNCH_ABORTED", "HOLEPUNCH_DOUBLE_RANDOMIZED_NATS"];

const fn apart(name: &'static str, server: Site, client: Site, expect: Expect) -> Topology {
    Topology {
        name,
        layout: Layout::Apart { server, client },
        relay: false,
        expect,
    }
}

/// Every topology, in the order a full pass runs them.
pub fn all() -> Vec<Topology> {
    use Expect::{Connect, Fail};
    use Nat::{Cone, Random};
    use Site::{Cgnat, Open};
    let nat = Site::Nat;
    vec![
        apart("open-open", Open, Open, Connect),
        apart("open-cone", Open, nat(Cone), Connect),
        apart("cone-open", nat(Cone), Open, Connect),
        apart("cone-cone", nat(Cone), nat(Cone), Connect),
        apart("cone-random", nat(Cone), nat(Random), Connect),
        apart("random-cone", nat(Random), nat(Cone), Connect),
        apart(
            "random-random",
            nat(Random),
            nat(Random),
            Fail(DOUBLE_RANDOM),
        ),
        Topology {
            name: "same-lan",
            layout: Layout::SameLan(Cone),
            relay: false,
            expect: Connect,
        },
        apart(
            "cone-cgnat",
            nat(Cone),
            Cgnat {
                isp: Cone,
                home: Cone,
            },
            Connect,
        ),
        // A relay and a punch that can both succeed: the relay pairs first, the birthday
        // punch takes seconds, and the relayed connection moves to the punched path.
        Topology {
            name: "cone-random-relay",
            layout: Layout::Apart {
                server: nat(Cone),
                client: nat(Random),
            },
            relay: true,
            expect: Connect,
        },
        Topology {
            name: "random-random-relay",
            layout: Layout::Apart {
                server: nat(Random),
                client: nat(Random),
            },
            relay: true,
            expect: Connect,
        },
    ]
}

/// The topology called `name`.
pub fn by_name(name: &str) -> Option<Topology> {
    all().into_iter().find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        let all = all();
        for t in &all {
            assert_eq!(
                all.iter().filter(|u| u.name == t.name).count(),
                1,
                "{}",
                t.name
            );
            assert_eq!(by_name(t.name).map(|u| u.name), Some(t.name));
        }
        assert!(by_name("nope").is_none());
    }
}
