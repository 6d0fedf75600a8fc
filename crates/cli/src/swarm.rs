//! `corenet swarm <topic>`.

use std::net::{Ipv4Addr, SocketAddrV4};

use corenet_codec::Topic;
use corenet_noise::KeyPair;
use corenet_swarm::{JoinOptions, Swarm, SwarmEvent};
use tokio::io::AsyncReadExt;

use crate::CliError;

/// Joins `topic` and reports connections until SIGINT/SIGTERM.
pub(crate) async fn run(
    topic: Topic,
    host: Ipv4Addr,
    bootstrap: Vec<SocketAddrV4>,
    key_pair: KeyPair,
    server: bool,
    client: bool,
) -> Result<(), CliError> {
    let mut b = Swarm::builder()
        .key_pair(key_pair)
        .bootstrap(bootstrap.clone())
        .host(host);
    if crate::dht::behind_nat() {
        b = b.dht(crate::dht::node(host, bootstrap).await?);
    }
    let swarm = b.build().await.map_err(CliError::runtime)?;
    let mut events = swarm.events();
    let mut conns = swarm.connections();
    let discovery = swarm
        .join(topic, JoinOptions { server, client })
        .await
        .map_err(CliError::runtime)?;
    discovery.flushed().await.map_err(CliError::runtime)?;
    let stop = crate::dht::shutdown_signal();
    println!("joined {topic}");
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(mut conn) = conns.recv() => {
                // Keep reading so that the end of the connection is noticed.
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
            ev = events.recv() => match ev {
                Ok(SwarmEvent::Connected { public_key, client }) => {
                    println!("connection {public_key} {}", if client { "client" } else { "server" });
                }
                Ok(SwarmEvent::Disconnected { public_key }) => println!("disconnected {public_key}"),
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("missed {n} swarm events");
                }
                Err(_) => break,
            },
        }
    }
    swarm.destroy().await;
    Ok(())
}
