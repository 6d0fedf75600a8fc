//! `natlab`: runs the NAT lab's topologies and prints one line per run, then a summary.
//! Exit code 0 when every topology met its expectation, 1 when one did not, 2 for a usage or
//! lab setup error. `scripts/natlab` builds and runs it.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use corenet_natlab::combo;
use corenet_natlab::lab::{self, Lab};
use corenet_natlab::peer::{Commands, JS_DHT, RUST_DHT};
use corenet_natlab::report::{self, json_str};
use corenet_natlab::run::{run_once, RunConfig, RunResult};
use corenet_natlab::topology::{self, Topology};

const USAGE: &str = "usage: natlab [options]
  --only NAME[,NAME]   run only these topologies (repeatable; see --list)
  --runs N             runs per topology (default 5; with --bench 20 per combination)
  --bench              for every topology run JS<->JS, Rust<->Rust, Rust server/JS client and
                       JS server/Rust client (the relay topology with a JS and a Rust relay
                       each), interleaved, and print a markdown table of connect times
                       (median, p10, p90, min, max) and paths; ignores --peers/--server/...
  --pairs P[,P]        with --bench: only these combinations (js-js, rust-rust, rust-js,
                       js-rust: server-client; a prefix of the full name also works)
  --json FILE          write every run and the summaries as JSON
  --peers js|rust      preset for all three roles (default js)
  --server T, --client T, --relay T
                       one role's command: a preset (js, rust) or a template with
                       {bootstrap} {bootstrap_args} {key} {relay} {relay_args} {corenet}
  --dht js|rust|T      the DHT nodes (default js; T with {hosts} {host} {port} {corenet})
  --corenet PATH       what {corenet} expands to (default target/debug/corenet)
  --loss N             N% UDP loss each way on every peer site's internet side
  --timeout S          bound on one connect in seconds (default 75)
  --fault F            inject a fault in every run: relay-stop, relay-kill, relay-unpaired
                       (random-random-relay unless --only), server-kill (cone-random unless
                       --only); see README
  --verbose            print the peers' lines of every unexpected run
  --hold               build the first topology's sites, print their namespaces and wait
                       for Enter (at most 10 min) instead of running peers (debugging)
  --list               list the topologies and exit
  --clean              delete namespaces left by dead labs and exit";

struct Args {
    only: Vec<String>,
    runs: usize,
    runs_given: bool,
    bench: bool,
    pairs: Vec<String>,
    json: Option<String>,
    cfg: RunConfig,
    verbose: bool,
    hold: bool,
}

fn role(value: &str, pick: fn(Commands) -> String) -> String {
    Commands::preset(value)
        .map(pick)
        .unwrap_or_else(|| value.to_string())
}

fn parse() -> Result<Option<Args>, String> {
    let mut a = Args {
        only: Vec::new(),
        runs: 5,
        runs_given: false,
        bench: false,
        pairs: Vec::new(),
        json: None,
        cfg: RunConfig::new(Commands::js()),
        verbose: false,
        hold: false,
    };
    let mut it = std::env::args().skip(1);
    let mut overrides: Vec<(String, String)> = Vec::new();
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--only" => a.only.extend(value()?.split(',').map(str::to_string)),
            "--runs" => {
                a.runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?;
                a.runs_given = true;
            }
            "--bench" => a.bench = true,
            "--pairs" => a.pairs.extend(value()?.split(',').map(str::to_string)),
            "--json" => a.json = Some(value()?),
            "--peers" => {
                let v = value()?;
                a.cfg.commands = Commands::preset(&v).ok_or(format!("--peers {v}: js or rust"))?;
            }
            "--server" | "--client" | "--relay" => overrides.push((arg.clone(), value()?)),
            "--dht" => {
                a.cfg.dht_command = match value()?.as_str() {
                    "js" => JS_DHT.into(),
                    "rust" => RUST_DHT.into(),
                    t => t.into(),
                }
            }
            "--corenet" => a.cfg.corenet = value()?,
            "--loss" => {
                let n: u8 = value()?.parse().map_err(|e| format!("--loss: {e}"))?;
                if n > 100 {
                    return Err("--loss is a percentage".into());
                }
                a.cfg.loss = n;
            }
            "--timeout" => {
                let s: u64 = value()?.parse().map_err(|e| format!("--timeout: {e}"))?;
                a.cfg.connect_timeout = Duration::from_secs(s.clamp(1, 600));
            }
            "--fault" => {
                let v = value()?;
                a.cfg.fault = Some(corenet_natlab::fault::Fault::parse(&v).ok_or(format!(
                    "--fault {v}: relay-stop, relay-kill, relay-unpaired or server-kill"
                ))?);
            }
            "--verbose" | "-v" => a.verbose = true,
            "--hold" => a.hold = true,
            "--list" => {
                for t in topology::all() {
                    println!(
                        "{:<20} {:?} relay={} expect {:?}",
                        t.name, t.layout, t.relay, t.expect
                    );
                }
                return Ok(None);
            }
            "--clean" => {
                println!("deleted {} stale namespaces", lab::sweep_stale());
                return Ok(None);
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    for (flag, v) in overrides {
        match flag.as_str() {
            "--server" => a.cfg.commands.listen = role(&v, |c| c.listen),
            "--client" => a.cfg.commands.connect = role(&v, |c| c.connect),
            _ => a.cfg.commands.relay = role(&v, |c| c.relay),
        }
    }
    if a.bench && !a.runs_given {
        a.runs = 20;
    }
    if a.bench && a.cfg.fault.is_some() {
        return Err("--bench and --fault do not mix".into());
    }
    if a.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    if let (Some(f), true) = (a.cfg.fault, a.only.is_empty()) {
        a.only.push(f.default_topology().to_string());
    }
    Ok(Some(a))
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("natlab: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let topologies: Vec<Topology> = if args.only.is_empty() {
        topology::all()
    } else {
        let mut v = Vec::new();
        for name in &args.only {
            match topology::by_name(name) {
                Some(t) => v.push(t),
                None => {
                    eprintln!("natlab: no topology {name} (see --list)");
                    return ExitCode::from(2);
                }
            }
        }
        v
    };

    let c = &args.cfg.commands;
    let templates = [&c.listen, &c.connect, &c.relay, &args.cfg.dht_command];
    if args.bench || templates.iter().any(|t| t.contains("{corenet}")) {
        let path = corenet_natlab::repo_root().join(&args.cfg.corenet);
        if !path.exists() {
            eprintln!(
                "natlab: {} does not exist: build it (cargo build -p corenet-cli) or pass --corenet PATH",
                path.display()
            );
            return ExitCode::from(2);
        }
    }

    let started = Instant::now();
    let mut lab = match Lab::new() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("natlab: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = lab.start_dht(&args.cfg.dht_command, &args.cfg.vars_base()) {
        eprintln!("natlab: {e}");
        return ExitCode::from(2);
    }
    println!(
        "natlab: lab {} (DHT {}), {} topologies x {} runs{}, loss {}%",
        lab.prefix(),
        lab.bootstrap()
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(" "),
        topologies.len(),
        args.runs,
        if args.bench {
            " per combination (--bench)"
        } else {
            ""
        },
        args.cfg.loss
    );

    if args.hold {
        return hold(&mut lab, &topologies[0], args.cfg.loss);
    }
    if args.bench {
        return bench(lab, &topologies, &args, started);
    }

    let mut all = Vec::new();
    let mut summaries = Vec::new();
    for t in &topologies {
        let mut results = Vec::new();
        for run in 1..=args.runs {
            let r = run_once(&mut lab, t, &args.cfg, run);
            println!("{}", r.line());
            if !r.expected && args.verbose {
                println!("{}", r.transcript);
            }
            results.push(r);
        }
        summaries.push(report::summarize(t, &results, args.cfg.loss));
        all.extend(results);
    }
    drop(lab);
    let elapsed = started.elapsed();

    println!("\n{}", report::table(&summaries));
    println!(
        "firewall classes (node: dht-rpc self view; nat: holepunch stage local/remote):\n{}",
        report::classes(&summaries)
    );
    println!(
        "natlab: {} runs in {:.1} s",
        all.len(),
        elapsed.as_secs_f64()
    );

    if let Some(path) = &args.json {
        let c = &args.cfg.commands;
        let meta = format!(
            "{{\"runs_per_topology\":{},\"loss\":{},\"elapsed_s\":{:.1},\"server\":{},\"client\":{},\"relay\":{},\"dht\":{}}}",
            args.runs,
            args.cfg.loss,
            elapsed.as_secs_f64(),
            json_str(&c.listen),
            json_str(&c.connect),
            json_str(&c.relay),
            json_str(&args.cfg.dht_command)
        );
        if let Err(e) = std::fs::write(path, report::json(&meta, &summaries, &all)) {
            eprintln!("natlab: writing {path}: {e}");
            return ExitCode::from(2);
        }
    }
    if summaries.iter().all(|s| s.ok) {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "natlab: expectation failed: {}",
            summaries
                .iter()
                .filter(|s| !s.ok)
                .map(|s| s.topology.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        ExitCode::from(1)
    }
}

/// `--bench`: every combination of [`combo::for_topology`] on every topology, `args.runs`
/// times each, interleaved (run 1 of every combination, then run 2, ...) so that a change in
/// the machine's load spreads over all of them.
fn bench(mut lab: Lab, topologies: &[Topology], args: &Args, started: Instant) -> ExitCode {
    let mut summaries = Vec::new();
    let mut all: Vec<RunResult> = Vec::new();
    for t in topologies {
        let combos: Vec<combo::Combo> = combo::for_topology(t)
            .into_iter()
            .filter(|c| {
                args.pairs.is_empty() || args.pairs.iter().any(|p| c.name_for(t).starts_with(p))
            })
            .collect();
        let mut per: Vec<Vec<RunResult>> = vec![Vec::new(); combos.len()];
        for run in 1..=args.runs {
            for (i, c) in combos.iter().enumerate() {
                let cfg = RunConfig {
                    commands: c.commands(),
                    ..args.cfg.clone()
                };
                let mut r = run_once(&mut lab, t, &cfg, run);
                r.label = c.name_for(t);
                println!("{}", r.line());
                if !r.expected && args.verbose {
                    println!("{}", r.transcript);
                }
                per[i].push(r);
            }
        }
        for results in per {
            summaries.push(report::summarize(t, &results, args.cfg.loss));
            all.extend(results);
        }
    }
    drop(lab);
    let elapsed = started.elapsed();
    println!("\n{}", report::table(&summaries));
    println!("{}", report::bench_markdown(&summaries));
    println!(
        "natlab --bench: {} runs ({} per combination) in {:.1} s",
        all.len(),
        args.runs,
        elapsed.as_secs_f64()
    );
    if let Some(path) = &args.json {
        let meta = format!(
            "{{\"bench\":true,\"runs_per_combination\":{},\"loss\":{},\"elapsed_s\":{:.1},\"dht\":{}}}",
            args.runs,
            args.cfg.loss,
            elapsed.as_secs_f64(),
            json_str(&args.cfg.dht_command)
        );
        if let Err(e) = std::fs::write(path, report::json(&meta, &summaries, &all)) {
            eprintln!("natlab: writing {path}: {e}");
            return ExitCode::from(2);
        }
    }
    let failed: Vec<String> = summaries
        .iter()
        .filter(|s| !s.ok)
        .map(|s| format!("{} {}", s.topology, s.label))
        .collect();
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "natlab: expectation failed (every run counts): {}",
            failed.join(", ")
        );
        ExitCode::from(1)
    }
}

/// `--hold`: the sites of `topo` stay up until Enter (or 10 minutes) for manual poking.
fn hold(lab: &mut Lab, topo: &Topology, loss: u8) -> ExitCode {
    let sites = match lab.build(topo, loss) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("natlab: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "{}: server {} in {}, client {} in {}",
        topo.name, sites.server.addr, sites.server.ns, sites.client.addr, sites.client.ns
    );
    if let Some(r) = &sites.relay {
        println!("relay host {} in {}", r.addr, r.ns);
    }
    println!(
        "namespaces: {}",
        lab::lab_namespaces()
            .iter()
            .filter(|n| n.starts_with(lab.prefix()))
            .cloned()
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("press Enter to tear down");
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(Duration::from_secs(600));
    lab.teardown(sites);
    ExitCode::SUCCESS
}
