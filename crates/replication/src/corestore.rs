//! Corestore: many cores under one primary key (npm `corestore` 7, the storage and key
//! derivation half; replication comes with the replicator).
//!
//! A named core's key pair is derived from the store's secret primary key
//! (CONSTRUCTIONS.md 5.6):
//!
//! ```text
//! NS_corestore = namespace("corestore", [0])            (= ac5c4cbf…)
//! seed         = BLAKE2b-256(key = primaryKey, NS_corestore || namespace || name)
//! key pair     = Ed25519 from seed
//! manifest     = version 1, the key pair's public key as single signer
//! core key     = manifest hash
//! ```
//!
//! The root namespace is 32 zero bytes; `store.namespace(name)` derives the child
//! `BLAKE2b-256(parent || name)`. So the same primary key and name give the same core as JS
//! corestore, on any machine.
//!
//! On disk a store is a directory: `primary-key` (32 bytes, mode 0600) and one
//! [`DiskStorage`] directory per core under `cores/<discovery key hex>/`.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use corenet_codec::hash::{self, Hash};
use corenet_codec::{DiscoveryKey, PublicKey};
use corenet_noise::KeyPair;
use rand::RngCore;
use zeroize::Zeroizing;

use corenet_mux::{DriverConfig, MuxHandle, PairRequests};
use corenet_noise::SecretStream;

use crate::core::{CoreKind, Hypercore, WeakHypercore};
use crate::error::{Error, StorageError};
use crate::manifest::Manifest;
use crate::replicator::ReplicatorConfig;
use crate::storage::{DiskStorage, MemoryStorage, SyncPolicy};

/// The root namespace of a corestore: 32 zero bytes.
pub const DEFAULT_NAMESPACE: Hash = [0; 32];

/// Name of the primary key file in a store directory.
pub const PRIMARY_KEY_FILE: &str = "primary-key";
/// Directory of the cores in a store directory.
pub const CORES_DIR: &str = "cores";

/// `NS_corestore`: `namespace('corestore', 1)[0]`.
pub fn corestore_namespace() -> Hash {
    let [ns] = hash::namespace("corestore", [0]);
    ns
}

/// The child namespace `name` of `parent`: `BLAKE2b-256(parent || name)`.
pub fn child_namespace(parent: &Hash, name: &[u8]) -> Hash {
    hash::blake2b_256_batch(&[parent, name])
}

/// The seed of the named core `name` in `namespace`:
/// `BLAKE2b-256(key = primary_key, NS_corestore || namespace || name)`.
pub fn derive_seed(primary_key: &[u8; 32], namespace: &Hash, name: &[u8]) -> Zeroizing<[u8; 32]> {
    let ns = corestore_namespace();
    Zeroizing::new(hash::blake2b_256_keyed_batch(
        primary_key,
        &[&ns, namespace, name],
    ))
}

/// The key pair of the named core `name` in `namespace` (corestore `createKeyPair`).
pub fn derive_key_pair(primary_key: &[u8; 32], namespace: &Hash, name: &[u8]) -> KeyPair {
    KeyPair::from_seed(*derive_seed(primary_key, namespace, name))
}

/// Settings of a [`Corestore`].
#[derive(Clone, Default)]
pub struct CorestoreConfig {
    /// How the cores' logs are synced.
    sync: SyncPolicy,
    /// A given primary key instead of a random one.
    primary_key: Option<Zeroizing<[u8; 32]>>,
    /// Replicator settings of every core.
    replicator: ReplicatorConfig,
}

impl std::fmt::Debug for CorestoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CorestoreConfig")
            .field("sync", &self.sync)
            .field("primary_key", &self.primary_key.as_ref().map(|_| "<set>"))
            .field("replicator", &self.replicator)
            .finish()
    }
}

impl CorestoreConfig {
    /// The sync policy of every core's log. Default: [`SyncPolicy::Always`].
    pub fn with_sync(mut self, sync: SyncPolicy) -> Self {
        self.sync = sync;
        self
    }

    /// Uses this primary key (for a new store; an existing store must have the same one).
    /// Default: a random key, generated when the store is created and kept in it. Whoever
    /// knows the primary key can sign for every named core: JS calls passing one "unsafe".
    pub fn with_primary_key(mut self, primary_key: [u8; 32]) -> Self {
        self.primary_key = Some(Zeroizing::new(primary_key));
        self
    }

    /// The replicator settings of every core the store opens. Default:
    /// [`ReplicatorConfig::default`].
    pub fn with_replicator(mut self, config: ReplicatorConfig) -> Self {
        self.replicator = config;
        self
    }
}

#[derive(Debug)]
enum Backend {
    Memory,
    Disk { dir: PathBuf, sync: SyncPolicy },
}

#[derive(Debug)]
enum Slot {
    /// In-memory cores stay alive with the store.
    Strong(Hypercore),
    /// On-disk cores close when their last handle drops.
    Weak(WeakHypercore),
}

struct Inner {
    primary_key: Zeroizing<[u8; 32]>,
    backend: Backend,
    cores: Mutex<HashMap<DiscoveryKey, Slot>>,
    /// Connections replicating the store: cores opened later join them (JS
    /// `StreamTracker`). Pruned when they close.
    streams: Mutex<Vec<Tracked>>,
    /// Replicator settings of the cores it opens.
    replicator: ReplicatorConfig,
}

/// A connection the store replicates over.
#[derive(Debug, Clone)]
struct Tracked {
    mux: MuxHandle,
    rt: tokio::runtime::Handle,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// A set of hypercores under one primary key, in memory or in a directory.
///
/// ```
/// use corenet_replication::Corestore;
/// let store = Corestore::in_memory();
/// let a = store.get("a")?;
/// a.append([&b"x"[..]])?;
/// // The same name gives the same core; another namespace, another core.
/// assert_eq!(store.get("a")?.len(), 1);
/// assert_ne!(store.namespace("app").get("a")?.key(), a.key());
/// // A core by key (for replication) is read-only unless we hold its key pair.
/// let other = store.get_by_key(corenet_codec::PublicKey([7; 32]))?;
/// assert!(!other.is_writable());
/// # Ok::<(), corenet_replication::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Corestore {
    inner: Arc<Inner>,
    namespace: Hash,
}

impl Corestore {
    /// A store in memory with a random primary key.
    pub fn in_memory() -> Self {
        Self::in_memory_with(CorestoreConfig::default())
    }

    /// A store in memory.
    pub fn in_memory_with(config: CorestoreConfig) -> Self {
        let primary_key = config.primary_key.unwrap_or_else(random_key);
        Corestore {
            inner: Arc::new(Inner {
                primary_key,
                backend: Backend::Memory,
                cores: Mutex::new(HashMap::new()),
                streams: Mutex::new(Vec::new()),
                replicator: config.replicator,
            }),
            namespace: DEFAULT_NAMESPACE,
        }
    }

    /// Opens (or creates) a store in directory `dir`, keeping its primary key there.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, Error> {
        Self::open_with(dir, CorestoreConfig::default())
    }

    /// Opens (or creates) a store in directory `dir`.
    pub fn open_with(dir: impl AsRef<Path>, config: CorestoreConfig) -> Result<Self, Error> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(dir.join(CORES_DIR))?;
        let primary_key = load_or_create_primary_key(&dir, config.primary_key)?;
        Ok(Corestore {
            inner: Arc::new(Inner {
                primary_key,
                backend: Backend::Disk {
                    dir,
                    sync: config.sync,
                },
                cores: Mutex::new(HashMap::new()),
                streams: Mutex::new(Vec::new()),
                replicator: config.replicator,
            }),
            namespace: DEFAULT_NAMESPACE,
        })
    }

    /// The directory of a store on disk (`None` in memory).
    pub fn storage_dir(&self) -> Option<&Path> {
        match &self.inner.backend {
            Backend::Disk { dir, .. } => Some(dir.as_path()),
            Backend::Memory => None,
        }
    }

    /// The child store `name`: same cores and primary key, names derived in namespace
    /// `BLAKE2b-256(namespace || name)`.
    pub fn namespace(&self, name: &str) -> Corestore {
        Corestore {
            inner: Arc::clone(&self.inner),
            namespace: child_namespace(&self.namespace, name.as_bytes()),
        }
    }

    /// This store's namespace.
    pub fn namespace_key(&self) -> Hash {
        self.namespace
    }

    /// The key pair of the named core `name` in this namespace.
    pub fn create_key_pair(&self, name: &str) -> KeyPair {
        derive_key_pair(&self.inner.primary_key, &self.namespace, name.as_bytes())
    }

    /// The named, writable core `name` (created on first use).
    pub fn get(&self, name: &str) -> Result<Hypercore, Error> {
        let kp = self.create_key_pair(name);
        let manifest = Manifest::default_signer(kp.public_key());
        let key = manifest.hash();
        let dk = DiscoveryKey::from_key(&key);
        self.open_slot(dk, |storage| match storage {
            Store::Memory(s) => Hypercore::create_with_manifest(s, manifest, Some(kp)),
            Store::Disk(s) => Hypercore::create_with_manifest(s, manifest, Some(kp)),
        })
    }

    /// A writable core with an explicit key pair (corestore `get({ keyPair })`): a v1 core
    /// whose manifest names the key pair as its single signer.
    pub fn get_with_key_pair(&self, key_pair: KeyPair) -> Result<Hypercore, Error> {
        let manifest = Manifest::default_signer(key_pair.public_key());
        let dk = DiscoveryKey::from_key(&manifest.hash());
        self.open_slot(dk, |storage| match storage {
            Store::Memory(s) => Hypercore::create(s, key_pair, CoreKind::V1),
            Store::Disk(s) => Hypercore::create(s, key_pair, CoreKind::V1),
        })
    }

    /// The core with key `key`: the stored one if there is one (writable if we created it),
    /// else a new empty core to replicate into.
    pub fn get_by_key(&self, key: PublicKey) -> Result<Hypercore, Error> {
        let dk = DiscoveryKey::from_key(key.as_bytes());
        let core = self.open_slot(dk, |storage| {
            let has = match &storage {
                Store::Memory(s) => crate::Storage::auth(s).is_some(),
                Store::Disk(s) => crate::Storage::auth(s).is_some(),
            };
            match (storage, has) {
                (Store::Memory(s), true) => Hypercore::open(s),
                (Store::Disk(s), true) => Hypercore::open(s),
                (Store::Memory(s), false) => Hypercore::open_by_key(s, key, None),
                (Store::Disk(s), false) => Hypercore::open_by_key(s, key, None),
            }
        })?;
        if core.key() != key {
            return Err(Error::StorageMismatch(
                "a core with another key has this discovery key",
            ));
        }
        Ok(core)
    }

    /// The stored core with this discovery key, if any (what a replicator opens when a
    /// peer asks for a discovery key).
    pub fn get_by_discovery_key(&self, dk: DiscoveryKey) -> Result<Option<Hypercore>, Error> {
        if let Some(core) = self.cached(&dk) {
            return Ok(Some(core));
        }
        match &self.inner.backend {
            Backend::Memory => Ok(None),
            Backend::Disk { dir, .. } => {
                let path = core_dir(dir, &dk);
                if !path.join(crate::storage::LOG_FILE).exists() {
                    return Ok(None);
                }
                self.open_slot(dk, |storage| match storage {
                    Store::Memory(s) => Hypercore::open(s),
                    Store::Disk(s) => Hypercore::open(s),
                })
                .map(Some)
            }
        }
    }

    /// The discovery keys of every stored core, sorted.
    pub fn list(&self) -> Result<Vec<DiscoveryKey>, Error> {
        let mut out: Vec<DiscoveryKey> = match &self.inner.backend {
            Backend::Memory => self.lock().keys().copied().collect(),
            Backend::Disk { dir, .. } => {
                let mut v = Vec::new();
                for entry in fs::read_dir(dir.join(CORES_DIR))? {
                    let entry = entry?;
                    let name = entry.file_name();
                    let Some(dk) = name.to_str().and_then(|n| DiscoveryKey::from_hex(n).ok())
                    else {
                        continue;
                    };
                    if entry.path().join(crate::storage::LOG_FILE).exists() {
                        v.push(dk);
                    }
                }
                v
            }
        };
        out.sort();
        Ok(out)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DiscoveryKey, Slot>> {
        self.inner
            .cores
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn cached(&self, dk: &DiscoveryKey) -> Option<Hypercore> {
        match self.lock().get(dk)? {
            Slot::Strong(c) => Some(c.clone()),
            Slot::Weak(w) => w.upgrade(),
        }
    }

    fn open_slot(
        &self,
        dk: DiscoveryKey,
        open: impl FnOnce(Store) -> Result<Hypercore, Error>,
    ) -> Result<Hypercore, Error> {
        let mut cores = self.lock();
        let existing = match cores.get(&dk) {
            Some(Slot::Strong(c)) => Some(c.clone()),
            Some(Slot::Weak(w)) => w.upgrade(),
            None => None,
        };
        if let Some(core) = existing {
            return Ok(core);
        }
        let core = match &self.inner.backend {
            Backend::Memory => open(Store::Memory(MemoryStorage::new()))?,
            Backend::Disk { dir, sync } => {
                let storage = DiskStorage::open_with(core_dir(dir, &dk), *sync)?;
                open(Store::Disk(storage))?
            }
        };
        let slot = match self.inner.backend {
            Backend::Memory => Slot::Strong(core.clone()),
            Backend::Disk { .. } => Slot::Weak(core.downgrade()),
        };
        cores.insert(dk, slot);
        // Forget on-disk cores nobody holds any more.
        cores.retain(|_, s| match s {
            Slot::Strong(_) => true,
            Slot::Weak(w) => w.upgrade().is_some(),
        });
        drop(cores);
        core.set_replicator_config(self.inner.replicator);
        // A new core joins every connection the store replicates over.
        for t in self.live_streams() {
            if let Err(e) = core.replicator().attach(&core, &t.mux, &t.rt) {
                tracing::debug!(error = %e, "cannot replicate a new core over a connection");
            }
        }
        Ok(core)
    }

    /// The connections still open (closed ones are forgotten).
    fn live_streams(&self) -> Vec<Tracked> {
        let mut streams = self
            .inner
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        streams.retain(|t| !t.mux.is_closed());
        streams.clone()
    }

    /// The cores open right now.
    fn open_cores(&self) -> Vec<Hypercore> {
        self.lock()
            .values()
            .filter_map(|s| match s {
                Slot::Strong(c) => Some(c.clone()),
                Slot::Weak(w) => w.upgrade(),
            })
            .collect()
    }

    /// Replicates the store over a connection (JS `store.replicate(stream)`): every open
    /// core gets its `hypercore/alpha` channel, a core the remote asks for that the store
    /// holds (in memory, or on disk though not open) is opened on demand
    /// ([`Corestore::get_by_discovery_key`]), and cores opened later on this side join the
    /// connection. The remote side's cores pair with ours when both have them; a channel for
    /// a core only one side has is rejected by the other. Replication runs until the
    /// connection closes (close the mux to stop). Must be called within a tokio runtime.
    ///
    /// Register it before the remote's opens can arrive, i.e. right after creating the mux
    /// (a remote open that finds neither a channel nor this store's pairing hook is
    /// rejected, as in JS protomux). Calling it again for the same connection does nothing.
    /// The connection keeps the cores it replicates open (on-disk cores close when their
    /// last handle, this included, is gone).
    pub fn replicate(&self, mux: &MuxHandle) -> Result<(), Error> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::InvalidArgument("replicate must be called within a tokio runtime")
        })?;
        {
            let mut streams = self
                .inner
                .streams
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Closed connections are forgotten here too, not only when a core opens: a
            // store that serves the same cores for days (a seeder) or none (a chat peer)
            // would otherwise keep every connection it ever had (its mux, buffers and
            // stream: about 4 KiB each, found by the CLI soak).
            streams.retain(|t| !t.mux.is_closed());
            let conn = mux.stream_info().handshake_hash;
            if streams
                .iter()
                .any(|t| t.mux.stream_info().handshake_hash == conn)
            {
                return Ok(());
            }
            streams.push(Tracked {
                mux: mux.clone(),
                rt: rt.clone(),
            });
        }
        let hook = mux.pair(crate::replicator::PROTOCOL, None);
        rt.spawn(answer_discovery_keys(self.clone(), mux.clone(), hook));
        for core in self.open_cores() {
            core.replicator().attach(&core, mux, &rt)?;
        }
        Ok(())
    }

    /// [`Corestore::replicate`] over a secret stream: puts a mux on it (with
    /// [`replication_driver_config`]) and returns the mux handle (close it to stop).
    pub fn replicate_stream<S>(&self, stream: SecretStream<S>) -> Result<MuxHandle, Error>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mux, driver) = MuxHandle::new(stream, replication_driver_config());
        self.replicate(&mux)?;
        tokio::spawn(async move {
            if let Err(e) = driver.await {
                tracing::debug!(error = %e, "replication stream ended with an error");
            }
        });
        Ok(mux)
    }
}

/// Settings of the mux [`Corestore::replicate_stream`] puts on a stream: the defaults with
/// 4 MiB channel and send buffers, so that a batch of large blocks fits in a channel's
/// inbox while the previous one is verified.
pub fn replication_driver_config() -> DriverConfig {
    DriverConfig::default()
        .with_channel_buffer(4 * 1024 * 1024)
        .with_send_buffer(4 * 1024 * 1024)
}

/// The store's pairing hook (JS `ondiscoverykey`): opens the core a remote asks for if the
/// store holds it, which claims the remote's open; anything else is rejected.
async fn answer_discovery_keys(store: Corestore, mux: MuxHandle, mut hook: PairRequests) {
    let rt = tokio::runtime::Handle::current();
    while let Some(request) = hook.recv().await {
        let Some(dk) = DiscoveryKey::from_slice(request.key().id()) else {
            request.reject();
            continue;
        };
        match store.get_by_discovery_key(dk) {
            Ok(Some(core)) => {
                // Opening our channel pairs it with the remote's pending open (this request);
                // the request itself then has nothing left to answer.
                if let Err(e) = core.replicator().attach(&core, &mux, &rt) {
                    tracing::debug!(error = %e, "cannot replicate a requested core");
                } else if let Err(e) = crate::replicator::open_channel(&core, &mux, &rt) {
                    tracing::debug!(error = %e, "cannot open a requested core's channel");
                }
                drop(request);
            }
            Ok(None) => {
                tracing::trace!(dk = %dk, "remote asked for a core we do not have");
                request.reject();
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot open a requested core");
                request.reject();
            }
        }
    }
}

/// The storage a new core gets.
enum Store {
    Memory(MemoryStorage),
    Disk(DiskStorage),
}

fn core_dir(dir: &Path, dk: &DiscoveryKey) -> PathBuf {
    dir.join(CORES_DIR).join(dk.to_hex())
}

fn random_key() -> Zeroizing<[u8; 32]> {
    let mut k = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(&mut k[..]);
    k
}

fn load_or_create_primary_key(
    dir: &Path,
    given: Option<Zeroizing<[u8; 32]>>,
) -> Result<Zeroizing<[u8; 32]>, Error> {
    let path = dir.join(PRIMARY_KEY_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                StorageError::Corrupt(format!("{} is not 32 bytes", path.display()))
            })?;
            let key = Zeroizing::new(key);
            if given.as_ref().is_some_and(|g| g[..] != key[..]) {
                return Err(Error::StorageMismatch(
                    "another primary key is stored in this corestore",
                ));
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = given.unwrap_or_else(random_key);
            let tmp = dir.join(format!("{PRIMARY_KEY_FILE}.tmp"));
            let mut opts = fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp)?;
            f.write_all(&key[..])?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &path)?;
            fs::File::open(dir)?.sync_all()?;
            Ok(key)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corestore_namespace_matches_vector() {
        assert_eq!(
            hex::encode(corestore_namespace()),
            "ac5c4cbfb1064776404637a280c71fac823281d351ebeced03151743270def29"
        );
    }

    /// Each connection the store replicated over is forgotten once it closes, even when no
    /// core opens afterwards (a long-lived seeder or chat peer): the list stays as long as
    /// the live connections, not as long as the process's history.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closed_connections_are_forgotten() {
        use corenet_noise::{Config, KeyPair, SecretStream};
        let store = Corestore::in_memory();
        let _core = store.get("served").unwrap();
        let mut ends = Vec::new();
        for _ in 0..20 {
            let (a, b) = tokio::io::duplex(1 << 16);
            let client = tokio::spawn(async move {
                SecretStream::new(a, true, &KeyPair::generate(), Config::default()).await
            });
            let server = SecretStream::new(b, false, &KeyPair::generate(), Config::default())
                .await
                .unwrap();
            let client = client.await.unwrap().unwrap();
            let mux = store.replicate_stream(client).unwrap();
            mux.destroy();
            let closed = tokio::time::timeout(std::time::Duration::from_secs(10), mux.closed());
            let _ = closed.await.expect("the mux closes");
            ends.push(server);
        }
        let tracked = store.inner.streams.lock().unwrap().len();
        assert!(tracked <= 1, "{tracked} closed connections still tracked");
    }

    #[test]
    fn disk_store_keeps_primary_key_and_cores() {
        let dir = tempfile::tempdir().unwrap();
        let key;
        {
            let store = Corestore::open(dir.path()).unwrap();
            let core = store.get("log").unwrap();
            core.append([&b"one"[..], &b"two"[..]]).unwrap();
            key = core.key();
            assert_eq!(store.list().unwrap(), vec![core.discovery_key()]);
        }
        let store = Corestore::open(dir.path()).unwrap();
        let core = store.get("log").unwrap();
        assert_eq!(core.key(), key);
        assert_eq!(core.len(), 2);
        assert!(core.is_writable());
        let by_key = store.get_by_key(key).unwrap();
        assert_eq!(by_key.get(1).unwrap().as_deref(), Some(&b"two"[..]));
        assert!(store
            .get_by_discovery_key(DiscoveryKey([9; 32]))
            .unwrap()
            .is_none());
        // A different given primary key is refused.
        let err = Corestore::open_with(
            dir.path(),
            CorestoreConfig::default().with_primary_key([1; 32]),
        );
        assert!(matches!(err, Err(Error::StorageMismatch(_))));
    }
}
