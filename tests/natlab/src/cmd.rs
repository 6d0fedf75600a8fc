//! Running the lab's system tools and making sure they are installed.
//!
//! Everything here is a short local command (`ip`, `nft`, `sysctl`, `kill`): none of them
//! waits on the network, so they run without a timeout. The one exception, `apt-get`, runs
//! once per machine when a tool is missing.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::Error;

/// Runs `program args` and returns its stdout; a failed start or a non-zero exit is an
/// [`Error::Setup`] that names the command and carries its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    run_with_input(program, args, None)
}

/// [`run`] with `input` written to the command's stdin (for `nft -f -`).
pub fn run_with_input(program: &str, args: &[&str], input: Option<&str>) -> Result<String, Error> {
    let shown = || format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Setup(format!("`{}`: {e}", shown())))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(Error::Setup(format!(
            "`{}` failed ({}): {}",
            shown(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip -n <ns> <args>`.
pub fn ip(ns: &str, args: &[&str]) -> Result<String, Error> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// Runs `program args` inside namespace `ns` (`ip netns exec`).
pub fn exec_in(ns: &str, program: &str, args: &[&str]) -> Result<String, Error> {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// Loads an nftables ruleset into namespace `ns`.
pub fn nft(ns: &str, ruleset: &str) -> Result<(), Error> {
    run_with_input(
        "ip",
        &["netns", "exec", ns, "nft", "-f", "-"],
        Some(ruleset),
    )
    .map(drop)
}

/// Sets sysctls inside `ns`, e.g. `net.ipv4.ip_forward=1`.
pub fn sysctl(ns: &str, settings: &[&str]) -> Result<(), Error> {
    let mut args = vec!["-q", "-w"];
    args.extend_from_slice(settings);
    exec_in(ns, "sysctl", &args).map(drop)
}

/// Whether this process runs as root (uid 0), read from `/proc/self/status`.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn has(program: &str, version_arg: &str) -> bool {
    Command::new(program)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Checks for root, `ip` and `nft`, installing `nftables` and `iproute2` with apt-get when one
/// is missing (CI starts from a fresh machine; `apt-get update` only if the first try fails).
pub fn ensure_tools() -> Result<(), Error> {
    if !is_root() {
        return Err(Error::Setup(
            "the NAT lab creates network namespaces and needs root".into(),
        ));
    }
    if has("ip", "-V") && has("nft", "--version") {
        return Ok(());
    }
    eprintln!("natlab: installing nftables and iproute2");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let install = ["install", "-y", "-q", "nftables", "iproute2"];
    let installed = apt(&install) || (apt(&["update", "-q"]) && apt(&install));
    if !installed {
        return Err(Error::Setup(
            "apt-get install nftables iproute2 failed".into(),
        ));
    }
    if has("ip", "-V") && has("nft", "--version") {
        Ok(())
    } else {
        Err(Error::Setup(
            "ip or nft still missing after apt-get install".into(),
        ))
    }
}
