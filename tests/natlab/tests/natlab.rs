//! The NAT lab as a test group: one test per topology, each in its own lab (internet, DHT,
//! sites rebuilt per run). Needs root; run them one at a time:
//!
//! ```text
//! cargo test -p corenet-natlab -- --test-threads=1
//! ```
//!
//! `NATLAB_RUNS` (default 3) sets the runs per topology, `NATLAB_PEERS=rust` runs the
//! `corenet` CLI instead of the JS peers (`NATLAB_CORENET`, default `target/debug/corenet`),
//! `NATLAB_DHT=rust` the Rust DHT. A missing tool or JS install is a failure, never a skip.

use corenet_natlab::lab::Lab;
use corenet_natlab::peer::{Commands, JS_DHT, RUST_DHT};
use corenet_natlab::report;
use corenet_natlab::run::{run_once, RunConfig};
use corenet_natlab::topology;

fn config() -> RunConfig {
    let peers = std::env::var("NATLAB_PEERS").unwrap_or_else(|_| "js".into());
    let mut cfg = RunConfig::new(Commands::preset(&peers).expect("NATLAB_PEERS is js or rust"));
    if let Ok(path) = std::env::var("NATLAB_CORENET") {
        cfg.corenet = path;
    }
    cfg.dht_command = match std::env::var("NATLAB_DHT").as_deref() {
        Ok("rust") => RUST_DHT.into(),
        _ => JS_DHT.into(),
    };
    cfg
}

fn check(name: &str) {
    let nm = corenet_natlab::repo_root().join("tests/interop/node_modules/hyperdht");
    assert!(
        nm.exists(),
        "the JS peers are not installed: run `npm ci --prefix tests/interop`"
    );
    let runs: usize = std::env::var("NATLAB_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let topo = topology::by_name(name).expect("topology");
    let cfg = config();
    let mut lab = Lab::new().unwrap_or_else(|e| panic!("{e}"));
    lab.start_dht(&cfg.dht_command, &cfg.vars_base())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut results = Vec::new();
    for run in 1..=runs {
        let r = run_once(&mut lab, &topo, &cfg, run);
        println!("{}", r.line());
        if !r.expected {
            println!("{}", r.transcript);
        }
        results.push(r);
    }
    drop(lab);
    let s = report::summarize(&topo, &results, cfg.loss);
    println!("{}", report::table(std::slice::from_ref(&s)));
    assert!(
        s.ok,
        "{name}: {} of {} runs met `{}`",
        s.expected_runs, s.runs, s.expect
    );
}

#[test]
fn open_open() {
    check("open-open");
}

#[test]
fn open_cone() {
    check("open-cone");
}

#[test]
fn cone_open() {
    check("cone-open");
}

#[test]
fn cone_cone() {
    check("cone-cone");
}

#[test]
fn cone_random() {
    check("cone-random");
}

#[test]
fn random_cone() {
    check("random-cone");
}

#[test]
fn random_random() {
    check("random-random");
}

#[test]
fn same_lan() {
    check("same-lan");
}

#[test]
fn cone_cgnat() {
    check("cone-cgnat");
}

#[test]
fn random_random_relay() {
    check("random-random-relay");
}

#[test]
fn every_topology_has_a_test() {
    let src = include_str!("natlab.rs");
    for t in topology::all() {
        assert!(
            src.contains(&format!("check(\"{}\")", t.name)),
            "no test for {}",
            t.name
        );
    }
}
