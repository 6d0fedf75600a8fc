//! A restart resumes its configuration: the networker keeps its identity and the discovery
//! keys it was configured with in the corestore's directory, so the second run announces
//! the same core under the same public key without being told again.
//!
//! `cargo run -p corenet --example restart`

use corenet::{Configure, Corestore, Networker, NetworkerEvent, Testnet};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let testnet = Testnet::new(5, 0).await?;
    let dir = std::env::temp_dir().join(format!("corenet-restart-example-{}", std::process::id()));

    // First run: share a core.
    let (key, public_key) = {
        let store = Corestore::open(&dir)?;
        let core = store.get("journal")?;
        core.append([&b"written before the restart"[..]])?;
        let net = Networker::builder(store)
            .bootstrap(testnet.bootstrap.clone())
            .build()
            .await?;
        net.configure(core.discovery_key(), Configure::announce_only())
            .await?;
        println!(
            "first run: {} announces {}",
            net.public_key(),
            core.discovery_key()
        );
        let ids = (core.key(), net.public_key());
        net.close().await?;
        ids
    };

    // Second run: no configure call, same identity, announced again.
    let store = Corestore::open(&dir)?;
    let net = Networker::builder(store)
        .bootstrap(testnet.bootstrap.clone())
        .build()
        .await?;
    assert_eq!(net.public_key(), public_key);
    for (dk, c) in net.statuses() {
        println!("restored: {dk} announce={} lookup={}", c.announce, c.lookup);
    }

    // A reader finds the restarted peer and reads the journal.
    let reader_store = Corestore::in_memory();
    let copy = reader_store.get_by_key(key)?;
    let reader = Networker::builder(reader_store)
        .bootstrap(testnet.bootstrap.clone())
        .build()
        .await?;
    let mut events = reader.events();
    reader
        .configure(
            copy.discovery_key(),
            Configure {
                announce: false,
                lookup: true,
                flush: true,
            },
        )
        .await?;
    while let Some(ev) = events.recv().await {
        if let NetworkerEvent::PeerAdd(p) = ev {
            println!(
                "reader connected to {} (the same key as before: {})",
                p.remote_public_key,
                p.remote_public_key == public_key
            );
            break;
        }
    }
    let block = copy.fetch(0).await?;
    println!("reader got: {}", String::from_utf8_lossy(&block));

    reader.close().await?;
    net.close().await?;
    drop(net);
    let _ = std::fs::remove_dir_all(&dir);
    testnet.destroy().await;
    Ok(())
}
