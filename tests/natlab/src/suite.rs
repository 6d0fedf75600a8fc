//! The test group: `cargo test -p corenet-natlab --locked -- --test-threads=1` runs
//! `tests/natlab.rs` (a plain `main`, no libtest harness), which calls [`main`].
//!
//! # What it covers
//! - Every topology for each of Rust<->Rust, Rust server/JS client and JS server/Rust client
//!   on the JS DHT; the relay topology with a Rust relay and with a JS relay for each.
//! - Every topology with JS peers on both sides on the Rust DHT (`corenet testnet`), the
//!   relay topology with a JS and a Rust relay.
//! - The faults ([`crate::fault`]) with a Rust server, client and relay: a relay that never
//!   pairs (`RELAY_ABORTED` in 13-20 s), a relay paused once reached, and a server that
//!   vanishes after the punch round (a typed error within 50 s); each time the client must
//!   exit by itself and leave no process in its namespace.
//!
//! A run passes when it does what the JS stack does or better: it connects, or (random-random)
//! fails with one of the topology's codes or connects anyway. Every run's line carries the
//! client's connect time; a table and a timing line end the output.
//!
//! # Budget
//! [`DEFAULT_RUNS`] runs per case, but one for the random punches (cone-random,
//! random-cone: seconds each, with a long tail) and for the faults (15-36 s each). About
//! 110 runs, 3-4 minutes on 2 cores (a random punch's tail can add a minute or two).
//! `NATLAB_RUNS=N` changes the default.
//!
//! # Setup (a fresh machine, as root)
//! - nftables and iproute2: installed with apt-get when missing ([`crate::cmd::ensure_tools`]).
//! - the JS peers: `npm ci --prefix tests/interop` when `node_modules` lacks them (node and
//!   npm must be installed).
//! - the `corenet` binary: `cargo build -p corenet-cli --locked` into the test binary's own
//!   target directory (a no-op when it is up to date, so a stale binary is never tested);
//!   `NATLAB_CORENET=PATH` uses PATH instead and builds nothing.
//!
//! # Arguments
//! Words that are not options select cases whose name contains one of them (`rust-js/`,
//! `cone-cgnat`, `fault/`); `--skip WORD` leaves out cases containing WORD; `--exact` makes
//! both whole-name matches; `--list` prints the cases. Other libtest options
//! (`--test-threads=1`, `--nocapture`, ...) are accepted and ignored: cases always run one
//! at a time and print as they go.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use crate::combo::{Combo, Impl};
use crate::fault::Fault;
use crate::lab::Lab;
use crate::peer::{JS_DHT, RUST_DHT};
use crate::report;
use crate::run::{meets_or_better, run_once, RunConfig, RunResult};
use crate::topology::{self, Topology};

/// Runs per case for the quick topologies.
pub const DEFAULT_RUNS: usize = 3;

/// The DHT a case runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhtKind {
    /// Five hyperdht nodes ([`JS_DHT`]).
    Js,
    /// `corenet testnet` ([`RUST_DHT`]).
    Rust,
}

impl DhtKind {
    fn command(self) -> &'static str {
        match self {
            DhtKind::Js => JS_DHT,
            DhtKind::Rust => RUST_DHT,
        }
    }
}

/// One case of the group: a topology, a combination, a DHT, maybe a fault, some runs.
#[derive(Debug, Clone)]
pub struct Case {
    /// `group/topology` or `fault/<fault>`: what filters match.
    pub name: String,
    /// The topology.
    pub topology: Topology,
    /// Who plays server, client, relay.
    pub combo: Combo,
    /// The DHT.
    pub dht: DhtKind,
    /// Runs.
    pub runs: usize,
    /// The fault injected, if any.
    pub fault: Option<Fault>,
}

impl Case {
    /// The label on its run lines: the combination (and fault).
    pub fn label(&self) -> String {
        let mut c = self.combo.name_for(&self.topology);
        if self.dht == DhtKind::Rust {
            c += "@rust-dht";
        }
        match self.fault {
            Some(f) => format!("{} {c}", f.name()),
            None => c,
        }
    }
}

/// The random punches: seconds per run and a long tail, so one run each.
fn slow(t: &Topology) -> bool {
    matches!(t.name, "cone-random" | "random-cone")
}

/// Every case, in the order they run (grouped by DHT, so each DHT starts once).
pub fn cases(runs: usize) -> Vec<Case> {
    use Impl::{Js, Rust};
    let mut v = Vec::new();
    let groups: [(&str, Impl, Impl, DhtKind); 4] = [
        ("rust-rust", Rust, Rust, DhtKind::Js),
        ("rust-js", Rust, Js, DhtKind::Js),
        ("js-rust", Js, Rust, DhtKind::Js),
        ("js-js@rust-dht", Js, Js, DhtKind::Rust),
    ];
    // The faults first: they share the JS DHT with the first three groups.
    for (f, topo) in [
        (
            Fault::RelayUnpaired,
            Fault::RelayUnpaired.default_topology(),
        ),
        (Fault::RelayStop, Fault::RelayStop.default_topology()),
        (Fault::ServerKill, Fault::ServerKill.default_topology()),
    ] {
        v.push(Case {
            name: format!("fault/{}", f.name()),
            topology: topology::by_name(topo).expect("fault topology"),
            combo: Combo::new(Rust, Rust, Rust),
            dht: DhtKind::Js,
            runs: 1,
            fault: Some(f),
        });
    }
    for (group, server, client, dht) in groups {
        for t in topology::all() {
            let relays: &[Impl] = if t.relay { &[Rust, Js] } else { &[server] };
            for &relay in relays {
                let combo = Combo::new(server, client, relay);
                let name = if t.relay {
                    format!("{group}/{}+relay-{}", t.name, relay.name())
                } else {
                    format!("{group}/{}", t.name)
                };
                v.push(Case {
                    name,
                    topology: t,
                    combo,
                    dht,
                    runs: if slow(&t) { 1 } else { runs },
                    fault: None,
                });
            }
        }
    }
    v
}

/// What the command line asked for.
#[derive(Debug, Default)]
struct Options {
    filters: Vec<String>,
    skips: Vec<String>,
    exact: bool,
    list: bool,
}

fn parse(args: impl Iterator<Item = String>) -> Options {
    let mut o = Options::default();
    let mut it = args.peekable();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--list" => o.list = true,
            "--exact" => o.exact = true,
            "--skip" => o.skips.extend(it.next()),
            // libtest options that take a value in the next word.
            "--test-threads" | "--format" | "--color" | "--logfile" | "-Z" => {
                it.next();
            }
            s if s.starts_with('-') => {}
            _ => o.filters.push(a),
        }
    }
    o
}

impl Options {
    fn selects(&self, name: &str) -> bool {
        let hit = |w: &String| {
            if self.exact {
                name == w
            } else {
                name.contains(w.as_str())
            }
        };
        (self.filters.is_empty() || self.filters.iter().any(hit)) && !self.skips.iter().any(hit)
    }
}

/// `tests/natlab.rs`'s `main`: runs the selected cases; exit code 0 when every run passed.
pub fn main(args: impl Iterator<Item = String>) -> ExitCode {
    let opts = parse(args);
    let runs = std::env::var("NATLAB_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(DEFAULT_RUNS);
    let selected: Vec<Case> = cases(runs)
        .into_iter()
        .filter(|c| opts.selects(&c.name))
        .collect();
    if opts.list {
        for c in &selected {
            println!("{}: test", c.name);
        }
        return ExitCode::SUCCESS;
    }
    if selected.is_empty() {
        println!("natlab test group: no case selected");
        return ExitCode::SUCCESS;
    }
    let started = Instant::now();
    let corenet = match prepare(&selected) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("natlab test group: {e}");
            return ExitCode::FAILURE;
        }
    };
    let setup_s = started.elapsed().as_secs_f64();
    println!(
        "natlab test group: {} cases, {} runs{}",
        selected.len(),
        selected.iter().map(|c| c.runs).sum::<usize>(),
        corenet
            .as_deref()
            .map(|c| format!(", corenet {c}"))
            .unwrap_or_default()
    );

    let mut lab: Option<(DhtKind, Lab)> = None;
    let mut summaries = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    let mut total_runs = 0;
    for case in &selected {
        if lab.as_ref().map(|(k, _)| *k) != Some(case.dht) {
            drop(lab.take()); // the previous lab (and its DHT) goes first
            let mut cfg = RunConfig::new(case.combo.commands());
            if let Some(c) = &corenet {
                cfg.corenet = c.clone();
            }
            let started_lab = Lab::new().and_then(|mut l| {
                l.start_dht(case.dht.command(), &cfg.vars_base())?;
                Ok(l)
            });
            match started_lab {
                Ok(l) => lab = Some((case.dht, l)),
                Err(e) => {
                    eprintln!("natlab test group: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        let Some((_, l)) = lab.as_mut() else {
            unreachable!("a lab was just started")
        };
        let (summary, ok) = run_case(l, case, corenet.as_deref());
        total_runs += summary.runs;
        if !ok {
            failed.push(case.name.clone());
        }
        summaries.push(summary);
    }
    drop(lab);

    println!("\n{}", report::table(&summaries));
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "natlab test group: {} cases, {total_runs} runs, {} failed, {elapsed:.1} s \
         (setup {setup_s:.1} s)",
        selected.len(),
        failed.len(),
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("natlab test group: FAILED: {}", failed.join(" "));
        ExitCode::FAILURE
    }
}

/// Runs one case; returns its summary (labelled with the case name) and whether it passed.
fn run_case(lab: &mut Lab, case: &Case, corenet: Option<&str>) -> (report::Summary, bool) {
    let mut cfg = RunConfig::new(case.combo.commands());
    if let Some(c) = corenet {
        cfg.corenet = c.to_string();
    }
    cfg.fault = case.fault;
    let started = Instant::now();
    let mut results: Vec<RunResult> = Vec::new();
    let mut passed = 0;
    for run in 1..=case.runs {
        let mut r = run_once(lab, &case.topology, &cfg, run);
        r.label = case.label();
        let ok = match case.fault {
            Some(_) => r.expected,
            None => meets_or_better(case.topology.expect, &r),
        };
        // The table's "pass" is this group's criterion (the JS result or better).
        r.expected = ok;
        println!("{}{}", r.line(), if ok { "" } else { "  FAILED" });
        if !ok {
            println!("{}", r.transcript);
        }
        passed += usize::from(ok);
        results.push(r);
    }
    let mut s = report::summarize(&case.topology, &results, 0);
    s.label = case.label();
    let ok = passed == case.runs;
    println!(
        "case {}: {} ({passed}/{} runs, {:.1} s)",
        case.name,
        if ok { "ok" } else { "FAILED" },
        case.runs,
        started.elapsed().as_secs_f64()
    );
    (s, ok)
}

/// Root, the JS peers and the `corenet` binary (nftables comes with the first lab). Returns
/// the binary's path when a case needs it.
fn prepare(cases: &[Case]) -> Result<Option<String>, String> {
    if !crate::cmd::is_root() {
        return Err(
            "the NAT lab creates network namespaces and needs root (run as root; \
             nothing is skipped)"
                .into(),
        );
    }
    let root = crate::repo_root();
    let modules = root.join("tests/interop/node_modules");
    if !modules.join("hyperdht").exists() || !modules.join("blind-relay").exists() {
        println!("natlab: installing the JS peers (npm ci --prefix tests/interop)");
        let ok = Command::new("npm")
            .args([
                "ci",
                "--prefix",
                "tests/interop",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ])
            .current_dir(&root)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(
                "`npm ci --prefix tests/interop` failed (are node and npm installed?)".into(),
            );
        }
    }
    let needs_rust = cases
        .iter()
        .any(|c| c.combo.uses_rust(&c.topology) || c.dht == DhtKind::Rust);
    if !needs_rust {
        return Ok(None);
    }
    if let Ok(p) = std::env::var("NATLAB_CORENET") {
        let path = if Path::new(&p).is_absolute() {
            PathBuf::from(&p)
        } else {
            root.join(&p)
        };
        if !path.exists() {
            return Err(format!("NATLAB_CORENET={p}: no such file"));
        }
        return Ok(Some(path.display().to_string()));
    }
    build_corenet().map(Some)
}

/// `cargo build -p corenet-cli --locked` into this test binary's target directory; returns
/// the binary's path.
fn build_corenet() -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    // <target>/<profile>/deps/natlab-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot tell the target directory from the test binary's path")?;
    let target = profile_dir
        .parent()
        .ok_or("cannot tell the target directory from the test binary's path")?;
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut args = vec!["build", "-p", "corenet-cli", "--locked", "--target-dir"];
    let target_s = target.display().to_string();
    args.push(&target_s);
    if release {
        args.push("--release");
    }
    println!(
        "natlab: {cargo} {} (NATLAB_CORENET=PATH uses a built binary instead)",
        args.join(" ")
    );
    let ok = Command::new(&cargo)
        .args(&args)
        .current_dir(crate::repo_root())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return Err(format!(
            "`cargo {}` failed: the Rust cases need the corenet binary",
            args.join(" ")
        ));
    }
    let bin = profile_dir.join("corenet");
    if !bin.exists() {
        return Err(format!("{} missing after the build", bin.display()));
    }
    Ok(bin.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topology_and_mixed_combination_is_covered() {
        let all = cases(2);
        for group in ["rust-rust", "rust-js", "js-rust", "js-js@rust-dht"] {
            for t in topology::all() {
                let n = all
                    .iter()
                    .filter(|c| {
                        let n = format!("{group}/{}", t.name);
                        c.name == n || c.name.starts_with(&format!("{n}+relay-"))
                    })
                    .count();
                assert_eq!(n, if t.relay { 2 } else { 1 }, "{group}/{}", t.name);
            }
        }
        assert!(all
            .iter()
            .any(|c| c.name == "rust-js/random-random-relay+relay-js"));
        assert!(all.iter().filter(|c| c.fault.is_some()).count() >= 2);
        assert!(all
            .iter()
            .filter(|c| c.name.starts_with("js-js@rust-dht/"))
            .all(|c| c.dht == DhtKind::Rust && c.combo.client == Impl::Js));
    }

    #[test]
    fn filters_follow_libtest() {
        let o = parse(
            [
                "--test-threads",
                "1",
                "--nocapture",
                "rust-js/",
                "--skip",
                "relay",
            ]
            .into_iter()
            .map(String::from),
        );
        assert!(o.selects("rust-js/cone-cone"));
        assert!(!o.selects("rust-js/random-random-relay+relay-js"));
        assert!(!o.selects("js-rust/cone-cone"));
        let o = parse(["--test-threads=1"].into_iter().map(String::from));
        assert!(o.selects("anything"));
    }
}
