//! The `corenet` binary end to end on a local testnet it runs itself: `share` / `get` of a
//! file over the swarm (and a second `get` that fetches nothing, since the store kept every
//! block), `chat` lines between two processes, and `demo`.

mod common;

use common::{net_args, testnet, Proc};

#[test]
fn share_and_get_a_file_over_the_swarm() {
    let (_testnet, boot) = testnet();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.bin");
    // Three and a half 64 KiB blocks... times 12, with a short last block.
    let content: Vec<u8> = (0..(3 * 1024 * 1024 + 12_345u32))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &content).unwrap();

    let (s1, s2) = (dir.path().join("sharer"), dir.path().join("getter"));
    let mut args = net_args(&s1, &boot);
    args.extend(["share", file.to_str().unwrap()]);
    let sharer = Proc::spawn(&args);
    let key = sharer.line("key ")["key ".len()..].to_string();
    assert_eq!(key.len(), 64);
    sharer.line("announced ");

    let out = dir.path().join("copy.bin");
    let mut args = net_args(&s2, &boot);
    args.extend(["get", &key, out.to_str().unwrap(), "--timeout", "60"]);
    let mut getter = Proc::spawn(&args);
    let done = getter.line("done ");
    assert!(getter.wait().success());
    let blocks = content.len().div_ceil(64 * 1024);
    assert_eq!(
        done,
        format!("done {} {blocks} fetched {}", content.len(), content.len())
    );
    assert_eq!(std::fs::read(&out).unwrap(), content);
    sharer.line("peer-add ");

    // The getter's store kept every block: a second get fetches nothing. It names the key
    // as JS apps print it (z32).
    let out2 = dir.path().join("copy2.bin");
    let z32 = corenet_codec::PublicKey::from_hex(&key).unwrap().to_z32();
    let mut args = net_args(&s2, &boot);
    args.extend(["get", &z32, out2.to_str().unwrap(), "--timeout", "60"]);
    let mut again = Proc::spawn(&args);
    let done = again.line("done ");
    assert!(again.wait().success());
    assert_eq!(done, format!("done {} {blocks} fetched 0", content.len()));
    assert_eq!(std::fs::read(&out2).unwrap(), content);

    // Sharing the same path again serves the same key.
    drop(sharer);
    let mut args = net_args(&s1, &boot);
    args.extend(["share", file.to_str().unwrap()]);
    let sharer = Proc::spawn(&args);
    assert_eq!(sharer.line("key ")["key ".len()..], key);
}

#[test]
fn chat_between_two_processes() {
    let (_testnet, boot) = testnet();
    let dir = tempfile::tempdir().unwrap();
    let (s1, s2) = (dir.path().join("a"), dir.path().join("b"));
    let mut args = net_args(&s1, &boot);
    args.extend(["chat", "corenet cli test room"]);
    let mut a = Proc::spawn(&args);
    a.line("joined ");
    let mut args = net_args(&s2, &boot);
    args.extend(["chat", "corenet cli test room"]);
    let mut b = Proc::spawn(&args);
    b.line("joined ");
    let a_key = b.line("peer-add ").split(' ').nth(1).unwrap().to_string();
    let b_key = a.line("peer-add ").split(' ').nth(1).unwrap().to_string();

    a.say("hello from a");
    assert_eq!(b.line(&a_key), format!("{a_key} hello from a"));
    b.say("and back\u{7}from b");
    let got = a.line(&b_key);
    assert!(
        got.ends_with(" and back from b"),
        "control characters are blanked: {got}"
    );
}

#[test]
fn demo_runs() {
    let mut demo = Proc::spawn(&["demo", "--size", "4"]);
    demo.line("bob replicated 4 MiB");
    demo.line("bob got a chat line from alice");
    demo.line("done in ");
    assert!(demo.wait().success());
}

/// `corenet nat` classifies this machine through the DHT: on loopback it is reachable
/// (open); told to behave as behind a NAT it samples a fresh socket, which loopback maps
/// consistently. One line, exit 0.
#[test]
fn nat_prints_one_classification_line() {
    let (_testnet, boot) = testnet();
    let dir = tempfile::tempdir().unwrap();
    // Reachable loopback is open once the quick reachability check answers (a race with
    // the bootstrap walk on a zero-latency testnet); otherwise its fresh socket is seen
    // consistently.
    let cases: [(Option<&str>, &[&str]); 2] = [
        (None, &["nat open 127.0.0.1:", "nat consistent 127.0.0.1:"]),
        (Some("--behind-nat"), &["nat consistent 127.0.0.1:"]),
    ];
    for (extra, want) in cases {
        let mut args = net_args(dir.path(), &boot);
        args.extend(extra);
        args.push("nat");
        let mut p = Proc::spawn(&args);
        let line = p.line("nat ");
        assert!(want.iter().any(|w| line.starts_with(w)), "{line}");
        assert!(p.wait().success());
    }
}

/// With no DHT node answering, `lookup` and `connect` say so and exit non-zero, instead of
/// an empty lookup that looks like "nobody announced" or a "peer not found".
#[test]
fn an_unreachable_dht_is_an_error_not_an_empty_answer() {
    let dir = tempfile::tempdir().unwrap();
    // A UDP port nothing listens on (the socket is bound, then dropped).
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let boot = dead.local_addr().unwrap().to_string();
    drop(dead);
    let topic = "00".repeat(32);
    let key = "11".repeat(32);
    for cmd in [
        vec!["lookup", topic.as_str()],
        vec!["connect", key.as_str()],
    ] {
        let mut args = net_args(dir.path(), &boot);
        args.extend(cmd.iter().copied());
        let started = std::time::Instant::now();
        let mut p = Proc::spawn(&args);
        let line = p.err_line("error: no DHT node answered");
        assert!(line.contains(&boot), "{line}");
        let status = p.wait();
        assert_eq!(status.code(), Some(1), "{cmd:?} exited {status}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{cmd:?} took {:?}",
            started.elapsed()
        );
    }
}
