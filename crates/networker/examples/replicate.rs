//! Two peers replicate a core: a writer shares it, a reader finds it by its key on the DHT
//! (a local testnet here; drop `.bootstrap(..)` to use the public network) and follows
//! its appends live.
//!
//! `cargo run -p corenet --example replicate`

use corenet::{Configure, Corestore, Networker, Testnet};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let testnet = Testnet::new(5, 0).await?;

    let writer_store = Corestore::in_memory();
    let log = writer_store.get("log")?;
    log.append([&b"first entry"[..], &b"second entry"[..]])?;
    let writer = Networker::builder(writer_store)
        .bootstrap(testnet.bootstrap.clone())
        .build()
        .await?;
    writer
        .configure(log.discovery_key(), Configure::default())
        .await?;
    println!("writer shares {}", log.key());

    let reader_store = Corestore::in_memory();
    let copy = reader_store.get_by_key(log.key())?;
    let reader = Networker::builder(reader_store)
        .bootstrap(testnet.bootstrap.clone())
        .build()
        .await?;
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

    // Sparse, on demand: one block, verified against the writer's signed tree.
    let second = copy.fetch(1).await?;
    println!("reader got block 1: {:?}", String::from_utf8_lossy(&second));

    // Live: the writer appends, the reader sees the new length and downloads it.
    log.append([&b"third entry"[..]])?;
    copy.wait_for_length(3).await?;
    copy.download(0..3).done().await?;
    for i in 0..copy.len() {
        let block = copy.get(i)?.unwrap_or_default();
        println!("block {i}: {}", String::from_utf8_lossy(&block));
    }
    println!(
        "reader's peers: {:?}",
        reader
            .peers()
            .iter()
            .map(|p| p.remote_public_key)
            .collect::<Vec<_>>()
    );

    reader.close().await?;
    writer.close().await?;
    testnet.destroy().await;
    Ok(())
}
