//! Per-topology summaries, the console table and the JSON record.

use crate::run::{Outcome, RunResult};
use crate::topology::{Expect, Topology};

/// What the runs of one topology add up to.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The topology's name.
    pub topology: String,
    /// The runs' label (the combination), empty when none was set.
    pub label: String,
    /// What was expected, as text (`connect` or `fail CODE|CODE`).
    pub expect: String,
    /// Runs made.
    pub runs: usize,
    /// Runs that connected (with echo).
    pub successes: usize,
    /// Runs that met the expectation.
    pub expected_runs: usize,
    /// Whether the topology passes: every run as expected; with loss, at least one.
    pub ok: bool,
    /// Median, min and max of the timed runs (connect time for a connecting topology, time to
    /// the error for a failing one), in ms.
    pub median: Option<f64>,
    /// See `median`.
    pub min: Option<f64>,
    /// See `median`.
    pub max: Option<f64>,
    /// 10th and 90th percentile of the same times (linear between closest ranks).
    pub p10: Option<f64>,
    /// See `p10`.
    pub p90: Option<f64>,
    /// Whether some of these times are the lab's clock (from the client process's start, so
    /// with its bootstrap) because the peer printed none (the CLI's errors carry no time).
    pub wall_timed: bool,
    /// Median of connect call to first echoed byte, over connected runs (for a relayed
    /// connection `open` comes before any byte went through the relay).
    pub echo_median: Option<f64>,
    /// Outcome or error code -> count, for runs that did not connect.
    pub codes: Vec<(String, usize)>,
    /// Client path kind -> count.
    pub paths: Vec<(String, usize)>,
    /// Client `nat` line -> count (distinct per run).
    pub client_nat: Vec<(String, usize)>,
    /// Server `nat` line -> count.
    pub server_nat: Vec<(String, usize)>,
    /// Client `node` line (dht-rpc's self view: firewalled, randomized) -> count.
    pub client_node: Vec<(String, usize)>,
    /// Server `node` line -> count.
    pub server_node: Vec<(String, usize)>,
}

/// The `node` line without its address (the port differs per run).
fn node_class(line: &str) -> &str {
    line.find(" address=").map_or(line, |i| &line[..i])
}

fn tally<'a>(items: impl Iterator<Item = &'a str>) -> Vec<(String, usize)> {
    let mut v: Vec<(String, usize)> = Vec::new();
    for i in items {
        match v.iter_mut().find(|(k, _)| k == i) {
            Some((_, n)) => *n += 1,
            None => v.push((i.to_string(), 1)),
        }
    }
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

/// The median of `v` (mean of the middle two for an even count).
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The `q`-quantile (0..=1) of `v`, linear between the closest ranks (numpy's default).
pub fn percentile(v: &mut [f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64))
}

/// Sums up `results` (the runs of `topo`).
pub fn summarize(topo: &Topology, results: &[RunResult], loss: u8) -> Summary {
    let fault = results.iter().find_map(|r| r.fault);
    let connecting = matches!(topo.expect, Expect::Connect) && fault.is_none();
    let included = |r: &&RunResult| {
        if connecting {
            r.outcome == Outcome::Connected
        } else {
            r.outcome == Outcome::Failed
        }
    };
    // A fault run is timed by the lab's clock (the CLI prints no time with its error).
    let mut timed: Vec<f64> = results
        .iter()
        .filter(included)
        .filter_map(|r| {
            if fault.is_some() {
                Some(r.wall_ms)
            } else {
                r.ms
            }
        })
        .collect();
    let wall_timed = results
        .iter()
        .filter(included)
        .any(|r| fault.is_some() || !r.peer_timed);
    let mut echoes: Vec<f64> = results
        .iter()
        .filter(|r| r.outcome == Outcome::Connected)
        .filter_map(|r| r.echo_ms)
        .collect();
    let expected_runs = results.iter().filter(|r| r.expected).count();
    let ok = !results.is_empty()
        && if loss == 0 {
            expected_runs == results.len()
        } else {
            expected_runs > 0
        };
    Summary {
        topology: topo.name.into(),
        label: results.first().map(|r| r.label.clone()).unwrap_or_default(),
        expect: match (fault, topo.expect) {
            (Some(f), _) => f.expect_text(),
            (None, Expect::Connect) => "connect".into(),
            (None, Expect::Fail(codes)) => format!("fail {}", codes.join("|")),
        },
        runs: results.len(),
        successes: results
            .iter()
            .filter(|r| r.outcome == Outcome::Connected)
            .count(),
        expected_runs,
        ok,
        min: timed.iter().copied().reduce(f64::min),
        max: timed.iter().copied().reduce(f64::max),
        p10: percentile(&mut timed, 0.1),
        p90: percentile(&mut timed, 0.9),
        wall_timed,
        median: median(&mut timed),
        echo_median: median(&mut echoes),
        codes: tally(
            results
                .iter()
                .filter(|r| r.outcome != Outcome::Connected)
                .map(|r| {
                    r.code
                        .as_deref()
                        .filter(|_| r.outcome == Outcome::Failed)
                        .unwrap_or(r.outcome.as_str())
                }),
        ),
        paths: tally(results.iter().filter_map(|r| r.path.as_deref())),
        client_nat: tally(
            results
                .iter()
                .flat_map(|r| r.client_nat.iter().map(String::as_str)),
        ),
        server_nat: tally(
            results
                .iter()
                .flat_map(|r| r.server_nat.iter().map(String::as_str)),
        ),
        client_node: tally(
            results
                .iter()
                .filter_map(|r| r.client_node.as_deref().map(node_class)),
        ),
        server_node: tally(
            results
                .iter()
                .filter_map(|r| r.server_node.as_deref().map(node_class)),
        ),
    }
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 1000.0 => format!("{:.2} s", v / 1e3),
        Some(v) => format!("{v:.0} ms"),
        None => "-".into(),
    }
}

fn counts(v: &[(String, usize)]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.iter()
        .map(|(k, n)| format!("{k} x{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The summary table, one topology (and combination, when labelled) per line.
pub fn table(summaries: &[Summary]) -> String {
    let labelled = summaries.iter().any(|x| !x.label.is_empty());
    let mut s = String::new();
    if labelled {
        s += &format!("{:<20} ", "combination");
    }
    s += &format!(
        "{:<20} {:>7} {:>9} {:>9} {:>9} {:>9}  {:<4} {}\n",
        "topology", "ok/runs", "median", "min", "max", "echo med", "pass", "paths / errors"
    );
    for x in summaries {
        if labelled {
            s += &format!("{:<20} ", x.label);
        }
        let detail = if x.successes > 0 {
            counts(&x.paths)
        } else {
            counts(&x.codes)
        };
        let extra = if x.successes > 0 && !x.codes.is_empty() {
            format!("; {}", counts(&x.codes))
        } else {
            String::new()
        };
        s += &format!(
            "{:<20} {:>7} {:>9} {:>9} {:>9} {:>9}  {:<4} {}{}\n",
            x.topology,
            format!("{}/{}", x.successes, x.runs),
            ms(x.median),
            ms(x.min),
            ms(x.max),
            ms(x.echo_median),
            if x.ok { "yes" } else { "NO" },
            detail,
            extra
        );
    }
    s
}

/// The benchmark table in markdown: one line per topology and combination, connect times
/// (for a topology expected to fail: times to the error) over the runs that count, and the
/// path (or error) distribution. Every run is in the denominator: a run that failed to set
/// up is a failure like any other.
pub fn bench_markdown(summaries: &[Summary]) -> String {
    let mut s = String::from(
        "| topology | combination | success | median | p10 | p90 | min | max | paths / errors |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut wall = false;
    for x in summaries {
        let mark = if x.wall_timed {
            wall = true;
            "*"
        } else {
            ""
        };
        let t = |v: Option<f64>| match v {
            Some(_) => format!("{}{mark}", ms(v)),
            None => "-".into(),
        };
        let mut detail = counts(&x.paths);
        if !x.codes.is_empty() {
            if x.paths.is_empty() {
                detail = counts(&x.codes);
            } else {
                detail += &format!("; {}", counts(&x.codes));
            }
        }
        let success = if x.expect == "connect" {
            format!("{}/{}", x.successes, x.runs)
        } else {
            format!(
                "{}/{} (as expected: {}/{})",
                x.successes, x.runs, x.expected_runs, x.runs
            )
        };
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            x.topology,
            x.label,
            success,
            t(x.median),
            t(x.p10),
            t(x.p90),
            t(x.min),
            t(x.max),
            detail
        );
    }
    s += "\nCombination: server-client (+relay-<impl>). Times: the client's connect call to \
          the open stream as the client measured it (JS `connected <key> <ms>`, Rust \
          `path <kind> <ms>`); for a topology expected to fail (random-random), to the error.\n";
    if wall {
        s += "\n\\* lab clock from the client process's start (includes its bootstrap): the \
              peer printed no time (the CLI's errors carry none).\n";
    }
    s
}

/// The firewall classes the peers reported, per topology: dht-rpc's view of the node
/// (`node`) and the holepuncher's per-connection classes (`nat`).
pub fn classes(summaries: &[Summary]) -> String {
    let mut s = String::new();
    for x in summaries {
        s += &format!(
            "{:<20} server node: {}\n",
            x.topology,
            counts(&x.server_node)
        );
        s += &format!("{:<20} client node: {}\n", "", counts(&x.client_node));
        if !x.server_nat.is_empty() || !x.client_nat.is_empty() {
            s += &format!("{:<20} server nat:  {}\n", "", counts(&x.server_nat));
            s += &format!("{:<20} client nat:  {}\n", "", counts(&x.client_nat));
        }
    }
    s
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn opt_str(v: &Option<String>) -> String {
    v.as_deref().map_or("null".into(), json_str)
}

fn opt_num(v: Option<f64>) -> String {
    v.map_or("null".into(), |v| format!("{v:.1}"))
}

fn str_list(v: &[String]) -> String {
    format!(
        "[{}]",
        v.iter().map(|s| json_str(s)).collect::<Vec<_>>().join(",")
    )
}

fn tally_obj(v: &[(String, usize)]) -> String {
    format!(
        "{{{}}}",
        v.iter()
            .map(|(k, n)| format!("{}:{n}", json_str(k)))
            .collect::<Vec<_>>()
            .join(",")
    )
}

/// The JSON record of a pass: `meta` (already JSON), the summaries and every run (stats
/// embedded as the peers printed them, when they are JSON objects).
pub fn json(meta: &str, summaries: &[Summary], results: &[RunResult]) -> String {
    let raw = |v: &Option<String>| match v {
        Some(s) if s.starts_with('{') && s.ends_with('}') => s.clone(),
        other => opt_str(other),
    };
    let sums: Vec<String> = summaries
        .iter()
        .map(|x| {
            format!(
                "{{\"topology\":{},\"combination\":{},\"expect\":{},\"runs\":{},\"successes\":{},\"expected_runs\":{},\"ok\":{},\"median_ms\":{},\"p10_ms\":{},\"p90_ms\":{},\"min_ms\":{},\"max_ms\":{},\"wall_timed\":{},\"echo_median_ms\":{},\"codes\":{},\"paths\":{},\"client_nat\":{},\"server_nat\":{},\"client_node\":{},\"server_node\":{}}}",
                json_str(&x.topology), json_str(&x.label), json_str(&x.expect), x.runs, x.successes, x.expected_runs, x.ok,
                opt_num(x.median), opt_num(x.p10), opt_num(x.p90), opt_num(x.min), opt_num(x.max), x.wall_timed, opt_num(x.echo_median),
                tally_obj(&x.codes), tally_obj(&x.paths), tally_obj(&x.client_nat), tally_obj(&x.server_nat),
                tally_obj(&x.client_node), tally_obj(&x.server_node)
            )
        })
        .collect();
    let runs: Vec<String> = results
        .iter()
        .map(|r| {
            format!(
                "{{\"topology\":{},\"combination\":{},\"run\":{},\"outcome\":{},\"expected\":{},\"code\":{},\"ms\":{},\"peer_timed\":{},\"echo_ms\":{},\"wall_ms\":{:.1},\"client_exited\":{},\"leftover\":{},\"fault\":{},\"fault_ms\":{},\"path\":{},\"client_nat\":{},\"server_nat\":{},\"client_node\":{},\"server_node\":{},\"client_stats\":{},\"server_stats\":{},\"server_connections\":{},\"transcript\":{}}}",
                json_str(&r.topology), json_str(&r.label), r.run, json_str(r.outcome.as_str()), r.expected, opt_str(&r.code),
                opt_num(r.ms), r.peer_timed, opt_num(r.echo_ms), r.wall_ms, r.client_exited, str_list(&r.leftover),
                opt_str(&r.fault.map(|f| f.name().to_string())), opt_num(r.fault_ms), opt_str(&r.path),
                str_list(&r.client_nat), str_list(&r.server_nat), opt_str(&r.client_node), opt_str(&r.server_node),
                raw(&r.client_stats), raw(&r.server_stats), r.server_connections, json_str(&r.transcript)
            )
        })
        .collect();
    format!(
        "{{\"meta\":{meta},\n\"summaries\":[\n{}\n],\n\"runs\":[\n{}\n]}}\n",
        sums.join(",\n"),
        runs.join(",\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate() {
        let mut v: Vec<f64> = (1..=11).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 0.1), Some(2.0));
        assert_eq!(percentile(&mut v, 0.9), Some(10.0));
        assert_eq!(percentile(&mut [5.0], 0.9), Some(5.0));
        assert_eq!(percentile(&mut [1.0, 2.0], 0.5), Some(1.5));
        assert_eq!(percentile(&mut [], 0.5), None);
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
    }
}
