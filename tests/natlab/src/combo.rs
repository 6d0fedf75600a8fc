//! Combinations: which implementation plays the server, the client and the relay.
//!
//! A combination is named like a topology, `server-client` (`rust-js`: a Rust server and a
//! JS client), with `+relay-<impl>` for a topology that has a relay. The JS peers are
//! `tests/interop/natlab-peer.js`, the Rust ones the `corenet` CLI ([`Commands`]).

use crate::peer::Commands;
use crate::topology::Topology;

/// An implementation of one role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    /// hyperdht (the JS peer).
    Js,
    /// corenet (the CLI).
    Rust,
}

impl Impl {
    /// `js` or `rust`.
    pub fn name(self) -> &'static str {
        match self {
            Impl::Js => "js",
            Impl::Rust => "rust",
        }
    }

    /// This implementation's command templates.
    pub fn commands(self) -> Commands {
        match self {
            Impl::Js => Commands::js(),
            Impl::Rust => Commands::rust(),
        }
    }
}

/// Who plays which role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Combo {
    /// The server.
    pub server: Impl,
    /// The client.
    pub client: Impl,
    /// The blind relay (used only by topologies with a relay).
    pub relay: Impl,
}

/// The four server/client pairings: JS<->JS, Rust<->Rust, and Rust<->JS both ways.
pub const PAIRS: [(Impl, Impl); 4] = [
    (Impl::Js, Impl::Js),
    (Impl::Rust, Impl::Rust),
    (Impl::Rust, Impl::Js),
    (Impl::Js, Impl::Rust),
];

impl Combo {
    /// `server` and `client`, with `relay` as the relay.
    pub const fn new(server: Impl, client: Impl, relay: Impl) -> Combo {
        Combo {
            server,
            client,
            relay,
        }
    }

    /// `server-client`, plus `+relay-<impl>` when `with_relay`.
    pub fn name(&self, with_relay: bool) -> String {
        let mut s = format!("{}-{}", self.server.name(), self.client.name());
        if with_relay {
            s += &format!("+relay-{}", self.relay.name());
        }
        s
    }

    /// The name for a run of `topo`.
    pub fn name_for(&self, topo: &Topology) -> String {
        self.name(topo.relay)
    }

    /// The command templates: each role from its implementation.
    pub fn commands(&self) -> Commands {
        Commands {
            listen: self.server.commands().listen,
            connect: self.client.commands().connect,
            relay: self.relay.commands().relay,
        }
    }

    /// Whether a run of `topo` needs the `corenet` binary.
    pub fn uses_rust(&self, topo: &Topology) -> bool {
        self.server == Impl::Rust
            || self.client == Impl::Rust
            || (topo.relay && self.relay == Impl::Rust)
    }
}

/// The combinations a benchmark runs for `topo`: every pairing of [`PAIRS`]; for a topology
/// with a relay each pairing once with a JS relay and once with a Rust relay.
pub fn for_topology(topo: &Topology) -> Vec<Combo> {
    let mut v = Vec::new();
    for (server, client) in PAIRS {
        if topo.relay {
            v.push(Combo::new(server, client, Impl::Js));
            v.push(Combo::new(server, client, Impl::Rust));
        } else {
            // The relay is not started; name it after the server for completeness.
            v.push(Combo::new(server, client, server));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology;

    #[test]
    fn names_and_commands_follow_the_roles() {
        let c = Combo::new(Impl::Rust, Impl::Js, Impl::Js);
        assert_eq!(c.name(false), "rust-js");
        assert_eq!(c.name(true), "rust-js+relay-js");
        let cmds = c.commands();
        assert!(cmds.listen.starts_with("{corenet}"));
        assert!(cmds.connect.starts_with("node"));
        assert!(cmds.relay.starts_with("node"));
    }

    #[test]
    fn the_relay_topology_gets_both_relays() {
        let relay = topology::by_name("random-random-relay").unwrap();
        let names: Vec<String> = for_topology(&relay)
            .iter()
            .map(|c| c.name_for(&relay))
            .collect();
        assert_eq!(names.len(), 8);
        assert!(names.contains(&"js-rust+relay-rust".to_string()));
        let open = topology::by_name("open-open").unwrap();
        assert_eq!(for_topology(&open).len(), 4);
    }
}
