//! The NAT lab: network-namespace topologies with nftables NAT on one Linux machine, a server
//! peer and a client peer run inside them, and a record of whether and how fast they connect.
//!
//! It mirrors no JS module; it is the test bench for hyperdht's holepunching (see
//! `shared/spec/HOLEPUNCH.md`, last section). The JS stack is the reference: the default peers
//! are `tests/interop/natlab-peer.js`; the `corenet` CLI plugs in through the same line
//! protocol ([`peer`]).
//!
//! # Layout
//! - [`cmd`]: running `ip`, `nft`, `sysctl`; installing nftables and iproute2 when missing.
//! - [`lab`]: one lab = one name prefix (`nl<pid>-<n>`), an "internet" namespace with a bridge,
//!   the DHT namespace, the per-run site namespaces; everything with the prefix is deleted on
//!   drop, and by a janitor process if the harness dies (Ctrl-C, panic, SIGKILL).
//! - [`nft`]: the router and packet-loss rulesets.
//! - [`topology`]: the topologies (server site / client site) and what each is expected to do.
//! - [`peer`]: command templates, peer processes in a namespace, the line protocol.
//! - [`run`]: one run: build the sites, start relay/server/client, record the result.
//! - [`fault`]: faults injected into a run (a relay that never pairs, a server that vanishes
//!   mid-punch), triggered by the first packet that reaches the watched site.
//! - [`report`]: per-topology summaries, the table and the JSON file, the benchmark's
//!   markdown table.
//! - [`combo`]: which implementation (JS or Rust) plays server, client and relay.
//! - [`suite`]: the test group (`cargo test -p corenet-natlab`): every topology for every
//!   mixed combination, JS peers on the Rust DHT, and the faults.
//!
//! # Addresses
//! The "internet" is `44.0.0.0/16` on one bridge: not on hyperdht's bogon list (so peers treat
//! it as public) and existing only inside the lab's namespaces, none of which has a default
//! route. DHT nodes are `44.0.0.11-15`; site `i` has `44.0.i.1` on the internet, its home LAN
//! `192.168.i.0/24` (router `.1`, hosts `.2`, `.3`); a CGNAT site puts `100.64.0.0/10` between
//! the ISP router (`100.64.i.1`) and the home router (`100.64.i.2`).
//!
//! # Example
//! ```no_run
//! use corenet_natlab::{lab::Lab, peer::Commands, run::{run_once, RunConfig}, topology};
//! let mut lab = Lab::new()?;
//! let cfg = RunConfig::new(Commands::js());
//! lab.start_dht(&cfg.dht_command, &cfg.vars_base())?;
//! let topo = topology::by_name("cone-cone").unwrap();
//! let result = run_once(&mut lab, &topo, &cfg, 1);
//! println!("{}", result.line());
//! # Ok::<(), corenet_natlab::Error>(())
//! ```

pub mod cmd;
pub mod combo;
pub mod fault;
pub mod lab;
pub mod nft;
pub mod peer;
pub mod report;
pub mod run;
pub mod suite;
pub mod topology;

use std::fmt;
use std::path::PathBuf;

/// What can go wrong building a lab or starting its peers. A peer that fails to connect is
/// not an error: it is a [`run::Outcome`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A system tool failed or is missing (the message names the command and its stderr).
    Setup(String),
    /// A peer process could not be started or did not become ready in time.
    Peer(String),
    /// Spawning or talking to a process failed.
    Io(std::io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Setup(m) => write!(f, "lab setup: {m}"),
            Error::Peer(m) => write!(f, "peer: {m}"),
            Error::Io(e) => write!(f, "io: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

/// The repository root (the peers' working directory, so templates can say
/// `tests/interop/natlab-peer.js` and `target/debug/corenet`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}
