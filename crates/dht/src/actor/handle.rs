//! [`Dht`], the `Send + Sync + Clone` handle, and [`Server`].

use super::*;

/// A handle to a DHT node: `Send + Sync + Clone`, usable from any async runtime.
///
/// ```no_run
/// # async fn demo() -> Result<(), corenet_dht::Error> {
/// use corenet_dht::{Dht, DhtConfig};
/// let dht = Dht::spawn(DhtConfig::default().with_bootstrap(vec!["127.0.0.1:49737".parse().unwrap()])).await?;
/// dht.bootstrapped().await?;
/// let topic = [7u8; 32];
/// let kp = corenet_noise::KeyPair::generate();
/// dht.announce(topic, &kp, vec![]).await?;
/// let (peers, _done) = dht.lookup(topic).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Dht {
    addr: Addr<DhtActor>,
}

impl Dht {
    /// Binds the two sockets on `host` and starts a node on the shared actor thread.
    ///
    /// Called on a multi-thread tokio runtime, the sockets' driver tasks (which carry every
    /// connection's UDX packets) run on that runtime, next to the tasks that read and write
    /// the connections: a packet then does not cross to the actor thread and back (that hop
    /// doubled the round trip of a small message). Elsewhere (a current-thread runtime,
    /// which only runs its tasks while it is driven, or no runtime) they run on the actor
    /// thread.
    pub async fn spawn(config: DhtConfig) -> Result<Dht, Error> {
        let here = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let sockets = if here {
            Some(bind_sockets(&config).await)
        } else {
            None
        };
        let (tx, rx) = oneshot::channel();
        system().spawn(async move {
            let r = async {
                let (server, client) = match sockets {
                    Some(s) => s?,
                    None => bind_sockets(&config).await?,
                };
                Ok::<_, Error>(DhtActor::new(&config, server, client)?.start())
            }
            .await;
            let _ = tx.send(r);
        });
        let addr = rx.await.map_err(|_| Error::Shutdown)??;
        Ok(Dht { addr })
    }

    /// Wraps an actor started elsewhere.
    pub fn from_addr(addr: Addr<DhtActor>) -> Self {
        Dht { addr }
    }

    /// The actor's address (for actors that talk to it directly).
    pub fn addr(&self) -> &Addr<DhtActor> {
        &self.addr
    }

    async fn ask<M>(&self, m: M) -> Result<M::Result, Error>
    where
        M: actix::Message + Send + 'static,
        M::Result: Send,
        DhtActor: Handler<M>,
    {
        self.addr.send(m).await.map_err(|_| Error::Shutdown)
    }

    /// Waits for the first bootstrap pass.
    pub async fn bootstrapped(&self) -> Result<(), Error> {
        self.ask(WaitBootstrapped)
            .await?
            .await
            .map_err(|_| Error::Shutdown)
    }

    /// Facts about the node.
    pub async fn info(&self) -> Result<DhtInfo, Error> {
        self.ask(GetInfo).await
    }

    /// Records under a topic, as they arrive, and the lookup's completion.
    pub async fn lookup(
        &self,
        topic: [u8; 32],
    ) -> Result<
        (
            mpsc::Receiver<LookupItem>,
            oneshot::Receiver<Result<OpResult, OpError>>,
        ),
        Error,
    > {
        self.ask(Lookup { topic }).await
    }

    /// Nodes that hold a server's record, and the query's completion.
    pub async fn find_peer(
        &self,
        public_key: PublicKey,
    ) -> Result<
        (
            mpsc::Receiver<(SocketAddrV4, PeerRecord)>,
            oneshot::Receiver<Result<OpResult, OpError>>,
        ),
        Error,
    > {
        self.ask(FindPeer { public_key }).await
    }

    /// Announces `key_pair` under `topic`.
    pub async fn announce(
        &self,
        topic: [u8; 32],
        key_pair: &KeyPair,
        relay_addresses: Vec<SocketAddrV4>,
    ) -> Result<OpResult, Error> {
        let rx = self
            .ask(Announce {
                topic,
                key_pair: key_pair.clone(),
                relay_addresses,
            })
            .await?;
        Ok(rx.await.map_err(|_| Error::Shutdown)??)
    }

    /// Announces `key_pair` under `topic` and streams the records its lookup finds on the
    /// way (what a topic joined as both server and client needs).
    pub async fn announce_and_lookup(
        &self,
        topic: [u8; 32],
        key_pair: &KeyPair,
        relay_addresses: Vec<SocketAddrV4>,
    ) -> Result<
        (
            mpsc::Receiver<LookupItem>,
            oneshot::Receiver<Result<OpResult, OpError>>,
        ),
        Error,
    > {
        self.ask(AnnounceAndLookup {
            topic,
            key_pair: key_pair.clone(),
            relay_addresses,
        })
        .await
    }

    /// Removes `key_pair`'s record under `topic`.
    pub async fn unannounce(&self, topic: [u8; 32], key_pair: &KeyPair) -> Result<OpResult, Error> {
        let rx = self
            .ask(Unannounce {
                topic,
                key_pair: key_pair.clone(),
            })
            .await?;
        Ok(rx.await.map_err(|_| Error::Shutdown)??)
    }

    /// Stores a signed mutable value.
    pub async fn mutable_put(
        &self,
        key_pair: &KeyPair,
        value: Bytes,
        seq: u64,
    ) -> Result<OpResult, Error> {
        let rx = self
            .ask(MutablePut {
                key_pair: key_pair.clone(),
                value,
                seq,
            })
            .await?;
        Ok(rx.await.map_err(|_| Error::Shutdown)??)
    }

    /// Reads the newest mutable value of `public_key` with at least `seq`.
    pub async fn mutable_get(
        &self,
        public_key: PublicKey,
        seq: u64,
    ) -> Result<Option<MutableGet>, Error> {
        let rx = self.ask(GetMutable { public_key, seq }).await?;
        Ok(rx.await.map_err(|_| Error::Shutdown)??)
    }

    /// Stores a content-addressed value and returns its target.
    pub async fn immutable_put(&self, value: Bytes) -> Result<([u8; 32], OpResult), Error> {
        let (target, rx) = self.ask(ImmutablePut { value }).await?;
        Ok((target, rx.await.map_err(|_| Error::Shutdown)??))
    }

    /// Reads a content-addressed value.
    pub async fn immutable_get(&self, target: [u8; 32]) -> Result<Option<Bytes>, Error> {
        let rx = self.ask(GetImmutable { target }).await?;
        Ok(rx.await.map_err(|_| Error::Shutdown)??)
    }

    /// Starts a server for `key_pair` and waits for its first announce; `firewall` decides
    /// about each client (default: accept all).
    pub async fn listen(
        &self,
        key_pair: &KeyPair,
        firewall: Option<Firewall>,
    ) -> Result<Server, Error> {
        self.listen_with(key_pair, firewall, ListenOptions::default())
            .await
    }

    /// [`Dht::listen`] with options: a blind relay to offer clients (`relay_through`),
    /// whether to share LAN addresses and to punch.
    pub async fn listen_with(
        &self,
        key_pair: &KeyPair,
        firewall: Option<Firewall>,
        options: ListenOptions,
    ) -> Result<Server, Error> {
        let (id, connections, announced) = self
            .ask(Listen {
                key_pair: key_pair.clone(),
                firewall,
                backlog: 64,
                options,
            })
            .await?;
        let relay_addresses = announced.await.map_err(|_| Error::Shutdown)?;
        Ok(Server {
            id,
            public_key: key_pair.public_key(),
            connections,
            relay_addresses,
            dht: self.clone(),
        })
    }

    /// Connects to the server with `remote_public_key` (its relay addresses, if known from a
    /// lookup, are tried first).
    pub async fn connect(
        &self,
        key_pair: &KeyPair,
        remote_public_key: PublicKey,
        relay_addresses: Vec<SocketAddrV4>,
    ) -> Result<Connection, Error> {
        let options = ConnectOptions {
            relay_addresses,
            ..Default::default()
        };
        self.connect_with(key_pair, remote_public_key, options)
            .await
    }

    /// [`Dht::connect`] with options: `relay_through` (a blind relay to use when no direct
    /// path or punch works, hyperdht's `relayThrough`), the LAN shortcut, fast open. The
    /// connection reports the path it took ([`Connection::path`]).
    pub async fn connect_with(
        &self,
        key_pair: &KeyPair,
        remote_public_key: PublicKey,
        options: ConnectOptions,
    ) -> Result<Connection, Error> {
        let rx = self
            .ask(Connect {
                key_pair: key_pair.clone(),
                remote_public_key,
                options,
            })
            .await?;
        rx.await.map_err(|_| Error::Shutdown)?
    }

    /// Classifies this machine's NAT the way a connect does: a fresh socket asks a few DHT
    /// nodes how they see it (hyperdht `nat.js`). Takes up to a few seconds.
    pub async fn sample_nat(&self) -> Result<NatSample, Error> {
        let rx = self.ask(SampleNat).await?;
        rx.await.map_err(|_| Error::Shutdown)
    }

    /// The node's NAT as its dht-rpc layer sees it (no traffic; see [`Dht::sample_nat`]).
    pub async fn nat(&self) -> Result<NatStatus, Error> {
        Ok(self.info().await?.nat)
    }

    /// A UDX stream in this node's UDX instance, unconnected until the first packet for it
    /// arrives (from `remote_id`'s owner), on any of the node's sockets.
    pub async fn create_raw_stream(&self, remote_id: u32) -> Result<UdxStream, Error> {
        self.ask(CreateRawStream { remote_id }).await?
    }

    /// Stops the node.
    pub async fn destroy(&self) {
        let _ = self.addr.send(Destroy).await;
    }
}

/// A listening server: accept its connections, read its relay addresses, close it.
#[derive(Debug)]
pub struct Server {
    id: ServerId,
    public_key: PublicKey,
    connections: mpsc::Receiver<Connection>,
    relay_addresses: Vec<SocketAddrV4>,
    dht: Dht,
}

impl Server {
    /// The server's id in its DHT node.
    pub fn id(&self) -> ServerId {
        self.id
    }

    /// The server's public key.
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// The next accepted connection; `None` once the server or the DHT is gone.
    pub async fn accept(&mut self) -> Option<Connection> {
        self.connections.recv().await
    }

    /// The relay addresses of the first announce (put them in topic records so clients can
    /// reach this server directly).
    pub fn relay_addresses(&self) -> &[SocketAddrV4] {
        &self.relay_addresses
    }

    /// The relay addresses now (they change when relays fail).
    pub async fn current_relay_addresses(&self) -> Result<Vec<SocketAddrV4>, Error> {
        self.dht.ask(GetRelayAddresses { server: self.id }).await
    }

    /// Stops the server and unannounces it.
    pub async fn close(self) {
        let _ = self.dht.ask(CloseServer { server: self.id }).await;
    }
}
