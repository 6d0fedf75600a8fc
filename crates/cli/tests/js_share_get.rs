//! `corenet share` and `corenet get` against a JS Hyperswarm + Corestore app, as a newcomer
//! would use them: JS reads a file the CLI shares, and the CLI downloads a core a JS app
//! wrote. The JS app is tests/interop/networker-peer.js (the interop harness must be
//! installed: `npm ci --prefix tests/interop`).

mod common;

use std::time::Duration;

use common::{net_args, testnet, testnet_behind_nats, Proc};
use corenet_tests::JsPeer;
use serde_json::json;

const JS_WAIT: Duration = Duration::from_secs(30);

/// ASCII content (JS's test app reads blocks as text), `len` bytes.
fn text(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| b'a' + ((i as u8).wrapping_mul(7).wrapping_add(salt)) % 26)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn js_reads_what_the_cli_shares_and_the_cli_gets_what_js_wrote() {
    let (_testnet, boot) = testnet();
    let dir = tempfile::tempdir().unwrap();
    let mut js = JsPeer::spawn_interactive("networker-peer.js", &[&boot, &"ab".repeat(32)]);
    js.expect("ready", JS_WAIT).await;

    // CLI -> JS: a file of three 64 KiB blocks and a short one.
    let content = text(3 * 64 * 1024 + 1000, 3);
    let file = dir.path().join("shared.txt");
    std::fs::write(&file, &content).unwrap();
    let storage = dir.path().join("cli");
    let mut args = net_args(&storage, &boot);
    args.extend(["share", file.to_str().unwrap()]);
    let sharer = Proc::spawn(&args);
    let key = sharer.line("key ")["key ".len()..].to_string();
    let dk = sharer.line("discovery-key ")["discovery-key ".len()..].to_string();
    sharer.line("announced ");

    js.command(json!({"cmd": "open", "key": key})).await;
    js.expect("opened", JS_WAIT).await;
    js.command(json!({"cmd": "join", "topic": dk, "server": false, "client": true}))
        .await;
    js.expect("joined", JS_WAIT).await;
    for (i, chunk) in content.chunks(64 * 1024).enumerate() {
        js.command(json!({"cmd": "get", "key": key, "index": i, "timeout": 20000}))
            .await;
        let block = js.expect("block", JS_WAIT).await;
        assert_eq!(block["index"], i);
        assert_eq!(
            block["text"].as_str().unwrap().as_bytes(),
            chunk,
            "block {i} as JS read it"
        );
    }

    // JS -> CLI: a core the JS app writes, downloaded into a file by `corenet get`.
    let blocks: Vec<String> = (0..4)
        .map(|i| String::from_utf8(text(50_000 + i * 1000, i as u8)).unwrap())
        .collect();
    js.command(json!({"cmd": "create", "name": "for-the-cli", "data": blocks}))
        .await;
    let created = js.expect("created", JS_WAIT).await;
    let js_key = created["key"].as_str().unwrap().to_string();
    let js_dk = created["discoveryKey"].as_str().unwrap().to_string();
    js.command(json!({"cmd": "join", "topic": js_dk, "server": true, "client": false}))
        .await;
    js.expect("joined", JS_WAIT).await;

    let out = dir.path().join("from-js.txt");
    let storage = dir.path().join("getter");
    let mut args = net_args(&storage, &boot);
    args.extend(["get", &js_key, out.to_str().unwrap(), "--timeout", "60"]);
    let mut getter = Proc::spawn(&args);
    let expected: Vec<u8> = blocks.concat().into_bytes();
    let done = tokio::task::spawn_blocking(move || {
        let line = getter.line("done ");
        assert!(getter.wait().success());
        line
    })
    .await
    .unwrap();
    assert_eq!(
        done,
        format!("done {} 4 fetched {}", expected.len(), expected.len())
    );
    assert_eq!(std::fs::read(&out).unwrap(), expected);

    js.command(json!({"cmd": "exit"})).await;
    js.expect("bye", JS_WAIT).await;
    drop(sharer);
}

/// The same both ways on a testnet that answers no reachability check (every peer stays
/// firewalled, as behind NATs), the CLI without the LAN shortcut (`--behind-nat`) and the JS
/// app on its defaults: the connections go through the holepunch.
#[tokio::test(flavor = "multi_thread")]
async fn share_and_get_with_a_default_js_app_through_the_holepunch() {
    let (_testnet, boot) = testnet_behind_nats();
    let dir = tempfile::tempdir().unwrap();
    let mut js = JsPeer::spawn_interactive("networker-peer.js", &[&boot, &"cd".repeat(32)]);
    js.expect("ready", JS_WAIT).await;

    // CLI shares, JS dials it and reads.
    let content = text(2 * 64 * 1024 + 10, 7);
    let file = dir.path().join("shared.txt");
    std::fs::write(&file, &content).unwrap();
    let storage = dir.path().join("cli");
    let mut args = net_args(&storage, &boot);
    args.extend(["--behind-nat", "share", file.to_str().unwrap()]);
    let sharer = Proc::spawn(&args);
    let key = sharer.line("key ")["key ".len()..].to_string();
    let dk = sharer.line("discovery-key ")["discovery-key ".len()..].to_string();
    sharer.line("announced ");
    js.command(json!({"cmd": "open", "key": key})).await;
    js.expect("opened", JS_WAIT).await;
    js.command(json!({"cmd": "join", "topic": dk, "server": false, "client": true}))
        .await;
    js.expect("joined", JS_WAIT).await;
    js.command(json!({"cmd": "get", "key": key, "index": 2, "timeout": 20000}))
        .await;
    let block = js.expect("block", JS_WAIT).await;
    assert_eq!(
        block["text"].as_str().unwrap().as_bytes(),
        &content[2 * 64 * 1024..]
    );
    let added = sharer.line("peer-add ");
    assert!(added.ends_with(" holepunch"), "JS -> CLI path: {added}");

    // JS shares, the CLI dials it and downloads.
    let blocks: Vec<String> = (0..3)
        .map(|i| String::from_utf8(text(20_000 + i * 100, i as u8)).unwrap())
        .collect();
    js.command(json!({"cmd": "create", "name": "punched", "data": blocks}))
        .await;
    let created = js.expect("created", JS_WAIT).await;
    let js_key = created["key"].as_str().unwrap().to_string();
    let js_dk = created["discoveryKey"].as_str().unwrap().to_string();
    js.command(json!({"cmd": "join", "topic": js_dk, "server": true, "client": false}))
        .await;
    js.expect("joined", JS_WAIT).await;
    let out = dir.path().join("from-js.txt");
    let storage = dir.path().join("getter");
    let mut args = net_args(&storage, &boot);
    args.extend([
        "--behind-nat",
        "get",
        &js_key,
        out.to_str().unwrap(),
        "--timeout",
        "60",
    ]);
    let mut getter = Proc::spawn(&args);
    let expected: Vec<u8> = blocks.concat().into_bytes();
    let (added, done) = tokio::task::spawn_blocking(move || {
        let added = getter.err_line("peer-add ");
        let done = getter.line("done ");
        assert!(getter.wait().success());
        (added, done)
    })
    .await
    .unwrap();
    assert!(added.ends_with(" holepunch"), "CLI -> JS path: {added}");
    assert!(
        done.starts_with(&format!("done {} 3", expected.len())),
        "{done}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), expected);
    js.command(json!({"cmd": "exit"})).await;
    js.expect("bye", JS_WAIT).await;
    drop(sharer);
}
