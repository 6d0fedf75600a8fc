//! [`Testnet`]: DHT nodes in this process for tests and the CLI.

use super::*;

/// N DHT nodes in this process, for tests and the CLI (@hyperswarm/testnet): the first is a
/// persistent bootstrap node; the others bootstrap from it and become persistent. On
/// 127.0.0.1 unless told a host ([`Testnet::with_host`]).
#[derive(Debug)]
pub struct Testnet {
    /// The nodes.
    pub nodes: Vec<Dht>,
    /// The bootstrap address to give other nodes.
    pub bootstrap: Vec<SocketAddrV4>,
}

impl Testnet {
    /// Starts `size` nodes (at least 1) on 127.0.0.1; the first binds `port` (0: any).
    pub async fn new(size: usize, port: u16) -> Result<Testnet, Error> {
        Self::with_host(size, Ipv4Addr::LOCALHOST, port).await
    }

    /// Starts `size` nodes on `host` (an address of this machine other nodes can reach:
    /// not 0.0.0.0, since it is the nodes' advertised address); the first binds `port`.
    pub async fn with_host(size: usize, host: Ipv4Addr, port: u16) -> Result<Testnet, Error> {
        Self::build(size, host, port, true).await
    }

    /// Starts `size` nodes on 127.0.0.1 that never answer a reachability check (PING_NAT):
    /// every peer on this testnet, Rust or JS, stays firewalled, as peers behind NATs do.
    /// Loopback has no NATs; this is how a loopback test makes peers on their default
    /// options connect through the holepunch (with the LAN shortcut out of the way, see
    /// [`DhtConfig::with_lan`]).
    pub async fn behind_nats(size: usize) -> Result<Testnet, Error> {
        Self::build(size, Ipv4Addr::LOCALHOST, 0, false).await
    }

    async fn build(
        size: usize,
        host: Ipv4Addr,
        port: u16,
        answer_ping_nat: bool,
    ) -> Result<Testnet, Error> {
        if host.is_unspecified() {
            return Err(Error::Bind(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a testnet needs a concrete host address, not 0.0.0.0",
            )));
        }
        let first_sock = std::net::UdpSocket::bind((host, port))?;
        let first_addr = match first_sock.local_addr()? {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => return Err(Error::Bind(io::Error::other("not IPv4"))),
        };
        drop(first_sock);
        let first = Dht::spawn(
            DhtConfig::default()
                .with_host(host)
                .with_port(first_addr.port())
                .with_ephemeral(Some(false))
                .with_firewalled(false)
                .with_answer_ping_nat(answer_ping_nat)
                .with_public_address(first_addr),
        )
        .await?;
        let bootstrap = vec![first_addr];
        let mut nodes = vec![first];
        for _ in 1..size.max(1) {
            let n = Dht::spawn(
                DhtConfig::default()
                    .with_host(host)
                    .with_bootstrap(bootstrap.clone())
                    .with_ephemeral(Some(false))
                    .with_firewalled(false)
                    .with_answer_ping_nat(answer_ping_nat),
            )
            .await?;
            n.bootstrapped().await?;
            nodes.push(n);
        }
        // A second pass lets early nodes learn about later ones.
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(Testnet { nodes, bootstrap })
    }

    /// A node that bootstraps from this testnet (ephemeral unless told otherwise), on the
    /// testnet's host.
    pub async fn create_node(&self, config: DhtConfig) -> Result<Dht, Error> {
        let host = self
            .bootstrap
            .first()
            .map_or(Ipv4Addr::LOCALHOST, |a| *a.ip());
        let n = Dht::spawn(
            config
                .with_host(host)
                .with_bootstrap(self.bootstrap.clone()),
        )
        .await?;
        n.bootstrapped().await?;
        Ok(n)
    }

    /// Stops every node.
    pub async fn destroy(&self) {
        for n in self.nodes.iter().rev() {
            n.destroy().await;
        }
    }
}
